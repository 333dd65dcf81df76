//! What operators read about the queue's activity (migration
//! `2026-12-01-170000_add_throughput_and_workers`): throughput per minute from the deltas the
//! statement triggers append to `task_throughput`, the failed tasks grouped by error from a
//! bounded range of `tasks_finished_idx`, and the workers' sightings in `workers`.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use taskpilot_app::{
    DeadLetterGroup, DeadLetterQuery, RepoError, ThroughputMinute, WorkerSighting,
};
use taskpilot_domain::{QueueName, TaskName, WorkerId};

use super::classify;

/// Created and finished tasks per minute from `$1`'s minute on, in the queues `$2` (every
/// queue when NULL): a range of `task_throughput_minute_idx`. Binds: $1 since, $2 queues.
const THROUGHPUT_SQL: &str = "\
SELECT minute, sum(created)::int8 AS created, sum(succeeded)::int8 AS succeeded,
       sum(failed)::int8 AS failed, sum(cancelled)::int8 AS cancelled
FROM task_throughput
WHERE minute >= $1 AND ($2::text[] IS NULL OR queue = ANY($2))
GROUP BY minute
ORDER BY minute";

/// The newest `$3` FAILED tasks (a backward range of `tasks_finished_idx`) in the queues `$1`
/// (all when NULL) created by `$2` (anyone when NULL), grouped by queue, name and the first
/// `$4` characters of the first line of their error; the `$5` largest groups. Binds: $1
/// queues, $2 creator, $3 scan, $4 error characters, $5 limit.
pub(crate) const DEAD_LETTERS_SQL: &str = "\
SELECT queue, name, error, count(*)::int8 AS n,
       min(completed_at) AS first_failed_at, max(completed_at) AS last_failed_at
FROM (
    SELECT queue, name, left(split_part(coalesce(last_error, ''), E'\\n', 1), $4) AS error,
           completed_at
    FROM tasks
    WHERE status = 'FAILED' AND completed_at IS NOT NULL
      AND ($1::text[] IS NULL OR queue = ANY($1))
      AND ($2::uuid IS NULL OR created_by = $2)
    ORDER BY completed_at DESC
    LIMIT $3
) AS failed
GROUP BY queue, name, error
ORDER BY n DESC, last_failed_at DESC, queue, name, error
LIMIT $5";

/// Upserts sightings, keeping the later of each instant (`greatest` ignores NULLs). Binds:
/// $1 worker ids, $2 last claims, $3 last heartbeats, $4 last seen, in one order.
const RECORD_WORKERS_SQL: &str = "\
INSERT INTO workers AS w (worker_id, last_claim_at, last_heartbeat_at, last_seen_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
ON CONFLICT (worker_id) DO UPDATE SET
    last_claim_at = greatest(w.last_claim_at, excluded.last_claim_at),
    last_heartbeat_at = greatest(w.last_heartbeat_at, excluded.last_heartbeat_at),
    last_seen_at = greatest(w.last_seen_at, excluded.last_seen_at)";

/// Forgets the workers last seen before `$1`. Binds: $1 instant.
const FORGET_WORKERS_SQL: &str = "DELETE FROM workers WHERE last_seen_at < $1";

/// The workers seen at or after `$1`, the most recent first, at most `$2`.
const WORKERS_SQL: &str = "\
SELECT worker_id, last_claim_at, last_heartbeat_at, last_seen_at
FROM workers
WHERE last_seen_at >= $1
ORDER BY last_seen_at DESC, worker_id
LIMIT $2";

#[derive(QueryableByName)]
struct ThroughputRow {
    #[diesel(sql_type = Timestamptz)]
    minute: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    created: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    cancelled: i64,
}

#[derive(QueryableByName)]
struct DeadLetterRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    error: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Timestamptz)]
    first_failed_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    last_failed_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct WorkerRow {
    #[diesel(sql_type = Text)]
    worker_id: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_claim_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_heartbeat_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    last_seen_at: DateTime<Utc>,
}

/// A stored count below zero is a bug in the triggers (or a hand edit), not a state.
fn count(n: i64, what: &str) -> Result<u64, RepoError> {
    u64::try_from(n).map_err(|_| RepoError::unexpected(anyhow!("the count of {what} is {n}")))
}

fn queue_names(queues: Option<&[QueueName]>) -> Option<Vec<String>> {
    queues.map(|q| q.iter().map(|q| q.as_str().to_owned()).collect())
}

