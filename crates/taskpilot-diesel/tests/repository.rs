//! PgTaskRepository on a real PostgreSQL: a fresh database per test (see `TestDatabase`).

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use serde_json::{json, Value};
use taskpilot_app::{AppError, Cursor, RepoError, TaskFilter, TaskRepository, TaskService};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{
    build_pool, ensure_database, run_migrations, PgPool, PgTaskRepository, PoolConfig,
};
use taskpilot_domain::{
    DomainError, FixedBackoff, FixedClock, MaxAttempts, NewTask, RetryState, Task, TaskId,
    TaskName, TaskStatus, WorkerId,
};
use uuid::Uuid;

/// A creation instant with microseconds, the precision PostgreSQL keeps.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(123_456)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

fn spec(name: &str, max_attempts: i64) -> NewTask {
    NewTask {
        name: TaskName::parse(name).unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 0,
        max_attempts: MaxAttempts::new(max_attempts).unwrap(),
        run_at: None,
    }
}

fn task_at(name: &str, created_at: DateTime<Utc>) -> Task {
    Task::new(TaskId::from_uuid(Uuid::now_v7()), spec(name, 3), created_at)
}

fn repo(db: &TestDatabase) -> PgTaskRepository {
    PgTaskRepository::new(db.pool())
}

/// Applies `transition` and stores the result with compare-and-swap, as a use case does.
fn transition(
    repo: &PgTaskRepository,
    task: &mut Task,
    transition: impl FnOnce(&mut Task) -> Result<(), DomainError>,
) {
    let read = task.version();
    transition(task).unwrap();
    repo.update(task, read).unwrap();
}

fn execute(pool: &PgPool, sql: &str) {
    pool.get().unwrap().batch_execute(sql).unwrap();
}

#[test]
fn every_field_round_trips_through_every_status() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let backoff = FixedBackoff(TimeDelta::microseconds(1_500_250));
    let w = worker("worker-1");
    let mut task = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({"to": ["ada@example.com"], "n": 1.5, "deep": {"ok": true, "none": null}}),
            priority: -7,
            max_attempts: MaxAttempts::new(2).unwrap(),
            run_at: Some(t0() + TimeDelta::microseconds(1)),
        },
        t0(),
    );
    let mut seen = Vec::new();

    repo.insert(&task).unwrap();
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    let at = |n: i64| t0() + secs(n) + TimeDelta::microseconds(n * 111_111);
    transition(&repo, &mut task, |t| t.start(&w, at(1)));
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    transition(&repo, &mut task, |t| {
        t.fail_and_schedule_retry(Some(&w), "smtp timeout", at(2), &backoff)
    });
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    let retry_at = task.next_run_at().unwrap();
    transition(&repo, &mut task, |t| t.start(&w, retry_at));
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    transition(&repo, &mut task, |t| {
        t.fail_and_schedule_retry(None, "smtp timeout again", at(5), &backoff)
    });
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    transition(&repo, &mut task, |t| t.rerun(at(6)));
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    transition(&repo, &mut task, |t| t.start(&w, at(7)));
    transition(&repo, &mut task, |t| {
        t.succeed(Some(&w), Some(json!({"sent": 1, "ids": ["a", "b"]})), at(8))
    });
    seen.push((task.status(), task.retry_state(), repo.get(task.id()).unwrap() == task));
    let mut cancelled = task_at("cancel-me", t0());
    repo.insert(&cancelled).unwrap();
    transition(&repo, &mut cancelled, |t| t.cancel(at(10)));
    seen.push((
        cancelled.status(),
        cancelled.retry_state(),
        repo.get(cancelled.id()).unwrap() == cancelled,
    ));

    assert_eq!(
        seen,
        [
            (TaskStatus::Pending, RetryState::None, true),
            (TaskStatus::Running, RetryState::None, true),
            (TaskStatus::Pending, RetryState::RetryScheduled, true),
            (TaskStatus::Running, RetryState::RetryScheduled, true),
            (TaskStatus::Failed, RetryState::Exhausted, true),
            (TaskStatus::Pending, RetryState::None, true),
            (TaskStatus::Succeeded, RetryState::None, true),
            (TaskStatus::Cancelled, RetryState::None, true),
        ]
    );
}

#[test]
fn a_task_read_back_equals_the_task_written_field_by_field() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w-ünïcødé-1");
    let mut task = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            name: TaskName::parse("résumé/render ✓").unwrap(),
            payload: json!({
                "big": u64::MAX, "neg": i64::MIN, "float": 0.1, "exp": 1.0e-7,
                "text": "quote \" backslash \\ tab-free ✓", "list": [1, "two", null, false, {}],
            }),
            priority: i32::MAX,
            max_attempts: MaxAttempts::new(100).unwrap(),
            run_at: None,
        },
        Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap() + TimeDelta::microseconds(999_999),
    );
    let started = task.created_at() + TimeDelta::microseconds(1);
    task.start(&w, started).unwrap();

    repo.insert(&task).unwrap();
    let loaded = repo.get(task.id()).unwrap();

    assert_eq!(loaded.to_record(), task.to_record());
    assert_eq!(loaded.processing_started_at(), Some(started));
    assert_eq!(loaded.payload()["big"], json!(u64::MAX));
}

