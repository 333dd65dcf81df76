//! Start-up wiring: find the database, migrate it, build the pool, the clock and the
//! [`TaskService`] over PostgreSQL (`taskpilot_diesel`). Part of the server's wiring, with
//! [`background`](super::background) one of the two modules that name the storage adapter.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context as _;
use taskpilot_app::TaskService;
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::{
    MigrationReport, PgClock, PgPool, PgTaskRepository, PoolConfig, SessionTimeouts,
};
use taskpilot_domain::Clock;

use crate::config::{redact_url, Config};

/// Tried when `DATABASE_URL` is unset: a local PostgreSQL with trust auth.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/taskpilot";
/// Port of the development cluster started when neither `DATABASE_URL` nor
/// [`DEFAULT_DATABASE_URL`] works.
pub const DEV_CLUSTER_PORT: u16 = 54329;
/// How long the probe of [`DEFAULT_DATABASE_URL`] may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The database the server uses, once it exists.
#[derive(Debug)]
pub struct Database {
    /// Its URL.
    pub url: String,
    /// The development cluster, when TaskPilot started one; it outlives this process.
    pub cluster: Option<LocalCluster>,
}

/// The development cluster's data directory.
pub fn dev_cluster_dir() -> PathBuf {
    std::env::temp_dir().join("taskpilot-dev-postgres")
}

/// Finds the database and creates it when missing: `DATABASE_URL` when set; otherwise
/// [`DEFAULT_DATABASE_URL`] when it answers; otherwise a persistent development cluster on
/// port [`DEV_CLUSTER_PORT`] under [`dev_cluster_dir`], started when not running.
///
/// # Errors
/// When `DATABASE_URL` is set and unusable, or no development cluster can be started.
pub fn resolve_database(config: &Config) -> anyhow::Result<Database> {
    if let Some(url) = &config.database_url {
        let shown = redact_url(url);
        taskpilot_diesel::ensure_database(url).with_context(|| {
            format!("cannot reach or create the database at {shown} (DATABASE_URL)")
        })?;
        tracing::info!(database = %shown, "using the database from DATABASE_URL");
        return Ok(Database { url: url.clone(), cluster: None });
    }

    match probe(DEFAULT_DATABASE_URL) {
        Ok(()) => {
            tracing::info!(
                database = DEFAULT_DATABASE_URL,
                "DATABASE_URL is unset; using the local PostgreSQL"
            );
            return Ok(Database { url: DEFAULT_DATABASE_URL.to_owned(), cluster: None });
        }
        Err(e) => tracing::info!(
            database = DEFAULT_DATABASE_URL,
            error = %format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" "),
            "DATABASE_URL is unset and the local PostgreSQL is not usable; starting a development cluster"
        ),
    }

    let dir = dev_cluster_dir();
    let cluster = LocalCluster::start_persistent(&dir, DEV_CLUSTER_PORT).with_context(|| {
        format!(
            "DATABASE_URL is unset, {DEFAULT_DATABASE_URL} is not reachable, and no development \
             cluster could be started in {}; set DATABASE_URL to a PostgreSQL database",
            dir.display()
        )
    })?;
    let url = cluster.url("taskpilot");
    taskpilot_diesel::ensure_database(&url).with_context(|| {
        format!("cannot create database taskpilot on the development cluster at {url}")
    })?;
    tracing::info!(
        database = %url,
        data_dir = %dir.display(),
        "using the development PostgreSQL cluster; it keeps running after TaskPilot exits \
         (stop it with pg_ctl -D <data_dir> stop)"
    );
    Ok(Database { url, cluster: Some(cluster) })
}

