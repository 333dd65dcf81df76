-- What the dashboard and `GET /api/stats/throughput` / `GET /api/workers` read, kept so that
-- reading them costs the same on ten million tasks as on ten.
--
-- Tasks created and finished per minute and queue. Like `task_counts`, append-only deltas
-- written by statement triggers from the statement's transition tables (one row per queue and
-- minute a statement touched, so a claim-and-complete cycle of 100 tasks adds one row for the
-- completion), folded into one row per (minute, queue) by the servers' folder of counts, and
-- kept for a day. Rows are history, not state: retention deleting finished tasks and TRUNCATE
-- leave them alone. Minutes are those of `created_at` and `completed_at`, the service's clock.
CREATE TABLE task_throughput (
    id        bigserial   PRIMARY KEY,
    minute    timestamptz NOT NULL,
    queue     text        NOT NULL,
    created   int8        NOT NULL DEFAULT 0,
    succeeded int8        NOT NULL DEFAULT 0,
    failed    int8        NOT NULL DEFAULT 0,
    cancelled int8        NOT NULL DEFAULT 0
);
CREATE INDEX task_throughput_minute_idx ON task_throughput (minute);

-- Separate trigger functions rather than more statements in the count triggers: each trigger
-- stays one job, and the transition tables are built once for all of a statement's triggers.
CREATE FUNCTION tasks_throughput_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_throughput (minute, queue, created)
    SELECT date_bin('1 minute', created_at, timestamptz '2000-01-01 00:00:00+00'), queue, count(*)
    FROM new_tasks
    GROUP BY 1, 2;
    RETURN NULL;
END
$$;

-- A task finishes when it enters a terminal status from another one (a rerun leaves one).
CREATE FUNCTION tasks_throughput_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_throughput (minute, queue, succeeded, failed, cancelled)
    SELECT date_bin('1 minute', n.completed_at, timestamptz '2000-01-01 00:00:00+00'), n.queue,
           count(*) FILTER (WHERE n.status = 'SUCCEEDED'),
           count(*) FILTER (WHERE n.status = 'FAILED'),
           count(*) FILTER (WHERE n.status = 'CANCELLED')
    FROM new_tasks AS n JOIN old_tasks AS o ON o.id = n.id
    WHERE n.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
      AND o.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
      AND n.completed_at IS NOT NULL
    GROUP BY 1, 2;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_throughput_insert
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_throughput_inserted();

CREATE TRIGGER tasks_throughput_update
    AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_throughput_updated();

-- The last day of the tasks already stored, so that the chart is right from the first minute
-- after the upgrade: two index ranges (`tasks_created_at_id_idx`, `tasks_finished_idx`).
INSERT INTO task_throughput (minute, queue, created)
SELECT date_bin('1 minute', created_at, timestamptz '2000-01-01 00:00:00+00'), queue, count(*)
FROM tasks
WHERE created_at >= now() - interval '1 day'
GROUP BY 1, 2;

INSERT INTO task_throughput (minute, queue, succeeded, failed, cancelled)
SELECT date_bin('1 minute', completed_at, timestamptz '2000-01-01 00:00:00+00'), queue,
       count(*) FILTER (WHERE status = 'SUCCEEDED'),
       count(*) FILTER (WHERE status = 'FAILED'),
       count(*) FILTER (WHERE status = 'CANCELLED')
FROM tasks
WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND completed_at >= now() - interval '1 day'
GROUP BY 1, 2;

-- The workers each server saw: when a worker last claimed, last heartbeated and last made
-- any call. Servers note calls in memory and write them here about once a second, one
-- upsert per worker seen, so the claim and report statements stay as they were; the
-- greatest instant wins, whichever server writes last. Rows of workers unseen for a day are
-- deleted by the same writer.
CREATE TABLE workers (
    worker_id         text        PRIMARY KEY,
    last_claim_at     timestamptz NULL,
    last_heartbeat_at timestamptz NULL,
    last_seen_at      timestamptz NOT NULL
);
CREATE INDEX workers_last_seen_at_idx ON workers (last_seen_at);
