//! The task service and the use cases that read or create tasks.
//!
//! The use cases that move one task through its lifecycle are in `transitions`, the ones
//! that take many tasks in one round trip in `batch`, the deletion of finished tasks in
//! `retention`.

mod acting;
mod activity;
mod batch;
mod bulk;
mod idempotency;
mod queues;
mod retention;
mod transitions;
mod unique;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_api::limits::{DEFAULT_PAGE_SIZE, MAX_CLAIM_BATCH, MAX_PAGE_SIZE};
use taskpilot_domain::{
    BackoffPolicy, Clock, LeaseDuration, MaxAttempts, MaxCrashes, NewTask, QueueName, Retention,
    Task, TaskId, TaskName, TokenId, TokenName, UniqueKey, WorkerId,
};
use uuid::Uuid;

pub use acting::Acting;
pub use activity::{
    DeadLetterGroup, DeadLetterQuery, ThroughputMinute, WorkerCall, WorkerLog, WorkerSighting,
    WorkerView, DEAD_LETTER_ERROR_CHARS, MAX_RUNNING_SHOWN, MAX_WORKERS_SHOWN, WORKER_FORGET_AFTER,
    WORKER_SEEN_WINDOW,
};
pub use batch::{Completion, ReportedOutcome};
pub use bulk::{BulkAction, BulkItem, BulkReport, BulkRequest, BulkSelection};
pub use idempotency::{fingerprint, Idempotency, KeyedAnswer, DEFAULT_IDEMPOTENCY_TTL, OPEN_SCOPE};
pub use queues::{ClaimLog, QueueView, TaskExplanation};
pub use retention::Pruned;
pub use transitions::VersionMatch;

use crate::{
    Actor, AppError, ClaimRequest, Cursor, NoObserver, RejectionCount, RepoError, TaskCounts,
    TaskEvent, TaskFilter, TaskObserver, TaskRepository,
};

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
    /// Lease expiries before the task is quarantined; the service default when `None`.
    pub max_crashes: Option<MaxCrashes>,
    /// Not runnable before then.
    pub run_at: Option<DateTime<Utc>>,
    /// The same work as any other PENDING or RUNNING task of the queue with this key.
    pub unique_key: Option<UniqueKey>,
    /// What a create does when another active task of the queue holds `unique_key`.
    pub on_conflict: OnConflict,
}

/// What a create does when another PENDING or RUNNING task of its queue holds its unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Creates nothing and answers with the holder.
    #[default]
    Return,
    /// Creates nothing and fails with [`AppError::UniqueKeyHeld`].
    Reject,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The new task, or the active task that holds its unique key.
    pub task: Task,
    /// `false` when `task` is the holder and nothing was created.
    pub created: bool,
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

/// The task use cases, over a repository, a clock and a backoff policy.
#[derive(Clone)]
pub struct TaskService {
    repo: Arc<dyn TaskRepository>,
    clock: Arc<dyn Clock>,
    backoff: Arc<dyn BackoffPolicy>,
    defaults: ServiceDefaults,
    retention: Retention,
    /// How long an `Idempotency-Key` is kept.
    idempotency_ttl: chrono::TimeDelta,
    /// The crash budget of a task created without `maxCrashes`.
    max_crashes: MaxCrashes,
    observer: Arc<dyn TaskObserver>,
    /// The API token the use cases act for: its name goes into every history entry.
    token: Option<TokenName>,
    /// This server's last claim per queue, shared by every clone.
    claims: Arc<ClaimLog>,
    /// The worker calls this server answered since it last wrote them, shared by every clone.
    workers: Arc<WorkerLog>,
}

impl TaskService {
    /// A service over these ports, with the default [`Retention`].
    pub fn new(
        repo: Arc<dyn TaskRepository>,
        clock: Arc<dyn Clock>,
        backoff: Arc<dyn BackoffPolicy>,
        defaults: ServiceDefaults,
    ) -> Self {
        let claims = Arc::new(ClaimLog::new(clock.now()));
        Self {
            repo,
            clock,
            backoff,
            defaults,
            retention: Retention::default(),
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            max_crashes: MaxCrashes::DEFAULT,
            observer: Arc::new(NoObserver),
            token: None,
            claims,
            workers: Arc::new(WorkerLog::default()),
        }
    }

    /// The same service, writing `token` as the API token of every history entry it writes
    /// (see [`TaskService::acting_as`], which sets it for a caller's token).
    #[must_use]
    pub fn for_token(mut self, token: Option<TokenName>) -> Self {
        self.token = token;
        self
    }

