//! The scenarios over HTTP, and the ceiling's driver. Each returns an [`Outcome`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::api::{Api, NewTask};
use crate::db::BenchDb;
use crate::stats::{merge_into, summarize, Latencies, Samples, Summary};
use crate::window::{watch, Progress, Window};

/// Warm-up and measured time of every scenario.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// The figures of one scenario.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Stable key, e.g. `drain/claim-10`.
    pub key: String,
    /// What ran, for the table.
    pub label: String,
    /// Tasks or jobs per second, for throughput scenarios.
    pub rate_per_sec: Option<f64>,
    /// Length of the measured window.
    pub window_secs: Option<f64>,
    /// Jobs (or requests) within the window.
    pub count: Option<u64>,
    /// Whether the backlog ran out before the time was up (the window is then shorter).
    pub drained: bool,
    /// Percentiles of each kind of round trip.
    pub latencies: BTreeMap<&'static str, Summary>,
    /// Who used the cores during the measured window.
    pub cpu: Option<crate::cpu::CpuUse>,
    /// The server's peak resident memory so far (VmHWM) when the scenario ended, in MiB.
    pub server_peak_mib: Option<f64>,
    /// Anything a reader of the figure must know.
    pub notes: Vec<String>,
    /// For the sustained drain: its slowest minute after the first, as a share of the first.
    pub sustained_share: Option<f64>,
}

impl Outcome {
    fn throughput(key: &str, label: String, window: Window, latencies: Latencies) -> Self {
        Self {
            key: key.to_owned(),
            label,
            rate_per_sec: Some(window.rate()),
            window_secs: Some(window.elapsed.as_secs_f64()),
            count: Some(window.jobs),
            drained: window.drained,
            latencies: summarize(latencies),
            cpu: window.cpu,
            server_peak_mib: None,
            notes: Vec::new(),
            sustained_share: None,
        }
    }
}

/// Runs `workers` closed-loop workers made by `make` until the watcher stops them; their
/// latencies merged.
async fn closed_loop<F, Fut>(
    workers: usize,
    timing: Timing,
    backlog: Option<u64>,
    make: F,
) -> anyhow::Result<(Window, Latencies)>
where
    F: Fn(usize, Arc<Progress>) -> Fut,
    Fut: Future<Output = anyhow::Result<Latencies>> + Send + 'static,
{
    let progress = Arc::new(Progress::default());
    let mut set = JoinSet::new();
    for i in 0..workers {
        let progress = Arc::clone(&progress);
        let work = make(i, Arc::clone(&progress));
        set.spawn(async move {
            let result = work.await;
            if result.is_err() {
                progress.stop();
            }
            result
        });
    }
    let watcher = Arc::clone(&progress);
    let window = tokio::task::spawn_blocking(move || {
        watch(&watcher, timing.warmup, timing.duration, backlog)
    });
    let mut latencies = Latencies::new();
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(l) => merge_into(&mut latencies, l),
            Err(e) => {
                progress.stop();
                first_error.get_or_insert(e);
            }
        }
    }
    let window = window.await.context("the watcher panicked")?;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok((window?, latencies))
}

fn payload_task(payload: serde_json::Value) -> NewTask {
    crate::api::new_task("bench", payload)
}

/// Scenario 1: single creates from `clients` concurrent clients.
pub async fn enqueue_single(api: &Api, clients: usize, timing: Timing) -> anyhow::Result<Outcome> {
    let (window, latencies) = closed_loop(clients, timing, None, |_, progress| {
        let api = api.clone();
        async move {
            let mut latencies = Latencies::new();
            let task = payload_task(json!({"n": 1}));
            while !progress.stopped() {
                let sent = Instant::now();
                api.create(&task).await?;
                progress.add(1);
                if progress.measuring() {
                    latencies.entry("create").or_default().record(sent.elapsed());
                }
            }
            Ok(latencies)
        }
    })
    .await?;
    Ok(Outcome::throughput(
        &format!("enqueue/single-{clients}"),
        format!("enqueue: single creates, {clients} clients (tasks/s)"),
        window,
        latencies,
    ))
}

