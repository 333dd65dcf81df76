//! `taskpilot-bench`: how close TaskPilot comes to what PostgreSQL itself can do on the same
//! machine.
//!
//! It starts a release server on a fresh database (or uses the URLs it is given), runs each
//! scenario for a fixed time after a warm-up, prints a table and writes the figures as JSON.
//! See docs/performance.md for the scenarios, the latest figures and what limits them.
//!
//! A program, not a test: nothing here asserts a timing.

mod api;
mod ceiling;
mod cpu;
mod db;
mod machine;
mod pages;
mod peer;
mod report;
mod scenarios;
mod server;
mod stats;
mod sustained;
mod window;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};

use crate::api::Api;
use crate::db::BenchDb;
use crate::report::Report;
use crate::scenarios::{Outcome, Timing};
use crate::server::Server;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// Single creates (8 and 32 clients) and batch creates of 1,000.
    Enqueue,
    /// A backlog drained by claim 1 + succeed 1, claim 10 and claim 100 + batch complete.
    Drain,
    /// The same cycles as plain SQL: the ceiling.
    Ceiling,
    /// graphile-worker on the same PostgreSQL, unbatched and batched (needs node and npm).
    Peer,
    /// Creation-to-claim latency at a steady 200 creates/s with long-polling workers.
    Pickup,
    /// GET /api/tasks/{id} latency at a steady 1,000/s.
    Read,
    /// The claim-10 drain with 1,000,000 finished tasks in the table, against an empty one.
    Scale,
    /// Claim 100 + batch complete for minutes, backlog topped up, retention running.
    Sustained,
    /// Each dashboard page and REST read, one at a time, with 1,000,000 finished tasks.
    Pages,
}

/// Benchmarks a TaskPilot release server against the raw-SQL ceiling on this machine.
///
/// The database it uses is emptied (TRUNCATE tasks) between scenarios: give it only a
/// database made for benchmarking.
#[derive(Debug, Parser)]
#[command(name = "taskpilot-bench", version)]
struct Args {
    /// PostgreSQL server to create the throwaway database `taskpilot_bench_<random>` on (any
    /// database there; the bench drops its own at the end).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,

    /// Use this database as it is (migrated, and emptied by the bench) instead of creating one.
    #[arg(long)]
    database_url: Option<String>,

    /// Use this running server (serving --database-url) instead of starting one; its memory
    /// is then not measured.
    #[arg(long, requires = "database_url")]
    server_url: Option<String>,

    /// The server binary to start; default: `taskpilot` next to this binary.
    #[arg(long)]
    server_bin: Option<PathBuf>,

    /// Log filter of the started server (`info` logs a line per request).
    #[arg(long, default_value = "warn")]
    server_log: String,

    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,

    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,

    /// Scenarios to run (comma-separated); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,

    /// A short smoke run: 2 s per scenario after 1 s of warm-up, small tables.
    #[arg(long)]
    quick: bool,

    /// Tasks in the drain backlog, and jobs in the peer's batched drain.
    #[arg(long, default_value_t = 200_000)]
    backlog: u64,

    /// Jobs in the peer's unbatched drain (its one-job-at-a-time mode is slow: a smaller
    /// backlog keeps the run short).
    #[arg(long, default_value_t = 50_000)]
    peer_unbatched_jobs: u64,

    /// Where graphile-worker is installed for the peer scenario.
    #[arg(long, default_value = "target/bench/peer")]
    peer_dir: PathBuf,

    /// Finished tasks in the table for the scale scenario.
    #[arg(long, default_value_t = 1_000_000)]
    finished: u64,

    /// History rows of each finished task in the scale scenario.
    #[arg(long, default_value_t = 5)]
    history_per_finished: u64,

    /// Length of the sustained drain, in seconds.
    #[arg(long, default_value_t = 300)]
    sustained_secs: u64,

