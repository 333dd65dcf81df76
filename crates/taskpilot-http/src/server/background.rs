//! The work every server does besides answering requests: the lease reaper, the watcher of
//! scheduled runs and the PostgreSQL listener, all feeding or relying on the [`WakeHub`]; the
//! pruner, which deletes the finished tasks retention no longer keeps; the folder of the
//! maintained task counts; and the writer of the worker calls the server answered. The reaper, the pruner and the folder count their runs into the
//! server's [`Metrics`].
//!
//! Part of the server's wiring: the listener is PostgreSQL's (`taskpilot_diesel`), the others
//! go through the use cases. Each runs on the server's runtime from the moment the server
//! is first polled until it stops; [`Background::stop`] ends them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::rt::task::JoinHandle;
use actix_web::web;
use taskpilot_app::{AppError, Pruned, TaskService};
use taskpilot_diesel::{OnWake, RunnableListener};
use taskpilot_domain::{Task, TaskStatus};
use tokio::sync::watch;

use crate::metrics::{Metrics, RunOutcome};
use crate::wake::{wake_when_due, WakeHub, SCHEDULE_MARGIN};

/// Most tasks one reaper pass fails; a full batch means more may be waiting.
pub const REAP_BATCH: u32 = 100;

/// The shortest pause between two looks for the next scheduled run, so that a clock that
/// stands still (as in tests) cannot make the watcher spin.
const MIN_SCHEDULE_GAP: Duration = Duration::from_millis(10);

/// Most finished tasks of one status one pruning statement deletes: one short transaction
/// (about 0.15 s with its history on a small machine).
pub const PRUNE_BATCH: u32 = 1_000;

/// A pruning batch slower than this means the database is busy: the pruner stops the pass
/// and pauses longer.
const SLOW_PRUNE_BATCH: Duration = Duration::from_secs(2);

/// How many times the prune interval the pruner waits at most while the database is busy
/// or down.
const MAX_PRUNE_BACKOFF_FACTOR: u32 = 16;

/// Most changes of the maintained counts one compaction statement folds: one short
/// transaction.
pub const FOLD_BATCH: u32 = 10_000;

/// Most compaction statements of one turn of the folder, so that a turn is bounded work even
/// when the sums alone fill a batch.
const MAX_FOLD_BATCHES: u32 = 10;

/// How often a server writes the worker calls it answered (`TaskService::record_workers`):
/// what the workers' list shows is this much behind at most.
const RECORD_WORKERS_INTERVAL: Duration = Duration::from_secs(1);

/// What the background tasks need to know.
#[derive(Debug, Clone)]
pub struct BackgroundConfig {
    /// Pause between reaper passes.
    pub reaper_interval: Duration,
    /// How often the watcher asks for the next scheduled run.
    pub schedule_poll_interval: Duration,
    /// Pause between pruner passes.
    pub prune_interval: Duration,
    /// Pause between compactions of the maintained counts.
    pub counts_fold_interval: Duration,
    /// The database to LISTEN on for runnable tasks; no listener when `None`.
    pub notify_database_url: Option<String>,
}

/// The running background tasks of one server.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    listener: Option<RunnableListener>,
}

impl Background {
    /// Starts the reaper, the folder of counts, the schedule watcher, the pruner and, when
    /// configured, the listener on the current runtime.
    pub fn start(
        service: &TaskService,
        hub: &Arc<WakeHub>,
        metrics: &Arc<Metrics>,
        config: &BackgroundConfig,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            actix_web::rt::spawn(reap(
                service.clone(),
                hub.clone(),
                metrics.clone(),
                config.reaper_interval,
                stopped.clone(),
            )),
            actix_web::rt::spawn(fold_counts(
                service.clone(),
                metrics.clone(),
                config.counts_fold_interval,
                stopped.clone(),
            )),
            actix_web::rt::spawn(watch_schedule(
                service.clone(),
                hub.clone(),
                config.schedule_poll_interval,
                stopped.clone(),
            )),
            actix_web::rt::spawn(record_workers(service.clone(), stopped.clone())),
            actix_web::rt::spawn(prune(
                service.clone(),
                metrics.clone(),
                config.prune_interval,
                stopped,
            )),
        ];
        let listener = config.notify_database_url.clone().and_then(|url| start_listener(url, hub));
        Self { stop, tasks, listener }
    }

    /// Stops every background task and waits for the loops to end. A reaper pass under way
    /// finishes first (its writes cannot be interrupted halfway anyway).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(listener) = self.listener.take() {
            // Dropping it joins its thread, which may take a connection attempt's timeout:
            // not on the executor.
            if let Err(e) = web::block(move || drop(listener)).await {
                tracing::warn!(error = %e, "the LISTEN thread did not stop cleanly");
            }
        }
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a background task ended abnormally");
            }
        }
    }
}

