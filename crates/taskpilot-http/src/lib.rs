//! TaskPilot's REST adapter: actix-web handlers over the app's [`TaskService`], the
//! problem+json error mapping, request logging, configuration and the `taskpilot` binary's
//! start-up.
//!
//! Handlers stay thin: they parse and validate into domain types, run one use case on the
//! blocking pool and map the outcome. Rules live in `taskpilot-domain`; storage is reached only
//! through the `TaskRepository` port, wired to `taskpilot-diesel` in [`startup`].
//!
//! Besides answering requests every server runs a lease reaper, a watcher of scheduled runs
//! and a PostgreSQL listener ([`background`]); long-polling claims sleep on the server's
//! [`WakeHub`] until one of them says a task may be runnable.
//!
//! Tests run the app in-process with [`build_app`] or the real server with [`run`] on a
//! listener of their own.

pub mod background;
pub mod config;
pub mod dto;
pub mod error;
pub mod handlers;
pub mod startup;
pub mod telemetry;
pub mod wake;

use std::future::{Future, IntoFuture};
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use background::{Background, BackgroundConfig};
pub use config::{Cli, Command, Config, HttpConfig};
pub use error::ApiError;
use taskpilot_app::TaskService;
use tokio::sync::watch;
pub use wake::WakeHub;

/// The whole application: routes, extractor settings, error mapping and request logging.
/// Long-polling claims wait on `hub`.
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
    let limit = http.max_body_bytes;
    App::new()
        .app_data(web::Data::new(service))
        .app_data(web::Data::from(hub))
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
        .wrap(from_fn(telemetry::request_span))
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

/// Starts the HTTP server on `listener` and returns it; await it (or spawn
/// [`IntoFuture::into_future`]) to serve. While it serves, the lease reaper, the watcher of
/// scheduled runs and, when `notify_database_url` is given, the PostgreSQL listener run next
/// to it; they stop with it.
///
/// It stops gracefully on SIGTERM and SIGINT (or [`ServerHandle::stop`]): waiting claims
/// return at once and in-flight requests get [`HttpConfig::shutdown_timeout`] to finish.
///
/// # Errors
/// When the listener cannot be used.
pub fn run(
    service: TaskService,
    http: HttpConfig,
    listener: TcpListener,
    notify_database_url: Option<String>,
) -> std::io::Result<Server> {
    let hub = Arc::new(WakeHub::new());
    let app_service = service.clone();
    let app_hub = hub.clone();
    let signal_hub = hub.clone();
    let server = HttpServer::new(move || build_app(app_service.clone(), app_hub.clone(), &http))
        .workers(http.workers)
        .shutdown_timeout(http.shutdown_timeout.as_secs())
        // Our own signal handling, so that waiting claims are released before the graceful
        // stop waits for in-flight requests.
        .shutdown_signal(async move {
            shutdown_requested().await;
            signal_hub.close();
        })
        .listen(listener)?
        .run();
    let (finished, done) = watch::channel(false);
    let handle = ServerHandle { http: server.handle(), hub: hub.clone(), done };
    let background = BackgroundConfig {
        reaper_interval: http.reaper_interval,
        schedule_poll_interval: http.schedule_poll_interval,
        notify_database_url,
    };
    Ok(Server { http: server, handle, service, hub, background, finished })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere than Unix).
async fn shutdown_requested() {
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; stopping gracefully"),
                    _ = int.recv() => tracing::info!("SIGINT received; stopping gracefully"),
                }
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            }
        }
    }
    if let Err(e) = actix_web::rt::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot listen for Ctrl-C either; stop the server by its handle");
        std::future::pending::<()>().await;
    }
    tracing::info!("Ctrl-C received; stopping gracefully");
}

/// A TaskPilot server, ready to serve: the HTTP server and, once awaited, its background
/// tasks.
pub struct Server {
    http: actix_web::dev::Server,
    handle: ServerHandle,
    service: TaskService,
    hub: Arc<WakeHub>,
    background: BackgroundConfig,
    finished: watch::Sender<bool>,
}

impl Server {
    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The server's wake-up hub.
    pub fn hub(&self) -> Arc<WakeHub> {
        self.hub.clone()
    }
}

impl IntoFuture for Server {
    type Output = std::io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = std::io::Result<()>>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let background = Background::start(&self.service, &self.hub, &self.background);
            let served = self.http.await;
            // However the server stopped, waiting claims are done and so is the background.
            self.hub.close();
            background.stop().await;
            self.finished.send_replace(true);
            served
        })
    }
}

/// Stops a [`Server`] from elsewhere.
#[derive(Clone)]
pub struct ServerHandle {
    http: actix_web::dev::ServerHandle,
    hub: Arc<WakeHub>,
    done: watch::Receiver<bool>,
}

impl ServerHandle {
    /// Stops the server: waiting claims return at once; when `graceful`, in-flight requests
    /// get the configured shutdown timeout to finish. Resolves once the HTTP server and its
    /// background tasks stopped (the server must be being awaited).
    pub async fn stop(&self, graceful: bool) {
        self.hub.close();
        self.http.stop(graceful).await;
        // Err: the server future was dropped, which ends its background tasks too.
        let _ = self.done.clone().wait_for(|done| *done).await;
    }
}
