//! The wire mapping, both ways: request bodies of the shared contract
//! ([`taskpilot_api`]) into validated domain and use-case values, and domain and use-case
//! values into response bodies. The api crate must not know the domain, so the mapping lives
//! here; handlers only call it.
//!
//! Requests are deserialized strictly by [`crate::body`] (objects only, unknown fields refused,
//! the field at fault named) and
//! then validated here, field by field in the order the bodies list them: the first invalid
//! value answers 400 VALIDATION_FAILED (or MALFORMED_REQUEST for a path that is no UUID).
//! Parsing a task id or a worker id also records it on the request's log span.
//!
//! A task's lease token is the secret of its running attempt: only [`holder_response`] shows
//! it, in the answers to the worker that holds the lease (claim, start, heartbeat).

use std::time::Duration;

use actix_web::http::header::HeaderValue;
use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_api::limits::{
    DEFAULT_BULK, MAX_BATCH, MAX_BULK, MAX_CLAIM_BATCH, MAX_CLAIM_QUEUES, MAX_CLAIM_WAIT_MS,
    MAX_ERROR_FILTER_CHARS, MAX_PAGE_SIZE,
};
pub use taskpilot_api::time::format as format_time;
use taskpilot_api::{
    BulkActionKind, BulkActionRequest, BulkActionResponse, BulkOutcome, BulkResult, ClaimResponse,
    ClaimTasksRequest, CompletionItem, CompletionOutcome, CompletionResult, CreateTaskBatchRequest,
    CreateTaskBatchResponse, CreateTaskRequest, FailTaskRequest, HeartbeatRequest, ListTasksQuery,
    QueueStatsResponse, RejectionCountResponse, RejectionStatsResponse, ReleaseTaskRequest,
    RetryState, StartTaskRequest, StatsResponse, StatusCountsResponse, SucceedTaskRequest,
    TaskEventListResponse, TaskEventResponse, TaskListResponse, TaskResponse, TaskStatus,
};
use taskpilot_api::{ExplainReasonResponse, ExplainResponse, QueueListResponse, QueueResponse};
use taskpilot_app::{
    BulkAction, BulkReport, BulkRequest, BulkSelection, Completion, CreateTask, Created,
    OnConflict, RejectionCount, ReportedOutcome, StatusCounts, TaskCounts, TaskEvent, TaskFilter,
    TaskPage, VersionMatch,
};
use taskpilot_domain::{
    check_json, to_micros, LeaseDuration, LeaseToken, MaxAttempts, MaxCrashes, QueueName, Reporter,
    Task, TaskId, TaskName, UniqueKey, WorkerId,
};
use tracing::Span;
use uuid::Uuid;

use crate::error::ApiError;

// ---- Requests: api bodies into validated values ----

/// A task id from the path; MALFORMED_REQUEST when it is no UUID.
///
/// # Errors
/// [`ApiError::Malformed`] when `raw` is not a UUID.
pub fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    let id = Uuid::parse_str(raw)
        .map_err(|e| ApiError::Malformed(format!("task id {raw:?} is not a UUID: {e}")))?;
    Span::current().record("task_id", tracing::field::display(id));
    Ok(TaskId::from_uuid(id))
}

/// A queue name from a path.
///
/// # Errors
/// When the domain refuses it (400 VALIDATION_FAILED).
pub fn queue_name(raw: &str) -> Result<taskpilot_domain::QueueName, ApiError> {
    Ok(taskpilot_domain::QueueName::parse(raw)?)
}

/// The `ETag` of a queue: its version, quoted.
pub fn queue_etag(view: &taskpilot_app::QueueView) -> String {
    format!("\"{}\"", view.state.version)
}

/// A worker id.
///
/// # Errors
/// When it is empty or too long.
pub fn worker_id(raw: &str) -> Result<WorkerId, ApiError> {
    let worker = WorkerId::parse(raw)?;
    Span::current().record("worker_id", tracing::field::display(&worker));
    Ok(worker)
}

/// A lease length in seconds, when one is asked for.
///
/// # Errors
/// Outside the domain's bounds.
pub fn lease(raw: Option<i64>) -> Result<Option<LeaseDuration>, ApiError> {
    Ok(raw.map(LeaseDuration::from_secs).transpose()?)
}

/// A lease token.
///
/// # Errors
/// When it is not a token the server hands out.
pub fn lease_token(raw: &str) -> Result<LeaseToken, ApiError> {
    Ok(LeaseToken::parse(raw)?)
}

/// Who reports, as far as the body says: fenced when it carries a token.
///
/// # Errors
/// When the worker id or the token is invalid.
pub fn reporter(worker_id: Option<&str>, lease_token: Option<&str>) -> Result<Reporter, ApiError> {
    let worker = worker_id.map(self::worker_id).transpose()?;
    Ok(match lease_token.map(self::lease_token).transpose()? {
        Some(token) => Reporter::lease(worker, token),
        None => Reporter { worker_id: worker, lease_token: None },
    })
}

