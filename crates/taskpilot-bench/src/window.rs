//! The measured window of a closed-loop run: a warm-up, then a fixed time or until the backlog
//! runs out, whichever comes first. Workers count what they finish; one watcher decides when
//! measuring starts and stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

/// What the workers of one run share with its watcher.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
    drained: AtomicBool,
}

impl Progress {
    /// Counts `n` finished jobs (created tasks, completed tasks).
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Jobs finished so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Whether round trips finishing now belong to the measured window.
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// Whether workers should stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A worker found nothing left to claim.
    pub fn drained(&self) {
        self.drained.store(true, Ordering::Relaxed);
    }

    /// Tells workers to stop (after an error).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long a run was measured, and what it did meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Jobs finished within the window.
    pub jobs: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Whether the backlog ran out before the time was up.
    pub drained: bool,
    /// Who used the cores meanwhile.
    pub cpu: Option<crate::cpu::CpuUse>,
}

impl Window {
    /// Jobs per second.
    pub fn rate(&self) -> f64 {
        let jobs = self.jobs as f64;
        jobs / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Watches a run: measuring starts after `warmup` (or once a tenth of `backlog` is done) and
/// stops after `duration`, or when the backlog is (nearly) gone: at 98%, or at the first
/// empty claim, so that the tail of a draining queue, where workers find part-filled batches,
/// does not count. Blocks the calling thread.
///
/// # Errors
/// When the backlog ran out during the warm-up: nothing was measured.
pub fn watch(
    progress: &Progress,
    warmup: Duration,
    duration: Duration,
    backlog: Option<u64>,
) -> anyhow::Result<Window> {
    let started = Instant::now();
    let mut measured_from: Option<(Instant, u64)> = None;
    let mut cpu_from = None;
    loop {
        std::thread::sleep(Duration::from_millis(2));
        if progress.stopped() {
            bail!("stopped: a worker failed");
        }
        let now = Instant::now();
        let done = progress.done.load(Ordering::Relaxed);
        let drained = progress.drained.load(Ordering::Relaxed)
            || backlog.is_some_and(|b| done.saturating_mul(100) >= b.saturating_mul(98));
        match measured_from {
            None if drained => {
                progress.stop();
                bail!("the backlog ran out during the warm-up ({done} jobs): raise --backlog");
            }
            None => {
                let warm = now - started >= warmup || backlog.is_some_and(|b| done * 10 >= b);
                if warm {
                    progress.measuring.store(true, Ordering::Relaxed);
                    measured_from = Some((now, done));
                    cpu_from = crate::cpu::snapshot();
                }
            }
            Some((t0, d0)) => {
                if drained || now - t0 >= duration {
                    progress.measuring.store(false, Ordering::Relaxed);
                    progress.stop();
                    let cpu = crate::cpu::between(cpu_from, crate::cpu::snapshot());
                    return Ok(Window { jobs: done - d0, elapsed: now - t0, drained, cpu });
                }
            }
        }
    }
}
