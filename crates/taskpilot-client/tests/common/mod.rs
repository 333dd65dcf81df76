//! The real TaskPilot server for the client's tests: `taskpilot_http::run` on a free port, on
//! an actix system thread of its own, over a fresh database (`TestDatabase`). The tests
//! themselves run the client on a multi-threaded tokio runtime, as users do.
//!
//! Set TASKPILOT_TEST_DATABASE_URL to use a running PostgreSQL; otherwise a throwaway cluster
//! is started from the installed binaries.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::future::IntoFuture as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use taskpilot_app::{AccessService, NewToken, ServiceDefaults, SystemClock, TaskService};
use taskpilot_client::{Client, RetryPolicy, TaskResponse, TaskStatus};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgTaskRepository, PoolConfig};
use taskpilot_domain::{ExponentialBackoff, LeaseDuration, MaxAttempts};
use taskpilot_http::{run, AuthMode, Gate, HttpConfig, ServerHandle};

/// A running server and its database.
pub struct TestServer {
    pub base: String,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    // Last: the database outlives the server.
    _db: TestDatabase,
}

impl TestServer {
    /// A server whose retries wait `backoff_base` after a first failure (at most 4 times
    /// that later on) and whose reaper runs every 100 ms.
    pub fn start(backoff_base: TimeDelta) -> Self {
        let db = TestDatabase::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let url = db.url().to_owned();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let pool = taskpilot_diesel::build_pool(
                    &url,
                    &PoolConfig {
                        max_size: 8,
                        connect_timeout: Duration::from_secs(5),
                        acquire_timeout: Duration::from_secs(5),
                    },
                )
                .unwrap();
                // As `taskpilot serve` on a loopback address: open until a token exists.
                let access = AccessService::new(
                    Arc::new(PgTaskRepository::new(pool.clone())),
                    Arc::new(SystemClock),
                );
                let gate = Gate::new(access, AuthMode::Auto, true);
                let service = TaskService::new(
                    Arc::new(PgTaskRepository::new(pool)),
                    Arc::new(SystemClock),
                    Arc::new(ExponentialBackoff::new(backoff_base, backoff_base * 4).unwrap()),
                    ServiceDefaults {
                        max_attempts: MaxAttempts::new(25).unwrap(),
                        lease: LeaseDuration::from_secs(300).unwrap(),
                    },
                );
                let http = HttpConfig {
                    workers: 2,
                    shutdown_timeout: Duration::from_secs(1),
                    reaper_interval: Duration::from_millis(100),
                    ..HttpConfig::default()
                };
                let server = run(service, gate, http, listener, Some(url)).unwrap();
                handle_tx.send(server.handle()).unwrap();
                server.into_future().await.unwrap();
            });
        });
        let handle = handle_rx.recv().expect("the server thread failed to start the server");
        Self { base, handle, thread: Some(thread), _db: db }
    }

    /// Creates an API token of `kind` in the server's database (which from then on wants a
    /// token with every request); its secret.
    pub fn create_token(&self, kind: taskpilot_domain::TokenKind) -> String {
        let access = AccessService::new(
            Arc::new(PgTaskRepository::new(self._db.pool())),
            Arc::new(SystemClock),
        );
        let request = NewToken {
            name: taskpilot_domain::TokenName::parse("test").unwrap(),
            kind,
            queues: taskpilot_domain::QueueScope::All,
            expires_at: None,
        };
        access.create_token(request).unwrap().secret
    }

    /// A client of this server that gives up quickly.
    pub fn client(&self) -> Client {
        Client::builder(&self.base)
            .retry(RetryPolicy::default().initial_delay(Duration::from_millis(20)))
            .build()
            .unwrap()
    }

    /// Stops the server and waits for its thread.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join()).await.unwrap().unwrap();
        }
    }
}

/// Reads the tasks until every one of `ids` is in a terminal status, for up to `limit`.
pub async fn wait_terminal(
    client: &Client,
    ids: &[uuid::Uuid],
    limit: Duration,
) -> Vec<TaskResponse> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            tasks.push(client.get(id).await.unwrap());
        }
        let open = tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Running))
            .count();
        if open == 0 {
            return tasks;
        }
        assert!(tokio::time::Instant::now() < deadline, "{open} tasks still not terminal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs to the test's output when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
