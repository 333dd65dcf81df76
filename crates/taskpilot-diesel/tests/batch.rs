//! The batch paths of PgTaskRepository (`insert_many`, `get_many`, `write_many`), the
//! NON_RETRYABLE retry state and released attempts, on a real PostgreSQL: a fresh database per
//! test.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chrono::TimeDelta;
use common::*;
use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;
use serde_json::json;
use taskpilot_app::{Actor, RepoError, StaleCall, TaskEvent, TaskRepository, TaskWrite};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{build_pool, PgTaskRepository, PoolConfig};
use taskpilot_domain::{
    AttemptEnd, MaxAttempts, NewTask, Reporter, RetryState, StaleLease, Task, TaskId, TaskName,
    TaskStatus, WorkerId,
};
use uuid::Uuid;

fn created(task: &Task) -> TaskEvent {
    TaskEvent::transition(None, task, Actor::Client)
}

/// Applies `change` to `task` and returns the event describing it.
fn step(task: &mut Task, actor: Actor, change: impl FnOnce(&mut Task)) -> TaskEvent {
    let before = task.clone();
    change(task);
    TaskEvent::transition(Some(&before), task, actor)
}

/// Task `i` of a varied batch, with its history: every queue shape, negative and positive
/// priorities, payloads with escapes, and each status with its nullable columns filled.
fn varied(i: usize) -> (Task, Vec<TaskEvent>) {
    let n = i64::try_from(i).unwrap();
    let mut task = Task::new(
        TaskId::from_uuid(Uuid::now_v7()),
        NewTask {
            queue: queue(["default", "emails.high-prio_2", "q"][i % 3]),
            name: TaskName::parse(&format!("job ✓ {}", i % 7)).unwrap(),
            payload: json!({"i": i, "text": "quote \" backslash \\ ünï", "list": [n, null, {}]}),
            priority: i32::try_from(i % 5).unwrap() - 2,
            max_attempts: MaxAttempts::new(2 + n % 3).unwrap(),
            run_at: (i % 5 == 1).then(|| t0() + secs(n)),
            unique_key: None,
        },
        t0() + TimeDelta::microseconds(n),
    );
    let mut events = vec![created(&task)];
    let w = worker(&format!("worker-{}", i % 4));
    let secret = token();
    let started = t0() + secs(1) + TimeDelta::microseconds(n);
    if i % 5 >= 2 {
        events.push(step(&mut task, Actor::Worker, |t| {
            t.start(&w, secret, lease(30 + n), started).unwrap();
        }));
    }
    if i % 5 == 3 {
        events.push(step(&mut task, Actor::Worker, |t| {
            t.succeed(&Reporter::lease(None, secret), Some(json!({"out": i})), started + secs(1))
                .unwrap();
        }));
    }
    if i % 5 == 4 {
        events.push(step(&mut task, Actor::Worker, |t| {
            t.fail_permanently(&Reporter::lease(Some(w.clone()), secret), "bad payload", started)
                .unwrap();
        }));
    }
    (task, events)
}

fn by_id(tasks: Vec<Task>) -> HashMap<TaskId, Task> {
    tasks.into_iter().map(|t| (t.id(), t)).collect()
}

#[test]
fn a_thousand_tasks_inserted_at_once_round_trip_every_field_and_event() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let (tasks, histories): (Vec<Task>, Vec<Vec<TaskEvent>>) = (0..1_000).map(varied).unzip();
    let events: Vec<TaskEvent> = histories.concat();
    let ids: Vec<TaskId> = tasks.iter().map(Task::id).collect();

    repo.insert_many(&tasks, &events).unwrap();
    let loaded = by_id(repo.get_many(&ids).unwrap());

    assert_eq!(loaded.len(), 1_000);
    for (task, history) in tasks.iter().zip(&histories) {
        assert_eq!(loaded[&task.id()].to_record(), task.to_record());
        assert_eq!(&repo.events(task.id()).unwrap(), history, "oldest first, as given");
    }
    let statuses: Vec<(TaskStatus, RetryState)> =
        tasks[..5].iter().map(|t| (t.status(), t.retry_state())).collect();
    assert_eq!(
        statuses,
        [
            (TaskStatus::Pending, RetryState::None),
            (TaskStatus::Pending, RetryState::None),
            (TaskStatus::Running, RetryState::None),
            (TaskStatus::Succeeded, RetryState::None),
            (TaskStatus::Failed, RetryState::NonRetryable),
        ],
        "the batch covers every shape of row"
    );
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 2_000);
}

