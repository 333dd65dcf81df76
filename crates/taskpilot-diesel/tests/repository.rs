//! PgTaskRepository on a real PostgreSQL: a fresh database per test (see `TestDatabase`).

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::*;
use diesel::connection::SimpleConnection as _;
use serde_json::{json, Value};
use taskpilot_app::{
    Actor, AppError, Cursor, Rejection, RejectionCount, RepoError, ServiceDefaults, StaleCall,
    TaskEvent, TaskFilter, TaskRepository, TaskService,
};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{build_pool, ensure_database, run_migrations, PgTaskRepository, PoolConfig};
use taskpilot_domain::{
    DomainError, FixedBackoff, FixedClock, MaxAttempts, NewTask, Reporter, RetryState, StaleLease,
    Task, TaskId, TaskName, TaskStatus, WorkerId,
};
use uuid::Uuid;

#[test]
fn every_field_round_trips_through_every_status() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let backoff = FixedBackoff(TimeDelta::microseconds(1_500_250));
    let w = worker("worker-1");
    let mut task = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            queue: queue("emails.high-prio_2"),
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": ["ada@example.com"], "n": 1.5, "deep": {"ok": true, "none": null}}),
            priority: -7,
            max_attempts: MaxAttempts::new(3).unwrap(),
            run_at: Some(t0() + TimeDelta::microseconds(1)),
            unique_key: None,
        },
        t0(),
    );
    let mut seen = Vec::new();
    let mut check = |task: &Task| {
        let loaded = repo.get(task.id()).unwrap();
        seen.push((
            task.status(),
            task.retry_state(),
            task.attempt(),
            loaded.to_record() == task.to_record(),
        ));
    };
    let at = |n: i64| t0() + secs(n) + TimeDelta::microseconds(n * 111_111);
    let first = token();

    store(&repo, &task);
    check(&task);
    transition(&repo, &mut task, |t| t.start(&w, first, lease(30), at(1)));
    check(&task);
    transition(&repo, &mut task, |t| t.heartbeat(Some(&w), first, lease(300), at(2)));
    check(&task);
    transition(&repo, &mut task, |t| {
        t.fail_and_schedule_retry(
            &Reporter::lease(Some(w.clone()), first),
            "smtp timeout",
            at(3),
            &backoff,
        )
    });
    check(&task);
    let retry_at = task.next_run_at().unwrap();
    transition(&repo, &mut task, |t| t.start(&w, token(), lease(5), retry_at));
    check(&task);
    let expired = task.lease().unwrap().expires_at;
    transition(&repo, &mut task, |t| t.expire_lease(expired, &backoff));
    check(&task);
    let retry_at = task.next_run_at().unwrap();
    transition(&repo, &mut task, |t| t.start(&w, token(), lease(60), retry_at));
    transition(&repo, &mut task, |t| {
        t.fail_and_schedule_retry(&Reporter::anyone(), "gave up", at(9), &backoff)
    });
    check(&task);
    transition(&repo, &mut task, |t| t.rerun(at(10)));
    check(&task);
    let last = token();
    transition(&repo, &mut task, |t| t.start(&w, last, lease(60), at(11)));
    transition(&repo, &mut task, |t| {
        t.succeed(&Reporter::lease(None, last), Some(json!({"sent": 1, "ids": ["a", "b"]})), at(12))
    });
    check(&task);
    let mut cancelled = task_at("cancel-me", t0());
    store(&repo, &cancelled);
    transition(&repo, &mut cancelled, |t| t.start(&w, token(), lease(60), at(13)));
    transition(&repo, &mut cancelled, |t| t.cancel(at(14)));
    check(&cancelled);

    assert_eq!(
        seen,
        [
            (TaskStatus::Pending, RetryState::None, 0, true),
            (TaskStatus::Running, RetryState::None, 1, true),
            (TaskStatus::Running, RetryState::None, 1, true),
            (TaskStatus::Pending, RetryState::RetryScheduled, 1, true),
            (TaskStatus::Running, RetryState::RetryScheduled, 2, true),
            (TaskStatus::Pending, RetryState::RetryScheduled, 2, true),
            (TaskStatus::Failed, RetryState::Exhausted, 3, true),
            (TaskStatus::Pending, RetryState::None, 3, true),
            (TaskStatus::Succeeded, RetryState::None, 4, true),
            (TaskStatus::Cancelled, RetryState::None, 1, true),
        ]
    );
    // The tokens and lease columns really held something, not two NULLs compared.
    let ended = repo.get(task.id()).unwrap().last_ended().copied().unwrap();
    assert_eq!((ended.attempt, ended.token), (4, last));
    assert_eq!(repo.get(cancelled.id()).unwrap().queue(), &queue("default"));
}

