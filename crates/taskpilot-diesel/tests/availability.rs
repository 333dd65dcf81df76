//! Storage that goes away and comes back: the repository must say "unavailable" quickly and
//! recover by itself, and the pool must drop dead connections without testing each checkout.
//! Also the limits every pooled session runs under, and the development cluster's life cycle.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel::PgConnection;
use serde_json::json;
use taskpilot_app::{Actor, ClaimRequest, RepoError, TaskEvent, TaskFilter, TaskRepository};
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{
    build_pool, build_pool_with_timeouts, checkout, ensure_database, run_migrations, PgPool,
    PgTaskRepository, PoolConfig, SessionTimeouts,
};
use taskpilot_domain::{
    LeaseDuration, MaxAttempts, NewTask, QueueName, Task, TaskId, TaskName, WorkerId,
};
use uuid::Uuid;

fn new_task() -> Task {
    let spec = NewTask {
        queue: QueueName::default_queue(),
        name: TaskName::parse("send-email").unwrap(),
        payload: json!({}),
        priority: 0,
        max_attempts: MaxAttempts::new(3).unwrap(),
        run_at: None,
        unique_key: None,
    };
    Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        spec,
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    )
}

fn created(task: &Task) -> TaskEvent {
    TaskEvent::transition(None, task, Actor::Client)
}

fn quick_pool(url: &str) -> taskpilot_diesel::PgPool {
    build_pool(
        url,
        &PoolConfig {
            max_size: 2,
            connect_timeout: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(1),
        },
    )
    .unwrap()
}

fn closed_port() -> u16 {
    // Bound and released at once: nothing listens there now.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_unavailable<T: std::fmt::Debug>(result: Result<T, RepoError>) -> bool {
    matches!(result, Err(RepoError::Unavailable(_)))
}

#[test]
fn an_unreachable_database_is_unavailable_within_the_connect_timeout() {
    let repo = PgTaskRepository::new(quick_pool(&format!(
        "postgres://postgres@127.0.0.1:{}/taskpilot",
        closed_port()
    )));
    let task = new_task();
    let started = Instant::now();

    let outcomes = [
        is_unavailable(repo.get(task.id())),
        is_unavailable(repo.ping()),
        is_unavailable(repo.insert(&task, &created(&task))),
        is_unavailable(repo.update(&task, 1, None)),
        is_unavailable(repo.list(&TaskFilter::default(), None, 10)),
        is_unavailable(repo.claim(&ClaimRequest {
            worker: WorkerId::parse("w").unwrap(),
            queues: None,
            limit: 1,
            lease: LeaseDuration::from_secs(60).unwrap(),
            now: task.created_at(),
        })),
        is_unavailable(repo.expired_leases(task.created_at(), 10)),
        is_unavailable(repo.events(task.id())),
        is_unavailable(repo.rejection_counts()),
    ];
    let elapsed = started.elapsed();

    assert_eq!(outcomes, [true; 9]);
    // Nine calls, each waiting at most the one-second connect timeout.
    assert!(elapsed < Duration::from_secs(14), "took {elapsed:?}");
}

