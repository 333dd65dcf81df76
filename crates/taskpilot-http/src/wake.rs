//! The wake-up hub of one server: long-polling claims sleep on it, and whatever learns that
//! a task may have become runnable (PostgreSQL's NOTIFY, the scheduled-run watcher, the
//! reaper) wakes them all at once.
//!
//! Waiting costs nothing: a waiting claim holds a receiver of a generation counter and no
//! database connection; only a woken claim queries again.
//!
//! The hub also counts its waiting claims ([`WakeHub::waiting`]), so that whoever needs to
//! know that a claim is parked (a test that wakes it, an operator at debug level) can wait
//! for that event ([`WakeHub::wait_for_waiters`]) instead of guessing how long it takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::DEFAULT_SCHEDULE_POLL_INTERVAL;

/// Wake-ups for a scheduled run come this much after its instant, so that the woken claims
/// find the task runnable rather than a microsecond early.
pub const SCHEDULE_MARGIN: Duration = Duration::from_millis(5);

/// Wakes every claim waiting on this server. Cheap to call from any thread.
#[derive(Debug)]
pub struct WakeHub {
    /// Bumped on every wake-up; receivers see that it moved.
    generation: watch::Sender<u64>,
    /// The claims waiting on this hub; changed as each wait begins and ends.
    waiting: watch::Sender<Waiting>,
    /// Set once the server shuts down: waiting claims return at once instead of holding up a
    /// graceful stop for as long as they asked to wait.
    closed: AtomicBool,
}

impl Default for WakeHub {
    fn default() -> Self {
        Self::new()
    }
}

/// The claims waiting on a hub, as [`WakeHub::waiting`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Claims inside [`Waiter::wait_until`] right now.
    pub now: usize,
    /// Waits begun since the hub was made, ended or not: a wait too short to be seen in
    /// [`Waiting::now`] still counts here.
    pub begun: u64,
}

/// Why [`Waiter::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something may have become runnable: claim again.
    Woken,
    /// The deadline passed.
    TimedOut,
    /// The server is shutting down.
    Closed,
}

impl WakeHub {
    /// An open hub nobody waits on yet.
    pub fn new() -> Self {
        let (generation, _) = watch::channel(0);
        let (waiting, _) = watch::channel(Waiting::default());
        Self { generation, waiting, closed: AtomicBool::new(false) }
    }

