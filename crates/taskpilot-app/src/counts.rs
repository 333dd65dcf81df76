//! What storage keeps counted for the metrics and the stats: tasks by queue and status, and
//! the wait and run times of attempts, kept by the writes themselves so that reading them
//! never counts the tasks.

use chrono::{DateTime, Utc};
use taskpilot_domain::QueueName;

/// How many tasks are in each status, with PENDING split by whether the task may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    /// PENDING and runnable now (no `next_run_at`, or one at or before now).
    pub runnable: u64,
    /// PENDING with a `next_run_at` after now: delayed, or waiting out a retry's backoff.
    pub scheduled: u64,
    /// RUNNING.
    pub running: u64,
    /// SUCCEEDED and still kept by retention.
    pub succeeded: u64,
    /// FAILED and still kept by retention.
    pub failed: u64,
    /// CANCELLED and still kept by retention.
    pub cancelled: u64,
}

impl StatusCounts {
    /// Every task counted.
    pub fn total(&self) -> u64 {
        self.runnable
            + self.scheduled
            + self.running
            + self.succeeded
            + self.failed
            + self.cancelled
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Self) {
        self.runnable += other.runnable;
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }
}

/// The counts of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue.
    pub queue: QueueName,
    /// Its tasks by status.
    pub counts: StatusCounts,
    /// Since when the longest-waiting runnable task of the queue has been waiting, by the key
    /// claims order by (its `next_run_at`, else its creation); `None` when none is runnable.
    pub oldest_runnable_since: Option<DateTime<Utc>>,
}

/// Which duration a [`DurationHistogram`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DurationKind {
    /// From runnable to started (PENDING to RUNNING): how long a task waited for a worker.
    Wait,
    /// From started to the attempt's end (RUNNING to anything else): how long it ran.
    Run,
}

/// The bounds, in seconds and ascending, of the buckets of every [`DurationHistogram`]. The
/// storage adapter buckets with the same bounds (its tests check it).
pub const DURATION_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
];

/// The durations of one kind in one queue since the store was created.
///
/// Their count is the sum of [`DurationHistogram::buckets`].
#[derive(Debug, Clone, PartialEq)]
pub struct DurationHistogram {
    /// The queue; `None` for the queues beyond [`TaskCounts::queues`] together.
    pub queue: Option<QueueName>,
    /// What it measures.
    pub kind: DurationKind,
    /// How many durations fell into each bucket: entry `i` counts those above the bound
    /// before `i` (if any) and at or below [`DURATION_BUCKETS`]`[i]`; the last entry, one past
    /// the bounds, those above every bound.
    pub buckets: Vec<u64>,
    /// Their sum in seconds.
    pub sum_seconds: f64,
}

/// The maintained counts, as one read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskCounts {
    /// The first queues in name order (as many as asked for), each with its counts.
    pub queues: Vec<QueueCounts>,
    /// Every other queue together, when there are more.
    pub other_queues: Option<StatusCounts>,
    /// The wait and run times by queue (the same queues, and the others together).
    pub durations: Vec<DurationHistogram>,
}

impl TaskCounts {
    /// Every queue together.
    pub fn totals(&self) -> StatusCounts {
        let mut totals = self.other_queues.unwrap_or_default();
        for q in &self.queues {
            totals.add(&q.counts);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_every_queue_and_the_others() {
        let some = StatusCounts {
            runnable: 1,
            scheduled: 2,
            running: 3,
            succeeded: 4,
            failed: 5,
            cancelled: 6,
        };
        let counts = TaskCounts {
            queues: vec![QueueCounts {
                queue: QueueName::default_queue(),
                counts: some,
                oldest_runnable_since: None,
            }],
            other_queues: Some(some),
            durations: Vec::new(),
        };

        let totals = counts.totals();

        assert_eq!(totals.total(), 42);
        assert_eq!(totals.cancelled, 12);
    }

    #[test]
    fn duration_buckets_ascend() {
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
