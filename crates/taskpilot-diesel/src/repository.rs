//! [`PgTaskRepository`]: the `TaskRepository` port on diesel, and the row type it maps.

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use diesel::dsl::{exists, sql};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Bool, Timestamptz, Uuid as SqlUuid};
use serde_json::Value;
use taskpilot_app::{Cursor, RepoError, TaskFilter, TaskRepository};
use taskpilot_domain::{
    MaxAttempts, RetryState, Task, TaskId, TaskName, TaskRecord, TaskStatus, WorkerId,
};
use uuid::Uuid;

use crate::schema::tasks;
use crate::PgPool;

/// The `TaskRepository` on PostgreSQL.
///
/// Every call checks a connection out of the pool for one statement (two for an update that
/// matched nothing), so a call never holds a connection or a lock beyond itself.
#[derive(Clone)]
pub struct PgTaskRepository {
    pool: PgPool,
}

impl std::fmt::Debug for PgTaskRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskRepository").field("pool", &self.pool.state()).finish()
    }
}

impl PgTaskRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    fn conn(&self) -> Result<PooledConnection<ConnectionManager<PgConnection>>, RepoError> {
        // r2d2 only fails after waiting its whole connection timeout without getting a working
        // connection: the database is down, unreachable, or saturated. All are "try later".
        self.pool
            .get()
            .map_err(|e| RepoError::Unavailable(anyhow!(e).context("no database connection")))
    }
}

impl TaskRepository for PgTaskRepository {
    fn insert(&self, task: &Task) -> Result<(), RepoError> {
        let row = TaskRow::try_from(task)?;
        let mut conn = self.conn()?;
        match diesel::insert_into(tasks::table).values(&row).execute(&mut conn) {
            Ok(_) => Ok(()),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
                if info.constraint_name() == Some("tasks_pkey") =>
            {
                Err(RepoError::Conflict(task.id()))
            }
            Err(e) => Err(classify(e, "cannot insert the task")),
        }
    }

    fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        let mut conn = self.conn()?;
        let row = tasks::table
            .find(id.as_uuid())
            .select(TaskRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(|e| classify(e, "cannot load the task"))?
            .ok_or(RepoError::NotFound(id))?;
        Ok(Task::try_from(row)?)
    }

    fn update(&self, task: &Task, expected_version: u64) -> Result<(), RepoError> {
        let row = TaskRow::try_from(task)?;
        let expected_version = i64::try_from(expected_version)
            .map_err(|_| anyhow!("expected version {expected_version} is out of range"))?;
        let mut conn = self.conn()?;
        // Compare and swap: the row is written only if nobody moved its version on since the
        // caller read it. PostgreSQL re-checks the WHERE clause on the newest row version after
        // waiting for a concurrent writer, so of two racing updates exactly one matches.
        let updated = diesel::update(
            tasks::table.filter(tasks::id.eq(row.id)).filter(tasks::version.eq(expected_version)),
        )
        .set(&row)
        .execute(&mut conn)
        .map_err(|e| classify(e, "cannot update the task"))?;
        if updated == 1 {
            return Ok(());
        }
        // Nothing matched: either the task is gone or its version moved on.
        let found = diesel::select(exists(tasks::table.find(row.id)))
            .get_result::<bool>(&mut conn)
            .map_err(|e| classify(e, "cannot check whether the task exists"))?;
        Err(if found { RepoError::Conflict(task.id()) } else { RepoError::NotFound(task.id()) })
    }

    fn list(
        &self,
        filter: &TaskFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Task>, RepoError> {
        let mut query = tasks::table
            .select(TaskRow::as_select())
            .order((tasks::created_at.desc(), tasks::id.desc()))
            .limit(i64::from(limit))
            .into_boxed();
        if let Some(status) = filter.status {
            query = query.filter(tasks::status.eq(status.as_str()));
        }
        if let Some(name) = &filter.name {
            query = query.filter(tasks::name.eq(name.as_str().to_owned()));
        }
        if let Some(cursor) = after {
            // A row comparison, which PostgreSQL turns into one range condition on the
            // (created_at DESC, id DESC) index; diesel has no operator for it.
            query = query.filter(
                sql::<Bool>("(tasks.created_at, tasks.id) < (")
                    .bind::<Timestamptz, _>(cursor.created_at)
                    .sql(", ")
                    .bind::<SqlUuid, _>(cursor.id.as_uuid())
                    .sql(")"),
            );
        }
        let mut conn = self.conn()?;
        let rows = query.load(&mut conn).map_err(|e| classify(e, "cannot list tasks"))?;
        rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::from)).collect()
    }

    fn ping(&self) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .map_err(|e| classify(e, "the database did not answer"))?;
        Ok(())
    }
}

/// Sorts a diesel error into "the database is unreachable now" and everything else.
fn classify(error: DieselError, doing: &'static str) -> RepoError {
    if is_connection_loss(&error) {
        RepoError::Unavailable(anyhow!(error).context(doing))
    } else {
        RepoError::Unexpected(anyhow!(error).context(doing))
    }
}

