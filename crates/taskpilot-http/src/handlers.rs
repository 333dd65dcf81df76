//! Request handlers: map the request into validated values ([`dto`]), run one use case off
//! the async executor, map the result back ([`dto`], [`ApiError`]). No rule is decided here.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::Value;
// The response bodies are named by the handlers' OpenAPI annotations.
use taskpilot_api::{
    BulkActionRequest, BulkActionResponse, ClaimResponse, ClaimTasksRequest, CompleteTasksRequest,
    CompleteTasksResponse, CompletionResult, CreateTaskBatchRequest, CreateTaskBatchResponse,
    CreateTaskRequest, FailTaskRequest, HeartbeatRequest, ListTasksQuery, RejectionStatsResponse,
    ReleaseTaskRequest, StartTaskRequest, SucceedTaskRequest, TaskEventListResponse,
    TaskListResponse, TaskResponse,
};
use taskpilot_app::{AppError, TaskService};
use taskpilot_domain::{Operation, Task, WorkerId};
use tokio::time::Instant;
use tracing::Span;

use crate::auth::Authenticated;
use crate::body::Body;
use crate::dto;
use crate::error::ApiError;
use crate::idempotency;
use crate::metrics::{ClaimOutcome, Metrics};
use crate::wake::{wake_when_due, Wake, WakeHub};

// The path parameter's schema, named by the queue routes' annotations.
use taskpilot_api::openapi::QueueName;

/// Runs a use case on the blocking pool: diesel blocks, the executor must not. Every
/// adapter of the crate (the API's handlers, the activity reads, the dashboard) runs its use
/// cases through it.
pub(crate) async fn run<T, F>(service: &web::Data<TaskService>, call: F) -> Result<T, ApiError>
where
    F: FnOnce(&TaskService) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    let on_pool = web::Data::clone(service);
    web::block(move || call(&on_pool))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
        // A refusal is judged by the service's clock (a Retry-After counts from it).
        .map_err(|e| ApiError::from_app_at(e, service.now()))
}

/// The task as anybody sees it (no lease token).
fn task_ok(task: &Task) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, dto::entity_tag(task)))
        .json(dto::task_response(task))
}

/// The task as the worker holding its lease sees it (with the token).
fn holder_ok(task: &Task) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, dto::entity_tag(task)))
        .json(dto::holder_response(task))
}

/// `POST /api/tasks`: 201 with the task and its Location. With a `uniqueKey` an active task
/// of the queue holds: 200 with that task (`created: false`), or 409 UNIQUE_KEY_HELD with
/// `onConflict: reject`. With an `Idempotency-Key`, the same request sent again answers the
/// first answer again, with `Idempotent-Replayed: true`.
#[utoipa::path(
    post, path = "/api/tasks", operation_id = "createTask", tag = "tasks",
    request_body = CreateTaskRequest,
    params(crate::openapi::IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The task, PENDING, `created: true`; or, for a request \
         sent again with the same `Idempotency-Key`, the first answer again.",
         body = TaskResponse,
         headers(
             ("Location" = String, description = "The task's URL: `/api/tasks/{id}`."),
             ("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version. Not sent with a replayed answer."),
             ("Idempotent-Replayed" = String,
              description = "`true` on the first answer given again for an `Idempotency-Key`."),
         )),
        (status = 200, description = "Nothing created: the PENDING or RUNNING task of the \
         queue that holds the request's `uniqueKey`, `created: false`; or, for a request sent \
         again with the same `Idempotency-Key`, the first answer again.",
         body = TaskResponse,
         headers(
             ("Location" = String, description = "That task's URL: `/api/tasks/{id}`."),
             ("ETag" = String, description = "That task's entity tag. Not sent with a replayed answer."),
             ("Idempotent-Replayed" = String,
              description = "`true` on the first answer given again for an `Idempotency-Key`."),
         )),
        crate::openapi::BodyRefused, crate::openapi::KeyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn create_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    body: Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::key_of(&req)?;
    let keyed = key.map(|key| idempotency::idempotency(&req, key, &body.0)).transpose()?;
    let request = dto::create_task(crate::body::from_value::<CreateTaskRequest>(body.0)?)?;
    let Some(keyed) = keyed else {
        let answer = run(&service, move |s| s.acting_as(&caller).create_unique(request)).await?;
        Span::current().record("task_id", tracing::field::display(answer.task.id()));
        let mut response =
            if answer.created { HttpResponse::Created() } else { HttpResponse::Ok() };
        return Ok(response
            .insert_header((header::LOCATION, location(&answer.task)))
            .insert_header((header::ETAG, dto::entity_tag(&answer.task)))
            .json(dto::created_response(&answer)));
    };
    let answer = run(&service, move |s| {
        s.acting_as(&caller).create_keyed(request, keyed, |answer| {
            idempotency::stored(
                if answer.created { StatusCode::CREATED } else { StatusCode::OK },
                &dto::created_response(answer),
                Some(location(&answer.task)),
            )
        })
    })
    .await?;
    let mut response = idempotency::respond(&answer);
    if let Some(task) = answer.created.first() {
        Span::current().record("task_id", tracing::field::display(task.id()));
        if let Ok(tag) = header::HeaderValue::from_str(&dto::entity_tag(task)) {
            response.headers_mut().insert(header::ETAG, tag);
        }
    }
    Ok(response)
}

