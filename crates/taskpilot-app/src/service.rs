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
    pub fn fail(
        &self,
        id: TaskId,
        worker: Option<&WorkerId>,
        error: &str,
    ) -> Result<Task, AppError> {
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;

    use chrono::{TimeDelta, TimeZone};
    use mockall::{predicate::eq, Sequence};
    use serde_json::json;
    use taskpilot_domain::{Action, FixedBackoff, FixedClock, RetryState, TaskName, TaskStatus};

    use super::*;
    use crate::MockTaskRepository;

    const DEFAULT_MAX_ATTEMPTS: i64 = 25;
    const BACKOFF: TimeDelta = TimeDelta::seconds(30);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    /// What the service's clock says: a minute after the stored tasks were created.
    fn now() -> DateTime<Utc> {
        t0() + TimeDelta::seconds(60)
    }

    fn id() -> TaskId {
        TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId::parse(name).unwrap()
    }

    fn service(repo: MockTaskRepository) -> TaskService {
        TaskService::new(
            Arc::new(repo),
            Arc::new(FixedClock::new(now())),
            Arc::new(FixedBackoff(BACKOFF)),
            MaxAttempts::new(DEFAULT_MAX_ATTEMPTS).unwrap(),
        )
    }

    fn new_task(id: TaskId, max_attempts: i64, created_at: DateTime<Utc>) -> Task {
        let spec = NewTask {
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

    fn running() -> Task {
        let mut task = pending();
        task.start(&worker("w1"), t0()).unwrap();
        task
    }

    /// Running its last attempt: the next failure is final.
    fn running_last_attempt() -> Task {
        let mut task = new_task(id(), 2, t0());
        task.start(&worker("w1"), t0()).unwrap();
        task.fail_and_schedule_retry(None, "first", t0(), &FixedBackoff(TimeDelta::zero()))
            .unwrap();
        task.start(&worker("w1"), t0()).unwrap();
        task
    }

    fn failed() -> Task {
        let mut task = running_last_attempt();
        task.fail_and_schedule_retry(None, "second", t0(), &FixedBackoff(BACKOFF)).unwrap();
        task
    }

    fn succeeded() -> Task {
        let mut task = running();
        task.succeed(None, None, t0()).unwrap();
        task
    }

    fn cancelled() -> Task {
        let mut task = pending();
        task.cancel(t0()).unwrap();
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
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": "ada@example.com"}),
            priority: 5,
            max_attempts: None,
            run_at: None,
        }
    }

    // --- create -----------------------------------------------------------------------------

    #[test]
    fn create_applies_the_default_max_attempts_and_inserts_exactly_once() {
        let inserted = Arc::new(Mutex::new(None));
        let mut repo = MockTaskRepository::new();
        let sink = Arc::clone(&inserted);
        repo.expect_insert()
            .withf(|t| {
                t.max_attempts().get() == 25
                    && t.status() == TaskStatus::Pending
                    && t.name().as_str() == "send-email"
                    && t.payload() == &json!({"to": "ada@example.com"})
                    && t.priority() == 5
                    && t.created_at() == now()
                    && t.version() == 1
            })
            .times(1)
            .returning(move |t| {
                *sink.lock().unwrap() = Some(t.clone());
                Ok(())
            });

        let task = service(repo).create(create_request()).unwrap();

        assert_eq!(inserted.lock().unwrap().as_ref(), Some(&task), "returns what it stored");
        assert_eq!(task.id().as_uuid().get_version_num(), 7, "ids are UUID v7");
        assert_eq!(task.next_run_at(), None);
    }

    #[test]
    fn create_keeps_an_explicit_max_attempts_and_a_future_run_at() {
        let run_at = now() + TimeDelta::seconds(600);
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(move |t| t.max_attempts().get() == 3 && t.next_run_at() == Some(run_at))
            .times(1)
            .returning(|_| Ok(()));
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
        repo.expect_insert().times(2).returning(|_| Ok(()));
        let service = service(repo);

        let first = service.create(create_request()).unwrap();
        let second = service.create(create_request()).unwrap();

        assert_ne!(first.id(), second.id());
    }

    #[test]
    fn create_reports_unavailable_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert().times(1).returning(|_| Err(unavailable()));

        let outcome = service(repo).create(create_request());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn create_reports_unexpected_storage_errors() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .times(1)
            .returning(|_| Err(RepoError::Unexpected(anyhow::anyhow!("bad row"))));

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

    // --- transitions ------------------------------------------------------------------------

    #[test]
    fn start_saves_the_running_task_against_the_version_it_read() {
        let stored = pending();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version| {
                *expected_version == 1
                    && t.version() == 2
                    && t.status() == TaskStatus::Running
                    && t.worker_id() == Some(&worker("w1"))
                    && t.processing_started_at() == Some(now())
                    && t.updated_at() == now()
            })
            .times(1)
            .returning(|_, _| Ok(()));

        let task = service(repo).start(id(), &worker("w1")).unwrap();

        assert_eq!(task.status(), TaskStatus::Running);
        assert_eq!(task.version(), 2);
    }

    #[test]
    fn succeed_saves_the_result_against_the_version_it_read() {
        let stored = running();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Succeeded
                    && t.result() == Some(&json!({"sent": true}))
                    && t.completed_at() == Some(now())
            })
            .times(1)
            .returning(|_, _| Ok(()));

        let task = service(repo).succeed(id(), Some(&worker("w1")), Some(json!({"sent": true})));

        assert_eq!(task.unwrap().status(), TaskStatus::Succeeded);
    }

    #[test]
    fn fail_saves_a_retry_after_the_backoff_against_the_version_it_read() {
        let stored = running();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, expected_version| {
                *expected_version == 2
                    && t.version() == 3
                    && t.status() == TaskStatus::Pending
                    && t.retry_state() == RetryState::RetryScheduled
                    && t.attempt_count() == 1
                    && t.next_run_at() == Some(now() + BACKOFF)
                    && t.last_error() == Some("smtp timeout")
                    && t.worker_id().is_none()
            })
            .times(1)
            .returning(|_, _| Ok(()));

        let task = service(repo).fail(id(), None, "smtp timeout").unwrap();

        assert_eq!(task.next_run_at(), Some(now() + BACKOFF));
    }

    #[test]
    fn fail_on_the_last_attempt_saves_the_task_as_failed_for_good() {
        let stored = running_last_attempt();
        let read_version = stored.version();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(move |t, expected_version| {
                *expected_version == read_version
                    && t.status() == TaskStatus::Failed
                    && t.retry_state() == RetryState::Exhausted
                    && t.completed_at() == Some(now())
            })
            .times(1)
            .returning(|_, _| Ok(()));

        let task = service(repo).fail(id(), Some(&worker("w1")), "again").unwrap();

        assert_eq!(task.status(), TaskStatus::Failed);
    }

    #[test]
    fn cancel_saves_the_cancelled_task_against_the_version_it_read() {
        for stored in [pending(), running()] {
            let read_version = stored.version();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update()
                .withf(move |t, expected_version| {
                    *expected_version == read_version
                        && t.version() == read_version + 1
                        && t.status() == TaskStatus::Cancelled
                        && t.completed_at() == Some(now())
                })
                .times(1)
                .returning(|_, _| Ok(()));

            let task = service(repo).cancel(id()).unwrap();

            assert_eq!(task.status(), TaskStatus::Cancelled);
        }
    }

    #[test]
    fn rerun_saves_a_fresh_pending_task_against_the_version_it_read() {
        for stored in [failed(), cancelled()] {
            let read_version = stored.version();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update()
                .withf(move |t, expected_version| {
                    *expected_version == read_version
                        && t.version() == read_version + 1
                        && t.status() == TaskStatus::Pending
                        && t.attempt_count() == 0
                        && t.retry_state() == RetryState::None
                        && t.next_run_at().is_none()
                })
                .times(1)
                .returning(|_, _| Ok(()));

            let task = service(repo).rerun(id()).unwrap();

            assert_eq!(task.status(), TaskStatus::Pending);
        }
    }

    type UseCase = fn(&TaskService) -> Result<Task, AppError>;

    fn use_cases() -> [(Action, UseCase); 5] {
        [
            (Action::Start, |s| s.start(id(), &worker("w2"))),
            (Action::Succeed, |s| s.succeed(id(), None, None)),
            (Action::Fail, |s| s.fail(id(), None, "boom")),
            (Action::Cancel, |s| s.cancel(id())),
            (Action::Rerun, |s| s.rerun(id())),
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
        ];
        for ((action, use_case), (refused_action, stored)) in use_cases().into_iter().zip(refused) {
            assert_eq!(action, refused_action);
            let from = stored.status();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();

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
        stored.fail_and_schedule_retry(None, "boom", now(), &FixedBackoff(BACKOFF)).unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().never();

        let outcome = service(repo).start(id(), &worker("w1"));

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
        let reports: [UseCase; 2] = [
            |s| s.succeed(id(), Some(&worker("w2")), None),
            |s| s.fail(id(), Some(&worker("w2")), "boom"),
        ];
        for report in reports {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &running());
            repo.expect_update().never();

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
        won.start(&worker("w9"), t0()).unwrap();
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        let first = pending();
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(first.clone()));
        repo.expect_update()
            .withf(|_, v| *v == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|t, _| Err(RepoError::Conflict(t.id())));
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(won.clone()));

        let outcome = service(repo).start(id(), &worker("w1"));

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
            .withf(|_, v| *v == 1)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|t, _| Err(RepoError::Conflict(t.id())));
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(moved_on.clone()));
        repo.expect_update()
            .withf(|t, v| *v == 3 && t.version() == 4 && t.status() == TaskStatus::Running)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));

        let task = service(repo).start(id(), &worker("w1")).unwrap();

        assert_eq!(task.version(), 4);
    }

    #[test]
    fn three_conflicts_in_a_row_give_up_with_concurrent_modification() {
        for (action, use_case) in use_cases() {
            let stored = match action {
                Action::Start | Action::Cancel => pending(),
                Action::Succeed | Action::Fail => running(),
                Action::Rerun => failed(),
            };
            let mut repo = MockTaskRepository::new();
            repo.expect_get().times(3).returning(move |_| Ok(stored.clone()));
            repo.expect_update().times(3).returning(|t, _| Err(RepoError::Conflict(t.id())));

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
            repo.expect_update().times(1).returning(move |_, _| Err(error()));

            let outcome = service(repo).start(id(), &worker("w1"));

            assert!(outcome.as_ref().is_err_and(expected), "{outcome:?}");
        }
    }

    #[test]
    fn a_save_while_storage_is_down_is_unavailable() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());
        repo.expect_update().times(1).returning(|_, _| Err(unavailable()));

        let outcome = service(repo).cancel(id());

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
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
}
