//! Everything the benchmark does in SQL: its own database, filling and emptying `tasks`, and
//! PostgreSQL's version and settings. None of it goes through TaskPilot's code.

use anyhow::{bail, Context as _};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::Text;
use serde::Serialize;

/// The database a run uses: one it created (and drops at the end), or one it was given.
#[derive(Debug)]
pub struct BenchDb {
    /// Where the database lives.
    pub url: String,
    /// The server's maintenance URL and the name to drop, when the run created it.
    created: Option<(String, String)>,
}

impl BenchDb {
    /// Creates `taskpilot_bench_<random>` on the server of `admin_url`.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses to create a database.
    pub fn create(admin_url: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("taskpilot_bench_{:x}{:x}", std::process::id(), nanos);
        let mut conn = PgConnection::establish(admin_url)
            .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(Self {
            url: with_database(admin_url, &name)?,
            created: Some((admin_url.to_owned(), name)),
        })
    }

    /// A database the run was given: used as it is, never dropped.
    pub fn given(url: &str) -> Self {
        Self { url: url.to_owned(), created: None }
    }

    /// A new connection to the database.
    ///
    /// # Errors
    /// When it cannot be reached.
    pub fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::establish(&self.url)
            .with_context(|| format!("cannot connect to {}", redact(&self.url)))
    }

    /// Drops the database if this run created it (closing any connection left on it).
    ///
    /// # Errors
    /// When the drop fails.
    pub fn drop_created(&mut self) -> anyhow::Result<()> {
        if let Some((admin_url, name)) = self.created.take() {
            let mut conn = PgConnection::establish(&admin_url)
                .with_context(|| format!("cannot connect to {}", redact(&admin_url)))?;
            conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        Ok(())
    }

    /// The name of the database the run created, if any.
    pub fn created_name(&self) -> Option<&str> {
        self.created.as_ref().map(|(_, name)| name.as_str())
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Err(e) = self.drop_created() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let Some(scheme_end) = url.find("://") else { bail!("not a PostgreSQL URL: {}", redact(url)) };
    let (query_start, query) = match url.find('?') {
        Some(i) => (i, &url[i..]),
        None => (url.len(), ""),
    };
    let authority_end =
        url[scheme_end + 3..query_start].find('/').map_or(query_start, |i| scheme_end + 3 + i);
    Ok(format!("{}/{name}{query}", &url[..authority_end]))
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A UUID v7 in SQL from a `timestamptz` expression (its milliseconds) and random bits, so that
/// rows inserted here sort by id like the ones TaskPilot creates.
fn uuid_v7_sql(ts: &str) -> String {
    format!(
        "(lpad(to_hex((extract(epoch FROM {ts}) * 1000)::int8), 12, '0') || '7' \
         || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid"
    )
}

/// Empties `tasks` and its history.
pub fn reset(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.batch_execute("TRUNCATE task_events, tasks").context("cannot empty the tasks table")
}

/// Inserts `n` runnable tasks (PENDING, queue `default`, created within the last minutes, in
/// id order), as plain SQL: the fastest way to a backlog, and no TaskPilot code.
pub fn insert_backlog(conn: &mut PgConnection, n: u64) -> anyhow::Result<()> {
    let ts = "(now() - interval '20 minutes' + g * interval '10 microseconds')";
    let sql = format!(
        "INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, \
             attempt_count, max_attempts, created_at, updated_at, version) \
         SELECT {id}, 'default', 'bench-backlog', '{{}}'::jsonb, 0, 'PENDING', 'NONE', \
             0, 3, {ts}, {ts}, 1 \
         FROM generate_series(1, {n}) AS g",
        id = uuid_v7_sql(ts)
    );
    conn.batch_execute(&sql).context("cannot insert the backlog")
}

/// Bytes `tasks` and `task_events` take on disk with their indexes, and their row counts.
pub fn table_sizes(conn: &mut PgConnection) -> anyhow::Result<(i64, i64, i64)> {
    #[derive(QueryableByName)]
    struct Sizes {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        tasks: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        events: i64,
    }
    let s: Sizes = diesel::sql_query(
        "SELECT (pg_total_relation_size('tasks') + pg_total_relation_size('task_events'))::int8 \
             AS bytes, (SELECT count(*) FROM tasks) AS tasks, \
             (SELECT count(*) FROM task_events) AS events",
    )
    .get_result(conn)
    .context("cannot measure the tables")?;
    Ok((s.bytes, s.tasks, s.events))
}

/// Inserts `n` finished tasks (SUCCEEDED on their second attempt, finished within the last
/// hours, so that no default retention deletes them during the run), shaped as the table's
/// CHECK constraints demand of a success: an ended attempt with its token, a completion time,
/// no worker and no lease; and `history` rows of history for each (created, started, failed,
/// started again, succeeded; the fifth and later rows repeat the last).
pub fn insert_finished(conn: &mut PgConnection, n: u64, history: u64) -> anyhow::Result<()> {
    let ts = "(now() - interval '3 hours' + g * interval '10 microseconds')";
    let sql = format!(
        "INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, \
             attempt_count, max_attempts, attempt, ended_attempt, ended_attempt_token, \
             ended_attempt_end, result, completed_at, created_at, updated_at, version) \
         SELECT {id}, 'default', 'bench-finished', '{{}}'::jsonb, 0, 'SUCCEEDED', 'NONE', \
             1, 3, 2, 2, gen_random_uuid(), 'SUCCEEDED', '{{}}'::jsonb, \
             {ts} + interval '1 second', {ts}, {ts} + interval '1 second', 5 \
         FROM generate_series(1, {n}) AS g",
        id = uuid_v7_sql(ts)
    );
    conn.batch_execute(&sql).context("cannot insert the finished tasks")?;
    if history == 0 {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, error, \
             actor, at) \
         SELECT t.id, \
             CASE WHEN k = 1 THEN 0 WHEN k <= 3 THEN 1 ELSE 2 END, \
             (ARRAY[NULL, 'PENDING', 'RUNNING', 'PENDING', 'RUNNING'])[least(k, 5)], \
             (ARRAY['PENDING', 'RUNNING', 'PENDING', 'RUNNING', 'SUCCEEDED'])[least(k, 5)], \
             CASE WHEN k = 1 THEN NULL ELSE 'bench-worker' END, \
             CASE WHEN k = 3 THEN 'bench failure' END, \
             CASE WHEN k = 1 THEN 'CLIENT' ELSE 'WORKER' END, \
             t.created_at + k * interval '100 milliseconds' \
         FROM tasks t CROSS JOIN generate_series(1, {history}) AS k \
         WHERE t.name = 'bench-finished' \
         ORDER BY t.id, k"
    );
    conn.batch_execute(&sql).context("cannot insert the finished tasks' history")
}

/// `VACUUM ANALYZE` on both tables, then a checkpoint, so that every measured run starts
/// from clean tables, fresh statistics and no checkpoint pending from the set-up.
pub fn settle(conn: &mut PgConnection) -> anyhow::Result<()> {
    // One statement each: VACUUM refuses to run in the implicit transaction of a
    // multi-statement query.
    for statement in ["VACUUM ANALYZE tasks", "VACUUM ANALYZE task_events", "CHECKPOINT"] {
        conn.batch_execute(statement).with_context(|| format!("cannot run {statement}"))?;
    }
    Ok(())
}

/// Ids of up to `n` tasks.
pub fn task_ids(conn: &mut PgConnection, n: i64) -> anyhow::Result<Vec<uuid::Uuid>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    let ids: Vec<Id> = diesel::sql_query("SELECT id FROM tasks LIMIT $1")
        .bind::<diesel::sql_types::BigInt, _>(n)
        .load(conn)
        .context("cannot read task ids")?;
    Ok(ids.into_iter().map(|i| i.id).collect())
}

