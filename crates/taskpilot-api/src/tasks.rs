//! Single-task requests and the task, page, claim, history and statistics responses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting to be claimed, now or at `nextRunAt`.
    Pending,
    /// Claimed by a worker that has not reported yet.
    Running,
    /// Finished well. Terminal.
    Succeeded,
    /// Finished badly: attempts used up, a non-retryable failure, or quarantined after too
    /// many lease expiries. Terminal until rerun.
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Its lease expired `maxCrashes` times (workers died or hung without reporting): FAILED,
    /// whatever attempts remained, until rerun.
    Quarantined,
}

impl RetryState {
    /// The state as the wire spells it: `NONE`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Exhausted => "EXHAUSTED",
            Self::NonRetryable => "NON_RETRYABLE",
            Self::Quarantined => "QUARANTINED",
        }
    }
}

/// Body of `POST /api/tasks`, and one task of `POST /api/tasks/batch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTaskRequest {
    /// The queue, 1 to 64 of `a-z 0-9 _ . -`; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::QueueName>))]
    pub queue: Option<String>,
    /// The kind of work, 1 to 200 characters.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::TaskName))]
    pub name: String,
    /// Input for the worker, any JSON value; `{}` when absent.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Json))]
    pub payload: Value,
    /// Higher runs first; 0 when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = -2147483648, maximum = 2147483647))]
    pub priority: i32,
    /// Attempts before the task fails for good, 1 to 100; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_attempts: Option<i64>,
    /// Lease expiries (workers that died or hung without reporting) before the task is
    /// quarantined, 1 to 100; the server default (`--max-crashes`, 3) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_crashes: Option<i64>,
    /// Not runnable before this instant (RFC 3339, any offset).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::micros_option")]
    pub run_at: Option<DateTime<Utc>>,
    /// 1 to 255 characters, no control characters: while a PENDING or RUNNING task of the
    /// queue has this key, no other is created (see `onConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::UniqueKey>))]
    pub unique_key: Option<String>,
    /// What happens when an active task of the queue holds `uniqueKey`: `return` (the
    /// default) answers 200 with that task and `created: false`; `reject` answers 409
    /// UNIQUE_KEY_HELD naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<OnConflict>,
}

/// What a create does when an active task of its queue holds its `uniqueKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Answer 200 with the task that holds the key, `created: false`.
    Return,
    /// Answer 409 UNIQUE_KEY_HELD with the holder's id in `taskId`.
    Reject,
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
            max_crashes: None,
            run_at: None,
            unique_key: None,
            on_conflict: None,
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

    /// Quarantined after `max_crashes` lease expiries.
    #[must_use]
    pub fn max_crashes(mut self, max_crashes: i64) -> Self {
        self.max_crashes = Some(max_crashes);
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartTaskRequest {
    /// The worker taking the task.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::WorkerId))]
    pub worker_id: String,
    /// The lease, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 86400))]
    pub lease_seconds: Option<i64>,
}

/// Body of `POST /api/tasks/claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimTasksRequest {
    /// The worker claiming.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::WorkerId))]
    pub worker_id: String,
    /// At most this many tasks, 1 to 100; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub limit: Option<i64>,
    /// Only tasks in these queues; every queue when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::openapi::QueueName>>, min_items = 1, max_items = 100))]
    pub queues: Option<Vec<String>>,
    /// The lease of each claimed task, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 86400))]
    pub lease_seconds: Option<i64>,
    /// With nothing runnable, wait up to this long for a task, 0 to 30000 ms; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 30000))]
    pub wait_ms: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// The worker holding the task.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::WorkerId))]
    pub worker_id: String,
    /// The token its claim or start returned.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::LeaseToken))]
    pub lease_token: String,
    /// The new lease from now, 5 to 86400 seconds; the server default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 5, maximum = 86400))]
    pub lease_seconds: Option<i64>,
}

/// Body of `PUT /api/tasks/{id}/succeed`; may be omitted altogether.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SucceedTaskRequest {
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::WorkerId>))]
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::LeaseToken>))]
    pub lease_token: Option<String>,
    /// What the worker produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Json>))]
    pub result: Option<Value>,
}