    /// Wakes every waiting claim.
    pub fn wake(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Wakes every waiting claim for good: from now on waits return [`Wake::Closed`] at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether [`WakeHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many claims wait on this hub now, and how many waits began so far.
    pub fn waiting(&self) -> Waiting {
        *self.waiting.borrow()
    }

    /// Resolves once at least `n` claims wait on this hub. A claim counts from the moment it
    /// parks after a look that found nothing; having subscribed before that look, it sees
    /// every wake-up from then on.
    pub async fn wait_for_waiters(&self, n: usize) {
        // The sender lives as long as `self`, so the wait cannot end with an error.
        let _ = self.waiting.subscribe().wait_for(|waiting| waiting.now >= n).await;
    }

    /// A waiter that sees every wake-up from this moment on. Take it *before* looking for
    /// work, so that a wake-up between the look and the wait is not lost.
    pub fn waiter(&self) -> Waiter<'_> {
        Waiter { hub: self, generation: self.generation.subscribe() }
    }
}

/// Wakes `hub` when a retry this server just scheduled for `next_run_at` comes due, if that
/// is sooner than the scheduled-run watcher's next look (it only sees runs scheduled before
/// it looks). `now` is the service's clock. Costs a timer, no query; the timer ends by itself
/// within one poll interval and does nothing once the hub is gone or closed.
pub fn wake_when_due(hub: &Arc<WakeHub>, next_run_at: DateTime<Utc>, now: DateTime<Utc>) {
    let wait = (next_run_at - now).to_std().unwrap_or(Duration::ZERO);
    if wait > DEFAULT_SCHEDULE_POLL_INTERVAL {
        return;
    }
    let hub = Arc::downgrade(hub);
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(wait + SCHEDULE_MARGIN).await;
        if let Some(hub) = hub.upgrade().filter(|hub| !hub.is_closed()) {
            hub.wake();
        }
    });
}

/// One claim's view of the hub; see [`WakeHub::waiter`].
#[derive(Debug)]
pub struct Waiter<'a> {
    hub: &'a WakeHub,
    generation: watch::Receiver<u64>,
}

impl Waiter<'_> {
    /// Waits for the next wake-up since this waiter was made or last returned, or until
    /// `deadline`.
    pub async fn wait_until(&mut self, deadline: Instant) -> Wake {
        if self.hub.is_closed() {
            return Wake::Closed;
        }
        let _parked = Parked::new(self.hub);
        match tokio::time::timeout_at(deadline, self.generation.changed()).await {
            Err(_elapsed) => Wake::TimedOut,
            Ok(Ok(())) if !self.hub.is_closed() => Wake::Woken,
            // The sender lives as long as the hub, so only a closed hub ends up here.
            Ok(_) => Wake::Closed,
        }
    }
}

/// One claim counted in [`WakeHub::waiting`] for as long as it lives, however its wait ends
/// (a dropped request drops the wait too).
struct Parked<'a>(&'a WakeHub);

impl<'a> Parked<'a> {
    fn new(hub: &'a WakeHub) -> Self {
        let mut now = 0;
        hub.waiting.send_modify(|waiting| {
            waiting.now += 1;
            waiting.begun += 1;
            now = waiting.now;
        });
        tracing::debug!(waiting = now, "a claim waits for a wake-up ({now} waiting)");
        Self(hub)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.waiting.send_modify(|waiting| waiting.now -= 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[actix_web::test]
    async fn a_wake_up_before_the_wait_is_not_lost() {
        let hub = WakeHub::new();
        let mut waiter = hub.waiter();

        hub.wake();

        assert_eq!(waiter.wait_until(soon(5_000)).await, Wake::Woken);
    }

    #[actix_web::test]
    async fn without_a_wake_up_the_wait_ends_at_the_deadline() {
        let hub = WakeHub::new();
        let mut waiter = hub.waiter();
        let started = std::time::Instant::now();

        let wake = waiter.wait_until(soon(50)).await;

        assert_eq!(wake, Wake::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[actix_web::test]
    async fn a_wake_up_is_seen_once_per_waiter() {
        let hub = WakeHub::new();
        let mut waiter = hub.waiter();
        hub.wake();
        hub.wake();

        let first = waiter.wait_until(soon(5_000)).await;
        let second = waiter.wait_until(soon(20)).await;

        assert_eq!((first, second), (Wake::Woken, Wake::TimedOut));
    }

    #[actix_web::test]
    async fn every_waiter_wakes_up() {
        let hub = std::sync::Arc::new(WakeHub::new());
        let waits: Vec<_> = (0..5)
            .map(|_| {
                let hub = hub.clone();
                actix_web::rt::spawn(async move { hub.waiter().wait_until(soon(5_000)).await })
            })
            .collect();
        hub.wait_for_waiters(5).await;

        hub.wake();

        for wait in waits {
            assert_eq!(wait.await.ok(), Some(Wake::Woken));
        }
    }

    #[actix_web::test]
    async fn a_retry_due_within_the_poll_interval_wakes_the_hub_when_due() {
        let hub = Arc::new(WakeHub::new());
        let mut waiter = hub.waiter();
        let now = Utc::now();
        let started = std::time::Instant::now();

        wake_when_due(&hub, now + chrono::TimeDelta::milliseconds(100), now);

        assert_eq!(waiter.wait_until(soon(5_000)).await, Wake::Woken);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[actix_web::test]
    async fn a_retry_due_later_is_left_to_the_watcher() {
        let hub = Arc::new(WakeHub::new());
        let mut waiter = hub.waiter();
        let now = Utc::now();

        wake_when_due(&hub, now + chrono::TimeDelta::seconds(2), now);

        assert_eq!(waiter.wait_until(soon(1_200)).await, Wake::TimedOut);
    }

    #[actix_web::test]
    async fn the_hub_counts_its_waiters_until_they_wake() {
        let hub = std::sync::Arc::new(WakeHub::new());
        let waits: Vec<_> = (0..3)
            .map(|_| {
                let hub = hub.clone();
                actix_web::rt::spawn(async move { hub.waiter().wait_until(soon(5_000)).await })
            })
            .collect();

        hub.wait_for_waiters(3).await;
        let parked = hub.waiting();
        hub.wake();
        for wait in waits {
            assert_eq!(wait.await.ok(), Some(Wake::Woken));
        }

        assert_eq!(parked, Waiting { now: 3, begun: 3 });
        assert_eq!(hub.waiting(), Waiting { now: 0, begun: 3 });
    }

    #[actix_web::test]
    async fn a_wait_that_ends_at_its_deadline_or_on_a_closed_hub_counts_as_begun_once() {
        let hub = WakeHub::new();

        let timed_out = hub.waiter().wait_until(soon(10)).await;
        hub.close();
        let closed = hub.waiter().wait_until(soon(5_000)).await;

        assert_eq!((timed_out, closed), (Wake::TimedOut, Wake::Closed));
        assert_eq!(hub.waiting(), Waiting { now: 0, begun: 1 });
    }

    #[actix_web::test]
    async fn a_closed_hub_ends_waits_at_once() {
        let hub = WakeHub::new();
        let mut early = hub.waiter();

        hub.close();

        assert_eq!(early.wait_until(soon(5_000)).await, Wake::Closed);
        assert_eq!(hub.waiter().wait_until(soon(5_000)).await, Wake::Closed);
        assert!(hub.is_closed());
    }
}
