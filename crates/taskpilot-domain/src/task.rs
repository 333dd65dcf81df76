//! The task aggregate and its state machine.

use std::fmt;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;

use crate::{
    Applied, AttemptEnd, BackoffPolicy, DomainError, EndedAttempt, Lease, LeaseDuration,
    LeaseToken, MaxAttempts, QueueName, Reporter, RestoreError, StaleLease, TaskId, TaskName,
    WorkerId,
};

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
    /// The worker reported a failure that no retry can fix; the task is `FAILED` without
    /// using its remaining attempts.
    NonRetryable,
}

impl RetryState {
    /// The state as the API and storage spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Exhausted => "EXHAUSTED",
            Self::NonRetryable => "NON_RETRYABLE",
        }
    }

    /// Reads the spelling of [`RetryState::as_str`].
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::None, Self::RetryScheduled, Self::Exhausted, Self::NonRetryable]
            .into_iter()
            .find(|s| s.as_str() == raw)
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
    /// [`Task::heartbeat`].
    Heartbeat,
    /// [`Task::expire_lease`].
    ExpireLease,
    /// [`Task::release`].
    Release,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "start",
            Self::Succeed => "succeed",
            Self::Fail => "fail",
            Self::Cancel => "cancel",
            Self::Rerun => "rerun",
            Self::Heartbeat => "heartbeat",
            Self::ExpireLease => "expire its lease",
            Self::Release => "release",
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
        /// When this attempt started.
        started_at: DateTime<Utc>,
        /// The attempt's lease.
        lease: Lease,
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
    /// The queue it waits in.
    pub queue: QueueName,
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
    pub queue: QueueName,
    pub name: TaskName,
    pub payload: Value,
    pub priority: i32,
    pub status: TaskStatus,
    pub attempt: u32,
    pub lease_token: Option<LeaseToken>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub ended_attempt: Option<u32>,
    pub ended_attempt_token: Option<LeaseToken>,
    pub ended_attempt_end: Option<AttemptEnd>,
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
///     Applied, DomainError, ExponentialBackoff, LeaseDuration, LeaseToken, MaxAttempts,
///     NewTask, QueueName, Reporter, RetryState, StaleLease, Task, TaskId, TaskName,
///     TaskStatus, WorkerId,
/// };
/// use uuid::Uuid;
///
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
/// let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::hours(1)).unwrap();
/// let lease = LeaseDuration::from_secs(60).unwrap();
/// let spec = NewTask {
///     queue: QueueName::default(),
///     name: TaskName::parse("send-email").unwrap(),
///     payload: json!({"to": "ada@example.com"}),
///     priority: 0,
///     max_attempts: MaxAttempts::new(2).unwrap(),
///     run_at: None,
/// };
/// let mut task = Task::new(TaskId::from_uuid(Uuid::nil()), spec, t0);
/// let worker = WorkerId::parse("worker-1").unwrap();
/// // Tokens come from a cryptographic source; fixed ones keep the example short.
/// let (first, second) = (LeaseToken::from_uuid(Uuid::from_u128(1)), LeaseToken::from_uuid(Uuid::from_u128(2)));
///
/// task.start(&worker, first, lease, t0).unwrap();
/// assert_eq!(task.attempt(), 1);
/// let report = Reporter::lease(Some(worker.clone()), first);
/// let applied = task.fail_and_schedule_retry(&report, "smtp timeout", t0, &backoff);
/// assert_eq!(applied, Ok(Applied::Changed));
/// assert_eq!(task.status(), TaskStatus::Pending);
/// assert_eq!(task.retry_state(), RetryState::RetryScheduled);
/// // The same report again, after its answer was lost, is recognised and changes nothing.
/// let replay = task.fail_and_schedule_retry(&report, "smtp timeout", t0, &backoff);
/// assert_eq!(replay, Ok(Applied::Replayed));
/// // The retry is not runnable before its backoff has passed.
/// assert!(task.start(&worker, second, lease, t0).is_err());
///
/// let later = task.next_run_at().unwrap();
/// task.start(&worker, second, lease, later).unwrap();
/// assert_eq!(task.attempt(), 2);
/// // The first attempt already ended as FAILED: a late success with its token is refused.
/// let late = task.succeed(&report, None, later);
/// assert!(matches!(late, Err(DomainError::StaleLease(StaleLease::OutcomeConflict { .. }))));
/// // Nobody reports on the second attempt: the reaper fails it once its lease runs out.
/// task.expire_lease(later + TimeDelta::seconds(60), &backoff).unwrap();
/// assert_eq!(task.status(), TaskStatus::Failed);
/// assert_eq!(task.retry_state(), RetryState::Exhausted);
/// assert_eq!(task.last_error(), Some("lease expired (worker worker-1)"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    id: TaskId,
    queue: QueueName,
    name: TaskName,
    payload: Value,
    priority: i32,
    max_attempts: MaxAttempts,
    attempt_count: u32,
    state: TaskState,
    retry_state: RetryState,
    last_error: Option<String>,
    attempt: u32,
    last_ended: Option<EndedAttempt>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: u64,
}

/// What a fenced call learned about the caller's attempt.
enum Fence {
    /// The caller holds the live attempt.
    Live,
    /// The caller's attempt already ended the way the caller now says.
    Replay,
}

