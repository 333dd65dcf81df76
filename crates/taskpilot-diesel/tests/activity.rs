//! What operators read about the queue's activity, on a real PostgreSQL: throughput per minute
//! kept by the triggers (through folds and deletions), failed tasks grouped by error, and the
//! workers' sightings merged from several servers.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Uuid as SqlUuid};
use taskpilot_app::{
    DeadLetterGroup, DeadLetterQuery, TaskRepository, ThroughputMinute, WorkerSighting,
};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{Reporter, Task, TaskId, TaskName, TaskStatus, TokenId};
use uuid::Uuid;

/// The start of `t0`'s minute, plus `n` minutes.
fn minute(n: i64) -> DateTime<Utc> {
    use chrono::DurationRound as _;
    t0().duration_trunc(TimeDelta::minutes(1)).unwrap() + TimeDelta::minutes(n)
}

fn task(queue_name: &str, name: &str, created_at: DateTime<Utc>) -> Task {
    let mut spec = spec(name, 1);
    spec.queue = queue(queue_name);
    Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, created_at)
}

/// Starts `task` for `w` at `at` and stores it.
fn start(repo: &PgTaskRepository, task: &mut Task, at: DateTime<Utc>) -> Reporter {
    let lease_token = token();
    transition(repo, task, |t| t.start(&worker("w"), lease_token, lease(300), at));
    Reporter::lease(Some(worker("w")), lease_token)
}

fn fail(repo: &PgTaskRepository, task: &mut Task, error: &str, at: DateTime<Utc>) {
    let reporter = start(repo, task, at);
    transition(repo, task, |t| t.fail_permanently(&reporter, error, at));
}

fn succeed(repo: &PgTaskRepository, task: &mut Task, at: DateTime<Utc>) {
    let reporter = start(repo, task, at);
    transition(repo, task, |t| t.succeed(&reporter, None, at));
}

fn at(minute_n: i64, quiet: ThroughputMinute) -> ThroughputMinute {
    ThroughputMinute { minute: minute(minute_n), ..quiet }
}

#[test]
fn throughput_counts_creations_and_finishes_per_minute_through_folds_and_deletions() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let q = ThroughputMinute::quiet(minute(0));
    // Minute 0: three created in one batch statement, one alone in another queue.
    let mut batch =
        vec![task("emails", "a", t0()), task("emails", "b", t0()), task("emails", "c", t0())];
    let events: Vec<_> = batch
        .iter()
        .map(|t| taskpilot_app::TaskEvent::transition(None, t, taskpilot_app::Actor::Client))
        .collect();
    repo.insert_many(&batch, &events).unwrap();
    let mut sms = task("sms", "a", t0());
    store(&repo, &sms);
    // Minute 1: one succeeds, one fails for good, the sms task is cancelled.
    succeed(&repo, &mut batch[0], minute(1));
    fail(&repo, &mut batch[1], "boom", minute(1));
    transition(&repo, &mut sms, |t| t.cancel(minute(1) + secs(5)));
    // Minute 2: created, and a rerun of the failed task, which finishes nothing.
    store(&repo, &task("emails", "d", minute(2)));
    transition(&repo, &mut batch[1], |t| t.rerun(minute(2)));

    let expected = vec![
        at(0, ThroughputMinute { created: 4, ..q }),
        at(1, ThroughputMinute { succeeded: 1, failed: 1, cancelled: 1, ..q }),
        at(2, ThroughputMinute { created: 1, ..q }),
    ];
    assert_eq!(repo.throughput(minute(0), None).unwrap(), expected);
    assert_eq!(
        repo.throughput(minute(0), Some(&[queue("sms")])).unwrap(),
        vec![
            at(0, ThroughputMinute { created: 1, ..q }),
            at(1, ThroughputMinute { cancelled: 1, ..q })
        ]
    );
    assert_eq!(repo.throughput(minute(2), None).unwrap(), expected[2..], "from minute 2 on");

    // Folding leaves one row per minute and queue and the same answer. Fold at the tasks'
    // time: the day kept counts back from the folder's now.
    let rows = || count(&db.pool(), "SELECT count(*) AS n FROM task_throughput");
    assert!(rows() > 4);
    while repo.fold_counts(minute(3), 10_000).unwrap() > 0 {}
    assert_eq!(rows(), 5, "emails in minutes 0, 1 and 2, sms in minutes 0 and 1");
    assert_eq!(repo.throughput(minute(0), None).unwrap(), expected);

    // Deleting finished tasks (retention) takes nothing back.
    assert_eq!(repo.delete_finished(TaskStatus::Succeeded, minute(10), 100).unwrap(), 1);
    assert_eq!(repo.delete_finished(TaskStatus::Cancelled, minute(10), 100).unwrap(), 1);
    assert_eq!(repo.throughput(minute(0), None).unwrap(), expected);

    // A day later the folder drops those minutes.
    while repo.fold_counts(minute(3) + TimeDelta::days(1) + secs(60), 10_000).unwrap() > 0 {}
    assert_eq!(rows(), 0);
}

