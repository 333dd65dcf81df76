//! The bodies of the queue routes (`GET /api/queues`, `GET /api/queues/{name}`,
//! `PUT /api/queues/{name}/pause`, `PUT /api/queues/{name}/resume`) and of
//! `GET /api/tasks/{id}/explain`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{StatusCountsResponse, TaskStatus};

/// One queue: its tasks by status, its oldest runnable task, whether it is paused, and what it
/// did over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueResponse {
    /// The queue.
    pub name: String,
    /// Its tasks by status, from the counts the writes maintain (across every server).
    pub counts: StatusCountsResponse,
    /// Running tasks, each holding a lease (the same as `counts.running`).
    pub running_leases: u64,
    /// Since when its longest-waiting runnable task has been runnable; `null` when none is.
    #[serde(with = "crate::time::micros_option")]
    pub oldest_runnable_since: Option<DateTime<Utc>>,
    /// How long that is, in seconds, at the time of the answer; `null` when none is runnable.
    pub oldest_runnable_age_seconds: Option<f64>,
    /// Whether claims skip it.
    pub paused: bool,
    /// The name of the API token that paused it; `null` while it is not paused.
    pub paused_by: Option<String>,
    /// Since when it is paused; `null` while it is not.
    #[serde(with = "crate::time::micros_option")]
    pub paused_at: Option<DateTime<Utc>>,
    /// Tasks created in the last minute (among those still stored).
    pub created_last_minute: u64,
    /// Tasks that finished (SUCCEEDED, FAILED or CANCELLED) in the last minute.
    pub completed_last_minute: u64,
    /// The last claim that could take from this queue (found tasks or not) that the answering
    /// server handled; each server remembers its own, in memory. `null` when it saw none.
    #[serde(with = "crate::time::micros_option")]
    pub last_claim_at: Option<DateTime<Utc>>,
    /// Bumped by every pause or resume; 0 while the queue was never paused.
    pub version: u64,
}

/// Answer of `GET /api/queues`: every queue that holds tasks or was ever paused, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueListResponse {
    /// The queues, in name order.
    pub items: Vec<QueueResponse>,
}

/// One thing that stands between a task and a worker, or why it will not run again. Only the
/// members that go with its `code` are present.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExplainReasonResponse {
    /// `SCHEDULED`, `QUEUE_PAUSED`, `TASKS_AHEAD`, `NO_RECENT_CLAIM`, `RUNNING`, `SUCCEEDED`,
    /// `ATTEMPTS_EXHAUSTED`, `NON_RETRYABLE` or `CANCELLED`.
    pub code: String,
    /// The reason as a sentence.
    pub message: String,
    /// `SCHEDULED`: when it becomes runnable; `SUCCEEDED`, `ATTEMPTS_EXHAUSTED`,
    /// `NON_RETRYABLE`, `CANCELLED`: when it finished.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub at: Option<DateTime<Utc>>,
    /// `SCHEDULED`: whether it waits for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// `QUEUE_PAUSED`, `TASKS_AHEAD`, `NO_RECENT_CLAIM`: the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `QUEUE_PAUSED`: who paused the queue; `CANCELLED`: who cancelled the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// `QUEUE_PAUSED`: since when.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub since: Option<DateTime<Utc>>,
    /// `TASKS_AHEAD`: how many runnable tasks a claim takes first (counted up to 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `TASKS_AHEAD`: whether counting stopped at the cap (there may be more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<bool>,
    /// `NO_RECENT_CLAIM`: the answering server's last claim from the queue, if any.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub last_claim_at: Option<DateTime<Utc>>,
    /// `NO_RECENT_CLAIM`: for how many seconds no claim came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<i64>,
    /// `RUNNING`: the worker holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// `RUNNING`: when the attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub started_at: Option<DateTime<Utc>>,
    /// `RUNNING`: when its lease runs out unless heartbeated.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `RUNNING`: the last time its worker was heard from (the start or the last heartbeat:
    /// the task's `updatedAt`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// `RUNNING`: whether the lease already ran out (the reaper will take the task back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expired: Option<bool>,
    /// `ATTEMPTS_EXHAUSTED`: how many attempts failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// `QUARANTINED`: how many times its lease expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashes: Option<u32>,
}

/// Answer of `GET /api/tasks/{id}/explain`: what stands between the task and a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExplainResponse {
    /// The task.
    pub task_id: Uuid,
    /// Its status.
    pub status: TaskStatus,
    /// Whether a claim would take it now (PENDING, due, its queue not paused); it may still
    /// wait behind the tasks of a `TASKS_AHEAD` reason.
    pub runnable: bool,
    /// The reasons, in a fixed order; empty when a claim takes it next.
    pub reasons: Vec<ExplainReasonResponse>,
    /// The reasons' messages as one paragraph.
    pub summary: String,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_reason_carries_only_its_own_members() {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let reason = ExplainReasonResponse {
            code: "QUEUE_PAUSED".into(),
            message: "paused".into(),
            queue: Some("emails".into()),
            by: Some("ops".into()),
            since: Some(at),
            ..ExplainReasonResponse::default()
        };
        let wire = serde_json::to_value(&reason).unwrap();
        assert_eq!(
            wire,
            json!({"code": "QUEUE_PAUSED", "message": "paused", "queue": "emails", "by": "ops",
                   "since": "2026-11-26T10:00:00.000000Z"})
        );
        assert_eq!(serde_json::from_value::<ExplainReasonResponse>(wire).unwrap(), reason);
    }
}
