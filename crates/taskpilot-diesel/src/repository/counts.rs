//! The maintained counts (`TaskRepository::task_counts`, `fold_counts`): sums of the deltas
//! the statement triggers of migration `2026-12-01-150000_count_tasks` append to
//! `task_counts` and `task_durations` with every write of `tasks`. The fold also folds the
//! per-minute `task_throughput` of migration `2026-12-01-170000_add_throughput_and_workers`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, SmallInt, Text, Timestamptz};
use taskpilot_app::{
    DurationHistogram, DurationKind, QueueCounts, RepoError, StatusCounts, TaskCounts,
    DURATION_BUCKETS,
};
use taskpilot_domain::QueueName;

use super::classify;

/// Folds of the counts take this advisory lock for their transaction, so that one server
/// folds at a time and the others skip the turn. "tpcounts" in ASCII.
const FOLD_LOCK_KEY: i64 = 0x7470_636f_756e_7473;

/// Most (minute, queue) pairs of throughput one fold rewrites: a busy minute holds a row per
/// write statement until folded, so this bounds one fold to a few minutes' worth of rows.
const THROUGHPUT_PAIRS_PER_FOLD: i64 = 100;

/// The sums by queue and status, with the PENDING rows of `$1`'s minute apart from those
/// before it (runnable) and after it (scheduled). Binds: $1 now.
const SUMS_SQL: &str = "\
SELECT queue, status,
       coalesce(sum(n) FILTER (WHERE run_minute IS NULL OR run_minute < m.now_minute), 0)::int8 AS due,
       coalesce(sum(n) FILTER (WHERE run_minute = m.now_minute), 0)::int8 AS this_minute,
       coalesce(sum(n) FILTER (WHERE run_minute > m.now_minute), 0)::int8 AS later
FROM task_counts
CROSS JOIN (SELECT date_bin('1 minute', $1, timestamptz '2000-01-01 00:00:00+00') AS now_minute) AS m
GROUP BY queue, status
HAVING sum(n) <> 0";

/// The PENDING tasks due later within `$1`'s minute: a range of `tasks_scheduled_run_idx`
/// no longer than one minute of scheduled runs. Binds: $1 now.
const LATER_THIS_MINUTE_SQL: &str = "\
SELECT queue, count(*) AS n
FROM tasks
WHERE status = 'PENDING' AND next_run_at > $1
  AND next_run_at < date_bin('1 minute', $1, timestamptz '2000-01-01 00:00:00+00') + interval '1 minute'
GROUP BY queue";

/// The oldest runnable task of each queue of `$2`, by the claim order's key: a loose index
/// scan of `tasks_runnable_queue_idx` (queue, priority DESC, runnable since, id), which walks
/// the queue's distinct priorities and takes the first runnable entry of each, so it reads a
/// few index entries per priority in use, not the queue's tasks. Binds: $1 now, $2 queues.
const OLDEST_RUNNABLE_SQL: &str = "\
SELECT q.queue, (
    WITH RECURSIVE p AS (
        (SELECT t.priority FROM tasks AS t
         WHERE t.status = 'PENDING' AND t.queue = q.queue
         ORDER BY t.priority DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT t.priority FROM tasks AS t
                WHERE t.status = 'PENDING' AND t.queue = q.queue AND t.priority < p.priority
                ORDER BY t.priority DESC LIMIT 1)
        FROM p WHERE p.priority IS NOT NULL
    )
    SELECT min(f.since)
    FROM p CROSS JOIN LATERAL (
        SELECT coalesce(t.next_run_at, t.created_at) AS since FROM tasks AS t
        WHERE t.status = 'PENDING' AND t.queue = q.queue AND t.priority = p.priority
          AND (t.next_run_at IS NULL OR t.next_run_at <= $1)
        ORDER BY coalesce(t.next_run_at, t.created_at) LIMIT 1
    ) AS f
) AS oldest
FROM unnest($2) AS q(queue)";

/// The duration histograms by queue, kind and bucket.
const DURATIONS_SQL: &str = "\
SELECT queue, kind, bucket, sum(n)::int8 AS n, sum(seconds) AS seconds
FROM task_durations
GROUP BY queue, kind, bucket";

/// Folds the oldest `$2` count deltas into their sums; PENDING rows of minutes more than one
/// minute before `$1` lose their minute (they are runnable whoever reads, give or take the
/// clocks' skew). Returns how many rows fewer the table has. Binds: $1 now, $2 limit.
const FOLD_COUNTS_SQL: &str = "\
WITH gone AS (
    DELETE FROM task_counts
    WHERE id IN (SELECT id FROM task_counts ORDER BY id LIMIT $2)
    RETURNING queue, status, run_minute, n
), kept AS (
    INSERT INTO task_counts (queue, status, run_minute, n)
    SELECT queue, status, minute, sum(n)
    FROM gone
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN run_minute < date_bin('1 minute', $1, timestamptz '2000-01-01 00:00:00+00') - interval '1 minute'
                THEN NULL
            ELSE run_minute
        END AS minute
    ) AS m
    GROUP BY queue, status, minute
    HAVING sum(n) <> 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) AS n";