/// PostgreSQL's version and the settings that bound the figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PgSettings {
    /// `SHOW server_version`.
    pub version: String,
    /// `SHOW shared_buffers`.
    pub shared_buffers: String,
    /// `SHOW synchronous_commit`.
    pub synchronous_commit: String,
    /// `SHOW fsync`.
    pub fsync: String,
    /// `SHOW max_connections`.
    pub max_connections: String,
    /// `SHOW wal_level`.
    pub wal_level: String,
    /// `SHOW work_mem`.
    pub work_mem: String,
    /// `SHOW autovacuum`: with it off, nothing reclaims dead tuples during a run but the
    /// set-up's own `VACUUM`, so sustained figures decay.
    pub autovacuum: String,
}

/// Reads [`PgSettings`].
pub fn settings(conn: &mut PgConnection) -> anyhow::Result<PgSettings> {
    let mut show = |name: &str| -> anyhow::Result<String> {
        #[derive(QueryableByName)]
        struct Setting {
            #[diesel(sql_type = Text)]
            setting: String,
        }
        let row: Setting = diesel::sql_query("SELECT current_setting($1) AS setting")
            .bind::<Text, _>(name)
            .get_result(conn)
            .with_context(|| format!("cannot read the setting {name}"))?;
        Ok(row.setting)
    };
    Ok(PgSettings {
        version: show("server_version")?,
        shared_buffers: show("shared_buffers")?,
        synchronous_commit: show("synchronous_commit")?,
        fsync: show("fsync")?,
        max_connections: show("max_connections")?,
        wal_level: show("wal_level")?,
        work_mem: show("work_mem")?,
        autovacuum: show("autovacuum")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b").ok(),
            Some("postgres://postgres@127.0.0.1:5432/b".to_owned())
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "b").ok(),
            Some("postgres://u:p@h/b?sslmode=disable".to_owned())
        );
        assert_eq!(with_database("postgres://h", "b").ok(), Some("postgres://h/b".to_owned()));
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
