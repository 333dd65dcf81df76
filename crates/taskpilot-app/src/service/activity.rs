//! What the queue has been doing, for operators: tasks created and finished per minute, the
//! failed tasks grouped by what went wrong, and the workers seen recently with what they
//! run. Reads of maintained or bounded data only, so that they cost the same on ten million
//! tasks as on ten; and the in-memory record of worker calls that feeds the last.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use taskpilot_api::limits::{DEAD_LETTER_SCAN, MAX_PAGE_SIZE, MAX_THROUGHPUT_MINUTES};
use taskpilot_domain::{QueueName, Task, TaskName, TaskStatus, TokenId, WorkerId};

use super::TaskService;
use crate::{AppError, TaskFilter};

/// A worker counts as seen recently for this long after its last call.
pub const WORKER_SEEN_WINDOW: TimeDelta = TimeDelta::hours(1);

/// Storage forgets a worker unseen for this long.
pub const WORKER_FORGET_AFTER: TimeDelta = TimeDelta::days(1);

/// Most workers one server remembers between two writes of its sightings; past it the
/// longest-unseen one is dropped (calls name workers a client chooses, so the memory is
/// bounded).
const MAX_REMEMBERED_WORKERS: usize = 10_000;

/// Most running tasks [`TaskService::workers`] reads to show what each worker runs.
pub const MAX_RUNNING_SHOWN: u32 = MAX_PAGE_SIZE;

/// Most workers [`TaskService::workers`] shows from the recorded sightings.
pub const MAX_WORKERS_SHOWN: u32 = 1_000;

/// Most characters of an error's first line that tell dead-letter groups apart.
pub const DEAD_LETTER_ERROR_CHARS: u32 = 200;

/// Tasks created and finished in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Tasks created in it.
    pub created: u64,
    /// Tasks that succeeded in it.
    pub succeeded: u64,
    /// Tasks that failed for good in it.
    pub failed: u64,
    /// Tasks cancelled in it.
    pub cancelled: u64,
}

impl ThroughputMinute {
    /// A minute in which nothing happened.
    pub fn quiet(minute: DateTime<Utc>) -> Self {
        Self { minute, created: 0, succeeded: 0, failed: 0, cancelled: 0 }
    }

    /// Tasks that finished in it, however they ended.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Failed tasks of one queue and name whose errors begin alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterGroup {
    /// Their queue.
    pub queue: QueueName,
    /// Their name.
    pub name: TaskName,
    /// The first line of their last error, cut at [`DEAD_LETTER_ERROR_CHARS`] characters;
    /// empty for tasks that failed without one.
    pub error: String,
    /// How many failed tasks it holds.
    pub count: u64,
    /// When the first of them failed.
    pub first_failed_at: DateTime<Utc>,
    /// When the last of them failed.
    pub last_failed_at: DateTime<Utc>,
}

/// Which failed tasks [`TaskRepository::dead_letters`](crate::TaskRepository::dead_letters)
/// groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only tasks in these queues (a token's reach); every queue when `None`.
    pub queues: Option<Vec<QueueName>>,
    /// Only tasks created by this token.
    pub created_by: Option<TokenId>,
    /// Only among the newest this many failed tasks.
    pub scan: u32,
    /// At most this many groups, the largest first.
    pub limit: u32,
    /// How many characters of the error's first line tell groups apart.
    pub error_chars: u32,
}

/// When one worker last called, as a server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSighting {
    /// The worker.
    pub worker: WorkerId,
    /// Its last claim.
    pub last_claim_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Its last call of any kind.
    pub last_seen_at: DateTime<Utc>,
}

impl WorkerSighting {
    /// Takes in a later (or earlier) sighting of the same worker: each instant is the later
    /// of the two, so sightings merge in any order, from any number of servers.
    pub fn merge(&mut self, other: &WorkerSighting) {
        self.last_claim_at = self.last_claim_at.max(other.last_claim_at);
        self.last_heartbeat_at = self.last_heartbeat_at.max(other.last_heartbeat_at);
        self.last_seen_at = self.last_seen_at.max(other.last_seen_at);
    }
}

/// What a worker's call was, for [`WorkerLog::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCall {
    /// A claim or a start by id.
    Claim,
    /// A heartbeat.
    Heartbeat,
    /// A report: success, failure, release.
    Report,
}