#[test]
fn a_batch_with_one_taken_id_inserts_nothing_and_is_a_conflict_naming_it() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let taken = task_at("first", t0());
    store(&repo, &taken);
    let again = Task::restore({
        let mut r = task_at("again", t0() + secs(1)).to_record();
        r.id = taken.id();
        r
    })
    .unwrap();
    let batch = [task_at("a", t0()), task_at("b", t0()), again, task_at("c", t0())];
    let events: Vec<TaskEvent> = batch.iter().map(created).collect();

    let result = repo.insert_many(&batch, &events);

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == taken.id()), "{result:?}");
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks"), 1);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 1);
    assert_eq!(repo.get(taken.id()).unwrap(), taken);
}

#[test]
fn a_batch_repeating_an_id_inserts_nothing_and_is_a_conflict_naming_it() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let a = task_at("a", t0());
    let b = task_at("b", t0());
    let batch = [a.clone(), b.clone(), a.clone(), b];
    let events: Vec<TaskEvent> = batch.iter().map(created).collect();

    let result = repo.insert_many(&batch, &events);

    assert!(matches!(result, Err(RepoError::Conflict(id)) if id == a.id()), "{result:?}");
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM tasks"), 0);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 0);
}

#[test]
fn an_empty_batch_is_fine_and_touches_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);

    repo.insert_many(&[], &[]).unwrap();

    assert_eq!(repo.get_many(&[]).unwrap(), []);
    assert_eq!(repo.write_many(&[], &[]).unwrap(), []);
}

#[test]
fn get_many_returns_exactly_the_tasks_that_exist() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let tasks: Vec<Task> = (0..5).map(|i| task_at("job", t0() + secs(i))).collect();
    for task in &tasks {
        store(&repo, task);
    }
    let unknown = TaskId::from_uuid(Uuid::now_v7());
    let asked = [tasks[3].id(), unknown, tasks[0].id(), tasks[3].id(), tasks[4].id()];

    let got = by_id(repo.get_many(&asked).unwrap());

    assert_eq!(got.len(), 3, "each existing task once; the unknown id simply absent");
    for i in [0, 3, 4] {
        assert_eq!(got[&tasks[i].id()], tasks[i]);
    }
}

