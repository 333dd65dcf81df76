//! [`ApiError`]: every way a request can fail, as RFC 9457 problem details.
//!
//! Part of the HTTP adapter. One table (the match in `refusal`) says which problem code each
//! error of the use cases and the domain answers; the HTTP status then follows from the code
//! alone ([`ProblemCode::status`], in the api crate), and so does the title.

use std::error::Error as StdError;
use std::fmt::Write as _;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use taskpilot_api::{ProblemBody, ProblemCode, PROBLEM_JSON};
use taskpilot_app::AppError;
use taskpilot_domain::{DomainError, StaleLease, TaskId, ValidationError};

/// The detail of a request that carries no bearer token at all.
pub(crate) const MISSING_TOKEN: &str =
    "this endpoint needs a bearer token: send Authorization: Bearer <token>";

/// Seconds a client should wait before retrying while the database is unreachable.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

/// Why a request failed. Each variant maps to one HTTP status and one stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A use case refused or failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// A start before the task's next run (NOT_YET_RUNNABLE), with the instant the service's
    /// clock said it was: Retry-After counts from the database's clock, not this machine's.
    #[error("task {task} is not runnable before {runnable_at}")]
    NotYetRunnable {
        /// The task.
        task: TaskId,
        /// When it becomes runnable.
        runnable_at: DateTime<Utc>,
        /// When the start was refused, by the service's clock.
        now: DateTime<Utc>,
    },
    /// A well-formed request carried a value that is not allowed (VALIDATION_FAILED).
    #[error("{0}")]
    Validation(String),
    /// One item of a batch carried a value that is not allowed (VALIDATION_FAILED, with the
    /// item's `index`): `tasks[3].name must be ...`.
    #[error("{list}[{index}].{detail}")]
    InvalidItem {
        /// The batch's list: `tasks` or `items`.
        list: &'static str,
        /// The item's position in it, from 0.
        index: usize,
        /// What is wrong, starting with the field's name.
        detail: String,
    },
    /// The request could not be read: bad JSON, wrong types, unknown fields, a bad path or
    /// query (MALFORMED_REQUEST).
    #[error("{0}")]
    Malformed(String),
    /// The body is larger than the configured limit (PAYLOAD_TOO_LARGE).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not declared as JSON (UNSUPPORTED_MEDIA_TYPE).
    #[error("request body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// No route has this path (ROUTE_NOT_FOUND).
    #[error("no route matches {0}")]
    RouteNotFound(String),
    /// The path exists but not with this method (METHOD_NOT_ALLOWED).
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method the client used.
        method: String,
        /// The methods the path accepts, comma-separated.
        allow: String,
    },
    /// The request carries no usable bearer token (UNAUTHENTICATED, 401, with
    /// `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A bug or an environment failure; the client learns nothing more (INTERNAL_ERROR).
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl From<taskpilot_app::AuthError> for ApiError {
    fn from(e: taskpilot_app::AuthError) -> Self {
        use taskpilot_app::AuthError as A;
        use taskpilot_domain::Unusable;
        match e {
            A::Malformed => Self::Unauthenticated(
                "the bearer token is malformed: TaskPilot tokens look like tp_<kind>_<64 hex digits>",
            ),
            A::Unknown => Self::Unauthenticated("the bearer token is not known"),
            A::Unusable(Unusable::Revoked) => Self::Unauthenticated("the bearer token was revoked"),
            A::Unusable(Unusable::Expired) => Self::Unauthenticated("the bearer token has expired"),
            A::SessionEnded => Self::Unauthenticated("the dashboard session has ended"),
            A::Unavailable(e) => Self::App(AppError::Unavailable(e)),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::App(AppError::Validation(e))
    }
}

impl ApiError {
    /// A use case's error, judged at `now` by the service's clock (which is what a
    /// Retry-After must count from).
    pub fn from_app_at(e: AppError, now: DateTime<Utc>) -> Self {
        match e {
            AppError::Conflict(DomainError::NotYetRunnable { task, runnable_at }) => {
                Self::NotYetRunnable { task, runnable_at, now }
            }
            other => Self::App(other),
        }
    }
}

/// An RFC 9457 problem: the standard members plus TaskPilot's `code` and extensions. The
/// status and the title follow from the code alone ([`Problem::status`], [`title`]).
#[derive(Debug, Clone)]
struct Problem {
    code: ProblemCode,
    detail: String,
    extensions: Map<String, Value>,
    retry_after_secs: Option<u64>,
    allow: Option<String>,
}

impl Problem {
    fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after_secs: None,
            allow: None,
        }
    }

    /// The one place a status is chosen: the one the contract gives the code.
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    fn task(self, id: TaskId) -> Self {
        self.with("taskId", id.to_string())
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The wire form: the standard members first, in RFC 9457's order, then `code`, then
    /// the extensions.
    fn body(&self) -> ProblemBody {
        ProblemBody {
            extensions: self.extensions.clone(),
            ..ProblemBody::new(self.code, title(self.code), self.detail.clone())
        }
    }
}