impl Task {
    /// A new pending task. A `run_at` in the past or now means "runnable at once".
    pub fn new(id: TaskId, spec: NewTask, now: DateTime<Utc>) -> Self {
        let now = to_micros(now);
        let next_run_at = spec.run_at.map(to_micros).filter(|at| *at > now);
        Self {
            id,
            queue: spec.queue,
            name: spec.name,
            payload: spec.payload,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            attempt_count: 0,
            state: TaskState::Pending { next_run_at },
            retry_state: RetryState::None,
            last_error: None,
            attempt: 0,
            last_ended: None,
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
                let (Some(token), Some(expires_at)) = (r.lease_token, r.lease_expires_at) else {
                    return Err(bad("a running task has a lease token and expiry"));
                };
                TaskState::Running { worker_id, started_at, lease: Lease { token, expires_at } }
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
        if r.status != TaskStatus::Running
            && (r.lease_token.is_some() || r.lease_expires_at.is_some())
        {
            return Err(bad("only a running task has a lease"));
        }
        let last_ended = match (r.ended_attempt, r.ended_attempt_token, r.ended_attempt_end) {
            (None, None, None) => None,
            (Some(attempt), Some(token), Some(end)) => Some(EndedAttempt { attempt, token, end }),
            _ => return Err(bad("the last ended attempt is recorded whole or not at all")),
        };
        let task = Self {
            id: r.id,
            queue: r.queue,
            name: r.name,
            payload: r.payload,
            priority: r.priority,
            max_attempts: r.max_attempts,
            attempt_count: r.attempt_count,
            state,
            retry_state: r.retry_state,
            last_error: r.last_error,
            attempt: r.attempt,
            last_ended,
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
            queue: self.queue.clone(),
            name: self.name.clone(),
            payload: self.payload.clone(),
            priority: self.priority,
            status: self.status(),
            attempt: self.attempt,
            lease_token: self.lease().map(|l| l.token),
            lease_expires_at: self.lease().map(|l| l.expires_at),
            ended_attempt: self.last_ended.map(|e| e.attempt),
            ended_attempt_token: self.last_ended.map(|e| e.token),
            ended_attempt_end: self.last_ended.map(|e| e.end),
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

    /// Hands a runnable pending task to `worker`, opening a new attempt under a lease.
    ///
    /// The attempt number grows by one and never resets, not even on rerun, so that every
    /// attempt of a task's whole life has its own number and token.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is pending;
    /// [`DomainError::NotYetRunnable`] when its next run is after `now`.
    pub fn start(
        &mut self,
        worker: &WorkerId,
        token: LeaseToken,
        lease: LeaseDuration,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        let TaskState::Pending { next_run_at } = self.state else {
            return Err(self.refuse(Action::Start));
        };
        if let Some(runnable_at) = next_run_at.filter(|at| *at > now) {
            return Err(DomainError::NotYetRunnable { task: self.id, runnable_at });
        }
        self.attempt += 1;
        self.state = TaskState::Running {
            worker_id: worker.clone(),
            started_at: now,
            lease: Lease { token, expires_at: lease_end(now, lease) },
        };
        self.touch(now);
        Ok(())
    }

    /// Extends the live attempt's lease to `now + lease`.
    ///
    /// # Errors
    /// [`DomainError::StaleLease`] when `token` is not the live attempt's (the variant says
    /// what became of it: [`StaleLease::TaskCancelled`] tells the worker to stop);
    /// [`DomainError::WorkerMismatch`] when `worker` is given and does not hold the task.
    pub fn heartbeat(
        &mut self,
        worker: Option<&WorkerId>,
        token: LeaseToken,
        lease: LeaseDuration,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        let reporter = Reporter { worker_id: worker.cloned(), lease_token: Some(token) };
        self.fence(&reporter, Action::Heartbeat, None)?;
        if let TaskState::Running { lease: current, .. } = &mut self.state {
            // A heartbeat extends, never shortens: a clock that stepped back, or a shorter
            // lease asked for, leaves the expiry where it was.
            current.expires_at = current.expires_at.max(lease_end(now, lease));
        }
        self.touch(now);
        Ok(())
    }

    /// Records the running attempt's success and what it produced.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is running (for reports without a
    /// token); [`DomainError::StaleLease`] when the token is not the live attempt's;
    /// [`DomainError::WorkerMismatch`] when another worker holds it.
    pub fn succeed(
        &mut self,
        reporter: &Reporter,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        let now = to_micros(now);
        if let Fence::Replay = self.fence(reporter, Action::Succeed, Some(AttemptEnd::Succeeded))? {
            return Ok(Applied::Replayed);
        }
        self.end_attempt(AttemptEnd::Succeeded);
        self.state = TaskState::Succeeded { completed_at: now, result };
        self.retry_state = RetryState::None;
        self.last_error = None;
        self.touch(now);
        Ok(Applied::Changed)
    }

    /// Records the running attempt's failure, then schedules a retry after the backoff or,
    /// with no attempts left, fails the task for good.
    ///
    /// The error is kept, cut to [`MAX_ERROR_BYTES`] with a note saying so when longer.
    ///
    /// # Errors
    /// As [`Task::succeed`].
    pub fn fail_and_schedule_retry(
        &mut self,
        reporter: &Reporter,
        error: &str,
        now: DateTime<Utc>,
        backoff: &(impl BackoffPolicy + ?Sized),
    ) -> Result<Applied, DomainError> {
        let now = to_micros(now);
        if let Fence::Replay = self.fence(reporter, Action::Fail, Some(AttemptEnd::Failed))? {
            return Ok(Applied::Replayed);
        }
        self.end_attempt(AttemptEnd::Failed);
        self.record_failure(error, now, backoff);
        Ok(Applied::Changed)
    }

    /// Records the running attempt's failure as final: the task fails for good at once,
    /// with [`RetryState::NonRetryable`], whatever attempts it had left. For failures no
    /// retry can fix (a malformed payload, a permission refused).
    ///
    /// # Errors
    /// As [`Task::succeed`].
    pub fn fail_permanently(
        &mut self,
        reporter: &Reporter,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        let now = to_micros(now);
        if let Fence::Replay =
            self.fence(reporter, Action::Fail, Some(AttemptEnd::FailedPermanently))?
        {
            return Ok(Applied::Replayed);
        }
        self.end_attempt(AttemptEnd::FailedPermanently);
        self.attempt_count += 1;
        self.last_error = Some(truncate_error(error));
        self.state = TaskState::Failed { completed_at: now };
        self.retry_state = RetryState::NonRetryable;
        self.touch(now);
        Ok(Applied::Changed)
    }

    /// Hands the running attempt's task back unfinished, for a worker that is stopping: the
    /// task is PENDING and runnable at once, and the attempt counts as no failure (neither
    /// `attempt_count`, `retry_state` nor `last_error` change), so that releasing on the
    /// last attempt does not fail the task. The attempt ends as [`AttemptEnd::Released`]:
    /// the same release again is a replay, a success or failure with its token afterwards
    /// is [`StaleLease::OutcomeConflict`].
    ///
    /// A task that is waiting out failures keeps [`RetryState::RetryScheduled`], with its
    /// `next_run_at` at `now` (such a retry is always scheduled); otherwise it has none.
    ///
    /// # Errors
    /// As [`Task::succeed`], with [`Action::Release`].
    pub fn release(
        &mut self,
        reporter: &Reporter,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        let now = to_micros(now);
        if let Fence::Replay = self.fence(reporter, Action::Release, Some(AttemptEnd::Released))? {
            return Ok(Applied::Replayed);
        }
        self.end_attempt(AttemptEnd::Released);
        let next_run_at = (self.retry_state == RetryState::RetryScheduled).then_some(now);
        self.state = TaskState::Pending { next_run_at };
        self.touch(now);
        Ok(Applied::Changed)
    }

    /// Fails the running attempt whose lease ran out, as its worker would have: a retry after
    /// the backoff, or failed for good. The error names the worker.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] unless the task is running;
    /// [`DomainError::LeaseNotExpired`] when the lease runs past `now` (it was heartbeated).
    pub fn expire_lease(
        &mut self,
        now: DateTime<Utc>,
        backoff: &(impl BackoffPolicy + ?Sized),
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        let TaskState::Running { worker_id, lease, .. } = &self.state else {
            return Err(self.refuse(Action::ExpireLease));
        };
        if lease.expires_at > now {
            return Err(DomainError::LeaseNotExpired {
                task: self.id,
                expires_at: lease.expires_at,
            });
        }
        let error = format!("lease expired (worker {worker_id})");
        self.end_attempt(AttemptEnd::LeaseExpired);
        self.record_failure(&error, now, backoff);
        Ok(())
    }

    /// Stops a pending or running task for good. A running attempt ends as cancelled: its
    /// worker learns so at its next heartbeat or report.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] when the task is already terminal.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        let now = to_micros(now);
        if self.status().is_terminal() {
            return Err(self.refuse(Action::Cancel));
        }
        self.end_attempt(AttemptEnd::Cancelled);
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

    /// The queue the task waits in.
    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// How many times the task has been started in its whole life (0 before the first
    /// start); the number of the current or last attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The running attempt's lease.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.state {
            TaskState::Running { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// The last attempt that ended, and how.
    pub fn last_ended(&self) -> Option<&EndedAttempt> {
        self.last_ended.as_ref()
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
        let running = matches!(self.state, TaskState::Running { .. });
        if running && self.attempt == 0 {
            return Err("a running task is on attempt 1 or later");
        }
        if self.attempt_count > self.attempt {
            return Err("no more attempts failed than were started");
        }
        if let (Some(ended), TaskState::Running { lease, .. }) = (self.last_ended, &self.state) {
            if ended.token == lease.token {
                return Err("every attempt has a token of its own");
            }
        }
        if self.last_ended.is_some_and(|e| e.attempt == 0) {
            return Err("attempts are numbered from 1");
        }
        match self.last_ended {
            Some(ended) if ended.attempt != self.attempt - u32::from(running) => {
                return Err(
                    "the last ended attempt is the one before the running one, else the last",
                );
            }
            None if self.attempt > u32::from(running) => {
                return Err("every attempt but the running one has ended");
            }
            _ => {}
        }
        if let TaskState::Running { started_at, lease, .. } = &self.state {
            if lease.expires_at <= *started_at {
                return Err("a lease expires after its attempt started");
            }
        }
        match (&self.state, self.retry_state) {
            (
                TaskState::Pending { .. } | TaskState::Running { .. },
                RetryState::Exhausted | RetryState::NonRetryable,
            ) => Err("only a failed task has exhausted its retries or given up on them"),
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
            (TaskState::Failed { .. }, RetryState::None | RetryState::RetryScheduled) => {
                Err("a failed task has exhausted its retries or given up on them")
            }
            (TaskState::Failed { .. }, _) if self.last_error.is_none() => {
                Err("a failed task recorded the last error")
            }
            (TaskState::Failed { .. }, RetryState::Exhausted) if attempts != max => {
                Err("a task that exhausted its retries used every attempt")
            }
            (TaskState::Failed { .. }, RetryState::NonRetryable) if attempts == 0 => {
                Err("a task that gave up on retries recorded a failed attempt")
            }
            (TaskState::Cancelled { .. }, retry) if retry != RetryState::None => {
                Err("a cancelled task has no retry state")
            }
            _ => Ok(()),
        }
    }

    /// Decides whether `reporter` speaks for the live attempt, for a replay of how its
    /// attempt ended (`as_end`), or for nothing the task will accept.
    fn fence(
        &self,
        reporter: &Reporter,
        action: Action,
        as_end: Option<AttemptEnd>,
    ) -> Result<Fence, DomainError> {
        if let TaskState::Running { worker_id, lease, .. } = &self.state {
            let live = reporter.lease_token.is_none_or(|token| token == lease.token);
            if live {
                return match &reporter.worker_id {
                    Some(caller) if caller != worker_id => Err(DomainError::WorkerMismatch {
                        task: self.id,
                        holder: worker_id.clone(),
                        caller: caller.clone(),
                    }),
                    _ => Ok(Fence::Live),
                };
            }
        }
        let Some(token) = reporter.lease_token else {
            // No token: the foundation's rule, only a running task takes reports.
            return Err(self.refuse(action));
        };
        let Some(ended) = self.last_ended.filter(|e| e.token == token) else {
            return Err(
                StaleLease::AttemptSuperseded { task: self.id, current: self.attempt }.into()
            );
        };
        let (task, attempt) = (self.id, ended.attempt);
        Err(match ended.end {
            // Once a newer attempt started, that is what the caller needs to know.
            AttemptEnd::Cancelled | AttemptEnd::LeaseExpired if self.attempt > attempt => {
                StaleLease::AttemptSuperseded { task, current: self.attempt }
            }
            _ if action == Action::Heartbeat && self.attempt > attempt => {
                StaleLease::AttemptSuperseded { task, current: self.attempt }
            }
            AttemptEnd::Cancelled => StaleLease::TaskCancelled { task, attempt },
            AttemptEnd::LeaseExpired => StaleLease::LeaseExpired { task, attempt },
            end if Some(end) == as_end => return Ok(Fence::Replay),
            // A heartbeat racing its own worker's report is no stale call, just late.
            AttemptEnd::Succeeded
            | AttemptEnd::Failed
            | AttemptEnd::FailedPermanently
            | AttemptEnd::Released
                if action == Action::Heartbeat =>
            {
                return Err(self.refuse(action));
            }
            recorded => StaleLease::OutcomeConflict { task, attempt, recorded },
        }
        .into())
    }

    /// Remembers how the running attempt, if any, ended.
    fn end_attempt(&mut self, end: AttemptEnd) {
        if let TaskState::Running { lease, .. } = &self.state {
            self.last_ended = Some(EndedAttempt { attempt: self.attempt, token: lease.token, end });
        }
    }

    /// Counts a failed attempt and schedules the retry, or fails the task for good.
    fn record_failure(
        &mut self,
        error: &str,
        now: DateTime<Utc>,
        backoff: &(impl BackoffPolicy + ?Sized),
    ) {
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

fn lease_end(now: DateTime<Utc>, lease: LeaseDuration) -> DateTime<Utc> {
    now.checked_add_signed(lease.as_delta()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Checks that a JSON value (a payload or result, named `field` in the error) can be stored:
/// no NUL character (U+0000) in any string or key, which PostgreSQL's jsonb cannot hold.
///
/// # Errors
/// [`ValidationError::NulInJson`] naming `field`.
pub fn check_json(field: &'static str, value: &Value) -> Result<(), crate::ValidationError> {
    let clean = match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => return items.iter().try_for_each(|v| check_json(field, v)),
        Value::Object(map) => {
            for (key, v) in map {
                if key.contains('\0') {
                    return Err(crate::ValidationError::NulInJson(field));
                }
                check_json(field, v)?;
            }
            true
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    };
    if clean {
        Ok(())
    } else {
        Err(crate::ValidationError::NulInJson(field))
    }
}

/// Cuts `at` to whole microseconds: PostgreSQL keeps no more, and what the API returns
/// must equal what is stored.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

fn truncate_error(error: &str) -> String {
    // NUL cannot be stored in text; the replacement character keeps the position visible.
    let cleaned;
    let error = if error.contains('\0') {
        cleaned = error.replace('\0', "\u{FFFD}");
        cleaned.as_str()
    } else {
        error
    };
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

    /// A lease token; the helpers below start attempt `n` with `tok(n)`.
    fn tok(n: u128) -> LeaseToken {
        LeaseToken::from_uuid(Uuid::from_u128(n))
    }

    /// The lease every start and heartbeat takes unless a test says otherwise: 60 s.
    fn lease() -> LeaseDuration {
        LeaseDuration::from_secs(60).unwrap()
    }

    /// A fenced report carrying attempt `n`'s token and no worker id.
    fn fenced(n: u128) -> Reporter {
        Reporter::lease(None, tok(n))
    }

    fn spec(max_attempts: i64, run_at: Option<DateTime<Utc>>) -> NewTask {
        NewTask {
            queue: QueueName::default(),
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": "ada@example.com"}),
            priority: 7,
            max_attempts: MaxAttempts::new(max_attempts).unwrap(),
            run_at,
        }
    }

    /// Starts the task's next attempt for worker `name`, with token `tok(that attempt)`.
    fn start(task: &mut Task, name: &str, now: DateTime<Utc>) -> Result<(), DomainError> {
        let token = tok(u128::from(task.attempt()) + 1);
        task.start(&worker(name), token, lease(), now)
    }

    fn pending(max_attempts: i64) -> Task {
        Task::new(task_id(), spec(max_attempts, None), t0())
    }

    /// Attempt 1, held by `w1` since `t0()` under `tok(1)`, lease until `t0() + 60 s`.
    fn running(max_attempts: i64) -> Task {
        let mut task = pending(max_attempts);
        start(&mut task, "w1", t0()).unwrap();
        task
    }

    /// A task that used every attempt: each one started as soon as runnable, then failed.
    fn failed(max_attempts: i64) -> Task {
        let mut task = pending(max_attempts);
        let mut now = t0();
        while task.status() != TaskStatus::Failed {
            now = task.next_run_at().unwrap_or(now);
            start(&mut task, "w1", now).unwrap();
            task.fail_and_schedule_retry(&Reporter::worker(worker("w1")), "boom", now, &BACKOFF)
                .unwrap();
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
                task.succeed(&Reporter::anyone(), Some(json!({"ok": true})), t0() + secs(1))
                    .unwrap();
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

    /// Maps a transition that returns `()` to what a report returns when it changed the task.
    fn changed((): ()) -> Applied {
        Applied::Changed
    }

    /// Applies `action` as the holding worker would ask for it: reports carry no worker id
    /// and no token (the foundation's behaviour), a heartbeat the current attempt's token.
    fn apply(task: &mut Task, action: Action, now: DateTime<Utc>) -> Result<Applied, DomainError> {
        match action {
            Action::Start => start(task, "w2", now).map(changed),
            Action::Succeed => task.succeed(&Reporter::anyone(), None, now),
            Action::Fail => {
                task.fail_and_schedule_retry(&Reporter::anyone(), "boom", now, &BACKOFF)
            }
            Action::Cancel => task.cancel(now).map(changed),
            Action::Rerun => task.rerun(now).map(changed),
            Action::ExpireLease => task.expire_lease(now, &BACKOFF).map(changed),
            Action::Heartbeat => {
                let token = tok(u128::from(task.attempt()));
                task.heartbeat(None, token, lease(), now).map(changed)
            }
            Action::Release => task.release(&Reporter::anyone(), now),
        }
    }

    fn assert_unchanged_by<T: fmt::Debug>(
        task: &mut Task,
        what: &str,
        call: impl FnOnce(&mut Task) -> Result<T, DomainError>,
        expected: &DomainError,
    ) {
        let before = task.clone();

        let outcome = call(task);

        match outcome {
            Err(e) => assert_eq!(&e, expected, "{what}"),
            Ok(v) => panic!("{what}: accepted ({v:?}), expected {expected:?}"),
        }
        assert_eq!(task, &before, "a refused {what} changes nothing");
    }

    #[test]
    fn every_transition_from_every_status_follows_the_table() {
        use Action::{Cancel, ExpireLease, Fail, Release, Rerun, Start, Succeed};
        use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
        // (from, action, status after, or None when refused). Heartbeats always carry a
        // token, so their refusals are stale-lease errors: see the heartbeat tests below.
        let table = [
            (Pending, Start, Some(Running)),
            (Pending, Succeed, None),
            (Pending, Fail, None),
            (Pending, Cancel, Some(Cancelled)),
            (Pending, Rerun, None),
            (Pending, Release, None),
            (Pending, ExpireLease, None),
            (Running, Start, None),
            (Running, Succeed, Some(Succeeded)),
            (Running, Fail, Some(Pending)),
            (Running, Cancel, Some(Cancelled)),
            (Running, Rerun, None),
            (Running, Release, Some(Pending)),
            (Running, ExpireLease, Some(Pending)),
            (Succeeded, Start, None),
            (Succeeded, Succeed, None),
            (Succeeded, Fail, None),
            (Succeeded, Cancel, None),
            (Succeeded, Rerun, None),
            (Succeeded, Release, None),
            (Succeeded, ExpireLease, None),
            (Failed, Start, None),
            (Failed, Succeed, None),
            (Failed, Fail, None),
            (Failed, Cancel, None),
            (Failed, Rerun, Some(Pending)),
            (Failed, Release, None),
            (Failed, ExpireLease, None),
            (Cancelled, Start, None),
            (Cancelled, Succeed, None),
            (Cancelled, Fail, None),
            (Cancelled, Cancel, None),
            (Cancelled, Rerun, Some(Pending)),
            (Cancelled, Release, None),
            (Cancelled, ExpireLease, None),
        ];
        assert_eq!(table.len(), TaskStatus::ALL.len() * 7, "every pair is listed");

        for (from, action, expected) in table {
            let mut task = task_in(from);
            let before = task.clone();
            // Past the lease of the running attempt, so that the reaper may take it.
            let now = t0() + secs(3600);

            let outcome = apply(&mut task, action, now);

            match expected {
                Some(to) => {
                    assert_eq!(outcome, Ok(Applied::Changed), "{from} --{action}-->");
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
        assert_eq!(task.queue().as_str(), "default");
        assert_eq!(task.name().as_str(), "send-email");
        assert_eq!(task.payload(), &json!({"to": "ada@example.com"}));
        assert_eq!(task.priority(), 7);
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.attempt(), 0);
        assert_eq!(task.attempt_count(), 0);
        assert_eq!(task.max_attempts().get(), 3);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.lease(), None);
        assert_eq!(task.last_ended(), None);
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
    fn a_new_task_waits_in_the_queue_it_was_given() {
        let spec = NewTask { queue: QueueName::parse("emails.high").unwrap(), ..spec(3, None) };

        let task = Task::new(task_id(), spec, t0());

        assert_eq!(task.queue().as_str(), "emails.high");
        assert_eq!(task.to_record().queue, QueueName::parse("emails.high").unwrap());
    }

    #[test]
    fn start_is_refused_before_run_at_and_accepted_at_exactly_run_at() {
        let run_at = t0() + secs(60);
        let mut task = Task::new(task_id(), spec(3, Some(run_at)), t0());
        let before = task.clone();
        assert_eq!(task.next_run_at(), Some(run_at));
        assert!(!task.is_runnable_at(run_at - secs(1)));
        assert!(task.is_runnable_at(run_at));

        let early = start(&mut task, "w1", run_at - secs(1));

        assert_eq!(
            early,
            Err(DomainError::NotYetRunnable { task: task_id(), runnable_at: run_at })
        );
        assert_eq!(task, before);

        start(&mut task, "w1", run_at).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.processing_started_at(), Some(run_at));
    }

    #[test]
    fn run_at_in_the_past_or_now_means_runnable_at_once() {
        for run_at in [t0() - secs(3600), t0() - secs(1), t0()] {
            let mut task = Task::new(task_id(), spec(3, Some(run_at)), t0());

            assert_eq!(task.next_run_at(), None, "runAt {run_at}");
            start(&mut task, "w1", t0()).unwrap();
        }
    }

    #[test]
    fn start_records_the_worker_when_processing_started_and_the_lease() {
        let mut task = pending(3);
        let now = t0() + secs(5);

        task.start(&worker("w1"), tok(41), lease(), now).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.worker_id(), Some(&worker("w1")));
        assert_eq!(task.processing_started_at(), Some(now));
        let lease = Lease { token: tok(41), expires_at: now + secs(60) };
        assert_eq!(task.lease(), Some(&lease));
        assert_eq!(
            task.state(),
            &TaskState::Running { worker_id: worker("w1"), started_at: now, lease }
        );
        assert_eq!(task.version(), 2);
    }

    #[test]
    fn start_opens_attempts_1_2_3_with_the_given_token_and_a_lease_of_now_plus_its_length() {
        let mut task = pending(3);
        let mut now = t0();

        for attempt in 1..=3_u32 {
            let length = LeaseDuration::from_secs(i64::from(attempt) * 100).unwrap();
            let token = tok(1000 + u128::from(attempt));

            task.start(&worker("w1"), token, length, now).unwrap();

            assert_eq!(task.attempt(), attempt);
            assert_eq!(
                task.lease(),
                Some(&Lease { token, expires_at: now + secs(i64::from(attempt) * 100) })
            );
            if attempt > 1 {
                let previous = EndedAttempt {
                    attempt: attempt - 1,
                    token: tok(1000 + u128::from(attempt - 1)),
                    end: AttemptEnd::Failed,
                };
                assert_eq!(task.last_ended(), Some(&previous));
            }
            task.fail_and_schedule_retry(&Reporter::lease(None, token), "boom", now, &BACKOFF)
                .unwrap();
            now = task.next_run_at().unwrap_or(now);
        }
        assert_eq!(task.attempt(), 3);
        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.lease(), None);
    }

    #[test]
    fn the_attempt_number_never_resets_on_rerun() {
        let mut task = failed(2);
        assert_eq!(task.attempt(), 2);

        task.rerun(t0() + secs(3600)).unwrap();

        assert_eq!(task.attempt(), 2, "rerun opens no attempt");
        assert_eq!(task.attempt_count(), 0, "but resets the failure budget");
        start(&mut task, "w1", t0() + secs(3600)).unwrap();
        assert_eq!(task.attempt(), 3);
        assert_eq!(task.lease().map(|l| l.token), Some(tok(3)));
        task.cancel(t0() + secs(3601)).unwrap();
        task.rerun(t0() + secs(3602)).unwrap();
        start(&mut task, "w1", t0() + secs(3602)).unwrap();
        assert_eq!(task.attempt(), 4);
        task.check_invariants().unwrap();
    }

    #[test]
    fn heartbeat_extends_the_lease_to_now_plus_its_length() {
        let mut task = running(3);
        let now = t0() + secs(50);

        task.heartbeat(Some(&worker("w1")), tok(1), LeaseDuration::from_secs(300).unwrap(), now)
            .unwrap();

        assert_eq!(task.lease(), Some(&Lease { token: tok(1), expires_at: now + secs(300) }));
        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.attempt(), 1, "a heartbeat opens no attempt");
        assert_eq!(task.processing_started_at(), Some(t0()));
        assert_eq!(task.version(), 3);
        assert_eq!(task.updated_at(), now);
        task.check_invariants().unwrap();
    }

    #[test]
    fn heartbeat_without_a_worker_id_is_accepted_from_the_token_holder() {
        let mut task = running(3);

        task.heartbeat(None, tok(1), lease(), t0() + secs(10)).unwrap();

        assert_eq!(task.lease().map(|l| l.expires_at), Some(t0() + secs(70)));
    }

    #[test]
    fn the_reaper_never_fails_an_attempt_heartbeated_a_moment_before() {
        let mut task = running(3);
        task.heartbeat(None, tok(1), lease(), t0() + secs(59)).unwrap();

        let reaped = task.clone().expire_lease(t0() + secs(60), &BACKOFF);

        assert_eq!(
            reaped,
            Err(DomainError::LeaseNotExpired { task: task_id(), expires_at: t0() + secs(119) })
        );
    }

    #[test]
    fn heartbeat_with_the_live_token_from_another_worker_is_refused_with_worker_mismatch() {
        let mut task = running(3);

        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(Some(&worker("w2")), tok(1), lease(), t0() + secs(1)),
            &DomainError::WorkerMismatch {
                task: task_id(),
                holder: worker("w1"),
                caller: worker("w2"),
            },
        );
    }

    #[test]
    fn heartbeat_from_a_reaped_attempt_is_refused_with_lease_expired_until_a_newer_attempt_starts()
    {
        let mut task = running(3);
        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();

        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(61)),
            &StaleLease::LeaseExpired { task: task_id(), attempt: 1 }.into(),
        );

        start(&mut task, "w2", t0() + secs(90)).unwrap();

        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(91)),
            &StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into(),
        );
    }

    #[test]
    fn heartbeat_with_an_unknown_token_is_refused_with_attempt_superseded() {
        let mut task = running(3);

        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(Some(&worker("w1")), tok(99), lease(), t0() + secs(1)),
            &StaleLease::AttemptSuperseded { task: task_id(), current: 1 }.into(),
        );
    }

    #[test]
    fn heartbeat_after_a_cancel_while_running_is_refused_with_task_cancelled() {
        let mut task = running(3);
        task.cancel(t0() + secs(5)).unwrap();

        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(6)),
            &StaleLease::TaskCancelled { task: task_id(), attempt: 1 }.into(),
        );
    }

