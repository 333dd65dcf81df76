//! The ports the domain needs from the outside world, time and retry delays, with the
//! policy TaskPilot uses and fixed stand-ins for tests.

use chrono::{DateTime, TimeDelta, Utc};

use crate::{TaskId, ValidationError};

/// Tells the time. Use cases ask once per operation and pass `now` to the domain.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// Decides how long a task waits before its next attempt.
pub trait BackoffPolicy: Send + Sync {
    /// The delay after the `failed_attempts`-th failure of `task` (1 after the first failure).
    ///
    /// Implementations should return the same delay for the same arguments, so that a retry
    /// schedule can be explained after the fact.
    fn delay(&self, task: TaskId, failed_attempts: u32) -> TimeDelta;
}

/// Exponential backoff with a cap and deterministic jitter.
///
/// The n-th failure waits `base * 2^(n-1)`, capped at `max`, then shortened by up to 25%.
/// The shortening is derived from the task id and the attempt, not from a random source:
/// tasks that failed together spread out, and the same failure always gets the same delay.
///
/// ```
/// use chrono::TimeDelta;
/// use taskpilot_domain::{BackoffPolicy, ExponentialBackoff, TaskId};
///
/// let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::seconds(60)).unwrap();
/// let task = TaskId::from_uuid(uuid::Uuid::nil());
/// let third = backoff.delay(task, 3);
/// assert!(third > TimeDelta::seconds(2) && third <= TimeDelta::seconds(4));
/// assert!(backoff.delay(task, 30) <= TimeDelta::seconds(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExponentialBackoff {
    base: TimeDelta,
    max: TimeDelta,
}

impl ExponentialBackoff {
    /// A policy starting at `base` and never waiting longer than `max`.
    ///
    /// # Errors
    /// [`ValidationError::Backoff`] when `base` is not positive or `max` is below `base`.
    pub fn new(base: TimeDelta, max: TimeDelta) -> Result<Self, ValidationError> {
        if base <= TimeDelta::zero() || max < base {
            return Err(ValidationError::Backoff);
        }
        Ok(Self { base, max })
    }

    /// The delay before jitter: `base * 2^(n-1)`, capped.
    pub fn ceiling(&self, failed_attempts: u32) -> TimeDelta {
        let exponent = failed_attempts.saturating_sub(1).min(62);
        let factor = 1_i64 << exponent;
        let base_us = self.base.num_microseconds().unwrap_or(i64::MAX);
        let max_us = self.max.num_microseconds().unwrap_or(i64::MAX);
        TimeDelta::microseconds(base_us.saturating_mul(factor).min(max_us))
    }
}

impl BackoffPolicy for ExponentialBackoff {
    fn delay(&self, task: TaskId, failed_attempts: u32) -> TimeDelta {
        let ceiling_us = self.ceiling(failed_attempts).num_microseconds().unwrap_or(i64::MAX);
        let bits = task.as_uuid().as_u128();
        let seed = (bits as u64) ^ ((bits >> 64) as u64) ^ u64::from(failed_attempts);
        // A fraction in [0, 1) from the top 53 bits of the hash.
        let unit = (splitmix64(seed) >> 11) as f64 / (1_u64 << 53) as f64;
        let cut = (ceiling_us as f64 * 0.25 * unit) as i64;
        TimeDelta::microseconds(ceiling_us - cut)
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// Stand-ins for tests, ours and embedders'. Always built: they are pure and tiny, and the
// domain's own doc examples use them whatever features are on. The `testing` feature adds
// nothing.
mod testing {
    use std::sync::Mutex;

    use chrono::{DateTime, TimeDelta, Utc};

    use super::{BackoffPolicy, Clock};
    use crate::TaskId;

    /// A clock that says what it is told: for tests, ours and embedders'.
    #[derive(Debug)]
    pub struct FixedClock(Mutex<DateTime<Utc>>);

    impl FixedClock {
        /// A clock stopped at `now`.
        pub fn new(now: DateTime<Utc>) -> Self {
            Self(Mutex::new(now))
        }

        /// Moves the clock to `now`.
        pub fn set(&self, now: DateTime<Utc>) {
            *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
        }

        /// Moves the clock forward by `by`.
        pub fn advance(&self, by: TimeDelta) {
            let mut now = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *now += by;
        }
    }

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    /// A backoff that always waits the same time.
    #[derive(Debug, Clone, Copy)]
    pub struct FixedBackoff(pub TimeDelta);

    impl BackoffPolicy for FixedBackoff {
        fn delay(&self, _task: TaskId, _failed_attempts: u32) -> TimeDelta {
            self.0
        }
    }
}

pub use testing::{FixedBackoff, FixedClock};

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::collections::BTreeSet;

    use uuid::Uuid;

    use super::*;

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    fn task(n: u128) -> TaskId {
        // Spread the counter over both halves, as v7 ids differ in time and random bits.
        TaskId::from_uuid(Uuid::from_u128(
            n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
        ))
    }

    /// `min(base * 2^(n-1), max)` in microseconds, computed without the code under test.
    fn expected_ceiling_us(base: TimeDelta, max: TimeDelta, n: u32) -> i128 {
        let base = i128::from(base.num_microseconds().unwrap());
        let max = i128::from(max.num_microseconds().unwrap());
        let exp = n.saturating_sub(1).min(100);
        (base << exp).min(max)
    }

    #[test]
    fn the_constructor_refuses_a_non_positive_base_or_a_cap_below_the_base() {
        for (base, max) in [
            (TimeDelta::zero(), secs(60)),
            (secs(-1), secs(60)),
            (secs(10), secs(9)),
            (TimeDelta::microseconds(2), TimeDelta::microseconds(1)),
        ] {
            assert_eq!(ExponentialBackoff::new(base, max), Err(ValidationError::Backoff));
        }
        assert!(ExponentialBackoff::new(secs(5), secs(5)).is_ok(), "a cap equal to the base");
        assert!(ExponentialBackoff::new(TimeDelta::microseconds(1), secs(1)).is_ok());
    }

    #[test]
    fn the_ceiling_doubles_from_the_base_up_to_the_cap() {
        let backoff = ExponentialBackoff::new(secs(1), secs(60)).unwrap();

        let ceilings: Vec<i64> = (1..=8).map(|n| backoff.ceiling(n).num_seconds()).collect();

        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.ceiling(0), secs(1), "zero failures waits like the first");
    }

