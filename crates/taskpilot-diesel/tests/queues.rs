//! Queue state on a real PostgreSQL: paused queues give claims nothing, resuming makes them
//! claimable and wakes listeners, writes compare and swap, and the reads behind
//! `GET /api/queues` and the explanation of a task.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use taskpilot_app::{ClaimRequest, QueueActivity, TaskRepository};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgTaskRepository, RunnableListener};
use taskpilot_domain::{NewTask, QueueState, Reporter, Task, TaskId, TokenName};
use uuid::Uuid;

fn ops() -> TokenName {
    TokenName::parse("ops").unwrap()
}

fn task_in(queue_name: &str, priority: i32, created_at: DateTime<Utc>) -> Task {
    Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask { queue: queue(queue_name), priority, ..spec("job", 3) },
        created_at,
    )
}

fn claim(repo: &PgTaskRepository, queues: Option<&[&str]>, now: DateTime<Utc>) -> Vec<Task> {
    repo.claim(&ClaimRequest {
        worker: worker("w"),
        queues: queues.map(|qs| qs.iter().map(|q| queue(q)).collect()),
        limit: 10,
        lease: lease(60),
        now,
    })
    .unwrap()
}

fn queues_of(tasks: &[Task]) -> Vec<&str> {
    let mut names: Vec<&str> = tasks.iter().map(|t| t.queue().as_str()).collect();
    names.sort_unstable();
    names
}

fn pause(repo: &PgTaskRepository, name: &str, now: DateTime<Utc>) -> QueueState {
    let state = repo.queue_state(&queue(name)).unwrap();
    let paused = state.pause(&ops(), now).unwrap();
    assert!(repo.write_queue_state(&queue(name), &paused, state.version).unwrap());
    paused
}

#[test]
fn a_paused_queue_gives_no_claim_a_task_while_other_queues_still_do_until_it_is_resumed() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    for (i, name) in ["emails", "emails", "sms"].into_iter().enumerate() {
        store(&repo, &task_in(name, 0, t0() + secs(i64::try_from(i).unwrap())));
    }
    let paused = pause(&repo, "emails", t0());
    assert_eq!(repo.queue_state(&queue("emails")).unwrap(), paused, "read back as written");

    // Every form of the claim statement: one queue, several, every queue.
    assert!(claim(&repo, Some(&["emails"]), t0() + secs(10)).is_empty());
    assert_eq!(queues_of(&claim(&repo, Some(&["emails", "sms"]), t0() + secs(10))), ["sms"]);
    assert!(claim(&repo, None, t0() + secs(10)).is_empty(), "sms is taken, emails paused");

    // A paused queue still takes new tasks, and they wait too.
    store(&repo, &task_in("emails", 9, t0() + secs(11)));
    assert!(claim(&repo, None, t0() + secs(12)).is_empty());

    let resumed = paused.resume(t0() + secs(20)).unwrap();
    assert!(repo.write_queue_state(&queue("emails"), &resumed, paused.version).unwrap());
    assert_eq!(queues_of(&claim(&repo, None, t0() + secs(21))), ["emails"; 3]);
}

#[test]
fn a_paused_queue_still_takes_heartbeats_and_completions_and_its_leases_still_expire() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    store(&repo, &task_in("emails", 0, t0()));
    store(&repo, &task_in("emails", 0, t0()));
    let mut running = claim(&repo, Some(&["emails"]), t0() + secs(1));
    assert_eq!(running.len(), 2);
    pause(&repo, "emails", t0() + secs(2));

    let mut first = running.remove(0);
    let token = first.lease().unwrap().token;
    transition(&repo, &mut first, |t| t.heartbeat(None, token, lease(60), t0() + secs(3)));
    transition(&repo, &mut first, |t| {
        t.succeed(&Reporter::lease(None, token), None, t0() + secs(4))
    });
    let expired = repo.expired_leases(t0() + secs(600), 10).unwrap();
    assert_eq!(expired.iter().map(Task::id).collect::<Vec<_>>(), [running[0].id()]);
}

#[test]
fn queue_writes_compare_and_swap_on_the_version() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let fresh = QueueState::default();
    let paused = fresh.pause(&ops(), t0()).unwrap();
    let other = fresh.pause(&TokenName::parse("other").unwrap(), t0()).unwrap();

    assert!(repo.write_queue_state(&queue("emails"), &paused, 0).unwrap());
    assert!(!repo.write_queue_state(&queue("emails"), &other, 0).unwrap(), "lost the insert");
    let resumed = paused.resume(t0() + secs(1)).unwrap();
    assert!(!repo.write_queue_state(&queue("emails"), &resumed, 7).unwrap(), "stale version");
    assert_eq!(repo.queue_state(&queue("emails")).unwrap(), paused);
    assert!(repo.write_queue_state(&queue("emails"), &resumed, 1).unwrap());
    assert_eq!(repo.queue_states().unwrap(), vec![(queue("emails"), resumed)]);
    assert_eq!(repo.queue_state(&queue("unknown")).unwrap(), QueueState::default());
}

