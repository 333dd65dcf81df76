//! The use cases as a caller may run them: every call first asks the domain's access rules
//! ([`Caller::may`], [`Caller::sees`]) whether this caller may do it, then runs the use case.
//! A task the caller may not see answers [`AppError::NotFound`], exactly as an unknown id
//! does, so that no caller learns which tasks exist outside its reach.

use taskpilot_domain::{
    Caller, Grant, LeaseDuration, LeaseToken, Operation, QueueName, QueueScope, Reporter, Task,
    TaskId, WorkerId,
};

use super::{
    BulkReport, BulkRequest, Completion, CreateTask, Created, DeadLetterGroup, Idempotency,
    KeyedAnswer, QueueView, TaskExplanation, TaskPage, TaskService, ThroughputMinute, VersionMatch,
    WorkerView,
};
use crate::{AppError, RejectionCount, TaskEvent, TaskFilter};

/// [`TaskService`] acting for one [`Caller`]; see [`TaskService::acting_as`].
#[derive(Clone)]
pub struct Acting<'a> {
    service: TaskService,
    caller: &'a Caller,
}

impl TaskService {
    /// The use cases as `caller` may run them; every history entry they write names the
    /// caller's token.
    pub fn acting_as<'a>(&self, caller: &'a Caller) -> Acting<'a> {
        let token = caller.token_id().map(|_| caller.name().clone());
        Acting { service: self.clone().for_token(token), caller }
    }
}

