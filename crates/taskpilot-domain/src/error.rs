//! What can go wrong in the domain, one variant per broken rule.

use chrono::{DateTime, Utc};

use crate::{Action, TaskId, TaskStatus, TextRule, WorkerId};

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
    /// A backoff policy whose base delay is not positive or whose cap is below its base.
    #[error("backoff needs a positive base delay and a cap at least as long as the base")]
    Backoff,
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

/// Stored fields that do not make a valid task: a bug or a hand-edited row, never user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} cannot be restored: {reason}")]
pub struct RestoreError {
    /// The task whose record is inconsistent.
    pub task: TaskId,
    /// Which invariant the record breaks.
    pub reason: String,
}
