//! Claims, the reaper's query and the scheduled-run query on a real PostgreSQL.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use taskpilot_app::{Actor, ClaimRequest, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::{claim_sql, TestDatabase};
use taskpilot_diesel::{build_pool, PgTaskRepository, PoolConfig};
use taskpilot_domain::arbitrary::{lifecycle, Lifecycle};
use taskpilot_domain::{
    FixedBackoff, LeaseDuration, NewTask, QueueName, QueueState, Reporter, Task, TaskId, TokenName,
    WorkerId,
};
use uuid::Uuid;

fn request(
    worker: &WorkerId,
    queues: Option<&[&str]>,
    limit: u32,
    lease: LeaseDuration,
    now: DateTime<Utc>,
) -> ClaimRequest {
    ClaimRequest {
        worker: worker.clone(),
        queues: queues.map(|qs| qs.iter().map(|q| queue(q)).collect()),
        limit,
        lease,
        now,
    }
}

fn new_task(
    queue_name: &str,
    priority: i32,
    run_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Task {
    Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask { queue: queue(queue_name), priority, run_at, ..spec("job", 3) },
        at,
    )
}

/// The queues the drawn tasks are spread over; the claims name some of them.
const QUEUES: [&str; 4] = ["a", "b", "c", "default"];

/// Every distinct task `life` reaches, each under an id of its own and in one of [`QUEUES`],
/// and the instants a claim is most worth judging at: the lifecycle's clock at every step and
/// each pending task's next run.
fn reached(life: &Lifecycle) -> (Vec<Task>, Vec<DateTime<Utc>>) {
    let mut tasks: Vec<Task> = Vec::new();
    let mut instants = Vec::new();
    let mut last = None;
    for (i, (task, now)) in life.states().into_iter().enumerate() {
        instants.push(now);
        if last.as_ref() == Some(&task) {
            continue;
        }
        last = Some(task.clone());
        let mut record = task.to_record();
        record.id = TaskId::from_uuid(Uuid::now_v7());
        record.queue = queue(QUEUES[i % QUEUES.len()]);
        instants.extend(record.next_run_at);
        tasks.push(Task::restore(record).unwrap());
    }
    (tasks, instants)
}

/// One drawn case: the tasks a lifecycle reaches, a claim at an instant near one of its
/// interesting instants (nanoseconds the database cannot keep included), over the queues
/// asked for, with some queues paused.
#[derive(Debug, Clone)]
struct Case {
    life: Lifecycle,
    anchor: usize,
    offset: TimeDelta,
    queues: Option<Vec<&'static str>>,
    paused: Vec<&'static str>,
}

fn case() -> impl Strategy<Value = Case> {
    let offset = prop_oneof![
        Just(-TimeDelta::microseconds(1)),
        Just(TimeDelta::zero()),
        Just(TimeDelta::nanoseconds(999)),
        Just(TimeDelta::nanoseconds(456_789)),
        (-90..=90_i64).prop_map(secs),
    ];
    let queues = prop_oneof![Just(None), Just(Some(vec!["a"])), Just(Some(vec!["a", "b"]))];
    let paused = prop_oneof![Just(vec![]), Just(vec!["a"]), Just(vec!["b", "default"])];
    (lifecycle(1..30), any::<usize>(), offset, queues, paused).prop_map(
        |(life, anchor, offset, queues, paused)| Case { life, anchor, offset, queues, paused },
    )
}

