//! What can go wrong in the domain, one variant per broken rule.

use chrono::{DateTime, Utc};

use crate::{Action, AttemptEnd, TaskId, TaskStatus, TextRule, WorkerId};

/// A value from outside (a client, a config file) that the domain refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The task name broke a [`TextRule`].
    #[error("name {0}")]
    TaskName(TextRule),
    /// The worker id broke a [`TextRule`].
    #[error("workerId {0}")]
    WorkerId(TextRule),
    /// The attempt budget is outside 1 to 100.
    #[error("maxAttempts must be between 1 and {max}, got {0}", max = crate::MaxAttempts::MAX)]
    MaxAttempts(i64),
    /// The crash budget is outside 1 to 100.
    #[error("maxCrashes must be between 1 and {max}, got {0}", max = crate::MaxCrashes::MAX)]
    MaxCrashes(i64),
    /// The queue name is empty, longer than 64 characters or holds a character outside
    /// `a-z 0-9 _ . -`.
    #[error("queue must be 1 to 64 of a-z, 0-9, '_', '.', '-', got {0:?}")]
    QueueName(String),
    /// The lease token is not one TaskPilot hands out.
    #[error("leaseToken must be a token as the claim returned it")]
    LeaseToken,
    /// The lease length is outside 5 to 86400 seconds.
    #[error("leaseSeconds must be between 5 and 86400, got {0}")]
    LeaseSeconds(i64),
    /// A JSON value (payload, result) holds a NUL character (U+0000), which storage cannot
    /// keep.
    #[error("{0} must not contain NUL characters (\\u0000)")]
    NulInJson(&'static str),
    /// The token name broke a [`TextRule`].
    #[error("name {0}")]
    TokenName(TextRule),
    /// Not one of the token kinds.
    #[error("kind must be one of producer, worker, viewer, operator, admin, metrics, got {0:?}")]
    TokenKind(String),
    /// A token's queue list is empty (leave it out for every queue).
    #[error("queues must name at least one queue, or be left out for every queue")]
    TokenQueues,
    /// A JSON value (payload, result) holds a number of magnitude 1e308 or more: PostgreSQL
    /// keeps it, but spells it back in digits that no longer read as a double.
    #[error("{0} must not contain numbers of magnitude 1e308 or more")]
    HugeNumberInJson(&'static str),
    /// A backoff policy whose base delay is not positive or whose cap is below its base.
    #[error("backoff needs a positive base delay and a cap at least as long as the base")]
    Backoff,
    /// An `Idempotency-Key` header that is empty, longer than 255 characters or holds a
    /// character that is not visible ASCII.
    #[error("Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces)")]
    IdempotencyKey,
    /// The task's unique key broke a [`TextRule`].
    #[error("uniqueKey {0}")]
    UniqueKey(TextRule),
}

/// A transition the task's current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The task is in a status from which `action` is not allowed.
    #[error("task {task} is {from} and cannot {action}")]
    InvalidTransition {
        /// The task.
        task: TaskId,
        /// Its current status.
        from: TaskStatus,
        /// What was asked.
        action: Action,
    },
    /// The task is pending, but its next run is scheduled for later.
    #[error("task {task} is not runnable before {runnable_at}")]
    NotYetRunnable {
        /// The task.
        task: TaskId,
        /// When it becomes runnable.
        runnable_at: DateTime<Utc>,
    },
    /// A report or heartbeat whose lease token is not the live attempt's.
    #[error(transparent)]
    StaleLease(#[from] StaleLease),
    /// The reaper found the lease still valid (it was heartbeated a moment before).
    #[error("the lease of task {task} runs until {expires_at}")]
    LeaseNotExpired {
        /// The task.
        task: TaskId,
        /// When the lease runs out.
        expires_at: DateTime<Utc>,
    },
    /// A worker reported on a task that another worker holds.
    #[error("task {task} is held by worker {holder}, not by {caller}")]
    WorkerMismatch {
        /// The task.
        task: TaskId,
        /// The worker that started it.
        holder: WorkerId,
        /// The worker that called.
        caller: WorkerId,
    },
}

/// Why a report or heartbeat that carries a lease token is refused: the token is not the
/// live attempt's. Each variant tells the worker what happened to its attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaleLease {
    /// The attempt's lease ran out and the reaper failed it.
    #[error("the lease of attempt {attempt} of task {task} expired and the attempt was failed")]
    LeaseExpired {
        /// The task.
        task: TaskId,
        /// The caller's attempt.
        attempt: u32,
    },
    /// A newer attempt holds or held the task; the token is an older attempt's (or unknown).
    #[error("task {task} is on attempt {current}; the token is not that attempt's")]
    AttemptSuperseded {
        /// The task.
        task: TaskId,
        /// The task's current attempt.
        current: u32,
    },
    /// The task was cancelled while the attempt ran; the worker should stop.
    #[error("task {task} was cancelled while attempt {attempt} ran")]
    TaskCancelled {
        /// The task.
        task: TaskId,
        /// The caller's attempt.
        attempt: u32,
    },
    /// The attempt already ended with a different outcome.
    #[error("attempt {attempt} of task {task} already ended as {recorded}")]
    OutcomeConflict {
        /// The task.
        task: TaskId,
        /// The caller's attempt.
        attempt: u32,
        /// How it ended.
        recorded: AttemptEnd,
    },
}

