//! The task aggregate and its state machine.

use std::fmt;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;

use crate::{BackoffPolicy, DomainError, MaxAttempts, RestoreError, TaskId, TaskName, WorkerId};

/// The longest error message kept on a task, in bytes; longer ones are truncated and say so.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// Where a task is in its life, without the data of each state. See [`TaskState`] for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum TaskStatus {
    /// Waiting to be started, now or at `next_run_at`.
    Pending,
    /// Started by a worker that has not reported yet.
    Running,
    /// Finished well. Terminal.
    Succeeded,
    /// Finished badly with no attempts left. Terminal until rerun.
    Failed,
    /// Stopped on request. Terminal until rerun.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 5] =
        [Self::Pending, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// The status as the API and storage spell it: `PENDING`, `RUNNING`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Reads the spelling of [`TaskStatus::as_str`], ignoring ASCII case.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(raw))
    }

    /// Whether no worker will touch the task again (until a rerun).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task stands with its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum RetryState {
    /// No failed attempt counts against the task.
    None,
    /// At least one attempt failed and another is scheduled or running.
    RetryScheduled,
    /// Every attempt failed; the task is `FAILED`.
    Exhausted,
}

impl RetryState {
    /// The state as the API and storage spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Exhausted => "EXHAUSTED",
        }
    }

    /// Reads the spelling of [`RetryState::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::None, Self::RetryScheduled, Self::Exhausted].into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for RetryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition a caller can ask for; named in [`DomainError::InvalidTransition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// [`Task::start`].
    Start,
    /// [`Task::succeed`].
    Succeed,
    /// [`Task::fail_and_schedule_retry`].
    Fail,
    /// [`Task::cancel`].
    Cancel,
    /// [`Task::rerun`].
    Rerun,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::Succeed => "succeed",
            Self::Fail => "fail",
            Self::Cancel => "cancel",
            Self::Rerun => "rerun",
        })
    }
}

/// A task's status with the data that only that status has.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// Waiting; runnable now when `next_run_at` is `None`, else from then on.
    Pending {
        /// When a scheduled retry or a delayed first run becomes runnable.
        next_run_at: Option<DateTime<Utc>>,
    },
    /// Held by a worker.
    Running {
        /// The worker that started it.
        worker_id: WorkerId,
        /// When it started.
        started_at: DateTime<Utc>,
    },
    /// Done.
    Succeeded {
        /// When the worker reported success.
        completed_at: DateTime<Utc>,
        /// What the worker reported, if anything.
        result: Option<Value>,
    },
    /// Out of attempts.
    Failed {
        /// When the last attempt failed.
        completed_at: DateTime<Utc>,
    },
    /// Stopped on request.
    Cancelled {
        /// When it was cancelled.
        completed_at: DateTime<Utc>,
    },
}

impl TaskState {
    /// The status of this state.
    pub const fn status(&self) -> TaskStatus {
        match self {
            Self::Pending { .. } => TaskStatus::Pending,
            Self::Running { .. } => TaskStatus::Running,
            Self::Succeeded { .. } => TaskStatus::Succeeded,
            Self::Failed { .. } => TaskStatus::Failed,
            Self::Cancelled { .. } => TaskStatus::Cancelled,
        }
    }
}

/// What a client asks for when it creates a task; every field already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The kind of work.
    pub name: TaskName,
    /// Input for the worker, any JSON value.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts before the task fails for good.
    pub max_attempts: MaxAttempts,
    /// Not runnable before this moment, when given and in the future.
    pub run_at: Option<DateTime<Utc>>,
}

/// Every field of a task, flat, as storage keeps it. [`Task::restore`] checks it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "camelCase")
)]
#[expect(missing_docs, reason = "each field is the Task getter of the same name")]
pub struct TaskRecord {
    pub id: TaskId,
    pub name: TaskName,
    pub payload: Value,
    pub priority: i32,
    pub status: TaskStatus,
    pub retry_state: RetryState,
    pub attempt_count: u32,
    pub max_attempts: MaxAttempts,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub worker_id: Option<WorkerId>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

/// A unit of work and the rules of its life.
///
/// Fields are private: a `Task` only changes through its transitions, each of which either
/// applies whole or returns a [`DomainError`] and leaves the task as it was. Every transition
/// bumps [`Task::version`] by one, which storage uses to refuse lost updates.
///
/// ```
/// use chrono::{TimeDelta, TimeZone, Utc};
/// use serde_json::json;
/// use taskpilot_domain::{
///     ExponentialBackoff, MaxAttempts, NewTask, RetryState, Task, TaskId, TaskName,
///     TaskStatus, WorkerId,
/// };
///
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
/// let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::hours(1)).unwrap();
/// let spec = NewTask {
///     name: TaskName::parse("send-email").unwrap(),
///     payload: json!({"to": "ada@example.com"}),
///     priority: 0,
///     max_attempts: MaxAttempts::new(2).unwrap(),
///     run_at: None,
/// };
/// let mut task = Task::new(TaskId::from_uuid(uuid::Uuid::nil()), spec, t0);
/// let worker = WorkerId::parse("worker-1").unwrap();
///
/// task.start(&worker, t0).unwrap();
/// task.fail_and_schedule_retry(Some(&worker), "smtp timeout", t0, &backoff).unwrap();
/// assert_eq!(task.status(), TaskStatus::Pending);
/// assert_eq!(task.retry_state(), RetryState::RetryScheduled);
/// // The retry is not runnable before its backoff has passed.
/// assert!(task.start(&worker, t0).is_err());
///
/// let later = task.next_run_at().unwrap();
/// task.start(&worker, later).unwrap();
/// task.fail_and_schedule_retry(Some(&worker), "smtp timeout", later, &backoff).unwrap();
/// assert_eq!(task.status(), TaskStatus::Failed);
/// assert_eq!(task.retry_state(), RetryState::Exhausted);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    id: TaskId,
    name: TaskName,
    payload: Value,
    priority: i32,
    max_attempts: MaxAttempts,
    attempt_count: u32,
    state: TaskState,
    retry_state: RetryState,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: u64,
}

