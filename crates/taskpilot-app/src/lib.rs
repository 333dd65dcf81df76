//! TaskPilot's use cases: create, read, list and move tasks through their lifecycle.
//!
//! This crate owns the use cases ([`TaskService`]), the storage port they run over
//! ([`TaskRepository`], with the history it records: [`TaskEvent`]) and the errors a caller
//! acts on ([`AppError`]). It decides no rule itself: every rule is the domain's, and the
//! service only reads, asks the domain and writes back. It takes time and retry delays
//! through the domain's [`Clock`](taskpilot_domain::Clock) and
//! [`BackoffPolicy`](taskpilot_domain::BackoffPolicy) ports, and the API's size limits from
//! `taskpilot_api::limits`. It must not import a database, web or async runtime crate:
//! adapters implement the port and call the service.
//!
//! Feature `mocks` exports `MockTaskRepository` (mockall) for downstream unit tests.
//!
//! # Running the use cases over your own storage
//!
//! Implement [`TaskRepository`] and hand it to [`TaskService::new`]. This store keeps tasks
//! in memory and serves the single-task use cases; its contract (compare-and-swap on the
//! version, a task and its event stored together) is the trait's documentation.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! use chrono::TimeDelta;
//! use serde_json::json;
//! use taskpilot_app::{
//!     Actor, CreateTask, OnConflict, RepoError, ServiceDefaults, SystemClock, TaskEvent, TaskRepository,
//!     TaskService,
//! };
//! use taskpilot_domain::{
//!     ExponentialBackoff, LeaseDuration, LiveSuccess, MaxAttempts, Reporter, Task, TaskId,
//!     TaskName, TaskStatus, WorkerId,
//! };
//!
//! #[derive(Default)]
//! struct InMemory {
//!     tasks: Mutex<HashMap<TaskId, Task>>,
//!     events: Mutex<Vec<TaskEvent>>,
//! }
//!
//! impl InMemory {
//!     fn locked<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, RepoError> {
//!         m.lock().map_err(|_| RepoError::unexpected(anyhow::anyhow!("a writer panicked")))
//!     }
//! }
//!
//! impl TaskRepository for InMemory {
//!     fn insert(&self, task: &Task, event: &TaskEvent) -> Result<(), RepoError> {
//!         let mut tasks = Self::locked(&self.tasks)?;
//!         if tasks.contains_key(&task.id()) {
//!             return Err(RepoError::Conflict(task.id()));
//!         }
//!         tasks.insert(task.id(), task.clone());
//!         Self::locked(&self.events)?.push(event.clone());
//!         Ok(())
//!     }
//!
//!     fn get(&self, id: TaskId) -> Result<Task, RepoError> {
//!         Self::locked(&self.tasks)?.get(&id).cloned().ok_or(RepoError::NotFound(id))
//!     }
//!
//!     fn update<'a>(
//!         &self,
//!         task: &Task,
//!         expected_version: u64,
//!         event: Option<&'a TaskEvent>,
//!     ) -> Result<(), RepoError> {
//!         let mut tasks = Self::locked(&self.tasks)?;
//!         let stored = tasks.get_mut(&task.id()).ok_or(RepoError::NotFound(task.id()))?;
//!         if stored.version() != expected_version {
//!             return Err(RepoError::Conflict(task.id()));
//!         }
//!         *stored = task.clone();
//!         Self::locked(&self.events)?.extend(event.cloned());
//!         Ok(())
//!     }
//!
//!     fn events(&self, id: TaskId) -> Result<Vec<TaskEvent>, RepoError> {
//!         let events = Self::locked(&self.events)?;
//!         Ok(events.iter().filter(|e| e.task_id == id).cloned().collect())
//!     }
//!
//!     fn record_rejection(&self, event: &TaskEvent) -> Result<(), RepoError> {
//!         Self::locked(&self.events)?.push(event.clone());
//!         Ok(())
//!     }
//!
//!     fn ping(&self) -> Result<(), RepoError> {
//!         Ok(())
//!     }
//!
//!     fn succeed_live(
//!         &self,
//!         successes: &[(TaskId, LiveSuccess)],
//!         token: Option<&taskpilot_domain::TokenName>,
//!     ) -> Result<Vec<Task>, RepoError> {
//!         // The guard and the new values are the domain's: apply them where the guard matches.
//!         let mut tasks = Self::locked(&self.tasks)?;
//!         let mut changed = Vec::new();
//!         for (id, success) in successes {
//!             let Some(stored) = tasks.get_mut(id) else { continue };
//!             let Some(record) = success.apply(&stored.to_record()) else { continue };
//!             let task = Task::restore(record).map_err(RepoError::unexpected)?;
//!             let event = TaskEvent::transition(Some(stored), &task, Actor::Worker)
//!                 .by(token.cloned());
//!             Self::locked(&self.events)?.push(event);
//!             *stored = task.clone();
//!             changed.push(task);
//!         }
//!         Ok(changed)
//!     }
//!
//!     // Claims, batches, the reaper's and the listing's queries follow the same pattern
//!     // and are left out here.
//! #   fn claim(&self, _: &taskpilot_app::ClaimRequest) -> Result<Vec<Task>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn expired_leases(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<Vec<Task>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn earliest_scheduled_run(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #   ) -> Result<Option<chrono::DateTime<chrono::Utc>>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn insert_many(&self, _: &[Task], _: &[TaskEvent]) -> Result<(), RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn insert_keyed(
//! #       &self,
//! #       _: &[Task],
//! #       _: &[TaskEvent],
//! #       _: &taskpilot_app::NewIdempotencyKey,
//! #   ) -> Result<taskpilot_domain::KeyClaim, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn delete_expired_keys(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<u64, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn get_many(&self, _: &[TaskId]) -> Result<Vec<Task>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn write_many(
//! #       &self,
//! #       _: &[taskpilot_app::TaskWrite],
//! #       _: &[TaskEvent],
//! #   ) -> Result<Vec<TaskId>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn rejection_counts(&self) -> Result<Vec<taskpilot_app::RejectionCount>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn list(
//! #       &self,
//! #       _: &taskpilot_app::TaskFilter,
//! #       _: Option<taskpilot_app::Cursor>,
//! #       _: u32,
//! #   ) -> Result<Vec<Task>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn task_counts(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<taskpilot_app::TaskCounts, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn fold_counts(&self, _: chrono::DateTime<chrono::Utc>, _: u32) -> Result<u64, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn delete_many(&self, _: &[(TaskId, u64)]) -> Result<Vec<TaskId>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn record_bulk_action(
//! #       &self,
//! #       _: &taskpilot_app::BulkActionRecord,
//! #   ) -> Result<(), RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn queue_states(
//! #       &self,
//! #   ) -> Result<Vec<(taskpilot_domain::QueueName, taskpilot_domain::QueueState)>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn queue_state(
//! #       &self,
//! #       _: &taskpilot_domain::QueueName,
//! #   ) -> Result<taskpilot_domain::QueueState, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn write_queue_state(
//! #       &self,
//! #       _: &taskpilot_domain::QueueName,
//! #       _: &taskpilot_domain::QueueState,
//! #       _: u64,
//! #   ) -> Result<bool, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn queue_activity(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #   ) -> Result<Vec<taskpilot_app::QueueActivity>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn runnable_ahead(
//! #       &self,
//! #       _: &Task,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<u64, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn delete_finished(
//! #       &self,
//! #       _: TaskStatus,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<u64, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn throughput(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: Option<&[taskpilot_domain::QueueName]>,
//! #   ) -> Result<Vec<taskpilot_app::ThroughputMinute>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn dead_letters(
//! #       &self,
//! #       _: &taskpilot_app::DeadLetterQuery,
//! #   ) -> Result<Vec<taskpilot_app::DeadLetterGroup>, RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn record_workers(
//! #       &self,
//! #       _: &[taskpilot_app::WorkerSighting],
//! #       _: chrono::DateTime<chrono::Utc>,
//! #   ) -> Result<(), RepoError> {
//! #       unimplemented!()
//! #   }
//! #   fn workers(
//! #       &self,
//! #       _: chrono::DateTime<chrono::Utc>,
//! #       _: u32,
//! #   ) -> Result<Vec<taskpilot_app::WorkerSighting>, RepoError> {
//! #       unimplemented!()
//! #   }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let service = TaskService::new(
//!     Arc::new(InMemory::default()),
//!     Arc::new(SystemClock),
//!     Arc::new(ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::minutes(5))?),
//!     ServiceDefaults { max_attempts: MaxAttempts::new(3)?, lease: LeaseDuration::from_secs(60)? },
//! );
//!
//! let task = service.create(CreateTask {
//!     queue: None,
//!     name: TaskName::parse("send-email")?,
//!     payload: json!({"to": "ada@example.com"}),
//!     priority: 0,
//!     max_attempts: None,
//!     max_crashes: None,
//!     run_at: None,
//!     unique_key: None,
//!     on_conflict: OnConflict::Return,
//! })?;
//! let worker = WorkerId::parse("worker-1")?;
//! let started = service.start(task.id(), &worker, None)?;
//! let token = started.lease().ok_or("a started task holds a lease")?.token;
//! let done = service.succeed(task.id(), &Reporter::lease(Some(worker), token), None)?;
//!
//! assert_eq!(done.status(), TaskStatus::Succeeded);
//! assert_eq!(service.events(task.id())?.len(), 3, "created, started, succeeded");
//! # Ok(())
//! # }
//! ```
//!
//! # Testing code that uses the service
//!
//! With feature `mocks`, `MockTaskRepository` stands in for storage; its expectations
//! state what the use case must do, and any call it was not told to expect fails the test.
//!
//! ```
//! use std::sync::Arc;
//!
//! use chrono::{TimeDelta, TimeZone, Utc};
//! use taskpilot_app::{AppError, MockTaskRepository, RepoError, ServiceDefaults, TaskService};
//! use taskpilot_domain::{ExponentialBackoff, FixedClock, LeaseDuration, MaxAttempts, TaskId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let id = TaskId::from_uuid(uuid::Uuid::from_u128(1));
//! let mut repo = MockTaskRepository::new();
//! repo.expect_get().times(1).returning(|id| Err(RepoError::NotFound(id)));
//! repo.expect_update().never();
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().ok_or("a valid instant")?;
//! let service = TaskService::new(
//!     Arc::new(repo),
//!     Arc::new(FixedClock::new(now)),
//!     Arc::new(ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::minutes(5))?),
//!     ServiceDefaults { max_attempts: MaxAttempts::new(3)?, lease: LeaseDuration::from_secs(60)? },
//! );
//!
//! let outcome = service.cancel(id);
//!
//! assert!(matches!(outcome, Err(AppError::NotFound(i)) if i == id));
//! # Ok(())
//! # }
//! ```