/// Body of `PUT /api/tasks/{id}/fail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailTaskRequest {
    /// What went wrong; kept up to 8 KiB.
    pub error_message: String,
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::WorkerId>))]
    pub worker_id: Option<String>,
    /// When given, must be the live attempt's token; the call is then fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::LeaseToken>))]
    pub lease_token: Option<String>,
    /// Whether a retry may help; `true` when absent. `false` fails the task at once (FAILED,
    /// retry state NON_RETRYABLE), whatever attempts remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// Body of `PUT /api/tasks/{id}/release`: a worker hands back a task it claimed and will not
/// finish (it is stopping). The task is runnable again at once and no failure is counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseTaskRequest {
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::WorkerId>))]
    pub worker_id: Option<String>,
    /// The live attempt's token; the call is fenced like a succeed or fail.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::LeaseToken))]
    pub lease_token: String,
}

/// Query of `GET /api/tasks`. Everything is text so that the server can tell a bad value
/// (400 VALIDATION_FAILED) from an unknown parameter (400 MALFORMED_REQUEST); empty values
/// count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListTasksQuery {
    /// Only tasks in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::QueueFilter>))]
    pub queue: Option<String>,
    /// Only tasks in one of these statuses, comma-separated, e.g. `FAILED,CANCELLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::StatusFilter>))]
    pub status: Option<String>,
    /// Only tasks in this retry state, e.g. `EXHAUSTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::RetryStateFilter>))]
    pub retry_state: Option<String>,
    /// Only tasks of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::NameFilter>))]
    pub name: Option<String>,
    /// Only tasks created at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::InstantFilter>))]
    pub created_after: Option<String>,
    /// Only tasks created before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::InstantFilter>))]
    pub created_before: Option<String>,
    /// Only tasks that finished at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::InstantFilter>))]
    pub completed_after: Option<String>,
    /// Only tasks that finished before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::InstantFilter>))]
    pub completed_before: Option<String>,
    /// Only tasks whose `lastError` contains this text, ignoring case; every character is
    /// literal, `%` and `_` included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::ErrorText>))]
    pub last_error: Option<String>,
    /// Only tasks whose payload contains this JSON object, e.g. `{"customerId":42}`
    /// (`payload @> value`); a listing with it reaches the newest 10,000 such tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::PayloadFilter>))]
    pub payload: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::PageSize>))]
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::Cursor>))]
    pub cursor: Option<String>,
}

/// A task as the API shows it. Times are RFC 3339 UTC with six fractional digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Lease expiries since creation or the last rerun: attempts whose worker never
    /// reported (each also counts in `attemptCount`).
    pub crash_count: u32,
    /// Lease expiries allowed before the task is quarantined.
    pub max_crashes: u32,
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
    /// Its unique key; `null` when it has none.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// On the answers of creates only: `true` when this task was created by the request,
    /// `false` when it is the active task that already held the request's `uniqueKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// One page of `GET /api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskListResponse {
    /// The tasks, newest first.
    pub items: Vec<TaskResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of `POST /api/tasks/claim`: the claimed tasks, each with its lease token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// The tasks, in claim order; empty when nothing was runnable.
    pub items: Vec<TaskResponse>,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskEventResponse {
    /// What it records: `CREATED`, `STARTED`, `SUCCEEDED`, `FAILED`, `RETRY_SCHEDULED`,
    /// `RELEASED`, `LEASE_EXPIRED`, `CANCELLED`, `RERUN` or `REFUSED_CALL`.
    pub kind: String,
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
    /// For a refused stale call, what it was: `SUCCEED`, `FAIL`, `HEARTBEAT` or `RELEASE`.
    pub rejected_call: Option<String>,
    /// When it happened.
    #[serde(with = "crate::time::micros")]
    pub at: DateTime<Utc>,
    /// The name of the API token the call was made with: who created, started, cancelled or
    /// reran the task. `null` for the reaper's entries, for history written by a server
    /// running without tokens, and for history older than tokens.
    #[serde(default)]
    pub token_name: Option<String>,
}

/// Answer of `GET /api/tasks/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskEventListResponse {
    /// The history, oldest first.
    pub items: Vec<TaskEventResponse>,
}

