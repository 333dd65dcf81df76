DROP TRIGGER tasks_notify_runnable_update ON tasks;
DROP TRIGGER tasks_notify_runnable_insert ON tasks;
DROP FUNCTION tasks_notify_runnable();
DROP TABLE task_events;
DROP INDEX tasks_queue_created_at_id_idx;
DROP INDEX tasks_scheduled_run_idx;
DROP INDEX tasks_lease_expiry_idx;
DROP INDEX tasks_runnable_queue_idx;
ALTER TABLE tasks
    DROP CONSTRAINT tasks_ended_attempt_range_check,
    DROP CONSTRAINT tasks_ended_attempt_check,
    DROP CONSTRAINT tasks_ended_attempt_end_check,
    DROP CONSTRAINT tasks_running_lease_check,
    DROP CONSTRAINT tasks_attempt_check,
    DROP CONSTRAINT tasks_queue_check,
    DROP COLUMN ended_attempt_end,
    DROP COLUMN ended_attempt_token,
    DROP COLUMN ended_attempt,
    DROP COLUMN lease_expires_at,
    DROP COLUMN lease_token,
    DROP COLUMN attempt,
    DROP COLUMN queue;
