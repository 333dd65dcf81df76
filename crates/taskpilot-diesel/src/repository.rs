//! [`PgTaskRepository`]: the `TaskRepository` port on diesel, and the row types it maps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use diesel::dsl::{exists, min, sql};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text, Timestamptz, Uuid as SqlUuid};
use serde_json::Value;
use taskpilot_app::{
    Actor, BulkActionRecord, ClaimRequest, Cursor, DeadLetterGroup, DeadLetterQuery,
    NewIdempotencyKey, QueueActivity, RejectionCount, RepoError, StaleCall, TaskCounts, TaskEvent,
    TaskFilter, TaskRepository, TaskWrite, ThroughputMinute, WorkerSighting,
};
use taskpilot_domain::{
    to_micros, AttemptEnd, KeyClaim, LeaseToken, LiveSuccess, MaxAttempts, MaxCrashes, QueueName,
    QueueState, RetryState, Task, TaskId, TaskName, TaskRecord, TaskStatus, TokenId, TokenName,
    UniqueKey, WorkerId,
};
use uuid::Uuid;

use crate::outage::OUTAGE;
use crate::schema::{task_events, tasks};
use crate::PgPool;

pub(crate) mod activity;
mod batch;
mod bulk;
mod counts;
mod idempotency;
mod live;
pub(crate) mod queues;
pub(crate) mod retention;
mod tokens;

/// The `TaskRepository` on PostgreSQL.
///
/// Every call checks a connection out of the pool for one statement or one short
/// transaction, so a call never holds a connection or a lock beyond itself.
#[derive(Clone)]
pub struct PgTaskRepository {
    pool: PgPool,
    schema: Option<SchemaReady>,
}

/// Whether the database's schema is ready for a [`PgTaskRepository`] made
/// [`awaiting`](PgTaskRepository::awaiting_schema) it: a server that starts before its
/// database is reachable serves at once and migrates later, and until then every call is
/// unavailable (503) rather than a query on tables that may not exist.
#[derive(Debug, Clone, Default)]
pub struct SchemaReady(Arc<AtomicBool>);

impl SchemaReady {
    /// Not ready yet.
    pub fn pending() -> Self {
        Self::default()
    }

    /// Ready from now on: the migrations are applied.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`SchemaReady::set`] was called.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for PgTaskRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskRepository").field("pool", &self.pool.state()).finish()
    }
}

impl PgTaskRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, schema: None }
    }

    /// A repository over `pool` whose every call is unavailable until `schema` is set.
    pub fn awaiting_schema(pool: PgPool, schema: SchemaReady) -> Self {
        Self { pool, schema: Some(schema) }
    }

    fn conn(&self) -> Result<PooledConnection<ConnectionManager<PgConnection>>, RepoError> {
        if self.schema.as_ref().is_some_and(|schema| !schema.is_ready()) {
            return Err(RepoError::Unavailable(anyhow!("the database is not migrated yet")));
        }
        // r2d2 only fails after waiting its whole connection timeout without getting a working
        // connection: the database is down, unreachable, or saturated. All are "try later".
        match crate::checkout(&self.pool) {
            Ok(conn) => Ok(conn),
            Err(e) => {
                let error = anyhow!(e).context("no database connection");
                OUTAGE.failed(&error);
                Err(RepoError::Unavailable(error))
            }
        }
    }
}

