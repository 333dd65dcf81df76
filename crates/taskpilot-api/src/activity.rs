//! The bodies of what operators read about the queue's activity: `GET /api/stats/throughput`
//! (tasks created and finished per minute), `GET /api/dead-letters` (failed tasks grouped by
//! error) and `GET /api/workers` (the workers seen recently and what they run).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Query of `GET /api/stats/throughput`; text, so that a bad value is a 400
/// VALIDATION_FAILED that names it. Empty values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ThroughputQuery {
    /// How many minutes, the current one included: 1 to 1440 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::ThroughputMinutes>))]
    pub minutes: Option<String>,
    /// Only this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::QueueFilter>))]
    pub queue: Option<String>,
}

/// Tasks created and finished in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ThroughputMinuteResponse {
    /// The minute's start.
    #[serde(with = "crate::time::micros")]
    pub minute: DateTime<Utc>,
    /// Tasks created in it.
    pub created: u64,
    /// Tasks that finished in it: succeeded, failed and cancelled together.
    pub completed: u64,
    /// Tasks that succeeded in it.
    pub succeeded: u64,
    /// Tasks that failed for good in it.
    pub failed: u64,
    /// Tasks cancelled in it.
    pub cancelled: u64,
}

/// Answer of `GET /api/stats/throughput`: every minute of the window, oldest first, quiet
/// minutes included; from counts the writes keep (across every server), so finished tasks
/// that retention deleted since still count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ThroughputResponse {
    /// The queue asked for; `null` for every queue within the token's reach.
    pub queue: Option<String>,
    /// One entry per minute.
    pub items: Vec<ThroughputMinuteResponse>,
}

/// Query of `GET /api/dead-letters`. Empty values count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeadLettersQuery {
    /// Most groups, 1 to 500 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::openapi::PageSize>))]
    pub limit: Option<String>,
}

/// Failed tasks of one queue and name whose errors begin alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterGroupResponse {
    /// Their queue.
    pub queue: String,
    /// Their name.
    pub name: String,
    /// The first line of their last error, at most 200 characters; empty when they failed
    /// without one. `lastError` of `GET /api/tasks` (which matches any part of the error)
    /// with this text, `status=FAILED`, the queue and the name lists them.
    pub error: String,
    /// How many failed tasks it holds.
    pub count: u64,
    /// When the first of them failed.
    #[serde(with = "crate::time::micros")]
    pub first_failed_at: DateTime<Utc>,
    /// When the last of them failed.
    #[serde(with = "crate::time::micros")]
    pub last_failed_at: DateTime<Utc>,
}

/// Answer of `GET /api/dead-letters`: the FAILED tasks among the newest `scanned` of them,
/// grouped by queue, name and error, the largest groups first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterListResponse {
    /// How many of the newest failed tasks the groups are taken from at most.
    pub scanned: u32,
    /// The groups.
    pub items: Vec<DeadLetterGroupResponse>,
}

/// A running task as the workers' list shows it (no payload, no lease token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunningTaskResponse {
    /// The task's id.
    pub id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// The running attempt's number.
    pub attempt: u32,
    /// When the attempt started.
    #[serde(with = "crate::time::micros_option")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its lease runs out unless the worker heartbeats.
    #[serde(with = "crate::time::micros_option")]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// One worker: when it last called, and the tasks it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkerResponse {
    /// The worker's id, as it claims with.
    pub worker_id: String,
    /// Its last claim or start, as any server recorded it (to within a few seconds).
    #[serde(with = "crate::time::micros_option")]
    pub last_claim_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    #[serde(with = "crate::time::micros_option")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Its last call of any kind; `null` for a worker known only by the tasks it holds.
    #[serde(with = "crate::time::micros_option")]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The RUNNING tasks it holds, oldest attempt first.
    pub running: Vec<RunningTaskResponse>,
}

/// Answer of `GET /api/workers`: the workers seen in the last hour and any other worker that
/// holds a running task, the most recently seen first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WorkerListResponse {
    /// The workers.
    pub items: Vec<WorkerResponse>,
}
