//! [`Worker`]: claims tasks with long-poll, runs them through a [`Handler`], keeps their leases
//! with heartbeats, reports their outcomes in small batches and stops without losing any.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use taskpilot_api::limits::{MAX_BATCH, MAX_CLAIM_BATCH};
use taskpilot_api::{
    ClaimTasksRequest, CompletionItem, CompletionOutcome, FailTaskRequest, HeartbeatRequest,
    ProblemCode, ReleaseTaskRequest, SucceedTaskRequest, TaskResponse,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, error, info, warn, Instrument as _};
use uuid::Uuid;

use crate::{Client, ClientError};

/// Most tasks one claim may ask for (the server's limit).
const MAX_CLAIM: usize = MAX_CLAIM_BATCH as usize;

/// Slots of a worker built with [`Worker::new`]: as many as one claim can fill, so that a busy
/// worker claims in batches of up to 100 rather than one task per freed slot. A slot is a
/// tokio task, cheap while it waits on I/O; handlers that burn CPU want
/// [`Worker::concurrency`] near the number of cores instead.
pub const DEFAULT_CONCURRENCY: usize = MAX_CLAIM;

/// How long a busy worker built with [`Worker::new`] waits for more free slots before it
/// claims (see [`Worker::claim_linger`]): a few milliseconds, so that a worker whose tasks
/// finish one by one still claims in batches.
pub const DEFAULT_CLAIM_LINGER: Duration = Duration::from_millis(5);

/// How a handler's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task is done; the value, if any, is stored as its `result`.
    Succeed(Option<Value>),
    /// The attempt failed and a retry may help: the task is retried with backoff while
    /// attempts remain.
    Retry(String),
    /// The task cannot succeed: it fails for good at once, whatever attempts remain (retry
    /// state `NON_RETRYABLE`).
    FailPermanently(String),
    /// This worker will not run the task (it has no handler for its name, say): hand the
    /// attempt back, runnable again at once for another worker, with no failure counted.
    Release,
}

/// Why a running task was stopped by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The task was cancelled through the API (its heartbeat answered `TASK_CANCELLED`).
    Cancelled,
    /// The attempt lost its lease: it was reaped or superseded (`LEASE_EXPIRED`,
    /// `ATTEMPT_SUPERSEDED`), or heartbeats failed for longer than the lease.
    LeaseLost,
    /// The worker is stopping and the grace period is over; the task is released: handed
    /// back to the server, runnable again at once, with no failure counted.
    Shutdown,
}

/// The signal a running task's handler gets when the worker stops it.
///
/// When the worker stops a task it first sets this signal, then aborts the handler's future
/// at its next `.await`. Handlers that hand work to threads (`spawn_blocking`, ...) can
/// watch it there to stop early; purely async handlers need not look at it.
#[derive(Debug, Clone)]
pub struct Cancellation(watch::Receiver<Option<CancelReason>>);

impl Cancellation {
    /// Why the task was stopped, once it was.
    pub fn reason(&self) -> Option<CancelReason> {
        *self.0.borrow()
    }

    /// Whether the task was stopped.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves when the task is stopped, with the reason. Never resolves for a task that
    /// finishes normally: use it in a `select!` next to the work it should interrupt.
    pub async fn cancelled(&self) -> CancelReason {
        let mut signal = self.0.clone();
        let reason = signal.wait_for(Option::is_some).await.map(|reason| *reason).ok().flatten();
        match reason {
            Some(reason) => reason,
            // The worker let go of the task without stopping it: the handler finished.
            None => std::future::pending().await,
        }
    }
}

/// What a handler gets: the task's attempt, and the signal of its cancellation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskContext {
    /// The task's id.
    pub id: Uuid,
    /// Its queue.
    pub queue: String,
    /// The kind of work.
    pub name: String,
    /// The task's input.
    pub payload: Value,
    /// This attempt's number (1 for the first run).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Set when the worker stops this task.
    pub cancellation: Cancellation,
}

