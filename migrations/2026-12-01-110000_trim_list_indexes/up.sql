-- Fewer list indexes on the hot path. Every claim and every completion changes `status`, which
-- sits in index keys and partial-index predicates, so none of them is a HOT update: each writes
-- a new entry into every index of `tasks` that is not partial on another status. Of the four
-- list indexes, this keeps the one every listing pages on, (created_at DESC, id DESC), and
-- replaces the status, name and queue ones by one index of the statuses that are worth an
-- index of their own: those of tasks that did not succeed. A task gets entries in it when it is
-- created and when it is claimed, none when it succeeds.
--
-- Measured with the claim-100 + complete-100 cycle as plain SQL over a 200,000-task backlog
-- (one client, median of three runs, after the history key and the row triggers were gone):
-- 82.1 µs of PostgreSQL time per job with the four list indexes, 70.1 with this set, 63.0 with
-- only the created_at index, 61.3 with no list index at all.
--
-- What listing then reads, on 1,000,000 finished and 100,000 pending tasks: the unfiltered
-- list and its later pages, and a list by PENDING, RUNNING, FAILED or CANCELLED, read one index
-- range (well under 1 ms); a list by SUCCEEDED, by name or by queue walks the created_at index
-- newest first and skips the rows that do not match, so its cost grows with the rows newer than
-- the page that do not match (60-140 ms with the 100,000 pending tasks in front); a name or
-- queue no task has reads the whole table (230 ms). The order of every listing is unchanged.
--
-- Built in the migration's transaction rather than CONCURRENTLY: migrations run under an
-- advisory lock that servers starting meanwhile wait on, and a concurrent build waits for
-- every older transaction of the database, those waiters included, which PostgreSQL then
-- breaks as a deadlock by failing a waiting server's migration; diesel also sends a migration
-- file as one multi-statement query, which PostgreSQL runs as one transaction, where
-- CONCURRENTLY is refused. Writers to `tasks` wait while it scans the table once and sorts the
-- unfinished rows only (measured: 0.64 s for 1,000,000 finished and 100,000 pending tasks on
-- a 2-core machine); the drops are catalog changes. IF NOT EXISTS, so that an operator with a
-- much larger table can build the index CONCURRENTLY by hand beforehand (docs/operations.md,
-- "Upgrading") and the migration then only drops the old ones.
CREATE INDEX IF NOT EXISTS tasks_unfinished_status_created_at_id_idx ON tasks (status, created_at DESC, id DESC)
    WHERE status <> 'SUCCEEDED';
DROP INDEX tasks_status_created_at_id_idx;
DROP INDEX tasks_name_created_at_id_idx;
DROP INDEX tasks_queue_created_at_id_idx;
