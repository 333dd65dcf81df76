//! The database clock and the LISTEN wake-ups on a real PostgreSQL.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::*;
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, PgConnection};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{build_pool, PgClock, PgTaskRepository, PoolConfig, RunnableListener};
use taskpilot_domain::{Clock, NewTask, Task, TaskId};
use uuid::Uuid;

#[test]
fn the_database_clock_offset_against_the_local_server_is_small() {
    let db = TestDatabase::new();

    let clock = PgClock::start(db.pool(), Duration::from_millis(50)).unwrap();
    let first = clock.offset();
    std::thread::sleep(Duration::from_millis(200));
    let refreshed = clock.offset();
    let (before, now, after) = (Utc::now(), clock.now(), Utc::now());

    // Same machine, same clock: only the measurement's error remains.
    assert!(first.abs() < TimeDelta::seconds(1), "offset {first}");
    assert!(refreshed.abs() < TimeDelta::seconds(1), "offset {refreshed}");
    assert!(now >= before - TimeDelta::seconds(1) && now <= after + TimeDelta::seconds(1));
    assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0, "cut to microseconds");
}

#[test]
fn a_clock_started_while_the_database_is_down_follows_the_local_clock() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pool = build_pool(
        &format!("postgres://postgres@127.0.0.1:{port}/taskpilot"),
        &PoolConfig {
            max_size: 1,
            connect_timeout: Duration::from_secs(1),
            acquire_timeout: Duration::from_secs(1),
        },
    )
    .unwrap();

    let clock = PgClock::start(pool, Duration::from_millis(100)).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(clock.offset(), TimeDelta::zero(), "a failed refresh keeps the offset");
    assert!((clock.now() - Utc::now()).abs() < TimeDelta::seconds(1));
}

/// A listener that counts wake-ups and reports each one on a channel.
fn counting_listener(url: &str) -> (RunnableListener, Arc<AtomicUsize>, mpsc::Receiver<()>) {
    let wakes = Arc::new(AtomicUsize::new(0));
    let (sent, received) = mpsc::channel();
    let counter = Arc::clone(&wakes);
    let listener = RunnableListener::start(
        url.to_owned(),
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = sent.send(());
        }),
    )
    .unwrap();
    (listener, wakes, received)
}

/// Waits for the wake-up every (re)connection gives, then drains anything else pending.
fn settle(received: &mpsc::Receiver<()>) {
    received.recv_timeout(Duration::from_secs(10)).unwrap();
    while received.recv_timeout(Duration::from_millis(100)).is_ok() {}
}

#[test]
fn a_task_created_through_another_connection_wakes_the_listener_within_a_second() {
    let db = TestDatabase::new();
    let repo = PgTaskRepository::new(db.pool());
    let (_listener, _, received) = counting_listener(db.url());
    settle(&received);
    let task = task_at("send-email", t0());
    let started = Instant::now();

    store(&repo, &task);
    let woken = received.recv_timeout(Duration::from_secs(1));

    assert!(woken.is_ok(), "no wake-up within a second");
    println!("woken {:?} after the insert returned", started.elapsed());
}

#[test]
fn a_task_delayed_into_the_future_wakes_nobody_and_a_rerun_does() {
    let db = TestDatabase::new();
    let repo = PgTaskRepository::new(db.pool());
    let (_listener, _, received) = counting_listener(db.url());
    settle(&received);
    let delayed = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask { run_at: Some(Utc::now() + TimeDelta::hours(1)), ..spec("later", 1) },
        Utc::now(),
    );
    let mut failed = task_at("fails", Utc::now() - TimeDelta::minutes(1));
    store(&repo, &failed);
    received.recv_timeout(Duration::from_secs(1)).unwrap();
    transition(&repo, &mut failed, |t| t.cancel(Utc::now()));

    store(&repo, &delayed);
    let after_delayed = received.recv_timeout(Duration::from_millis(300));
    transition(&repo, &mut failed, |t| t.rerun(Utc::now()));
    let after_rerun = received.recv_timeout(Duration::from_secs(1));

    assert!(after_delayed.is_err(), "a delayed task is not runnable now");
    assert!(after_rerun.is_ok(), "a rerun task is runnable now");
}

#[test]
fn the_listener_reconnects_after_its_session_is_killed_and_wakes_again() {
    let db = TestDatabase::new();
    let repo = PgTaskRepository::new(db.pool());
    let (_listener, wakes, received) = counting_listener(db.url());
    settle(&received);
    let before = wakes.load(Ordering::SeqCst);
    let mut admin = PgConnection::establish(db.url()).unwrap();

    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'taskpilot-listener' AND datname = current_database()",
        )
        .unwrap();
    // The reconnection itself wakes, since notifications may have been missed meanwhile.
    let on_reconnect = received.recv_timeout(Duration::from_secs(10));
    while received.recv_timeout(Duration::from_millis(100)).is_ok() {}
    store(&repo, &task_at("after-reconnect", t0()));
    let after = received.recv_timeout(Duration::from_secs(1));

    assert!(on_reconnect.is_ok(), "no wake-up after reconnecting");
    assert!(after.is_ok(), "no wake-up for a task created after reconnecting");
    assert!(wakes.load(Ordering::SeqCst) >= before + 2);
}

#[test]
fn dropping_the_listener_stops_its_thread_and_closes_its_session() {
    let db = TestDatabase::new();
    let (listener, _, received) = counting_listener(db.url());
    settle(&received);
    let sessions = || {
        count(
            &db.pool(),
            "SELECT count(*) AS n FROM pg_stat_activity
             WHERE application_name = 'taskpilot-listener' AND datname = current_database()",
        )
    };
    let while_running = sessions();
    let started = Instant::now();

    drop(listener);
    let stopped_in = started.elapsed();
    // The server notices the closed socket a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(while_running, 1);
    assert_eq!(sessions(), 0);
    assert!(stopped_in < Duration::from_secs(1), "stopping took {stopped_in:?}");
}
