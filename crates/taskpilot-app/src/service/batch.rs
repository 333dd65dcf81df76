//! The use cases that take many tasks in one round trip: creating a batch, and reporting
//! the outcomes of many attempts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_api::limits::MAX_BATCH;
use taskpilot_domain::{Applied, DomainError, LiveSuccess, Reporter, Task, TaskId, TokenId};

use super::{CreateTask, Created, OnConflict, TaskService, WorkerCall};
use crate::{Actor, AppError, StaleCall, TaskEvent, TaskWrite};

/// How an attempt ended, as its worker reports it in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportedOutcome {
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

impl ReportedOutcome {
    /// The call a refusal of this report is recorded as.
    fn call(&self) -> StaleCall {
        match self {
            Self::Succeeded { .. } => StaleCall::Succeed,
            Self::Failed { .. } => StaleCall::Fail,
            Self::Released => StaleCall::Release,
        }
    }
}

/// One outcome of a batch: the task, who reports, and how its attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The task.
    pub id: TaskId,
    /// Who reports, with the attempt's lease token.
    pub reporter: Reporter,
    /// How the attempt ended.
    pub outcome: ReportedOutcome,
}

impl TaskService {
    /// Creates up to [`MAX_BATCH`] tasks at once: all of them or, on any error, none.
    ///
    /// # Errors
    /// [`AppError::InvalidBatchSize`]; storage errors.
    pub fn create_batch(&self, requests: Vec<CreateTask>) -> Result<Vec<Task>, AppError> {
        self.create_batch_by(requests, None)
    }

    /// Creates a batch recorded as created by `token` ([`Task::created_by`]).
    ///
    /// # Errors
    /// As [`TaskService::create_batch_unique_by`].
    pub fn create_batch_by(
        &self,
        requests: Vec<CreateTask>,
        token: Option<TokenId>,
    ) -> Result<Vec<Task>, AppError> {
        Ok(self.create_batch_unique_by(requests, token)?.into_iter().map(|c| c.task).collect())
    }

    /// [`TaskService::create_batch_by`], answering each item on its own: an item whose unique
    /// key an active task of its queue holds gets that task (`created: false`) and creates
    /// nothing; the others are created, all together.
    ///
    /// # Errors
    /// [`AppError::InvalidBatchSize`]; [`AppError::UniqueKeyHeld`] naming the first item whose
    /// key is held and that asked for [`OnConflict::Reject`], or [`AppError::RepeatedUniqueKey`]
    /// for such an item that repeats an earlier item's queue and key (nothing is created
    /// then); storage errors. An item that repeats an earlier one's queue and key with
    /// [`OnConflict::Return`] answers what the earlier one answers, `created: false`.
    pub fn create_batch_unique_by(
        &self,
        requests: Vec<CreateTask>,
        token: Option<TokenId>,
    ) -> Result<Vec<Created>, AppError> {
        let tasks = self.new_batch(requests, token)?;
        let (answers, ()) = self.store_unique(tasks, true, |new, _| {
            let events: Vec<TaskEvent> = new
                .iter()
                .map(|t| self.stamp(TaskEvent::transition(None, t, Actor::Client)))
                .collect();
            self.repo.insert_many(new, &events)?;
            self.observer.created(new);
            Ok(())
        })?;
        Ok(answers)
    }