/// A task to create, validated.
///
/// # Errors
/// The first invalid value.
pub fn create_task(body: CreateTaskRequest) -> Result<CreateTask, ApiError> {
    check_json("payload", &body.payload)?;
    Ok(CreateTask {
        queue: body.queue.as_deref().map(QueueName::parse).transpose()?,
        name: TaskName::parse(&body.name)?,
        payload: body.payload,
        priority: body.priority,
        max_attempts: body.max_attempts.map(MaxAttempts::new).transpose()?,
        max_crashes: body.max_crashes.map(MaxCrashes::new).transpose()?,
        run_at: body.run_at.map(|at| instant("runAt", at)).transpose()?,
        unique_key: body.unique_key.as_deref().map(UniqueKey::parse).transpose()?,
        on_conflict: match body.on_conflict {
            None | Some(taskpilot_api::OnConflict::Return) => OnConflict::Return,
            Some(taskpilot_api::OnConflict::Reject) => OnConflict::Reject,
        },
    })
}

/// An instant a client sent, as it will be stored (to the microsecond, a leap second in the
/// next minute), when the API's format can write it back: years 0000 to 9999 in UTC.
///
/// # Errors
/// [`ApiError::Validation`] naming `field` for an instant outside that range.
pub fn instant(field: &str, at: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let stored = to_micros(at);
    if !taskpilot_api::time::in_range(stored) {
        return Err(ApiError::Validation(format!(
            "{field} must be between 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z in \
             UTC, got {}",
            stored.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )));
    }
    Ok(stored)
}

/// 1 to [`MAX_BATCH`] items, or 400 naming `list`.
///
/// # Errors
/// [`ApiError::Validation`] for an empty or oversized list.
pub fn check_batch_size(list: &str, len: usize) -> Result<(), ApiError> {
    if len == 0 || len > MAX_BATCH {
        return Err(ApiError::Validation(format!(
            "{list} must hold 1 to {MAX_BATCH} items, got {len}"
        )));
    }
    Ok(())
}

/// Every task of a batch, validated. All or nothing: the first invalid task fails the whole
/// batch, naming its index.
///
/// # Errors
/// A list of the wrong size, or [`ApiError::InvalidItem`] for the first invalid task.
pub fn create_batch(body: CreateTaskBatchRequest) -> Result<Vec<CreateTask>, ApiError> {
    check_batch_size("tasks", body.tasks.len())?;
    body.tasks
        .into_iter()
        .enumerate()
        .map(|(index, task)| {
            create_task(task).map_err(|e| ApiError::InvalidItem {
                list: "tasks",
                index,
                detail: e.to_string(),
            })
        })
        .collect()
}

/// One outcome of a batch completion, validated: the same rules as a single succeed, fail or
/// release, except that the lease token is required.
///
/// # Errors
/// The first invalid value, or fields that do not go with the outcome.
pub fn completion(item: &CompletionItem) -> Result<Completion, ApiError> {
    let worker = item.worker_id.as_deref().map(WorkerId::parse).transpose()?;
    let token = lease_token(&item.lease_token)?;
    let outcome = match item.outcome {
        CompletionOutcome::Succeeded => {
            if item.error_message.is_some() || item.retryable.is_some() {
                return Err(ApiError::Validation(
                    "errorMessage and retryable are only for outcome failed".to_owned(),
                ));
            }
            if let Some(result) = &item.result {
                check_json("result", result)?;
            }
            ReportedOutcome::Succeeded { result: item.result.clone() }
        }
        CompletionOutcome::Failed => {
            if item.result.is_some() {
                return Err(ApiError::Validation(
                    "result is only for outcome succeeded".to_owned(),
                ));
            }
            let Some(error) = item.error_message.clone() else {
                return Err(ApiError::Validation(
                    "errorMessage is required with outcome failed".to_owned(),
                ));
            };
            ReportedOutcome::Failed { error, retryable: item.retryable.unwrap_or(true) }
        }
        CompletionOutcome::Released => {
            if item.result.is_some() || item.error_message.is_some() || item.retryable.is_some() {
                return Err(ApiError::Validation(
                    "result, errorMessage and retryable are not for outcome released".to_owned(),
                ));
            }
            ReportedOutcome::Released
        }
    };
    Ok(Completion {
        id: TaskId::from_uuid(item.id),
        reporter: Reporter::lease(worker, token),
        outcome,
    })
}

/// A listing's query, validated. Empty parameters count as absent.
#[derive(Debug)]
pub struct ListRequest {
    /// Which tasks.
    pub filter: TaskFilter,
    /// Where the previous page ended, as the client got it.
    pub cursor: Option<String>,
    /// The page size asked for; the use case checks its range.
    pub limit: Option<u32>,
}

