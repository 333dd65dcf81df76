//! The server's wiring: start-up ([`startup`]: finding, migrating and connecting to
//! PostgreSQL, the clock, the [`TaskService`] from the [`Config`](crate::Config)), the
//! background loops ([`background`]), logging set-up, and [`run`], which serves the HTTP
//! adapter's application next to those loops until a signal or a [`ServerHandle`] stops it.
//!
//! This module is the only place in the crate that names the storage adapter
//! (`taskpilot_diesel`): the choice of PostgreSQL is made here, and the adapter modules
//! outside it see the storage only through the app's `TaskRepository` port.

pub mod background;
pub mod startup;

use std::future::{Future, IntoFuture};
use std::io::IsTerminal as _;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::HttpServer;
use background::{Background, BackgroundConfig};
use taskpilot_app::TaskService;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::auth::Gate;
use crate::config::HttpConfig;
use crate::metrics::Metrics;
use crate::routes::build_app_with;
use crate::wake::WakeHub;

/// Installs the global fmt subscriber with `filter` (EnvFilter syntax, e.g. `info`).
///
/// # Errors
/// When the filter does not parse or a global subscriber is already set.
pub fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("log filter {filter:?} is not valid: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for people at a terminal, plain text for log collectors.
        .with_ansi(std::io::stdout().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// Starts the HTTP server on `listener` and returns it; await it (or spawn
/// [`IntoFuture::into_future`]) to serve. While it serves, the lease reaper, the watcher of
/// scheduled runs, the pruner of finished tasks and, when `notify_database_url` is given,
/// the PostgreSQL listener run next to it; they stop with it.
///
/// It stops gracefully on SIGTERM and SIGINT (or [`ServerHandle::stop`]): waiting claims
/// return at once and in-flight requests get [`HttpConfig::shutdown_timeout`] to finish.
///
/// # Errors
/// When the listener cannot be used.
pub fn run(
    service: TaskService,
    gate: Gate,
    http: HttpConfig,
    listener: TcpListener,
    notify_database_url: Option<String>,
) -> std::io::Result<Server> {
    run_preparing(service, gate, http, listener, notify_database_url, None)
}

/// Work a server does on the blocking pool once it serves, before it is ready (migrating a
/// database that may not be reachable yet, say). The server answers meanwhile (the service
/// should answer 503 until the work is done) and starts its background tasks only after it;
/// an error stops the server, which then resolves to that error. The work should return soon
/// once its [`StopSignal`] says the server stops.
pub type Preparation = Box<dyn FnOnce(&StopSignal) -> anyhow::Result<()> + Send>;

/// Tells a [`Preparation`] that its server is stopping.
#[derive(Debug)]
pub struct StopSignal(std::sync::mpsc::Receiver<()>);

impl StopSignal {
    /// Waits `pause` unless the server stops first: `false` once it is stopping.
    pub fn pause(&self, pause: std::time::Duration) -> bool {
        matches!(self.0.recv_timeout(pause), Err(std::sync::mpsc::RecvTimeoutError::Timeout))
    }
}

/// [`run`], with `prepare` done first while serving (see [`Preparation`]).
///
/// # Errors
/// When the listener cannot be used.
pub fn run_preparing(
    service: TaskService,
    gate: Gate,
    http: HttpConfig,
    listener: TcpListener,
    notify_database_url: Option<String>,
    prepare: Option<Preparation>,
) -> std::io::Result<Server> {
    let hub = Arc::new(WakeHub::new());
    // One set of metrics for every worker of the server, fed by the service too.
    let metrics = Arc::new(Metrics::new(http.metrics_max_queues));
    let service = service.with_observer(metrics.clone());
    let app_service = service.clone();
    let app_hub = hub.clone();
    let app_metrics = metrics.clone();
    let signal_hub = hub.clone();
    let server = HttpServer::new(move || {
        build_app_with(
            app_service.clone(),
            gate.clone(),
            app_hub.clone(),
            &http,
            app_metrics.clone(),
        )
    })
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
        prune_interval: http.prune_interval,
        counts_fold_interval: http.counts_fold_interval,
        notify_database_url,
    };
    Ok(Server { http: server, handle, service, hub, metrics, background, finished, prepare })
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
    metrics: Arc<Metrics>,
    background: BackgroundConfig,
    finished: watch::Sender<bool>,
    prepare: Option<Preparation>,
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

    /// The server's metrics (`GET /metrics`), for the wiring to add the pool's state.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

impl IntoFuture for Server {
    type Output = std::io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = std::io::Result<()>>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Self { mut http, handle, service, hub, metrics, background, finished, prepare } =
                self;
            // Dropped when this future ends, which tells a preparation still under way to stop.
            let (_stopping, stop_signal) = std::sync::mpsc::channel();
            let prepared = async move {
                match prepare {
                    None => Ok(()),
                    Some(prepare) => actix_web::rt::task::spawn_blocking(move || {
                        prepare(&StopSignal(stop_signal))
                    })
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("the preparation panicked: {e}"))),
                }
            };
            let mut running = None;
            let served = tokio::select! {
                served = &mut http => served,
                prepared = prepared => match prepared {
                    Ok(()) => {
                        running = Some(Background::start(&service, &hub, &metrics, &background));
                        (&mut http).await
                    }
                    Err(e) => {
                        // The server's own future carries the stop out: poll it meanwhile.
                        let stopped = handle.http.stop(false);
                        let _ = (&mut http).await;
                        stopped.await;
                        Err(std::io::Error::other(format!("{e:#}")))
                    }
                },
            };
            // However the server stopped, waiting claims are done and so is the background.
            hub.close();
            if let Some(running) = running {
                running.stop().await;
            }
            finished.send_replace(true);
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
