//! Retention on a real PostgreSQL: `delete_finished` deletes only finished tasks past their
//! cutoff, at most a batch at a time, each with its whole history, and pruners on several
//! connections share the work without waiting for each other.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use taskpilot_app::{StaleCall, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::{delete_finished_sql, TestDatabase};
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{Reporter, StaleLease, Task, TaskId, TaskStatus};

/// A task created at `t0()` and brought into `status` through the repository, finishing at
/// `finished_at` when `status` is terminal.
fn stored_in(repo: &PgTaskRepository, status: TaskStatus, finished_at: DateTime<Utc>) -> Task {
    let mut task = task_at("send-email", t0());
    store(repo, &task);
    let w = worker("w1");
    let tok = token();
    let started = finished_at - secs(1);
    match status {
        TaskStatus::Pending => {}
        TaskStatus::Running => transition(repo, &mut task, |t| t.start(&w, tok, lease(60), t0())),
        TaskStatus::Succeeded => {
            transition(repo, &mut task, |t| t.start(&w, tok, lease(60), started));
            let report = Reporter::lease(Some(w.clone()), tok);
            transition(repo, &mut task, |t| t.succeed(&report, None, finished_at));
        }
        TaskStatus::Failed => {
            transition(repo, &mut task, |t| t.start(&w, tok, lease(60), started));
            let report = Reporter::lease(Some(w.clone()), tok);
            transition(repo, &mut task, |t| t.fail_permanently(&report, "bad input", finished_at));
        }
        TaskStatus::Cancelled => transition(repo, &mut task, |t| t.cancel(finished_at)),
    }
    assert_eq!(task.status(), status);
    task
}

fn exists(repo: &PgTaskRepository, task: &Task) -> bool {
    repo.get(task.id()).is_ok()
}

fn history_rows(db: &TestDatabase, id: TaskId) -> i64 {
    count(&db.pool(), &format!("SELECT count(*) AS n FROM task_events WHERE task_id = '{id}'"))
}

#[test]
fn only_terminal_tasks_that_finished_before_their_status_cutoff_are_deleted() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let early = t0() + secs(10);
    let late = t0() + secs(20);
    let old_success = stored_in(&repo, TaskStatus::Succeeded, early);
    let new_success = stored_in(&repo, TaskStatus::Succeeded, late);
    let failure = stored_in(&repo, TaskStatus::Failed, early);
    let cancelled = stored_in(&repo, TaskStatus::Cancelled, early);
    let pending = stored_in(&repo, TaskStatus::Pending, early);
    let running = stored_in(&repo, TaskStatus::Running, early);
    let long_after = t0() + TimeDelta::days(10_000);

    let succeeded = repo.delete_finished(TaskStatus::Succeeded, early + secs(1), 100).unwrap();
    let live = [TaskStatus::Pending, TaskStatus::Running]
        .map(|s| repo.delete_finished(s, long_after, 100).unwrap());
    let failed_at_cutoff = repo.delete_finished(TaskStatus::Failed, early, 100).unwrap();
    let failed_after_cutoff =
        repo.delete_finished(TaskStatus::Failed, early + TimeDelta::microseconds(1), 100).unwrap();

    assert_eq!(succeeded, 1);
    assert!(!exists(&repo, &old_success));
    assert!(exists(&repo, &new_success), "finished after the cutoff");
    assert!(exists(&repo, &cancelled), "another status, another cutoff");
    assert_eq!(live, [0, 0], "a task that is not finished is never deleted");
    assert!(exists(&repo, &pending) && exists(&repo, &running));
    assert_eq!(failed_at_cutoff, 0, "finished exactly at the cutoff: still kept");
    assert_eq!(failed_after_cutoff, 1);
    assert!(!exists(&repo, &failure));
}

#[test]
fn a_batch_deletes_at_most_its_limit_oldest_first() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let tasks: Vec<Task> = (1..=5)
        .map(|n| stored_in(&repo, TaskStatus::Succeeded, t0() + secs(10 * (6 - n))))
        .collect();
    let cutoff = t0() + secs(1_000);

    let first = repo.delete_finished(TaskStatus::Succeeded, cutoff, 2).unwrap();
    let kept: Vec<bool> = tasks.iter().map(|t| exists(&repo, t)).collect();
    let rest = repo.delete_finished(TaskStatus::Succeeded, cutoff, 2).unwrap();
    let last = repo.delete_finished(TaskStatus::Succeeded, cutoff, 2).unwrap();
    let none = repo.delete_finished(TaskStatus::Succeeded, cutoff, 2).unwrap();

    assert_eq!(first, 2);
    // Task n finished at 10 * (6 - n) s: the last two finished first.
    assert_eq!(kept, [true, true, true, false, false]);
    assert_eq!((rest, last, none), (2, 1, 0));
}

