//! The use cases.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_domain::{
    Applied, BackoffPolicy, Clock, DomainError, LeaseDuration, LeaseToken, MaxAttempts, NewTask,
    QueueName, Reporter, Task, TaskId, TaskName, ValidationError, WorkerId,
};
use uuid::Uuid;

use crate::{
    Actor, ClaimRequest, Cursor, RejectionCount, RepoError, StaleCall, TaskEvent, TaskFilter,
    TaskRepository, TaskWrite,
};

/// How often a transition that lost a race re-reads the task and tries again before giving up.
const MAX_TRANSITION_ATTEMPTS: usize = 3;

/// Everything a use case can fail with, by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task's state does not allow what was asked (including stale lease tokens).
    #[error(transparent)]
    Conflict(#[from] DomainError),
    /// The request carries a value the domain refuses.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A listing's page size is outside 1 to [`MAX_PAGE_SIZE`].
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}, got {0}")]
    InvalidLimit(u32),
    /// A claim's batch size is outside 1 to [`MAX_CLAIM_BATCH`].
    #[error("limit must be between 1 and {MAX_CLAIM_BATCH}, got {0}")]
    InvalidClaimLimit(u32),
    /// A batch is empty or larger than [`MAX_BATCH`].
    #[error("a batch holds 1 to {MAX_BATCH} items, got {0}")]
    InvalidBatchSize(usize),
    /// A listing's cursor is not one this server handed out.
    #[error("cursor is not valid")]
    InvalidCursor,
    /// The task kept changing under us; the caller may try again.
    #[error("task {0} is being modified concurrently; try again")]
    ConcurrentModification(TaskId),
    /// Storage cannot be reached now.
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or broken data; details are for the logs, not for clients.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<RepoError> for AppError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound(id) => Self::NotFound(id),
            RepoError::Conflict(id) => Self::ConcurrentModification(id),
            RepoError::Unavailable(e) => Self::Unavailable(e),
            RepoError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

/// Default page size of a listing.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size of a listing.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Largest number of tasks one claim may take.
pub const MAX_CLAIM_BATCH: u32 = 100;
/// Largest number of tasks one batch may create, or of outcomes one batch may report.
pub const MAX_BATCH: usize = 1000;

/// How an attempt ended, as its worker reports it in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success, with what the task produced.
    Succeeded {
        /// The result, if any.
        result: Option<Value>,
    },
    /// Failure.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether a retry may help; `false` fails the task for good at once.
        retryable: bool,
    },
    /// Not finished: the worker hands the task back (it is stopping), and the task is
    /// runnable again at once without a failure counted.
    Released,
}

/// One outcome of a batch: the task, who reports, and how its attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The task.
    pub id: TaskId,
    /// Who reports, with the attempt's lease token.
    pub reporter: Reporter,
    /// How the attempt ended.
    pub outcome: Outcome,
}

/// What a client asks for when creating a task; unset fields take the service's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTask {
    /// The queue; `default` when `None`.
    pub queue: Option<QueueName>,
    /// The kind of work.
    pub name: TaskName,
    /// Input for the worker.
    pub payload: Value,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts before the task fails for good; the service default when `None`.
    pub max_attempts: Option<MaxAttempts>,
    /// Not runnable before then.
    pub run_at: Option<DateTime<Utc>>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The tasks, newest first.
    pub items: Vec<Task>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<Cursor>,
}

/// The service's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDefaults {
    /// Attempts of a task created without `maxAttempts`.
    pub max_attempts: MaxAttempts,
    /// Lease of a start, claim or heartbeat that does not name one.
    pub lease: LeaseDuration,
}

/// A clock reading the system time, cut to microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        taskpilot_domain::to_micros(Utc::now())
    }
}

/// The task use cases, over a repository, a clock and a backoff policy.
#[derive(Clone)]
pub struct TaskService {
    repo: Arc<dyn TaskRepository>,
    clock: Arc<dyn Clock>,
    backoff: Arc<dyn BackoffPolicy>,
    defaults: ServiceDefaults,
}

impl TaskService {
    /// A service over these ports.
    pub fn new(
        repo: Arc<dyn TaskRepository>,
        clock: Arc<dyn Clock>,
        backoff: Arc<dyn BackoffPolicy>,
        defaults: ServiceDefaults,
    ) -> Self {
        Self { repo, clock, backoff, defaults }
    }

    /// The service's defaults.
    pub fn defaults(&self) -> ServiceDefaults {
        self.defaults
    }

    /// Creates a pending task with a fresh UUID v7 id.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] or [`AppError::Unexpected`] from storage.
    pub fn create(&self, request: CreateTask) -> Result<Task, AppError> {
        let task = self.new_task(request, self.clock.now());
        self.repo.insert(&task, &TaskEvent::transition(None, &task, Actor::Client))?;
        Ok(task)
    }

    /// Loads one task.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown id; storage errors.
    pub fn get(&self, id: TaskId) -> Result<Task, AppError> {
        Ok(self.repo.get(id)?)
    }

