//! The queue use cases (read the queues, pause and resume one) and the explanation of why a
//! task is not running, with the in-memory record of this server's claims they read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use taskpilot_domain::{
    explain, Ahead, ExplainFacts, Explanation, QueueName, QueueState, Task, TaskId, TaskStatus,
    TokenName, AHEAD_CAP,
};

use super::{TaskService, VersionMatch};
use crate::{AppError, RepoError, StatusCounts};

/// The most queues a [`ClaimLog`] remembers by name: claims name queues a client chooses, so
/// the memory they take is bounded; past it the longest-unclaimed queue is forgotten.
const MAX_REMEMBERED_QUEUES: usize = 10_000;

/// How often a pause or resume re-reads and retries after losing a race with another write of
/// the same queue.
const QUEUE_WRITE_TRIES: usize = 5;

/// The last claim this server answered for each queue, in memory: shared by every clone of the
/// service (an `Arc` inside), and per server, not across servers. A claim counts whether or not
/// it found tasks; one that names no queue counts for every queue.
#[derive(Debug)]
pub struct ClaimLog {
    since: DateTime<Utc>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    any_queue: Option<DateTime<Utc>>,
    by_queue: HashMap<QueueName, DateTime<Utc>>,
}

impl ClaimLog {
    /// A log that began watching at `since`.
    pub fn new(since: DateTime<Utc>) -> Self {
        Self { since, seen: Mutex::new(Seen::default()) }
    }

    /// Since when this log has been watching.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// Records a claim at `at` from `queues` (every queue when `None`).
    pub fn record(&self, queues: Option<&[QueueName]>, at: DateTime<Utc>) {
        // A panic elsewhere while holding the lock leaves plain timestamps behind: still good.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(queues) = queues else {
            seen.any_queue = Some(at);
            return;
        };
        for queue in queues {
            if seen.by_queue.len() >= MAX_REMEMBERED_QUEUES && !seen.by_queue.contains_key(queue) {
                let oldest =
                    seen.by_queue.iter().min_by_key(|(_, at)| **at).map(|(q, _)| q.clone());
                if let Some(oldest) = oldest {
                    seen.by_queue.remove(&oldest);
                }
            }
            seen.by_queue.insert(queue.clone(), at);
        }
    }

    /// The last claim that could take from `queue`.
    pub fn last_claim(&self, queue: &QueueName) -> Option<DateTime<Utc>> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.by_queue.get(queue).copied().max(seen.any_queue)
    }
}

/// One queue as `GET /api/queues` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueView {
    /// The queue.
    pub queue: QueueName,
    /// Its stored state: paused or not, by whom, its version.
    pub state: QueueState,
    /// Its tasks by status, from the maintained counts.
    pub counts: StatusCounts,
    /// Since when its longest-waiting runnable task has been runnable.
    pub oldest_runnable_since: Option<DateTime<Utc>>,
    /// Tasks created in the last minute.
    pub created_last_minute: u64,
    /// Tasks finished in the last minute.
    pub completed_last_minute: u64,
    /// The last claim this server answered that could take from the queue.
    pub last_claim_at: Option<DateTime<Utc>>,
}

/// What [`TaskService::explain`] answers: the task and the domain's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskExplanation {
    /// The task as stored.
    pub task: Task,
    /// Whether a claim would take it now and what stands in the way.
    pub explanation: Explanation,
    /// The last claim this server answered that could take from its queue.
    pub last_claim_at: Option<DateTime<Utc>>,
}

impl TaskService {
    /// Every queue that holds tasks or has a stored state, in name order: counts from the
    /// maintained counts, the oldest runnable task (one probe per queue with runnable tasks),
    /// the pause state, the last minute's creations and completions, and this server's last
    /// claim.
    ///
    /// # Errors
    /// Storage errors.
    pub fn queues(&self) -> Result<Vec<QueueView>, AppError> {
        let now = self.clock.now();
        let counts = self.repo.task_counts(now, u32::MAX)?;
        let states = self.repo.queue_states()?;
        let activity = self.repo.queue_activity(now - TimeDelta::minutes(1))?;
        let mut views: BTreeMap<QueueName, QueueView> = BTreeMap::new();
        let blank = |queue: &QueueName| QueueView {
            queue: queue.clone(),
            state: QueueState::default(),
            counts: StatusCounts::default(),
            oldest_runnable_since: None,
            created_last_minute: 0,
            completed_last_minute: 0,
            last_claim_at: self.claims.last_claim(queue),
        };
        for q in counts.queues {
            let view = views.entry(q.queue.clone()).or_insert_with(|| blank(&q.queue));
            view.counts = q.counts;
            view.oldest_runnable_since = q.oldest_runnable_since;
        }
        for (queue, state) in states {
            views.entry(queue.clone()).or_insert_with(|| blank(&queue)).state = state;
        }
        for a in activity {
            let view = views.entry(a.queue.clone()).or_insert_with(|| blank(&a.queue));
            view.created_last_minute = a.created;
            view.completed_last_minute = a.completed;
        }
        Ok(views.into_values().collect())
    }

