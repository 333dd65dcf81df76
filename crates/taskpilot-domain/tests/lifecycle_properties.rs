//! Property test: random sequences of operations never break a task's invariants.
#![expect(clippy::unwrap_used, reason = "tests")]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use taskpilot_domain::{
    BackoffPolicy, DomainError, ExponentialBackoff, MaxAttempts, NewTask, RetryState, Task, TaskId,
    TaskName, TaskStatus, WorkerId,
};
use uuid::Uuid;

/// Who reports on the running attempt.
#[derive(Debug, Clone, Copy)]
enum Reporter {
    /// The worker that holds the task (or the first worker when nobody does).
    Holder,
    /// A worker of the pool that does not hold the task.
    Other,
    /// No worker id at all: the report is not checked.
    Nobody,
}

#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Succeed(Reporter, bool),
    Fail(Reporter, String),
    Cancel,
    Rerun,
    Advance(i64),
}

fn reporter() -> impl Strategy<Value = Reporter> {
    prop_oneof![Just(Reporter::Holder), Just(Reporter::Other), Just(Reporter::Nobody)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3_usize).prop_map(Op::Start),
        2 => (reporter(), any::<bool>()).prop_map(|(r, with_result)| Op::Succeed(r, with_result)),
        3 => (reporter(), "[a-z ]{0,12}").prop_map(|(r, e)| Op::Fail(r, e)),
        1 => Just(Op::Cancel),
        1 => Just(Op::Rerun),
        // Often short of the backoff, sometimes well past it.
        3 => (0..120_i64).prop_map(Op::Advance),
    ]
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn worker_for(pool: &[WorkerId], task: &Task, who: Reporter) -> Option<WorkerId> {
    let holder = task.worker_id();
    match who {
        Reporter::Holder => Some(holder.unwrap_or(&pool[0]).clone()),
        Reporter::Other => pool.iter().find(|w| Some(*w) != holder).cloned(),
        Reporter::Nobody => None,
    }
}

