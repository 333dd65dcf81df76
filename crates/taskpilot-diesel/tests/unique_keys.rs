//! Unique keys on a real PostgreSQL (a fresh database per test): at most one PENDING or
//! RUNNING task per queue and key, whoever races; the key is free again once its holder
//! finished; a rerun or a batch into a held key is a typed refusal, never a 500.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use serde_json::json;
use taskpilot_app::{
    Actor, AppError, CreateTask, Created, OnConflict, RepoError, ServiceDefaults, TaskEvent,
    TaskRepository, TaskService, TaskWrite,
};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{build_pool, PgTaskRepository, PoolConfig};
use taskpilot_domain::{
    FixedBackoff, FixedClock, MaxAttempts, NewTask, Reporter, Task, TaskId, TaskName, TaskStatus,
    UniqueKey,
};
use uuid::Uuid;

fn keyed(name: &str, queue_name: &str, key: &str) -> Task {
    let spec = NewTask {
        queue: queue(queue_name),
        unique_key: Some(UniqueKey::parse(key).unwrap()),
        ..spec(name, 1)
    };
    Task::new(TaskId::from_uuid(Uuid::now_v7()), spec, t0())
}

fn insert(repo: &PgTaskRepository, task: &Task) -> Result<(), RepoError> {
    repo.insert(task, &TaskEvent::transition(None, task, Actor::Client))
}

fn request(key: &str, on_conflict: OnConflict) -> CreateTask {
    CreateTask {
        queue: None,
        name: TaskName::parse("sync-account").unwrap(),
        payload: json!({"account": 7}),
        priority: 0,
        max_attempts: None,
        max_crashes: None,
        run_at: None,
        unique_key: Some(UniqueKey::parse(key).unwrap()),
        on_conflict,
    }
}

fn service(repo: PgTaskRepository) -> TaskService {
    TaskService::new(
        Arc::new(repo),
        Arc::new(FixedClock::new(t0())),
        Arc::new(FixedBackoff(secs(30))),
        ServiceDefaults { max_attempts: MaxAttempts::new(1).unwrap(), lease: lease(60) },
    )
}

/// Runs `task` to `status`: cancelled while pending, or started and reported on; while it
/// runs, its key is still held.
fn finish(repo: &PgTaskRepository, task: &mut Task, status: TaskStatus) {
    if status == TaskStatus::Cancelled {
        transition(repo, task, |t| t.cancel(t0()));
        return;
    }
    let (w, lease_token) = (worker("w1"), token());
    transition(repo, task, |t| t.start(&w, lease_token, lease(60), t0()));
    let key = task.unique_key().unwrap().as_str().to_owned();
    let refused = insert(repo, &keyed("while-running", task.queue().as_str(), &key));
    assert!(matches!(refused, Err(RepoError::UniqueKeyHeld(h)) if h == task.id()), "{refused:?}");
    let reporter = Reporter::lease(Some(w.clone()), lease_token);
    match status {
        TaskStatus::Succeeded => transition(repo, task, |t| t.succeed(&reporter, None, t0())),
        TaskStatus::Failed => {
            transition(repo, task, |t| t.fail_permanently(&reporter, "boom", t0()));
        }
        other => panic!("{other} is not terminal"),
    }
    assert_eq!(task.status(), status);
}

