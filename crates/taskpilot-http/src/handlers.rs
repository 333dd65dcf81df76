//! Request handlers: map the request into validated values ([`dto`]), run one use case off
//! the async executor, map the result back ([`dto`], [`ApiError`]). No rule is decided here.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::json;
use taskpilot_api::{
    ClaimTasksRequest, CompleteTasksRequest, CompleteTasksResponse, CompletionResult,
    CreateTaskBatchRequest, CreateTaskRequest, FailTaskRequest, HeartbeatRequest, ListTasksQuery,
    ReleaseTaskRequest, StartTaskRequest, SucceedTaskRequest,
};
use taskpilot_app::{AppError, TaskService};
use taskpilot_domain::{Task, WorkerId};
use tokio::time::Instant;
use tracing::Span;

use crate::dto;
use crate::error::ApiError;
use crate::metrics::{ClaimOutcome, Metrics};
use crate::wake::{wake_when_due, Wake, WakeHub};

/// Runs a use case on the blocking pool: diesel blocks, the executor must not.
async fn run<T, F>(service: &web::Data<TaskService>, call: F) -> Result<T, ApiError>
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
    HttpResponse::Ok().json(dto::task_response(task))
}

/// The task as the worker holding its lease sees it (with the token).
fn holder_ok(task: &Task) -> HttpResponse {
    HttpResponse::Ok().json(dto::holder_response(task))
}

/// `POST /api/tasks`: 201 with the task and its Location.
pub async fn create_task(
    service: web::Data<TaskService>,
    body: web::Json<CreateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = dto::create_task(body.into_inner())?;
    let task = run(&service, move |s| s.create(request)).await?;
    Span::current().record("task_id", tracing::field::display(task.id()));
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/tasks/{}", task.id())))
        .json(dto::task_response(&task)))
}

/// `POST /api/tasks/batch`: 201 with the created tasks in the order given. All or nothing:
/// an invalid task fails the whole batch with 400 VALIDATION_FAILED naming its index.
pub async fn create_task_batch(
    service: web::Data<TaskService>,
    body: web::Json<CreateTaskBatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let requests = dto::create_batch(body.into_inner())?;
    let tasks = run(&service, move |s| s.create_batch(requests)).await?;
    tracing::info!(tasks = tasks.len(), "{} tasks created in one batch", tasks.len());
    Ok(HttpResponse::Created().json(dto::batch_response(&tasks)))
}

/// `POST /api/tasks/complete`: up to [`MAX_BATCH`](taskpilot_api::limits::MAX_BATCH) outcomes
/// in one round trip, each fenced by its lease token and answered on its own, in the order
/// given: 200 with the task, or the status and problem body the single succeed or fail would
/// have answered (400 for an item whose values are invalid, 404, 409). An outcome is
/// `succeeded`, `failed` or `released`. Only a body that cannot be read, or that holds no item
/// or too many, fails the whole request.
pub async fn complete_tasks(
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    body: web::Json<CompleteTasksRequest>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().items;
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
        run(&service, move |s| s.complete_batch(completions)).await?
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
pub async fn get_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let task = run(&service, move |s| s.get(id)).await?;
    Ok(task_ok(&task))
}

/// `GET /api/tasks?queue=&status=&name=&limit=&cursor=`: one page, newest first.
pub async fn list_tasks(
    service: web::Data<TaskService>,
    query: web::Query<ListTasksQuery>,
) -> Result<HttpResponse, ApiError> {
    let dto::ListRequest { filter, cursor, limit } = dto::list_request(query.into_inner())?;
    let page = run(&service, move |s| s.list(&filter, cursor.as_deref(), limit)).await?;
    Ok(HttpResponse::Ok().json(dto::list_response(&page)))
}

/// `POST /api/tasks/claim`: up to `limit` runnable tasks, each started under a fresh lease,
/// highest priority and longest waiting first; `{"items": []}` when nothing is runnable.
///
/// With `waitMs`, a claim that finds nothing waits on the server's [`WakeHub`] (no database
/// query while it waits), claims again whenever woken, and gives up when the time is up.
pub async fn claim_tasks(
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    metrics: web::Data<Metrics>,
    body: web::Json<ClaimTasksRequest>,
) -> Result<HttpResponse, ApiError> {
    let dto::Claim { worker, limit, queues, lease, wait } = dto::claim(body.into_inner())?;
    let deadline = Instant::now() + wait;
    let empty = if wait.is_zero() { ClaimOutcome::Empty } else { ClaimOutcome::TimedOut };

    loop {
        // Subscribe before looking, so that a task made runnable between the look and the
        // wait still wakes this claim.
        let mut waiter = hub.waiter();
        let (claimer, queues) = (worker.clone(), queues.clone());
        let tasks = run(&service, move |s| s.claim(&claimer, queues, limit, lease)).await?;
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
pub async fn start_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Json<StartTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (worker, lease) = dto::start(&body)?;
    let task = run(&service, move |s| s.start(id, &worker, lease)).await?;
    Ok(holder_ok(&task))
}

/// `PUT /api/tasks/{id}/heartbeat`: extends the live attempt's lease. A worker whose task
/// was cancelled learns it here (409 TASK_CANCELLED) and should stop.
pub async fn heartbeat_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Json<HeartbeatRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (worker, token, lease) = dto::heartbeat(&body)?;
    let task = run(&service, move |s| s.heartbeat(id, Some(&worker), token, lease)).await?;
    Ok(holder_ok(&task))
}