impl Acting<'_> {
    /// What the caller may do with `operation`.
    fn may(&self, operation: Operation) -> Result<Grant, AppError> {
        Ok(self.caller.may(operation)?)
    }

    /// Loads the task when the caller's grant or queues could hide it, and answers
    /// [`AppError::NotFound`] when they do. Unrestricted callers skip the read.
    fn check_visible(&self, id: TaskId, grant: Grant) -> Result<Option<Task>, AppError> {
        if grant == Grant::Any && *self.caller.queues() == QueueScope::All {
            return Ok(None);
        }
        let task = self.service.get(id)?;
        if self.caller.sees(&task, grant) {
            Ok(Some(task))
        } else {
            Err(AppError::NotFound(id))
        }
    }

    /// Creates a task, recorded as created by the caller's token.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for a caller that may not create tasks or not in this queue;
    /// as [`TaskService::create`].
    pub fn create(&self, request: CreateTask) -> Result<Task, AppError> {
        self.create_unique(request).map(|c| c.task)
    }

    /// [`Acting::create`], telling a new task from the active one that holds the request's
    /// unique key (see [`TaskService::create_unique_by`]).
    ///
    /// # Errors
    /// As [`Acting::create`]; as [`TaskService::create_unique_by`].
    pub fn create_unique(&self, request: CreateTask) -> Result<Created, AppError> {
        self.may(Operation::CreateTask)?;
        self.caller.may_use_queue(request.queue.as_ref().unwrap_or(&QueueName::default()))?;
        self.service.create_unique_by(request, self.caller.token_id())
    }

    /// Creates a batch, each task recorded as created by the caller's token.
    ///
    /// # Errors
    /// As [`Acting::create`], for any item; as [`TaskService::create_batch`].
    pub fn create_batch(&self, requests: Vec<CreateTask>) -> Result<Vec<Task>, AppError> {
        Ok(self.create_batch_unique(requests)?.into_iter().map(|c| c.task).collect())
    }

    /// [`Acting::create_batch`], answering each item on its own (see
    /// [`TaskService::create_batch_unique_by`]).
    ///
    /// # Errors
    /// As [`Acting::create_batch`]; as [`TaskService::create_batch_unique_by`].
    pub fn create_batch_unique(&self, requests: Vec<CreateTask>) -> Result<Vec<Created>, AppError> {
        self.may(Operation::CreateTask)?;
        for request in &requests {
            self.caller.may_use_queue(request.queue.as_ref().unwrap_or(&QueueName::default()))?;
        }
        self.service.create_batch_unique_by(requests, self.caller.token_id())
    }

    /// [`Acting::create`] under an `Idempotency-Key` of the caller's token (see
    /// [`TaskService::create_keyed`]).
    ///
    /// # Errors
    /// As [`Acting::create`]; as [`TaskService::create_keyed`].
    pub fn create_keyed(
        &self,
        request: CreateTask,
        idempotency: Idempotency,
        render: impl Fn(&Created) -> Result<taskpilot_domain::StoredResponse, AppError>,
    ) -> Result<KeyedAnswer, AppError> {
        self.may(Operation::CreateTask)?;
        self.caller.may_use_queue(request.queue.as_ref().unwrap_or(&QueueName::default()))?;
        self.service.create_keyed(request, self.caller.token_id(), idempotency, render)
    }

    /// [`Acting::create_batch`] under an `Idempotency-Key` of the caller's token (see
    /// [`TaskService::create_batch_keyed`]).
    ///
    /// # Errors
    /// As [`Acting::create_batch`]; as [`TaskService::create_batch_keyed`].
    pub fn create_batch_keyed(
        &self,
        requests: Vec<CreateTask>,
        idempotency: Idempotency,
        render: impl Fn(&[Created]) -> Result<taskpilot_domain::StoredResponse, AppError>,
    ) -> Result<KeyedAnswer, AppError> {
        self.may(Operation::CreateTask)?;
        for request in &requests {
            self.caller.may_use_queue(request.queue.as_ref().unwrap_or(&QueueName::default()))?;
        }
        self.service.create_batch_keyed(requests, self.caller.token_id(), idempotency, render)
    }

    /// Loads one task the caller may see.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] also for a task out of reach.
    pub fn get(&self, id: TaskId) -> Result<Task, AppError> {
        let grant = self.may(Operation::ReadTask)?;
        match self.check_visible(id, grant)? {
            Some(task) => Ok(task),
            None => self.service.get(id),
        }
    }

    /// The history of a task the caller may see.
    ///
    /// # Errors
    /// As [`Acting::get`]; as [`TaskService::events`].
    pub fn events(&self, id: TaskId) -> Result<Vec<TaskEvent>, AppError> {
        let grant = self.may(Operation::ReadTask)?;
        self.check_visible(id, grant)?;
        self.service.events(id)
    }

    /// One page of the tasks the caller may see: a producer's own, within its queues.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], also for a queue filter outside the caller's queues; as
    /// [`TaskService::list`].
    pub fn list(
        &self,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<TaskPage, AppError> {
        let grant = self.may(Operation::ListTasks)?;
        let mut filter = filter.clone();
        if let Some(queue) = &filter.queue {
            self.caller.may_use_queue(queue)?;
        }
        filter.queues = self.caller.queues().to_list();
        if grant == Grant::Own {
            // A token-less caller never holds a producer's grant: open access is an admin.
            filter.created_by = self.caller.token_id();
        }
        self.service.list(&filter, cursor, limit)
    }

    /// Claims for the caller, from the queues asked for within its reach (its own list
    /// when it asks for none).
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::claim`].
    pub fn claim(
        &self,
        worker: &WorkerId,
        queues: Option<Vec<QueueName>>,
        limit: u32,
        lease: Option<LeaseDuration>,
    ) -> Result<Vec<Task>, AppError> {
        self.may(Operation::Claim)?;
        let queues = self.caller.queues().claimable(queues)?;
        self.service.claim(worker, queues, limit, lease)
    }

    /// Starts a pending task by id, if it is within the caller's queues.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] also for a task out of reach; as
    /// [`TaskService::start`].
    pub fn start(
        &self,
        id: TaskId,
        worker: &WorkerId,
        lease: Option<LeaseDuration>,
    ) -> Result<Task, AppError> {
        let grant = self.may(Operation::LeaseCall)?;
        self.check_visible(id, grant)?;
        self.service.start(id, worker, lease)
    }

    /// Heartbeats an attempt; the lease token is the proof of the claim.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::heartbeat`].
    pub fn heartbeat(
        &self,
        id: TaskId,
        worker: Option<&WorkerId>,
        token: LeaseToken,
        lease: Option<LeaseDuration>,
    ) -> Result<Task, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.heartbeat(id, worker, token, lease)
    }

    /// Reports a success.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::succeed`].
    pub fn succeed(
        &self,
        id: TaskId,
        reporter: &Reporter,
        result: Option<serde_json::Value>,
    ) -> Result<Task, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.succeed(id, reporter, result)
    }

    /// Reports a failure that may be retried.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::fail`].
    pub fn fail(&self, id: TaskId, reporter: &Reporter, error: &str) -> Result<Task, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.fail(id, reporter, error)
    }

    /// Reports a failure that must not be retried.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::fail_permanently`].
    pub fn fail_permanently(
        &self,
        id: TaskId,
        reporter: &Reporter,
        error: &str,
    ) -> Result<Task, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.fail_permanently(id, reporter, error)
    }

    /// Gives a claimed task back.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::release`].
    pub fn release(&self, id: TaskId, reporter: &Reporter) -> Result<Task, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.release(id, reporter)
    }

    /// Reports many outcomes at once.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::complete_batch`].
    pub fn complete_batch(
        &self,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<Task, AppError>>, AppError> {
        self.may(Operation::LeaseCall)?;
        self.service.complete_batch(completions)
    }

    /// Cancels a task the caller may cancel (a producer: one it created).
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] also for a task out of reach; as
    /// [`TaskService::cancel`].
    pub fn cancel(&self, id: TaskId) -> Result<Task, AppError> {
        self.cancel_matching(id, &VersionMatch::Any)
    }

    /// [`Acting::cancel`] on a version `expected` allows ([`TaskService::cancel_matching`]).
    ///
    /// # Errors
    /// As [`Acting::cancel`]; [`AppError::PreconditionFailed`].
    pub fn cancel_matching(&self, id: TaskId, expected: &VersionMatch) -> Result<Task, AppError> {
        let grant = self.may(Operation::CancelTask)?;
        self.check_visible(id, grant)?;
        self.service.cancel_matching(id, expected)
    }

    /// Reruns a finished task.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] also for a task out of reach; as
    /// [`TaskService::rerun`].
    pub fn rerun(&self, id: TaskId) -> Result<Task, AppError> {
        self.rerun_matching(id, &VersionMatch::Any)
    }

    /// [`Acting::rerun`] on a version `expected` allows ([`TaskService::rerun_matching`]).
    ///
    /// # Errors
    /// As [`Acting::rerun`]; [`AppError::PreconditionFailed`].
    pub fn rerun_matching(&self, id: TaskId, expected: &VersionMatch) -> Result<Task, AppError> {
        let grant = self.may(Operation::RerunTask)?;
        self.check_visible(id, grant)?;
        self.service.rerun_matching(id, expected)
    }

    /// Runs a bulk action over the tasks within the caller's queues, recorded with its token.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] unless the caller may act in bulk, also for a queue filter
    /// outside its queues; as [`TaskService::bulk`].
    pub fn bulk(&self, request: &BulkRequest) -> Result<BulkReport, AppError> {
        self.may(Operation::BulkAction)?;
        if let super::BulkSelection::Filter(TaskFilter { queue: Some(queue), .. }) =
            &request.selection
        {
            self.caller.may_use_queue(queue)?;
        }
        self.service.bulk(request, self.caller.queues())
    }

    /// How many stale calls were refused.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; storage errors.
    pub fn rejection_counts(&self) -> Result<Vec<RejectionCount>, AppError> {
        self.may(Operation::ReadStats)?;
        self.service.rejection_counts()
    }

    /// Why a task the caller may see is not running (a producer: one it created).
    ///
    /// # Errors
    /// As [`Acting::get`]; as [`TaskService::explain`].
    pub fn explain(&self, id: TaskId) -> Result<TaskExplanation, AppError> {
        let grant = self.may(Operation::ReadTask)?;
        match self.check_visible(id, grant)? {
            Some(task) => self.service.explain_task(task),
            None => self.service.explain(id),
        }
    }

    /// The queues within the caller's reach.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::queues`].
    pub fn queues(&self) -> Result<Vec<QueueView>, AppError> {
        self.may(Operation::ReadQueues)?;
        let mut queues = self.service.queues()?;
        queues.retain(|q| self.caller.queues().allows(&q.queue));
        Ok(queues)
    }

    /// One queue within the caller's reach.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], also for a queue outside its reach; as [`TaskService::queue`].
    pub fn queue(&self, queue: &QueueName) -> Result<QueueView, AppError> {
        self.may(Operation::ReadQueues)?;
        self.caller.may_use_queue(queue)?;
        self.service.queue(queue)
    }

    /// Pauses a queue within the caller's reach, recorded with the caller's token name.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::pause_queue`].
    pub fn pause_queue(
        &self,
        queue: &QueueName,
        if_match: &VersionMatch,
    ) -> Result<QueueView, AppError> {
        self.may(Operation::ManageQueues)?;
        self.caller.may_use_queue(queue)?;
        self.service.pause_queue(queue, self.caller.name(), if_match)
    }

    /// Resumes a queue within the caller's reach.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::resume_queue`].
    pub fn resume_queue(
        &self,
        queue: &QueueName,
        if_match: &VersionMatch,
    ) -> Result<QueueView, AppError> {
        self.may(Operation::ManageQueues)?;
        self.caller.may_use_queue(queue)?;
        self.service.resume_queue(queue, if_match)
    }

    /// Tasks created and finished per minute over the last `minutes` minutes in the queues
    /// within the caller's reach, narrowed to `queue` when given.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], also for a `queue` outside its reach; as
    /// [`TaskService::throughput`].
    pub fn throughput(
        &self,
        minutes: u32,
        queue: Option<&QueueName>,
    ) -> Result<Vec<ThroughputMinute>, AppError> {
        self.may(Operation::ReadStats)?;
        let queues = match queue {
            Some(queue) => {
                self.caller.may_use_queue(queue)?;
                Some(vec![queue.clone()])
            }
            None => self.caller.queues().to_list(),
        };
        self.service.throughput(minutes, queues.as_deref())
    }

    /// The failed tasks the caller may list, grouped by queue, name and error (a producer:
    /// those it created).
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::dead_letters`].
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterGroup>, AppError> {
        let grant = self.may(Operation::ListTasks)?;
        // A token-less caller never holds a producer's grant: open access is an admin.
        let created_by = if grant == Grant::Own { self.caller.token_id() } else { None };
        self.service.dead_letters(limit, self.caller.queues().to_list(), created_by)
    }

    /// The workers seen recently, with their running tasks in the caller's queues.
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; as [`TaskService::workers`].
    pub fn workers(&self) -> Result<Vec<WorkerView>, AppError> {
        self.may(Operation::ReadQueues)?;
        self.service.workers(self.caller.queues().to_list())
    }

    /// Fails unless the caller may do `operation` (for calls outside the task use cases,
    /// such as reading metrics or managing tokens).
    ///
    /// # Errors
    /// [`AppError::Forbidden`].
    pub fn authorize(&self, operation: Operation) -> Result<(), AppError> {
        self.may(operation).map(drop)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use taskpilot_domain::{TokenId, TokenKind, TokenName};
    use uuid::Uuid;

    use super::super::fixtures::*;
    use super::*;
    use crate::MockTaskRepository;

    fn caller(kind: TokenKind, n: u128, queues: QueueScope) -> Caller {
        let name = TokenName::parse("t").unwrap();
        Caller::token(TokenId::from_uuid(Uuid::from_u128(n)), name, kind, queues)
    }

    fn emails_only() -> QueueScope {
        QueueScope::from_list(Some(vec![queue("emails")])).unwrap()
    }

    #[test]
    fn a_producer_records_itself_as_creator_and_cannot_create_outside_its_queues() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(|t, e| {
                t.created_by() == Some(TokenId::from_uuid(Uuid::from_u128(5)))
                    && e.token.as_ref().map(TokenName::as_str) == Some("t")
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let service = service(repo);
        let producer = caller(TokenKind::Producer, 5, emails_only());

        let request = CreateTask { queue: Some(queue("emails")), ..create_request() };
        service.acting_as(&producer).create(request).unwrap();

        let elsewhere = CreateTask { queue: Some(queue("billing")), ..create_request() };
        let refused = service.acting_as(&producer).create(elsewhere);
        assert!(matches!(refused, Err(AppError::Forbidden(_))), "{refused:?}");
        let default_queue = service.acting_as(&producer).create(create_request());
        assert!(matches!(default_queue, Err(AppError::Forbidden(_))));
    }

    #[test]
    fn another_producers_task_is_not_found_and_is_not_cancelled() {
        let mut repo = MockTaskRepository::new();
        let theirs = pending().with_creator(Some(TokenId::from_uuid(Uuid::from_u128(6))));
        let id = theirs.id();
        repo.expect_get().returning(move |_| Ok(theirs.clone()));
        let service = service(repo);
        let producer = caller(TokenKind::Producer, 5, QueueScope::All);

        assert!(
            matches!(service.acting_as(&producer).get(id), Err(AppError::NotFound(i)) if i == id)
        );
        assert!(matches!(service.acting_as(&producer).events(id), Err(AppError::NotFound(_))));
        assert!(matches!(service.acting_as(&producer).cancel(id), Err(AppError::NotFound(_))));
        assert!(matches!(service.acting_as(&producer).rerun(id), Err(AppError::Forbidden(_))));
    }

    #[test]
    fn a_producer_lists_its_own_tasks_within_its_queues() {
        let mut repo = MockTaskRepository::new();
        repo.expect_list()
            .withf(|f, _, _| {
                f.created_by == Some(TokenId::from_uuid(Uuid::from_u128(5)))
                    && f.queues == Some(vec![queue("emails")])
            })
            .times(1)
            .returning(|_, _, _| Ok(vec![]));
        let service = service(repo);
        let producer = caller(TokenKind::Producer, 5, emails_only());

        service.acting_as(&producer).list(&TaskFilter::default(), None, None).unwrap();
        let other = TaskFilter { queue: Some(queue("billing")), ..TaskFilter::default() };
        assert!(matches!(
            service.acting_as(&producer).list(&other, None, None),
            Err(AppError::Forbidden(_))
        ));
    }

    #[test]
    fn a_worker_claims_only_from_its_queues_and_reads_nothing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_claim()
            .withf(|r| r.queues == Some(vec![queue("emails")]))
            .times(1)
            .returning(|_| Ok(vec![]));
        let service = service(repo);
        let fleet = caller(TokenKind::Worker, 7, emails_only());
        let worker = WorkerId::parse("w").unwrap();

        service.acting_as(&fleet).claim(&worker, None, 10, None).unwrap();
        let outside = service.acting_as(&fleet).claim(&worker, Some(vec![queue("sms")]), 10, None);
        assert!(matches!(outside, Err(AppError::Forbidden(_))));
        let read = service.acting_as(&fleet).get(TaskId::from_uuid(Uuid::from_u128(1)));
        assert!(matches!(read, Err(AppError::Forbidden(_))));
    }

    #[test]
    fn a_viewer_reads_queues_within_its_reach_and_only_an_operator_pauses() {
        let mut repo = MockTaskRepository::new();
        repo.expect_task_counts().returning(|_, _| Ok(crate::TaskCounts::default()));
        repo.expect_queue_activity().returning(|_| Ok(vec![]));
        repo.expect_queue_states().returning(|| {
            let state = taskpilot_domain::QueueState::default();
            Ok(vec![(queue("emails"), state.clone()), (queue("sms"), state)])
        });
        repo.expect_write_queue_state().never();
        let service = service(repo);
        let viewer = caller(TokenKind::Viewer, 8, emails_only());

        let seen: Vec<_> = service.acting_as(&viewer).queues().unwrap();
        assert_eq!(seen.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(), ["emails"]);
        assert!(matches!(
            service.acting_as(&viewer).queue(&queue("sms")),
            Err(AppError::Forbidden(_))
        ));
        assert!(matches!(
            service.acting_as(&viewer).pause_queue(&queue("emails"), &VersionMatch::Any),
            Err(AppError::Forbidden(_))
        ));
        let operator = caller(TokenKind::Operator, 9, emails_only());
        assert!(matches!(
            service.acting_as(&operator).resume_queue(&queue("sms"), &VersionMatch::Any),
            Err(AppError::Forbidden(_))
        ));
        let worker = caller(TokenKind::Worker, 10, QueueScope::All);
        assert!(matches!(service.acting_as(&worker).queues(), Err(AppError::Forbidden(_))));
    }

    #[test]
    fn a_producer_explains_only_its_own_tasks() {
        let mut repo = MockTaskRepository::new();
        let theirs = pending().with_creator(Some(TokenId::from_uuid(Uuid::from_u128(6))));
        let id = theirs.id();
        repo.expect_get().returning(move |_| Ok(theirs.clone()));
        repo.expect_queue_state().never();
        let service = service(repo);
        let producer = caller(TokenKind::Producer, 5, QueueScope::All);

        assert!(matches!(service.acting_as(&producer).explain(id), Err(AppError::NotFound(_))));
    }

    #[test]
    fn open_access_reads_without_an_extra_lookup() {
        let mut repo = MockTaskRepository::new();
        let task = pending();
        let id = task.id();
        repo.expect_get().times(1).returning(move |_| Ok(task.clone()));
        let service = service(repo);

        service.acting_as(&Caller::open()).get(id).unwrap();
    }
}