/// `GET /api/tasks`'s query, validated: each parameter named in the error of its bad value.
///
/// # Errors
/// An unknown status or retry state, an invalid name or queue, an instant that is not
/// RFC 3339, error text too long, a payload that is no JSON object, or a limit that is not
/// a number.
pub fn list_request(query: ListTasksQuery) -> Result<ListRequest, ApiError> {
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let statuses = match present(query.status) {
        None => Vec::new(),
        Some(raw) => raw.split(',').map(status_named).collect::<Result<Vec<_>, _>>()?,
    };
    let retry_state = present(query.retry_state)
        .map(|raw| {
            taskpilot_domain::RetryState::parse(&raw).ok_or_else(|| {
                ApiError::Validation(format!(
                    "retryState must be one of NONE, RETRY_SCHEDULED, EXHAUSTED, \
                     NON_RETRYABLE, got {raw:?}"
                ))
            })
        })
        .transpose()?;
    let at =
        |field: &str, raw: Option<String>| present(raw).map(|raw| rfc3339(field, &raw)).transpose();
    let payload = present(query.payload)
        .map(|raw| {
            serde_json::from_str::<Value>(&raw).map_err(|_| {
                ApiError::Validation(format!(
                    "payload must be a JSON object such as {{\"customerId\":42}}, got {raw:?}"
                ))
            })
        })
        .transpose()?;
    let filter = task_filter(
        RawFilter {
            queue: present(query.queue),
            statuses,
            retry_state,
            name: present(query.name),
            created_after: at("createdAfter", query.created_after)?,
            created_before: at("createdBefore", query.created_before)?,
            completed_after: at("completedAfter", query.completed_after)?,
            completed_before: at("completedBefore", query.completed_before)?,
            last_error: present(query.last_error),
            payload,
        },
        "",
    )?;
    let limit = present(query.limit)
        .map(|raw| {
            raw.parse::<u32>().map_err(|_| {
                ApiError::Validation(format!(
                    "limit must be an integer between 1 and {MAX_PAGE_SIZE}, got {raw:?}"
                ))
            })
        })
        .transpose()?;
    let cursor = present(query.cursor);
    Ok(ListRequest { filter, cursor, limit })
}

/// One status of a `status` list, in any case.
fn status_named(raw: &str) -> Result<taskpilot_domain::TaskStatus, ApiError> {
    taskpilot_domain::TaskStatus::parse(raw).ok_or_else(|| {
        let all =
            taskpilot_domain::TaskStatus::ALL.map(taskpilot_domain::TaskStatus::as_str).join(", ");
        ApiError::Validation(format!(
            "status must be one or more of {all}, comma-separated, got {raw:?}"
        ))
    })
}

/// An RFC 3339 instant of a query parameter.
fn rfc3339(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(raw).map_err(|_| {
        ApiError::Validation(format!(
            "{field} must be an RFC 3339 instant such as 2026-12-01T12:00:00Z, got {raw:?}"
        ))
    })?;
    instant(field, at.with_timezone(&Utc))
}

/// The filters as a query or a bulk body gives them, before validation.
struct RawFilter {
    queue: Option<String>,
    statuses: Vec<taskpilot_domain::TaskStatus>,
    retry_state: Option<taskpilot_domain::RetryState>,
    name: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    completed_after: Option<DateTime<Utc>>,
    completed_before: Option<DateTime<Utc>>,
    last_error: Option<String>,
    payload: Option<Value>,
}

