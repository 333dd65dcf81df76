//! [`PgClock`]: a [`Clock`] that follows PostgreSQL's clock, so that every server sharing a
//! database means the same instant by "now", whatever its own clock says.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;
use taskpilot_domain::{to_micros, Clock};

use crate::PgPool;

/// How many round trips one measurement takes; the one with the shortest round trip wins,
/// since its midpoint is the tightest estimate of when the database read its clock.
const SAMPLES: usize = 3;

/// The local clock plus the database clock's measured offset from it.
///
/// [`PgClock::start`] measures the offset once, then a background thread measures it again
/// every `refresh`. Reading the time ([`Clock::now`]) costs no round trip: it is the local
/// clock plus the last offset. The thread ends when the clock is dropped.
///
/// The error of the estimate is at most half the round trip of the best sample (well under a
/// millisecond on a LAN), plus whatever the local clock drifts between two refreshes.
#[derive(Debug)]
pub struct PgClock {
    /// Database clock minus local clock, in microseconds.
    offset_us: AtomicI64,
    /// Dropped with the clock, which tells the refresher thread to stop at once.
    _stop: Sender<()>,
}

impl PgClock {
    /// Measures the offset now and keeps it fresh every `refresh` on a background thread.
    ///
    /// A database that cannot be reached at start is not an error: the clock starts with
    /// offset 0 (the local clock), logs a warning, and corrects itself at the first refresh
    /// that reaches the database. A failed refresh keeps the last offset. Starting waits at
    /// most the pool's connection timeout for a connection.
    ///
    /// # Errors
    /// When `refresh` is zero or the background thread cannot be started.
    pub fn start(pool: PgPool, refresh: Duration) -> anyhow::Result<Arc<PgClock>> {
        anyhow::ensure!(!refresh.is_zero(), "the clock refresh interval must be positive");
        let initial = match measure(&pool) {
            Ok(offset) => {
                tracing::info!(
                    offset_us = offset.num_microseconds(),
                    "database clock offset {offset}"
                );
                offset
            }
            Err(e) => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "cannot read the database clock; following the local clock until it can: {e:#}"
                );
                TimeDelta::zero()
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let clock = Arc::new(PgClock { offset_us: AtomicI64::new(micros(initial)), _stop: stop });
        let weak: Weak<PgClock> = Arc::downgrade(&clock);
        std::thread::Builder::new()
            .name("taskpilot-pg-clock".to_owned())
            .spawn(move || loop {
                // Every sender gone (the clock dropped) ends the wait at once.
                if stopped.recv_timeout(refresh) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                let measured = measure(&pool);
                let Some(clock) = weak.upgrade() else { return };
                match measured {
                    Ok(offset) => {
                        crate::outage::OUTAGE.reached();
                        clock.offset_us.store(micros(offset), Ordering::Relaxed);
                    }
                    // The outage is logged once by the calls that fail, not every refresh.
                    Err(e) => tracing::debug!(
                        error = %format!("{e:#}"),
                        "cannot refresh the database clock offset; keeping {}: {e:#}",
                        clock.offset()
                    ),
                }
            })
            .context("cannot start the database clock thread")?;
        Ok(clock)
    }

    /// The database clock minus the local clock, as last measured.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }
}

impl Clock for PgClock {
    fn now(&self) -> DateTime<Utc> {
        let local = Utc::now();
        to_micros(local.checked_add_signed(self.offset()).unwrap_or(local))
    }
}

fn micros(offset: TimeDelta) -> i64 {
    // Beyond ±292,000 years: no real clock is that far off.
    offset.num_microseconds().unwrap_or(0)
}

/// One reading: the local clock before the round trip, the database's clock, the local clock
/// after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) local_before: DateTime<Utc>,
    pub(crate) db_now: DateTime<Utc>,
    pub(crate) local_after: DateTime<Utc>,
}

impl Sample {
    /// The database clock minus the local clock at the midpoint of the round trip: the
    /// database read its clock somewhere inside the round trip, the middle is the best guess.
    pub(crate) fn offset(&self) -> TimeDelta {
        let round_trip = self.round_trip();
        let midpoint = self.local_before + round_trip / 2;
        self.db_now - midpoint
    }

    fn round_trip(&self) -> TimeDelta {
        self.local_after - self.local_before
    }
}

/// The offset of the sample with the shortest round trip, if any.
pub(crate) fn best_offset(samples: &[Sample]) -> Option<TimeDelta> {
    samples.iter().min_by_key(|s| s.round_trip()).map(Sample::offset)
}

/// Reads the database clock [`SAMPLES`] times on one connection.
fn measure(pool: &PgPool) -> anyhow::Result<TimeDelta> {
    #[derive(QueryableByName)]
    struct DbNow {
        #[diesel(sql_type = Timestamptz)]
        now: DateTime<Utc>,
    }
    // Check out first: waiting for a connection must not count in the round trip.
    let mut conn = crate::checkout(pool).context("no database connection to read its clock")?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let local_before = Utc::now();
        // clock_timestamp(), not now(): now() is the transaction's start, which PostgreSQL
        // may take before it has even parsed the statement; clock_timestamp() is read while
        // the statement runs, inside the round trip.
        let row: DbNow = diesel::sql_query("SELECT clock_timestamp() AS now")
            .get_result(&mut conn)
            .context("cannot read the database clock")?;
        let local_after = Utc::now();
        samples.push(Sample { local_before, db_now: row.now, local_after });
    }
    best_offset(&samples).context("no clock sample")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn ms(n: i64) -> TimeDelta {
        TimeDelta::milliseconds(n)
    }

    #[test]
    fn the_offset_is_measured_from_the_midpoint_of_the_round_trip() {
        let sample =
            Sample { local_before: t0(), db_now: t0() + ms(5), local_after: t0() + ms(10) };

        assert_eq!(sample.offset(), TimeDelta::zero());
    }

    #[test]
    fn a_local_clock_an_hour_behind_gets_an_offset_of_an_hour() {
        let sample = Sample {
            local_before: t0(),
            db_now: t0() + TimeDelta::hours(1) + ms(2),
            local_after: t0() + ms(4),
        };

        assert_eq!(sample.offset(), TimeDelta::hours(1));
    }

    #[test]
    fn a_local_clock_ahead_gets_a_negative_offset() {
        let sample =
            Sample { local_before: t0(), db_now: t0() - ms(1_000), local_after: t0() + ms(2) };

        assert_eq!(sample.offset(), -ms(1_001));
    }

    #[test]
    fn the_sample_with_the_shortest_round_trip_wins() {
        let samples = [
            // A slow round trip: its midpoint could be off by up to 50 ms.
            Sample { local_before: t0(), db_now: t0() + ms(90), local_after: t0() + ms(100) },
            Sample { local_before: t0(), db_now: t0() + ms(3), local_after: t0() + ms(2) },
            Sample { local_before: t0(), db_now: t0() + ms(20), local_after: t0() + ms(30) },
        ];

        assert_eq!(best_offset(&samples), Some(ms(2)));
        assert_eq!(best_offset(&[]), None);
    }
}