/// The claim, one statement: pick runnable rows in claim order, skipping rows another claim
/// has locked; start them exactly as `Task::start` does; log one start event each (stamped
/// with the task's new `updated_at`, as `TaskEvent::transition` stamps it); return them in
/// claim order.
///
/// The `picked` CTE is what keeps the batch at `LIMIT` rows (an `UPDATE ... WHERE id IN
/// (subquery)` may be re-planned into more), and it keeps each row's sort key, since the
/// update clears `next_run_at`. `{queue_filter}` is empty, `queue = $5` or
/// `queue = ANY($5)`: separate texts rather than one with `$5 IS NULL OR ...`, which a cached
/// generic plan could only serve with a filter; and a single queue as `=`, which walks
/// `tasks_runnable_queue_idx` in claim order (PostgreSQL 15 cannot walk an index in order
/// under `= ANY(...)`).
///
/// `{pause_filter}` is the domain's rule that a paused queue is not claimable
/// (`QueueState::is_claimable`), read in the same statement: for one queue a `NOT EXISTS` on
/// `$5` alone, which PostgreSQL evaluates once per claim (a one-time filter: one probe of
/// `queues_pkey`); otherwise a `NOT EXISTS` per candidate row on its queue, an anti-join on
/// `queues_pkey` while the walk of the runnable index goes on in claim order. Tasks of a paused
/// queue stay in the runnable index, so a claim over every queue steps over the paused
/// queues' runnable tasks that come before the first claimable ones.
///
/// Binds: $1 now, $2 limit, $3 worker, $4 the lease expiry (`LeaseDuration::expiry_from` of
/// $1, the domain's arithmetic, not the statement's), $5 queues (when filtered).
const CLAIM_SQL: &str = "\
WITH picked AS (
    SELECT id, priority, coalesce(next_run_at, created_at) AS runnable_since
    FROM tasks
    WHERE status = 'PENDING' AND (next_run_at IS NULL OR next_run_at <= $1){queue_filter}{pause_filter}
    ORDER BY priority DESC, coalesce(next_run_at, created_at), id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE tasks AS t
    SET status = 'RUNNING',
        worker_id = $3,
        processing_started_at = $1,
        attempt = t.attempt + 1,
        lease_token = gen_random_uuid(),
        lease_expires_at = $4,
        next_run_at = NULL,
        updated_at = greatest($1, t.created_at),
        version = t.version + 1
    FROM picked
    WHERE t.id = picked.id
    RETURNING t.*
), logged AS (
    INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, actor, at)
    SELECT id, attempt, 'PENDING', 'RUNNING', worker_id, 'WORKER', updated_at FROM claimed
)
SELECT claimed.*
FROM claimed JOIN picked ON picked.id = claimed.id
ORDER BY picked.priority DESC, picked.runnable_since, picked.id";

/// The claim statement over every queue (`None`), or over `Some(n)` queues bound as `$5`: one
/// text for one queue, an array for more.
pub(crate) fn claim_sql(queues: Option<usize>) -> String {
    let (filter, paused) = match queues {
        None => ("", PAUSED_ROW_QUEUE),
        Some(1) => (" AND queue = $5", PAUSED_ONE_QUEUE),
        Some(_) => (" AND queue = ANY($5)", PAUSED_ROW_QUEUE),
    };
    CLAIM_SQL.replace("{queue_filter}", filter).replace("{pause_filter}", paused)
}

/// The claim's pause filter for the one queue `$5`.
const PAUSED_ONE_QUEUE: &str = "
      AND NOT EXISTS (SELECT 1 FROM queues AS q WHERE q.name = $5 AND q.paused_at IS NOT NULL)";
/// The claim's pause filter for each candidate row's queue.
const PAUSED_ROW_QUEUE: &str = "
      AND NOT EXISTS (SELECT 1 FROM queues AS q WHERE q.name = tasks.queue AND q.paused_at IS NOT NULL)";

/// What an update's transaction found.
enum Written {
    Yes,
    VersionMoved,
    Missing,
}

/// How one insert went.
enum Inserted {
    Stored,
    /// Another active task of the queue holds the unique key.
    Held(TaskId),
    IdTaken,
    /// Skipped for a key whose holder finished since.
    Freed,
}

/// Why an update failed.
enum Failure {
    /// It would have made a second active task of one queue and unique key.
    UniqueKey,
    Other(RepoError),
}

/// The name of the partial unique index that lets one PENDING or RUNNING task of a queue
/// hold a unique key; see `migrations/*_add_unique_keys/up.sql`.
pub(crate) const UNIQUE_KEY_INDEX: &str = "tasks_unique_key_active";

/// Whether `error` is a violation of [`UNIQUE_KEY_INDEX`].
pub(crate) fn is_unique_key_violation(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(UNIQUE_KEY_INDEX))
}

/// The PENDING or RUNNING task other than `task` that holds `task`'s unique key in its queue.
pub(crate) fn unique_key_holder(
    conn: &mut PgConnection,
    task: &Task,
) -> Result<Option<TaskId>, DieselError> {
    let Some(key) = task.unique_key() else {
        return Ok(None);
    };
    Ok(tasks::table
        .filter(tasks::queue.eq(task.queue().as_str()))
        .filter(tasks::unique_key.eq(key.as_str()))
        .filter(tasks::status.eq_any(["PENDING", "RUNNING"]))
        .filter(tasks::id.ne(task.id().as_uuid()))
        .select(tasks::id)
        .first::<Uuid>(conn)
        .optional()?
        .map(TaskId::from_uuid))
}