#[test]
fn write_many_applies_fresh_writes_refuses_stale_ones_and_stores_refusals() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w-1");
    let [mut fresh, mut stale, refused, mut gone] =
        ["fresh", "stale", "refused", "gone"].map(|name| task_at(name, t0()));
    for task in [&fresh, &stale, &refused] {
        store(&repo, task);
    }
    // Someone else moves `stale` on after our caller read it.
    let read_stale = stale.clone();
    transition(&repo, &mut stale, |t| t.cancel(t0() + secs(1)));
    let stale_history = repo.events(stale.id()).unwrap();
    let secret = token();
    let fresh_before = fresh.version();
    let fresh_events = vec![
        step(&mut fresh, Actor::Worker, |t| {
            t.start(&w, secret, lease(60), t0() + secs(2)).unwrap()
        }),
        step(&mut fresh, Actor::Worker, |t| {
            t.fail_permanently(
                &Reporter::lease(Some(w.clone()), secret),
                "no such user",
                t0() + secs(3),
            )
            .map(drop)
            .unwrap();
        }),
    ];
    let mut late = read_stale.clone();
    let late_events = vec![step(&mut late, Actor::Worker, |t| {
        t.start(&w, token(), lease(60), t0() + secs(2)).unwrap()
    })];
    let gone_events = vec![step(&mut gone, Actor::Worker, |t| {
        t.start(&w, token(), lease(60), t0() + secs(2)).unwrap()
    })];
    let refusal = TaskEvent::rejection(
        &refused,
        Some(w.clone()),
        StaleCall::Succeed,
        &StaleLease::LeaseExpired { task: refused.id(), attempt: 1 },
        t0() + secs(4),
    );
    let writes = [
        TaskWrite {
            task: late.clone(),
            expected_version: read_stale.version(),
            events: late_events,
        },
        TaskWrite {
            task: fresh.clone(),
            expected_version: fresh_before,
            events: fresh_events.clone(),
        },
        TaskWrite { task: gone.clone(), expected_version: 1, events: gone_events },
    ];

    let lost = repo.write_many(&writes, std::slice::from_ref(&refusal)).unwrap();

    assert_eq!(lost, [stale.id(), gone.id()], "in the order of the writes");
    let stored = repo.get(fresh.id()).unwrap();
    assert_eq!(stored, fresh);
    assert_eq!(
        (stored.status(), stored.retry_state()),
        (TaskStatus::Failed, RetryState::NonRetryable)
    );
    assert_eq!(stored.attempt_count(), 1, "one of its three attempts used");
    let mut expected = vec![created(&task_at("fresh", t0()))];
    expected[0].task_id = fresh.id();
    expected.extend(fresh_events);
    assert_eq!(repo.events(fresh.id()).unwrap(), expected);
    assert_eq!(repo.get(stale.id()).unwrap(), stale, "the stale write changed nothing");
    assert_eq!(repo.events(stale.id()).unwrap(), stale_history, "and logged nothing");
    assert!(matches!(repo.get(gone.id()), Err(RepoError::NotFound(_))));
    assert_eq!(repo.get(refused.id()).unwrap(), refused, "a refusal leaves the task alone");
    assert_eq!(repo.events(refused.id()).unwrap()[1..], [refusal]);
    assert_eq!(count(&db.pool(), "SELECT count(*) AS n FROM task_events"), 7);
}

#[test]
fn of_two_writes_to_one_task_in_a_batch_the_first_wins_and_the_second_logs_nothing() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let task = task_at("twice", t0());
    store(&repo, &task);
    let writes = ["first", "second"].map(|name| {
        let mut next = task.clone();
        let event = step(&mut next, Actor::Worker, |t| {
            t.start(&worker(name), token(), lease(60), t0()).unwrap()
        });
        TaskWrite { task: next, expected_version: task.version(), events: vec![event] }
    });

    let lost = repo.write_many(&writes, &[]).unwrap();

    assert_eq!(lost, [task.id()]);
    assert_eq!(repo.get(task.id()).unwrap(), writes[0].task);
    assert_eq!(repo.events(task.id()).unwrap()[1..], writes[0].events);
}

