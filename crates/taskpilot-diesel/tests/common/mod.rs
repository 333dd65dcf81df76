//! Helpers shared by the PostgreSQL test binaries.

#![allow(dead_code, reason = "each test binary uses its own subset of these helpers")]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use serde_json::json;
use taskpilot_app::{Actor, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgPool, PgTaskRepository};
use taskpilot_domain::{
    DomainError, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName, Task, TaskId,
    TaskName, WorkerId,
};
use uuid::Uuid;

/// A creation instant with microseconds, the precision PostgreSQL keeps.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(123_456)
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).unwrap()
}

pub fn queue(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

/// A fresh random token, as the service mints them.
pub fn token() -> LeaseToken {
    LeaseToken::from_uuid(Uuid::new_v4())
}

pub fn lease(seconds: i64) -> LeaseDuration {
    LeaseDuration::from_secs(seconds).unwrap()
}

pub fn spec(name: &str, max_attempts: i64) -> NewTask {
    NewTask {
        queue: QueueName::default_queue(),
        name: TaskName::parse(name).unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 0,
        max_attempts: MaxAttempts::new(max_attempts).unwrap(),
        run_at: None,
        unique_key: None,
    }
}

pub fn task_at(name: &str, created_at: DateTime<Utc>) -> Task {
    Task::new(TaskId::from_uuid(Uuid::now_v7()), spec(name, 3), created_at)
}

pub fn repo(db: &TestDatabase) -> PgTaskRepository {
    PgTaskRepository::new(db.pool())
}

/// Stores a new task with its creation event, as the create use case does.
pub fn store(repo: &PgTaskRepository, task: &Task) {
    repo.insert(task, &TaskEvent::transition(None, task, Actor::Client)).unwrap();
}

/// Applies `change` and stores the result with compare-and-swap and its event, as a use case
/// does.
pub fn transition<T>(
    repo: &PgTaskRepository,
    task: &mut Task,
    change: impl FnOnce(&mut Task) -> Result<T, DomainError>,
) {
    let before = task.clone();
    change(task).unwrap();
    let event = TaskEvent::transition(Some(&before), task, Actor::Worker);
    repo.update(task, before.version(), Some(&event)).unwrap();
}

pub fn execute(pool: &PgPool, sql: &str) {
    pool.get().unwrap().batch_execute(sql).unwrap();
}

pub fn count(pool: &PgPool, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<Count>(&mut pool.get().unwrap()).unwrap().n
}