/// The error for a write of `task` that violated [`UNIQUE_KEY_INDEX`] (after its
/// transaction ended): [`RepoError::UniqueKeyHeld`] naming the holder, or
/// [`RepoError::Conflict`] when the holder finished since (the write may be tried again).
pub(crate) fn held_by(conn: &mut PgConnection, task: &Task) -> RepoError {
    match unique_key_holder(conn, task) {
        Ok(Some(holder)) => RepoError::UniqueKeyHeld(holder),
        Ok(None) => RepoError::Conflict(task.id()),
        Err(e) => classify(e, "cannot look up the holder of a unique key"),
    }
}

impl TaskRepository for PgTaskRepository {
    fn insert(&self, task: &Task, event: &TaskEvent) -> Result<(), RepoError> {
        let row = TaskRow::try_from(task).map_err(RepoError::unexpected)?;
        let event = TaskEventRow::try_from(event).map_err(RepoError::unexpected)?;
        let mut conn = self.conn()?;
        // A holder that finishes between the insert that met it and the look that names it
        // frees the key: try again, a few times.
        for _ in 0..3 {
            // The task and its creation event commit together or not at all. `ON CONFLICT DO
            // NOTHING` waits for a racing insert of the same key (or id) to end and then skips
            // the row; the look that follows, a new statement, sees the winner.
            let inserted = conn.transaction(|conn| {
                let stored = diesel::insert_into(tasks::table)
                    .values(&row)
                    .on_conflict_do_nothing()
                    .execute(conn)?;
                if stored == 1 {
                    diesel::insert_into(task_events::table).values(&event).execute(conn)?;
                    return Ok(Inserted::Stored);
                }
                if let Some(holder) = unique_key_holder(conn, task)? {
                    return Ok(Inserted::Held(holder));
                }
                let taken =
                    diesel::select(exists(tasks::table.find(row.id))).get_result::<bool>(conn)?;
                Ok(if taken { Inserted::IdTaken } else { Inserted::Freed })
            });
            match inserted.map_err(|e| classify(e, "cannot insert the task"))? {
                Inserted::Stored => return Ok(()),
                Inserted::Held(holder) => return Err(RepoError::UniqueKeyHeld(holder)),
                Inserted::IdTaken => return Err(RepoError::Conflict(task.id())),
                Inserted::Freed => {}
            }
        }
        Err(RepoError::Conflict(task.id()))
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
        Task::try_from(row).map_err(RepoError::unexpected)
    }

