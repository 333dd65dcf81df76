-- Back to three retry states, four attempt ends and three kinds of refused call. The code of
-- that schema knows a FAILED task only as one that used every attempt (EXHAUSTED,
-- attempt_count = max_attempts, no more failures than attempts started, the last one ended
-- FAILED), and refuses to read anything else. So a task that gave up early is recorded as if
-- its remaining attempts had run and failed too: its failure count, attempt number and last
-- ended attempt move up to max_attempts, keeping that attempt's token and error, and that
-- attempt ended FAILED. That it gave up early is lost; the task stays failed, and can be
-- rerun as before. Its version moves on, so that a write prepared from the old row loses its
-- compare-and-swap.
UPDATE tasks
    SET retry_state = 'EXHAUSTED',
        attempt_count = max_attempts,
        attempt = greatest(attempt, max_attempts),
        ended_attempt = greatest(attempt, max_attempts),
        ended_attempt_end = 'FAILED',
        version = version + 1
    WHERE retry_state = 'NON_RETRYABLE';
-- A permanent failure that a rerun has since left behind (the task is pending or running
-- again): to the old code, a failure.
UPDATE tasks
    SET ended_attempt_end = 'FAILED', version = version + 1
    WHERE ended_attempt_end = 'FAILED_PERMANENTLY';
-- A released attempt: the task is pending (or running or finished again) with nothing
-- counted against it, a state the old code reads as it is. Only the attempt's end needs an
-- old spelling, and FAILED answers its late calls as the old code can: a late success with
-- that token is an OUTCOME_CONFLICT, and a heartbeat is refused.
UPDATE tasks
    SET ended_attempt_end = 'FAILED', version = version + 1
    WHERE ended_attempt_end = 'RELEASED';
-- A refused stale release, in the history and the counts: to the old code, a refused failure
-- report, which no count of stale successes includes.
UPDATE task_events SET rejected_call = 'FAIL' WHERE rejected_call = 'RELEASE';

ALTER TABLE task_events
    DROP CONSTRAINT task_events_rejected_call_check,
    ADD CONSTRAINT task_events_rejected_call_check
        CHECK (rejected_call IN ('SUCCEED', 'FAIL', 'HEARTBEAT'));
ALTER TABLE tasks
    DROP CONSTRAINT tasks_retry_state_check,
    ADD CONSTRAINT tasks_retry_state_check
        CHECK (retry_state IN ('NONE', 'RETRY_SCHEDULED', 'EXHAUSTED')),
    DROP CONSTRAINT tasks_ended_attempt_end_check,
    ADD CONSTRAINT tasks_ended_attempt_end_check
        CHECK (ended_attempt_end IN ('SUCCEEDED', 'FAILED', 'LEASE_EXPIRED', 'CANCELLED'));
