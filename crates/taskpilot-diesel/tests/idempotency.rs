//! Idempotency keys on a real PostgreSQL (a fresh database per test): stored with the tasks
//! of their create or not at all, found again, waited for while in flight, taken over once
//! expired, and pruned in bounded batches.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::{Arc, Barrier};

use chrono::{DateTime, Utc};
use common::*;
use diesel::connection::SimpleConnection as _;
use taskpilot_app::{Actor, NewIdempotencyKey, RepoError, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_domain::{
    Fingerprint, IdempotencyKey, IdempotencyRecord, KeyClaim, StoredResponse, Task,
};

fn key(scope: &str, fingerprint: u8, created_at: DateTime<Utc>) -> NewIdempotencyKey {
    NewIdempotencyKey {
        scope: scope.to_owned(),
        key: IdempotencyKey::parse("order-42").unwrap(),
        fingerprint: Fingerprint::from_bytes([fingerprint; 32]),
        response: response(fingerprint),
        created_at,
        expires_at: created_at + secs(3600),
    }
}

fn response(n: u8) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: format!("{{\"answer\": {n}, \"text\": \"ünï \\\" \"}}"),
        location: (n % 2 == 1).then(|| format!("/api/tasks/{n}")),
    }
}

fn created(tasks: &[Task]) -> Vec<TaskEvent> {
    tasks.iter().map(|t| TaskEvent::transition(None, t, Actor::Client)).collect()
}

fn tasks(n: usize) -> Vec<Task> {
    (0..n).map(|i| task_at(&format!("job-{i}"), t0())).collect()
}

fn keys_stored(db: &TestDatabase) -> i64 {
    count(&db.pool(), "SELECT count(*) AS n FROM idempotency_keys")
}

fn tasks_stored(db: &TestDatabase) -> i64 {
    count(&db.pool(), "SELECT count(*) AS n FROM tasks")
}

#[test]
fn a_free_key_is_stored_with_its_tasks_and_found_again_with_what_it_answered() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let batch = tasks(3);

    let first = repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0())).unwrap();
    let again = tasks(3);
    let second = repo.insert_keyed(&again, &created(&again), &key("open", 7, t0())).unwrap();

    assert_eq!(first, KeyClaim::Stored);
    assert_eq!(
        second,
        KeyClaim::Held(IdempotencyRecord {
            fingerprint: Fingerprint::from_bytes([1; 32]),
            response: response(1),
        }),
        "the first request's fingerprint and answer, byte for byte"
    );
    assert_eq!(tasks_stored(&db), 3, "the second call stored no task");
    for task in &batch {
        assert_eq!(repo.get(task.id()).unwrap(), *task);
        assert_eq!(repo.events(task.id()).unwrap().len(), 1);
    }
}

#[test]
fn a_create_that_fails_keeps_no_key() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let taken = task_at("taken", t0());
    store(&repo, &taken);
    let batch = vec![task_at("fresh", t0()), taken.clone()];

    let outcome = repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0()));

    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(keys_stored(&db), 0, "the key went with the tasks that were not stored");
    assert_eq!(tasks_stored(&db), 1);
    let retry = tasks(1);
    assert_eq!(
        repo.insert_keyed(&retry, &created(&retry), &key("open", 1, t0())).unwrap(),
        KeyClaim::Stored,
        "the key is still free"
    );
}

#[test]
fn keys_of_different_scopes_never_meet() {
    let db = TestDatabase::new();
    let repo = repo(&db);

    for scope in ["open", "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b"] {
        let batch = tasks(1);
        let claim = repo.insert_keyed(&batch, &created(&batch), &key(scope, 1, t0())).unwrap();
        assert_eq!(claim, KeyClaim::Stored, "{scope}");
    }
    assert_eq!(tasks_stored(&db), 2);
}