    /// Concurrent workers in the drain and ceiling scenarios, long-polling workers in pickup.
    #[arg(long, default_value_t = 8)]
    workers: usize,

    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration_secs = args.duration_secs.min(2);
        args.warmup_secs = args.warmup_secs.min(1);
        args.backlog = args.backlog.min(20_000);
        args.peer_unbatched_jobs = args.peer_unbatched_jobs.min(5_000);
        args.finished = args.finished.min(50_000);
        args.sustained_secs = args.sustained_secs.min(20);
    }
    if args.scenarios.is_empty() {
        args.scenarios = Scenario::value_variants().to_vec();
    }
    args.scenarios.sort_unstable();
    args.scenarios.dedup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let timing = Timing {
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    };
    let db = match &args.database_url {
        Some(url) => BenchDb::given(url),
        None => BenchDb::create(&args.admin_url)?,
    };
    let _ = cpu::DATABASE_URL.set(db.url.clone());
    if let Some(name) = db.created_name() {
        eprintln!("database {name} created");
    }
    let log_file = args.out.with_file_name("server.log");
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let server = match &args.server_url {
        Some(_) => None,
        None => {
            let binary = args.server_bin.clone().unwrap_or_else(server::default_binary);
            eprintln!("starting {}", binary.display());
            let server = Server::start(&binary, &db.url, &args.server_log, &log_file, &[]).await?;
            let _ = cpu::SERVER_PID.set(server.pid());
            Some(server)
        }
    };
    let url = match (&server, &args.server_url) {
        (Some(s), _) => s.url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => bail!("no server"),
    };
    let api = Api::new(&url)?;
    let mut conn = db.connect()?;
    let mut report = Report::new(
        machine::Machine::read(),
        db::settings(&mut conn)?,
        report::Settings {
            duration_secs: args.duration_secs,
            warmup_secs: args.warmup_secs,
            backlog: args.backlog,
            finished: args.finished,
            workers: args.workers,
            server_log: args.server_log.clone(),
            server: if server.is_some() { "started by the bench" } else { "given" }.to_owned(),
            load_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        },
    );

    let w = args.workers;
    for scenario in &args.scenarios {
        match scenario {
            Scenario::Enqueue => {
                for clients in [8, 32] {
                    step(&mut report, &format!("enqueue/single-{clients}"), async {
                        db::reset(&mut conn)?;
                        db::settle(&mut conn)?;
                        scenarios::enqueue_single(&api, clients, timing).await
                    })
                    .await;
                }
                step(&mut report, "enqueue/batch-1000", async {
                    db::reset(&mut conn)?;
                    db::settle(&mut conn)?;
                    scenarios::enqueue_batch(&api, 4, 1000, timing).await
                })
                .await;
            }
            Scenario::Drain => {
                for batch in [1, 10, 100] {
                    let complete =
                        if batch == 1 { "succeed 1" } else { "batch complete" }.to_owned();
                    let key = format!("drain/claim-{batch}");
                    step(&mut report, &key, async {
                        fill(&mut conn, 0, 0, args.backlog)?;
                        let label =
                            format!("drain: claim {batch} + {complete}, {w} workers (jobs/s)");
                        scenarios::drain(&api, w, batch, args.backlog, timing, &key, label).await
                    })
                    .await;
                    if args.scenarios.contains(&Scenario::Ceiling) {
                        // Right after its HTTP twin, so that the two share the machine's state.
                        ceiling_step(&mut report, &mut conn, &db, w, batch, &args, timing).await;
                    }
                }
                step(&mut report, "drain/worker-runtime", async {
                    fill(&mut conn, 0, 0, args.backlog)?;
                    scenarios::drain_runtime(&api, w, args.backlog, timing).await
                })
                .await;
            }
            Scenario::Ceiling => {
                if !args.scenarios.contains(&Scenario::Drain) {
                    for batch in [1, 10, 100] {
                        ceiling_step(&mut report, &mut conn, &db, w, batch, &args, timing).await;
                    }
                }
            }
            Scenario::Peer => {
                let installed = peer::Peer::install(&args.peer_dir)
                    .and_then(|p| p.install_schema(&db.url).map(|()| p));
                match installed {
                    Ok(p) => {
                        let runs = [
                            (peer::Mode::Unbatched, args.peer_unbatched_jobs),
                            (peer::Mode::Batched, args.backlog),
                        ];
                        for (mode, jobs) in runs {
                            step(&mut report, mode.key(), async {
                                db::reset(&mut conn)?;
                                p.drain(&mut conn, &db.url, mode, jobs)
                            })
                            .await;
                        }
                    }
                    // The row says why; the rest of the run goes on.
                    Err(e) => report.failures.push(report::Failure {
                        key: "peer/graphile-worker".to_owned(),
                        error: format!("{e:#}"),
                    }),
                }
            }
            Scenario::Sustained => {
                step(&mut report, "sustained/claim-100", async {
                    fill(&mut conn, 0, 0, sustained::AHEAD)?;
                    // A server of its own, with finished tasks kept for a minute only, so
                    // that the pruner works throughout (the main server keeps the defaults).
                    let binary = args.server_bin.clone().unwrap_or_else(server::default_binary);
                    let env = [
                        ("TASKPILOT_RETENTION_SUCCEEDED", "60s"),
                        ("TASKPILOT_PRUNE_INTERVAL_MS", "5000"),
                    ];
                    let log = args.out.with_file_name("server-sustained.log");
                    let own = Server::start(&binary, &db.url, &args.server_log, &log, &env).await?;
                    let own_api = Api::new(&own.url)?;
                    let secs = Duration::from_secs(args.sustained_secs);
                    eprintln!("  sustained drain for {} s", secs.as_secs());
                    let outcome = sustained::sustained(&own_api, &db, w, secs).await;
                    own.stop();
                    outcome
                })
                .await;
            }
            Scenario::Pickup => {
                step(&mut report, "pickup", async {
                    db::reset(&mut conn)?;
                    db::settle(&mut conn)?;
                    scenarios::pickup(&api, w, 200, timing).await
                })
                .await;
            }
            Scenario::Read => {
                step(&mut report, "read", async {
                    fill(&mut conn, 0, 0, 10_000)?;
                    let ids = db::task_ids(&mut conn, 10_000)?;
                    scenarios::read(&api, ids, 1000, timing).await
                })
                .await;
            }
            Scenario::Scale => {
                // Its own empty-table run just before, so that both sides of the ratio share
                // the machine's state.
                step(&mut report, "scale/empty", async {
                    fill(&mut conn, 0, 0, args.backlog)?;
                    let label = format!(
                        "scale: claim 10 + batch complete, empty table, {w} workers (jobs/s)"
                    );
                    scenarios::drain(&api, w, 10, args.backlog, timing, "scale/empty", label).await
                })
                .await;
                let finished = args.finished;
                step(&mut report, "scale/finished", async {
                    let history = finished * args.history_per_finished;
                    eprintln!(
                        "inserting {finished} finished tasks and {history} history rows (this takes a while)"
                    );
                    fill(&mut conn, finished, args.history_per_finished, args.backlog)?;
                    let label = format!(
                        "scale: claim 10 + batch complete, {finished} finished tasks and {history} history rows in the tables, {w} workers (jobs/s)"
                    );
                    scenarios::drain(&api, w, 10, args.backlog, timing, "scale/finished", label)
                        .await
                })
                .await;
            }
            Scenario::Pages => {
                let finished = args.finished;
                step(&mut report, "pages", async {
                    eprintln!("inserting {finished} finished tasks (this takes a while)");
                    db::reset(&mut conn)?;
                    db::insert_finished(&mut conn, finished, 0)?;
                    pages::insert_failed(&mut conn, 20_000)?;
                    db::insert_backlog(&mut conn, 10_000)?;
                    db::settle(&mut conn)?;
                    pages::pages(&api, &url, finished, 20).await
                })
                .await;
            }
        }
        if let Some(server) = &server {
            report.memory = server::memory(server.pid()).ok();
        }
    }
    if let Some(server) = &server {
        report.memory = server::memory(server.pid()).ok();
    }
    drop(conn);
    if let Some(server) = server {
        server.stop();
    }
    report.evaluate();
    println!("{}", report.table());
    let json = serde_json::to_string_pretty(&report).context("cannot encode the figures")?;
    std::fs::write(&args.out, json)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("figures written to {}", args.out.display());
    let mut db = db;
    db.drop_created()?;
    Ok(())
}

