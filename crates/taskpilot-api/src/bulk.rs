//! Bodies of `POST /api/tasks/bulk`: rerun, cancel or delete many tasks at once, chosen by
//! the listing's filters or by id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What a bulk action does to each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BulkActionKind {
    /// A FAILED or CANCELLED task back to PENDING with a fresh attempt budget.
    Rerun,
    /// A PENDING or RUNNING task to CANCELLED.
    Cancel,
    /// A SUCCEEDED, FAILED or CANCELLED task deleted with its history.
    Delete,
}

/// The listing's filters (`GET /api/tasks`) as a JSON object; every condition given must
/// hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkFilter {
    /// Only tasks in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::QueueName>))]
    pub queue: Option<String>,
    /// Only tasks in one of these statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<crate::TaskStatus>>,
    /// Only tasks in this retry state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_state: Option<crate::RetryState>,
    /// Only tasks of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::TaskName>))]
    pub name: Option<String>,
    /// Only tasks created at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks that finished at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_after: Option<DateTime<Utc>>,
    /// Only tasks that finished before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_before: Option<DateTime<Utc>>,
    /// Only tasks whose `lastError` contains this text, ignoring case; `%` and `_` are
    /// literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::ErrorText>))]
    pub last_error: Option<String>,
    /// Only tasks whose payload contains this JSON object (`payload @> value`), among the
    /// newest 10,000 such tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Value>,
}

/// Body of `POST /api/tasks/bulk`. Name the tasks by `filter` or by `ids`, not both. A
/// filter with no condition takes every task, and is accepted only with `"all": true`, so
/// that a forgotten filter never reruns, cancels or deletes everything by accident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkActionRequest {
    /// What to do to each task.
    pub action: BulkActionKind,
    /// Which tasks, by the listing's filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<BulkFilter>,
    /// Which tasks, by id (1 to 10,000 ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<Uuid>>,
    /// With `ids`: the version (the `ETag`, unquoted) some of them must still be at, by id;
    /// a task that moved on is skipped with `PRECONDITION_FAILED` and left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::HashMap<String, u64>>))]
    pub versions: Option<std::collections::BTreeMap<Uuid, u64>>,
    /// Must be `true` for a filter with no condition: every task (within the token's queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Only count the tasks that match; change nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// At most this many tasks, 1 to 10,000 (default 1,000), newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
    pub limit: Option<i64>,
}

/// What happened to one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkOutcome {
    /// The action was done.
    Done,
    /// A rule refused it; `code` says which.
    Skipped,
}

/// One task's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// The task.
    pub id: Uuid,
    /// Done or skipped.
    pub outcome: BulkOutcome,
    /// For a skipped task: the problem code the single call would have answered, e.g.
    /// `INVALID_TRANSITION` or `TASK_NOT_FOUND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// For a skipped task: why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Answer of `POST /api/tasks/bulk` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BulkActionResponse {
    /// The recorded action's id; absent for a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// How many tasks matched (at most `limit`).
    pub matched: u64,
    /// Whether more tasks than `limit` match the filter: run again for the rest.
    pub more: bool,
    /// Whether this was only a count.
    pub dry_run: bool,
    /// How many were done.
    pub done: u64,
    /// How many were skipped.
    pub skipped: u64,
    /// Each task's outcome, newest first for a filter, in the order given for ids; empty
    /// for a dry run.
    pub results: Vec<BulkResult>,
}