/// The worker calls this server answered since its sightings were last written, in memory,
/// shared by every clone of the service. Calls cost a map update here; storage gets one
/// write per worker about once a second ([`TaskService::record_workers`]).
#[derive(Debug, Default)]
pub struct WorkerLog {
    seen: Mutex<HashMap<WorkerId, WorkerSighting>>,
}

impl WorkerLog {
    /// Notes a call of `worker` at `at`.
    pub fn record(&self, worker: &WorkerId, call: WorkerCall, at: DateTime<Utc>) {
        let sighting = WorkerSighting {
            worker: worker.clone(),
            last_claim_at: (call == WorkerCall::Claim).then_some(at),
            last_heartbeat_at: (call == WorkerCall::Heartbeat).then_some(at),
            last_seen_at: at,
        };
        // A panic elsewhere while holding the lock leaves plain timestamps behind: still good.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get_mut(worker) {
            known.merge(&sighting);
            return;
        }
        if seen.len() >= MAX_REMEMBERED_WORKERS {
            let oldest = seen.values().min_by_key(|s| s.last_seen_at).map(|s| s.worker.clone());
            if let Some(oldest) = oldest {
                seen.remove(&oldest);
            }
        }
        seen.insert(worker.clone(), sighting);
    }

    /// Takes every sighting noted so far, leaving the log empty.
    pub fn take(&self) -> Vec<WorkerSighting> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.drain().map(|(_, s)| s).collect()
    }

    /// Puts back sightings that could not be written, merged with those noted since.
    pub fn restore(&self, sightings: Vec<WorkerSighting>) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for sighting in sightings {
            if let Some(known) = seen.get_mut(&sighting.worker) {
                known.merge(&sighting);
            } else if seen.len() < MAX_REMEMBERED_WORKERS {
                seen.insert(sighting.worker.clone(), sighting);
            }
        }
    }
}

/// One worker as operators see it: its last calls and the tasks it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its last claim, as recorded by any server.
    pub last_claim_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Its last call of any kind; `None` for a worker known only by the tasks it runs (it
    /// claimed them before any server recorded calls, or too long ago).
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The RUNNING tasks it holds, oldest attempt first.
    pub running: Vec<Task>,
}

impl TaskService {
    /// Tasks created and finished per minute over the last `minutes` minutes, the current
    /// minute included, oldest first, one entry per minute (quiet minutes too), summed over
    /// `queues` (every queue when `None`). From the counts the writes maintain: finished
    /// tasks that retention deleted since still count.
    ///
    /// # Errors
    /// [`AppError::InvalidWindow`]; storage errors.
    pub fn throughput(
        &self,
        minutes: u32,
        queues: Option<&[QueueName]>,
    ) -> Result<Vec<ThroughputMinute>, AppError> {
        if !(1..=MAX_THROUGHPUT_MINUTES).contains(&minutes) {
            return Err(AppError::InvalidWindow(minutes));
        }
        let now = self.clock.now();
        let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let first = this_minute - TimeDelta::minutes(i64::from(minutes) - 1);
        let stored: BTreeMap<DateTime<Utc>, ThroughputMinute> =
            self.repo.throughput(first, queues)?.into_iter().map(|m| (m.minute, m)).collect();
        Ok((0..i64::from(minutes))
            .map(|i| first + TimeDelta::minutes(i))
            .map(|minute| {
                stored.get(&minute).copied().unwrap_or_else(|| ThroughputMinute::quiet(minute))
            })
            .collect())
    }

