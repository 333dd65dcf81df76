//! What a use case can fail with.

use taskpilot_api::limits::{
    MAX_BATCH, MAX_BULK, MAX_CLAIM_BATCH, MAX_PAGE_SIZE, MAX_THROUGHPUT_MINUTES,
};
use taskpilot_domain::{DomainError, Forbidden, QueueName, TaskId, TokenId, ValidationError};

use crate::RepoError;

/// Everything a use case can fail with, by what the caller does about it.
///
/// The two `From` conversions are the domain's verdicts, so `?` on them is meant: a refused
/// transition is a [`AppError::Conflict`], a refused value a [`AppError::Validation`]. There is
/// no conversion from `anyhow::Error`: a bug becomes [`AppError::Unexpected`] only where a use
/// case says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task's state does not allow what was asked (including stale lease tokens).
    #[error(transparent)]
    Conflict(#[from] DomainError),
    /// The request carries a value the domain refuses.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A listing's page size is outside 1 to [`MAX_PAGE_SIZE`].
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}, got {0}")]
    InvalidLimit(u32),
    /// A claim's batch size is outside 1 to [`MAX_CLAIM_BATCH`].
    #[error("limit must be between 1 and {MAX_CLAIM_BATCH}, got {0}")]
    InvalidClaimLimit(u32),
    /// A batch is empty or larger than [`MAX_BATCH`].
    #[error("a batch holds 1 to {MAX_BATCH} items, got {0}")]
    InvalidBatchSize(usize),
    /// A throughput window is outside 1 to [`MAX_THROUGHPUT_MINUTES`] minutes.
    #[error("minutes must be between 1 and {MAX_THROUGHPUT_MINUTES}, got {0}")]
    InvalidWindow(u32),
    /// A bulk action's limit (or its number of ids) is outside 1 to [`MAX_BULK`].
    #[error("limit must be between 1 and {MAX_BULK}, got {0}")]
    InvalidBulkLimit(u32),
    /// A listing's cursor is not one this server handed out.
    #[error("cursor is not valid")]
    InvalidCursor,
    /// The caller's token does not allow this, or not in this queue.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// No token has this id.
    #[error("token {0} not found")]
    TokenNotFound(TokenId),
    /// `If-Match` named none of the queue's current version.
    #[error("queue {queue} is at version {current}, not the one If-Match names")]
    QueueVersionMismatch {
        /// The queue.
        queue: QueueName,
        /// Its version now.
        current: u64,
    },
    /// No task is stored in this queue and it was never paused.
    #[error("queue {0} not found: it holds no task and was never paused")]
    QueueNotFound(QueueName),
    /// The caller acted on a version of the task that is no longer the current one (an
    /// operator's `If-Match`): nothing was changed. Checked against the version the write
    /// compares and swaps on, so a change that lands between the read and the write is
    /// refused too.
    #[error("task {task} is at version {current_version}, not the one the request names")]
    PreconditionFailed {
        /// The task.
        task: TaskId,
        /// Its version now.
        current_version: u64,
    },
    /// The task kept changing under us; the caller may try again.
    #[error("task {0} is being modified concurrently; try again")]
    ConcurrentModification(TaskId),
    /// The `Idempotency-Key` was used before for a different request (another body, method
    /// or path).
    #[error("the Idempotency-Key was used before for a different request; use a new key")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still being handled.
    #[error("a request with this Idempotency-Key is still being handled; try again later")]
    IdempotencyKeyInUse,
    /// Another PENDING or RUNNING task of the queue holds the task's unique key, and the
    /// request asked to be refused then (or it was a rerun).
    #[error("{}task {holder} holds this uniqueKey in its queue while it is PENDING or RUNNING",
        index.map(|i| format!("tasks[{i}]: ")).unwrap_or_default())]
    UniqueKeyHeld {
        /// The task that holds the key.
        holder: TaskId,
        /// The item of a batch whose key it is.
        index: Option<usize>,
    },
    /// An item of a batch that asked for [`OnConflict::Reject`](crate::OnConflict::Reject)
    /// has the queue and unique key of an earlier item.
    #[error(
        "tasks[{index}]: the uniqueKey is held by tasks[{first}] of the same batch in the same \
         queue"
    )]
    RepeatedUniqueKey {
        /// The item.
        index: usize,
        /// The earlier item.
        first: usize,
    },
    /// Storage cannot be reached now.
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or broken data; details are for the logs, not for clients.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<RepoError> for AppError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound(id) => Self::NotFound(id),
            RepoError::Conflict(id) => Self::ConcurrentModification(id),
            RepoError::UniqueKeyHeld(holder) => Self::UniqueKeyHeld { holder, index: None },
            RepoError::Unavailable(e) => Self::Unavailable(e),
            RepoError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn storage_errors_map_to_what_the_caller_does_about_them() {
        let id = TaskId::from_uuid(Uuid::from_u128(1));

        assert!(
            matches!(AppError::from(RepoError::NotFound(id)), AppError::NotFound(i) if i == id)
        );
        assert!(matches!(
            AppError::from(RepoError::Conflict(id)),
            AppError::ConcurrentModification(i) if i == id
        ));
        assert!(matches!(
            AppError::from(RepoError::Unavailable(anyhow::anyhow!("connection refused"))),
            AppError::Unavailable(_)
        ));
        assert!(matches!(
            AppError::from(RepoError::unexpected(anyhow::anyhow!("bad row"))),
            AppError::Unexpected(_)
        ));
    }
}
