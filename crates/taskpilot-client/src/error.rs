//! [`ClientError`]: what a call can end with besides its answer.

use std::time::Duration;

use serde_json::Value;
use taskpilot_api::{ProblemBody, ProblemCode};

/// Why a call failed.
///
/// The server's refusals arrive as [`ClientError::Api`], with the problem's stable
/// [`ProblemCode`]; the predicates ([`ClientError::is_not_found`],
/// [`ClientError::is_lease_lost`], ...) cover what callers usually branch on. Everything else
/// is about getting there and back: [`ClientError::Connect`] proves the request never reached
/// the server; after [`ClientError::Transport`] it may or may not have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an RFC 9457 problem.
    #[error("{status} {code}: {detail}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem's stable code.
        code: ProblemCode,
        /// The human-readable explanation.
        detail: String,
        /// How long the server asked the client to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
        /// The whole body, with its extension members (`taskId`, `runnableAt`, `index`, ...).
        problem: Box<ProblemBody>,
    },
    /// The server answered with an error this client cannot read as a known problem: no
    /// problem body (a proxy's 502, say) or a code newer than this client.
    #[error("unexpected answer {status} from the server")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// How long the server asked the client to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
        /// The problem body, when there was one (with a code this client does not know).
        problem: Option<Box<ProblemBody>>,
    },
    /// No connection could be made: the request never reached the server.
    #[error("cannot connect to the server: {0}")]
    Connect(#[source] reqwest::Error),
    /// The connection failed or timed out after the request may have been sent: the server
    /// may or may not have acted on it.
    #[error("request failed in transit: {0}")]
    Transport(#[source] reqwest::Error),
    /// A successful answer whose body did not have the expected shape.
    #[error("cannot read the server's answer: {0}")]
    Decode(#[source] reqwest::Error),
    /// The base URL or a task id cannot form a request URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client could not be built (e.g. HTTPS without the `rustls` feature).
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

impl ClientError {
    /// The problem code, for an answer from the server.
    pub fn code(&self) -> Option<ProblemCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The problem body, for an answer from the server that had one.
    pub fn problem(&self) -> Option<&ProblemBody> {
        match self {
            Self::Api { problem, .. } => Some(problem),
            Self::UnexpectedStatus { problem, .. } => problem.as_deref(),
            _ => None,
        }
    }

    /// An extension member of the problem body, e.g. `runnableAt` or, in batches, `index`.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.problem().and_then(|p| p.extension(name))
    }

    /// The HTTP status, for an answer from the server.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } | Self::UnexpectedStatus { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    fn has_code(&self, wanted: &[ProblemCode]) -> bool {
        self.code().is_some_and(|code| wanted.contains(&code))
    }

    /// No task has this id (404 `TASK_NOT_FOUND`).
    pub fn is_not_found(&self) -> bool {
        self.has_code(&[ProblemCode::TaskNotFound])
    }

    /// The task was cancelled while this attempt ran (409 `TASK_CANCELLED`): stop working on
    /// it.
    pub fn is_cancelled(&self) -> bool {
        self.has_code(&[ProblemCode::TaskCancelled])
    }

    /// This attempt lost the task: its lease ran out and it was reaped (`LEASE_EXPIRED`) or a
    /// newer attempt holds it (`ATTEMPT_SUPERSEDED`). Its outcome will not be accepted.
    pub fn is_lease_lost(&self) -> bool {
        self.has_code(&[ProblemCode::LeaseExpired, ProblemCode::AttemptSuperseded])
    }

    /// The attempt is over for this worker, whatever the reason: cancelled or lease lost
    /// (`TASK_CANCELLED`, `LEASE_EXPIRED`, `ATTEMPT_SUPERSEDED`).
    pub fn is_attempt_over(&self) -> bool {
        self.code().is_some_and(ProblemCode::attempt_is_over)
    }

    /// The request was refused as invalid (400 `VALIDATION_FAILED` or `MALFORMED_REQUEST`),
    /// or its token was (401 `UNAUTHENTICATED`, 403 `FORBIDDEN`): repeating it cannot help.
    pub fn is_invalid(&self) -> bool {
        self.has_code(&[
            ProblemCode::ValidationFailed,
            ProblemCode::MalformedRequest,
            ProblemCode::Unauthenticated,
            ProblemCode::Forbidden,
        ])
    }

    /// The task's state refused the call (409, any code).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// The request proved never to have reached the server: repeating it cannot do anything
    /// twice.
    pub fn never_arrived(&self) -> bool {
        matches!(self, Self::Connect(_))
    }

    /// A failure that may go away by itself: no connection, a broken one, 502, 503 or 504.
    /// Whether repeating the call is *safe* depends on the call; the client only repeats
    /// the ones that are (see [`crate::RetryPolicy`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Transport(_) => true,
            Self::Api { status, .. } | Self::UnexpectedStatus { status, .. } => {
                matches!(status, 502..=504)
            }
            _ => false,
        }
    }
}