    /// The failed tasks grouped by queue, name and the first line of their error, the
    /// largest groups first, at most `limit` of them; among the newest
    /// [`DEAD_LETTER_SCAN`] failed tasks, so that the answer stays quick however many
    /// failed. `queues` and `created_by` narrow it to a caller's reach.
    ///
    /// # Errors
    /// [`AppError::InvalidLimit`]; storage errors.
    pub fn dead_letters(
        &self,
        limit: u32,
        queues: Option<Vec<QueueName>>,
        created_by: Option<TokenId>,
    ) -> Result<Vec<DeadLetterGroup>, AppError> {
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(AppError::InvalidLimit(limit));
        }
        let query = DeadLetterQuery {
            queues,
            created_by,
            scan: DEAD_LETTER_SCAN,
            limit,
            error_chars: DEAD_LETTER_ERROR_CHARS,
        };
        Ok(self.repo.dead_letters(&query)?)
    }

    /// The workers seen in the last [`WORKER_SEEN_WINDOW`] by any server (at most
    /// [`MAX_WORKERS_SHOWN`]), and any other
    /// worker that holds a running task, each with the RUNNING tasks it holds (at most
    /// [`MAX_RUNNING_SHOWN`] tasks in all, in `queues` when given), the most recently seen
    /// first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn workers(&self, queues: Option<Vec<QueueName>>) -> Result<Vec<WorkerView>, AppError> {
        let now = self.clock.now();
        let sightings = self.repo.workers(now - WORKER_SEEN_WINDOW, MAX_WORKERS_SHOWN)?;
        let filter =
            TaskFilter { statuses: vec![TaskStatus::Running], queues, ..TaskFilter::default() };
        let running = self.repo.list(&filter, None, MAX_RUNNING_SHOWN)?;

        let mut views: HashMap<WorkerId, WorkerView> = sightings
            .into_iter()
            .map(|s| {
                let view = WorkerView {
                    worker_id: s.worker.clone(),
                    last_claim_at: s.last_claim_at,
                    last_heartbeat_at: s.last_heartbeat_at,
                    last_seen_at: Some(s.last_seen_at),
                    running: Vec::new(),
                };
                (s.worker, view)
            })
            .collect();
        for task in running {
            let Some(worker) = task.worker_id().cloned() else { continue };
            views
                .entry(worker.clone())
                .or_insert_with(|| WorkerView {
                    worker_id: worker,
                    last_claim_at: None,
                    last_heartbeat_at: None,
                    last_seen_at: None,
                    running: Vec::new(),
                })
                .running
                .push(task);
        }
        let mut views: Vec<WorkerView> = views.into_values().collect();
        for view in &mut views {
            view.running.sort_by_key(|t| (t.processing_started_at(), t.id()));
        }
        views.sort_by(|a, b| {
            b.last_seen_at
                .cmp(&a.last_seen_at)
                .then_with(|| a.worker_id.as_str().cmp(b.worker_id.as_str()))
        });
        Ok(views)
    }

    /// Notes a worker's call for [`TaskService::workers`]; storage hears of it at the next
    /// [`TaskService::record_workers`].
    pub(crate) fn saw_worker(&self, worker: Option<&WorkerId>, call: WorkerCall) {
        if let Some(worker) = worker {
            self.workers.record(worker, call, self.clock.now());
        }
    }

    /// Writes the worker calls noted since the last write, one row per worker, and forgets
    /// workers unseen for [`WORKER_FORGET_AFTER`]. Returns how many workers it wrote. A
    /// server calls it about once a second; calls noted while storage is down are kept for
    /// the next try.
    ///
    /// # Errors
    /// Storage errors.
    pub fn record_workers(&self) -> Result<usize, AppError> {
        let sightings = self.workers.take();
        if sightings.is_empty() {
            return Ok(0);
        }
        let forget_before = self.clock.now() - WORKER_FORGET_AFTER;
        match self.repo.record_workers(&sightings, forget_before) {
            Ok(()) => Ok(sightings.len()),
            Err(e) => {
                self.workers.restore(sightings);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::TimeZone as _;

    use super::super::fixtures::*;
    use super::*;
    use crate::{MockTaskRepository, RepoError};

    fn at(minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, minute, second).unwrap()
    }

    fn service_at(repo: MockTaskRepository, now: DateTime<Utc>) -> TaskService {
        TaskService::new(
            std::sync::Arc::new(repo),
            std::sync::Arc::new(taskpilot_domain::FixedClock::new(now)),
            std::sync::Arc::new(taskpilot_domain::FixedBackoff(BACKOFF)),
            defaults(),
        )
    }

    fn running_task(by: &str) -> Task {
        let mut task = new_task(task_id(u128::from(by.len() as u32)), 3, t0());
        task.start(&worker(by), live_token(), defaults().lease, t0()).unwrap();
        task
    }

    #[test]
    fn throughput_has_every_minute_of_the_window_with_quiet_ones_as_zero() {
        let mut repo = MockTaskRepository::new();
        repo.expect_throughput()
            .withf(|since, queues| *since == at(7, 0) && queues.is_none())
            .times(1)
            .returning(|_, _| {
                Ok(vec![ThroughputMinute {
                    created: 5,
                    succeeded: 2,
                    ..ThroughputMinute::quiet(at(8, 0))
                }])
            });
        let service = service_at(repo, at(9, 30));

        let minutes = service.throughput(3, None).unwrap();

        assert_eq!(
            minutes.iter().map(|m| m.minute).collect::<Vec<_>>(),
            [at(7, 0), at(8, 0), at(9, 0)]
        );
        assert_eq!(minutes.iter().map(|m| m.created).collect::<Vec<_>>(), [0, 5, 0]);
        assert_eq!(minutes[1].finished(), 2);
    }

    #[test]
    fn a_throughput_window_outside_a_day_is_refused_before_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_throughput().never();
        let service = service_at(repo, at(0, 0));
        for minutes in [0, MAX_THROUGHPUT_MINUTES + 1] {
            assert!(
                matches!(service.throughput(minutes, None), Err(AppError::InvalidWindow(m)) if m == minutes)
            );
        }
    }

    #[test]
    fn dead_letters_scan_a_bounded_number_of_failed_tasks_and_refuse_a_bad_limit() {
        let mut repo = MockTaskRepository::new();
        repo.expect_dead_letters()
            .withf(|q| {
                q.scan == DEAD_LETTER_SCAN
                    && q.limit == 20
                    && q.error_chars == DEAD_LETTER_ERROR_CHARS
            })
            .times(1)
            .returning(|_| Ok(Vec::new()));
        let service = service_at(repo, at(0, 0));
        assert_eq!(service.dead_letters(20, None, None).unwrap(), []);
        assert!(matches!(service.dead_letters(0, None, None), Err(AppError::InvalidLimit(0))));
        assert!(matches!(
            service.dead_letters(MAX_PAGE_SIZE + 1, None, None),
            Err(AppError::InvalidLimit(_))
        ));
    }

    #[test]
    fn sightings_merge_to_the_latest_instant_of_each_kind_in_any_order() {
        let log = WorkerLog::default();
        let w = worker("w1");
        log.record(&w, WorkerCall::Heartbeat, at(5, 0));
        log.record(&w, WorkerCall::Claim, at(3, 0));
        log.record(&w, WorkerCall::Report, at(4, 0));

        let taken = log.take();

        assert_eq!(
            taken,
            [WorkerSighting {
                worker: w,
                last_claim_at: Some(at(3, 0)),
                last_heartbeat_at: Some(at(5, 0)),
                last_seen_at: at(5, 0),
            }]
        );
        assert!(log.take().is_empty(), "taking empties the log");
    }

    #[test]
    fn sightings_that_storage_refused_are_written_with_the_next_ones() {
        let mut repo = MockTaskRepository::new();
        let mut calls = 0;
        repo.expect_record_workers().times(2).returning(move |sightings, _| {
            calls += 1;
            if calls == 1 {
                return Err(RepoError::Unavailable(anyhow::anyhow!("down")));
            }
            assert_eq!(sightings.len(), 2, "the refused sighting and the new one");
            Ok(())
        });
        let service = service_at(repo, at(10, 0));
        service.saw_worker(Some(&worker("a")), WorkerCall::Claim);
        assert!(matches!(service.record_workers(), Err(AppError::Unavailable(_))));
        service.saw_worker(Some(&worker("b")), WorkerCall::Heartbeat);

        assert_eq!(service.record_workers().unwrap(), 2);
        assert_eq!(service.record_workers().unwrap(), 0, "nothing new, no write");
    }

    #[test]
    fn workers_join_sightings_with_the_running_tasks_and_show_unrecorded_holders() {
        let mut repo = MockTaskRepository::new();
        repo.expect_workers().times(1).returning(|_, _| {
            Ok(vec![WorkerSighting {
                worker: worker("seen"),
                last_claim_at: Some(at(1, 0)),
                last_heartbeat_at: None,
                last_seen_at: at(2, 0),
            }])
        });
        repo.expect_list()
            .withf(|f, after, limit| {
                f.statuses == [TaskStatus::Running]
                    && after.is_none()
                    && *limit == MAX_RUNNING_SHOWN
            })
            .times(1)
            .returning(|_, _, _| Ok(vec![running_task("seen"), running_task("ghost")]));
        let service = service_at(repo, at(10, 0));

        let views = service.workers(None).unwrap();

        assert_eq!(views.len(), 2);
        assert_eq!(views[0].worker_id, worker("seen"));
        assert_eq!(views[0].running.len(), 1);
        assert_eq!(views[1].worker_id, worker("ghost"));
        assert_eq!(views[1].last_seen_at, None, "known only by the task it holds");
        assert_eq!(views[1].running.len(), 1);
    }
}
