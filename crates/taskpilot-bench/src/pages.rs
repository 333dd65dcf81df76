//! How long the operators' pages take to answer with a large table: each dashboard page and
//! each REST read behind it, fetched one after another (no concurrency: the time of one page,
//! not the server's throughput), over a table of finished tasks, failed tasks in a few
//! groups, a backlog and running tasks held by several workers.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use diesel::connection::SimpleConnection as _;
use diesel::PgConnection;

use taskpilot_client::ListTasksQuery;

use crate::api::Api;
use crate::scenarios::Outcome;
use crate::stats::{summarize, Latencies};

/// What is fetched: a name for the table and the path. `{task}` becomes a failed task's id.
const PAGES: &[(&str, &str)] = &[
    ("ui: overview", "/ui"),
    ("ui: queues", "/ui/queues"),
    ("ui: tasks", "/ui/tasks"),
    ("ui: failed tasks", "/ui/tasks?status=FAILED"),
    ("ui: payload search", "/ui/tasks?payload=%7B%22customer%22%3A7%7D"),
    ("ui: a task", "/ui/tasks/{task}"),
    ("ui: dead letters", "/ui/dead-letters"),
    ("ui: workers", "/ui/workers"),
    ("api: stats", "/api/stats"),
    ("api: queues", "/api/queues"),
    ("api: throughput", "/api/stats/throughput"),
    ("api: dead letters", "/api/dead-letters"),
    ("api: workers", "/api/workers"),
    ("api: failed tasks", "/api/tasks?status=FAILED"),
    ("api: payload search", "/api/tasks?payload=%7B%22customer%22%3A7%7D"),
];

/// Failed tasks inserted beside the finished ones, in five groups of error and name.
const FAILED: u64 = 20_000;

/// Tasks the workers hold while the pages are fetched.
const RUNNING: u32 = 50;

/// Inserts `n` FAILED tasks that failed over the last hour, spread over five errors and two
/// names, some of them with a `customer` in the payload.
pub fn insert_failed(conn: &mut PgConnection, n: u64) -> anyhow::Result<()> {
    let ts = "(now() - interval '1 hour' + g * interval '100 milliseconds')";
    let sql = format!(
        "INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, \
             attempt_count, max_attempts, attempt, ended_attempt, ended_attempt_token, \
             ended_attempt_end, last_error, completed_at, created_at, updated_at, version) \
         SELECT gen_random_uuid(), CASE WHEN g % 3 = 0 THEN 'email' ELSE 'default' END, \
             CASE WHEN g % 2 = 0 THEN 'bench-send' ELSE 'bench-resize' END, \
             jsonb_build_object('customer', g % 1000), 0, 'FAILED', 'EXHAUSTED', 3, 3, 3, 3, \
             gen_random_uuid(), 'FAILED', \
             'bench error ' || (g % 5) || E'\\n  at step ' || g, \
             {ts}, {ts} - interval '1 minute', {ts}, 7 \
         FROM generate_series(1, {n}) AS g"
    );
    conn.batch_execute(&sql).context("cannot insert the failed tasks")
}

/// Fetches every page `rounds` times after one unmeasured round, one request at a time.
pub async fn pages(api: &Api, base: &str, finished: u64, rounds: usize) -> anyhow::Result<Outcome> {
    // Several workers holding tasks, as the workers page shows them.
    for w in 0..5 {
        api.claim(&format!("bench-worker-{w}"), RUNNING / 5, 0).await?;
    }
    let query = ListTasksQuery {
        status: Some("FAILED".to_owned()),
        limit: Some("1".to_owned()),
        ..ListTasksQuery::default()
    };
    let page = api.client().list(&query).await.context("list the failed tasks")?;
    let failed = page.items.first().map(|t| t.id).context("no failed task to show")?;
    let http = reqwest::Client::new();
    let mut latencies = Latencies::new();
    for round in 0..=rounds {
        for (name, path) in PAGES {
            let url = format!("{base}{}", path.replace("{task}", &failed.to_string()));
            let started = Instant::now();
            let response = http.get(&url).send().await.with_context(|| format!("GET {path}"))?;
            let status = response.status();
            let body = response.bytes().await.with_context(|| format!("GET {path}"))?;
            let took = started.elapsed();
            if !status.is_success() {
                bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
            }
            if round > 0 {
                latencies.entry(name).or_default().record(took);
            }
        }
    }
    Ok(Outcome {
        key: "pages".to_owned(),
        label: format!(
            "pages: each dashboard page and REST read, one at a time, {rounds} times, with {finished} finished + {FAILED} failed tasks in the table (ms per page)"
        ),
        notes: vec![format!("measured at the client over loopback, so the figure includes HTTP; slowest allowed: {:?}", Duration::from_millis(100))],
        latencies: summarize(latencies),
        ..Outcome::default()
    })
}