/// Validates the filters; errors name the field after `prefix` (`""` for the query,
/// `"filter."` for a bulk body).
fn task_filter(raw: RawFilter, prefix: &str) -> Result<TaskFilter, ApiError> {
    let named = |e: ApiError| match e {
        ApiError::Validation(detail) => ApiError::Validation(format!("{prefix}{detail}")),
        other => other,
    };
    let invalid =
        |e: taskpilot_domain::ValidationError| ApiError::Validation(format!("{prefix}{e}"));
    let queue = raw.queue.as_deref().map(QueueName::parse).transpose().map_err(invalid)?;
    let name = raw.name.as_deref().map(TaskName::parse).transpose().map_err(invalid)?;
    let mut statuses = Vec::with_capacity(raw.statuses.len());
    for status in raw.statuses {
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    let at = |field: &str, value: Option<DateTime<Utc>>| {
        value.map(|v| instant(field, v)).transpose().map_err(named)
    };
    let error_contains = match raw.last_error {
        Some(text) if text.chars().count() > MAX_ERROR_FILTER_CHARS => {
            return Err(named(ApiError::Validation(format!(
                "lastError must be at most {MAX_ERROR_FILTER_CHARS} characters"
            ))))
        }
        Some(text) if text.contains('\0') => {
            return Err(named(ApiError::Validation(
                "lastError must not contain NUL characters (\\u0000)".to_owned(),
            )))
        }
        other => other,
    };
    if let Some(payload) = &raw.payload {
        if !payload.is_object() {
            return Err(named(ApiError::Validation(format!(
                "payload must be a JSON object such as {{\"customerId\":42}}, got {payload}"
            ))));
        }
        check_json("payload", payload).map_err(invalid)?;
    }
    Ok(TaskFilter {
        queue,
        statuses,
        retry_state: raw.retry_state,
        name,
        created_after: at("createdAfter", raw.created_after)?,
        created_before: at("createdBefore", raw.created_before)?,
        completed_after: at("completedAfter", raw.completed_after)?,
        completed_before: at("completedBefore", raw.completed_before)?,
        error_contains,
        payload_contains: raw.payload,
        ..TaskFilter::default()
    })
}

/// A wire status as the domain names it.
fn domain_status(status: TaskStatus) -> taskpilot_domain::TaskStatus {
    use taskpilot_domain::TaskStatus as S;
    match status {
        TaskStatus::Pending => S::Pending,
        TaskStatus::Running => S::Running,
        TaskStatus::Succeeded => S::Succeeded,
        TaskStatus::Failed => S::Failed,
        TaskStatus::Cancelled => S::Cancelled,
    }
}

/// A wire retry state as the domain names it.
fn domain_retry_state(state: RetryState) -> taskpilot_domain::RetryState {
    use taskpilot_domain::RetryState as R;
    match state {
        RetryState::None => R::None,
        RetryState::RetryScheduled => R::RetryScheduled,
        RetryState::Exhausted => R::Exhausted,
        RetryState::NonRetryable => R::NonRetryable,
        RetryState::Quarantined => R::Quarantined,
    }
}

/// `POST /api/tasks/bulk`'s body, validated.
///
/// A filter with no condition would take every task: it is refused unless the body says
/// `"all": true`, so that a forgotten or misspelt filter never acts on everything.
///
/// # Errors
/// Both or neither of `filter` and `ids`; an empty filter without `all`; a limit outside
/// 1 to [`MAX_BULK`]; more ids than the limit; any invalid filter value.
pub fn bulk_request(body: BulkActionRequest) -> Result<BulkRequest, ApiError> {
    let action = match body.action {
        BulkActionKind::Rerun => BulkAction::Rerun,
        BulkActionKind::Cancel => BulkAction::Cancel,
        BulkActionKind::Delete => BulkAction::Delete,
    };
    let limit = match body.limit {
        None => None,
        Some(n) => {
            Some(u32::try_from(n).ok().filter(|n| (1..=MAX_BULK).contains(n)).ok_or_else(|| {
                ApiError::Validation(format!("limit must be between 1 and {MAX_BULK}, got {n}"))
            })?)
        }
    };
    let all = body.all.unwrap_or(false);
    let versions = body.versions.unwrap_or_default();
    if let Some(id) =
        versions.keys().find(|id| !body.ids.as_ref().is_some_and(|ids| ids.contains(id)))
    {
        return Err(ApiError::Validation(format!(
            "versions.{id} names a task that is not in ids (versions go with ids only)"
        )));
    }
    let expected_versions =
        versions.into_iter().map(|(id, version)| (TaskId::from_uuid(id), version)).collect();
    let (selection, limit) = match (body.filter, body.ids) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Validation("give filter or ids, not both".to_owned()))
        }
        (None, Some(ids)) => {
            let most = limit.unwrap_or(MAX_BULK);
            if ids.is_empty() || ids.len() > most as usize {
                return Err(ApiError::Validation(format!(
                    "ids must hold 1 to {most} ids (the limit), got {}",
                    ids.len()
                )));
            }
            let ids = ids.into_iter().map(TaskId::from_uuid).collect();
            (BulkSelection::Ids(ids), most)
        }
        (filter, None) => {
            if filter.is_none() && !all {
                return Err(ApiError::Validation(
                    "filter or ids is required (or \"all\": true for every task)".to_owned(),
                ));
            }
            let f = filter.unwrap_or_default();
            let filter = task_filter(
                RawFilter {
                    queue: f.queue,
                    statuses: f.status.unwrap_or_default().into_iter().map(domain_status).collect(),
                    retry_state: f.retry_state.map(domain_retry_state),
                    name: f.name,
                    created_after: f.created_after,
                    created_before: f.created_before,
                    completed_after: f.completed_after,
                    completed_before: f.completed_before,
                    last_error: f.last_error.filter(|t| !t.is_empty()),
                    payload: f.payload,
                },
                "filter.",
            )?;
            if filter == TaskFilter::default() && !all {
                return Err(ApiError::Validation(
                    "filter has no condition, so it would take every task: send \"all\": true \
                     to mean that"
                        .to_owned(),
                ));
            }
            (BulkSelection::Filter(filter), limit.unwrap_or(DEFAULT_BULK))
        }
    };
    Ok(BulkRequest {
        action,
        selection,
        dry_run: body.dry_run.unwrap_or(false),
        limit,
        expected_versions,
    })
}

/// The answer of a bulk action: each skipped task with the code and detail the single call
/// would have answered, judged at `now`.
pub fn bulk_response(report: BulkReport, now: DateTime<Utc>) -> BulkActionResponse {
    let done = report.done();
    let results: Vec<BulkResult> = report
        .results
        .into_iter()
        .map(|item| {
            let id = item.id.as_uuid();
            match item.outcome {
                Ok(()) => BulkResult { id, outcome: BulkOutcome::Done, code: None, detail: None },
                Err(e) => {
                    let body = ApiError::from_app_at(e, now).problem_body();
                    BulkResult {
                        id,
                        outcome: BulkOutcome::Skipped,
                        code: Some(body.code),
                        detail: Some(body.detail),
                    }
                }
            }
        })
        .collect();
    BulkActionResponse {
        id: report.id,
        matched: report.matched,
        more: report.more,
        dry_run: report.dry_run,
        done,
        skipped: results.len() as u64 - done,
        results,
    }
}

