//! Start-up wiring: find the database, migrate it, build the pool, the clock and the
//! [`TaskService`] over PostgreSQL (`taskpilot_diesel`). Part of the server's wiring, with
//! [`background`](super::background) one of the two modules that name the storage adapter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use taskpilot_app::{AccessService, NewToken, TaskService};
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::{
    DatabaseProbe, MigrationReport, PgClock, PgPool, PgTaskRepository, PoolConfig, SchemaReady,
    SessionTimeouts,
};
use taskpilot_domain::{Clock, QueueName, QueueScope, TokenId, TokenKind, TokenName};

use super::StopSignal;
use crate::config::{redact_url, AuthMode, Config, TokensCommand};

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

/// Finds the database: `DATABASE_URL` when set, as it is (it is never created: see
/// [`prepare_database`]); otherwise [`DEFAULT_DATABASE_URL`] when it answers, created when
/// missing; otherwise a persistent development cluster on port [`DEV_CLUSTER_PORT`] under
/// [`dev_cluster_dir`], started when not running, with its database created.
///
/// # Errors
/// When `DATABASE_URL` is unset and no development cluster can be started.
pub fn resolve_database(config: &Config) -> anyhow::Result<Database> {
    if let Some(url) = &config.database_url {
        tracing::info!(database = %redact_url(url), "using the database from DATABASE_URL");
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

/// Why a server gives up on `DATABASE_URL` rather than waiting for it: its server answers
/// and has no such database, which only the built-in default is created for.
fn missing_database(url: &str, name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "database {name:?} does not exist on the server of DATABASE_URL ({}); TaskPilot \
         creates only its built-in default database. Create it first, e.g. with \
         `createdb {name}` or `CREATE DATABASE \"{name}\";` as a user allowed to, then start \
         TaskPilot again",
        redact_url(url)
    )
}

/// The first pause between two attempts of [`prepare_database`]; it doubles up to
/// [`MAX_PREPARE_PAUSE`].
const FIRST_PREPARE_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two attempts of [`prepare_database`].
const MAX_PREPARE_PAUSE: Duration = Duration::from_secs(10);

/// Gets the database at `url` ready for a server that already serves: waits, retrying with
/// back-off, until its server answers, applies every pending migration through `pool`, logs
/// what it applied, and sets `ready`. An unreachable database is logged once when the first
/// attempt fails and once when it is reached.
///
/// # Errors
/// When the server answers but has no such database (`DATABASE_URL` is never created), or
/// the server stops meanwhile (`stop`).
pub fn prepare_database(
    url: &str,
    pool: &PgPool,
    config: &Config,
    ready: &SchemaReady,
    stop: &StopSignal,
) -> anyhow::Result<()> {
    let shown = redact_url(url);
    let mut pause = FIRST_PREPARE_PAUSE;
    let mut down_since: Option<(Instant, u32)> = None;
    loop {
        let failed = match taskpilot_diesel::probe_database(url, config.db_connect_timeout()) {
            DatabaseProbe::Missing { name } => return Err(missing_database(url, &name)),
            DatabaseProbe::Exists => match taskpilot_diesel::run_migrations(pool) {
                Ok(report) => {
                    if let Some((since, attempts)) = down_since {
                        tracing::info!(
                            database = %shown,
                            attempts,
                            "the database at {shown} answers after {:.1} s; migrating done, \
                             ready",
                            since.elapsed().as_secs_f64()
                        );
                    }
                    log_migrations(&report);
                    ready.set();
                    return Ok(());
                }
                Err(e) => e.context(format!("cannot migrate the database at {shown}")),
            },
            DatabaseProbe::Unreachable(e) => {
                e.context(format!("cannot reach the database at {shown}"))
            }
            other => anyhow::anyhow!("unexpected look at the database at {shown}: {other:?}"),
        };
        match &mut down_since {
            None => {
                tracing::warn!(
                    database = %shown,
                    error = %format!("{failed:#}"),
                    "the database is not ready; serving 503 and trying again with back-off \
                     up to every {} s: {failed:#}",
                    MAX_PREPARE_PAUSE.as_secs()
                );
                down_since = Some((Instant::now(), 1));
            }
            Some((_, attempts)) => *attempts += 1,
        }
        anyhow::ensure!(stop.pause(pause), "the server stopped before the database was ready");
        pause = (pause * 2).min(MAX_PREPARE_PAUSE);
    }
}

/// A pool on `url` sized and timed by `config`; it connects only when used.
///
/// # Errors
/// When the settings are unusable.
pub fn pool(url: &str, config: &Config) -> anyhow::Result<PgPool> {
    taskpilot_diesel::build_pool_with_timeouts(
        url,
        &PoolConfig {
            max_size: config.db_pool_size,
            connect_timeout: config.db_connect_timeout(),
            acquire_timeout: config.db_acquire_timeout(),
        },
        SessionTimeouts {
            statement: config.db_statement_timeout(),
            idle_in_transaction: config.db_idle_in_transaction_timeout(),
        },
    )
    .with_context(|| format!("cannot build a connection pool for {}", redact_url(url)))
}

/// A pool on `url` sized and timed by `config`, with every migration applied, and what
/// migrating did: for `taskpilot migrate`, which fails at once rather than waiting.
///
/// # Errors
/// When the database does not exist (it is not created), cannot be reached, or a migration
/// fails.
pub fn connect_and_migrate(
    url: &str,
    config: &Config,
) -> anyhow::Result<(PgPool, MigrationReport)> {
    if let DatabaseProbe::Missing { name } =
        taskpilot_diesel::probe_database(url, config.db_connect_timeout())
    {
        return Err(missing_database(url, &name));
    }
    let pool = pool(url, config)?;
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
    service_over(PgTaskRepository::new(pool), clock, config)
}

/// [`task_service`] whose every call answers unavailable (503) until `ready` is set, for a
/// server that serves before its database is migrated ([`prepare_database`]).
///
/// # Errors
/// As [`task_service`].
pub fn task_service_awaiting(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    config: &Config,
    ready: SchemaReady,
) -> anyhow::Result<TaskService> {
    service_over(PgTaskRepository::awaiting_schema(pool, ready), clock, config)
}

fn service_over(
    repository: PgTaskRepository,
    clock: Arc<dyn Clock>,
    config: &Config,
) -> anyhow::Result<TaskService> {
    Ok(TaskService::new(
        Arc::new(repository),
        clock,
        Arc::new(config.backoff()?),
        config.service_defaults()?,
    )
    .with_retention(config.retention())
    .with_idempotency_ttl(config.idempotency_ttl())
    .with_default_max_crashes(config.max_crashes()?))
}

/// The token use cases over PostgreSQL, judged by `clock`.
pub fn access_service(pool: PgPool, clock: Arc<dyn Clock>) -> AccessService {
    AccessService::new(Arc::new(PgTaskRepository::new(pool)), clock)
}

/// Whether every address `bind` listens on is a loopback one (`127.0.0.0/8`, `::1`).
pub fn is_loopback(bind: SocketAddr) -> bool {
    bind.ip().is_loopback()
}

/// The token use cases over PostgreSQL for a server that serves before its database is
/// migrated: every call is unavailable until `ready` is set.
pub fn access_service_awaiting(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    ready: SchemaReady,
) -> AccessService {
    AccessService::new(Arc::new(PgTaskRepository::awaiting_schema(pool, ready)), clock)
}

/// Checks, once the database is ready, that the server may run as configured, and logs once
/// how it authenticates: with [`AuthMode::Auto`], a server on a non-loopback address with no
/// token at all would be open to anyone who can reach it, so it stops. (Until this check,
/// such a server never runs open: its gate asks every request for a token.)
///
/// # Errors
/// That refusal, or storage errors while looking for tokens.
pub fn check_exposure(access: &AccessService, config: &Config) -> anyhow::Result<()> {
    match config.auth {
        AuthMode::Off => tracing::warn!(
            "authentication is off (--auth=off): every request acts as admin; run this only \
             behind something else that authenticates"
        ),
        AuthMode::On => tracing::info!("every request needs an API token (--auth=on)"),
        AuthMode::Auto => {
            let any = access.any_token().context("cannot look for API tokens")?;
            match (any, is_loopback(config.bind)) {
                (true, _) => tracing::info!("every request needs an API token"),
                (false, true) => tracing::warn!(
                    "no API token exists, so this server, on the loopback address {}, runs \
                     open: every request acts as admin. `taskpilot tokens create --kind admin \
                     --name <name>` creates the first token and closes it",
                    config.bind
                ),
                (false, false) => anyhow::bail!(
                    "refusing to listen on {} with no API token: anyone who can reach it could \
                     create, claim and cancel every task. Create a token first (`taskpilot \
                     tokens create --kind admin --name <name>`), or pass --auth=off if \
                     something in front of TaskPilot authenticates",
                    config.bind
                ),
            }
        }
    }
    Ok(())
}

/// `taskpilot tokens …`: what the operator asked, straight in the database, printed to
/// stdout.
///
/// # Errors
/// Invalid values, storage errors.
pub fn run_tokens_command(
    command: &TokensCommand,
    access: &AccessService,
) -> anyhow::Result<Vec<String>> {
    match command {
        TokensCommand::Create { kind, name, queues, expires_in } => {
            let queues = if queues.is_empty() {
                None
            } else {
                Some(queues.iter().map(|q| QueueName::parse(q)).collect::<Result<Vec<_>, _>>()?)
            };
            let expires_at = expires_in
                .map(|d| {
                    let d = chrono::TimeDelta::from_std(d)
                        .ok()
                        .filter(|d| *d > chrono::TimeDelta::zero())
                        .context("--expires-in must be a positive duration such as 90d")?;
                    chrono::Utc::now()
                        .checked_add_signed(d)
                        .context("--expires-in is too far in the future")
                })
                .transpose()?;
            let issued = access.create_token(NewToken {
                name: TokenName::parse(name)?,
                kind: TokenKind::parse(kind)?,
                queues: QueueScope::from_list(queues)?,
                expires_at,
            })?;
            Ok(vec![
                format!(
                    "created {} token {:?} ({}); its secret, shown only now:",
                    issued.token.kind,
                    issued.token.name.as_str(),
                    issued.token.id
                ),
                issued.secret,
            ])
        }
        TokensCommand::List => {
            let tokens = access.tokens()?;
            if tokens.is_empty() {
                return Ok(vec!["no tokens".to_owned()]);
            }
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(|| "-".to_owned(), taskpilot_api::time::format)
            };
            let mut lines =
                vec!["id\tkind\tname\tqueues\tcreated\texpires\tlast used\trevoked".to_owned()];
            lines.extend(tokens.iter().map(|t| {
                let queues = t.queues.to_list().map_or_else(
                    || "*".to_owned(),
                    |l| l.iter().map(QueueName::as_str).collect::<Vec<_>>().join(","),
                );
                format!(
                    "{}\t{}\t{}\t{queues}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.kind,
                    t.name,
                    taskpilot_api::time::format(t.created_at),
                    at(t.expires_at),
                    at(t.last_used_at),
                    at(t.revoked_at)
                )
            }));
            Ok(lines)
        }
        TokensCommand::Revoke { id } => {
            let token = access.revoke(TokenId::from_uuid(*id))?;
            Ok(vec![format!(
                "revoked {} token {:?} ({})",
                token.kind,
                token.name.as_str(),
                token.id
            )])
        }
    }
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
