//! The token endpoints (`/api/tokens`): request and response mapping and their handlers.
//! Managing tokens needs a token whose kind grants it (admin); that rule is the domain's
//! ([`taskpilot_domain::TokenKind::grants`]).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use taskpilot_api::{
    CreateTokenRequest, CreatedTokenResponse, TokenKind as WireKind, TokenListResponse,
    TokenResponse,
};
use taskpilot_app::{AccessService, AppError, NewToken};
use taskpilot_domain::{
    ApiToken, Caller, Operation, QueueName, QueueScope, TokenId, TokenKind, TokenName,
};

use crate::auth::{Authenticated, Gate};
use crate::error::ApiError;

/// The domain's kind of a wire kind.
pub fn kind(wire: WireKind) -> TokenKind {
    match wire {
        WireKind::Producer => TokenKind::Producer,
        WireKind::Worker => TokenKind::Worker,
        WireKind::Viewer => TokenKind::Viewer,
        WireKind::Operator => TokenKind::Operator,
        WireKind::Admin => TokenKind::Admin,
        WireKind::Metrics => TokenKind::Metrics,
    }
}

fn wire_kind(kind: TokenKind) -> WireKind {
    match kind {
        TokenKind::Producer => WireKind::Producer,
        TokenKind::Worker => WireKind::Worker,
        TokenKind::Viewer => WireKind::Viewer,
        TokenKind::Operator => WireKind::Operator,
        TokenKind::Admin => WireKind::Admin,
        TokenKind::Metrics => WireKind::Metrics,
    }
}

/// A creation request as the use case takes it.
///
/// # Errors
/// [`ApiError`] VALIDATION_FAILED naming the field: a bad name, queue or empty queue list.
pub fn new_token(request: CreateTokenRequest) -> Result<NewToken, ApiError> {
    let CreateTokenRequest { name, kind: wire, queues, expires_at } = request;
    let queues = queues
        .map(|list| list.iter().map(|q| QueueName::parse(q)).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    Ok(NewToken {
        name: TokenName::parse(&name)?,
        kind: kind(wire),
        queues: QueueScope::from_list(queues)?,
        expires_at,
    })
}

/// A token as the API shows it.
pub fn token_response(token: &ApiToken) -> TokenResponse {
    TokenResponse {
        id: token.id.as_uuid(),
        name: token.name.as_str().to_owned(),
        kind: wire_kind(token.kind),
        queues: token
            .queues
            .to_list()
            .map(|list| list.iter().map(|q| q.as_str().to_owned()).collect()),
        created_at: token.created_at,
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        revoked_at: token.revoked_at,
    }
}

/// Runs a token use case on the blocking pool, for a caller allowed to manage tokens.
async fn run<T, F>(gate: &web::Data<Gate>, caller: &Caller, call: F) -> Result<T, ApiError>
where
    F: FnOnce(&AccessService) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    caller.may(Operation::ManageTokens).map_err(AppError::from)?;
    let access = gate.access().clone();
    web::block(move || call(&access))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(ApiError::from)
}

/// `POST /api/tokens`: 201 with the token and its secret, shown this once.
#[utoipa::path(
    post, path = "/api/tokens", operation_id = "createToken", tag = "tokens",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token and, this once, its secret.", body = CreatedTokenResponse,
         headers(("Location" = String, description = "The token's URL: `/api/tokens/{id}`."))),
        crate::openapi::BodyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn create_token(
    gate: web::Data<Gate>,
    Authenticated(caller): Authenticated,
    body: web::Json<CreateTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = new_token(body.into_inner())?;
    let issued = run(&gate, &caller, move |a| a.create_token(request)).await?;
    tracing::info!(
        token.id = %issued.token.id,
        token.kind = %issued.token.kind,
        "token {} created by {}",
        issued.token.name,
        caller.name()
    );
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/tokens/{}", issued.token.id)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CreatedTokenResponse { token: token_response(&issued.token), secret: issued.secret }))
}

/// `GET /api/tokens`: every token, newest first, revoked ones included; never a secret.
#[utoipa::path(
    get, path = "/api/tokens", operation_id = "listTokens", tag = "tokens",
    responses(
        (status = 200, description = "Every token, newest first.", body = TokenListResponse),
        crate::openapi::Unavailable,
    ),
)]
pub async fn list_tokens(
    gate: web::Data<Gate>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let tokens = run(&gate, &caller, AccessService::tokens).await?;
    Ok(HttpResponse::Ok()
        .json(TokenListResponse { items: tokens.iter().map(token_response).collect() }))
}

/// `DELETE /api/tokens/{id}`: revokes the token (it stays listed, with `revokedAt`); every
/// server refuses it within a few seconds. Revoking it again changes nothing.
#[utoipa::path(
    delete, path = "/api/tokens/{id}", operation_id = "revokeToken", tag = "tokens",
    params(("id" = uuid::Uuid, Path, description = "The token's id.")),
    responses(
        (status = 200, description = "The token, with `revokedAt`.", body = TokenResponse),
        (status = 400, description = "MALFORMED_REQUEST: the id is not a UUID.", body = taskpilot_api::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND: no token has this id.", body = taskpilot_api::ProblemBody, content_type = "application/problem+json"),
        crate::openapi::Unavailable,
    ),
)]
pub async fn revoke_token(
    gate: web::Data<Gate>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uuid::Uuid::parse_str(&path)
        .map(TokenId::from_uuid)
        .map_err(|e| ApiError::Malformed(format!("token id {:?} is not a UUID: {e}", *path)))?;
    let token = run(&gate, &caller, move |a| a.revoke(id)).await?;
    tracing::info!(token.id = %token.id, "token {} revoked by {}", token.name, caller.name());
    Ok(HttpResponse::Ok().json(token_response(&token)))
}