/// A claim, validated.
#[derive(Debug)]
pub struct Claim {
    /// Who claims.
    pub worker: WorkerId,
    /// How many tasks at most; the use case checks the range.
    pub limit: u32,
    /// Which queues; every queue when `None`.
    pub queues: Option<Vec<QueueName>>,
    /// The lease asked for, when one is.
    pub lease: Option<LeaseDuration>,
    /// How long to wait for work when none is runnable.
    pub wait: Duration,
}

/// `POST /api/tasks/claim`'s body, validated.
///
/// # Errors
/// The first invalid value.
pub fn claim(body: ClaimTasksRequest) -> Result<Claim, ApiError> {
    let worker = worker_id(&body.worker_id)?;
    let limit = match body.limit {
        None => 1,
        Some(n) => u32::try_from(n).map_err(|_| {
            ApiError::Validation(format!("limit must be between 1 and {MAX_CLAIM_BATCH}, got {n}"))
        })?,
    };
    let queues = body.queues.map(|names| queues(&names)).transpose()?;
    let lease = lease(body.lease_seconds)?;
    let wait = match body.wait_ms.unwrap_or(0) {
        ms @ 0..=MAX_CLAIM_WAIT_MS => Duration::from_millis(ms.unsigned_abs()),
        ms => {
            return Err(ApiError::Validation(format!(
                "waitMs must be between 0 and {MAX_CLAIM_WAIT_MS}, got {ms}"
            )))
        }
    };
    Ok(Claim { worker, limit, queues, lease, wait })
}

