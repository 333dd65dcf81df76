//! TaskPilot's PostgreSQL adapter: [`PgTaskRepository`] implements the app's
//! `TaskRepository` port on diesel and an r2d2 pool.
//!
//! It owns everything that knows the database:
//!
//! - the schema (`schema`, private) and the rows, which mirror the tables and never leave
//!   this crate: callers see domain tasks and events only;
//! - the repositories, which translate between rows and domain values and decide nothing: a
//!   row that breaks a domain invariant is an error, never a panic;
//! - the migrations of the top-level `migrations/` folder, embedded in the binary and run by
//!   [`run_migrations`];
//! - [`PgClock`], which follows the database's clock so that every server means the same
//!   instant by "now", and [`spawn_listener`] / [`RunnableListener`], which turn the
//!   `taskpilot_runnable` notifications into wake-ups for long-polling claims;
//! - [`local`], a PostgreSQL cluster started from the installed binaries, for the development
//!   server and for tests;
//! - behind feature `testing`, the test-database harness `testing::TestDatabase`: one
//!   migrated template per server and migration set, copied into a fresh database per test.
//!
//! It depends on the domain and the app's ports, never the other way round, and must never
//! import actix or the HTTP crate (`taskpilot-http`): the web adapter depends on this one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection as _};
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness as _};

mod clock;
mod database_url;
pub mod local;
mod notify;
mod outage;
mod repository;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::PgClock;
pub use notify::{spawn_listener, OnWake, RunnableListener, RUNNABLE_CHANNEL};
pub use repository::{PgTaskRepository, SchemaReady};

/// The migrations in the top-level `migrations/` folder, compiled into the binary.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Serializes migrations across every process migrating the same database: servers starting
/// together must not race to create the same table. Any fixed number works; this one reads
/// "taskpilot" in ASCII, truncated to 8 bytes.
const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_7069_6c6f;

/// A pool of PostgreSQL connections.
pub type PgPool = diesel::r2d2::Pool<ConnectionManager<PgConnection>>;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long one attempt to open a connection may take (libpq's `connect_timeout`, in
    /// whole seconds of at least 2, unless the URL sets its own).
    pub connect_timeout: Duration,
    /// How long a caller waits for a connection from the pool before storage counts as
    /// unavailable: while the database is down, how long each request waits for its 503.
    pub acquire_timeout: Duration,
}

/// Limits PostgreSQL enforces on each of the pool's sessions, so that one stuck request
/// can never hold a snapshot or a lock for long: an old snapshot keeps vacuum from removing
/// the dead rows every transition leaves behind, and a held lock stalls writers.
///
/// Long-polling claims are not statements that wait: they wait in the server between short
/// claim statements, so a statement timeout never cuts them short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// `statement_timeout`: PostgreSQL cancels a statement that runs longer. Zero: no limit.
    pub statement: Duration,
    /// `idle_in_transaction_session_timeout`: PostgreSQL ends a session that sits idle this
    /// long inside an open transaction, releasing its locks and its snapshot. Zero: no limit.
    pub idle_in_transaction: Duration,
}

impl SessionTimeouts {
    /// 30 seconds per statement, 10 seconds idle in a transaction: far above anything the
    /// repository's statements and short transactions take.
    pub const DEFAULT: Self =
        Self { statement: Duration::from_secs(30), idle_in_transaction: Duration::from_secs(10) };

    /// The `SET` statements that apply these limits to a session, in whole milliseconds
    /// (rounded up, at most PostgreSQL's largest value).
    fn set_sql(&self) -> String {
        fn millis(d: Duration) -> u128 {
            (d.as_nanos().div_ceil(1_000_000)).min(i32::MAX as u128)
        }
        format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            millis(self.statement),
            millis(self.idle_in_transaction)
        )
    }
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Prepares every connection the pool opens, once per connection (not per checkout): applies
/// [`SessionTimeouts`] in one round trip and installs a [`LossWatch`].
#[derive(Debug)]
struct PrepareSession(String);

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for PrepareSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&self.0).map_err(diesel::r2d2::Error::QueryError)?;
        // A new session answered: the database is reachable (a connection handed out again
        // after an outage may be dead, so a checkout alone proves nothing).
        outage::OUTAGE.reached();
        conn.set_instrumentation(LossWatch::default());
        Ok(())
    }
}

