-- API tokens. The secret is never stored: only its SHA-256, which is how a request's token is
-- looked up (the unique index), so no secret is ever compared byte by byte.
CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    kind text NOT NULL
        CHECK (kind IN ('producer', 'worker', 'viewer', 'operator', 'admin', 'metrics')),
    secret_sha256 bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    -- NULL: every queue.
    queues text[] CHECK (queues IS NULL OR cardinality(queues) > 0),
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE UNIQUE INDEX api_tokens_secret_sha256 ON api_tokens (secret_sha256);

-- The token that created a task (NULL: created without one). No foreign key: a task outlives
-- the token that made it, and revoking never deletes. No index either: only producer
-- listings filter on it, and they walk the list index like any filtered listing.
ALTER TABLE tasks ADD COLUMN created_by uuid;

-- The name of the token a history entry was written for (NULL: no token, such as the reaper,
-- or a server running open).
ALTER TABLE task_events ADD COLUMN token_name text;