/// Distinct queue names, in the order given; at least one, at most [`MAX_CLAIM_QUEUES`].
fn queues(names: &[String]) -> Result<Vec<QueueName>, ApiError> {
    if names.is_empty() || names.len() > MAX_CLAIM_QUEUES {
        return Err(ApiError::Validation(format!(
            "queues must name 1 to {MAX_CLAIM_QUEUES} queues (leave it out for every queue), \
             got {}",
            names.len()
        )));
    }
    let mut queues: Vec<QueueName> = Vec::with_capacity(names.len());
    for name in names {
        let queue = QueueName::parse(name)?;
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    Ok(queues)
}

/// `PUT /api/tasks/{id}/start`'s body: who starts, and the lease asked for.
///
/// # Errors
/// The first invalid value.
pub fn start(body: &StartTaskRequest) -> Result<(WorkerId, Option<LeaseDuration>), ApiError> {
    Ok((worker_id(&body.worker_id)?, lease(body.lease_seconds)?))
}

/// `PUT /api/tasks/{id}/heartbeat`'s body: who, with which token, and the lease asked for.
///
/// # Errors
/// The first invalid value.
pub fn heartbeat(
    body: &HeartbeatRequest,
) -> Result<(WorkerId, LeaseToken, Option<LeaseDuration>), ApiError> {
    Ok((worker_id(&body.worker_id)?, lease_token(&body.lease_token)?, lease(body.lease_seconds)?))
}

/// `PUT /api/tasks/{id}/succeed`'s body: who reports, and the result.
///
/// # Errors
/// The first invalid value.
pub fn success(body: SucceedTaskRequest) -> Result<(Reporter, Option<Value>), ApiError> {
    let reporter = reporter(body.worker_id.as_deref(), body.lease_token.as_deref())?;
    if let Some(result) = &body.result {
        check_json("result", result)?;
    }
    Ok((reporter, body.result))
}

/// A failure report, validated.
#[derive(Debug)]
pub struct Failure {
    /// Who reports.
    pub reporter: Reporter,
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may follow (`retryable`, true when left out).
    pub retryable: bool,
}

/// `PUT /api/tasks/{id}/fail`'s body, validated.
///
/// # Errors
/// The first invalid value.
pub fn failure(body: FailTaskRequest) -> Result<Failure, ApiError> {
    Ok(Failure {
        reporter: reporter(body.worker_id.as_deref(), body.lease_token.as_deref())?,
        message: body.error_message,
        retryable: body.retryable.unwrap_or(true),
    })
}

/// `PUT /api/tasks/{id}/release`'s body: who hands the task back, always with a token.
///
/// # Errors
/// The first invalid value.
pub fn release(body: &ReleaseTaskRequest) -> Result<Reporter, ApiError> {
    reporter(body.worker_id.as_deref(), Some(&body.lease_token))
}

// ---- Responses: domain and use-case values into api bodies ----

/// A domain status as the wire spells it.
pub fn status(status: taskpilot_domain::TaskStatus) -> TaskStatus {
    use taskpilot_domain::TaskStatus as S;
    match status {
        S::Pending => TaskStatus::Pending,
        S::Running => TaskStatus::Running,
        S::Succeeded => TaskStatus::Succeeded,
        S::Failed => TaskStatus::Failed,
        S::Cancelled => TaskStatus::Cancelled,
    }
}

/// A domain retry state as the wire spells it.
pub fn retry_state(state: taskpilot_domain::RetryState) -> RetryState {
    use taskpilot_domain::RetryState as R;
    match state {
        R::None => RetryState::None,
        R::RetryScheduled => RetryState::RetryScheduled,
        R::Exhausted => RetryState::Exhausted,
        R::NonRetryable => RetryState::NonRetryable,
        R::Quarantined => RetryState::Quarantined,
    }
}

/// The task as anybody sees it: without the lease token.
pub fn task_response(task: &Task) -> TaskResponse {
    TaskResponse {
        id: task.id().as_uuid(),
        queue: task.queue().to_string(),
        name: task.name().to_string(),
        payload: task.payload().clone(),
        priority: task.priority(),
        status: status(task.status()),
        retry_state: retry_state(task.retry_state()),
        attempt: task.attempt(),
        attempt_count: task.attempt_count(),
        max_attempts: task.max_attempts().get(),
        crash_count: task.crash_count(),
        max_crashes: task.max_crashes().get(),
        next_run_at: task.next_run_at(),
        last_error: task.last_error().map(str::to_owned),
        worker_id: task.worker_id().map(ToString::to_string),
        processing_started_at: task.processing_started_at(),
        lease_expires_at: task.lease().map(|l| l.expires_at),
        lease_token: None,
        result: task.result().cloned(),
        completed_at: task.completed_at(),
        created_at: task.created_at(),
        updated_at: task.updated_at(),
        unique_key: task.unique_key().map(ToString::to_string),
        created: None,
    }
}

/// The strong entity tag of `task`, for its `ETag` header: its version, quoted (`"7"`). Every
/// transition bumps the version, so the tag changes exactly when the task does.
pub fn entity_tag(task: &Task) -> String {
    format!("\"{}\"", task.version())
}

/// The versions an `If-Match` header allows: [`VersionMatch::Any`] without the header or for
/// `*`, else those of its strong entity tags that are versions (`"7"`). A weak tag (`W/"7"`)
/// or one that is no version is well formed but never matches (If-Match compares strongly),
/// so a header of only such tags allows no version at all. Several header lines read as one
/// list.
///
/// # Errors
/// [`ApiError::Validation`] naming the header when it is neither `*` nor a comma-separated
/// list of entity tags (RFC 9110, section 13.1.1).
pub fn if_match<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<VersionMatch, ApiError> {
    let malformed = || {
        ApiError::Validation(
            "If-Match must be * or a comma-separated list of entity tags such as \"7\", as the \
             ETag header gives them"
                .to_owned(),
        )
    };
    let mut lines = Vec::new();
    for value in values {
        // Not `to_str`, which refuses the tabs that may separate entity tags (OWS).
        let line = std::str::from_utf8(value.as_bytes()).map_err(|_| malformed())?;
        if line.bytes().any(|b| b != b'\t' && !(0x20..=0x7e).contains(&b)) {
            return Err(malformed());
        }
        lines.push(line.to_owned());
    }
    if lines.is_empty() {
        return Ok(VersionMatch::Any);
    }
    let joined = lines.join(",");
    if joined.trim() == "*" {
        return Ok(VersionMatch::Any);
    }
    let mut versions = Vec::new();
    let mut rest = joined.as_str();
    let mut tags = 0_usize;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (weak, tag) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let opaque = tag.strip_prefix('"').ok_or_else(malformed)?;
        let end = opaque.find('"').ok_or_else(malformed)?;
        let (inside, after) = (&opaque[..end], &opaque[end + 1..]);
        // etagc: any visible character but DQUOTE (and obs-text, which to_str refused).
        if !inside.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) {
            return Err(malformed());
        }
        let after = after.trim_start_matches([' ', '\t']);
        if !(after.is_empty() || after.starts_with(',')) {
            return Err(malformed());
        }
        tags += 1;
        let canonical = inside.parse::<u64>().ok().filter(|v| v.to_string() == inside);
        if let (false, Some(version)) = (weak, canonical) {
            versions.push(version);
        }
        rest = after;
    }
    if tags == 0 {
        return Err(malformed());
    }
    Ok(VersionMatch::OneOf(versions))
}

/// The answer of a create: the task, saying whether the request created it.
pub fn created_response(answer: &Created) -> TaskResponse {
    TaskResponse { created: Some(answer.created), ..task_response(&answer.task) }
}

/// The task as its lease holder sees it: with the lease token of a running attempt.
pub fn holder_response(task: &Task) -> TaskResponse {
    TaskResponse { lease_token: task.lease().map(|l| l.token.to_string()), ..task_response(task) }
}

/// One page of `GET /api/tasks`.
pub fn list_response(page: &TaskPage) -> TaskListResponse {
    TaskListResponse {
        items: page.items.iter().map(task_response).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }
}

/// The answer to the worker that claimed `tasks`: each with its lease token.
pub fn claim_response(tasks: &[Task]) -> ClaimResponse {
    ClaimResponse { items: tasks.iter().map(holder_response).collect() }
}

