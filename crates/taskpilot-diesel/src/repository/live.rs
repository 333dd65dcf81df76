//! Live successes (`TaskRepository::succeed_live`): the domain's guarded patch of a success,
//! [`LiveSuccess`], translated into one statement with its events, for one task or a batch.
//!
//! Nothing here decides a rule: the guard and the new values are the domain's, column for
//! column as `LiveSuccess` documents them, and the status, end and retry-state spellings are
//! bound from the domain's constants rather than written into the text.

use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use serde_json::Value;
use taskpilot_app::{Actor, RepoError};
use taskpilot_domain::{LiveAttemptGuard, LiveSuccess, Task, TaskId, TokenName};
use uuid::Uuid;

use super::{classify, TaskRow};

/// Live successes and their events, one statement.
///
/// - `input`: one row per success (a repeated id counts once, the first).
/// - `target`: the tasks the guard matches, locked in id order (so that two batches over
///   the same tasks wait for each other rather than deadlock), with the worker that held
///   them, which the update clears and the event names. A row changed by a concurrent
///   writer after this statement's snapshot is re-checked on its newest version, so a task
///   that stopped matching is left alone.
/// - `succeeded`: the patch, exactly `LiveSuccess`'s table; the guard is repeated so that the
///   update alone already never touches a task that does not match.
///
/// Both `target` and `succeeded` also say `t.id = ANY($1)`: without it PostgreSQL estimates
/// the unnested input poorly and, from a few dozen rows on, joins it to a sequential scan of
/// `tasks` (measured: a batch of 100 took over 100 ms on a 200,000-task table); with it both
/// read the primary key.
/// - `logged`: one event each, the row `TaskEvent::transition` makes of a success: from the
///   guard's status to the new one, the attempt and the worker that ran it, no error, the
///   worker as actor, at the new `updated_at`.
///
/// Binds: $1 ids, $2 tokens, $3 workers (NULL: not named), $4 results, $5 instants, all
/// arrays of one entry per success; $6 the guard's status, $7 the new status, $8 how the
/// attempt ends, $9 the new retry state, $10 the events' actor.
const SUCCEED_LIVE_SQL: &str = "\
WITH input AS (
    SELECT DISTINCT ON (id) id, lease_token, worker_id, result, now
    FROM unnest($1, $2, $3, $4, $5) WITH ORDINALITY
        AS i(id, lease_token, worker_id, result, now, n)
    ORDER BY id, n
), target AS MATERIALIZED (
    SELECT t.id, t.worker_id, i.lease_token, i.result, i.now
    FROM input AS i JOIN tasks AS t ON t.id = i.id
    WHERE t.id = ANY($1)
      AND t.status = $6
      AND t.lease_token = i.lease_token
      AND (i.worker_id IS NULL OR t.worker_id = i.worker_id)
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), succeeded AS (
    UPDATE tasks AS t
    SET status = $7,
        result = target.result,
        completed_at = target.now,
        ended_attempt = t.attempt,
        ended_attempt_token = target.lease_token,
        ended_attempt_end = $8,
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        processing_started_at = NULL,
        next_run_at = NULL,
        retry_state = $9,
        last_error = NULL,
        updated_at = greatest(target.now, t.created_at),
        version = t.version + 1
    FROM target
    WHERE t.id = ANY($1) AND t.id = target.id AND t.status = $6
      AND t.lease_token = target.lease_token
    RETURNING t.*, target.worker_id AS ended_worker_id
), logged AS (
    INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, actor, at,
                             token_name)
    SELECT id, attempt, $6, status, ended_worker_id, $10, updated_at, $11
    FROM succeeded
    ORDER BY id
)
SELECT * FROM succeeded";

/// `TaskRepository::succeed_live`: one statement, so one round trip and atomic.
pub(super) fn succeed_live(
    conn: &mut PgConnection,
    successes: &[(TaskId, LiveSuccess)],
    token: Option<&TokenName>,
) -> Result<Vec<Task>, RepoError> {
    if successes.is_empty() {
        return Ok(Vec::new());
    }
    let n = successes.len();
    let (mut ids, mut tokens) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut workers, mut results, mut instants) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (id, success) in successes {
        let guard = success.guard();
        ids.push(id.as_uuid());
        tokens.push(guard.token().as_uuid());
        workers.push(guard.worker().map(|w| w.as_str().to_owned()));
        results.push(success.result().cloned());
        instants.push(success.now());
    }
    let rows: Vec<TaskRow> = diesel::sql_query(SUCCEED_LIVE_SQL)
        .bind::<Array<SqlUuid>, Vec<Uuid>>(ids)
        .bind::<Array<SqlUuid>, Vec<Uuid>>(tokens)
        .bind::<Array<Nullable<Text>>, Vec<Option<String>>>(workers)
        .bind::<Array<Nullable<Jsonb>>, Vec<Option<Value>>>(results)
        .bind::<Array<Timestamptz>, _>(instants)
        .bind::<Text, _>(LiveAttemptGuard::STATUS.as_str())
        .bind::<Text, _>(LiveSuccess::STATUS.as_str())
        .bind::<Text, _>(LiveSuccess::ENDED_AS.as_str())
        .bind::<Text, _>(LiveSuccess::RETRY_STATE.as_str())
        .bind::<Text, _>(Actor::Worker.as_str())
        .bind::<Nullable<Text>, _>(token.map(TokenName::as_str))
        .load(conn)
        .map_err(|e| classify(e, "cannot store the successes"))?;
    rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::unexpected)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bind_is_used_and_none_is_missing() {
        let highest = (1..100)
            .rev()
            .find(|i| SUCCEED_LIVE_SQL.contains(&format!("${i}")))
            .unwrap_or_default();

        assert_eq!(highest, 11);
    }
}
