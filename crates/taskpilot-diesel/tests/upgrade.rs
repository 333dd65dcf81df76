//! An existing database migrates forward with every task and its history intact.
//!
//! The test builds a database as TaskPilot 0.1 left it: an empty database with only 0.1's
//! three migrations applied, filled by plain SQL written for 0.1's columns with tasks in every
//! status and retry state and their history, as 0.1 wrote them. It then applies every later
//! migration (whatever `migrations/` holds when the test runs) through `run_migrations`, and
//! checks that:
//!
//! - every task reads back through the repository as the record the 0.1 row means;
//! - every task's history, and the counts of refused calls, read back as inserted;
//! - the upgraded schema (columns, indexes, constraints, triggers, functions, storage options)
//!   is the one a freshly migrated database has, so an upgrade path that forgets something
//!   (or leaves an index invalid) fails here;
//! - reverting every later migration succeeds and gives back 0.1's rows, byte for byte, and
//!   0.1's schema. The down migrations after 0.1 are meant to keep data; one that cannot must
//!   say so in its down.sql, and this check must then name what it loses.
//!
//! The 0.1 rows are SQL text, not written through today's code, so that they stay what 0.1
//! wrote while the code moves on. Never edit them to fit a new migration: a migration must fit
//! them.

#![expect(clippy::unwrap_used, reason = "tests")]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::MigrationHarness as _;
use serde_json::json;
use taskpilot_app::{Actor, Rejection, RejectionCount, StaleCall, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::{migrations, TestDatabase};
use taskpilot_diesel::{run_migrations, PgPool, PgTaskRepository};
use taskpilot_domain::{
    AttemptEnd, LeaseToken, MaxAttempts, MaxCrashes, QueueName, RetryState, TaskId, TaskName,
    TaskRecord, TaskStatus, WorkerId,
};
use uuid::Uuid;

/// The migrations of TaskPilot 0.1, oldest first.
const RELEASE_0_1: [&str; 3] = [
    "2026-11-26-093000_create_tasks",
    "2026-11-26-100000_add_leases_queues_events",
    "2026-11-26-110000_allow_non_retryable",
];

/// 0.1's rows. Ids are `00000000-0000-4000-8000-0000000000NN` for task NN and tokens
/// `aaaaaaaa-0000-4000-8000-0000000000NA` for attempt A of task N; `pg_temp.t(s)` is `s`
/// seconds after an instant with microseconds, as PostgreSQL keeps them.
const ROWS_0_1: &str = r#"
CREATE FUNCTION pg_temp.t(s int) RETURNS timestamptz LANGUAGE sql IMMUTABLE
    AS $$ SELECT timestamptz '2026-11-20 09:00:00.123456+00' + s * interval '1 second' $$;

INSERT INTO tasks (id, queue, name, payload, priority, status, retry_state, attempt,
                   lease_token, lease_expires_at, ended_attempt, ended_attempt_token,
                   ended_attempt_end, attempt_count, max_attempts, next_run_at, last_error,
                   worker_id, processing_started_at, result, completed_at, created_at,
                   updated_at, version)
VALUES
-- 1: pending, never started.
('00000000-0000-4000-8000-000000000001', 'default', 'send-email', '{"to": "ada@example.com"}',
 0, 'PENDING', 'NONE', 0, NULL, NULL, NULL, NULL, NULL, 0, 3, NULL, NULL, NULL, NULL, NULL,
 NULL, pg_temp.t(0), pg_temp.t(0), 1),
-- 2: delayed, in another queue, with a payload that is more than a flat object.
('00000000-0000-4000-8000-000000000002', 'reports', 'build-report',
 '{"month": "2026-10", "to": ["zoë@example.com"], "scale": 1.5, "draft": null}',
 5, 'PENDING', 'NONE', 0, NULL, NULL, NULL, NULL, NULL, 0, 5, pg_temp.t(86400), NULL, NULL,
 NULL, NULL, NULL, pg_temp.t(1), pg_temp.t(1), 1),
-- 3: running its first attempt, with a lease.
('00000000-0000-4000-8000-000000000003', 'default', 'resize-image', '{"id": 7}', -2,
 'RUNNING', 'NONE', 1, 'aaaaaaaa-0000-4000-8000-000000000031', pg_temp.t(310), NULL, NULL,
 NULL, 0, 3, NULL, NULL, 'worker-a', pg_temp.t(10), NULL, NULL, pg_temp.t(2), pg_temp.t(10),
 2),
-- 4: succeeded with a result; a late failure report with its token was refused.
('00000000-0000-4000-8000-000000000004', 'default', 'send-email', '{"to": "bob@example.com"}',
 0, 'SUCCEEDED', 'NONE', 1, NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000041',
 'SUCCEEDED', 0, 3, NULL, NULL, NULL, NULL, '{"sent": true, "id": "m-1"}', pg_temp.t(20),
 pg_temp.t(3), pg_temp.t(20), 3),
-- 5: failed, every attempt used: the first reaped, the second failed by its worker; then
-- the first attempt's late success was refused.
('00000000-0000-4000-8000-000000000005', 'default', 'send-email', '{"to": "eve@example.com"}',
 0, 'FAILED', 'EXHAUSTED', 2, NULL, NULL, 2, 'aaaaaaaa-0000-4000-8000-000000000052', 'FAILED',
 2, 2, NULL, 'smtp: connection refused', NULL, NULL, NULL, pg_temp.t(350), pg_temp.t(4),
 pg_temp.t(350), 5),
-- 6: failed for good after one of three attempts (a non-retryable failure).
('00000000-0000-4000-8000-000000000006', 'default', 'charge-card', '{"amount": 1200}', 10,
 'FAILED', 'NON_RETRYABLE', 1, NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000061',
 'FAILED_PERMANENTLY', 1, 3, NULL, 'card declined', NULL, NULL, NULL, pg_temp.t(45),
 pg_temp.t(5), pg_temp.t(45), 3),
-- 7: cancelled while running; the worker's failure report afterwards was refused.
('00000000-0000-4000-8000-000000000007', 'default', 'resize-image', '{"id": 8}', 0,
 'CANCELLED', 'NONE', 1, NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000071', 'CANCELLED',
 0, 3, NULL, NULL, NULL, NULL, NULL, pg_temp.t(55), pg_temp.t(6), pg_temp.t(55), 3),
-- 8: cancelled before it ever ran.
('00000000-0000-4000-8000-000000000008', 'default', 'resize-image', '{"id": 9}', 0,
 'CANCELLED', 'NONE', 0, NULL, NULL, NULL, NULL, NULL, 0, 3, NULL, NULL, NULL, NULL, NULL,
 pg_temp.t(8), pg_temp.t(7), pg_temp.t(8), 2),
-- 9: failed its only attempt, then rerun: pending again, its failures forgotten.
('00000000-0000-4000-8000-000000000009', 'default', 'sync-crm', '{}', 0, 'PENDING', 'NONE', 1,
 NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000091', 'FAILED', 0, 1, NULL, NULL, NULL, NULL,
 NULL, NULL, pg_temp.t(8), pg_temp.t(3600), 4),
-- 10: released by a stopping worker; a stale release was refused.
('00000000-0000-4000-8000-000000000010', 'default', 'sync-crm', '{"full": true}', 0, 'PENDING',
 'NONE', 1, NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000101', 'RELEASED', 0, 3, NULL,
 NULL, NULL, NULL, NULL, NULL, pg_temp.t(9), pg_temp.t(75), 3),
-- 11: failed once, retry scheduled.
('00000000-0000-4000-8000-000000000011', 'default', 'call-webhook', '{"url": "https://x"}', 0,
 'PENDING', 'RETRY_SCHEDULED', 1, NULL, NULL, 1, 'aaaaaaaa-0000-4000-8000-000000000111',
 'FAILED', 1, 3, pg_temp.t(90), '503 from upstream', NULL, NULL, NULL, NULL, pg_temp.t(10),
 pg_temp.t(85), 3),
-- 12: running its retry; a heartbeat with an unknown token was refused.
('00000000-0000-4000-8000-000000000012', 'default', 'call-webhook', '{"url": "https://y"}', 0,
 'RUNNING', 'RETRY_SCHEDULED', 2, 'aaaaaaaa-0000-4000-8000-000000000122', pg_temp.t(400), 1,
 'aaaaaaaa-0000-4000-8000-000000000121', 'FAILED', 1, 3, NULL, '503 from upstream',
 'worker-b', pg_temp.t(100), NULL, NULL, pg_temp.t(11), pg_temp.t(100), 4);

INSERT INTO task_events (task_id, attempt, from_status, to_status, worker_id, error, actor,
                         rejected_code, rejected_call, at)
VALUES
('00000000-0000-4000-8000-000000000001', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(0)),
('00000000-0000-4000-8000-000000000002', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(1)),
('00000000-0000-4000-8000-000000000003', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(2)),
('00000000-0000-4000-8000-000000000004', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(3)),
('00000000-0000-4000-8000-000000000005', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(4)),
('00000000-0000-4000-8000-000000000006', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(5)),
('00000000-0000-4000-8000-000000000007', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(6)),
('00000000-0000-4000-8000-000000000008', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(7)),
('00000000-0000-4000-8000-000000000009', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(8)),
('00000000-0000-4000-8000-000000000010', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(9)),
('00000000-0000-4000-8000-000000000011', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(10)),
('00000000-0000-4000-8000-000000000012', 0, NULL, 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(11)),
('00000000-0000-4000-8000-000000000003', 1, 'PENDING', 'RUNNING', 'worker-a', NULL, 'WORKER', NULL, NULL, pg_temp.t(10)),
('00000000-0000-4000-8000-000000000008', 0, 'PENDING', 'CANCELLED', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(8)),
('00000000-0000-4000-8000-000000000004', 1, 'PENDING', 'RUNNING', 'worker-b', NULL, 'WORKER', NULL, NULL, pg_temp.t(12)),
('00000000-0000-4000-8000-000000000004', 1, 'RUNNING', 'SUCCEEDED', 'worker-b', NULL, 'WORKER', NULL, NULL, pg_temp.t(20)),
('00000000-0000-4000-8000-000000000004', 1, 'SUCCEEDED', 'SUCCEEDED', 'worker-b',
 'attempt 1 of task 00000000-0000-4000-8000-000000000004 already ended as SUCCEEDED', 'WORKER',
 'OUTCOME_CONFLICT', 'FAIL', pg_temp.t(21)),
('00000000-0000-4000-8000-000000000005', 1, 'PENDING', 'RUNNING', 'worker-a', NULL, 'WORKER', NULL, NULL, pg_temp.t(30)),
('00000000-0000-4000-8000-000000000006', 1, 'PENDING', 'RUNNING', 'worker-c', NULL, 'WORKER', NULL, NULL, pg_temp.t(40)),
('00000000-0000-4000-8000-000000000006', 1, 'RUNNING', 'FAILED', 'worker-c', 'card declined', 'WORKER', NULL, NULL, pg_temp.t(45)),
('00000000-0000-4000-8000-000000000007', 1, 'PENDING', 'RUNNING', 'worker-a', NULL, 'WORKER', NULL, NULL, pg_temp.t(50)),
('00000000-0000-4000-8000-000000000007', 1, 'RUNNING', 'CANCELLED', 'worker-a', NULL, 'CLIENT', NULL, NULL, pg_temp.t(55)),
('00000000-0000-4000-8000-000000000007', 1, 'CANCELLED', 'CANCELLED', 'worker-a',
 'task 00000000-0000-4000-8000-000000000007 was cancelled while attempt 1 ran', 'WORKER',
 'TASK_CANCELLED', 'FAIL', pg_temp.t(56)),
('00000000-0000-4000-8000-000000000009', 1, 'PENDING', 'RUNNING', 'worker-b', NULL, 'WORKER', NULL, NULL, pg_temp.t(60)),
('00000000-0000-4000-8000-000000000009', 1, 'RUNNING', 'FAILED', 'worker-b', 'timeout', 'WORKER', NULL, NULL, pg_temp.t(61)),
('00000000-0000-4000-8000-000000000010', 1, 'PENDING', 'RUNNING', 'worker-c', NULL, 'WORKER', NULL, NULL, pg_temp.t(70)),
('00000000-0000-4000-8000-000000000010', 1, 'RUNNING', 'PENDING', 'worker-c', NULL, 'WORKER', NULL, NULL, pg_temp.t(75)),
('00000000-0000-4000-8000-000000000010', 1, 'PENDING', 'PENDING', 'worker-z',
 'task 00000000-0000-4000-8000-000000000010 is on attempt 1; the token is not that attempt''s',
 'WORKER', 'ATTEMPT_SUPERSEDED', 'RELEASE', pg_temp.t(76)),
('00000000-0000-4000-8000-000000000011', 1, 'PENDING', 'RUNNING', 'worker-a', NULL, 'WORKER', NULL, NULL, pg_temp.t(80)),
('00000000-0000-4000-8000-000000000011', 1, 'RUNNING', 'PENDING', 'worker-a', '503 from upstream', 'WORKER', NULL, NULL, pg_temp.t(85)),
('00000000-0000-4000-8000-000000000012', 1, 'PENDING', 'RUNNING', 'worker-a', NULL, 'WORKER', NULL, NULL, pg_temp.t(86)),
('00000000-0000-4000-8000-000000000012', 1, 'RUNNING', 'PENDING', 'worker-a', '503 from upstream', 'WORKER', NULL, NULL, pg_temp.t(90)),
('00000000-0000-4000-8000-000000000012', 2, 'PENDING', 'RUNNING', 'worker-b', NULL, 'WORKER', NULL, NULL, pg_temp.t(100)),
('00000000-0000-4000-8000-000000000012', 2, 'RUNNING', 'RUNNING', 'worker-a',
 'task 00000000-0000-4000-8000-000000000012 is on attempt 2; the token is not that attempt''s',
 'WORKER', 'ATTEMPT_SUPERSEDED', 'HEARTBEAT', pg_temp.t(101)),
('00000000-0000-4000-8000-000000000005', 1, 'RUNNING', 'PENDING', 'worker-a',
 'lease expired (worker worker-a)', 'REAPER', NULL, NULL, pg_temp.t(330)),
('00000000-0000-4000-8000-000000000005', 2, 'PENDING', 'RUNNING', 'worker-b', NULL, 'WORKER', NULL, NULL, pg_temp.t(340)),
('00000000-0000-4000-8000-000000000005', 2, 'RUNNING', 'FAILED', 'worker-b', 'smtp: connection refused', 'WORKER', NULL, NULL, pg_temp.t(350)),
('00000000-0000-4000-8000-000000000005', 2, 'FAILED', 'FAILED', 'worker-a',
 'task 00000000-0000-4000-8000-000000000005 is on attempt 2; the token is not that attempt''s',
 'WORKER', 'ATTEMPT_SUPERSEDED', 'SUCCEED', pg_temp.t(360)),
('00000000-0000-4000-8000-000000000009', 1, 'FAILED', 'PENDING', NULL, NULL, 'CLIENT', NULL, NULL, pg_temp.t(3600));
"#;

/// The instant `pg_temp.t(s)` means.
fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap()
        + TimeDelta::microseconds(123_456)
        + TimeDelta::seconds(s)
}

