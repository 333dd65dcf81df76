//! The application: the route table, the extractors' limits and error handlers, and the
//! request-log middleware, as one actix-web [`App`].
//!
//! Part of the HTTP adapter: it knows the handlers and the use cases, never the storage or
//! the server's wiring; of the configuration it reads the body limits.

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use taskpilot_app::TaskService;

use crate::config::HttpConfig;
use crate::error::{self, ApiError};
use crate::handlers;
use crate::metrics::{self, Metrics};
use crate::request_log;
use crate::wake::WakeHub;

/// The whole application: routes, extractor settings, error mapping and request logging.
/// Long-polling claims wait on `hub`; `http` gives the body limits. Its metrics start from
/// zero; the server shares one [`Metrics`] between its workers with [`build_app_with`].
pub fn build_app(
    service: TaskService,
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
    build_app_with(service, hub, http, Arc::new(Metrics::new(http.metrics_max_queues)))
}

/// [`build_app`] counting into `metrics`.
pub fn build_app_with(
    service: TaskService,
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
        .configure(|cfg| routes(cfg, http.max_batch_body_bytes))
        .default_service(web::to(handlers::route_not_found))
        .wrap(from_fn(metrics::count_request))
        .wrap(from_fn(request_log::request_span))
}

fn routes(cfg: &mut web::ServiceConfig, batch_limit: usize) {
    use handlers::{method_not_allowed, *};

    // The batch endpoints read up to 1,000 items: their own, larger body limit.
    let batch_json = || {
        web::JsonConfig::default()
            .limit(batch_limit)
            .error_handler(error::json_error_handler(batch_limit))
    };

    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(readyz))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/api/tasks")
            .route(web::post().to(create_task))
            .route(web::get().to(list_tasks))
            .default_service(method_not_allowed("GET, POST")),
    )
    // Before `/api/tasks/{id}`, which would match them too.
    .service(
        web::resource("/api/tasks/claim")
            .route(web::post().to(claim_tasks))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/api/tasks/batch")
            .app_data(batch_json())
            .route(web::post().to(create_task_batch))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/api/tasks/complete")
            .app_data(batch_json())
            .route(web::post().to(complete_tasks))
            .default_service(method_not_allowed("POST")),
    )
    .service(
        web::resource("/api/tasks/{id}")
            .route(web::get().to(get_task))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/api/tasks/{id}/events")
            .route(web::get().to(task_events))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics_text))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/api/stats")
            .route(web::get().to(stats))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/api/stats/rejections")
            .route(web::get().to(rejection_stats))
            .default_service(method_not_allowed("GET")),
    );
    for (action, route) in [
        ("start", web::put().to(start_task)),
        ("heartbeat", web::put().to(heartbeat_task)),
        ("succeed", web::put().to(succeed_task)),
        ("fail", web::put().to(fail_task)),
        ("release", web::put().to(release_task)),
        ("cancel", web::put().to(cancel_task)),
        ("rerun", web::put().to(rerun_task)),
    ] {
        cfg.service(
            web::resource(format!("/api/tasks/{{id}}/{action}"))
                .route(route)
                .default_service(method_not_allowed("PUT")),
        );
    }
}
