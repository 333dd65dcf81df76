-- A task's unique key (`uniqueKey`): at most one task per queue and key is PENDING or
-- RUNNING at a time. Creates insert with ON CONFLICT DO NOTHING on this index and answer with
-- the task that holds the key; a rerun into a held key violates it and is refused. Finished
-- tasks keep their key but hold nothing.
ALTER TABLE tasks
    ADD COLUMN unique_key text CHECK (char_length(unique_key) BETWEEN 1 AND 255);
CREATE UNIQUE INDEX tasks_unique_key_active ON tasks (queue, unique_key)
    WHERE status IN ('PENDING', 'RUNNING') AND unique_key IS NOT NULL;