/// Stores the case's tasks, pauses its paused queues, claims, and checks every task against
/// `Task::start` and `QueueState::is_claimable` at the same instant: claimed exactly when the
/// domain starts it, its queue is claimable, and the queues asked for hold it,
/// then field for field as the domain starts it, stored as returned and logged once; left
/// alone otherwise. Returns how many were claimed and how many left.
fn claim_matches_the_domain(db: &TestDatabase, case: &Case) -> (usize, usize) {
    execute(&db.pool(), "TRUNCATE task_events, tasks, queues");
    let repo = repo(db);
    let (tasks, instants) = reached(&case.life);
    let now = instants[case.anchor % instants.len()] + case.offset;
    let ops = TokenName::parse("ops").unwrap();
    let mut states: HashMap<QueueName, QueueState> = HashMap::new();
    for name in QUEUES {
        let mut state = QueueState::default();
        if case.paused.contains(&name) {
            let paused = state.pause(&ops, now).unwrap();
            assert!(repo.write_queue_state(&queue(name), &paused, 0).unwrap());
            state = paused;
        }
        states.insert(queue(name), state);
    }
    let events: Vec<TaskEvent> =
        tasks.iter().map(|t| TaskEvent::transition(None, t, Actor::Client)).collect();
    repo.insert_many(&tasks, &events).unwrap();
    let w = worker("claimer");
    let duration = lease(45);
    let queues = case.queues.as_deref();
    let limit = u32::try_from(tasks.len()).unwrap() + 1;

    let claimed = repo.claim(&request(&w, queues, limit, duration, now)).unwrap();

    let claimed_by_id: HashMap<TaskId, &Task> = claimed.iter().map(|t| (t.id(), t)).collect();
    for before in &tasks {
        let label = format!("{before:?} claimed at {now:?} over {queues:?}");
        let stored = repo.get(before.id()).unwrap();
        let events = repo.events(before.id()).unwrap();
        let asked_for = queues.is_none_or(|qs| qs.contains(&before.queue().as_str()))
            && states[before.queue()].is_claimable();
        let mut expected = before.clone();
        let token =
            claimed_by_id.get(&before.id()).map_or_else(token, |t| t.lease().unwrap().token);
        let started = asked_for && expected.start(&w, token, duration, now).is_ok();
        assert_eq!(
            claimed_by_id.contains_key(&before.id()),
            started,
            "{label}: claimed iff the domain starts it and it is in the queues asked for"
        );
        assert_eq!(started, asked_for && before.is_runnable_at(now), "{label}: runnable");
        match claimed_by_id.get(&before.id()) {
            Some(got) => {
                assert_eq!(got.to_record(), expected.to_record(), "{label}: claimed as started");
                assert_eq!(stored, **got, "{label}: stored as returned");
                assert_eq!(
                    events.last(),
                    Some(&TaskEvent::transition(Some(before), got, Actor::Worker)),
                    "{label}: start event"
                );
                assert_eq!(events.len(), 2, "{label}: one start event");
            }
            None => {
                assert_eq!(&stored, before, "{label}: left alone");
                assert_eq!(events.len(), 1, "{label}: no event");
            }
        }
    }
    let tokens: BTreeSet<Uuid> =
        claimed.iter().map(|t| t.lease().unwrap().token.as_uuid()).collect();
    assert_eq!(tokens.len(), claimed.len(), "a token of its own per attempt");
    (claimed.len(), tasks.len() - claimed.len())
}

#[test]
fn a_claim_starts_exactly_the_runnable_tasks_of_its_queues_as_the_domain_starts_them() {
    let db = TestDatabase::new();
    // A fixed seed: the same 64 cases every run, each a lifecycle's every task against a
    // real database, which keeps the test to a few seconds.
    let config = Config { cases: 64, failure_persistence: None, ..Config::default() };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let (claimed, left) = (Cell::new(0), Cell::new(0));

    runner
        .run(&case(), |case| {
            let (c, l) = claim_matches_the_domain(&db, &case);
            claimed.set(claimed.get() + c);
            left.set(left.get() + l);
            Ok(())
        })
        .unwrap();

    let (claimed, left) = (claimed.get(), left.get());
    // Crashes and paused queues leave fewer claimable tasks than there are cases; half of
    // them is still enough for the comparison to mean something.
    assert!(claimed >= 32, "the cases claim tasks: {claimed}");
    assert!(left >= 64, "the cases leave tasks alone: {left}");
}

/// Tasks whose claim order is known, and that order.
fn ordered_tasks(repo: &PgTaskRepository) -> Vec<TaskId> {
    let e = new_task("default", 10, None, t0() + secs(30));
    let b = new_task("default", 5, None, t0() + secs(1));
    let c = new_task("default", 5, Some(t0() + secs(2)), t0());
    let a = new_task("default", 5, None, t0() + secs(3));
    let d = new_task("default", 0, None, t0());
    // Same priority, same runnable-since: the id decides.
    let f = new_task("default", 0, None, t0() + secs(5));
    let g = Task::restore({
        let mut r = new_task("default", 0, None, t0() + secs(5)).to_record();
        r.id = TaskId::from_uuid(Uuid::from_u128(f.id().as_uuid().as_u128() ^ 1));
        r
    })
    .unwrap();
    let h = new_task("default", -1, None, t0());
    let mut retried = new_task("default", 5, None, t0());
    for task in [&e, &b, &c, &a, &d, &f, &g, &h, &retried] {
        store(repo, task);
    }
    // A retry is runnable since its nextRunAt, not since its creation: after b, before c.
    transition(repo, &mut retried, |t| t.start(&worker("w"), token(), lease(60), t0()));
    transition(repo, &mut retried, |t| {
        t.fail_and_schedule_retry(
            &Reporter::anyone(),
            "x",
            t0(),
            &FixedBackoff(secs(1) + TimeDelta::milliseconds(500)),
        )
    });
    let (first_tie, second_tie) =
        if f.id().as_uuid() < g.id().as_uuid() { (f.id(), g.id()) } else { (g.id(), f.id()) };
    vec![e.id(), b.id(), retried.id(), c.id(), a.id(), d.id(), first_tie, second_tie, h.id()]
}