/// Remembers whether a statement on its connection failed because the connection was lost.
///
/// diesel marks a connection broken, so that r2d2 discards it when it comes back, after most
/// failures on a lost connection, but not when a query fails while being prepared (the first
/// run of a cached query on that connection): such a connection would go back to the pool
/// and fail every call that gets it. [`checkout`] reads this flag instead.
#[derive(Debug, Default)]
struct LossWatch {
    lost: bool,
}

impl Instrumentation for LossWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        // diesel reports every error on a connection libpq gave up on as one of these kinds.
        if let InstrumentationEvent::FinishQuery {
            error:
                Some(diesel::result::Error::DatabaseError(
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                    _,
                )),
            ..
        } = event
        {
            self.lost = true;
        }
    }
}

/// A connection checked out of a [`PgPool`].
pub type PgPooledConnection = diesel::r2d2::PooledConnection<ConnectionManager<PgConnection>>;

/// A connection from `pool` that has not lost its server as far as anyone has seen, without
/// a round trip to find out: a connection whose last statement found it lost is discarded
/// instead, and the next one taken. Each connection that dies therefore fails at most the one
/// call that finds out; every caller of the pool should check out through here.
///
/// # Errors
/// When the pool has no working connection to give within its connection timeout.
pub fn checkout(pool: &PgPool) -> Result<PgPooledConnection, diesel::r2d2::PoolError> {
    // Bounded, in case a connection flagged lost cannot be marked broken: at worst it is
    // handed out once more and its call fails, as it would have anyway.
    for _ in 0..=pool.max_size() {
        let mut conn = pool.get()?;
        let lost =
            conn.instrumentation().downcast_mut::<LossWatch>().is_some_and(|watch| watch.lost);
        if !lost {
            return Ok(conn);
        }
        // A statement on a connection libpq gave up on fails at once, without a round trip,
        // and makes diesel mark the connection broken: r2d2 drops it when it comes back.
        if conn.batch_execute("").is_ok() {
            // It answered after all (a lost server came back on the same socket cannot
            // happen, but a misread error can): keep it.
            if let Some(watch) = conn.instrumentation().downcast_mut::<LossWatch>() {
                watch.lost = false;
            }
            return Ok(conn);
        }
    }
    pool.get()
}

/// [`build_pool_with_timeouts`] with [`SessionTimeouts::DEFAULT`].
///
/// # Errors
/// When the URL or settings are unusable.
pub fn build_pool(database_url: &str, config: &PoolConfig) -> anyhow::Result<PgPool> {
    build_pool_with_timeouts(database_url, config, SessionTimeouts::DEFAULT)
}

/// Builds a pool without connecting: a server can start while the database is down and
/// recovers by itself when it is back. Every connection it opens gets `timeouts`.
///
/// Unless `database_url` sets its own, a `connect_timeout` (at least libpq's minimum of 2
/// seconds) is added to it: libpq waits forever for an unanswered connection attempt by
/// default, which would pin the pool's connecting threads to a dead host.
///
/// A checkout does not test its connection (r2d2 would run a `SELECT 1` first, a round trip
/// on every call). A connection that died meanwhile (the server restarted, an administrator
/// ended the session) fails the one call that uses it: libpq reports the connection lost,
/// and the connection is discarded, by r2d2 when diesel marked it broken, else by the next
/// [`checkout`]. So after an outage each dead connection costs at most one failed call,
/// answered as unavailable, and the pool refills with fresh ones.
///
/// # Errors
/// When the URL or settings are unusable.
pub fn build_pool_with_timeouts(
    database_url: &str,
    config: &PoolConfig,
    timeouts: SessionTimeouts,
) -> anyhow::Result<PgPool> {
    anyhow::ensure!(config.max_size > 0, "the pool needs room for at least one connection");
    anyhow::ensure!(!config.connect_timeout.is_zero(), "the connect timeout must be positive");
    anyhow::ensure!(!config.acquire_timeout.is_zero(), "the acquire timeout must be positive");
    let url = with_connect_timeout(database_url, config.connect_timeout);
    let pool = diesel::r2d2::Pool::builder()
        .max_size(config.max_size)
        .connection_timeout(config.acquire_timeout)
        .test_on_check_out(false)
        .connection_customizer(Box::new(PrepareSession(timeouts.set_sql())))
        .error_handler(Box::new(TracingErrorHandler))
        .event_handler(Box::new(CountCheckouts))
        // build_unchecked: no connection now; r2d2 keeps trying in the background, so the
        // pool heals once the database is back.
        .build_unchecked(ConnectionManager::new(url));
    Ok(pool)
}

