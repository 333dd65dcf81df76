-- One row per task: the flat form of the domain's `TaskRecord`.
--
-- The CHECK constraints repeat the structural invariants of `Task::restore` (which columns a
-- status has), so that a buggy writer or a hand edit cannot store a row that half the code
-- would refuse; the retry bookkeeping rules stay the domain's alone.
CREATE TABLE tasks (
    id                    uuid        PRIMARY KEY,
    name                  text        NOT NULL,
    payload               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority              int4        NOT NULL DEFAULT 0,
    status                text        NOT NULL,
    retry_state           text        NOT NULL,
    attempt_count         int4        NOT NULL DEFAULT 0,
    max_attempts          int4        NOT NULL,
    next_run_at           timestamptz NULL,
    last_error            text        NULL,
    worker_id             text        NULL,
    processing_started_at timestamptz NULL,
    result                jsonb       NULL,
    completed_at          timestamptz NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    -- Compare-and-swap token: every transition bumps it, every update names the one it read.
    version               int8        NOT NULL,

    CONSTRAINT tasks_status_check
        CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    CONSTRAINT tasks_retry_state_check
        CHECK (retry_state IN ('NONE', 'RETRY_SCHEDULED', 'EXHAUSTED')),
    CONSTRAINT tasks_name_length_check CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT tasks_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT tasks_attempt_count_check CHECK (attempt_count BETWEEN 0 AND max_attempts),
    CONSTRAINT tasks_version_check CHECK (version >= 1),
    CONSTRAINT tasks_updated_after_created_check CHECK (updated_at >= created_at),
    -- A worker and a start time exactly while running.
    CONSTRAINT tasks_running_worker_check CHECK ((status = 'RUNNING') = (worker_id IS NOT NULL)),
    CONSTRAINT tasks_running_started_check
        CHECK ((status = 'RUNNING') = (processing_started_at IS NOT NULL)),
    -- A completion time exactly when terminal.
    CONSTRAINT tasks_completed_check
        CHECK ((status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')) = (completed_at IS NOT NULL)),
    CONSTRAINT tasks_next_run_at_check CHECK (next_run_at IS NULL OR status = 'PENDING'),
    CONSTRAINT tasks_result_check CHECK (result IS NULL OR status = 'SUCCEEDED')
);

-- Listing: newest first with keyset pagination on (created_at, id); the filtered forms lead
-- with their equality column so that a filtered page is an index range scan as well.
CREATE INDEX tasks_created_at_id_idx ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_status_created_at_id_idx ON tasks (status, created_at DESC, id DESC);
CREATE INDEX tasks_name_created_at_id_idx ON tasks (name, created_at DESC, id DESC);

-- Claims: runnable rows in claim order. Partial, so that its size follows the
-- number of pending tasks and not the number of finished ones piling up in the table.
CREATE INDEX tasks_runnable_idx ON tasks (priority DESC, coalesce(next_run_at, created_at), id)
    WHERE status = 'PENDING';

-- Autovacuum tuned for a queue. Every transition rewrites its row, and none of them is a HOT
-- update (status sits in the partial index's predicate and in an index key), so dead tuples
-- and dead index entries pile up at the head of the queue, where every claim scans; measured
-- throughput decays by a third within a minute until a vacuum pass runs. The default trigger
-- (20% of the table dead) never fires on a large table of finished tasks while the small hot
-- part rots, so:
-- - a fixed, small threshold and no scale factor: vacuum once a thousand rows died,
--   whatever the table size (autovacuum still looks only once per autovacuum_naptime);
-- - no cost delay: finish each pass quickly instead of sleeping while the queue degrades;
-- - analyze on a fixed threshold too, so that the planner's view of how many rows are
--   PENDING follows the churn.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);
