//! A fresh, migrated database per test.
//!
//! Tests run in parallel threads and in parallel test binaries, so each test gets a database
//! of its own on a shared server rather than a transaction on a shared database: a test may
//! then use many connections (concurrency tests need them) and still see nobody else's rows.

use std::sync::OnceLock;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, PgConnection};

use crate::database_url::{quote_identifier, with_database};
use crate::local::LocalCluster;
use crate::{build_pool, run_migrations, with_connect_timeout, PgPool, PoolConfig};

/// The variable naming a server for tests: any database on it, the test databases are created
/// next to it.
pub const TEST_DATABASE_URL_VAR: &str = "TASKPILOT_TEST_DATABASE_URL";

/// What a test panics with when there is no PostgreSQL to be had.
const NO_SERVER: &str = "PostgreSQL tests need a server: set TASKPILOT_TEST_DATABASE_URL to one \
     (e.g. postgres://postgres@127.0.0.1:5432/postgres), or install PostgreSQL \
     (e.g. `apt-get install postgresql`) so that the tests can start a throwaway cluster \
     themselves";

/// The server the test databases live on, set up once per test process.
struct Server {
    /// A database on it to connect to for creating and dropping test databases.
    maintenance_url: String,
    /// Keeps the throwaway cluster of this process, when there is one. Never dropped (it sits
    /// in a static): its watchdog removes it after the process exits.
    _cluster: Option<LocalCluster>,
}

/// The server, or why there is none; every test that asks gets the same answer, so a missing
/// PostgreSQL fails every PostgreSQL test with the same message.
static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn server() -> &'static Server {
    let server = SERVER.get_or_init(|| match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => {
            Ok(Server { maintenance_url: url.trim().to_owned(), _cluster: None })
        }
        _ => LocalCluster::start_throwaway()
            .map(|cluster| Server { maintenance_url: cluster.url("postgres"), _cluster: Some(cluster) })
            .map_err(|e| format!("{TEST_DATABASE_URL_VAR} is not set and no throwaway cluster could be started: {e:#}")),
    });
    match server {
        Ok(server) => server,
        Err(why) => panic!("{NO_SERVER}.\n{why}"),
    }
}

fn connect_maintenance(server: &Server) -> Result<PgConnection, String> {
    let url = with_connect_timeout(&server.maintenance_url, Duration::from_secs(10));
    PgConnection::establish(&url).map_err(|e| {
        format!("cannot connect to the test PostgreSQL server (from {TEST_DATABASE_URL_VAR} or the throwaway cluster): {e}")
    })
}

/// A database of its own for one test, migrated, dropped when this value is dropped.
///
/// The server comes from `TASKPILOT_TEST_DATABASE_URL` (any database on it; the test
/// databases are created next to it) or, when that is unset, from one throwaway
/// [`LocalCluster`](crate::local::LocalCluster) per test process. With neither, `new` panics
/// with a message saying what to install: PostgreSQL tests never skip silently.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates and migrates a database with a unique name.
    ///
    /// # Panics
    /// When no PostgreSQL server can be had; the message says why and what to do.
    pub fn new() -> Self {
        let server = server();
        let name = format!("taskpilot_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_maintenance(server).unwrap_or_else(|e| panic!("{NO_SERVER}.\n{e}"));
        if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {}", quote_identifier(&name)))
        {
            panic!("cannot create test database {name}: {e}");
        }
        let url = with_database(&server.maintenance_url, &name);
        let config = PoolConfig { max_size: 4, connect_timeout: Duration::from_secs(10) };
        let pool = build_pool(&url, &config)
            .unwrap_or_else(|e| panic!("cannot build a pool for test database {name}: {e:#}"));
        // Build the value before migrating, so that a failed migration still drops the database.
        let db = Self { url, name, pool };
        if let Err(e) = run_migrations(&db.pool) {
            panic!("cannot migrate test database {}: {e:#}", db.name);
        }
        db
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A small pool on it (4 connections, shared by every call: clones of one pool).
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    /// Its name on the server.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(Ok(server)) = SERVER.get() else { return };
        let Ok(mut admin) = connect_maintenance(server) else { return };
        // FORCE ends the sessions that pools handed out by this value may still hold. Errors
        // are ignored: a leftover test database harms nobody, a panic in drop would.
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        ));
    }
}

/// The claim statement the repository runs, over every queue (`None`) or over `Some(n)`
/// queues bound as `$5` (a text for one, an array for more); binds `$1` now, `$2` limit, `$3`
/// worker, `$4` lease expiry. For tests that EXPLAIN it.
pub fn claim_sql(queues: Option<usize>) -> String {
    crate::repository::claim_sql(queues)
}