fn location(task: &Task) -> String {
    format!("/api/tasks/{}", task.id())
}

/// `POST /api/tasks/batch`: 201 with the tasks in the order given. All or nothing: an
/// invalid task fails the whole batch with 400 VALIDATION_FAILED naming its index. An item
/// whose `uniqueKey` an active task holds answers that task with `created: false` (or, with
/// `onConflict: reject`, the whole batch is refused with 409 UNIQUE_KEY_HELD naming the
/// item's index and the holder). With an `Idempotency-Key` as on `POST /api/tasks`.
#[utoipa::path(
    post, path = "/api/tasks/batch", operation_id = "createTaskBatch", tag = "batches",
    request_body = CreateTaskBatchRequest,
    params(crate::openapi::IdempotencyKeyHeader),
    responses(
        (status = 201, description = "The tasks, in the order given, each with `created` \
         (`false`: the active task that holds the item's `uniqueKey`, nothing created for \
         it); or, for a request sent again with the same `Idempotency-Key`, the first answer \
         again.",
         body = CreateTaskBatchResponse,
         headers(
             ("Idempotent-Replayed" = String,
              description = "`true` on the first answer given again for an `Idempotency-Key`."),
         )),
        crate::openapi::BodyRefused, crate::openapi::KeyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn create_task_batch(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    body: Body<Value>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency::key_of(&req)?;
    let keyed = key.map(|key| idempotency::idempotency(&req, key, &body.0)).transpose()?;
    let requests = dto::create_batch(crate::body::from_value::<CreateTaskBatchRequest>(body.0)?)?;
    let Some(keyed) = keyed else {
        let answers =
            run(&service, move |s| s.acting_as(&caller).create_batch_unique(requests)).await?;
        let n = answers.iter().filter(|a| a.created).count();
        tracing::info!(tasks = n, "{n} tasks created in one batch");
        return Ok(HttpResponse::Created().json(dto::batch_response(&answers)));
    };
    let answer = run(&service, move |s| {
        s.acting_as(&caller).create_batch_keyed(requests, keyed, |tasks| {
            idempotency::stored(StatusCode::CREATED, &dto::batch_response(tasks), None)
        })
    })
    .await?;
    if answer.replayed {
        tracing::info!("a batch sent again answered as the first time");
    } else {
        let n = answer.created.len();
        tracing::info!(tasks = n, "{n} tasks created in one batch");
    }
    Ok(idempotency::respond(&answer))
}

/// `POST /api/tasks/complete`: up to [`MAX_BATCH`](taskpilot_api::limits::MAX_BATCH) outcomes
/// in one round trip, each fenced by its lease token and answered on its own, in the order
/// given: 200 with the task, or the status and problem body the single succeed or fail would
/// have answered (400 for an item whose values are invalid, 404, 409). An outcome is
/// `succeeded`, `failed` or `released`. Only a body that cannot be read, or that holds no item
/// or too many, fails the whole request.
#[utoipa::path(
    post, path = "/api/tasks/complete", operation_id = "completeTasks", tag = "batches",
    request_body = CompleteTasksRequest,
    responses(
        (status = 200, description = "One answer per item, in input order.", body = CompleteTasksResponse),
        crate::openapi::BodyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn complete_tasks(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    body: Body<CompleteTasksRequest>,
) -> Result<HttpResponse, ApiError> {
    let items = body.0.items;
    dto::check_batch_size("items", items.len())?;
    let mut answers: Vec<Option<CompletionResult>> = Vec::with_capacity(items.len());
    let mut completions = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match dto::completion(item) {
            Ok(completion) => {
                completions.push(completion);
                answers.push(None);
            }
            Err(e) => {
                let e = ApiError::InvalidItem { list: "items", index, detail: e.to_string() };
                answers.push(Some(dto::refused_item(item.id, &e)));
            }
        }
    }
    let results = if completions.is_empty() {
        Vec::new()
    } else {
        run(&service, move |s| s.acting_as(&caller).complete_batch(completions)).await?
    };
    let now = service.now();
    let hub = hub.into_inner();
    let mut retries = std::collections::BTreeSet::new();
    let mut results = results.into_iter();
    let items = items
        .iter()
        .zip(answers)
        .map(|(item, answer)| match answer {
            Some(answer) => answer,
            None => match results.next() {
                Some(Ok(task)) => {
                    retries.extend(task.next_run_at());
                    dto::completed_item(item.id, &task)
                }
                Some(Err(e)) => dto::refused_item(item.id, &ApiError::from_app_at(e, now)),
                None => dto::refused_item(
                    item.id,
                    &ApiError::Internal(anyhow::anyhow!("the batch answered fewer items")),
                ),
            },
        })
        .collect();
    for next_run_at in retries {
        wake_when_due(&hub, next_run_at, now);
    }
    Ok(HttpResponse::Ok().json(CompleteTasksResponse { items }))
}

/// `GET /api/tasks/{id}`.
#[utoipa::path(
    get, path = "/api/tasks/{id}", operation_id = "getTask", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    responses(
        (status = 200, description = "The task.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BadRequest, crate::openapi::TaskNotFound, crate::openapi::Unavailable,
    ),
)]
pub async fn get_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let task = run(&service, move |s| s.acting_as(&caller).get(id)).await?;
    Ok(task_ok(&task))
}