    /// One queue, as [`TaskService::queues`] shows it.
    ///
    /// # Errors
    /// [`AppError::QueueNotFound`] for a queue with no task and no stored state; storage errors.
    pub fn queue(&self, queue: &QueueName) -> Result<QueueView, AppError> {
        self.queues()?
            .into_iter()
            .find(|v| v.queue == *queue)
            .ok_or_else(|| AppError::QueueNotFound(queue.clone()))
    }

    /// Pauses `queue` for every server, recorded as done by `by`: from then on claims take no
    /// task from it. Pausing a paused queue changes nothing. A queue need not hold tasks to be
    /// paused. Answers the queue.
    ///
    /// # Errors
    /// Storage errors.
    ///
    /// With `if_match`, only while the queue's version is one of those listed
    /// ([`AppError::QueueVersionMismatch`] otherwise; a queue never paused is version 0).
    pub fn pause_queue(
        &self,
        queue: &QueueName,
        by: &TokenName,
        if_match: &VersionMatch,
    ) -> Result<QueueView, AppError> {
        self.change_queue(queue, if_match, |state, now| state.pause(by, now))?;
        tracing::info!(queue = %queue, by = %by, "queue {queue} paused by {by}");
        self.queue(queue)
    }

    /// Resumes `queue` for every server and wakes the claims waiting on it. Resuming a queue
    /// that is not paused changes nothing. Answers the queue.
    ///
    /// # Errors
    /// [`AppError::QueueNotFound`] for a queue with no task and no stored state; storage errors.
    ///
    /// `if_match` as for [`TaskService::pause_queue`].
    pub fn resume_queue(
        &self,
        queue: &QueueName,
        if_match: &VersionMatch,
    ) -> Result<QueueView, AppError> {
        self.change_queue(queue, if_match, |state, now| state.resume(now))?;
        tracing::info!(queue = %queue, "queue {queue} resumed");
        self.queue(queue)
    }

    /// Reads the queue's state, checks `if_match` against its version, asks `change` for the
    /// new one (`None`: nothing to do) and stores it compare-and-swap, again on a lost race
    /// (whose winner moved the version, so `if_match` is checked again).
    fn change_queue(
        &self,
        queue: &QueueName,
        if_match: &VersionMatch,
        change: impl Fn(&QueueState, DateTime<Utc>) -> Option<QueueState>,
    ) -> Result<(), AppError> {
        for _ in 0..QUEUE_WRITE_TRIES {
            let state = self.repo.queue_state(queue)?;
            if !if_match.allows(state.version) {
                return Err(AppError::QueueVersionMismatch {
                    queue: queue.clone(),
                    current: state.version,
                });
            }
            let Some(next) = change(&state, self.clock.now()) else { return Ok(()) };
            if self.repo.write_queue_state(queue, &next, state.version)? {
                return Ok(());
            }
        }
        Err(AppError::from(RepoError::unexpected(anyhow::anyhow!(
            "queue {queue} kept changing under {QUEUE_WRITE_TRIES} writes"
        ))))
    }

    /// Why task `id` is not running (or whether it is next): reads the task, its queue's
    /// state, the runnable tasks ahead of it (at most [`AHEAD_CAP`], only while it is
    /// runnable), who cancelled it (from its history, only when cancelled) and this server's
    /// last claim from its queue, and lets the domain reason over them.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown task; storage errors.
    pub fn explain(&self, id: TaskId) -> Result<TaskExplanation, AppError> {
        let task = self.repo.get(id)?;
        self.explain_task(task)
    }

