//! The server's metrics, in the Prometheus text format (`GET /metrics`).
//!
//! Two kinds, told apart in the README's table:
//!
//! - **This server's events**, counted in memory as they happen: what the use cases did (told
//!   through the app's [`TaskObserver`] port), claim requests, HTTP requests by route, the
//!   connection pool, the reaper's, pruner's and folder's runs. Each server counts its own;
//!   sum them over servers.
//! - **What storage holds**, read at each scrape from the counts the writes maintain
//!   ([`TaskService::task_counts`](taskpilot_app::TaskService::task_counts)): tasks by queue and status, the oldest runnable task of
//!   each queue, and the wait and run times of every attempt of the deployment. Every server
//!   reports the same values; do not sum them over servers.
//!
//! Labels come from closed sets only. Queue names are user data, so a server gives their own
//! label to at most [`HttpConfig::metrics_max_queues`](crate::HttpConfig) queues and counts
//! the rest under [`OTHER_QUEUES`], a name no queue can have: its events label the first
//! queues it sees, the stored counts the first queues by name. The route is the route's
//! pattern (`/api/tasks/{id}`), never the path asked for.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed label sets
//! checked at compile time, a registry that is a value (no global state, so every server
//! and every test has its own), and collectors that encode values read at scrape time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use taskpilot_app::{
    DurationKind, StaleCall, StatusCounts, TaskCounts, TaskObserver, DURATION_BUCKETS,
};
use taskpilot_domain::{AttemptEnd, QueueName, Task};

/// The content type of `GET /metrics`: the OpenMetrics flavour of the Prometheus text
/// format, which `prometheus-client` writes and Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The queue label of the queues beyond the cap: parentheses cannot be part of a queue name.
pub const OTHER_QUEUES: &str = "(other)";

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// The bounds of the HTTP request duration histogram, in seconds. Long-polling claims wait up
/// to 30 s, hence the top bounds.
const HTTP_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueOutcome {
    queue: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallCode {
    call: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStatus {
    queue: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethod {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethodCode {
    route: String,
    method: &'static str,
    code: u16,
}

/// How a claim request ended, for `taskpilot_claim_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// It got at least one task.
    Claimed,
    /// It found nothing and did not wait (no `waitMs`).
    Empty,
    /// It waited and its time ran out (or the server stopped) before a task came.
    TimedOut,
}

impl ClaimOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Empty => "empty",
            Self::TimedOut => "timed_out",
        }
    }
}

/// How a background pass went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// It did its work (perhaps none was due).
    Ok,
    /// Storage failed it, or it found the database too busy.
    Error,
}

impl RunOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// The connection pool as the wiring sees it: read at each scrape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolSnapshot {
    /// Connections open at most.
    pub max: u32,
    /// Connections checked out now.
    pub in_use: u32,
    /// Connections open and idle now.
    pub idle: u32,
    /// Checkouts since start.
    pub checkouts: u64,
    /// Seconds spent waiting for those checkouts.
    pub wait_seconds: f64,
    /// Checkouts that gave up after the connect timeout.
    pub timeouts: u64,
}

/// Reads the pool's state; installed by the server's wiring.
pub type PoolSource = Box<dyn Fn() -> PoolSnapshot + Send + Sync>;

/// Gives their own label to the first `max` queues seen, [`OTHER_QUEUES`] to the rest.
#[derive(Debug)]
struct QueueLabels {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl QueueLabels {
    fn label(&self, queue: &QueueName) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(queue.as_str()) {
            return queue.as_str().to_owned();
        }
        if seen.len() < self.max {
            seen.insert(queue.as_str().to_owned());
            return queue.as_str().to_owned();
        }
        OTHER_QUEUES.to_owned()
    }
}

