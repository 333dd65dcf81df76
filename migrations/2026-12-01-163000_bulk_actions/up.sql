-- Operators filter the task list by payload containment (`payload @> '{"customerId": 42}'`):
-- jsonb_path_ops keeps one hashed entry per path to a value, smaller and faster for `@>`
-- than the default jsonb_ops (which also serves key-exists operators nobody uses here).
-- Every insert and every payload-changing update pays for it; docs/performance.md has the
-- figures.
CREATE INDEX tasks_payload_idx ON tasks USING GIN (payload jsonb_path_ops);

-- One row per bulk action (POST /api/tasks/bulk that was not a dry run), for the audit:
-- what was asked, by which token, and how it went. Each task changed also has the change
-- in its own history (task_events.token_name).
CREATE TABLE bulk_actions (
    id uuid PRIMARY KEY,
    action text NOT NULL CHECK (action IN ('rerun', 'cancel', 'delete')),
    selection jsonb NOT NULL,
    token_name text,
    matched bigint NOT NULL CHECK (matched >= 0),
    done bigint NOT NULL CHECK (done >= 0),
    skipped bigint NOT NULL CHECK (skipped >= 0),
    at timestamptz NOT NULL
);
CREATE INDEX bulk_actions_at_idx ON bulk_actions (at DESC);
