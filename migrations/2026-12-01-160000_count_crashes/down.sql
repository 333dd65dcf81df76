-- Back to no crash budget. The code of that schema knows no QUARANTINED task: a quarantined
-- task is recorded as one that gave up early on retries (NON_RETRYABLE: FAILED after at
-- least one failed attempt, its remaining attempts unused), which it did, keeping its
-- lastError that says why. Its version moves on, so that a write prepared from the old row
-- loses its compare-and-swap.
UPDATE tasks
    SET retry_state = 'NON_RETRYABLE', version = version + 1
    WHERE retry_state = 'QUARANTINED';

ALTER TABLE tasks
    DROP CONSTRAINT tasks_retry_state_check,
    ADD CONSTRAINT tasks_retry_state_check
        CHECK (retry_state IN ('NONE', 'RETRY_SCHEDULED', 'EXHAUSTED', 'NON_RETRYABLE')),
    DROP CONSTRAINT tasks_crash_count_check,
    DROP CONSTRAINT tasks_max_crashes_check,
    DROP COLUMN max_crashes,
    DROP COLUMN crash_count;