/// Every metric of one server, and its registry. Shared by the application (app data), the
/// service (as its [`TaskObserver`]) and the background loops.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queues: QueueLabels,
    created: Family<QueueLabel, Counter>,
    claimed: Family<QueueLabel, Counter>,
    completed: Family<QueueOutcome, Counter>,
    expiries: Family<QueueLabel, Counter>,
    refused: Family<CallCode, Counter>,
    replays: Family<CallLabel, Counter>,
    claim_requests: Family<OutcomeLabel, Counter>,
    http_requests: Family<RouteMethodCode, Counter>,
    http_duration: Family<RouteMethod, Histogram>,
    reaper_runs: Family<OutcomeLabel, Counter>,
    pruner_runs: Family<OutcomeLabel, Counter>,
    pruned: Family<StatusLabel, Counter>,
    fold_runs: Family<OutcomeLabel, Counter>,
    stored: Arc<StoredCounts>,
    pool: Arc<PoolMetrics>,
    scrape: Mutex<()>,
}

impl Metrics {
    /// A fresh registry with every metric at zero; queue labels capped at `max_queues`.
    pub fn new(max_queues: u32) -> Self {
        let http_duration = Family::<RouteMethod, Histogram>::new_with_constructor(
            (|| Histogram::new(HTTP_BUCKETS)) as fn() -> Histogram,
        );
        let metrics = Self {
            registry: Registry::default(),
            queues: QueueLabels {
                max: usize::try_from(max_queues).unwrap_or(usize::MAX),
                seen: Mutex::new(HashSet::new()),
            },
            created: Family::default(),
            claimed: Family::default(),
            completed: Family::default(),
            expiries: Family::default(),
            refused: Family::default(),
            replays: Family::default(),
            claim_requests: Family::default(),
            http_requests: Family::default(),
            http_duration,
            reaper_runs: Family::default(),
            pruner_runs: Family::default(),
            pruned: Family::default(),
            fold_runs: Family::default(),
            stored: Arc::new(StoredCounts { max_queues, counts: Mutex::new(None) }),
            pool: Arc::new(PoolMetrics { source: Mutex::new(None) }),
            scrape: Mutex::new(()),
        };
        let mut registry = Registry::default();
        // Counters get `_total` appended by the encoder; the families are handles to the same
        // values.
        let counters = [
            ("taskpilot_tasks_created", "Tasks this server created, by queue", &metrics.created),
            (
                "taskpilot_tasks_claimed",
                "Tasks this server started (claims and starts), by queue",
                &metrics.claimed,
            ),
            (
                "taskpilot_lease_expiries",
                "Attempts this server's reaper ended because their lease ran out, by queue",
                &metrics.expiries,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "taskpilot_tasks_completed",
            "Attempts ended on this server by their worker's report, by queue and outcome \
             (succeeded, failed, failed_permanently, released), or by a cancel (cancelled)",
            metrics.completed.clone(),
        );
        registry.register(
            "taskpilot_refused_calls",
            "Stale calls this server refused, by call and code",
            metrics.refused.clone(),
        );
        registry.register(
            "taskpilot_replays",
            "Repeated reports this server answered again without writing, by call",
            metrics.replays.clone(),
        );
        let outcomes = [
            (
                "taskpilot_claim_requests",
                "Claim requests this server answered, by outcome (claimed, empty, timed_out)",
                &metrics.claim_requests,
            ),
            (
                "taskpilot_reaper_runs",
                "Passes of this server's lease reaper, by outcome",
                &metrics.reaper_runs,
            ),
            (
                "taskpilot_pruner_runs",
                "Passes of this server's pruner of finished tasks, by outcome",
                &metrics.pruner_runs,
            ),
            (
                "taskpilot_count_folds",
                "Passes of this server's compaction of the maintained task counts, by outcome",
                &metrics.fold_runs,
            ),
        ];
        for (name, help, family) in outcomes {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "taskpilot_pruned_tasks",
            "Finished tasks this server's pruner deleted, by status",
            metrics.pruned.clone(),
        );
        registry.register(
            "taskpilot_http_requests",
            "HTTP requests this server answered, by route pattern, method and status code",
            metrics.http_requests.clone(),
        );
        registry.register(
            "taskpilot_http_request_duration_seconds",
            "How long this server took to answer HTTP requests, by route pattern and method",
            metrics.http_duration.clone(),
        );
        registry.register_collector(Box::new(metrics.stored.clone()));
        registry.register_collector(Box::new(metrics.pool.clone()));
        Self { registry, ..metrics }
    }

    /// Installs what reads the connection pool at each scrape.
    pub fn observe_pool(&self, source: PoolSource) {
        *self.pool.source.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// How many queues get their own label in the stored counts.
    pub fn max_queues(&self) -> u32 {
        self.stored.max_queues
    }

    /// The text of `GET /metrics`, with the stored `counts` read for this scrape; `None` when
    /// storage could not be read, so that the server's own metrics still answer during an
    /// outage (`taskpilot_stored_counts_up` then says 0).
    pub fn render(&self, counts: Option<TaskCounts>, now: chrono::DateTime<chrono::Utc>) -> String {
        let mut text = String::new();
        // One scrape at a time: the stored counts are this scrape's until it is written.
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.stored.set(counts.map(|counts| (counts, now)));
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        self.stored.set(None);
        text
    }

    /// A claim request ended so.
    pub fn claim_request(&self, outcome: ClaimOutcome) {
        self.claim_requests.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }

    /// An HTTP request to `route` (its pattern, `None` when no route matched) with `method`
    /// was answered with `status` after `took`.
    pub fn http_request(&self, route: Option<&str>, method: &str, status: u16, took: Duration) {
        let route = route.unwrap_or(UNMATCHED_ROUTE).to_owned();
        let method = method_label(method);
        self.http_requests
            .get_or_create(&RouteMethodCode { route: route.clone(), method, code: status })
            .inc();
        self.http_duration
            .get_or_create(&RouteMethod { route, method })
            .observe(took.as_secs_f64());
    }

    /// A reaper pass ended so.
    pub fn reaper_run(&self, outcome: RunOutcome) {
        self.reaper_runs.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }

    /// A pruner pass ended so, having deleted these many tasks of each finished status.
    pub fn pruner_run(&self, outcome: RunOutcome, pruned: &taskpilot_app::Pruned) {
        self.pruner_runs.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
        for (status, n) in [
            ("succeeded", pruned.succeeded),
            ("failed", pruned.failed),
            ("cancelled", pruned.cancelled),
        ] {
            if n > 0 {
                self.pruned.get_or_create(&StatusLabel { status }).inc_by(n);
            }
        }
    }

    /// A pass of the count folder ended so.
    pub fn fold_run(&self, outcome: RunOutcome) {
        self.fold_runs.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }
}

impl TaskObserver for Metrics {
    fn created(&self, tasks: &[Task]) {
        for task in tasks {
            self.created
                .get_or_create(&QueueLabel { queue: self.queues.label(task.queue()) })
                .inc();
        }
    }

    fn started(&self, tasks: &[Task]) {
        for task in tasks {
            self.claimed
                .get_or_create(&QueueLabel { queue: self.queues.label(task.queue()) })
                .inc();
        }
    }

    fn attempt_ended(&self, task: &Task) {
        let queue = self.queues.label(task.queue());
        let outcome = match task.last_ended().map(|e| e.end) {
            Some(AttemptEnd::LeaseExpired) => {
                self.expiries.get_or_create(&QueueLabel { queue }).inc();
                return;
            }
            Some(AttemptEnd::Succeeded) => "succeeded",
            Some(AttemptEnd::Failed) => "failed",
            Some(AttemptEnd::FailedPermanently) => "failed_permanently",
            Some(AttemptEnd::Released) => "released",
            Some(AttemptEnd::Cancelled) => "cancelled",
            None => return,
        };
        self.completed.get_or_create(&QueueOutcome { queue, outcome }).inc();
    }

    fn refused(&self, call: StaleCall, code: &'static str) {
        self.refused.get_or_create(&CallCode { call: call.as_str(), code }).inc();
    }

    fn replayed(&self, call: StaleCall) {
        self.replays.get_or_create(&CallLabel { call: call.as_str() }).inc();
    }
}

/// The standard methods by name, anything else as `OTHER`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// The stored counts of the scrape under way, encoded when the registry is.
#[derive(Debug)]
struct StoredCounts {
    max_queues: u32,
    counts: Mutex<Option<(TaskCounts, chrono::DateTime<chrono::Utc>)>>,
}

impl StoredCounts {
    fn set(&self, counts: Option<(TaskCounts, chrono::DateTime<chrono::Utc>)>) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = counts;
    }
}

/// The status label of each count, in the order they are written.
fn by_status(counts: &StatusCounts) -> [(&'static str, u64); 6] {
    [
        ("runnable", counts.runnable),
        ("scheduled", counts.scheduled),
        ("running", counts.running),
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("cancelled", counts.cancelled),
    ]
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for StoredCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stored = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let up = encoder.encode_descriptor(
            "taskpilot_stored_counts_up",
            "1 when this scrape could read the stored counts, 0 when storage did not answer \
             (the stored series are then absent)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(stored.is_some())).encode(up)?;
        let Some((counts, now)) = stored.as_ref() else { return Ok(()) };

        let mut tasks = encoder.encode_descriptor(
            "taskpilot_tasks",
            "Tasks stored, by queue and status (runnable and scheduled are PENDING tasks that \
             may run now and later); the same on every server",
            None,
            MetricType::Gauge,
        )?;
        let named = counts.queues.iter().map(|q| (q.queue.as_str(), &q.counts));
        for (queue, status_counts) in
            named.chain(counts.other_queues.iter().map(|c| (OTHER_QUEUES, c)))
        {
            for (status, n) in by_status(status_counts) {
                let labels = QueueStatus { queue: queue.to_owned(), status };
                gauge(n).encode(tasks.encode_family(&labels)?)?;
            }
        }

        let mut oldest = encoder.encode_descriptor(
            "taskpilot_oldest_runnable_age_seconds",
            "Age of the longest-waiting runnable task of each queue (since its run time, else \
             its creation); absent for a queue with none",
            None,
            MetricType::Gauge,
        )?;
        for q in &counts.queues {
            if let Some(since) = q.oldest_runnable_since {
                let age = (*now - since).to_std().unwrap_or_default().as_secs_f64();
                let labels = QueueLabel { queue: q.queue.as_str().to_owned() };
                ConstGauge::new(age).encode(oldest.encode_family(&labels)?)?;
            }
        }

        for (kind, name, help) in [
            (
                DurationKind::Wait,
                "taskpilot_task_wait_seconds",
                "Time from runnable to started of every attempt, by queue; the same on every server",
            ),
            (
                DurationKind::Run,
                "taskpilot_task_run_seconds",
                "Time from started to the attempt's end of every attempt, by queue; the same on \
                 every server",
            ),
        ] {
            let mut histogram = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for h in counts.durations.iter().filter(|h| h.kind == kind) {
                let labels = QueueLabel {
                    queue: h.queue.as_ref().map_or(OTHER_QUEUES, QueueName::as_str).to_owned(),
                };
                let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::MAX])
                    .zip(h.buckets.iter().copied())
                    .collect();
                let count = h.buckets.iter().sum();
                histogram.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    h.sum_seconds,
                    count,
                    &buckets,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// The pool's state, read at each scrape from the wiring's [`PoolSource`].
struct PoolMetrics {
    source: Mutex<Option<PoolSource>>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").finish_non_exhaustive()
    }
}

impl Collector for PoolMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(source) = source.as_ref() else { return Ok(()) };
        let pool = source();
        for (name, help, value) in [
            ("taskpilot_db_pool_max_connections", "Connections the pool opens at most", pool.max),
            ("taskpilot_db_pool_in_use_connections", "Connections checked out now", pool.in_use),
            ("taskpilot_db_pool_idle_connections", "Connections open and idle now", pool.idle),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::from(value)).encode(metric)?;
        }
        let metric = encoder.encode_descriptor(
            "taskpilot_db_pool_checkouts",
            "Connections taken from the pool",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(pool.checkouts).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "taskpilot_db_pool_wait_seconds",
            "Time spent waiting for a connection from the pool (divide by the checkouts for \
             the mean wait)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(pool.wait_seconds).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "taskpilot_db_pool_timeouts",
            "Checkouts that gave up after the connect timeout: the database is down or the \
             pool too small",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(pool.timeouts).encode(metric)?;
        Ok(())
    }
}

/// Middleware: counts every answered request into the application's [`Metrics`], by its
/// route's pattern (known once routing ran), method and status, with its duration.
pub async fn count_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req.app_data::<actix_web::web::Data<Metrics>>().cloned();
    let method = req.method().clone();
    let response = next.call(req).await;
    if let Some(metrics) = metrics {
        let took = started.elapsed();
        match &response {
            Ok(response) => {
                let route = response.request().match_pattern();
                let status = response.status().as_u16();
                metrics.http_request(route.as_deref(), method.as_str(), status, took);
            }
            Err(e) => {
                let status = e.as_response_error().status_code().as_u16();
                metrics.http_request(None, method.as_str(), status, took);
            }
        }
    }
    response.map(actix_web::dev::ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::{TimeZone, Utc};
    use taskpilot_app::{DurationHistogram, QueueCounts};

    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn queues_past_the_cap_share_the_other_label_and_a_given_label_stays() {
        let labels = QueueLabels { max: 2, seen: Mutex::new(HashSet::new()) };

        let given: Vec<String> =
            ["b", "a", "c", "b", "d", "a"].iter().map(|q| labels.label(&queue(q))).collect();

        assert_eq!(given, ["b", "a", OTHER_QUEUES, "b", OTHER_QUEUES, "a"]);
    }

    #[test]
    fn methods_outside_the_standard_ones_are_other() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PUT"), "PUT");
        assert_eq!(method_label("BREW"), "OTHER");
        assert_eq!(method_label("get"), "OTHER");
    }

