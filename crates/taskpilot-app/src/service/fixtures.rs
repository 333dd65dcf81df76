//! Tasks in every state the use cases meet, a service over a mock, and the events they
//! record: shared by the tests of every use case.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use mockall::predicate::eq;
use serde_json::json;
use taskpilot_domain::{
    FixedBackoff, FixedClock, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName, Reporter,
    StaleLease, Task, TaskId, TaskName, TaskStatus, WorkerId,
};
use uuid::Uuid;

use super::{CreateTask, OnConflict, ServiceDefaults, TaskService};
use crate::{Actor, MockTaskRepository, Rejection, RepoError, StaleCall, TaskEvent};

pub(super) const DEFAULT_MAX_ATTEMPTS: i64 = 25;
pub(super) const DEFAULT_LEASE_SECS: i64 = 300;
pub(super) const BACKOFF: TimeDelta = TimeDelta::seconds(30);

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// What the service's clock says: a minute after the stored tasks were created.
pub(super) fn now() -> DateTime<Utc> {
    t0() + TimeDelta::seconds(60)
}

pub(super) fn id() -> TaskId {
    task_id(1)
}

pub(super) fn task_id(n: u128) -> TaskId {
    TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n))
}

pub(super) fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

pub(super) fn queue(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

pub(super) fn lease(secs: i64) -> LeaseDuration {
    LeaseDuration::from_secs(secs).unwrap()
}

/// The token of the live attempt of [`running`] and of the attempt [`succeeded`] ended.
pub(super) fn live_token() -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128(0xa1))
}

/// The token of an attempt that ended before the live one.
pub(super) fn old_token() -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128(0x0d))
}

pub(super) fn defaults() -> ServiceDefaults {
    ServiceDefaults {
        max_attempts: MaxAttempts::new(DEFAULT_MAX_ATTEMPTS).unwrap(),
        lease: lease(DEFAULT_LEASE_SECS),
    }
}

pub(super) fn service(repo: MockTaskRepository) -> TaskService {
    TaskService::new(
        Arc::new(repo),
        Arc::new(FixedClock::new(now())),
        Arc::new(FixedBackoff(BACKOFF)),
        defaults(),
    )
}

pub(super) fn new_task(id: TaskId, max_attempts: i64, created_at: DateTime<Utc>) -> Task {
    let spec = NewTask {
        queue: QueueName::default_queue(),
        name: TaskName::parse("send-email").unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 0,
        max_attempts: MaxAttempts::new(max_attempts).unwrap(),
        run_at: None,
        unique_key: None,
    };
    Task::new(id, spec, created_at)
}

pub(super) fn pending() -> Task {
    new_task(id(), 3, t0())
}

/// Attempt 1, held by `w1` with [`live_token`] until well after [`now`].
pub(super) fn running() -> Task {
    let mut task = pending();
    task.start(&worker("w1"), live_token(), defaults().lease, t0()).unwrap();
    task
}

/// Running its last attempt (attempt 2): the next failure is final.
pub(super) fn running_last_attempt() -> Task {
    let mut task = new_task(id(), 2, t0());
    task.start(&worker("w1"), old_token(), defaults().lease, t0()).unwrap();
    task.fail_and_schedule_retry(
        &Reporter::anyone(),
        "first",
        t0(),
        &FixedBackoff(TimeDelta::zero()),
    )
    .unwrap();
    task.start(&worker("w1"), live_token(), defaults().lease, t0()).unwrap();
    task
}

pub(super) fn failed() -> Task {
    let mut task = running_last_attempt();
    task.fail_and_schedule_retry(&Reporter::anyone(), "second", t0(), &FixedBackoff(BACKOFF))
        .unwrap();
    task
}

/// Succeeded by the attempt of [`live_token`].
pub(super) fn succeeded() -> Task {
    let mut task = running();
    task.succeed(&Reporter::lease(Some(worker("w1")), live_token()), None, t0()).unwrap();
    task
}

pub(super) fn cancelled() -> Task {
    let mut task = pending();
    task.cancel(t0()).unwrap();
    task
}

/// Attempt 1 of `id`, started by `w1` at [`t0`] with [`old_token`] and a 30 s lease: expired
/// by [`now`].
pub(super) fn expired(id: TaskId, max_attempts: i64) -> Task {
    let mut task = new_task(id, max_attempts, t0());
    task.start(&worker("w1"), old_token(), lease(30), t0()).unwrap();
    task
}

/// Attempt 1 (of [`old_token`]) was reaped; the retry is pending.
pub(super) fn reaped() -> Task {
    let mut task = expired(id(), 3);
    task.expire_lease(t0() + TimeDelta::seconds(30), &FixedBackoff(TimeDelta::zero())).unwrap();
    task
}