/// Waits, at most `within`, until `pool` has opened every connection it is filling in the
/// background. A short-lived process (`taskpilot migrate`) calls this before it exits: r2d2
/// opens connections on threads of its own, and a process that exits while one of them is
/// inside libpq runs libpq's and OpenSSL's exit handlers under it, which can crash the
/// process after its work is done.
pub fn settle_pool(pool: &PgPool, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while pool.state().connections < pool.max_size() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `database_url` with libpq's `connect_timeout` set from `timeout`, unless already set.
fn with_connect_timeout(database_url: &str, timeout: Duration) -> String {
    // libpq takes whole seconds and treats anything below 2 as 2.
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    database_url::with_default_param(database_url, "connect_timeout", &seconds.max(2).to_string())
}

/// Logs what r2d2's background threads cannot hand to a caller (failed connection attempts)
/// through `tracing` rather than the `log` crate, which nothing here listens to, at debug.
#[derive(Debug)]
struct TracingErrorHandler;

impl diesel::r2d2::HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        // r2d2 retries on its own, many times a second while the database is down: the
        // outage is logged once, by the calls that fail ([`outage`]), not per attempt.
        tracing::debug!(error = %error, "database connection attempt failed: {error}");
    }
}

/// How the connection pools of this process handed out connections since it started: what
/// the server's metrics show of the pool besides its current state (`PgPool::state`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolCheckouts {
    /// Connections handed out.
    pub checkouts: u64,
    /// Seconds callers waited for them, all together.
    pub wait_seconds: f64,
    /// Checkouts that gave up after the connect timeout.
    pub timeouts: u64,
}

static CHECKOUTS: AtomicU64 = AtomicU64::new(0);
static CHECKOUT_WAIT_MICROS: AtomicU64 = AtomicU64::new(0);
static CHECKOUT_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// The checkouts of every pool [`build_pool_with_timeouts`] built in this process. Counted
/// for the process rather than per pool, because r2d2 keeps its event handler to itself; a
/// server has one pool.
pub fn pool_checkouts() -> PoolCheckouts {
    PoolCheckouts {
        checkouts: CHECKOUTS.load(Ordering::Relaxed),
        wait_seconds: Duration::from_micros(CHECKOUT_WAIT_MICROS.load(Ordering::Relaxed))
            .as_secs_f64(),
        timeouts: CHECKOUT_TIMEOUTS.load(Ordering::Relaxed),
    }
}

/// Counts checkouts, their waits and their timeouts into [`pool_checkouts`].
#[derive(Debug)]
struct CountCheckouts;

impl diesel::r2d2::HandleEvent for CountCheckouts {
    fn handle_checkout(&self, event: diesel::r2d2::event::CheckoutEvent) {
        let waited = u64::try_from(event.duration().as_micros()).unwrap_or(u64::MAX);
        CHECKOUTS.fetch_add(1, Ordering::Relaxed);
        CHECKOUT_WAIT_MICROS.fetch_add(waited, Ordering::Relaxed);
    }

