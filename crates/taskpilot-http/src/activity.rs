//! The activity endpoints (`GET /api/stats/throughput`, `GET /api/dead-letters`,
//! `GET /api/workers`): query and response mapping and their handlers. What each caller may
//! read is the use cases' decision ([`taskpilot_app::Acting`]).

use actix_web::{web, HttpResponse};
use taskpilot_api::limits::{
    DEAD_LETTER_SCAN, DEFAULT_PAGE_SIZE, DEFAULT_THROUGHPUT_MINUTES, MAX_PAGE_SIZE,
    MAX_THROUGHPUT_MINUTES,
};
use taskpilot_api::{
    DeadLetterGroupResponse, DeadLetterListResponse, DeadLettersQuery, RunningTaskResponse,
    ThroughputMinuteResponse, ThroughputQuery, ThroughputResponse, WorkerListResponse,
    WorkerResponse,
};
use taskpilot_app::{DeadLetterGroup, TaskService, ThroughputMinute, WorkerView};
use taskpilot_domain::{QueueName, Task};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::handlers::run;

/// A whole number in `1..=max` from a query parameter named `field`; `None` when absent or
/// empty.
fn count_param(field: &str, raw: Option<String>, max: u32) -> Result<Option<u32>, ApiError> {
    raw.filter(|v| !v.is_empty())
        .map(|raw| {
            raw.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                ApiError::Validation(format!(
                    "{field} must be an integer between 1 and {max}, got {raw:?}"
                ))
            })
        })
        .transpose()
}

/// The minutes and the queue of a throughput query.
///
/// # Errors
/// [`ApiError`] VALIDATION_FAILED naming `minutes` or `queue`.
pub fn throughput_request(query: ThroughputQuery) -> Result<(u32, Option<QueueName>), ApiError> {
    let minutes = count_param("minutes", query.minutes, MAX_THROUGHPUT_MINUTES)?
        .unwrap_or(DEFAULT_THROUGHPUT_MINUTES);
    let queue =
        query.queue.filter(|q| !q.is_empty()).map(|q| crate::dto::queue_name(&q)).transpose()?;
    Ok((minutes, queue))
}

/// One minute as the API shows it.
pub fn throughput_minute(m: &ThroughputMinute) -> ThroughputMinuteResponse {
    ThroughputMinuteResponse {
        minute: m.minute,
        created: m.created,
        completed: m.finished(),
        succeeded: m.succeeded,
        failed: m.failed,
        cancelled: m.cancelled,
    }
}

/// A dead-letter group as the API shows it.
pub fn dead_letter_group(g: &DeadLetterGroup) -> DeadLetterGroupResponse {
    DeadLetterGroupResponse {
        queue: g.queue.as_str().to_owned(),
        name: g.name.as_str().to_owned(),
        error: g.error.clone(),
        count: g.count,
        first_failed_at: g.first_failed_at,
        last_failed_at: g.last_failed_at,
    }
}

fn running_task(task: &Task) -> RunningTaskResponse {
    RunningTaskResponse {
        id: task.id().as_uuid(),
        queue: task.queue().as_str().to_owned(),
        name: task.name().as_str().to_owned(),
        attempt: task.attempt(),
        started_at: task.processing_started_at(),
        lease_expires_at: task.lease().map(|l| l.expires_at),
    }
}

/// A worker as the API shows it.
pub fn worker_response(view: &WorkerView) -> WorkerResponse {
    WorkerResponse {
        worker_id: view.worker_id.as_str().to_owned(),
        last_claim_at: view.last_claim_at,
        last_heartbeat_at: view.last_heartbeat_at,
        last_seen_at: view.last_seen_at,
        running: view.running.iter().map(running_task).collect(),
    }
}

/// `GET /api/stats/throughput?minutes=&queue=`: tasks created and finished per minute.
#[utoipa::path(
    get, path = "/api/stats/throughput", operation_id = "throughput", tag = "stats",
    params(ThroughputQuery),
    responses(
        (status = 200, description = "Every minute of the window, oldest first.", body = ThroughputResponse),
        crate::openapi::BadRequest, crate::openapi::Unavailable,
    ),
)]
pub async fn throughput(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    query: web::Query<ThroughputQuery>,
) -> Result<HttpResponse, ApiError> {
    let (minutes, queue) = throughput_request(query.into_inner())?;
    let asked = queue.clone();
    let items =
        run(&service, move |s| s.acting_as(&caller).throughput(minutes, queue.as_ref())).await?;
    Ok(HttpResponse::Ok().json(ThroughputResponse {
        queue: asked.map(|q| q.as_str().to_owned()),
        items: items.iter().map(throughput_minute).collect(),
    }))
}

/// `GET /api/dead-letters?limit=`: failed tasks grouped by queue, name and error.
#[utoipa::path(
    get, path = "/api/dead-letters", operation_id = "deadLetters", tag = "tasks",
    params(DeadLettersQuery),
    responses(
        (status = 200, description = "The groups, the largest first.", body = DeadLetterListResponse),
        crate::openapi::BadRequest, crate::openapi::Unavailable,
    ),
)]
pub async fn dead_letters(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    query: web::Query<DeadLettersQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit =
        count_param("limit", query.into_inner().limit, MAX_PAGE_SIZE)?.unwrap_or(DEFAULT_PAGE_SIZE);
    let groups = run(&service, move |s| s.acting_as(&caller).dead_letters(limit)).await?;
    Ok(HttpResponse::Ok().json(DeadLetterListResponse {
        scanned: DEAD_LETTER_SCAN,
        items: groups.iter().map(dead_letter_group).collect(),
    }))
}

/// `GET /api/workers`: the workers seen in the last hour, with their running tasks.
#[utoipa::path(
    get, path = "/api/workers", operation_id = "listWorkers", tag = "queues",
    responses(
        (status = 200, description = "The workers, the most recently seen first.", body = WorkerListResponse),
        crate::openapi::Unavailable,
    ),
)]
pub async fn workers(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let views = run(&service, move |s| s.acting_as(&caller).workers()).await?;
    Ok(HttpResponse::Ok()
        .json(WorkerListResponse { items: views.iter().map(worker_response).collect() }))
}