/// `GET /api/tasks?queue=&status=&name=&limit=&cursor=`: one page, newest first.
#[utoipa::path(
    get, path = "/api/tasks", operation_id = "listTasks", tag = "tasks",
    params(ListTasksQuery),
    responses(
        (status = 200, description = "One page, newest first.", body = TaskListResponse),
        crate::openapi::BadRequest, crate::openapi::Unavailable,
    ),
)]
pub async fn list_tasks(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    query: web::Query<ListTasksQuery>,
) -> Result<HttpResponse, ApiError> {
    let dto::ListRequest { filter, cursor, limit } = dto::list_request(query.into_inner())?;
    let page = run(&service, move |s| s.acting_as(&caller).list(&filter, cursor.as_deref(), limit))
        .await?;
    Ok(HttpResponse::Ok().json(dto::list_response(&page)))
}

/// `POST /api/tasks/bulk`: rerun, cancel or delete the tasks a filter or a list of ids
/// selects (operators and admins), each through the rule of the single call, in batches of
/// 500 per transaction; or, with `dryRun`, only count them. A task a rule refuses is skipped
/// with that rule's code.
#[utoipa::path(
    post, path = "/api/tasks/bulk", operation_id = "bulkAction", tag = "tasks",
    request_body = BulkActionRequest,
    responses(
        (status = 200, description = "How many tasks matched and, unless a dry run, what happened to each.", body = BulkActionResponse),
        crate::openapi::BodyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn bulk_action(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    body: Body<BulkActionRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = dto::bulk_request(body.0)?;
    let rerun = request.action == taskpilot_app::BulkAction::Rerun && !request.dry_run;
    let report = run(&service, move |s| s.acting_as(&caller).bulk(&request)).await?;
    if rerun && report.done() > 0 {
        // Rerun tasks are runnable at once: waiting claims look again.
        hub.wake();
    }
    Ok(HttpResponse::Ok().json(dto::bulk_response(report, service.now())))
}

/// `POST /api/tasks/claim`: up to `limit` runnable tasks, each started under a fresh lease,
/// highest priority and longest waiting first; `{"items": []}` when nothing is runnable.
///
/// With `waitMs`, a claim that finds nothing waits on the server's [`WakeHub`] (no database
/// query while it waits), claims again whenever woken, and gives up when the time is up.
#[utoipa::path(
    post, path = "/api/tasks/claim", operation_id = "claimTasks", tag = "workers",
    request_body = ClaimTasksRequest,
    responses(
        (status = 200, description = "The claimed tasks, RUNNING, each with its `leaseToken`; none when nothing was runnable in time.", body = ClaimResponse),
        crate::openapi::BodyRefused, crate::openapi::Unavailable,
    ),
)]
pub async fn claim_tasks(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    metrics: web::Data<Metrics>,
    body: Body<ClaimTasksRequest>,
) -> Result<HttpResponse, ApiError> {
    let dto::Claim { worker, limit, queues, lease, wait } = dto::claim(body.0)?;
    let deadline = Instant::now() + wait;
    let empty = if wait.is_zero() { ClaimOutcome::Empty } else { ClaimOutcome::TimedOut };

    loop {
        // Subscribe before looking, so that a task made runnable between the look and the
        // wait still wakes this claim.
        let mut waiter = hub.waiter();
        let (claimer, queues, caller) = (worker.clone(), queues.clone(), caller.clone());
        let tasks =
            run(&service, move |s| s.acting_as(&caller).claim(&claimer, queues, limit, lease))
                .await?;
        if !tasks.is_empty() {
            metrics.claim_request(ClaimOutcome::Claimed);
            return Ok(claimed(&worker, &tasks));
        }
        if Instant::now() >= deadline {
            metrics.claim_request(empty);
            return Ok(claimed(&worker, &tasks));
        }
        match waiter.wait_until(deadline).await {
            // One more look at the deadline catches what no wake-up announced.
            Wake::Woken | Wake::TimedOut => {}
            Wake::Closed => {
                metrics.claim_request(empty);
                return Ok(claimed(&worker, &[]));
            }
        }
    }
}