#[test]
fn dead_letters_group_failed_tasks_by_queue_name_and_the_first_line_of_the_error() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mine = TokenId::from_uuid(Uuid::from_u128(7));
    let mut n = 0;
    let mut failed = |queue_name: &str, name: &str, error: &str, by: Option<TokenId>| {
        n += 1;
        let mut t = task(queue_name, name, t0()).with_creator(by);
        store(&repo, &t);
        fail(&repo, &mut t, error, t0() + secs(n));
    };
    failed("emails", "send", "SMTP 550: no such mailbox\n  at line 1", None);
    failed("emails", "send", "SMTP 550: no such mailbox\n  at line 2", Some(mine));
    failed("emails", "send", "SMTP 550: no such mailbox", None);
    failed("emails", "send", "timeout", None);
    failed("emails", "resize", "timeout", Some(mine));
    failed("images", "resize", "timeout", None);
    // Neither pending nor succeeded tasks are dead letters.
    store(&repo, &task("emails", "send", t0()));
    let mut ok = task("emails", "send", t0());
    store(&repo, &ok);
    succeed(&repo, &mut ok, t0() + secs(1));

    let query = DeadLetterQuery {
        queues: None,
        created_by: None,
        scan: 1_000,
        limit: 10,
        error_chars: 200,
    };
    let groups = repo.dead_letters(&query).unwrap();
    let summary: Vec<(&str, &str, &str, u64)> = groups
        .iter()
        .map(|g| (g.queue.as_str(), g.name.as_str(), g.error.as_str(), g.count))
        .collect();
    assert_eq!(
        summary,
        [
            ("emails", "send", "SMTP 550: no such mailbox", 3),
            ("images", "resize", "timeout", 1),
            ("emails", "resize", "timeout", 1),
            ("emails", "send", "timeout", 1),
        ],
        "largest first, then the latest failure"
    );
    assert_eq!(groups[0].first_failed_at, t0() + secs(1));
    assert_eq!(groups[0].last_failed_at, t0() + secs(3));

    let cut =
        repo.dead_letters(&DeadLetterQuery { error_chars: 4, limit: 2, ..query.clone() }).unwrap();
    assert_eq!(
        cut.iter().map(|g| (g.error.as_str(), g.count)).collect::<Vec<_>>(),
        [("SMTP", 3), ("time", 1)]
    );

    let scoped = repo
        .dead_letters(&DeadLetterQuery {
            queues: Some(vec![queue("emails")]),
            created_by: Some(mine),
            ..query.clone()
        })
        .unwrap();
    assert_eq!(
        scoped,
        [
            DeadLetterGroup {
                queue: queue("emails"),
                name: TaskName::parse("resize").unwrap(),
                error: "timeout".into(),
                count: 1,
                first_failed_at: t0() + secs(5),
                last_failed_at: t0() + secs(5),
            },
            DeadLetterGroup {
                queue: queue("emails"),
                name: TaskName::parse("send").unwrap(),
                error: "SMTP 550: no such mailbox".into(),
                count: 1,
                first_failed_at: t0() + secs(2),
                last_failed_at: t0() + secs(2),
            },
        ]
    );

    // Only the newest `scan` failures are looked at.
    let newest = repo.dead_letters(&DeadLetterQuery { scan: 2, ..query }).unwrap();
    assert_eq!(newest.iter().map(|g| g.count).sum::<u64>(), 2);
    assert_eq!(newest[0].last_failed_at, t0() + secs(6));
}

#[test]
fn worker_sightings_keep_the_latest_instant_whichever_server_writes_last() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let seen = |name: &str, claim: Option<i64>, beat: Option<i64>, last: i64| WorkerSighting {
        worker: worker(name),
        last_claim_at: claim.map(|s| t0() + secs(s)),
        last_heartbeat_at: beat.map(|s| t0() + secs(s)),
        last_seen_at: t0() + secs(last),
    };
    // Server A saw w1 claim at 10 and heartbeat at 20; server B, writing later, saw an older
    // claim and a newer heartbeat.
    repo.record_workers(&[seen("w1", Some(10), Some(20), 20), seen("w2", Some(5), None, 5)], t0())
        .unwrap();
    repo.record_workers(&[seen("w1", Some(3), Some(30), 30)], t0()).unwrap();

    assert_eq!(
        repo.workers(t0(), 10).unwrap(),
        [seen("w1", Some(10), Some(30), 30), seen("w2", Some(5), None, 5)]
    );
    assert_eq!(repo.workers(t0() + secs(6), 10).unwrap(), [seen("w1", Some(10), Some(30), 30)]);
    assert_eq!(repo.workers(t0(), 1).unwrap().len(), 1);

    // Writing forgets the workers unseen since the instant given.
    repo.record_workers(&[seen("w3", None, None, 40)], t0() + secs(10)).unwrap();
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM workers"), 2);
    assert_eq!(
        count(&db.pool(), "SELECT count(*) AS n FROM workers WHERE worker_id IN ('w1', 'w3')"),
        2
    );
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[test]
fn grouping_dead_letters_reads_a_bounded_range_of_the_finished_index() {
    let db = TestDatabase::new();
    execute(
        &db.pool(),
        "INSERT INTO tasks (id, queue, name, status, retry_state, attempt, ended_attempt,
             ended_attempt_token, ended_attempt_end, max_attempts, last_error, completed_at,
             created_at, updated_at, version)
         SELECT gen_random_uuid(), 'q' || (i % 20), 'job', CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
             'NONE', 1, 1, gen_random_uuid(), 'FAILED', 1, 'boom ' || (i % 7),
             now() - interval '2 days' + i * interval '1 second',
             now() - interval '3 days', now(), 3
         FROM generate_series(1, 50000) AS i;
         ANALYZE tasks;",
    );
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let lines: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN {}", taskpilot_diesel::testing::dead_letters_sql()))
            .bind::<Nullable<diesel::sql_types::Array<Text>>, _>(None::<Vec<String>>)
            .bind::<Nullable<SqlUuid>, _>(None::<Uuid>)
            .bind::<BigInt, _>(100_000_i64)
            .bind::<Integer, _>(200)
            .bind::<BigInt, _>(50_i64)
            .load(&mut conn)
            .unwrap();
    let lines: Vec<String> = lines.into_iter().map(|l| l.line).collect();
    println!("{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("Seq Scan on tasks")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("tasks_finished_idx")), "{lines:#?}");
}