impl TaskContext {
    /// Whether this is the last attempt the task is allowed: a [`Outcome::Retry`] now fails it
    /// for good.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// Runs tasks: any `Fn(TaskContext) -> impl Future<Output = Outcome>` closure (or async fn)
/// that is `Send + Sync`, or a type of your own.
///
/// The future must be `Send + 'static`, since each task runs in a tokio task of its own: a
/// handler with state clones what it needs (an `Arc`, a pool handle) into the future rather
/// than borrowing from `&self`.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of `task`.
    fn handle(&self, task: TaskContext) -> impl Future<Output = Outcome> + Send + 'static;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle(&self, task: TaskContext) -> impl Future<Output = Outcome> + Send + 'static {
        self(task)
    }
}

/// What a worker did, counted when the server accepted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Tasks claimed.
    pub claimed: u64,
    /// Successes accepted.
    pub succeeded: u64,
    /// Retryable failures accepted (handlers' [`Outcome::Retry`] and panics).
    pub retried: u64,
    /// Permanent failures accepted ([`Outcome::FailPermanently`]).
    pub failed_permanently: u64,
    /// Tasks released (handed back unfinished, runnable again at once, no failure counted)
    /// because the worker stopped before they finished.
    pub released: u64,
    /// Tasks stopped because they were cancelled through the API.
    pub cancelled: u64,
    /// Tasks stopped because their attempt lost its lease.
    pub lease_lost: u64,
    /// Outcomes the server refused (the attempt had lost its lease, ...).
    pub refused: u64,
    /// Outcomes that could not be delivered; the server's reaper retries these tasks once
    /// their leases run out.
    pub unreported: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claimed: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed_permanently: AtomicU64,
    released: AtomicU64,
    cancelled: AtomicU64,
    lease_lost: AtomicU64,
    refused: AtomicU64,
    unreported: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn report(&self) -> WorkerReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerReport {
            claimed: get(&self.claimed),
            succeeded: get(&self.succeeded),
            retried: get(&self.retried),
            failed_permanently: get(&self.failed_permanently),
            released: get(&self.released),
            cancelled: get(&self.cancelled),
            lease_lost: get(&self.lease_lost),
            refused: get(&self.refused),
            unreported: get(&self.unreported),
        }
    }
}

/// The worker's settings.
#[derive(Debug, Clone)]
struct Settings {
    worker_id: String,
    queues: Option<Vec<String>>,
    concurrency: usize,
    lease: Duration,
    claim_wait: Duration,
    claim_linger: Duration,
    grace_period: Duration,
    batch_size: usize,
    batch_linger: Duration,
}

/// A worker runtime: claims tasks, runs up to `concurrency` of them at once through its
/// [`Handler`], and reports their outcomes.
///
/// - **Claiming**: one long-polling claim at a time for as many tasks as there are free slots
///   (at most 100), waiting up to [`Worker::claim_wait`] on the server when none is runnable.
///   When fewer than half of the slots are free, a claim first waits up to
///   [`Worker::claim_linger`] for more to free up.
/// - **Running**: each task runs in its own tokio task. While it runs, the worker heartbeats
///   it every third of [`Worker::lease`]. If the heartbeat answers `TASK_CANCELLED` the task
///   was cancelled through the API; if it answers `LEASE_EXPIRED` or `ATTEMPT_SUPERSEDED` the
///   attempt is lost: either way the handler is aborted and nothing is reported.
/// - **Reporting**: outcomes go out through `POST /api/tasks/complete` in batches of up to
///   [`Worker::completion_batch`] items, after at most a few milliseconds of waiting for more;
///   they carry the lease token, so they are repeated on transient failures.
/// - **Stopping**: once the future given to [`Worker::run_until`] resolves, the worker stops
///   claiming (a claim already waiting on the server is let finish, so that no task is left
///   claimed and forgotten: what it brings is released at once), lets running tasks finish
///   within [`Worker::grace_period`], then aborts the rest and releases them
///   (`PUT /api/tasks/{id}/release`, sent with the other outcomes): each is runnable again at
///   once for another worker, with no failure counted and no backoff, so that a stop never
///   uses up a task's attempts, not even its last one. Then it flushes every outcome and
///   returns. A claimed task is always either reported or, if the server cannot be reached,
///   left to the reaper, which retries it once its lease runs out.
///
/// A handler's future is aborted at an `.await`; a handler that blocks a thread for long
/// should run that part in `spawn_blocking` and watch [`TaskContext::cancellation`].
///
/// ```no_run
/// use std::time::Duration;
/// use taskpilot_client::{Client, Outcome, TaskContext, Worker};
///
/// # async fn demo() -> Result<(), taskpilot_client::ClientError> {
/// let client = Client::try_new("http://127.0.0.1:8080")?;
/// let report = Worker::new(client, |task: TaskContext| async move {
///     match task.name.as_str() {
///         "send-email" => Outcome::Succeed(Some(serde_json::json!({"sent": true}))),
///         "flaky" => Outcome::Retry("upstream timed out".to_owned()),
///         other => Outcome::FailPermanently(format!("no handler for {other}")),
///     }
/// })
/// .queues(["default", "emails"])
/// .concurrency(16)
/// .lease(Duration::from_secs(60))
/// .run_until(async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await?;
/// println!("succeeded {}, released {}", report.succeeded, report.released);
/// # Ok(())
/// # }
/// ```
pub struct Worker<H> {
    client: Client,
    handler: H,
    settings: Settings,
}