    #[test]
    fn a_render_writes_the_stored_counts_and_histograms_of_that_scrape_only() {
        let metrics = Metrics::new(10);
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let mut buckets = vec![0; DURATION_BUCKETS.len() + 1];
        buckets[0] = 2;
        buckets[DURATION_BUCKETS.len()] = 1;
        let counts = TaskCounts {
            queues: vec![QueueCounts {
                queue: queue("emails"),
                counts: StatusCounts { runnable: 3, running: 1, ..StatusCounts::default() },
                oldest_runnable_since: Some(now - chrono::TimeDelta::seconds(90)),
            }],
            other_queues: Some(StatusCounts { failed: 4, ..StatusCounts::default() }),
            durations: vec![DurationHistogram {
                queue: Some(queue("emails")),
                kind: DurationKind::Wait,
                buckets,
                sum_seconds: 100_000.5,
            }],
        };

        let text = metrics.render(Some(counts), now);
        let again = metrics.render(None, now);

        for line in [
            "taskpilot_stored_counts_up 1",
            "# TYPE taskpilot_tasks gauge",
            r#"taskpilot_tasks{queue="emails",status="runnable"} 3"#,
            r#"taskpilot_tasks{queue="emails",status="scheduled"} 0"#,
            r#"taskpilot_tasks{queue="(other)",status="failed"} 4"#,
            r#"taskpilot_oldest_runnable_age_seconds{queue="emails"} 90.0"#,
            "# TYPE taskpilot_task_wait_seconds histogram",
            r#"taskpilot_task_wait_seconds_bucket{le="0.005",queue="emails"} 2"#,
            r#"taskpilot_task_wait_seconds_bucket{le="86400.0",queue="emails"} 2"#,
            r#"taskpilot_task_wait_seconds_bucket{le="+Inf",queue="emails"} 3"#,
            r#"taskpilot_task_wait_seconds_count{queue="emails"} 3"#,
            r#"taskpilot_task_wait_seconds_sum{queue="emails"} 100000.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!again.contains(r#"queue="emails""#), "{again}");
        assert!(again.lines().any(|l| l == "taskpilot_stored_counts_up 0"), "{again}");
    }
}