/// A server future dropped before it finished (its runtime shut down, say) still ends its
/// background tasks: spawned tasks would otherwise outlive it.
impl Drop for Background {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sleeps for `pause` unless told to stop first; `false` once stopped.
async fn pause(stopped: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    // `wait_for` returns at once when the flag is already set, or Err when the sender is gone:
    // both mean stop.
    tokio::time::timeout(pause, stopped.wait_for(|stop| *stop)).await.is_err()
}

/// Runs a use case on the blocking pool, as handlers do.
async fn blocking<T: Send + 'static>(
    service: &TaskService,
    call: impl FnOnce(&TaskService) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let service = service.clone();
    web::block(move || call(&service))
        .await
        .unwrap_or_else(|e| Err(AppError::Unexpected(anyhow::anyhow!("blocking task failed: {e}"))))
}

/// The lease reaper: every `interval`, fails the attempts whose lease ran out, batch after
/// batch while batches come back full. Safe next to any number of other servers' reapers:
/// the service writes compare-and-swap.
async fn reap(
    service: TaskService,
    hub: Arc<WakeHub>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    while pause(&mut stopped, interval).await {
        loop {
            let reaped = match blocking(&service, |s| s.reap_expired(REAP_BATCH)).await {
                Ok(reaped) => {
                    metrics.reaper_run(RunOutcome::Ok);
                    reaped
                }
                Err(AppError::Unavailable(e)) => {
                    metrics.reaper_run(RunOutcome::Error);
                    // The storage logs the outage once; the reaper just tries again.
                    tracing::debug!(error = %e, "the lease reaper waits for the database");
                    break;
                }
                Err(e) => {
                    metrics.reaper_run(RunOutcome::Error);
                    tracing::warn!(error = %e, "the lease reaper failed; it tries again in {interval:?}");
                    break;
                }
            };
            let now = service.now();
            for task in &reaped {
                // The error the domain recorded names the worker that lost the lease.
                let reason = task.last_error().unwrap_or("lease expired");
                tracing::info!(
                    task.id = %task.id(),
                    task.attempt = task.attempt(),
                    task.status = %task.status(),
                    reason,
                    "reaped attempt {} of task {}: {reason}",
                    task.attempt(),
                    task.id(),
                );
            }
            // A retry without backoff is runnable at once: tell waiting claims; a retry due
            // before the schedule watcher's next look gets a timer.
            if reaped.iter().any(|t| t.is_runnable_at(now)) {
                hub.wake();
            }
            if let Some(next) = reaped.iter().filter_map(Task::next_run_at).min() {
                wake_when_due(&hub, next, now);
            }
            if reaped.len() < REAP_BATCH as usize || *stopped.borrow() {
                break;
            }
        }
    }
}

/// The pruner: every `interval`, deletes the finished tasks that the service's retention no
/// longer keeps, batch after batch while batches come back full, and logs what it removed.
///
/// Safe next to any number of other servers' pruners: each batch is one short statement that
/// skips rows another holds, so they share the work without waiting for each other. Between
/// two batches it rests as long as the last one took, so that catching up on a large backlog
/// takes at most half of one connection. A failed pass or a batch slower than
/// [`SLOW_PRUNE_BATCH`] doubles the pause, up to [`MAX_PRUNE_BACKOFF_FACTOR`] intervals, until
/// a pass goes well again; a run of failures is logged once when it starts and once when it
/// ends.
async fn prune(
    service: TaskService,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let retention = service.retention();
    if retention.cutoffs(service.now()).is_empty() {
        tracing::info!(
            "retention keeps every finished task forever; the pruner deletes only expired \
             idempotency keys"
        );
    }
    tracing::info!(
        retention.succeeded = %retention.keep(TaskStatus::Succeeded),
        retention.failed = %retention.keep(TaskStatus::Failed),
        retention.cancelled = %retention.keep(TaskStatus::Cancelled),
        "finished tasks are deleted after {} (succeeded), {} (failed), {} (cancelled); \
         the pruner looks every {interval:?}",
        retention.keep(TaskStatus::Succeeded),
        retention.keep(TaskStatus::Failed),
        retention.keep(TaskStatus::Cancelled),
    );
    let longest = interval.saturating_mul(MAX_PRUNE_BACKOFF_FACTOR);
    let mut totals = Pruned::default();
    let mut wait = interval;
    let mut failing_since: Option<Instant> = None;
    while pause(&mut stopped, wait).await {
        let mut pass = Pruned::default();
        let mut outcome = Ok(());
        loop {
            let started = Instant::now();
            let batch = match blocking(&service, |s| s.prune(PRUNE_BATCH)).await {
                Ok(batch) => batch,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            pass.add(&batch);
            let took = started.elapsed();
            if took > SLOW_PRUNE_BATCH {
                outcome = Err(AppError::Unavailable(anyhow::anyhow!(
                    "a batch took {took:?}: the database is busy"
                )));
                break;
            }
            if !batch.more_due || !pause(&mut stopped, took).await {
                break;
            }
        }
        let run = if outcome.is_ok() { RunOutcome::Ok } else { RunOutcome::Error };
        metrics.pruner_run(run, &pass);
        if pass.idempotency_keys > 0 {
            tracing::info!(
                pruned.idempotency_keys = pass.idempotency_keys,
                "deleted {} expired idempotency keys",
                pass.idempotency_keys,
            );
        }
        if pass.total() > 0 {
            totals.add(&pass);
            tracing::info!(
                pruned.succeeded = pass.succeeded,
                pruned.failed = pass.failed,
                pruned.cancelled = pass.cancelled,
                pruned.total = pass.total(),
                pruned.since_start = totals.total(),
                "deleted {} finished tasks with their history ({} succeeded, {} failed, {} \
                 cancelled); {} since start",
                pass.total(),
                pass.succeeded,
                pass.failed,
                pass.cancelled,
                totals.total(),
            );
        }
        match outcome {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!("the pruner works again after {:?}", since.elapsed());
                }
                wait = interval;
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(
                        error = %e,
                        "the pruner backs off until the database keeps up again: {e}"
                    );
                }
                wait = wait.saturating_mul(2).min(longest);
            }
        }
    }
}