#[test]
fn claims_come_by_priority_then_runnable_since_then_id() {
    let (one_db, batch_db) = (TestDatabase::new(), TestDatabase::new());
    let (one_repo, batch_repo) = (repo(&one_db), repo(&batch_db));
    let expected = ordered_tasks(&one_repo);
    let expected_batch = ordered_tasks(&batch_repo);
    let now = t0() + secs(60);
    let w = worker("w");

    let one_by_one: Vec<TaskId> = (0..10)
        .flat_map(|_| one_repo.claim(&request(&w, None, 1, lease(60), now)).unwrap())
        .map(|t| t.id())
        .collect();
    let batch: Vec<TaskId> = batch_repo
        .claim(&request(&w, None, 100, lease(60), now))
        .unwrap()
        .iter()
        .map(Task::id)
        .collect();

    assert_eq!(one_by_one, expected);
    assert_eq!(batch, expected_batch, "a batch comes back in claim order");
}

#[test]
fn a_claim_takes_exactly_its_limit_while_enough_tasks_are_runnable() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    for i in 0..10 {
        store(&repo, &new_task("default", 0, None, t0() + secs(i)));
    }
    let w = worker("w");

    let sizes: Vec<usize> = (0..5)
        .map(|_| repo.claim(&request(&w, None, 3, lease(60), t0() + secs(60))).unwrap().len())
        .collect();

    assert_eq!(sizes, [3, 3, 3, 1, 0]);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks WHERE status = 'RUNNING'"), 10);
}

#[test]
fn a_claim_takes_only_the_queues_it_names() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let tasks: Vec<Task> =
        ["a", "b", "c", "a", "default"].iter().map(|q| new_task(q, 0, None, t0())).collect();
    for task in &tasks {
        store(&repo, task);
    }
    let now = t0() + secs(1);
    let w = worker("w");
    let queues_of = |claimed: Vec<Task>| {
        let mut qs: Vec<String> = claimed.iter().map(|t| t.queue().as_str().to_owned()).collect();
        qs.sort();
        qs
    };

    let none = repo.claim(&request(&w, Some(&[]), 10, lease(60), now)).unwrap();
    let missing = queues_of(repo.claim(&request(&w, Some(&["zzz"]), 10, lease(60), now)).unwrap());
    let a = queues_of(repo.claim(&request(&w, Some(&["a"]), 10, lease(60), now)).unwrap());
    let b_and_c =
        queues_of(repo.claim(&request(&w, Some(&["b", "c"]), 10, lease(60), now)).unwrap());
    let rest = queues_of(repo.claim(&request(&w, None, 10, lease(60), now)).unwrap());

    assert!(none.is_empty());
    assert!(missing.is_empty());
    assert_eq!(a, ["a", "a"]);
    assert_eq!(b_and_c, ["b", "c"]);
    assert_eq!(rest, ["default"]);
}

#[test]
fn a_delayed_task_is_claimed_from_its_run_time_on_and_not_before() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let task = new_task("default", 0, Some(t0() + secs(30)), t0());
    store(&repo, &task);
    let w = worker("w");

    let early = repo
        .claim(&request(&w, None, 1, lease(60), t0() + secs(30) - TimeDelta::microseconds(1)))
        .unwrap();
    let on_time = repo.claim(&request(&w, None, 1, lease(60), t0() + secs(30))).unwrap();

    assert!(early.is_empty());
    assert_eq!(on_time.iter().map(Task::id).collect::<Vec<_>>(), [task.id()]);
    assert_eq!(on_time[0].attempt(), 1);
}

#[test]
fn a_claim_skips_rows_another_transaction_holds_without_waiting_for_them() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let held = new_task("default", 10, None, t0());
    let free = new_task("default", 0, None, t0());
    store(&repo, &held);
    store(&repo, &free);
    let mut holder = PgConnection::establish(db.url()).unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM tasks WHERE id = '{}' FOR UPDATE",
            held.id()
        ))
        .unwrap();
    let (sent, received) = mpsc::channel();
    let claimer = repo.clone();

    std::thread::spawn(move || {
        let claimed = claimer.claim(&request(&worker("w"), None, 10, lease(60), t0() + secs(1)));
        let _ = sent.send(claimed.map(|ts| ts.iter().map(Task::id).collect::<Vec<_>>()));
    });
    let claimed = received.recv_timeout(Duration::from_secs(5));
    holder.batch_execute("ROLLBACK").unwrap();

    assert_eq!(claimed.unwrap().unwrap(), [free.id()], "the locked row is skipped, not waited for");
}