/// Whether `error` says the connection or the server went away rather than that the
/// statement was wrong.
fn is_connection_loss(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        // diesel exposes no SQLSTATE, and classifies the server's own shutdown notices
        // (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now) as unknown
        // unless libpq has already marked the connection bad. Their texts have been stable
        // for many PostgreSQL versions; a server with non-English lc_messages falls back on
        // libpq's verdict above, which catches most of them anyway.
        DieselError::DatabaseError(_, info) => {
            const SHUTDOWN_MESSAGES: [&str; 5] = [
                "terminating connection due to administrator command",
                "terminating connection due to unexpected postmaster exit",
                "terminating connection because of crash of another server process",
                "the database system is shutting down",
                "server closed the connection unexpectedly",
            ];
            SHUTDOWN_MESSAGES.iter().any(|m| info.message().contains(m))
        }
        _ => false,
    }
}

/// One row of `tasks`, column for column.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tasks, check_for_backend(diesel::pg::Pg))]
// Clearing a column (a finished task's nextRunAt, a rerun's lastError) must write NULL,
// not skip the column as diesel does for `None` by default.
#[diesel(treat_none_as_null = true)]
struct TaskRow {
    id: Uuid,
    name: String,
    payload: Value,
    priority: i32,
    status: String,
    retry_state: String,
    attempt_count: i32,
    max_attempts: i32,
    next_run_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    worker_id: Option<String>,
    processing_started_at: Option<DateTime<Utc>>,
    result: Option<Value>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl TryFrom<&Task> for TaskRow {
    type Error = anyhow::Error;

    fn try_from(task: &Task) -> anyhow::Result<Self> {
        let r = task.to_record();
        Ok(Self {
            id: r.id.as_uuid(),
            name: r.name.into(),
            payload: r.payload,
            priority: r.priority,
            status: r.status.as_str().to_owned(),
            retry_state: r.retry_state.as_str().to_owned(),
            attempt_count: i32::try_from(r.attempt_count)
                .with_context(|| format!("task {}: attemptCount out of range", r.id))?,
            max_attempts: i32::try_from(r.max_attempts.get())
                .with_context(|| format!("task {}: maxAttempts out of range", r.id))?,
            next_run_at: r.next_run_at,
            last_error: r.last_error,
            worker_id: r.worker_id.map(String::from),
            processing_started_at: r.processing_started_at,
            result: r.result,
            completed_at: r.completed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: i64::try_from(r.version)
                .with_context(|| format!("task {}: version out of range", r.id))?,
        })
    }
}

impl TryFrom<TaskRow> for Task {
    // A row the domain refuses is a bug or a hand edit, never user input: the caller gets
    // `RepoError::Unexpected` and the message names the task and the broken rule.
    type Error = anyhow::Error;

    fn try_from(r: TaskRow) -> anyhow::Result<Task> {
        let id = TaskId::from_uuid(r.id);
        let broken = |what: &str| format!("task {id}: stored {what} is invalid");
        let record = TaskRecord {
            id,
            name: TaskName::parse(&r.name).with_context(|| broken("name"))?,
            payload: r.payload,
            priority: r.priority,
            status: TaskStatus::parse(&r.status)
                .filter(|s| s.as_str() == r.status)
                .ok_or_else(|| anyhow!("{}: {:?}", broken("status"), r.status))?,
            retry_state: RetryState::parse(&r.retry_state)
                .ok_or_else(|| anyhow!("{}: {:?}", broken("retry state"), r.retry_state))?,
            attempt_count: u32::try_from(r.attempt_count)
                .with_context(|| broken("attempt count"))?,
            max_attempts: MaxAttempts::new(i64::from(r.max_attempts))
                .with_context(|| broken("max attempts"))?,
            next_run_at: r.next_run_at,
            last_error: r.last_error,
            worker_id: r
                .worker_id
                .as_deref()
                .map(WorkerId::parse)
                .transpose()
                .with_context(|| broken("worker id"))?,
            processing_started_at: r.processing_started_at,
            result: r.result,
            completed_at: r.completed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: u64::try_from(r.version).with_context(|| broken("version"))?,
        };
        Ok(Task::restore(record)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn lost_connections_and_server_shutdowns_are_unavailable() {
        let lost = [
            database_error(DatabaseErrorKind::ClosedConnection, "server closed the connection"),
            database_error(DatabaseErrorKind::UnableToSendCommand, "no connection to the server"),
            database_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            database_error(DatabaseErrorKind::Unknown, "the database system is shutting down"),
        ];

        for error in lost {
            assert!(matches!(classify(error, "test"), RepoError::Unavailable(_)));
        }
    }

    #[test]
    fn statement_errors_are_unexpected() {
        let broken = [
            database_error(DatabaseErrorKind::CheckViolation, "violates check constraint"),
            database_error(DatabaseErrorKind::Unknown, "unsupported Unicode escape sequence"),
            DieselError::NotFound,
            DieselError::RollbackTransaction,
        ];

        for error in broken {
            assert!(matches!(classify(error, "test"), RepoError::Unexpected(_)));
        }
    }
}
