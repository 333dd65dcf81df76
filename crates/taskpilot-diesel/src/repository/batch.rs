//! The batch statements: many tasks and events in one statement, so one round trip.
//!
//! Each batch goes to PostgreSQL as one array per column, spread back into rows by `unnest`:
//! the statement text and its bind count are the same for 1 row and for 1,000, so PostgreSQL's
//! 65,535 bind-parameter limit never comes into play, and the text stays short whatever the
//! batch size. diesel runs an uncached `sql_query` with `PQsendQueryParams`: parse, bind and
//! execute in a single round trip.

use std::collections::HashSet;
use std::sync::LazyLock;

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{
    Array, BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::Column;
use serde_json::Value;
use taskpilot_app::{RepoError, TaskEvent, TaskWrite};
use taskpilot_domain::{Task, TaskId};
use uuid::Uuid;

use super::{classify, is_unique_key_violation, unique_key_holder, TaskEventRow, TaskRow};
use crate::schema::tasks;

/// The names of a tuple of columns, in order.
trait ColumnNames {
    const NAMES: &'static [&'static str];
}

/// Implemented for the arity of `tasks` only: a column added to `schema::tasks` makes
/// [`TASK_COLUMNS`] fail to compile until it is named here, beside [`TaskColumns`].
macro_rules! column_names {
    ($($column:ident),*) => {
        impl<$($column: Column),*> ColumnNames for ($($column,)*) {
            const NAMES: &'static [&'static str] = &[$($column::NAME),*];
        }
    };
}
column_names!(
    C01, C02, C03, C04, C05, C06, C07, C08, C09, C10, C11, C12, C13, C14, C15, C16, C17, C18, C19,
    C20, C21, C22, C23, C24, C25, C26, C27, C28
);

/// The columns of `tasks` as the schema declares them, which is the order [`TaskRow`]'s
/// fields (checked against the schema at compile time) and [`TaskColumns::bind`] follow.
const TASK_COLUMNS: &[&str] = <<tasks::table as Table>::AllColumns as ColumnNames>::NAMES;

/// The written columns of `task_events`, in the order [`EventColumns::bind`] binds them.
const EVENT_COLUMNS: [&str; 11] = [
    "task_id",
    "attempt",
    "from_status",
    "to_status",
    "worker_id",
    "error",
    "actor",
    "rejected_code",
    "rejected_call",
    "at",
    "token_name",
];

/// `$first, $first+1, ...`: `n` placeholders.
fn params(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Tasks and their events in one statement (`task_events` has no foreign key: history is
/// only ever written with its task, so the check would cost every history row and prove
/// nothing). `WITH ORDINALITY` and the `ORDER BY`
/// keep the events' ids (their order in a history) in the order they were given.
///
/// Binds: $1..$28 the task columns, $29..$39 the event columns, all arrays.
static INSERT_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    let tasks = TASK_COLUMNS.join(", ");
    let events = EVENT_COLUMNS.join(", ");
    format!(
        "WITH new_tasks AS (
    INSERT INTO tasks ({tasks})
    SELECT * FROM unnest({task_params})
)
INSERT INTO task_events ({events})
SELECT {events}
FROM unnest({event_params}) WITH ORDINALITY AS e({events}, seq)
ORDER BY e.seq",
        task_params = params(1, TASK_COLUMNS.len()),
        event_params = params(TASK_COLUMNS.len() + 1, EVENT_COLUMNS.len()),
    )
});

