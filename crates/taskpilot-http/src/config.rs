//! Configuration: command-line flags, each backed by an environment variable and a default.
//!
//! Plain settings, read by both halves of the crate: the server's wiring takes all of them,
//! the HTTP adapter its body limits ([`HttpConfig`]) and the wake-up hub the schedule poll
//! interval. No I/O here: this module names neither the handlers nor the storage adapter.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::TimeDelta;
use clap::{Parser, Subcommand};
use taskpilot_app::ServiceDefaults;
use taskpilot_domain::{
    ExponentialBackoff, KeepFor, LeaseDuration, MaxAttempts, MaxCrashes, Retention,
};

/// The `taskpilot` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "taskpilot",
    version,
    about = "TaskPilot: a durable task queue control plane.",
    after_help = crate::cli::EXIT_CODES_HELP
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,

    /// Where the client commands send their calls, and how they print.
    #[command(flatten)]
    pub remote: crate::cli::RemoteArgs,
}

impl Cli {
    /// The subcommand to run, `serve` when none was given.
    pub fn subcommand(&self) -> Command {
        self.command.clone().unwrap_or(Command::Serve)
    }
}

/// What the binary does: the server's own commands, which work on the database, and the
/// client commands, which call a running server's REST API (see [`crate::cli`]).
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the REST API (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Create, list or revoke API tokens: through a server's API when --server (or
    /// TASKPILOT_SERVER) names one, with --token an admin token; otherwise straight in the
    /// database, which is how the first admin token is made.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Tasks on a running server: list, show, create, cancel, rerun, explain, events, bulk.
    #[command(subcommand)]
    Tasks(crate::cli::TasksCommand),
    /// Queues on a running server: list, show, pause, resume.
    #[command(subcommand)]
    Queues(crate::cli::QueuesCommand),
    /// Tasks by queue and status, the oldest runnable task's age, and the refused stale
    /// calls, from a running server.
    Stats,
    /// The failed tasks of a running server, grouped by queue, name and the first line of
    /// their error, the largest groups first.
    DeadLetters {
        /// Most groups, 1 to 500 (the server's default, 50, when left out).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The workers a running server saw in the last hour, with the tasks each one runs.
    Workers,
}

/// `taskpilot tokens …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print its secret, once.
    Create {
        /// What it may do: producer, worker, viewer, operator, admin or metrics.
        #[arg(long)]
        kind: String,
        /// Its name (1 to 64 characters), recorded in history for what it does.
        #[arg(long)]
        name: String,
        /// A queue it may touch; repeat for several. Every queue when left out.
        #[arg(long = "queue")]
        queues: Vec<String>,
        /// How long until it stops working, e.g. `90d` or `12h`; never when left out.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List every token (never their secrets).
    List,
    /// Revoke a token by id; every server refuses it within a few seconds.
    Revoke {
        /// The token's id, as `tokens list` shows it.
        id: uuid::Uuid,
    },
}

/// When requests must carry an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// Tokens are required once any exists; until then a server bound to a loopback address
    /// runs open (every request acts as admin), and one bound elsewhere refuses to start.
    #[default]
    Auto,
    /// Tokens are always required.
    On,
    /// No token is ever asked for: every request acts as admin. Only behind something else
    /// that authenticates.
    Off,
}

