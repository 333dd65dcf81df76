//! The vocabulary of a task's life: its status, its retry state, the transitions a caller
//! asks for, and the data each status holds.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{Lease, WorkerId};

/// Where a task is in its life, without the data of each state. See [`TaskState`] for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum TaskStatus {
    /// Waiting to be started, now or at `next_run_at`.
    Pending,
    /// Started by a worker that has not reported yet.
    Running,
    /// Finished well. Terminal.
    Succeeded,
    /// Finished badly: out of attempts, or failed permanently. Terminal until rerun.
    Failed,
    /// Stopped on request. Terminal until rerun.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 5] =
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The status as the API and storage spell it: `PENDING`, `RUNNING`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Reads the spelling of [`TaskStatus::as_str`], ignoring ASCII case.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw))
    }

    /// Whether no worker will touch the task again (until a rerun).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task stands with its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum RetryState {
    /// No failed attempt counts against the task.
    None,
    /// At least one attempt failed and another is scheduled or running.
    RetryScheduled,
    /// Every attempt failed; the task is `FAILED`.
    Exhausted,
    /// The worker reported a failure that no retry can fix; the task is `FAILED` without
    /// using its remaining attempts.
    NonRetryable,
    /// The task's lease expired as often as its crash budget allows (`maxCrashes`): its
    /// workers died or hung without reporting, so it is `FAILED` without using its remaining
    /// attempts, until an operator reruns it.
    Quarantined,
}

impl RetryState {
    /// The state as the API and storage spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Exhausted => "EXHAUSTED",
            Self::NonRetryable => "NON_RETRYABLE",
            Self::Quarantined => "QUARANTINED",
        }
    }

    /// Reads the spelling of [`RetryState::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Every retry state.
    pub const ALL: [Self; 5] =
        [Self::None, Self::RetryScheduled, Self::Exhausted, Self::NonRetryable, Self::Quarantined];
}

impl fmt::Display for RetryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition a caller can ask for; named in
/// [`DomainError::InvalidTransition`](crate::DomainError::InvalidTransition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// [`Task::start`](crate::Task::start).
    Start,
    /// [`Task::succeed`](crate::Task::succeed).
    Succeed,
    /// [`Task::fail_and_schedule_retry`](crate::Task::fail_and_schedule_retry).
    Fail,
    /// [`Task::cancel`](crate::Task::cancel).
    Cancel,
    /// [`Task::rerun`](crate::Task::rerun).
    Rerun,
    /// [`Task::heartbeat`](crate::Task::heartbeat).
    Heartbeat,
    /// [`Task::expire_lease`](crate::Task::expire_lease).
    ExpireLease,
    /// [`Task::release`](crate::Task::release).
    Release,
    /// [`Task::check_deletable`](crate::Task::check_deletable).
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::Succeed => "succeed",
            Self::Fail => "fail",
            Self::Cancel => "cancel",
            Self::Rerun => "rerun",
            Self::Heartbeat => "heartbeat",
            Self::ExpireLease => "expire its lease",
            Self::Release => "release",
            Self::Delete => "be deleted",
        })
    }
}

/// A task's status with the data that only that status has.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting; runnable now when `next_run_at` is `None`, else from then on.
    Pending {
        /// When a scheduled retry or a delayed first run becomes runnable.
        next_run_at: Option<DateTime<Utc>>,
    },
    /// Held by a worker.
    Running {
        /// The worker that started it.
        worker_id: WorkerId,
        /// When this attempt started.
        started_at: DateTime<Utc>,
        /// The attempt's lease.
        lease: Lease,
    },
    /// Done.
    Succeeded {
        /// When the worker reported success.
        completed_at: DateTime<Utc>,
        /// What the worker reported, if anything.
        result: Option<Value>,
    },
    /// Out of attempts.
    Failed {
        /// When the last attempt failed.
        completed_at: DateTime<Utc>,
    },
    /// Stopped on request.
    Cancelled {
        /// When it was cancelled.
        completed_at: DateTime<Utc>,
    },
}

impl TaskState {
    /// The status of this state.
    pub const fn status(&self) -> TaskStatus {
        match self {
            Self::Pending { .. } => TaskStatus::Pending,
            Self::Running { .. } => TaskStatus::Running,
            Self::Succeeded { .. } => TaskStatus::Succeeded,
            Self::Failed { .. } => TaskStatus::Failed,
            Self::Cancelled { .. } => TaskStatus::Cancelled,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn status_and_retry_state_spellings_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
            assert_eq!(TaskStatus::parse(&status.as_str().to_lowercase()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for retry in [RetryState::None, RetryState::RetryScheduled, RetryState::Exhausted] {
            assert_eq!(RetryState::parse(retry.as_str()), Some(retry));
            assert_eq!(retry.to_string(), retry.as_str());
        }
        assert_eq!(TaskStatus::parse("DONE"), None);
        assert_eq!(RetryState::parse("retry"), None);
        let terminal: Vec<_> = TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Cancelled]);
    }

    #[test]
    fn every_retry_state_spelling_round_trips_and_non_retryable_is_spelled_so() {
        for retry in RetryState::ALL {
            assert_eq!(RetryState::parse(retry.as_str()), Some(retry));
            assert_eq!(retry.to_string(), retry.as_str());
        }
        assert_eq!(RetryState::NonRetryable.as_str(), "NON_RETRYABLE");
        assert_eq!(RetryState::Quarantined.as_str(), "QUARANTINED");
        assert_eq!(RetryState::parse("QUARANTINED"), Some(RetryState::Quarantined));
        assert_eq!(RetryState::parse("non_retryable"), None, "spellings are exact");
        assert_eq!(RetryState::parse("NONRETRYABLE"), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn non_retryable_serializes_as_its_spelling() {
        use serde_json::json;

        let json = serde_json::to_value(RetryState::NonRetryable).unwrap();

        assert_eq!(json, json!("NON_RETRYABLE"));
        assert_eq!(serde_json::from_value::<RetryState>(json).unwrap(), RetryState::NonRetryable);
    }
}