/// How many stale calls of one kind were refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectionCountResponse {
    /// The refusal's code.
    pub code: String,
    /// What was refused: `SUCCEED`, `FAIL`, `HEARTBEAT` or `RELEASE`.
    pub call: String,
    /// How many times, across every server.
    pub count: u64,
}

/// Answer of `GET /api/stats/rejections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RejectionStatsResponse {
    /// Counts by code and call.
    pub items: Vec<RejectionCountResponse>,
    /// Refused success reports from attempts that had lost their lease: each is a task that
    /// ran twice, its late outcome refused.
    pub stale_successes: u64,
}

/// Tasks in each status, in `GET /api/stats`: PENDING split into the tasks that may run now
/// (`runnable`) and those waiting for their `runAt` or retry time (`scheduled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatusCountsResponse {
    /// PENDING and runnable now.
    pub runnable: u64,
    /// PENDING with a run time in the future.
    pub scheduled: u64,
    /// RUNNING.
    pub running: u64,
    /// SUCCEEDED, as long as retention keeps them.
    pub succeeded: u64,
    /// FAILED, as long as retention keeps them.
    pub failed: u64,
    /// CANCELLED, as long as retention keeps them.
    pub cancelled: u64,
}

/// One queue in `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueStatsResponse {
    /// The queue.
    pub queue: String,
    /// Its tasks by status.
    pub counts: StatusCountsResponse,
    /// Since when its longest-waiting runnable task has been runnable (its `runAt` or retry
    /// time, else its creation); `null` when none is runnable.
    #[serde(with = "crate::time::micros_option")]
    pub oldest_runnable_since: Option<DateTime<Utc>>,
    /// How long that is, in seconds, at the time of the answer; `null` when none is runnable.
    pub oldest_runnable_age_seconds: Option<f64>,
}