mod access;
mod clock;
mod counts;
mod error;
mod events;
mod observer;
mod repository;
mod service;

#[cfg(any(test, feature = "mocks"))]
pub use access::MockTokenRepository;
pub use access::{
    AccessService, AuthError, IssuedToken, LoginError, NewToken, SecretHash, StartedSession,
    TokenRepository,
};
pub use clock::SystemClock;
pub use counts::{
    DurationHistogram, DurationKind, QueueCounts, StatusCounts, TaskCounts, DURATION_BUCKETS,
};
pub use error::AppError;
pub use events::{Actor, EventKind, Rejection, RejectionCount, StaleCall, TaskEvent};
pub use observer::{NoObserver, TaskObserver};
#[cfg(any(test, feature = "mocks"))]
pub use repository::MockTaskRepository;
pub use repository::{
    BulkActionRecord, ClaimRequest, Cursor, NewIdempotencyKey, QueueActivity, RepoError,
    TaskFilter, TaskRepository, TaskWrite,
};
pub use service::{
    fingerprint, Acting, BulkAction, BulkItem, BulkReport, BulkRequest, BulkSelection, ClaimLog,
    Completion, CreateTask, Created, DeadLetterGroup, DeadLetterQuery, Idempotency, KeyedAnswer,
    OnConflict, Pruned, QueueView, ReportedOutcome, ServiceDefaults, TaskExplanation, TaskPage,
    TaskService, ThroughputMinute, VersionMatch, WorkerCall, WorkerLog, WorkerSighting, WorkerView,
    DEAD_LETTER_ERROR_CHARS, DEFAULT_IDEMPOTENCY_TTL, MAX_RUNNING_SHOWN, MAX_WORKERS_SHOWN,
    OPEN_SCOPE, WORKER_FORGET_AFTER, WORKER_SEEN_WINDOW,
};
