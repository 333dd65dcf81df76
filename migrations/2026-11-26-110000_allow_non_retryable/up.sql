-- A worker may report a failure that no retry can fix (`fail` with retryable: false).
-- The task then fails at once with retry state NON_RETRYABLE, after as few as one of its
-- attempts: FAILED with 1 <= attempt_count <= max_attempts, where EXHAUSTED always means
-- attempt_count = max_attempts. The attempt it gave up in ended FAILED_PERMANENTLY, so that
-- a repeat of that report is told apart from a retryable failure with the same token.
--
-- A stopping worker may also hand a task back unfinished (`release`): the task is
-- PENDING and runnable at once, no failure counted, and the attempt ended RELEASED, so that
-- a repeat of the release is a replay and a late success or failure with its token an
-- OUTCOME_CONFLICT. A stale release is refused and recorded like any stale call, as RELEASE.
--
-- Only the lists of spellings change. No CHECK ties FAILED to EXHAUSTED or attempt_count to
-- max_attempts (`tasks_attempt_count_check` only bounds it by max_attempts): which retry state
-- goes with which status and count is retry bookkeeping, the domain's alone (see the first
-- migration), and `Task::restore` refuses a row that breaks it.
ALTER TABLE tasks
    DROP CONSTRAINT tasks_retry_state_check,
    ADD CONSTRAINT tasks_retry_state_check
        CHECK (retry_state IN ('NONE', 'RETRY_SCHEDULED', 'EXHAUSTED', 'NON_RETRYABLE')),
    DROP CONSTRAINT tasks_ended_attempt_end_check,
    ADD CONSTRAINT tasks_ended_attempt_end_check CHECK (
        ended_attempt_end IN (
            'SUCCEEDED', 'FAILED', 'FAILED_PERMANENTLY', 'LEASE_EXPIRED', 'CANCELLED', 'RELEASED'
        )
    );

ALTER TABLE task_events
    DROP CONSTRAINT task_events_rejected_call_check,
    ADD CONSTRAINT task_events_rejected_call_check
        CHECK (rejected_call IN ('SUCCEED', 'FAIL', 'HEARTBEAT', 'RELEASE'));