/// Folds the oldest `$1` duration deltas into their sums. Returns how many rows fewer the
/// table has. Binds: $1 limit.
const FOLD_DURATIONS_SQL: &str = "\
WITH gone AS (
    DELETE FROM task_durations
    WHERE id IN (SELECT id FROM task_durations ORDER BY id LIMIT $1)
    RETURNING queue, kind, bucket, n, seconds
), kept AS (
    INSERT INTO task_durations (queue, kind, bucket, n, seconds)
    SELECT queue, kind, bucket, sum(n), sum(seconds) FROM gone GROUP BY queue, kind, bucket
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) AS n";

/// Folds the throughput deltas of up to `$2` (minute, queue) pairs that have more than one
/// row into one row each, the oldest minutes first, and drops the minutes more than a day
/// before `$1`. Only pairs with several rows are rewritten, so a quiet table is left alone.
/// Returns how many rows fewer the table has. Binds: $1 now, $2 most pairs.
const FOLD_THROUGHPUT_SQL: &str = "\
WITH pairs AS (
    SELECT minute, queue FROM task_throughput
    GROUP BY minute, queue HAVING count(*) > 1
    ORDER BY minute LIMIT $2
), gone AS (
    DELETE FROM task_throughput AS t
    USING pairs AS p
    WHERE t.minute = p.minute AND t.queue = p.queue
    RETURNING t.minute, t.queue, t.created, t.succeeded, t.failed, t.cancelled
), kept AS (
    INSERT INTO task_throughput (minute, queue, created, succeeded, failed, cancelled)
    SELECT minute, queue, sum(created), sum(succeeded), sum(failed), sum(cancelled)
    FROM gone
    WHERE minute >= $1 - interval '1 day'
    GROUP BY minute, queue
    RETURNING 1
), old AS (
    DELETE FROM task_throughput WHERE minute < $1 - interval '1 day' RETURNING 1
)
SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) + (SELECT count(*) FROM old) AS n";

#[derive(QueryableByName)]
struct SumRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    due: i64,
    #[diesel(sql_type = BigInt)]
    this_minute: i64,
    #[diesel(sql_type = BigInt)]
    later: i64,
}

#[derive(QueryableByName)]
struct QueueCountRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct OldestRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    oldest: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct DurationRow {
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = SmallInt)]
    bucket: i16,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Double)]
    seconds: f64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A count that went below zero is a bug in the triggers (or a hand edit), not a state.
fn count_of(n: i64, what: &str) -> Result<u64, RepoError> {
    u64::try_from(n).map_err(|_| RepoError::unexpected(anyhow!("the count of {what} is {n}")))
}