#[test]
fn a_task_read_back_equals_the_task_written_field_by_field() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w-ünïcødé-1");
    let mut task = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            queue: queue(&"q".repeat(64)),
            name: TaskName::parse("résumé/render ✓").unwrap(),
            payload: json!({
                "big": u64::MAX, "neg": i64::MIN, "float": 0.1, "exp": 1.0e-7,
                "text": "quote \" backslash \\ tab-free ✓", "list": [1, "two", null, false, {}],
            }),
            priority: i32::MAX,
            max_attempts: MaxAttempts::new(100).unwrap(),
            run_at: None,
            unique_key: None,
        },
        Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap() + TimeDelta::microseconds(999_999),
    );
    let started = task.created_at() + TimeDelta::microseconds(1);
    let secret = token();
    task.start(&w, secret, lease(86_400), started).unwrap();

    store(&repo, &task);
    let loaded = repo.get(task.id()).unwrap();

    assert_eq!(loaded.to_record(), task.to_record());
    assert_eq!(loaded.processing_started_at(), Some(started));
    assert_eq!(
        loaded.lease().map(|l| (l.token, l.expires_at)),
        Some((secret, started + secs(86_400)))
    );
    assert_eq!(loaded.payload()["big"], json!(u64::MAX));
}

#[test]
fn migrations_apply_to_an_empty_database_and_rerunning_them_changes_nothing() {
    let db = TestDatabase::new();
    let empty = format!("{}_empty", db.name());
    let url = db.url().replace(db.name(), &empty);

    ensure_database(&url).unwrap();
    ensure_database(&url).unwrap();
    let pool = build_pool(
        &url,
        &PoolConfig {
            max_size: 4,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    let tables_before: i64 =
        count(&pool, "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'");
    // Several servers starting at once: the advisory lock lets one migrate, the rest find
    // nothing pending.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || run_migrations(&pool))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    run_migrations(&pool).unwrap();
    let applied = count(&pool, "SELECT count(*) AS n FROM __diesel_schema_migrations");
    let repo = PgTaskRepository::new(pool.clone());
    let task = task_at("after-migration", t0());
    store(&repo, &task);
    let loaded = repo.get(task.id()).unwrap();
    drop(repo);
    drop(pool);
    execute(&db.pool(), &format!("DROP DATABASE \"{empty}\" WITH (FORCE)"));

    assert_eq!(tables_before, 0);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Every folder of migrations/ is one migration.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(applied, i64::try_from(migrations).unwrap());
    assert_eq!(loaded, task);
}

#[test]
fn ensure_database_creates_a_missing_database_once_even_when_raced() {
    let db = TestDatabase::new();
    let raced = format!("{}_raced", db.name());
    let url = db.url().replace(db.name(), &raced);

    let results: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || ensure_database(&url))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let exists = count(
        &db.pool(),
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{raced}'"),
    );
    execute(&db.pool(), &format!("DROP DATABASE \"{raced}\" WITH (FORCE)"));

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(exists, 1);
}

#[test]
fn an_update_with_a_stale_version_is_a_conflict_and_writes_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut task = task_at("send-email", t0());
    store(&repo, &task);
    transition(&repo, &mut task, |t| t.start(&worker("a"), token(), lease(60), t0() + secs(1)));
    let stored = repo.get(task.id()).unwrap();
    let history = repo.events(task.id()).unwrap();
    let mut stale = task_at("send-email", t0());
    stale = Task::restore({
        let mut r = stale.to_record();
        r.id = task.id();
        r
    })
    .unwrap();
    stale.cancel(t0() + secs(2)).unwrap();
    let event = TaskEvent::transition(None, &stale, Actor::Client);

    let result = repo.update(&stale, 1, Some(&event));

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == task.id()), "{result:?}");
    assert_eq!(repo.get(task.id()).unwrap(), stored);
    assert_eq!(repo.events(task.id()).unwrap(), history, "a refused update logs nothing");
    assert_eq!(history.len(), 2);
}

