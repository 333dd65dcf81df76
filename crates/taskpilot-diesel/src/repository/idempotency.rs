//! Idempotency keys: stored in the transaction of the tasks they created, found again, and
//! deleted once expired. What a found key means for the request is the domain's rule; this
//! module only stores and finds.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bytea, Int4, Nullable, Text, Timestamptz};
use taskpilot_app::{NewIdempotencyKey, RepoError, TaskEvent};
use taskpilot_domain::{Fingerprint, IdempotencyRecord, KeyClaim, StoredResponse, Task};

use super::{batch, classify};
use crate::schema::idempotency_keys;

/// How long a create waits for another transaction that stores the same key before it
/// answers [`KeyClaim::InFlight`]: long enough for a create to commit, short enough that the
/// second request is not held up (`lock_timeout` of the key's statement only).
pub(crate) const KEY_WAIT: &str = "SET LOCAL lock_timeout = '1s'";

/// Stores the key unless a row of the same scope and key that has not expired is there; an
/// expired row is taken over. Another transaction storing the same key makes this wait
/// (the primary key) until it ends or [`KEY_WAIT`] runs out. One row changed: the key is
/// ours.
///
/// Binds: $1 scope, $2 key, $3 fingerprint, $4 status, $5 body, $6 location, $7 created at,
/// $8 expires at.
pub(crate) const STORE_KEY_SQL: &str = "\
INSERT INTO idempotency_keys AS k
    (scope, key, fingerprint, response_status, response_body, response_location,
     created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (scope, key) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint,
    response_status = EXCLUDED.response_status,
    response_body = EXCLUDED.response_body,
    response_location = EXCLUDED.response_location,
    created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at
WHERE k.expires_at <= EXCLUDED.created_at";

/// One statement: up to `$2` keys expired at `$1`, oldest first, skipping rows another
/// transaction holds (a create taking over an expired key).
pub(crate) const DELETE_EXPIRED_SQL: &str = "\
DELETE FROM idempotency_keys
WHERE (scope, key) IN (
    SELECT scope, key FROM idempotency_keys
    WHERE expires_at <= $1
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)";

/// What fails inside the transaction.
enum Failure {
    Diesel(DieselError),
    Repo(RepoError),
}

impl From<DieselError> for Failure {
    fn from(e: DieselError) -> Self {
        Self::Diesel(e)
    }
}

/// `TaskRepository::insert_keyed`: the key first, then the tasks, in one transaction.
pub(super) fn insert_keyed(
    conn: &mut PgConnection,
    tasks: &[Task],
    events: &[TaskEvent],
    key: &NewIdempotencyKey,
) -> Result<KeyClaim, RepoError> {
    let status = i32::from(key.response.status);
    let outcome = conn.transaction::<KeyClaim, Failure, _>(|conn| {
        diesel::sql_query(KEY_WAIT).execute(conn)?;
        let stored = diesel::sql_query(STORE_KEY_SQL)
            .bind::<Text, _>(&key.scope)
            .bind::<Text, _>(key.key.as_str())
            .bind::<Bytea, _>(key.fingerprint.as_bytes().as_slice())
            .bind::<Int4, _>(status)
            .bind::<Text, _>(&key.response.body)
            .bind::<Nullable<Text>, _>(key.response.location.as_deref())
            .bind::<Timestamptz, _>(key.created_at)
            .bind::<Timestamptz, _>(key.expires_at)
            .execute(conn)?;
        if stored == 0 {
            return held(conn, key);
        }
        diesel::sql_query("SET LOCAL lock_timeout TO DEFAULT").execute(conn)?;
        batch::insert_many(conn, tasks, events).map_err(Failure::Repo)?;
        Ok(KeyClaim::Stored)
    });
    match outcome {
        Ok(claim) => Ok(claim),
        Err(Failure::Diesel(e)) if is_lock_timeout(&e) => Ok(KeyClaim::InFlight),
        Err(Failure::Diesel(e)) => Err(classify(e, "cannot store the idempotency key")),
        Err(Failure::Repo(e)) => Err(e),
    }
}

/// What holds the key, as stored.
fn held(conn: &mut PgConnection, key: &NewIdempotencyKey) -> Result<KeyClaim, Failure> {
    let row = idempotency_keys::table
        .find((&key.scope, key.key.as_str()))
        .select((
            idempotency_keys::fingerprint,
            idempotency_keys::response_status,
            idempotency_keys::response_body,
            idempotency_keys::response_location,
        ))
        .first::<(Vec<u8>, i32, String, Option<String>)>(conn)
        .optional()?;
    let Some((fingerprint, status, body, location)) = row else {
        // Deleted between the two statements: it had expired, so the request may try again.
        return Ok(KeyClaim::InFlight);
    };
    let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| {
        Failure::Repo(RepoError::unexpected(anyhow::anyhow!(
            "a stored idempotency fingerprint is not 32 bytes"
        )))
    })?;
    let status = u16::try_from(status).map_err(|e| Failure::Repo(RepoError::unexpected(e)))?;
    Ok(KeyClaim::Held(IdempotencyRecord {
        fingerprint: Fingerprint::from_bytes(fingerprint),
        response: StoredResponse { status, body, location },
    }))
}

/// 55P03 lock_not_available, which diesel does not name: the key's wait ran out.
fn is_lock_timeout(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(_, info)
        if info.message().contains("canceling statement due to lock timeout"))
}

/// `TaskRepository::delete_expired_keys`.
pub(super) fn delete_expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<u64, RepoError> {
    if limit == 0 {
        return Ok(0);
    }
    let deleted = diesel::sql_query(DELETE_EXPIRED_SQL)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(i64::from(limit))
        .execute(conn)
        .map_err(|e| classify(e, "cannot delete expired idempotency keys"))?;
    Ok(deleted as u64)
}