/// Attempt 1 (of [`old_token`]) was reaped; attempt 2 runs with [`live_token`].
pub(super) fn reaped_and_restarted() -> Task {
    let mut task = reaped();
    task.start(&worker("w2"), live_token(), defaults().lease, t0() + TimeDelta::seconds(30))
        .unwrap();
    task
}

/// Attempt 1 (of [`live_token`]) reported failure; the retry is pending.
pub(super) fn failed_once() -> Task {
    let mut task = running();
    task.fail_and_schedule_retry(
        &Reporter::lease(Some(worker("w1")), live_token()),
        "boom",
        t0(),
        &FixedBackoff(BACKOFF),
    )
    .unwrap();
    task
}

pub(super) fn expect_get(repo: &mut MockTaskRepository, task: &Task) {
    let stored = task.clone();
    repo.expect_get().with(eq(task.id())).times(1).returning(move |_| Ok(stored.clone()));
}

/// Lets every live success miss its guard (none is written), so that a test sees the full
/// path: the one statement a success with a token tries first finds nothing to change.
pub(super) fn expect_no_live_match(repo: &mut MockTaskRepository) {
    repo.expect_succeed_live().returning(|_, _| Ok(Vec::new()));
}

pub(super) fn unavailable() -> RepoError {
    RepoError::Unavailable(anyhow::anyhow!("connection refused"))
}

pub(super) fn create_request() -> CreateTask {
    CreateTask {
        queue: None,
        name: TaskName::parse("send-email").unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 5,
        max_attempts: None,
        max_crashes: None,
        run_at: None,
        unique_key: None,
        on_conflict: OnConflict::Return,
    }
}

/// The event a transition of [`id`] from `from` to `to` by worker `w1` records at [`now`];
/// tests adjust the fields that differ.
pub(super) fn transition(attempt: u32, from: TaskStatus, to: TaskStatus) -> TaskEvent {
    TaskEvent {
        token: None,
        task_id: id(),
        attempt,
        from: Some(from),
        to,
        worker_id: Some(worker("w1")),
        error: None,
        actor: Actor::Worker,
        rejected: None,
        at: now(),
    }
}

/// The event a client's creation of `task` records at [`now`].
pub(super) fn creation_event(task: &Task) -> TaskEvent {
    TaskEvent {
        token: None,
        task_id: task.id(),
        attempt: 0,
        from: None,
        to: TaskStatus::Pending,
        worker_id: None,
        error: None,
        actor: Actor::Client,
        rejected: None,
        at: now(),
    }
}

/// The event that records a refused stale `call` by `w1` on `stored`, refused with
/// `refusal`.
pub(super) fn rejection(stored: &Task, call: StaleCall, refusal: &StaleLease) -> TaskEvent {
    TaskEvent {
        token: None,
        task_id: stored.id(),
        attempt: stored.attempt(),
        from: Some(stored.status()),
        to: stored.status(),
        worker_id: Some(worker("w1")),
        error: Some(refusal.to_string()),
        actor: Actor::Worker,
        rejected: Some(Rejection { code: refusal.code().to_owned(), call }),
        at: now(),
    }
}

/// [`running`] after its attempt of [`live_token`] was released.
pub(super) fn released() -> Task {
    let mut task = running();
    task.release(&Reporter::lease(Some(worker("w1")), live_token()), t0()).unwrap();
    task
}

/// A repository whose every method fails as if the database were down.
pub(super) fn storage_down() -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
    repo.expect_insert().returning(|_, _| Err(unavailable()));
    repo.expect_get().returning(|_| Err(unavailable()));
    repo.expect_update().returning(|_, _, _| Err(unavailable()));
    repo.expect_claim().returning(|_| Err(unavailable()));
    repo.expect_expired_leases().returning(|_, _| Err(unavailable()));
    repo.expect_earliest_scheduled_run().returning(|_| Err(unavailable()));
    repo.expect_insert_many().returning(|_, _| Err(unavailable()));
    repo.expect_insert_keyed().returning(|_, _, _| Err(unavailable()));
    repo.expect_delete_expired_keys().returning(|_, _| Err(unavailable()));
    repo.expect_get_many().returning(|_| Err(unavailable()));
    repo.expect_write_many().returning(|_, _| Err(unavailable()));
    repo.expect_succeed_live().returning(|_, _| Err(unavailable()));
    repo.expect_record_rejection().returning(|_| Err(unavailable()));
    repo.expect_events().returning(|_| Err(unavailable()));
    repo.expect_rejection_counts().returning(|| Err(unavailable()));
    repo.expect_list().returning(|_, _, _| Err(unavailable()));
    repo.expect_ping().returning(|| Err(unavailable()));
    repo
}