proptest! {
    #[test]
    fn random_operations_never_break_the_invariants(
        id in any::<u128>(),
        max_attempts in 1..=6_i64,
        workers in 2..=3_usize,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let pool: Vec<WorkerId> =
            (0..workers).map(|i| WorkerId::parse(&format!("worker-{i}")).unwrap()).collect();
        let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::seconds(60)).unwrap();
        let spec = NewTask {
            name: TaskName::parse("prop").unwrap(),
            payload: json!({"n": 1}),
            priority: 0,
            max_attempts: MaxAttempts::new(max_attempts).unwrap(),
            run_at: None,
        };
        let mut now = t0();
        let mut task = Task::new(TaskId::from_uuid(Uuid::from_u128(id)), spec, now);
        let max = u32::try_from(max_attempts).unwrap();

        for op in ops {
            let before = task.clone();
            let outcome: Option<Result<(), DomainError>> = match &op {
                Op::Advance(s) => {
                    now += TimeDelta::seconds(*s);
                    None
                }
                Op::Start(i) => {
                    let worker = &pool[i % workers];
                    let outcome = task.start(worker, now);
                    // The oracle: only a pending task whose time has come starts.
                    match before.next_run_at().filter(|at| *at > now) {
                        Some(runnable_at) if before.status() == TaskStatus::Pending => {
                            prop_assert_eq!(
                                &outcome,
                                &Err(DomainError::NotYetRunnable { task: task.id(), runnable_at }),
                                "a start before nextRunAt is refused"
                            );
                        }
                        _ => prop_assert_eq!(outcome.is_ok(), before.status() == TaskStatus::Pending),
                    }
                    if outcome.is_ok() {
                        prop_assert_eq!(task.worker_id(), Some(worker));
                        prop_assert_eq!(task.processing_started_at(), Some(now));
                    }
                    Some(outcome)
                }
                Op::Succeed(who, with_result) => {
                    let caller = worker_for(&pool, &task, *who);
                    let result = with_result.then(|| json!({"ok": true}));
                    let outcome = task.succeed(caller.as_ref(), result.clone(), now);
                    let allowed = before.status() == TaskStatus::Running
                        && caller.as_ref().is_none_or(|c| Some(c) == before.worker_id());
                    prop_assert_eq!(outcome.is_ok(), allowed);
                    if allowed {
                        prop_assert_eq!(task.status(), TaskStatus::Succeeded);
                        prop_assert_eq!(task.result(), result.as_ref());
                        prop_assert_eq!(task.retry_state(), RetryState::None);
                        prop_assert_eq!(task.last_error(), None);
                        prop_assert_eq!(task.next_run_at(), None);
                    }
                    Some(outcome)
                }
                Op::Fail(who, error) => {
                    let caller = worker_for(&pool, &task, *who);
                    let outcome = task.fail_and_schedule_retry(caller.as_ref(), error, now, &backoff);
                    let allowed = before.status() == TaskStatus::Running
                        && caller.as_ref().is_none_or(|c| Some(c) == before.worker_id());
                    prop_assert_eq!(outcome.is_ok(), allowed);
                    if allowed {
                        let attempts = before.attempt_count() + 1;
                        prop_assert_eq!(task.attempt_count(), attempts);
                        prop_assert_eq!(task.last_error(), Some(error.as_str()));
                        if attempts < max {
                            prop_assert_eq!(task.status(), TaskStatus::Pending);
                            prop_assert_eq!(task.retry_state(), RetryState::RetryScheduled);
                            prop_assert_eq!(
                                task.next_run_at(),
                                Some(now + backoff.delay(task.id(), attempts))
                            );
                        } else {
                            prop_assert_eq!(task.status(), TaskStatus::Failed);
                            prop_assert_eq!(task.retry_state(), RetryState::Exhausted);
                        }
                    }
                    if let (Some(caller), Some(holder), Err(e)) = (&caller, before.worker_id(), &outcome) {
                        prop_assert_eq!(
                            e,
                            &DomainError::WorkerMismatch {
                                task: task.id(),
                                holder: holder.clone(),
                                caller: caller.clone(),
                            }
                        );
                    }
                    Some(outcome)
                }
                Op::Cancel => {
                    let outcome = task.cancel(now);
                    prop_assert_eq!(outcome.is_ok(), !before.status().is_terminal());
                    Some(outcome)
                }
                Op::Rerun => {
                    let outcome = task.rerun(now);
                    let allowed =
                        matches!(before.status(), TaskStatus::Failed | TaskStatus::Cancelled);
                    prop_assert_eq!(outcome.is_ok(), allowed);
                    if allowed {
                        prop_assert_eq!(task.attempt_count(), 0);
                        prop_assert_eq!(task.retry_state(), RetryState::None);
                        prop_assert_eq!(task.next_run_at(), None);
                    }
                    Some(outcome)
                }
            };

            match outcome {
                None => prop_assert_eq!(&task, &before),
                Some(Ok(())) => {
                    prop_assert_eq!(task.version(), before.version() + 1, "after {:?}", op);
                    prop_assert_eq!(task.updated_at(), now);
                }
                Some(Err(_)) => prop_assert_eq!(&task, &before, "a refused {:?} changes nothing", op),
            }
            prop_assert_eq!(task.check_invariants(), Ok(()), "after {:?}: {:?}", op, task);
            prop_assert_eq!(
                task.status() == TaskStatus::Running,
                task.worker_id().is_some(),
                "RUNNING iff a worker is recorded"
            );
            prop_assert_eq!(
                task.status() == TaskStatus::Running,
                task.processing_started_at().is_some()
            );
            prop_assert_eq!(
                task.status().is_terminal(),
                task.completed_at().is_some(),
                "terminal iff completedAt is set"
            );
            prop_assert!(task.attempt_count() <= task.max_attempts().get());
            prop_assert_eq!(
                task.retry_state() == RetryState::Exhausted,
                task.status() == TaskStatus::Failed
            );
            if let Some(at) = task.next_run_at() {
                prop_assert!(!task.is_runnable_at(at - TimeDelta::microseconds(1)));
                prop_assert!(task.is_runnable_at(at));
            }
            prop_assert_eq!(Task::restore(task.to_record()), Ok(task.clone()));
        }
    }
}