/// The short summary of each code, the same for every occurrence.
fn title(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::MalformedRequest => "Malformed request",
        ProblemCode::ValidationFailed => "Validation failed",
        ProblemCode::Unauthenticated => "Unauthenticated",
        ProblemCode::Forbidden => "Forbidden",
        ProblemCode::TaskNotFound => "Task not found",
        ProblemCode::TokenNotFound => "Token not found",
        ProblemCode::QueueNotFound => "Queue not found",
        ProblemCode::RouteNotFound => "Route not found",
        ProblemCode::MethodNotAllowed => "Method not allowed",
        ProblemCode::InvalidTransition => "Invalid transition",
        ProblemCode::NotYetRunnable => "Task not yet runnable",
        ProblemCode::WorkerMismatch => "Worker mismatch",
        ProblemCode::ConcurrentModification => "Concurrent modification",
        ProblemCode::LeaseExpired => "Lease expired",
        ProblemCode::AttemptSuperseded => "Attempt superseded",
        ProblemCode::TaskCancelled => "Task cancelled",
        ProblemCode::OutcomeConflict => "Outcome conflict",
        ProblemCode::IdempotencyKeyInUse => "Idempotency key in use",
        ProblemCode::UniqueKeyHeld => "Unique key held",
        ProblemCode::IdempotencyKeyReused => "Idempotency key reused",
        ProblemCode::PreconditionFailed => "Precondition failed",
        ProblemCode::PayloadTooLarge => "Payload too large",
        ProblemCode::UnsupportedMediaType => "Unsupported media type",
        ProblemCode::InternalError => "Internal error",
        ProblemCode::DatabaseUnavailable => "Database unavailable",
        // A code the api crate adds later reads as a problem until it gets a title here.
        _ => "Problem",
    }
}

