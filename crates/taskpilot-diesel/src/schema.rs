//! The tables, written by hand to match `migrations/` (diesel print-schema is not part of the
//! build). A test applies the migrations and reads every column through this schema, so a
//! mismatch fails there.

diesel::table! {
    /// One row per task; see `migrations/*_create_tasks/up.sql`,
    /// `migrations/*_add_leases_queues_events/up.sql` and
    /// `migrations/*_allow_non_retryable/up.sql`.
    tasks (id) {
        /// The task id (UUID v7 when TaskPilot minted it).
        id -> Uuid,
        /// The queue it waits in.
        queue -> Text,
        /// The kind of work.
        name -> Text,
        /// The worker's input.
        payload -> Jsonb,
        /// Higher runs first.
        priority -> Int4,
        /// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
        status -> Text,
        /// `NONE`, `RETRY_SCHEDULED`, `EXHAUSTED`, `NON_RETRYABLE` or `QUARANTINED`.
        retry_state -> Text,
        /// How many times it was started in its whole life; the current or last attempt.
        attempt -> Int4,
        /// The running attempt's token.
        lease_token -> Nullable<Uuid>,
        /// When the running attempt's lease runs out.
        lease_expires_at -> Nullable<Timestamptz>,
        /// The number of the last attempt that ended.
        ended_attempt -> Nullable<Int4>,
        /// Its token.
        ended_attempt_token -> Nullable<Uuid>,
        /// How it ended: `SUCCEEDED`, `FAILED`, `FAILED_PERMANENTLY`, `LEASE_EXPIRED`,
        /// `CANCELLED` or `RELEASED`.
        ended_attempt_end -> Nullable<Text>,
        /// Failed attempts since creation or the last rerun.
        attempt_count -> Int4,
        /// Attempts allowed, 1 to 100.
        max_attempts -> Int4,
        /// When a pending task becomes runnable, if not at once.
        next_run_at -> Nullable<Timestamptz>,
        /// The last failed attempt's error.
        last_error -> Nullable<Text>,
        /// The worker holding a running task.
        worker_id -> Nullable<Text>,
        /// When the running attempt started.
        processing_started_at -> Nullable<Timestamptz>,
        /// What a succeeded task's worker reported.
        result -> Nullable<Jsonb>,
        /// When a terminal task finished.
        completed_at -> Nullable<Timestamptz>,
        /// When the task was created.
        created_at -> Timestamptz,
        /// When it last changed.
        updated_at -> Timestamptz,
        /// Bumped by every transition; updates compare and swap on it.
        version -> Int8,
        /// The API token that created the task; see `migrations/*_add_api_tokens/up.sql`.
        created_by -> Nullable<Uuid>,
        /// Lease expiries since creation or the last rerun; see
        /// `migrations/*_count_crashes/up.sql`.
        crash_count -> Int4,
        /// Lease expiries allowed before the task is quarantined, 1 to 100.
        max_crashes -> Int4,
        /// At most one PENDING or RUNNING task per queue holds it; see
        /// `migrations/*_add_unique_keys/up.sql`.
        unique_key -> Nullable<Text>,
    }
}

diesel::table! {
    /// A task's history; see `migrations/*_add_leases_queues_events/up.sql`.
    task_events (id) {
        /// Insertion order.
        id -> Int8,
        /// The task.
        task_id -> Uuid,
        /// The attempt the event belongs to.
        attempt -> Int4,
        /// The status before; NULL for creation.
        from_status -> Nullable<Text>,
        /// The status after, or the one a refused call left in place.
        to_status -> Text,
        /// The worker involved.
        worker_id -> Nullable<Text>,
        /// A failure's error, or why a call was refused.
        error -> Nullable<Text>,
        /// `CLIENT`, `WORKER` or `REAPER`.
        actor -> Text,
        /// A refused call's code.
        rejected_code -> Nullable<Text>,
        /// A refused call: `SUCCEED`, `FAIL`, `HEARTBEAT` or `RELEASE`.
        rejected_call -> Nullable<Text>,
        /// When it happened.
        at -> Timestamptz,
        /// The name of the API token the call was made with; see
        /// `migrations/*_add_api_tokens/up.sql`.
        token_name -> Nullable<Text>,
    }
}