    pub(super) fn explain_task(&self, task: Task) -> Result<TaskExplanation, AppError> {
        let now = self.clock.now();
        let queue = self.repo.queue_state(task.queue())?;
        let ahead = if task.is_runnable_at(now) {
            let count = self.repo.runnable_ahead(&task, now, AHEAD_CAP)?;
            Some(Ahead { count, capped: count >= u64::from(AHEAD_CAP) })
        } else {
            None
        };
        let cancelled_by = if task.status() == TaskStatus::Cancelled {
            let events = self.repo.events(task.id())?;
            events.into_iter().rev().find(|e| e.to == TaskStatus::Cancelled).and_then(|e| e.token)
        } else {
            None
        };
        let last_claim_at = self.claims.last_claim(task.queue());
        let facts = ExplainFacts {
            task: &task,
            now,
            queue: &queue,
            ahead,
            last_claim_at,
            claims_watched_since: self.claims.since(),
            cancelled_by,
        };
        let explanation = explain(&facts);
        Ok(TaskExplanation { task, explanation, last_claim_at })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Arc;

    use mockall::predicate::eq;
    use taskpilot_domain::{Pause, Reason};

    use super::super::fixtures::*;
    use super::*;
    use crate::{Actor, MockTaskRepository, QueueActivity, QueueCounts, TaskCounts, TaskEvent};

    fn ops() -> TokenName {
        TokenName::parse("ops").unwrap()
    }

    fn paused_state() -> QueueState {
        QueueState {
            paused: Some(Pause { by: ops(), at: t0() }),
            version: 1,
            updated_at: Some(t0()),
        }
    }

    #[test]
    fn the_claim_log_remembers_named_queues_and_claims_from_every_queue() {
        let log = ClaimLog::new(t0());
        assert_eq!(log.last_claim(&queue("emails")), None);
        log.record(Some(&[queue("emails")]), t0() + TimeDelta::seconds(1));
        log.record(Some(&[queue("sms")]), t0() + TimeDelta::seconds(2));
        assert_eq!(log.last_claim(&queue("emails")), Some(t0() + TimeDelta::seconds(1)));
        log.record(None, t0() + TimeDelta::seconds(3));
        assert_eq!(log.last_claim(&queue("emails")), Some(t0() + TimeDelta::seconds(3)));
        assert_eq!(log.last_claim(&queue("never-named")), Some(t0() + TimeDelta::seconds(3)));
    }

    #[test]
    fn the_claim_log_stays_bounded_whatever_queues_claims_name() {
        let log = ClaimLog::new(t0());
        for i in 0..=MAX_REMEMBERED_QUEUES {
            let at = t0() + TimeDelta::milliseconds(i64::try_from(i).unwrap());
            log.record(Some(&[queue(&format!("q{i}"))]), at);
        }
        let seen = log.seen.lock().unwrap();
        assert_eq!(seen.by_queue.len(), MAX_REMEMBERED_QUEUES);
        assert!(!seen.by_queue.contains_key(&queue("q0")), "the longest unclaimed goes");
    }

    #[test]
    fn a_claim_is_recorded_for_the_queues_it_asked_for_even_when_it_finds_nothing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_claim().times(1).returning(|_| Ok(vec![]));
        let service = service(repo);
        service.claim(&worker("w"), Some(vec![queue("emails")]), 1, None).unwrap();
        assert_eq!(service.claims.last_claim(&queue("emails")), Some(now()));
        assert_eq!(service.claims.last_claim(&queue("sms")), None);
    }

    fn counts_of(q: &str, runnable: u64) -> QueueCounts {
        QueueCounts {
            queue: queue(q),
            counts: StatusCounts { runnable, ..StatusCounts::default() },
            oldest_runnable_since: Some(t0()),
        }
    }

    #[test]
    fn queues_merge_counts_states_and_activity_and_list_a_queue_known_only_by_its_tasks() {
        let mut repo = MockTaskRepository::new();
        repo.expect_task_counts().with(eq(now()), eq(u32::MAX)).times(1).returning(|_, _| {
            Ok(TaskCounts {
                queues: vec![counts_of("emails", 3)],
                other_queues: None,
                durations: vec![],
            })
        });
        repo.expect_queue_states()
            .times(1)
            .returning(|| Ok(vec![(queue("paused-empty"), paused_state())]));
        repo.expect_queue_activity().with(eq(now() - TimeDelta::minutes(1))).times(1).returning(
            |_| Ok(vec![QueueActivity { queue: queue("emails"), created: 4, completed: 1 }]),
        );

        let views = service(repo).queues().unwrap();

        let names: Vec<&str> = views.iter().map(|v| v.queue.as_str()).collect();
        assert_eq!(names, ["emails", "paused-empty"]);
        assert_eq!(views[0].counts.runnable, 3);
        assert_eq!(views[0].oldest_runnable_since, Some(t0()));
        assert_eq!((views[0].created_last_minute, views[0].completed_last_minute), (4, 1));
        assert!(views[0].state.is_claimable());
        assert_eq!(views[1].state, paused_state());
        assert_eq!(views[1].counts.total(), 0);
    }

    fn nothing_stored(repo: &mut MockTaskRepository) {
        repo.expect_task_counts().returning(|_, _| Ok(TaskCounts::default()));
        repo.expect_queue_activity().returning(|_| Ok(vec![]));
    }

    #[test]
    fn an_unknown_queue_is_not_found() {
        let mut repo = MockTaskRepository::new();
        nothing_stored(&mut repo);
        repo.expect_queue_states().returning(|| Ok(vec![]));

        let outcome = service(repo).queue(&queue("nope"));

        assert!(matches!(outcome, Err(AppError::QueueNotFound(q)) if q == queue("nope")));
    }

