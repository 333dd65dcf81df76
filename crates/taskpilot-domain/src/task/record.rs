//! The stored shape of a task: [`TaskRecord`], and the checks that rebuild a [`Task`] from it.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Task;
use crate::{
    AttemptEnd, EndedAttempt, Lease, LeaseToken, MaxAttempts, MaxCrashes, QueueName, RestoreError,
    RetryState, TaskId, TaskName, TaskState, TaskStatus, TokenId, UniqueKey, WorkerId,
};

/// Every field of a task, flat, as storage keeps it. [`Task::restore`] checks it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "camelCase")
)]
#[expect(missing_docs, reason = "each other field is the Task getter of the same name")]
pub struct TaskRecord {
    pub id: TaskId,
    pub queue: QueueName,
    pub name: TaskName,
    pub payload: Value,
    pub priority: i32,
    pub status: TaskStatus,
    /// How many times the task was ever started ([`Task::attempt`]): never reset.
    pub attempt: u32,
    pub lease_token: Option<LeaseToken>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub ended_attempt: Option<u32>,
    pub ended_attempt_token: Option<LeaseToken>,
    pub ended_attempt_end: Option<AttemptEnd>,
    pub retry_state: RetryState,
    /// Failed attempts since creation or the last rerun ([`Task::attempt_count`]; the API's
    /// `attemptCount`).
    pub attempt_count: u32,
    pub max_attempts: MaxAttempts,
    /// Lease expiries since creation or the last rerun ([`Task::crash_count`]; the API's
    /// `crashCount`).
    pub crash_count: u32,
    pub max_crashes: MaxCrashes,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub worker_id: Option<WorkerId>,
    pub processing_started_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    /// The API token that created the task; `None` for tasks created without one.
    pub created_by: Option<TokenId>,
    /// The task's unique key ([`Task::unique_key`]); `None` for tasks created without one.
    pub unique_key: Option<UniqueKey>,
}

impl Task {
    /// Rebuilds a task from storage, checking every invariant a transition maintains.
    ///
    /// # Errors
    /// [`RestoreError`] naming the first invariant the record breaks.
    pub fn restore(r: TaskRecord) -> Result<Self, RestoreError> {
        // Every field by name, no `..`: a field added to the record fails to compile here
        // until restoring reads it.
        let TaskRecord {
            id,
            queue,
            name,
            payload,
            priority,
            status,
            attempt,
            lease_token,
            lease_expires_at,
            ended_attempt,
            ended_attempt_token,
            ended_attempt_end,
            retry_state,
            attempt_count,
            max_attempts,
            crash_count,
            max_crashes,
            next_run_at,
            last_error,
            worker_id,
            processing_started_at,
            result,
            completed_at,
            created_at,
            updated_at,
            version,
            created_by,
            unique_key,
        } = r;
        let bad = |reason: &str| RestoreError { task: id, reason: reason.to_owned() };
        let state = match (status, worker_id, processing_started_at, completed_at) {
            (TaskStatus::Pending, None, None, None) => TaskState::Pending { next_run_at },
            (TaskStatus::Running, Some(worker_id), Some(started_at), None) => {
                let (Some(token), Some(expires_at)) = (lease_token, lease_expires_at) else {
                    return Err(bad("a running task has a lease token and expiry"));
                };
                TaskState::Running { worker_id, started_at, lease: Lease { token, expires_at } }
            }
            (TaskStatus::Succeeded, None, None, Some(completed_at)) => {
                TaskState::Succeeded { completed_at, result: result.clone() }
            }
            (TaskStatus::Failed, None, None, Some(completed_at)) => {
                TaskState::Failed { completed_at }
            }
            (TaskStatus::Cancelled, None, None, Some(completed_at)) => {
                TaskState::Cancelled { completed_at }
            }
            (status, ..) => {
                return Err(bad(&format!(
                    "workerId, processingStartedAt and completedAt do not fit status {status}"
                )))
            }
        };
        if status != TaskStatus::Running && (lease_token.is_some() || lease_expires_at.is_some()) {
            return Err(bad("only a running task has a lease"));
        }
        let last_ended = match (ended_attempt, ended_attempt_token, ended_attempt_end) {
            (None, None, None) => None,
            (Some(attempt), Some(token), Some(end)) => Some(EndedAttempt { attempt, token, end }),
            _ => return Err(bad("the last ended attempt is recorded whole or not at all")),
        };
        let task = Self {
            id,
            queue,
            name,
            payload,
            priority,
            max_attempts,
            attempt_count,
            max_crashes,
            crash_count,
            state,
            retry_state,
            last_error,
            attempt,
            last_ended,
            created_at,
            updated_at,
            version,
            created_by,
            unique_key,
        };
        if result.is_some() && task.status() != TaskStatus::Succeeded {
            return Err(bad("only a succeeded task has a result"));
        }
        if next_run_at.is_some() && task.status() != TaskStatus::Pending {
            return Err(bad("only a pending task has a nextRunAt"));
        }
        task.check_invariants().map_err(bad)?;
        Ok(task)
    }