/// See `TaskRepository::task_counts`: four reads in one repeatable-read, read-only
/// transaction, so that they see one snapshot.
pub(super) fn task_counts(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    max_queues: u32,
) -> Result<TaskCounts, RepoError> {
    let (sums, later_this_minute, durations) = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(|conn| {
            let sums: Vec<SumRow> =
                diesel::sql_query(SUMS_SQL).bind::<Timestamptz, _>(now).load(conn)?;
            let later_this_minute: Vec<QueueCountRow> = if sums
                .iter()
                .any(|s| s.status == "PENDING" && s.this_minute != 0)
            {
                diesel::sql_query(LATER_THIS_MINUTE_SQL).bind::<Timestamptz, _>(now).load(conn)?
            } else {
                Vec::new()
            };
            let durations: Vec<DurationRow> = diesel::sql_query(DURATIONS_SQL).load(conn)?;
            Ok::<_, diesel::result::Error>((sums, later_this_minute, durations))
        })
        .map_err(|e| classify(e, "cannot read the task counts"))?;

    let later: BTreeMap<String, i64> =
        later_this_minute.into_iter().map(|r| (r.queue, r.n)).collect();
    let mut by_queue: BTreeMap<String, StatusCounts> = BTreeMap::new();
    for row in sums {
        let counts = by_queue.entry(row.queue.clone()).or_default();
        let what = format!("{} tasks in queue {}", row.status, row.queue);
        match row.status.as_str() {
            "PENDING" => {
                let later_now = later.get(&row.queue).copied().unwrap_or(0);
                counts.runnable = count_of(row.due + row.this_minute - later_now, &what)?;
                counts.scheduled = count_of(row.later + later_now, &what)?;
            }
            "RUNNING" => counts.running = count_of(row.due, &what)?,
            "SUCCEEDED" => counts.succeeded = count_of(row.due, &what)?,
            "FAILED" => counts.failed = count_of(row.due, &what)?,
            "CANCELLED" => counts.cancelled = count_of(row.due, &what)?,
            other => return Err(RepoError::unexpected(anyhow!("counted status {other:?}"))),
        }
    }
    by_queue.retain(|_, counts| counts.total() > 0);

    let cap = usize::try_from(max_queues).unwrap_or(usize::MAX);
    let own: BTreeSet<String> = by_queue.keys().take(cap).cloned().collect();
    let mut queues = Vec::with_capacity(own.len());
    let mut other_queues: Option<StatusCounts> = None;
    for (queue, counts) in by_queue {
        if own.contains(&queue) {
            let queue = QueueName::parse(&queue).map_err(RepoError::unexpected)?;
            queues.push(QueueCounts { queue, counts, oldest_runnable_since: None });
        } else {
            other_queues.get_or_insert_with(StatusCounts::default).add(&counts);
        }
    }

    let waiting: Vec<String> = queues
        .iter()
        .filter(|q| q.counts.runnable > 0)
        .map(|q| q.queue.as_str().to_owned())
        .collect();
    if !waiting.is_empty() {
        let oldest: Vec<OldestRow> = diesel::sql_query(OLDEST_RUNNABLE_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<Array<Text>, _>(&waiting)
            .load(conn)
            .map_err(|e| classify(e, "cannot read the oldest runnable tasks"))?;
        let oldest: BTreeMap<String, Option<DateTime<Utc>>> =
            oldest.into_iter().map(|r| (r.queue, r.oldest)).collect();
        for q in &mut queues {
            q.oldest_runnable_since = oldest.get(q.queue.as_str()).copied().flatten();
        }
    }

    let durations = histograms(durations, &own)?;
    Ok(TaskCounts { queues, other_queues, durations })
}

/// The duration rows as cumulative histograms, one per (queue, kind), the queues beyond `own`
/// summed together (queue `None`).
fn histograms(
    rows: Vec<DurationRow>,
    own: &BTreeSet<String>,
) -> Result<Vec<DurationHistogram>, RepoError> {
    // Per bucket, the last (index DURATION_BUCKETS.len()) being above every bound.
    let mut sums: BTreeMap<(Option<String>, DurationKind), (Vec<u64>, f64)> = BTreeMap::new();
    for row in rows {
        let kind = match row.kind.as_str() {
            "WAIT" => DurationKind::Wait,
            "RUN" => DurationKind::Run,
            other => return Err(RepoError::unexpected(anyhow!("duration kind {other:?}"))),
        };
        let queue = own.contains(&row.queue).then_some(row.queue);
        let bucket = usize::try_from(row.bucket)
            .ok()
            .filter(|b| *b <= DURATION_BUCKETS.len())
            .ok_or_else(|| RepoError::unexpected(anyhow!("duration bucket {}", row.bucket)))?;
        let (counts, seconds) =
            sums.entry((queue, kind)).or_insert_with(|| (vec![0; DURATION_BUCKETS.len() + 1], 0.0));
        counts[bucket] += count_of(row.n, "durations")?;
        *seconds += row.seconds;
    }
    sums.into_iter()
        .map(|((queue, kind), (counts, sum_seconds))| {
            let queue =
                queue.map(|q| QueueName::parse(&q)).transpose().map_err(RepoError::unexpected)?;
            Ok(DurationHistogram { queue, kind, buckets: counts, sum_seconds })
        })
        .collect()
}

/// See `TaskRepository::fold_counts`: one transaction under [`FOLD_LOCK_KEY`], or nothing
/// when another server holds it.
pub(super) fn fold_counts(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<u64, RepoError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let limit = i64::from(limit);
    conn.transaction(|conn| {
        let lock: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind::<BigInt, _>(FOLD_LOCK_KEY)
            .get_result(conn)?;
        if !lock.locked {
            return Ok(0);
        }
        let counts: Count = diesel::sql_query(FOLD_COUNTS_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(limit)
            .get_result(conn)?;
        let durations: Count =
            diesel::sql_query(FOLD_DURATIONS_SQL).bind::<BigInt, _>(limit).get_result(conn)?;
        let throughput: Count = diesel::sql_query(FOLD_THROUGHPUT_SQL)
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(THROUGHPUT_PAIRS_PER_FOLD)
            .get_result(conn)?;
        Ok(counts.n + durations.n + throughput.n)
    })
    .map_err(|e| classify(e, "cannot fold the task counts"))
    .and_then(|n| count_of(n, "folded rows"))
}