fn claimed(worker: &WorkerId, tasks: &[Task]) -> HttpResponse {
    for task in tasks {
        tracing::info!(
            task.id = %task.id(),
            task.attempt = task.attempt(),
            "task {} claimed by {worker}",
            task.id()
        );
    }
    HttpResponse::Ok().json(dto::claim_response(tasks))
}

/// `PUT /api/tasks/{id}/start`: PENDING to RUNNING under a fresh lease.
#[utoipa::path(
    put, path = "/api/tasks/{id}/start", operation_id = "startTask", tag = "workers",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    request_body = StartTaskRequest,
    responses(
        (status = 200, description = "The task, RUNNING, with its `leaseToken`.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BodyRefused, crate::openapi::TaskNotFound, crate::openapi::Refused, crate::openapi::Unavailable,
    ),
)]
pub async fn start_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
    body: Body<StartTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (worker, lease) = dto::start(&body.0)?;
    let task = run(&service, move |s| s.acting_as(&caller).start(id, &worker, lease)).await?;
    Ok(holder_ok(&task))
}

/// `PUT /api/tasks/{id}/heartbeat`: extends the live attempt's lease. A worker whose task
/// was cancelled learns it here (409 TASK_CANCELLED) and should stop.
#[utoipa::path(
    put, path = "/api/tasks/{id}/heartbeat", operation_id = "heartbeatTask", tag = "workers",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "The task, its lease extended, with its `leaseToken`.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BodyRefused, crate::openapi::TaskNotFound, crate::openapi::Refused, crate::openapi::Unavailable,
    ),
)]
pub async fn heartbeat_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
    body: Body<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (worker, token, lease) = dto::heartbeat(&body.0)?;
    let task =
        run(&service, move |s| s.acting_as(&caller).heartbeat(id, Some(&worker), token, lease))
            .await?;
    Ok(holder_ok(&task))
}

