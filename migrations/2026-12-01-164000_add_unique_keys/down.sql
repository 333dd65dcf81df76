DROP INDEX tasks_unique_key_active;
ALTER TABLE tasks DROP COLUMN unique_key;
