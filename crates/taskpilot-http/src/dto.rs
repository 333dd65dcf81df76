//! What goes over the wire: `*Request` bodies in, [`TaskResponse`] and [`TaskListResponse`] out.
//!
//! Requests are deserialized strictly (unknown fields are refused and named) and then
//! validated into domain types by the handlers; responses are built from a domain [`Task`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskpilot_app::TaskPage;
use taskpilot_domain::Task;

/// Body of `POST /api/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTaskRequest {
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
}

/// Body of `PUT /api/tasks/{id}/succeed`; may be omitted altogether.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SucceedTaskRequest {
    /// When given, must be the worker holding the task.
    pub worker_id: Option<String>,
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
}

/// Query of `GET /api/tasks`. Everything arrives as text so that the handler can tell a bad
/// value (400 VALIDATION_FAILED) from an unknown parameter (400 MALFORMED_REQUEST); empty
/// values count as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListTasksQuery {
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

impl From<&Task> for TaskResponse {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id().to_string(),
            name: task.name().to_string(),
            payload: task.payload().clone(),
            priority: task.priority(),
            status: task.status().as_str().to_owned(),
            retry_state: task.retry_state().as_str().to_owned(),
            attempt_count: task.attempt_count(),
            max_attempts: task.max_attempts().get(),
            next_run_at: task.next_run_at().map(format_time),
            last_error: task.last_error().map(str::to_owned),
            worker_id: task.worker_id().map(ToString::to_string),
            processing_started_at: task.processing_started_at().map(format_time),
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
