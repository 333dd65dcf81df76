-- Sessions of the web dashboard (/ui). As for API tokens, the secret is never stored: only
-- its SHA-256, which is how a request's cookie finds its session. A session acts with its
-- token, which every request checks again, so revoking the token ends its sessions; the
-- foreign key is there for integrity only (tokens are revoked, never deleted).
CREATE TABLE ui_sessions (
    secret_sha256 bytea PRIMARY KEY CHECK (octet_length(secret_sha256) = 32),
    token_id uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at > created_at)
);
-- Signing in deletes the sessions that have ended: by this index, not a scan.
CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at);
