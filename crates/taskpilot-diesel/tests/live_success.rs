//! `PgTaskRepository::succeed_live` on a real PostgreSQL: the one-statement success leaves a
//! task and its history exactly as the full path (read, `Task::succeed`, compare-and-swap
//! write with its event) leaves its twin, and never touches a task its guard does not match.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{json, Value};
use taskpilot_app::{Actor, TaskEvent, TaskRepository};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::PgTaskRepository;
use taskpilot_domain::{
    BackoffPolicy, FixedBackoff, LeaseToken, Reporter, Task, TaskId, TaskRecord, WorkerId,
};
use uuid::Uuid;

/// How a twin got to the moment of its success.
#[derive(Debug, Clone, Copy)]
enum History {
    /// Started once.
    Started,
    /// Its first attempt failed, the retry runs and was heartbeated.
    RetryHeartbeated,
}

/// A stored running task of `history`, and the token of its live attempt.
fn running_twin(repo: &PgTaskRepository, history: History) -> (Task, LeaseToken) {
    let mut task = task_at("twin", t0());
    store(repo, &task);
    let backoff = FixedBackoff(secs(0));
    let first = token();
    transition(repo, &mut task, |t| t.start(&worker("w1"), first, lease(30), t0() + secs(1)));
    match history {
        History::Started => (task, first),
        History::RetryHeartbeated => {
            let reporter = Reporter::lease(None, first);
            transition(repo, &mut task, |t| {
                t.fail_and_schedule_retry(&reporter, "flaky", t0() + secs(2), &backoff)
            });
            assert!(backoff.delay(task.id(), 1) <= secs(0));
            let second = token();
            transition(repo, &mut task, |t| {
                t.start(&worker("w2"), second, lease(30), t0() + secs(3))
            });
            transition(repo, &mut task, |t| {
                t.heartbeat(Some(&worker("w2")), second, lease(60), t0() + secs(4))
            });
            (task, second)
        }
    }
}

/// The full path of one success: read, let the domain judge, write back with its event.
fn succeed_slowly(
    repo: &PgTaskRepository,
    id: TaskId,
    reporter: &Reporter,
    result: Option<Value>,
    now: DateTime<Utc>,
) {
    let before = repo.get(id).unwrap();
    let mut task = before.clone();
    task.succeed(reporter, result, now).unwrap();
    let event = TaskEvent::transition(Some(&before), &task, Actor::Worker);
    repo.update(&task, before.version(), Some(&event)).unwrap();
}

/// What is stored of a task and its history, with what tells twins apart (ids, tokens)
/// made equal.
fn stored(repo: &PgTaskRepository, id: TaskId) -> (TaskRecord, Vec<TaskEvent>) {
    let nil = TaskId::from_uuid(Uuid::nil());
    let mut record = repo.get(id).unwrap().to_record();
    record.id = nil;
    record.ended_attempt_token = None;
    let events =
        repo.events(id).unwrap().into_iter().map(|e| TaskEvent { task_id: nil, ..e }).collect();
    (record, events)
}

#[test]
fn a_live_success_leaves_the_task_and_its_history_exactly_as_the_full_path_leaves_its_twin() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    type Case = (History, Option<&'static str>, Option<Value>, DateTime<Utc>);
    let cases: [Case; 5] = [
        (
            History::Started,
            Some("w1"),
            Some(json!({"sent": true, "text": "ünï \" \\"})),
            t0() + secs(5),
        ),
        (History::Started, None, None, t0() + secs(5)),
        (History::RetryHeartbeated, Some("w2"), Some(json!([1, null])), t0() + secs(6)),
        // Long after the lease ran out: only the reaper ends an attempt for that.
        (History::Started, Some("w1"), None, t0() + secs(3600)),
        // A clock that stepped back: updatedAt stays at createdAt.
        (History::Started, None, Some(json!(0)), t0() - secs(10)),
    ];

    for (history, named, result, now) in cases {
        let (fast, fast_token) = running_twin(&repo, history);
        let (slow, slow_token) = running_twin(&repo, history);
        let named: Option<WorkerId> = named.map(worker);
        let patch = Task::success_for_live_attempt(
            &Reporter::lease(named.clone(), fast_token),
            result.clone(),
            now,
        )
        .unwrap();

        let applied = repo.succeed_live(&[(fast.id(), patch)], None).unwrap();
        succeed_slowly(&repo, slow.id(), &Reporter::lease(named, slow_token), result, now);

        let case = format!("{history:?} at {now}");
        assert_eq!(applied, [repo.get(fast.id()).unwrap()], "{case}: returns what it stored");
        assert_eq!(applied[0].last_ended().map(|e| e.token), Some(fast_token), "{case}");
        assert_eq!(stored(&repo, fast.id()), stored(&repo, slow.id()), "{case}");
    }
}