#[test]
fn an_update_of_an_unknown_task_is_not_found() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut task = task_at("send-email", t0());
    task.cancel(t0() + secs(1)).unwrap();
    let event = TaskEvent::transition(None, &task, Actor::Client);

    let result = repo.update(&task, 1, Some(&event));

    assert!(matches!(result, Err(RepoError::NotFound(id)) if id == task.id()), "{result:?}");
    assert_eq!(repo.events(task.id()).unwrap(), []);
}

#[test]
fn getting_an_unknown_task_is_not_found() {
    let db = TestDatabase::new();
    let id = TaskId::from_uuid(Uuid::now_v7());

    let result = repo(&db).get(id);

    assert!(matches!(result, Err(RepoError::NotFound(got)) if got == id), "{result:?}");
}

#[test]
fn inserting_a_task_whose_id_is_taken_is_a_conflict_and_keeps_the_first() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let first = task_at("first", t0());
    let second = Task::restore({
        let mut r = task_at("second", t0() + secs(1)).to_record();
        r.id = first.id();
        r
    })
    .unwrap();
    store(&repo, &first);

    let result = repo.insert(&second, &TaskEvent::transition(None, &second, Actor::Client));

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == first.id()), "{result:?}");
    assert_eq!(repo.get(first.id()).unwrap(), first);
    assert_eq!(
        repo.events(first.id()).unwrap(),
        [TaskEvent::transition(None, &first, Actor::Client)],
        "the refused insert logged nothing"
    );
}

#[test]
fn listing_is_newest_first_and_filters_by_status_and_name() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut tasks: Vec<Task> =
        (0..6).map(|i| task_at(if i % 2 == 0 { "even" } else { "odd" }, t0() + secs(i))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    transition(&repo, &mut tasks[1], |t| {
        t.start(&worker("w"), token(), lease(60), t0() + secs(10))
    });
    transition(&repo, &mut tasks[4], |t| t.cancel(t0() + secs(10)));
    let ids = |list: Vec<Task>| list.iter().map(Task::id).collect::<Vec<_>>();
    let expect = |indexes: &[usize]| indexes.iter().map(|&i| tasks[i].id()).collect::<Vec<_>>();
    let filter = |status: Option<TaskStatus>, name: Option<&str>| TaskFilter {
        queue: None,
        statuses: status.into_iter().collect(),
        name: name.map(|n| TaskName::parse(n).unwrap()),
        ..TaskFilter::default()
    };

    let all = ids(repo.list(&TaskFilter::default(), None, 100).unwrap());
    let pending = ids(repo.list(&filter(Some(TaskStatus::Pending), None), None, 100).unwrap());
    let even = ids(repo.list(&filter(None, Some("even")), None, 100).unwrap());
    let even_pending =
        ids(repo.list(&filter(Some(TaskStatus::Pending), Some("even")), None, 100).unwrap());
    let running_even =
        repo.list(&filter(Some(TaskStatus::Running), Some("even")), None, 100).unwrap();
    let first_two = ids(repo.list(&TaskFilter::default(), None, 2).unwrap());
    let after_third =
        ids(repo.list(&TaskFilter::default(), Some(Cursor::after(&tasks[3])), 100).unwrap());

    assert_eq!(all, expect(&[5, 4, 3, 2, 1, 0]));
    assert_eq!(pending, expect(&[5, 3, 2, 0]));
    assert_eq!(even, expect(&[4, 2, 0]));
    assert_eq!(even_pending, expect(&[2, 0]));
    assert!(running_even.is_empty());
    assert_eq!(first_two, expect(&[5, 4]));
    assert_eq!(after_third, expect(&[2, 1, 0]));
}

#[test]
fn keyset_pages_cover_every_task_once_even_when_creation_times_tie() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    // Groups of three tasks share a creation instant, so the id must break ties.
    let tasks: Vec<Task> = (0..23).map(|i| task_at("batch", t0() + secs(i / 3))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    let mut expected: Vec<(DateTime<Utc>, TaskId)> =
        tasks.iter().map(|t| (t.created_at(), t.id())).collect();
    expected.sort_by(|a, b| b.cmp(a));

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = repo.list(&TaskFilter::default(), cursor, 4).unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor::after(last));
        pages.push(page.iter().map(|t| (t.created_at(), t.id())).collect::<Vec<_>>());
    }

    assert_eq!(pages.len(), 6);
    assert!(pages.iter().all(|p| p.len() <= 4));
    assert_eq!(pages.concat(), expected);
}