/// `PUT /api/tasks/{id}/succeed`: RUNNING to SUCCEEDED. The body may be omitted. A repeat of
/// an accepted report (same token, same outcome) answers 200 with the stored task.
#[utoipa::path(
    put, path = "/api/tasks/{id}/succeed", operation_id = "succeedTask", tag = "workers",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    request_body = Option<SucceedTaskRequest>,
    responses(
        (status = 200, description = "The task, SUCCEEDED (or as it stands, for a replay).", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BodyRefused, crate::openapi::TaskNotFound, crate::openapi::Refused, crate::openapi::Unavailable,
    ),
)]
pub async fn succeed_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
    body: JsonOrEmpty<SucceedTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (reporter, result) = dto::success(body.0)?;
    let task = run(&service, move |s| s.acting_as(&caller).succeed(id, &reporter, result)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/fail`: a retry after backoff, or FAILED when attempts ran out; with
/// `retryable: false`, FAILED at once (retry state NON_RETRYABLE).
#[utoipa::path(
    put, path = "/api/tasks/{id}/fail", operation_id = "failTask", tag = "workers",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    request_body = FailTaskRequest,
    responses(
        (status = 200, description = "The task: PENDING with a retry scheduled, or FAILED.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BodyRefused, crate::openapi::TaskNotFound, crate::openapi::Refused, crate::openapi::Unavailable,
    ),
)]
pub async fn fail_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    path: web::Path<String>,
    body: Body<FailTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let dto::Failure { reporter, message, retryable } = dto::failure(body.0)?;
    let task = if retryable {
        run(&service, move |s| s.acting_as(&caller).fail(id, &reporter, &message)).await?
    } else {
        run(&service, move |s| s.acting_as(&caller).fail_permanently(id, &reporter, &message))
            .await?
    };
    if let Some(next_run_at) = task.next_run_at() {
        wake_when_due(&hub.into_inner(), next_run_at, service.now());
    }
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/release`: RUNNING back to PENDING, runnable at once, for a worker that
/// will not finish the task (it is stopping). No failure is counted, so a release on the last
/// attempt does not fail the task. Fenced as succeed: a repeat with the same token answers 200
/// with the stored task, a late success or failure with it 409 OUTCOME_CONFLICT.
#[utoipa::path(
    put, path = "/api/tasks/{id}/release", operation_id = "releaseTask", tag = "workers",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    request_body = ReleaseTaskRequest,
    responses(
        (status = 200, description = "The task, PENDING and runnable at once.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BodyRefused, crate::openapi::TaskNotFound, crate::openapi::Refused, crate::openapi::Unavailable,
    ),
)]
pub async fn release_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    path: web::Path<String>,
    body: Body<ReleaseTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let reporter = dto::release(&body.0)?;
    let task = run(&service, move |s| s.acting_as(&caller).release(id, &reporter)).await?;
    // A released retry keeps a nextRunAt (now): wake this server's waiting claims for it too.
    if let Some(next_run_at) = task.next_run_at() {
        wake_when_due(&hub.into_inner(), next_run_at, service.now());
    }
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/cancel`: PENDING or RUNNING to CANCELLED; with `If-Match`, only if
/// the task is still at one of those versions (else 412 PRECONDITION_FAILED).
#[utoipa::path(
    put, path = "/api/tasks/{id}/cancel", operation_id = "cancelTask", tag = "tasks",
    params(
        ("id" = String, Path, format = Uuid, description = "The task's id."),
        crate::openapi::IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The task, CANCELLED.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BadRequest, crate::openapi::TaskNotFound, crate::openapi::Refused,
        crate::openapi::PreconditionFailed, crate::openapi::Unavailable,
    ),
)]
pub async fn cancel_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let expected = dto::if_match(req.headers().get_all(header::IF_MATCH))?;
    let task = run(&service, move |s| s.acting_as(&caller).cancel_matching(id, &expected)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/rerun`: FAILED or CANCELLED back to PENDING with a fresh attempt and