    #[test]
    fn heartbeat_on_a_task_that_is_not_running_is_refused_and_changes_nothing() {
        for status in [TaskStatus::Pending, TaskStatus::Succeeded, TaskStatus::Failed] {
            let mut task = task_in(status);
            let before = task.clone();
            let token = tok(u128::from(task.attempt()));

            let outcome = task.heartbeat(None, token, lease(), t0() + secs(3600));

            assert!(outcome.is_err(), "{status}: {outcome:?}");
            assert_eq!(task, before, "{status}");
        }
    }

    #[test]
    fn a_heartbeat_racing_its_own_workers_report_is_late_not_stale() {
        let mut task = running(3);
        task.succeed(&fenced(1), None, t0() + secs(1)).unwrap();

        let outcome = task.heartbeat(None, tok(1), lease(), t0() + secs(2));

        assert_eq!(
            outcome,
            Err(DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Succeeded,
                action: Action::Heartbeat
            })
        );
    }

    #[test]
    fn a_heartbeat_never_shortens_the_lease() {
        let mut task = running(3);
        let granted = task.lease().unwrap().expires_at;

        task.heartbeat(None, tok(1), LeaseDuration::from_secs(5).unwrap(), t0() + secs(1)).unwrap();
        task.heartbeat(None, tok(1), lease(), t0() - secs(120)).unwrap();

        assert_eq!(task.lease().unwrap().expires_at, granted);
        assert!(task.check_invariants().is_ok());
    }

    #[test]
    fn a_cancelled_attempts_token_is_superseded_once_a_newer_attempt_started() {
        let mut task = running(3);
        task.cancel(t0() + secs(1)).unwrap();
        task.rerun(t0() + secs(2)).unwrap();
        task.start(&worker("w2"), tok(2), lease(), t0() + secs(3)).unwrap();

        let outcome = task.succeed(&fenced(1), None, t0() + secs(4));

        assert_eq!(
            outcome,
            Err(StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into())
        );
    }

    #[test]
    fn succeed_and_fail_with_the_live_token_are_applied() {
        let mut succeeded = running(3);
        let mut failed = running(3);

        let s = succeeded.succeed(&fenced(1), Some(json!(1)), t0() + secs(1));
        let f = failed.fail_and_schedule_retry(
            &Reporter::lease(Some(worker("w1")), tok(1)),
            "boom",
            t0() + secs(1),
            &BACKOFF,
        );

        assert_eq!((s, f), (Ok(Applied::Changed), Ok(Applied::Changed)));
        assert_eq!(succeeded.status(), TaskStatus::Succeeded);
        assert_eq!(failed.status(), TaskStatus::Pending);
        let ended = |end| Some(EndedAttempt { attempt: 1, token: tok(1), end });
        assert_eq!(succeeded.last_ended().copied(), ended(AttemptEnd::Succeeded));
        assert_eq!(failed.last_ended().copied(), ended(AttemptEnd::Failed));
        assert_eq!((succeeded.lease(), failed.lease()), (None, None));
    }

    #[test]
    fn a_repeated_success_with_the_same_token_is_a_replay_that_changes_nothing() {
        let mut task = running(3);
        task.succeed(&fenced(1), Some(json!({"sent": 1})), t0() + secs(1)).unwrap();
        let stored = task.clone();

        // The replay's result differs: the first accepted answer stands.
        let replay = task.succeed(&fenced(1), Some(json!({"sent": 2})), t0() + secs(9));

        assert_eq!(replay, Ok(Applied::Replayed));
        assert_eq!(task, stored, "version and updatedAt too");
    }

    #[test]
    fn a_repeated_failure_with_the_same_token_is_a_replay_that_changes_nothing() {
        for max_attempts in [1, 3] {
            let mut task = running(max_attempts);
            task.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(1), &BACKOFF).unwrap();
            let stored = task.clone();

            let replay =
                task.fail_and_schedule_retry(&fenced(1), "boom again", t0() + secs(9), &BACKOFF);

            assert_eq!(replay, Ok(Applied::Replayed), "{max_attempts} attempts");
            assert_eq!(task, stored, "{max_attempts} attempts");
        }
    }

    #[test]
    fn a_failure_replayed_while_the_next_attempt_runs_changes_nothing() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w2", t0() + secs(30)).unwrap();
        let stored = task.clone();

        let replay = task.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(31), &BACKOFF);

        assert_eq!(replay, Ok(Applied::Replayed));
        assert_eq!(task, stored);
    }

    #[test]
    fn the_same_token_with_a_different_outcome_is_refused_with_outcome_conflict() {
        let mut succeeded = running(3);
        succeeded.succeed(&fenced(1), None, t0() + secs(1)).unwrap();
        let mut failed = running(3);
        failed.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(1), &BACKOFF).unwrap();

        assert_unchanged_by(
            &mut succeeded,
            "fail after success",
            |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(2), &BACKOFF),
            &StaleLease::OutcomeConflict {
                task: task_id(),
                attempt: 1,
                recorded: AttemptEnd::Succeeded,
            }
            .into(),
        );
        assert_unchanged_by(
            &mut failed,
            "success after failure",
            |t| t.succeed(&fenced(1), None, t0() + secs(2)),
            &StaleLease::OutcomeConflict {
                task: task_id(),
                attempt: 1,
                recorded: AttemptEnd::Failed,
            }
            .into(),
        );
    }

    #[test]
    fn a_report_from_a_reaped_attempt_is_lease_expired_until_a_newer_attempt_starts() {
        let mut task = running(3);
        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let expired: DomainError = StaleLease::LeaseExpired { task: task_id(), attempt: 1 }.into();

        assert_unchanged_by(
            &mut task,
            "late success",
            |t| t.succeed(&fenced(1), None, t0() + secs(61)),
            &expired,
        );
        assert_unchanged_by(
            &mut task,
            "late failure",
            |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(61), &BACKOFF),
            &expired,
        );

        start(&mut task, "w2", t0() + secs(90)).unwrap();
        let superseded: DomainError =
            StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into();

        assert_unchanged_by(
            &mut task,
            "late success",
            |t| t.succeed(&Reporter::lease(Some(worker("w1")), tok(1)), None, t0() + secs(91)),
            &superseded,
        );
        assert_unchanged_by(
            &mut task,
            "late failure",
            |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(91), &BACKOFF),
            &superseded,
        );
    }

    #[test]
    fn a_report_from_an_attempt_reaped_on_its_last_try_is_lease_expired() {
        let mut task = running(1);
        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();

        assert_unchanged_by(
            &mut task,
            "late success",
            |t| t.succeed(&fenced(1), None, t0() + secs(61)),
            &StaleLease::LeaseExpired { task: task_id(), attempt: 1 }.into(),
        );
    }

    #[test]
    fn a_report_with_an_unknown_token_is_refused_with_attempt_superseded() {
        for (mut task, current) in
            [(pending(3), 0), (running(3), 1), (task_in(TaskStatus::Succeeded), 1), (failed(2), 2)]
        {
            let superseded: DomainError =
                StaleLease::AttemptSuperseded { task: task_id(), current }.into();

            assert_unchanged_by(
                &mut task,
                "success",
                |t| t.succeed(&fenced(99), None, t0() + secs(1)),
                &superseded,
            );
            assert_unchanged_by(
                &mut task,
                "failure",
                |t| t.fail_and_schedule_retry(&fenced(99), "boom", t0() + secs(1), &BACKOFF),
                &superseded,
            );
        }
    }

    #[test]
    fn a_report_from_an_attempt_two_back_is_refused_with_attempt_superseded() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w1", t0() + secs(30)).unwrap();
        task.fail_and_schedule_retry(&fenced(2), "boom", t0() + secs(30), &BACKOFF).unwrap();

        assert_unchanged_by(
            &mut task,
            "failure",
            |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(31), &BACKOFF),
            &StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into(),
        );
    }

    #[test]
    fn the_worker_of_a_task_cancelled_while_running_is_told_so_at_every_call() {
        let mut task = running(3);

        task.cancel(t0() + secs(5)).unwrap();

        assert_eq!(
            task.last_ended(),
            Some(&EndedAttempt { attempt: 1, token: tok(1), end: AttemptEnd::Cancelled })
        );
        let cancelled: DomainError =
            StaleLease::TaskCancelled { task: task_id(), attempt: 1 }.into();
        let w1 = Some(worker("w1"));
        assert_unchanged_by(
            &mut task,
            "heartbeat",
            |t| t.heartbeat(w1.as_ref(), tok(1), lease(), t0() + secs(6)),
            &cancelled,
        );
        assert_unchanged_by(
            &mut task,
            "success",
            |t| t.succeed(&Reporter::lease(w1.clone(), tok(1)), None, t0() + secs(6)),
            &cancelled,
        );
        assert_unchanged_by(
            &mut task,
            "failure",
            |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(6), &BACKOFF),
            &cancelled,
        );
    }

    #[test]
    fn cancelling_a_pending_task_keeps_the_last_ended_attempt() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        let ended = task.last_ended().copied();

        task.cancel(t0() + secs(1)).unwrap();

        assert_eq!(task.last_ended().copied(), ended);
        assert_eq!(ended.map(|e| e.end), Some(AttemptEnd::Failed));
    }

    #[test]
    fn expire_lease_before_the_lease_runs_out_is_refused_and_changes_nothing() {
        let mut task = running(3);

        assert_unchanged_by(
            &mut task,
            "expire_lease",
            |t| t.expire_lease(t0() + secs(59), &BACKOFF),
            &DomainError::LeaseNotExpired { task: task_id(), expires_at: t0() + secs(60) },
        );
    }

    #[test]
    fn expire_lease_at_or_after_expiry_schedules_a_retry_naming_the_worker() {
        for at in [t0() + secs(60), t0() + secs(61), t0() + secs(3600)] {
            let mut task = running(3);

            task.expire_lease(at, &BACKOFF).unwrap();

            assert_eq!(task.status(), TaskStatus::Pending, "at {at}");
            assert_eq!(task.retry_state(), RetryState::RetryScheduled);
            assert_eq!(task.attempt_count(), 1);
            assert_eq!(task.next_run_at(), Some(at + secs(30)));
            assert_eq!(task.last_error(), Some("lease expired (worker w1)"));
            assert_eq!(task.lease(), None);
            assert_eq!(task.worker_id(), None);
            assert_eq!(
                task.last_ended(),
                Some(&EndedAttempt { attempt: 1, token: tok(1), end: AttemptEnd::LeaseExpired })
            );
            assert_eq!(task.version(), 3);
            assert_eq!(task.updated_at(), at);
            task.check_invariants().unwrap();
        }
    }

    #[test]
    fn expire_lease_on_the_last_attempt_fails_the_task_for_good() {
        let mut task = running(2);
        task.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w2", t0() + secs(30)).unwrap();
        let at = t0() + secs(90);

        task.expire_lease(at, &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!(task.attempt_count(), 2);
        assert_eq!(task.completed_at(), Some(at));
        assert_eq!(task.last_error(), Some("lease expired (worker w2)"));
        assert_eq!(
            task.last_ended().map(|e| (e.attempt, e.end)),
            Some((2, AttemptEnd::LeaseExpired))
        );
        task.check_invariants().unwrap();
    }

    #[test]
    fn a_report_without_a_token_is_checked_by_worker_id_only() {
        let mut task = running(3);
        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        start(&mut task, "w2", t0() + secs(90)).unwrap();
        let mut from_anyone = task.clone();

        // Unfenced, the reaped worker is refused only because it names itself.
        assert_unchanged_by(
            &mut task,
            "success",
            |t| t.succeed(&Reporter::worker(worker("w1")), None, t0() + secs(91)),
            &DomainError::WorkerMismatch {
                task: task_id(),
                holder: worker("w2"),
                caller: worker("w1"),
            },
        );
        let outcome = task.succeed(&Reporter::worker(worker("w2")), None, t0() + secs(91));
        let anonymous = from_anyone.succeed(&Reporter::anyone(), None, t0() + secs(91));

        assert_eq!((outcome, anonymous), (Ok(Applied::Changed), Ok(Applied::Changed)));
        assert_eq!(task.status(), TaskStatus::Succeeded);
        assert_eq!(
            task.last_ended(),
            Some(&EndedAttempt { attempt: 2, token: tok(2), end: AttemptEnd::Succeeded })
        );
        // And an unfenced repeat is no replay: the task is no longer running.
        assert_unchanged_by(
            &mut task,
            "second success",
            |t| t.succeed(&Reporter::worker(worker("w2")), None, t0() + secs(92)),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Succeeded,
                action: Action::Succeed,
            },
        );
    }

    #[test]
    fn failure_with_attempts_left_schedules_a_retry_after_the_backoff() {
        let mut task = running(3);
        let now = t0() + secs(10);

        let applied = task.fail_and_schedule_retry(
            &Reporter::worker(worker("w1")),
            "smtp timeout",
            now,
            &BACKOFF,
        );

        assert_eq!(applied, Ok(Applied::Changed));
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::RetryScheduled);
        assert_eq!(task.attempt_count(), 1);
        assert_eq!(task.next_run_at(), Some(now + secs(30)));
        assert_eq!(task.last_error(), Some("smtp timeout"));
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.lease(), None);
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
            task.fail_and_schedule_retry(&Reporter::anyone(), "boom", now, &backoff).unwrap();

            let due = now + backoff.delay(task_id(), attempt);
            assert_eq!(task.attempt_count(), attempt);
            assert_eq!(task.next_run_at(), Some(due));
            assert!(matches!(
                start(&mut task, "w1", due - TimeDelta::microseconds(1)),
                Err(DomainError::NotYetRunnable { runnable_at, .. }) if runnable_at == due
            ));
            start(&mut task, "w1", due).unwrap();
            now = due;
        }
    }

    #[test]
    fn a_retried_task_is_not_runnable_before_its_next_run_at() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();
        let before = task.clone();

        let early = start(&mut task, "w1", t0() + secs(29));

        assert_eq!(
            early,
            Err(DomainError::NotYetRunnable { task: task_id(), runnable_at: t0() + secs(30) })
        );
        assert_eq!(task, before);
        start(&mut task, "w2", t0() + secs(30)).unwrap();
        assert_eq!(task.retry_state(), RetryState::RetryScheduled, "still a retry while it runs");
    }

    #[test]
    fn last_attempt_failure_is_final() {
        let mut task = running(2);
        task.fail_and_schedule_retry(&Reporter::anyone(), "first", t0(), &BACKOFF).unwrap();
        start(&mut task, "w1", t0() + secs(30)).unwrap();
        let end = t0() + secs(40);

        task.fail_and_schedule_retry(&Reporter::worker(worker("w1")), "second", end, &BACKOFF)
            .unwrap();

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

        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!(task.attempt_count(), 1);
    }

    #[test]
    fn succeed_clears_retry_metadata_and_stores_the_result() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w1", t0() + secs(30)).unwrap();
        let end = t0() + secs(31);

        task.succeed(&Reporter::worker(worker("w1")), Some(json!({"sent": 1})), end).unwrap();

        assert_eq!(task.status(), TaskStatus::Succeeded);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.result(), Some(&json!({"sent": 1})));
        assert_eq!(task.completed_at(), Some(end));
        assert_eq!(task.worker_id(), None);
        assert_eq!(task.lease(), None);
        assert_eq!(task.processing_started_at(), None);
        assert_eq!(task.attempt_count(), 1, "the failed attempt stays counted");
    }

    #[test]
    fn succeed_without_a_result_stores_none() {
        let mut task = running(3);

        task.succeed(&Reporter::anyone(), None, t0()).unwrap();

        assert_eq!(task.result(), None);
        assert_eq!(task.completed_at(), Some(t0()));
    }

    #[test]
    fn reports_from_another_worker_are_refused_with_worker_mismatch() {
        type Report = fn(&mut Task, &Reporter) -> Result<Applied, DomainError>;
        let reports: [(&str, Report); 2] = [
            ("succeed", |t, r| t.succeed(r, Some(json!(1)), t0())),
            ("fail", |t, r| t.fail_and_schedule_retry(r, "boom", t0(), &BACKOFF)),
        ];
        // Without a token, and with the live token but another worker id.
        let reporters =
            [Reporter::worker(worker("w2")), Reporter::lease(Some(worker("w2")), tok(1))];
        for (name, report) in reports {
            for reporter in &reporters {
                let mut task = running(3);

                assert_unchanged_by(
                    &mut task,
                    name,
                    |t| report(t, reporter),
                    &DomainError::WorkerMismatch {
                        task: task_id(),
                        holder: worker("w1"),
                        caller: worker("w2"),
                    },
                );
            }
        }
    }

    #[test]
    fn reports_without_a_worker_id_are_accepted_from_anyone() {
        let mut succeeded = running(3);
        let mut failed = running(3);

        succeeded.succeed(&Reporter::anyone(), None, t0()).unwrap();
        failed.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();

        assert_eq!(succeeded.status(), TaskStatus::Succeeded);
        assert_eq!(failed.status(), TaskStatus::Pending);
    }

    #[test]
    fn a_report_on_a_task_that_is_not_running_names_the_transition_not_the_worker() {
        let mut task = pending(3);

        let outcome = task.succeed(&Reporter::worker(worker("w2")), None, t0());

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
            assert_eq!(task.lease(), None);
            assert_eq!(task.processing_started_at(), None);
            assert_eq!(task.next_run_at(), None);
            assert_eq!(task.retry_state(), RetryState::None);
        }
    }

    #[test]
    fn cancelling_a_scheduled_retry_drops_the_retry_state() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();

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
        start(&mut task, "w1", again).unwrap();
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", again, &BACKOFF).unwrap();
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.attempt_count(), 1);
    }

    #[test]
    fn rerun_of_a_cancelled_retry_resets_the_attempt_budget() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();
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

        task.fail_and_schedule_retry(&Reporter::anyone(), &error, t0(), &BACKOFF).unwrap();

        assert_eq!(task.last_error(), Some(error.as_str()));
    }

    #[test]
    fn an_error_over_max_error_bytes_is_truncated_and_says_so() {
        let error = "x".repeat(MAX_ERROR_BYTES + 1);
        let mut task = running(3);

        task.fail_and_schedule_retry(&Reporter::anyone(), &error, t0(), &BACKOFF).unwrap();

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

                task.fail_and_schedule_retry(&Reporter::anyone(), &error, t0(), &BACKOFF).unwrap();

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
        type Step = fn(&mut Task, DateTime<Utc>) -> Result<Applied, DomainError>;
        let steps: [(i64, Step); 9] = [
            (1, |t, now| start(t, "w1", now).map(changed)),
            (2, |t, now| t.heartbeat(None, tok(1), lease(), now).map(changed)),
            (3, |t, now| t.fail_and_schedule_retry(&fenced(1), "boom", now, &BACKOFF)),
            (40, |t, now| start(t, "w1", now).map(changed)),
            // The lease of attempt 2 runs until 40 + 60 s.
            (100, |t, now| t.expire_lease(now, &BACKOFF).map(changed)),
            (101, |t, now| t.rerun(now).map(changed)),
            (102, |t, now| start(t, "w1", now).map(changed)),
            (103, |t, now| t.cancel(now).map(changed)),
            (104, |t, now| t.rerun(now).map(changed)),
        ];

        for (i, (at, step)) in steps.into_iter().enumerate() {
            let applied = step(&mut task, t0() + secs(at));

            assert_eq!(applied, Ok(Applied::Changed), "step {i}");
            assert_eq!(task.version(), 2 + i as u64);
            assert_eq!(task.updated_at(), t0() + secs(at));
            assert_eq!(task.created_at(), t0());
            task.check_invariants().unwrap();
        }
    }

    #[test]
    fn a_clock_that_stepped_back_never_makes_updated_at_precede_created_at() {
        let mut task = pending(3);

        start(&mut task, "w1", t0() - secs(10)).unwrap();

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
        start(&mut task, "w1", ragged + secs(5)).unwrap();
        assert_eq!(task.processing_started_at(), Some(micros + secs(5)));
        assert_eq!(task.lease().map(|l| l.expires_at), Some(micros + secs(65)));
        task.heartbeat(None, tok(1), lease(), ragged + secs(6)).unwrap();
        assert_eq!(task.lease().map(|l| l.expires_at), Some(micros + secs(66)));
    }

    #[test]
    fn restore_of_to_record_round_trips_every_reachable_state() {
        let mut delayed = Task::new(task_id(), spec(3, Some(t0() + secs(60))), t0());
        delayed.priority = -3;
        let mut other_queue = pending(3);
        other_queue.queue = QueueName::parse("reports-2").unwrap();
        let mut retry_scheduled = running(3);
        retry_scheduled.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        let mut retry_running = retry_scheduled.clone();
        start(&mut retry_running, "w2", t0() + secs(30)).unwrap();
        let mut heartbeated = retry_running.clone();
        heartbeated.heartbeat(None, tok(2), lease(), t0() + secs(40)).unwrap();
        let mut succeeded_without_result = running(3);
        succeeded_without_result.succeed(&Reporter::anyone(), None, t0()).unwrap();
        let mut cancelled_while_running = running(3);
        cancelled_while_running.cancel(t0()).unwrap();
        let mut restarted_after_cancel = cancelled_while_running.clone();
        restarted_after_cancel.rerun(t0() + secs(1)).unwrap();
        start(&mut restarted_after_cancel, "w2", t0() + secs(1)).unwrap();
        let mut reaped = running(3);
        reaped.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut reaped_for_good = running(1);
        reaped_for_good.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut rerun = failed(3);
        rerun.rerun(t0() + secs(3600)).unwrap();
        let mut released = running(3);
        released.release(&fenced(1), t0() + secs(5)).unwrap();
        let mut released_retry = retry_running.clone();
        released_retry.release(&fenced(2), t0() + secs(35)).unwrap();
        let mut restarted_after_release = released.clone();
        start(&mut restarted_after_release, "w2", t0() + secs(5)).unwrap();
        let mut reachable: Vec<Task> = TaskStatus::ALL.into_iter().map(task_in).collect();
        reachable.extend([
            delayed,
            other_queue,
            retry_scheduled,
            retry_running,
            heartbeated,
            succeeded_without_result,
            cancelled_while_running,
            restarted_after_cancel,
            reaped,
            reaped_for_good,
            failed(1),
            rerun,
            released,
            released_retry,
            restarted_after_release,
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
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w2", t0() + secs(30)).unwrap();

        let r = task.to_record();

        assert_eq!(
            r,
            TaskRecord {
                id: task_id(),
                queue: QueueName::default(),
                name: TaskName::parse("send-email").unwrap(),
                payload: json!({"to": "ada@example.com"}),
                priority: 7,
                status: TaskStatus::Running,
                attempt: 2,
                lease_token: Some(tok(2)),
                lease_expires_at: Some(t0() + secs(90)),
                ended_attempt: Some(1),
                ended_attempt_token: Some(tok(1)),
                ended_attempt_end: Some(AttemptEnd::Failed),
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
            ("running with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..run.clone() }),
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
            ("updated before created", TaskRecord { updated_at: t0() - secs(1), ..fresh.clone() }),
            ("succeeded without completedAt", TaskRecord { completed_at: None, ..done.clone() }),
            (
                "succeeded with a retry state",
                TaskRecord { retry_state: RetryState::RetryScheduled, ..done.clone() },
            ),
            (
                "succeeded with lastError",
                TaskRecord { last_error: Some("x".into()), ..done.clone() },
            ),
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
            ("failed with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..dead.clone() }),
            // Leases.
            ("running without a lease token", TaskRecord { lease_token: None, ..run.clone() }),
            (
                "running without a lease expiry",
                TaskRecord { lease_expires_at: None, ..run.clone() },
            ),
            (
                "running with a lease that expires when it started",
                TaskRecord { lease_expires_at: Some(t0()), ..run.clone() },
            ),
            ("running on attempt zero", TaskRecord { attempt: 0, ..run.clone() }),
            (
                "pending with a lease token",
                TaskRecord { lease_token: Some(tok(1)), ..fresh.clone() },
            ),
            (
                "pending with a lease expiry",
                TaskRecord { lease_expires_at: Some(t0() + secs(60)), ..fresh.clone() },
            ),
            (
                "succeeded with a lease",
                TaskRecord {
                    lease_token: Some(tok(1)),
                    lease_expires_at: Some(t0() + secs(60)),
                    ..done.clone()
                },
            ),
            ("failed with a lease token", TaskRecord { lease_token: Some(tok(3)), ..dead.clone() }),
            // The last ended attempt.
            (
                "ended attempt without its token",
                TaskRecord { ended_attempt_token: None, ..done.clone() },
            ),
            (
                "ended attempt without its end",
                TaskRecord { ended_attempt_end: None, ..done.clone() },
            ),
            (
                "ended attempt without its number",
                TaskRecord { ended_attempt: None, ..done.clone() },
            ),
            (
                "an ended end alone",
                TaskRecord { ended_attempt_end: Some(AttemptEnd::Failed), ..fresh.clone() },
            ),
            (
                "a started attempt that never ended",
                TaskRecord {
                    ended_attempt: None,
                    ended_attempt_token: None,
                    ended_attempt_end: None,
                    ..done.clone()
                },
            ),
            (
                "an ended attempt that is not the last",
                TaskRecord { ended_attempt: Some(2), ..dead.clone() },
            ),
            (
                "the running attempt recorded as ended",
                TaskRecord {
                    ended_attempt: Some(1),
                    ended_attempt_token: Some(tok(1)),
                    ended_attempt_end: Some(AttemptEnd::Failed),
                    ..run
                },
            ),
            (
                "an attempt ended that never started",
                TaskRecord {
                    ended_attempt: Some(1),
                    ended_attempt_token: Some(tok(1)),
                    ended_attempt_end: Some(AttemptEnd::Cancelled),
                    ..fresh
                },
            ),
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
        let not_expired =
            DomainError::LeaseNotExpired { task: task_id(), expires_at: t0() + secs(60) };
        assert!(not_expired.to_string().contains("runs until 2026-01-01 12:01:00"));
    }

    #[test]
    fn each_stale_lease_has_its_stable_code_and_says_which_attempt() {
        let task = task_id();
        let cases = [
            (StaleLease::LeaseExpired { task, attempt: 2 }, "LEASE_EXPIRED", "attempt 2"),
            (StaleLease::AttemptSuperseded { task, current: 3 }, "ATTEMPT_SUPERSEDED", "attempt 3"),
            (StaleLease::TaskCancelled { task, attempt: 2 }, "TASK_CANCELLED", "attempt 2"),
            (
                StaleLease::OutcomeConflict { task, attempt: 2, recorded: AttemptEnd::Succeeded },
                "OUTCOME_CONFLICT",
                "SUCCEEDED",
            ),
        ];

        for (stale, code, says) in cases {
            assert_eq!(stale.code(), code);
            let message = DomainError::from(stale.clone()).to_string();
            assert_eq!(message, stale.to_string(), "a domain error shows the stale lease as is");
            assert!(message.contains(&task.to_string()) && message.contains(says), "{message}");
        }
    }

    #[test]
    fn debug_output_of_a_task_never_shows_its_lease_tokens() {
        let secret =
            LeaseToken::from_uuid(Uuid::from_u128(0x5ec2_e700_0000_4000_8000_0000_0000_abcd));
        let mut task = running(3);
        task.cancel(t0() + secs(1)).unwrap();
        task.rerun(t0() + secs(2)).unwrap();
        task.start(&worker("w1"), secret, lease(), t0() + secs(2)).unwrap();

        let shown = [
            format!("{task:?}"),
            format!("{:?}", task.to_record()),
            format!("{:?}", Reporter::lease(None, secret)),
            format!("{:#?}", task.lease()),
        ];

        for text in shown {
            for token in [secret, tok(1)] {
                assert!(!text.contains(&token.to_string()), "{text}");
                assert!(!text.contains(&token.as_uuid().to_string()), "{text}");
            }
            assert!(text.contains("LeaseToken(..)"), "{text}");
        }
    }

    #[test]
    fn a_backoff_past_the_end_of_the_calendar_never_means_now() {
        let mut task = running(3);

        task.fail_and_schedule_retry(
            &Reporter::anyone(),
            "boom",
            t0(),
            &FixedBackoff(TimeDelta::MAX),
        )
        .unwrap();

        assert!(task.next_run_at().unwrap() > t0() + TimeDelta::days(365 * 1000));
        assert!(!task.is_runnable_at(t0() + TimeDelta::days(365)));
    }

    #[test]
    fn json_with_a_nul_anywhere_is_refused_and_other_json_is_kept() {
        let refused = [json!("a\0b"), json!({"k": ["x", "\0"]}), json!({"\0": 1})];
        let accepted = [json!(null), json!({"k": [1, true, "ok", {"n": 1.5}]}), json!("\u{1}")];

        for value in refused {
            assert_eq!(
                check_json("payload", &value),
                Err(crate::ValidationError::NulInJson("payload"))
            );
        }
        for value in accepted {
            assert_eq!(check_json("result", &value), Ok(()), "{value}");
        }
    }

    #[test]
    fn a_nul_in_an_error_message_is_replaced_so_that_it_can_be_stored() {
        let mut task = running(3);

        task.fail_and_schedule_retry(&Reporter::anyone(), "bad\0byte", t0(), &BACKOFF).unwrap();

        assert_eq!(task.last_error(), Some("bad\u{FFFD}byte"));
    }

    // --- fail_permanently ----------------------------------------------------------------

    /// A task whose attempt 1 (of `tok(1)`) failed for good with `fail_permanently` at
    /// `t0() + 1 s`, with attempts left.
    fn failed_permanently(max_attempts: i64) -> Task {
        let mut task = running(max_attempts);
        task.fail_permanently(&fenced(1), "bad payload", t0() + secs(1)).unwrap();
        task
    }

    #[test]
    fn a_permanent_failure_with_attempts_left_fails_the_task_for_good_at_once() {
        let mut task = running(3);
        let before = task.clone();

        let applied = task.fail_permanently(
            &Reporter::lease(Some(worker("w1")), tok(1)),
            "bad payload",
            t0() + secs(1),
        );

        assert_eq!(applied, Ok(Applied::Changed));
        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::NonRetryable);
        assert_eq!(task.completed_at(), Some(t0() + secs(1)));
        assert_eq!(task.last_error(), Some("bad payload"));
        assert_eq!(task.attempt_count(), 1, "the failed attempt counts, the other two are unused");
        assert_eq!(task.attempt(), 1);
        assert_eq!(task.next_run_at(), None, "no retry is scheduled");
        assert_eq!(
            (task.lease(), task.worker_id(), task.processing_started_at()),
            (None, None, None)
        );
        assert_eq!(
            task.last_ended().copied(),
            Some(EndedAttempt { attempt: 1, token: tok(1), end: AttemptEnd::FailedPermanently })
        );
        assert_eq!(task.version(), before.version() + 1);
        assert_eq!(task.updated_at(), t0() + secs(1));
        assert!(!task.is_runnable_at(t0() + secs(3600)));
        task.check_invariants().unwrap();
    }

    #[test]
    fn a_permanent_failure_on_the_last_attempt_is_non_retryable_not_exhausted() {
        for max_attempts in [1, 2] {
            let mut task = pending(max_attempts);
            let mut now = t0();
            for _ in 1..max_attempts {
                start(&mut task, "w1", now).unwrap();
                task.fail_and_schedule_retry(&Reporter::anyone(), "flaky", now, &BACKOFF).unwrap();
                now = task.next_run_at().unwrap();
            }
            start(&mut task, "w1", now).unwrap();

            task.fail_permanently(&fenced(u128::from(task.attempt())), "bad payload", now).unwrap();

            assert_eq!(task.status(), TaskStatus::Failed, "{max_attempts} attempts");
            assert_eq!(task.retry_state(), RetryState::NonRetryable, "{max_attempts} attempts");
            assert_eq!(task.attempt_count(), task.max_attempts().get());
            assert_eq!(task.last_error(), Some("bad payload"));
            task.check_invariants().unwrap();
        }
    }

    #[test]
    fn a_permanent_failure_without_a_token_is_accepted_from_the_holder_or_anyone() {
        for reporter in [Reporter::anyone(), Reporter::worker(worker("w1"))] {
            let mut task = running(3);

            let applied = task.fail_permanently(&reporter, "bad payload", t0() + secs(1));

            assert_eq!(applied, Ok(Applied::Changed), "{reporter:?}");
            assert_eq!(task.retry_state(), RetryState::NonRetryable);
        }
    }

    #[test]
    fn a_permanent_failure_from_every_status_but_running_is_refused_like_a_failure() {
        for status in TaskStatus::ALL.into_iter().filter(|s| *s != TaskStatus::Running) {
            for reporter in [Reporter::anyone(), Reporter::worker(worker("w1"))] {
                let mut task = task_in(status);
                let as_fail = task
                    .clone()
                    .fail_and_schedule_retry(&reporter, "boom", t0() + secs(5), &BACKOFF)
                    .unwrap_err();

                assert_unchanged_by(
                    &mut task,
                    &format!("permanent failure of a {status} task"),
                    |t| t.fail_permanently(&reporter, "boom", t0() + secs(5)),
                    &DomainError::InvalidTransition {
                        task: task_id(),
                        from: status,
                        action: Action::Fail,
                    },
                );
                assert_eq!(
                    task.clone().fail_permanently(&reporter, "boom", t0() + secs(5)),
                    Err(as_fail),
                    "refused exactly as fail is"
                );
            }
        }
    }

    #[test]
    fn a_permanent_failure_from_another_worker_is_refused_with_worker_mismatch() {
        let reporters =
            [Reporter::worker(worker("w2")), Reporter::lease(Some(worker("w2")), tok(1))];
        for reporter in reporters {
            let mut task = running(3);

            assert_unchanged_by(
                &mut task,
                "permanent failure from w2",
                |t| t.fail_permanently(&reporter, "boom", t0() + secs(1)),
                &DomainError::WorkerMismatch {
                    task: task_id(),
                    holder: worker("w1"),
                    caller: worker("w2"),
                },
            );
        }
    }

    #[test]
    fn a_permanent_failure_with_a_stale_token_is_refused_with_the_code_that_fits() {
        let mut reaped = running(3);
        reaped.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut reaped_and_restarted = reaped.clone();
        start(&mut reaped_and_restarted, "w2", t0() + secs(90)).unwrap();
        let mut cancelled = running(3);
        cancelled.cancel(t0() + secs(1)).unwrap();
        let mut succeeded = running(3);
        succeeded.succeed(&fenced(1), None, t0() + secs(1)).unwrap();
        let cases: [(&str, Task, LeaseToken, StaleLease); 5] = [
            ("reaped", reaped, tok(1), StaleLease::LeaseExpired { task: task_id(), attempt: 1 }),
            (
                "reaped and restarted",
                reaped_and_restarted,
                tok(1),
                StaleLease::AttemptSuperseded { task: task_id(), current: 2 },
            ),
            (
                "cancelled while running",
                cancelled,
                tok(1),
                StaleLease::TaskCancelled { task: task_id(), attempt: 1 },
            ),
            (
                "succeeded by the same attempt",
                succeeded,
                tok(1),
                StaleLease::OutcomeConflict {
                    task: task_id(),
                    attempt: 1,
                    recorded: AttemptEnd::Succeeded,
                },
            ),
            (
                "running with a token never handed out",
                running(3),
                tok(99),
                StaleLease::AttemptSuperseded { task: task_id(), current: 1 },
            ),
        ];

        for (what, mut task, token, refusal) in cases {
            assert_unchanged_by(
                &mut task,
                what,
                |t| t.fail_permanently(&Reporter::lease(None, token), "late", t0() + secs(120)),
                &refusal.into(),
            );
        }
    }

    #[test]
    fn a_repeated_permanent_failure_with_the_same_token_is_a_replay_that_changes_nothing() {
        for max_attempts in [1, 3] {
            let mut task = failed_permanently(max_attempts);
            let stored = task.clone();

            let replay = task.fail_permanently(&fenced(1), "bad payload again", t0() + secs(9));

            assert_eq!(replay, Ok(Applied::Replayed), "{max_attempts} attempts");
            assert_eq!(task, stored, "{max_attempts} attempts: version and updatedAt too");
        }
    }

    #[test]
    fn a_permanent_failure_replayed_after_a_rerun_started_a_new_attempt_changes_nothing() {
        let mut task = failed_permanently(3);
        task.rerun(t0() + secs(10)).unwrap();
        start(&mut task, "w2", t0() + secs(10)).unwrap();
        let stored = task.clone();

        let replay = task.fail_permanently(&fenced(1), "bad payload", t0() + secs(11));

        assert_eq!(replay, Ok(Applied::Replayed), "attempt 1 ended as FAILED");
        assert_eq!(task, stored);
    }

    // The attempt records which kind of failure ended it, so the same token with the other
    // kind is a different outcome, not a repeat: what the first report decided stands.
    #[test]
    fn a_retryable_failure_after_a_permanent_one_with_the_same_token_is_an_outcome_conflict() {
        let mut task = failed_permanently(3);

        assert_unchanged_by(
            &mut task,
            "retryable failure after a permanent one",
            |t| t.fail_and_schedule_retry(&fenced(1), "flaky", t0() + secs(2), &BACKOFF),
            &StaleLease::OutcomeConflict {
                task: task_id(),
                attempt: 1,
                recorded: AttemptEnd::FailedPermanently,
            }
            .into(),
        );
        assert_eq!(task.retry_state(), RetryState::NonRetryable, "still failed for good");
    }

    #[test]
    fn a_permanent_failure_after_a_retryable_one_with_the_same_token_is_an_outcome_conflict() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "flaky", t0() + secs(1), &BACKOFF).unwrap();

        assert_unchanged_by(
            &mut task,
            "permanent failure after a retryable one",
            |t| t.fail_permanently(&fenced(1), "bad payload", t0() + secs(2)),
            &StaleLease::OutcomeConflict {
                task: task_id(),
                attempt: 1,
                recorded: AttemptEnd::Failed,
            }
            .into(),
        );
        assert_eq!(task.retry_state(), RetryState::RetryScheduled, "the retry stays scheduled");
    }

    #[test]
    fn a_success_after_a_permanent_failure_with_the_same_token_is_an_outcome_conflict() {
        let mut task = failed_permanently(3);

        assert_unchanged_by(
            &mut task,
            "success after a permanent failure",
            |t| t.succeed(&fenced(1), None, t0() + secs(2)),
            &StaleLease::OutcomeConflict {
                task: task_id(),
                attempt: 1,
                recorded: AttemptEnd::FailedPermanently,
            }
            .into(),
        );
    }

    #[test]
    fn a_heartbeat_after_a_permanent_failure_is_late_not_stale() {
        let mut task = failed_permanently(3);

        assert_unchanged_by(
            &mut task,
            "heartbeat after a permanent failure",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(2)),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Failed,
                action: Action::Heartbeat,
            },
        );
    }

    #[test]
    fn a_permanently_failed_task_is_terminal_until_rerun() {
        let mut task = failed_permanently(3);
        let later = t0() + secs(3600);

        assert_unchanged_by(
            &mut task,
            "start",
            |t| start(t, "w2", later),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Failed,
                action: Action::Start,
            },
        );
        assert_unchanged_by(
            &mut task,
            "cancel",
            |t| t.cancel(later),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Failed,
                action: Action::Cancel,
            },
        );
        assert_unchanged_by(
            &mut task,
            "expire lease",
            |t| t.expire_lease(later, &BACKOFF),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Failed,
                action: Action::ExpireLease,
            },
        );
    }

    #[test]
    fn rerun_of_a_permanently_failed_task_gives_it_a_fresh_attempt_budget() {
        let mut task = failed_permanently(3);
        let again = t0() + secs(3600);

        task.rerun(again).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.attempt_count(), 0);
        assert_eq!(task.last_error(), None);
        assert_eq!(task.completed_at(), None);
        assert!(task.is_runnable_at(again));
        task.check_invariants().unwrap();
        // All three attempts are available again, numbered on from the first.
        for n in 2..=4 {
            let now = task.next_run_at().unwrap_or(again);
            start(&mut task, "w1", now).unwrap();
            assert_eq!(task.attempt(), n);
            task.fail_and_schedule_retry(&fenced(u128::from(n)), "flaky", now, &BACKOFF).unwrap();
        }
        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!(task.attempt_count(), 3);
    }

    #[test]
    fn a_permanent_failure_keeps_its_error_as_a_failure_does() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let mut truncated = running(3);
        let mut with_nul = running(3);

        truncated.fail_permanently(&fenced(1), &long, t0()).unwrap();
        with_nul.fail_permanently(&fenced(1), "bad\0byte", t0()).unwrap();

        let kept = truncated.last_error().unwrap();
        assert!(kept.len() <= MAX_ERROR_BYTES, "{}", kept.len());
        assert!(kept.ends_with(&format!("… [truncated: {} bytes in all]", long.len())), "{kept}");
        assert_eq!(with_nul.last_error(), Some("bad\u{FFFD}byte"));
    }

    #[test]
    fn restore_of_to_record_round_trips_permanently_failed_tasks() {
        let mut on_last_attempt = running(1);
        on_last_attempt.fail_permanently(&fenced(1), "bad payload", t0()).unwrap();
        let mut after_a_retry = running(3);
        after_a_retry.fail_and_schedule_retry(&fenced(1), "flaky", t0(), &BACKOFF).unwrap();
        start(&mut after_a_retry, "w2", t0() + secs(30)).unwrap();
        after_a_retry.fail_permanently(&fenced(2), "bad payload", t0() + secs(31)).unwrap();
        let mut rerun = failed_permanently(3);
        rerun.rerun(t0() + secs(60)).unwrap();

        for task in [failed_permanently(3), on_last_attempt, after_a_retry, rerun] {
            let record = task.to_record();

            assert_eq!(Task::restore(record.clone()), Ok(task.clone()), "{record:?}");
        }
        let record = failed_permanently(3).to_record();
        assert_eq!(
            (record.status, record.retry_state, record.attempt_count),
            (TaskStatus::Failed, RetryState::NonRetryable, 1)
        );
    }

    #[test]
    fn restore_refuses_non_retryable_records_that_no_transition_makes() {
        let dead = failed_permanently(3).to_record();
        let non_retryable =
            |r: TaskRecord| TaskRecord { retry_state: RetryState::NonRetryable, ..r };
        let cases: Vec<(&str, TaskRecord)> = vec![
            (
                "non-retryable without a failed attempt",
                TaskRecord { attempt_count: 0, ..dead.clone() },
            ),
            ("non-retryable without lastError", TaskRecord { last_error: None, ..dead.clone() }),
            ("non-retryable above the budget", TaskRecord { attempt_count: 4, ..dead.clone() }),
            ("pending and non-retryable", non_retryable(pending(3).to_record())),
            ("running and non-retryable", non_retryable(running(3).to_record())),
            (
                "succeeded and non-retryable",
                non_retryable(task_in(TaskStatus::Succeeded).to_record()),
            ),
            (
                "cancelled and non-retryable",
                non_retryable(task_in(TaskStatus::Cancelled).to_record()),
            ),
            (
                "a retry scheduled after a permanent failure",
                TaskRecord {
                    status: TaskStatus::Pending,
                    completed_at: None,
                    next_run_at: Some(t0() + secs(30)),
                    ..dead.clone()
                },
            ),
            // The other way round: EXHAUSTED still needs every attempt used.
            (
                "exhausted with attempts left",
                TaskRecord { retry_state: RetryState::Exhausted, ..dead.clone() },
            ),
        ];

        for (what, record) in cases {
            let err = Task::restore(record).expect_err(what);

            assert_eq!(err.task, task_id(), "{what}");
            assert!(!err.reason.is_empty(), "{what}");
        }
    }

    #[test]
    fn every_retry_state_spelling_round_trips_and_non_retryable_is_spelled_so() {
        let all = [
            RetryState::None,
            RetryState::RetryScheduled,
            RetryState::Exhausted,
            RetryState::NonRetryable,
        ];

        for retry in all {
            assert_eq!(RetryState::parse(retry.as_str()), Some(retry));
            assert_eq!(retry.to_string(), retry.as_str());
        }
        assert_eq!(RetryState::NonRetryable.as_str(), "NON_RETRYABLE");
        assert_eq!(RetryState::parse("non_retryable"), None, "spellings are exact");
        assert_eq!(RetryState::parse("NONRETRYABLE"), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn non_retryable_serializes_as_its_spelling() {
        let json = serde_json::to_value(RetryState::NonRetryable).unwrap();

        assert_eq!(json, json!("NON_RETRYABLE"));
        assert_eq!(serde_json::from_value::<RetryState>(json).unwrap(), RetryState::NonRetryable);
    }

    #[test]
    fn a_heartbeat_from_an_attempt_that_a_newer_one_followed_is_superseded() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "flaky", t0(), &BACKOFF).unwrap();
        let due = task.next_run_at().unwrap();
        task.start(&worker("w2"), tok(2), lease(), due).unwrap();

        let outcome = task.heartbeat(None, tok(1), lease(), due + secs(1));

        assert_eq!(
            outcome,
            Err(StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into())
        );
    }

    // --- release ---------------------------------------------------------------------------

    /// A task whose attempt 1 (of `tok(1)`) was released at `t0() + 5 s`.
    fn released(max_attempts: i64) -> Task {
        let mut task = running(max_attempts);
        task.release(&fenced(1), t0() + secs(5)).unwrap();
        task
    }

    #[test]
    fn release_puts_the_task_back_to_pending_runnable_at_once_without_counting_a_failure() {
        let mut task = running(3);
        let before = task.clone();
        let at = t0() + secs(5);

        let applied = task.release(&Reporter::lease(Some(worker("w1")), tok(1)), at);

        assert_eq!(applied, Ok(Applied::Changed));
        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!(task.attempt_count(), 0, "a release is no failure");
        assert_eq!(task.attempt(), 1);
        assert_eq!(task.next_run_at(), None);
        assert_eq!(task.last_error(), None);
        assert_eq!(
            (task.lease(), task.worker_id(), task.processing_started_at(), task.completed_at()),
            (None, None, None, None)
        );
        assert_eq!(
            task.last_ended().copied(),
            Some(EndedAttempt { attempt: 1, token: tok(1), end: AttemptEnd::Released })
        );
        assert_eq!(task.version(), before.version() + 1);
        assert_eq!(task.updated_at(), at);
        assert!(task.is_runnable_at(at), "runnable at once, no backoff");
        task.check_invariants().unwrap();
        start(&mut task, "w2", at).unwrap();
        assert_eq!((task.attempt(), task.attempt_count()), (2, 0));
    }

    #[test]
    fn releasing_a_retry_keeps_its_failures_and_retry_state_and_makes_it_runnable_at_once() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&fenced(1), "flaky", t0(), &BACKOFF).unwrap();
        let due = task.next_run_at().unwrap();
        start(&mut task, "w1", due).unwrap();
        let at = due + secs(7);

        task.release(&fenced(2), at).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::RetryScheduled);
        assert_eq!(task.attempt_count(), 1);
        assert_eq!(task.last_error(), Some("flaky"));
        assert_eq!(task.next_run_at(), Some(at), "a scheduled retry has a nextRunAt: now");
        assert!(task.is_runnable_at(at));
        assert_eq!(task.last_ended().map(|e| (e.attempt, e.end)), Some((2, AttemptEnd::Released)));
        task.check_invariants().unwrap();
    }

    #[test]
    fn releasing_the_last_attempt_does_not_fail_the_task() {
        for max_attempts in [1, 2] {
            let mut task = pending(max_attempts);
            let mut now = t0();
            for _ in 1..max_attempts {
                start(&mut task, "w1", now).unwrap();
                task.fail_and_schedule_retry(&Reporter::anyone(), "flaky", now, &BACKOFF).unwrap();
                now = task.next_run_at().unwrap();
            }
            start(&mut task, "w1", now).unwrap();
            let last = u128::from(task.attempt());

            task.release(&fenced(last), now + secs(1)).unwrap();

            assert_eq!(task.status(), TaskStatus::Pending, "{max_attempts} attempts");
            assert_eq!(task.attempt_count(), task.max_attempts().get() - 1);
            assert!(task.is_runnable_at(now + secs(1)));
            task.check_invariants().unwrap();
            // The budget is still there: the next attempt's failure is the one that counts.
            start(&mut task, "w2", now + secs(1)).unwrap();
            task.fail_and_schedule_retry(&fenced(last + 1), "boom", now + secs(2), &BACKOFF)
                .unwrap();
            assert_eq!(task.status(), TaskStatus::Failed);
            assert_eq!(task.retry_state(), RetryState::Exhausted);
            assert_eq!(task.attempt_count(), task.max_attempts().get());
        }
    }

    #[test]
    fn a_repeated_release_with_the_same_token_is_a_replay_that_changes_nothing() {
        let mut task = released(3);
        let stored = task.clone();

        let replay = task.release(&Reporter::lease(Some(worker("w1")), tok(1)), t0() + secs(9));

        assert_eq!(replay, Ok(Applied::Replayed));
        assert_eq!(task, stored, "version and updatedAt too");

        start(&mut task, "w2", t0() + secs(10)).unwrap();
        let stored = task.clone();

        let replay = task.release(&fenced(1), t0() + secs(11));

        assert_eq!(replay, Ok(Applied::Replayed), "while the next attempt runs too");
        assert_eq!(task, stored);
    }

    #[test]
    fn a_success_or_failure_after_a_release_with_the_same_token_is_an_outcome_conflict() {
        let conflict: DomainError = StaleLease::OutcomeConflict {
            task: task_id(),
            attempt: 1,
            recorded: AttemptEnd::Released,
        }
        .into();
        let mut waiting = released(3);
        let mut taken_again = released(3);
        start(&mut taken_again, "w2", t0() + secs(6)).unwrap();

        for task in [&mut waiting, &mut taken_again] {
            assert_unchanged_by(
                task,
                "success after a release",
                |t| t.succeed(&fenced(1), None, t0() + secs(7)),
                &conflict,
            );
            assert_unchanged_by(
                task,
                "failure after a release",
                |t| t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(7), &BACKOFF),
                &conflict,
            );
            assert_unchanged_by(
                task,
                "permanent failure after a release",
                |t| t.fail_permanently(&fenced(1), "bad", t0() + secs(7)),
                &conflict,
            );
        }
    }

    #[test]
    fn a_release_after_a_report_with_the_same_token_is_an_outcome_conflict() {
        let mut succeeded = running(3);
        succeeded.succeed(&fenced(1), None, t0() + secs(1)).unwrap();
        let mut failed = running(3);
        failed.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(1), &BACKOFF).unwrap();
        for (mut task, recorded) in [
            (succeeded, AttemptEnd::Succeeded),
            (failed, AttemptEnd::Failed),
            (failed_permanently(3), AttemptEnd::FailedPermanently),
        ] {
            assert_unchanged_by(
                &mut task,
                "release after a report",
                |t| t.release(&fenced(1), t0() + secs(2)),
                &StaleLease::OutcomeConflict { task: task_id(), attempt: 1, recorded }.into(),
            );
        }
    }

    #[test]
    fn a_heartbeat_after_a_release_is_late_until_a_newer_attempt_starts() {
        let mut task = released(3);

        assert_unchanged_by(
            &mut task,
            "heartbeat after a release",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(6)),
            &DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Pending,
                action: Action::Heartbeat,
            },
        );

        start(&mut task, "w2", t0() + secs(7)).unwrap();

        assert_unchanged_by(
            &mut task,
            "heartbeat after a release and a new start",
            |t| t.heartbeat(Some(&worker("w1")), tok(1), lease(), t0() + secs(8)),
            &StaleLease::AttemptSuperseded { task: task_id(), current: 2 }.into(),
        );
    }

    #[test]
    fn a_release_with_a_stale_token_is_refused_with_the_code_that_fits() {
        let mut reaped = running(3);
        reaped.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut reaped_and_restarted = reaped.clone();
        start(&mut reaped_and_restarted, "w2", t0() + secs(90)).unwrap();
        let mut cancelled = running(3);
        cancelled.cancel(t0() + secs(1)).unwrap();
        let cases: [(&str, Task, LeaseToken, StaleLease); 4] = [
            ("reaped", reaped, tok(1), StaleLease::LeaseExpired { task: task_id(), attempt: 1 }),
            (
                "reaped and restarted",
                reaped_and_restarted,
                tok(1),
                StaleLease::AttemptSuperseded { task: task_id(), current: 2 },
            ),
            (
                "cancelled while running",
                cancelled,
                tok(1),
                StaleLease::TaskCancelled { task: task_id(), attempt: 1 },
            ),
            (
                "running with a token never handed out",
                running(3),
                tok(99),
                StaleLease::AttemptSuperseded { task: task_id(), current: 1 },
            ),
        ];

        for (what, mut task, token, refusal) in cases {
            assert_unchanged_by(
                &mut task,
                what,
                |t| t.release(&Reporter::lease(None, token), t0() + secs(120)),
                &refusal.into(),
            );
        }
    }

    #[test]
    fn a_release_from_another_worker_is_refused_with_worker_mismatch() {
        for reporter in
            [Reporter::worker(worker("w2")), Reporter::lease(Some(worker("w2")), tok(1))]
        {
            let mut task = running(3);

            assert_unchanged_by(
                &mut task,
                "release from w2",
                |t| t.release(&reporter, t0() + secs(1)),
                &DomainError::WorkerMismatch {
                    task: task_id(),
                    holder: worker("w1"),
                    caller: worker("w2"),
                },
            );
        }
    }

    #[test]
    fn a_release_without_a_token_is_accepted_only_while_the_task_runs() {
        for reporter in [Reporter::anyone(), Reporter::worker(worker("w1"))] {
            let mut task = running(3);

            assert_eq!(task.release(&reporter, t0() + secs(1)), Ok(Applied::Changed));
            assert_eq!(task.status(), TaskStatus::Pending);

            // Unfenced, a repeat is no replay: the task is no longer running.
            assert_unchanged_by(
                &mut task,
                "second release",
                |t| t.release(&reporter, t0() + secs(2)),
                &DomainError::InvalidTransition {
                    task: task_id(),
                    from: TaskStatus::Pending,
                    action: Action::Release,
                },
            );
        }
    }

    #[test]
    fn the_lost_lease_codes_are_those_of_an_expired_or_superseded_attempt() {
        let expired = StaleLease::LeaseExpired { task: task_id(), attempt: 1 };
        let superseded = StaleLease::AttemptSuperseded { task: task_id(), current: 2 };
        let cancelled = StaleLease::TaskCancelled { task: task_id(), attempt: 1 };

        assert_eq!(StaleLease::LOST_LEASE_CODES, [expired.code(), superseded.code()]);
        assert!(!StaleLease::LOST_LEASE_CODES.contains(&cancelled.code()));
    }
}