impl<H: Handler> Worker<H> {
    /// A worker over `client` running tasks through `handler`, with 100 slots, a 60 s lease,
    /// 10 s claim waits, a 30 s grace period and a generated worker id.
    pub fn new(client: Client, handler: H) -> Self {
        Self {
            client,
            handler,
            settings: Settings {
                worker_id: default_worker_id(),
                queues: None,
                concurrency: DEFAULT_CONCURRENCY,
                lease: Duration::from_secs(60),
                claim_wait: Duration::from_secs(10),
                claim_linger: DEFAULT_CLAIM_LINGER,
                grace_period: Duration::from_secs(30),
                batch_size: 100,
                batch_linger: Duration::from_millis(5),
            },
        }
    }

    /// The worker id sent with every call (1 to 128 characters); `<host>-<pid>-<random>` by
    /// default.
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.settings.worker_id = id.into();
        self
    }

    /// The id this worker reports as.
    pub fn id(&self) -> &str {
        &self.settings.worker_id
    }

    /// Only claim tasks from these queues; every queue by default.
    #[must_use]
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.settings.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Run up to `n` tasks at once (1 to 10,000).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n.clamp(1, 10_000);
        self
    }

    /// Each task's lease, 5 s to 24 h (whole seconds); heartbeats go out every third of it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease.clamp(Duration::from_secs(5), Duration::from_secs(86_400));
        self
    }

    /// How long a claim waits on the server when nothing is runnable, up to 30 s. Stopping
    /// may take this long, since a waiting claim is let finish.
    #[must_use]
    pub fn claim_wait(mut self, wait: Duration) -> Self {
        self.settings.claim_wait = wait.min(Duration::from_secs(30));
        self
    }

    /// When fewer than half of the slots are free, wait up to this long for more to free up
    /// before claiming, so that claims take bigger batches ([`DEFAULT_CLAIM_LINGER`] by
    /// default). An idle or half-idle worker claims at once; `Duration::ZERO` always claims at
    /// once (one claim per freed slot when tasks finish one by one).
    #[must_use]
    pub fn claim_linger(mut self, linger: Duration) -> Self {
        self.settings.claim_linger = linger;
        self
    }

    /// How long running tasks may take to finish once the worker is told to stop.
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.settings.grace_period = grace;
        self
    }

    /// Report outcomes in batches of up to `max` (1 to 1,000), waiting at most `linger` for a
    /// batch to fill; 100 and 5 ms by default.
    #[must_use]
    pub fn completion_batch(mut self, max: usize, linger: Duration) -> Self {
        self.settings.batch_size = max.clamp(1, MAX_BATCH);
        self.settings.batch_linger = linger;
        self
    }

    /// Runs until `shutdown` resolves, then stops as described on [`Worker`] and returns what
    /// it did. Await it to the end: dropping it early leaves its tasks to the reaper.
    ///
    /// # Errors
    /// When the server refuses the worker's claims as invalid (a bad worker id or queue name,
    /// 400): the worker then stops as if told to, and returns the refusal.
    pub async fn run_until<F>(self, shutdown: F) -> Result<WorkerReport, ClientError>
    where
        F: Future<Output = ()>,
    {
        let Self { client, handler, settings } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (grace_tx, grace_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let flush = Flush {
            client: client.clone(),
            counters: counters.clone(),
            batch_size: settings.batch_size,
            linger: settings.batch_linger,
            patience: settings.lease,
            stopping: stop_rx.clone(),
            grace: settings.grace_period,
        };
        let shared = Arc::new(Shared {
            client,
            handler,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            counters: counters.clone(),
            grace: grace_rx,
            done: done_tx,
        });
        let span = tracing::info_span!("worker", worker.id = %shared.settings.worker_id);
        info!(
            parent: &span,
            concurrency = shared.settings.concurrency,
            "worker {} started",
            shared.settings.worker_id
        );

        let flusher = tokio::spawn(flush.run(done_rx).instrument(span.clone()));
        let mut claimer =
            tokio::spawn(claim_loop(shared.clone(), stop_rx).instrument(span.clone()));

        let refused = tokio::select! {
            () = shutdown => None,
            ended = &mut claimer => Some(ended),
        };
        info!(parent: &span, "worker stopping: no more claims, running tasks get {:?}", shared.settings.grace_period);
        stop_tx.send_replace(true);
        let grace = shared.settings.grace_period;
        let grace_timer = tokio::spawn(async move {
            sleep(grace).await;
            grace_tx.send_replace(true);
        });
        let claimed = match refused {
            Some(ended) => ended,
            None => claimer.await,
        };
        let outcome = match claimed {
            Ok(result) => result,
            Err(panic) => {
                error!(parent: &span, "the claim loop panicked: {panic}");
                Ok(())
            }
        };
        // Every slot back: every task has finished, been stopped, or been released.
        let all = u32::try_from(shared.settings.concurrency).unwrap_or(u32::MAX);
        if let Ok(permits) = shared.slots.acquire_many(all).await {
            permits.forget();
        }
        grace_timer.abort();
        // The flusher ends once every sender of outcomes is gone: the last one goes with the
        // last reference to `shared`.
        drop(shared);
        if let Err(panic) = flusher.await {
            error!(parent: &span, "the completion flusher panicked: {panic}");
        }
        let report = counters.report();
        info!(parent: &span, ?report, "worker stopped");
        outcome.map(|()| report)
    }
}