#[test]
fn a_live_success_whose_guard_does_not_match_changes_nothing_and_records_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let (running, live) = running_twin(&repo, History::Started);
    let (succeeded, done) = running_twin(&repo, History::Started);
    succeed_slowly(&repo, succeeded.id(), &Reporter::lease(None, done), None, t0() + secs(5));
    let (restarted, _) = running_twin(&repo, History::RetryHeartbeated);
    let first_attempt = repo.events(restarted.id()).unwrap()[1].clone();
    assert_eq!(first_attempt.attempt, 1);
    let misses = [
        // Another worker than the holder.
        (running.id(), Reporter::lease(Some(worker("w9")), live)),
        // A token the task never handed out.
        (running.id(), Reporter::lease(None, token())),
        // The same success again: a replay, for the full path to answer.
        (succeeded.id(), Reporter::lease(None, done)),
        // An unknown task.
        (TaskId::from_uuid(Uuid::now_v7()), Reporter::lease(None, live)),
    ];
    let before: Vec<_> = [running.id(), succeeded.id()].map(|id| stored(&repo, id)).into();

    for (id, reporter) in misses {
        let patch = Task::success_for_live_attempt(&reporter, None, t0() + secs(6)).unwrap();

        let applied = repo.succeed_live(&[(id, patch)], None).unwrap();

        assert!(applied.is_empty(), "{reporter:?}");
    }
    let after: Vec<_> = [running.id(), succeeded.id()].map(|id| stored(&repo, id)).into();
    assert_eq!(after, before);
}

#[test]
fn a_batch_of_live_successes_applies_those_that_match_in_one_statement_and_leaves_the_rest() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let twins: Vec<(Task, LeaseToken)> =
        (0..4).map(|_| running_twin(&repo, History::Started)).collect();
    let now = t0() + secs(5);
    let success = |token, result: Value| {
        Task::success_for_live_attempt(&Reporter::lease(None, token), Some(result), now).unwrap()
    };
    let batch = vec![
        (twins[0].0.id(), success(twins[0].1, json!(0))),
        // A stale token: left alone.
        (twins[1].0.id(), success(token(), json!(1))),
        (twins[2].0.id(), success(twins[2].1, json!(2))),
        // A repeat of an id counts once, the first.
        (twins[2].0.id(), success(twins[2].1, json!("repeat"))),
    ];

    let mut applied = repo.succeed_live(&batch, None).unwrap();

    applied.sort_unstable_by_key(Task::id);
    let mut expected: Vec<Task> = [0, 2].map(|i| repo.get(twins[i].0.id()).unwrap()).into();
    expected.sort_unstable_by_key(Task::id);
    assert_eq!(applied, expected);
    assert_eq!(repo.get(twins[2].0.id()).unwrap().result(), Some(&json!(2)));
    for untouched in [1, 3] {
        assert_eq!(repo.get(twins[untouched].0.id()).unwrap(), twins[untouched].0);
    }
    assert_eq!(repo.events(twins[2].0.id()).unwrap().len(), 3, "created, started, succeeded");
    assert_eq!(repo.events(twins[1].0.id()).unwrap().len(), 2, "created, started");
}