#[test]
fn overlapping_batches_racing_give_every_task_one_winner_and_never_deadlock() {
    const THREADS: usize = 8;
    const TASKS: usize = 40;
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
    let repo = Arc::new(PgTaskRepository::new(pool));
    let tasks: Vec<Task> = (0..TASKS).map(|_| task_at("contended", t0())).collect();
    repo.insert_many(&tasks, &tasks.iter().map(created).collect::<Vec<_>>()).unwrap();
    // Each thread its own subset in its own order, so that batches overlap partly and would
    // lock rows in crossing orders if nothing sorted them. Prepared before any thread starts,
    // so that a panic here cannot leave the others waiting at the barrier.
    let batches: Vec<(WorkerId, Vec<TaskWrite>)> = (0..THREADS)
        .map(|i| {
            let me = worker(&format!("worker-{i}"));
            let mut mine: Vec<Task> = tasks
                .iter()
                .enumerate()
                .filter(|(j, _)| (j + i) % 3 != 0)
                .map(|(_, t)| t.clone())
                .collect();
            let len = mine.len();
            mine.rotate_left(i * 5 % len);
            if i % 2 == 1 {
                mine.reverse();
            }
            let writes = mine
                .into_iter()
                .map(|mut task| {
                    let expected_version = task.version();
                    let event = step(&mut task, Actor::Worker, |t| {
                        t.start(&me, token(), lease(60), t0() + secs(1)).unwrap();
                    });
                    TaskWrite { task, expected_version, events: vec![event] }
                })
                .collect();
            (me, writes)
        })
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));

    let handles: Vec<_> = batches
        .into_iter()
        .map(|(me, writes)| {
            let (repo, barrier) = (Arc::clone(&repo), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let lost = repo.write_many(&writes, &[]);
                (me, writes.into_iter().map(|w| w.task.id()).collect::<Vec<_>>(), lost)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let mut winners: HashMap<TaskId, Vec<String>> = HashMap::new();
    for (me, wrote, lost) in &results {
        let lost = lost.as_ref().unwrap_or_else(|e| panic!("{me}: {e:?}"));
        for id in wrote.iter().filter(|id| !lost.contains(id)) {
            winners.entry(*id).or_default().push(me.as_str().to_owned());
        }
    }
    assert_eq!(winners.len(), TASKS, "every task was won");
    for task in &tasks {
        let won = &winners[&task.id()];
        assert_eq!(won.len(), 1, "exactly one winner: {won:?}");
        let stored = repo.get(task.id()).unwrap();
        assert_eq!(stored.worker_id().map(|w| w.as_str()), Some(won[0].as_str()));
        assert_eq!(stored.version(), task.version() + 1);
        let history = repo.events(task.id()).unwrap();
        assert_eq!(history.len(), 2, "only the winner logged its start");
        assert_eq!(history[1].worker_id.as_ref().map(|w| w.as_str()), Some(won[0].as_str()));
    }
}

#[test]
fn a_write_waiting_on_a_writer_that_then_moves_the_version_on_loses_and_logs_nothing() {
    let db = TestDatabase::new();
    let repo = Arc::new(repo(&db));
    let [blocked, free] = ["blocked", "free"].map(|name| task_at(name, t0()));
    repo.insert_many(&[blocked.clone(), free.clone()], &[created(&blocked), created(&free)])
        .unwrap();
    let writes: Vec<TaskWrite> = [&blocked, &free]
        .map(|task| {
            let mut next = task.clone();
            let event = step(&mut next, Actor::Worker, |t| {
                t.start(&worker("w"), token(), lease(60), t0() + secs(1)).unwrap();
            });
            TaskWrite { task: next, expected_version: task.version(), events: vec![event] }
        })
        .into();
    // Another writer holds `blocked` and has moved its version on, uncommitted.
    let mut other = diesel::PgConnection::establish(db.url()).unwrap();
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE tasks SET version = version + 1 WHERE id = '{}'",
            blocked.id()
        ))
        .unwrap();

    let batch = {
        let (repo, writes) = (Arc::clone(&repo), writes.clone());
        std::thread::spawn(move || repo.write_many(&writes, &[]))
    };
    // Until the batch, its snapshot taken, queues behind the row lock.
    let waiting = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        count(
            &db.pool(),
            "SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ) == 1
    });
    other.batch_execute("COMMIT").unwrap();
    let lost = batch.join().unwrap().unwrap();

    assert!(waiting, "the batch waited for the other writer");
    assert_eq!(lost, [blocked.id()]);
    assert_eq!(repo.get(blocked.id()).unwrap().version(), blocked.version() + 1);
    assert_eq!(repo.get(blocked.id()).unwrap().status(), TaskStatus::Pending);
    assert_eq!(repo.events(blocked.id()).unwrap().len(), 1, "the loser logged nothing");
    assert_eq!(repo.get(free.id()).unwrap(), writes[1].task);
    assert_eq!(repo.events(free.id()).unwrap()[1..], writes[1].events);
}

#[test]
fn a_task_that_gave_up_with_attempts_left_round_trips_through_update() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let mut task = Task::new(TaskId::from_uuid(Uuid::now_v7()), spec("give-up", 5), t0());
    let secret = token();
    store(&repo, &task);
    transition(&repo, &mut task, |t| t.start(&w, secret, lease(60), t0() + secs(1)));

    transition(&repo, &mut task, |t| {
        t.fail_permanently(&Reporter::lease(Some(w.clone()), secret), "malformed", t0() + secs(2))
    });
    let loaded = repo.get(task.id()).unwrap();

    assert_eq!(loaded.to_record(), task.to_record());
    assert_eq!((loaded.retry_state(), loaded.attempt_count()), (RetryState::NonRetryable, 1));
    assert_eq!(loaded.last_error(), Some("malformed"));
}