#[test]
fn a_stopped_server_is_unavailable_and_the_same_repository_recovers_after_restart() {
    let cluster = LocalCluster::start_throwaway().unwrap();
    let url = cluster.url("taskpilot");
    ensure_database(&url).unwrap();
    let pool = quick_pool(&url);
    run_migrations(&pool).unwrap();
    let repo = PgTaskRepository::new(pool);
    let task = new_task();
    repo.insert(&task, &created(&task)).unwrap();

    cluster.stop().unwrap();
    let down = (is_unavailable(repo.get(task.id())), is_unavailable(repo.ping()));
    cluster.restart().unwrap();
    // r2d2 reconnects in the background with a growing delay; give it a few tries.
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        match repo.get(task.id()) {
            Err(RepoError::Unavailable(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other,
        }
    };

    assert_eq!(down, (true, true));
    assert_eq!(back.unwrap(), task);
    assert!(repo.ping().is_ok());
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// The backends connected to the current database, other than `admin`'s own.
fn other_backends(admin: &mut PgConnection) -> BTreeSet<i32> {
    diesel::sql_query(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .load::<Pid>(admin)
    .unwrap()
    .into_iter()
    .map(|p| p.pid)
    .collect()
}

/// Polls `done` every 20 ms; panics after 30 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks out every connection of `pool` at once, as the repository does, and asks each for
/// its backend: the pids of those that answered, and how many failed.
fn use_every_connection(pool: &PgPool, size: usize) -> (BTreeSet<i32>, usize) {
    let conns: Vec<_> = (0..size).map(|_| checkout(pool).unwrap()).collect();
    let mut answered = BTreeSet::new();
    let mut failed = 0;
    for mut conn in conns {
        match diesel::sql_query("SELECT pg_backend_pid() AS pid").get_result::<Pid>(&mut conn) {
            Ok(p) => {
                answered.insert(p.pid);
            }
            Err(_) => failed += 1,
        }
    }
    (answered, failed)
}

#[test]
fn dead_connections_cost_one_failed_call_each_and_are_never_handed_out_again() {
    const SIZE: usize = 4;
    let db = TestDatabase::new();
    let pool = build_pool(
        db.url(),
        &PoolConfig {
            max_size: SIZE as u32,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    let repo = PgTaskRepository::new(pool.clone());
    let task = new_task();
    repo.insert(&task, &created(&task)).unwrap();
    let mut admin = PgConnection::establish(db.url()).unwrap();
    let (killed, _) = use_every_connection(&pool, SIZE);

    // What an outage does to a pool: every session it holds ends under it.
    for pid in &killed {
        diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
            .execute(&mut admin)
            .unwrap();
    }
    wait_until("the sessions to end", || other_backends(&mut admin).is_disjoint(&killed));
    let mut failures = 0;
    let mut not_unavailable = Vec::new();
    for _ in 0..3 * SIZE {
        match repo.get(task.id()) {
            Ok(got) => assert_eq!(got, task),
            Err(RepoError::Unavailable(_)) => failures += 1,
            Err(e) => not_unavailable.push(e.to_string()),
        }
    }
    // Connections a single caller never reached are still in the pool: use them all at once,
    // round after round, until every one answers.
    let mut rounds = Vec::new();
    loop {
        let (answered, failed) = use_every_connection(&pool, SIZE);
        failures += failed;
        rounds.push((answered.clone(), failed));
        if failed == 0 {
            break;
        }
        assert!(
            rounds.len() <= SIZE + 1,
            "the pool keeps handing out dead connections: {rounds:?}"
        );
    }
    let (last, _) = rounds.last().unwrap();

    assert_eq!(killed.len(), SIZE, "every pooled connection had a session to end");
    assert!(not_unavailable.is_empty(), "a lost connection is unavailable: {not_unavailable:?}");
    // No test on checkout: each dead connection fails the one call that meets it (were
    // checkouts tested, none would), and is then dropped, never handed out twice.
    assert_eq!(failures, SIZE, "one failure per dead connection: {rounds:?}");
    assert_eq!(last.len(), SIZE);
    assert!(last.is_disjoint(&killed), "no connection of a killed session is kept: {rounds:?}");
    assert_eq!(repo.get(task.id()).unwrap(), task);
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

fn show(conn: &mut PgConnection, setting: &str) -> String {
    diesel::sql_query(format!("SELECT current_setting('{setting}') AS value"))
        .get_result::<Setting>(conn)
        .unwrap()
        .value
}

#[test]
fn every_pooled_session_runs_under_the_statement_and_idle_in_transaction_timeouts() {
    let db = TestDatabase::new();
    let defaults = build_pool(
        db.url(),
        &PoolConfig {
            max_size: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        },
    )
    .unwrap();
    let custom = build_pool_with_timeouts(
        db.url(),
        &PoolConfig {
            max_size: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        },
        SessionTimeouts {
            statement: Duration::from_millis(200),
            idle_in_transaction: Duration::from_millis(1_500),
        },
    )
    .unwrap();
    let mut conn = defaults.get().unwrap();
    let mut short = custom.get().unwrap();

    let default_settings = (
        show(&mut conn, "statement_timeout"),
        show(&mut conn, "idle_in_transaction_session_timeout"),
    );
    let custom_settings = (
        show(&mut short, "statement_timeout"),
        show(&mut short, "idle_in_transaction_session_timeout"),
    );
    let too_long = short.batch_execute("SELECT pg_sleep(5)");
    let after = short.batch_execute("SELECT 1");

    assert_eq!(default_settings, ("30s".to_owned(), "10s".to_owned()));
    assert_eq!(custom_settings, ("200ms".to_owned(), "1500ms".to_owned()));
    let error = too_long.unwrap_err().to_string();
    assert!(error.contains("statement timeout"), "{error}");
    assert!(after.is_ok(), "a cancelled statement leaves the session usable: {after:?}");
}

#[test]
fn migrating_lifts_the_session_timeouts_and_puts_them_back() {
    let db = TestDatabase::new();
    let pool = build_pool_with_timeouts(
        db.url(),
        &PoolConfig {
            max_size: 1,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        },
        SessionTimeouts {
            statement: Duration::from_millis(250),
            idle_in_transaction: Duration::from_secs(2),
        },
    )
    .unwrap();
    // Another server migrating: ours waits for the lock longer than a statement may run.
    let mut other = PgConnection::establish(db.url()).unwrap();
    other.batch_execute("SELECT pg_advisory_lock(x'7461736b70696c6f'::bigint)").unwrap();
    let releaser = std::thread::spawn(move || {
        wait_until("the migration to wait past its statement timeout", || {
            let waiting = diesel::sql_query(
                "SELECT pid FROM pg_locks JOIN pg_stat_activity USING (pid) \
                 WHERE locktype = 'advisory' AND NOT granted \
                 AND now() - query_start > interval '500 ms'",
            )
            .load::<Pid>(&mut other)
            .unwrap();
            !waiting.is_empty()
        });
        other.batch_execute("SELECT pg_advisory_unlock(x'7461736b70696c6f'::bigint)").unwrap();
    });

    let migrated = run_migrations(&pool);
    releaser.join().unwrap();
    let mut conn = pool.get().unwrap();

    assert!(migrated.is_ok(), "{migrated:?}");
    assert_eq!(show(&mut conn, "statement_timeout"), "250ms");
    assert_eq!(show(&mut conn, "idle_in_transaction_session_timeout"), "2s");
}

/// Stops the development cluster and deletes its directory however the test ends.
struct Cleanup(PathBuf, Option<LocalCluster>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(cluster) = &self.1 {
            let _ = cluster.stop();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_persistent_cluster_is_created_once_reused_while_running_and_keeps_its_data() {
    let dir = std::env::temp_dir().join(format!("taskpilot-dev-test-{}", Uuid::new_v4().simple()));
    let mut cleanup = Cleanup(dir.clone(), None);
    let data_dir = dir.join("pgdata");
    let port = closed_port();

    let first = cleanup.1.insert(LocalCluster::start_persistent(&data_dir, port).unwrap());
    let first_port = first.port();
    ensure_database(&first.url("kept")).unwrap();
    let again = LocalCluster::start_persistent(&data_dir, closed_port()).unwrap();
    first.stop().unwrap();
    let after_stop = cleanup.1.insert(LocalCluster::start_persistent(&data_dir, port).unwrap());
    let kept = PgConnection::establish(&after_stop.url("kept")).map(|_| ());

    assert_eq!(first_port, port);
    assert_eq!(again.port(), port, "a running cluster is reused on its own port");
    assert!(kept.is_ok(), "{kept:?}");
}