    /// `event`, recorded as written for this service's token.
    fn stamp(&self, event: TaskEvent) -> TaskEvent {
        event.by(self.token.clone())
    }

    /// The same service, telling `observer` what it does (see [`TaskObserver`]).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn TaskObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The same service, pruning finished tasks by `retention` (see [`TaskService::prune`]).
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The same service, giving tasks created without `maxCrashes` that crash budget instead
    /// of [`MaxCrashes::DEFAULT`].
    #[must_use]
    pub fn with_default_max_crashes(mut self, max_crashes: MaxCrashes) -> Self {
        self.max_crashes = max_crashes;
        self
    }

    /// The crash budget of a task created without `maxCrashes`.
    pub fn default_max_crashes(&self) -> MaxCrashes {
        self.max_crashes
    }

    /// The service's defaults.
    pub fn defaults(&self) -> ServiceDefaults {
        self.defaults
    }

    /// The service's clock: what "now" means for every rule.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Creates a pending task with a fresh UUID v7 id.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] or [`AppError::Unexpected`] from storage.
    pub fn create(&self, request: CreateTask) -> Result<Task, AppError> {
        self.create_by(request, None)
    }

    /// Creates a pending task recorded as created by `token` ([`Task::created_by`]).
    ///
    /// # Errors
    /// As [`TaskService::create`].
    pub fn create_by(&self, request: CreateTask, token: Option<TokenId>) -> Result<Task, AppError> {
        self.create_unique_by(request, token).map(|c| c.task)
    }