    fn handle_timeout(&self, _event: diesel::r2d2::event::TimeoutEvent) {
        CHECKOUT_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// What [`run_migrations`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The migrations it applied, oldest first, by their full names
    /// (`2026-11-26-093000_create_tasks`, the folder's name under `migrations/`); empty when
    /// the schema was up to date.
    pub applied: Vec<String>,
    /// How many migrations the database has now, applied by this call or before.
    pub total: usize,
}

/// Applies every pending embedded migration and says which.
///
/// Holds a PostgreSQL advisory lock meanwhile, so that several servers starting at once on
/// one database migrate it one after the other; the later ones find nothing pending.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub fn run_migrations(pool: &PgPool) -> anyhow::Result<MigrationReport> {
    let mut conn = pool.get().context("cannot reach the database to migrate it")?;
    without_session_timeouts(&mut conn, migrate)
}

/// Runs `work` on `conn` with the pool's [`SessionTimeouts`] lifted, then puts them back:
/// waiting for another server's migrations and building an index on a large table may both
/// take longer than any request should.
fn without_session_timeouts<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    #[derive(QueryableByName)]
    struct Settings {
        #[diesel(sql_type = Text)]
        statement: String,
        #[diesel(sql_type = Text)]
        idle_in_transaction: String,
    }
    let saved: Settings = diesel::sql_query(
        "SELECT current_setting('statement_timeout') AS statement, \
         current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction",
    )
    .get_result(conn)
    .context("cannot read the session's timeouts")?;
    conn.batch_execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .context("cannot lift the session's timeouts")?;
    let outcome = work(conn);
    let restored = diesel::sql_query(
        "SELECT set_config('statement_timeout', $1, false), \
         set_config('idle_in_transaction_session_timeout', $2, false)",
    )
    .bind::<Text, _>(&saved.statement)
    .bind::<Text, _>(&saved.idle_in_transaction)
    .execute(conn);
    let outcome = outcome?;
    // Only a broken connection fails here, and the pool discards it.
    restored.context("cannot restore the session's timeouts")?;
    Ok(outcome)
}

/// [`run_migrations`] on one connection: `testing` migrates its template database through a
/// connection of its own, which it must close before the template can be copied.
pub(crate) fn migrate(conn: &mut PgConnection) -> anyhow::Result<MigrationReport> {
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn)
        .context("cannot take the migration lock")?;
    let report = apply_pending(conn);
    // Release before judging the outcome: the connection goes back to the pool, and a lock
    // left on it would block every other server's migrations for as long as it lives.
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn);
    let report = report?;
    // Only a broken connection fails here, and its lock dies with its session.
    unlocked.context("cannot release the migration lock")?;
    Ok(report)
}

/// What `run_pending_migrations` does, one migration at a time, keeping each one's full name
/// (diesel returns only the versions, the names' leading timestamps).
fn apply_pending(conn: &mut PgConnection) -> anyhow::Result<MigrationReport> {
    // diesel's migration errors are boxed `dyn Error`s, which `anyhow` takes through `msg`.
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| anyhow::anyhow!(e);
    let pending = conn
        .pending_migrations(MIGRATIONS)
        .map_err(failed)
        .context("cannot list pending migrations")?;
    let mut applied = Vec::with_capacity(pending.len());
    for migration in &pending {
        let name = migration.name().to_string();
        conn.run_migration(migration.as_ref())
            .map_err(failed)
            .with_context(|| format!("migration {name} failed"))?;
        applied.push(name);
    }
    let total =
        conn.applied_migrations().map_err(failed).context("cannot list applied migrations")?.len();
    Ok(MigrationReport { applied, total })
}

/// How long [`ensure_database`] waits for each connection.
const ENSURE_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`probe_database`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatabaseProbe {
    /// The database answered.
    Exists,
    /// The server answered, and it has no database of this name.
    Missing {
        /// The database's name.
        name: String,
    },
    /// No answer that tells: the server is down or unreachable, or refused for another reason.
    Unreachable(anyhow::Error),
}