#[test]
fn a_row_edited_into_an_inconsistent_state_is_unexpected_not_a_panic() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    // Each edit passes the table's CHECK constraints but breaks a rule only the domain knows.
    let edits = [
        ("exhausted-but-pending", false, "retry_state = 'EXHAUSTED'"),
        ("failed-attempts-without-retry", false, "attempt_count = 1, attempt = 1"),
        ("blank-name", false, "name = '   '"),
        ("control-character-worker", true, "worker_id = E'bad\\nworker'"),
        ("negative-attempt-count", false, "attempt_count = -1, max_attempts = 1"),
        // The running attempt cannot also be the last ended one.
        ("running-attempt-already-ended", true, "ended_attempt = 1, ended_attempt_token = gen_random_uuid(), ended_attempt_end = 'FAILED'"),
        ("lease-before-start", true, "lease_expires_at = processing_started_at"),
        // The table refuses these: a lease while pending, half an ended attempt, a bad queue.
        ("pending-with-a-lease", false, "lease_token = gen_random_uuid(), lease_expires_at = now()"),
        ("half-an-ended-attempt", false, "ended_attempt = 1"),
        ("uppercase-queue", false, "queue = 'Default'"),
    ];
    let mut outcomes = Vec::new();

    for (label, running, set) in edits {
        let mut task = task_at("edited", t0());
        if running {
            task.start(&worker("w"), token(), lease(60), t0()).unwrap();
        }
        store(&repo, &task);
        let edited = db
            .pool()
            .get()
            .unwrap()
            .batch_execute(&format!("UPDATE tasks SET {set} WHERE id = '{}'", task.id()));
        let got = repo.get(task.id());
        let listed = repo.list(&TaskFilter::default(), None, 10);
        outcomes.push((
            label,
            edited.is_ok(),
            matches!(&got, Err(RepoError::Unexpected(e)) if format!("{e:#}").contains(&task.id().to_string())),
            matches!(listed, Err(RepoError::Unexpected(_))),
        ));
        execute(&db.pool(), "DELETE FROM tasks");
    }

    assert_eq!(
        outcomes,
        [
            ("exhausted-but-pending", true, true, true),
            ("failed-attempts-without-retry", true, true, true),
            ("blank-name", true, true, true),
            ("control-character-worker", true, true, true),
            // The table itself refuses this one; nothing to read back but the untouched task.
            ("negative-attempt-count", false, false, false),
            ("running-attempt-already-ended", true, true, true),
            ("lease-before-start", true, true, true),
            ("pending-with-a-lease", false, false, false),
            ("half-an-ended-attempt", false, false, false),
            ("uppercase-queue", false, false, false),
        ]
    );
}