/// crash budget; with `If-Match`, only if the task is still at one of those versions.
#[utoipa::path(
    put, path = "/api/tasks/{id}/rerun", operation_id = "rerunTask", tag = "tasks",
    params(
        ("id" = String, Path, format = Uuid, description = "The task's id."),
        crate::openapi::IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The task, PENDING with a fresh budget.", body = TaskResponse,
         headers(("ETag" = String, description = "The task's entity tag: its version, quoted (`\"7\"`). Send it as `If-Match` to cancel or rerun only that version."))),
        crate::openapi::BadRequest, crate::openapi::TaskNotFound, crate::openapi::Refused,
        crate::openapi::PreconditionFailed, crate::openapi::Unavailable,
    ),
)]
pub async fn rerun_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let expected = dto::if_match(req.headers().get_all(header::IF_MATCH))?;
    let task = run(&service, move |s| s.acting_as(&caller).rerun_matching(id, &expected)).await?;
    Ok(task_ok(&task))
}

/// `GET /api/tasks/{id}/events`: the task's history, oldest first.
#[utoipa::path(
    get, path = "/api/tasks/{id}/events", operation_id = "taskEvents", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    responses(
        (status = 200, description = "The task's history, oldest first.", body = TaskEventListResponse),
        crate::openapi::BadRequest, crate::openapi::TaskNotFound, crate::openapi::Unavailable,
    ),
)]
pub async fn task_events(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let events = run(&service, move |s| s.acting_as(&caller).events(id)).await?;
    Ok(HttpResponse::Ok().json(dto::events_response(&events)))
}

/// `GET /api/tasks/{id}/explain`: why the task is not running, as sentences and fields.
#[utoipa::path(
    get, path = "/api/tasks/{id}/explain", operation_id = "explainTask", tag = "tasks",
    params(("id" = String, Path, format = Uuid, description = "The task's id.")),
    responses(
        (status = 200, description = "What stands between the task and a worker.", body = taskpilot_api::ExplainResponse),
        crate::openapi::BadRequest, crate::openapi::TaskNotFound, crate::openapi::Unavailable,
    ),
)]
pub async fn explain_task(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let found = run(&service, move |s| s.acting_as(&caller).explain(id)).await?;
    Ok(HttpResponse::Ok().json(dto::explain_response(&found)))
}

/// `GET /api/queues`: every queue that holds tasks or was ever paused, within the token's
/// queues.
#[utoipa::path(
    get, path = "/api/queues", operation_id = "listQueues", tag = "queues",
    responses(
        (status = 200, description = "The queues, by name.", body = taskpilot_api::QueueListResponse),
        crate::openapi::Unavailable,
    ),
)]
pub async fn list_queues(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let queues = run(&service, move |s| s.acting_as(&caller).queues()).await?;
    Ok(HttpResponse::Ok().json(dto::queue_list_response(&queues, service.now())))
}

