//! Retention's statement: delete a bounded batch of finished tasks with their history.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use taskpilot_app::RepoError;
use taskpilot_domain::TaskStatus;

use super::classify;

/// One statement, so one short transaction: pick up to `$3` tasks in status `$1` that
/// finished before `$2`, oldest first, skipping rows that another transaction holds locked
/// (another server's pruner, a rerun or a late report on the same task: the next batch finds
/// what is still due); delete their history, then them.
///
/// The history is deleted here rather than left to a foreign key's `ON DELETE CASCADE`, so
/// that it goes with its task whether or not `task_events` keeps a foreign key. `due` is
/// materialized, so both deletes see the same ids and the batch stays at `LIMIT` rows.
/// `tasks_finished_idx` serves `due` in `completed_at` order; both deletes take the ids as
/// one array (`= ANY (ARRAY (...))`), which the planner always answers through the indexes
/// on `task_events (task_id, id)` and the primary key: joined to the CTE instead, it guesses
/// the CTE's size and may scan all of `task_events` per batch.
/// PostgreSQL re-checks the `WHERE` clause on a row that changed since the statement's
/// snapshot before locking it, so a task rerun a moment before is left alone.
///
/// Binds: $1 status, $2 finished before, $3 limit.
pub(crate) const DELETE_FINISHED_SQL: &str = "\
WITH due AS MATERIALIZED (
    SELECT id
    FROM tasks
    WHERE status = $1 AND completed_at < $2
    ORDER BY completed_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), history AS (
    DELETE FROM task_events WHERE task_id = ANY (ARRAY (SELECT id FROM due))
)
DELETE FROM tasks WHERE id = ANY (ARRAY (SELECT id FROM due))";

/// See `TaskRepository::delete_finished`; the count is the deleted tasks.
pub(super) fn delete_finished(
    conn: &mut PgConnection,
    status: TaskStatus,
    completed_before: DateTime<Utc>,
    limit: u32,
) -> Result<u64, RepoError> {
    if !status.is_terminal() || limit == 0 {
        return Ok(0);
    }
    let deleted = diesel::sql_query(DELETE_FINISHED_SQL)
        .bind::<Text, _>(status.as_str())
        .bind::<Timestamptz, _>(completed_before)
        .bind::<BigInt, _>(i64::from(limit))
        .execute(conn)
        .map_err(|e| classify(e, "cannot delete finished tasks"))?;
    Ok(deleted as u64)
}
