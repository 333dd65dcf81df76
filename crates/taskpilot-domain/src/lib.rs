//! TaskPilot's domain: the task state machine and the ports it needs.
//!
//! This crate owns every rule of a task's life: which transitions are allowed, when a failed
//! attempt is retried and after how long, when a task fails for good, and which heartbeat or
//! report speaks for which attempt (the fencing table, [`FencedCall::verdict`]). Time and
//! retry delays come in through the [`Clock`] and [`BackoffPolicy`] ports, and every
//! transition takes `now` as a value.
//!
//! It must never import I/O, async, database or web crates, nor any other TaskPilot crate:
//! the application layer, the storage adapters and the HTTP adapter depend on it, never the
//! other way round. Its dependencies are `chrono`, `uuid`, `serde_json` (payloads are JSON
//! values) and `thiserror`, and `serde` behind a feature.
//!
//! Two counters are easy to confuse: [`Task::attempt`] is how many times the task was ever
//! started (the number of its current or last attempt, never reset), and
//! [`Task::attempt_count`] is the failed attempts since creation or the last rerun (the API's
//! `attemptCount`, bounded by [`Task::max_attempts`]).
//!
//! | module | what it holds |
//! | --- | --- |
//! | `task` | [`Task`], [`NewTask`] and the transitions; [`TaskRecord`], the stored shape, with [`Task::restore`] and [`Task::check_invariants`]; [`LiveSuccess`], a success stated in advance as a guarded patch |
//! | `state` | the vocabulary: [`TaskStatus`], [`TaskState`], [`RetryState`], [`Action`] |
//! | `fencing` | the fencing table: [`FencedCall`], [`AttemptHistory`], [`Verdict`], [`Refusal`]; [`Reporter`], [`Applied`], [`AttemptEnd`], [`EndedAttempt`] |
//! | `lease` | [`LeaseToken`], [`LeaseDuration`], [`Lease`] |
//! | `ids` | validated names and ids: [`TaskId`], [`QueueName`], [`TaskName`], [`WorkerId`], [`MaxAttempts`], [`MaxCrashes`] |
//! | `ports` | [`Clock`], [`BackoffPolicy`], [`ExponentialBackoff`], and [`FixedClock`] and [`FixedBackoff`] for tests |
//! | `idempotency` | [`IdempotencyKey`], [`Fingerprint`], [`StoredResponse`] and the rule for a create sent again ([`decide_idempotency`] over a [`KeyClaim`]) |
//! | `retention` | [`Retention`] and [`KeepFor`]: which finished task is due for deletion when |
//! | `storage` | what storage can keep: [`to_micros`], [`check_json`], [`MAX_ERROR_BYTES`] |
//! | `access` | who may do what: [`TokenKind`] and its grants ([`TokenKind::grants`], one table), [`Caller`], [`QueueScope`], [`ApiToken`] |
//! | `error` | [`DomainError`], [`StaleLease`], [`ValidationError`], [`RestoreError`] |
//!
//! A task through its life, with the fixed clock a use case would ask once per operation:
//!
//! ```
//! use chrono::{TimeDelta, TimeZone, Utc};
//! use serde_json::json;
//! use taskpilot_domain::{
//!     Applied, Clock, FixedBackoff, FixedClock, LeaseDuration, LeaseToken, MaxAttempts,
//!     NewTask, QueueName, Reporter, RetryState, Task, TaskId, TaskName, TaskStatus, WorkerId,
//! };
//! use uuid::Uuid;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().ok_or("a valid instant")?;
//! let clock = FixedClock::new(t0);
//! let backoff = FixedBackoff(TimeDelta::seconds(30));
//! let spec = NewTask {
//!     queue: QueueName::parse("emails")?,
//!     name: TaskName::parse("send-welcome")?,
//!     payload: json!({"user": 42}),
//!     priority: 0,
//!     max_attempts: MaxAttempts::new(3)?,
//!     run_at: None,
//!     unique_key: None,
//! };
//! let mut task = Task::new(TaskId::from_uuid(Uuid::from_u128(7)), spec, clock.now());
//! let worker = WorkerId::parse("worker-1")?;
//! let lease = LeaseDuration::from_secs(30)?;
//!
//! // Attempt 1: claimed, heartbeated, then a failure that may be retried.
//! let token = LeaseToken::from_uuid(Uuid::from_u128(1));
//! task.start(&worker, token, lease, clock.now())?;
//! clock.advance(TimeDelta::seconds(20));
//! task.heartbeat(Some(&worker), token, lease, clock.now())?;
//! let report = Reporter::lease(Some(worker.clone()), token);
//! task.fail_and_schedule_retry(&report, "mail server busy", clock.now(), &backoff)?;
//! assert_eq!(task.status(), TaskStatus::Pending);
//! assert_eq!(task.retry_state(), RetryState::RetryScheduled);
//! assert_eq!((task.attempt(), task.attempt_count()), (1, 1));
//! assert!(!task.is_runnable_at(clock.now()), "the retry waits out its backoff");
//!
//! // Attempt 2, once the backoff has passed: it succeeds.
//! clock.advance(TimeDelta::seconds(30));
//! let token = LeaseToken::from_uuid(Uuid::from_u128(2));
//! task.start(&worker, token, lease, clock.now())?;
//! let report = Reporter::lease(Some(worker), token);
//! let applied = task.succeed(&report, Some(json!({"sent": true})), clock.now())?;
//! assert_eq!(applied, Applied::Changed);
//! assert_eq!(task.status(), TaskStatus::Succeeded);
//! assert_eq!((task.attempt(), task.attempt_count()), (2, 1));
//! assert_eq!(task.result(), Some(&json!({"sent": true})));
//!
//! // Storage keeps the flat record; restoring it checks every invariant.
//! assert_eq!(Task::restore(task.to_record())?, task);
//! # Ok(())
//! # }
//! ```
//!
//! Features: `serde` derives Serialize/Deserialize on the value types and [`TaskRecord`].
//! `testing` enables nothing: [`FixedClock`] and [`FixedBackoff`] are always exported; the
//! feature is kept so that crates that ask for it still build.

