//! The tables, written by hand to match `migrations/` (diesel print-schema is not part of the
//! build). A test applies the migrations and reads every column through this schema, so a
//! mismatch fails there.

diesel::table! {
    /// One row per task; see `migrations/*_create_tasks/up.sql`.
    tasks (id) {
        /// The task id (UUID v7 when TaskPilot minted it).
        id -> Uuid,
        /// The kind of work.
        name -> Text,
        /// The worker's input.
        payload -> Jsonb,
        /// Higher runs first.
        priority -> Int4,
        /// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
        status -> Text,
        /// `NONE`, `RETRY_SCHEDULED` or `EXHAUSTED`.
        retry_state -> Text,
        /// Failed attempts so far.
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
    }
}