/// Task `n`'s id (`n` as the id's last hex digits).
fn id(n: u128) -> TaskId {
    TaskId::from_uuid(Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n))
}

/// A token, `na` as its last hex digits: attempt `a` of task `n`.
fn tok(na: u128) -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128(0xaaaa_aaaa_0000_4000_8000_0000_0000_0000 | na))
}

fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

/// Task `n` as created at `t(created)`, never started: every other record is this one changed.
fn created(n: u128, name: &str, payload: serde_json::Value, created: i64) -> TaskRecord {
    TaskRecord {
        id: id(n),
        queue: QueueName::default_queue(),
        name: TaskName::parse(name).unwrap(),
        payload,
        priority: 0,
        status: TaskStatus::Pending,
        attempt: 0,
        lease_token: None,
        lease_expires_at: None,
        ended_attempt: None,
        ended_attempt_token: None,
        ended_attempt_end: None,
        retry_state: RetryState::None,
        attempt_count: 0,
        max_attempts: MaxAttempts::new(3).unwrap(),
        crash_count: 0,
        max_crashes: MaxCrashes::DEFAULT,
        next_run_at: None,
        last_error: None,
        worker_id: None,
        processing_started_at: None,
        result: None,
        completed_at: None,
        created_at: t(created),
        updated_at: t(created),
        version: 1,
        created_by: None,
        unique_key: None,
    }
}

