//! Storage that goes away and comes back: the repository must say "unavailable" quickly and
//! recover by itself. Also the development cluster's life cycle.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, PgConnection};
use serde_json::json;
use taskpilot_app::{Actor, ClaimRequest, RepoError, TaskEvent, TaskFilter, TaskRepository};
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{build_pool, ensure_database, run_migrations, PgTaskRepository, PoolConfig};
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
    build_pool(url, &PoolConfig { max_size: 2, connect_timeout: Duration::from_secs(1) }).unwrap()
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

#[test]
fn sessions_killed_by_the_server_are_replaced_without_an_error() {
    let db = TestDatabase::new();
    let repo = PgTaskRepository::new(db.pool());
    let task = new_task();
    repo.insert(&task, &created(&task)).unwrap();
    let mut admin = PgConnection::establish(db.url()).unwrap();

    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    let got = repo.get(task.id());

    assert_eq!(got.unwrap(), task);
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