#[test]
fn released_tasks_round_trip_through_update_and_write_many_with_their_refusals() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let [mut single, mut batched] = ["single", "batched"].map(|name| task_at(name, t0()));
    store(&repo, &single);
    store(&repo, &batched);
    let (first, second) = (token(), token());
    transition(&repo, &mut single, |t| t.start(&w, first, lease(60), t0() + secs(1)));
    transition(&repo, &mut batched, |t| t.start(&w, second, lease(60), t0() + secs(1)));
    // `batched` is on a retry: released, it keeps RETRY_SCHEDULED with nextRunAt = now.
    transition(&repo, &mut batched, |t| {
        t.fail_and_schedule_retry(
            &Reporter::lease(None, second),
            "flaky",
            t0() + secs(2),
            &taskpilot_domain::FixedBackoff(TimeDelta::zero()),
        )
    });
    let third = token();
    transition(&repo, &mut batched, |t| t.start(&w, third, lease(60), t0() + secs(3)));

    transition(&repo, &mut single, |t| {
        t.release(&Reporter::lease(Some(w.clone()), first), t0() + secs(4))
    });
    let before = batched.version();
    let events = vec![step(&mut batched, Actor::Worker, |t| {
        t.release(&Reporter::lease(None, third), t0() + secs(4)).map(drop).unwrap();
    })];
    // A stale release of `single` (a token that is not its attempt's), refused with the batch.
    let refusal = TaskEvent::rejection(
        &single,
        Some(w.clone()),
        StaleCall::Release,
        &StaleLease::AttemptSuperseded { task: single.id(), current: 1 },
        t0() + secs(5),
    );
    let write = TaskWrite { task: batched.clone(), expected_version: before, events };
    let lost = repo.write_many(&[write], std::slice::from_ref(&refusal)).unwrap();

    assert!(lost.is_empty());
    let loaded = repo.get(single.id()).unwrap();
    assert_eq!(loaded.to_record(), single.to_record());
    assert_eq!(
        (loaded.status(), loaded.retry_state(), loaded.attempt_count(), loaded.next_run_at()),
        (TaskStatus::Pending, RetryState::None, 0, None)
    );
    assert_eq!(
        loaded.last_ended().map(|e| (e.attempt, e.token, e.end)),
        Some((1, first, AttemptEnd::Released))
    );
    let loaded = repo.get(batched.id()).unwrap();
    assert_eq!(loaded.to_record(), batched.to_record());
    assert_eq!(
        (loaded.retry_state(), loaded.attempt_count(), loaded.next_run_at()),
        (RetryState::RetryScheduled, 1, Some(t0() + secs(4)))
    );
    assert_eq!(loaded.last_ended().map(|e| e.end), Some(AttemptEnd::Released));
    let history = repo.events(single.id()).unwrap();
    assert_eq!(
        history.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
        [
            (None, TaskStatus::Pending),
            (Some(TaskStatus::Pending), TaskStatus::Running),
            (Some(TaskStatus::Running), TaskStatus::Pending),
            (Some(TaskStatus::Pending), TaskStatus::Pending),
        ]
    );
    assert_eq!(history[3], refusal);
    let counts = repo.rejection_counts().unwrap();
    assert_eq!(
        counts.iter().map(|c| (c.code.as_str(), c.call, c.count)).collect::<Vec<_>>(),
        [("ATTEMPT_SUPERSEDED", StaleCall::Release, 1)]
    );
    // Claimable again at once: a claim takes both, on a new attempt.
    let claimed = repo
        .claim(&taskpilot_app::ClaimRequest {
            worker: worker("w2"),
            queues: None,
            limit: 10,
            lease: lease(60),
            now: t0() + secs(4),
        })
        .unwrap();
    let mut attempts: Vec<(TaskId, u32, u32)> =
        claimed.iter().map(|t| (t.id(), t.attempt(), t.attempt_count())).collect();
    attempts.sort_unstable();
    let mut expected = vec![(single.id(), 2, 0), (batched.id(), 3, 1)];
    expected.sort_unstable();
    assert_eq!(attempts, expected);
}

