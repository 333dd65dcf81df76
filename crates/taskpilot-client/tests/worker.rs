//! The worker runtime end to end against the real server: outcomes of many tasks,
//! cancellation seen at a heartbeat, and a shutdown that loses nothing and counts no failure.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use common::{init_logs, wait_terminal, TestServer};
use serde_json::json;
use taskpilot_client::api::RetryState;
use taskpilot_client::{
    CancelReason, ClaimTasksRequest, CompletionItem, CreateTaskRequest, Outcome, TaskContext,
    TaskStatus, Worker,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Generous: the machine is shared and slow; no test waits this long when things work.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drives_200_tasks_to_the_statuses_their_handler_chose() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    // 140 succeed at once, 30 fail once then succeed, 20 fail for good, 10 never succeed.
    let kinds = |i: usize| match i % 20 {
        0..=13 => "ok",
        14..=16 => "flaky",
        17 | 18 => "fatal",
        _ => "hopeless",
    };
    let requests = (0..200)
        .map(|i| {
            CreateTaskRequest::new("work")
                .payload(json!({"kind": kinds(i), "n": i}))
                .max_attempts(3)
        })
        .collect();
    let tasks = client.create_batch(requests).await.unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let handler = |task: TaskContext| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        match (task.payload["kind"].as_str().unwrap(), task.attempt) {
            ("ok", _) => Outcome::Succeed(Some(json!({"n": task.payload["n"]}))),
            ("flaky", 1) => Outcome::Retry("flaky the first time".to_owned()),
            ("flaky", _) => Outcome::Succeed(None),
            ("fatal", _) => Outcome::FailPermanently("cannot ever work".to_owned()),
            _ => Outcome::Retry("still broken".to_owned()),
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = Worker::new(client.clone(), handler)
        .worker_id("worker-200")
        .concurrency(8)
        .claim_wait(Duration::from_secs(1));

    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    let finished = wait_terminal(&client, &ids, PATIENCE).await;
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for task in &finished {
        let kind = task.payload["kind"].as_str().unwrap();
        *seen.entry(kind).or_default() += 1;
        let expected = match kind {
            "ok" => (TaskStatus::Succeeded, RetryState::None, 1),
            "flaky" => (TaskStatus::Succeeded, RetryState::None, 2),
            "fatal" => (TaskStatus::Failed, RetryState::NonRetryable, 1),
            _ => (TaskStatus::Failed, RetryState::Exhausted, 3),
        };
        assert_eq!((task.status, task.retry_state, task.attempt), expected, "{task:?}");
        if kind == "ok" {
            assert_eq!(task.result, Some(json!({"n": task.payload["n"]})));
        }
    }
    assert_eq!(seen, HashMap::from([("ok", 140), ("flaky", 30), ("fatal", 20), ("hopeless", 10)]));
    assert_eq!(
        (report.succeeded, report.failed_permanently, report.retried),
        (170, 20, 30 + 3 * 10)
    );
    assert_eq!(report.claimed, 170 + 20 + 30 + 3 * 10);
    assert_eq!((report.refused, report.unreported, report.released), (0, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_task_longer_than_its_lease_and_a_panic_is_a_retry() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    let long = client.create(&CreateTaskRequest::new("long")).await.unwrap();
    let panicky = client.create(&CreateTaskRequest::new("panicky")).await.unwrap();
    let handler = |task: TaskContext| async move {
        match (task.name.as_str(), task.attempt) {
            // Longer than the 5 s lease: only heartbeats keep the reaper away.
            ("long", _) => tokio::time::sleep(Duration::from_secs(8)).await,
            ("panicky", 1) => panic!("the handler's own bug"),
            _ => {}
        }
        Outcome::Succeed(None)
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = Worker::new(client.clone(), handler)
        .lease(Duration::from_secs(5))
        .claim_wait(Duration::from_secs(1));

    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    let finished = wait_terminal(&client, &[long.id, panicky.id], PATIENCE).await;
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();

    assert_eq!((finished[0].status, finished[0].attempt), (TaskStatus::Succeeded, 1));
    assert_eq!((finished[1].status, finished[1].attempt), (TaskStatus::Succeeded, 2));
    assert_eq!((report.succeeded, report.retried, report.lease_lost), (2, 1, 0));
    let events = client.events(panicky.id).await.unwrap();
    assert_eq!(events[2].error.as_deref(), Some("handler panicked"), "{events:?}");
    server.stop().await;
}

/// Tells when it is dropped: the handler holding it was aborted (or ended).
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stuck_on_a_task_cancelled_through_the_api_is_aborted() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    let task = client.create(&CreateTaskRequest::new("stuck")).await.unwrap();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    let handler = move |task: TaskContext| {
        let started = started_tx.clone();
        let guard = DropSignal(dropped_tx.lock().unwrap().take());
        async move {
            let _guard = guard;
            started.send(task.cancellation.clone()).unwrap();
            std::future::pending::<()>().await;
            Outcome::Succeed(None)
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // The shortest lease: a heartbeat every 5/3 s.
    let worker = Worker::new(client.clone(), handler)
        .lease(Duration::from_secs(5))
        .claim_wait(Duration::from_secs(1));

    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    let cancellation = started_rx.recv().await.unwrap();
    client.cancel(task.id).await.unwrap();
    tokio::time::timeout(PATIENCE, dropped_rx).await.unwrap().unwrap();
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();

    assert_eq!(cancellation.reason(), Some(CancelReason::Cancelled));
    assert_eq!(report.cancelled, 1);
    assert_eq!((report.succeeded, report.released, report.refused), (0, 0, 0));
    let task = client.get(task.id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_reports_what_finished_and_releases_the_rest_for_another_worker() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    // Quick ones finish at once; medium ones once the worker was told to stop (within its
    // grace period); slow ones never, on this worker. The slow ones run their last attempt:
    // failed back, they would fail for good; released, they run again.
    let requests = ["quick", "quick", "medium", "medium", "slow", "slow"]
        .map(|kind| CreateTaskRequest::new(kind).max_attempts(if kind == "slow" { 1 } else { 5 }))
        .to_vec();
    let tasks = client.create_batch(requests).await.unwrap();
    let ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<String>();
    let release = Arc::new(Notify::new());
    let handler = {
        let release = release.clone();
        move |task: TaskContext| {
            let started = started_tx.clone();
            let release = release.clone();
            async move {
                let notified = release.notified();
                started.send(task.name.clone()).unwrap();
                match task.name.as_str() {
                    "quick" => {}
                    "medium" => notified.await,
                    _ => std::future::pending().await,
                }
                Outcome::Succeed(Some(json!("first worker")))
            }
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let first = Worker::new(client.clone(), handler)
        .worker_id("first")
        .concurrency(6)
        .claim_wait(Duration::from_secs(1))
        .grace_period(Duration::from_secs(3));

    let running = tokio::spawn(first.run_until(async move {
        let mut stop = stop_rx;
        let _ = stop.wait_for(|stop| *stop).await;
    }));
    for _ in 0..6 {
        started_rx.recv().await.unwrap();
    }
    stop_tx.send_replace(true);
    // Told to stop; the medium ones finish now, within the grace period.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_waiters();
    let report = running.await.unwrap().unwrap();

    assert_eq!((report.claimed, report.succeeded, report.released), (6, 4, 2), "{report:?}");
    assert_eq!((report.retried, report.refused, report.unreported), (0, 0, 0), "{report:?}");
    let mut slow = Vec::new();
    for task in current(&client, &ids).await {
        match task.name.as_str() {
            "slow" => {
                // Back to PENDING as it was: no failure counted, runnable at once.
                assert_eq!(task.status, TaskStatus::Pending, "{task:?}");
                assert_eq!((task.retry_state, task.attempt_count), (RetryState::None, 0));
                assert_eq!((task.attempt, task.max_attempts), (1, 1), "{task:?}");
                assert_eq!(task.next_run_at, None, "{task:?}");
                assert_eq!(task.last_error, None, "{task:?}");
                slow.push(task.id);
            }
            _ => assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}"),
        }
    }
    let events = client.events(slow[0]).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.from, last.to), (Some(TaskStatus::Running), TaskStatus::Pending));
    assert_eq!((last.worker_id.as_deref(), last.error.as_deref()), (Some("first"), None));

    // Another worker claims them at once, without waiting, on their next attempt.
    let claimed = client
        .claim(&ClaimTasksRequest {
            worker_id: "second".to_owned(),
            limit: Some(10),
            queues: None,
            lease_seconds: None,
            wait_ms: None,
        })
        .await
        .unwrap();
    let mut claimed_ids: Vec<_> = claimed.iter().map(|t| t.id).collect();
    claimed_ids.sort_unstable();
    slow.sort_unstable();
    assert_eq!(claimed_ids, slow, "claimable again at once");
    let results = client
        .complete_batch(
            claimed
                .iter()
                .map(|t| {
                    assert_eq!((t.attempt, t.attempt_count), (2, 0), "{t:?}");
                    let token = t.lease_token.clone().unwrap();
                    CompletionItem::succeeded(t.id, token, Some(json!("second worker")))
                        .worker("second")
                })
                .collect(),
        )
        .await
        .unwrap();

    for result in results {
        let task = result.task.unwrap();
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert_eq!(task.result, Some(json!("second worker")));
        assert_eq!(task.attempt, 2);
    }
    server.stop().await;
}

/// The tasks as they stand.
async fn current(
    client: &taskpilot_client::Client,
    ids: &[uuid::Uuid],
) -> Vec<taskpilot_client::TaskResponse> {
    let mut tasks = Vec::new();
    for id in ids {
        tasks.push(client.get(id).await.unwrap());
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_waits_for_half_its_slots_and_claims_them_together() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    let quick = client.create(&CreateTaskRequest::new("quick")).await.unwrap();
    for _ in 0..3 {
        client.create(&CreateTaskRequest::new("blocked")).await.unwrap();
    }
    // Each "blocked" task holds its slot until the test hands out a permit.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = {
        let gate = Arc::clone(&gate);
        move |task: TaskContext| {
            let gate = Arc::clone(&gate);
            async move {
                if task.name == "blocked" {
                    gate.acquire().await.unwrap().forget();
                }
                Outcome::Succeed(None)
            }
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // An idle worker claims at once; once busy, it waits (up to far longer than this test
    // runs) until a claim can fill half of its 4 slots.
    let worker = Worker::new(client.clone(), handler)
        .concurrency(4)
        .claim_linger(PATIENCE)
        .claim_wait(Duration::from_secs(1));
    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    wait_terminal(&client, &[quick.id], PATIENCE).await;
    // One slot is free: too few to claim. Two tasks arrive one after the other, then a
    // second slot frees up and one claim takes both.
    let first = client.create(&CreateTaskRequest::new("late")).await.unwrap();
    let second = client.create(&CreateTaskRequest::new("late")).await.unwrap();
    gate.add_permits(1);
    wait_terminal(&client, &[first.id, second.id], PATIENCE).await;
    let started = |id| {
        let client = client.clone();
        async move {
            let events = client.events(id).await.unwrap();
            events
                .into_iter()
                .find(|e| e.to == TaskStatus::Running && e.rejected_code.is_none())
                .unwrap()
                .at
        }
    };
    assert_eq!(started(first.id).await, started(second.id).await, "one claim took both");
    gate.add_permits(2);
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();
    assert_eq!((report.succeeded, report.unreported, report.released), (6, 0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_task_is_runnable_again_with_no_attempt_used_up() {
    init_logs();
    let server = TestServer::start(TimeDelta::milliseconds(20));
    let client = server.client();
    let task = client.create(&CreateTaskRequest::new("unknown").max_attempts(1)).await.unwrap();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let handler = move |task: TaskContext| {
        let seen = seen_tx.clone();
        async move {
            let _ = seen.send(task.attempt);
            Outcome::Release
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = Worker::new(client.clone(), handler).claim_wait(Duration::from_secs(1));
    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    // Released, it comes back to this worker; with one attempt allowed, a failure would have
    // ended it after the first run.
    assert_eq!(seen_rx.recv().await, Some(1));
    assert_eq!(seen_rx.recv().await, Some(2));
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();
    assert!(report.released >= 2, "{report:?}");
    assert_eq!((report.retried, report.failed_permanently, report.refused), (0, 0, 0));
    let now = client.get(task.id).await.unwrap();
    assert_eq!((now.status, now.attempt_count), (TaskStatus::Pending, 0), "{now:?}");
    server.stop().await;
}
