-- Back to an index per list filter, as the first two migrations created them.
CREATE INDEX tasks_status_created_at_id_idx ON tasks (status, created_at DESC, id DESC);
CREATE INDEX tasks_name_created_at_id_idx ON tasks (name, created_at DESC, id DESC);
CREATE INDEX tasks_queue_created_at_id_idx ON tasks (queue, created_at DESC, id DESC);
DROP INDEX tasks_unfinished_status_created_at_id_idx;