#[test]
fn the_table_takes_the_new_retry_state_and_still_refuses_what_it_refused() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let mut task = Task::new(TaskId::from_uuid(Uuid::now_v7()), spec("gave-up", 3), t0());
    let secret = token();
    task.start(&w, secret, lease(60), t0() + secs(1)).unwrap();
    task.fail_permanently(&Reporter::lease(None, secret), "bad", t0() + secs(2)).unwrap();
    let edits = [
        // What the domain writes: FAILED after one of three attempts, which ended
        // FAILED_PERMANENTLY.
        (
            "non-retryable",
            "retry_state = 'NON_RETRYABLE', ended_attempt_end = 'FAILED_PERMANENTLY'",
        ),
        ("unknown-retry-state", "retry_state = 'GAVE_UP'"),
        ("lowercase-retry-state", "retry_state = 'non_retryable'"),
        ("unknown-attempt-end", "ended_attempt_end = 'GAVE_UP'"),
        ("released", "ended_attempt_end = 'RELEASED'"),
        ("lowercase-released", "ended_attempt_end = 'released'"),
        ("failures-above-the-budget", "attempt_count = 4"),
        ("failed-without-completion", "completed_at = NULL"),
        ("failed-with-a-worker", "worker_id = 'w'"),
        // The table has never tied retry states to statuses or counts; the domain does, on
        // reading: such a row is stored, and refused as unexpected when read.
        ("failed-without-retry-state", "retry_state = 'NONE'"),
        ("exhausted-with-attempts-left", "retry_state = 'EXHAUSTED'"),
        ("non-retryable-without-a-failure", "attempt_count = 0"),
    ];
    let mut outcomes = Vec::new();

    for (label, set) in edits {
        repo.insert(&task, &created(&task)).unwrap();
        let edited =
            accepted(&db.pool(), &format!("UPDATE tasks SET {set} WHERE id = '{}'", task.id()));
        let read = match repo.get(task.id()) {
            Ok(_) => "ok",
            Err(RepoError::Unexpected(_)) => "unexpected",
            Err(e) => panic!("{label}: {e:?}"),
        };
        outcomes.push((label, edited, read));
        execute(&db.pool(), "DELETE FROM tasks");
    }

    assert_eq!(
        outcomes,
        [
            ("non-retryable", true, "ok"),
            ("unknown-retry-state", false, "ok"),
            ("lowercase-retry-state", false, "ok"),
            ("unknown-attempt-end", false, "ok"),
            ("released", true, "ok"),
            ("lowercase-released", false, "ok"),
            ("failures-above-the-budget", false, "ok"),
            ("failed-without-completion", false, "ok"),
            ("failed-with-a-worker", false, "ok"),
            ("failed-without-retry-state", true, "unexpected"),
            ("exhausted-with-attempts-left", true, "unexpected"),
            ("non-retryable-without-a-failure", true, "unexpected"),
        ]
    );
}

#[test]
fn undoing_the_migration_turns_released_attempts_into_failed_ones_and_release_refusals_into_fail() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let down = include_str!("../../../migrations/2026-11-26-110000_allow_non_retryable/down.sql");
    let up = include_str!("../../../migrations/2026-11-26-110000_allow_non_retryable/up.sql");
    let mut released = task_at("released", t0());
    let secret = token();
    store(&repo, &released);
    transition(&repo, &mut released, |t| t.start(&w, secret, lease(60), t0() + secs(1)));
    transition(&repo, &mut released, |t| t.release(&Reporter::lease(None, secret), t0() + secs(2)));
    let refusal = TaskEvent::rejection(
        &released,
        Some(w.clone()),
        StaleCall::Release,
        &StaleLease::AttemptSuperseded { task: released.id(), current: 1 },
        t0() + secs(3),
    );
    repo.record_rejection(&refusal).unwrap();
    let pending = task_at("pending", t0());
    store(&repo, &pending);

    execute(&db.pool(), down);
    let downgraded = repo.get(released.id()).unwrap();
    let history = repo.events(released.id()).unwrap();
    let counts = repo.rejection_counts().unwrap();
    let spellings = [
        "UPDATE tasks SET ended_attempt_end = 'RELEASED' WHERE ended_attempt IS NOT NULL",
        "UPDATE task_events SET rejected_call = 'RELEASE' WHERE rejected_call IS NOT NULL",
    ];
    let taken_while_down = spellings.map(|sql| accepted(&db.pool(), sql));
    execute(&db.pool(), up);
    let taken_after_up = spellings.map(|sql| accepted(&db.pool(), sql));

    assert_eq!(
        (downgraded.status(), downgraded.retry_state(), downgraded.attempt_count()),
        (TaskStatus::Pending, RetryState::None, 0),
        "still runnable, nothing counted against it"
    );
    assert_eq!(
        downgraded.last_ended().map(|e| (e.attempt, e.token, e.end)),
        Some((1, secret, AttemptEnd::Failed))
    );
    assert_eq!(downgraded.version(), released.version() + 1);
    assert_eq!(
        history.last().and_then(|e| e.rejected.as_ref()).map(|r| r.call),
        Some(StaleCall::Fail)
    );
    assert_eq!(
        counts.iter().map(|c| (c.code.as_str(), c.call, c.count)).collect::<Vec<_>>(),
        [("ATTEMPT_SUPERSEDED", StaleCall::Fail, 1)]
    );
    assert_eq!(repo.get(pending.id()).unwrap(), pending, "other rows untouched");
    assert_eq!(taken_while_down, [false, false], "the old lists of spellings are back");
    assert_eq!(taken_after_up, [true, true]);
}