mod access;
#[cfg(feature = "proptest")]
pub mod arbitrary;
mod error;
mod fencing;
mod idempotency;
mod ids;
mod lease;
mod ports;
mod queue;
mod retention;
mod state;
mod storage;
mod task;
#[cfg(test)]
mod test_support;

pub use access::{
    ApiToken, Caller, DashboardSession, Forbidden, Grant, Operation, QueueScope, TokenId,
    TokenKind, TokenName, Unusable,
};
pub use error::{DomainError, RestoreError, StaleLease, ValidationError};
pub use fencing::{
    Applied, AttemptEnd, AttemptHistory, EndedAttempt, FencedCall, Refusal, Reporter, Verdict,
};
pub use idempotency::{
    decide as decide_idempotency, Fingerprint, IdempotencyDecision, IdempotencyKey,
    IdempotencyRecord, KeyClaim, StoredResponse,
};
pub use ids::{
    MaxAttempts, MaxCrashes, QueueName, TaskId, TaskName, TextRule, UniqueKey, WorkerId,
};
pub use lease::{Lease, LeaseDuration, LeaseToken};
pub use ports::{BackoffPolicy, Clock, ExponentialBackoff, FixedBackoff, FixedClock};
pub use queue::{
    explain, Ahead, ExplainFacts, Explanation, Pause, QueueState, Reason, AHEAD_CAP,
    CLAIM_IDLE_AFTER, REASON_CODES,
};
pub use retention::{KeepFor, Retention};
pub use state::{Action, RetryState, TaskState, TaskStatus};
pub use storage::{check_json, to_micros, MAX_ERROR_BYTES};
pub use task::{LiveAttemptGuard, LiveSuccess, NewTask, Task, TaskRecord};