    /// One page of tasks, newest first. `cursor` is what the previous page returned.
    ///
    /// # Errors
    /// [`AppError::InvalidLimit`], [`AppError::InvalidCursor`]; storage errors.
    pub fn list(
        &self,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<TaskPage, AppError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(AppError::InvalidLimit(limit));
        }
        let after = cursor.map(|c| Cursor::decode(c).ok_or(AppError::InvalidCursor)).transpose()?;
        // One more than asked tells whether another page follows.
        let mut items = self.repo.list(filter, after, limit + 1)?;
        let has_more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = if has_more { items.last().map(Cursor::after) } else { None };
        Ok(TaskPage { items, next_cursor })
    }

    /// Starts up to `limit` runnable tasks for `worker`, highest priority and longest waiting
    /// first, each under a fresh lease. An empty list when nothing is runnable.
    ///
    /// # Errors
    /// [`AppError::InvalidClaimLimit`]; storage errors.
    pub fn claim(
        &self,
        worker: &WorkerId,
        queues: Option<Vec<QueueName>>,
        limit: u32,
        lease: Option<LeaseDuration>,
    ) -> Result<Vec<Task>, AppError> {
        if !(1..=MAX_CLAIM_BATCH).contains(&limit) {
            return Err(AppError::InvalidClaimLimit(limit));
        }
        let request = ClaimRequest {
            worker: worker.clone(),
            queues,
            limit,
            lease: lease.unwrap_or(self.defaults.lease),
            now: self.clock.now(),
        };
        Ok(self.repo.claim(&request)?)
    }

    /// Starts one named task for `worker` under a fresh lease.
    ///
    /// # Errors
    /// [`AppError::Conflict`] with [`DomainError::InvalidTransition`] or
    /// [`DomainError::NotYetRunnable`]; [`AppError::NotFound`]; storage errors.
    pub fn start(
        &self,
        id: TaskId,
        worker: &WorkerId,
        lease: Option<LeaseDuration>,
    ) -> Result<Task, AppError> {
        let lease = lease.unwrap_or(self.defaults.lease);
        self.transition(id, Actor::Worker, None, |task, now| {
            task.start(worker, new_lease_token(), lease, now).map(|()| Applied::Changed)
        })
    }

    /// Extends the live attempt's lease.
    ///
    /// # Errors
    /// [`AppError::Conflict`] with [`DomainError::StaleLease`] when `token` is not the live
    /// attempt's (the refusal is recorded), or [`DomainError::WorkerMismatch`];
    /// [`AppError::NotFound`]; storage errors.
    pub fn heartbeat(
        &self,
        id: TaskId,
        worker: Option<&WorkerId>,
        token: LeaseToken,
        lease: Option<LeaseDuration>,
    ) -> Result<Task, AppError> {
        let lease = lease.unwrap_or(self.defaults.lease);
        let stale = Some((StaleCall::Heartbeat, worker.cloned()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.heartbeat(worker, token, lease, now).map(|()| Applied::Changed)
        })
    }

    /// Records success of the running attempt. A repeat of an accepted report returns the
    /// stored task and changes nothing.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is not running, the reporter does not hold it or
    /// its token is stale (the refusal is recorded); [`AppError::NotFound`]; storage errors.
    pub fn succeed(
        &self,
        id: TaskId,
        reporter: &Reporter,
        result: Option<Value>,
    ) -> Result<Task, AppError> {
        let stale = Some((StaleCall::Succeed, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.succeed(reporter, result.clone(), now)
        })
    }

    /// Records failure of the running attempt: a retry after backoff, or failed for good.
    ///
    /// # Errors
    /// As [`TaskService::succeed`].
    pub fn fail(&self, id: TaskId, reporter: &Reporter, error: &str) -> Result<Task, AppError> {
        let backoff = self.backoff.as_ref();
        let stale = Some((StaleCall::Fail, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.fail_and_schedule_retry(reporter, error, now, backoff)
        })
    }

    /// Records the running attempt's failure as final: FAILED at once with retry state
    /// NON_RETRYABLE, whatever attempts remain.
    ///
    /// # Errors
    /// As [`TaskService::succeed`].
    pub fn fail_permanently(
        &self,
        id: TaskId,
        reporter: &Reporter,
        error: &str,
    ) -> Result<Task, AppError> {
        let stale = Some((StaleCall::Fail, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.fail_permanently(reporter, error, now)
        })
    }

    /// Hands the running attempt's task back unfinished: PENDING and runnable at once, with
    /// no failure counted (see [`Task::release`]). A repeat with the same token returns the
    /// stored task and changes nothing.
    ///
    /// # Errors
    /// As [`TaskService::succeed`]; a refusal for a stale token is recorded as a `RELEASE`.
    pub fn release(&self, id: TaskId, reporter: &Reporter) -> Result<Task, AppError> {
        let stale = Some((StaleCall::Release, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| task.release(reporter, now))
    }

    /// Creates up to [`MAX_BATCH`] tasks at once: all of them or, on any error, none.
    ///
    /// # Errors
    /// [`AppError::InvalidBatchSize`]; storage errors.
    pub fn create_batch(&self, requests: Vec<CreateTask>) -> Result<Vec<Task>, AppError> {
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(AppError::InvalidBatchSize(requests.len()));
        }
        let now = self.clock.now();
        let tasks: Vec<Task> = requests.into_iter().map(|r| self.new_task(r, now)).collect();
        let events: Vec<TaskEvent> =
            tasks.iter().map(|t| TaskEvent::transition(None, t, Actor::Client)).collect();
        self.repo.insert_many(&tasks, &events)?;
        Ok(tasks)
    }

    /// Reports up to [`MAX_BATCH`] outcomes at once, each under the fencing rules of a single
    /// report and each with its own answer, in the order given.
    ///
    /// The tasks are read in one round trip, judged by the domain, and written back in one
    /// atomic round trip with compare-and-swap on each; an item whose task changed meanwhile
    /// is retried alone. Several outcomes for one task are judged in order, so a repeat in the
    /// same batch is a replay.
    ///
    /// # Errors
    /// [`AppError::InvalidBatchSize`] or storage errors for the batch as a whole; every other
    /// error is the answer of its item.
    pub fn complete_batch(
        &self,
        items: Vec<Completion>,
    ) -> Result<Vec<Result<Task, AppError>>, AppError> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(AppError::InvalidBatchSize(items.len()));
        }
        let mut ids: Vec<TaskId> = items.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tasks: HashMap<TaskId, (u64, Task, Vec<TaskEvent>)> = self
            .repo
            .get_many(&ids)?
            .into_iter()
            .map(|t| (t.id(), (t.version(), t, Vec::new())))
            .collect();
        let now = self.clock.now();
        let mut rejections = Vec::new();
        let mut answers: Vec<Option<Result<Task, AppError>>> = Vec::with_capacity(items.len());
        for item in &items {
            let Some((_, task, events)) = tasks.get_mut(&item.id) else {
                answers.push(Some(Err(AppError::NotFound(item.id))));
                continue;
            };
            let before = task.clone();
            match self.apply_outcome(task, item, now) {
                Ok(Applied::Changed) => {
                    events.push(TaskEvent::transition(Some(&before), task, Actor::Worker));
                    answers.push(None); // known once the write is stored
                }
                Ok(Applied::Replayed) => answers.push(Some(Ok(task.clone()))),
                Err(DomainError::StaleLease(refusal)) => {
                    let call = stale_call(&item.outcome);
                    let worker = item.reporter.worker_id.clone();
                    rejections.push(TaskEvent::rejection(&before, worker, call, &refusal, now));
                    answers.push(Some(Err(DomainError::StaleLease(refusal).into())));
                }
                Err(e) => answers.push(Some(Err(e.into()))),
            }
        }
        let mut writes: Vec<TaskWrite> = tasks
            .into_values()
            .filter(|(_, _, events)| !events.is_empty())
            .map(|(expected_version, task, events)| TaskWrite { task, expected_version, events })
            .collect();
        // Rows are locked in id order whatever the order of the batch, so that two batches
        // touching the same tasks cannot deadlock.
        writes.sort_unstable_by_key(|w| w.task.id());
        let lost = if writes.is_empty() && rejections.is_empty() {
            Vec::new()
        } else {
            self.repo.write_many(&writes, &rejections)?
        };
        let stored: HashMap<TaskId, &Task> =
            writes.iter().map(|w| (w.task.id(), &w.task)).collect();
        Ok(items
            .iter()
            .zip(answers)
            .map(|(item, answer)| match answer {
                // A refusal for a stale token stands (and was recorded once, with the batch).
                Some(Err(AppError::Conflict(DomainError::StaleLease(refusal)))) => {
                    Err(DomainError::StaleLease(refusal).into())
                }
                // The task changed under the batch, so any other answer about it was judged on
                // a state that was not stored: judge each such item alone on a fresh read.
                _ if lost.contains(&item.id) => self.complete_one(item),
                Some(answer) => answer,
                None => stored
                    .get(&item.id)
                    .map(|t| (*t).clone())
                    .ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("batch lost a task"))),
            })
            .collect())
    }

    /// Cancels a pending or running task.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is already terminal; [`AppError::NotFound`];
    /// storage errors.
    pub fn cancel(&self, id: TaskId) -> Result<Task, AppError> {
        self.transition(id, Actor::Client, None, |task, now| {
            task.cancel(now).map(|()| Applied::Changed)
        })
    }

    /// Puts a failed or cancelled task back to pending with a fresh attempt budget.
    ///
    /// # Errors
    /// [`AppError::Conflict`] unless the task is failed or cancelled; [`AppError::NotFound`];
    /// storage errors.
    pub fn rerun(&self, id: TaskId) -> Result<Task, AppError> {
        self.transition(id, Actor::Client, None, |task, now| {
            task.rerun(now).map(|()| Applied::Changed)
        })
    }

    /// Fails up to `limit` running attempts whose lease expired, through the domain's rule:
    /// retry with backoff, or failed for good. Returns the tasks it failed.
    ///
    /// Safe with any number of reapers: each write is compare-and-swap on the version that
    /// was read, so an attempt heartbeated, completed or reaped elsewhere a moment before is
    /// left alone.
    ///
    /// # Errors
    /// Storage errors.
    pub fn reap_expired(&self, limit: u32) -> Result<Vec<Task>, AppError> {
        let now = self.clock.now();
        let mut reaped = Vec::new();
        for before in self.repo.expired_leases(now, limit)? {
            let mut task = before.clone();
            if task.expire_lease(now, self.backoff.as_ref()).is_err() {
                continue; // changed since it was read; the next pass sees its new state
            }
            let event = TaskEvent::transition(Some(&before), &task, Actor::Reaper);
            match self.repo.update(&task, before.version(), Some(&event)) {
                Ok(()) => reaped.push(task),
                Err(RepoError::Conflict(_) | RepoError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(reaped)
    }

    /// When the first scheduled retry or delayed task after `after` becomes runnable, if any.
    /// Long-polling claims wake up then; asking from the previous look rather than from now
    /// also finds a retry that came due in between, wherever it was scheduled.
    ///
    /// # Errors
    /// Storage errors.
    pub fn next_scheduled_run(
        &self,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, AppError> {
        Ok(self.repo.earliest_scheduled_run(after)?)
    }

    /// The service's clock: what "now" means for every rule.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A task's history, oldest first.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown task; storage errors.
    pub fn events(&self, id: TaskId) -> Result<Vec<TaskEvent>, AppError> {
        let events = self.repo.events(id)?;
        if events.is_empty() {
            // Every task has a creation event, so none means no such task.
            self.repo.get(id)?;
        }
        Ok(events)
    }

    /// How many stale calls were refused, by code and call.
    ///
    /// # Errors
    /// Storage errors.
    pub fn rejection_counts(&self) -> Result<Vec<RejectionCount>, AppError> {
        Ok(self.repo.rejection_counts()?)
    }

    /// Whether storage answers.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when it does not.
    pub fn ready(&self) -> Result<(), AppError> {
        Ok(self.repo.ping()?)
    }

    fn new_task(&self, request: CreateTask, now: DateTime<Utc>) -> Task {
        let spec = NewTask {
            queue: request.queue.unwrap_or_default(),
            name: request.name,
            payload: request.payload,
            priority: request.priority,
            max_attempts: request.max_attempts.unwrap_or(self.defaults.max_attempts),
            run_at: request.run_at,
        };
        Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, now)
    }

    fn apply_outcome(
        &self,
        task: &mut Task,
        item: &Completion,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        match &item.outcome {
            Outcome::Succeeded { result } => task.succeed(&item.reporter, result.clone(), now),
            Outcome::Failed { error, retryable: true } => {
                task.fail_and_schedule_retry(&item.reporter, error, now, self.backoff.as_ref())
            }
            Outcome::Failed { error, retryable: false } => {
                task.fail_permanently(&item.reporter, error, now)
            }
            Outcome::Released => task.release(&item.reporter, now),
        }
    }

    fn complete_one(&self, item: &Completion) -> Result<Task, AppError> {
        let stale = Some((stale_call(&item.outcome), item.reporter.worker_id.clone()));
        self.transition(item.id, Actor::Worker, stale, |task, now| {
            self.apply_outcome(task, item, now)
        })
    }

    /// Reads the task, applies one domain transition and writes it back, with its event, if
    /// nobody changed it meanwhile. A lost race is retried on a fresh read, so the caller gets
    /// the domain's verdict on the state that won rather than a bare conflict. A replayed
    /// report writes nothing. A refusal for a stale lease is recorded when `stale` says which
    /// call it was.
    fn transition(
        &self,
        id: TaskId,
        actor: Actor,
        stale: Option<(StaleCall, Option<WorkerId>)>,
        apply: impl Fn(&mut Task, DateTime<Utc>) -> Result<Applied, DomainError>,
    ) -> Result<Task, AppError> {
        for _ in 0..MAX_TRANSITION_ATTEMPTS {
            let before = self.repo.get(id)?;
            let mut task = before.clone();
            let now = self.clock.now();
            match apply(&mut task, now) {
                Ok(Applied::Replayed) => return Ok(task),
                Ok(Applied::Changed) => {}
                Err(DomainError::StaleLease(refusal)) => {
                    if let Some((call, worker)) = &stale {
                        self.record_rejection(&before, worker.clone(), *call, &refusal, now);
                    }
                    return Err(DomainError::StaleLease(refusal).into());
                }
                Err(e) => return Err(e.into()),
            }
            // Heartbeats only move the lease: keeping them out of the history keeps it readable.
            let event = (before.status() != task.status() || before.attempt() != task.attempt())
                .then(|| TaskEvent::transition(Some(&before), &task, actor));
            match self.repo.update(&task, before.version(), event.as_ref()) {
                Ok(()) => return Ok(task),
                Err(RepoError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::ConcurrentModification(id))
    }

    fn record_rejection(
        &self,
        task: &Task,
        worker: Option<WorkerId>,
        call: StaleCall,
        refusal: &taskpilot_domain::StaleLease,
        now: DateTime<Utc>,
    ) {
        let event = TaskEvent::rejection(task, worker, call, refusal, now);
        // The caller's answer is the refusal either way; a lost record only costs a count.
        if let Err(e) = self.repo.record_rejection(&event) {
            tracing::warn!(task.id = %task.id(), error = %e, "could not record a refused stale call");
        }
    }
}

fn stale_call(outcome: &Outcome) -> StaleCall {
    match outcome {
        Outcome::Succeeded { .. } => StaleCall::Succeed,
        Outcome::Failed { .. } => StaleCall::Fail,
        Outcome::Released => StaleCall::Release,
    }
}

/// A fresh, unguessable lease token.
fn new_lease_token() -> LeaseToken {
    LeaseToken::from_uuid(Uuid::new_v4())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;

    use chrono::{TimeDelta, TimeZone};
    use mockall::{predicate::eq, Sequence};
    use serde_json::json;
    use taskpilot_domain::{
        Action, AttemptEnd, FixedBackoff, FixedClock, Lease, RetryState, StaleLease, TaskName,
        TaskStatus,
    };

    use super::*;
    use crate::{MockTaskRepository, Rejection};

    const DEFAULT_MAX_ATTEMPTS: i64 = 25;
    const DEFAULT_LEASE_SECS: i64 = 300;
    const BACKOFF: TimeDelta = TimeDelta::seconds(30);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    /// What the service's clock says: a minute after the stored tasks were created.
    fn now() -> DateTime<Utc> {
        t0() + TimeDelta::seconds(60)
    }

    fn id() -> TaskId {
        task_id(1)
    }

    fn task_id(n: u128) -> TaskId {
        TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId::parse(name).unwrap()
    }

    fn queue(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    fn lease(secs: i64) -> LeaseDuration {
        LeaseDuration::from_secs(secs).unwrap()
    }

    /// The token of the live attempt of [`running`] and of the attempt [`succeeded`] ended.
    fn live_token() -> LeaseToken {
        LeaseToken::from_uuid(Uuid::from_u128(0xa1))
    }

    /// The token of an attempt that ended before the live one.
    fn old_token() -> LeaseToken {
        LeaseToken::from_uuid(Uuid::from_u128(0x0d))
    }

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            max_attempts: MaxAttempts::new(DEFAULT_MAX_ATTEMPTS).unwrap(),
            lease: lease(DEFAULT_LEASE_SECS),
        }
    }

    fn service(repo: MockTaskRepository) -> TaskService {
        TaskService::new(
            Arc::new(repo),
            Arc::new(FixedClock::new(now())),
            Arc::new(FixedBackoff(BACKOFF)),
            defaults(),
        )
    }

    fn new_task(id: TaskId, max_attempts: i64, created_at: DateTime<Utc>) -> Task {
        let spec = NewTask {
            queue: QueueName::default_queue(),
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": "ada@example.com"}),
            priority: 0,
            max_attempts: MaxAttempts::new(max_attempts).unwrap(),
            run_at: None,
        };
        Task::new(id, spec, created_at)
    }

    fn pending() -> Task {
        new_task(id(), 3, t0())
    }

    /// Attempt 1, held by `w1` with [`live_token`] until well after [`now`].
    fn running() -> Task {
        let mut task = pending();
        task.start(&worker("w1"), live_token(), defaults().lease, t0()).unwrap();
        task
    }

    /// Running its last attempt (attempt 2): the next failure is final.
    fn running_last_attempt() -> Task {
        let mut task = new_task(id(), 2, t0());
        task.start(&worker("w1"), old_token(), defaults().lease, t0()).unwrap();
        task.fail_and_schedule_retry(
            &Reporter::anyone(),
            "first",
            t0(),
            &FixedBackoff(TimeDelta::zero()),
        )
        .unwrap();
        task.start(&worker("w1"), live_token(), defaults().lease, t0()).unwrap();
        task
    }

    fn failed() -> Task {
        let mut task = running_last_attempt();
        task.fail_and_schedule_retry(&Reporter::anyone(), "second", t0(), &FixedBackoff(BACKOFF))
            .unwrap();
        task
    }

    /// Succeeded by the attempt of [`live_token`].
    fn succeeded() -> Task {
        let mut task = running();
        task.succeed(&Reporter::lease(Some(worker("w1")), live_token()), None, t0()).unwrap();
        task
    }

    fn cancelled() -> Task {
        let mut task = pending();
        task.cancel(t0()).unwrap();
        task
    }

    /// Attempt 1 of `id`, started by `w1` at [`t0`] with [`old_token`] and a 30 s lease: expired
    /// by [`now`].
    fn expired(id: TaskId, max_attempts: i64) -> Task {
        let mut task = new_task(id, max_attempts, t0());
        task.start(&worker("w1"), old_token(), lease(30), t0()).unwrap();
        task
    }

    /// Attempt 1 (of [`old_token`]) was reaped; the retry is pending.
    fn reaped() -> Task {
        let mut task = expired(id(), 3);
        task.expire_lease(t0() + TimeDelta::seconds(30), &FixedBackoff(TimeDelta::zero())).unwrap();
        task
    }

    /// Attempt 1 (of [`old_token`]) was reaped; attempt 2 runs with [`live_token`].
    fn reaped_and_restarted() -> Task {
        let mut task = reaped();
        task.start(&worker("w2"), live_token(), defaults().lease, t0() + TimeDelta::seconds(30))
            .unwrap();
        task
    }

    /// Attempt 1 (of [`live_token`]) was running when a client cancelled the task.
    fn cancelled_while_running() -> Task {
        let mut task = running();
        task.cancel(t0()).unwrap();
        task
    }

    /// Attempt 1 (of [`live_token`]) reported failure; the retry is pending.
    fn failed_once() -> Task {
        let mut task = running();
        task.fail_and_schedule_retry(
            &Reporter::lease(Some(worker("w1")), live_token()),
            "boom",
            t0(),
            &FixedBackoff(BACKOFF),
        )
        .unwrap();
        task
    }

    fn expect_get(repo: &mut MockTaskRepository, task: &Task) {
        let stored = task.clone();
        repo.expect_get().with(eq(task.id())).times(1).returning(move |_| Ok(stored.clone()));
    }

    fn unavailable() -> RepoError {
        RepoError::Unavailable(anyhow::anyhow!("connection refused"))
    }

    fn create_request() -> CreateTask {
        CreateTask {
            queue: None,
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": "ada@example.com"}),
            priority: 5,
            max_attempts: None,
            run_at: None,
        }
    }

    /// The event a transition of [`id`] from `from` to `to` by worker `w1` records at [`now`];
    /// tests adjust the fields that differ.
    fn transition(attempt: u32, from: TaskStatus, to: TaskStatus) -> TaskEvent {
        TaskEvent {
            task_id: id(),
            attempt,
            from: Some(from),
            to,
            worker_id: Some(worker("w1")),
            error: None,
            actor: Actor::Worker,
            rejected: None,
            at: now(),
        }
    }

    /// The event that records a refused stale `call` by `w1` on `stored`, refused with
    /// `refusal`.
    fn rejection(stored: &Task, call: StaleCall, refusal: &StaleLease) -> TaskEvent {
        TaskEvent {
            task_id: stored.id(),
            attempt: stored.attempt(),
            from: Some(stored.status()),
            to: stored.status(),
            worker_id: Some(worker("w1")),
            error: Some(refusal.to_string()),
            actor: Actor::Worker,
            rejected: Some(Rejection { code: refusal.code().to_owned(), call }),
            at: now(),
        }
    }

    // --- create -----------------------------------------------------------------------------

    #[test]
    fn create_applies_the_default_max_attempts_and_inserts_exactly_once() {
        let inserted = Arc::new(Mutex::new(None));
        let mut repo = MockTaskRepository::new();
        let sink = Arc::clone(&inserted);
        repo.expect_insert()
            .withf(|t, _| {
                t.max_attempts().get() == 25
                    && t.status() == TaskStatus::Pending
                    && t.name().as_str() == "send-email"
                    && t.payload() == &json!({"to": "ada@example.com"})
                    && t.priority() == 5
                    && t.created_at() == now()
                    && t.version() == 1
                    && t.attempt() == 0
            })
            .times(1)
            .returning(move |t, _| {
                *sink.lock().unwrap() = Some(t.clone());
                Ok(())
            });

        let task = service(repo).create(create_request()).unwrap();

        assert_eq!(inserted.lock().unwrap().as_ref(), Some(&task), "returns what it stored");
        assert_eq!(task.id().as_uuid().get_version_num(), 7, "ids are UUID v7");
        assert_eq!(task.next_run_at(), None);
    }

    #[test]
    fn create_defaults_the_queue_to_default_and_records_a_client_creation_event() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(|t, e| {
                t.queue().as_str() == "default"
                    && *e
                        == TaskEvent {
                            task_id: t.id(),
                            attempt: 0,
                            from: None,
                            to: TaskStatus::Pending,
                            worker_id: None,
                            error: None,
                            actor: Actor::Client,
                            rejected: None,
                            at: now(),
                        }
            })
            .times(1)
            .returning(|_, _| Ok(()));

        let task = service(repo).create(create_request()).unwrap();

        assert_eq!(task.queue(), &QueueName::default_queue());
    }

    #[test]
    fn create_keeps_the_queue_asked_for() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(|t, _| t.queue().as_str() == "emails")
            .times(1)
            .returning(|_, _| Ok(()));
        let request = CreateTask { queue: Some(queue("emails")), ..create_request() };

        let task = service(repo).create(request).unwrap();

        assert_eq!(task.queue(), &queue("emails"));
    }

    #[test]
    fn create_keeps_an_explicit_max_attempts_and_a_future_run_at() {
        let run_at = now() + TimeDelta::seconds(600);
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(move |t, e| {
                t.max_attempts().get() == 3
                    && t.next_run_at() == Some(run_at)
                    && e.from.is_none()
                    && e.to == TaskStatus::Pending
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let request = CreateTask {
            max_attempts: Some(MaxAttempts::new(3).unwrap()),
            run_at: Some(run_at),
            ..create_request()
        };

        let task = service(repo).create(request).unwrap();

        assert_eq!(task.max_attempts().get(), 3);
        assert_eq!(task.next_run_at(), Some(run_at));
    }

    #[test]
    fn create_gives_every_task_a_fresh_id() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert().withf(|t, e| e.task_id == t.id()).times(2).returning(|_, _| Ok(()));
        let service = service(repo);

        let first = service.create(create_request()).unwrap();
        let second = service.create(create_request()).unwrap();

        assert_ne!(first.id(), second.id());
    }

    #[test]
    fn create_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert().times(1).returning(|_, _| Err(unavailable()));

        let outcome = service(repo).create(create_request());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn create_reports_unexpected_storage_errors() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .times(1)
            .returning(|_, _| Err(RepoError::Unexpected(anyhow::anyhow!("bad row"))));

        let outcome = service(repo).create(create_request());

        assert!(matches!(outcome, Err(AppError::Unexpected(_))), "{outcome:?}");
    }

    // --- get --------------------------------------------------------------------------------

    #[test]
    fn get_returns_the_stored_task() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());

        let task = service(repo).get(id()).unwrap();

        assert_eq!(task, running());
    }

    #[test]
    fn get_of_an_unknown_task_is_not_found() {
        let mut repo = MockTaskRepository::new();
        repo.expect_get().with(eq(id())).times(1).returning(|id| Err(RepoError::NotFound(id)));

        let outcome = service(repo).get(id());

        assert!(matches!(outcome, Err(AppError::NotFound(i)) if i == id()), "{outcome:?}");
    }

    #[test]
    fn get_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_get().times(1).returning(|_| Err(unavailable()));

        let outcome = service(repo).get(id());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- list -------------------------------------------------------------------------------

    /// `n` tasks, newest first, one second apart.
    fn newest_first(n: u32) -> Vec<Task> {
        (0..n)
            .map(|i| {
                let created_at = t0() - TimeDelta::seconds(i64::from(i));
                new_task(TaskId::from_uuid(Uuid::from_u128(u128::from(1000 - i))), 3, created_at)
            })
            .collect()
    }

    #[test]
    fn list_asks_for_one_more_than_the_default_page_size() {
        let mut repo = MockTaskRepository::new();
        repo.expect_list()
            .withf(|filter, after, limit| {
                filter == &TaskFilter::default() && after.is_none() && *limit == 51
            })
            .times(1)
            .returning(|_, _, _| Ok(newest_first(50)));

        let page = service(repo).list(&TaskFilter::default(), None, None).unwrap();

        assert_eq!(page.items, newest_first(50));
        assert_eq!(page.next_cursor, None, "exactly one page: no next cursor");
    }

    #[test]
    fn list_returns_a_next_cursor_only_when_one_more_task_exists() {
        let mut repo = MockTaskRepository::new();
        repo.expect_list()
            .withf(|_, _, limit| *limit == 4)
            .times(1)
            .returning(|_, _, _| Ok(newest_first(4)));

        let page = service(repo).list(&TaskFilter::default(), None, Some(3)).unwrap();

        assert_eq!(page.items, newest_first(3));
        assert_eq!(page.next_cursor, Some(Cursor::after(&newest_first(3)[2])));
    }

    #[test]
    fn list_of_a_short_last_page_has_no_next_cursor() {
        let mut repo = MockTaskRepository::new();
        repo.expect_list().times(1).returning(|_, _, _| Ok(newest_first(2)));

        let page = service(repo).list(&TaskFilter::default(), None, Some(3)).unwrap();

        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn list_accepts_page_sizes_from_1_to_500() {
        for limit in [1, MAX_PAGE_SIZE] {
            let mut repo = MockTaskRepository::new();
            repo.expect_list()
                .withf(move |_, _, asked| *asked == limit + 1)
                .times(1)
                .returning(|_, _, _| Ok(Vec::new()));

            let page = service(repo).list(&TaskFilter::default(), None, Some(limit)).unwrap();

            assert_eq!(page, TaskPage { items: Vec::new(), next_cursor: None });
        }
    }

    #[test]
    fn list_refuses_a_page_size_of_0_or_over_500_without_asking_storage() {
        for limit in [0, MAX_PAGE_SIZE + 1, u32::MAX] {
            let mut repo = MockTaskRepository::new();
            repo.expect_list().never();

            let outcome = service(repo).list(&TaskFilter::default(), None, Some(limit));

            assert!(matches!(outcome, Err(AppError::InvalidLimit(l)) if l == limit), "{limit}");
        }
    }

    #[test]
    fn list_refuses_a_cursor_it_did_not_hand_out_without_asking_storage() {
        for cursor in ["", "abc", "not-a-cursor-at-all-not-a-cursor-at-all-not-a-cu"] {
            let mut repo = MockTaskRepository::new();
            repo.expect_list().never();

            let outcome = service(repo).list(&TaskFilter::default(), Some(cursor), None);

            assert!(matches!(outcome, Err(AppError::InvalidCursor)), "{cursor:?}");
        }
    }

    #[test]
    fn list_passes_the_filter_and_the_decoded_cursor_to_storage() {
        let cursor = Cursor::after(&newest_first(3)[2]);
        let filter = TaskFilter {
            queue: Some(queue("emails")),
            status: Some(TaskStatus::Failed),
            name: Some(TaskName::parse("send-email").unwrap()),
        };
        let expected_filter = filter.clone();
        let mut repo = MockTaskRepository::new();
        repo.expect_list()
            .withf(move |f, after, limit| {
                f == &expected_filter && *after == Some(cursor) && *limit == 11
            })
            .times(1)
            .returning(|_, _, _| Ok(Vec::new()));

        let page = service(repo).list(&filter, Some(&cursor.encode()), Some(10)).unwrap();

        assert!(page.items.is_empty());
    }

    #[test]
    fn list_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_list().times(1).returning(|_, _, _| Err(unavailable()));

        let outcome = service(repo).list(&TaskFilter::default(), None, None);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- claim ------------------------------------------------------------------------------

    #[test]
    fn claim_refuses_a_limit_of_0_or_over_100_without_asking_storage() {
        for limit in [0, MAX_CLAIM_BATCH + 1, u32::MAX] {
            let mut repo = MockTaskRepository::new();
            repo.expect_claim().never();

            let outcome = service(repo).claim(&worker("w1"), None, limit, None);

            assert!(
                matches!(outcome, Err(AppError::InvalidClaimLimit(l)) if l == limit),
                "{limit}: {outcome:?}"
            );
        }
    }

    #[test]
    fn claim_passes_worker_queues_limit_default_lease_and_the_clock_to_storage() {
        let claimed = vec![running(), expired(task_id(2), 3)];
        let returned = claimed.clone();
        let mut repo = MockTaskRepository::new();
        repo.expect_claim()
            .withf(|r| {
                *r == ClaimRequest {
                    worker: worker("w1"),
                    queues: Some(vec![queue("emails"), queue("sms")]),
                    limit: 10,
                    lease: lease(DEFAULT_LEASE_SECS),
                    now: now(),
                }
            })
            .times(1)
            .returning(move |_| Ok(returned.clone()));

        let tasks = service(repo)
            .claim(&worker("w1"), Some(vec![queue("emails"), queue("sms")]), 10, None)
            .unwrap();

        assert_eq!(tasks, claimed, "returns what storage claimed");
    }

    #[test]
    fn claim_accepts_limits_from_1_to_100_and_passes_the_lease_asked_for() {
        for limit in [1, MAX_CLAIM_BATCH] {
            let mut repo = MockTaskRepository::new();
            repo.expect_claim()
                .withf(move |r| r.limit == limit && r.lease == lease(60) && r.queues.is_none())
                .times(1)
                .returning(|_| Ok(Vec::new()));

            let tasks = service(repo).claim(&worker("w1"), None, limit, Some(lease(60))).unwrap();

            assert!(tasks.is_empty(), "nothing runnable: an empty list");
        }
    }

    #[test]
    fn claim_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_claim().times(1).returning(|_| Err(unavailable()));

        let outcome = service(repo).claim(&worker("w1"), None, 1, None);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- transitions ------------------------------------------------------------------------

    #[test]
    fn start_saves_the_running_task_against_the_version_it_read() {
        let stored = pending();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version, e| {
                *expected_version == 1
                    && t.version() == 2
                    && t.status() == TaskStatus::Running
                    && t.attempt() == 1
                    && t.worker_id() == Some(&worker("w1"))
                    && t.processing_started_at() == Some(now())
                    && t.updated_at() == now()
                    && *e == Some(&transition(1, TaskStatus::Pending, TaskStatus::Running))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).start(id(), &worker("w1"), None).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.version(), 2);
    }

    #[test]
    fn start_uses_the_default_lease_when_none_is_given() {
        for (asked, expires_at) in [
            (None, now() + TimeDelta::seconds(DEFAULT_LEASE_SECS)),
            (Some(lease(60)), now() + TimeDelta::seconds(60)),
        ] {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &pending());
            repo.expect_update()
                .withf(move |t, _, _| t.lease().is_some_and(|l| l.expires_at == expires_at))
                .times(1)
                .returning(|_, _, _| Ok(()));

            let task = service(repo).start(id(), &worker("w1"), asked).unwrap();

            assert_eq!(task.lease().unwrap().expires_at, expires_at, "{asked:?}");
        }
    }

    #[test]
    fn start_gives_every_attempt_a_fresh_token() {
        let saved = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&saved);
        let stored = pending();
        let mut repo = MockTaskRepository::new();
        repo.expect_get().times(2).returning(move |_| Ok(stored.clone()));
        repo.expect_update().times(2).returning(move |t, _, _| {
            sink.lock().unwrap().push(t.lease().unwrap().token);
            Ok(())
        });
        let service = service(repo);

        let first = service.start(id(), &worker("w1"), None).unwrap();
        let second = service.start(id(), &worker("w1"), None).unwrap();

        let (first, second) = (first.lease().unwrap().token, second.lease().unwrap().token);
        assert_ne!(first, second);
        assert_eq!(*saved.lock().unwrap(), vec![first, second], "returns the token it stored");
    }

    #[test]
    fn succeed_saves_the_result_against_the_version_it_read() {
        let stored = running();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version, e| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Succeeded
                    && t.result() == Some(&json!({"sent": true}))
                    && t.completed_at() == Some(now())
                    && *e == Some(&transition(1, TaskStatus::Running, TaskStatus::Succeeded))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).succeed(
            id(),
            &Reporter::worker(worker("w1")),
            Some(json!({"sent": true})),
        );

        assert_eq!(task.unwrap().status(), TaskStatus::Succeeded);
    }

    #[test]
    fn succeed_with_the_live_token_saves_the_success_and_records_no_rejection() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());
        repo.expect_update()
            .withf(|t, v, e| {
                *v == 2
                    && t.last_ended().map(|e| (e.token, e.end))
                        == Some((live_token(), AttemptEnd::Succeeded))
                    && *e == Some(&transition(1, TaskStatus::Running, TaskStatus::Succeeded))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
        repo.expect_record_rejection().never();

        let task =
            service(repo).succeed(id(), &Reporter::lease(Some(worker("w1")), live_token()), None);

        assert_eq!(task.unwrap().status(), TaskStatus::Succeeded);
    }

    #[test]
    fn fail_saves_a_retry_after_the_backoff_against_the_version_it_read() {
        let stored = running();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version, e| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Pending
                    && t.retry_state() == RetryState::RetryScheduled
                    && t.attempt_count() == 1
                    && t.next_run_at() == Some(now() + BACKOFF)
                    && t.last_error() == Some("smtp timeout")
                    && t.worker_id().is_none()
                    && *e
                        == Some(&TaskEvent {
                            error: Some("smtp timeout".to_owned()),
                            ..transition(1, TaskStatus::Running, TaskStatus::Pending)
                        })
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).fail(id(), &Reporter::anyone(), "smtp timeout").unwrap();

        assert_eq!(task.next_run_at(), Some(now() + BACKOFF));
    }

    #[test]
    fn fail_on_the_last_attempt_saves_the_task_as_failed_for_good() {
        let stored = running_last_attempt();
        let read_version = stored.version();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(move |t, expected_version, e| {
                *expected_version == read_version
                    && t.status() == TaskStatus::Failed
                    && t.retry_state() == RetryState::Exhausted
                    && t.completed_at() == Some(now())
                    && *e
                        == Some(&TaskEvent {
                            error: Some("again".to_owned()),
                            ..transition(2, TaskStatus::Running, TaskStatus::Failed)
                        })
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).fail(id(), &Reporter::worker(worker("w1")), "again").unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
    }

    #[test]
    fn cancel_saves_the_cancelled_task_against_the_version_it_read() {
        for (stored, holder) in [(pending(), None), (running(), Some(worker("w1")))] {
            let read_version = stored.version();
            let event = TaskEvent {
                worker_id: holder,
                actor: Actor::Client,
                ..transition(stored.attempt(), stored.status(), TaskStatus::Cancelled)
            };
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update()
                .withf(move |t, expected_version, e| {
                    *expected_version == read_version
                        && t.version() == read_version + 1
                        && t.status() == TaskStatus::Cancelled
                        && t.completed_at() == Some(now())
                        && *e == Some(&event)
                })
                .times(1)
                .returning(|_, _, _| Ok(()));

            let task = service(repo).cancel(id()).unwrap();

            assert_eq!(task.status(), TaskStatus::Cancelled);
        }
    }

    #[test]
    fn rerun_saves_a_fresh_pending_task_against_the_version_it_read() {
        for stored in [failed(), cancelled()] {
            let read_version = stored.version();
            let event = TaskEvent {
                worker_id: None,
                actor: Actor::Client,
                ..transition(stored.attempt(), stored.status(), TaskStatus::Pending)
            };
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update()
                .withf(move |t, expected_version, e| {
                    *expected_version == read_version
                        && t.version() == read_version + 1
                        && t.status() == TaskStatus::Pending
                        && t.attempt_count() == 0
                        && t.retry_state() == RetryState::None
                        && t.next_run_at().is_none()
                        && *e == Some(&event)
                })
                .times(1)
                .returning(|_, _, _| Ok(()));

            let task = service(repo).rerun(id()).unwrap();

            assert_eq!(task.status(), TaskStatus::Pending);
        }
    }

    type UseCase = fn(&TaskService) -> Result<Task, AppError>;

    fn use_cases() -> [(Action, UseCase); 6] {
        [
            (Action::Start, |s| s.start(id(), &worker("w2"), None)),
            (Action::Succeed, |s| s.succeed(id(), &Reporter::anyone(), None)),
            (Action::Fail, |s| s.fail(id(), &Reporter::anyone(), "boom")),
            (Action::Cancel, |s| s.cancel(id())),
            (Action::Rerun, |s| s.rerun(id())),
            (Action::Release, |s| s.release(id(), &Reporter::anyone())),
        ]
    }

    #[test]
    fn a_transition_the_domain_refuses_is_a_conflict_and_never_saved() {
        let refused = [
            (Action::Start, running()),
            (Action::Succeed, pending()),
            (Action::Fail, succeeded()),
            (Action::Cancel, failed()),
            (Action::Rerun, pending()),
            (Action::Release, cancelled()),
        ];
        for ((action, use_case), (refused_action, stored)) in use_cases().into_iter().zip(refused) {
            assert_eq!(action, refused_action);
            let from = stored.status();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();
            repo.expect_record_rejection().never();

            let outcome = use_case(&service(repo));

            assert!(
                matches!(
                    &outcome,
                    Err(AppError::Conflict(DomainError::InvalidTransition { task, from: f, action: a }))
                        if *task == id() && *f == from && *a == action
                ),
                "{action} from {from}: {outcome:?}"
            );
        }
    }

    #[test]
    fn an_early_start_is_a_conflict_saying_when_the_task_becomes_runnable() {
        let mut stored = running();
        stored
            .fail_and_schedule_retry(&Reporter::anyone(), "boom", now(), &FixedBackoff(BACKOFF))
            .unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();

        let outcome = service(repo).start(id(), &worker("w1"), None);

        assert!(
            matches!(
                outcome,
                Err(AppError::Conflict(DomainError::NotYetRunnable { runnable_at, .. }))
                    if runnable_at == now() + BACKOFF
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_report_from_another_worker_is_a_conflict_and_never_saved() {
        let reports: [UseCase; 6] = [
            |s| s.succeed(id(), &Reporter::worker(worker("w2")), None),
            |s| s.fail(id(), &Reporter::worker(worker("w2")), "boom"),
            |s| s.release(id(), &Reporter::worker(worker("w2"))),
            |s| s.release(id(), &Reporter::lease(Some(worker("w2")), live_token())),
            |s| s.succeed(id(), &Reporter::lease(Some(worker("w2")), live_token()), None),
            |s| s.heartbeat(id(), Some(&worker("w2")), live_token(), None),
        ];
        for report in reports {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &running());
            repo.expect_update().never();
            repo.expect_record_rejection().never();

            let outcome = report(&service(repo));

            assert!(
                matches!(
                    &outcome,
                    Err(AppError::Conflict(DomainError::WorkerMismatch { holder, caller, .. }))
                        if *holder == worker("w1") && *caller == worker("w2")
                ),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_lost_race_is_judged_again_on_the_state_that_won() {
        let mut won = pending();
        won.start(&worker("w9"), old_token(), defaults().lease, t0()).unwrap();
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        let first = pending();
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(first.clone()));
        repo.expect_update()
            .withf(|_, v, _| *v == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|t, _, _| Err(RepoError::Conflict(t.id())));
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(won.clone()));

        let outcome = service(repo).start(id(), &worker("w1"), None);

        assert!(
            matches!(
                outcome,
                Err(AppError::Conflict(DomainError::InvalidTransition {
                    from: TaskStatus::Running,
                    action: Action::Start,
                    ..
                }))
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_lost_race_that_still_allows_the_transition_is_retried_on_the_new_version() {
        // Someone cancelled and reran the task meanwhile: it is pending again, two versions on.
        let mut moved_on = pending();
        moved_on.cancel(t0()).unwrap();
        moved_on.rerun(t0()).unwrap();
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        let first = pending();
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(first.clone()));
        repo.expect_update()
            .withf(|_, v, _| *v == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|t, _, _| Err(RepoError::Conflict(t.id())));
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(moved_on.clone()));
        repo.expect_update()
            .withf(|t, v, e| {
                *v == 3
                    && t.version() == 4
                    && t.status() == TaskStatus::Running
                    && *e == Some(&transition(1, TaskStatus::Pending, TaskStatus::Running))
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).start(id(), &worker("w1"), None).unwrap();

        assert_eq!(task.version(), 4);
    }

    #[test]
    fn three_conflicts_in_a_row_give_up_with_concurrent_modification() {
        for (action, use_case) in use_cases() {
            let stored = match action {
                Action::Start | Action::Cancel => pending(),
                Action::Succeed | Action::Fail | Action::Release => running(),
                _ => failed(),
            };
            let mut repo = MockTaskRepository::new();
            repo.expect_get().times(3).returning(move |_| Ok(stored.clone()));
            repo.expect_update().times(3).returning(|t, _, _| Err(RepoError::Conflict(t.id())));

            let outcome = use_case(&service(repo));

            assert!(
                matches!(outcome, Err(AppError::ConcurrentModification(i)) if i == id()),
                "{action}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_transition_on_an_unknown_task_is_not_found() {
        for (action, use_case) in use_cases() {
            let mut repo = MockTaskRepository::new();
            repo.expect_get().with(eq(id())).times(1).returning(|id| Err(RepoError::NotFound(id)));
            repo.expect_update().never();

            let outcome = use_case(&service(repo));

            assert!(
                matches!(outcome, Err(AppError::NotFound(i)) if i == id()),
                "{action}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_transition_while_storage_is_down_is_unavailable() {
        for (action, use_case) in use_cases() {
            let mut repo = MockTaskRepository::new();
            repo.expect_get().times(1).returning(|_| Err(unavailable()));
            repo.expect_update().never();

            let outcome = use_case(&service(repo));

            assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{action}: {outcome:?}");
        }
    }

    #[test]
    fn a_save_that_fails_for_another_reason_than_a_conflict_is_not_retried() {
        type Case = (fn() -> RepoError, fn(&AppError) -> bool);
        let cases: [Case; 3] = [
            (unavailable, |e| matches!(e, AppError::Unavailable(_))),
            (|| RepoError::NotFound(id()), |e| matches!(e, AppError::NotFound(i) if *i == id())),
            (
                || RepoError::Unexpected(anyhow::anyhow!("bad row")),
                |e| matches!(e, AppError::Unexpected(_)),
            ),
        ];
        for (error, expected) in cases {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &pending());
            repo.expect_update().times(1).returning(move |_, _, _| Err(error()));

            let outcome = service(repo).start(id(), &worker("w1"), None);

            assert!(outcome.as_ref().is_err_and(expected), "{outcome:?}");
        }
    }

    #[test]
    fn a_save_while_storage_is_down_is_unavailable() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());
        repo.expect_update().times(1).returning(|_, _, _| Err(unavailable()));

        let outcome = service(repo).cancel(id());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- heartbeat --------------------------------------------------------------------------

    #[test]
    fn heartbeat_with_the_live_token_extends_the_lease_without_an_event() {
        for (asked, expires_at) in [
            (None, now() + TimeDelta::seconds(DEFAULT_LEASE_SECS)),
            (Some(lease(600)), now() + TimeDelta::seconds(600)),
        ] {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &running());
            repo.expect_update()
                .withf(move |t, v, e| {
                    *v == 2
                        && t.version() == 3
                        && t.status() == TaskStatus::Running
                        && t.attempt() == 1
                        && t.lease() == Some(&Lease { token: live_token(), expires_at })
                        && e.is_none()
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
            repo.expect_record_rejection().never();

            let task =
                service(repo).heartbeat(id(), Some(&worker("w1")), live_token(), asked).unwrap();

            assert_eq!(task.lease().unwrap().expires_at, expires_at, "{asked:?}");
        }
    }

    #[test]
    fn heartbeat_with_a_stale_token_records_one_rejection_and_is_a_conflict_without_saving() {
        let cases = [
            (reaped(), old_token(), StaleLease::LeaseExpired { task: id(), attempt: 1 }),
            (
                reaped_and_restarted(),
                old_token(),
                StaleLease::AttemptSuperseded { task: id(), current: 2 },
            ),
            (
                cancelled_while_running(),
                live_token(),
                StaleLease::TaskCancelled { task: id(), attempt: 1 },
            ),
        ];
        for (stored, token, refusal) in cases {
            let event = rejection(&stored, StaleCall::Heartbeat, &refusal);
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();
            repo.expect_record_rejection()
                .withf(move |e| *e == event)
                .times(1)
                .returning(|_| Ok(()));

            let outcome = service(repo).heartbeat(id(), Some(&worker("w1")), token, None);

            assert!(
                matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
                "{}: {outcome:?}",
                refusal.code()
            );
        }
    }

    // --- fencing of reports -----------------------------------------------------------------

    #[test]
    fn a_replayed_success_returns_the_stored_task_without_saving_or_recording() {
        let stored = succeeded();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo)
            .succeed(id(), &Reporter::lease(Some(worker("w1")), live_token()), None)
            .unwrap();

        assert_eq!(task, stored);
    }

    #[test]
    fn a_replayed_failure_returns_the_stored_task_without_saving_or_recording() {
        let stored = failed_once();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo)
            .fail(id(), &Reporter::lease(Some(worker("w1")), live_token()), "boom")
            .unwrap();

        assert_eq!(task, stored);
    }

    #[test]
    fn a_stale_success_records_a_succeed_rejection_and_is_a_conflict_without_saving() {
        let cases = [
            (reaped(), old_token(), StaleLease::LeaseExpired { task: id(), attempt: 1 }),
            (
                reaped_and_restarted(),
                old_token(),
                StaleLease::AttemptSuperseded { task: id(), current: 2 },
            ),
            (
                cancelled_while_running(),
                live_token(),
                StaleLease::TaskCancelled { task: id(), attempt: 1 },
            ),
            (
                failed_once(),
                live_token(),
                StaleLease::OutcomeConflict {
                    task: id(),
                    attempt: 1,
                    recorded: AttemptEnd::Failed,
                },
            ),
        ];
        for (stored, token, refusal) in cases {
            let event = rejection(&stored, StaleCall::Succeed, &refusal);
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();
            repo.expect_record_rejection()
                .withf(move |e| *e == event)
                .times(1)
                .returning(|_| Ok(()));

            let outcome =
                service(repo).succeed(id(), &Reporter::lease(Some(worker("w1")), token), None);

            assert!(
                matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
                "{}: {outcome:?}",
                refusal.code()
            );
        }
    }

    #[test]
    fn a_stale_failure_records_a_fail_rejection_and_is_a_conflict_without_saving() {
        let stored = reaped_and_restarted();
        let refusal = StaleLease::AttemptSuperseded { task: id(), current: 2 };
        let event = rejection(&stored, StaleCall::Fail, &refusal);
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().withf(move |e| *e == event).times(1).returning(|_| Ok(()));

        let outcome =
            service(repo).fail(id(), &Reporter::lease(Some(worker("w1")), old_token()), "late");

        assert!(
            matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_stale_call_is_still_refused_when_recording_the_rejection_fails() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &reaped());
        repo.expect_update().never();
        repo.expect_record_rejection().times(1).returning(|_| Err(unavailable()));

        let outcome =
            service(repo).succeed(id(), &Reporter::lease(Some(worker("w1")), old_token()), None);

        assert!(
            matches!(
                &outcome,
                Err(AppError::Conflict(DomainError::StaleLease(StaleLease::LeaseExpired { .. })))
            ),
            "the worker gets the 409, not the storage error: {outcome:?}"
        );
    }

    // --- reaper -----------------------------------------------------------------------------

    #[test]
    fn reap_expired_fails_each_expired_task_through_the_domain_with_a_reaper_event() {
        // One with attempts left goes back to pending, one on its last attempt fails for good.
        let (retried, exhausted) = (expired(task_id(1), 3), expired(task_id(2), 1));
        let found = vec![retried.clone(), exhausted.clone()];
        let reaper_event = |task_id, to| TaskEvent {
            task_id,
            error: Some("lease expired (worker w1)".to_owned()),
            actor: Actor::Reaper,
            ..transition(1, TaskStatus::Running, to)
        };
        let (to_retry, to_fail) = (
            reaper_event(task_id(1), TaskStatus::Pending),
            reaper_event(task_id(2), TaskStatus::Failed),
        );
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases()
            .withf(|at, limit| *at == now() && *limit == 10)
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_, _| Ok(found.clone()));
        repo.expect_update()
            .withf(move |t, v, e| {
                t.id() == task_id(1)
                    && *v == 2
                    && t.status() == TaskStatus::Pending
                    && t.next_run_at() == Some(now() + BACKOFF)
                    && *e == Some(&to_retry)
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));
        repo.expect_update()
            .withf(move |t, v, e| {
                t.id() == task_id(2)
                    && *v == 2
                    && t.status() == TaskStatus::Failed
                    && *e == Some(&to_fail)
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));

        let reaped = service(repo).reap_expired(10).unwrap();

        let summary: Vec<_> = reaped.iter().map(|t| (t.id(), t.status(), t.last_error())).collect();
        assert_eq!(
            summary,
            [
                (task_id(1), TaskStatus::Pending, Some("lease expired (worker w1)")),
                (task_id(2), TaskStatus::Failed, Some("lease expired (worker w1)")),
            ]
        );
        assert_eq!(reaped[0].last_ended().map(|e| e.end), Some(AttemptEnd::LeaseExpired));
    }

    #[test]
    fn reap_expired_skips_tasks_whose_update_conflicts_and_returns_only_those_reaped() {
        let found: Vec<Task> = (1..=3).map(|n| expired(task_id(n), 3)).collect();
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(move |_, _| Ok(found.clone()));
        repo.expect_update().times(3).returning(|t, _, _| {
            if t.id() == task_id(1) {
                Err(RepoError::Conflict(t.id())) // heartbeated or completed a moment before
            } else if t.id() == task_id(2) {
                Err(RepoError::NotFound(t.id()))
            } else {
                Ok(())
            }
        });

        let reaped = service(repo).reap_expired(10).unwrap();

        let ids: Vec<_> = reaped.iter().map(Task::id).collect();
        assert_eq!(ids, [task_id(3)]);
    }

    #[test]
    fn reap_expired_skips_tasks_whose_lease_is_no_longer_expired() {
        // Read as expired, but by the time the domain judges them one was heartbeated and one
        // completed.
        let mut heartbeated = expired(task_id(1), 3);
        heartbeated.heartbeat(None, old_token(), lease(300), now()).unwrap();
        let mut completed = expired(task_id(2), 3);
        completed.succeed(&Reporter::anyone(), None, t0()).unwrap();
        let found = vec![heartbeated, completed, expired(task_id(3), 3)];
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(move |_, _| Ok(found.clone()));
        repo.expect_update()
            .withf(|t, _, _| t.id() == task_id(3))
            .times(1)
            .returning(|_, _, _| Ok(()));

        let reaped = service(repo).reap_expired(10).unwrap();

        let ids: Vec<_> = reaped.iter().map(Task::id).collect();
        assert_eq!(ids, [task_id(3)]);
    }

    #[test]
    fn reap_expired_with_nothing_expired_reaps_nothing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(|_, _| Ok(Vec::new()));
        repo.expect_update().never();

        let reaped = service(repo).reap_expired(10).unwrap();

        assert!(reaped.is_empty());
    }

    #[test]
    fn reap_expired_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(|_, _| Err(unavailable()));
        repo.expect_update().never();

        let outcome = service(repo).reap_expired(10);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn reap_expired_stops_at_a_save_while_storage_is_down() {
        let found: Vec<Task> = (1..=2).map(|n| expired(task_id(n), 3)).collect();
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(move |_, _| Ok(found.clone()));
        repo.expect_update().times(1).returning(|_, _, _| Err(unavailable()));

        let outcome = service(repo).reap_expired(10);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- history and counters ---------------------------------------------------------------

    #[test]
    fn events_of_an_unknown_task_are_not_found() {
        let mut repo = MockTaskRepository::new();
        repo.expect_events().with(eq(id())).times(1).returning(|_| Ok(Vec::new()));
        repo.expect_get().with(eq(id())).times(1).returning(|id| Err(RepoError::NotFound(id)));

        let outcome = service(repo).events(id());

        assert!(matches!(outcome, Err(AppError::NotFound(i)) if i == id()), "{outcome:?}");
    }

    #[test]
    fn events_of_a_task_are_what_storage_returns_in_its_order() {
        let history = vec![
            TaskEvent {
                attempt: 0,
                from: None,
                to: TaskStatus::Pending,
                worker_id: None,
                actor: Actor::Client,
                at: t0(),
                ..transition(0, TaskStatus::Pending, TaskStatus::Pending)
            },
            transition(1, TaskStatus::Pending, TaskStatus::Running),
        ];
        let stored = history.clone();
        let mut repo = MockTaskRepository::new();
        repo.expect_events().with(eq(id())).times(1).returning(move |_| Ok(stored.clone()));
        repo.expect_get().never();

        let events = service(repo).events(id()).unwrap();

        assert_eq!(events, history);
    }

    #[test]
    fn events_report_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_events().times(1).returning(|_| Err(unavailable()));

        let outcome = service(repo).events(id());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn rejection_counts_are_what_storage_counted() {
        let counts = vec![
            RejectionCount { code: "LEASE_EXPIRED".to_owned(), call: StaleCall::Succeed, count: 3 },
            RejectionCount {
                code: "TASK_CANCELLED".to_owned(),
                call: StaleCall::Heartbeat,
                count: 1,
            },
        ];
        let stored = counts.clone();
        let mut repo = MockTaskRepository::new();
        repo.expect_rejection_counts().times(1).returning(move || Ok(stored.clone()));

        assert_eq!(service(repo).rejection_counts().unwrap(), counts);
    }

    #[test]
    fn rejection_counts_report_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_rejection_counts().times(1).returning(|| Err(unavailable()));

        let outcome = service(repo).rejection_counts();

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- next scheduled run ----------------------------------------------------------------

    #[test]
    fn the_next_scheduled_run_is_looked_up_after_the_given_instant() {
        let due = now() + TimeDelta::seconds(30);
        let mut repo = MockTaskRepository::new();
        repo.expect_earliest_scheduled_run()
            .withf(|after| *after == now())
            .times(1)
            .returning(move |_| Ok(Some(due)));

        assert_eq!(service(repo).next_scheduled_run(now()).unwrap(), Some(due));
    }

    // --- ready ------------------------------------------------------------------------------

    #[test]
    fn ready_when_storage_answers() {
        let mut repo = MockTaskRepository::new();
        repo.expect_ping().times(1).returning(|| Ok(()));

        assert!(service(repo).ready().is_ok());
    }

    #[test]
    fn not_ready_while_storage_is_down() {
        let mut repo = MockTaskRepository::new();
        repo.expect_ping().times(1).returning(|| Err(unavailable()));

        let outcome = service(repo).ready();

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn not_ready_on_an_unexpected_storage_error() {
        let mut repo = MockTaskRepository::new();
        repo.expect_ping()
            .times(1)
            .returning(|| Err(RepoError::Unexpected(anyhow::anyhow!("broken"))));

        let outcome = service(repo).ready();

        assert!(matches!(outcome, Err(AppError::Unexpected(_))), "{outcome:?}");
    }

    // --- errors -----------------------------------------------------------------------------

    #[test]
    fn storage_errors_map_to_what_the_caller_does_about_them() {
        assert!(matches!(
            AppError::from(RepoError::NotFound(id())),
            AppError::NotFound(i) if i == id()
        ));
        assert!(matches!(
            AppError::from(RepoError::Conflict(id())),
            AppError::ConcurrentModification(i) if i == id()
        ));
        assert!(matches!(AppError::from(unavailable()), AppError::Unavailable(_)));
        assert!(matches!(
            AppError::from(RepoError::Unexpected(anyhow::anyhow!("x"))),
            AppError::Unexpected(_)
        ));
    }

    #[test]
    fn the_system_clock_reads_whole_microseconds() {
        let now = SystemClock.now();

        assert_eq!(now.timestamp_subsec_nanos() % 1000, 0);
    }

    // --- fail_permanently -------------------------------------------------------------------

    #[test]
    fn fail_permanently_saves_the_task_as_failed_for_good_against_the_version_it_read() {
        let stored = running();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version, e| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Failed
                    && t.retry_state() == RetryState::NonRetryable
                    && t.attempt_count() == 1
                    && t.completed_at() == Some(now())
                    && t.last_error() == Some("bad payload")
                    && t.next_run_at().is_none()
                    && *e
                        == Some(&TaskEvent {
                            error: Some("bad payload".to_owned()),
                            ..transition(1, TaskStatus::Running, TaskStatus::Failed)
                        })
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
        repo.expect_record_rejection().never();

        let task = service(repo)
            .fail_permanently(
                id(),
                &Reporter::lease(Some(worker("w1")), live_token()),
                "bad payload",
            )
            .unwrap();

        assert_eq!(task.retry_state(), RetryState::NonRetryable);
        assert_eq!(task.max_attempts().get(), 3, "two attempts were left");
    }

    #[test]
    fn a_replayed_permanent_failure_returns_the_stored_task_without_saving_or_recording() {
        let mut stored = running();
        stored.fail_permanently(&Reporter::lease(None, live_token()), "bad payload", t0()).unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo)
            .fail_permanently(id(), &Reporter::lease(Some(worker("w1")), live_token()), "again")
            .unwrap();

        assert_eq!(task, stored);
    }

    #[test]
    fn a_stale_permanent_failure_records_a_fail_rejection_and_is_a_conflict_without_saving() {
        let stored = reaped();
        let refusal = StaleLease::LeaseExpired { task: id(), attempt: 1 };
        let event = rejection(&stored, StaleCall::Fail, &refusal);
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().withf(move |e| *e == event).times(1).returning(|_| Ok(()));

        let outcome = service(repo).fail_permanently(
            id(),
            &Reporter::lease(Some(worker("w1")), old_token()),
            "late",
        );

        assert!(
            matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{outcome:?}"
        );
    }

    #[test]
    fn fail_permanently_of_a_task_that_is_not_running_is_a_conflict_and_never_saved() {
        for stored in [pending(), succeeded(), failed(), cancelled()] {
            let from = stored.status();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();
            repo.expect_record_rejection().never();

            let outcome = service(repo).fail_permanently(id(), &Reporter::anyone(), "boom");

            assert!(
                matches!(
                    outcome,
                    Err(AppError::Conflict(DomainError::InvalidTransition {
                        from: f,
                        action: Action::Fail,
                        ..
                    })) if f == from
                ),
                "{from}: {outcome:?}"
            );
        }
    }

    // --- release ----------------------------------------------------------------------------

    /// [`running`] after its attempt of [`live_token`] was released.
    fn released() -> Task {
        let mut task = running();
        task.release(&Reporter::lease(Some(worker("w1")), live_token()), t0()).unwrap();
        task
    }

    #[test]
    fn release_saves_the_task_pending_and_runnable_without_a_failure_against_the_version_it_read() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());
        repo.expect_update()
            .withf(|t, expected_version, e| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Pending
                    && t.retry_state() == RetryState::None
                    && t.attempt_count() == 0
                    && t.next_run_at().is_none()
                    && t.last_error().is_none()
                    && t.worker_id().is_none()
                    && t.last_ended().map(|e| (e.attempt, e.token, e.end))
                        == Some((1, live_token(), AttemptEnd::Released))
                    && *e == Some(&transition(1, TaskStatus::Running, TaskStatus::Pending))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
        repo.expect_record_rejection().never();

        let task = service(repo)
            .release(id(), &Reporter::lease(Some(worker("w1")), live_token()))
            .unwrap();

        assert!(task.is_runnable_at(now()));
        assert_eq!(task.attempt(), 1);
    }

    #[test]
    fn release_on_the_last_attempt_saves_a_retry_runnable_now_not_a_failure() {
        let stored = running_last_attempt();
        let read_version = stored.version();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(move |t, expected_version, e| {
                *expected_version == read_version
                    && t.status() == TaskStatus::Pending
                    && t.retry_state() == RetryState::RetryScheduled
                    && t.attempt_count() == 1
                    && t.next_run_at() == Some(now())
                    && t.last_error() == Some("first")
                    && *e == Some(&transition(2, TaskStatus::Running, TaskStatus::Pending))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo)
            .release(id(), &Reporter::lease(Some(worker("w1")), live_token()))
            .unwrap();

        assert_eq!(task.status(), TaskStatus::Pending, "not FAILED: a release is no failure");
        assert!(task.is_runnable_at(now()));
    }

    #[test]
    fn a_replayed_release_returns_the_stored_task_without_saving_or_recording() {
        let stored = released();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo)
            .release(id(), &Reporter::lease(Some(worker("w1")), live_token()))
            .unwrap();

        assert_eq!(task, stored);
    }

    #[test]
    fn a_stale_release_records_a_release_rejection_and_is_a_conflict_without_saving() {
        let cases = [
            (reaped(), old_token(), StaleLease::LeaseExpired { task: id(), attempt: 1 }),
            (
                reaped_and_restarted(),
                old_token(),
                StaleLease::AttemptSuperseded { task: id(), current: 2 },
            ),
            (
                cancelled_while_running(),
                live_token(),
                StaleLease::TaskCancelled { task: id(), attempt: 1 },
            ),
            (
                succeeded(),
                live_token(),
                StaleLease::OutcomeConflict {
                    task: id(),
                    attempt: 1,
                    recorded: AttemptEnd::Succeeded,
                },
            ),
        ];
        for (stored, token, refusal) in cases {
            let event = rejection(&stored, StaleCall::Release, &refusal);
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();
            repo.expect_record_rejection()
                .withf(move |e| *e == event)
                .times(1)
                .returning(|_| Ok(()));

            let outcome = service(repo).release(id(), &Reporter::lease(Some(worker("w1")), token));

            assert!(
                matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
                "{}: {outcome:?}",
                refusal.code()
            );
        }
    }

    #[test]
    fn a_success_after_a_release_is_an_outcome_conflict_recorded_as_a_refused_succeed() {
        let stored = released();
        let refusal =
            StaleLease::OutcomeConflict { task: id(), attempt: 1, recorded: AttemptEnd::Released };
        let event = rejection(&stored, StaleCall::Succeed, &refusal);
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();
        repo.expect_record_rejection().withf(move |e| *e == event).times(1).returning(|_| Ok(()));

        let outcome = service(repo).succeed(
            id(),
            &Reporter::lease(Some(worker("w1")), live_token()),
            Some(json!("late")),
        );

        assert!(
            matches!(&outcome, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{outcome:?}"
        );
    }

    // --- create_batch -----------------------------------------------------------------------

    #[test]
    fn create_batch_refuses_an_empty_batch_or_one_over_1000_without_asking_storage() {
        for size in [0, MAX_BATCH + 1] {
            let mut repo = MockTaskRepository::new();
            repo.expect_insert_many().never();
            repo.expect_insert().never();

            let outcome = service(repo).create_batch(vec![create_request(); size]);

            assert!(
                matches!(outcome, Err(AppError::InvalidBatchSize(n)) if n == size),
                "{size}: {outcome:?}"
            );
        }
    }

    #[test]
    fn create_batch_accepts_1_to_1000_tasks_in_one_insert() {
        for size in [1, MAX_BATCH] {
            let mut repo = MockTaskRepository::new();
            repo.expect_insert_many()
                .withf(move |tasks, events| tasks.len() == size && events.len() == size)
                .times(1)
                .returning(|_, _| Ok(()));
            repo.expect_insert().never();

            let tasks = service(repo).create_batch(vec![create_request(); size]).unwrap();

            assert_eq!(tasks.len(), size);
        }
    }

    #[test]
    fn create_batch_inserts_every_task_with_its_client_creation_event_in_one_call() {
        let inserted = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&inserted);
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_many().times(1).returning(move |tasks, events| {
            sink.lock().unwrap().push((tasks.to_vec(), events.to_vec()));
            Ok(())
        });
        repo.expect_insert().never();
        let later = now() + TimeDelta::seconds(600);
        let requests = vec![
            create_request(),
            CreateTask {
                queue: Some(queue("emails")),
                max_attempts: Some(MaxAttempts::new(5).unwrap()),
                run_at: Some(later),
                priority: -1,
                ..create_request()
            },
            CreateTask { payload: json!([1, 2, 3]), ..create_request() },
        ];

        let tasks = service(repo).create_batch(requests).unwrap();

        let calls = inserted.lock().unwrap();
        let [(stored, events)] = calls.as_slice() else { panic!("{} inserts", calls.len()) };
        assert_eq!(stored, &tasks, "returns what it stored, in the order asked");
        assert_eq!(tasks.len(), 3);
        let defaults: Vec<_> =
            tasks.iter().map(|t| (t.queue().as_str(), t.max_attempts().get())).collect();
        assert_eq!(defaults, [("default", 25), ("emails", 5), ("default", 25)]);
        assert_eq!(tasks[1].next_run_at(), Some(later));
        assert_eq!(tasks[1].priority(), -1);
        assert_eq!(tasks[2].payload(), &json!([1, 2, 3]));
        for task in &tasks {
            assert_eq!(task.status(), TaskStatus::Pending);
            assert_eq!((task.created_at(), task.version(), task.attempt()), (now(), 1, 0));
            assert_eq!(task.id().as_uuid().get_version_num(), 7, "ids are UUID v7");
        }
        let mut ids: Vec<TaskId> = tasks.iter().map(Task::id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3, "ids are distinct");
        let expected: Vec<TaskEvent> = tasks
            .iter()
            .map(|t| TaskEvent {
                task_id: t.id(),
                attempt: 0,
                from: None,
                to: TaskStatus::Pending,
                worker_id: None,
                error: None,
                actor: Actor::Client,
                rejected: None,
                at: now(),
            })
            .collect();
        assert_eq!(events, &expected);
    }

    #[test]
    fn create_batch_reports_storage_errors_for_the_whole_batch() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_many().times(1).returning(|_, _| Err(unavailable()));

        let outcome = service(repo).create_batch(vec![create_request(); 3]);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    // --- complete_batch ---------------------------------------------------------------------

    /// [`running`] as task `n`: attempt 1 held by `w1` with [`live_token`], version 2.
    fn running_task(n: u128) -> Task {
        let mut task = new_task(task_id(n), 3, t0());
        task.start(&worker("w1"), live_token(), defaults().lease, t0()).unwrap();
        task
    }

    /// [`succeeded`] as task `n`: its attempt of [`live_token`] succeeded.
    fn succeeded_task(n: u128) -> Task {
        let mut task = running_task(n);
        task.succeed(&Reporter::lease(Some(worker("w1")), live_token()), None, t0()).unwrap();
        task
    }

    /// [`reaped_and_restarted`] as task `n`: attempt 1 ([`old_token`]) was reaped, attempt 2
    /// ([`live_token`]) runs.
    fn superseded_task(n: u128) -> Task {
        let mut task = expired(task_id(n), 3);
        task.expire_lease(t0() + TimeDelta::seconds(30), &FixedBackoff(TimeDelta::zero())).unwrap();
        task.start(&worker("w2"), live_token(), defaults().lease, t0() + TimeDelta::seconds(30))
            .unwrap();
        task
    }

    fn completion(n: u128, token: LeaseToken, outcome: Outcome) -> Completion {
        Completion { id: task_id(n), reporter: Reporter::lease(Some(worker("w1")), token), outcome }
    }

    fn success(result: Option<Value>) -> Outcome {
        Outcome::Succeeded { result }
    }

    fn failure(error: &str, retryable: bool) -> Outcome {
        Outcome::Failed { error: error.to_owned(), retryable }
    }

    /// [`transition`] for task `n`.
    fn transition_of(n: u128, attempt: u32, from: TaskStatus, to: TaskStatus) -> TaskEvent {
        TaskEvent { task_id: task_id(n), ..transition(attempt, from, to) }
    }

    type Written = Arc<Mutex<Vec<(Vec<TaskWrite>, Vec<TaskEvent>)>>>;

    /// Expects one `write_many`, keeps what it was given and answers `lost`.
    fn expect_write_many(repo: &mut MockTaskRepository, lost: Vec<TaskId>) -> Written {
        let written: Written = Arc::default();
        let sink = Arc::clone(&written);
        repo.expect_write_many().times(1).returning(move |writes, rejections| {
            sink.lock().unwrap().push((writes.to_vec(), rejections.to_vec()));
            Ok(lost.clone())
        });
        written
    }

    /// Expects one `get_many` for exactly `ids` (sorted, without repeats) and answers
    /// `stored`.
    fn expect_get_many(repo: &mut MockTaskRepository, mut ids: Vec<TaskId>, stored: Vec<Task>) {
        ids.sort_unstable();
        repo.expect_get_many()
            .withf(move |asked| asked == ids.as_slice())
            .times(1)
            .returning(move |_| Ok(stored.clone()));
    }

    /// The writes of the one `write_many` call, by task id (their order is not part of the
    /// contract), and its rejections.
    fn the_write(written: &Written) -> (HashMap<TaskId, TaskWrite>, Vec<TaskEvent>) {
        let calls = written.lock().unwrap();
        let [(writes, rejections)] = calls.as_slice() else {
            panic!("{} calls of write_many", calls.len())
        };
        let by_id: HashMap<TaskId, TaskWrite> =
            writes.iter().map(|w| (w.task.id(), w.clone())).collect();
        assert_eq!(by_id.len(), writes.len(), "one write per task");
        (by_id, rejections.clone())
    }

    fn no_single_item_calls(repo: &mut MockTaskRepository) {
        repo.expect_get().never();
        repo.expect_update().never();
        repo.expect_record_rejection().never();
    }

    #[test]
    fn complete_batch_refuses_an_empty_batch_or_one_over_1000_without_asking_storage() {
        for size in [0, MAX_BATCH + 1] {
            let mut repo = MockTaskRepository::new();
            repo.expect_get_many().never();
            repo.expect_write_many().never();
            no_single_item_calls(&mut repo);
            let items = vec![completion(1, live_token(), success(None)); size];

            let outcome = service(repo).complete_batch(items);

            assert!(
                matches!(outcome, Err(AppError::InvalidBatchSize(n)) if n == size),
                "{size}: {outcome:?}"
            );
        }
    }

    #[test]
    fn complete_batch_accepts_1000_outcomes_in_one_read_and_one_write() {
        let items: Vec<Completion> =
            (1..=1000).map(|n| completion(n, live_token(), success(None))).collect();
        let stored: Vec<Task> = (1..=1000).map(running_task).collect();
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, (1..=1000).map(task_id).collect(), stored);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        assert_eq!(answers.len(), 1000);
        assert!(answers.iter().all(|a| matches!(a, Ok(t) if t.status() == TaskStatus::Succeeded)));
        let (writes, rejections) = the_write(&written);
        assert_eq!((writes.len(), rejections.len()), (1000, 0));
    }

    #[test]
    fn complete_batch_judges_each_item_and_writes_them_all_in_one_round_trip() {
        let items = vec![
            completion(1, live_token(), success(Some(json!({"sent": true})))),
            completion(2, live_token(), failure("smtp timeout", true)),
            completion(3, live_token(), failure("bad payload", false)),
            completion(4, live_token(), success(None)),
            completion(5, old_token(), success(None)),
            completion(6, live_token(), success(None)),
        ];
        let replayed = succeeded_task(6);
        let superseded = superseded_task(5);
        // Storage answers in any order and leaves unknown ids out.
        let stored = vec![
            replayed.clone(),
            superseded.clone(),
            running_task(3),
            running_task(2),
            running_task(1),
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, (1..=6).map(task_id).collect(), stored);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        let mut ids: Vec<TaskId> = writes.keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [task_id(1), task_id(2), task_id(3)], "no write for refusals and replays");
        for w in writes.values() {
            assert_eq!((w.expected_version, w.task.version()), (2, 3), "CAS on the version read");
        }
        let succeeded = &writes[&task_id(1)];
        assert_eq!(succeeded.task.status(), TaskStatus::Succeeded);
        assert_eq!(succeeded.task.result(), Some(&json!({"sent": true})));
        assert_eq!(
            succeeded.events,
            [transition_of(1, 1, TaskStatus::Running, TaskStatus::Succeeded)]
        );
        let retried = &writes[&task_id(2)];
        assert_eq!(retried.task.status(), TaskStatus::Pending);
        assert_eq!(retried.task.retry_state(), RetryState::RetryScheduled);
        assert_eq!(retried.task.next_run_at(), Some(now() + BACKOFF));
        assert_eq!(
            retried.events,
            [TaskEvent {
                error: Some("smtp timeout".to_owned()),
                ..transition_of(2, 1, TaskStatus::Running, TaskStatus::Pending)
            }]
        );
        let given_up = &writes[&task_id(3)];
        assert_eq!(given_up.task.status(), TaskStatus::Failed);
        assert_eq!(given_up.task.retry_state(), RetryState::NonRetryable);
        assert_eq!(given_up.task.completed_at(), Some(now()));
        assert_eq!(
            given_up.events,
            [TaskEvent {
                error: Some("bad payload".to_owned()),
                ..transition_of(3, 1, TaskStatus::Running, TaskStatus::Failed)
            }]
        );
        let refusal = StaleLease::AttemptSuperseded { task: task_id(5), current: 2 };
        assert_eq!(rejections, [rejection(&superseded, StaleCall::Succeed, &refusal)]);
        // The answers, in the order asked.
        let [a1, a2, a3, a4, a5, a6] = answers.as_slice() else { panic!("{answers:?}") };
        assert_eq!(a1.as_ref().unwrap(), &succeeded.task);
        assert_eq!(a2.as_ref().unwrap(), &retried.task);
        assert_eq!(a3.as_ref().unwrap(), &given_up.task);
        assert!(matches!(a4, Err(AppError::NotFound(i)) if *i == task_id(4)), "{a4:?}");
        assert!(
            matches!(a5, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{a5:?}"
        );
        assert_eq!(a6.as_ref().unwrap(), &replayed, "a replay answers the stored task");
    }

    #[test]
    fn complete_batch_answers_refusals_that_are_not_stale_without_writing_anything() {
        let items = vec![
            // Another worker than the holder, without a token.
            Completion {
                id: task_id(1),
                reporter: Reporter::worker(worker("w2")),
                outcome: success(None),
            },
            // A report without a token on a task that is not running.
            Completion { id: task_id(2), reporter: Reporter::anyone(), outcome: success(None) },
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(
            &mut repo,
            vec![task_id(1), task_id(2)],
            vec![running_task(1), new_task(task_id(2), 3, t0())],
        );
        repo.expect_write_many().never();
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        assert!(
            matches!(&answers[0], Err(AppError::Conflict(DomainError::WorkerMismatch { .. }))),
            "{:?}",
            answers[0]
        );
        assert!(
            matches!(
                &answers[1],
                Err(AppError::Conflict(DomainError::InvalidTransition {
                    from: TaskStatus::Pending,
                    action: Action::Succeed,
                    ..
                }))
            ),
            "{:?}",
            answers[1]
        );
    }

    #[test]
    fn the_same_outcome_twice_for_one_task_is_read_and_written_once_and_the_repeat_is_a_replay() {
        let items = vec![
            completion(1, live_token(), success(Some(json!(1)))),
            completion(1, live_token(), success(Some(json!(2)))),
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, vec![task_id(1)], vec![running_task(1)]);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        let write = &writes[&task_id(1)];
        assert_eq!(write.expected_version, 2);
        assert_eq!(write.task.result(), Some(&json!(1)), "the first accepted answer stands");
        assert_eq!(write.events, [transition_of(1, 1, TaskStatus::Running, TaskStatus::Succeeded)]);
        assert!(rejections.is_empty());
        assert_eq!(answers.len(), 2);
        for answer in &answers {
            assert_eq!(answer.as_ref().unwrap(), &write.task);
        }
    }

    #[test]
    fn a_different_outcome_later_in_the_batch_is_an_outcome_conflict_recorded_with_the_write() {
        let items = vec![
            completion(1, live_token(), success(None)),
            completion(1, live_token(), failure("boom", true)),
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, vec![task_id(1)], vec![running_task(1)]);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        let write = &writes[&task_id(1)];
        assert_eq!(write.task.status(), TaskStatus::Succeeded);
        assert_eq!(write.events.len(), 1);
        let refusal = StaleLease::OutcomeConflict {
            task: task_id(1),
            attempt: 1,
            recorded: AttemptEnd::Succeeded,
        };
        // Judged on the state the first item made, which is the one written.
        assert_eq!(rejections, [rejection(&write.task, StaleCall::Fail, &refusal)]);
        assert_eq!(answers[0].as_ref().unwrap(), &write.task);
        assert!(
            matches!(&answers[1], Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{:?}",
            answers[1]
        );
    }

    #[test]
    fn a_permanent_failure_after_a_retryable_one_in_the_batch_is_an_outcome_conflict() {
        let items = vec![
            completion(1, live_token(), failure("flaky", true)),
            completion(1, live_token(), failure("bad payload", false)),
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, vec![task_id(1)], vec![running_task(1)]);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        let write = &writes[&task_id(1)];
        assert_eq!(write.task.retry_state(), RetryState::RetryScheduled, "the first one stands");
        assert_eq!(write.events.len(), 1);
        assert_eq!(answers[0].as_ref().unwrap(), &write.task);
        assert!(
            matches!(
                &answers[1],
                Err(AppError::Conflict(DomainError::StaleLease(StaleLease::OutcomeConflict {
                    recorded: AttemptEnd::Failed,
                    ..
                })))
            ),
            "{:?}",
            answers[1]
        );
        assert_eq!(rejections.len(), 1, "the conflicting outcome is recorded");
    }

    #[test]
    fn a_lost_write_is_redone_alone_on_a_fresh_read_and_the_others_stand() {
        // Task 1 was heartbeated by its worker between the batch's read and its write.
        let mut moved_on = running_task(1);
        moved_on
            .heartbeat(None, live_token(), defaults().lease, t0() + TimeDelta::seconds(30))
            .unwrap();
        let items = vec![
            completion(1, live_token(), success(None)),
            completion(2, live_token(), failure("bad payload", false)),
        ];
        let mut repo = MockTaskRepository::new();
        expect_get_many(
            &mut repo,
            vec![task_id(1), task_id(2)],
            vec![running_task(1), running_task(2)],
        );
        let written = expect_write_many(&mut repo, vec![task_id(1)]);
        let fresh = moved_on.clone();
        repo.expect_get().with(eq(task_id(1))).times(1).returning(move |_| Ok(fresh.clone()));
        repo.expect_update()
            .withf(|t, expected_version, e| {
                t.id() == task_id(1)
                    && *expected_version == 3
                    && t.version() == 4
                    && t.status() == TaskStatus::Succeeded
                    && *e == Some(&transition_of(1, 1, TaskStatus::Running, TaskStatus::Succeeded))
            })
            .times(1)
            .returning(|_, _, _| Ok(()));
        repo.expect_record_rejection().never();

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, _) = the_write(&written);
        assert_eq!(writes.len(), 2, "both were tried in the batch");
        let redone = answers[0].as_ref().unwrap();
        assert_eq!((redone.status(), redone.version()), (TaskStatus::Succeeded, 4));
        assert_eq!(answers[1].as_ref().unwrap(), &writes[&task_id(2)].task);
    }

    #[test]
    fn a_lost_write_redone_on_a_state_that_no_longer_allows_it_gets_the_domains_answer() {
        // Task 1 was cancelled by a client between the batch's read and its write.
        let mut cancelled = running_task(1);
        cancelled.cancel(t0() + TimeDelta::seconds(30)).unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, vec![task_id(1)], vec![running_task(1)]);
        expect_write_many(&mut repo, vec![task_id(1)]);
        let fresh = cancelled.clone();
        repo.expect_get().with(eq(task_id(1))).times(1).returning(move |_| Ok(fresh.clone()));
        repo.expect_update().never();
        let refusal = StaleLease::TaskCancelled { task: task_id(1), attempt: 1 };
        let event = rejection(&cancelled, StaleCall::Succeed, &refusal);
        repo.expect_record_rejection().withf(move |e| *e == event).times(1).returning(|_| Ok(()));

        let answers =
            service(repo).complete_batch(vec![completion(1, live_token(), success(None))]).unwrap();

        assert!(
            matches!(&answers[0], Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{:?}",
            answers[0]
        );
    }

    #[test]
    fn complete_batch_releases_tasks_and_judges_later_outcomes_of_a_released_attempt() {
        let items = vec![
            completion(1, live_token(), Outcome::Released),
            completion(1, live_token(), success(None)),
            completion(2, old_token(), Outcome::Released),
        ];
        let superseded = superseded_task(2);
        let mut repo = MockTaskRepository::new();
        expect_get_many(
            &mut repo,
            vec![task_id(1), task_id(2)],
            vec![running_task(1), superseded.clone()],
        );
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        assert_eq!(writes.len(), 1, "only the release changed a task");
        let write = &writes[&task_id(1)];
        assert_eq!((write.expected_version, write.task.version()), (2, 3));
        assert_eq!(write.task.status(), TaskStatus::Pending);
        assert_eq!((write.task.attempt(), write.task.attempt_count()), (1, 0));
        assert!(write.task.is_runnable_at(now()));
        assert_eq!(write.events, [transition_of(1, 1, TaskStatus::Running, TaskStatus::Pending)]);
        let conflict = StaleLease::OutcomeConflict {
            task: task_id(1),
            attempt: 1,
            recorded: AttemptEnd::Released,
        };
        let superseded_refusal = StaleLease::AttemptSuperseded { task: task_id(2), current: 2 };
        assert_eq!(
            rejections,
            [
                rejection(&write.task, StaleCall::Succeed, &conflict),
                rejection(&superseded, StaleCall::Release, &superseded_refusal),
            ]
        );
        assert_eq!(answers[0].as_ref().unwrap(), &write.task);
        assert!(
            matches!(&answers[1], Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == conflict),
            "{:?}",
            answers[1]
        );
        assert!(
            matches!(&answers[2], Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == superseded_refusal),
            "{:?}",
            answers[2]
        );
    }

    #[test]
    fn complete_batch_reports_a_read_that_fails_for_the_whole_batch_without_writing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_get_many().times(1).returning(|_| Err(unavailable()));
        repo.expect_write_many().never();
        no_single_item_calls(&mut repo);

        let outcome =
            service(repo).complete_batch(vec![completion(1, live_token(), success(None))]);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn complete_batch_reports_a_write_that_fails_for_the_whole_batch() {
        let mut repo = MockTaskRepository::new();
        expect_get_many(&mut repo, vec![task_id(1)], vec![running_task(1)]);
        repo.expect_write_many()
            .times(1)
            .returning(|_, _| Err(RepoError::Unexpected(anyhow::anyhow!("disk full"))));
        no_single_item_calls(&mut repo);

        let outcome =
            service(repo).complete_batch(vec![completion(1, live_token(), success(None))]);

        assert!(matches!(outcome, Err(AppError::Unexpected(_))), "{outcome:?}");
    }
}