/// `PUT /api/tasks/{id}/succeed`: RUNNING to SUCCEEDED. The body may be omitted. A repeat of
/// an accepted report (same token, same outcome) answers 200 with the stored task.
pub async fn succeed_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: JsonOrEmpty<SucceedTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let (reporter, result) = dto::success(body.0)?;
    let task = run(&service, move |s| s.succeed(id, &reporter, result)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/fail`: a retry after backoff, or FAILED when attempts ran out; with
/// `retryable: false`, FAILED at once (retry state NON_RETRYABLE).
pub async fn fail_task(
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    path: web::Path<String>,
    body: web::Json<FailTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let dto::Failure { reporter, message, retryable } = dto::failure(body.into_inner())?;
    let task = if retryable {
        run(&service, move |s| s.fail(id, &reporter, &message)).await?
    } else {
        run(&service, move |s| s.fail_permanently(id, &reporter, &message)).await?
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
pub async fn release_task(
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    path: web::Path<String>,
    body: web::Json<ReleaseTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let reporter = dto::release(&body)?;
    let task = run(&service, move |s| s.release(id, &reporter)).await?;
    // A released retry keeps a nextRunAt (now): wake this server's waiting claims for it too.
    if let Some(next_run_at) = task.next_run_at() {
        wake_when_due(&hub.into_inner(), next_run_at, service.now());
    }
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/cancel`: PENDING or RUNNING to CANCELLED.
pub async fn cancel_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let task = run(&service, move |s| s.cancel(id)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/rerun`: FAILED or CANCELLED back to PENDING with a fresh budget.
pub async fn rerun_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let task = run(&service, move |s| s.rerun(id)).await?;
    Ok(task_ok(&task))
}

/// `GET /api/tasks/{id}/events`: the task's history, oldest first.
pub async fn task_events(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = dto::task_id(&path)?;
    let events = run(&service, move |s| s.events(id)).await?;
    Ok(HttpResponse::Ok().json(dto::events_response(&events)))
}

/// `GET /api/stats/rejections`: refused stale calls by code and call, and how many of them
/// were success reports (`staleSuccesses`: tasks that ran twice).
pub async fn rejection_stats(service: web::Data<TaskService>) -> Result<HttpResponse, ApiError> {
    let counts = run(&service, TaskService::rejection_counts).await?;
    Ok(HttpResponse::Ok().json(dto::rejection_stats_response(&counts)))
}

/// `GET /api/stats`: tasks by queue and status and the oldest runnable task of each queue,
/// from the counts the writes maintain (no task is counted to answer).
pub async fn stats(
    service: web::Data<TaskService>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let max_queues = metrics.max_queues();
    let counts = run(&service, move |s| s.task_counts(max_queues)).await?;
    Ok(HttpResponse::Ok().json(dto::stats_response(&counts, service.now())))
}

/// `GET /metrics`: every metric in the Prometheus text format (OpenMetrics flavour); 200
/// without the stored counts when storage does not answer.
pub async fn metrics_text(
    service: web::Data<TaskService>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let max_queues = metrics.max_queues();
    // An outage is logged where it is noticed (the pool, the background loops), not per
    // scrape; the scrape still answers with this server's own metrics.
    let counts = run(&service, move |s| s.task_counts(max_queues)).await.ok();
    let text = metrics.render(counts, service.now());
    Ok(HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(text))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the database answers, 503 DATABASE_UNAVAILABLE when not.
pub async fn readyz(service: web::Data<TaskService>) -> Result<HttpResponse, ApiError> {
    match run(&service, TaskService::ready).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "status": "ready" }))),
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
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow,
        })
    })
}

/// A JSON body that may be left out: a request without a body gives `T::default()`;
/// any body goes through [`web::Json`] and its configured error handler.
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
        let json = web::Json::<T>::from_request(req, payload);
        Box::pin(async move { Ok(Self(json.await?.into_inner())) })
    }
}
