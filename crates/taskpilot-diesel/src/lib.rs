//! TaskPilot's PostgreSQL adapter: [`PgTaskRepository`] implements the app's
//! `TaskRepository` port on diesel and an r2d2 pool; migrations from the top-level
//! `migrations/` folder are embedded and run by [`run_migrations`].
//!
//! It translates between rows and domain tasks and decides nothing: a row that breaks a
//! domain invariant is an error, never a panic. It must not import the web crate.
//!
//! [`local`] starts a PostgreSQL cluster from the installed binaries, for the development
//! server and for tests; feature `testing` adds [`testing::TestDatabase`].

// SKELETON: the public API below is the contract the HTTP crate codes against.
// The diesel helper replaces every body.

use std::time::Duration;

use diesel::r2d2::ConnectionManager;
use diesel::PgConnection;

pub mod local;
mod repository;
#[cfg(feature = "testing")]
pub mod testing;

pub use repository::PgTaskRepository;

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
/// # Errors
/// When the URL or settings are unusable.
pub fn build_pool(database_url: &str, config: &PoolConfig) -> anyhow::Result<PgPool> {
    let _ = (database_url, config);
    anyhow::bail!("skeleton")
}

/// Applies every pending embedded migration.
///
/// # Errors
/// When the database cannot be reached or a migration fails.
pub fn run_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let _ = pool;
    anyhow::bail!("skeleton")
}

/// Creates the database named in `database_url` when it does not exist yet, connecting to
/// the server's `postgres` database to do so.
///
/// # Errors
/// When the server cannot be reached or refuses.
pub fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let _ = database_url;
    anyhow::bail!("skeleton")
}