/// One entry of a task's history.
pub fn event_response(event: &TaskEvent) -> TaskEventResponse {
    TaskEventResponse {
        kind: event.kind().as_str().to_owned(),
        attempt: event.attempt,
        from: event.from.map(status),
        to: status(event.to),
        worker_id: event.worker_id.as_ref().map(ToString::to_string),
        error: event.error.clone(),
        actor: event.actor.as_str().to_owned(),
        rejected_code: event.rejected.as_ref().map(|r| r.code.clone()),
        rejected_call: event.rejected.as_ref().map(|r| r.call.as_str().to_owned()),
        at: event.at,
        token_name: event.token.as_ref().map(|t| t.as_str().to_owned()),
    }
}

/// Refused stale calls by code and call, and how many were late successes.
pub fn rejection_stats_response(counts: &[RejectionCount]) -> RejectionStatsResponse {
    RejectionStatsResponse {
        items: counts
            .iter()
            .map(|c| RejectionCountResponse {
                code: c.code.clone(),
                call: c.call.as_str().to_owned(),
                count: c.count,
            })
            .collect(),
        stale_successes: counts.iter().filter(|c| c.shows_a_second_run()).map(|c| c.count).sum(),
    }
}

/// The maintained counts as `GET /api/stats` answers them, ages taken at `now`.
pub fn stats_response(counts: &TaskCounts, now: chrono::DateTime<chrono::Utc>) -> StatsResponse {
    StatsResponse {
        totals: counts_response(&counts.totals()),
        queues: counts
            .queues
            .iter()
            .map(|q| QueueStatsResponse {
                queue: q.queue.as_str().to_owned(),
                counts: counts_response(&q.counts),
                oldest_runnable_since: q.oldest_runnable_since,
                oldest_runnable_age_seconds: age_seconds(q.oldest_runnable_since, now),
            })
            .collect(),
        other_queues: counts.other_queues.as_ref().map(counts_response),
    }
}

