//! API tokens: `POST /api/tokens`, `GET /api/tokens`, `DELETE /api/tokens/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a token may do; see the README's table of kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Creates tasks; reads and cancels the tasks it created.
    Producer,
    /// Claims tasks and reports on their leases.
    Worker,
    /// Reads tasks, history, stats and metrics.
    Viewer,
    /// A viewer that also cancels and reruns.
    Operator,
    /// Everything, tokens included.
    Admin,
    /// `GET /metrics` only.
    Metrics,
}

/// `POST /api/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1 to 64 characters, no control characters; history records it for what the token
    /// does.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::TokenName))]
    pub name: String,
    /// What it may do.
    pub kind: TokenKind,
    /// The only queues it may touch (at least one); every queue when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<Vec<crate::openapi::QueueName>>, min_items = 1)
    )]
    pub queues: Option<Vec<String>>,
    /// When it stops working; never when left out.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// Its id (UUID v7).
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub kind: TokenKind,
    /// The queues it may touch; `null` for every queue.
    pub queues: Option<Vec<String>>,
    /// When it was created.
    #[serde(with = "crate::time::micros")]
    pub created_at: DateTime<Utc>,
    /// When it stops working; `null` for never.
    #[serde(with = "crate::time::micros_option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request, to within a minute; `null` if never.
    #[serde(with = "crate::time::micros_option")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; `null` while it is not.
    #[serde(with = "crate::time::micros_option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /api/tokens`: the token and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedTokenResponse {
    /// The token.
    #[serde(flatten)]
    pub token: TokenResponse,
    /// The bearer secret, `tp_<kind>_<64 hex digits>`. It is shown only here: TaskPilot keeps
    /// its SHA-256, never the secret.
    pub secret: String,
}

/// The answer to `GET /api/tokens`: every token, newest first, revoked ones included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenListResponse {
    /// The tokens.
    pub items: Vec<TokenResponse>,
}
