//! The problem+json error body (RFC 9457) and the stable codes clients switch on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every stable `code` of an error body. Clients switch on the code, never on `title` or
/// `detail`. A server newer than the client may send a code missing here: read
/// [`ProblemBody::code`] as text and [`ProblemBody::problem_code`] gives `None` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ProblemCode {
    /// 400: bad JSON, a wrong type, an unknown or missing field, a bad path or query.
    MalformedRequest,
    /// 400: a value out of range; batches name the bad item's index.
    ValidationFailed,
    /// 401: no bearer token, or one that is malformed, unknown, expired or revoked; comes
    /// with `WWW-Authenticate: Bearer`.
    Unauthenticated,
    /// 403: the token's kind does not allow this, or the queue is outside its list.
    Forbidden,
    /// 404: no task has this id.
    TaskNotFound,
    /// 404: no API token has this id.
    TokenNotFound,
    /// 404: no task is stored in this queue and it was never paused.
    QueueNotFound,
    /// 404: no such endpoint.
    RouteNotFound,
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed,
    /// 409: the task's status does not allow this action.
    InvalidTransition,
    /// 409: a start before the task's next run; `runnableAt` and Retry-After say when.
    NotYetRunnable,
    /// 409: another worker holds the task.
    WorkerMismatch,
    /// 409: the task kept changing under the request; retry it.
    ConcurrentModification,
    /// 409: the caller's attempt was reaped, its lease ran out.
    LeaseExpired,
    /// 409: a newer attempt holds or held the task.
    AttemptSuperseded,
    /// 409: the task was cancelled while the attempt ran: stop working on it.
    TaskCancelled,
    /// 409: the attempt already ended with a different outcome.
    OutcomeConflict,
    /// 409: a request with this `Idempotency-Key` is still being handled; retry later.
    IdempotencyKeyInUse,
    /// 409: another PENDING or RUNNING task of the queue holds the `uniqueKey`; `taskId`
    /// names it (and `index` the batch item).
    UniqueKeyHeld,
    /// 412: `If-Match` names no entity tag the task or queue has now (someone changed it since
    /// it was read); `currentVersion` says which version it is at. Nothing was changed.
    PreconditionFailed,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the `Idempotency-Key` was used before for a different request.
    IdempotencyKeyReused,
    /// 500: a bug; the body says nothing more.
    InternalError,
    /// 503: PostgreSQL cannot be reached; Retry-After says when to try again.
    DatabaseUnavailable,
}

impl ProblemCode {
    /// Every code, in the README's order.
    pub const ALL: [ProblemCode; 25] = [
        Self::MalformedRequest,
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::TaskNotFound,
        Self::TokenNotFound,
        Self::QueueNotFound,
        Self::RouteNotFound,
        Self::MethodNotAllowed,
        Self::InvalidTransition,
        Self::NotYetRunnable,
        Self::WorkerMismatch,
        Self::ConcurrentModification,
        Self::LeaseExpired,
        Self::AttemptSuperseded,
        Self::TaskCancelled,
        Self::OutcomeConflict,
        Self::IdempotencyKeyInUse,
        Self::UniqueKeyHeld,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::IdempotencyKeyReused,
        Self::InternalError,
        Self::DatabaseUnavailable,
    ];