impl ApiError {
    /// The stable machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        self.problem().code.as_str()
    }

    /// The error as its problem+json body, e.g. for one item of a batch's answer.
    pub fn problem_body(&self) -> ProblemBody {
        self.problem().body()
    }

    fn problem(&self) -> Problem {
        match self {
            Self::App(e) => refusal(e),
            Self::NotYetRunnable { task, runnable_at, now } => {
                not_yet_runnable(*task, *runnable_at, *now)
            }
            Self::Validation(detail) => Problem::new(ProblemCode::ValidationFailed, detail),
            Self::InvalidItem { index, .. } => {
                Problem::new(ProblemCode::ValidationFailed, self.to_string()).with("index", *index)
            }
            Self::Malformed(detail) => Problem::new(ProblemCode::MalformedRequest, detail),
            Self::PayloadTooLarge { limit } => {
                Problem::new(ProblemCode::PayloadTooLarge, self.to_string())
                    .with("limitBytes", *limit)
            }
            Self::UnsupportedMediaType => {
                Problem::new(ProblemCode::UnsupportedMediaType, self.to_string())
            }
            Self::RouteNotFound(_) => Problem::new(ProblemCode::RouteNotFound, self.to_string()),
            Self::MethodNotAllowed { allow, .. } => {
                let mut problem = Problem::new(ProblemCode::MethodNotAllowed, self.to_string());
                problem.allow = Some(allow.clone());
                problem
            }
            Self::Unauthenticated(detail) => Problem::new(ProblemCode::Unauthenticated, *detail),
            Self::Internal(_) => internal(),
        }
    }

    /// Maps an error of actix's JSON body extractor.
    pub fn from_json_error(e: &JsonPayloadError, limit: usize) -> Self {
        match e {
            JsonPayloadError::Overflow { .. }
            | JsonPayloadError::OverflowKnownLength { .. }
            | JsonPayloadError::Payload(PayloadError::Overflow) => Self::PayloadTooLarge { limit },
            JsonPayloadError::ContentType => Self::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) if e.is_data() => {
                // serde names the offending field: "unknown field `foo`, expected one of ...".
                Self::Malformed(format!("request body does not fit the expected shape: {e}"))
            }
            JsonPayloadError::Deserialize(e) => {
                Self::Malformed(format!("request body is not valid JSON: {e}"))
            }
            other => Self::Malformed(format!("request body could not be read: {other}")),
        }
    }

    /// Maps an error of actix's query string extractor.
    pub fn from_query_error(e: &QueryPayloadError) -> Self {
        match e {
            QueryPayloadError::Deserialize(e) => {
                Self::Malformed(format!("query string is not valid: {e}"))
            }
            other => Self::Malformed(format!("query string is not valid: {other}")),
        }
    }

    /// Maps an error of actix's path extractor.
    pub fn from_path_error(e: &PathError) -> Self {
        match e {
            PathError::Deserialize(e) => Self::Malformed(format!("path is not valid: {e}")),
            other => Self::Malformed(format!("path is not valid: {other}")),
        }
    }
}

fn internal() -> Problem {
    Problem::new(
        ProblemCode::InternalError,
        "the server failed to handle the request; it has been logged",
    )
}

