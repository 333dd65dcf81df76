//! The maintained counts on a real PostgreSQL: after randomized workloads through the use
//! cases (every write path: creates single and batched, claims, starts, successes live and
//! judged, failures, releases, batch completions, cancels, reruns, lease expiries, deletions
//! by retention, folds in between), `task_counts` says exactly what `COUNT(*)` over the tasks
//! says, and the wait and run histograms count every started and every ended attempt.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use serde_json::json;
use taskpilot_app::{
    Completion, CreateTask, DurationKind, ReportedOutcome, ServiceDefaults, StatusCounts,
    TaskCounts, TaskObserver, TaskService, DURATION_BUCKETS,
};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{
    AttemptEnd, Clock as _, FixedBackoff, FixedClock, KeepFor, LeaseToken, MaxAttempts, Reporter,
    Retention, Task, TaskId, TaskName, WorkerId,
};

/// Counts what the service says it started and ended, to hold the histograms against.
#[derive(Default)]
struct Tally {
    started: AtomicU64,
    ended: AtomicU64,
    expired: AtomicU64,
}

impl TaskObserver for Tally {
    fn started(&self, tasks: &[Task]) {
        self.started.fetch_add(tasks.len() as u64, Ordering::Relaxed);
    }

    fn attempt_ended(&self, task: &Task) {
        self.ended.fetch_add(1, Ordering::Relaxed);
        if task.last_ended().map(|e| e.end) == Some(AttemptEnd::LeaseExpired) {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A small deterministic random source (xorshift64*): the same seed, the same workload.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn queue(&mut self) -> taskpilot_domain::QueueName {
        let name = QUEUES[self.below(QUEUES.len() as u64) as usize];
        queue(name)
    }
}

const QUEUES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

fn service(db: &TestDatabase, clock: Arc<FixedClock>, tally: Arc<Tally>) -> TaskService {
    TaskService::new(
        Arc::new(PgTaskRepository::new(db.pool())),
        clock,
        Arc::new(FixedBackoff(TimeDelta::seconds(45))),
        ServiceDefaults { max_attempts: MaxAttempts::new(3).unwrap(), lease: lease(60) },
    )
    .with_retention(Retention::new(
        KeepFor::Duration(TimeDelta::minutes(3)),
        KeepFor::Duration(TimeDelta::minutes(6)),
        KeepFor::Duration(TimeDelta::minutes(2)),
    ))
    .with_observer(tally)
}

fn create_request(rng: &mut Rng, now: DateTime<Utc>) -> CreateTask {
    let run_at = match rng.below(4) {
        0 => Some(now + TimeDelta::milliseconds(rng.below(150_000) as i64)),
        1 => Some(now - TimeDelta::seconds(rng.below(30) as i64)),
        _ => None,
    };
    CreateTask {
        queue: Some(rng.queue()),
        name: TaskName::parse("job").unwrap(),
        payload: json!({}),
        priority: rng.below(3) as i32 - 1,
        max_attempts: Some(MaxAttempts::new(1 + rng.below(3) as i64).unwrap()),
        max_crashes: None,
        run_at,
        unique_key: None,
        on_conflict: taskpilot_app::OnConflict::Return,
    }
}

/// An attempt a worker holds, as its worker knows it.
#[derive(Clone)]
struct Held {
    id: TaskId,
    worker: WorkerId,
    token: LeaseToken,
}

impl Held {
    fn of(task: &Task) -> Self {
        Self {
            id: task.id(),
            worker: task.worker_id().unwrap().clone(),
            token: task.lease().unwrap().token,
        }
    }

    fn reporter(&self) -> Reporter {
        Reporter::lease(Some(self.worker.clone()), self.token)
    }
}

/// Runs `steps` random operations (refusals and conflicts are part of the workload) and
/// returns how many tasks retention deleted.
fn workload(service: &TaskService, clock: &FixedClock, seed: u64, steps: usize) -> u64 {
    let mut pruned = 0;
    let mut rng = Rng(seed);
    let mut known: Vec<TaskId> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    let mut stale: Vec<Held> = Vec::new();
    for _ in 0..steps {
        let now = clock.now();
        match rng.below(17) {
            0 | 1 => known.push(service.create(create_request(&mut rng, now)).unwrap().id()),
            2 => {
                let n = 1 + rng.below(6) as usize;
                let batch = (0..n).map(|_| create_request(&mut rng, now)).collect();
                known.extend(service.create_batch(batch).unwrap().iter().map(Task::id));
            }
            3 | 4 => {
                let queues = match rng.below(3) {
                    0 => None,
                    1 => Some(vec![rng.queue()]),
                    _ => Some(vec![rng.queue(), rng.queue()]),
                };
                let w = worker(&format!("w{}", rng.below(3)));
                let claimed = service.claim(&w, queues, 1 + rng.below(4) as u32, None).unwrap();
                held.extend(claimed.iter().map(Held::of));
            }
            5 => {
                if let Some(id) = known.get(rng.below(known.len().max(1) as u64) as usize) {
                    if let Ok(task) = service.start(*id, &worker("starter"), None) {
                        held.push(Held::of(&task));
                    }
                }
            }
            6..=9 if !held.is_empty() => {
                let h = held.swap_remove(rng.below(held.len() as u64) as usize);
                let _ = match rng.below(4) {
                    0 | 1 => service.succeed(h.id, &h.reporter(), None),
                    2 => service.fail(h.id, &h.reporter(), "boom"),
                    _ if rng.below(2) == 0 => service.fail_permanently(h.id, &h.reporter(), "bad"),
                    _ => service.release(h.id, &h.reporter()),
                };
                stale.push(h);
            }
            10 if !held.is_empty() => {
                let n = 1 + rng.below(held.len() as u64) as usize;
                let items: Vec<Completion> = held
                    .drain(..n)
                    .map(|h| {
                        let outcome = match rng.below(4) {
                            0 | 1 => ReportedOutcome::Succeeded { result: Some(json!({"ok": 1})) },
                            2 => ReportedOutcome::Failed {
                                error: "e".into(),
                                retryable: rng.below(2) == 0,
                            },
                            _ => ReportedOutcome::Released,
                        };
                        stale.push(h.clone());
                        Completion { id: h.id, reporter: h.reporter(), outcome }
                    })
                    .collect();
                service.complete_batch(items).unwrap();
            }
            11 if !stale.is_empty() => {
                let h = rng.pick(&stale).clone();
                let _ = service.succeed(h.id, &h.reporter(), None);
            }
            12 if !known.is_empty() => {
                let id = *rng.pick(&known);
                let _ = if rng.below(2) == 0 { service.cancel(id) } else { service.rerun(id) };
            }
            13 => clock.advance(TimeDelta::milliseconds(rng.below(80_000) as i64)),
            14 => {
                service.reap_expired(100).unwrap();
            }
            15 => pruned += service.prune(1 + rng.below(20) as u32).unwrap().total(),
            _ => {
                service.fold_counts(1 + rng.below(40) as u32).unwrap();
            }
        }
    }
    pruned
}

/// What `COUNT(*)` over the tasks says at `now`, by queue.
fn counted(db: &TestDatabase, now: DateTime<Utc>) -> BTreeMap<String, StatusCounts> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        queue: String,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT queue, CASE WHEN status = 'PENDING' AND next_run_at > $1 THEN 'SCHEDULED'
                            WHEN status = 'PENDING' THEN 'RUNNABLE' ELSE status END AS status,
                count(*) AS n
         FROM tasks GROUP BY 1, 2",
    )
    .bind::<Timestamptz, _>(now)
    .load(&mut db.pool().get().unwrap())
    .unwrap();
    let mut counts: BTreeMap<String, StatusCounts> = BTreeMap::new();
    for row in rows {
        let c = counts.entry(row.queue).or_default();
        let n = row.n as u64;
        match row.status.as_str() {
            "RUNNABLE" => c.runnable = n,
            "SCHEDULED" => c.scheduled = n,
            "RUNNING" => c.running = n,
            "SUCCEEDED" => c.succeeded = n,
            "FAILED" => c.failed = n,
            "CANCELLED" => c.cancelled = n,
            other => panic!("status {other}"),
        }
    }
    counts
}