    /// The code as the wire spells it: `VALIDATION_FAILED`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedRequest => "MALFORMED_REQUEST",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::TaskNotFound => "TASK_NOT_FOUND",
            Self::TokenNotFound => "TOKEN_NOT_FOUND",
            Self::QueueNotFound => "QUEUE_NOT_FOUND",
            Self::RouteNotFound => "ROUTE_NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::InvalidTransition => "INVALID_TRANSITION",
            Self::NotYetRunnable => "NOT_YET_RUNNABLE",
            Self::WorkerMismatch => "WORKER_MISMATCH",
            Self::ConcurrentModification => "CONCURRENT_MODIFICATION",
            Self::LeaseExpired => "LEASE_EXPIRED",
            Self::AttemptSuperseded => "ATTEMPT_SUPERSEDED",
            Self::TaskCancelled => "TASK_CANCELLED",
            Self::OutcomeConflict => "OUTCOME_CONFLICT",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::UniqueKeyHeld => "UNIQUE_KEY_HELD",
            Self::PreconditionFailed => "PRECONDITION_FAILED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
        }
    }

    /// Reads [`ProblemCode::as_str`]'s spelling; `None` for a code this crate does not know.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw)
    }

    /// The HTTP status that always comes with this code.
    pub const fn status(self) -> u16 {
        match self {
            Self::MalformedRequest | Self::ValidationFailed => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::TaskNotFound
            | Self::TokenNotFound
            | Self::QueueNotFound
            | Self::RouteNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::InvalidTransition
            | Self::NotYetRunnable
            | Self::WorkerMismatch
            | Self::ConcurrentModification
            | Self::LeaseExpired
            | Self::AttemptSuperseded
            | Self::TaskCancelled
            | Self::OutcomeConflict
            | Self::IdempotencyKeyInUse
            | Self::UniqueKeyHeld => 409,
            Self::PreconditionFailed => 412,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::IdempotencyKeyReused => 422,
            Self::InternalError => 500,
            Self::DatabaseUnavailable => 503,
        }
    }

    /// The problem type URI of this code: `urn:taskpilot:problem:validation-failed`, ...
    pub fn type_uri(self) -> String {
        format!("urn:taskpilot:problem:{}", self.as_str().to_ascii_lowercase().replace('_', "-"))
    }

    /// A worker's attempt is over and it must stop working on the task: the lease expired,
    /// a newer attempt took over, or the task was cancelled.
    pub const fn attempt_is_over(self) -> bool {
        matches!(self, Self::LeaseExpired | Self::AttemptSuperseded | Self::TaskCancelled)
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error body (`application/problem+json`): RFC 9457's members, TaskPilot's `code`, and
/// extension members such as `taskId`, `attempt`, `runnableAt`, `limitBytes` or, in batches,
/// `index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemBody {
    /// `urn:taskpilot:problem:<code in kebab case>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the code, the same for every occurrence.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, for people.
    pub detail: String,
    /// The stable code; see [`ProblemCode`].
    pub code: String,
    /// Every other member.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl ProblemBody {
    /// A body for `code` with its status and type.
    pub fn new(code: ProblemCode, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: code.type_uri(),
            title: title.into(),
            status: code.status(),
            detail: detail.into(),
            code: code.as_str().to_owned(),
            extensions: Map::new(),
        }
    }

    /// The code, when this crate knows it.
    pub fn problem_code(&self) -> Option<ProblemCode> {
        ProblemCode::parse(&self.code)
    }

    /// An extension member, e.g. `taskId` or `index`.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.extensions.get(name)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_code_reads_back_what_it_spells_on_the_wire() {
        for code in ProblemCode::ALL {
            let wire = serde_json::to_value(code).unwrap();

            assert_eq!(wire, json!(code.as_str()));
            assert_eq!(serde_json::from_value::<ProblemCode>(wire).unwrap(), code);
            assert_eq!(ProblemCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn problem_bodies_round_trip_with_their_extensions() {
        let wire = json!({
            "type": "urn:taskpilot:problem:validation-failed",
            "title": "Validation failed",
            "status": 400,
            "detail": "tasks[3].name must be 1 to 200 characters",
            "code": "VALIDATION_FAILED",
            "index": 3
        });

        let body: ProblemBody = serde_json::from_value(wire.clone()).unwrap();

        assert_eq!(body.problem_code(), Some(ProblemCode::ValidationFailed));
        assert_eq!(body.extension("index"), Some(&json!(3)));
        assert_eq!(serde_json::to_value(&body).unwrap(), wire);
        assert_eq!(
            body,
            ProblemBody {
                extensions: body.extensions.clone(),
                ..ProblemBody::new(
                    ProblemCode::ValidationFailed,
                    "Validation failed",
                    "tasks[3].name must be 1 to 200 characters"
                )
            }
        );
    }

    #[test]
    fn an_unknown_code_still_reads() {
        let body: ProblemBody = serde_json::from_value(json!({
            "type": "urn:taskpilot:problem:new-thing", "title": "New", "status": 409,
            "detail": "d", "code": "NEW_THING"
        }))
        .unwrap();

        assert_eq!(body.code, "NEW_THING");
        assert_eq!(body.problem_code(), None);
    }
}