/// What each refusal or failure of a use case answers: one row per case, giving the code
/// (the status follows from it) and the members that go with it.
fn refusal(e: &AppError) -> Problem {
    use taskpilot_domain::DomainError as D;
    use ProblemCode as C;
    match e {
        AppError::NotFound(id) => {
            Problem::new(C::TaskNotFound, format!("no task has id {id}")).task(*id)
        }
        AppError::TokenNotFound(id) => {
            Problem::new(C::TokenNotFound, format!("no token has id {id}"))
                .with("tokenId", id.to_string())
        }
        AppError::QueueVersionMismatch { queue, current } => {
            Problem::new(C::PreconditionFailed, e.to_string())
                .with("queue", queue.as_str())
                .with("currentVersion", *current)
        }
        AppError::QueueNotFound(queue) => {
            Problem::new(C::QueueNotFound, e.to_string()).with("queue", queue.as_str())
        }
        AppError::Forbidden(taskpilot_domain::Forbidden::Operation { kind }) => {
            Problem::new(C::Forbidden, e.to_string()).with("tokenKind", kind.as_str())
        }
        AppError::Forbidden(taskpilot_domain::Forbidden::Queue(queue)) => {
            Problem::new(C::Forbidden, e.to_string()).with("queue", queue.as_str())
        }
        AppError::Conflict(D::InvalidTransition { task, from, action }) => {
            Problem::new(C::InvalidTransition, e.to_string())
                .task(*task)
                .with("taskStatus", from.as_str())
                .with("action", action.to_string())
        }
        // Handlers turn this into `ApiError::NotYetRunnable` with the service's clock; the
        // local clock is the fallback for any other path.
        AppError::Conflict(D::NotYetRunnable { task, runnable_at }) => {
            not_yet_runnable(*task, *runnable_at, Utc::now())
        }
        AppError::Conflict(D::WorkerMismatch { task, .. }) => {
            Problem::new(C::WorkerMismatch, e.to_string()).task(*task)
        }
        AppError::Conflict(D::StaleLease(StaleLease::LeaseExpired { task, attempt })) => {
            Problem::new(C::LeaseExpired, e.to_string()).task(*task).with("attempt", *attempt)
        }
        AppError::Conflict(D::StaleLease(StaleLease::AttemptSuperseded { task, current })) => {
            Problem::new(C::AttemptSuperseded, e.to_string())
                .task(*task)
                .with("currentAttempt", *current)
        }
        AppError::Conflict(D::StaleLease(StaleLease::TaskCancelled { task, attempt })) => {
            Problem::new(C::TaskCancelled, e.to_string()).task(*task).with("attempt", *attempt)
        }
        AppError::Conflict(D::StaleLease(StaleLease::OutcomeConflict {
            task,
            attempt,
            recorded,
        })) => Problem::new(C::OutcomeConflict, e.to_string())
            .task(*task)
            .with("attempt", *attempt)
            .with("recordedOutcome", recorded.as_str()),
        // A stale-lease refusal added to the domain later keeps its own code once the api
        // crate lists it.
        AppError::Conflict(D::StaleLease(stale)) => Problem::new(
            ProblemCode::parse(stale.code()).unwrap_or(C::InvalidTransition),
            e.to_string(),
        ),
        // Any other rule of the domain is a refused transition.
        AppError::Conflict(_) => Problem::new(C::InvalidTransition, e.to_string()),
        AppError::Validation(_)
        | AppError::InvalidLimit(_)
        | AppError::InvalidClaimLimit(_)
        | AppError::InvalidBatchSize(_)
        | AppError::InvalidBulkLimit(_)
        | AppError::InvalidWindow(_)
        | AppError::InvalidCursor => Problem::new(C::ValidationFailed, e.to_string()),
        AppError::UniqueKeyHeld { holder, index: None } => {
            Problem::new(C::UniqueKeyHeld, e.to_string()).task(*holder)
        }
        AppError::UniqueKeyHeld { holder, index: Some(index) } => {
            Problem::new(C::UniqueKeyHeld, e.to_string()).task(*holder).with("index", *index)
        }
        AppError::RepeatedUniqueKey { index, first } => {
            Problem::new(C::UniqueKeyHeld, e.to_string())
                .with("index", *index)
                .with("heldByIndex", *first)
        }
        AppError::IdempotencyKeyReused => Problem::new(C::IdempotencyKeyReused, e.to_string()),
        AppError::IdempotencyKeyInUse => Problem::new(C::IdempotencyKeyInUse, e.to_string()),
        AppError::PreconditionFailed { task, current_version } => {
            Problem::new(C::PreconditionFailed, e.to_string())
                .task(*task)
                .with("currentVersion", *current_version)
        }
        AppError::ConcurrentModification(id) => {
            Problem::new(C::ConcurrentModification, e.to_string()).task(*id)
        }
        AppError::Unavailable(_) => Problem::new(
            C::DatabaseUnavailable,
            format!(
                "the database cannot be reached; retry in {}",
                seconds(UNAVAILABLE_RETRY_AFTER_SECS)
            ),
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER_SECS),
        // `Unexpected`, and any failure the use cases add later: a bug as far as clients know.
        _ => internal(),
    }
}

fn not_yet_runnable(task: TaskId, runnable_at: DateTime<Utc>, now: DateTime<Utc>) -> Problem {
    let wait = retry_after_secs(runnable_at, now);
    let at = runnable_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    Problem::new(
        ProblemCode::NotYetRunnable,
        format!("task {task} is not runnable before {at}; retry in {}", seconds(wait)),
    )
    .task(task)
    .with("runnableAt", at)
    .retry_after(wait)
}

fn seconds(n: u64) -> String {
    if n == 1 {
        "1 second".to_owned()
    } else {
        format!("{n} seconds")
    }
}

/// Whole seconds from `now` until `at`, rounded up, at least 1.
fn retry_after_secs(at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let micros = (at - now).num_microseconds().unwrap_or(i64::MAX).max(1);
    u64::try_from(micros).unwrap_or(u64::MAX).div_ceil(1_000_000).max(1)
}

/// "outer: middle: inner", for one log line.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