/// What each 0.1 row of `ROWS_0_1` means, in id order.
fn expected_tasks() -> Vec<TaskRecord> {
    let ended = |attempt, token, end| (Some(attempt), Some(tok(token)), Some(end));
    let with_ended = |r: TaskRecord, (a, tk, e): (Option<u32>, Option<LeaseToken>, _)| TaskRecord {
        ended_attempt: a,
        ended_attempt_token: tk,
        ended_attempt_end: e,
        ..r
    };
    vec![
        created(0x01, "send-email", json!({"to": "ada@example.com"}), 0),
        TaskRecord {
            queue: QueueName::parse("reports").unwrap(),
            priority: 5,
            max_attempts: MaxAttempts::new(5).unwrap(),
            next_run_at: Some(t(86_400)),
            ..created(
                0x02,
                "build-report",
                json!({"month": "2026-10", "to": ["zoë@example.com"], "scale": 1.5, "draft": null}),
                1,
            )
        },
        TaskRecord {
            priority: -2,
            status: TaskStatus::Running,
            attempt: 1,
            lease_token: Some(tok(0x31)),
            lease_expires_at: Some(t(310)),
            worker_id: Some(worker("worker-a")),
            processing_started_at: Some(t(10)),
            updated_at: t(10),
            version: 2,
            ..created(0x03, "resize-image", json!({"id": 7}), 2)
        },
        with_ended(
            TaskRecord {
                status: TaskStatus::Succeeded,
                attempt: 1,
                result: Some(json!({"sent": true, "id": "m-1"})),
                completed_at: Some(t(20)),
                updated_at: t(20),
                version: 3,
                ..created(0x04, "send-email", json!({"to": "bob@example.com"}), 3)
            },
            ended(1, 0x41, AttemptEnd::Succeeded),
        ),
        with_ended(
            TaskRecord {
                status: TaskStatus::Failed,
                retry_state: RetryState::Exhausted,
                attempt: 2,
                attempt_count: 2,
                max_attempts: MaxAttempts::new(2).unwrap(),
                last_error: Some("smtp: connection refused".to_owned()),
                completed_at: Some(t(350)),
                updated_at: t(350),
                version: 5,
                ..created(0x05, "send-email", json!({"to": "eve@example.com"}), 4)
            },
            ended(2, 0x52, AttemptEnd::Failed),
        ),
        with_ended(
            TaskRecord {
                priority: 10,
                status: TaskStatus::Failed,
                retry_state: RetryState::NonRetryable,
                attempt: 1,
                attempt_count: 1,
                last_error: Some("card declined".to_owned()),
                completed_at: Some(t(45)),
                updated_at: t(45),
                version: 3,
                ..created(0x06, "charge-card", json!({"amount": 1200}), 5)
            },
            ended(1, 0x61, AttemptEnd::FailedPermanently),
        ),
        with_ended(
            TaskRecord {
                status: TaskStatus::Cancelled,
                attempt: 1,
                completed_at: Some(t(55)),
                updated_at: t(55),
                version: 3,
                ..created(0x07, "resize-image", json!({"id": 8}), 6)
            },
            ended(1, 0x71, AttemptEnd::Cancelled),
        ),
        TaskRecord {
            status: TaskStatus::Cancelled,
            completed_at: Some(t(8)),
            updated_at: t(8),
            version: 2,
            ..created(0x08, "resize-image", json!({"id": 9}), 7)
        },
        with_ended(
            TaskRecord {
                attempt: 1,
                max_attempts: MaxAttempts::new(1).unwrap(),
                updated_at: t(3600),
                version: 4,
                ..created(0x09, "sync-crm", json!({}), 8)
            },
            ended(1, 0x91, AttemptEnd::Failed),
        ),
        with_ended(
            TaskRecord {
                attempt: 1,
                updated_at: t(75),
                version: 3,
                ..created(0x10, "sync-crm", json!({"full": true}), 9)
            },
            ended(1, 0x101, AttemptEnd::Released),
        ),
        with_ended(
            TaskRecord {
                retry_state: RetryState::RetryScheduled,
                attempt: 1,
                attempt_count: 1,
                next_run_at: Some(t(90)),
                last_error: Some("503 from upstream".to_owned()),
                updated_at: t(85),
                version: 3,
                ..created(0x11, "call-webhook", json!({"url": "https://x"}), 10)
            },
            ended(1, 0x111, AttemptEnd::Failed),
        ),
        with_ended(
            TaskRecord {
                status: TaskStatus::Running,
                retry_state: RetryState::RetryScheduled,
                attempt: 2,
                lease_token: Some(tok(0x122)),
                lease_expires_at: Some(t(400)),
                attempt_count: 1,
                last_error: Some("503 from upstream".to_owned()),
                worker_id: Some(worker("worker-b")),
                processing_started_at: Some(t(100)),
                updated_at: t(100),
                version: 4,
                ..created(0x12, "call-webhook", json!({"url": "https://y"}), 11)
            },
            ended(1, 0x121, AttemptEnd::Failed),
        ),
    ]
}

