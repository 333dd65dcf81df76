ALTER TABLE task_events DROP COLUMN token_name;
ALTER TABLE tasks DROP COLUMN created_by;
DROP TABLE api_tokens;
