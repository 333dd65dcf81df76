-- History rows without a foreign key. Every claim and every completion writes one row per task
-- into `task_events`, and the key made each of those rows look its task up in `tasks_pkey`
-- and lock it (KEY SHARE) on top of the write itself. Measured with the claim-100 +
-- complete-100 cycle as plain SQL (one client, median of three runs): 94.7 µs of PostgreSQL
-- time per job with the key, 85.4 without, about a tenth of the cycle.
--
-- Nothing relied on the key to keep history attached to a task. The repository writes a
-- history row only in the statement or transaction that inserts its task (create, batch
-- create), after the compare-and-swap on the task's row succeeded in the same transaction or
-- statement (transitions, claims, batch writes), or for a refused stale call on a task the use
-- case has just read. Only that last case can race a delete: a finished task removed by
-- retention between the read and the write leaves that one refusal row behind, counted in the
-- refusal statistics like any other and shown by no task's history (the task answers 404).
-- Retention deletes a task's history explicitly with the task.
--
-- Deleting a task still deletes its history, as ON DELETE CASCADE did, for any delete (an
-- operator's by hand included): a statement trigger on DELETE, which costs the hot path
-- nothing (it fires on deletes only, once per statement) and finds nothing left to delete
-- after retention's own delete of the history.
--
-- `task_events_task_id_id_idx` (task_id, id) stays: it serves a task's history in order and
-- retention's deletion of it.
ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;

CREATE FUNCTION tasks_delete_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_events AS e USING deleted_tasks AS d WHERE e.task_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_delete_history
    AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS deleted_tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION tasks_delete_history();