/// What the claim loop and the running tasks share.
struct Shared<H> {
    client: Client,
    handler: H,
    settings: Settings,
    counters: Arc<Counters>,
    /// One permit per free slot.
    slots: Arc<Semaphore>,
    /// Turns true when the grace period is over.
    grace: watch::Receiver<bool>,
    /// Outcomes on their way to the flusher.
    done: mpsc::UnboundedSender<Done>,
}

/// An outcome to report.
#[derive(Debug)]
struct Done {
    item: CompletionItem,
    kind: DoneKind,
}

/// What an outcome counts as once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DoneKind {
    Succeeded,
    Retried,
    FailedPermanently,
    Released,
}

impl<H> Shared<H> {
    fn lease_seconds(&self) -> i64 {
        i64::try_from(self.settings.lease.as_secs()).unwrap_or(86_400)
    }

    fn report(&self, task: &TaskResponse, token: &str, outcome: Outcome, kind: DoneKind) {
        let worker = self.settings.worker_id.clone();
        let item = match outcome {
            Outcome::Succeed(result) => CompletionItem::succeeded(task.id, token, result),
            Outcome::Retry(error) => CompletionItem::failed(task.id, token, error, true),
            Outcome::FailPermanently(error) => CompletionItem::failed(task.id, token, error, false),
            Outcome::Release => CompletionItem::released(task.id, token),
        };
        // The flusher outlives every sender, so this cannot fail; if it ever did, the task's
        // lease would run out and the reaper would retry it.
        let _ = self.done.send(Done { item: item.worker(worker), kind });
    }