/// One history entry: `(from, to)` by `actor` at `t(at)`, no worker, error or refusal.
fn event(
    task: u128,
    attempt: u32,
    (from, to): (Option<TaskStatus>, TaskStatus),
    actor: Actor,
    at: i64,
) -> TaskEvent {
    TaskEvent {
        token: None,
        task_id: id(task),
        attempt,
        from,
        to,
        worker_id: None,
        error: None,
        actor,
        rejected: None,
        at: t(at),
    }
}

fn by(name: &str, e: TaskEvent) -> TaskEvent {
    TaskEvent { worker_id: Some(worker(name)), ..e }
}

fn with_error(error: &str, e: TaskEvent) -> TaskEvent {
    TaskEvent { error: Some(error.to_owned()), ..e }
}

/// A call of `name` refused with `code` and message `error`, the task staying in `status`.
fn refused(
    task: u128,
    attempt: u32,
    status: TaskStatus,
    (name, code, call): (&str, &str, StaleCall),
    error: &str,
    at: i64,
) -> TaskEvent {
    TaskEvent {
        rejected: Some(Rejection { code: code.to_owned(), call }),
        ..with_error(
            error,
            by(name, event(task, attempt, (Some(status), status), Actor::Worker, at)),
        )
    }
}

/// What `ROWS_0_1`'s history rows mean, each task's oldest first.
fn expected_events(task: u128) -> Vec<TaskEvent> {
    use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
    let creation = |at| event(task, 0, (None, Pending), Actor::Client, at);
    let start = |attempt, name, at| {
        by(name, event(task, attempt, (Some(Pending), Running), Actor::Worker, at))
    };
    let superseded = |current| {
        format!("task {} is on attempt {current}; the token is not that attempt's", id(task))
    };
    match task {
        0x01 => vec![creation(0)],
        0x02 => vec![creation(1)],
        0x03 => vec![creation(2), start(1, "worker-a", 10)],
        0x04 => vec![
            creation(3),
            start(1, "worker-b", 12),
            by("worker-b", event(task, 1, (Some(Running), Succeeded), Actor::Worker, 20)),
            refused(
                task,
                1,
                Succeeded,
                ("worker-b", "OUTCOME_CONFLICT", StaleCall::Fail),
                &format!("attempt 1 of task {} already ended as SUCCEEDED", id(task)),
                21,
            ),
        ],
        0x05 => vec![
            creation(4),
            start(1, "worker-a", 30),
            with_error(
                "lease expired (worker worker-a)",
                by("worker-a", event(task, 1, (Some(Running), Pending), Actor::Reaper, 330)),
            ),
            start(2, "worker-b", 340),
            with_error(
                "smtp: connection refused",
                by("worker-b", event(task, 2, (Some(Running), Failed), Actor::Worker, 350)),
            ),
            refused(
                task,
                2,
                Failed,
                ("worker-a", "ATTEMPT_SUPERSEDED", StaleCall::Succeed),
                &superseded(2),
                360,
            ),
        ],
        0x06 => vec![
            creation(5),
            start(1, "worker-c", 40),
            with_error(
                "card declined",
                by("worker-c", event(task, 1, (Some(Running), Failed), Actor::Worker, 45)),
            ),
        ],
        0x07 => vec![
            creation(6),
            start(1, "worker-a", 50),
            by("worker-a", event(task, 1, (Some(Running), Cancelled), Actor::Client, 55)),
            refused(
                task,
                1,
                Cancelled,
                ("worker-a", "TASK_CANCELLED", StaleCall::Fail),
                &format!("task {} was cancelled while attempt 1 ran", id(task)),
                56,
            ),
        ],
        0x08 => vec![creation(7), event(task, 0, (Some(Pending), Cancelled), Actor::Client, 8)],
        0x09 => vec![
            creation(8),
            start(1, "worker-b", 60),
            with_error(
                "timeout",
                by("worker-b", event(task, 1, (Some(Running), Failed), Actor::Worker, 61)),
            ),
            event(task, 1, (Some(Failed), Pending), Actor::Client, 3600),
        ],
        0x10 => vec![
            creation(9),
            start(1, "worker-c", 70),
            by("worker-c", event(task, 1, (Some(Running), Pending), Actor::Worker, 75)),
            refused(
                task,
                1,
                Pending,
                ("worker-z", "ATTEMPT_SUPERSEDED", StaleCall::Release),
                &superseded(1),
                76,
            ),
        ],
        0x11 => vec![
            creation(10),
            start(1, "worker-a", 80),
            with_error(
                "503 from upstream",
                by("worker-a", event(task, 1, (Some(Running), Pending), Actor::Worker, 85)),
            ),
        ],
        0x12 => vec![
            creation(11),
            start(1, "worker-a", 86),
            with_error(
                "503 from upstream",
                by("worker-a", event(task, 1, (Some(Running), Pending), Actor::Worker, 90)),
            ),
            start(2, "worker-b", 100),
            refused(
                task,
                2,
                Running,
                ("worker-a", "ATTEMPT_SUPERSEDED", StaleCall::Heartbeat),
                &superseded(2),
                101,
            ),
        ],
        _ => unreachable!("no task {task:#x} in the 0.1 rows"),
    }
}

