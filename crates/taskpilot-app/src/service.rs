//! The use cases.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_domain::{
    BackoffPolicy, Clock, DomainError, MaxAttempts, NewTask, Task, TaskId, TaskName,
    ValidationError, WorkerId,
};
use uuid::Uuid;

use crate::{Cursor, RepoError, TaskFilter, TaskRepository};

/// How often a transition that lost a race re-reads the task and tries again before giving up.
const MAX_TRANSITION_ATTEMPTS: usize = 3;

/// Everything a use case can fail with, by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task's state does not allow what was asked.
    #[error(transparent)]
    Conflict(#[from] DomainError),
    /// The request carries a value the domain refuses.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A listing's page size is outside 1 to [`MAX_PAGE_SIZE`].
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}, got {0}")]
    InvalidLimit(u32),
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

/// What a client asks for when creating a task; unset fields take the service's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTask {
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
    default_max_attempts: MaxAttempts,
}

impl TaskService {
    /// A service over these ports; tasks created without `maxAttempts` get `default_max_attempts`.
    pub fn new(
        repo: Arc<dyn TaskRepository>,
        clock: Arc<dyn Clock>,
        backoff: Arc<dyn BackoffPolicy>,
        default_max_attempts: MaxAttempts,
    ) -> Self {
        Self { repo, clock, backoff, default_max_attempts }
    }

    /// Creates a pending task with a fresh UUID v7 id.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] or [`AppError::Unexpected`] from storage.
    pub fn create(&self, request: CreateTask) -> Result<Task, AppError> {
        let spec = NewTask {
            name: request.name,
            payload: request.payload,
            priority: request.priority,
            max_attempts: request.max_attempts.unwrap_or(self.default_max_attempts),
            run_at: request.run_at,
        };
        let task = Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, self.clock.now());
        self.repo.insert(&task)?;
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

    /// Hands a runnable pending task to `worker`.
    ///
    /// # Errors
    /// [`AppError::Conflict`] with [`DomainError::InvalidTransition`] or
    /// [`DomainError::NotYetRunnable`]; [`AppError::NotFound`]; storage errors.
    pub fn start(&self, id: TaskId, worker: &WorkerId) -> Result<Task, AppError> {
        self.transition(id, |task, now| task.start(worker, now))
    }

    /// Records success of the running attempt.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is not running or `worker` does not hold it;
    /// [`AppError::NotFound`]; storage errors.
    pub fn succeed(
        &self,
        id: TaskId,
        worker: Option<&WorkerId>,
        result: Option<Value>,
    ) -> Result<Task, AppError> {
        self.transition(id, |task, now| task.succeed(worker, result.clone(), now))
    }

    /// Records failure of the running attempt: a retry after backoff, or failed for good.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is not running or `worker` does not hold it;
    /// [`AppError::NotFound`]; storage errors.
    pub fn fail(&self, id: TaskId, worker: Option<&WorkerId>, error: &str) -> Result<Task, AppError> {
        let backoff = self.backoff.as_ref();
        self.transition(id, |task, now| task.fail_and_schedule_retry(worker, error, now, backoff))
    }

    /// Cancels a pending or running task.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is already terminal; [`AppError::NotFound`];
    /// storage errors.
    pub fn cancel(&self, id: TaskId) -> Result<Task, AppError> {
        self.transition(id, |task, now| task.cancel(now))
    }

    /// Puts a failed or cancelled task back to pending with a fresh attempt budget.
    ///
    /// # Errors
    /// [`AppError::Conflict`] unless the task is failed or cancelled; [`AppError::NotFound`];
    /// storage errors.
    pub fn rerun(&self, id: TaskId) -> Result<Task, AppError> {
        self.transition(id, |task, now| task.rerun(now))
    }

    /// Whether storage answers.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] when it does not.
    pub fn ready(&self) -> Result<(), AppError> {
        Ok(self.repo.ping()?)
    }

    /// Reads the task, applies one domain transition and writes it back if nobody changed it
    /// meanwhile. A lost race is retried on a fresh read, so the caller gets the domain's
    /// verdict on the state that won rather than a bare conflict.
    fn transition(
        &self,
        id: TaskId,
        apply: impl Fn(&mut Task, DateTime<Utc>) -> Result<(), DomainError>,
    ) -> Result<Task, AppError> {
        for _ in 0..MAX_TRANSITION_ATTEMPTS {
            let mut task = self.repo.get(id)?;
            let expected_version = task.version();
            apply(&mut task, self.clock.now())?;
            match self.repo.update(&task, expected_version) {
                Ok(()) => return Ok(task),
                Err(RepoError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::ConcurrentModification(id))
    }
}
