//! The task aggregate: a unit of work and the transitions of its life.

mod live;
mod record;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

pub use live::{LiveAttemptGuard, LiveSuccess};
pub use record::TaskRecord;

use crate::fencing::{fence, Fence};
use crate::storage::truncate_error;
use crate::{
    to_micros, Action, Applied, AttemptEnd, BackoffPolicy, DomainError, EndedAttempt, FencedCall,
    Lease, LeaseDuration, LeaseToken, MaxAttempts, MaxCrashes, QueueName, Reporter, RetryState,
    TaskId, TaskName, TaskState, TaskStatus, TokenId, UniqueKey, WorkerId,
};

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
    /// The key that makes it the same work as another task of its queue while either is
    /// active (see [`Task::unique_key`]).
    pub unique_key: Option<UniqueKey>,
}

/// A unit of work and the rules of its life.
///
/// Fields are private: a `Task` only changes through its transitions, each of which either
/// applies whole or returns a [`DomainError`] and leaves the task as it was. Every transition
/// bumps [`Task::version`] by one, which storage uses to refuse lost updates. Calls that speak
/// for an attempt (heartbeats and reports) are answered by the fencing table,
/// [`FencedCall::verdict`].
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
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().ok_or("a valid instant")?;
/// let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::hours(1))?;
/// let lease = LeaseDuration::from_secs(60)?;
/// let spec = NewTask {
///     queue: QueueName::default(),
///     name: TaskName::parse("send-email")?,
///     payload: json!({"to": "ada@example.com"}),
///     priority: 0,
///     max_attempts: MaxAttempts::new(2)?,
///     run_at: None,
///     unique_key: None,
/// };
/// let mut task = Task::new(TaskId::from_uuid(Uuid::nil()), spec, t0);
/// let worker = WorkerId::parse("worker-1")?;
/// // Tokens come from a cryptographic source; fixed ones keep the example short.
/// let first = LeaseToken::from_uuid(Uuid::from_u128(1));
/// let second = LeaseToken::from_uuid(Uuid::from_u128(2));
///
/// task.start(&worker, first, lease, t0)?;
/// assert_eq!(task.attempt(), 1);
/// let report = Reporter::lease(Some(worker.clone()), first);
/// let applied = task.fail_and_schedule_retry(&report, "smtp timeout", t0, &backoff)?;
/// assert_eq!(applied, Applied::Changed);
/// assert_eq!(task.status(), TaskStatus::Pending);
/// assert_eq!(task.retry_state(), RetryState::RetryScheduled);
/// // The same report again, after its answer was lost, is recognised and changes nothing.
/// let replay = task.fail_and_schedule_retry(&report, "smtp timeout", t0, &backoff)?;
/// assert_eq!(replay, Applied::Replayed);
/// // The retry is not runnable before its backoff has passed.
/// assert!(task.start(&worker, second, lease, t0).is_err());
///
/// let later = task.next_run_at().ok_or("a retry is scheduled")?;
/// task.start(&worker, second, lease, later)?;
/// assert_eq!(task.attempt(), 2);
/// // The first attempt already ended as FAILED: a late success with its token is refused.
/// let late = task.succeed(&report, None, later);
/// assert!(matches!(late, Err(DomainError::StaleLease(StaleLease::OutcomeConflict { .. }))));
/// // Nobody reports on the second attempt: the reaper fails it once its lease runs out.
/// task.expire_lease(later + TimeDelta::seconds(60), &backoff)?;
/// assert_eq!(task.status(), TaskStatus::Failed);
/// assert_eq!(task.retry_state(), RetryState::Exhausted);
/// assert_eq!(task.last_error(), Some("lease expired (worker worker-1)"));
/// # Ok(())
/// # }
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
    max_crashes: MaxCrashes,
    crash_count: u32,
    state: TaskState,
    retry_state: RetryState,
    last_error: Option<String>,
    attempt: u32,
    last_ended: Option<EndedAttempt>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: u64,
    created_by: Option<TokenId>,
    unique_key: Option<UniqueKey>,
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
            max_crashes: MaxCrashes::DEFAULT,
            crash_count: 0,
            state: TaskState::Pending { next_run_at },
            retry_state: RetryState::None,
            last_error: None,
            attempt: 0,
            last_ended: None,
            created_at: now,
            updated_at: now,
            version: 1,
            created_by: None,
            unique_key: spec.unique_key,
        }
    }

    /// The same new task, recorded as created by `token` (see [`Task::created_by`]).
    #[must_use]
    pub fn with_creator(mut self, token: Option<TokenId>) -> Self {
        self.created_by = token;
        self
    }

    /// The same new task, quarantined after `max_crashes` lease expiries instead of
    /// [`MaxCrashes::DEFAULT`] (see [`Task::expire_lease`]).
    #[must_use]
    pub fn with_max_crashes(mut self, max_crashes: MaxCrashes) -> Self {
        self.max_crashes = max_crashes;
        self
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
            lease: Lease { token, expires_at: lease.expiry_from(now) },
        };
        self.touch(now);
        Ok(())
    }

    /// Extends the live attempt's lease to `now + lease`.
    ///
    /// # Errors
    /// As the fencing table, [`FencedCall::verdict`], says for [`FencedCall::Heartbeat`]:
    /// [`DomainError::StaleLease`] when `token` is not the live attempt's (the variant says
    /// what became of it: [`StaleLease::TaskCancelled`](crate::StaleLease::TaskCancelled)
    /// tells the worker to stop);
    /// [`DomainError::WorkerMismatch`] when `worker` is given and does not hold the task;
    /// [`DomainError::InvalidTransition`] when the heartbeat comes after its own attempt's
    /// report.
    pub fn heartbeat(
        &mut self,
        worker: Option<&WorkerId>,
        token: LeaseToken,
        lease: LeaseDuration,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        let now = to_micros(now);
        let reporter = Reporter { worker_id: worker.cloned(), lease_token: Some(token) };
        if fence(self, &reporter, FencedCall::Heartbeat)? == Fence::Replay {
            return Ok(());
        }
        if let TaskState::Running { lease: current, .. } = &mut self.state {
            // A heartbeat extends, never shortens: a clock that stepped back, or a shorter
            // lease asked for, leaves the expiry where it was.
            current.expires_at = current.expires_at.max(lease.expiry_from(now));
        }
        self.touch(now);
        Ok(())
    }

    /// Records the running attempt's success and what it produced.
    ///
    /// A repeat of the report that ended the attempt is [`Applied::Replayed`] and changes
    /// nothing.
    ///
    /// # Errors
    /// As the fencing table, [`FencedCall::verdict`], says for the call:
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
        if fence(self, reporter, FencedCall::Succeed)? == Fence::Replay {
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
    /// The error is kept, cut to [`MAX_ERROR_BYTES`](crate::MAX_ERROR_BYTES) with a note
    /// saying so when longer.
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
        if fence(self, reporter, FencedCall::Fail)? == Fence::Replay {
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
        if fence(self, reporter, FencedCall::FailPermanently)? == Fence::Replay {
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
    /// is [`StaleLease::OutcomeConflict`](crate::StaleLease::OutcomeConflict).
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
        if fence(self, reporter, FencedCall::Release)? == Fence::Replay {
            return Ok(Applied::Replayed);
        }
        self.end_attempt(AttemptEnd::Released);
        let next_run_at = (self.retry_state == RetryState::RetryScheduled).then_some(now);
        self.state = TaskState::Pending { next_run_at };
        self.touch(now);
        Ok(Applied::Changed)
    }

    /// Fails the running attempt whose lease ran out: its worker died, hung or lost touch
    /// without reporting. This is a crash, counted apart from reported failures in
    /// [`Task::crash_count`], and also a failed attempt, as a reported failure would be:
    ///
    /// - with crashes left ([`Task::crash_count`] below [`Task::max_crashes`]), it is a
    ///   failure like any other: a retry after the backoff, or failed for good
    ///   ([`RetryState::Exhausted`]) when the attempts are used up. The error names the worker.
    /// - the crash that uses up the crash budget quarantines the task: FAILED with
    ///   [`RetryState::Quarantined`], whatever attempts remain, and a `lastError` saying how
    ///   many leases expired and whose was the last. A task that kills or hangs every worker
    ///   that runs it takes down `maxCrashes` workers, not `maxAttempts`.
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
        let worker = worker_id.clone();
        self.end_attempt(AttemptEnd::LeaseExpired);
        self.crash_count += 1;
        if self.crash_count >= self.max_crashes.get() {
            self.attempt_count += 1;
            let times = if self.crash_count == 1 { "time" } else { "times" };
            self.last_error = Some(truncate_error(&format!(
                "quarantined: lease expired {} {times} (last worker {worker})",
                self.crash_count
            )));
            self.state = TaskState::Failed { completed_at: now };
            self.retry_state = RetryState::Quarantined;
            self.touch(now);
        } else {
            self.record_failure(&format!("lease expired (worker {worker})"), now, backoff);
        }
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

    /// Puts a failed or cancelled task back to pending with a fresh attempt budget and a
    /// fresh crash budget (a quarantined task too: rerunning it says the cause is fixed).
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
        self.crash_count = 0;
        self.last_error = None;
        self.touch(now);
        Ok(())
    }

    /// Whether the task may be deleted by an operator: only a terminal task (succeeded,
    /// failed or cancelled) may, so that no pending or running work disappears unseen.
    ///
    /// # Errors
    /// [`DomainError::InvalidTransition`] with [`Action::Delete`] for a pending or running
    /// task.
    pub fn check_deletable(&self) -> Result<(), DomainError> {
        if self.status().is_terminal() {
            Ok(())
        } else {
            Err(self.refuse(Action::Delete))
        }
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

    /// How many times the task was ever started: 0 before the first start, never reset, not
    /// even by a rerun; so also the number of the current or last attempt. Not to be confused
    /// with [`Task::attempt_count`], the failed attempts since creation or the last rerun.
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

    /// Failed attempts since creation or the last rerun (the API's `attemptCount`): what the
    /// retry budget, [`Task::max_attempts`], is spent on. A release counts no failure. Not to
    /// be confused with [`Task::attempt`], how many times the task was ever started.
    pub fn attempt_count(&self) -> u32 {
        self.attempt_count
    }

    /// Failed attempts allowed before the task fails for good: the bound of
    /// [`Task::attempt_count`].
    pub fn max_attempts(&self) -> MaxAttempts {
        self.max_attempts
    }

    /// Lease expiries since creation or the last rerun (the API's `crashCount`): attempts
    /// whose worker never reported, what the crash budget, [`Task::max_crashes`], is spent
    /// on. Reported failures never count here; every crash also counts in
    /// [`Task::attempt_count`].
    pub fn crash_count(&self) -> u32 {
        self.crash_count
    }

    /// Lease expiries allowed before the task is quarantined: the bound of
    /// [`Task::crash_count`].
    pub fn max_crashes(&self) -> MaxCrashes {
        self.max_crashes
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

    /// The API token that created the task, if one did: a producer token reads and cancels
    /// only the tasks it created.
    pub fn created_by(&self) -> Option<TokenId> {
        self.created_by
    }

    /// The key that makes this task the same work as another of its queue: while it is
    /// PENDING or RUNNING, no other task of its queue with this key is created or rerun.
    /// Storage enforces that; a finished task keeps its key but holds it no more.
    pub fn unique_key(&self) -> Option<&UniqueKey> {
        self.unique_key.as_ref()
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::Timelike;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::test_support::{
        assert_unchanged_by, failed, failed_permanently, fenced, lease, on_its_last_attempt,
        pending, quarantined, running, secs, spec, start, t0, task_id, task_in, tok, worker,
        BACKOFF,
    };
    use crate::{ExponentialBackoff, FixedBackoff, MAX_ERROR_BYTES};

    /// Maps a transition that returns `()` to what a report returns when it changed the task.
    fn changed((): ()) -> Applied {
        Applied::Changed
    }

    /// Applies `action` as the holding worker would ask for it: reports carry no worker id
    /// and no token (as clients that predate leases do), a heartbeat the current attempt's
    /// token.
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
            Action::Delete => task.check_deletable().map(|()| Applied::Replayed),
        }
    }

    #[test]
    fn only_terminal_tasks_can_be_deleted() {
        use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
        let table = [
            (Pending, false),
            (Running, false),
            (Succeeded, true),
            (Failed, true),
            (Cancelled, true),
        ];
        let from: Vec<TaskStatus> = table.iter().map(|(from, _)| *from).collect();
        assert_eq!(from, TaskStatus::ALL, "every status is listed");
        for (status, deletable) in table {
            let task = task_in(status);
            let outcome = task.check_deletable();
            if deletable {
                assert_eq!(outcome, Ok(()), "{status}");
            } else {
                assert_eq!(
                    outcome,
                    Err(DomainError::InvalidTransition {
                        task: task.id(),
                        from: status,
                        action: Action::Delete
                    }),
                    "{status}"
                );
            }
        }
    }

    #[test]
    fn every_transition_from_every_status_follows_the_table() {
        use Action::{Cancel, ExpireLease, Fail, Release, Rerun, Start, Succeed};
        use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
        const NO: Option<TaskStatus> = None;
        let (to_running, to_pending) = (Some(Running), Some(Pending));
        let (to_succeeded, to_cancelled) = (Some(Succeeded), Some(Cancelled));
        let actions = [Start, Succeed, Fail, Cancel, Rerun, Release, ExpireLease];
        // The status after each action from each status, or NO when it is refused. Heartbeats
        // always carry a token: the fencing table answers them.
        #[rustfmt::skip]
        let table = [
            //          start       succeed       fail        cancel        rerun       release     expire lease
            (Pending,   [to_running, NO,           NO,         to_cancelled, NO,         NO,         NO]),
            (Running,   [NO,         to_succeeded, to_pending, to_cancelled, NO,         to_pending, to_pending]),
            (Succeeded, [NO,         NO,           NO,         NO,           NO,         NO,         NO]),
            (Failed,    [NO,         NO,           NO,         NO,           to_pending, NO,         NO]),
            (Cancelled, [NO,         NO,           NO,         NO,           to_pending, NO,         NO]),
        ];
        let from: Vec<TaskStatus> = table.iter().map(|(from, _)| *from).collect();
        assert_eq!(from, TaskStatus::ALL, "every status is listed");
        let table = table.into_iter().flat_map(|(from, row)| {
            actions.into_iter().zip(row).map(move |(action, expected)| (from, action, expected))
        });

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
    fn a_heartbeat_never_shortens_the_lease() {
        let mut task = running(3);
        let granted = task.lease().unwrap().expires_at;

        task.heartbeat(None, tok(1), LeaseDuration::from_secs(5).unwrap(), t0() + secs(1)).unwrap();
        task.heartbeat(None, tok(1), lease(), t0() - secs(120)).unwrap();

        assert_eq!(task.lease().unwrap().expires_at, granted);
        assert!(task.check_invariants().is_ok());
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
    fn cancelling_a_running_task_ends_its_attempt_as_cancelled() {
        let mut task = running(3);

        task.cancel(t0() + secs(5)).unwrap();

        assert_eq!(
            task.last_ended(),
            Some(&EndedAttempt { attempt: 1, token: tok(1), end: AttemptEnd::Cancelled })
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
            let (mut task, now) = on_its_last_attempt(max_attempts);

            task.fail_permanently(&fenced(u128::from(task.attempt())), "bad payload", now).unwrap();

            assert_eq!(task.status(), TaskStatus::Failed, "{max_attempts} attempts");
            assert_eq!(task.retry_state(), RetryState::NonRetryable, "{max_attempts} attempts");
            assert_eq!(task.attempt_count(), task.max_attempts().get());
            assert_eq!(task.last_error(), Some("bad payload"));
            task.check_invariants().unwrap();
        }
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
            let (mut task, now) = on_its_last_attempt(max_attempts);
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
    fn a_failure_keeps_its_error_as_storage_can_hold_it() {
        let long = "x".repeat(MAX_ERROR_BYTES + 1);
        let mut truncated = running(3);
        let mut with_nul = running(3);

        truncated.fail_and_schedule_retry(&Reporter::anyone(), &long, t0(), &BACKOFF).unwrap();
        with_nul.fail_and_schedule_retry(&Reporter::anyone(), "bad\0byte", t0(), &BACKOFF).unwrap();

        assert_eq!(truncated.last_error(), Some(truncate_error(&long).as_str()));
        assert!(truncated.last_error().unwrap().len() <= MAX_ERROR_BYTES);
        assert_eq!(with_nul.last_error(), Some("bad\u{FFFD}byte"));
    }

    #[test]
    fn a_lease_expiry_counts_a_crash_and_a_failed_attempt_with_crashes_left() {
        let mut task = running(5);

        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::RetryScheduled);
        assert_eq!((task.crash_count(), task.attempt_count()), (1, 1));
        assert_eq!(task.max_crashes(), MaxCrashes::DEFAULT);
        assert_eq!(task.next_run_at(), Some(t0() + secs(90)), "a crash waits out the backoff");
        assert_eq!(task.last_error(), Some("lease expired (worker w1)"));
        task.check_invariants().unwrap();
    }

    #[test]
    fn the_crash_that_uses_up_the_budget_quarantines_the_task_with_attempts_left() {
        let task = quarantined(25, 3);

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Quarantined);
        assert_eq!(task.crash_count(), 3);
        assert_eq!(task.attempt_count(), 3, "22 attempts are left unused");
        assert_eq!(task.attempt(), 3, "three workers ran it, not 25");
        assert_eq!(task.last_error(), Some("quarantined: lease expired 3 times (last worker w1)"));
        assert_eq!(
            task.last_ended().map(|e| (e.attempt, e.end)),
            Some((3, AttemptEnd::LeaseExpired))
        );
        assert!(task.completed_at().is_some());
        assert_eq!(task.next_run_at(), None);
        task.check_invariants().unwrap();
    }

    #[test]
    fn quarantine_wins_over_exhaustion_when_both_budgets_run_out_together() {
        for (max_attempts, max_crashes) in [(1, 1), (3, 3)] {
            let task = quarantined(max_attempts, max_crashes);

            assert_eq!(task.retry_state(), RetryState::Quarantined, "{max_attempts}/{max_crashes}");
            assert_eq!(task.attempt_count(), task.max_attempts().get());
            task.check_invariants().unwrap();
        }
    }

    #[test]
    fn attempts_running_out_before_crashes_exhaust_the_task_as_before() {
        let mut task = pending(2).with_max_crashes(MaxCrashes::new(5).unwrap());
        start(&mut task, "w1", t0()).unwrap();
        task.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let due = task.next_run_at().unwrap();
        start(&mut task, "w2", due).unwrap();

        task.expire_lease(due + secs(60), &BACKOFF).unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
        assert_eq!(task.retry_state(), RetryState::Exhausted);
        assert_eq!((task.crash_count(), task.attempt_count()), (2, 2));
        assert_eq!(task.last_error(), Some("lease expired (worker w2)"));
        task.check_invariants().unwrap();
    }

    #[test]
    fn reported_failures_and_releases_never_count_as_crashes() {
        let mut task = pending(10).with_max_crashes(MaxCrashes::new(2).unwrap());
        let mut now = t0();
        start(&mut task, "w1", now).unwrap();
        task.expire_lease(now + secs(60), &BACKOFF).unwrap();
        for n in 2..=4_u128 {
            now = task.next_run_at().unwrap();
            start(&mut task, "w1", now).unwrap();
            if n == 3 {
                task.release(&fenced(n), now).unwrap();
                start(&mut task, "w1", now).unwrap();
                task.fail_and_schedule_retry(&fenced(n + 1), "boom", now, &BACKOFF).unwrap();
                break;
            }
            task.fail_and_schedule_retry(&fenced(n), "boom", now, &BACKOFF).unwrap();
        }

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!((task.crash_count(), task.attempt_count()), (1, 3));
        task.check_invariants().unwrap();
    }

    #[test]
    fn a_quarantined_task_is_terminal_until_rerun_which_gives_it_a_fresh_crash_budget() {
        let mut task = quarantined(25, 3);
        let later = t0() + secs(3600);
        for (what, action) in [("start", Action::Start), ("cancel", Action::Cancel)] {
            let expected = DomainError::InvalidTransition {
                task: task_id(),
                from: TaskStatus::Failed,
                action,
            };
            let call = |t: &mut Task| match action {
                Action::Start => start(t, "w2", later),
                _ => t.cancel(later),
            };
            assert_unchanged_by(&mut task, what, call, &expected);
        }

        task.rerun(later).unwrap();

        assert_eq!(task.status(), TaskStatus::Pending);
        assert_eq!(task.retry_state(), RetryState::None);
        assert_eq!((task.crash_count(), task.attempt_count()), (0, 0));
        assert_eq!(task.max_crashes().get(), 3);
        assert_eq!(task.last_error(), None);
        task.check_invariants().unwrap();
        // The whole crash budget is there again: two crashes retry, the third quarantines.
        let mut now = later;
        for n in 1..=3 {
            now = task.next_run_at().unwrap_or(now);
            start(&mut task, "w3", now).unwrap();
            now += secs(60);
            task.expire_lease(now, &BACKOFF).unwrap();
            assert_eq!(task.crash_count(), n);
        }
        assert_eq!(task.retry_state(), RetryState::Quarantined);
        assert_eq!(task.last_error(), Some("quarantined: lease expired 3 times (last worker w3)"));
    }
}