    /// Releases a claimed task that will not run here: it is runnable again at once, for
    /// another worker, with no failure counted.
    fn release(&self, task: &TaskResponse) {
        match task.lease_token.as_deref() {
            Some(token) => {
                let item = CompletionItem::released(task.id, token)
                    .worker(self.settings.worker_id.clone());
                // As in `report`: the flusher outlives every sender.
                let _ = self.done.send(Done { item, kind: DoneKind::Released });
            }
            None => {
                warn!(task.id = %task.id, "claimed task {} came without a lease token", task.id)
            }
        }
    }
}

/// Claims while there are free slots, until told to stop or refused as invalid.
async fn claim_loop<H: Handler>(
    shared: Arc<Shared<H>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let settings = &shared.settings;
    let wait_ms = i64::try_from(settings.claim_wait.as_millis()).unwrap_or(30_000);
    let mut failures: u32 = 0;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            permit = shared.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()), // the semaphore is never closed
            },
        };
        let mut permits = vec![first];
        let wanted = settings.concurrency.min(MAX_CLAIM);
        take_free(&shared.slots, &mut permits, wanted);
        // A busy worker waits a moment until a claim can fill at least half of its slots, so
        // that tasks finishing one by one do not each cost a claim of their own.
        let enough = wanted.div_ceil(2);
        if permits.len() < enough && !settings.claim_linger.is_zero() {
            let linger_until = Instant::now() + settings.claim_linger;
            while permits.len() < enough {
                tokio::select! {
                    permit = shared.slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    },
                    () = sleep_until(linger_until) => break,
                }
            }
            take_free(&shared.slots, &mut permits, wanted);
        }
        let request = ClaimTasksRequest {
            worker_id: settings.worker_id.clone(),
            limit: Some(i64::try_from(permits.len()).unwrap_or(1)),
            queues: settings.queues.clone(),
            lease_seconds: Some(shared.lease_seconds()),
            wait_ms: Some(wait_ms),
        };
        // Not raced against `stop`: a claim dropped while it waits on the server may still
        // take tasks there, which nobody would then report until their leases ran out. Tried
        // once: failures are repeated below, where stopping can cut the wait short.
        match shared.client.claim_once(&request).await {
            Ok(tasks) => {
                failures = 0;
                let stopping = *stop.borrow();
                Counters::add(&shared.counters.claimed, tasks.len() as u64);
                for task in tasks {
                    match permits.pop() {
                        Some(permit) if !stopping => {
                            let supervised = supervise(shared.clone(), task, permit);
                            tokio::spawn(supervised);
                        }
                        _ => shared.release(&task),
                    }
                }
            }
            Err(e) if e.is_invalid() => {
                error!(error = %e, "the server refuses this worker's claims; stopping");
                return Err(e);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = claim_backoff(failures);
                warn!(error = %e, "claim failed ({failures} in a row); trying again in {delay:?}");
                drop(permits);
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                    () = sleep(delay) => {}
                }
            }
        }
    }
}

/// Adds the slots free right now to `permits`, up to `wanted` in all.
fn take_free(slots: &Arc<Semaphore>, permits: &mut Vec<OwnedSemaphorePermit>, wanted: usize) {
    while permits.len() < wanted {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
}

/// The wait after `failures` failed claims in a row: 100 ms doubling up to 5 s.
fn claim_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_millis(100 << exponent).min(Duration::from_secs(5))
}