/// `GET /api/queues/{name}`: one queue; 404 QUEUE_NOT_FOUND when it holds no task and was
/// never paused.
#[utoipa::path(
    get, path = "/api/queues/{name}", operation_id = "getQueue", tag = "queues",
    params(("name" = QueueName, Path, description = "The queue.")),
    responses(
        (status = 200, description = "The queue.", body = taskpilot_api::QueueResponse,
         headers(("ETag" = String, description = "The queue's version, quoted: what `If-Match` of a pause or resume names."))),
        crate::openapi::BadRequest, crate::openapi::QueueNotFound, crate::openapi::Unavailable,
    ),
)]
pub async fn get_queue(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = dto::queue_name(&path)?;
    let view = run(&service, move |s| s.acting_as(&caller).queue(&queue)).await?;
    Ok(queue_ok(&view, service.now()))
}

/// `PUT /api/queues/{name}/pause`: claims on every server take nothing more from the queue;
/// creates, heartbeats, completions and the reaper go on. Pausing a paused queue changes
/// nothing and answers 200 with its state. A queue need not hold tasks to be paused.
#[utoipa::path(
    put, path = "/api/queues/{name}/pause", operation_id = "pauseQueue", tag = "queues",
    params(
        ("name" = QueueName, Path, description = "The queue."),
        crate::openapi::IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The queue, paused.", body = taskpilot_api::QueueResponse,
         headers(("ETag" = String, description = "The queue's version, quoted."))),
        crate::openapi::BadRequest, crate::openapi::PreconditionFailed, crate::openapi::Unavailable,
    ),
)]
pub async fn pause_queue(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = dto::queue_name(&path)?;
    let if_match = dto::if_match(req.headers().get_all(header::IF_MATCH))?;
    let view = run(&service, move |s| s.acting_as(&caller).pause_queue(&queue, &if_match)).await?;
    Ok(queue_ok(&view, service.now()))
}

/// `PUT /api/queues/{name}/resume`: the queue is claimable again on every server, and the
/// long-polling claims waiting on it wake up. Resuming a queue that is not paused changes
/// nothing.
#[utoipa::path(
    put, path = "/api/queues/{name}/resume", operation_id = "resumeQueue", tag = "queues",
    params(
        ("name" = QueueName, Path, description = "The queue."),
        crate::openapi::IfMatchHeader,
    ),
    responses(
        (status = 200, description = "The queue, not paused.", body = taskpilot_api::QueueResponse,
         headers(("ETag" = String, description = "The queue's version, quoted."))),
        crate::openapi::BadRequest, crate::openapi::QueueNotFound,
        crate::openapi::PreconditionFailed, crate::openapi::Unavailable,
    ),
)]
pub async fn resume_queue(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    hub: web::Data<WakeHub>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let queue = dto::queue_name(&path)?;
    let if_match = dto::if_match(req.headers().get_all(header::IF_MATCH))?;
    let view = run(&service, move |s| s.acting_as(&caller).resume_queue(&queue, &if_match)).await?;
    // The notification from the resume reaches every server, this one included; waking here
    // too spares this server's claims the round trip.
    hub.wake();
    Ok(queue_ok(&view, service.now()))
}

/// 200 with the queue and its version as `ETag`.
fn queue_ok(view: &taskpilot_app::QueueView, now: chrono::DateTime<chrono::Utc>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, dto::queue_etag(view)))
        .json(dto::queue_response(view, now))
}

