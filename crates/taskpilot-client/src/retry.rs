//! [`RetryPolicy`]: how often and how long the client repeats a call that met a transient
//! failure, and which failures each kind of call may be repeated after.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::ClientError;

/// Capped exponential backoff for transient failures.
///
/// The n-th repeat waits `initial_delay × 2^(n−1)`, at most `max_delay`, less up to a quarter
/// of random jitter (so that many workers do not come back in step); when the server sent
/// `Retry-After`, the wait is at least that (still capped by `max_delay`). The client gives up
/// after `max_attempts` tries in all, or when the next wait would end after `max_elapsed`
/// since the first try, and returns the last error.
///
/// Which failures are repeated depends on the call:
/// - reads, heartbeats and fenced completions (`succeed`/`fail` with a lease token,
///   `complete_batch`) are safe to repeat: after a connection error, a broken connection,
///   502, 503 or 504. A completion repeated after its answer was lost is a replay, which the
///   server accepts with 200 and the stored task;
/// - creates (`create`, `create_batch`) carry an `Idempotency-Key`, the same on every try, so
///   they are repeated after the same failures, and after 409 IDEMPOTENCY_KEY_IN_USE (the
///   first try is still being handled): a repeat of a create the server made answers the
///   first answer again and creates nothing;
/// - calls that would act twice (`claim`, `start`, `cancel`, `rerun`, and unfenced
///   completions) only when the request provably never reached the server: a connection
///   that could not be made. A 503 or a broken connection after the request was sent may
///   hide a success, so they are returned to the caller.
///
/// ```
/// use std::time::Duration;
/// use taskpilot_client::RetryPolicy;
///
/// let patient = RetryPolicy::default().max_attempts(10).max_elapsed(Duration::from_secs(60));
/// let none = RetryPolicy::never();
/// # let _ = (patient, none);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries within 30 s, waits from 100 ms up to 5 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never repeat a call.
    pub fn never() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Tries in all, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, tries: u32) -> Self {
        self.max_attempts = tries.max(1);
        self
    }

    /// The wait before the first repeat.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The longest wait between two tries, `Retry-After` included.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// No repeat starts later than this after the first try.
    #[must_use]
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// The wait before try number `tries + 1`, after `tries` failed tries of which the last
    /// ended with `error`; `None` when the policy gives up or the error is not worth repeating
    /// for a call of this `safety`.
    pub(crate) fn next_delay(
        &self,
        tries: u32,
        elapsed: Duration,
        error: &ClientError,
        safety: Safety,
    ) -> Option<Duration> {
        if tries >= self.max_attempts || !safety.may_repeat_after(error) {
            return None;
        }
        let delay = self.backoff(tries).max(error.retry_after().unwrap_or_default());
        let delay = delay.min(self.max_delay);
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }

    /// Capped exponential backoff with up to 25% jitter, after `tries` failed tries (≥ 1).
    pub(crate) fn backoff(&self, tries: u32) -> Duration {
        let exponent = tries.saturating_sub(1).min(20);
        let full = self.initial_delay.saturating_mul(1 << exponent).min(self.max_delay);
        full.mul_f64(1.0 - 0.25 * jitter())
    }
}

/// A number in [0, 1) that differs from call to call: std's randomly keyed hasher, so that no
/// RNG crate is needed for spreading retries.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether repeating a call can make it act twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Repeating it has the effect of doing it once (reads, heartbeats, fenced completions).
    Idempotent,
    /// Safe to repeat because every try carries the same `Idempotency-Key` (the creates):
    /// as [`Safety::Idempotent`], and also while the first try is still in flight.
    Keyed,
    /// Repeating it after it reached the server may act twice (claim, start, ...).
    Once,
    /// Never repeated here: the caller repeats it (the worker's claims).
    Never,
}

impl Safety {
    fn may_repeat_after(self, error: &ClientError) -> bool {
        match self {
            Self::Idempotent => error.is_transient(),
            Self::Keyed => {
                error.is_transient()
                    || error.code() == Some(taskpilot_api::ProblemCode::IdempotencyKeyInUse)
            }
            Self::Once => error.never_arrived(),
            Self::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use taskpilot_api::{ProblemBody, ProblemCode};

    use super::*;

    fn unavailable(retry_after: Option<Duration>) -> ClientError {
        ClientError::UnexpectedStatus { status: 503, retry_after, problem: None }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_a_quarter_off() {
        let policy = RetryPolicy::default()
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(1000));

        for (tries, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (30, 1000)] {
            let delay = policy.backoff(tries);
            assert!(delay <= Duration::from_millis(full), "{tries}: {delay:?}");
            assert!(delay >= Duration::from_millis(full * 3 / 4), "{tries}: {delay:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let policy = RetryPolicy::default().max_delay(Duration::from_secs(3));
        let zero = Duration::ZERO;

        let asked = policy.next_delay(
            1,
            zero,
            &unavailable(Some(Duration::from_secs(2))),
            Safety::Idempotent,
        );
        let too_long = policy.next_delay(
            1,
            zero,
            &unavailable(Some(Duration::from_secs(60))),
            Safety::Idempotent,
        );

        assert_eq!(asked, Some(Duration::from_secs(2)));
        assert_eq!(too_long, Some(Duration::from_secs(3)));
    }

    #[test]
    fn gives_up_after_max_attempts_or_max_elapsed() {
        let policy = RetryPolicy::default().max_attempts(3).max_elapsed(Duration::from_secs(1));
        let error = unavailable(None);

        assert!(policy.next_delay(2, Duration::ZERO, &error, Safety::Idempotent).is_some());
        assert!(policy.next_delay(3, Duration::ZERO, &error, Safety::Idempotent).is_none());
        assert!(policy.next_delay(1, Duration::from_secs(1), &error, Safety::Idempotent).is_none());
    }

    #[test]
    fn calls_that_act_once_are_not_repeated_after_an_answer() {
        let policy = RetryPolicy::default();

        assert!(policy.next_delay(1, Duration::ZERO, &unavailable(None), Safety::Once).is_none());
        assert!(policy
            .next_delay(1, Duration::ZERO, &unavailable(None), Safety::Idempotent)
            .is_some());
    }

    #[test]
    fn keyed_creates_are_repeated_after_transient_failures_and_while_their_key_is_in_use() {
        let policy = RetryPolicy::default();
        let problem = |status: u16, code: ProblemCode| ClientError::Api {
            status,
            code,
            detail: "d".to_owned(),
            retry_after: None,
            problem: Box::new(ProblemBody::new(code, "t", "d")),
        };
        let repeat =
            |e: &ClientError| policy.next_delay(1, Duration::ZERO, e, Safety::Keyed).is_some();

        assert!(repeat(&unavailable(None)));
        assert!(repeat(&problem(409, ProblemCode::IdempotencyKeyInUse)));
        assert!(!repeat(&problem(422, ProblemCode::IdempotencyKeyReused)));
        assert!(!repeat(&problem(400, ProblemCode::ValidationFailed)));
        let in_use = problem(409, ProblemCode::IdempotencyKeyInUse);
        assert!(policy.next_delay(1, Duration::ZERO, &in_use, Safety::Once).is_none());
    }
}
