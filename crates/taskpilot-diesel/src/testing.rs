//! A fresh, migrated database per test, copied from one migrated template.
//!
//! Tests run in parallel threads and in parallel test binaries, so each test gets a database
//! of its own on a shared server rather than a transaction on a shared database: a test may
//! then use many connections (concurrency tests need them) and still see nobody else's rows.
//!
//! Migrating every test database would run every migration some ninety times per test run.
//! Instead the migrations run once per server and migration set, into a template database,
//! and each test database is a copy of it (`CREATE DATABASE … TEMPLATE …`, a file-level copy
//! that costs about as much as creating an empty database):
//!
//! - **Naming.** The template is `taskpilot_template_<digest>`, the digest (from `build.rs`)
//!   covering every file under `migrations/`: a changed, added or removed migration gets a
//!   template of its own, and checkouts with different migrations can share a server.
//! - **Readiness.** The template is built under a scratch name (`taskpilot_staging_<uuid>`):
//!   created, migrated through one connection, that connection closed, marked
//!   `IS_TEMPLATE true ALLOW_CONNECTIONS false`, and only then renamed to its final name. So
//!   a database under the final name is whole by construction, and since nobody can connect
//!   to it, nobody blocks a copy ("source database is being accessed by other users"). A
//!   half-built template is never under the final name: a crash leaves a scratch database.
//! - **Locking.** Builders take an advisory lock keyed on the template's name, so that test
//!   processes starting together build it once; the others wait, then find it ready. The
//!   rename is what keeps it correct without the lock (advisory locks are per database, and
//!   two runs may connect through different ones): of two builders, the second rename fails
//!   and that builder drops its copy and uses the winner's.
//! - **Cleanup.** Templates of earlier migration sets, and scratch databases a crashed build
//!   left behind, stay on the server: another checkout on it may still use the former, and
//!   nothing tells a crashed build's scratch database from a live one's. Each is a few
//!   megabytes; to remove one by hand, `ALTER DATABASE … IS_TEMPLATE false`, then `DROP
//!   DATABASE`.

use std::sync::OnceLock;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer, Text};

use crate::database_url::{quote_identifier, with_database};
use crate::local::LocalCluster;
use crate::{build_pool, migrate, with_connect_timeout, PgPool, PoolConfig};

/// The variable naming a server for tests: any database on it, the test databases are created
/// next to it.
pub const TEST_DATABASE_URL_VAR: &str = "TASKPILOT_TEST_DATABASE_URL";

/// What a test panics with when there is no PostgreSQL to be had.
const NO_SERVER: &str = "PostgreSQL tests need a server: set TASKPILOT_TEST_DATABASE_URL to one \
     (e.g. postgres://postgres@127.0.0.1:5432/postgres), or install PostgreSQL \
     (e.g. `apt-get install postgresql`) so that the tests can start a throwaway cluster \
     themselves";

/// The digest of the embedded migrations, computed by `build.rs` over the same files.
const MIGRATIONS_DIGEST: &str = env!("TASKPILOT_MIGRATIONS_DIGEST");

/// The first key of the two-key advisory lock that serializes template builders (the second
/// is a hash of the template's name): "tp" in ASCII. The two-key form keeps it apart from the
/// single-key migration lock.
const TEMPLATE_LOCK_CLASS: i32 = 0x7470;

/// How often a copy or a rename is tried while sessions are still on its source database,
/// and the pause between tries. PostgreSQL itself waits up to 5 seconds for them on each
/// try; the retries cover a backend that outlives even that on a machine busy compiling.
const IN_USE_TRIES: u32 = 4;
const IN_USE_PAUSE: Duration = Duration::from_millis(250);

/// The server the test databases live on, set up once per test process.
struct Server {
    /// A database on it to connect to for creating and dropping test databases.
    maintenance_url: String,
    /// The migrated template every test database is copied from.
    template: String,
    /// Keeps the throwaway cluster of this process, when there is one. Never dropped (it sits
    /// in a static): its watchdog removes it after the process exits.
    _cluster: Option<LocalCluster>,
}

/// The server, or the message every test panics with when there is none; every test that asks
/// gets the same answer, so a missing PostgreSQL fails every PostgreSQL test the same way.
static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn server() -> &'static Server {
    let server = SERVER.get_or_init(|| {
        let (maintenance_url, cluster) = match std::env::var(TEST_DATABASE_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => (url.trim().to_owned(), None),
            _ => match LocalCluster::start_throwaway() {
                Ok(cluster) => (cluster.url("postgres"), Some(cluster)),
                Err(e) => {
                    return Err(format!(
                        "{NO_SERVER}.\n{TEST_DATABASE_URL_VAR} is not set and no throwaway \
                         cluster could be started: {e:#}"
                    ))
                }
            },
        };
        let template = ensure_template(&maintenance_url)?;
        Ok(Server { maintenance_url, template, _cluster: cluster })
    });
    match server {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

fn connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(&with_connect_timeout(url, Duration::from_secs(10))).map_err(|e| {
        format!(
            "{NO_SERVER}.\ncannot connect to the test PostgreSQL server (from \
             {TEST_DATABASE_URL_VAR} or the throwaway cluster): {e}"
        )
    })
}

