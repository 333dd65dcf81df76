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

use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness as _};

mod clock;
mod database_url;
pub mod local;
mod notify;
mod repository;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::PgClock;
pub use notify::{spawn_listener, OnWake, RunnableListener, RUNNABLE_CHANNEL};
pub use repository::PgTaskRepository;

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
    /// How long a caller waits for a connection before storage counts as unavailable.
    pub connect_timeout: Duration,
}

/// Builds a pool without connecting: a server can start while the database is down and
/// recovers by itself when it is back.
///
/// Unless `database_url` sets its own, a `connect_timeout` (at least libpq's minimum of 2
/// seconds) is added to it: libpq waits forever for an unanswered connection attempt by
/// default, which would pin the pool's connecting threads to a dead host.
///
/// # Errors
/// When the URL or settings are unusable.
pub fn build_pool(database_url: &str, config: &PoolConfig) -> anyhow::Result<PgPool> {
    anyhow::ensure!(config.max_size > 0, "the pool needs room for at least one connection");
    anyhow::ensure!(!config.connect_timeout.is_zero(), "the connect timeout must be positive");
    let url = with_connect_timeout(database_url, config.connect_timeout);
    let pool = diesel::r2d2::Pool::builder()
        .max_size(config.max_size)
        .connection_timeout(config.connect_timeout)
        .error_handler(Box::new(TracingErrorHandler))
        // build_unchecked: no connection now; r2d2 keeps trying in the background and each
        // checkout validates its connection, so the pool heals once the database is back.
        .build_unchecked(ConnectionManager::new(url));
    Ok(pool)
}

/// `database_url` with libpq's `connect_timeout` set from `timeout`, unless already set.
fn with_connect_timeout(database_url: &str, timeout: Duration) -> String {
    // libpq takes whole seconds and treats anything below 2 as 2.
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    database_url::with_default_param(database_url, "connect_timeout", &seconds.max(2).to_string())
}

/// Logs what r2d2's background threads cannot hand to a caller (failed connection attempts)
/// through `tracing` rather than the `log` crate, which nothing here listens to.
#[derive(Debug)]
struct TracingErrorHandler;

impl diesel::r2d2::HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(error = %error, "database connection failed: {error}");
    }
}

/// Applies every pending embedded migration.
///
/// Holds a PostgreSQL advisory lock meanwhile, so that several servers starting at once on
/// one database migrate it one after the other; the later ones find nothing pending.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub fn run_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.get().context("cannot reach the database to migrate it")?;
    migrate(&mut conn)
}

/// [`run_migrations`] on one connection: `testing` migrates its template database through a
/// connection of its own, which it must close before the template can be copied.
pub(crate) fn migrate(conn: &mut PgConnection) -> anyhow::Result<()> {
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn)
        .context("cannot take the migration lock")?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
        .map_err(|e| anyhow::anyhow!(e))
        .context("a migration failed");
    // Release before judging the outcome: the connection goes back to the pool, and a lock
    // left on it would block every other server's migrations for as long as it lives.
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(conn);
    let applied = applied?;
    // Only a broken connection fails here, and its lock dies with its session.
    unlocked.context("cannot release the migration lock")?;
    for version in &applied {
        tracing::info!(migration = %version, "applied migration {version}");
    }
    Ok(())
}

/// How long [`ensure_database`] waits for each connection.
const ENSURE_TIMEOUT: Duration = Duration::from_secs(5);

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
    fn an_explicit_connect_timeout_is_respected() {
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=30", Duration::from_secs(5)),
            "postgres://h/db?connect_timeout=30"
        );
    }
}