/// Compare-and-swap writes of many tasks, their events and refusal events, in one statement.
///
/// - `input`: the writes, one row each, numbered from 1 (`n`); of several writes to one task
///   only the first is tried (the others lose: they were prepared from the same stored version,
///   which the first one moves on).
/// - `locked`: the writes whose task exists, with their rows locked in id order before any
///   is written, so that two batches over overlapping tasks wait for each other instead of
///   deadlocking, whatever order the plan of the update would visit rows in (a hash join
///   probing a scan of `tasks` visits them in heap order, which differs between snapshots).
///   `NO KEY UPDATE`, the lock the update itself takes, and no stronger: nothing that only
///   reads these rows' keys is held up.
///   The update reads only this CTE, which PostgreSQL plans as a nested loop over the
///   primary key (joining `input` to a separate lock list compared every pair instead).
/// - `written`: the update, only where the stored version is still the expected one.
///   PostgreSQL re-checks that condition on the newest row version when a concurrent writer
///   committed after this statement's snapshot, so a write whose version moved on is never
///   applied, however the race falls.
/// - `logged`: the events of the writes that were applied (`write_n` names the write), and
///   every refusal event (`write_n` NULL), in the order given.
///
/// Returns the numbers of the writes that were applied.
///
/// Binds: $1 write numbers, $2 expected versions, $3..$30 the task columns, $31 each event's
/// write number, $32..$42 the event columns, all arrays.
static WRITE_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    let tasks = TASK_COLUMNS.join(", ");
    let set = TASK_COLUMNS[1..].iter().map(|c| format!("{c} = i.{c}")).collect::<Vec<_>>();
    let events = EVENT_COLUMNS.join(", ");
    let first_event = 3 + TASK_COLUMNS.len();
    format!(
        "WITH input AS MATERIALIZED (
    SELECT DISTINCT ON (id) *
    FROM unnest($1, $2, {task_params}) AS i(n, expected_version, {tasks})
    ORDER BY id, n
), locked AS MATERIALIZED (
    SELECT i.* FROM input AS i JOIN tasks AS t ON t.id = i.id
    ORDER BY i.id
    FOR NO KEY UPDATE OF t
), written AS (
    UPDATE tasks AS t
    SET {set}
    FROM locked AS i
    WHERE t.id = i.id AND t.version = i.expected_version
    RETURNING i.n
), logged AS (
    INSERT INTO task_events ({events})
    SELECT {events}
    FROM unnest(${first_event}, {event_params}) WITH ORDINALITY AS e(write_n, {events}, seq)
    WHERE e.write_n IS NULL OR e.write_n IN (SELECT n FROM written)
    ORDER BY e.seq
)
SELECT n FROM written",
        task_params = params(3, TASK_COLUMNS.len()),
        set = set.join(",\n        "),
        event_params = params(first_event + 1, EVENT_COLUMNS.len()),
    )
});

type Query = BoxedSqlQuery<'static, Pg, SqlQuery>;

/// Tasks as one array per column.
#[derive(Default)]
struct TaskColumns {
    id: Vec<Uuid>,
    queue: Vec<String>,
    name: Vec<String>,
    payload: Vec<Value>,
    priority: Vec<i32>,
    status: Vec<String>,
    retry_state: Vec<String>,
    attempt: Vec<i32>,
    lease_token: Vec<Option<Uuid>>,
    lease_expires_at: Vec<Option<DateTime<Utc>>>,
    ended_attempt: Vec<Option<i32>>,
    ended_attempt_token: Vec<Option<Uuid>>,
    ended_attempt_end: Vec<Option<String>>,
    attempt_count: Vec<i32>,
    max_attempts: Vec<i32>,
    next_run_at: Vec<Option<DateTime<Utc>>>,
    last_error: Vec<Option<String>>,
    worker_id: Vec<Option<String>>,
    processing_started_at: Vec<Option<DateTime<Utc>>>,
    result: Vec<Option<Value>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    version: Vec<i64>,
    created_by: Vec<Option<Uuid>>,
    crash_count: Vec<i32>,
    max_crashes: Vec<i32>,
    unique_key: Vec<Option<String>>,
}

impl TaskColumns {
    /// Every column by name, no `..`: a column added to the row fails to compile here.
    fn push(&mut self, row: TaskRow) {
        let TaskRow {
            id,
            queue,
            name,
            payload,
            priority,
            status,
            retry_state,
            attempt,
            lease_token,
            lease_expires_at,
            ended_attempt,
            ended_attempt_token,
            ended_attempt_end,
            attempt_count,
            max_attempts,
            next_run_at,
            last_error,
            worker_id,
            processing_started_at,
            result,
            completed_at,
            created_at,
            updated_at,
            version,
            created_by,
            crash_count,
            max_crashes,
            unique_key,
        } = row;
        self.id.push(id);
        self.queue.push(queue);
        self.name.push(name);
        self.payload.push(payload);
        self.priority.push(priority);
        self.status.push(status);
        self.retry_state.push(retry_state);
        self.attempt.push(attempt);
        self.lease_token.push(lease_token);
        self.lease_expires_at.push(lease_expires_at);
        self.ended_attempt.push(ended_attempt);
        self.ended_attempt_token.push(ended_attempt_token);
        self.ended_attempt_end.push(ended_attempt_end);
        self.attempt_count.push(attempt_count);
        self.max_attempts.push(max_attempts);
        self.next_run_at.push(next_run_at);
        self.last_error.push(last_error);
        self.worker_id.push(worker_id);
        self.processing_started_at.push(processing_started_at);
        self.result.push(result);
        self.completed_at.push(completed_at);
        self.created_at.push(created_at);
        self.updated_at.push(updated_at);
        self.version.push(version);
        self.created_by.push(created_by);
        self.crash_count.push(crash_count);
        self.max_crashes.push(max_crashes);
        self.unique_key.push(unique_key);
    }