/// The name of the template for the embedded migrations, after making sure that it exists,
/// migrated and marked (see the module's documentation).
fn ensure_template(maintenance_url: &str) -> Result<String, String> {
    let name = format!("taskpilot_template_{MIGRATIONS_DIGEST}");
    let mut admin = connect(maintenance_url)?;
    // The common case, every test binary after the first: a single look-up, no lock.
    if template_ready(&mut admin, &name)? {
        return Ok(name);
    }
    // Session-level and released below; a builder that dies releases it with its session.
    advisory_lock(&mut admin, "pg_advisory_lock", &name)?;
    let built = if template_ready(&mut admin, &name)? {
        Ok(())
    } else {
        build_template(&mut admin, maintenance_url, &name)
    };
    // Leaving it to the session's end would do as well: `admin` is dropped right after.
    let _ = advisory_lock(&mut admin, "pg_advisory_unlock", &name);
    built.map(|()| name)
}

fn advisory_lock(admin: &mut PgConnection, function: &str, name: &str) -> Result<(), String> {
    diesel::sql_query(format!("SELECT {function}($1, hashtext($2))"))
        .bind::<Integer, _>(TEMPLATE_LOCK_CLASS)
        .bind::<Text, _>(name)
        .execute(admin)
        .map(drop)
        .map_err(|e| format!("cannot {function} for test template {name}: {e}"))
}

/// Whether template `name` exists; it exists only once built whole, so existing is ready.
///
/// # Errors
/// When the look-up fails, or a database of that name exists without being a template (made
/// by hand, not by this module): copying it would give tests an unknown schema.
fn template_ready(admin: &mut PgConnection, name: &str) -> Result<bool, String> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Bool)]
        datistemplate: bool,
    }
    let found: Option<Found> =
        diesel::sql_query("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(admin)
            .optional()
            .map_err(|e| format!("cannot look up test template {name}: {e}"))?;
    match found {
        None => Ok(false),
        Some(Found { datistemplate: true }) => Ok(true),
        Some(Found { datistemplate: false }) => Err(format!(
            "database {name} exists but is not a template; drop it and the tests rebuild it"
        )),
    }
}

/// Builds template `name` under a scratch name and renames it into place once whole.
fn build_template(
    admin: &mut PgConnection,
    maintenance_url: &str,
    name: &str,
) -> Result<(), String> {
    let scratch = format!("taskpilot_staging_{}", uuid::Uuid::new_v4().simple());
    let quoted = quote_identifier(&scratch);
    admin
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .map_err(|e| format!("cannot create test template {scratch}: {e}"))?;
    let prepared = prepare_template(admin, &with_database(maintenance_url, &scratch), &quoted)
        .and_then(|()| {
            let renamed = retry_while_in_use(|| {
                admin.batch_execute(&format!(
                    "ALTER DATABASE {quoted} RENAME TO {}",
                    quote_identifier(name)
                ))
            });
            match renamed {
                Ok(()) => Ok(true),
                // Another builder, not serialized with this one, renamed first.
                Err(_) if template_ready(admin, name)? => Ok(false),
                Err(e) => Err(format!("cannot rename test template {scratch} to {name}: {e}")),
            }
        });
    if !matches!(prepared, Ok(true)) {
        // Best effort: the error that brought us here matters more than these. Two calls, as
        // DROP DATABASE refuses to run in the implicit transaction of a multi-statement query.
        let _ = admin.batch_execute(&format!("ALTER DATABASE {quoted} IS_TEMPLATE false"));
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"));
    }
    prepared.map(drop)
}

/// Migrates the scratch database through a connection of its own, closes that connection,
/// then marks the database as a template nobody may connect to.
fn prepare_template(admin: &mut PgConnection, url: &str, quoted: &str) -> Result<(), String> {
    {
        let mut conn = connect(url)?;
        migrate(&mut conn).map_err(|e| format!("cannot migrate test template {quoted}: {e:#}"))?;
        // `conn` closes here, before the rename and every copy needs the database to itself.
    }
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ))
        .map_err(|e| format!("cannot mark test template {quoted}: {e}"))
}