impl ApiError {
    /// Logs what is worth a line: a bug (the client learns nothing of it) at error level, an
    /// outage at debug level; a refusal of the client's request not at all. Every answer of
    /// an error, problem+json or the dashboard's page, logs through here once.
    pub(crate) fn log(&self) {
        match self {
            Self::Internal(e) => tracing::error!(error = %format!("{e:#}"), "internal error"),
            Self::App(AppError::Unexpected(e)) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
            }
            // The storage logs an outage once when it starts and once when it ends; a line
            // per refused request would repeat the driver's message hundreds of times.
            Self::App(e @ AppError::Unavailable(_)) => {
                tracing::debug!(error = %chain(e), "database unavailable");
            }
            _ => {}
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status()
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        self.log();
        let mut response = HttpResponse::build(problem.status());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(secs) = problem.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs));
        }
        if let Some(allow) = &problem.allow {
            response.insert_header((header::ALLOW, allow.as_str()));
        }
        if problem.code == ProblemCode::Unauthenticated {
            // RFC 6750: a request without a token gets the bare challenge, a bad token the
            // error code too.
            let challenge = match self {
                Self::Unauthenticated(MISSING_TOKEN) => "Bearer realm=\"taskpilot\"",
                _ => "Bearer realm=\"taskpilot\", error=\"invalid_token\"",
            };
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        response.body(serde_json::to_string(&problem.body()).unwrap_or_default())
    }
}