/// `GET /api/stats/rejections`: refused stale calls by code and call, and how many of them
/// were success reports (`staleSuccesses`: tasks that ran twice).
#[utoipa::path(
    get, path = "/api/stats/rejections", operation_id = "rejectionStats", tag = "stats",
    responses(
        (status = 200, description = "Refused stale calls by code and call.", body = RejectionStatsResponse),
        crate::openapi::Unavailable,
    ),
)]
pub async fn rejection_stats(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let counts = run(&service, move |s| s.acting_as(&caller).rejection_counts()).await?;
    Ok(HttpResponse::Ok().json(dto::rejection_stats_response(&counts)))
}

/// `GET /api/stats`: tasks by queue and status and the oldest runnable task of each queue,
/// from the counts the writes maintain (no task is counted to answer).
#[utoipa::path(
    get, path = "/api/stats", operation_id = "stats", tag = "stats",
    responses(
        (status = 200, description = "Tasks by queue and status, across every server.", body = taskpilot_api::StatsResponse),
        crate::openapi::Unavailable,
    ),
)]
pub async fn stats(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let max_queues = metrics.max_queues();
    let counts = run(&service, move |s| {
        s.acting_as(&caller).authorize(Operation::ReadStats)?;
        s.task_counts(max_queues)
    })
    .await?;
    Ok(HttpResponse::Ok().json(dto::stats_response(&counts, service.now())))
}

/// `GET /metrics`: every metric in the Prometheus text format (OpenMetrics flavour); 200
/// without the stored counts when storage does not answer.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "stats",
    responses(
        (status = 200, description = "Every metric, in the Prometheus text format (OpenMetrics flavour).", body = String,
         content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    ),
)]
pub async fn metrics_text(
    service: web::Data<TaskService>,
    Authenticated(caller): Authenticated,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    service.acting_as(&caller).authorize(Operation::ReadMetrics)?;
    let max_queues = metrics.max_queues();
    // An outage is logged where it is noticed (the pool, the background loops), not per
    // scrape; the scrape still answers with this server's own metrics.
    let counts = run(&service, move |s| s.task_counts(max_queues)).await.ok();
    let text = metrics.render(counts, service.now());
    Ok(HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(text))
}

/// The body of `GET /healthz` and `GET /readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(pattern = "^(ok|ready)$")]
    pub status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "The process is up.", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// `GET /readyz`: 200 when the database answers, 503 DATABASE_UNAVAILABLE when not.
#[utoipa::path(
    get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "PostgreSQL answers.", body = Health),
        crate::openapi::Unavailable,
    ),
)]
pub async fn readyz(service: web::Data<TaskService>) -> Result<HttpResponse, ApiError> {
    match run(&service, TaskService::ready).await {
        Ok(()) => Ok(HttpResponse::Ok().json(Health { status: "ready" })),
        Err(ApiError::App(AppError::Unavailable(e) | AppError::Unexpected(e))) => {
            Err(ApiError::App(AppError::Unavailable(e)))
        }
        Err(e) => Err(e),
    }
}

/// The default service: no route matches.
pub async fn route_not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(format!("{} {}", req.method(), req.path())))
}

/// A resource's default service: the path exists, the method does not.
pub fn method_not_allowed(allow: String) -> actix_web::Route {
    web::to(move |req: HttpRequest| {
        let allow = allow.clone();
        async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allow,
            })
        }
    })
}

/// A JSON body that may be left out: a request without a body, or with `null`, gives
/// `T::default()`; any other body is read as a [`Body`].
#[derive(Debug)]
pub struct JsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for JsonOrEmpty<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        // An HTTP/1.1 request without Content-Length and Transfer-Encoding has no body.
        let no_body = !headers.contains_key(header::TRANSFER_ENCODING)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == "0"));
        if no_body {
            return Box::pin(async { Ok(Self(T::default())) });
        }
        // `null` is no body too, as the document's optional body allows.
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            match json.await?.into_inner() {
                serde_json::Value::Null => Ok(Self(T::default())),
                value => Ok(Self(crate::body::from_value(value)?)),
            }
        })
    }
}
