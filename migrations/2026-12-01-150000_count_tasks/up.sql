-- Counts of tasks by queue and status, and the wait and run times of their attempts, kept by
-- the writes themselves, so that reading them (GET /metrics, GET /api/stats) costs the same
-- on ten million tasks as on ten: no COUNT over `tasks`.
--
-- Append-only deltas, not one counter row per (queue, status): a counter row updated by every
-- claim would make every claim of a queue wait on that row's lock. Statement triggers see a
-- statement's rows as transition tables (as the NOTIFY triggers do) and insert one row per
-- (queue, status, run minute) the statement changed, with the net change: a claim of 100 tasks
-- writes two rows (PENDING -100, RUNNING +100), a heartbeat none. Readers sum the rows; every
-- server folds the oldest rows into their sums in the background, one server at a time under
-- an advisory lock, so the tables stay a few rows per queue and status whatever the traffic.
--
-- Runnable and scheduled PENDING tasks differ only by time passing, which no write marks: a
-- PENDING task with a `next_run_at` is counted under the minute it falls in (`run_minute`),
-- so a reader at `now` counts the minutes after now's as scheduled, those before as runnable,
-- and reads the tasks due later within now's own minute from `tasks_scheduled_run_idx` (a
-- range of at most one minute of scheduled runs). Folding turns past minutes into NULL.
--
-- Measured with docs/pgbench/cycle.sql (claim 100 + complete 100 over 200,000 pending tasks,
-- one client, median of six rounds; docs/performance.md, "What the maintained counts cost"):
-- 78.0 µs of PostgreSQL time per job before, 86.7 with these triggers. Reading the counts on
-- 1,200,000 tasks: 0.34 ms for the sums, against 343 ms or more for a COUNT(*) by queue and
-- status.
CREATE TABLE task_counts (
    id         bigserial   PRIMARY KEY,
    queue      text        NOT NULL,
    status     text        NOT NULL,
    run_minute timestamptz NULL,
    n          int8        NOT NULL
);

-- Wait times (runnable to started: PENDING to RUNNING) and run times (started to the
-- attempt's end: RUNNING to anything else) by queue, as histogram buckets: `bucket` is the
-- index (from 0) of the smallest of the bounds below at or above the duration, 18 above them
-- all; `seconds` sums the durations. Counters: rows only ever add up, retention deletes none.
--
-- The bounds in seconds, which the server exposes too (`DURATION_BUCKETS`): 0.005, 0.01,
-- 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400. The
-- triggers find the bucket with `width_bucket` over their negations (which counts the bounds
-- at or above the duration, so that a duration equal to a bound falls in that bound's bucket,
-- as Prometheus's `le` means), inline: a SQL function with an aggregate per row cost a
-- quarter of the claim-and-complete cycle.
CREATE TABLE task_durations (
    id      bigserial PRIMARY KEY,
    queue   text      NOT NULL,
    kind    text      NOT NULL,
    bucket  int2      NOT NULL,
    n       int8      NOT NULL,
    seconds float8    NOT NULL,

    CONSTRAINT task_durations_kind_check CHECK (kind IN ('WAIT', 'RUN')),
    CONSTRAINT task_durations_bucket_check CHECK (bucket BETWEEN 0 AND 18)
);

CREATE FUNCTION tasks_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (queue, status, run_minute, n)
    SELECT queue, status, date_bin('1 minute', next_run_at, timestamptz '2000-01-01 00:00:00+00'), count(*)
    FROM new_tasks
    GROUP BY 1, 2, 3;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (queue, status, run_minute, n)
    SELECT queue, status, run_minute, sum(n)
    FROM (
        SELECT queue, status, next_run_at, 1 AS n FROM new_tasks
        UNION ALL
        SELECT queue, status, next_run_at, -1 FROM old_tasks
    ) AS d
    CROSS JOIN LATERAL (
        SELECT date_bin('1 minute', d.next_run_at, timestamptz '2000-01-01 00:00:00+00') AS run_minute
    ) AS m
    GROUP BY 1, 2, 3
    HAVING sum(n) <> 0;

    INSERT INTO task_durations (queue, kind, bucket, n, seconds)
    SELECT queue, kind,
           18 - width_bucket(-s, '{-86400,-21600,-3600,-900,-300,-60,-30,-10,-5,-2.5,-1,-0.5,-0.25,-0.1,-0.05,-0.025,-0.01,-0.005}'::float8[]),
           count(*), sum(s)
    FROM (
        SELECT n.queue,
               CASE WHEN n.status = 'RUNNING' THEN 'WAIT' ELSE 'RUN' END AS kind,
               greatest(0, extract(epoch FROM CASE
                   WHEN n.status = 'RUNNING'
                       THEN n.processing_started_at - coalesce(o.next_run_at, o.updated_at)
                   ELSE n.updated_at - o.processing_started_at
               END))::float8 AS s
        FROM old_tasks AS o JOIN new_tasks AS n ON n.id = o.id
        WHERE (o.status = 'PENDING' AND n.status = 'RUNNING')
           OR (o.status = 'RUNNING' AND n.status <> 'RUNNING')
    ) AS t
    GROUP BY 1, 2, 3;
    RETURN NULL;
END
$$;

CREATE FUNCTION tasks_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (queue, status, run_minute, n)
    SELECT queue, status, date_bin('1 minute', next_run_at, timestamptz '2000-01-01 00:00:00+00'), -count(*)
    FROM old_tasks
    GROUP BY 1, 2, 3;
    RETURN NULL;
END
$$;

-- TRUNCATE (an operator's, or a benchmark's reset) fires no row-level transition tables.
CREATE FUNCTION tasks_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_counts;
    RETURN NULL;
END
$$;

-- The triggers first: CREATE TRIGGER locks `tasks` against writers until the migration
-- commits, so the counts below see every task and no write slips between them and the
-- triggers.
CREATE TRIGGER tasks_count_insert
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_count_inserted();

CREATE TRIGGER tasks_count_update
    AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_count_updated();

CREATE TRIGGER tasks_count_delete
    AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_count_deleted();

CREATE TRIGGER tasks_count_truncate
    AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_count_truncated();

-- The tasks already stored: one COUNT, here only.
INSERT INTO task_counts (queue, status, run_minute, n)
SELECT queue, status, date_bin('1 minute', next_run_at, timestamptz '2000-01-01 00:00:00+00'), count(*)
FROM tasks
GROUP BY 1, 2, 3;