/// Answer of `GET /api/stats`: the tasks stored, by queue and status, across every server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// Every queue together.
    pub totals: StatusCountsResponse,
    /// The first queues by name (the server's `--metrics-max-queues`), each with its counts.
    pub queues: Vec<QueueStatsResponse>,
    /// The queues beyond those, together; `null` when there are none.
    pub other_queues: Option<StatusCountsResponse>,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(crate) mod tests {
    use chrono::TimeZone;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    /// Serializes, checks the wire form, reads it back and checks it is the same value.
    fn round_trip<T>(value: &T, wire: &Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let written = serde_json::to_value(value).unwrap();
        assert_eq!(&written, wire);
        let read: T = serde_json::from_value(written).unwrap();
        assert_eq!(&read, value);
    }

    fn at(micros: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
            + chrono::TimeDelta::microseconds(micros)
    }

    pub(crate) fn running_task() -> TaskResponse {
        TaskResponse {
            id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
            queue: "mail".into(),
            name: "send-email".into(),
            payload: json!({"to": "ada@example.com"}),
            priority: 5,
            status: TaskStatus::Running,
            retry_state: RetryState::RetryScheduled,
            attempt: 2,
            attempt_count: 1,
            max_attempts: 3,
            crash_count: 0,
            max_crashes: 3,
            next_run_at: None,
            last_error: Some("timeout".into()),
            worker_id: Some("w1".into()),
            processing_started_at: Some(at(1)),
            lease_expires_at: Some(at(300_000_001)),
            lease_token: Some("5ec2e70000004000800000000000abcd".into()),
            result: None,
            completed_at: None,
            created_at: at(0),
            updated_at: at(123_456),
            unique_key: None,
            created: None,
        }
    }

    pub(crate) fn running_task_wire() -> Value {
        json!({
            "id": "01930000-0000-7000-8000-000000000001",
            "queue": "mail",
            "name": "send-email",
            "payload": {"to": "ada@example.com"},
            "priority": 5,
            "status": "RUNNING",
            "retryState": "RETRY_SCHEDULED",
            "attempt": 2,
            "attemptCount": 1,
            "maxAttempts": 3,
            "crashCount": 0,
            "maxCrashes": 3,
            "nextRunAt": null,
            "lastError": "timeout",
            "workerId": "w1",
            "processingStartedAt": "2026-11-26T10:00:00.000001Z",
            "leaseExpiresAt": "2026-11-26T10:05:00.000001Z",
            "leaseToken": "5ec2e70000004000800000000000abcd",
            "result": null,
            "completedAt": null,
            "createdAt": "2026-11-26T10:00:00.000000Z",
            "updatedAt": "2026-11-26T10:00:00.123456Z",
            "uniqueKey": null
        })
    }

    #[test]
    fn a_task_round_trips_in_camel_case_with_microsecond_times() {
        round_trip(&running_task(), &running_task_wire());
    }

    #[test]
    fn a_task_without_lease_token_leaves_the_member_out() {
        let task = TaskResponse { lease_token: None, ..running_task() };
        let mut wire = running_task_wire();
        wire.as_object_mut().unwrap().remove("leaseToken");

        round_trip(&task, &wire);
    }

    #[test]
    fn a_create_answer_carries_its_unique_key_and_whether_it_created() {
        let task = TaskResponse {
            unique_key: Some("account-7".to_owned()),
            created: Some(false),
            ..running_task()
        };
        let mut wire = running_task_wire();
        wire["uniqueKey"] = json!("account-7");
        wire["created"] = json!(false);

        round_trip(&task, &wire);
    }

    #[test]
    fn a_create_request_names_its_unique_key_and_what_a_held_key_does() {
        let request = CreateTaskRequest {
            unique_key: Some("account-7".to_owned()),
            on_conflict: Some(OnConflict::Reject),
            ..CreateTaskRequest::new("sync")
        };

        round_trip(
            &request,
            &json!({"name": "sync", "payload": {}, "priority": 0, "uniqueKey": "account-7",
                    "onConflict": "reject"}),
        );
        round_trip(&OnConflict::Return, &json!("return"));
    }

    #[test]
    fn statuses_and_retry_states_spell_as_documented() {
        for (status, wire) in [
            (TaskStatus::Pending, "PENDING"),
            (TaskStatus::Running, "RUNNING"),
            (TaskStatus::Succeeded, "SUCCEEDED"),
            (TaskStatus::Failed, "FAILED"),
            (TaskStatus::Cancelled, "CANCELLED"),
        ] {
            round_trip(&status, &json!(wire));
            assert_eq!(status.as_str(), wire);
        }
        for (state, wire) in [
            (RetryState::None, "NONE"),
            (RetryState::RetryScheduled, "RETRY_SCHEDULED"),
            (RetryState::Exhausted, "EXHAUSTED"),
            (RetryState::NonRetryable, "NON_RETRYABLE"),
            (RetryState::Quarantined, "QUARANTINED"),
        ] {
            round_trip(&state, &json!(wire));
            assert_eq!(state.as_str(), wire);
        }
    }

    #[test]
    fn requests_leave_out_what_is_not_set_and_round_trip() {
        round_trip(
            &CreateTaskRequest::new("x"),
            &json!({"name": "x", "payload": {}, "priority": 0}),
        );
        round_trip(
            &CreateTaskRequest::new("x")
                .queue("q")
                .payload(json!([1]))
                .priority(-1)
                .max_attempts(3)
                .run_at(at(5)),
            &json!({"queue": "q", "name": "x", "payload": [1], "priority": -1, "maxAttempts": 3,
                    "runAt": "2026-11-26T10:00:00.000005Z"}),
        );
        round_trip(
            &StartTaskRequest { worker_id: "w".into(), lease_seconds: Some(30) },
            &json!({"workerId": "w", "leaseSeconds": 30}),
        );
        round_trip(
            &ClaimTasksRequest {
                worker_id: "w".into(),
                limit: Some(10),
                queues: Some(vec!["a".into()]),
                lease_seconds: None,
                wait_ms: Some(1000),
            },
            &json!({"workerId": "w", "limit": 10, "queues": ["a"], "waitMs": 1000}),
        );
        round_trip(
            &HeartbeatRequest {
                worker_id: "w".into(),
                lease_token: "t".into(),
                lease_seconds: None,
            },
            &json!({"workerId": "w", "leaseToken": "t"}),
        );
        round_trip(&SucceedTaskRequest::default(), &json!({}));
        round_trip(
            &SucceedTaskRequest {
                worker_id: Some("w".into()),
                lease_token: Some("t".into()),
                result: Some(json!({"n": 1})),
            },
            &json!({"workerId": "w", "leaseToken": "t", "result": {"n": 1}}),
        );
        round_trip(
            &FailTaskRequest {
                error_message: "e".into(),
                worker_id: None,
                lease_token: Some("t".into()),
                retryable: Some(false),
            },
            &json!({"errorMessage": "e", "leaseToken": "t", "retryable": false}),
        );
        round_trip(
            &ReleaseTaskRequest { worker_id: None, lease_token: "t".into() },
            &json!({"leaseToken": "t"}),
        );
        round_trip(
            &ReleaseTaskRequest { worker_id: Some("w".into()), lease_token: "t".into() },
            &json!({"workerId": "w", "leaseToken": "t"}),
        );
        round_trip(
            &ListTasksQuery { status: Some("PENDING".into()), ..ListTasksQuery::default() },
            &json!({"status": "PENDING"}),
        );
    }

    #[test]
    fn requests_refuse_unknown_fields_as_the_server_does() {
        let refused =
            serde_json::from_value::<CreateTaskRequest>(json!({"name": "x", "colour": 1}));

        assert!(refused.unwrap_err().to_string().contains("unknown field `colour`"));
    }

    #[test]
    fn a_run_at_with_an_offset_reads_as_utc() {
        let request: CreateTaskRequest =
            serde_json::from_value(json!({"name": "x", "runAt": "2026-11-26T12:00:00+02:00"}))
                .unwrap();

        assert_eq!(request.run_at, Some(at(0)));
    }

    #[test]
    fn pages_claims_events_and_stats_round_trip() {
        round_trip(
            &TaskListResponse { items: vec![running_task()], next_cursor: Some("c".into()) },
            &json!({"items": [running_task_wire()], "nextCursor": "c"}),
        );
        round_trip(
            &TaskListResponse { items: vec![], next_cursor: None },
            &json!({"items": [], "nextCursor": null}),
        );
        round_trip(
            &ClaimResponse { items: vec![running_task()] },
            &json!({"items": [running_task_wire()]}),
        );
        round_trip(
            &TaskEventListResponse {
                items: vec![
                    TaskEventResponse {
                        token_name: None,
                        kind: "CREATED".into(),
                        attempt: 0,
                        from: None,
                        to: TaskStatus::Pending,
                        worker_id: None,
                        error: None,
                        actor: "CLIENT".into(),
                        rejected_code: None,
                        rejected_call: None,
                        at: at(0),
                    },
                    TaskEventResponse {
                        token_name: None,
                        kind: "REFUSED_CALL".into(),
                        attempt: 1,
                        from: Some(TaskStatus::Running),
                        to: TaskStatus::Running,
                        worker_id: Some("w".into()),
                        error: Some("stale".into()),
                        actor: "WORKER".into(),
                        rejected_code: Some("LEASE_EXPIRED".into()),
                        rejected_call: Some("SUCCEED".into()),
                        at: at(7),
                    },
                ],
            },
            &json!({"items": [
                {"kind": "CREATED", "attempt": 0, "from": null, "to": "PENDING", "workerId": null, "error": null,
                 "actor": "CLIENT", "rejectedCode": null, "rejectedCall": null,
                 "at": "2026-11-26T10:00:00.000000Z", "tokenName": null},
                {"kind": "REFUSED_CALL", "attempt": 1, "from": "RUNNING", "to": "RUNNING", "workerId": "w",
                 "error": "stale", "actor": "WORKER", "rejectedCode": "LEASE_EXPIRED",
                 "rejectedCall": "SUCCEED", "at": "2026-11-26T10:00:00.000007Z", "tokenName": null},
            ]}),
        );
        round_trip(
            &RejectionStatsResponse {
                items: vec![RejectionCountResponse {
                    code: "LEASE_EXPIRED".into(),
                    call: "SUCCEED".into(),
                    count: 2,
                }],
                stale_successes: 2,
            },
            &json!({"items": [{"code": "LEASE_EXPIRED", "call": "SUCCEED", "count": 2}],
                    "staleSuccesses": 2}),
        );
    }
}
