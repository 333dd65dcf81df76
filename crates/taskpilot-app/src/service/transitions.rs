//! The use cases that move one task: start, heartbeat, the reports of one attempt, cancel,
//! rerun and the reaper, each a compare-and-swap of the task with its event.

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_domain::{
    Applied, DomainError, LeaseDuration, LeaseToken, Reporter, StaleLease, Task, TaskId,
    TaskStatus, WorkerId,
};
use uuid::Uuid;

use super::{TaskService, WorkerCall};
use crate::{Actor, AppError, RepoError, StaleCall, TaskEvent};

/// Which versions of the task an operator's action may apply to: any (no `If-Match`, or
/// `If-Match: *`), or only those listed (the entity tags of `If-Match`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionMatch {
    /// Whatever the version.
    #[default]
    Any,
    /// Only one of these versions.
    OneOf(Vec<u64>),
}

impl VersionMatch {
    /// Whether a task at `version` may be acted on.
    pub fn allows(&self, version: u64) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(versions) => versions.contains(&version),
        }
    }
}

/// How often a transition that lost a race re-reads the task and tries again before giving up.
const MAX_TRANSITION_ATTEMPTS: usize = 3;

impl TaskService {
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
        self.saw_worker(Some(worker), WorkerCall::Claim);
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
        self.saw_worker(worker, WorkerCall::Heartbeat);
        let stale = Some((StaleCall::Heartbeat, worker.cloned()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.heartbeat(worker, token, lease, now).map(|()| Applied::Changed)
        })
    }

    /// Records success of the running attempt. A repeat of an accepted report returns the
    /// stored task and changes nothing.
    ///
    /// A report with a token is first written as the domain's
    /// [`LiveSuccess`](taskpilot_domain::LiveSuccess) in one statement, without a read: where
    /// the task runs that token's attempt, that is the whole success. Anything else (a
    /// replay, a refusal, a report without a token, a task that moved on) is judged by the
    /// domain on the stored task, as every transition is.
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
        let now = self.clock.now();
        self.saw_worker(reporter.worker_id.as_ref(), WorkerCall::Report);
        if let Some(success) = Task::success_for_live_attempt(reporter, result.clone(), now) {
            if let Some(task) = self.repo.succeed_live(&[(id, success)], self.token.as_ref())?.pop()
            {
                self.observer.attempt_ended(&task);
                return Ok(task);
            }
        }
        let stale = Some((StaleCall::Succeed, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| {
            task.succeed(reporter, result.clone(), now)
        })
    }

    /// Records a failure of the running attempt that a retry may cure: a retry after
    /// backoff, or failed for good once no attempt is left.
    ///
    /// # Errors
    /// As [`TaskService::succeed`].
    pub fn fail(&self, id: TaskId, reporter: &Reporter, error: &str) -> Result<Task, AppError> {
        let backoff = self.backoff.as_ref();
        self.saw_worker(reporter.worker_id.as_ref(), WorkerCall::Report);
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
        self.saw_worker(reporter.worker_id.as_ref(), WorkerCall::Report);
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
        self.saw_worker(reporter.worker_id.as_ref(), WorkerCall::Report);
        let stale = Some((StaleCall::Release, reporter.worker_id.clone()));
        self.transition(id, Actor::Worker, stale, |task, now| task.release(reporter, now))
    }

    /// Cancels a pending or running task.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the task is already terminal; [`AppError::NotFound`];
    /// storage errors.
    pub fn cancel(&self, id: TaskId) -> Result<Task, AppError> {
        self.cancel_matching(id, &VersionMatch::Any)
    }

    /// Cancels a pending or running task if its version is one `expected` allows, checked
    /// on the version the write compares and swaps on.
    ///
    /// # Errors
    /// [`AppError::PreconditionFailed`] when the task is (or, before the write, becomes) at
    /// a version `expected` does not allow; as [`TaskService::cancel`].
    pub fn cancel_matching(&self, id: TaskId, expected: &VersionMatch) -> Result<Task, AppError> {
        self.transition_matching(id, Actor::Client, None, expected, |task, now| {
            task.cancel(now).map(|()| Applied::Changed)
        })
    }

    /// Puts a failed or cancelled task back to pending with a fresh attempt budget: its
    /// `attempt_count`, the failed attempts since creation or the last rerun, starts again
    /// from zero.
    ///
    /// # Errors
    /// [`AppError::Conflict`] unless the task is failed or cancelled; [`AppError::NotFound`];
    /// storage errors.
    pub fn rerun(&self, id: TaskId) -> Result<Task, AppError> {
        self.rerun_matching(id, &VersionMatch::Any)
    }

    /// Reruns a failed or cancelled task if its version is one `expected` allows, as
    /// [`TaskService::cancel_matching`] cancels.
    ///
    /// # Errors
    /// [`AppError::PreconditionFailed`]; as [`TaskService::rerun`].
    pub fn rerun_matching(&self, id: TaskId, expected: &VersionMatch) -> Result<Task, AppError> {
        self.transition_matching(id, Actor::Client, None, expected, |task, now| {
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
                Ok(()) => {
                    self.observer.attempt_ended(&task);
                    reaped.push(task);
                }
                Err(RepoError::Conflict(_) | RepoError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(reaped)
    }

    /// Reads the task, applies one domain transition and writes it back, with its event, if
    /// nobody changed it meanwhile. A lost race is retried on a fresh read, so the caller gets
    /// the domain's verdict on the state that won rather than a bare conflict. A replayed
    /// report writes nothing. A refusal for a stale lease is recorded when `stale` says which
    /// call it was.
    pub(super) fn transition(
        &self,
        id: TaskId,
        actor: Actor,
        stale: Option<(StaleCall, Option<WorkerId>)>,
        apply: impl Fn(&mut Task, DateTime<Utc>) -> Result<Applied, DomainError>,
    ) -> Result<Task, AppError> {
        self.transition_matching(id, actor, stale, &VersionMatch::Any, apply)
    }

    /// [`TaskService::transition`], only on a version `expected` allows. The check is made
    /// on every read, before the domain judges: a lost race re-reads the task, whose new
    /// version then answers, so a change between the read and the write is refused as a
    /// failed precondition rather than applied over.
    fn transition_matching(
        &self,
        id: TaskId,
        actor: Actor,
        stale: Option<(StaleCall, Option<WorkerId>)>,
        expected: &VersionMatch,
        apply: impl Fn(&mut Task, DateTime<Utc>) -> Result<Applied, DomainError>,
    ) -> Result<Task, AppError> {
        for _ in 0..MAX_TRANSITION_ATTEMPTS {
            let before = self.repo.get(id)?;
            if !expected.allows(before.version()) {
                return Err(AppError::PreconditionFailed {
                    task: id,
                    current_version: before.version(),
                });
            }
            let mut task = before.clone();
            let now = self.clock.now();
            match apply(&mut task, now) {
                Ok(Applied::Replayed) => {
                    if let Some((call, _)) = &stale {
                        self.observer.replayed(*call);
                    }
                    return Ok(task);
                }
                Ok(Applied::Changed) => {}
                Err(DomainError::StaleLease(refusal)) => {
                    if let Some((call, worker)) = &stale {
                        self.record_rejection(&before, worker.clone(), *call, &refusal, now);
                        self.observer.refused(*call, refusal.code());
                    }
                    return Err(DomainError::StaleLease(refusal).into());
                }
                Err(e) => return Err(e.into()),
            }
            // Heartbeats only move the lease: keeping them out of the history keeps it readable.
            let event = (before.status() != task.status() || before.attempt() != task.attempt())
                .then(|| self.stamp(TaskEvent::transition(Some(&before), &task, actor)));
            match self.repo.update(&task, before.version(), event.as_ref()) {
                Ok(()) => {
                    self.observe_transition(&before, &task);
                    return Ok(task);
                }
                Err(RepoError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::ConcurrentModification(id))
    }

    /// Tells the observer what a stored transition from `before` to `after` did.
    pub(super) fn observe_transition(&self, before: &Task, after: &Task) {
        let (was, is) = (before.status(), after.status());
        if is == TaskStatus::Running && before.attempt() != after.attempt() {
            self.observer.started(std::slice::from_ref(after));
        } else if was == TaskStatus::Running && is != TaskStatus::Running {
            self.observer.attempt_ended(after);
        }
    }

    fn record_rejection(
        &self,
        task: &Task,
        worker: Option<WorkerId>,
        call: StaleCall,
        refusal: &StaleLease,
        now: DateTime<Utc>,
    ) {
        let event = self.stamp(TaskEvent::rejection(task, worker, call, refusal, now));
        // The caller's answer is the refusal either way; a lost record only costs a count.
        if let Err(e) = self.repo.record_rejection(&event) {
            tracing::warn!(task.id = %task.id(), error = %e, "could not record a refused stale call");
        }
    }
}

/// A fresh, unguessable lease token.
fn new_lease_token() -> LeaseToken {
    LeaseToken::from_uuid(Uuid::new_v4())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeDelta;
    use mockall::{predicate::eq, Sequence};
    use serde_json::json;
    use taskpilot_domain::{Action, AttemptEnd, FixedBackoff, MaxCrashes, TaskStatus};

    use super::super::fixtures::*;
    use super::*;
    use crate::MockTaskRepository;

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
    fn start_and_heartbeat_lease_for_what_is_asked_or_the_default_and_only_a_start_is_history() {
        type LeaseCall = fn(&TaskService, Option<LeaseDuration>) -> Result<Task, AppError>;
        let calls: [(Task, LeaseCall, bool); 2] = [
            (pending(), |s, asked| s.start(id(), &worker("w1"), asked), true),
            (
                running(),
                |s, asked| s.heartbeat(id(), Some(&worker("w1")), live_token(), asked),
                false,
            ),
        ];
        for (stored, call, recorded) in calls {
            for (asked, expires_at) in [
                (None, now() + TimeDelta::seconds(DEFAULT_LEASE_SECS)),
                (Some(lease(600)), now() + TimeDelta::seconds(600)),
            ] {
                let read_version = stored.version();
                let mut repo = MockTaskRepository::new();
                expect_get(&mut repo, &stored);
                repo.expect_update()
                    .withf(move |t, v, e| {
                        *v == read_version
                            && t.lease().is_some_and(|l| l.expires_at == expires_at)
                            && e.is_some() == recorded
                    })
                    .times(1)
                    .returning(|_, _, _| Ok(()));
                repo.expect_record_rejection().never();

                let task = call(&service(repo), asked).unwrap();

                assert_eq!(task.lease().unwrap().expires_at, expires_at, "{asked:?}");
            }
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
    fn each_transition_saves_what_the_domain_made_against_the_version_it_read_with_its_event() {
        type Rule = fn(&mut Task, DateTime<Utc>) -> Result<Applied, DomainError>;
        fn holder() -> Reporter {
            Reporter::lease(Some(worker("w1")), live_token())
        }
        let w1 = Some(worker("w1"));
        /// The stored task, the use case, the domain rule it must apply, and who the event
        /// names: actor, worker and the error of a failure.
        type Case = (Task, UseCase, Rule, Actor, Option<WorkerId>, Option<&'static str>);
        let cases: [Case; 8] = [
            (
                running(),
                |s| s.succeed(id(), &holder(), Some(json!({"sent": true}))),
                |t, now| t.succeed(&holder(), Some(json!({"sent": true})), now),
                Actor::Worker,
                w1.clone(),
                None,
            ),
            (
                running(),
                |s| s.fail(id(), &holder(), "smtp timeout"),
                |t, now| {
                    t.fail_and_schedule_retry(
                        &holder(),
                        "smtp timeout",
                        now,
                        &FixedBackoff(BACKOFF),
                    )
                },
                Actor::Worker,
                w1.clone(),
                Some("smtp timeout"),
            ),
            (
                running(),
                |s| s.fail_permanently(id(), &holder(), "bad payload"),
                |t, now| t.fail_permanently(&holder(), "bad payload", now),
                Actor::Worker,
                w1.clone(),
                Some("bad payload"),
            ),
            (
                running(),
                |s| s.release(id(), &holder()),
                |t, now| t.release(&holder(), now),
                Actor::Worker,
                w1.clone(),
                None,
            ),
            (
                pending(),
                |s| s.cancel(id()),
                |t, now| t.cancel(now).map(|()| Applied::Changed),
                Actor::Client,
                None,
                None,
            ),
            (
                running(),
                |s| s.cancel(id()),
                |t, now| t.cancel(now).map(|()| Applied::Changed),
                Actor::Client,
                w1,
                None,
            ),
            (
                failed(),
                |s| s.rerun(id()),
                |t, now| t.rerun(now).map(|()| Applied::Changed),
                Actor::Client,
                None,
                None,
            ),
            (
                cancelled(),
                |s| s.rerun(id()),
                |t, now| t.rerun(now).map(|()| Applied::Changed),
                Actor::Client,
                None,
                None,
            ),
        ];
        for (stored, use_case, rule, actor, worker_id, error) in cases {
            let mut made = stored.clone();
            assert!(matches!(rule(&mut made, now()), Ok(Applied::Changed)));
            let event = TaskEvent {
                worker_id,
                actor,
                error: error.map(str::to_owned),
                ..transition(stored.attempt(), stored.status(), made.status())
            };
            let (read_version, saved) = (stored.version(), made.clone());
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            expect_no_live_match(&mut repo);
            repo.expect_update()
                .withf(move |t, expected_version, e| {
                    *expected_version == read_version && *t == saved && *e == Some(&event)
                })
                .times(1)
                .returning(|_, _, _| Ok(()));
            repo.expect_record_rejection().never();

            let task = use_case(&service(repo)).unwrap();

            assert_eq!(task, made);
        }
    }

    type UseCase = fn(&TaskService) -> Result<Task, AppError>;

    /// The single-task use cases, with the domain action each applies.
    fn use_cases() -> [(Action, UseCase); 7] {
        [
            (Action::Start, |s| s.start(id(), &worker("w2"), None)),
            (Action::Succeed, |s| s.succeed(id(), &Reporter::anyone(), None)),
            (Action::Fail, |s| s.fail(id(), &Reporter::anyone(), "boom")),
            (Action::Fail, |s| s.fail_permanently(id(), &Reporter::anyone(), "boom")),
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
            (Action::Fail, pending()),
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
    fn a_stale_call_is_still_refused_when_recording_the_rejection_fails() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &reaped());
        expect_no_live_match(&mut repo);
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

    /// Each report with the stale-call kind its refusal is recorded as, made by `w1` with
    /// [`old_token`].
    fn stale_reports() -> [(StaleCall, UseCase); 5] {
        fn stale() -> Reporter {
            Reporter::lease(Some(worker("w1")), old_token())
        }
        [
            (StaleCall::Heartbeat, |s| s.heartbeat(id(), Some(&worker("w1")), old_token(), None)),
            (StaleCall::Succeed, |s| s.succeed(id(), &stale(), None)),
            (StaleCall::Fail, |s| s.fail(id(), &stale(), "late")),
            (StaleCall::Fail, |s| s.fail_permanently(id(), &stale(), "late")),
            (StaleCall::Release, |s| s.release(id(), &stale())),
        ]
    }

    #[test]
    fn a_stale_call_of_any_kind_is_refused_and_recorded_once_with_its_call_and_nothing_saved() {
        // Which refusal a stale token gets is the domain's fencing table; here it is only
        // passed on and recorded.
        let stored = reaped_and_restarted();
        for (call, report) in stale_reports() {
            let recorded = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&recorded);
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            expect_no_live_match(&mut repo);
            repo.expect_update().never();
            repo.expect_record_rejection().times(1).returning(move |e| {
                sink.lock().unwrap().push(e.clone());
                Ok(())
            });

            let outcome = report(&service(repo));

            let Err(AppError::Conflict(DomainError::StaleLease(refusal))) = &outcome else {
                panic!("{call:?}: {outcome:?}")
            };
            assert_eq!(*recorded.lock().unwrap(), [rejection(&stored, call, refusal)], "{call:?}");
        }
    }

    #[test]
    fn a_replayed_report_returns_the_stored_task_without_saving_or_recording() {
        let reporter = || Reporter::lease(Some(worker("w1")), live_token());
        let mut failed_permanently = running();
        failed_permanently.fail_permanently(&reporter(), "bad payload", t0()).unwrap();
        let replays: [(Task, UseCase); 4] = [
            (succeeded(), |s| {
                s.succeed(id(), &Reporter::lease(Some(worker("w1")), live_token()), None)
            }),
            (failed_once(), |s| {
                s.fail(id(), &Reporter::lease(Some(worker("w1")), live_token()), "boom")
            }),
            (failed_permanently, |s| {
                s.fail_permanently(
                    id(),
                    &Reporter::lease(Some(worker("w1")), live_token()),
                    "again",
                )
            }),
            (released(), |s| s.release(id(), &Reporter::lease(Some(worker("w1")), live_token()))),
        ];
        for (stored, replay) in replays {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            expect_no_live_match(&mut repo);
            repo.expect_update().never();
            repo.expect_record_rejection().never();

            let task = replay(&service(repo)).unwrap();

            assert_eq!(task, stored);
        }
    }

    #[test]
    fn a_success_with_the_live_token_is_one_write_of_the_domains_patch_and_reads_nothing() {
        let reporter = Reporter::lease(Some(worker("w1")), live_token());
        let result = Some(json!({"sent": true}));
        let mut made = running();
        made.succeed(&reporter, result.clone(), now()).unwrap();
        let patch = Task::success_for_live_attempt(&reporter, result.clone(), now()).unwrap();
        let stored = made.clone();
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live()
            .withf(move |successes, _| successes == [(id(), patch.clone())])
            .times(1)
            .returning(move |_, _| Ok(vec![stored.clone()]));
        repo.expect_get().never();
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo).succeed(id(), &reporter, result).unwrap();

        assert_eq!(task, made);
    }

    #[test]
    fn a_success_whose_guard_misses_is_read_judged_and_written_by_the_full_path() {
        let reporter = Reporter::lease(None, live_token());
        let mut made = running();
        made.succeed(&reporter, None, now()).unwrap();
        let event = transition(1, TaskStatus::Running, TaskStatus::Succeeded);
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live().times(1).in_sequence(&mut seq).returning(|_, _| Ok(Vec::new()));
        let stored = running();
        repo.expect_get().times(1).in_sequence(&mut seq).returning(move |_| Ok(stored.clone()));
        let saved = made.clone();
        repo.expect_update()
            .withf(move |t, v, e| *t == saved && *v == 2 && *e == Some(&event))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).succeed(id(), &reporter, None).unwrap();

        assert_eq!(task, made);
    }

    #[test]
    fn a_success_repeated_after_its_answer_was_lost_misses_the_guard_and_gets_the_stored_task() {
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live().times(1).returning(|_, _| Ok(Vec::new()));
        expect_get(&mut repo, &succeeded());
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let task = service(repo)
            .succeed(id(), &Reporter::lease(Some(worker("w1")), live_token()), None)
            .unwrap();

        assert_eq!(task, succeeded());
    }

    #[test]
    fn a_success_without_a_token_never_tries_the_one_statement_write() {
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live().never();
        expect_get(&mut repo, &running());
        repo.expect_update().times(1).returning(|_, _, _| Ok(()));

        let task = service(repo).succeed(id(), &Reporter::worker(worker("w1")), None).unwrap();

        assert_eq!(task.status(), TaskStatus::Succeeded);
    }

    #[test]
    fn a_live_success_storage_cannot_take_is_unavailable_without_trying_the_full_path() {
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live().times(1).returning(|_, _| Err(unavailable()));
        repo.expect_get().never();
        repo.expect_update().never();

        let outcome = service(repo).succeed(id(), &Reporter::lease(None, live_token()), None);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

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
    fn reap_expired_stops_at_a_save_while_storage_is_down() {
        let found: Vec<Task> = (1..=2).map(|n| expired(task_id(n), 3)).collect();
        let mut repo = MockTaskRepository::new();
        repo.expect_expired_leases().times(1).returning(move |_, _| Ok(found.clone()));
        repo.expect_update().times(1).returning(|_, _, _| Err(unavailable()));

        let outcome = service(repo).reap_expired(10);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    /// Records what the service tells its observer.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl crate::TaskObserver for Recorder {
        fn started(&self, tasks: &[Task]) {
            self.0.lock().unwrap().push(format!("started {}", tasks.len()));
        }

        fn attempt_ended(&self, task: &Task) {
            self.0.lock().unwrap().push(format!("ended {:?}", task.last_ended().map(|e| e.end)));
        }

        fn refused(&self, call: StaleCall, code: &'static str) {
            self.0.lock().unwrap().push(format!("refused {} {code}", call.as_str()));
        }

        fn replayed(&self, call: StaleCall) {
            self.0.lock().unwrap().push(format!("replayed {}", call.as_str()));
        }
    }

    #[test]
    fn the_observer_hears_of_what_was_stored_replayed_or_refused_once_each() {
        type UseCase = fn(&TaskService) -> Result<Task, AppError>;
        fn live() -> Reporter {
            Reporter::lease(Some(worker("w1")), live_token())
        }
        let cases: [(Task, UseCase, bool, &str); 4] = [
            (pending(), |s| s.start(id(), &worker("w1"), None), true, "started 1"),
            (running(), |s| s.fail(id(), &live(), "boom"), true, "ended Some(Failed)"),
            (succeeded(), |s| s.succeed(id(), &live(), None), false, "replayed SUCCEED"),
            (
                succeeded(),
                |s| s.fail(id(), &live(), "late"),
                false,
                "refused FAIL OUTCOME_CONFLICT",
            ),
        ];
        for (stored, call, writes, heard) in cases {
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            expect_no_live_match(&mut repo);
            repo.expect_update().times(usize::from(writes)).returning(|_, _, _| Ok(()));
            repo.expect_record_rejection().returning(|_| Ok(()));
            let recorder = Arc::new(Recorder::default());

            let outcome = call(&service(repo).with_observer(recorder.clone()));

            assert_eq!(outcome.is_ok(), !heard.starts_with("refused"), "{heard}: {outcome:?}");
            assert_eq!(*recorder.0.lock().unwrap(), [heard.to_owned()]);
        }
    }

    #[test]
    fn the_reaper_quarantines_a_task_on_its_last_crash_with_a_reaper_event_saying_so() {
        let one_crash_left = new_task(id(), 25, t0()).with_max_crashes(MaxCrashes::new(1).unwrap());
        let mut one_crash_left = one_crash_left;
        one_crash_left.start(&worker("w1"), old_token(), lease(30), t0()).unwrap();
        let event = TaskEvent {
            error: Some("quarantined: lease expired 1 time (last worker w1)".to_owned()),
            actor: Actor::Reaper,
            ..transition(1, TaskStatus::Running, TaskStatus::Failed)
        };
        let mut repo = MockTaskRepository::new();
        let found = vec![one_crash_left];
        repo.expect_expired_leases().times(1).returning(move |_, _| Ok(found.clone()));
        repo.expect_update()
            .withf(move |t, v, e| {
                *v == 2
                    && t.status() == TaskStatus::Failed
                    && t.retry_state() == taskpilot_domain::RetryState::Quarantined
                    && (t.crash_count(), t.attempt_count()) == (1, 1)
                    && *e == Some(&event)
            })
            .times(1)
            .returning(|_, _, _| Ok(()));

        let reaped = service(repo).reap_expired(10).unwrap();

        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].retry_state(), taskpilot_domain::RetryState::Quarantined);
    }

    #[test]
    fn cancel_and_rerun_on_a_version_not_asked_for_fail_the_precondition_and_save_nothing() {
        type Matching = fn(&TaskService, &VersionMatch) -> Result<Task, AppError>;
        let cases: [(&str, Task, Matching); 2] = [
            ("cancel", pending(), |s, m| s.cancel_matching(id(), m)),
            ("rerun", failed(), |s, m| s.rerun_matching(id(), m)),
        ];
        for (what, stored, use_case) in cases {
            let version = stored.version();
            let mut repo = MockTaskRepository::new();
            expect_get(&mut repo, &stored);
            repo.expect_update().never();

            let outcome = use_case(&service(repo), &VersionMatch::OneOf(vec![version + 1, 99]));

            assert!(
                matches!(
                    outcome,
                    Err(AppError::PreconditionFailed { task, current_version })
                        if task == id() && current_version == version
                ),
                "{what}: {outcome:?}"
            );
        }
    }

    #[test]
    fn cancel_on_a_version_asked_for_saves_against_that_version() {
        let stored = pending();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update()
            .withf(|t, v, _| *v == 1 && t.status() == TaskStatus::Cancelled)
            .times(1)
            .returning(|_, _, _| Ok(()));

        let task = service(repo).cancel_matching(id(), &VersionMatch::OneOf(vec![7, 1])).unwrap();

        assert_eq!((task.status(), task.version()), (TaskStatus::Cancelled, 2));
    }

    #[test]
    fn a_change_between_the_read_and_the_write_fails_the_precondition_instead_of_a_retry() {
        // The operator saw version 1; a worker started the task before the cancel was written.
        let mut moved_on = pending();
        moved_on.start(&worker("w9"), old_token(), defaults().lease, t0()).unwrap();
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

        let outcome = service(repo).cancel_matching(id(), &VersionMatch::OneOf(vec![1]));

        assert!(
            matches!(outcome, Err(AppError::PreconditionFailed { current_version: 2, .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn any_version_cancels_whatever_the_version_as_a_plain_cancel_does() {
        let mut stored = pending();
        stored.cancel(t0()).unwrap();
        stored.rerun(t0()).unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &stored);
        repo.expect_update().withf(|_, v, _| *v == 3).times(1).returning(|_, _, _| Ok(()));

        let task = service(repo).cancel_matching(id(), &VersionMatch::Any).unwrap();

        assert_eq!(task.status(), TaskStatus::Cancelled);
    }
}