/// The oldest runnable task of each queue by the claim order's key, read the slow way.
fn oldest_runnable(db: &TestDatabase, now: DateTime<Utc>) -> BTreeMap<String, DateTime<Utc>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        queue: String,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        since: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT queue, min(coalesce(next_run_at, created_at)) AS since FROM tasks
         WHERE status = 'PENDING' AND (next_run_at IS NULL OR next_run_at <= $1) GROUP BY queue",
    )
    .bind::<Timestamptz, _>(now)
    .load(&mut db.pool().get().unwrap())
    .unwrap();
    rows.into_iter().map(|r| (r.queue, r.since.unwrap())).collect()
}

fn maintained(counts: &TaskCounts) -> BTreeMap<String, StatusCounts> {
    counts.queues.iter().map(|q| (q.queue.as_str().to_owned(), q.counts)).collect()
}

fn histogram_count(counts: &TaskCounts, kind: DurationKind) -> u64 {
    counts.durations.iter().filter(|h| h.kind == kind).map(|h| h.buckets.iter().sum::<u64>()).sum()
}

#[test]
fn maintained_counts_equal_count_star_after_random_workloads() {
    for seed in [0x5eed_0001_u64, 0x0bad_cafe, 0x1234_5678_9abc] {
        let db = TestDatabase::new();
        let clock = Arc::new(FixedClock::new(t0()));
        let tally = Arc::new(Tally::default());
        let service = service(&db, clock.clone(), tally.clone());
        let (mut seen, mut pruned) = (StatusCounts::default(), 0);

        for round in 0..4 {
            pruned += workload(&service, &clock, seed.wrapping_add(round), 150);
            let now = clock.now();

            let counts = service.task_counts(100).unwrap();

            let label = format!("seed {seed:#x}, round {round}");
            assert_eq!(maintained(&counts), counted(&db, now), "{label}");
            seen.add(&counts.totals());
            assert_eq!(counts.other_queues, None, "{label}");
            let oldest: BTreeMap<String, DateTime<Utc>> = counts
                .queues
                .iter()
                .filter_map(|q| q.oldest_runnable_since.map(|s| (q.queue.as_str().to_owned(), s)))
                .collect();
            assert_eq!(oldest, oldest_runnable(&db, now), "{label}");
            assert_eq!(
                histogram_count(&counts, DurationKind::Wait),
                tally.started.load(Ordering::Relaxed),
                "{label}: one wait per started attempt"
            );
            assert_eq!(
                histogram_count(&counts, DurationKind::Run),
                tally.ended.load(Ordering::Relaxed),
                "{label}: one run time per ended attempt"
            );
        }
        // The workload reached every status, expired leases and deleted finished tasks.
        for (status, n) in [
            ("runnable", seen.runnable),
            ("scheduled", seen.scheduled),
            ("running", seen.running),
            ("succeeded", seen.succeeded),
            ("failed", seen.failed),
            ("cancelled", seen.cancelled),
        ] {
            assert!(n > 0, "seed {seed:#x}: no {status} task was ever counted");
        }
        assert!(tally.expired.load(Ordering::Relaxed) > 0, "seed {seed:#x}: no lease expired");
        assert!(pruned > 0, "seed {seed:#x}: retention deleted nothing");
        // Folding everything changes no count.
        let before = service.task_counts(100).unwrap();
        for _ in 0..3 {
            service.fold_counts(10_000).unwrap();
        }
        assert_eq!(service.task_counts(100).unwrap(), before, "seed {seed:#x}: after folding");
    }
}