pub(super) fn throughput(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    queues: Option<&[QueueName]>,
) -> Result<Vec<ThroughputMinute>, RepoError> {
    let rows: Vec<ThroughputRow> = diesel::sql_query(THROUGHPUT_SQL)
        .bind::<Timestamptz, _>(since)
        .bind::<Nullable<Array<Text>>, _>(queue_names(queues))
        .load(conn)
        .map_err(|e| classify(e, "cannot read the throughput"))?;
    rows.into_iter()
        .map(|r| {
            Ok(ThroughputMinute {
                minute: r.minute,
                created: count(r.created, "created tasks")?,
                succeeded: count(r.succeeded, "succeeded tasks")?,
                failed: count(r.failed, "failed tasks")?,
                cancelled: count(r.cancelled, "cancelled tasks")?,
            })
        })
        .collect()
}

pub(super) fn dead_letters(
    conn: &mut PgConnection,
    query: &DeadLetterQuery,
) -> Result<Vec<DeadLetterGroup>, RepoError> {
    let rows: Vec<DeadLetterRow> = diesel::sql_query(DEAD_LETTERS_SQL)
        .bind::<Nullable<Array<Text>>, _>(queue_names(query.queues.as_deref()))
        .bind::<Nullable<SqlUuid>, _>(query.created_by.map(|t| t.as_uuid()))
        .bind::<BigInt, _>(i64::from(query.scan))
        .bind::<Integer, _>(i32::try_from(query.error_chars).unwrap_or(i32::MAX))
        .bind::<BigInt, _>(i64::from(query.limit))
        .load(conn)
        .map_err(|e| classify(e, "cannot group the failed tasks"))?;
    rows.into_iter()
        .map(|r| {
            Ok(DeadLetterGroup {
                queue: QueueName::parse(&r.queue).map_err(RepoError::unexpected)?,
                name: TaskName::parse(&r.name).map_err(RepoError::unexpected)?,
                error: r.error,
                count: count(r.n, "failed tasks")?,
                first_failed_at: r.first_failed_at,
                last_failed_at: r.last_failed_at,
            })
        })
        .collect()
}

/// One transaction: the upsert, in worker order so that two servers writing the same workers
/// lock their rows in the same order, then the forgetting.
pub(super) fn record_workers(
    conn: &mut PgConnection,
    sightings: &[WorkerSighting],
    forget_before: DateTime<Utc>,
) -> Result<(), RepoError> {
    let mut sorted: Vec<&WorkerSighting> = sightings.iter().collect();
    sorted.sort_by(|a, b| a.worker.as_str().cmp(b.worker.as_str()));
    let ids: Vec<&str> = sorted.iter().map(|s| s.worker.as_str()).collect();
    let claims: Vec<Option<DateTime<Utc>>> = sorted.iter().map(|s| s.last_claim_at).collect();
    let beats: Vec<Option<DateTime<Utc>>> = sorted.iter().map(|s| s.last_heartbeat_at).collect();
    let seen: Vec<DateTime<Utc>> = sorted.iter().map(|s| s.last_seen_at).collect();
    conn.transaction(|conn| {
        diesel::sql_query(RECORD_WORKERS_SQL)
            .bind::<Array<Text>, _>(&ids)
            .bind::<Array<Nullable<Timestamptz>>, _>(&claims)
            .bind::<Array<Nullable<Timestamptz>>, _>(&beats)
            .bind::<Array<Timestamptz>, _>(&seen)
            .execute(conn)?;
        diesel::sql_query(FORGET_WORKERS_SQL).bind::<Timestamptz, _>(forget_before).execute(conn)
    })
    .map(drop)
    .map_err(|e| classify(e, "cannot record the workers seen"))
}

pub(super) fn workers(
    conn: &mut PgConnection,
    seen_since: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<WorkerSighting>, RepoError> {
    let rows: Vec<WorkerRow> = diesel::sql_query(WORKERS_SQL)
        .bind::<Timestamptz, _>(seen_since)
        .bind::<BigInt, _>(i64::from(limit))
        .load(conn)
        .map_err(|e| classify(e, "cannot read the workers"))?;
    rows.into_iter()
        .map(|r| {
            Ok(WorkerSighting {
                worker: WorkerId::parse(&r.worker_id).map_err(RepoError::unexpected)?,
                last_claim_at: r.last_claim_at,
                last_heartbeat_at: r.last_heartbeat_at,
                last_seen_at: r.last_seen_at,
            })
        })
        .collect()
}