/// Looks whether the database of `database_url` exists, without creating it, waiting at most
/// `timeout` for each connection.
pub fn probe_database(database_url: &str, timeout: Duration) -> DatabaseProbe {
    let error = match PgConnection::establish(&with_connect_timeout(database_url, timeout)) {
        Ok(_) => return DatabaseProbe::Exists,
        Err(e) => e,
    };
    let unreachable = |error: diesel::ConnectionError| {
        DatabaseProbe::Unreachable(anyhow::Error::new(error).context("cannot connect"))
    };
    let Some(name) = database_url::database_name(database_url) else {
        return unreachable(error);
    };
    // A server speaking English says so; any other asks its catalogue, when it lets us in.
    if error.to_string().contains(&format!("database \"{name}\" does not exist")) {
        return DatabaseProbe::Missing { name };
    }
    let maintenance =
        with_connect_timeout(&database_url::with_database(database_url, "postgres"), timeout);
    match PgConnection::establish(&maintenance).map(|mut conn| database_exists(&mut conn, &name)) {
        Ok(Ok(false)) => DatabaseProbe::Missing { name },
        _ => unreachable(error),
    }
}

/// Creates the database named in `database_url` when it does not exist yet, connecting to
/// the server's `postgres` database to do so.
///
/// # Errors
/// When the server cannot be reached or refuses.
pub fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let Some(name) = database_url::database_name(database_url) else {
        // No database named: libpq connects to the one named after the user, which we do not
        // create on anyone's behalf.
        return Ok(());
    };
    // A database we can connect to exists: nothing to do, and no need for access to the
    // `postgres` database, which managed servers often deny.
    if PgConnection::establish(&with_connect_timeout(database_url, ENSURE_TIMEOUT)).is_ok() {
        return Ok(());
    }
    let maintenance_url = with_connect_timeout(
        &database_url::with_database(database_url, "postgres"),
        ENSURE_TIMEOUT,
    );
    let mut conn = PgConnection::establish(&maintenance_url)
        .with_context(|| format!("cannot connect to the server of database {name:?}"))?;
    create_database_if_missing(&mut conn, &name)
}

/// Creates database `name` through `conn` unless it exists. Another process creating it at
/// the same moment is fine: the outcome is the same.
fn create_database_if_missing(conn: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    if database_exists(conn, name)? {
        return Ok(());
    }
    let created =
        conn.batch_execute(&format!("CREATE DATABASE {}", database_url::quote_identifier(name)));
    match created {
        Ok(()) => {
            tracing::info!(database = %name, "created database {name}");
            Ok(())
        }
        // Lost a race with a concurrent creator (duplicate_database): it exists, as wanted.
        Err(_) if database_exists(conn, name)? => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create database {name:?}")),
    }
}

fn database_exists(conn: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let row: Found =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
            .bind::<Text, _>(name)
            .get_result(conn)
            .with_context(|| format!("cannot look up database {name:?}"))?;
    Ok(row.found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeout_is_added_in_whole_seconds_of_at_least_two() {
        assert_eq!(
            with_connect_timeout("postgres://h/db", Duration::from_millis(500)),
            "postgres://h/db?connect_timeout=2"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db", Duration::from_millis(5_200)),
            "postgres://h/db?connect_timeout=6"
        );
    }

    #[test]
    fn session_timeouts_are_set_in_whole_milliseconds_rounded_up_and_capped() {
        let timeouts = SessionTimeouts {
            statement: Duration::from_micros(1_500),
            idle_in_transaction: Duration::from_secs(u64::MAX),
        };

        assert_eq!(
            timeouts.set_sql(),
            "SET statement_timeout = 2; SET idle_in_transaction_session_timeout = 2147483647"
        );
        assert_eq!(
            SessionTimeouts::DEFAULT.set_sql(),
            "SET statement_timeout = 30000; SET idle_in_transaction_session_timeout = 10000"
        );
    }

    #[test]
    fn an_explicit_connect_timeout_is_respected() {
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=30", Duration::from_secs(5)),
            "postgres://h/db?connect_timeout=30"
        );
    }
}