#[test]
fn concurrent_transitions_of_one_task_have_exactly_one_winner() {
    const THREADS: usize = 16;
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

    for round in 0..3 {
        let task = task_at("contended", t0() + secs(round));
        store(&repo, &task);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (repo, barrier, id) = (Arc::clone(&repo), Arc::clone(&barrier), task.id());
                std::thread::spawn(move || {
                    let before = repo.get(id).unwrap();
                    let mut task = before.clone();
                    let me = worker(&format!("worker-{i}"));
                    task.start(&me, token(), lease(60), t0() + secs(60)).unwrap();
                    let event = TaskEvent::transition(Some(&before), &task, Actor::Worker);
                    // Everyone has read the same version before anyone writes.
                    barrier.wait();
                    repo.update(&task, before.version(), Some(&event)).map(|()| me)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();

        let winners: Vec<&WorkerId> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let conflicts = results.iter().filter(|r| matches!(r, Err(RepoError::Conflict(_)))).count();
        let stored = repo.get(task.id()).unwrap();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(conflicts, THREADS - 1, "round {round}: {results:?}");
        assert_eq!(stored.worker_id(), Some(winners[0]));
        assert_eq!(stored.version(), task.version() + 1);
        let starts: Vec<TaskEvent> = repo.events(task.id()).unwrap().into_iter().skip(1).collect();
        assert_eq!(starts.len(), 1, "round {round}: only the winner logged its start");
        assert_eq!(starts[0].worker_id.as_ref(), Some(winners[0]));
    }
}

#[test]
fn concurrent_starts_through_the_service_give_one_start_and_refusals_for_the_rest() {
    const THREADS: usize = 8;
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
    let service = Arc::new(TaskService::new(
        Arc::new(PgTaskRepository::new(pool)),
        Arc::new(FixedClock::new(t0())),
        Arc::new(FixedBackoff(secs(30))),
        ServiceDefaults { max_attempts: MaxAttempts::new(3).unwrap(), lease: lease(60) },
    ));
    let task = service
        .create(taskpilot_app::CreateTask {
            queue: None,
            name: TaskName::parse("contended").unwrap(),
            payload: Value::Null,
            priority: 0,
            max_attempts: None,
            max_crashes: None,
            run_at: None,
            unique_key: None,
            on_conflict: taskpilot_app::OnConflict::Return,
        })
        .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));

    let results: Vec<_> = (0..THREADS)
        .map(|i| {
            let (service, barrier, id) = (Arc::clone(&service), Arc::clone(&barrier), task.id());
            std::thread::spawn(move || {
                barrier.wait();
                service.start(id, &worker(&format!("worker-{i}")), None)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let started = results.iter().filter(|r| r.is_ok()).count();
    // A loser re-reads and gets the domain's verdict on the running task, or, if it kept
    // losing races, a concurrent-modification error: never a second start.
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(AppError::Conflict(DomainError::InvalidTransition { .. }))
                    | Err(AppError::ConcurrentModification(_))
            )
        })
        .count();
    assert_eq!(started, 1, "{results:?}");
    assert_eq!(refused, THREADS - 1, "{results:?}");
}

#[test]
fn listing_filters_by_queue() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let in_queue = |name: &str, i: i64| {
        Task::new(
            TaskId::from_uuid(Uuid::now_v7()),
            NewTask { queue: queue(name), ..spec("job", 3) },
            t0() + secs(i),
        )
    };
    let tasks = [in_queue("a", 0), in_queue("b", 1), in_queue("a", 2), in_queue("default", 3)];
    for task in &tasks {
        store(&repo, task);
    }
    let list = |q: &str, status: Option<TaskStatus>| {
        let filter = TaskFilter {
            queue: Some(queue(q)),
            statuses: status.into_iter().collect(),
            ..TaskFilter::default()
        };
        repo.list(&filter, None, 10).unwrap().iter().map(Task::id).collect::<Vec<_>>()
    };

    assert_eq!(list("a", None), [tasks[2].id(), tasks[0].id()]);
    assert_eq!(list("b", Some(TaskStatus::Pending)), [tasks[1].id()]);
    assert_eq!(list("default", None), [tasks[3].id()]);
    assert!(list("a", Some(TaskStatus::Running)).is_empty());
    assert!(list("none", None).is_empty());
}

#[test]
fn events_are_stored_with_their_transitions_and_read_back_oldest_first() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w-1");
    let mut task = task_at("send-email", t0());
    let other = task_at("other", t0());
    let backoff = FixedBackoff(secs(10));
    let first = token();
    let mut expected = vec![TaskEvent::transition(None, &task, Actor::Client)];

    store(&repo, &task);
    store(&repo, &other);
    let mut step = |task: &mut Task, actor: Actor, change: &dyn Fn(&mut Task)| {
        let before = task.clone();
        change(task);
        let event = TaskEvent::transition(Some(&before), task, actor);
        repo.update(task, before.version(), Some(&event)).unwrap();
        expected.push(event);
    };
    step(&mut task, Actor::Worker, &|t| t.start(&w, first, lease(60), t0() + secs(1)).unwrap());
    step(&mut task, Actor::Worker, &|t| {
        t.fail_and_schedule_retry(&Reporter::lease(None, first), "boom", t0() + secs(2), &backoff)
            .map(drop)
            .unwrap();
    });
    step(&mut task, Actor::Client, &|t| t.cancel(t0() + secs(3)).unwrap());
    let history = repo.events(task.id()).unwrap();

    assert_eq!(history, expected);
    assert_eq!(history[2].error.as_deref(), Some("boom"));
    assert_eq!(history[2].worker_id.as_ref(), Some(&w));
    assert_eq!(repo.events(other.id()).unwrap().len(), 1);
    assert_eq!(repo.events(TaskId::from_uuid(Uuid::now_v7())).unwrap(), [], "unknown id");
}