#[test]
fn migrations_apply_to_an_empty_database_and_rerunning_them_changes_nothing() {
    let db = TestDatabase::new();
    let empty = format!("{}_empty", db.name());
    let url = db.url().replace(db.name(), &empty);

    ensure_database(&url).unwrap();
    ensure_database(&url).unwrap();
    let pool =
        build_pool(&url, &PoolConfig { max_size: 4, connect_timeout: Duration::from_secs(10) })
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
    repo.insert(&task).unwrap();
    let loaded = repo.get(task.id()).unwrap();
    drop(repo);
    drop(pool);
    execute(&db.pool(), &format!("DROP DATABASE \"{empty}\" WITH (FORCE)"));

    assert_eq!(tables_before, 0);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(applied, 1);
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

fn count(pool: &PgPool, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Count>(&mut pool.get().unwrap()).unwrap().n
}

#[test]
fn an_update_with_a_stale_version_is_a_conflict_and_writes_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut task = task_at("send-email", t0());
    repo.insert(&task).unwrap();
    transition(&repo, &mut task, |t| t.start(&worker("a"), t0() + secs(1)));
    let stored = repo.get(task.id()).unwrap();
    let mut stale = task_at("send-email", t0());
    stale = Task::restore({
        let mut r = stale.to_record();
        r.id = task.id();
        r
    })
    .unwrap();
    stale.cancel(t0() + secs(2)).unwrap();

    let result = repo.update(&stale, 1);

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == task.id()), "{result:?}");
    assert_eq!(repo.get(task.id()).unwrap(), stored);
}

#[test]
fn an_update_of_an_unknown_task_is_not_found() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut task = task_at("send-email", t0());
    task.cancel(t0() + secs(1)).unwrap();

    let result = repo.update(&task, 1);

    assert!(matches!(result, Err(RepoError::NotFound(id)) if id == task.id()), "{result:?}");
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
    repo.insert(&first).unwrap();

    let result = repo.insert(&second);

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == first.id()), "{result:?}");
    assert_eq!(repo.get(first.id()).unwrap(), first);
}

#[test]
fn listing_is_newest_first_and_filters_by_status_and_name() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut tasks: Vec<Task> =
        (0..6).map(|i| task_at(if i % 2 == 0 { "even" } else { "odd" }, t0() + secs(i))).collect();
    for task in &tasks {
        repo.insert(task).unwrap();
    }
    transition(&repo, &mut tasks[1], |t| t.start(&worker("w"), t0() + secs(10)));
    transition(&repo, &mut tasks[4], |t| t.cancel(t0() + secs(10)));
    let ids = |list: Vec<Task>| list.iter().map(Task::id).collect::<Vec<_>>();
    let expect = |indexes: &[usize]| indexes.iter().map(|&i| tasks[i].id()).collect::<Vec<_>>();
    let filter = |status: Option<TaskStatus>, name: Option<&str>| TaskFilter {
        status,
        name: name.map(|n| TaskName::parse(n).unwrap()),
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
        repo.insert(task).unwrap();
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
        ("failed-attempts-without-retry", false, "attempt_count = 1"),
        ("blank-name", false, "name = '   '"),
        ("control-character-worker", true, "worker_id = E'bad\\nworker'"),
        ("negative-attempt-count", false, "attempt_count = -1, max_attempts = 1"),
    ];
    let mut outcomes = Vec::new();

    for (label, running, set) in edits {
        let mut task = task_at("edited", t0());
        if running {
            task.start(&worker("w"), t0()).unwrap();
        }
        repo.insert(&task).unwrap();
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
        ]
    );
}

#[test]
fn concurrent_transitions_of_one_task_have_exactly_one_winner() {
    const THREADS: usize = 16;
    let db = TestDatabase::new();
    let pool = build_pool(
        db.url(),
        &PoolConfig { max_size: THREADS as u32, connect_timeout: Duration::from_secs(30) },
    )
    .unwrap();
    let repo = Arc::new(PgTaskRepository::new(pool));

    for round in 0..3 {
        let task = task_at("contended", t0() + secs(round));
        repo.insert(&task).unwrap();
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (repo, barrier, id) = (Arc::clone(&repo), Arc::clone(&barrier), task.id());
                std::thread::spawn(move || {
                    let mut task = repo.get(id).unwrap();
                    let read = task.version();
                    let me = worker(&format!("worker-{i}"));
                    task.start(&me, t0() + secs(60)).unwrap();
                    // Everyone has read the same version before anyone writes.
                    barrier.wait();
                    repo.update(&task, read).map(|()| me)
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
    }
}

#[test]
fn concurrent_starts_through_the_service_give_one_start_and_refusals_for_the_rest() {
    const THREADS: usize = 8;
    let db = TestDatabase::new();
    let pool = build_pool(
        db.url(),
        &PoolConfig { max_size: THREADS as u32, connect_timeout: Duration::from_secs(30) },
    )
    .unwrap();
    let service = Arc::new(TaskService::new(
        Arc::new(PgTaskRepository::new(pool)),
        Arc::new(FixedClock::new(t0())),
        Arc::new(FixedBackoff(secs(30))),
        MaxAttempts::new(3).unwrap(),
    ));
    let task = service
        .create(taskpilot_app::CreateTask {
            name: TaskName::parse("contended").unwrap(),
            payload: Value::Null,
            priority: 0,
            max_attempts: None,
            run_at: None,
        })
        .unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));

    let results: Vec<_> = (0..THREADS)
        .map(|i| {
            let (service, barrier, id) = (Arc::clone(&service), Arc::clone(&barrier), task.id());
            std::thread::spawn(move || {
                barrier.wait();
                service.start(id, &worker(&format!("worker-{i}")))
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