/// The JSON extractor's error handler, mapping to [`ApiError`].
pub(crate) fn json_error_handler(
    limit: usize,
) -> impl Fn(JsonPayloadError, &HttpRequest) -> actix_web::Error {
    move |e, _req| ApiError::from_json_error(&e, limit).into()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn retry_after_rounds_partial_seconds_up() {
        let now = DateTime::<Utc>::UNIX_EPOCH;

        assert_eq!(retry_after_secs(now + TimeDelta::milliseconds(50), now), 1);
        assert_eq!(retry_after_secs(now + TimeDelta::milliseconds(1_001), now), 2);
        assert_eq!(retry_after_secs(now + TimeDelta::seconds(3), now), 3);
        assert_eq!(retry_after_secs(now - TimeDelta::seconds(3), now), 1);
    }

    #[test]
    fn retry_after_counts_from_the_service_clock_not_this_machine() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let refused = AppError::Conflict(DomainError::NotYetRunnable {
            task: TaskId::from_uuid(uuid::Uuid::nil()),
            runnable_at: now + TimeDelta::seconds(90),
        });

        let problem = ApiError::from_app_at(refused, now).problem();

        assert_eq!(problem.retry_after_secs, Some(90));
        assert_eq!(problem.code, ProblemCode::NotYetRunnable);
    }

    #[test]
    fn every_stale_lease_is_a_409_with_its_own_code_and_the_task() {
        let task = TaskId::from_uuid(uuid::Uuid::nil());
        for (stale, code) in [
            (StaleLease::LeaseExpired { task, attempt: 1 }, "LEASE_EXPIRED"),
            (StaleLease::AttemptSuperseded { task, current: 2 }, "ATTEMPT_SUPERSEDED"),
            (StaleLease::TaskCancelled { task, attempt: 1 }, "TASK_CANCELLED"),
            (
                StaleLease::OutcomeConflict {
                    task,
                    attempt: 1,
                    recorded: taskpilot_domain::AttemptEnd::Failed,
                },
                "OUTCOME_CONFLICT",
            ),
        ] {
            let error = ApiError::App(AppError::Conflict(DomainError::StaleLease(stale)));

            let problem = error.problem();

            assert_eq!(problem.status(), StatusCode::CONFLICT);
            assert_eq!(problem.code.as_str(), code);
            assert_eq!(problem.body().extension("taskId"), Some(&Value::from(task.to_string())));
        }
    }

    #[test]
    fn each_error_answers_its_status_code_and_title() {
        use taskpilot_domain::{Action, TaskStatus};
        let task = TaskId::from_uuid(uuid::Uuid::nil());
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let conflict = |e: DomainError| ApiError::App(AppError::Conflict(e));
        for (error, status, code, title) in [
            (ApiError::Validation("x".into()), 400, "VALIDATION_FAILED", "Validation failed"),
            (
                ApiError::InvalidItem { list: "tasks", index: 3, detail: "name is empty".into() },
                400,
                "VALIDATION_FAILED",
                "Validation failed",
            ),
            (ApiError::Malformed("x".into()), 400, "MALFORMED_REQUEST", "Malformed request"),
            (ApiError::PayloadTooLarge { limit: 1 }, 413, "PAYLOAD_TOO_LARGE", "Payload too large"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "Unsupported media type",
            ),
            (ApiError::RouteNotFound("GET /x".into()), 404, "ROUTE_NOT_FOUND", "Route not found"),
            (
                ApiError::MethodNotAllowed { method: "GET".into(), allow: "POST".into() },
                405,
                "METHOD_NOT_ALLOWED",
                "Method not allowed",
            ),
            (ApiError::Internal(anyhow::anyhow!("x")), 500, "INTERNAL_ERROR", "Internal error"),
            (
                ApiError::NotYetRunnable { task, runnable_at: now, now },
                409,
                "NOT_YET_RUNNABLE",
                "Task not yet runnable",
            ),
            (ApiError::App(AppError::NotFound(task)), 404, "TASK_NOT_FOUND", "Task not found"),
            (
                ApiError::App(AppError::InvalidBatchSize(0)),
                400,
                "VALIDATION_FAILED",
                "Validation failed",
            ),
            (ApiError::App(AppError::InvalidCursor), 400, "VALIDATION_FAILED", "Validation failed"),
            (
                ApiError::App(AppError::ConcurrentModification(task)),
                409,
                "CONCURRENT_MODIFICATION",
                "Concurrent modification",
            ),
            (
                ApiError::App(AppError::Unavailable(anyhow::anyhow!("x"))),
                503,
                "DATABASE_UNAVAILABLE",
                "Database unavailable",
            ),
            (
                ApiError::App(AppError::Unexpected(anyhow::anyhow!("x"))),
                500,
                "INTERNAL_ERROR",
                "Internal error",
            ),
            (
                conflict(DomainError::InvalidTransition {
                    task,
                    from: TaskStatus::Succeeded,
                    action: Action::Start,
                }),
                409,
                "INVALID_TRANSITION",
                "Invalid transition",
            ),
            (
                conflict(DomainError::LeaseNotExpired { task, expires_at: now }),
                409,
                "INVALID_TRANSITION",
                "Invalid transition",
            ),
            (
                conflict(DomainError::StaleLease(StaleLease::LeaseExpired { task, attempt: 1 })),
                409,
                "LEASE_EXPIRED",
                "Lease expired",
            ),
        ] {
            let body = error.problem_body();

            assert_eq!(error.status_code().as_u16(), status, "{code}");
            assert_eq!(
                (body.status, body.code.as_str(), body.title.as_str()),
                (status, code, title)
            );
        }
    }

    #[test]
    fn an_invalid_batch_item_names_its_index_in_detail_and_as_a_member() {
        let error = ApiError::InvalidItem {
            list: "tasks",
            index: 3,
            detail: "name must be 1 to 200 characters".into(),
        };

        let body = error.problem_body();

        assert_eq!(body.detail, "tasks[3].name must be 1 to 200 characters");
        assert_eq!(body.extension("index"), Some(&Value::from(3)));
        assert_eq!(body.code, "VALIDATION_FAILED");
    }

    #[test]
    fn problem_types_are_urns_named_after_the_code() {
        let body = ApiError::Validation("x".into()).problem().body();

        assert_eq!(body.kind, "urn:taskpilot:problem:validation-failed");
        assert_eq!(body.code, "VALIDATION_FAILED");
        assert_eq!(body.status, 400);
    }

    #[test]
    fn internal_errors_reveal_nothing_to_clients() {
        let body = ApiError::Internal(anyhow::anyhow!("secret detail")).problem().body();

        assert!(!format!("{body:?}").contains("secret"));
        assert_eq!(body.code, "INTERNAL_ERROR");
    }
}