#[test]
fn a_task_goes_with_its_whole_history_and_no_other_task_loses_any() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let pruned = stored_in(&repo, TaskStatus::Succeeded, t0() + secs(10));
    let kept = stored_in(&repo, TaskStatus::Succeeded, t0() + secs(100));
    // A late report refused after the success is history too.
    let superseded = StaleLease::AttemptSuperseded { task: pruned.id(), current: 1 };
    let refusal = TaskEvent::rejection(
        &pruned,
        Some(worker("late")),
        StaleCall::Succeed,
        &superseded,
        t0() + secs(11),
    );
    repo.record_rejection(&refusal).unwrap();
    let before = (history_rows(&db, pruned.id()), history_rows(&db, kept.id()));

    let deleted = repo.delete_finished(TaskStatus::Succeeded, t0() + secs(50), 100).unwrap();

    assert_eq!(before, (4, 3), "created, started, succeeded (and one refused call)");
    assert_eq!(deleted, 1);
    assert_eq!(history_rows(&db, pruned.id()), 0);
    assert!(repo.events(pruned.id()).unwrap().is_empty());
    assert_eq!(history_rows(&db, kept.id()), 3);
    assert!(exists(&repo, &kept));
}

/// `n` succeeded tasks finished before `t0() + 1 s`, written in one statement.
fn insert_succeeded(db: &TestDatabase, n: u32) {
    execute(
        &db.pool(),
        &format!(
            "INSERT INTO tasks (id, queue, name, status, retry_state, attempt, ended_attempt,
                 ended_attempt_token, ended_attempt_end, max_attempts, completed_at, created_at,
                 updated_at, version)
             SELECT gen_random_uuid(), 'default', 'done', 'SUCCEEDED', 'NONE', 1, 1,
                 gen_random_uuid(), 'SUCCEEDED', 3, '{t0}'::timestamptz - i * interval '1 ms',
                 '{t0}'::timestamptz - interval '1 day', '{t0}', 3
             FROM generate_series(1, {n}) AS i;
             INSERT INTO task_events (task_id, attempt, from_status, to_status, actor, at)
             SELECT id, 1, s.from_status, s.to_status, 'WORKER', completed_at
             FROM tasks, (VALUES (NULL, 'PENDING'), ('PENDING', 'RUNNING'),
                 ('RUNNING', 'SUCCEEDED')) AS s (from_status, to_status);",
            t0 = t0().to_rfc3339()
        ),
    );
}

#[test]
fn a_pruner_skips_tasks_another_transaction_holds_instead_of_waiting_for_them() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    insert_succeeded(&db, 10);
    let mut holder = PgConnection::establish(db.url()).unwrap();
    holder
        .batch_execute("BEGIN; SELECT id FROM tasks ORDER BY completed_at LIMIT 3 FOR UPDATE")
        .unwrap();

    // Were it to wait for the held rows, the pool's statement timeout would fail it.
    let while_held = repo.delete_finished(TaskStatus::Succeeded, t0() + secs(1), 100).unwrap();
    holder.batch_execute("COMMIT").unwrap();
    let after = repo.delete_finished(TaskStatus::Succeeded, t0() + secs(1), 100).unwrap();

    assert_eq!((while_held, after), (7, 3));
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 0);
}

#[test]
fn concurrent_pruners_delete_every_due_task_exactly_once_between_them() {
    const PRUNERS: usize = 4;
    const TASKS: u32 = 2_000;
    let db = TestDatabase::new();
    insert_succeeded(&db, TASKS);
    let pool = taskpilot_diesel::build_pool(
        db.url(),
        &taskpilot_diesel::PoolConfig {
            max_size: PRUNERS as u32,
            connect_timeout: std::time::Duration::from_secs(30),
            acquire_timeout: std::time::Duration::from_secs(30),
        },
    )
    .unwrap();
    let repo = Arc::new(PgTaskRepository::new(pool));
    let start = Arc::new(Barrier::new(PRUNERS));

    let per_pruner: Vec<(u64, BTreeSet<u64>)> = (0..PRUNERS)
        .map(|_| {
            let (repo, start) = (repo.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let (mut total, mut batches) = (0, BTreeSet::new());
                loop {
                    let n =
                        repo.delete_finished(TaskStatus::Succeeded, t0() + secs(1), 50).unwrap();
                    if n == 0 {
                        return (total, batches);
                    }
                    total += n;
                    batches.insert(n);
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let deleted: u64 = per_pruner.iter().map(|(n, _)| n).sum();
    assert_eq!(deleted, u64::from(TASKS), "{per_pruner:?}");
    assert!(per_pruner.iter().all(|(_, sizes)| sizes.iter().all(|n| *n <= 50)));
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks"), 0);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 0);
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[test]
fn a_batch_reads_the_finished_tasks_index_however_many_tasks_the_table_holds() {
    let db = TestDatabase::new();
    insert_succeeded(&db, 50_000);
    execute(
        &db.pool(),
        "INSERT INTO tasks (id, queue, name, status, retry_state, max_attempts, created_at,
             updated_at, version)
         SELECT gen_random_uuid(), 'default', 'todo', 'PENDING', 'NONE', 3, now(), now(), 1
         FROM generate_series(1, 50000);
         ANALYZE tasks; ANALYZE task_events;",
    );
    let mut conn = db.pool().get().unwrap();

    let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", delete_finished_sql()))
        .bind::<Text, _>("SUCCEEDED")
        .bind::<Timestamptz, _>(t0())
        .bind::<BigInt, _>(1_000_i64)
        .load(&mut conn)
        .unwrap();
    let plan = plan.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n");

    assert!(plan.contains("tasks_finished_idx"), "{plan}");
    assert!(!plan.contains("Seq Scan on tasks"), "{plan}");
    assert!(plan.contains("task_events_task_id_id_idx"), "{plan}");
}