diesel::table! {
    /// API tokens, by the SHA-256 of their secret; see `migrations/*_add_api_tokens/up.sql`.
    api_tokens (id) {
        /// The token id (UUID v7).
        id -> Uuid,
        /// Its name.
        name -> Text,
        /// `producer`, `worker`, `viewer`, `operator`, `admin` or `metrics`.
        kind -> Text,
        /// SHA-256 of the secret.
        secret_sha256 -> Bytea,
        /// The queues it reaches; NULL for every queue.
        queues -> Nullable<Array<Text>>,
        /// When it was created.
        created_at -> Timestamptz,
        /// When it stops working.
        expires_at -> Nullable<Timestamptz>,
        /// When it last authenticated a request (to within a minute).
        last_used_at -> Nullable<Timestamptz>,
        /// When it was revoked.
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// One row per bulk action; see `migrations/*_bulk_actions/up.sql`.
    bulk_actions (id) {
        /// The action's id (UUID v7).
        id -> Uuid,
        /// `rerun`, `cancel` or `delete`.
        action -> Text,
        /// `{"filter": {...}}` or `{"ids": [...]}`: what selected the tasks.
        selection -> Jsonb,
        /// The API token that asked for it; NULL under open access.
        token_name -> Nullable<Text>,
        /// How many tasks matched.
        matched -> Int8,
        /// How many it changed or deleted.
        done -> Int8,
        /// How many a rule refused.
        skipped -> Int8,
        /// When it ran.
        at -> Timestamptz,
    }
}

diesel::table! {
    /// The Idempotency-Key of each successful create with its answer; see
    /// `migrations/*_add_idempotency_keys/up.sql`.
    idempotency_keys (scope, key) {
        /// The token id that sent the key, or `open`.
        scope -> Text,
        /// The key as the client sent it.
        key -> Text,
        /// SHA-256 of the method, path and canonical body.
        fingerprint -> Bytea,
        /// The status the create answered (2xx).
        response_status -> Int4,
        /// The body it answered, as sent.
        response_body -> Text,
        /// Its Location header, if any.
        response_location -> Nullable<Text>,
        /// When the key was stored.
        created_at -> Timestamptz,
        /// When it may be forgotten.
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    /// The state an operator set on a queue (a queue with tasks needs no row); see
    /// `migrations/*_add_queues/up.sql`.
    queues (name) {
        /// The queue.
        name -> Text,
        /// When it was paused; NULL while it is not.
        paused_at -> Nullable<Timestamptz>,
        /// The name of the API token that paused it; NULL while it is not paused.
        paused_by -> Nullable<Text>,
        /// When it last changed.
        updated_at -> Timestamptz,
        /// Bumped by every change.
        version -> Int8,
    }
}

diesel::table! {
    /// Tasks created and finished per minute and queue, as deltas the statement triggers
    /// append and the folder of counts folds; see
    /// `migrations/*_add_throughput_and_workers/up.sql`.
    task_throughput (id) {
        /// Insertion order.
        id -> Int8,
        /// The minute's start.
        minute -> Timestamptz,
        /// The queue.
        queue -> Text,
        /// Tasks created.
        created -> Int8,
        /// Tasks that succeeded.
        succeeded -> Int8,
        /// Tasks that failed for good.
        failed -> Int8,
        /// Tasks cancelled.
        cancelled -> Int8,
    }
}

diesel::table! {
    /// The workers the servers saw, and when; see
    /// `migrations/*_add_throughput_and_workers/up.sql`.
    workers (worker_id) {
        /// The worker.
        worker_id -> Text,
        /// Its last claim (or start by id).
        last_claim_at -> Nullable<Timestamptz>,
        /// Its last heartbeat.
        last_heartbeat_at -> Nullable<Timestamptz>,
        /// Its last call of any kind.
        last_seen_at -> Timestamptz,
    }
}

diesel::table! {
    /// Sessions of the web dashboard, by the SHA-256 of their secret; see
    /// `migrations/*_add_ui_sessions/up.sql`.
    ui_sessions (secret_sha256) {
        /// SHA-256 of the session's secret (the cookie).
        secret_sha256 -> Bytea,
        /// The token the session acts with.
        token_id -> Uuid,
        /// When it was started.
        created_at -> Timestamptz,
        /// When it ends.
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(task_events -> tasks (task_id));
diesel::joinable!(ui_sessions -> api_tokens (token_id));
diesel::allow_tables_to_appear_in_same_query!(
    tasks,
    task_events,
    api_tokens,
    bulk_actions,
    idempotency_keys,
    queues,
    task_throughput,
    workers,
    ui_sessions
);
