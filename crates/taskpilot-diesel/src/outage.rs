//! [`OUTAGE`]: logs a database outage once when it starts and once when it ends, with how
//! many calls failed meanwhile, instead of a warning per failed call.
//!
//! One per process: a server has one database, and every pool, repository and clock of it
//! reports here. (Tests that run many databases in one process share it too; it only logs.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Whether the database is answering, as the calls of one repository found it.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    /// Read on every call: an outage is rare, so the healthy path takes no lock.
    down: AtomicBool,
    failed: AtomicU64,
    since: Mutex<Option<Instant>>,
}

/// This process's view of its database.
pub(crate) static OUTAGE: Outage = Outage::new();

impl Outage {
    const fn new() -> Self {
        Self { down: AtomicBool::new(false), failed: AtomicU64::new(0), since: Mutex::new(None) }
    }

    /// A call failed because the database is unavailable: the first failure of an outage
    /// logs it, with the driver's message; later ones are counted.
    pub(crate) fn failed(&self, error: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self.down.swap(true, Ordering::AcqRel) {
            tracing::debug!(error = %format!("{error:#}"), "database call failed during the outage");
            return;
        }
        if let Ok(mut since) = self.since.lock() {
            *since = Some(Instant::now());
        }
        tracing::warn!(
            error = %format!("{error:#}"),
            "the database is unavailable; requests answer 503 until it is back"
        );
    }

    /// A call reached the database: an outage under way ends, logged with its length and
    /// how many calls failed.
    pub(crate) fn reached(&self) {
        if !self.down.load(Ordering::Acquire) || !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let failed = self.failed.swap(0, Ordering::Relaxed);
        let lasted = self.since.lock().ok().and_then(|mut since| since.take());
        let secs = lasted.map_or(0.0, |since| since.elapsed().as_secs_f64());
        tracing::info!(
            failed_calls = failed,
            outage_secs = secs,
            "the database is available again after {secs:.1} s; {failed} calls failed meanwhile"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_counts_its_failures_and_ends_once() {
        let outage = Outage::new();

        outage.reached();
        for _ in 0..3 {
            outage.failed(&anyhow::anyhow!("connection refused"));
        }

        assert!(outage.down.load(Ordering::Acquire));
        assert_eq!(outage.failed.load(Ordering::Relaxed), 3);
        outage.reached();
        assert!(!outage.down.load(Ordering::Acquire));
        assert_eq!(outage.failed.load(Ordering::Relaxed), 0);
    }
}