    /// The tasks of a batch, created now by `token`, each with what it does when its unique
    /// key is held, once its size is checked.
    pub(super) fn new_batch(
        &self,
        requests: Vec<CreateTask>,
        token: Option<TokenId>,
    ) -> Result<Vec<(Task, OnConflict)>, AppError> {
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(AppError::InvalidBatchSize(requests.len()));
        }
        let now = self.clock.now();
        Ok(requests
            .into_iter()
            .map(|r| {
                let on_conflict = r.on_conflict;
                (self.new_task(r, now).with_creator(token), on_conflict)
            })
            .collect())
    }

    /// Reports up to [`MAX_BATCH`] outcomes at once, each under the fencing rules of a single
    /// report and each with its own answer, in the order given.
    ///
    /// The successes that carry a token, of tasks named once in the batch, are written first
    /// as the domain's [`LiveSuccess`] patches in one statement without a read: each applies
    /// where its task runs that token's attempt. Every other item, and every success whose
    /// guard did not match, is judged by the domain on the stored task: those tasks are read
    /// in one round trip and written back in one atomic round trip with compare-and-swap on
    /// each; an item whose task changed meanwhile is retried alone. Several outcomes for one
    /// task are judged in order, so a repeat in the same batch is a replay.
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
        let now = self.clock.now();
        for worker in items.iter().filter_map(|item| item.reporter.worker_id.as_ref()) {
            self.workers.record(worker, WorkerCall::Report, now);
        }
        let mut answers: Vec<Option<Result<Task, AppError>>> = items.iter().map(|_| None).collect();
        self.complete_live_successes(&items, now, &mut answers)?;
        let rest: Vec<(usize, &Completion)> =
            items.iter().enumerate().filter(|(i, _)| answers[*i].is_none()).collect();
        if !rest.is_empty() {
            let judged = self.complete_judged(rest.iter().map(|(_, item)| *item), now)?;
            for ((i, _), answer) in rest.iter().zip(judged) {
                answers[*i] = Some(answer);
            }
        }
        Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    Err(AppError::Unexpected(anyhow::anyhow!("batch lost an item")))
                })
            })
            .collect())
    }

    /// Writes the batch's successes with a token, of tasks it names once, as live successes
    /// in one statement, and answers those that applied. Items for a task named more than
    /// once are left to [`TaskService::complete_judged`], which judges them in order.
    fn complete_live_successes(
        &self,
        items: &[Completion],
        now: DateTime<Utc>,
        answers: &mut [Option<Result<Task, AppError>>],
    ) -> Result<(), AppError> {
        let mut named: HashMap<TaskId, usize> = HashMap::with_capacity(items.len());
        for item in items {
            *named.entry(item.id).or_default() += 1;
        }
        let (positions, successes): (Vec<usize>, Vec<(TaskId, LiveSuccess)>) = items
            .iter()
            .enumerate()
            .filter(|(_, item)| named.get(&item.id) == Some(&1))
            .filter_map(|(i, item)| {
                let ReportedOutcome::Succeeded { result } = &item.outcome else { return None };
                let success = Task::success_for_live_attempt(&item.reporter, result.clone(), now)?;
                Some((i, (item.id, success)))
            })
            .unzip();
        if successes.is_empty() {
            return Ok(());
        }
        let mut stored: HashMap<TaskId, Task> = self
            .repo
            .succeed_live(&successes, self.token.as_ref())?
            .into_iter()
            .map(|t| (t.id(), t))
            .collect();
        for (i, (id, _)) in positions.into_iter().zip(&successes) {
            if let Some(task) = stored.remove(id) {
                self.observer.attempt_ended(&task);
                answers[i] = Some(Ok(task));
            }
        }
        Ok(())
    }

    /// Judges `items` on their stored tasks, read in one round trip, and writes the changes
    /// back in one atomic round trip with compare-and-swap on each row; one answer per item,
    /// in their order.
    fn complete_judged<'a>(
        &self,
        items: impl Iterator<Item = &'a Completion> + Clone,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Task, AppError>>, AppError> {
        let mut ids: Vec<TaskId> = items.clone().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tasks: HashMap<TaskId, (u64, Task, Vec<TaskEvent>)> = self
            .repo
            .get_many(&ids)?
            .into_iter()
            .map(|t| (t.id(), (t.version(), t, Vec::new())))
            .collect();
        let mut rejections = Vec::new();
        let mut answers: Vec<Option<Result<Task, AppError>>> = Vec::new();
        for item in items.clone() {
            let Some((_, task, events)) = tasks.get_mut(&item.id) else {
                answers.push(Some(Err(AppError::NotFound(item.id))));
                continue;
            };
            let before = task.clone();
            match self.apply_outcome(task, item, now) {
                Ok(Applied::Changed) => {
                    events.push(self.stamp(TaskEvent::transition(
                        Some(&before),
                        task,
                        Actor::Worker,
                    )));
                    answers.push(None); // known once the write is stored
                }
                Ok(Applied::Replayed) => {
                    self.observer.replayed(item.outcome.call());
                    answers.push(Some(Ok(task.clone())));
                }
                Err(DomainError::StaleLease(refusal)) => {
                    let call = item.outcome.call();
                    self.observer.refused(call, refusal.code());
                    let worker = item.reporter.worker_id.clone();
                    rejections.push(
                        self.stamp(TaskEvent::rejection(&before, worker, call, &refusal, now)),
                    );
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
        for write in writes.iter().filter(|w| !lost.contains(&w.task.id())) {
            // Each write is the last of its task's transitions in this batch: the attempt it
            // ended, if one (a batch ends at most one attempt per task).
            if write.task.status() != taskpilot_domain::TaskStatus::Running {
                self.observer.attempt_ended(&write.task);
            }
        }
        Ok(items
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

    /// The domain transition `item` asks for.
    fn apply_outcome(
        &self,
        task: &mut Task,
        item: &Completion,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        match &item.outcome {
            ReportedOutcome::Succeeded { result } => {
                task.succeed(&item.reporter, result.clone(), now)
            }
            ReportedOutcome::Failed { error, retryable: true } => {
                task.fail_and_schedule_retry(&item.reporter, error, now, self.backoff.as_ref())
            }
            ReportedOutcome::Failed { error, retryable: false } => {
                task.fail_permanently(&item.reporter, error, now)
            }
            ReportedOutcome::Released => task.release(&item.reporter, now),
        }
    }

    /// `item` alone, as a single report would be: after the batch lost its write.
    fn complete_one(&self, item: &Completion) -> Result<Task, AppError> {
        let stale = Some((item.outcome.call(), item.reporter.worker_id.clone()));
        self.transition(item.id, Actor::Worker, stale, |task, now| {
            self.apply_outcome(task, item, now)
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeDelta;
    use mockall::predicate::eq;
    use serde_json::json;
    use taskpilot_domain::{
        Action, AttemptEnd, FixedBackoff, LeaseToken, MaxAttempts, RetryState, StaleLease,
        TaskStatus,
    };

    use super::super::fixtures::*;
    use super::*;
    use crate::{MockTaskRepository, RepoError};

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
                max_crashes: None,
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
        let expected: Vec<TaskEvent> = tasks.iter().map(creation_event).collect();
        assert_eq!(events, &expected);
    }

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

    fn completion(n: u128, token: LeaseToken, outcome: ReportedOutcome) -> Completion {
        Completion { id: task_id(n), reporter: Reporter::lease(Some(worker("w1")), token), outcome }
    }

    fn success(result: Option<Value>) -> ReportedOutcome {
        ReportedOutcome::Succeeded { result }
    }

    fn failure(error: &str, retryable: bool) -> ReportedOutcome {
        ReportedOutcome::Failed { error: error.to_owned(), retryable }
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

    /// What [`TaskService::complete_batch`] answers, item by item.
    type Answers = Vec<Result<Task, AppError>>;

    /// Runs `items` as one batch over `stored`: expects one read of exactly the items' tasks,
    /// one write that loses nothing, and no single-task call. Returns the answers and what
    /// the write was given.
    fn complete_in_one_round_trip(
        stored: Vec<Task>,
        items: Vec<Completion>,
    ) -> (Answers, HashMap<TaskId, TaskWrite>, Vec<TaskEvent>) {
        let mut ids: Vec<TaskId> = items.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut repo = MockTaskRepository::new();
        expect_no_live_match(&mut repo);
        expect_get_many(&mut repo, ids, stored);
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        (answers, writes, rejections)
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

        let (answers, writes, rejections) = complete_in_one_round_trip(stored, items);

        assert_eq!(answers.len(), 1000);
        assert!(answers.iter().all(|a| matches!(a, Ok(t) if t.status() == TaskStatus::Succeeded)));
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

        let (answers, writes, rejections) = complete_in_one_round_trip(stored, items);

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

        let (answers, writes, rejections) =
            complete_in_one_round_trip(vec![running_task(1)], items);

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

        let (answers, writes, rejections) =
            complete_in_one_round_trip(vec![running_task(1)], items);

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
        expect_no_live_match(&mut repo);
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
        expect_no_live_match(&mut repo);
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
            completion(1, live_token(), ReportedOutcome::Released),
            completion(1, live_token(), success(None)),
            completion(2, old_token(), ReportedOutcome::Released),
        ];
        let superseded = superseded_task(2);

        let (answers, writes, rejections) =
            complete_in_one_round_trip(vec![running_task(1), superseded.clone()], items);

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

    /// The successes as the live statement is given them: (task, token, result).
    fn live_successes(live: &[(u128, LeaseToken, Option<Value>)]) -> Vec<(TaskId, LiveSuccess)> {
        live.iter()
            .map(|(n, token, result)| {
                let reporter = Reporter::lease(Some(worker("w1")), *token);
                let success = Task::success_for_live_attempt(&reporter, result.clone(), now());
                (task_id(*n), success.unwrap())
            })
            .collect()
    }

    #[test]
    fn complete_batch_writes_successes_with_a_live_token_in_one_statement_and_reads_nothing() {
        let items: Vec<Completion> =
            (1..=3).map(|n| completion(n, live_token(), success(Some(json!(n))))).collect();
        let made: Vec<Task> = (1..=3_u128)
            .map(|n| {
                let mut task = running_task(n);
                let reporter = Reporter::lease(Some(worker("w1")), live_token());
                task.succeed(&reporter, Some(json!(n)), now()).unwrap();
                task
            })
            .collect();
        let expected = live_successes(&[
            (1, live_token(), Some(json!(1))),
            (2, live_token(), Some(json!(2))),
            (3, live_token(), Some(json!(3))),
        ]);
        // Storage answers in any order.
        let stored: Vec<Task> = made.iter().rev().cloned().collect();
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live()
            .withf(move |successes, _| successes == expected.as_slice())
            .times(1)
            .returning(move |_, _| Ok(stored.clone()));
        repo.expect_get_many().never();
        repo.expect_write_many().never();
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let answers: Vec<Task> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, made, "in the order asked");
    }

    #[test]
    fn complete_batch_judges_what_the_live_statement_left_with_the_rest_and_answers_in_order() {
        let items = vec![
            completion(1, live_token(), success(None)),
            completion(2, live_token(), failure("smtp timeout", true)),
            completion(3, old_token(), success(None)),
            // Named twice: judged in order by the full path, never by the live statement.
            completion(4, live_token(), success(None)),
            completion(4, live_token(), success(None)),
            completion(5, live_token(), success(None)),
        ];
        let mut hit = running_task(1);
        hit.succeed(&Reporter::lease(Some(worker("w1")), live_token()), None, now()).unwrap();
        let superseded = superseded_task(3);
        let replayed = succeeded_task(5);
        let expected = live_successes(&[
            (1, live_token(), None),
            (3, old_token(), None),
            (5, live_token(), None),
        ]);
        let mut repo = MockTaskRepository::new();
        let stored_hit = hit.clone();
        repo.expect_succeed_live()
            .withf(move |successes, _| successes == expected.as_slice())
            .times(1)
            .returning(move |_, _| Ok(vec![stored_hit.clone()]));
        expect_get_many(
            &mut repo,
            vec![task_id(2), task_id(3), task_id(4), task_id(5)],
            vec![running_task(2), superseded.clone(), running_task(4), replayed.clone()],
        );
        let written = expect_write_many(&mut repo, Vec::new());
        no_single_item_calls(&mut repo);

        let answers = service(repo).complete_batch(items).unwrap();

        let (writes, rejections) = the_write(&written);
        let mut ids: Vec<TaskId> = writes.keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [task_id(2), task_id(4)]);
        let refusal = StaleLease::AttemptSuperseded { task: task_id(3), current: 2 };
        assert_eq!(rejections, [rejection(&superseded, StaleCall::Succeed, &refusal)]);
        let [a1, a2, a3, a4, a5, a6] = answers.as_slice() else { panic!("{answers:?}") };
        assert_eq!(a1.as_ref().unwrap(), &hit);
        assert_eq!(a2.as_ref().unwrap(), &writes[&task_id(2)].task);
        assert!(
            matches!(a3, Err(AppError::Conflict(DomainError::StaleLease(r))) if *r == refusal),
            "{a3:?}"
        );
        assert_eq!(a4.as_ref().unwrap(), &writes[&task_id(4)].task);
        assert_eq!(a5.as_ref().unwrap(), &writes[&task_id(4)].task, "the repeat is a replay");
        assert_eq!(a6.as_ref().unwrap(), &replayed, "a replay answers the stored task");
    }

    #[test]
    fn complete_batch_reports_a_read_that_fails_for_the_whole_batch_without_writing() {
        let mut repo = MockTaskRepository::new();
        expect_no_live_match(&mut repo);
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
        expect_no_live_match(&mut repo);
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