    /// Binds the columns in [`TASK_COLUMNS`] order. Every field by name, no `..`: a field
    /// added and not bound is an unused variable.
    fn bind(self, query: Query) -> Query {
        let Self {
            id,
            queue,
            name,
            payload,
            priority,
            status,
            retry_state,
            attempt,
            lease_token,
            lease_expires_at,
            ended_attempt,
            ended_attempt_token,
            ended_attempt_end,
            attempt_count,
            max_attempts,
            next_run_at,
            last_error,
            worker_id,
            processing_started_at,
            result,
            completed_at,
            created_at,
            updated_at,
            version,
            created_by,
            crash_count,
            max_crashes,
            unique_key,
        } = self;
        query
            .bind::<Array<SqlUuid>, _>(id)
            .bind::<Array<Text>, _>(queue)
            .bind::<Array<Text>, _>(name)
            .bind::<Array<Jsonb>, _>(payload)
            .bind::<Array<Integer>, _>(priority)
            .bind::<Array<Text>, _>(status)
            .bind::<Array<Text>, _>(retry_state)
            .bind::<Array<Integer>, _>(attempt)
            .bind::<Array<Nullable<SqlUuid>>, _>(lease_token)
            .bind::<Array<Nullable<Timestamptz>>, _>(lease_expires_at)
            .bind::<Array<Nullable<Integer>>, _>(ended_attempt)
            .bind::<Array<Nullable<SqlUuid>>, _>(ended_attempt_token)
            .bind::<Array<Nullable<Text>>, _>(ended_attempt_end)
            .bind::<Array<Integer>, _>(attempt_count)
            .bind::<Array<Integer>, _>(max_attempts)
            .bind::<Array<Nullable<Timestamptz>>, _>(next_run_at)
            .bind::<Array<Nullable<Text>>, _>(last_error)
            .bind::<Array<Nullable<Text>>, _>(worker_id)
            .bind::<Array<Nullable<Timestamptz>>, _>(processing_started_at)
            .bind::<Array<Nullable<Jsonb>>, _>(result)
            .bind::<Array<Nullable<Timestamptz>>, _>(completed_at)
            .bind::<Array<Timestamptz>, _>(created_at)
            .bind::<Array<Timestamptz>, _>(updated_at)
            .bind::<Array<BigInt>, _>(version)
            .bind::<Array<Nullable<SqlUuid>>, _>(created_by)
            .bind::<Array<Integer>, _>(crash_count)
            .bind::<Array<Integer>, _>(max_crashes)
            .bind::<Array<Nullable<Text>>, _>(unique_key)
    }
}

/// Events as one array per column.
#[derive(Default)]
struct EventColumns {
    task_id: Vec<Uuid>,
    attempt: Vec<i32>,
    from_status: Vec<Option<String>>,
    to_status: Vec<String>,
    worker_id: Vec<Option<String>>,
    error: Vec<Option<String>>,
    actor: Vec<String>,
    rejected_code: Vec<Option<String>>,
    rejected_call: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
    token_name: Vec<Option<String>>,
}