const TASK_NUMBERS: [u128; 12] =
    [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x10, 0x11, 0x12];

fn expected_rejection_counts() -> Vec<RejectionCount> {
    let count = |code: &str, call| RejectionCount { code: code.to_owned(), call, count: 1 };
    vec![
        count("ATTEMPT_SUPERSEDED", StaleCall::Heartbeat),
        count("ATTEMPT_SUPERSEDED", StaleCall::Release),
        count("ATTEMPT_SUPERSEDED", StaleCall::Succeed),
        count("OUTCOME_CONFLICT", StaleCall::Fail),
        count("TASK_CANCELLED", StaleCall::Fail),
    ]
}

fn connection(db: &TestDatabase) -> PgConnection {
    PgConnection::establish(db.url()).unwrap()
}

/// Every embedded migration, oldest first.
fn all_migrations() -> Vec<Box<dyn Migration<Pg>>> {
    let mut all = MigrationSource::<Pg>::migrations(&migrations()).unwrap();
    all.sort_by_key(|m| m.name().to_string());
    all
}

/// Applies 0.1's migrations, and only those, to `conn`'s empty database.
fn migrate_to_0_1(conn: &mut PgConnection) {
    // Also creates diesel's table of applied migrations, which `run_migration` expects.
    assert_eq!(conn.applied_migrations().unwrap(), vec![], "the database starts empty");
    let all = all_migrations();
    let names: Vec<String> = all.iter().map(|m| m.name().to_string()).collect();
    assert_eq!(names[..RELEASE_0_1.len()], RELEASE_0_1, "0.1's migrations come first");
    for migration in &all[..RELEASE_0_1.len()] {
        conn.run_migration(migration.as_ref()).unwrap();
    }
}

