//! What goes over the wire: `*Request` bodies in, [`TaskResponse`] and [`TaskListResponse`] out.
//!
//! Requests are deserialized strictly (unknown fields are refused and named) and then
//! validated into domain types by the handlers; responses are built from a domain [`Task`].
//!
//! A task's lease token is the secret of its running attempt: only [`TaskResponse::for_holder`]
//! shows it, in the answers to the worker that holds the lease (claim, start, heartbeat).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskpilot_app::{RejectionCount, TaskEvent, TaskPage};
use taskpilot_domain::Task;

/// Body of `POST /api/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTaskRequest {
    /// The queue, 1 to 64 of `a-z 0-9 _ . -`; `default` when absent.
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
    pub max_attempts: Option<i64>,
    /// Not runnable before this instant (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Body of `PUT /api/tasks/{id}/start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartTaskRequest {
    /// The worker taking the task.
    pub worker_id: String,
    /// The lease, 5 to 86400 seconds; the server default when absent.
    pub lease_seconds: Option<i64>,
}

/// Body of `POST /api/tasks/claim`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimTasksRequest {
    /// The worker claiming.
    pub worker_id: String,
    /// At most this many tasks, 1 to 100; 1 when absent.
    pub limit: Option<i64>,
    /// Only tasks in these queues; every queue when absent.
    pub queues: Option<Vec<String>>,
    /// The lease of each claimed task, 5 to 86400 seconds; the server default when absent.
    pub lease_seconds: Option<i64>,
    /// With nothing runnable, wait up to this long for a task, 0 to 30000 ms; 0 when absent.
    pub wait_ms: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// The worker holding the task.
    pub worker_id: String,
    /// The token its claim or start returned.
    pub lease_token: String,
    /// The new lease from now, 5 to 86400 seconds; the server default when absent.
    pub lease_seconds: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/succeed`; may be omitted altogether.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SucceedTaskRequest {
    /// When given, must be the worker holding the task.
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    pub lease_token: Option<String>,
    /// What the worker produced.
    pub result: Option<Value>,
}

/// Body of `PUT /api/tasks/{id}/fail`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailTaskRequest {
    /// What went wrong; kept up to 8 KiB.
    pub error_message: String,
    /// When given, must be the worker holding the task.
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    pub lease_token: Option<String>,
}

/// Query of `GET /api/tasks`. Everything arrives as text so that the handler can tell a bad
/// value (400 VALIDATION_FAILED) from an unknown parameter (400 MALFORMED_REQUEST); empty
/// values count as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListTasksQuery {
    /// Only tasks in this queue.
    pub queue: Option<String>,
    /// Only tasks in this status, e.g. `PENDING`.
    pub status: Option<String>,
    /// Only tasks of this name.
    pub name: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResponse {
    /// The task's id (UUID v7).
    pub id: String,
    /// The queue it waits in.
    pub queue: String,
    /// The kind of work.
    pub name: String,
    /// Input for the worker.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: String,
    /// `NONE`, `RETRY_SCHEDULED` or `EXHAUSTED`.
    pub retry_state: String,
    /// How many times the task has been started (the current or last attempt's number).
    pub attempt: u32,
    /// Failed attempts so far.
    pub attempt_count: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When a pending task becomes runnable, if not at once.
    pub next_run_at: Option<String>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// The worker holding a running task.
    pub worker_id: Option<String>,
    /// When the running attempt started.
    pub processing_started_at: Option<String>,
    /// When the running attempt's lease runs out unless heartbeated.
    pub lease_expires_at: Option<String>,
    /// The running attempt's secret; present only in answers to the worker holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<String>,
    /// What a succeeded task's worker reported.
    pub result: Option<Value>,
    /// When a terminal task finished.
    pub completed_at: Option<String>,
    /// When the task was created.
    pub created_at: String,
    /// When the task last changed.
    pub updated_at: String,
}

/// RFC 3339 in UTC with exactly six fractional digits, as stored.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl TaskResponse {
    /// The task as its lease holder sees it: with the lease token of a running attempt.
    pub fn for_holder(task: &Task) -> Self {
        Self { lease_token: task.lease().map(|l| l.token.to_string()), ..Self::from(task) }
    }
}

/// The task as anybody sees it: without the lease token.
impl From<&Task> for TaskResponse {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id().to_string(),
            queue: task.queue().to_string(),
            name: task.name().to_string(),
            payload: task.payload().clone(),
            priority: task.priority(),
            status: task.status().as_str().to_owned(),
            retry_state: task.retry_state().as_str().to_owned(),
            attempt: task.attempt(),
            attempt_count: task.attempt_count(),
            max_attempts: task.max_attempts().get(),
            next_run_at: task.next_run_at().map(format_time),
            last_error: task.last_error().map(str::to_owned),
            worker_id: task.worker_id().map(ToString::to_string),
            processing_started_at: task.processing_started_at().map(format_time),
            lease_expires_at: task.lease().map(|l| format_time(l.expires_at)),
            lease_token: None,
            result: task.result().cloned(),
            completed_at: task.completed_at().map(format_time),
            created_at: format_time(task.created_at()),
            updated_at: format_time(task.updated_at()),
        }
    }
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

impl From<&TaskPage> for TaskListResponse {
    fn from(page: &TaskPage) -> Self {
        Self {
            items: page.items.iter().map(TaskResponse::from).collect(),
            next_cursor: page.next_cursor.map(|c| c.encode()),
        }
    }
}

/// Answer of `POST /api/tasks/claim`: the claimed tasks, each with its lease token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// The tasks, in claim order; empty when nothing was runnable.
    pub items: Vec<TaskResponse>,
}

impl ClaimResponse {
    /// The answer to the worker that claimed `tasks`.
    pub fn for_holder(tasks: &[Task]) -> Self {
        Self { items: tasks.iter().map(TaskResponse::for_holder).collect() }
    }
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskEventResponse {
    /// The attempt it belongs to (0 before the first start).
    pub attempt: u32,
    /// The status before; `null` for creation.
    pub from: Option<String>,
    /// The status after; for a refused call, the status the task stayed in.
    pub to: String,
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
    pub at: String,
}

impl From<&TaskEvent> for TaskEventResponse {
    fn from(event: &TaskEvent) -> Self {
        Self {
            attempt: event.attempt,
            from: event.from.map(|s| s.as_str().to_owned()),
            to: event.to.as_str().to_owned(),
            worker_id: event.worker_id.as_ref().map(ToString::to_string),
            error: event.error.clone(),
            actor: event.actor.as_str().to_owned(),
            rejected_code: event.rejected.as_ref().map(|r| r.code.clone()),
            rejected_call: event.rejected.as_ref().map(|r| r.call.as_str().to_owned()),
            at: format_time(event.at),
        }
    }
}

/// Answer of `GET /api/tasks/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEventListResponse {
    /// The history, oldest first.
    pub items: Vec<TaskEventResponse>,
}

/// How many stale calls of one kind were refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectionCountResponse {
    /// The refusal's code.
    pub code: String,
    /// What was refused: `SUCCEED`, `FAIL` or `HEARTBEAT`.
    pub call: String,
    /// How many times, across every server.
    pub count: u64,
}

/// Answer of `GET /api/stats/rejections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectionStatsResponse {
    /// Counts by code and call.
    pub items: Vec<RejectionCountResponse>,
    /// Refused success reports from attempts that had lost their lease: each is a task that
    /// ran twice, its late outcome refused.
    pub stale_successes: u64,
}

impl From<&[RejectionCount]> for RejectionStatsResponse {
    fn from(counts: &[RejectionCount]) -> Self {
        Self {
            items: counts
                .iter()
                .map(|c| RejectionCountResponse {
                    code: c.code.clone(),
                    call: c.call.as_str().to_owned(),
                    count: c.count,
                })
                .collect(),
            stale_successes: counts
                .iter()
                .filter(|c| c.shows_a_second_run())
                .map(|c| c.count)
                .sum(),
        }
    }
}
