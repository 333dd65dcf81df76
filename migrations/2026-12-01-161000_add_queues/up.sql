-- Queues as a resource: the state an operator sets on a queue (paused or not, by which API
-- token and since when). A queue needs no row to exist: it exists through its tasks, and gets a
-- row the first time it is paused (or resumed); a queue without a row is running.
--
-- Claims skip paused queues inside the claim statement itself (an anti-join on this table in
-- `CLAIM_SQL`), so a pause stored by any server holds for every claim that starts after it
-- commits, on every server, with no cache to expire. Resuming sends the runnable notification
-- (`taskpilot_runnable`, payload the queue) from the same transaction, which wakes the
-- long-polling claims of every server.
--
-- `version` is bumped by every change; writes compare and swap on it.
CREATE TABLE queues (
    name       text        PRIMARY KEY,
    paused_at  timestamptz NULL,
    paused_by  text        NULL,
    updated_at timestamptz NOT NULL,
    version    int8        NOT NULL,

    CONSTRAINT queues_paused_check CHECK ((paused_at IS NULL) = (paused_by IS NULL)),
    CONSTRAINT queues_version_check CHECK (version > 0)
);