#[test]
fn resuming_a_queue_wakes_the_listener_and_pausing_does_not() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let (sent, woken) = mpsc::channel();
    let _listener = RunnableListener::start(
        db.url().to_owned(),
        Arc::new(move || {
            let _ = sent.send(());
        }),
    )
    .unwrap();
    // Every (re)connection wakes once; wait for it, then for quiet.
    woken.recv_timeout(Duration::from_secs(10)).unwrap();
    while woken.recv_timeout(Duration::from_millis(100)).is_ok() {}

    let paused = pause(&repo, "emails", t0());
    assert!(woken.recv_timeout(Duration::from_millis(300)).is_err(), "a pause wakes nobody");
    let resumed = paused.resume(t0() + secs(1)).unwrap();
    assert!(repo.write_queue_state(&queue("emails"), &resumed, paused.version).unwrap());

    assert!(woken.recv_timeout(Duration::from_secs(5)).is_ok(), "no wake-up after resume");
}

#[test]
fn tasks_ahead_are_counted_in_claim_order_up_to_the_cap() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let target = task_in("emails", 5, t0() + secs(10));
    let mut tasks = vec![
        task_in("emails", 9, t0() + secs(20)), // higher priority: ahead
        task_in("emails", 5, t0() + secs(5)),  // same priority, earlier: ahead
        task_in("emails", 5, t0() + secs(30)), // same priority, later: behind
        task_in("emails", 1, t0()),            // lower priority: behind
        task_in("sms", 9, t0()),               // another queue
    ];
    let delayed = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            queue: queue("emails"),
            priority: 9,
            run_at: Some(t0() + secs(3600)),
            ..spec("job", 3)
        },
        t0(),
    );
    tasks.push(delayed); // not runnable yet
    tasks.push(target.clone());
    for t in &tasks {
        store(&repo, t);
    }

    assert_eq!(repo.runnable_ahead(&target, t0() + secs(60), 10_000).unwrap(), 2);
    assert_eq!(repo.runnable_ahead(&target, t0() + secs(60), 1).unwrap(), 1, "capped");
    assert_eq!(repo.runnable_ahead(&target, t0() + secs(7200), 10_000).unwrap(), 3);
}

#[test]
fn activity_counts_the_tasks_created_and_finished_since_an_instant() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    store(&repo, &task_in("emails", 0, t0()));
    let mut done = task_in("emails", 0, t0() + secs(30));
    store(&repo, &done);
    store(&repo, &task_in("sms", 0, t0() + secs(40)));
    transition(&repo, &mut done, |t| t.cancel(t0() + secs(50)));

    let activity = repo.queue_activity(t0() + secs(20)).unwrap();

    assert_eq!(
        activity,
        vec![
            QueueActivity { queue: queue("emails"), created: 1, completed: 1 },
            QueueActivity { queue: queue("sms"), created: 1, completed: 0 },
        ]
    );
    assert!(repo.queue_activity(t0() + secs(60)).unwrap().is_empty());
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[test]
fn the_reads_of_a_queue_walk_indexes_not_the_table() {
    let db = TestDatabase::new();
    execute(
        &db.pool(),
        "INSERT INTO tasks (id, queue, name, status, retry_state, attempt, ended_attempt,
             ended_attempt_token, ended_attempt_end, max_attempts, completed_at, created_at,
             updated_at, version)
         SELECT gen_random_uuid(), 'q' || (i % 20), 'done', 'SUCCEEDED', 'NONE', 1, 1,
             gen_random_uuid(), 'SUCCEEDED', 3, now() - interval '2 days',
             now() - interval '3 days', now(), 3
         FROM generate_series(1, 20000) AS i;
         INSERT INTO tasks (id, queue, name, status, retry_state, max_attempts, created_at,
             updated_at, version, priority)
         SELECT gen_random_uuid(), 'q' || (i % 20), 'todo', 'PENDING', 'NONE', 3,
             now() - interval '1 hour', now() - interval '1 hour', 1, i % 5
         FROM generate_series(1, 2000) AS i;
         ANALYZE tasks;",
    );
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let now = Utc::now();
    let plan = |lines: Vec<PlanLine>| lines.into_iter().map(|l| l.line).collect::<Vec<_>>();

    let activity = plan(
        diesel::sql_query(format!("EXPLAIN {}", taskpilot_diesel::testing::queue_activity_sql()))
            .bind::<Timestamptz, _>(now - secs(60))
            .load(&mut conn)
            .unwrap(),
    );
    let ahead = plan(
        diesel::sql_query(format!("EXPLAIN {}", taskpilot_diesel::testing::runnable_ahead_sql()))
            .bind::<Text, _>("q1")
            .bind::<Timestamptz, _>(now)
            .bind::<Integer, _>(2)
            .bind::<Timestamptz, _>(now - secs(1800))
            .bind::<SqlUuid, _>(Uuid::nil())
            .bind::<BigInt, _>(10_000_i64)
            .load(&mut conn)
            .unwrap(),
    );
    println!("activity:\n{}\n\nahead:\n{}", activity.join("\n"), ahead.join("\n"));

    for (label, lines) in [("activity", &activity), ("ahead", &ahead)] {
        assert!(!lines.iter().any(|l| l.contains("Seq Scan on tasks")), "{label}: {lines:#?}");
    }
    assert!(ahead.iter().any(|l| l.contains("tasks_runnable_queue_idx")), "{ahead:#?}");
}