    /// The flat form of the task, for storage and serialization.
    pub fn to_record(&self) -> TaskRecord {
        TaskRecord {
            id: self.id,
            queue: self.queue.clone(),
            name: self.name.clone(),
            payload: self.payload.clone(),
            priority: self.priority,
            status: self.status(),
            attempt: self.attempt,
            lease_token: self.lease().map(|l| l.token),
            lease_expires_at: self.lease().map(|l| l.expires_at),
            ended_attempt: self.last_ended.map(|e| e.attempt),
            ended_attempt_token: self.last_ended.map(|e| e.token),
            ended_attempt_end: self.last_ended.map(|e| e.end),
            retry_state: self.retry_state,
            attempt_count: self.attempt_count,
            max_attempts: self.max_attempts,
            crash_count: self.crash_count,
            max_crashes: self.max_crashes,
            next_run_at: self.next_run_at(),
            last_error: self.last_error.clone(),
            worker_id: self.worker_id().cloned(),
            processing_started_at: self.processing_started_at(),
            result: self.result().cloned(),
            completed_at: self.completed_at(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            created_by: self.created_by,
            unique_key: self.unique_key.clone(),
        }
    }

    /// Checks the invariants that every transition maintains; `Err` names the broken one.
    ///
    /// A task built by [`Task::new`] and changed only through transitions always passes;
    /// [`Task::restore`] uses this to refuse inconsistent records.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let attempts = self.attempt_count;
        let max = self.max_attempts.get();
        if attempts > max {
            return Err("attemptCount exceeds maxAttempts");
        }
        if self.crash_count > self.max_crashes.get() {
            return Err("crashCount exceeds maxCrashes");
        }
        if self.crash_count > attempts {
            return Err("every crash is a failed attempt");
        }
        if self.updated_at < self.created_at {
            return Err("updatedAt is before createdAt");
        }
        if self.version == 0 {
            return Err("version starts at 1");
        }
        let running = matches!(self.state, TaskState::Running { .. });
        if running && self.attempt == 0 {
            return Err("a running task is on attempt 1 or later");
        }
        if self.attempt_count > self.attempt {
            return Err("no more attempts failed than were started");
        }
        if let (Some(ended), TaskState::Running { lease, .. }) = (self.last_ended, &self.state) {
            if ended.token == lease.token {
                return Err("every attempt has a token of its own");
            }
        }
        if self.last_ended.is_some_and(|e| e.attempt == 0) {
            return Err("attempts are numbered from 1");
        }
        match self.last_ended {
            Some(ended) if ended.attempt != self.attempt - u32::from(running) => {
                return Err(
                    "the last ended attempt is the one before the running one, else the last",
                );
            }
            None if self.attempt > u32::from(running) => {
                return Err("every attempt but the running one has ended");
            }
            _ => {}
        }
        if let TaskState::Running { started_at, lease, .. } = &self.state {
            if lease.expires_at <= *started_at {
                return Err("a lease expires after its attempt started");
            }
        }
        match (&self.state, self.retry_state) {
            (
                TaskState::Pending { .. } | TaskState::Running { .. },
                RetryState::Exhausted | RetryState::NonRetryable | RetryState::Quarantined,
            ) => Err("only a failed task has exhausted its retries or given up on them"),
            (TaskState::Pending { .. } | TaskState::Running { .. }, _)
                if self.crash_count >= self.max_crashes.get() =>
            {
                Err("a task with no crashes left must be quarantined")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, _) if attempts >= max => {
                Err("a task with no attempts left must be failed")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, RetryState::None)
                if attempts > 0 =>
            {
                Err("a task with failed attempts that is not finished has a retry scheduled")
            }
            (TaskState::Pending { .. } | TaskState::Running { .. }, RetryState::RetryScheduled)
                if attempts == 0 || self.last_error.is_none() =>
            {
                Err("a scheduled retry follows a recorded failure")
            }
            (TaskState::Pending { next_run_at: None }, RetryState::RetryScheduled) => {
                Err("a scheduled retry has a nextRunAt")
            }
            (TaskState::Succeeded { .. }, retry) if retry != RetryState::None => {
                Err("a succeeded task has no retry state")
            }
            (TaskState::Succeeded { .. }, _) if self.last_error.is_some() => {
                Err("a succeeded task has no lastError")
            }
            (TaskState::Failed { .. }, RetryState::None | RetryState::RetryScheduled) => {
                Err("a failed task has exhausted its retries or given up on them")
            }
            (TaskState::Failed { .. }, _) if self.last_error.is_none() => {
                Err("a failed task recorded the last error")
            }
            (TaskState::Failed { .. }, RetryState::Exhausted) if attempts != max => {
                Err("a task that exhausted its retries used every attempt")
            }
            (TaskState::Failed { .. }, RetryState::NonRetryable) if attempts == 0 => {
                Err("a task that gave up on retries recorded a failed attempt")
            }
            (TaskState::Failed { .. }, RetryState::Quarantined)
                if self.crash_count != self.max_crashes.get() =>
            {
                Err("a quarantined task used every crash")
            }
            (TaskState::Failed { .. }, RetryState::Exhausted | RetryState::NonRetryable)
                if self.crash_count >= self.max_crashes.get() =>
            {
                Err("a task with no crashes left is quarantined")
            }
            (TaskState::Cancelled { .. }, retry) if retry != RetryState::None => {
                Err("a cancelled task has no retry state")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::{
        failed, failed_permanently, fenced, lease, pending, quarantined, running, secs, spec,
        start, t0, task_id, task_in, tok, worker, BACKOFF,
    };
    use crate::Reporter;

    #[test]
    fn restore_of_to_record_round_trips_every_reachable_state() {
        let mut delayed = Task::new(task_id(), spec(3, Some(t0() + secs(60))), t0());
        delayed.priority = -3;
        let mut other_queue = pending(3);
        other_queue.queue = QueueName::parse("reports-2").unwrap();
        let mut retry_scheduled = running(3);
        retry_scheduled.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        let mut retry_running = retry_scheduled.clone();
        start(&mut retry_running, "w2", t0() + secs(30)).unwrap();
        let mut heartbeated = retry_running.clone();
        heartbeated.heartbeat(None, tok(2), lease(), t0() + secs(40)).unwrap();
        let mut succeeded_without_result = running(3);
        succeeded_without_result.succeed(&Reporter::anyone(), None, t0()).unwrap();
        let mut cancelled_while_running = running(3);
        cancelled_while_running.cancel(t0()).unwrap();
        let mut restarted_after_cancel = cancelled_while_running.clone();
        restarted_after_cancel.rerun(t0() + secs(1)).unwrap();
        start(&mut restarted_after_cancel, "w2", t0() + secs(1)).unwrap();
        let mut reaped = running(3);
        reaped.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut reaped_for_good = running(1);
        reaped_for_good.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
        let mut rerun = failed(3);
        rerun.rerun(t0() + secs(3600)).unwrap();
        let mut released = running(3);
        released.release(&fenced(1), t0() + secs(5)).unwrap();
        let mut released_retry = retry_running.clone();
        released_retry.release(&fenced(2), t0() + secs(35)).unwrap();
        let mut restarted_after_release = released.clone();
        start(&mut restarted_after_release, "w2", t0() + secs(5)).unwrap();
        let mut reachable: Vec<Task> = TaskStatus::ALL.into_iter().map(task_in).collect();
        reachable.extend([
            delayed,
            other_queue,
            retry_scheduled,
            retry_running,
            heartbeated,
            succeeded_without_result,
            cancelled_while_running,
            restarted_after_cancel,
            reaped,
            reaped_for_good,
            failed(1),
            rerun,
            released,
            released_retry,
            restarted_after_release,
            quarantined(5, 3),
            quarantined(3, 3),
            quarantined(5, 1),
            {
                let mut task = quarantined(5, 2);
                task.rerun(t0() + secs(3600)).unwrap();
                task
            },
            {
                let mut crashed_once = pending(5).with_max_crashes(MaxCrashes::new(4).unwrap());
                start(&mut crashed_once, "w1", t0()).unwrap();
                crashed_once.expire_lease(t0() + secs(60), &BACKOFF).unwrap();
                crashed_once
            },
        ]);

        for task in reachable {
            let record = task.to_record();

            assert_eq!(record.status, task.status());
            assert_eq!(Task::restore(record), Ok(task.clone()), "{:?}", task.state());
        }
    }

    #[test]
    fn to_record_flattens_every_field() {
        let mut task = running(3);
        task.fail_and_schedule_retry(&Reporter::anyone(), "boom", t0(), &BACKOFF).unwrap();
        start(&mut task, "w2", t0() + secs(30)).unwrap();

        let r = task.to_record();

        assert_eq!(
            r,
            TaskRecord {
                id: task_id(),
                queue: QueueName::default(),
                name: TaskName::parse("send-email").unwrap(),
                payload: json!({"to": "ada@example.com"}),
                priority: 7,
                status: TaskStatus::Running,
                attempt: 2,
                lease_token: Some(tok(2)),
                lease_expires_at: Some(t0() + secs(90)),
                ended_attempt: Some(1),
                ended_attempt_token: Some(tok(1)),
                ended_attempt_end: Some(AttemptEnd::Failed),
                retry_state: RetryState::RetryScheduled,
                attempt_count: 1,
                max_attempts: MaxAttempts::new(3).unwrap(),
                crash_count: 0,
                max_crashes: MaxCrashes::DEFAULT,
                next_run_at: None,
                last_error: Some("boom".to_owned()),
                worker_id: Some(worker("w2")),
                processing_started_at: Some(t0() + secs(30)),
                result: None,
                completed_at: None,
                created_at: t0(),
                updated_at: t0() + secs(30),
                version: 4,
                created_by: None,
                unique_key: None,
            }
        );
    }

    #[test]
    fn restore_refuses_inconsistent_records() {
        let fresh = pending(3).to_record();
        let run = running(3).to_record();
        let done = task_in(TaskStatus::Succeeded).to_record();
        let dead = failed(3).to_record();
        let cases: Vec<(&str, TaskRecord)> = vec![
            ("running without a worker", TaskRecord { worker_id: None, ..run.clone() }),
            (
                "running without processingStartedAt",
                TaskRecord { processing_started_at: None, ..run.clone() },
            ),
            ("running with completedAt", TaskRecord { completed_at: Some(t0()), ..run.clone() }),
            ("running with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..run.clone() }),
            (
                "pending with a worker",
                TaskRecord { worker_id: Some(worker("w1")), ..fresh.clone() },
            ),
            ("pending with completedAt", TaskRecord { completed_at: Some(t0()), ..fresh.clone() }),
            ("pending with a result", TaskRecord { result: Some(json!(1)), ..fresh.clone() }),
            (
                "pending with failed attempts but no retry",
                TaskRecord { attempt_count: 1, last_error: Some("x".into()), ..fresh.clone() },
            ),
            (
                "retry scheduled without nextRunAt",
                TaskRecord {
                    retry_state: RetryState::RetryScheduled,
                    attempt_count: 1,
                    last_error: Some("x".into()),
                    ..fresh.clone()
                },
            ),
            (
                "retry scheduled without a failure",
                TaskRecord {
                    retry_state: RetryState::RetryScheduled,
                    next_run_at: Some(t0()),
                    ..fresh.clone()
                },
            ),
            (
                "pending and exhausted",
                TaskRecord { retry_state: RetryState::Exhausted, ..fresh.clone() },
            ),
            ("pending with no attempts left", TaskRecord { attempt_count: 3, ..fresh.clone() }),
            ("attempts above the budget", TaskRecord { attempt_count: 4, ..dead.clone() }),
            ("version zero", TaskRecord { version: 0, ..fresh.clone() }),
            ("updated before created", TaskRecord { updated_at: t0() - secs(1), ..fresh.clone() }),
            ("succeeded without completedAt", TaskRecord { completed_at: None, ..done.clone() }),
            (
                "succeeded with a retry state",
                TaskRecord { retry_state: RetryState::RetryScheduled, ..done.clone() },
            ),
            (
                "succeeded with lastError",
                TaskRecord { last_error: Some("x".into()), ..done.clone() },
            ),
            ("failed with attempts left", TaskRecord { attempt_count: 2, ..dead.clone() }),
            ("failed without lastError", TaskRecord { last_error: None, ..dead.clone() }),
            ("failed not exhausted", TaskRecord { retry_state: RetryState::None, ..dead.clone() }),
            ("failed with a result", TaskRecord { result: Some(json!(1)), ..dead.clone() }),
            ("cancelled without completedAt", {
                let mut r = task_in(TaskStatus::Cancelled).to_record();
                r.completed_at = None;
                r
            }),
            ("cancelled with a retry state", {
                let mut r = task_in(TaskStatus::Cancelled).to_record();
                r.retry_state = RetryState::Exhausted;
                r
            }),
            ("failed with nextRunAt", TaskRecord { next_run_at: Some(t0()), ..dead.clone() }),
            // Leases.
            ("running without a lease token", TaskRecord { lease_token: None, ..run.clone() }),
            (
                "running without a lease expiry",
                TaskRecord { lease_expires_at: None, ..run.clone() },
            ),
            (
                "running with a lease that expires when it started",
                TaskRecord { lease_expires_at: Some(t0()), ..run.clone() },
            ),
            ("running on attempt zero", TaskRecord { attempt: 0, ..run.clone() }),
            (
                "pending with a lease token",
                TaskRecord { lease_token: Some(tok(1)), ..fresh.clone() },
            ),
            (
                "pending with a lease expiry",
                TaskRecord { lease_expires_at: Some(t0() + secs(60)), ..fresh.clone() },
            ),
            (
                "succeeded with a lease",
                TaskRecord {
                    lease_token: Some(tok(1)),
                    lease_expires_at: Some(t0() + secs(60)),
                    ..done.clone()
                },
            ),
            ("failed with a lease token", TaskRecord { lease_token: Some(tok(3)), ..dead.clone() }),
            // The last ended attempt.
            (
                "ended attempt without its token",
                TaskRecord { ended_attempt_token: None, ..done.clone() },
            ),
            (
                "ended attempt without its end",
                TaskRecord { ended_attempt_end: None, ..done.clone() },
            ),
            (
                "ended attempt without its number",
                TaskRecord { ended_attempt: None, ..done.clone() },
            ),
            (
                "an ended end alone",
                TaskRecord { ended_attempt_end: Some(AttemptEnd::Failed), ..fresh.clone() },
            ),
            (
                "a started attempt that never ended",
                TaskRecord {
                    ended_attempt: None,
                    ended_attempt_token: None,
                    ended_attempt_end: None,
                    ..done.clone()
                },
            ),
            (
                "an ended attempt that is not the last",
                TaskRecord { ended_attempt: Some(2), ..dead.clone() },
            ),
            (
                "the running attempt recorded as ended",
                TaskRecord {
                    ended_attempt: Some(1),
                    ended_attempt_token: Some(tok(1)),
                    ended_attempt_end: Some(AttemptEnd::Failed),
                    ..run
                },
            ),
            (
                "an attempt ended that never started",
                TaskRecord {
                    ended_attempt: Some(1),
                    ended_attempt_token: Some(tok(1)),
                    ended_attempt_end: Some(AttemptEnd::Cancelled),
                    ..fresh
                },
            ),
        ];

        for (what, record) in cases {
            let refused = Task::restore(record);

            let err = refused.expect_err(what);
            assert_eq!(err.task, task_id(), "{what}");
            assert!(!err.reason.is_empty(), "{what}");
        }
    }

    #[test]
    fn restore_refuses_crash_counts_that_no_transition_makes() {
        let jailed = quarantined(5, 3).to_record();
        let fresh = pending(5).to_record();
        let dead = failed(3).to_record();
        let cases: Vec<(&str, TaskRecord)> = vec![
            ("quarantined below its crash budget", TaskRecord { crash_count: 2, ..jailed.clone() }),
            ("crashes above the budget", TaskRecord { crash_count: 4, ..jailed.clone() }),
            (
                "more crashes than failed attempts",
                TaskRecord { attempt_count: 2, ..jailed.clone() },
            ),
            (
                "pending and quarantined",
                TaskRecord { retry_state: RetryState::Quarantined, ..fresh.clone() },
            ),
            (
                "pending with no crashes left",
                TaskRecord {
                    crash_count: 3,
                    attempt_count: 3,
                    retry_state: RetryState::RetryScheduled,
                    last_error: Some("lease expired (worker w1)".into()),
                    next_run_at: Some(t0()),
                    ..fresh
                },
            ),
            ("exhausted with no crashes left", TaskRecord { crash_count: 3, ..dead.clone() }),
            ("quarantined without lastError", TaskRecord { last_error: None, ..jailed.clone() }),
            (
                "cancelled and quarantined",
                TaskRecord {
                    retry_state: RetryState::Quarantined,
                    ..task_in(TaskStatus::Cancelled).to_record()
                },
            ),
        ];

        for (what, record) in cases {
            let err = Task::restore(record).expect_err(what);

            assert!(!err.reason.is_empty(), "{what}");
        }
    }

    #[test]
    fn restore_of_to_record_round_trips_permanently_failed_tasks() {
        let mut on_last_attempt = running(1);
        on_last_attempt.fail_permanently(&fenced(1), "bad payload", t0()).unwrap();
        let mut after_a_retry = running(3);
        after_a_retry.fail_and_schedule_retry(&fenced(1), "flaky", t0(), &BACKOFF).unwrap();
        start(&mut after_a_retry, "w2", t0() + secs(30)).unwrap();
        after_a_retry.fail_permanently(&fenced(2), "bad payload", t0() + secs(31)).unwrap();
        let mut rerun = failed_permanently(3);
        rerun.rerun(t0() + secs(60)).unwrap();

        for task in [failed_permanently(3), on_last_attempt, after_a_retry, rerun] {
            let record = task.to_record();

            assert_eq!(Task::restore(record.clone()), Ok(task.clone()), "{record:?}");
        }
        let record = failed_permanently(3).to_record();
        assert_eq!(
            (record.status, record.retry_state, record.attempt_count),
            (TaskStatus::Failed, RetryState::NonRetryable, 1)
        );
    }

    #[test]
    fn restore_refuses_non_retryable_records_that_no_transition_makes() {
        let dead = failed_permanently(3).to_record();
        let non_retryable =
            |r: TaskRecord| TaskRecord { retry_state: RetryState::NonRetryable, ..r };
        let cases: Vec<(&str, TaskRecord)> = vec![
            (
                "non-retryable without a failed attempt",
                TaskRecord { attempt_count: 0, ..dead.clone() },
            ),
            ("non-retryable without lastError", TaskRecord { last_error: None, ..dead.clone() }),
            ("non-retryable above the budget", TaskRecord { attempt_count: 4, ..dead.clone() }),
            ("pending and non-retryable", non_retryable(pending(3).to_record())),
            ("running and non-retryable", non_retryable(running(3).to_record())),
            (
                "succeeded and non-retryable",
                non_retryable(task_in(TaskStatus::Succeeded).to_record()),
            ),
            (
                "cancelled and non-retryable",
                non_retryable(task_in(TaskStatus::Cancelled).to_record()),
            ),
            (
                "a retry scheduled after a permanent failure",
                TaskRecord {
                    status: TaskStatus::Pending,
                    completed_at: None,
                    next_run_at: Some(t0() + secs(30)),
                    ..dead.clone()
                },
            ),
            // The other way round: EXHAUSTED still needs every attempt used.
            (
                "exhausted with attempts left",
                TaskRecord { retry_state: RetryState::Exhausted, ..dead.clone() },
            ),
        ];

        for (what, record) in cases {
            let err = Task::restore(record).expect_err(what);

            assert_eq!(err.task, task_id(), "{what}");
            assert!(!err.reason.is_empty(), "{what}");
        }
    }
}