/// Seconds from `since` to `now` (0 when `since` is later), for the "oldest runnable" ages.
fn age_seconds(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<f64> {
    since.map(|since| (now - since).to_std().unwrap_or_default().as_secs_f64())
}

fn counts_response(c: &StatusCounts) -> StatusCountsResponse {
    StatusCountsResponse {
        runnable: c.runnable,
        scheduled: c.scheduled,
        running: c.running,
        succeeded: c.succeeded,
        failed: c.failed,
        cancelled: c.cancelled,
    }
}

/// One queue, with its ages as of `now`.
pub fn queue_response(view: &taskpilot_app::QueueView, now: DateTime<Utc>) -> QueueResponse {
    let paused = view.state.paused.as_ref();
    QueueResponse {
        name: view.queue.as_str().to_owned(),
        counts: counts_response(&view.counts),
        running_leases: view.counts.running,
        oldest_runnable_since: view.oldest_runnable_since,
        oldest_runnable_age_seconds: age_seconds(view.oldest_runnable_since, now),
        paused: paused.is_some(),
        paused_by: paused.map(|p| p.by.as_str().to_owned()),
        paused_at: paused.map(|p| p.at),
        created_last_minute: view.created_last_minute,
        completed_last_minute: view.completed_last_minute,
        last_claim_at: view.last_claim_at,
        version: view.state.version,
    }
}

/// Every queue.
pub fn queue_list_response(
    views: &[taskpilot_app::QueueView],
    now: DateTime<Utc>,
) -> QueueListResponse {
    QueueListResponse { items: views.iter().map(|v| queue_response(v, now)).collect() }
}

/// One reason of an explanation, with the members of its code.
fn reason_response(reason: &taskpilot_domain::Reason) -> ExplainReasonResponse {
    use taskpilot_domain::Reason as R;
    let base = ExplainReasonResponse {
        code: reason.code().to_owned(),
        message: reason.message(),
        ..ExplainReasonResponse::default()
    };
    match reason {
        R::Scheduled { run_at, retry } => {
            ExplainReasonResponse { at: Some(*run_at), retry: Some(*retry), ..base }
        }
        R::QueuePaused { queue, by, since } => ExplainReasonResponse {
            queue: Some(queue.as_str().to_owned()),
            by: Some(by.as_str().to_owned()),
            since: Some(*since),
            ..base
        },
        R::TasksAhead { queue, ahead } => ExplainReasonResponse {
            queue: Some(queue.as_str().to_owned()),
            count: Some(ahead.count),
            at_least: Some(ahead.capped),
            ..base
        },
        R::NoRecentClaim { queue, last_claim_at, idle_seconds } => ExplainReasonResponse {
            queue: Some(queue.as_str().to_owned()),
            last_claim_at: *last_claim_at,
            idle_seconds: Some(*idle_seconds),
            ..base
        },
        R::Running { worker, started_at, lease_expires_at, last_heard_at, lease_expired } => {
            ExplainReasonResponse {
                worker_id: Some(worker.as_str().to_owned()),
                started_at: Some(*started_at),
                lease_expires_at: Some(*lease_expires_at),
                last_heartbeat_at: Some(*last_heard_at),
                lease_expired: Some(*lease_expired),
                ..base
            }
        }
        R::Succeeded { at } | R::NonRetryable { at } => ExplainReasonResponse { at: *at, ..base },
        R::AttemptsExhausted { attempts, at } => {
            ExplainReasonResponse { at: *at, attempts: Some(*attempts), ..base }
        }
        R::Quarantined { crashes, at } => {
            ExplainReasonResponse { at: *at, crashes: Some(*crashes), ..base }
        }
        R::Cancelled { by, at } => ExplainReasonResponse {
            at: *at,
            by: by.as_ref().map(|b| b.as_str().to_owned()),
            ..base
        },
    }
}

/// Why a task is not running.
pub fn explain_response(found: &taskpilot_app::TaskExplanation) -> ExplainResponse {
    let reasons: Vec<ExplainReasonResponse> =
        found.explanation.reasons.iter().map(reason_response).collect();
    let summary = if reasons.is_empty() {
        "Nothing stands in its way: the next claim from its queue takes it.".to_owned()
    } else {
        reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join(" ")
    };
    ExplainResponse {
        task_id: found.task.id().as_uuid(),
        status: status(found.task.status()),
        runnable: found.explanation.runnable,
        reasons,
        summary,
    }
}

/// The tasks one batch created, in the order given.
pub fn batch_response(answers: &[Created]) -> CreateTaskBatchResponse {
    CreateTaskBatchResponse { items: answers.iter().map(created_response).collect() }
}

/// A task's history, oldest first.
pub fn events_response(events: &[TaskEvent]) -> TaskEventListResponse {
    TaskEventListResponse { items: events.iter().map(event_response).collect() }
}

/// A batch item whose outcome was applied: 200 with the task.
pub fn completed_item(id: Uuid, task: &Task) -> CompletionResult {
    CompletionResult { id, status: 200, task: Some(task_response(task)), error: None }
}

/// A batch item that was refused: its error as the single call would have answered it.
pub fn refused_item(id: Uuid, error: &ApiError) -> CompletionResult {
    let body = error.problem_body();
    if body.status >= 500 {
        // Logged here: an item's answer does not go through `ResponseError`.
        tracing::error!(task.id = %id, error = %format!("{error:#}"), "batch item {id} failed");
    }
    CompletionResult { id, status: body.status, task: None, error: Some(body) }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<VersionMatch, ApiError> {
        let values: Vec<HeaderValue> =
            lines.iter().map(|l| HeaderValue::from_str(l).unwrap()).collect();
        if_match(values.iter())
    }

    #[test]
    fn no_if_match_or_a_star_allows_any_version() {
        assert_eq!(parse(&[]).unwrap(), VersionMatch::Any);
        assert_eq!(parse(&["*"]).unwrap(), VersionMatch::Any);
        assert_eq!(parse(&[" * "]).unwrap(), VersionMatch::Any);
    }

    #[test]
    fn strong_version_tags_are_the_versions_allowed_and_other_tags_match_none() {
        assert_eq!(parse(&["\"7\""]).unwrap(), VersionMatch::OneOf(vec![7]));
        assert_eq!(parse(&["\"7\", \"9\""]).unwrap(), VersionMatch::OneOf(vec![7, 9]));
        assert_eq!(parse(&["\"7\"", "\"9\""]).unwrap(), VersionMatch::OneOf(vec![7, 9]));
        assert_eq!(parse(&["W/\"7\", \"x\", \"07\", \"\""]).unwrap(), VersionMatch::OneOf(vec![]));
        assert_eq!(parse(&[",\"3\",,"]).unwrap(), VersionMatch::OneOf(vec![3]));
        // Tabs are optional whitespace too.
        assert_eq!(parse(&["\"3\"\t,\t\"4\""]).unwrap(), VersionMatch::OneOf(vec![3, 4]));
    }

    #[test]
    fn anything_else_is_refused_naming_the_header() {
        for bad in ["7", "", " ", "\"7", "\"7\" \"8\"", "*, \"7\"", "W/7", "\"a\"b\"", "\"7\"x"] {
            let refused = parse(&[bad]).unwrap_err();

            assert!(
                matches!(&refused, ApiError::Validation(d) if d.starts_with("If-Match")),
                "{bad:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_entity_tag_is_the_quoted_version() {
        let task = taskpilot_domain::Task::new(
            TaskId::from_uuid(Uuid::nil()),
            taskpilot_domain::NewTask {
                queue: QueueName::default(),
                name: TaskName::parse("x").unwrap(),
                payload: serde_json::json!({}),
                priority: 0,
                max_attempts: MaxAttempts::new(1).unwrap(),
                run_at: None,
                unique_key: None,
            },
            chrono::Utc::now(),
        );

        assert_eq!(entity_tag(&task), "\"1\"");
        assert_eq!(parse(&[&entity_tag(&task)]).unwrap(), VersionMatch::OneOf(vec![1]));
    }
}
