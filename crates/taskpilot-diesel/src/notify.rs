//! Wake-ups for long-polling claims: a dedicated connection LISTENs on
//! [`RUNNABLE_CHANNEL`], where the `tasks` triggers NOTIFY once per statement and queue
//! whenever tasks become runnable now (created, rerun), on any server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use diesel::prelude::*;

use crate::database_url::with_default_param;
use crate::with_connect_timeout;

/// The channel the `tasks` triggers notify; the payload is a queue that got runnable tasks.
pub const RUNNABLE_CHANNEL: &str = "taskpilot_runnable";

/// How often the listener looks for notifications. Looking costs no query: libpq only
/// consumes what the server already sent on the socket.
const POLL: Duration = Duration::from_millis(20);
/// How often an idle listener checks its connection with a query: a peer that vanished
/// without closing the socket (a dead host, a cut network) shows no other sign.
const HEALTH_CHECK: Duration = Duration::from_secs(10);
/// Reconnection backoff: from the first to the longest wait between attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Something to call when tasks may have become runnable.
pub type OnWake = Arc<dyn Fn() + Send + Sync>;

/// Starts a listener thread that calls `on_wake` whenever tasks may have become runnable,
/// and runs for as long as the process does. See [`RunnableListener`] for one that stops.
///
/// `on_wake` is called after each batch of notifications (one call for many), and after each
/// (re)connection, since notifications sent while disconnected are lost. It runs on the
/// listener thread: it should only signal waiters, never block.
pub fn spawn_listener(database_url: String, on_wake: OnWake) -> JoinHandle<()> {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || listen(&database_url, &on_wake, &stop))
}

/// A listener thread that stops when this value is dropped (within about one 20 ms poll, or a
/// connection attempt's timeout when one is under way).
#[derive(Debug)]
pub struct RunnableListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunnableListener {
    /// Starts listening on `database_url`; see [`spawn_listener`] for when `on_wake` runs.
    ///
    /// # Errors
    /// When the thread cannot be started. An unreachable database is no error: the listener
    /// keeps trying.
    pub fn start(database_url: String, on_wake: OnWake) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("taskpilot-listener".to_owned())
            .spawn(move || listen(&database_url, &on_wake, &flag))
            .context("cannot start the LISTEN thread")?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for RunnableListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic in `on_wake` already ended the thread; nothing more to do with it.
            let _ = thread.join();
        }
    }
}

/// Why a listening connection ended.
enum Ended {
    Stopped,
    Broken(diesel::result::Error),
}

fn listen(database_url: &str, on_wake: &OnWake, stop: &AtomicBool) {
    // Named, so that an operator can tell this long-lived idle session from a leaked one.
    let url = with_default_param(
        &with_connect_timeout(database_url, CONNECT_TIMEOUT),
        "application_name",
        "taskpilot-listener",
    );
    let mut backoff = RECONNECT_MIN;
    while !stop.load(Ordering::Relaxed) {
        match connect(&url) {
            Ok(mut conn) => {
                backoff = RECONNECT_MIN;
                crate::outage::OUTAGE.reached();
                tracing::debug!(channel = RUNNABLE_CHANNEL, "listening for runnable tasks");
                // Tasks that became runnable while nobody listened sent their notifications
                // to no one: let the waiters look for themselves.
                on_wake();
                match listen_on(&mut conn, on_wake, stop) {
                    Ended::Stopped => return,
                    // An outage, logged once with the pool's failures, not per attempt here.
                    Ended::Broken(e) => {
                        let e = anyhow::Error::new(e).context("the LISTEN connection failed");
                        crate::outage::OUTAGE.failed(&e);
                        tracing::debug!(error = %format!("{e:#}"), "reconnecting: {e:#}");
                    }
                }
            }
            Err(e) => {
                crate::outage::OUTAGE.failed(&e);
                tracing::debug!(
                    error = %format!("{e:#}"),
                    retry_in_ms = backoff.as_millis(),
                    "cannot LISTEN for runnable tasks, retrying: {e:#}"
                );
            }
        }
        sleep_unless_stopped(backoff, stop);
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let mut conn = PgConnection::establish(url).context("cannot connect")?;
    diesel::sql_query(format!("LISTEN {RUNNABLE_CHANNEL}"))
        .execute(&mut conn)
        .context("cannot LISTEN")?;
    Ok(conn)
}

fn listen_on(conn: &mut PgConnection, on_wake: &OnWake, stop: &AtomicBool) -> Ended {
    let mut checked = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::Stopped;
        }
        let mut woken = false;
        for notification in conn.notifications_iter() {
            match notification {
                Ok(_) => woken = true,
                Err(e) => return Ended::Broken(e),
            }
        }
        // One call for however many arrived: waiters re-check the queue anyway.
        if woken {
            on_wake();
        }
        if checked.elapsed() >= HEALTH_CHECK {
            if let Err(e) = diesel::sql_query("SELECT 1").execute(conn) {
                return Ended::Broken(e);
            }
            checked = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(POLL));
    }
}