/// Every setting of the server. Flags win over environment variables, which win over defaults.
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// PostgreSQL URL; its database must exist (it is never created). When unset, TaskPilot
    /// tries postgres://postgres@127.0.0.1:5432/taskpilot (created when missing) and, failing
    /// that, starts a development cluster of its own on port 54329.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "TASKPILOT_BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: SocketAddr,

    /// When requests must carry an API token: `auto` (once any token exists; until then a
    /// server on a loopback address runs open and one on any other address refuses to
    /// start), `on` (always), or `off` (never: only behind something else that
    /// authenticates).
    #[arg(long, env = "TASKPILOT_AUTH", value_enum, default_value_t = AuthMode::Auto, global = true)]
    pub auth: AuthMode,

    /// Delay before the first retry of a failed task, in milliseconds; doubles with each failure.
    #[arg(long, env = "TASKPILOT_BACKOFF_BASE_MS", default_value_t = 1_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_base_ms: u64,

    /// Longest delay between retries, in milliseconds.
    #[arg(long, env = "TASKPILOT_BACKOFF_MAX_MS", default_value_t = 3_600_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub backoff_max_ms: u64,

    /// Attempts a task gets when it is created without maxAttempts (1 to 100).
    #[arg(long, env = "TASKPILOT_DEFAULT_MAX_ATTEMPTS", default_value_t = 25, global = true,
          value_parser = clap::value_parser!(i64).range(1..=100))]
    pub default_max_attempts: i64,

    /// Lease expiries a task survives when it is created without maxCrashes (1 to 100): the
    /// expiry that uses them up quarantines it (FAILED, retry state QUARANTINED), so that a
    /// task that kills or hangs its workers stops after that many.
    #[arg(long, env = "TASKPILOT_MAX_CRASHES", default_value_t = 3, global = true,
          value_parser = clap::value_parser!(i64).range(1..=100))]
    pub max_crashes: i64,

    /// Lease of a claim, start or heartbeat that does not ask for one, in seconds (5 to 86400).
    /// A worker that neither reports nor heartbeats within it loses the task to the reaper.
    #[arg(long, env = "TASKPILOT_DEFAULT_LEASE_SECS", default_value_t = 300, global = true,
          value_parser = clap::value_parser!(i64).range(5..=86_400))]
    pub default_lease_secs: i64,

    /// How often the lease reaper looks for expired leases, in milliseconds.
    #[arg(long, env = "TASKPILOT_REAPER_INTERVAL_MS", default_value_t = 1_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reaper_interval_ms: u64,

    /// How often the server re-measures its offset from PostgreSQL's clock, in seconds. Every
    /// server follows the database's clock, so that "now" means the same on all of them.
    #[arg(long, env = "TASKPILOT_CLOCK_REFRESH_SECS", default_value_t = 5, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub clock_refresh_secs: u64,

    /// Most PostgreSQL connections open at once. Few connections beat many on small machines.
    #[arg(long, env = "TASKPILOT_DB_POOL_SIZE", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,

    /// How long one attempt to connect to PostgreSQL may take, in milliseconds (libpq counts
    /// whole seconds, at least 2).
    #[arg(long, env = "TASKPILOT_DB_CONNECT_TIMEOUT_MS", default_value_t = 2_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_connect_timeout_ms: u64,

    /// How long a request waits for a pooled database connection before answering 503, in
    /// milliseconds: while the database is down, each request waits this long at most.
    #[arg(long, env = "TASKPILOT_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 500, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,

    /// Longest a statement of the server may run before PostgreSQL cancels it, in
    /// milliseconds; 0 for no limit. Long-polling claims wait between statements, not in one.
    #[arg(
        long,
        env = "TASKPILOT_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub db_statement_timeout_ms: u64,

    /// Longest a session of the server may sit idle inside a transaction before PostgreSQL
    /// ends it, in milliseconds; 0 for no limit. Keeps a stuck request from holding back
    /// vacuum or holding locks.
    #[arg(
        long,
        env = "TASKPILOT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub db_idle_in_transaction_timeout_ms: u64,

    /// How long a succeeded task is kept before it is deleted with its history, e.g. `90s`,
    /// `15m`, `24h`, `14d`; `0` keeps succeeded tasks forever.
    #[arg(long, env = "TASKPILOT_RETENTION_SUCCEEDED", default_value = "24h", global = true,
          value_parser = parse_keep_for)]
    pub retention_succeeded: KeepFor,

    /// How long a failed task is kept before it is deleted with its history (as for
    /// succeeded tasks); `0` keeps failed tasks forever.
    #[arg(long, env = "TASKPILOT_RETENTION_FAILED", default_value = "14d", global = true,
          value_parser = parse_keep_for)]
    pub retention_failed: KeepFor,

    /// How long a cancelled task is kept before it is deleted with its history (as for
    /// succeeded tasks); `0` keeps cancelled tasks forever.
    #[arg(long, env = "TASKPILOT_RETENTION_CANCELLED", default_value = "7d", global = true,
          value_parser = parse_keep_for)]
    pub retention_cancelled: KeepFor,

    /// How long the answer to a create with an `Idempotency-Key` is kept, so that the same
    /// request sent again gets it again instead of creating again, e.g. `15m`, `24h`, `7d`
    /// (not `0`). The pruner deletes expired keys.
    #[arg(long, env = "TASKPILOT_IDEMPOTENCY_TTL", default_value = "24h", global = true,
          value_parser = parse_ttl)]
    pub idempotency_ttl: Duration,

    /// Pause between two passes of the pruner, which deletes the finished tasks retention
    /// no longer keeps and the expired idempotency keys, in milliseconds. It pauses longer while the database is busy or down.
    #[arg(long, env = "TASKPILOT_PRUNE_INTERVAL_MS", default_value_t = 60_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub prune_interval_ms: u64,

    /// Pause between two compactions of the maintained task counts, in milliseconds: each
    /// folds the changes written since into their sums, so that reading the counts (GET
    /// /metrics, GET /api/stats) stays cheap. One server at a time does it.
    #[arg(long, env = "TASKPILOT_COUNTS_FOLD_INTERVAL_MS", default_value_t = 10_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub counts_fold_interval_ms: u64,

    /// Most queues that get a label of their own in the metrics and an entry of their own in
    /// GET /api/stats; the others are counted together as `(other)`.
    #[arg(long, env = "TASKPILOT_METRICS_MAX_QUEUES", default_value_t = 50, global = true,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub metrics_max_queues: u32,

    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[arg(long, env = "TASKPILOT_MAX_BODY_BYTES", default_value_t = 1_048_576, global = true)]
    pub max_body_bytes: usize,

    /// Largest accepted body of the batch endpoints (`POST /api/tasks/batch` and
    /// `POST /api/tasks/complete`), in bytes; larger bodies get 413. 16 MiB fits 1,000 tasks
    /// of about 16 KiB each.
    #[arg(long, env = "TASKPILOT_MAX_BATCH_BODY_BYTES", default_value_t = DEFAULT_MAX_BATCH_BODY_BYTES,
          global = true)]
    pub max_batch_body_bytes: usize,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,taskpilot_http=debug`.
    #[arg(long, env = "TASKPILOT_LOG", default_value = "info", global = true)]
    pub log: String,

    /// How long in-flight requests may take to finish after SIGTERM or SIGINT, in seconds.
    #[arg(long, env = "TASKPILOT_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub shutdown_timeout_secs: u64,

    /// How long a sign-in to the web dashboard (/ui) lasts, e.g. `30m`, `12h`, `7d` (not `0`).
    /// Revoking or expiring the token ends its sessions sooner.
    #[arg(long, env = "TASKPILOT_UI_SESSION_TTL", default_value = "12h", global = true,
          value_parser = parse_session_ttl)]
    pub ui_session_ttl: Duration,

    /// HTTP worker threads; defaults to the number of CPU cores.
    #[arg(long, env = "TASKPILOT_WORKERS", default_value_t = default_workers(), global = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: usize,
}

impl Config {
    /// The first retry delay.
    pub fn backoff_base(&self) -> TimeDelta {
        TimeDelta::milliseconds(i64::try_from(self.backoff_base_ms).unwrap_or(i64::MAX))
    }

    /// The longest retry delay.
    pub fn backoff_max(&self) -> TimeDelta {
        TimeDelta::milliseconds(i64::try_from(self.backoff_max_ms).unwrap_or(i64::MAX))
    }

    /// The retry policy these settings describe.
    ///
    /// # Errors
    /// When the cap is below the base delay.
    pub fn backoff(&self) -> anyhow::Result<ExponentialBackoff> {
        ExponentialBackoff::new(self.backoff_base(), self.backoff_max()).map_err(|_| {
            anyhow::anyhow!(
                "TASKPILOT_BACKOFF_MAX_MS ({}) must be at least TASKPILOT_BACKOFF_BASE_MS ({})",
                self.backoff_max_ms,
                self.backoff_base_ms
            )
        })
    }

    /// The attempt budget of tasks created without one.
    ///
    /// # Errors
    /// Outside 1 to 100.
    pub fn default_max_attempts(&self) -> anyhow::Result<MaxAttempts> {
        MaxAttempts::new(self.default_max_attempts)
            .map_err(|e| anyhow::anyhow!("TASKPILOT_DEFAULT_MAX_ATTEMPTS: {e}"))
    }

    /// The crash budget of tasks created without `maxCrashes`.
    ///
    /// # Errors
    /// Outside 1 to 100.
    pub fn max_crashes(&self) -> anyhow::Result<MaxCrashes> {
        MaxCrashes::new(self.max_crashes).map_err(|e| anyhow::anyhow!("TASKPILOT_MAX_CRASHES: {e}"))
    }

    /// The lease of claims, starts and heartbeats that do not ask for one.
    ///
    /// # Errors
    /// Outside 5 to 86400 seconds.
    pub fn default_lease(&self) -> anyhow::Result<LeaseDuration> {
        LeaseDuration::from_secs(self.default_lease_secs)
            .map_err(|e| anyhow::anyhow!("TASKPILOT_DEFAULT_LEASE_SECS: {e}"))
    }

    /// The service's defaults: attempt budget and lease.
    ///
    /// # Errors
    /// When either is out of range.
    pub fn service_defaults(&self) -> anyhow::Result<ServiceDefaults> {
        Ok(ServiceDefaults {
            max_attempts: self.default_max_attempts()?,
            lease: self.default_lease()?,
        })
    }

    /// How often the server re-measures its offset from PostgreSQL's clock.
    pub fn clock_refresh(&self) -> Duration {
        Duration::from_secs(self.clock_refresh_secs)
    }

    /// How long one connection attempt may take.
    pub fn db_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.db_connect_timeout_ms)
    }

    /// How long a request waits for a pooled connection.
    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }

    /// How long a statement of a pooled database session may run; zero for no limit.
    pub fn db_statement_timeout(&self) -> Duration {
        Duration::from_millis(self.db_statement_timeout_ms)
    }

    /// How long a pooled database session may sit idle in a transaction; zero for no limit.
    pub fn db_idle_in_transaction_timeout(&self) -> Duration {
        Duration::from_millis(self.db_idle_in_transaction_timeout_ms)
    }

    /// How long finished tasks are kept, by status.
    pub fn retention(&self) -> Retention {
        Retention::new(self.retention_succeeded, self.retention_failed, self.retention_cancelled)
    }

    /// How long an `Idempotency-Key` is kept.
    pub fn idempotency_ttl(&self) -> TimeDelta {
        TimeDelta::from_std(self.idempotency_ttl).unwrap_or(TimeDelta::MAX)
    }

    /// The HTTP-level part of the configuration.
    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            max_body_bytes: self.max_body_bytes,
            max_batch_body_bytes: self.max_batch_body_bytes,
            workers: self.workers,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            reaper_interval: Duration::from_millis(self.reaper_interval_ms),
            schedule_poll_interval: DEFAULT_SCHEDULE_POLL_INTERVAL,
            prune_interval: Duration::from_millis(self.prune_interval_ms),
            counts_fold_interval: Duration::from_millis(self.counts_fold_interval_ms),
            metrics_max_queues: self.metrics_max_queues,
            ui_session_ttl: self.ui_session_ttl,
        }
    }
}

/// Reads a keep time: a whole number with a unit, `s`, `m`, `h` or `d` (`90s`, `15m`, `24h`,
/// `14d`), or `0` for forever.
fn parse_keep_for(raw: &str) -> Result<KeepFor, String> {
    parse_duration(raw)
        .map(KeepFor::from_duration)
        .map_err(|e| format!("{e}, or 0 to keep forever"))
}

/// Reads how long idempotency keys are kept: a duration as for keep times, never `0`.
fn parse_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw) {
        Ok(ttl) if ttl.is_zero() => {
            Err("the idempotency TTL must be longer than 0 (such as 24h)".to_owned())
        }
        other => other,
    }
}

/// Reads how long a dashboard sign-in lasts: a duration as for keep times, never `0`.
fn parse_session_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw) {
        Ok(ttl) if ttl.is_zero() => {
            Err("the dashboard session lifetime must be longer than 0 (such as 12h)".to_owned())
        }
        other => other,
    }
}

/// A duration written as a whole number and a unit (`s`, `m`, `h`, `d`), or `0`.
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let invalid = || {
        format!(
            "{raw:?} is not a duration: write a whole number and a unit, s, m, h or d \
             (90s, 15m, 24h, 14d)"
        )
    };
    if raw == "0" {
        return Ok(Duration::ZERO);
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(invalid)
}

/// How often a server asks the database for the next scheduled run, to wake long-polling
/// claims when it comes due.
pub const DEFAULT_SCHEDULE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a dashboard sign-in lasts unless configured: 12 hours, a working day.
pub const DEFAULT_UI_SESSION_TTL: Duration = Duration::from_secs(12 * 3_600);

/// The default body limit of the batch endpoints: 16 MiB.
pub const DEFAULT_MAX_BATCH_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What the HTTP server itself needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted body of the batch endpoints, in bytes.
    pub max_batch_body_bytes: usize,
    /// HTTP worker threads.
    pub workers: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Pause between two passes of the lease reaper.
    pub reaper_interval: Duration,
    /// How often the server asks for the next scheduled run (see
    /// [`DEFAULT_SCHEDULE_POLL_INTERVAL`]).
    pub schedule_poll_interval: Duration,
    /// Pause between two passes of the pruner (see [`Config::retention`]).
    pub prune_interval: Duration,
    /// Pause between two compactions of the maintained task counts.
    pub counts_fold_interval: Duration,
    /// Most queues with a label of their own in the metrics and the stats.
    pub metrics_max_queues: u32,
    /// How long a dashboard sign-in lasts.
    pub ui_session_ttl: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_048_576,
            max_batch_body_bytes: DEFAULT_MAX_BATCH_BODY_BYTES,
            workers: default_workers(),
            shutdown_timeout: Duration::from_secs(30),
            reaper_interval: Duration::from_secs(1),
            schedule_poll_interval: DEFAULT_SCHEDULE_POLL_INTERVAL,
            prune_interval: Duration::from_secs(60),
            counts_fold_interval: Duration::from_secs(10),
            metrics_max_queues: 50,
            ui_session_ttl: DEFAULT_UI_SESSION_TTL,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `url` with its password replaced by `***`, fit for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A libpq key=value string may hold `password=...`; say nothing about it.
        return "<connection string>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_mean_serve_with_the_documented_defaults() {
        let cli = Cli::try_parse_from(["taskpilot"]).unwrap();

        assert_eq!(cli.subcommand(), Command::Serve);
        assert_eq!(cli.config.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.config.backoff_base_ms, 1_000);
        assert_eq!(cli.config.backoff_max_ms, 3_600_000);
        assert_eq!(cli.config.default_max_attempts, 25);
        assert_eq!(cli.config.max_crashes().unwrap().get(), 3);
        assert_eq!(cli.config.max_body_bytes, 1_048_576);
        assert_eq!(cli.config.max_batch_body_bytes, 16 * 1024 * 1024);
        assert_eq!(cli.config.default_lease_secs, 300);
        assert_eq!(cli.config.reaper_interval_ms, 1_000);
        assert_eq!(cli.config.clock_refresh_secs, 5);
        assert_eq!(cli.config.db_acquire_timeout(), Duration::from_millis(500));
        assert_eq!(cli.config.db_connect_timeout(), Duration::from_secs(2));
        assert_eq!(cli.config.default_lease().unwrap().secs(), 300);
        assert_eq!(cli.config.http().reaper_interval, Duration::from_secs(1));
    }

    #[test]
    fn a_default_lease_outside_5_to_86400_seconds_is_refused() {
        for secs in ["4", "86401", "-1"] {
            let parsed = Cli::try_parse_from(["taskpilot", "--default-lease-secs", secs]);

            assert!(parsed.is_err(), "{secs}");
        }
        let cli = Cli::try_parse_from(["taskpilot", "--default-lease-secs", "5"]).unwrap();
        assert_eq!(cli.config.service_defaults().unwrap().lease.secs(), 5);
    }

    #[test]
    fn a_zero_reaper_interval_or_clock_refresh_is_refused() {
        assert!(Cli::try_parse_from(["taskpilot", "--reaper-interval-ms", "0"]).is_err());
        assert!(Cli::try_parse_from(["taskpilot", "--clock-refresh-secs", "0"]).is_err());
    }

    #[test]
    fn the_help_names_every_new_option_with_its_variable_and_default() {
        let help = Cli::command().render_long_help().to_string();

        for (flag, var, default) in [
            ("--default-lease-secs", "TASKPILOT_DEFAULT_LEASE_SECS", "300"),
            ("--reaper-interval-ms", "TASKPILOT_REAPER_INTERVAL_MS", "1000"),
            ("--clock-refresh-secs", "TASKPILOT_CLOCK_REFRESH_SECS", "5"),
            ("--retention-succeeded", "TASKPILOT_RETENTION_SUCCEEDED", "24h"),
            ("--retention-failed", "TASKPILOT_RETENTION_FAILED", "14d"),
            ("--retention-cancelled", "TASKPILOT_RETENTION_CANCELLED", "7d"),
            ("--prune-interval-ms", "TASKPILOT_PRUNE_INTERVAL_MS", "60000"),
            ("--idempotency-ttl", "TASKPILOT_IDEMPOTENCY_TTL", "24h"),
            ("--counts-fold-interval-ms", "TASKPILOT_COUNTS_FOLD_INTERVAL_MS", "10000"),
            ("--metrics-max-queues", "TASKPILOT_METRICS_MAX_QUEUES", "50"),
            ("--ui-session-ttl", "TASKPILOT_UI_SESSION_TTL", "12h"),
            ("--db-statement-timeout-ms", "TASKPILOT_DB_STATEMENT_TIMEOUT_MS", "30000"),
            ("--db-acquire-timeout-ms", "TASKPILOT_DB_ACQUIRE_TIMEOUT_MS", "500"),
            (
                "--db-idle-in-transaction-timeout-ms",
                "TASKPILOT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                "10000",
            ),
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
            assert!(help.contains(var), "{var} missing from --help");
            assert!(help.contains(&format!("[default: {default}]")), "{default} missing");
        }
    }

    #[test]
    fn retention_defaults_to_a_day_two_weeks_and_a_week_pruned_every_minute() {
        let cli = Cli::try_parse_from(["taskpilot"]).unwrap();

        assert_eq!(cli.config.retention(), Retention::default());
        assert_eq!(cli.config.http().prune_interval, Duration::from_secs(60));
        assert_eq!(cli.config.db_statement_timeout(), Duration::from_secs(30));
        assert_eq!(cli.config.db_idle_in_transaction_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn keep_times_take_seconds_minutes_hours_and_days_and_zero_keeps_forever() {
        let cli = Cli::try_parse_from([
            "taskpilot",
            "--retention-succeeded",
            "90s",
            "--retention-failed",
            "0",
            "--retention-cancelled",
            "15m",
        ])
        .unwrap();

        assert_eq!(
            cli.config.retention(),
            Retention::new(
                KeepFor::Duration(TimeDelta::seconds(90)),
                KeepFor::Forever,
                KeepFor::Duration(TimeDelta::minutes(15)),
            )
        );
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 14d "), Ok(Duration::from_secs(14 * 86_400)));
    }

    #[test]
    fn idempotency_keys_are_kept_a_day_unless_told_otherwise_and_never_for_zero() {
        let default = Cli::try_parse_from(["taskpilot"]).unwrap();
        let set = Cli::try_parse_from(["taskpilot", "--idempotency-ttl", "15m"]).unwrap();

        assert_eq!(default.config.idempotency_ttl(), TimeDelta::hours(24));
        assert_eq!(set.config.idempotency_ttl(), TimeDelta::minutes(15));
        for value in ["0", "24", "1.5h"] {
            let arg = format!("--idempotency-ttl={value}");
            let error = Cli::try_parse_from(["taskpilot", &arg]).unwrap_err().to_string();
            assert!(error.contains("--idempotency-ttl"), "{value:?}: {error}");
        }
    }

    #[test]
    fn a_dashboard_sign_in_lasts_twelve_hours_unless_told_otherwise_and_never_zero() {
        let default = Cli::try_parse_from(["taskpilot"]).unwrap();
        let set = Cli::try_parse_from(["taskpilot", "--ui-session-ttl", "30m"]).unwrap();

        assert_eq!(default.config.http().ui_session_ttl, Duration::from_secs(12 * 3_600));
        assert_eq!(set.config.http().ui_session_ttl, Duration::from_secs(30 * 60));
        let error = Cli::try_parse_from(["taskpilot", "--ui-session-ttl=0"]).unwrap_err();
        assert!(error.to_string().contains("--ui-session-ttl"), "{error}");
    }

    #[test]
    fn a_bad_keep_time_fails_start_up_naming_its_flag() {
        for (flag, value) in [
            ("--retention-succeeded", "24"),
            ("--retention-failed", "2w"),
            ("--retention-cancelled", "-1d"),
            ("--retention-succeeded", "1.5h"),
            ("--retention-succeeded", "h"),
            ("--retention-succeeded", ""),
            ("--retention-failed", "99999999999999999999d"),
        ] {
            let arg = format!("{flag}={value}");
            let error = Cli::try_parse_from(["taskpilot", &arg]).unwrap_err().to_string();

            assert!(error.contains(flag), "{flag} {value:?}: {error}");
            assert!(error.contains("not a duration"), "{flag} {value:?}: {error}");
        }
    }

    #[test]
    fn session_timeouts_are_read_in_milliseconds_and_zero_lifts_them() {
        let cli = Cli::try_parse_from([
            "taskpilot",
            "--db-statement-timeout-ms",
            "0",
            "--db-idle-in-transaction-timeout-ms",
            "2500",
        ])
        .unwrap();

        assert_eq!(cli.config.db_statement_timeout(), Duration::ZERO);
        assert_eq!(cli.config.db_idle_in_transaction_timeout(), Duration::from_millis(2_500));
    }

    #[test]
    fn options_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["taskpilot", "migrate", "--db-pool-size", "3"]).unwrap();

        assert_eq!(cli.subcommand(), Command::Migrate);
        assert_eq!(cli.config.db_pool_size, 3);
    }

    #[test]
    fn a_default_max_attempts_outside_one_to_a_hundred_is_refused() {
        assert!(Cli::try_parse_from(["taskpilot", "--default-max-attempts", "0"]).is_err());
        assert!(Cli::try_parse_from(["taskpilot", "--default-max-attempts", "101"]).is_err());
    }

    #[test]
    fn a_crash_budget_outside_one_to_a_hundred_is_refused() {
        for bad in ["0", "101", "-1"] {
            assert!(Cli::try_parse_from(["taskpilot", "--max-crashes", bad]).is_err(), "{bad}");
        }
        let cli = Cli::try_parse_from(["taskpilot", "--max-crashes", "1"]).unwrap();
        assert_eq!(cli.config.max_crashes().unwrap().get(), 1);
    }

    #[test]
    fn a_backoff_cap_below_its_base_is_refused() {
        let cli = Cli::try_parse_from([
            "taskpilot",
            "--backoff-base-ms",
            "500",
            "--backoff-max-ms",
            "100",
        ])
        .unwrap();

        assert!(cli.config.backoff().is_err());
    }

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/tp"), "postgres://app:***@db:5432/tp");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/tp"),
            "postgres://postgres@127.0.0.1/tp"
        );
        assert_eq!(redact_url("host=db password=s3cret"), "<connection string>");
    }
}