impl EventColumns {
    /// Every column by name, no `..`: a column added to the row fails to compile here.
    fn push(&mut self, row: TaskEventRow) {
        let TaskEventRow {
            task_id,
            attempt,
            from_status,
            to_status,
            worker_id,
            error,
            actor,
            rejected_code,
            rejected_call,
            at,
            token_name,
        } = row;
        self.task_id.push(task_id);
        self.attempt.push(attempt);
        self.from_status.push(from_status);
        self.to_status.push(to_status);
        self.worker_id.push(worker_id);
        self.error.push(error);
        self.actor.push(actor);
        self.rejected_code.push(rejected_code);
        self.rejected_call.push(rejected_call);
        self.at.push(at);
        self.token_name.push(token_name);
    }

    /// Binds the columns in [`EVENT_COLUMNS`] order.
    fn bind(self, query: Query) -> Query {
        query
            .bind::<Array<SqlUuid>, _>(self.task_id)
            .bind::<Array<Integer>, _>(self.attempt)
            .bind::<Array<Nullable<Text>>, _>(self.from_status)
            .bind::<Array<Text>, _>(self.to_status)
            .bind::<Array<Nullable<Text>>, _>(self.worker_id)
            .bind::<Array<Nullable<Text>>, _>(self.error)
            .bind::<Array<Text>, _>(self.actor)
            .bind::<Array<Nullable<Text>>, _>(self.rejected_code)
            .bind::<Array<Nullable<Text>>, _>(self.rejected_call)
            .bind::<Array<Timestamptz>, _>(self.at)
            .bind::<Array<Nullable<Text>>, _>(self.token_name)
    }
}

/// `TaskRepository::insert_many`: one statement, all or nothing.
pub(super) fn insert_many(
    conn: &mut PgConnection,
    tasks: &[Task],
    events: &[TaskEvent],
) -> Result<(), RepoError> {
    if tasks.is_empty() && events.is_empty() {
        return Ok(());
    }
    let mut task_columns = TaskColumns::default();
    for task in tasks {
        task_columns.push(TaskRow::try_from(task).map_err(RepoError::unexpected)?);
    }
    let mut event_columns = EventColumns::default();
    for event in events {
        event_columns.push(TaskEventRow::try_from(event).map_err(RepoError::unexpected)?);
    }
    let query = diesel::sql_query(INSERT_MANY_SQL.as_str()).into_boxed();
    let query = event_columns.bind(task_columns.bind(query));
    // Inside the caller's transaction, under a savepoint of its own, so that the looks after a
    // refusal run in a transaction that is not aborted; alone, as one statement (one round
    // trip), whose failure leaves nothing to roll back.
    let inserted = if in_transaction(conn) {
        conn.transaction(|conn| query.execute(conn))
    } else {
        query.execute(conn)
    };
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_unique_key_violation(&e) => Err(first_held(conn, tasks.iter())),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some("tasks_pkey") =>
        {
            // Off the happy path only: a second look finds which id it was.
            Err(RepoError::Conflict(first_taken(conn, tasks)?))
        }
        Err(e) => Err(classify(e, "cannot insert the tasks")),
    }
}

/// Whether `conn` is inside a transaction.
fn in_transaction(conn: &mut PgConnection) -> bool {
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_or(true, |depth| depth.is_some())
}

/// After a write of `tasks` violated the unique key index: [`RepoError::UniqueKeyHeld`]
/// naming the holder of the first of their keys that is held, or [`RepoError::Conflict`]
/// naming the first task when no holder is left (they finished since, or two of `tasks`
/// met each other): the write may be tried again.
fn first_held<'a>(conn: &mut PgConnection, tasks: impl Iterator<Item = &'a Task>) -> RepoError {
    let mut first = None;
    for task in tasks.filter(|t| t.unique_key().is_some()) {
        first.get_or_insert(task.id());
        match unique_key_holder(conn, task) {
            Ok(Some(holder)) => return RepoError::UniqueKeyHeld(holder),
            Ok(None) => {}
            Err(e) => return classify(e, "cannot look up the holder of a unique key"),
        }
    }
    match first {
        Some(id) => RepoError::Conflict(id),
        None => RepoError::unexpected(anyhow!("a unique key was held, but none of the batch is")),
    }
}

