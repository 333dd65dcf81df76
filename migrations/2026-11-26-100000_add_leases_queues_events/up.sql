-- Leases, queues and history.
--
-- New task columns are the flat form of the domain's attempt, lease and last ended attempt;
-- the CHECKs repeat their structural rules (which columns go together) so that a buggy writer
-- cannot store a row that `Task::restore` would refuse for its shape.
ALTER TABLE tasks
    ADD COLUMN queue               text        NOT NULL DEFAULT 'default',
    ADD COLUMN attempt             int4        NOT NULL DEFAULT 0,
    ADD COLUMN lease_token         uuid        NULL,
    ADD COLUMN lease_expires_at    timestamptz NULL,
    ADD COLUMN ended_attempt       int4        NULL,
    ADD COLUMN ended_attempt_token uuid        NULL,
    ADD COLUMN ended_attempt_end   text        NULL;

-- Rows written before leases existed: give them a history the domain accepts. Attempts are
-- counted as the failures recorded plus the attempt that is running or succeeded; every
-- attempt but a running one has ended, under a random token nobody holds (so no late call can
-- speak for it). A running task gets a lease of the default length from the upgrade on,
-- rather than from its start, so that the reaper does not fail it the moment servers restart.
UPDATE tasks SET attempt = attempt_count + (status IN ('RUNNING', 'SUCCEEDED'))::int4;
UPDATE tasks
    SET lease_token = gen_random_uuid(),
        lease_expires_at = greatest(processing_started_at, now()) + interval '300 seconds'
    WHERE status = 'RUNNING';
UPDATE tasks
    SET ended_attempt = attempt - (status = 'RUNNING')::int4,
        ended_attempt_token = gen_random_uuid(),
        ended_attempt_end = CASE status WHEN 'SUCCEEDED' THEN 'SUCCEEDED' ELSE 'FAILED' END
    WHERE attempt - (status = 'RUNNING')::int4 > 0;

ALTER TABLE tasks
    -- The domain's QueueName rule; [a-z] in PostgreSQL's regex engine means the code points
    -- a to z whatever the collation.
    ADD CONSTRAINT tasks_queue_check CHECK (queue ~ '^[a-z0-9_.-]{1,64}$'),
    -- The attempt number never resets (not even on rerun), the failure count does.
    ADD CONSTRAINT tasks_attempt_check CHECK (attempt >= attempt_count),
    -- A lease exactly while running.
    ADD CONSTRAINT tasks_running_lease_check CHECK (
        (status = 'RUNNING') = (lease_token IS NOT NULL)
        AND (status = 'RUNNING') = (lease_expires_at IS NOT NULL)
    ),
    ADD CONSTRAINT tasks_ended_attempt_end_check
        CHECK (ended_attempt_end IN ('SUCCEEDED', 'FAILED', 'LEASE_EXPIRED', 'CANCELLED')),
    -- The last ended attempt is recorded whole or not at all.
    ADD CONSTRAINT tasks_ended_attempt_check CHECK (
        (ended_attempt IS NULL) = (ended_attempt_token IS NULL)
        AND (ended_attempt IS NULL) = (ended_attempt_end IS NULL)
    ),
    ADD CONSTRAINT tasks_ended_attempt_range_check
        CHECK (ended_attempt BETWEEN 1 AND attempt);

-- Claims. Both indexes are partial on PENDING, so their size follows the pending tasks and
-- not the finished ones piling up in the table. `tasks_runnable_idx` (from the first
-- migration) serves claims across every queue in claim order; this one serves a claim in one
-- queue, in claim order too, and a claim over a few queues as a small range per queue.
CREATE INDEX tasks_runnable_queue_idx
    ON tasks (queue, priority DESC, coalesce(next_run_at, created_at), id)
    WHERE status = 'PENDING';

-- The reaper: running tasks in the order it takes them (soonest expiry, then id), so that a
-- reaper that fell behind reads its batch off the index instead of sorting every expired row.
CREATE INDEX tasks_lease_expiry_idx ON tasks (lease_expires_at, id) WHERE status = 'RUNNING';

-- Long-poll wake-ups: the next scheduled run of a delayed or retried task.
CREATE INDEX tasks_scheduled_run_idx ON tasks (next_run_at)
    WHERE status = 'PENDING' AND next_run_at IS NOT NULL;

-- Listing by queue, newest first, like the other filtered listings.
CREATE INDEX tasks_queue_created_at_id_idx ON tasks (queue, created_at DESC, id DESC);

-- A task's history: every transition and every refused stale call, in insertion order.
CREATE TABLE task_events (
    id            bigserial   PRIMARY KEY,
    task_id       uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt       int4        NOT NULL,
    from_status   text        NULL,
    to_status     text        NOT NULL,
    worker_id     text        NULL,
    error         text        NULL,
    actor         text        NOT NULL,
    rejected_code text        NULL,
    rejected_call text        NULL,
    at            timestamptz NOT NULL,

    CONSTRAINT task_events_attempt_check CHECK (attempt >= 0),
    CONSTRAINT task_events_from_status_check
        CHECK (from_status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    CONSTRAINT task_events_to_status_check
        CHECK (to_status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    CONSTRAINT task_events_actor_check CHECK (actor IN ('CLIENT', 'WORKER', 'REAPER')),
    CONSTRAINT task_events_rejected_call_check
        CHECK (rejected_call IN ('SUCCEED', 'FAIL', 'HEARTBEAT')),
    -- A refusal has both its code and its call.
    CONSTRAINT task_events_rejection_check
        CHECK ((rejected_code IS NULL) = (rejected_call IS NULL))
);

-- One task's history, oldest first.
CREATE INDEX task_events_task_id_id_idx ON task_events (task_id, id);
-- Counting refusals by code and call reads only the (few) refusal rows.
CREATE INDEX task_events_rejections_idx ON task_events (rejected_code, rejected_call)
    WHERE rejected_code IS NOT NULL;

-- Wakes long-polling claims on every server (LISTEN taskpilot_runnable) when a task becomes
-- runnable now: created runnable, rerun, or put back without a delay. The payload is its
-- queue. Tasks that become runnable later (delayed, retried) send nothing: servers wake for
-- those from the earliest scheduled run. PostgreSQL delivers notifications at commit and folds
-- identical ones of one transaction into one, so a batch insert into a queue costs one.
CREATE FUNCTION tasks_notify_runnable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskpilot_runnable', NEW.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_runnable_insert
    AFTER INSERT ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'PENDING' AND (NEW.next_run_at IS NULL OR NEW.next_run_at <= now()))
    EXECUTE FUNCTION tasks_notify_runnable();

-- Updates only when the task was not runnable-pending before in the same way: a pending task
-- rewritten as it was wakes nobody.
CREATE TRIGGER tasks_notify_runnable_update
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (
        NEW.status = 'PENDING' AND (NEW.next_run_at IS NULL OR NEW.next_run_at <= now())
        AND (OLD.status <> 'PENDING' OR OLD.next_run_at IS DISTINCT FROM NEW.next_run_at
             OR OLD.queue <> NEW.queue)
    )
    EXECUTE FUNCTION tasks_notify_runnable();