    /// [`TaskService::create_by`], telling a new task from the active task that holds the
    /// request's unique key: with [`OnConflict::Return`] that task comes back with
    /// `created: false` and nothing is created.
    ///
    /// # Errors
    /// [`AppError::UniqueKeyHeld`] naming the holder with [`OnConflict::Reject`]; as
    /// [`TaskService::create`].
    pub fn create_unique_by(
        &self,
        request: CreateTask,
        token: Option<TokenId>,
    ) -> Result<Created, AppError> {
        let on_conflict = request.on_conflict;
        let task = self.new_task(request, self.clock.now()).with_creator(token);
        let event = self.stamp(TaskEvent::transition(None, &task, Actor::Client));
        match self.repo.insert(&task, &event) {
            Ok(()) => {
                self.observer.created(std::slice::from_ref(&task));
                Ok(Created { task, created: true })
            }
            Err(RepoError::UniqueKeyHeld(holder)) if on_conflict == OnConflict::Return => {
                match self.repo.get(holder) {
                    Ok(task) => Ok(Created { task, created: false }),
                    // Finished and deleted since: the key is free, the create may be tried
                    // again.
                    Err(RepoError::NotFound(_)) => Err(AppError::ConcurrentModification(holder)),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
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
    /// first, each under a fresh lease, from queues that are not paused. An empty list when
    /// nothing is runnable. Every claim, empty or not, is remembered as this server's last
    /// claim from the queues it asked for ([`ClaimLog`]).
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
        let now = self.clock.now();
        self.claims.record(queues.as_deref(), now);
        self.workers.record(worker, WorkerCall::Claim, now);
        let request = ClaimRequest {
            worker: worker.clone(),
            queues,
            limit,
            lease: lease.unwrap_or(self.defaults.lease),
            now,
        };
        let tasks = self.repo.claim(&request)?;
        if !tasks.is_empty() {
            self.observer.started(&tasks);
        }
        Ok(tasks)
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

    /// The maintained counts now: tasks by queue and status, the oldest runnable task of each
    /// queue, wait and run times; the first `max_queues` queues by name on their own, the
    /// rest together. Reading them costs the same however many tasks are stored.
    ///
    /// # Errors
    /// Storage errors.
    pub fn task_counts(&self, max_queues: u32) -> Result<TaskCounts, AppError> {
        Ok(self.repo.task_counts(self.clock.now(), max_queues)?)
    }

    /// Compacts up to `limit` changes of the maintained counts into their sums (see
    /// [`TaskRepository::fold_counts`]) and returns by how many records that shrank them.
    ///
    /// # Errors
    /// Storage errors.
    pub fn fold_counts(&self, limit: u32) -> Result<u64, AppError> {
        Ok(self.repo.fold_counts(self.clock.now(), limit)?)
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
            unique_key: request.unique_key,
        };
        Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, now)
            .with_max_crashes(request.max_crashes.unwrap_or(self.max_crashes))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeDelta;
    use mockall::predicate::eq;
    use serde_json::json;
    use taskpilot_domain::{Reporter, TaskStatus};

    use super::fixtures::*;
    use super::*;
    use crate::{MockTaskRepository, RepoError, StaleCall};

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
            .withf(|t, e| t.queue().as_str() == "default" && *e == creation_event(t))
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
            max_crashes: None,
            run_at: Some(run_at),
            ..create_request()
        };

        let task = service(repo).create(request).unwrap();

        assert_eq!(task.max_attempts().get(), 3);
        assert_eq!(task.next_run_at(), Some(run_at));
    }

    #[test]
    fn create_gives_the_service_default_crash_budget_unless_the_request_names_one() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert().times(2).returning(|_, _| Ok(()));
        let service = service(repo).with_default_max_crashes(MaxCrashes::new(7).unwrap());
        let explicit =
            CreateTask { max_crashes: Some(MaxCrashes::new(1).unwrap()), ..create_request() };

        let defaulted = service.create(create_request()).unwrap();
        let asked = service.create(explicit).unwrap();

        assert_eq!((defaulted.max_crashes().get(), defaulted.crash_count()), (7, 0));
        assert_eq!(asked.max_crashes().get(), 1);
        assert_eq!(service.default_max_crashes().get(), 7);
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
            statuses: vec![TaskStatus::Failed],
            name: Some(TaskName::parse("send-email").unwrap()),
            ..TaskFilter::default()
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
    fn the_next_scheduled_run_is_looked_up_after_the_given_instant() {
        let due = now() + TimeDelta::seconds(30);
        let mut repo = MockTaskRepository::new();
        repo.expect_earliest_scheduled_run()
            .withf(|after| *after == now())
            .times(1)
            .returning(move |_| Ok(Some(due)));

        assert_eq!(service(repo).next_scheduled_run(now()).unwrap(), Some(due));
    }

    #[test]
    fn ready_when_storage_answers() {
        let mut repo = MockTaskRepository::new();
        repo.expect_ping().times(1).returning(|| Ok(()));

        assert!(service(repo).ready().is_ok());
    }

    /// Every use case over storage that is down answers [`AppError::Unavailable`]: the
    /// caller tries again later, rather than getting a 500.
    #[test]
    fn every_use_case_reports_storage_that_is_down_as_unavailable() {
        type UseCase = fn(&TaskService) -> Result<(), AppError>;
        let use_cases: [(&str, UseCase); 19] = [
            ("create", |s| s.create(create_request()).map(drop)),
            ("create_batch", |s| s.create_batch(vec![create_request(); 2]).map(drop)),
            ("get", |s| s.get(id()).map(drop)),
            ("list", |s| s.list(&TaskFilter::default(), None, None).map(drop)),
            ("claim", |s| s.claim(&worker("w1"), None, 1, None).map(drop)),
            ("start", |s| s.start(id(), &worker("w1"), None).map(drop)),
            ("heartbeat", |s| s.heartbeat(id(), None, live_token(), None).map(drop)),
            ("succeed", |s| s.succeed(id(), &Reporter::anyone(), None).map(drop)),
            ("fail", |s| s.fail(id(), &Reporter::anyone(), "boom").map(drop)),
            ("fail_permanently", |s| s.fail_permanently(id(), &Reporter::anyone(), "x").map(drop)),
            ("release", |s| s.release(id(), &Reporter::anyone()).map(drop)),
            ("cancel", |s| s.cancel(id()).map(drop)),
            ("rerun", |s| s.rerun(id()).map(drop)),
            ("complete_batch", |s| {
                let item = Completion {
                    id: id(),
                    reporter: Reporter::anyone(),
                    outcome: ReportedOutcome::Released,
                };
                s.complete_batch(vec![item]).map(drop)
            }),
            ("reap_expired", |s| s.reap_expired(10).map(drop)),
            ("events", |s| s.events(id()).map(drop)),
            ("rejection_counts", |s| s.rejection_counts().map(drop)),
            ("next_scheduled_run", |s| s.next_scheduled_run(now()).map(drop)),
            ("ready", TaskService::ready),
        ];
        for (name, use_case) in use_cases {
            let outcome = use_case(&service(storage_down()));

            assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{name}: {outcome:?}");
        }
    }
}