/// Every later migration's down.sql, newest first, back to 0.1.
fn revert_to_0_1(conn: &mut PgConnection) {
    while conn.applied_migrations().unwrap().len() > RELEASE_0_1.len() {
        conn.revert_last_migration(migrations()).unwrap();
    }
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

fn lines(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql).load::<Line>(conn).unwrap().into_iter().map(|l| l.line).collect()
}

/// The schema of the public tables, one sorted line per column, index, constraint, trigger,
/// function and relation (with its storage options, where the autovacuum settings live).
fn schema(conn: &mut PgConnection) -> Vec<String> {
    lines(
        conn,
        "SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position
                || ' ' || data_type || ' nullable=' || is_nullable
                || ' default=' || coalesce(column_default, '') AS line
           FROM information_schema.columns WHERE table_schema = 'public'
         UNION ALL
         SELECT 'index ' || tablename || ' ' || indexname || ': ' || indexdef
           FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL
         SELECT 'index state ' || c.relname || ' valid=' || i.indisvalid::text || ' ready='
                || i.indisready::text
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE c.relnamespace = 'public'::regnamespace
         UNION ALL
         SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ': '
                || pg_get_constraintdef(oid) || ' validated=' || convalidated::text
           FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL
         SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname || ': '
                || pg_get_triggerdef(oid) || ' enabled=' || tgenabled::text
           FROM pg_trigger WHERE NOT tgisinternal
         UNION ALL
         SELECT 'function ' || proname || ': ' || pg_get_functiondef(oid)
           FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prokind IN ('f', 'p')
         UNION ALL
         SELECT 'relation ' || relname || ' kind=' || relkind::text || ' options='
                || coalesce(array_to_string(reloptions, ','), '')
           FROM pg_class WHERE relnamespace = 'public'::regnamespace
         ORDER BY 1",
    )
}

