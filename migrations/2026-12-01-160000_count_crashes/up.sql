-- Lease expiries (crashes: the worker died, hung or lost touch without reporting) are counted
-- apart from reported failures, with their own budget. `crash_count` counts the expiries
-- since creation or the last rerun; `max_crashes` is the task's budget, 1 to 100, 3 unless
-- the task or the server's TASKPILOT_MAX_CRASHES says otherwise. The expiry that uses the
-- budget up quarantines the task: FAILED with retry state QUARANTINED, whatever attempts it
-- had left. Every expiry still counts as a failed attempt too, so crash_count never exceeds
-- attempt_count; that and which retry state goes with which count stay the domain's rules
-- (`Task::restore`), as for the attempt budget.
--
-- Existing tasks start with no crash counted and the default budget: their past expiries were
-- counted as failed attempts only, as they still are.
ALTER TABLE tasks
    ADD COLUMN crash_count int4 NOT NULL DEFAULT 0,
    ADD COLUMN max_crashes int4 NOT NULL DEFAULT 3,
    ADD CONSTRAINT tasks_max_crashes_check CHECK (max_crashes BETWEEN 1 AND 100),
    ADD CONSTRAINT tasks_crash_count_check CHECK (crash_count BETWEEN 0 AND max_crashes),
    DROP CONSTRAINT tasks_retry_state_check,
    ADD CONSTRAINT tasks_retry_state_check CHECK (
        retry_state IN ('NONE', 'RETRY_SCHEDULED', 'EXHAUSTED', 'NON_RETRYABLE', 'QUARANTINED')
    );
