//! TaskPilot's use cases: create, read, list and move tasks through their lifecycle.
//!
//! [`TaskService`] runs each use case over the [`TaskRepository`] port and the domain's
//! [`Clock`](taskpilot_domain::Clock) and [`BackoffPolicy`](taskpilot_domain::BackoffPolicy)
//! ports. It decides nothing itself: every rule is the domain's. It must not import a
//! database or web crate; adapters implement the port and call the service.
//!
//! Feature `mocks` exports `MockTaskRepository` (mockall) for downstream unit tests.

mod events;
mod repository;
mod service;

pub use events::{Actor, Rejection, RejectionCount, StaleCall, TaskEvent};
#[cfg(any(test, feature = "mocks"))]
pub use repository::MockTaskRepository;
pub use repository::{ClaimRequest, Cursor, RepoError, TaskFilter, TaskRepository, TaskWrite};
pub use service::{
    AppError, Completion, CreateTask, Outcome, ServiceDefaults, SystemClock, TaskPage, TaskService,
    DEFAULT_PAGE_SIZE, MAX_BATCH, MAX_CLAIM_BATCH, MAX_PAGE_SIZE,
};
