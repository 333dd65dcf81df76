//! The statements of bulk actions: deleting judged tasks with compare-and-swap on their
//! version, and recording the action once.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Uuid as SqlUuid};
use taskpilot_app::{BulkActionRecord, RepoError};
use taskpilot_domain::TaskId;

use super::classify;
use crate::schema::bulk_actions;

/// One statement, so one short transaction: lock the tasks whose id and version are still
/// those judged (`$1` ids, `$2` versions, pairwise), skipping rows another transaction holds
/// locked (a worker's report, another server's action: the caller reads them again and
/// judges anew); delete their history, then them, and return the ids deleted.
///
/// PostgreSQL re-checks the join on a row that changed since the statement's snapshot
/// before locking it, so a task whose version moved on is left alone. As in retention, the
/// ids go to both deletes as one array so that the primary key and the `task_events`
/// index answer them.
pub(crate) const DELETE_MANY_SQL: &str = "\
WITH doomed AS MATERIALIZED (
    SELECT t.id
    FROM tasks t
    JOIN unnest($1::uuid[], $2::bigint[]) AS d(id, version)
      ON t.id = d.id AND t.version = d.version
    FOR UPDATE OF t SKIP LOCKED
), history AS (
    DELETE FROM task_events WHERE task_id = ANY (ARRAY (SELECT id FROM doomed))
)
DELETE FROM tasks WHERE id = ANY (ARRAY (SELECT id FROM doomed)) RETURNING id";

#[derive(QueryableByName)]
struct Deleted {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
}

/// See `TaskRepository::delete_many`: the ids of `tasks` not deleted.
pub(super) fn delete_many(
    conn: &mut PgConnection,
    tasks: &[(TaskId, u64)],
) -> Result<Vec<TaskId>, RepoError> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = tasks.iter().map(|(id, _)| id.as_uuid()).collect();
    let versions = tasks
        .iter()
        .map(|(_, v)| i64::try_from(*v))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(RepoError::unexpected)?;
    let deleted: Vec<Deleted> = diesel::sql_query(DELETE_MANY_SQL)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<BigInt>, _>(&versions)
        .load(conn)
        .map_err(|e| classify(e, "cannot delete tasks"))?;
    let deleted: std::collections::HashSet<uuid::Uuid> =
        deleted.into_iter().map(|d| d.id).collect();
    Ok(tasks.iter().map(|(id, _)| *id).filter(|id| !deleted.contains(&id.as_uuid())).collect())
}

/// See `TaskRepository::record_bulk_action`.
pub(super) fn record_bulk_action(
    conn: &mut PgConnection,
    record: &BulkActionRecord,
) -> Result<(), RepoError> {
    let count = |n: u64| i64::try_from(n).map_err(RepoError::unexpected);
    diesel::insert_into(bulk_actions::table)
        .values((
            bulk_actions::id.eq(record.id),
            bulk_actions::action.eq(record.action),
            bulk_actions::selection.eq(&record.selection),
            bulk_actions::token_name.eq(record.token.as_ref().map(|t| t.as_str().to_owned())),
            bulk_actions::matched.eq(count(record.matched)?),
            bulk_actions::done.eq(count(record.done)?),
            bulk_actions::skipped.eq(count(record.skipped)?),
            bulk_actions::at.eq(record.at),
        ))
        .execute(conn)
        .map_err(|e| classify(e, "cannot record a bulk action"))?;
    Ok(())
}
