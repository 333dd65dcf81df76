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
            let next_run_at = to_micros(now.checked_add_signed(delay).unwrap_or(now));
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

    fn check_running_on(&self, caller: Option<&WorkerId>, action: Action) -> Result<(), DomainError> {
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