#[test]
fn an_expired_key_is_taken_over_by_the_next_request() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let batch = tasks(1);
    repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0())).unwrap();

    let later = t0() + secs(3600);
    let next = tasks(1);
    let claim = repo.insert_keyed(&next, &created(&next), &key("open", 2, later)).unwrap();
    let again = tasks(1);
    let replay = repo.insert_keyed(&again, &created(&again), &key("open", 2, later)).unwrap();

    assert_eq!(claim, KeyClaim::Stored, "expired at exactly that instant");
    assert_eq!(
        replay,
        KeyClaim::Held(IdempotencyRecord {
            fingerprint: Fingerprint::from_bytes([2; 32]),
            response: response(2),
        })
    );
    assert_eq!(keys_stored(&db), 1);
    assert_eq!(tasks_stored(&db), 2);
}

#[test]
fn a_key_another_transaction_is_storing_is_in_flight_after_a_short_wait() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    // Another server's create, between storing the key and committing.
    let mut other = db.pool().get().unwrap();
    other
        .batch_execute(
            "BEGIN; INSERT INTO idempotency_keys VALUES \
             ('open', 'order-42', decode(repeat('01', 32), 'hex'), 201, '{}', NULL, \
              '2026-01-01T00:00:00Z', '2999-01-01T00:00:00Z')",
        )
        .unwrap();

    let batch = tasks(1);
    let claim = repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0())).unwrap();
    other.batch_execute("COMMIT").unwrap();
    let again = tasks(1);
    let after = repo.insert_keyed(&again, &created(&again), &key("open", 1, t0())).unwrap();

    assert_eq!(claim, KeyClaim::InFlight);
    assert!(matches!(after, KeyClaim::Held(_)), "committed now: {after:?}");
    assert_eq!(tasks_stored(&db), 0);
}

#[test]
fn of_many_requests_racing_with_one_new_key_exactly_one_creates() {
    let db = TestDatabase::new();
    let repo = Arc::new(repo(&db));
    let racers = 8;
    let barrier = Arc::new(Barrier::new(racers));

    let claims: Vec<KeyClaim> = (0..racers)
        .map(|_| {
            let (repo, barrier) = (Arc::clone(&repo), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let batch = tasks(2);
                barrier.wait();
                repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0())).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let stored = claims.iter().filter(|c| **c == KeyClaim::Stored).count();
    assert_eq!(stored, 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .all(|c| matches!(c, KeyClaim::Stored | KeyClaim::Held(_) | KeyClaim::InFlight)),
        "{claims:?}"
    );
    assert_eq!(tasks_stored(&db), 2, "one batch's tasks");
    assert_eq!(keys_stored(&db), 1);
}

#[test]
fn expired_keys_are_deleted_oldest_first_in_bounded_batches() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let mut k = key("open", 1, t0());
        k.key = IdempotencyKey::parse(name).unwrap();
        k.expires_at = t0() + secs(i64::try_from(i).unwrap());
        let batch = tasks(1);
        repo.insert_keyed(&batch, &created(&batch), &k).unwrap();
    }

    let first = repo.delete_expired_keys(t0() + secs(2), 2).unwrap();
    let second = repo.delete_expired_keys(t0() + secs(2), 2).unwrap();
    let none = repo.delete_expired_keys(t0() + secs(99), 0).unwrap();

    assert_eq!((first, second, none), (2, 1, 0));
    assert_eq!(keys_stored(&db), 1, "the key that expires later is kept");
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM idempotency_keys WHERE key = 'd'"), 1);
    assert_eq!(tasks_stored(&db), 4, "tasks outlive their keys");
}

#[test]
fn a_missing_table_is_a_bug_not_a_free_key() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    execute(&db.pool(), "DROP TABLE idempotency_keys");

    let batch = tasks(1);
    let outcome = repo.insert_keyed(&batch, &created(&batch), &key("open", 1, t0()));

    assert!(
        matches!(outcome, Err(RepoError::Unexpected(_))),
        "a broken schema is a bug: {outcome:?}"
    );
}
