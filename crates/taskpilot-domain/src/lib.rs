//! TaskPilot's domain: the task state machine and the ports it needs.
//!
//! This crate owns every rule of a task's life: which transitions are allowed, when a failed
//! attempt is retried and after how long, when a task fails for good. It has no I/O, no async
//! and no database or web crate; time and retry delays come in through the [`Clock`] and
//! [`BackoffPolicy`] ports, and every transition takes `now` as a value.
//!
//! Features: `serde` derives Serialize/Deserialize on the value types and [`TaskRecord`];
//! `testing` exports [`FixedClock`] and [`FixedBackoff`].

mod error;
mod ids;
mod lease;
mod ports;
mod task;

pub use error::{DomainError, RestoreError, StaleLease, ValidationError};
pub use ids::{MaxAttempts, QueueName, TaskId, TaskName, TextRule, WorkerId};
pub use lease::{Applied, AttemptEnd, EndedAttempt, Lease, LeaseDuration, LeaseToken, Reporter};
pub use ports::{BackoffPolicy, Clock, ExponentialBackoff};
#[cfg(any(test, feature = "testing"))]
pub use ports::{FixedBackoff, FixedClock};
pub use task::{
    check_json, to_micros, Action, NewTask, RetryState, Task, TaskRecord, TaskState, TaskStatus,
    MAX_ERROR_BYTES,
};
