//! The ceiling: the claim-and-complete cycle as plain SQL from this process, through the same
//! driver as the server (diesel on `PgConnection`, one connection per worker thread), on the
//! same table with its indexes and triggers, and no TaskPilot code.
//!
//! The claim is the shape TaskPilot's is: a CTE picking runnable rows in claim order with
//! `FOR UPDATE SKIP LOCKED LIMIT n`, feeding `UPDATE … RETURNING`. The completion is one
//! statement for the whole batch, fenced on the lease token as TaskPilot's is. What TaskPilot
//! does on top (history rows, the domain's checks, JSON over HTTP) is what the share measures.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::stats::Latencies;
use crate::window::Progress;

const CLAIM_SQL: &str = "\
WITH picked AS (
    SELECT id
    FROM tasks
    WHERE status = 'PENDING' AND (next_run_at IS NULL OR next_run_at <= now())
    ORDER BY priority DESC, coalesce(next_run_at, created_at), id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET status = 'RUNNING',
    worker_id = $2,
    processing_started_at = now(),
    attempt = t.attempt + 1,
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + interval '300 seconds',
    next_run_at = NULL,
    updated_at = greatest(now(), t.created_at),
    version = t.version + 1
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.lease_token";

const COMPLETE_SQL: &str = "\
UPDATE tasks AS t
SET status = 'SUCCEEDED',
    worker_id = NULL,
    processing_started_at = NULL,
    lease_token = NULL,
    lease_expires_at = NULL,
    ended_attempt = t.attempt,
    ended_attempt_token = t.lease_token,
    ended_attempt_end = 'SUCCEEDED',
    completed_at = now(),
    updated_at = greatest(now(), t.created_at),
    version = t.version + 1
FROM unnest($1::uuid[], $2::uuid[]) AS done(id, token)
WHERE t.id = done.id AND t.status = 'RUNNING' AND t.lease_token = done.token";

#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    lease_token: Uuid,
}

/// One worker: claims `batch` tasks, completes them in one statement, until told to stop or
/// the queue is empty.
///
/// # Errors
/// A failed statement (the run is stopped).
pub fn worker(
    mut conn: PgConnection,
    index: usize,
    batch: u32,
    progress: &Arc<Progress>,
) -> anyhow::Result<Latencies> {
    let worker_id = format!("sql-worker-{index}");
    let mut latencies = Latencies::new();
    let result = (|| {
        while !progress.stopped() {
            let sent = Instant::now();
            let claimed: Vec<ClaimedRow> = diesel::sql_query(CLAIM_SQL)
                .bind::<BigInt, _>(i64::from(batch))
                .bind::<Text, _>(&worker_id)
                .load(&mut conn)
                .context("claim")?;
            let claimed_at = Instant::now();
            if claimed.is_empty() {
                progress.drained();
                break;
            }
            let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) =
                claimed.iter().map(|r| (r.id, r.lease_token)).unzip();
            let completed = diesel::sql_query(COMPLETE_SQL)
                .bind::<Array<SqlUuid>, _>(ids)
                .bind::<Array<SqlUuid>, _>(tokens)
                .execute(&mut conn)
                .context("complete")?;
            let completed_at = Instant::now();
            progress.add(completed as u64);
            if progress.measuring() {
                latencies.entry("claim").or_default().record(claimed_at - sent);
                latencies.entry("complete").or_default().record(completed_at - claimed_at);
            }
        }
        Ok(())
    })();
    if result.is_err() {
        progress.stop();
    }
    result.map(|()| latencies)
}