impl StaleLease {
    /// The codes of refusals that mean the caller's attempt lost its lease (reaped, or taken
    /// over by a newer attempt) while it ran. A success refused with one of them is evidence
    /// that the task ran twice; one refused for a cancelled task or a changed outcome is not.
    pub const LOST_LEASE_CODES: [&'static str; 2] = ["LEASE_EXPIRED", "ATTEMPT_SUPERSEDED"];

    /// The attempt the refused call spoke for, when the task knows it.
    pub const fn caller_attempt(&self) -> Option<u32> {
        match self {
            Self::LeaseExpired { attempt, .. }
            | Self::TaskCancelled { attempt, .. }
            | Self::OutcomeConflict { attempt, .. } => Some(*attempt),
            Self::AttemptSuperseded { .. } => None,
        }
    }

    /// The stable code clients and counters use: `LEASE_EXPIRED`, `ATTEMPT_SUPERSEDED`,
    /// `TASK_CANCELLED` or `OUTCOME_CONFLICT`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::LeaseExpired { .. } => "LEASE_EXPIRED",
            Self::AttemptSuperseded { .. } => "ATTEMPT_SUPERSEDED",
            Self::TaskCancelled { .. } => "TASK_CANCELLED",
            Self::OutcomeConflict { .. } => "OUTCOME_CONFLICT",
        }
    }
}

/// Stored fields that do not make a valid task: a bug or a hand-edited row, never user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} cannot be restored: {reason}")]
pub struct RestoreError {
    /// The task whose record is inconsistent.
    pub task: TaskId,
    /// Which invariant the record breaks.
    pub reason: String,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::test_support::{secs, t0, task_id, task_in};

    #[test]
    fn domain_errors_say_what_was_refused() {
        let mut task = task_in(TaskStatus::Succeeded);

        let err = task.cancel(t0()).unwrap_err();

        assert_eq!(err.to_string(), format!("task {} is SUCCEEDED and cannot cancel", task_id()));
        let not_expired =
            DomainError::LeaseNotExpired { task: task_id(), expires_at: t0() + secs(60) };
        assert!(not_expired.to_string().contains("runs until 2026-01-01 12:01:00"));
    }

    #[test]
    fn each_stale_lease_has_its_stable_code_and_says_which_attempt() {
        let task = task_id();
        let cases = [
            (StaleLease::LeaseExpired { task, attempt: 2 }, "LEASE_EXPIRED", "attempt 2"),
            (StaleLease::AttemptSuperseded { task, current: 3 }, "ATTEMPT_SUPERSEDED", "attempt 3"),
            (StaleLease::TaskCancelled { task, attempt: 2 }, "TASK_CANCELLED", "attempt 2"),
            (
                StaleLease::OutcomeConflict { task, attempt: 2, recorded: AttemptEnd::Succeeded },
                "OUTCOME_CONFLICT",
                "SUCCEEDED",
            ),
        ];

        for (stale, code, says) in cases {
            assert_eq!(stale.code(), code);
            let message = DomainError::from(stale.clone()).to_string();
            assert_eq!(message, stale.to_string(), "a domain error shows the stale lease as is");
            assert!(message.contains(&task.to_string()) && message.contains(says), "{message}");
        }
    }

    #[test]
    fn the_lost_lease_codes_are_those_of_an_expired_or_superseded_attempt() {
        let expired = StaleLease::LeaseExpired { task: task_id(), attempt: 1 };
        let superseded = StaleLease::AttemptSuperseded { task: task_id(), current: 2 };
        let cancelled = StaleLease::TaskCancelled { task: task_id(), attempt: 1 };

        assert_eq!(StaleLease::LOST_LEASE_CODES, [expired.code(), superseded.code()]);
        assert!(!StaleLease::LOST_LEASE_CODES.contains(&cancelled.code()));
    }
}
