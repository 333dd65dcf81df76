//! TaskPilot's REST adapter: actix-web handlers over the app's [`TaskService`], the
//! problem+json error mapping, request logging, configuration and the `taskpilot` binary's
//! start-up.
//!
//! Handlers stay thin: they parse and validate into domain types, run one use case on the
//! blocking pool and map the outcome. Rules live in `taskpilot-domain`; storage is reached only
//! through the `TaskRepository` port, wired to `taskpilot-diesel` in [`startup`].
//!
//! Tests run the app in-process with [`build_app`] or the real server with [`run`] on a
//! listener of their own.

pub mod config;
pub mod dto;
pub mod error;
pub mod handlers;
pub mod startup;
pub mod telemetry;

use std::net::TcpListener;

use actix_web::body::BoxBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
pub use config::{Cli, Command, Config, HttpConfig};
pub use error::ApiError;
use taskpilot_app::TaskService;

/// The whole application: routes, extractor settings, error mapping and request logging.
pub fn build_app(
    service: TaskService,
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
    let limit = http.max_body_bytes;
    App::new()
        .app_data(web::Data::new(service))
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
        .configure(routes)
        .default_service(web::to(handlers::route_not_found))
        .wrap(from_fn(telemetry::request_span))
}

fn routes(cfg: &mut web::ServiceConfig) {
    use handlers::{method_not_allowed, *};

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
    .service(
        web::resource("/api/tasks/{id}")
            .route(web::get().to(get_task))
            .default_service(method_not_allowed("GET")),
    );
    for (action, route) in [
        ("start", web::put().to(start_task)),
        ("succeed", web::put().to(succeed_task)),
        ("fail", web::put().to(fail_task)),
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

/// Starts the HTTP server on `listener` and returns it; await it (or spawn it) to serve.
/// It stops gracefully on SIGTERM and SIGINT, giving in-flight requests
/// [`HttpConfig::shutdown_timeout`] to finish.
///
/// # Errors
/// When the listener cannot be used.
pub fn run(
    service: TaskService,
    http: HttpConfig,
    listener: TcpListener,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || build_app(service.clone(), &http))
        .workers(http.workers)
        .shutdown_timeout(http.shutdown_timeout.as_secs())
        .listen(listener)?
        .run();
    Ok(server)
}
