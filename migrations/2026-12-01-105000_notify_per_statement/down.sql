-- Back to one trigger call per runnable row, as the leases migration created them.
DROP TRIGGER tasks_notify_runnable_update ON tasks;
DROP TRIGGER tasks_notify_runnable_insert ON tasks;
DROP FUNCTION tasks_notify_runnable_updated();
DROP FUNCTION tasks_notify_runnable_inserted();

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

CREATE TRIGGER tasks_notify_runnable_update
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (
        NEW.status = 'PENDING' AND (NEW.next_run_at IS NULL OR NEW.next_run_at <= now())
        AND (OLD.status <> 'PENDING' OR OLD.next_run_at IS DISTINCT FROM NEW.next_run_at
             OR OLD.queue <> NEW.queue)
    )
    EXECUTE FUNCTION tasks_notify_runnable();