    #[test]
    fn delays_stay_within_three_quarters_and_all_of_the_capped_exponential() {
        let (base, max) = (TimeDelta::milliseconds(1500), secs(3600));
        let backoff = ExponentialBackoff::new(base, max).unwrap();

        for t in 0..50 {
            for n in 1..=40 {
                let delay = i128::from(backoff.delay(task(t), n).num_microseconds().unwrap());

                let ceiling = expected_ceiling_us(base, max, n);
                assert!(delay <= ceiling, "task {t}, attempt {n}: {delay} > {ceiling}");
                assert!(
                    4 * delay >= 3 * ceiling,
                    "task {t}, attempt {n}: {delay} < 0.75 x {ceiling}"
                );
            }
        }
    }

    #[test]
    fn the_same_task_and_attempt_always_get_the_same_delay() {
        let backoff = ExponentialBackoff::new(secs(1), secs(3600)).unwrap();
        let again = ExponentialBackoff::new(secs(1), secs(3600)).unwrap();

        for t in 0..20 {
            for n in 1..=15 {
                assert_eq!(backoff.delay(task(t), n), again.delay(task(t), n));
                assert_eq!(backoff.delay(task(t), n), backoff.delay(task(t), n));
            }
        }
    }

    #[test]
    fn delays_never_exceed_the_cap_even_for_huge_attempt_numbers() {
        let backoff = ExponentialBackoff::new(secs(1), secs(3600)).unwrap();

        for n in [13, 14, 62, 63, 64, 65, 1000, u32::MAX - 1, u32::MAX] {
            for t in 0..20 {
                let delay = backoff.delay(task(t), n);

                assert!(delay <= secs(3600), "attempt {n}: {delay}");
                assert!(delay >= secs(2700), "attempt {n}: {delay}");
            }
        }
    }

    #[test]
    fn the_largest_cap_does_not_overflow() {
        let backoff = ExponentialBackoff::new(secs(1), TimeDelta::MAX).unwrap();

        for n in [1, 40, 63, 64, u32::MAX] {
            let delay = backoff.delay(task(7), n);

            assert!(delay > TimeDelta::zero() && delay <= TimeDelta::MAX, "attempt {n}: {delay}");
        }
    }

    #[test]
    fn tasks_that_fail_together_spread_out() {
        let backoff = ExponentialBackoff::new(secs(1), secs(3600)).unwrap();
        let ceiling = secs(16).num_microseconds().unwrap();

        let cuts: Vec<i64> = (0..200)
            .map(|t| ceiling - backoff.delay(task(t), 5).num_microseconds().unwrap())
            .collect();

        let distinct: BTreeSet<i64> = cuts.iter().copied().collect();
        assert!(distinct.len() >= 195, "only {} distinct delays of 200", distinct.len());
        // The jitter uses most of its 25% window.
        let (lo, hi) = (*distinct.first().unwrap(), *distinct.last().unwrap());
        assert!(lo < ceiling / 40 && hi > ceiling / 4 - ceiling / 40, "cuts span {lo}..{hi}");
        // And neighbouring ids (v7 ids minted in the same millisecond) differ too.
        let neighbours: BTreeSet<TimeDelta> = (0..50_u128)
            .map(|i| backoff.delay(TaskId::from_uuid(Uuid::from_u128((1 << 100) + i)), 5))
            .collect();
        assert!(neighbours.len() >= 48, "only {} distinct delays of 50", neighbours.len());
    }

    #[test]
    fn one_task_gets_a_different_jitter_on_each_attempt() {
        let backoff = ExponentialBackoff::new(secs(1), secs(1)).unwrap();

        let delays: BTreeSet<TimeDelta> = (1..=20).map(|n| backoff.delay(task(3), n)).collect();

        assert!(delays.len() >= 18, "only {} distinct delays of 20", delays.len());
    }

    #[test]
    fn the_fixed_clock_and_backoff_do_what_they_are_told() {
        use chrono::TimeZone;

        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let clock = FixedClock::new(t0);
        let backoff = FixedBackoff(secs(30));

        assert_eq!(clock.now(), t0);
        clock.advance(secs(5));
        assert_eq!(clock.now(), t0 + secs(5));
        clock.set(t0 - secs(1));
        assert_eq!(clock.now(), t0 - secs(1));
        assert_eq!(backoff.delay(task(1), 1), secs(30));
        assert_eq!(backoff.delay(task(2), 99), secs(30));
    }
}