#[test]
fn undoing_the_migration_turns_tasks_that_gave_up_into_exhausted_ones_the_domain_accepts() {
    let db = TestDatabase::new();
    let repo = repo(&db);
    let w = worker("w");
    let down = include_str!("../../../migrations/2026-11-26-110000_allow_non_retryable/down.sql");
    let up = include_str!("../../../migrations/2026-11-26-110000_allow_non_retryable/up.sql");
    let mut gave_up = Task::new(TaskId::from_uuid(Uuid::now_v7()), spec("gave-up", 3), t0());
    let secret = token();
    gave_up.start(&w, secret, lease(60), t0() + secs(1)).unwrap();
    gave_up.fail_permanently(&Reporter::lease(None, secret), "bad", t0() + secs(2)).unwrap();
    let mut rerun = gave_up.clone();
    rerun = Task::restore({
        let mut r = rerun.to_record();
        r.id = TaskId::from_uuid(Uuid::now_v7());
        r
    })
    .unwrap();
    rerun.rerun(t0() + secs(3)).unwrap();
    let pending = task_at("pending", t0());
    let batch = [gave_up.clone(), rerun.clone(), pending.clone()];
    repo.insert_many(&batch, &batch.iter().map(created).collect::<Vec<_>>()).unwrap();

    execute(&db.pool(), down);
    let downgraded = repo.get(gave_up.id()).unwrap();
    let rerun_downgraded = repo.get(rerun.id()).unwrap();
    let marked =
        format!("UPDATE tasks SET retry_state = 'NON_RETRYABLE' WHERE id = '{}'", gave_up.id());
    let taken_while_down = accepted(&db.pool(), &marked);
    execute(&db.pool(), up);
    let taken_after_up = accepted(&db.pool(), &marked);

    assert_eq!(
        (downgraded.status(), downgraded.retry_state(), downgraded.attempt_count()),
        (TaskStatus::Failed, RetryState::Exhausted, 3)
    );
    assert_eq!(
        downgraded.last_ended().map(|e| (e.attempt, e.token, e.end)),
        Some((3, secret, AttemptEnd::Failed))
    );
    assert_eq!(
        rerun_downgraded.last_ended().map(|e| (e.attempt, e.token, e.end)),
        Some((1, secret, AttemptEnd::Failed)),
        "a permanent failure a rerun left behind is a failure to the old code"
    );
    assert_eq!(rerun_downgraded.status(), TaskStatus::Pending);
    assert_eq!(downgraded.last_error(), Some("bad"));
    assert_eq!(downgraded.version(), gave_up.version() + 1);
    assert_eq!(repo.get(pending.id()).unwrap(), pending, "other rows untouched");
    assert!(!taken_while_down, "the old list of retry states is back");
    assert!(taken_after_up);
}

/// Whether the table accepts `sql`.
fn accepted(pool: &taskpilot_diesel::PgPool, sql: &str) -> bool {
    pool.get().unwrap().batch_execute(sql).is_ok()
}
