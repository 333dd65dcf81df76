//! What the HTTP tests share: waiting for events, with a guard against hanging (never for a
//! length of time), and the real server on a test database.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::future::{Future, IntoFuture as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use taskpilot_app::{AccessService, ServiceDefaults, SystemClock, TaskService};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgTaskRepository, PoolConfig};
use taskpilot_domain::{ExponentialBackoff, LeaseDuration, MaxAttempts};
use taskpilot_http::startup::pool_source;
use taskpilot_http::{run, AuthMode, Gate, HttpConfig, ServerHandle};

/// How long a test waits for an event before it calls the run hung. It only guards against
/// hanging: no test measures how soon anything happened.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// The `waitMs` of a long-polling claim that a test expects to be woken: the longest a claim
/// may ask for. A claim nobody wakes answers only at this deadline, after [`HANG_GUARD`], so
/// an answer within the guard is a wake-up.
pub const LONG_POLL_MS: i64 = taskpilot_api::limits::MAX_CLAIM_WAIT_MS;
const _: () = assert!(HANG_GUARD.as_millis() < LONG_POLL_MS as u128);

/// Waits for `event`, for at most [`HANG_GUARD`]; `what` names it in the panic.
pub async fn guarded<T>(what: &str, event: impl Future<Output = T>) -> T {
    match actix_web::rt::time::timeout(HANG_GUARD, event).await {
        Ok(happened) => happened,
        Err(_) => panic!("{what} did not happen within {HANG_GUARD:?}"),
    }
}

/// The real server on `db`, spawned on the running actix system: authentication as
/// `taskpilot serve` on a loopback address does it (open until a token exists), retries
/// after `backoff_base` (at most 10 times that), `max_attempts` per task, and `http`'s other
/// settings. Its base URL and a handle to stop it.
pub fn spawn_server(
    db: &TestDatabase,
    backoff_base: TimeDelta,
    max_attempts: i64,
    http: HttpConfig,
) -> (String, ServerHandle) {
    let timeout = Duration::from_secs(5);
    let pool = taskpilot_diesel::build_pool(
        db.url(),
        &PoolConfig { max_size: 4, connect_timeout: timeout, acquire_timeout: timeout },
    )
    .unwrap_or_else(|e| panic!("no pool on the test database: {e}"));
    let backoff = ExponentialBackoff::new(backoff_base, backoff_base * 10)
        .unwrap_or_else(|e| panic!("a valid backoff: {e}"));
    let defaults = ServiceDefaults {
        max_attempts: MaxAttempts::new(max_attempts).unwrap_or_else(|e| panic!("{e}")),
        lease: LeaseDuration::from_secs(300).unwrap_or_else(|e| panic!("{e}")),
    };
    let service = TaskService::new(
        Arc::new(PgTaskRepository::new(pool.clone())),
        Arc::new(SystemClock),
        Arc::new(backoff),
        defaults,
    );
    let access =
        AccessService::new(Arc::new(PgTaskRepository::new(pool.clone())), Arc::new(SystemClock));
    let gate = Gate::new(access, AuthMode::Auto, true);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let server = run(service, gate, http, listener, None).unwrap_or_else(|e| panic!("{e}"));
    server.metrics().observe_pool(pool_source(pool));
    let handle = server.handle();
    actix_web::rt::spawn(server.into_future());
    (base, handle)
}