#[test]
fn an_update_without_an_event_stores_the_task_and_logs_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let mut task = task_at("send-email", t0());
    let secret = token();
    store(&repo, &task);
    transition(&repo, &mut task, |t| t.start(&w, secret, lease(60), t0() + secs(1)));
    let before = task.version();
    task.heartbeat(Some(&w), secret, lease(600), t0() + secs(2)).unwrap();

    repo.update(&task, before, None).unwrap();

    assert_eq!(repo.get(task.id()).unwrap(), task);
    assert_eq!(repo.events(task.id()).unwrap().len(), 2);
}

#[test]
fn refused_stale_calls_are_recorded_in_the_history_and_counted_by_code_and_call() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("late-worker");
    let mut task = task_at("send-email", t0());
    let mut other = task_at("other", t0());
    store(&repo, &task);
    store(&repo, &other);
    transition(&repo, &mut task, |t| t.start(&w, token(), lease(60), t0() + secs(1)));
    transition(&repo, &mut other, |t| t.start(&w, token(), lease(60), t0() + secs(1)));
    let superseded = StaleLease::AttemptSuperseded { task: task.id(), current: 1 };
    let expired = StaleLease::LeaseExpired { task: other.id(), attempt: 1 };
    let refusals = [
        TaskEvent::rejection(
            &task,
            Some(w.clone()),
            StaleCall::Succeed,
            &superseded,
            t0() + secs(5),
        ),
        TaskEvent::rejection(&task, None, StaleCall::Succeed, &superseded, t0() + secs(6)),
        TaskEvent::rejection(
            &other,
            Some(w.clone()),
            StaleCall::Heartbeat,
            &expired,
            t0() + secs(7),
        ),
        TaskEvent::rejection(&other, Some(w.clone()), StaleCall::Succeed, &expired, t0() + secs(8)),
    ];

    for refusal in &refusals {
        repo.record_rejection(refusal).unwrap();
    }
    let counts = repo.rejection_counts().unwrap();
    let history = repo.events(task.id()).unwrap();

    let count = |code: &str, call, count| RejectionCount { code: code.to_owned(), call, count };
    assert_eq!(
        counts,
        [
            count("ATTEMPT_SUPERSEDED", StaleCall::Succeed, 2),
            count("LEASE_EXPIRED", StaleCall::Heartbeat, 1),
            count("LEASE_EXPIRED", StaleCall::Succeed, 1),
        ]
    );
    assert_eq!(history[2..], refusals[..2]);
    assert_eq!(
        history[2].rejected,
        Some(Rejection { code: "ATTEMPT_SUPERSEDED".to_owned(), call: StaleCall::Succeed })
    );
    assert_eq!(repo.get(task.id()).unwrap(), task, "a refusal leaves the task alone");
}

#[test]
fn no_refusals_count_as_an_empty_list() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    store(&repo, &task_at("send-email", t0()));

    assert_eq!(repo.rejection_counts().unwrap(), []);
}

#[test]
fn an_event_row_edited_into_nonsense_is_unexpected_not_a_panic() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let task = task_at("send-email", t0());
    store(&repo, &task);

    execute(&db.pool(), "UPDATE task_events SET worker_id = '   '");
    let got = repo.events(task.id());

    assert!(matches!(got, Err(RepoError::Unexpected(_))), "{got:?}");
}

#[test]
fn deleting_a_task_deletes_its_history() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let task = task_at("send-email", t0());
    store(&repo, &task);

    execute(&db.pool(), &format!("DELETE FROM tasks WHERE id = '{}'", task.id()));

    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 0);
}

