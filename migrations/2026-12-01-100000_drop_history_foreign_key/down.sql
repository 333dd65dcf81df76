-- Back to history rows tied to their task. A refusal row left behind by a task deleted
-- meanwhile has nothing to point to: it goes, as ON DELETE CASCADE would have removed it.
DROP TRIGGER tasks_delete_history ON tasks;
DROP FUNCTION tasks_delete_history();
DELETE FROM task_events AS e WHERE NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.id = e.task_id);
ALTER TABLE task_events
    ADD CONSTRAINT task_events_task_id_fkey
        FOREIGN KEY (task_id) REFERENCES tasks (id) ON DELETE CASCADE;
