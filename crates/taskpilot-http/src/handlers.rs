//! Request handlers: parse and validate into domain types, run one use case off the async
//! executor, map the result. No rule is decided here.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::json;
use taskpilot_app::{AppError, CreateTask, TaskFilter, TaskService};
use taskpilot_domain::{MaxAttempts, Task, TaskId, TaskName, TaskStatus, WorkerId};
use tracing::Span;
use uuid::Uuid;

use crate::dto::{
    CreateTaskRequest, FailTaskRequest, ListTasksQuery, StartTaskRequest, SucceedTaskRequest,
    TaskListResponse, TaskResponse,
};
use crate::error::ApiError;

/// Runs a use case on the blocking pool: diesel blocks, the executor must not.
async fn run<T, F>(service: &web::Data<TaskService>, call: F) -> Result<T, ApiError>
where
    F: FnOnce(&TaskService) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    let service = web::Data::clone(service);
    web::block(move || call(&service))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(ApiError::from)
}

fn parse_task_id(raw: &str) -> Result<TaskId, ApiError> {
    let id = Uuid::parse_str(raw)
        .map_err(|e| ApiError::Malformed(format!("task id {raw:?} is not a UUID: {e}")))?;
    Span::current().record("task_id", tracing::field::display(id));
    Ok(TaskId::from_uuid(id))
}

fn parse_worker_id(raw: &str) -> Result<WorkerId, ApiError> {
    let worker = WorkerId::parse(raw)?;
    Span::current().record("worker_id", tracing::field::display(&worker));
    Ok(worker)
}

fn task_ok(task: &Task) -> HttpResponse {
    HttpResponse::Ok().json(TaskResponse::from(task))
}

/// `POST /api/tasks`: 201 with the task and its Location.
pub async fn create_task(
    service: web::Data<TaskService>,
    body: web::Json<CreateTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let request = CreateTask {
        name: TaskName::parse(&body.name)?,
        payload: body.payload,
        priority: body.priority,
        max_attempts: body.max_attempts.map(MaxAttempts::new).transpose()?,
        run_at: body.run_at,
    };
    let task = run(&service, move |s| s.create(request)).await?;
    Span::current().record("task_id", tracing::field::display(task.id()));
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/tasks/{}", task.id())))
        .json(TaskResponse::from(&task)))
}

/// `GET /api/tasks/{id}`.
pub async fn get_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let task = run(&service, move |s| s.get(id)).await?;
    Ok(task_ok(&task))
}

/// `GET /api/tasks?status=&name=&limit=&cursor=`: one page, newest first.
pub async fn list_tasks(
    service: web::Data<TaskService>,
    query: web::Query<ListTasksQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let status = present(query.status)
        .map(|raw| {
            TaskStatus::parse(&raw).ok_or_else(|| {
                let all = TaskStatus::ALL.map(TaskStatus::as_str).join(", ");
                ApiError::Validation(format!("status must be one of {all}, got {raw:?}"))
            })
        })
        .transpose()?;
    let name = present(query.name).map(|raw| TaskName::parse(&raw)).transpose()?;
    let limit = present(query.limit)
        .map(|raw| {
            raw.parse::<u32>().map_err(|_| {
                ApiError::Validation(format!(
                    "limit must be an integer between 1 and {}, got {raw:?}",
                    taskpilot_app::MAX_PAGE_SIZE
                ))
            })
        })
        .transpose()?;
    let cursor = present(query.cursor);
    let filter = TaskFilter { status, name };
    let page = run(&service, move |s| s.list(&filter, cursor.as_deref(), limit)).await?;
    Ok(HttpResponse::Ok().json(TaskListResponse::from(&page)))
}

/// `PUT /api/tasks/{id}/start`: PENDING to RUNNING.
pub async fn start_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Json<StartTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let worker = parse_worker_id(&body.worker_id)?;
    let task = run(&service, move |s| s.start(id, &worker)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/succeed`: RUNNING to SUCCEEDED. The body may be omitted.
pub async fn succeed_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: JsonOrEmpty<SucceedTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let body = body.0;
    let worker = body.worker_id.as_deref().map(parse_worker_id).transpose()?;
    let result = body.result;
    let task = run(&service, move |s| s.succeed(id, worker.as_ref(), result)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/fail`: a retry after backoff, or FAILED when attempts ran out.
pub async fn fail_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Json<FailTaskRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let body = body.into_inner();
    let worker = body.worker_id.as_deref().map(parse_worker_id).transpose()?;
    let message = body.error_message;
    let task = run(&service, move |s| s.fail(id, worker.as_ref(), &message)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/cancel`: PENDING or RUNNING to CANCELLED.
pub async fn cancel_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let task = run(&service, move |s| s.cancel(id)).await?;
    Ok(task_ok(&task))
}

/// `PUT /api/tasks/{id}/rerun`: FAILED or CANCELLED back to PENDING with a fresh budget.
pub async fn rerun_task(
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&path)?;
    let task = run(&service, move |s| s.rerun(id)).await?;
    Ok(task_ok(&task))
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
