//! Waiting in tests: for events, with a guard against hanging, never for a length of time.

use std::future::Future;
use std::time::Duration;

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
