ALTER TABLE tasks DROP COLUMN created_by;
DROP TABLE api_tokens;
