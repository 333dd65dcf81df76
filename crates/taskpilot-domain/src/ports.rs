//! The ports the domain needs from the outside world: time and retry delays.

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

#[cfg(any(test, feature = "testing"))]
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

#[cfg(any(test, feature = "testing"))]
pub use testing::{FixedBackoff, FixedClock};