    fn update(
        &self,
        task: &Task,
        expected_version: u64,
        event: Option<&TaskEvent>,
    ) -> Result<(), RepoError> {
        let row = TaskRow::try_from(task).map_err(RepoError::unexpected)?;
        let event = event.map(TaskEventRow::try_from).transpose().map_err(RepoError::unexpected)?;
        let expected_version = i64::try_from(expected_version).map_err(|_| {
            RepoError::unexpected(anyhow!("expected version {expected_version} is out of range"))
        })?;
        let mut conn = self.conn()?;
        let written = conn
            .transaction(|conn| {
                // Compare and swap: the row is written only if nobody moved its version on
                // since the caller read it. PostgreSQL re-checks the WHERE clause on the newest
                // row version after waiting for a concurrent writer, so of two racing updates
                // exactly one matches.
                let updated = diesel::update(
                    tasks::table
                        .filter(tasks::id.eq(row.id))
                        .filter(tasks::version.eq(expected_version)),
                )
                .set(&row)
                .execute(conn)?;
                if updated == 1 {
                    // Only the winner logs: a refused update leaves no event behind.
                    if let Some(event) = &event {
                        diesel::insert_into(task_events::table).values(event).execute(conn)?;
                    }
                    return Ok(Written::Yes);
                }
                // Nothing matched: either the task is gone or its version moved on.
                let found =
                    diesel::select(exists(tasks::table.find(row.id))).get_result::<bool>(conn)?;
                Ok(if found { Written::VersionMoved } else { Written::Missing })
            })
            .map_err(|e| {
                if is_unique_key_violation(&e) {
                    Failure::UniqueKey
                } else {
                    Failure::Other(classify(e, "cannot update the task"))
                }
            });
        let written = match written {
            Ok(written) => written,
            Err(Failure::UniqueKey) => return Err(held_by(&mut conn, task)),
            Err(Failure::Other(e)) => return Err(e),
        };
        match written {
            Written::Yes => Ok(()),
            Written::VersionMoved => Err(RepoError::Conflict(task.id())),
            Written::Missing => Err(RepoError::NotFound(task.id())),
        }
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Vec<Task>, RepoError> {
        let queues: Option<Vec<String>> =
            request.queues.as_ref().map(|qs| qs.iter().map(|q| q.as_str().to_owned()).collect());
        if request.limit == 0 || queues.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        // The instants `Task::start` computes: it truncates `now` to the microsecond, and the
        // domain alone says when a lease taken then runs out.
        let now = to_micros(request.now);
        let expires_at = request.lease.expiry_from(now);
        let query = diesel::sql_query(claim_sql(queues.as_ref().map(Vec::len)))
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(i64::from(request.limit))
            .bind::<Text, _>(request.worker.as_str())
            .bind::<Timestamptz, _>(expires_at);
        let mut conn = self.conn()?;
        let rows: Vec<TaskRow> = match queues.as_deref() {
            Some([queue]) => query.bind::<Text, _>(queue).load(&mut conn),
            Some(queues) => query.bind::<Array<Text>, _>(queues).load(&mut conn),
            None => query.load(&mut conn),
        }
        .map_err(|e| classify(e, "cannot claim tasks"))?;
        rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::unexpected)).collect()
    }

    fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.conn()?;
        let rows = tasks::table
            .filter(tasks::status.eq(TaskStatus::Running.as_str()))
            .filter(tasks::lease_expires_at.le(now))
            .order((tasks::lease_expires_at.asc(), tasks::id.asc()))
            .limit(i64::from(limit))
            .select(TaskRow::as_select())
            .load(&mut conn)
            .map_err(|e| classify(e, "cannot look for expired leases"))?;
        rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::unexpected)).collect()
    }

    fn earliest_scheduled_run(
        &self,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        let mut conn = self.conn()?;
        tasks::table
            .filter(tasks::status.eq(TaskStatus::Pending.as_str()))
            .filter(tasks::next_run_at.gt(after))
            .select(min(tasks::next_run_at))
            .get_result(&mut conn)
            .map_err(|e| classify(e, "cannot look for the next scheduled run"))
    }

    /// One statement: a data-modifying CTE inserts the tasks, the outer statement their
    /// events; every column goes as one array (see `batch`).
    fn insert_many(&self, tasks: &[Task], events: &[TaskEvent]) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        batch::insert_many(&mut conn, tasks, events)
    }

    /// One transaction (see `idempotency`): the key first, so that a second request with it
    /// waits for the first, then the tasks as [`TaskRepository::insert_many`] stores them.
    fn insert_keyed(
        &self,
        tasks: &[Task],
        events: &[TaskEvent],
        key: &NewIdempotencyKey,
    ) -> Result<KeyClaim, RepoError> {
        let mut conn = self.conn()?;
        idempotency::insert_keyed(&mut conn, tasks, events, key)
    }

    /// One statement (see `idempotency`), skipping locked rows.
    fn delete_expired_keys(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, RepoError> {
        let mut conn = self.conn()?;
        idempotency::delete_expired(&mut conn, now, limit)
    }

    /// One statement: `WHERE id = ANY($1)` with the ids as one array.
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        let mut conn = self.conn()?;
        let rows = tasks::table
            .filter(tasks::id.eq_any(ids))
            .select(TaskRow::as_select())
            .load(&mut conn)
            .map_err(|e| classify(e, "cannot load the tasks"))?;
        rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::unexpected)).collect()
    }

    /// One statement (see `batch`): lock the rows in id order, update where the version is
    /// still the expected one, log the applied writes' events and the refusals. One entry per
    /// losing write, in the order of `writes`. Of several writes to one task in a batch only
    /// the first can win. A row the table refuses (a CHECK), or a refusal event naming a task
    /// that does not exist, fails the whole batch as `RepoError::Unexpected`, and nothing is
    /// stored.
    fn write_many(
        &self,
        writes: &[TaskWrite],
        rejections: &[TaskEvent],
    ) -> Result<Vec<TaskId>, RepoError> {
        let mut conn = self.conn()?;
        batch::write_many(&mut conn, writes, rejections)
    }

    /// One statement (see `live`): lock the tasks the guards match in id order, apply the
    /// domain's patch, log one success event each.
    fn succeed_live(
        &self,
        successes: &[(TaskId, LiveSuccess)],
        token: Option<&TokenName>,
    ) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.conn()?;
        live::succeed_live(&mut conn, successes, token)
    }

    fn record_rejection(&self, event: &TaskEvent) -> Result<(), RepoError> {
        let row = TaskEventRow::try_from(event).map_err(RepoError::unexpected)?;
        let mut conn = self.conn()?;
        diesel::insert_into(task_events::table)
            .values(&row)
            .execute(&mut conn)
            .map_err(|e| classify(e, "cannot record a refused call"))?;
        Ok(())
    }

    fn events(&self, id: TaskId) -> Result<Vec<TaskEvent>, RepoError> {
        let mut conn = self.conn()?;
        let rows = task_events::table
            .filter(task_events::task_id.eq(id.as_uuid()))
            .order(task_events::id.asc())
            .select(TaskEventRow::as_select())
            .load(&mut conn)
            .map_err(|e| classify(e, "cannot load the task's history"))?;
        rows.into_iter()
            .map(|row| TaskEvent::try_from(row).map_err(RepoError::unexpected))
            .collect()
    }

    fn rejection_counts(&self) -> Result<Vec<RejectionCount>, RepoError> {
        #[derive(QueryableByName)]
        struct CountRow {
            #[diesel(sql_type = Text)]
            code: String,
            #[diesel(sql_type = Text)]
            call: String,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = self.conn()?;
        let rows: Vec<CountRow> = diesel::sql_query(
            "SELECT rejected_code AS code, rejected_call AS call, count(*) AS n \
             FROM task_events WHERE rejected_code IS NOT NULL \
             GROUP BY rejected_code, rejected_call ORDER BY rejected_code, rejected_call",
        )
        .load(&mut conn)
        .map_err(|e| classify(e, "cannot count refused calls"))?;
        rows.into_iter()
            .map(|r| {
                let call = StaleCall::parse(&r.call)
                    .ok_or_else(|| anyhow!("stored refused call {:?} is invalid", r.call))
                    .map_err(RepoError::unexpected)?;
                let count =
                    u64::try_from(r.n).context("negative count").map_err(RepoError::unexpected)?;
                Ok(RejectionCount { code: r.code, call, count })
            })
            .collect()
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
        if let Some(queue) = &filter.queue {
            query = query.filter(tasks::queue.eq(queue.as_str().to_owned()));
        }
        match filter.statuses.as_slice() {
            [] => {}
            // One status keeps the plain equality the partial indexes are written for.
            [status] => query = query.filter(tasks::status.eq(status.as_str())),
            statuses => {
                let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
                query = query.filter(tasks::status.eq_any(statuses));
            }
        }
        if let Some(retry_state) = filter.retry_state {
            query = query.filter(tasks::retry_state.eq(retry_state.as_str()));
        }
        if let Some(name) = &filter.name {
            query = query.filter(tasks::name.eq(name.as_str().to_owned()));
        }
        if let Some(at) = filter.created_after {
            query = query.filter(tasks::created_at.ge(at));
        }
        if let Some(at) = filter.created_before {
            query = query.filter(tasks::created_at.lt(at));
        }
        if let Some(at) = filter.completed_after {
            query = query.filter(tasks::completed_at.ge(at));
        }
        if let Some(at) = filter.completed_before {
            query = query.filter(tasks::completed_at.lt(at));
        }
        if let Some(text) = &filter.error_contains {
            query = query.filter(tasks::last_error.ilike(contains_pattern(text)).escape('\\'));
        }
        if let Some(payload) = &filter.payload_contains {
            // Among the newest MAX_PAYLOAD_MATCHES tasks whose payload contains the value:
            // found through the GIN index `tasks_payload_idx` when few match, by walking the
            // created_at index when many do, and then looked up by primary key, so that the
            // cost is bounded however many tasks match; the other conditions and the cursor
            // apply on top. As an array (`= ANY (ARRAY (...))`), not `IN (subquery)`: joined,
            // the planner guesses the subquery's size and may scan the whole table.
            query = query.filter(
                sql::<Bool>("tasks.id = ANY (ARRAY (SELECT p.id FROM tasks p WHERE p.payload @> ")
                    .bind::<Jsonb, _>(payload.clone())
                    .sql(" ORDER BY p.created_at DESC, p.id DESC LIMIT ")
                    .bind::<BigInt, _>(i64::from(TaskFilter::MAX_PAYLOAD_MATCHES))
                    .sql("))"),
            );
        }
        if let Some(queues) = &filter.queues {
            let queues: Vec<String> = queues.iter().map(|q| q.as_str().to_owned()).collect();
            query = query.filter(tasks::queue.eq_any(queues));
        }
        if let Some(token) = filter.created_by {
            query = query.filter(tasks::created_by.eq(token.as_uuid()));
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
        rows.into_iter().map(|row| Task::try_from(row).map_err(RepoError::unexpected)).collect()
    }

    /// Sums of what the statement triggers on `tasks` appended (see `counts`), and the
    /// oldest runnable task of each queue from the claim index.
    fn task_counts(&self, now: DateTime<Utc>, max_queues: u32) -> Result<TaskCounts, RepoError> {
        let mut conn = self.conn()?;
        counts::task_counts(&mut conn, now, max_queues)
    }

    fn fold_counts(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, RepoError> {
        let mut conn = self.conn()?;
        counts::fold_counts(&mut conn, now, limit)
    }

    /// One statement (see `bulk`): lock the tasks still at the judged version, skipping
    /// locked rows, delete their history, then them.
    fn delete_many(&self, tasks: &[(TaskId, u64)]) -> Result<Vec<TaskId>, RepoError> {
        let mut conn = self.conn()?;
        bulk::delete_many(&mut conn, tasks)
    }

    fn record_bulk_action(&self, record: &BulkActionRecord) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        bulk::record_bulk_action(&mut conn, record)
    }

    fn ping(&self) -> Result<(), RepoError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .map_err(|e| classify(e, "the database did not answer"))?;
        Ok(())
    }

    /// One statement (see `retention`): the due tasks locked with `SKIP LOCKED`, their
    /// events deleted, then they.
    fn queue_states(&self) -> Result<Vec<(QueueName, QueueState)>, RepoError> {
        queues::queue_states(&mut *self.conn()?)
    }

    fn queue_state(&self, queue: &QueueName) -> Result<QueueState, RepoError> {
        queues::queue_state(&mut *self.conn()?, queue)
    }

    fn write_queue_state(
        &self,
        queue: &QueueName,
        state: &QueueState,
        expected_version: u64,
    ) -> Result<bool, RepoError> {
        queues::write_queue_state(&mut *self.conn()?, queue, state, expected_version)
    }

    fn queue_activity(&self, since: DateTime<Utc>) -> Result<Vec<QueueActivity>, RepoError> {
        queues::queue_activity(&mut *self.conn()?, since)
    }

    fn runnable_ahead(&self, task: &Task, now: DateTime<Utc>, cap: u32) -> Result<u64, RepoError> {
        queues::runnable_ahead(&mut *self.conn()?, task, now, cap)
    }

    fn delete_finished(
        &self,
        status: TaskStatus,
        completed_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, RepoError> {
        let mut conn = self.conn()?;
        retention::delete_finished(&mut conn, status, completed_before, limit)
    }

    fn throughput(
        &self,
        since: DateTime<Utc>,
        queues: Option<&[QueueName]>,
    ) -> Result<Vec<ThroughputMinute>, RepoError> {
        activity::throughput(&mut *self.conn()?, since, queues)
    }

    fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetterGroup>, RepoError> {
        activity::dead_letters(&mut *self.conn()?, query)
    }

    fn record_workers(
        &self,
        sightings: &[WorkerSighting],
        forget_before: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        activity::record_workers(&mut *self.conn()?, sightings, forget_before)
    }

    fn workers(
        &self,
        seen_since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WorkerSighting>, RepoError> {
        activity::workers(&mut *self.conn()?, seen_since, limit)
    }
}

/// A `LIKE` pattern matching any text that contains `text`: `\\`, `%` and `_` in it are
/// escaped with `\\`, so that every character the user typed is literal.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Sorts a diesel error into "the database is unreachable or too busy now" and everything
/// else.
fn classify(error: DieselError, doing: &'static str) -> RepoError {
    if is_connection_loss(&error) || is_timeout(&error) {
        let error = anyhow!(error).context(doing);
        OUTAGE.failed(&error);
        RepoError::Unavailable(error)
    } else {
        RepoError::Unexpected(anyhow!(error).context(doing))
    }
}

/// Whether the server cancelled the statement for running past the session's
/// `statement_timeout` (57014 query_canceled): the database is too busy to answer in time,
/// which a caller handles as an outage (try again later), not as a bug.
fn is_timeout(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(_, info)
        if info.message().contains("canceling statement due to statement timeout"))
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
            const SHUTDOWN_MESSAGES: [&str; 6] = [
                "terminating connection due to administrator command",
                "terminating connection due to idle-in-transaction timeout",
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
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tasks, check_for_backend(diesel::pg::Pg))]
// Clearing a column (a finished task's nextRunAt, a rerun's lastError) must write NULL,
// not skip the column as diesel does for `None` by default.
#[diesel(treat_none_as_null = true)]
pub(crate) struct TaskRow {
    id: Uuid,
    queue: String,
    name: String,
    payload: Value,
    priority: i32,
    status: String,
    retry_state: String,
    attempt: i32,
    lease_token: Option<Uuid>,
    lease_expires_at: Option<DateTime<Utc>>,
    ended_attempt: Option<i32>,
    ended_attempt_token: Option<Uuid>,
    ended_attempt_end: Option<String>,
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
    created_by: Option<Uuid>,
    crash_count: i32,
    max_crashes: i32,
    unique_key: Option<String>,
}

// The row selects exactly the table's columns, in the table's order: a column added to
// `schema::tasks` and not to `TaskRow` (or the other way round) fails to compile here.
const _: <TaskRow as Selectable<diesel::pg::Pg>>::SelectExpression = tasks::all_columns;

impl TryFrom<&Task> for TaskRow {
    type Error = anyhow::Error;

    fn try_from(task: &Task) -> anyhow::Result<Self> {
        // Every field by name, no `..`: a field added to the record fails to compile here
        // until the row stores it (and the row's struct literal below until it has a column).
        let TaskRecord {
            id,
            queue,
            name,
            payload,
            priority,
            status,
            attempt,
            lease_token,
            lease_expires_at,
            ended_attempt,
            ended_attempt_token,
            ended_attempt_end,
            retry_state,
            attempt_count,
            max_attempts,
            crash_count,
            max_crashes,
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
            unique_key,
        } = task.to_record();
        let int = |n: u32, what: &str| {
            i32::try_from(n).with_context(|| format!("task {id}: {what} out of range"))
        };
        Ok(Self {
            id: id.as_uuid(),
            queue: queue.as_str().to_owned(),
            name: name.as_str().to_owned(),
            payload,
            priority,
            status: status.as_str().to_owned(),
            retry_state: retry_state.as_str().to_owned(),
            attempt: int(attempt, "attempt")?,
            lease_token: lease_token.map(|t| t.as_uuid()),
            lease_expires_at,
            ended_attempt: ended_attempt.map(|n| int(n, "ended attempt")).transpose()?,
            ended_attempt_token: ended_attempt_token.map(|t| t.as_uuid()),
            ended_attempt_end: ended_attempt_end.map(|e| e.as_str().to_owned()),
            attempt_count: int(attempt_count, "attemptCount")?,
            max_attempts: int(max_attempts.get(), "maxAttempts")?,
            next_run_at,
            last_error,
            worker_id: worker_id.as_ref().map(|w| w.as_str().to_owned()),
            processing_started_at,
            result,
            completed_at,
            created_at,
            updated_at,
            version: i64::try_from(version)
                .with_context(|| format!("task {id}: version out of range"))?,
            created_by: created_by.map(|t| t.as_uuid()),
            crash_count: int(crash_count, "crashCount")?,
            max_crashes: int(max_crashes.get(), "maxCrashes")?,
            unique_key: unique_key.map(String::from),
        })
    }
}

impl TryFrom<TaskRow> for Task {
    // A row the domain refuses is a bug or a hand edit, never user input: the caller gets
    // `RepoError::Unexpected` and the message names the task and the broken rule.
    type Error = anyhow::Error;

    fn try_from(row: TaskRow) -> anyhow::Result<Task> {
        // Every column by name, no `..`: a column added to the row fails to compile here
        // until the record gets it.
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
        let id = TaskId::from_uuid(id);
        let broken = |what: &str| format!("task {id}: stored {what} is invalid");
        let count = |n: i32, what: &str| u32::try_from(n).with_context(|| broken(what));
        let record = TaskRecord {
            id,
            queue: QueueName::parse(&queue).with_context(|| broken("queue"))?,
            name: TaskName::parse(&name).with_context(|| broken("name"))?,
            payload,
            priority,
            status: TaskStatus::parse(&status)
                .filter(|s| s.as_str() == status)
                .ok_or_else(|| anyhow!("{}: {:?}", broken("status"), status))?,
            attempt: count(attempt, "attempt")?,
            lease_token: lease_token.map(LeaseToken::from_uuid),
            lease_expires_at,
            ended_attempt: ended_attempt.map(|n| count(n, "ended attempt")).transpose()?,
            ended_attempt_token: ended_attempt_token.map(LeaseToken::from_uuid),
            ended_attempt_end: ended_attempt_end
                .as_deref()
                .map(|e| {
                    AttemptEnd::parse(e).ok_or_else(|| anyhow!("{}: {e:?}", broken("attempt end")))
                })
                .transpose()?,
            retry_state: RetryState::parse(&retry_state)
                .ok_or_else(|| anyhow!("{}: {:?}", broken("retry state"), retry_state))?,
            attempt_count: count(attempt_count, "attempt count")?,
            max_attempts: MaxAttempts::new(i64::from(max_attempts))
                .with_context(|| broken("max attempts"))?,
            crash_count: count(crash_count, "crash count")?,
            max_crashes: MaxCrashes::new(i64::from(max_crashes))
                .with_context(|| broken("max crashes"))?,
            next_run_at,
            last_error,
            worker_id: worker_id
                .as_deref()
                .map(WorkerId::parse)
                .transpose()
                .with_context(|| broken("worker id"))?,
            processing_started_at,
            result,
            completed_at,
            created_at,
            updated_at,
            version: u64::try_from(version).with_context(|| broken("version"))?,
            created_by: created_by.map(TokenId::from_uuid),
            unique_key: unique_key
                .as_deref()
                .map(UniqueKey::parse)
                .transpose()
                .with_context(|| broken("unique key"))?,
        };
        Ok(Task::restore(record)?)
    }
}

/// One row of `task_events`, as written and as read; the id comes from its sequence and is
/// only used for ordering, so it is not part of the row.
#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = task_events, check_for_backend(diesel::pg::Pg))]
struct TaskEventRow {
    task_id: Uuid,
    attempt: i32,
    from_status: Option<String>,
    to_status: String,
    worker_id: Option<String>,
    error: Option<String>,
    actor: String,
    rejected_code: Option<String>,
    rejected_call: Option<String>,
    at: DateTime<Utc>,
    token_name: Option<String>,
}

impl TryFrom<&TaskEvent> for TaskEventRow {
    type Error = anyhow::Error;

    fn try_from(e: &TaskEvent) -> anyhow::Result<Self> {
        Ok(Self {
            task_id: e.task_id.as_uuid(),
            attempt: i32::try_from(e.attempt)
                .with_context(|| format!("event of task {}: attempt out of range", e.task_id))?,
            from_status: e.from.map(|s| s.as_str().to_owned()),
            to_status: e.to.as_str().to_owned(),
            worker_id: e.worker_id.as_ref().map(|w| w.as_str().to_owned()),
            error: e.error.clone(),
            actor: e.actor.as_str().to_owned(),
            rejected_code: e.rejected.as_ref().map(|r| r.code.clone()),
            rejected_call: e.rejected.as_ref().map(|r| r.call.as_str().to_owned()),
            at: e.at,
            token_name: e.token.as_ref().map(|t| t.as_str().to_owned()),
        })
    }
}

impl TryFrom<TaskEventRow> for TaskEvent {
    type Error = anyhow::Error;

    fn try_from(r: TaskEventRow) -> anyhow::Result<TaskEvent> {
        let task_id = TaskId::from_uuid(r.task_id);
        let broken = |what: &str, raw: &str| anyhow!("event of task {task_id}: {what} {raw:?}");
        let status = |raw: &str| {
            TaskStatus::parse(raw)
                .filter(|s| s.as_str() == raw)
                .ok_or_else(|| broken("stored status is invalid:", raw))
        };
        let rejected = match (r.rejected_code, r.rejected_call) {
            (None, None) => None,
            (Some(code), Some(call)) => Some(taskpilot_app::Rejection {
                code,
                call: StaleCall::parse(&call)
                    .ok_or_else(|| broken("stored refused call is invalid:", &call))?,
            }),
            _ => anyhow::bail!("event of task {task_id}: a refusal has a code and a call"),
        };
        Ok(TaskEvent {
            task_id,
            attempt: u32::try_from(r.attempt)
                .with_context(|| format!("event of task {task_id}: negative attempt"))?,
            from: r.from_status.as_deref().map(status).transpose()?,
            to: status(&r.to_status)?,
            worker_id: r
                .worker_id
                .as_deref()
                .map(WorkerId::parse)
                .transpose()
                .with_context(|| format!("event of task {task_id}: stored worker id"))?,
            error: r.error,
            actor: Actor::parse(&r.actor)
                .ok_or_else(|| broken("stored actor is invalid:", &r.actor))?,
            rejected,
            at: r.at,
            token: r
                .token_name
                .as_deref()
                .map(TokenName::parse)
                .transpose()
                .with_context(|| format!("event of task {task_id}: stored token name"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn lost_connections_server_shutdowns_and_statement_timeouts_are_unavailable() {
        let lost = [
            database_error(DatabaseErrorKind::ClosedConnection, "server closed the connection"),
            database_error(DatabaseErrorKind::UnableToSendCommand, "no connection to the server"),
            database_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            database_error(DatabaseErrorKind::Unknown, "the database system is shutting down"),
            database_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to idle-in-transaction timeout",
            ),
            database_error(
                DatabaseErrorKind::Unknown,
                "canceling statement due to statement timeout",
            ),
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
