//! TaskPilot's Rust client: a typed async [`Client`] for the whole REST API and a [`Worker`]
//! runtime that claims, runs, heartbeats and reports tasks.
//!
//! The wire types are `taskpilot-api`'s, shared with the server (re-exported here, and whole
//! as [`api`]); errors are [`ClientError`], whose [`ClientError::Api`] carries the server's
//! stable [`ProblemCode`]. Transient failures are repeated with capped backoff where that is
//! safe ([`RetryPolicy`]).
//!
//! This crate talks HTTP only: it must not depend on the server's crates (domain, use
//! cases, adapters). It runs on tokio; HTTPS needs the `rustls` feature.
//!
//! ```no_run
//! use taskpilot_client::{Client, Outcome, TaskContext, Worker};
//!
//! # async fn demo() -> Result<(), taskpilot_client::ClientError> {
//! let client = Client::try_new("http://127.0.0.1:8080")?;
//! let worker = Worker::new(client, |task: TaskContext| async move {
//!     match task.name.as_str() {
//!         "send-email" => Outcome::Succeed(None),
//!         other => Outcome::FailPermanently(format!("no handler for {other}")),
//!     }
//! });
//! let report = worker.concurrency(8).run_until(async {
//!     let _ = tokio::signal::ctrl_c().await;
//! }).await;
//! println!("{report:?}");
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod retry;
mod worker;

pub use client::{Client, ClientBuilder, Versioned, TOKEN_ENV};
pub use error::ClientError;
pub use retry::RetryPolicy;
/// The REST API's wire types, shared with the server.
pub use taskpilot_api as api;
pub use taskpilot_api::{
    ClaimTasksRequest, CompletionItem, CompletionOutcome, CompletionResult, CreateTaskRequest,
    FailTaskRequest, HeartbeatRequest, ListTasksQuery, ProblemCode, ReleaseTaskRequest,
    StartTaskRequest, SucceedTaskRequest, TaskResponse, TaskStatus,
};
pub use worker::{
    CancelReason, Cancellation, Handler, Outcome, TaskContext, Worker, WorkerReport,
    DEFAULT_CLAIM_LINGER, DEFAULT_CONCURRENCY,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + Clone>() {}
    fn sendable<T: Send>(_: &T) {}

    #[test]
    fn the_client_and_the_worker_run_on_multi_threaded_runtimes() {
        shareable::<Client>();
        let client = Client::builder("http://127.0.0.1:1").build();
        let Ok(client) = client else { panic!("a plain http URL is a valid base") };
        let worker = Worker::new(client, |_: TaskContext| async { Outcome::Succeed(None) });

        sendable(&worker.run_until(std::future::ready(())));
    }
}
