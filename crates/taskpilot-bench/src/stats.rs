//! Latency samples and their percentiles: every sample kept, sorted once (exact, and small
//! enough: a run records at most a few hundred thousand round trips).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Samples by the round trip they time ("claim", "complete", "create", ...).
pub type Latencies = BTreeMap<&'static str, Samples>;

/// Adds one worker's samples to the run's.
pub fn merge_into(total: &mut Latencies, worker: Latencies) {
    for (name, samples) in worker {
        total.entry(name).or_default().merge(samples);
    }
}

/// The percentiles of every kind of round trip.
pub fn summarize(latencies: Latencies) -> BTreeMap<&'static str, Summary> {
    latencies.into_iter().map(|(name, samples)| (name, samples.summary())).collect()
}

/// Round-trip times of one kind, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// Records one round trip.
    pub fn record(&mut self, elapsed: Duration) {
        self.0.push(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds another set of samples (one worker's) to these.
    pub fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The percentiles of these samples; all zero when there are none.
    pub fn summary(mut self) -> Summary {
        self.0.sort_unstable();
        let v = &self.0;
        Summary {
            count: v.len(),
            p50_ms: ms(percentile(v, 50.0)),
            p99_ms: ms(percentile(v, 99.0)),
            p999_ms: ms(percentile(v, 99.9)),
            max_ms: ms(v.last().copied().unwrap_or(0)),
        }
    }
}

/// Percentiles of one kind of round trip, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// How many round trips were measured.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

fn ms(micros: u64) -> f64 {
    // Microsecond samples shown to the microsecond: exact in an f64 up to 2^53 µs.
    let micros = micros as f64;
    micros / 1000.0
}

/// The nearest-rank percentile of sorted samples: the smallest sample that at least `p`
/// percent of the samples do not exceed.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon absorbs binary rounding: 99.9% of 1,000 is rank 999, not 999.0000001.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_sample_that_covers_the_share() {
        let sorted: Vec<u64> = (1..=1000).collect();

        assert_eq!(percentile(&sorted, 50.0), 500);
        assert_eq!(percentile(&sorted, 99.0), 990);
        assert_eq!(percentile(&sorted, 99.9), 999);
        assert_eq!(percentile(&sorted, 100.0), 1000);
        assert_eq!(percentile(&sorted, 0.0), 1);
    }

    #[test]
    fn few_samples_round_up_to_the_next_one() {
        assert_eq!(percentile(&[10, 20, 30], 50.0), 20);
        assert_eq!(percentile(&[10, 20, 30], 99.0), 30);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_sorts_and_reports_milliseconds() {
        let mut samples = Samples::default();
        for us in [3_000, 1_000, 2_000] {
            samples.record(Duration::from_micros(us));
        }

        let summary = samples.summary();

        assert_eq!(summary.count, 3);
        assert!((summary.p50_ms - 2.0).abs() < 1e-9);
        assert!((summary.max_ms - 3.0).abs() < 1e-9);
    }
}
