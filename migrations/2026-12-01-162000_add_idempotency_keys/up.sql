-- The Idempotency-Key of every successful create, with the answer it got, so that the same
-- request sent again gets the same answer instead of creating again. A key belongs to the
-- token that sent it (`scope`: the token id, or `open` on a server running without tokens).
-- The row is written in the same transaction as the tasks it created: both or neither. The
-- primary key is what makes two requests racing with one new key wait for each other, so
-- that only one of them creates.
CREATE TABLE idempotency_keys (
    scope text NOT NULL,
    key text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- SHA-256 of the method, the path and the canonical body of the request.
    fingerprint bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    response_status int4 NOT NULL CHECK (response_status BETWEEN 200 AND 299),
    response_body text NOT NULL,
    response_location text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
-- The pruner deletes expired keys oldest first, in bounded batches.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
