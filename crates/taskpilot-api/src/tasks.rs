//! Single-task requests and the task, page, claim, history and statistics responses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting to be claimed, now or at `nextRunAt`.
    Pending,
    /// Claimed by a worker that has not reported yet.
    Running,
    /// Finished well. Terminal.
    Succeeded,
    /// Finished badly: attempts used up, or a non-retryable failure. Terminal until rerun.
    Failed,
    /// Stopped on request. Terminal until rerun.
    Cancelled,
}

impl TaskStatus {
    /// The status as the wire spells it: `PENDING`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Where a task stands with retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryState {
    /// No attempt has failed (or the task was rerun).
    None,
    /// An attempt failed; the task waits for its retry at `nextRunAt`.
    RetryScheduled,
    /// The last attempt failed with no attempts left: FAILED.
    Exhausted,
    /// An attempt failed with `retryable: false`: FAILED at once, whatever attempts remained.
    NonRetryable,
}

impl RetryState {
    /// The state as the wire spells it: `NONE`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Exhausted => "EXHAUSTED",
            Self::NonRetryable => "NON_RETRYABLE",
        }
    }
}

/// Body of `POST /api/tasks`, and one task of `POST /api/tasks/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTaskRequest {
    /// The queue, 1 to 64 of `a-z 0-9 _ . -`; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The kind of work, 1 to 200 characters.
    pub name: String,
    /// Input for the worker, any JSON value; `{}` when absent.
    #[serde(default = "empty_object")]
    pub payload: Value,
    /// Higher runs first; 0 when absent.
    #[serde(default)]
    pub priority: i32,
    /// Attempts before the task fails for good, 1 to 100; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    /// Not runnable before this instant (RFC 3339, any offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

impl CreateTaskRequest {
    /// A task named `name` with every other field at its default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            queue: None,
            name: name.into(),
            payload: empty_object(),
            priority: 0,
            max_attempts: None,
            run_at: None,
        }
    }

    /// In queue `queue`.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// With input `payload`.
    #[must_use]
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// With priority `priority`.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// With `max_attempts` attempts.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: i64) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Not runnable before `run_at`.
    #[must_use]
    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }
}

/// Body of `PUT /api/tasks/{id}/start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartTaskRequest {
    /// The worker taking the task.
    pub worker_id: String,
    /// The lease, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
}

/// Body of `POST /api/tasks/claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimTasksRequest {
    /// The worker claiming.
    pub worker_id: String,
    /// At most this many tasks, 1 to 100; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Only tasks in these queues; every queue when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// The lease of each claimed task, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
    /// With nothing runnable, wait up to this long for a task, 0 to 30000 ms; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// The worker holding the task.
    pub worker_id: String,
    /// The token its claim or start returned.
    pub lease_token: String,
    /// The new lease from now, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/succeed`; may be omitted altogether.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SucceedTaskRequest {
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// What the worker produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Body of `PUT /api/tasks/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailTaskRequest {
    /// What went wrong; kept up to 8 KiB.
    pub error_message: String,
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// Whether a retry may help; `true` when absent. `false` fails the task at once (FAILED,
    /// retry state NON_RETRYABLE), whatever attempts remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// Query of `GET /api/tasks`. Everything is text so that the server can tell a bad value
/// (400 VALIDATION_FAILED) from an unknown parameter (400 MALFORMED_REQUEST); empty values
/// count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListTasksQuery {
    /// Only tasks in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Only tasks in this status, e.g. `PENDING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only tasks of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A task as the API shows it. Times are RFC 3339 UTC with six fractional digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResponse {
    /// The task's id (UUID v7).
    pub id: Uuid,
    /// The queue it waits in.
    pub queue: String,
    /// The kind of work.
    pub name: String,
    /// Input for the worker.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Where the task is in its lifecycle.
    pub status: TaskStatus,
    /// Where the task stands with retries.
    pub retry_state: RetryState,
    /// How many times the task has been started (the current or last attempt's number).
    pub attempt: u32,
    /// Failed attempts so far.
    pub attempt_count: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When a pending task becomes runnable, if not at once.
    #[serde(with = "crate::time::micros_option")]
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The worker holding a running task.
    pub worker_id: Option<String>,
    /// When the running attempt started.
    #[serde(with = "crate::time::micros_option")]
    pub processing_started_at: Option<DateTime<Utc>>,
    /// When the running attempt's lease runs out unless heartbeated.
    #[serde(with = "crate::time::micros_option")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The running attempt's secret; present only in answers to the worker holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// What a succeeded task's worker reported.
    pub result: Option<Value>,
    /// When a terminal task finished.
    #[serde(with = "crate::time::micros_option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the task was created.
    #[serde(with = "crate::time::micros")]
    pub created_at: DateTime<Utc>,
    /// When the task last changed.
    #[serde(with = "crate::time::micros")]
    pub updated_at: DateTime<Utc>,
}

/// One page of `GET /api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskListResponse {
    /// The tasks, newest first.
    pub items: Vec<TaskResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of `POST /api/tasks/claim`: the claimed tasks, each with its lease token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// The tasks, in claim order; empty when nothing was runnable.
    pub items: Vec<TaskResponse>,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEventResponse {
    /// The attempt it belongs to (0 before the first start).
    pub attempt: u32,
    /// The status before; `null` for creation.
    pub from: Option<TaskStatus>,
    /// The status after; for a refused call, the status the task stayed in.
    pub to: TaskStatus,
    /// The worker involved.
    pub worker_id: Option<String>,
    /// A failure's error, or why a stale call was refused.
    pub error: Option<String>,
    /// `CLIENT`, `WORKER` or `REAPER`.
    pub actor: String,
    /// For a refused stale call, its code (`LEASE_EXPIRED`, ...).
    pub rejected_code: Option<String>,
    /// For a refused stale call, what it was: `SUCCEED`, `FAIL` or `HEARTBEAT`.
    pub rejected_call: Option<String>,
    /// When it happened.
    #[serde(with = "crate::time::micros")]
    pub at: DateTime<Utc>,
}

/// Answer of `GET /api/tasks/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEventListResponse {
    /// The history, oldest first.
    pub items: Vec<TaskEventResponse>,
}

/// How many stale calls of one kind were refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionCountResponse {
    /// The refusal's code.
    pub code: String,
    /// What was refused: `SUCCEED`, `FAIL` or `HEARTBEAT`.
    pub call: String,
    /// How many times, across every server.
    pub count: u64,
}

/// Answer of `GET /api/stats/rejections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectionStatsResponse {
    /// Counts by code and call.
    pub items: Vec<RejectionCountResponse>,
    /// Refused success reports from attempts that had lost their lease: each is a task that
    /// ran twice, its late outcome refused.
    pub stale_successes: u64,
}