/// Runs `statement` again while it fails because some session is still on its database.
///
/// A closed connection's backend leaves the server a moment after the client hung up, and
/// CREATE DATABASE … TEMPLATE and ALTER DATABASE … RENAME both refuse while it is there.
fn retry_while_in_use(mut statement: impl FnMut() -> QueryResult<()>) -> QueryResult<()> {
    let mut attempt = 1;
    loop {
        match statement() {
            Err(e)
                if attempt < IN_USE_TRIES
                    && e.to_string().contains("is being accessed by other users") =>
            {
                attempt += 1;
                std::thread::sleep(IN_USE_PAUSE);
            }
            done => return done,
        }
    }
}

/// A database of its own for one test, migrated (a copy of the template), dropped when this
/// value is dropped.
///
/// The server comes from `TASKPILOT_TEST_DATABASE_URL` (any database on it; the test
/// databases are created next to it) or, when that is unset, from one throwaway
/// [`LocalCluster`] per test process. With neither, `new` panics
/// with a message saying what to install: PostgreSQL tests never skip silently.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    /// Creates a database with a unique name, a copy of the migrated template.
    ///
    /// # Panics
    /// When no PostgreSQL server can be had, or the template cannot be built; the message
    /// says why and what to do.
    pub fn new() -> Self {
        let server = server();
        Self::copy_of(server, &server.template)
    }

    /// Creates an empty database with a unique name: no table, no migration applied (a copy
    /// of PostgreSQL's pristine `template0`). For tests that migrate step by step, such as
    /// upgrading a database written by an earlier release; migrate it with [`migrations`].
    ///
    /// # Panics
    /// As [`TestDatabase::new`].
    pub fn empty() -> Self {
        Self::copy_of(server(), "template0")
    }

    fn copy_of(server: &Server, template: &str) -> Self {
        let name = format!("taskpilot_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&server.maintenance_url).unwrap_or_else(|e| panic!("{e}"));
        let created = retry_while_in_use(|| {
            admin.batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_identifier(&name),
                quote_identifier(template)
            ))
        });
        if let Err(e) = created {
            panic!("cannot create test database {name} from {template}: {e}");
        }
        // After creating it: the pool starts connecting at once, and failed attempts would
        // back off.
        let url = with_database(&server.maintenance_url, &name);
        let config = PoolConfig {
            max_size: 4,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(10),
        };
        match build_pool(&url, &config) {
            Ok(pool) => Self { url, name, pool },
            Err(e) => {
                let _ = admin.batch_execute(&format!("DROP DATABASE {}", quote_identifier(&name)));
                panic!("cannot build a pool for test database {name}: {e:#}")
            }
        }
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
        let Ok(mut admin) = connect(&server.maintenance_url) else { return };
        // FORCE ends the sessions that pools handed out by this value may still hold. Errors
        // are ignored: a leftover test database harms nobody, a panic in drop would.
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        ));
    }
}

/// The migrations [`run_migrations`](crate::run_migrations) applies, for tests that apply
/// some of them one at a time (through `diesel_migrations::MigrationHarness`) or revert them.
pub fn migrations() -> diesel_migrations::EmbeddedMigrations {
    crate::MIGRATIONS
}

/// The claim statement the repository runs, over every queue (`None`) or over `Some(n)`
/// queues bound as `$5` (a text for one, an array for more); binds `$1` now, `$2` limit, `$3`
/// worker, `$4` lease expiry. For tests that EXPLAIN it.
pub fn claim_sql(queues: Option<usize>) -> String {
    crate::repository::claim_sql(queues)
}

/// Retention's statement, which deletes a batch of finished tasks with their history; binds
/// `$1` status, `$2` finished before, `$3` limit. For tests that EXPLAIN it.
pub fn delete_finished_sql() -> &'static str {
    crate::repository::retention::DELETE_FINISHED_SQL
}

/// The statement behind `TaskRepository::queue_activity`; binds `$1` since. For tests that
/// EXPLAIN it.
pub fn queue_activity_sql() -> &'static str {
    crate::repository::queues::ACTIVITY_SQL
}

/// The statement behind `TaskRepository::runnable_ahead`; binds `$1` queue, `$2` now, `$3`
/// priority, `$4` runnable since, `$5` id, `$6` cap. For tests that EXPLAIN it.
pub fn runnable_ahead_sql() -> &'static str {
    crate::repository::queues::AHEAD_SQL
}

/// The statement behind `TaskRepository::dead_letters`; binds `$1` queues, `$2` creator, `$3`
/// scan, `$4` error characters, `$5` limit. For tests that EXPLAIN it.
pub fn dead_letters_sql() -> &'static str {
    crate::repository::activity::DEAD_LETTERS_SQL
}
