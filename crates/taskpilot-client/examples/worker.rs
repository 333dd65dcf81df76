//! A demo worker for a local TaskPilot server.
//!
//! In one terminal start the server (`cargo run`), in a second one:
//!
//! ```text
//! cargo run -p taskpilot-client --example worker -- --enqueue 20   # create 20 demo tasks
//! cargo run -p taskpilot-client --example worker                   # work on them; Ctrl-C stops
//! ```
//!
//! It sends pretend e-mails: a `send-email` task sleeps a little and succeeds, except that
//! about one attempt in ten fails retryably (the server retries it with backoff). It claims
//! only from the `email` queue, so other teams' tasks are never touched; a task of another
//! name in that queue is released (handed back, runnable at once for a worker that has a
//! handler, no attempt used up) rather than failed. `TASKPILOT_URL` points it
//! elsewhere than `http://127.0.0.1:8080`; `TASKPILOT_TOKEN` is the API token it sends (a
//! worker token to work, an admin token to `--enqueue` too; none while the server runs
//! open);
//! `RUST_LOG` sets the log filter (`info` by default).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use serde_json::json;
use taskpilot_client::{Client, CreateTaskRequest, Outcome, TaskContext, Worker};
use tracing::info;

/// The queue this worker serves: it claims from no other.
const QUEUE: &str = "email";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let url = std::env::var("TASKPILOT_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    // TASKPILOT_TOKEN, when set, authenticates every call (a worker token, `tp_worker_…`).
    let client = Client::builder(&url).token_from_env().build()?;

    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => work(client).await,
        ["--enqueue", n] => enqueue(&client, n.parse()?).await,
        _ => Err("usage: worker [--enqueue N]".into()),
    }
}

/// Creates `n` demo `send-email` tasks, up to 1,000 per request.
async fn enqueue(client: &Client, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut created = 0;
    while created < n {
        let chunk = (n - created).min(taskpilot_client::api::limits::MAX_BATCH);
        let tasks = (created..created + chunk)
            .map(|i| {
                CreateTaskRequest::new("send-email")
                    .queue(QUEUE)
                    .payload(json!({"to": format!("user-{i}@example.com")}))
                    .max_attempts(5)
            })
            .collect();
        created += client.create_batch(tasks).await?.len();
    }
    info!("created {created} send-email tasks in queue {QUEUE:?}; run this example without --enqueue to work on them");
    Ok(())
}

/// Works on tasks until Ctrl-C.
async fn work(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    let worker = Worker::new(client, send_email)
        .queues([QUEUE])
        .concurrency(4)
        .lease(Duration::from_secs(30))
        .claim_wait(Duration::from_secs(5))
        .grace_period(Duration::from_secs(10));
    info!("worker {} waiting for tasks in queue {QUEUE:?}; Ctrl-C stops it", worker.id());
    let report = worker
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
            info!("Ctrl-C: finishing running tasks, then stopping");
        })
        .await?;
    info!(
        "stopped: {} succeeded, {} failed retryably, {} failed for good, {} handed back",
        report.succeeded, report.retried, report.failed_permanently, report.released
    );
    Ok(())
}

/// The handler: pretends to send an e-mail.
async fn send_email(task: TaskContext) -> Outcome {
    if task.name != "send-email" {
        info!(task.id = %task.id, "no handler for {:?}; handing it back", task.name);
        return Outcome::Release;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // About one attempt in ten: std's randomly keyed hasher is random enough for a demo.
    if RandomState::new().hash_one((task.id, task.attempt)).is_multiple_of(10) {
        info!(task.id = %task.id, attempt = task.attempt, "pretend SMTP timeout; it will be retried");
        return Outcome::Retry("smtp timeout (pretend)".to_owned());
    }
    info!(task.id = %task.id, attempt = task.attempt, "e-mail sent");
    Outcome::Succeed(Some(json!({"messageId": format!("demo-{}", task.id)})))
}