/// Empties the tables, inserts `finished` finished tasks (with `history_per_finished` history
/// rows each) and a `backlog` of runnable ones, and settles (vacuum, analyze, checkpoint).
fn fill(
    conn: &mut diesel::PgConnection,
    finished: u64,
    history_per_finished: u64,
    backlog: u64,
) -> anyhow::Result<()> {
    db::reset(conn)?;
    if finished > 0 {
        db::insert_finished(conn, finished, history_per_finished)?;
    }
    db::insert_backlog(conn, backlog)?;
    db::settle(conn)
}

async fn ceiling_step(
    report: &mut Report,
    conn: &mut diesel::PgConnection,
    db: &BenchDb,
    workers: usize,
    batch: u32,
    args: &Args,
    timing: Timing,
) {
    step(report, &format!("ceiling/claim-{batch}"), async {
        fill(conn, 0, 0, args.backlog)?;
        scenarios::ceiling(db, workers, batch, args.backlog, timing).await
    })
    .await;
}

/// Runs one scenario; a failure is reported with the figures and does not stop the run.
async fn step(
    report: &mut Report,
    key: &str,
    scenario: impl std::future::Future<Output = anyhow::Result<Outcome>>,
) {
    eprintln!("running {key}");
    match scenario.await {
        Ok(mut outcome) => {
            outcome.server_peak_mib = cpu::SERVER_PID
                .get()
                .and_then(|pid| server::memory(*pid).ok())
                .map(|m| m.peak_kib as f64 / 1024.0);
            eprintln!("  {}", report::one_line(&outcome));
            report.outcomes.push(outcome);
        }
        Err(e) => {
            eprintln!("  {key} failed: {e:#}");
            report.failures.push(report::Failure { key: key.to_owned(), error: format!("{e:#}") });
        }
    }
}
