//! The application: the route table ([`endpoints`]), the extractors' limits and error
//! handlers, and the request-log middleware, as one actix-web [`App`].
//!
//! Part of the HTTP adapter: it knows the handlers and the use cases, never the storage or
//! the server's wiring; of the configuration it reads the body limits.

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::{web, App, FromRequest, Handler, Responder, Route};
use taskpilot_app::TaskService;

use crate::auth::{self, Gate};
use crate::config::HttpConfig;
use crate::error::{self, ApiError};
use crate::handlers;
use crate::metrics::{self, Metrics};
use crate::request_log;
use crate::wake::WakeHub;

/// The whole application: routes, extractor settings, error mapping, authentication through
/// `gate` and request logging. Long-polling claims wait on `hub`; `http` gives the body limits.
/// Its metrics start from zero; the server shares one [`Metrics`] between its workers with
/// [`build_app_with`].
pub fn build_app(
    service: TaskService,
    gate: Gate,
    hub: Arc<WakeHub>,
    http: &HttpConfig,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    build_app_with(service, gate, hub, http, Arc::new(Metrics::new(http.metrics_max_queues)))
}

/// [`build_app`] counting into `metrics`, which the server shares between its workers.
pub fn build_app_with(
    service: TaskService,
    gate: Gate,
    hub: Arc<WakeHub>,
    http: &HttpConfig,
    metrics: Arc<Metrics>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = http.max_body_bytes;
    App::new()
        .app_data(web::Data::new(service))
        .app_data(web::Data::new(gate))
        .app_data(web::Data::from(hub))
        .app_data(web::Data::from(metrics))
        .app_data(
            web::JsonConfig::default().limit(limit).error_handler(error::json_error_handler(limit)),
        )
        .app_data(web::PayloadConfig::default().limit(limit))
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _req| ApiError::from_query_error(&e).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _req| ApiError::from_path_error(&e).into()),
        )
        .app_data(web::Data::new(crate::ui::UiSettings { session_ttl: http.ui_session_ttl }))
        .configure(|cfg| routes(cfg, http.max_batch_body_bytes))
        // The dashboard is no part of the API's route table: its pages are not API
        // operations, and the OpenAPI document lists exactly `endpoints()`.
        .service(crate::ui::scope())
        .default_service(web::to(handlers::route_not_found))
        .wrap(from_fn(auth::authenticate))
        .wrap(from_fn(metrics::count_request))
        .wrap(from_fn(request_log::request_span))
}

/// Which JSON body limit a route reads its body with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLimit {
    /// `max_body_bytes`.
    Default,
    /// `max_batch_body_bytes`: the batch endpoints read up to 1,000 items.
    Batch,
}

/// One route the server serves: a method on a path, and its handler.
pub struct Endpoint {
    /// The method.
    pub method: Method,
    /// The path as actix and the OpenAPI document both spell it: `/api/tasks/{id}`.
    pub path: &'static str,
    body: BodyLimit,
    route: Route,
}

impl Endpoint {
    fn new<F, Args>(method: Method, path: &'static str, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        Self {
            route: web::to(handler).method(method.clone()),
            method,
            path,
            body: BodyLimit::Default,
        }
    }

    /// Reads its body with the batch endpoints' larger limit.
    fn batch_body(mut self) -> Self {
        self.body = BodyLimit::Batch;
        self
    }
}

fn get<F, Args>(path: &'static str, handler: F) -> Endpoint
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Endpoint::new(Method::GET, path, handler)
}

fn post<F, Args>(path: &'static str, handler: F) -> Endpoint
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Endpoint::new(Method::POST, path, handler)
}

fn delete<F, Args>(path: &'static str, handler: F) -> Endpoint
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Endpoint::new(Method::DELETE, path, handler)
}

fn put<F, Args>(path: &'static str, handler: F) -> Endpoint
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    Endpoint::new(Method::PUT, path, handler)
}

/// Every route the server serves, and the only place one is registered. Paths are matched
/// in this order, so a literal path comes before a template that would match it too
/// (`/api/tasks/claim` before `/api/tasks/{id}`). The OpenAPI document lists exactly these
/// operations (each handler's `#[utoipa::path]`, listed in [`crate::openapi::ApiDoc`]), which
/// a test checks.
pub fn endpoints() -> Vec<Endpoint> {
    use crate::{activity, openapi, tokens};
    use handlers::*;
    vec![
        get("/healthz", healthz),
        get("/readyz", readyz),
        post("/api/tasks", create_task),
        get("/api/tasks", list_tasks),
        post("/api/tasks/claim", claim_tasks),
        post("/api/tasks/batch", create_task_batch).batch_body(),
        post("/api/tasks/complete", complete_tasks).batch_body(),
        post("/api/tasks/bulk", bulk_action),
        get("/api/tasks/{id}", get_task),
        get("/api/tasks/{id}/events", task_events),
        get("/api/tasks/{id}/explain", explain_task),
        put("/api/tasks/{id}/start", start_task),
        put("/api/tasks/{id}/heartbeat", heartbeat_task),
        put("/api/tasks/{id}/succeed", succeed_task),
        put("/api/tasks/{id}/fail", fail_task),
        put("/api/tasks/{id}/release", release_task),
        put("/api/tasks/{id}/cancel", cancel_task),
        put("/api/tasks/{id}/rerun", rerun_task),
        get("/api/queues", list_queues),
        get("/api/queues/{name}", get_queue),
        put("/api/queues/{name}/pause", pause_queue),
        put("/api/queues/{name}/resume", resume_queue),
        get("/metrics", metrics_text),
        get("/api/stats", stats),
        get("/api/stats/rejections", rejection_stats),
        get("/api/stats/throughput", activity::throughput),
        get("/api/dead-letters", activity::dead_letters),
        get("/api/workers", activity::workers),
        post("/api/tokens", tokens::create_token),
        get("/api/tokens", tokens::list_tokens),
        delete("/api/tokens/{id}", tokens::revoke_token),
        get(openapi::DOCUMENT_PATH, openapi::document),
        get(openapi::PAGE_PATH, openapi::page),
        get("/api/docs/{file}", openapi::page_file),
    ]
}

/// Registers [`endpoints`]: one resource per path, in order of first appearance, whose other
/// methods answer 405 with the methods it has.
fn routes(cfg: &mut web::ServiceConfig, batch_limit: usize) {
    let mut resources: Vec<(&'static str, Vec<Endpoint>)> = Vec::new();
    for endpoint in endpoints() {
        match resources.iter_mut().find(|(path, _)| *path == endpoint.path) {
            Some((_, same_path)) => same_path.push(endpoint),
            None => resources.push((endpoint.path, vec![endpoint])),
        }
    }
    for (path, endpoints) in resources {
        let mut allow: Vec<&str> = endpoints.iter().map(|e| e.method.as_str()).collect();
        allow.sort_unstable();
        let allow = allow.join(", ");
        let mut resource = web::resource(path);
        if endpoints.iter().any(|e| e.body == BodyLimit::Batch) {
            resource = resource.app_data(
                web::JsonConfig::default()
                    .limit(batch_limit)
                    .error_handler(error::json_error_handler(batch_limit)),
            );
        }
        for endpoint in endpoints {
            resource = resource.route(endpoint.route);
        }
        cfg.service(resource.default_service(handlers::method_not_allowed(allow)));
    }
}
