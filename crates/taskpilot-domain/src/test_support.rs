//! Tasks and values the unit tests of every module share: a fixed start instant, tokens
//! numbered by attempt, and tasks driven into each status through transitions only.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::fmt;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::{
    DomainError, FixedBackoff, LeaseDuration, LeaseToken, MaxAttempts, MaxCrashes, NewTask,
    QueueName, Reporter, Task, TaskId, TaskName, TaskStatus, WorkerId,
};

/// The backoff of every test task: 30 s.
pub(crate) const BACKOFF: FixedBackoff = FixedBackoff(TimeDelta::seconds(30));

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

pub(crate) fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub(crate) fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

pub(crate) fn task_id() -> TaskId {
    TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

/// A lease token; the helpers below start attempt `n` with `tok(n)`.
pub(crate) fn tok(n: u128) -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128(n))
}

/// The lease every start and heartbeat takes unless a test says otherwise: 60 s.
pub(crate) fn lease() -> LeaseDuration {
    LeaseDuration::from_secs(60).unwrap()
}

/// A fenced report carrying attempt `n`'s token and no worker id.
pub(crate) fn fenced(n: u128) -> Reporter {
    Reporter::lease(None, tok(n))
}

pub(crate) fn spec(max_attempts: i64, run_at: Option<DateTime<Utc>>) -> NewTask {
    NewTask {
        queue: QueueName::default(),
        name: TaskName::parse("send-email").unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 7,
        max_attempts: MaxAttempts::new(max_attempts).unwrap(),
        run_at,
        unique_key: None,
    }
}

/// Starts the task's next attempt for worker `name`, with token `tok(that attempt)`.
pub(crate) fn start(task: &mut Task, name: &str, now: DateTime<Utc>) -> Result<(), DomainError> {
    let token = tok(u128::from(task.attempt()) + 1);
    task.start(&worker(name), token, lease(), now)
}

/// A new task with `max_attempts`, created at `t0()`.
pub(crate) fn pending(max_attempts: i64) -> Task {
    Task::new(task_id(), spec(max_attempts, None), t0())
}

/// Attempt 1, held by `w1` since `t0()` under `tok(1)`, lease until `t0() + 60 s`.
pub(crate) fn running(max_attempts: i64) -> Task {
    let mut task = pending(max_attempts);
    start(&mut task, "w1", t0()).unwrap();
    task
}

/// A task running its last attempt, each one before failed as soon as it ran, and when
/// that attempt started.
pub(crate) fn on_its_last_attempt(max_attempts: i64) -> (Task, DateTime<Utc>) {
    let mut task = pending(max_attempts);
    let mut now = t0();
    for _ in 1..max_attempts {
        start(&mut task, "w1", now).unwrap();
        task.fail_and_schedule_retry(&Reporter::anyone(), "flaky", now, &BACKOFF).unwrap();
        now = task.next_run_at().unwrap();
    }
    start(&mut task, "w1", now).unwrap();
    (task, now)
}

/// A task that used every attempt: each one started as soon as runnable, then failed.
pub(crate) fn failed(max_attempts: i64) -> Task {
    let mut task = pending(max_attempts);
    let mut now = t0();
    while task.status() != TaskStatus::Failed {
        now = task.next_run_at().unwrap_or(now);
        start(&mut task, "w1", now).unwrap();
        task.fail_and_schedule_retry(&Reporter::worker(worker("w1")), "boom", now, &BACKOFF)
            .unwrap();
    }
    task
}

/// A task with `max_attempts` and a crash budget of `max_crashes` whose every attempt was
/// started by `w1` as soon as runnable and never reported on, until the reaper quarantined
/// it (each lease of 60 s reaped the moment it ran out).
pub(crate) fn quarantined(max_attempts: i64, max_crashes: i64) -> Task {
    let mut task = pending(max_attempts).with_max_crashes(MaxCrashes::new(max_crashes).unwrap());
    let mut now = t0();
    while task.status() != TaskStatus::Failed {
        now = task.next_run_at().unwrap_or(now);
        start(&mut task, "w1", now).unwrap();
        now += secs(60);
        task.expire_lease(now, &BACKOFF).unwrap();
    }
    task
}

/// A task in `status`, reached through transitions only, with three attempts.
pub(crate) fn task_in(status: TaskStatus) -> Task {
    match status {
        TaskStatus::Pending => pending(3),
        TaskStatus::Running => running(3),
        TaskStatus::Succeeded => {
            let mut task = running(3);
            task.succeed(&Reporter::anyone(), Some(json!({"ok": true})), t0() + secs(1)).unwrap();
            task
        }
        TaskStatus::Failed => failed(3),
        TaskStatus::Cancelled => {
            let mut task = pending(3);
            task.cancel(t0() + secs(1)).unwrap();
            task
        }
    }
}

/// A task whose attempt 1 (of `tok(1)`) failed for good with `fail_permanently` at
/// `t0() + 1 s`, with attempts left.
pub(crate) fn failed_permanently(max_attempts: i64) -> Task {
    let mut task = running(max_attempts);
    task.fail_permanently(&fenced(1), "bad payload", t0() + secs(1)).unwrap();
    task
}

/// A task whose attempt 1 (of `tok(1)`) was released at `t0() + 5 s`.
pub(crate) fn released(max_attempts: i64) -> Task {
    let mut task = running(max_attempts);
    task.release(&fenced(1), t0() + secs(5)).unwrap();
    task
}

/// Asserts that `call` on `task` is refused with `expected` and leaves `task` as it was.
pub(crate) fn assert_unchanged_by<T: fmt::Debug>(
    task: &mut Task,
    what: &str,
    call: impl FnOnce(&mut Task) -> Result<T, DomainError>,
    expected: &DomainError,
) {
    let before = task.clone();

    let outcome = call(task);

    match outcome {
        Err(e) => assert_eq!(&e, expected, "{what}"),
        Ok(v) => panic!("{what}: accepted ({v:?}), expected {expected:?}"),
    }
    assert_eq!(task, &before, "a refused {what} changes nothing");
}