/// Scenario 1: batch creates of `size` from `clients` concurrent clients.
pub async fn enqueue_batch(
    api: &Api,
    clients: usize,
    size: usize,
    timing: Timing,
) -> anyhow::Result<Outcome> {
    let (window, latencies) = closed_loop(clients, timing, None, |_, progress| {
        let api = api.clone();
        async move {
            let mut latencies = Latencies::new();
            let tasks: Vec<NewTask> = (0..size).map(|i| payload_task(json!({"n": i}))).collect();
            while !progress.stopped() {
                let sent = Instant::now();
                let created = api.create_batch(&tasks).await?;
                progress.add(created as u64);
                if progress.measuring() {
                    latencies.entry("batch create").or_default().record(sent.elapsed());
                }
            }
            Ok(latencies)
        }
    })
    .await?;
    Ok(Outcome::throughput(
        &format!("enqueue/batch-{size}"),
        format!("enqueue: batch creates of {size}, {clients} clients (tasks/s)"),
        window,
        latencies,
    ))
}

/// Scenario 2 (and 5): `workers` workers drain the backlog, each claiming `batch` and
/// completing them: one `succeed` per task for a batch of 1, one batch completion otherwise.
pub async fn drain(
    api: &Api,
    workers: usize,
    batch: u32,
    backlog: u64,
    timing: Timing,
    key: &str,
    label: String,
) -> anyhow::Result<Outcome> {
    let (window, latencies) = closed_loop(workers, timing, Some(backlog), |i, progress| {
        let api = api.clone();
        async move {
            let worker_id = format!("bench-worker-{i}");
            let mut latencies = Latencies::new();
            while !progress.stopped() {
                let sent = Instant::now();
                let claimed = api.claim(&worker_id, batch, 0).await?;
                let claimed_at = Instant::now();
                if claimed.is_empty() {
                    progress.drained();
                    break;
                }
                if batch == 1 {
                    for task in &claimed {
                        api.succeed(&worker_id, task).await?;
                    }
                } else {
                    api.complete(&claimed).await?;
                }
                let completed_at = Instant::now();
                progress.add(claimed.len() as u64);
                if progress.measuring() {
                    latencies.entry("claim").or_default().record(claimed_at - sent);
                    latencies.entry("complete").or_default().record(completed_at - claimed_at);
                }
            }
            Ok(latencies)
        }
    })
    .await?;
    Ok(Outcome::throughput(key, label, window, latencies))
}

