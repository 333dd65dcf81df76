//! The sustained drain: claim 100 + batch complete for minutes on end, with a producer
//! keeping the backlog topped up and the server's pruner deleting finished tasks as it goes,
//! so that the table reaches the steady state a long-running deployment lives in. The figure
//! is each minute's rate against the first minute's: dead tuples, index bloat or a pruner
//! that falls behind show up as later minutes slowing down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::api::Api;
use crate::db::BenchDb;
use crate::scenarios::Outcome;
use crate::window::Progress;

/// Runnable tasks the producer keeps ahead of the workers.
pub const AHEAD: u64 = 150_000;
/// Tasks the producer inserts at a time.
const CHUNK: u64 = 20_000;
/// Length of one bucket of the rate over time.
const BUCKET: Duration = Duration::from_secs(60);

/// Runs the sustained drain for `duration` with `workers` claim-100 workers against the
/// server at `api` (which must have retention on), its backlog topped up through `db`.
///
/// # Errors
/// When a worker, the producer or the database fails.
pub async fn sustained(
    api: &Api,
    db: &BenchDb,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let progress = Arc::new(Progress::default());
    let mut set = JoinSet::new();
    for i in 0..workers {
        let (api, progress) = (api.clone(), Arc::clone(&progress));
        set.spawn(async move {
            let worker_id = format!("bench-sustained-{i}");
            while !progress.stopped() {
                let claimed = api.claim(&worker_id, 100, 0).await?;
                if claimed.is_empty() {
                    // The producer is behind; the window shows it as a slower minute.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                api.complete(&claimed).await?;
                progress.add(claimed.len() as u64);
            }
            anyhow::Ok(())
        });
    }
    let producer = {
        let (progress, mut conn) = (Arc::clone(&progress), db.connect()?);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            // The backlog it was given at the start counts as produced.
            let mut produced = AHEAD;
            while !progress.stopped() {
                if produced.saturating_sub(progress.done()) < AHEAD {
                    crate::db::insert_backlog(&mut conn, CHUNK)?;
                    produced += CHUNK;
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(produced)
        })
    };
    let started = Instant::now();
    let cpu_from = crate::cpu::snapshot();
    let mut buckets = Vec::new();
    let mut last = 0;
    while started.elapsed() < duration {
        let next = BUCKET * u32::try_from(buckets.len() + 1).unwrap_or(u32::MAX);
        let remaining = next.min(duration).saturating_sub(started.elapsed());
        tokio::time::sleep(remaining.min(Duration::from_millis(500))).await;
        if set.len() < workers || progress.stopped() {
            break;
        }
        if started.elapsed() >= next.min(duration) {
            let done = progress.done();
            buckets.push(done - last);
            last = done;
        }
    }
    let elapsed = started.elapsed();
    let cpu = crate::cpu::between(cpu_from, crate::cpu::snapshot());
    progress.stop();
    while let Some(joined) = set.join_next().await {
        joined.context("a sustained worker panicked")??;
    }
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))?
        .context("the producer failed")?;
    let mut conn = db.connect()?;
    let (bytes, tasks, events) = crate::db::table_sizes(&mut conn)?;
    let done = progress.done();
    let per_minute: Vec<String> =
        buckets.iter().map(|n| format!("{:.0}", *n as f64 / BUCKET.as_secs_f64())).collect();
    let first = buckets.first().copied().unwrap_or(0).max(1) as f64;
    let worst_later = buckets.iter().skip(1).min().map(|n| *n as f64 / first);
    let mut notes = vec![
        format!("jobs/s per minute: {}", per_minute.join(", ")),
        format!(
            "at the end: {tasks} tasks and {events} history rows in {:.0} MiB; {produced} produced",
            bytes as f64 / 1_048_576.0
        ),
    ];
    if let Some(share) = worst_later {
        notes.push(format!("slowest later minute {:.0}% of the first", share * 100.0));
    }
    Ok(Outcome {
        key: "sustained/claim-100".to_owned(),
        label: format!(
            "sustained: claim 100 + batch complete for {:.0} min with retention running, {workers} workers (jobs/s)",
            elapsed.as_secs_f64() / 60.0
        ),
        rate_per_sec: Some(done as f64 / elapsed.as_secs_f64()),
        window_secs: Some(elapsed.as_secs_f64()),
        count: Some(done),
        drained: false,
        cpu,
        notes,
        sustained_share: worst_later,
        ..Outcome::default()
    })
}