/// Runs one claimed task to its end: its outcome, its cancellation, lost lease or the end of
/// the grace period. Holds the task's slot until then.
async fn supervise<H: Handler>(
    shared: Arc<Shared<H>>,
    task: TaskResponse,
    permit: OwnedSemaphorePermit,
) {
    let span = tracing::info_span!(
        "task",
        task.id = %task.id,
        task.name = %task.name,
        task.attempt = task.attempt,
        worker.id = %shared.settings.worker_id,
    );
    async move {
        let Some(token) = task.lease_token.clone() else {
            warn!("claimed task {} came without a lease token; leaving it to the reaper", task.id);
            return;
        };
        let (cancel_tx, cancel_rx) = watch::channel(None);
        let context = TaskContext {
            id: task.id,
            queue: task.queue.clone(),
            name: task.name.clone(),
            payload: task.payload.clone(),
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            cancellation: Cancellation(cancel_rx),
        };
        debug!("task {} started (attempt {})", task.id, task.attempt);
        let mut running = tokio::spawn(shared.handler.handle(context).in_current_span());
        let heartbeats = keep_lease(&shared, &task, &token);
        tokio::pin!(heartbeats);
        let mut grace = shared.grace.clone();
        tokio::select! {
            biased;
            joined = &mut running => {
                let (outcome, kind) = match joined {
                    Ok(outcome) => {
                        let kind = match &outcome {
                            Outcome::Succeed(_) => DoneKind::Succeeded,
                            Outcome::Retry(_) => DoneKind::Retried,
                            Outcome::FailPermanently(_) => DoneKind::FailedPermanently,
                            Outcome::Release => DoneKind::Released,
                        };
                        (outcome, kind)
                    }
                    Err(e) => {
                        warn!("handler of task {} panicked: {e}", task.id);
                        (Outcome::Retry("handler panicked".to_owned()), DoneKind::Retried)
                    }
                };
                debug!(outcome = ?kind, "task {} finished", task.id);
                shared.report(&task, &token, outcome, kind);
            }
            reason = &mut heartbeats => {
                cancel_tx.send_replace(Some(reason));
                running.abort();
                let counter = match reason {
                    CancelReason::Cancelled => &shared.counters.cancelled,
                    _ => &shared.counters.lease_lost,
                };
                Counters::add(counter, 1);
                warn!(reason = ?reason, "task {} stopped: its attempt is over", task.id);
            }
            _ = grace.wait_for(|over| *over) => {
                cancel_tx.send_replace(Some(CancelReason::Shutdown));
                running.abort();
                info!("task {} did not finish within the grace period; releasing it", task.id);
                shared.release(&task);
            }
        }
        drop(permit);
    }
    .instrument(span)
    .await;
}

/// Heartbeats the attempt every third of its lease; resolves only when the attempt is over
/// for this worker.
async fn keep_lease<H>(shared: &Shared<H>, task: &TaskResponse, token: &str) -> CancelReason {
    let lease = shared.settings.lease;
    let every = lease / 3;
    let request = HeartbeatRequest {
        worker_id: shared.settings.worker_id.clone(),
        lease_token: token.to_owned(),
        lease_seconds: Some(shared.lease_seconds()),
    };
    // The lease as this worker knows it: from the claim, then from each heartbeat sent.
    let mut held_until = Instant::now() + lease;
    let mut next = Instant::now() + every;
    loop {
        sleep_until(next).await;
        let sent = Instant::now();
        match shared.client.heartbeat(task.id, &request).await {
            Ok(_) => {
                held_until = sent + lease;
                next = sent + every;
            }
            Err(e) if e.is_cancelled() => return CancelReason::Cancelled,
            Err(e) if e.is_attempt_over() || matches!(e.status(), Some(404 | 409)) => {
                debug!(error = %e, "heartbeat refused");
                return CancelReason::LeaseLost;
            }
            Err(e) => {
                if Instant::now() >= held_until {
                    warn!(error = %e, "heartbeats failed for the whole lease; the attempt is lost");
                    return CancelReason::LeaseLost;
                }
                warn!(error = %e, "heartbeat failed; trying again before the lease runs out");
                next = Instant::now() + (every / 3).max(Duration::from_millis(200));
            }
        }
    }
}

/// Sends outcomes to the server in batches.
struct Flush {
    client: Client,
    counters: Arc<Counters>,
    batch_size: usize,
    linger: Duration,
    /// How long to keep trying to deliver a batch before leaving it to the reaper: past the
    /// lease, the server refuses the outcomes anyway.
    patience: Duration,
    /// Once the worker is stopping, a batch is given up after the grace period at most, so
    /// that an unreachable server cannot hold the stop up for a whole lease.
    stopping: watch::Receiver<bool>,
    grace: Duration,
}

