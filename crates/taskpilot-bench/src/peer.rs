//! The peer: graphile-worker, the PostgreSQL job queue most Node.js teams pick, drained on the
//! same PostgreSQL in the same run, measured the way its own performance test measures it.
//!
//! The bench installs graphile-worker from the npm registry into a folder under `target/`
//! (once; later runs reuse it), installs its schema into the bench database, adds N trivial
//! jobs with its `add_jobs` SQL function, then times `graphile-worker --once` (run until no
//! runnable job is left, then exit). Its start-up time is measured on an empty queue just
//! before and subtracted: jobs/s = N / (run time − start-up time). Both sides' logging is at
//! warning level (the TaskPilot server runs with `warn` in the bench; the peer gets a logger
//! that drops info and debug lines).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use diesel::connection::SimpleConnection as _;
use diesel::PgConnection;

use crate::scenarios::Outcome;

/// The version that is measured: the last release line that runs on Node.js 20.
pub const VERSION: &str = "0.17.3";

/// Concurrent jobs per process, as in graphile-worker's own performance test.
const CONCURRENCY: usize = 24;

/// How the peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Its defaults: every job fetched and completed on its own, one process.
    Unbatched,
    /// Its batching options (a local queue of 500, completions batched at once), two
    /// processes.
    Batched,
}

impl Mode {
    fn config_file(self) -> &'static str {
        match self {
            Self::Unbatched => "unbatched.config.js",
            Self::Batched => "batched.config.js",
        }
    }

    fn processes(self) -> usize {
        match self {
            Self::Unbatched => 1,
            Self::Batched => 2,
        }
    }

    /// The outcome's key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Unbatched => "peer/graphile-worker-unbatched",
            Self::Batched => "peer/graphile-worker-batched",
        }
    }

    fn label(self, jobs: u64) -> String {
        match self {
            Self::Unbatched => format!(
                "peer: graphile-worker {VERSION}, defaults, 1 process × {CONCURRENCY} jobs, {jobs} jobs (jobs/s)"
            ),
            Self::Batched => format!(
                "peer: graphile-worker {VERSION}, localQueue 500 + batched completes, 2 processes × {CONCURRENCY} jobs, {jobs} jobs (jobs/s)"
            ),
        }
    }
}

/// An installed graphile-worker, ready to run against a database.
#[derive(Debug)]
pub struct Peer {
    node: PathBuf,
    dir: PathBuf,
}

/// The configuration files: both drop info and debug log lines, as the TaskPilot server in
/// the bench logs warnings only.
const QUIET_LOGGER: &str = "const { Logger } = require('graphile-worker');\n\
const logger = new Logger(() => (level, message) => {\n\
  if (level === 'error' || level === 'warning') console.error(`[${level}] ${message}`);\n\
});\n";

fn config(batched: bool) -> String {
    let batching = if batched {
        "localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0, "
    } else {
        ""
    };
    format!(
        "{QUIET_LOGGER}module.exports = {{ worker: {{ concurrentJobs: {CONCURRENCY}, \
         maxPoolSize: {pool}, {batching}logger }} }};\n",
        pool = CONCURRENCY + 1
    )
}

/// Looks `program` up on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file())
    })
}