#[test]
fn rows_written_before_leases_existed_are_migrated_into_tasks_the_domain_accepts() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    // Undo the second migration (after the later ones that reshape what it created), write
    // rows as the first schema had them, and migrate again.
    for down in [
        include_str!("../../../migrations/2026-12-01-170000_add_throughput_and_workers/down.sql"),
        include_str!("../../../migrations/2026-12-01-150000_count_tasks/down.sql"),
        include_str!("../../../migrations/2026-12-01-110000_trim_list_indexes/down.sql"),
        include_str!("../../../migrations/2026-12-01-105000_notify_per_statement/down.sql"),
        include_str!("../../../migrations/2026-12-01-100000_drop_history_foreign_key/down.sql"),
    ] {
        execute(&db.pool(), down);
    }
    let down =
        include_str!("../../../migrations/2026-11-26-100000_add_leases_queues_events/down.sql");
    let up = include_str!("../../../migrations/2026-11-26-100000_add_leases_queues_events/up.sql");
    execute(&db.pool(), down);
    execute(
        &db.pool(),
        "INSERT INTO tasks (id, name, status, retry_state, attempt_count, max_attempts, worker_id,
             processing_started_at, last_error, completed_at, result, next_run_at, created_at,
             updated_at, version) VALUES
         ('00000000-0000-7000-8000-000000000001', 'pending', 'PENDING', 'NONE', 0, 3, NULL,
             NULL, NULL, NULL, NULL, NULL, now(), now(), 1),
         ('00000000-0000-7000-8000-000000000002', 'retrying', 'PENDING', 'RETRY_SCHEDULED', 1, 3,
             NULL, NULL, 'boom', NULL, NULL, now(), now(), now(), 3),
         ('00000000-0000-7000-8000-000000000003', 'running', 'RUNNING', 'RETRY_SCHEDULED', 1, 3,
             'w', now(), 'boom', NULL, NULL, NULL, now(), now(), 4),
         ('00000000-0000-7000-8000-000000000004', 'done', 'SUCCEEDED', 'NONE', 0, 3, NULL, NULL,
             NULL, now(), '1', NULL, now(), now(), 3),
         ('00000000-0000-7000-8000-000000000005', 'failed', 'FAILED', 'EXHAUSTED', 2, 2, NULL,
             NULL, 'boom', now(), NULL, NULL, now(), now(), 5),
         ('00000000-0000-7000-8000-000000000006', 'cancelled', 'CANCELLED', 'NONE', 0, 2, NULL,
             NULL, NULL, now(), NULL, NULL, now(), now(), 2)",
    );
    execute(&db.pool(), up);

    let tasks = repo.list(&TaskFilter::default(), None, 10);

    let attempts: Vec<(String, u32)> =
        tasks.unwrap().iter().map(|t| (t.name().as_str().to_owned(), t.attempt())).collect();
    let mut attempts = attempts;
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("cancelled".to_owned(), 0),
            ("done".to_owned(), 1),
            ("failed".to_owned(), 2),
            ("pending".to_owned(), 0),
            ("retrying".to_owned(), 1),
            ("running".to_owned(), 2),
        ]
    );
}

#[test]
fn crash_counts_and_a_quarantine_round_trip_and_a_rerun_clears_them() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let backoff = FixedBackoff(TimeDelta::seconds(1));
    let w = worker("w-1");
    let mut task =
        task_at("crashy", t0()).with_max_crashes(taskpilot_domain::MaxCrashes::new(2).unwrap());
    let mut quiet = task_at("quiet", t0()).with_max_crashes(
        taskpilot_domain::MaxCrashes::new(taskpilot_domain::MaxCrashes::MAX.into()).unwrap(),
    );
    store(&repo, &task);
    // The batch insert binds the crash columns too.
    repo.insert_many(
        std::slice::from_ref(&quiet),
        &[TaskEvent::transition(None, &quiet, Actor::Client)],
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut now = t0();
    while task.status() != TaskStatus::Failed {
        now = task.next_run_at().unwrap_or(now);
        transition(&repo, &mut task, |t| t.start(&w, token(), lease(5), now));
        now += secs(5);
        transition(&repo, &mut task, |t| t.expire_lease(now, &backoff));
        let loaded = repo.get(task.id()).unwrap();
        assert_eq!(loaded.to_record(), task.to_record());
        seen.push((loaded.status(), loaded.retry_state(), loaded.crash_count()));
    }
    transition(&repo, &mut quiet, |t| t.start(&w, token(), lease(5), t0()));

    assert_eq!(
        seen,
        [
            (TaskStatus::Pending, RetryState::RetryScheduled, 1),
            (TaskStatus::Failed, RetryState::Quarantined, 2),
        ]
    );
    let loaded = repo.get(task.id()).unwrap();
    assert_eq!(loaded.max_crashes().get(), 2);
    assert_eq!(loaded.last_error(), Some("quarantined: lease expired 2 times (last worker w-1)"));
    assert_eq!(repo.get(quiet.id()).unwrap().max_crashes().get(), 100);
    transition(&repo, &mut task, |t| t.rerun(now));
    let rerun = repo.get(task.id()).unwrap();
    assert_eq!(
        (rerun.status(), rerun.crash_count(), rerun.max_crashes().get()),
        (TaskStatus::Pending, 0, 2)
    );
}