/// The first of `tasks` (in their order) whose id is stored already or repeats an earlier one
/// of the batch.
fn first_taken(conn: &mut PgConnection, tasks: &[Task]) -> Result<TaskId, RepoError> {
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id().as_uuid()).collect();
    let stored: HashSet<Uuid> = tasks::table
        .filter(tasks::id.eq_any(&ids))
        .select(tasks::id)
        .load::<Uuid>(conn)
        .map_err(|e| classify(e, "cannot look up which task id is taken"))?
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    ids.into_iter()
        .find(|id| stored.contains(id) || !seen.insert(*id))
        .map(TaskId::from_uuid)
        // The row that was in the way is gone again (deleted since): nothing to name.
        .ok_or_else(|| {
            RepoError::Unexpected(anyhow!("a task id was taken, but none of the batch is now"))
        })
}

/// `TaskRepository::write_many`: one statement, so one round trip and atomic.
pub(super) fn write_many(
    conn: &mut PgConnection,
    writes: &[TaskWrite],
    rejections: &[TaskEvent],
) -> Result<Vec<TaskId>, RepoError> {
    if writes.is_empty() && rejections.is_empty() {
        return Ok(Vec::new());
    }
    let mut numbers = Vec::with_capacity(writes.len());
    let mut expected_versions = Vec::with_capacity(writes.len());
    let mut task_columns = TaskColumns::default();
    let mut event_writes = Vec::new();
    let mut event_columns = EventColumns::default();
    for (index, write) in writes.iter().enumerate() {
        let n = i32::try_from(index + 1)
            .context("too many writes in one batch")
            .map_err(RepoError::unexpected)?;
        numbers.push(n);
        expected_versions.push(
            i64::try_from(write.expected_version)
                .with_context(|| {
                    format!("expected version {} is out of range", write.expected_version)
                })
                .map_err(RepoError::unexpected)?,
        );
        task_columns.push(TaskRow::try_from(&write.task).map_err(RepoError::unexpected)?);
        for event in &write.events {
            event_writes.push(Some(n));
            event_columns.push(TaskEventRow::try_from(event).map_err(RepoError::unexpected)?);
        }
    }
    for rejection in rejections {
        event_writes.push(None);
        event_columns.push(TaskEventRow::try_from(rejection).map_err(RepoError::unexpected)?);
    }

    #[derive(QueryableByName)]
    struct Written {
        #[diesel(sql_type = Integer)]
        n: i32,
    }
    let query = diesel::sql_query(WRITE_MANY_SQL.as_str())
        .into_boxed()
        .bind::<Array<Integer>, _>(numbers)
        .bind::<Array<BigInt>, _>(expected_versions);
    let query = task_columns.bind(query).bind::<Array<Nullable<Integer>>, _>(event_writes);
    // Alone, as one statement: a refusal leaves the connection usable for the looks after it.
    let loaded = event_columns.bind(query).load::<Written>(conn);
    let written: HashSet<i32> = match loaded {
        Err(e) if is_unique_key_violation(&e) => {
            return Err(first_held(conn, writes.iter().map(|w| &w.task)))
        }
        loaded => loaded.map_err(|e| classify(e, "cannot write the tasks"))?,
    }
    .into_iter()
    .map(|w| w.n)
    .collect();
    Ok(writes
        .iter()
        .zip(1..)
        .filter(|(_, n)| !written.contains(n))
        .map(|(write, _)| write.task.id())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_column_list_is_the_tables_column_list_in_the_rows_order() {
        let shown = diesel::debug_query::<Pg, _>(&TaskRow::as_select()).to_string();
        let names: Vec<String> = shown
            .split(" -- binds")
            .next()
            .unwrap_or_default()
            .split(", ")
            .map(|c| c.rsplit('.').next().unwrap_or_default().trim_matches('"').to_owned())
            .collect();

        assert_eq!(TASK_COLUMNS, names);
        assert_eq!(TASK_COLUMNS.len(), 28);
    }

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(params(3, 3), "$3, $4, $5");
    }

    #[test]
    fn every_column_is_bound_once_in_each_statement() {
        let highest =
            |sql: &str| (1..100).rev().find(|i| sql.contains(&format!("${i}"))).unwrap_or_default();

        assert_eq!(highest(&INSERT_MANY_SQL), TASK_COLUMNS.len() + EVENT_COLUMNS.len());
        assert_eq!(highest(&WRITE_MANY_SQL), 3 + TASK_COLUMNS.len() + EVENT_COLUMNS.len());
    }
}