impl Peer {
    /// Installs graphile-worker into `dir` unless it is there already, and writes its task and
    /// configuration files.
    ///
    /// # Errors
    /// When node or npm is missing (the message says which) or the install fails.
    pub fn install(dir: &Path) -> anyhow::Result<Self> {
        let Some(node) = which("node") else {
            bail!("node is not installed: the graphile-worker peer needs Node.js 20 and npm");
        };
        let installed = dir.join("node_modules/graphile-worker/package.json");
        let current = std::fs::read_to_string(&installed)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json["version"].as_str().map(str::to_owned));
        if current.as_deref() != Some(VERSION) {
            let Some(npm) = which("npm") else {
                bail!("npm is not installed: the graphile-worker peer needs Node.js 20 and npm");
            };
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            eprintln!("installing graphile-worker {VERSION} into {}", dir.display());
            let status = Command::new(npm)
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(dir)
                .arg(format!("graphile-worker@{VERSION}"))
                .stdout(Stdio::null())
                .status()
                .context("cannot run npm")?;
            if !status.success() {
                bail!("npm install graphile-worker@{VERSION} failed ({status})");
            }
        }
        std::fs::create_dir_all(dir.join("tasks"))
            .with_context(|| format!("cannot create {}/tasks", dir.display()))?;
        let files = [
            ("tasks/bench_job.js", "module.exports = async () => {};\n".to_owned()),
            (Mode::Unbatched.config_file(), config(false)),
            (Mode::Batched.config_file(), config(true)),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("cannot write {}/{name}", dir.display()))?;
        }
        // Absolute, because graphile-worker runs with the folder as its working directory.
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        Ok(Self { node, dir })
    }

    fn command(&self, database_url: &str, config: &str) -> Command {
        let mut command = Command::new(&self.node);
        command
            .arg(self.dir.join("node_modules/graphile-worker/dist/cli.js"))
            .args(["--config", config])
            .current_dir(&self.dir)
            .env("DATABASE_URL", database_url)
            .stdout(Stdio::null());
        command
    }

    /// Installs or updates graphile-worker's schema (`graphile_worker`) in the database.
    ///
    /// # Errors
    /// When graphile-worker fails.
    pub fn install_schema(&self, database_url: &str) -> anyhow::Result<()> {
        let status = self
            .command(database_url, Mode::Unbatched.config_file())
            .arg("--schema-only")
            .status()
            .context("cannot run graphile-worker")?;
        if !status.success() {
            bail!("graphile-worker --schema-only failed ({status})");
        }
        Ok(())
    }

    /// Runs `processes` × `graphile-worker --once` together; the time until the last exits.
    fn run_once(&self, database_url: &str, mode: Mode) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let children = (0..mode.processes())
            .map(|_| {
                self.command(database_url, mode.config_file())
                    .arg("--once")
                    .spawn()
                    .context("cannot start graphile-worker")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for mut child in children {
            let status = child.wait().context("cannot wait for graphile-worker")?;
            if !status.success() {
                bail!("graphile-worker --once failed ({status})");
            }
        }
        Ok(started.elapsed())
    }

    /// Drains `jobs` trivial jobs as graphile-worker's performance test does.
    ///
    /// # Errors
    /// When the database or graphile-worker fails, or jobs are left over.
    pub fn drain(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        mode: Mode,
        jobs: u64,
    ) -> anyhow::Result<Outcome> {
        conn.batch_execute("DELETE FROM graphile_worker._private_jobs")
            .context("cannot empty graphile-worker's jobs")?;
        // Start-up and shut-down on an empty queue: what the run time includes besides jobs.
        let startup = self.run_once(database_url, mode)?;
        conn.batch_execute(&format!(
            "SELECT count(*) FROM graphile_worker.add_jobs((\
                 SELECT array_agg(json_populate_record(null::graphile_worker.job_spec, \
                     json_build_object('identifier', 'bench_job', 'payload', json_build_object('id', i)))) \
                 FROM generate_series(1, {jobs}) AS i))"
        ))
        .context("cannot add the peer's jobs")?;
        for statement in ["VACUUM ANALYZE graphile_worker._private_jobs", "CHECKPOINT"] {
            conn.batch_execute(statement).with_context(|| format!("cannot run {statement}"))?;
        }
        let before = crate::cpu::snapshot();
        let run = self.run_once(database_url, mode)?;
        let cpu = crate::cpu::between(before, crate::cpu::snapshot());
        let left: i64 = {
            use diesel::prelude::*;
            #[derive(QueryableByName)]
            struct Left {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            diesel::sql_query("SELECT count(*) AS n FROM graphile_worker._private_jobs")
                .get_result::<Left>(conn)
                .context("cannot count the peer's jobs")?
                .n
        };
        if left > 0 {
            bail!("graphile-worker left {left} of {jobs} jobs undone");
        }
        let working = run.saturating_sub(startup).max(Duration::from_millis(1));
        Ok(Outcome {
            key: mode.key().to_owned(),
            label: mode.label(jobs),
            rate_per_sec: Some(jobs as f64 / working.as_secs_f64()),
            window_secs: Some(working.as_secs_f64()),
            count: Some(jobs),
            drained: false,
            cpu,
            notes: vec![format!(
                "whole run {:.2} s, start-up {:.2} s subtracted; its processes count as other",
                run.as_secs_f64(),
                startup.as_secs_f64()
            )],
            ..Outcome::default()
        })
    }
}