/// Runs `ensure_database` with a deadline: a server that does not answer is as good as absent.
fn probe(url: &str) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let owned = url.to_owned();
    std::thread::Builder::new()
        .name("taskpilot-db-probe".into())
        .spawn(move || {
            let _ = tx.send(taskpilot_diesel::ensure_database(&owned));
        })
        .context("cannot spawn the database probe")?;
    rx.recv_timeout(PROBE_TIMEOUT)
        .map_err(|_| anyhow::anyhow!("no answer within {} s", PROBE_TIMEOUT.as_secs()))?
}

/// A pool on `url` sized and timed by `config`, with every migration applied, and what
/// migrating did.
///
/// # Errors
/// When the pool cannot be built or a migration fails.
pub fn connect_and_migrate(
    url: &str,
    config: &Config,
) -> anyhow::Result<(PgPool, MigrationReport)> {
    let pool = taskpilot_diesel::build_pool_with_timeouts(
        url,
        &PoolConfig { max_size: config.db_pool_size, connect_timeout: config.db_connect_timeout() },
        SessionTimeouts {
            statement: config.db_statement_timeout(),
            idle_in_transaction: config.db_idle_in_transaction_timeout(),
        },
    )
    .with_context(|| format!("cannot build a connection pool for {}", redact_url(url)))?;
    let report = taskpilot_diesel::run_migrations(&pool)
        .with_context(|| format!("cannot migrate the database at {}", redact_url(url)))?;
    Ok((pool, report))
}

/// Lets `pool` finish opening the connections it fills in the background (at most twice the
/// connect timeout), for a process about to exit: see [`taskpilot_diesel::settle_pool`].
pub fn settle_pool(pool: &PgPool, config: &Config) {
    taskpilot_diesel::settle_pool(pool, config.db_connect_timeout() * 2);
}

/// What migrating did, one line per applied migration (`applied
/// 2026-11-26-093000_create_tasks`), or `schema is up to date (N migrations)` when nothing was
/// pending: what `taskpilot migrate` prints and `taskpilot serve` logs.
pub fn migration_lines(report: &MigrationReport) -> Vec<String> {
    if report.applied.is_empty() {
        return vec![format!("schema is up to date ({} migrations)", report.total)];
    }
    report.applied.iter().map(|name| format!("applied {name}")).collect()
}

/// Logs [`migration_lines`], one event each.
pub fn log_migrations(report: &MigrationReport) {
    for line in migration_lines(report) {
        tracing::info!(migrations = report.total, "{line}");
    }
}

/// The clock every server shares: PostgreSQL's, followed through an offset re-measured every
/// [`Config::clock_refresh`], so that no request pays a round trip for "now" and a server whose
/// own clock is off still never starts a retry or reaps a lease early.
///
/// # Errors
/// When the database cannot be asked for its time.
pub fn database_clock(pool: PgPool, config: &Config) -> anyhow::Result<Arc<dyn Clock>> {
    let clock = PgClock::start(pool, config.clock_refresh())
        .context("cannot read the time from PostgreSQL")?;
    Ok(clock)
}

/// The use cases over PostgreSQL, `clock` and the configured backoff, defaults and retention.
///
/// # Errors
/// When the backoff, the default attempt budget or the default lease is out of range.
pub fn task_service(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    config: &Config,
) -> anyhow::Result<TaskService> {
    Ok(TaskService::new(
        Arc::new(PgTaskRepository::new(pool)),
        clock,
        Arc::new(config.backoff()?),
        config.service_defaults()?,
    )
    .with_retention(config.retention()))
}

/// What the server's metrics read of `pool` at each scrape: its state now and the process's
/// checkouts ([`taskpilot_diesel::pool_checkouts`]).
pub fn pool_source(pool: PgPool) -> crate::metrics::PoolSource {
    Box::new(move || {
        let state = pool.state();
        let checkouts = taskpilot_diesel::pool_checkouts();
        crate::metrics::PoolSnapshot {
            max: pool.max_size(),
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            checkouts: checkouts.checkouts,
            wait_seconds: checkouts.wait_seconds,
            timeouts: checkouts.timeouts,
        }
    })
}