#[test]
fn eight_racing_creates_with_one_key_create_exactly_one_task_and_all_answer_it() {
    const THREADS: usize = 8;
    let db = TestDatabase::new();
    let pool = build_pool(
        db.url(),
        &PoolConfig {
            max_size: THREADS as u32,
            connect_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(30),
        },
    )
    .unwrap();
    let service = Arc::new(service(PgTaskRepository::new(pool)));
    let barrier = Arc::new(Barrier::new(THREADS));

    let answers: Vec<Created> = (0..THREADS)
        .map(|_| {
            let (service, barrier) = (Arc::clone(&service), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                service.create_unique_by(request("account-7", OnConflict::Return), None).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let created: Vec<&Created> = answers.iter().filter(|a| a.created).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let id = created[0].task.id();
    assert!(answers.iter().all(|a| a.task.id() == id), "{answers:?}");
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks"), 1);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 1);
    let stored = service.get(id).unwrap();
    assert_eq!(stored.unique_key().map(UniqueKey::as_str), Some("account-7"));
}

#[test]
fn a_held_key_names_its_holder_and_the_same_key_in_another_queue_is_free() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let holder = keyed("first", "default", "k");
    insert(&repo, &holder).unwrap();

    let second = keyed("second", "default", "k");
    let refused = insert(&repo, &second);
    insert(&repo, &keyed("elsewhere", "other", "k")).unwrap();
    insert(&repo, &keyed("other-key", "default", "k2")).unwrap();

    assert!(matches!(refused, Err(RepoError::UniqueKeyHeld(h)) if h == holder.id()), "{refused:?}");
    assert!(matches!(repo.get(second.id()), Err(RepoError::NotFound(_))));
    assert!(repo.events(second.id()).unwrap().is_empty(), "no history for what was not created");
    // A taken id is still a conflict on the id, whatever the key.
    assert!(matches!(insert(&repo, &holder), Err(RepoError::Conflict(id)) if id == holder.id()));
}

#[test]
fn the_key_is_free_again_once_its_holder_succeeded_failed_or_was_cancelled() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    for status in [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Cancelled] {
        let key = format!("key-{status}");
        let mut holder = keyed("first", "default", &key);
        insert(&repo, &holder).unwrap();
        finish(&repo, &mut holder, status);

        let next = keyed("next", "default", &key);
        insert(&repo, &next).unwrap();
        assert_eq!(repo.get(next.id()).unwrap().status(), TaskStatus::Pending);
    }
}

#[test]
fn a_rerun_into_a_held_key_is_refused_naming_the_holder_and_changes_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let mut finished = keyed("first", "default", "k");
    insert(&repo, &finished).unwrap();
    finish(&repo, &mut finished, TaskStatus::Failed);
    let holder = keyed("second", "default", "k");
    insert(&repo, &holder).unwrap();

    let before = finished.clone();
    let mut rerun = finished.clone();
    rerun.rerun(t0()).unwrap();
    let event = TaskEvent::transition(Some(&before), &rerun, Actor::Client);
    let refused = repo.update(&rerun, before.version(), Some(&event));
    let write = TaskWrite { task: rerun, expected_version: before.version(), events: vec![event] };
    let refused_many = repo.write_many(&[write], &[]);

    assert!(matches!(refused, Err(RepoError::UniqueKeyHeld(h)) if h == holder.id()), "{refused:?}");
    assert!(
        matches!(refused_many, Err(RepoError::UniqueKeyHeld(h)) if h == holder.id()),
        "{refused_many:?}"
    );
    assert_eq!(repo.get(before.id()).unwrap(), before);
    assert_eq!(repo.events(before.id()).unwrap().len(), 3, "create, start, fail: no rerun");
}

#[test]
fn a_batch_answers_held_keys_with_their_holders_and_creates_the_rest_or_is_refused_whole() {
    let db = TestDatabase::new();
    let service = service(repo(&db));
    let holder = service.create_unique_by(request("k", OnConflict::Return), None).unwrap();
    let item = |key: &str, on_conflict| request(key, on_conflict);

    let answers = service
        .create_batch_unique_by(
            vec![item("fresh", OnConflict::Return), item("k", OnConflict::Return)],
            None,
        )
        .unwrap();
    let refused = service.create_batch_unique_by(
        vec![item("other", OnConflict::Return), item("k", OnConflict::Reject)],
        None,
    );
    let repeated = service
        .create_batch_unique_by(
            vec![item("twice", OnConflict::Return), item("twice", OnConflict::Return)],
            None,
        )
        .unwrap();

    assert!(answers[0].created);
    assert_eq!(answers[1].task.id(), holder.task.id());
    assert!(!answers[1].created);
    assert!(
        matches!(refused, Err(AppError::UniqueKeyHeld { holder: h, index: Some(1) })
            if h == holder.task.id()),
        "{refused:?}"
    );
    assert_eq!((repeated[0].created, repeated[1].created), (true, false));
    assert_eq!(repeated[1].task.id(), repeated[0].task.id());
    // The holder, the fresh task and the repeated key's task: nothing of the refused batch.
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks"), 3);
}