/// Scenario 2 as a user would write it: `workers` instances of `taskpilot-client`'s `Worker`
/// with their defaults (100 slots each, claims for as many free slots, a busy worker waiting up
/// to 5 ms until half are free, outcomes flushed through batch completion every few
/// milliseconds), running a handler that succeeds at once. Counted when the handler runs; the
/// outcomes follow within milliseconds.
pub async fn drain_runtime(
    api: &Api,
    workers: usize,
    backlog: u64,
    timing: Timing,
) -> anyhow::Result<Outcome> {
    let progress = Arc::new(Progress::default());
    let mut set = JoinSet::new();
    for i in 0..workers {
        let counter = Arc::clone(&progress);
        let stopper = Arc::clone(&progress);
        let worker = taskpilot_client::Worker::new(api.client().clone(), move |_task| {
            let counter = Arc::clone(&counter);
            async move {
                counter.add(1);
                taskpilot_client::Outcome::Succeed(None)
            }
        })
        .worker_id(format!("bench-runtime-{i}"))
        .claim_wait(Duration::from_secs(1));
        set.spawn(worker.run_until(async move {
            while !stopper.stopped() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let watcher = Arc::clone(&progress);
    let window = tokio::task::spawn_blocking(move || {
        watch(&watcher, timing.warmup, timing.duration, Some(backlog))
    })
    .await
    .context("the watcher panicked")?;
    progress.stop();
    let (mut succeeded, mut refused, mut undelivered) = (0, 0, 0);
    while let Some(joined) = set.join_next().await {
        let report = joined?.context("worker runtime")?;
        succeeded += report.succeeded;
        refused += report.refused;
        undelivered += report.unreported;
    }
    let mut outcome = Outcome::throughput(
        "drain/worker-runtime",
        format!(
            "drain: taskpilot-client Worker runtime, {workers} workers × {} slots, defaults (jobs/s)",
            taskpilot_client::DEFAULT_CONCURRENCY
        ),
        window?,
        Latencies::new(),
    );
    outcome.notes.push(format!(
        "{succeeded} successes accepted in all, {refused} refused, {undelivered} unreported"
    ));
    Ok(outcome)
}

/// Scenario 6: the same cycle as plain SQL, one thread and connection per worker.
pub async fn ceiling(
    db: &BenchDb,
    workers: usize,
    batch: u32,
    backlog: u64,
    timing: Timing,
) -> anyhow::Result<Outcome> {
    let mut connections = Vec::with_capacity(workers);
    for _ in 0..workers {
        connections.push(db.connect()?);
    }
    let (window, latencies) = tokio::task::spawn_blocking(move || {
        let progress = Arc::new(Progress::default());
        std::thread::scope(|scope| {
            let handles: Vec<_> = connections
                .into_iter()
                .enumerate()
                .map(|(i, conn)| {
                    let progress = Arc::clone(&progress);
                    scope.spawn(move || crate::ceiling::worker(conn, i, batch, &progress))
                })
                .collect();
            let window = watch(&progress, timing.warmup, timing.duration, Some(backlog));
            let mut latencies = Latencies::new();
            for handle in handles {
                let worker = handle.join().map_err(|_| anyhow!("a SQL worker panicked"))??;
                merge_into(&mut latencies, worker);
            }
            Ok::<_, anyhow::Error>((window?, latencies))
        })
    })
    .await
    .context("the SQL workers panicked")??;
    let completion = if batch == 1 { "complete 1" } else { "complete in one statement" };
    Ok(Outcome::throughput(
        &format!("ceiling/claim-{batch}"),
        format!("ceiling: SQL claim {batch} + {completion}, {workers} connections (jobs/s)"),
        window,
        latencies,
    ))
}

/// Scenario 3: `workers` long-polling workers; tasks created at `rate` per second, each
/// carrying the instant its create request was sent; latency from there to the claim's
/// answer arriving at a worker.
pub async fn pickup(
    api: &Api,
    workers: usize,
    rate: u32,
    timing: Timing,
) -> anyhow::Result<Outcome> {
    let epoch = Instant::now();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = JoinSet::new();
    for i in 0..workers {
        let api = api.clone();
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        pollers.spawn(async move {
            let worker_id = format!("bench-poller-{i}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let claimed = api.claim(&worker_id, 10, 20_000).await?;
                let arrived = epoch.elapsed();
                for task in &claimed {
                    let measured = task.payload["measured"].as_bool().unwrap_or(false);
                    let sent = task.payload["sentUs"].as_u64().unwrap_or(0);
                    if measured {
                        let latency = arrived.saturating_sub(Duration::from_micros(sent));
                        samples.lock().map_err(|_| anyhow!("poisoned"))?.record(latency);
                    }
                }
                for task in &claimed {
                    api.succeed(&worker_id, task).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    // Let every poller reach its long poll before the first task arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let measure_from = started + timing.warmup;
    let measure_until = measure_from + timing.duration;
    let mut creates = JoinSet::new();
    let mut measured_created = 0_u64;
    let mut create_latencies = Samples::default();
    let mut cpu_from = None;
    loop {
        let tick = ticks.tick().await;
        if tick.into_std() >= measure_until {
            break;
        }
        let measured = tick.into_std() >= measure_from;
        if measured && cpu_from.is_none() {
            cpu_from = crate::cpu::snapshot();
        }
        measured_created += u64::from(measured);
        let api = api.clone();
        creates.spawn(async move {
            let sent_at = Instant::now();
            let sent = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            api.create(&payload_task(json!({"sentUs": sent, "measured": measured}))).await?;
            Ok::<_, anyhow::Error>(measured.then(|| sent_at.elapsed()))
        });
        while let Some(done) = creates.try_join_next() {
            if let Some(latency) = done?? {
                create_latencies.record(latency);
            }
        }
        if let Some(joined) = pollers.try_join_next() {
            joined??;
            anyhow::bail!("a poller stopped early");
        }
    }
    let cpu = crate::cpu::between(cpu_from, crate::cpu::snapshot());
    while let Some(done) = creates.join_next().await {
        if let Some(latency) = done?? {
            create_latencies.record(latency);
        }
    }
    // The last tasks get a second to be picked up, then the pollers stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pollers.abort_all();
    while let Some(joined) = pollers.join_next().await {
        if let Ok(Err(e)) = joined {
            return Err(e);
        }
    }
    let samples = std::mem::take(&mut *samples.lock().map_err(|_| anyhow!("poisoned"))?);
    let picked = samples.len() as u64;
    let mut latencies = Latencies::new();
    latencies.insert("pickup", samples);
    // The create's own round trip: the part of the pickup spent before the task was
    // committed (and its wake-up sent).
    latencies.insert("create", create_latencies);
    let mut outcome = Outcome {
        key: "pickup".to_owned(),
        label: format!(
            "pickup: {rate} creates/s, {workers} long-polling workers (creation to claim)"
        ),
        window_secs: Some(timing.duration.as_secs_f64()),
        count: Some(picked),
        latencies: summarize(latencies),
        cpu,
        ..Outcome::default()
    };
    if picked < measured_created {
        outcome.notes.push(format!(
            "{} of {measured_created} measured tasks were not claimed within a second after the last create",
            measured_created - picked
        ));
    }
    Ok(outcome)
}

/// Scenario 4: `GET /api/tasks/{id}` over `ids` at `rate` per second, open loop: each request
/// is timed from the instant it was due, so that a slow answer cannot hide the ones queued
/// behind it.
pub async fn read(
    api: &Api,
    ids: Vec<uuid::Uuid>,
    rate: u32,
    timing: Timing,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!ids.is_empty(), "no tasks to read");
    let ids = Arc::new(ids);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let measure_from = started + timing.warmup;
    let measure_until = measure_from + timing.duration;
    let mut requests = JoinSet::new();
    let mut samples = Samples::default();
    let mut collect = |result: Result<anyhow::Result<Option<Duration>>, tokio::task::JoinError>| {
        if let Some(latency) = result?? {
            samples.record(latency);
        }
        Ok::<_, anyhow::Error>(())
    };
    let mut n = 0_usize;
    let mut cpu_from = None;
    loop {
        let due = ticks.tick().await.into_std();
        if due >= measure_until {
            break;
        }
        let measured = due >= measure_from;
        if measured && cpu_from.is_none() {
            cpu_from = crate::cpu::snapshot();
        }
        let id = ids[n % ids.len()];
        n += 1;
        let api = api.clone();
        requests.spawn(async move {
            api.get(id).await?;
            Ok(measured.then(|| due.elapsed()))
        });
        while let Some(done) = requests.try_join_next() {
            collect(done)?;
        }
    }
    let cpu = crate::cpu::between(cpu_from, crate::cpu::snapshot());
    while let Some(done) = requests.join_next().await {
        collect(done)?;
    }
    let count = samples.len() as u64;
    let mut latencies = Latencies::new();
    latencies.insert("get", samples);
    Ok(Outcome {
        key: "read".to_owned(),
        label: format!("read: GET /api/tasks/{{id}} at {rate}/s, open loop"),
        rate_per_sec: Some(count as f64 / timing.duration.as_secs_f64()),
        window_secs: Some(timing.duration.as_secs_f64()),
        count: Some(count),
        latencies: summarize(latencies),
        cpu,
        ..Outcome::default()
    })
}