/// The folder of the maintained counts: every `interval`, folds the changes the writes
/// appended since into their sums, batch after batch while batches shrink the tables (at most
/// [`MAX_FOLD_BATCHES`]), so that
/// reading the counts stays a few rows per queue and status. Safe next to any number of other
/// servers' folders: one folds at a time, the others find the work taken and wait for their
/// next turn. A run of failures is logged once when it starts and once when it ends.
async fn fold_counts(
    service: TaskService,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failing_since: Option<Instant> = None;
    while pause(&mut stopped, interval).await {
        let mut outcome = Ok(());
        for _ in 0..MAX_FOLD_BATCHES {
            match blocking(&service, |s| s.fold_counts(FOLD_BATCH)).await {
                // Another batch while the last one shrank the tables: a backlog of changes.
                Ok(shrunk) if shrunk > 0 && !*stopped.borrow() => {}
                Ok(_) => break,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => {
                metrics.fold_run(RunOutcome::Ok);
                if let Some(since) = failing_since.take() {
                    tracing::info!("the task counts fold again after {:?}", since.elapsed());
                }
            }
            Err(e) => {
                metrics.fold_run(RunOutcome::Error);
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot fold the task counts: {e}");
                }
            }
        }
    }
}

/// The writer of the worker calls this server answered: every
/// [`RECORD_WORKERS_INTERVAL`], one upsert per worker seen since the last write. A run of
/// failures is logged once when it starts and once when it ends; calls seen meanwhile wait
/// in memory for the next write.
async fn record_workers(service: TaskService, mut stopped: watch::Receiver<bool>) {
    let mut failing_since: Option<Instant> = None;
    while pause(&mut stopped, RECORD_WORKERS_INTERVAL).await {
        match blocking(&service, TaskService::record_workers).await {
            Ok(_) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        "the workers seen are recorded again after {:?}",
                        since.elapsed()
                    );
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot record the workers seen: {e}");
                }
            }
        }
    }
}

/// Wakes the hub when the next scheduled run (a retry after its backoff, a delayed task)
/// comes due. Asks the database once per `interval` and once more after each wake-up, so a
/// waiting claim costs nothing however many there are.
async fn watch_schedule(
    service: TaskService,
    hub: Arc<WakeHub>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    // Looking from the previous look, not from now, also finds a retry that another server
    // scheduled and that came due between two looks: that one wakes the hub at once.
    let mut since = service.now();
    loop {
        let now = service.now();
        let wait = match blocking(&service, move |s| s.next_scheduled_run(since)).await {
            // Both instants come from the service's clock, so the wait is right even when
            // this machine's clock is off.
            Ok(Some(at)) if at <= now => Some(Duration::ZERO),
            Ok(Some(at)) => (at - now).to_std().ok().filter(|wait| *wait <= interval),
            Ok(None) => None,
            Err(AppError::Unavailable(e)) => {
                tracing::debug!(error = %e, "cannot read the next scheduled run");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next scheduled run");
                None
            }
        };
        since = now;
        match wait {
            Some(wait) if wait.is_zero() => hub.wake(),
            Some(wait) => {
                if !pause(&mut stopped, (wait + SCHEDULE_MARGIN).max(MIN_SCHEDULE_GAP)).await {
                    return;
                }
                hub.wake();
            }
            None => {
                if !pause(&mut stopped, interval).await {
                    return;
                }
            }
        }
    }
}

/// The PostgreSQL listener: a dedicated connection that LISTENs for runnable tasks and wakes
/// the hub. A listener that cannot start is logged and left out: waiting claims then rely on
/// the schedule watcher and their deadline.
fn start_listener(url: String, hub: &Arc<WakeHub>) -> Option<RunnableListener> {
    // A weak reference: the listener must not keep the hub of a stopped server alive.
    let hub = Arc::downgrade(hub);
    let on_wake: OnWake = Arc::new(move || {
        if let Some(hub) = hub.upgrade() {
            hub.wake();
        }
    });
    match RunnableListener::start(url, on_wake) {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot LISTEN for runnable tasks: {e:#}");
            None
        }
    }
}