impl Flush {
    /// Until every sender is gone: a batch is up to `batch_size` outcomes, or what arrived
    /// within `linger` of the first.
    async fn run(self, mut done: mpsc::UnboundedReceiver<Done>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        while let Some(first) = done.recv().await {
            batch.push(first);
            let deadline = Instant::now() + self.linger;
            while batch.len() < self.batch_size {
                tokio::select! {
                    next = done.recv() => match next {
                        Some(next) => batch.push(next),
                        None => break,
                    },
                    () = sleep_until(deadline) => break,
                }
            }
            self.deliver(std::mem::take(&mut batch)).await;
        }
    }

    async fn deliver(&self, batch: Vec<Done>) {
        let first_try = Instant::now();
        let mut failures: u32 = 0;
        loop {
            let items: Vec<CompletionItem> = batch.iter().map(|d| d.item.clone()).collect();
            match self.client.complete_batch(items).await {
                Ok(results) => {
                    for (done, result) in batch.iter().zip(results) {
                        match result.error {
                            None if result.status < 300 => self.accepted(done),
                            error => {
                                let code = error.as_ref().map_or("", |p| p.code.as_str());
                                self.refused(done, code);
                            }
                        }
                    }
                    return;
                }
                // A server without the batch endpoint: one call per outcome.
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ProblemCode::RouteNotFound | ProblemCode::MethodNotAllowed)
                    ) =>
                {
                    for done in &batch {
                        self.deliver_one(done).await;
                    }
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = claim_backoff(failures);
                    let patience = if *self.stopping.borrow() {
                        self.patience.min(self.grace)
                    } else {
                        self.patience
                    };
                    if !e.is_transient() || first_try.elapsed() + delay > patience {
                        error!(
                            error = %e,
                            "cannot report {} outcomes; their tasks will be retried when their \
                             leases run out",
                            batch.len()
                        );
                        Counters::add(&self.counters.unreported, batch.len() as u64);
                        return;
                    }
                    warn!(error = %e, "reporting {} outcomes failed; trying again in {delay:?}", batch.len());
                    sleep(delay).await;
                }
            }
        }
    }

    async fn deliver_one(&self, done: &Done) {
        let item = &done.item;
        let answer = match item.outcome {
            CompletionOutcome::Succeeded => {
                let request = SucceedTaskRequest {
                    worker_id: item.worker_id.clone(),
                    lease_token: Some(item.lease_token.clone()),
                    result: item.result.clone(),
                };
                self.client.succeed(item.id, &request).await
            }
            CompletionOutcome::Failed => {
                let request = FailTaskRequest {
                    error_message: item.error_message.clone().unwrap_or_default(),
                    worker_id: item.worker_id.clone(),
                    lease_token: Some(item.lease_token.clone()),
                    retryable: item.retryable,
                };
                self.client.fail(item.id, &request).await
            }
            CompletionOutcome::Released => {
                let request = ReleaseTaskRequest {
                    worker_id: item.worker_id.clone(),
                    lease_token: item.lease_token.clone(),
                };
                self.client.release(item.id, &request).await
            }
        };
        match answer {
            Ok(_) => self.accepted(done),
            Err(e) => match e.code() {
                Some(code) => self.refused(done, code.as_str()),
                None => {
                    error!(task.id = %item.id, error = %e, "cannot report the outcome of task {}", item.id);
                    Counters::add(&self.counters.unreported, 1);
                }
            },
        }
    }

    fn accepted(&self, done: &Done) {
        let counter = match done.kind {
            DoneKind::Succeeded => &self.counters.succeeded,
            DoneKind::Retried => &self.counters.retried,
            DoneKind::FailedPermanently => &self.counters.failed_permanently,
            DoneKind::Released => &self.counters.released,
        };
        Counters::add(counter, 1);
    }

    fn refused(&self, done: &Done, code: &str) {
        let id = done.item.id;
        warn!(task.id = %id, code, "the outcome of task {id} was refused ({code})");
        Counters::add(&self.counters.refused, 1);
    }
}

/// `<host>-<pid>-<random>`: unique enough to tell workers apart in a task's history.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host.chars().take(64).collect();
    let random = RandomState::new().hash_one(std::process::id()) & 0xff_ffff;
    format!("{host}-{}-{random:06x}", std::process::id())
}
