//! Queue state (`queues`, migration `2026-12-01-161000_add_queues`), the last minute's
//! activity by queue, and the runnable tasks ahead of a task.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use taskpilot_app::{QueueActivity, RepoError};
use taskpilot_domain::{Pause, QueueName, QueueState, Task, TokenName};

use super::classify;
use crate::notify::RUNNABLE_CHANNEL;
use crate::schema::queues;

/// Tasks created and tasks finished at or after `$1`, by queue: a range of
/// `tasks_created_at_id_idx` and one of `tasks_finished_idx` per terminal status, so the cost
/// follows the tasks of that window, not the tasks stored. Binds: $1 since.
pub(crate) const ACTIVITY_SQL: &str = "\
SELECT queue, sum(created)::int8 AS created, sum(completed)::int8 AS completed
FROM (
    SELECT queue, count(*) AS created, 0 AS completed
    FROM tasks WHERE created_at >= $1 GROUP BY queue
    UNION ALL
    SELECT queue, 0, count(*)
    FROM tasks
    WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND completed_at >= $1
    GROUP BY queue
) AS a
GROUP BY queue
ORDER BY queue";

/// The runnable tasks of queue `$1` that a claim at `$2` takes before the task of priority
/// `$3`, runnable since `$4`, id `$5`: a range of `tasks_runnable_queue_idx` in claim order,
/// counted up to `$6`. Binds: $1 queue, $2 now, $3 priority, $4 runnable since, $5 id, $6 cap.
pub(crate) const AHEAD_SQL: &str = "\
SELECT count(*) AS n FROM (
    SELECT 1 FROM tasks
    WHERE status = 'PENDING' AND queue = $1 AND (next_run_at IS NULL OR next_run_at <= $2)
      AND (priority > $3
           OR (priority = $3 AND (coalesce(next_run_at, created_at), id) < ($4, $5)))
    LIMIT $6
) AS ahead";

#[derive(Queryable, Selectable)]
#[diesel(table_name = queues, check_for_backend(diesel::pg::Pg))]
struct QueueRow {
    name: String,
    paused_at: Option<DateTime<Utc>>,
    paused_by: Option<String>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl QueueRow {
    fn into_state(self) -> Result<(QueueName, QueueState), RepoError> {
        let queue = QueueName::parse(&self.name).map_err(RepoError::unexpected)?;
        let paused = match (self.paused_at, self.paused_by) {
            (Some(at), Some(by)) => {
                Some(Pause { by: TokenName::parse(&by).map_err(RepoError::unexpected)?, at })
            }
            (None, None) => None,
            _ => return Err(RepoError::unexpected(anyhow!("queue {queue}: half a pause"))),
        };
        let version = u64::try_from(self.version).map_err(|_| {
            RepoError::unexpected(anyhow!("queue {queue}: version {}", self.version))
        })?;
        Ok((queue, QueueState { paused, version, updated_at: Some(self.updated_at) }))
    }
}

#[derive(QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = BigInt)]
    created: i64,
    #[diesel(sql_type = BigInt)]
    completed: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn non_negative(n: i64, what: &str) -> Result<u64, RepoError> {
    u64::try_from(n).map_err(|_| RepoError::unexpected(anyhow!("{what} is {n}")))
}

pub(super) fn queue_states(
    conn: &mut PgConnection,
) -> Result<Vec<(QueueName, QueueState)>, RepoError> {
    let rows: Vec<QueueRow> = queues::table
        .order(queues::name.asc())
        .select(QueueRow::as_select())
        .load(conn)
        .map_err(|e| classify(e, "cannot read the queues"))?;
    rows.into_iter().map(QueueRow::into_state).collect()
}

pub(super) fn queue_state(
    conn: &mut PgConnection,
    queue: &QueueName,
) -> Result<QueueState, RepoError> {
    let row: Option<QueueRow> = queues::table
        .find(queue.as_str())
        .select(QueueRow::as_select())
        .first(conn)
        .optional()
        .map_err(|e| classify(e, "cannot read the queue"))?;
    Ok(match row {
        Some(row) => row.into_state()?.1,
        None => QueueState::default(),
    })
}

/// One transaction: the compare-and-swap write (an insert when nothing is stored yet) and,
/// when the queue is claimable afterwards, the runnable notification, sent on commit.
pub(super) fn write_queue_state(
    conn: &mut PgConnection,
    queue: &QueueName,
    state: &QueueState,
    expected_version: u64,
) -> Result<bool, RepoError> {
    let too_big = |v: u64| RepoError::unexpected(anyhow!("queue version {v} is out of range"));
    let version = i64::try_from(state.version).map_err(|_| too_big(state.version))?;
    let expected = i64::try_from(expected_version).map_err(|_| too_big(expected_version))?;
    let updated_at = state
        .updated_at
        .ok_or_else(|| RepoError::unexpected(anyhow!("queue {queue}: a write without a time")))?;
    let paused_at = state.paused.as_ref().map(|p| p.at);
    let paused_by = state.paused.as_ref().map(|p| p.by.as_str().to_owned());
    conn.transaction(|conn| {
        let written = if expected == 0 {
            diesel::insert_into(queues::table)
                .values((
                    queues::name.eq(queue.as_str()),
                    queues::paused_at.eq(paused_at),
                    queues::paused_by.eq(&paused_by),
                    queues::updated_at.eq(updated_at),
                    queues::version.eq(version),
                ))
                .on_conflict_do_nothing()
                .execute(conn)?
        } else {
            diesel::update(
                queues::table
                    .filter(queues::name.eq(queue.as_str()))
                    .filter(queues::version.eq(expected)),
            )
            .set((
                queues::paused_at.eq(paused_at),
                queues::paused_by.eq(&paused_by),
                queues::updated_at.eq(updated_at),
                queues::version.eq(version),
            ))
            .execute(conn)?
        };
        if written == 1 && state.is_claimable() {
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(RUNNABLE_CHANNEL)
                .bind::<Text, _>(queue.as_str())
                .execute(conn)?;
        }
        Ok(written == 1)
    })
    .map_err(|e| classify(e, "cannot write the queue"))
}

pub(super) fn queue_activity(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<QueueActivity>, RepoError> {
    let rows: Vec<ActivityRow> = diesel::sql_query(ACTIVITY_SQL)
        .bind::<Timestamptz, _>(since)
        .load(conn)
        .map_err(|e| classify(e, "cannot read the queues' activity"))?;
    rows.into_iter()
        .map(|r| {
            Ok(QueueActivity {
                queue: QueueName::parse(&r.queue).map_err(RepoError::unexpected)?,
                created: non_negative(r.created, "a count of created tasks")?,
                completed: non_negative(r.completed, "a count of finished tasks")?,
            })
        })
        .collect()
}

pub(super) fn runnable_ahead(
    conn: &mut PgConnection,
    task: &Task,
    now: DateTime<Utc>,
    cap: u32,
) -> Result<u64, RepoError> {
    let since = task.next_run_at().unwrap_or_else(|| task.created_at());
    let count: Count = diesel::sql_query(AHEAD_SQL)
        .bind::<Text, _>(task.queue().as_str())
        .bind::<Timestamptz, _>(now)
        .bind::<Integer, _>(task.priority())
        .bind::<Timestamptz, _>(since)
        .bind::<SqlUuid, _>(task.id().as_uuid())
        .bind::<BigInt, _>(i64::from(cap))
        .get_result(conn)
        .map_err(|e| classify(e, "cannot count the tasks ahead"))?;
    non_negative(count.n, "a count of tasks ahead")
}