#[test]
fn concurrent_claims_take_every_task_exactly_once_and_never_wait_on_each_other() {
    const THREADS: usize = 8;
    const TASKS: usize = 200;
    let db = TestDatabase::new();
    let pool = build_pool(
        db.url(),
        &PoolConfig {
            max_size: THREADS as u32,
            connect_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(30),
        },
    )
    .unwrap();
    let repo = Arc::new(PgTaskRepository::new(pool));
    execute(
        &db.pool(),
        &format!(
            "INSERT INTO tasks (id, name, status, retry_state, max_attempts, created_at, updated_at,
                 version, priority)
             SELECT gen_random_uuid(), 'job', 'PENDING', 'NONE', 3, now(), now(), 1, i % 7
             FROM generate_series(1, {TASKS}) AS i"
        ),
    );
    let barrier = Arc::new(Barrier::new(THREADS));

    let results: Vec<(Vec<TaskId>, Duration)> = (0..THREADS)
        .map(|i| {
            let (repo, barrier) = (Arc::clone(&repo), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let me = worker(&format!("worker-{i}"));
                let mut mine = Vec::new();
                let mut slowest = Duration::ZERO;
                barrier.wait();
                loop {
                    let started = Instant::now();
                    let batch = repo.claim(&request(&me, None, 7, lease(60), Utc::now())).unwrap();
                    slowest = slowest.max(started.elapsed());
                    if batch.is_empty() {
                        break;
                    }
                    assert!(batch.iter().all(|t| t.worker_id() == Some(&me)));
                    mine.extend(batch.iter().map(Task::id));
                }
                (mine, slowest)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let all: Vec<TaskId> = results.iter().flat_map(|(ids, _)| ids.iter().copied()).collect();
    let distinct: BTreeSet<TaskId> = all.iter().copied().collect();
    let slowest = results.iter().map(|(_, d)| *d).max().unwrap();
    assert_eq!(all.len(), TASKS, "claimed {} times", all.len());
    assert_eq!(distinct.len(), TASKS, "no task claimed twice");
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks WHERE status = 'PENDING'"), 0);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), TASKS as i64);
    // SKIP LOCKED: a claim never waits for rows another claim holds, so even on two shared
    // cores no single claim takes anywhere near a lock wait's length.
    assert!(slowest < Duration::from_secs(2), "slowest claim took {slowest:?}");
    assert!(results.iter().filter(|(ids, _)| !ids.is_empty()).count() >= 2, "claims interleaved");
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

fn explain_claim(conn: &mut PgConnection, queues: Option<Vec<String>>) -> String {
    let now = Utc::now();
    let query = diesel::sql_query(format!("EXPLAIN {}", claim_sql(queues.as_ref().map(Vec::len))))
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(10_i64)
        .bind::<Text, _>("w")
        .bind::<Timestamptz, _>(now + secs(60));
    let lines: Vec<PlanLine> = match queues.as_deref() {
        Some([queue]) => query.bind::<Text, _>(queue).load(conn),
        Some(queues) => query.bind::<Array<Text>, _>(queues).load(conn),
        None => query.load(conn),
    }
    .unwrap();
    lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_claim_reads_a_partial_index_however_many_finished_tasks_the_table_holds() {
    let db = TestDatabase::new();
    execute(
        &db.pool(),
        "INSERT INTO tasks (id, queue, name, status, retry_state, attempt, ended_attempt,
             ended_attempt_token, ended_attempt_end, max_attempts, completed_at, created_at,
             updated_at, version)
         SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'done',
             'SUCCEEDED', 'NONE', 1, 1, gen_random_uuid(), 'SUCCEEDED', 3, now(),
             now() - interval '1 day', now(), 3
         FROM generate_series(1, 20000) AS i;
         INSERT INTO tasks (id, queue, name, status, retry_state, max_attempts, created_at,
             updated_at, version, priority)
         SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'todo',
             'PENDING', 'NONE', 3, now() - interval '1 hour', now() - interval '1 hour', 1, i % 5
         FROM generate_series(1, 100) AS i;
         ANALYZE tasks;",
    );
    let mut conn = PgConnection::establish(db.url()).unwrap();

    let all_queues = explain_claim(&mut conn, None);
    let one_queue = explain_claim(&mut conn, Some(vec!["a".to_owned()]));
    let two_queues = explain_claim(&mut conn, Some(vec!["a".to_owned(), "b".to_owned()]));
    // A plan cached for a prepared statement may turn generic; it must stay on the index too.
    conn.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
    let generic = explain_claim(&mut conn, Some(vec!["a".to_owned()]));
    println!("all queues:\n{all_queues}\n\none queue:\n{one_queue}\n\ntwo queues:\n{two_queues}\n\ngeneric, one queue:\n{generic}");

    for (label, plan) in
        [("all", &all_queues), ("one", &one_queue), ("two", &two_queues), ("generic", &generic)]
    {
        assert!(!plan.contains("Seq Scan on tasks"), "{label}: {plan}");
        assert!(plan.contains("tasks_runnable"), "{label}: {plan}");
    }
    assert!(all_queues.contains("tasks_runnable_idx"), "{all_queues}");
    assert!(one_queue.contains("tasks_runnable_queue_idx"), "{one_queue}");
}

#[test]
fn expired_leases_are_the_running_tasks_whose_lease_ran_out_soonest_expiry_first() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let mut tasks: Vec<Task> =
        (0..5).map(|i| new_task("default", 0, None, t0() + secs(i))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    // Leases ending at t0+40, t0+20, t0+30, t0+100; the last task stays pending.
    for (task, (start, seconds)) in tasks.iter_mut().zip([(10, 30), (10, 10), (20, 10), (40, 60)]) {
        transition(&repo, task, |t| t.start(&w, token(), lease(seconds), t0() + secs(start)));
    }
    transition(&repo, &mut tasks[2], |t| {
        t.heartbeat(None, t.lease().unwrap().token, lease(5), t0() + secs(21))
    });
    let ids = |list: Vec<Task>| list.iter().map(Task::id).collect::<Vec<_>>();

    let at_30 = ids(repo.expired_leases(t0() + secs(30), 10).unwrap());
    let at_40_first = ids(repo.expired_leases(t0() + secs(40), 2).unwrap());
    let at_1000 = ids(repo.expired_leases(t0() + secs(1000), 10).unwrap());
    let before_any = repo.expired_leases(t0() + secs(19), 10).unwrap();

    assert_eq!(at_30, [tasks[1].id(), tasks[2].id()], "expiry is inclusive");
    assert_eq!(at_40_first, [tasks[1].id(), tasks[2].id()]);
    assert_eq!(at_1000, [tasks[1].id(), tasks[2].id(), tasks[0].id(), tasks[3].id()]);
    assert!(before_any.is_empty());
    assert_eq!(
        repo.expired_leases(t0() + secs(1000), 10).unwrap()[0],
        repo.get(tasks[1].id()).unwrap()
    );
}

#[test]
fn the_earliest_scheduled_run_is_the_next_pending_run_after_the_instant_given() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let runs = [t0() + secs(50), t0() + secs(20), t0() + secs(35)];
    for run in runs {
        store(&repo, &new_task("default", 0, Some(run), t0()));
    }
    store(&repo, &new_task("default", 0, None, t0()));
    // A started task's former schedule does not count.
    let mut started = new_task("default", 0, Some(t0() + secs(10)), t0());
    store(&repo, &started);
    transition(&repo, &mut started, |t| t.start(&w, token(), lease(60), t0() + secs(10)));

    let from_start = repo.earliest_scheduled_run(t0()).unwrap();
    let after_first = repo.earliest_scheduled_run(t0() + secs(20)).unwrap();
    let after_all = repo.earliest_scheduled_run(t0() + secs(50)).unwrap();

    assert_eq!(from_start, Some(t0() + secs(20)));
    assert_eq!(after_first, Some(t0() + secs(35)), "strictly after");
    assert_eq!(after_all, None);
}

#[test]
fn queue_names_the_domain_refuses_the_table_refuses_too() {
    let db = TestDatabase::new();
    let mut outcomes = Vec::new();

    let (longest, too_long) = ("q".repeat(64), "q".repeat(65));
    for raw in ["a", "emails.high-prio_2", &longest, "", "Default", "a b", "é", &too_long] {
        let stored = db.pool().get().unwrap().batch_execute(&format!(
            "INSERT INTO tasks (id, queue, name, status, retry_state, max_attempts, created_at,
                 updated_at, version)
             VALUES (gen_random_uuid(), '{raw}', 'n', 'PENDING', 'NONE', 3, now(), now(), 1)"
        ));
        outcomes.push((raw.to_owned(), stored.is_ok(), QueueName::parse(raw).is_ok()));
    }

    for (raw, stored, valid) in outcomes {
        assert_eq!(stored, valid, "{raw:?}");
    }
}