    #[test]
    fn pause_stores_who_and_when_and_a_second_pause_writes_nothing() {
        let stored = Arc::new(Mutex::new(QueueState::default()));
        let mut repo = MockTaskRepository::new();
        nothing_stored(&mut repo);
        let read = Arc::clone(&stored);
        repo.expect_queue_state()
            .with(eq(queue("emails")))
            .returning(move |_| Ok(read.lock().unwrap().clone()));
        let write = Arc::clone(&stored);
        repo.expect_write_queue_state()
            .withf(|q, s, v| {
                *q == queue("emails")
                    && *v == 0
                    && s.paused == Some(Pause { by: ops(), at: now() })
                    && s.version == 1
            })
            .times(1)
            .returning(move |_, s, _| {
                *write.lock().unwrap() = s.clone();
                Ok(true)
            });
        let listed = Arc::clone(&stored);
        repo.expect_queue_states()
            .returning(move || Ok(vec![(queue("emails"), listed.lock().unwrap().clone())]));
        let service = service(repo);

        let first =
            service.pause_queue(&queue("emails"), &ops(), &VersionMatch::OneOf(vec![0])).unwrap();
        let other = TokenName::parse("other").unwrap();
        let second = service.pause_queue(&queue("emails"), &other, &VersionMatch::Any).unwrap();
        let stale = service.pause_queue(&queue("emails"), &other, &VersionMatch::OneOf(vec![0, 7]));

        assert_eq!(first.state.paused, Some(Pause { by: ops(), at: now() }));
        assert_eq!(second, first, "pausing again keeps the first pause");
        assert!(
            matches!(stale, Err(AppError::QueueVersionMismatch { current: 1, .. })),
            "{stale:?}"
        );
    }

    #[test]
    fn resume_retries_after_losing_a_race_and_does_nothing_on_a_running_queue() {
        let mut repo = MockTaskRepository::new();
        nothing_stored(&mut repo);
        let mut reads = 0;
        repo.expect_queue_state().times(2).returning(move |_| {
            reads += 1;
            Ok(QueueState { version: reads, ..paused_state() })
        });
        let mut writes = 0;
        repo.expect_write_queue_state()
            .withf(|_, s, v| s.is_claimable() && s.version == v + 1)
            .times(2)
            .returning(move |_, _, _| {
                writes += 1;
                Ok(writes == 2)
            });
        repo.expect_queue_states().returning(|| {
            Ok(vec![(queue("emails"), QueueState { version: 3, ..QueueState::default() })])
        });
        let service = service(repo);

        let resumed = service.resume_queue(&queue("emails"), &VersionMatch::Any).unwrap();

        assert!(resumed.state.is_claimable());
    }

    #[test]
    fn explain_asks_for_tasks_ahead_only_of_a_runnable_task() {
        let task = pending();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &task);
        repo.expect_queue_state().returning(|_| Ok(QueueState::default()));
        repo.expect_runnable_ahead()
            .withf(|t, n, cap| t.id() == id() && *n == now() && *cap == AHEAD_CAP)
            .times(1)
            .returning(|_, _, _| Ok(12));

        let found = service(repo).explain(id()).unwrap();

        assert!(found.explanation.runnable);
        let codes: Vec<_> = found.explanation.reasons.iter().map(Reason::code).collect();
        // The service began watching claims at `now`: no claim yet is no idle queue yet.
        assert_eq!(codes, ["TASKS_AHEAD"]);
    }

    #[test]
    fn explain_of_a_paused_queue_and_of_a_running_task_reads_no_tasks_ahead() {
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &running());
        repo.expect_queue_state().returning(|_| Ok(paused_state()));
        repo.expect_runnable_ahead().never();
        let found = service(repo).explain(id()).unwrap();
        assert!(!found.explanation.runnable);
        assert!(matches!(found.explanation.reasons[..], [Reason::Running { .. }]));
    }

    #[test]
    fn explain_names_who_cancelled_a_task_from_its_history() {
        let mut task = pending();
        task.cancel(now()).unwrap();
        let mut repo = MockTaskRepository::new();
        expect_get(&mut repo, &task);
        repo.expect_queue_state().returning(|_| Ok(QueueState::default()));
        let cancelled = task.clone();
        repo.expect_events().with(eq(id())).times(1).returning(move |_| {
            Ok(vec![TaskEvent::transition(Some(&pending()), &cancelled, Actor::Client)
                .by(Some(TokenName::parse("billing-app").unwrap()))])
        });

        let found = service(repo).explain(id()).unwrap();

        assert_eq!(
            found.explanation.reasons,
            vec![Reason::Cancelled {
                by: Some(TokenName::parse("billing-app").unwrap()),
                at: Some(now())
            }]
        );
    }
}