/// Every row of 0.1's two tables, as JSON text in insertion order; event ids left out, as a
/// down migration that rebuilds the history may renumber it.
fn rows_0_1(conn: &mut PgConnection) -> Vec<String> {
    lines(
        conn,
        "SELECT line FROM (
             SELECT 1 AS t, id::text AS k, to_jsonb(tasks)::text AS line FROM tasks
             UNION ALL
             SELECT 2, lpad(id::text, 20, '0'), (to_jsonb(task_events) - 'id')::text
               FROM task_events
         ) AS rows ORDER BY t, k",
    )
}

fn repo(pool: &PgPool) -> PgTaskRepository {
    PgTaskRepository::new(pool.clone())
}

#[test]
fn a_0_1_database_migrates_forward_with_every_task_and_its_history_intact_and_back() {
    let old = TestDatabase::empty();
    let mut conn = connection(&old);
    migrate_to_0_1(&mut conn);
    conn.batch_execute(ROWS_0_1).unwrap();
    let rows_before = rows_0_1(&mut conn);
    let fresh_0_1 = TestDatabase::empty();
    migrate_to_0_1(&mut connection(&fresh_0_1));
    let fresh = TestDatabase::new();

    let report = run_migrations(&old.pool()).unwrap();
    let repo = repo(&old.pool());
    let tasks: Vec<TaskRecord> =
        TASK_NUMBERS.iter().map(|&n| repo.get(id(n)).unwrap().to_record()).collect();
    let events: Vec<Vec<TaskEvent>> =
        TASK_NUMBERS.iter().map(|&n| repo.events(id(n)).unwrap()).collect();
    let mut counts = repo.rejection_counts().unwrap();
    let upgraded_schema = schema(&mut conn);
    let fresh_schema = schema(&mut connection(&fresh));
    revert_to_0_1(&mut conn);
    let rows_after_revert = rows_0_1(&mut conn);
    let reverted_schema = schema(&mut conn);
    let fresh_0_1_schema = schema(&mut connection(&fresh_0_1));

    let later: Vec<String> =
        all_migrations().iter().skip(RELEASE_0_1.len()).map(|m| m.name().to_string()).collect();
    assert_eq!(report.applied, later);
    assert_eq!(report.total, RELEASE_0_1.len() + later.len());
    assert_eq!(tasks, expected_tasks());
    for (n, history) in TASK_NUMBERS.iter().zip(&events) {
        assert_eq!(history, &expected_events(*n), "history of task {n:#x}");
    }
    counts.sort_by(|a, b| (&a.code, a.call.as_str()).cmp(&(&b.code, b.call.as_str())));
    assert_eq!(counts, expected_rejection_counts());
    // Guards against a schema query that reads nothing, which would compare as equal.
    for part in
        ["column tasks.id ", "constraint tasks tasks_pkey", "index tasks ", "trigger tasks "]
    {
        assert!(
            fresh_schema.iter().any(|l| l.starts_with(part)),
            "no {part:?} in {fresh_schema:#?}"
        );
    }
    assert_eq!(upgraded_schema, fresh_schema, "an upgraded schema is a freshly migrated one");
    assert_eq!(rows_after_revert, rows_before, "reverting to 0.1 keeps 0.1's rows");
    assert_eq!(reverted_schema, fresh_0_1_schema, "reverting to 0.1 gives 0.1's schema back");
}