impl Task {
    /// A new pending task. A `run_at` in the past or now means "runnable at once".
    pub fn new(id: TaskId, spec: NewTask, now: DateTime<Utc>) -> Self {
        let now = to_micros(now);
        let next_run_at = spec.run_at.map(to_micros).filter(|at| *at > now);
        Self {
            id,
            name: spec.name,
            payload: spec.payload,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            attempt_count: 0,
            state: TaskState::Pending { next_run_at },
            retry_state: RetryState::None,
            last_error: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// Rebuilds a task from storage, checking every invariant a transition maintains.
    ///
    /// # Errors
    /// [`RestoreError`] naming the first invariant the record breaks.
    pub fn restore(r: TaskRecord) -> Result<Self, RestoreError> {
        let bad = |reason: &str| RestoreError { task: r.id, reason: reason.to_owned() };
        let state = match (r.status, r.worker_id, r.processing_started_at, r.completed_at) {
            (TaskStatus::Pending, None, None, None) => {
                TaskState::Pending { next_run_at: r.next_run_at }
            }
            (TaskStatus::Running, Some(worker_id), Some(started_at), None) => {
                TaskState::Running { worker_id, started_at }
            }
            (TaskStatus::Succeeded, None, None, Some(completed_at)) => {
                TaskState::Succeeded { completed_at, result: r.result.clone() }
            }
            (TaskStatus::Failed, None, None, Some(completed_at)) => {
                TaskState::Failed { completed_at }
            }
            (TaskStatus::Cancelled, None, None, Some(completed_at)) => {
                TaskState::Cancelled { completed_at }
            }
            (status, ..) => {
                return Err(bad(&format!(
                    "workerId, processingStartedAt and completedAt do not fit status {status}"
                )))
            }
        };
        let task = Self {
            id: r.id,
            name: r.name,
            payload: r.payload,
            priority: r.priority,
            max_attempts: r.max_attempts,
            attempt_count: r.attempt_count,
            state,
            retry_state: r.retry_state,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
        };
        if r.result.is_some() && task.status() != TaskStatus::Succeeded {
            return Err(bad("only a succeeded task has a result"));
        }
        if r.next_run_at.is_some() && task.status() != TaskStatus::Pending {
            return Err(bad("only a pending task has a nextRunAt"));
        }
        task.check_invariants().map_err(bad)?;
        Ok(task)
    }

    /// The flat form of the task, for storage and serialization.
    pub fn to_record(&self) -> TaskRecord {
        TaskRecord {
            id: self.id,
            name: self.name.clone(),
            payload: self.payload.clone(),
            priority: self.priority,
            status: self.status(),
            retry_state: self.retry_state,
            attempt_count: self.attempt_count,
            max_attempts: self.max_attempts,
            next_run_at: self.next_run_at(),
            last_error: self.last_error.clone(),
            worker_id: self.worker_id().cloned(),
            processing_started_at: self.processing_started_at(),
            result: self.result().cloned(),
            completed_at: self.completed_at(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }

    /// Hands a runnable pending task to `worker`.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is pending;
    /// [`DomainError::NotYetRunnable`] when its next run is after `now`.
    pub fn start(&mut self, worker: &WorkerId, now: DateTime<Utc>) -> Result<(), DomainError> {
        let now = to_micros(now);
        let TaskState::Pending { next_run_at } = self.state else {
            return Err(self.refuse(Action::Start));
        };
        if let Some(runnable_at) = next_run_at.filter(|at| *at > now) {
            return Err(DomainError::NotYetRunnable { task: self.id, runnable_at });
        }
        self.state = TaskState::Running { worker_id: worker.clone(), started_at: now };
        self.touch(now);
        Ok(())
    }

    /// Records the running attempt's success and what it produced.
    ///
    /// `worker`, when given, must be the worker that holds the task.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is running;
    /// [`DomainError::WorkerMismatch`] when another worker holds it.
    pub fn succeed(
        &mut self,
        worker: Option<&WorkerId>,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        self.check_running_on(worker, Action::Succeed)?;
        self.state = TaskState::Succeeded { completed_at: now, result };
        self.retry_state = RetryState::None;
        self.last_error = None;
        self.touch(now);
        Ok(())
    }

    /// Records the running attempt's failure, then schedules a retry after the backoff or,
    /// with no attempts left, fails the task for good.
    ///
    /// The error is kept, cut to [`MAX_ERROR_BYTES`] with a note saying so when longer.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is running;
    /// [`DomainError::WorkerMismatch`] when another worker holds it.
    pub fn fail_and_schedule_retry(
        &mut self,
        worker: Option<&WorkerId>,
        error: &str,
        now: DateTime<Utc>,
        backoff: &(impl BackoffPolicy + ?Sized),
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        self.check_running_on(worker, Action::Fail)?;
        self.attempt_count += 1;
        self.last_error = Some(truncate_error(error));
        if self.attempt_count < self.max_attempts.get() {
            let delay = backoff.delay(self.id, self.attempt_count).max(TimeDelta::zero());
            // A delay past the end of the calendar means "as late as can be", never "now".
            let next_run_at =
                to_micros(now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC));
            self.state = TaskState::Pending { next_run_at: Some(next_run_at) };
            self.retry_state = RetryState::RetryScheduled;
        } else {
            self.state = TaskState::Failed { completed_at: now };
            self.retry_state = RetryState::Exhausted;
        }
        self.touch(now);
        Ok(())
    }

    /// Stops a pending or running task for good.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] when the task is already terminal.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        let now = to_micros(now);
        if self.status().is_terminal() {
            return Err(self.refuse(Action::Cancel));
        }
        self.state = TaskState::Cancelled { completed_at: now };
        self.retry_state = RetryState::None;
        self.touch(now);
        Ok(())
    }

    /// Puts a failed or cancelled task back to pending with a fresh attempt budget.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is failed or cancelled.
    pub fn rerun(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        let now = to_micros(now);
        if !matches!(self.state, TaskState::Failed { .. } | TaskState::Cancelled { .. }) {
            return Err(self.refuse(Action::Rerun));
        }
        self.state = TaskState::Pending { next_run_at: None };
        self.retry_state = RetryState::None;
        self.attempt_count = 0;
        self.last_error = None;
        self.touch(now);
        Ok(())
    }

    /// Whether [`Task::start`] would accept the task at `now`.
    pub fn is_runnable_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self.state, TaskState::Pending { next_run_at } if next_run_at.is_none_or(|at| at <= now))
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The kind of work.
    pub fn name(&self) -> &TaskName {
        &self.name
    }

    /// The worker's input.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// Higher runs first.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The status, without its data.
    pub fn status(&self) -> TaskStatus {
        self.state.status()
    }

    /// The status with its data.
    pub fn state(&self) -> &TaskState {
        &self.state
    }

    /// Where the task stands with its retries.
    pub fn retry_state(&self) -> RetryState {
        self.retry_state
    }

    /// Failed attempts since creation or the last rerun.
    pub fn attempt_count(&self) -> u32 {
        self.attempt_count
    }

    /// Attempts allowed before the task fails for good.
    pub fn max_attempts(&self) -> MaxAttempts {
        self.max_attempts
    }

    /// When a pending task becomes runnable, if not at once.
    pub fn next_run_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            TaskState::Pending { next_run_at } => next_run_at,
            _ => None,
        }
    }

    /// The last failed attempt's error, possibly truncated.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The worker holding a running task.
    pub fn worker_id(&self) -> Option<&WorkerId> {
        match &self.state {
            TaskState::Running { worker_id, .. } => Some(worker_id),
            _ => None,
        }
    }

    /// When the running attempt started.
    pub fn processing_started_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            TaskState::Running { started_at, .. } => Some(started_at),
            _ => None,
        }
    }

    /// What a succeeded task's worker reported.
    pub fn result(&self) -> Option<&Value> {
        match &self.state {
            TaskState::Succeeded { result, .. } => result.as_ref(),
            _ => None,
        }
    }

    /// When a terminal task finished.
    pub fn completed_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            TaskState::Succeeded { completed_at, .. }
            | TaskState::Failed { completed_at }
            | TaskState::Cancelled { completed_at } => Some(completed_at),
            TaskState::Pending { .. } | TaskState::Running { .. } => None,
        }
    }

    /// When the task was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When the task last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// Starts at 1 and grows by one with every transition.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Checks the invariants that every transition maintains; `Err` names the broken one.
    ///
    /// A task built by [`Task::new`] and changed only through transitions always passes;
    /// [`Task::restore`] uses this to refuse inconsistent records.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let attempts = self.attempt_count;
        let max = self.max_attempts.get();
        if attempts > max {
            return Err("attemptCount exceeds maxAttempts");
        }
        if self.updated_at < self.created_at {
            return Err("updatedAt is before createdAt");
        }
        if self.version == 0 {
            return Err("version starts at 1");
        }
        match (&self.state, self.retry_state) {
            (TaskState::Pending { .. } | TaskState::Running { .. }, RetryState::Exhausted) => {
                Err("only a failed task has exhausted its retries")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, _) if attempts >= max => {
                Err("a task with no attempts left must be failed")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, RetryState::None)
                if attempts > 0 =>
            {
                Err("a task with failed attempts that is not finished has a retry scheduled")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, RetryState::RetryScheduled)
                if attempts == 0 || self.last_error.is_none() =>
            {
                Err("a scheduled retry follows a recorded failure")
            }
            (TaskState::Pending { next_run_at: None }, RetryState::RetryScheduled) => {
                Err("a scheduled retry has a nextRunAt")
            }
            (TaskState::Succeeded { .. }, retry) if retry != RetryState::None => {
                Err("a succeeded task has no retry state")
            }
            (TaskState::Succeeded { .. }, _) if self.last_error.is_some() => {
                Err("a succeeded task has no lastError")
            }
            (TaskState::Failed { .. }, retry) if retry != RetryState::Exhausted => {
                Err("a failed task has exhausted its retries")
            }
            (TaskState::Failed { .. }, _) if attempts != max || self.last_error.is_none() => {
                Err("a failed task used every attempt and recorded the last error")
            }
            (TaskState::Cancelled { .. }, retry) if retry != RetryState::None => {
                Err("a cancelled task has no retry state")
            }
            _ => Ok(()),
        }
    }

    fn check_running_on(
        &self,
        caller: Option<&WorkerId>,
        action: Action,
    ) -> Result<(), DomainError> {
        let TaskState::Running { worker_id, .. } = &self.state else {
            return Err(self.refuse(action));
        };
        match caller {
            Some(caller) if caller != worker_id => Err(DomainError::WorkerMismatch {
                task: self.id,
                holder: worker_id.clone(),
                caller: caller.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn refuse(&self, action: Action) -> DomainError {
        DomainError::InvalidTransition { task: self.id, from: self.status(), action }
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        // A clock that stepped back must not make the task look older than its creation.
        self.updated_at = now.max(self.created_at);
        self.version += 1;
    }
}

/// Cuts `at` to whole microseconds: PostgreSQL keeps no more, and what the API returns
/// must equal what is stored.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

fn truncate_error(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let note = format!("… [truncated: {} bytes in all]", error.len());
    let mut end = MAX_ERROR_BYTES - note.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &error[..end])
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use chrono::{TimeZone, Timelike};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::{ExponentialBackoff, FixedBackoff, MaxAttempts, TaskName};

    const BACKOFF: FixedBackoff = FixedBackoff(TimeDelta::seconds(30));

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId::parse(name).unwrap()
    }

    fn task_id() -> TaskId {
        TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    fn spec(max_attempts: i64, run_at: Option<DateTime<Utc>>) -> NewTask {
        NewTask {
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": "ada@example.com"}),
            priority: 7,
            max_attempts: MaxAttempts::new(max_attempts).unwrap(),
            run_at,
        }
    }

    fn pending(max_attempts: i64) -> Task {
        Task::new(task_id(), spec(max_attempts, None), t0())
    }

    fn running(max_attempts: i64) -> Task {
        let mut task = pending(max_attempts);
        task.start(&worker("w1"), t0()).unwrap();
        task
    }

    /// A task that used every attempt: each one started as soon as runnable, then failed.
    fn failed(max_attempts: i64) -> Task {
        let mut task = pending(max_attempts);
        let mut now = t0();
        while task.status() != TaskStatus::Failed {
            now = task.next_run_at().unwrap_or(now);
            task.start(&worker("w1"), now).unwrap();
            task.fail_and_schedule_retry(Some(&worker("w1")), "boom", now, &BACKOFF).unwrap();
        }
        task
    }

    /// A task in `status`, reached through transitions only, with three attempts.
    fn task_in(status: TaskStatus) -> Task {
        match status {
            TaskStatus::Pending => pending(3),
            TaskStatus::Running => running(3),
            TaskStatus::Succeeded => {
                let mut task = running(3);
                task.succeed(None, Some(json!({"ok": true})), t0() + secs(1)).unwrap();
                task
            }
            TaskStatus::Failed => failed(3),
            TaskStatus::Cancelled => {
                let mut task = pending(3);
                task.cancel(t0() + secs(1)).unwrap();
                task
            }
        }
    }

    /// Applies `action` as the holding worker would ask for it (no worker id on reports).
    fn apply(task: &mut Task, action: Action, now: DateTime<Utc>) -> Result<(), DomainError> {
        match action {
            Action::Start => task.start(&worker("w2"), now),
            Action::Succeed => task.succeed(None, None, now),
            Action::Fail => task.fail_and_schedule_retry(None, "boom", now, &BACKOFF),
            Action::Cancel => task.cancel(now),
            Action::Rerun => task.rerun(now),
        }
    }

    #[test]
    fn every_transition_from_every_status_follows_the_table() {
        use Action::{Cancel, Fail, Rerun, Start, Succeed};
        use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
        // (from, action, status after, or None when refused)
        let table = [
            (Pending, Start, Some(Running)),
            (Pending, Succeed, None),
            (Pending, Fail, None),
            (Pending, Cancel, Some(Cancelled)),
            (Pending, Rerun, None),
            (Running, Start, None),
            (Running, Succeed, Some(Succeeded)),
            (Running, Fail, Some(Pending)),
            (Running, Cancel, Some(Cancelled)),
            (Running, Rerun, None),
            (Succeeded, Start, None),
            (Succeeded, Succeed, None),
            (Succeeded, Fail, None),
            (Succeeded, Cancel, None),
            (Succeeded, Rerun, None),
            (Failed, Start, None),
            (Failed, Succeed, None),
            (Failed, Fail, None),
            (Failed, Cancel, None),
            (Failed, Rerun, Some(Pending)),
            (Cancelled, Start, None),
            (Cancelled, Succeed, None),
            (Cancelled, Fail, None),
            (Cancelled, Cancel, None),
            (Cancelled, Rerun, Some(Pending)),
        ];
        assert_eq!(table.len(), TaskStatus::ALL.len() * 5, "every pair is listed");

        for (from, action, expected) in table {
            let mut task = task_in(from);
            let before = task.clone();
            let now = t0() + secs(3600);

            let outcome = apply(&mut task, action, now);

            match expected {
                Some(to) => {
                    assert_eq!(outcome, Ok(()), "{from} --{action}-->");
                    assert_eq!(task.status(), to, "{from} --{action}-->");
                    assert_eq!(task.version(), before.version() + 1, "{from} --{action}-->");
                    assert_eq!(task.updated_at(), now, "{from} --{action}-->");
                    task.check_invariants().unwrap();
                }
                None => {
                    assert_eq!(
                        outcome,
                        Err(DomainError::InvalidTransition { task: task_id(), from, action }),
                        "{from} --{action}-->"
                    );
                    assert_eq!(task, before, "a refused {action} from {from} changes nothing");
                }
            }
        }
    }

    #[test]
    fn a_new_task_is_pending_runnable_and_has_recorded_nothing() {
        let task = pending(3);

        assert_eq!(task.id(), task_id());
        assert_eq!(task.name().as_str(), "send-email");
        assert_eq!(task.payload(), &json!({"to": "ada@example.com"}));
        assert_eq!(task.priority(), 7);
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.attempt_count(), 0);
        assert_eq!(task.max_attempts().get(), 3);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.processing_started_at(), None);
        assert_eq!(task.result(), None);
        assert_eq!(task.completed_at(), None);
        assert_eq!(task.created_at(), t0());
        assert_eq!(task.updated_at(), t0());
        assert_eq!(task.version(), 1);
        assert!(task.is_runnable_at(t0()));
        task.check_invariants().unwrap();
    }

    #[test]
    fn start_is_refused_before_run_at_and_accepted_at_exactly_run_at() {
        let run_at = t0() + secs(60);
        let mut task = Task::new(task_id(), spec(3, Some(run_at)), t0());
        let before = task.clone();
        assert_eq!(task.next_run_at(), Some(run_at));
        assert!(!task.is_runnable_at(run_at - secs(1)));
        assert!(task.is_runnable_at(run_at));

        let early = task.start(&worker("w1"), run_at - secs(1));

        assert_eq!(
            early,
            Err(DomainError::NotYetRunnable { task: task_id(), runnable_at: run_at })
        );
        assert_eq!(task, before);

        task.start(&worker("w1"), run_at).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.processing_started_at(), Some(run_at));
    }

    #[test]
    fn run_at_in_the_past_or_now_means_runnable_at_once() {
        for run_at in [t0() - secs(3600), t0() - secs(1), t0()] {
            let mut task = Task::new(task_id(), spec(3, Some(run_at)), t0());

            assert_eq!(task.next_run_at(), None, "runAt {run_at}");
            task.start(&worker("w1"), t0()).unwrap();
        }
    }

    #[test]
    fn start_records_the_worker_and_when_processing_started() {
        let mut task = pending(3);
        let now = t0() + secs(5);

        task.start(&worker("w1"), now).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.worker_id(), Some(&worker("w1")));
        assert_eq!(task.processing_started_at(), Some(now));
        assert_eq!(task.state(), &TaskState::Running { worker_id: worker("w1"), started_at: now });
        assert_eq!(task.version(), 2);
    }

    #[test]
    fn failure_with_attempts_left_schedules_a_retry_after_the_backoff() {
        let mut task = running(3);
        let now = t0() + secs(10);

        task.fail_and_schedule_retry(Some(&worker("w1")), "smtp timeout", now, &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::RetryScheduled);
        assert_eq!(task.attempt_count(), 1);
        assert_eq!(task.next_run_at(), Some(now + secs(30)));
        assert_eq!(task.last_error(), Some("smtp timeout"));
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.processing_started_at(), None);
        assert_eq!(task.completed_at(), None);
        assert_eq!(task.version(), 3);
    }

    #[test]
    fn the_retry_waits_for_the_policy_delay_of_that_task_and_attempt() {
        let backoff = ExponentialBackoff::new(secs(1), secs(3600)).unwrap();
        let mut task = running(5);
        let mut now = t0();

        for attempt in 1..=3 {
            task.fail_and_schedule_retry(None, "boom", now, &backoff).unwrap();

            let due = now + backoff.delay(task_id(), attempt);
            assert_eq!(task.attempt_count(), attempt);
            assert_eq!(task.next_run_at(), Some(due));
            assert!(matches!(
                task.start(&worker("w1"), due - TimeDelta::microseconds(1)),
                Err(DomainError::NotYetRunnable { runnable_at, .. }) if runnable_at == due
            ));
            task.start(&worker("w1"), due).unwrap();
            now = due;
        }
    }

    #[test]
    fn a_retried_task_is_not_runnable_before_its_next_run_at() {
        let mut task = running(3);
        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();
        let before = task.clone();

        let early = task.start(&worker("w1"), t0() + secs(29));

        assert_eq!(
            early,
            Err(DomainError::NotYetRunnable { task: task_id(), runnable_at: t0() + secs(30) })
        );
        assert_eq!(task, before);
        task.start(&worker("w2"), t0() + secs(30)).unwrap();
        assert_eq!(task.retry_state(), RetryState::RetryScheduled, "still a retry while it runs");
    }

    #[test]
    fn last_attempt_failure_is_final() {
        let mut task = running(2);
        task.fail_and_schedule_retry(None, "first", t0(), &BACKOFF).unwrap();
        task.start(&worker("w1"), t0() + secs(30)).unwrap();
        let end = t0() + secs(40);

        task.fail_and_schedule_retry(Some(&worker("w1")), "second", end, &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!(task.attempt_count(), 2);
        assert_eq!(task.completed_at(), Some(end));
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.last_error(), Some("second"));
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.processing_started_at(), None);
    }

    #[test]
    fn a_single_attempt_task_fails_for_good_on_its_first_failure() {
        let mut task = running(1);

        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!(task.attempt_count(), 1);
    }

    #[test]
    fn succeed_clears_retry_metadata_and_stores_the_result() {
        let mut task = running(3);
        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();
        task.start(&worker("w1"), t0() + secs(30)).unwrap();
        let end = t0() + secs(31);

        task.succeed(Some(&worker("w1")), Some(json!({"sent": 1})), end).unwrap();

        assert_eq!(task.status(), TaskStatus::Succeeded);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.result(), Some(&json!({"sent": 1})));
        assert_eq!(task.completed_at(), Some(end));
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.processing_started_at(), None);
        assert_eq!(task.attempt_count(), 1, "the failed attempt stays counted");
    }

    #[test]
    fn succeed_without_a_result_stores_none() {
        let mut task = running(3);

        task.succeed(None, None, t0()).unwrap();

        assert_eq!(task.result(), None);
        assert_eq!(task.completed_at(), Some(t0()));
    }

    #[test]
    fn reports_from_another_worker_are_refused_with_worker_mismatch() {
        type Report = fn(&mut Task, &WorkerId) -> Result<(), DomainError>;
        let reports: [(&str, Report); 2] = [
            ("succeed", |t, w| t.succeed(Some(w), Some(json!(1)), t0())),
            ("fail", |t, w| t.fail_and_schedule_retry(Some(w), "boom", t0(), &BACKOFF)),
        ];
        for (name, report) in reports {
            let mut task = running(3);
            let before = task.clone();

            let outcome = report(&mut task, &worker("w2"));

            assert_eq!(
                outcome,
                Err(DomainError::WorkerMismatch {
                    task: task_id(),
                    holder: worker("w1"),
                    caller: worker("w2"),
                }),
                "{name}"
            );
            assert_eq!(task, before, "a refused {name} changes nothing");
        }
    }

    #[test]
    fn reports_without_a_worker_id_are_accepted_from_anyone() {
        let mut succeeded = running(3);
        let mut failed = running(3);

        succeeded.succeed(None, None, t0()).unwrap();
        failed.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();

        assert_eq!(succeeded.status(), TaskStatus::Succeeded);
        assert_eq!(failed.status(), TaskStatus::Pending);
    }

    #[test]
    fn a_report_on_a_task_that_is_not_running_names_the_transition_not_the_worker() {
        let mut task = pending(3);

        let outcome = task.succeed(Some(&worker("w2")), None, t0());

        assert_eq!(
            outcome,
            Err(DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Pending,
                action: Action::Succeed,
            })
        );
    }

    #[test]
    fn cancel_stops_a_pending_or_running_task_for_good() {
        for mut task in [pending(3), running(3)] {
            let end = t0() + secs(2);

            task.cancel(end).unwrap();

            assert_eq!(task.status(), TaskStatus::Cancelled);
            assert_eq!(task.completed_at(), Some(end));
            assert_eq!(task.worker_id(), None);
            assert_eq!(task.processing_started_at(), None);
            assert_eq!(task.next_run_at(), None);
            assert_eq!(task.retry_state(), RetryState::None);
        }
    }

    #[test]
    fn cancelling_a_scheduled_retry_drops_the_retry_state() {
        let mut task = running(3);
        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();

        task.cancel(t0() + secs(1)).unwrap();

        assert_eq!(task.status(), TaskStatus::Cancelled);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.next_run_at(), None);
        task.check_invariants().unwrap();
    }

    #[test]
    fn rerun_of_a_failed_task_resets_the_attempt_budget() {
        let mut task = failed(2);
        let again = t0() + secs(3600);

        task.rerun(again).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.attempt_count(), 0);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.completed_at(), None);
        assert!(task.is_runnable_at(again));
        // The whole budget is available again: the first failure schedules a retry.
        task.start(&worker("w1"), again).unwrap();
        task.fail_and_schedule_retry(None, "boom", again, &BACKOFF).unwrap();
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.attempt_count(), 1);
    }

    #[test]
    fn rerun_of_a_cancelled_retry_resets_the_attempt_budget() {
        let mut task = running(3);
        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();
        task.cancel(t0() + secs(1)).unwrap();

        task.rerun(t0() + secs(2)).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.attempt_count(), 0);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.next_run_at(), None);
        task.check_invariants().unwrap();
    }

    #[test]
    fn an_error_of_at_most_max_error_bytes_is_kept_whole() {
        let error = "x".repeat(MAX_ERROR_BYTES);
        let mut task = running(3);

        task.fail_and_schedule_retry(None, &error, t0(), &BACKOFF).unwrap();

        assert_eq!(task.last_error(), Some(error.as_str()));
    }

    #[test]
    fn an_error_over_max_error_bytes_is_truncated_and_says_so() {
        let error = "x".repeat(MAX_ERROR_BYTES + 1);
        let mut task = running(3);

        task.fail_and_schedule_retry(None, &error, t0(), &BACKOFF).unwrap();

        let kept = task.last_error().unwrap();
        assert!(kept.len() <= MAX_ERROR_BYTES, "{} bytes kept", kept.len());
        assert!(kept.contains("truncated"), "{kept:?} says it was truncated");
        assert!(kept.contains(&(MAX_ERROR_BYTES + 1).to_string()), "and how long it was");
        assert!(kept.starts_with(&"x".repeat(MAX_ERROR_BYTES - 64)), "the start is kept");
    }

    #[test]
    fn truncating_a_long_error_never_splits_a_character() {
        // One, two, three and four bytes per character, at every offset against the cut.
        for ch in ['a', 'é', '€', '🦀'] {
            for pad in 0..4 {
                let error =
                    format!("{}{}", "-".repeat(pad), ch.to_string().repeat(MAX_ERROR_BYTES + 1));
                let mut task = running(3);

                task.fail_and_schedule_retry(None, &error, t0(), &BACKOFF).unwrap();

                let kept = task.last_error().unwrap();
                assert!(kept.len() <= MAX_ERROR_BYTES, "{ch:?}/{pad}: {} bytes", kept.len());
                assert!(kept.len() > MAX_ERROR_BYTES - 64, "{ch:?}/{pad}: nearly all is kept");
                let (head, note) = kept.split_once('…').unwrap();
                assert!(error.starts_with(head), "{ch:?}/{pad}: the head is a prefix");
                assert!(note.contains("truncated"), "{ch:?}/{pad}");
            }
        }
    }

    #[test]
    fn every_accepted_transition_bumps_the_version_by_one_and_sets_updated_at() {
        let mut task = pending(2);
        type Step = fn(&mut Task, DateTime<Utc>) -> Result<(), DomainError>;
        let steps: [(i64, Step); 6] = [
            (1, |t, now| t.start(&WorkerId::parse("w1").unwrap(), now)),
            (2, |t, now| t.fail_and_schedule_retry(None, "boom", now, &BACKOFF)),
            (40, |t, now| t.start(&WorkerId::parse("w1").unwrap(), now)),
            (41, |t, now| t.fail_and_schedule_retry(None, "boom", now, &BACKOFF)),
            (42, |t, now| t.rerun(now)),
            (43, |t, now| t.cancel(now)),
        ];

        for (i, (at, step)) in steps.into_iter().enumerate() {
            step(&mut task, t0() + secs(at)).unwrap();

            assert_eq!(task.version(), 2 + i as u64);
            assert_eq!(task.updated_at(), t0() + secs(at));
            assert_eq!(task.created_at(), t0());
        }
    }

    #[test]
    fn a_clock_that_stepped_back_never_makes_updated_at_precede_created_at() {
        let mut task = pending(3);

        task.start(&worker("w1"), t0() - secs(10)).unwrap();

        assert_eq!(task.updated_at(), t0());
        task.check_invariants().unwrap();
    }

    #[test]
    fn instants_are_cut_to_whole_microseconds() {
        let ragged = t0().with_nanosecond(123_456_789).unwrap();
        let micros = t0().with_nanosecond(123_456_000).unwrap();
        let mut task = Task::new(task_id(), spec(3, Some(ragged + secs(5))), ragged);

        assert_eq!(to_micros(ragged), micros);
        assert_eq!(task.created_at(), micros);
        assert_eq!(task.next_run_at(), Some(micros + secs(5)));
        task.start(&worker("w1"), ragged + secs(5)).unwrap();
        assert_eq!(task.processing_started_at(), Some(micros + secs(5)));
    }

    #[test]
    fn restore_of_to_record_round_trips_every_reachable_state() {
        let mut delayed = Task::new(task_id(), spec(3, Some(t0() + secs(60))), t0());
        delayed.priority = -3;
        let mut retry_scheduled = running(3);
        retry_scheduled.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();
        let mut retry_running = retry_scheduled.clone();
        retry_running.start(&worker("w2"), t0() + secs(30)).unwrap();
        let mut succeeded_without_result = running(3);
        succeeded_without_result.succeed(None, None, t0()).unwrap();
        let mut cancelled_while_running = running(3);
        cancelled_while_running.cancel(t0()).unwrap();
        let mut rerun = failed(3);
        rerun.rerun(t0() + secs(3600)).unwrap();
        let mut reachable: Vec<Task> = TaskStatus::ALL.into_iter().map(task_in).collect();
        reachable.extend([
            delayed,
            retry_scheduled,
            retry_running,
            succeeded_without_result,
            cancelled_while_running,
            failed(1),
            rerun,
        ]);

        for task in reachable {
            let record = task.to_record();

            assert_eq!(record.status, task.status());
            assert_eq!(Task::restore(record), Ok(task.clone()), "{:?}", task.state());
        }
    }

    #[test]
    fn to_record_flattens_every_field() {
        let mut task = running(3);
        task.fail_and_schedule_retry(None, "boom", t0(), &BACKOFF).unwrap();
        task.start(&worker("w2"), t0() + secs(30)).unwrap();

        let r = task.to_record();

        assert_eq!(
            r,
            TaskRecord {
                id: task_id(),
                name: TaskName::parse("send-email").unwrap(),
                payload: json!({"to": "ada@example.com"}),
                priority: 7,
                status: TaskStatus::Running,
                retry_state: RetryState::RetryScheduled,
                attempt_count: 1,
                max_attempts: MaxAttempts::new(3).unwrap(),
                next_run_at: None,
                last_error: Some("boom".to_owned()),
                worker_id: Some(worker("w2")),
                processing_started_at: Some(t0() + secs(30)),
                result: None,
                completed_at: None,
                created_at: t0(),
                updated_at: t0() + secs(30),
                version: 4,
            }
        );
    }

    #[test]
    fn restore_refuses_inconsistent_records() {
        let fresh = pending(3).to_record();
        let run = running(3).to_record();
        let done = task_in(TaskStatus::Succeeded).to_record();
        let dead = failed(3).to_record();
        let cases: Vec<(&str, TaskRecord)> = vec![
            ("running without a worker", TaskRecord { worker_id: None, ..run.clone() }),
            (
                "running without processingStartedAt",
                TaskRecord { processing_started_at: None, ..run.clone() },
            ),
            ("running with completedAt", TaskRecord { completed_at: Some(t0()), ..run.clone() }),
            ("running with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..run }),
            (
                "pending with a worker",
                TaskRecord { worker_id: Some(worker("w1")), ..fresh.clone() },
            ),
            ("pending with completedAt", TaskRecord { completed_at: Some(t0()), ..fresh.clone() }),
            ("pending with a result", TaskRecord { result: Some(json!(1)), ..fresh.clone() }),
            (
                "pending with failed attempts but no retry",
                TaskRecord { attempt_count: 1, last_error: Some("x".into()), ..fresh.clone() },
            ),
            (
                "retry scheduled without nextRunAt",
                TaskRecord {
                    retry_state: RetryState::RetryScheduled,
                    attempt_count: 1,
                    last_error: Some("x".into()),
                    ..fresh.clone()
                },
            ),
            (
                "retry scheduled without a failure",
                TaskRecord {
                    retry_state: RetryState::RetryScheduled,
                    next_run_at: Some(t0()),
                    ..fresh.clone()
                },
            ),
            (
                "pending and exhausted",
                TaskRecord { retry_state: RetryState::Exhausted, ..fresh.clone() },
            ),
            ("pending with no attempts left", TaskRecord { attempt_count: 3, ..fresh.clone() }),
            ("attempts above the budget", TaskRecord { attempt_count: 4, ..dead.clone() }),
            ("version zero", TaskRecord { version: 0, ..fresh.clone() }),
            ("updated before created", TaskRecord { updated_at: t0() - secs(1), ..fresh }),
            ("succeeded without completedAt", TaskRecord { completed_at: None, ..done.clone() }),
            (
                "succeeded with a retry state",
                TaskRecord { retry_state: RetryState::RetryScheduled, ..done.clone() },
            ),
            ("succeeded with lastError", TaskRecord { last_error: Some("x".into()), ..done }),
            ("failed with attempts left", TaskRecord { attempt_count: 2, ..dead.clone() }),
            ("failed without lastError", TaskRecord { last_error: None, ..dead.clone() }),
            ("failed not exhausted", TaskRecord { retry_state: RetryState::None, ..dead.clone() }),
            ("failed with a result", TaskRecord { result: Some(json!(1)), ..dead.clone() }),
            ("cancelled without completedAt", {
                let mut r = task_in(TaskStatus::Cancelled).to_record();
                r.completed_at = None;
                r
            }),
            ("cancelled with a retry state", {
                let mut r = task_in(TaskStatus::Cancelled).to_record();
                r.retry_state = RetryState::Exhausted;
                r
            }),
            ("failed with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..dead }),
        ];

        for (what, record) in cases {
            let refused = Task::restore(record);

            let err = refused.expect_err(what);
            assert_eq!(err.task, task_id(), "{what}");
            assert!(!err.reason.is_empty(), "{what}");
        }
    }

    #[test]
    fn status_and_retry_state_spellings_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
            assert_eq!(TaskStatus::parse(&status.as_str().to_lowercase()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for retry in [RetryState::None, RetryState::RetryScheduled, RetryState::Exhausted] {
            assert_eq!(RetryState::parse(retry.as_str()), Some(retry));
            assert_eq!(retry.to_string(), retry.as_str());
        }
        assert_eq!(TaskStatus::parse("DONE"), None);
        assert_eq!(RetryState::parse("retry"), None);
        let terminal: Vec<_> = TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Cancelled]);
    }

    #[test]
    fn domain_errors_say_what_was_refused() {
        let mut task = task_in(TaskStatus::Succeeded);

        let err = task.cancel(t0()).unwrap_err();

        assert_eq!(err.to_string(), format!("task {} is SUCCEEDED and cannot cancel", task_id()));
    }

    #[test]
    fn a_backoff_past_the_end_of_the_calendar_never_means_now() {
        let mut task = running(3);

        task.fail_and_schedule_retry(None, "boom", t0(), &FixedBackoff(TimeDelta::MAX)).unwrap();

        assert!(task.next_run_at().unwrap() > t0() + TimeDelta::days(365 * 1000));
        assert!(!task.is_runnable_at(t0() + TimeDelta::days(365)));
    }
}