#[test]
fn queues_beyond_the_cap_are_counted_together() {
    let db = TestDatabase::new();
    let clock = Arc::new(FixedClock::new(t0()));
    let service = service(&db, clock.clone(), Arc::new(Tally::default()));
    for (name, n) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        for _ in 0..n {
            let request = CreateTask {
                queue: Some(queue(name)),
                name: TaskName::parse("job").unwrap(),
                payload: json!({}),
                priority: 0,
                max_crashes: None,
                max_attempts: None,
                run_at: None,
                unique_key: None,
                on_conflict: taskpilot_app::OnConflict::Return,
            };
            service.create(request).unwrap();
        }
    }

    let counts = service.task_counts(2).unwrap();

    let named: Vec<(&str, u64)> =
        counts.queues.iter().map(|q| (q.queue.as_str(), q.counts.runnable)).collect();
    assert_eq!(named, [("a", 1), ("b", 2)], "the first queues by name");
    assert_eq!(counts.other_queues.map(|c| c.runnable), Some(7), "c and d together");
    assert_eq!(counts.totals().runnable, 10);
}

#[test]
fn a_duration_equal_to_a_bound_falls_in_that_bounds_bucket() {
    let db = TestDatabase::new();
    let clock = Arc::new(FixedClock::new(t0()));
    let service = service(&db, clock.clone(), Arc::new(Tally::default()));
    // One task per queue, each waiting exactly one bound, or one microsecond more.
    let mut cases = Vec::new();
    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
        for (extra, bucket) in [(0, i), (1, i + 1)] {
            let name = format!("q{}", cases.len());
            clock.set(t0());
            let request = CreateTask {
                queue: Some(queue(&name)),
                name: TaskName::parse("job").unwrap(),
                payload: json!({}),
                max_crashes: None,
                priority: 0,
                max_attempts: None,
                run_at: None,
                unique_key: None,
                on_conflict: taskpilot_app::OnConflict::Return,
            };
            let task = service.create(request).unwrap();
            let wait = TimeDelta::microseconds((bound * 1e6).round() as i64 + extra);
            clock.set(t0() + wait);
            service.start(task.id(), &worker("w"), None).unwrap();
            cases.push((name, bucket));
        }
    }

    let counts = service.task_counts(1_000).unwrap();

    for (name, bucket) in cases {
        let histogram = counts
            .durations
            .iter()
            .find(|h| h.kind == DurationKind::Wait && h.queue.as_ref().unwrap().as_str() == name)
            .unwrap();
        let mut expected = vec![0; DURATION_BUCKETS.len() + 1];
        expected[bucket] = 1;
        assert_eq!(histogram.buckets, expected, "queue {name}");
    }
}
