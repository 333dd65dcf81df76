//! Property test: random sequences of operations never break a task's invariants, and every
//! heartbeat and report gets what the fencing table ([`FencedCall::verdict`]) says, whatever
//! the order of starts, heartbeats, reports, reaps and cancels; and the guarded patch of a
//! live attempt's success is [`Task::succeed`] wherever its guard matches.
#![expect(clippy::unwrap_used, reason = "tests")]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use taskpilot_domain::{
    Applied, AttemptEnd, AttemptHistory, BackoffPolicy, DomainError, EndedAttempt,
    ExponentialBackoff, FencedCall, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName,
    Refusal, Reporter, RetryState, StaleLease, Task, TaskId, TaskName, TaskStatus, Verdict,
    WorkerId,
};
use uuid::Uuid;

/// Who calls about the running attempt.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// The worker that holds the task (or the first worker when nobody does).
    Holder,
    /// A worker of the pool that does not hold the task.
    Other,
    /// No worker id at all: the worker is not checked.
    Nobody,
}

/// Which lease token a call carries.
#[derive(Debug, Clone, Copy)]
enum Token {
    /// The token of the task's current (or last) attempt.
    Live,
    /// The token of an earlier attempt, picked by the index modulo the attempts before.
    Stale(usize),
    /// A token the task never handed out.
    Unknown,
    /// None: an unfenced report, as clients that predate leases send.
    Without,
}

#[derive(Debug, Clone)]
enum Op {
    /// Start for a worker of the pool, under a lease of that many seconds.
    Start(usize, i64),
    Heartbeat(Who, Token, i64),
    Succeed(Who, Token, bool),
    Fail(Who, Token, String),
    /// A failure no retry can fix: `fail` with `retryable: false`.
    FailPermanently(Who, Token, String),
    /// A worker handing the task back unfinished: runnable again at once, no failure counted.
    Release(Who, Token),
    ExpireLease,
    Cancel,
    Rerun,
    Advance(i64),
    /// Moves the clock to the running lease's expiry plus that many seconds (never back).
    ToLeaseEnd(i64),
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Holder), Just(Who::Other), Just(Who::Nobody)]
}

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        3 => Just(Token::Live),
        2 => any::<usize>().prop_map(Token::Stale),
        1 => Just(Token::Unknown),
        2 => Just(Token::Without),
    ]
}

fn lease_secs() -> impl Strategy<Value = i64> {
    5..=90_i64
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3_usize, lease_secs()).prop_map(|(w, s)| Op::Start(w, s)),
        2 => (who(), token(), lease_secs()).prop_map(|(w, t, s)| Op::Heartbeat(w, t, s)),
        2 => (who(), token(), any::<bool>()).prop_map(|(w, t, r)| Op::Succeed(w, t, r)),
        3 => (who(), token(), "[a-z ]{0,12}").prop_map(|(w, t, e)| Op::Fail(w, t, e)),
        1 => (who(), token(), "[a-z ]{0,12}").prop_map(|(w, t, e)| Op::FailPermanently(w, t, e)),
        2 => (who(), token()).prop_map(|(w, t)| Op::Release(w, t)),
        2 => Just(Op::ExpireLease),
        1 => Just(Op::Cancel),
        1 => Just(Op::Rerun),
        // Often short of the backoff or the lease, sometimes well past both.
        3 => (0..120_i64).prop_map(Op::Advance),
        // Just short of, exactly at, or just past the lease.
        2 => (-1..=1_i64).prop_map(Op::ToLeaseEnd),
    ]
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// The token this test hands to attempt `n` (1-based).
fn token_of_attempt(n: u32) -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128((1 << 100) + u128::from(n)))
}

fn worker_for(pool: &[WorkerId], task: &Task, who: Who) -> Option<WorkerId> {
    let holder = task.worker_id();
    match who {
        Who::Holder => Some(holder.unwrap_or(&pool[0]).clone()),
        Who::Other => pool.iter().find(|w| Some(*w) != holder).cloned(),
        Who::Nobody => None,
    }
}

fn token_for(task: &Task, which: Token) -> Option<LeaseToken> {
    let attempt = task.attempt();
    match which {
        Token::Live => Some(token_of_attempt(attempt.max(1))),
        Token::Stale(i) if attempt > 1 => {
            let earlier = u32::try_from(i % (attempt as usize - 1)).unwrap() + 1;
            Some(token_of_attempt(earlier))
        }
        // With no earlier attempt, an old token is one never seen.
        Token::Stale(_) | Token::Unknown => {
            Some(LeaseToken::from_uuid(Uuid::from_u128(0xdead_beef)))
        }
        Token::Without => None,
    }
}

/// The refusal a domain error stands for, if it is one the fencing table gives.
fn refusal_of(error: &DomainError) -> Option<Refusal> {
    Some(match error {
        DomainError::WorkerMismatch { .. } => Refusal::WorkerMismatch,
        DomainError::InvalidTransition { .. } => Refusal::InvalidTransition,
        DomainError::StaleLease(StaleLease::LeaseExpired { .. }) => Refusal::LeaseExpired,
        DomainError::StaleLease(StaleLease::AttemptSuperseded { .. }) => Refusal::AttemptSuperseded,
        DomainError::StaleLease(StaleLease::TaskCancelled { .. }) => Refusal::TaskCancelled,
        DomainError::StaleLease(StaleLease::OutcomeConflict { .. }) => Refusal::OutcomeConflict,
        _ => return None,
    })
}

/// Checks that `call` from `reporter` on `before` got what the fencing table says, and
/// returns that verdict so that the caller checks what an applied call did.
fn check_fenced(
    before: &Task,
    reporter: &Reporter,
    call: FencedCall,
    outcome: &Result<Applied, DomainError>,
) -> Result<Verdict, TestCaseError> {
    let history = AttemptHistory::of(before, reporter);
    let verdict = call.verdict(history);
    let answered = match outcome {
        Ok(Applied::Changed) => Some(Verdict::Apply),
        Ok(Applied::Replayed) => Some(Verdict::Replay),
        Err(e) => refusal_of(e).map(Verdict::Refuse),
    };
    prop_assert_eq!(answered, Some(verdict), "{} on {:?}: {:?}", call, history, outcome);
    if let (Err(DomainError::StaleLease(stale)), Verdict::Refuse(refusal)) = (outcome, verdict) {
        prop_assert_eq!(stale.code(), refusal.code());
    }
    Ok(verdict)
}

/// What an applied report left as the last ended attempt: the attempt that ran, as `end`.
fn ended_as(before: &Task, end: AttemptEnd) -> Option<EndedAttempt> {
    let token = before.lease()?.token;
    Some(EndedAttempt { attempt: before.attempt(), token, end })
}

proptest! {
    #[test]
    fn random_operations_never_break_the_invariants(
        id in any::<u128>(),
        max_attempts in 1..=6_i64,
        workers in 2..=3_usize,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let pool: Vec<WorkerId> =
            (0..workers).map(|i| WorkerId::parse(&format!("worker-{i}")).unwrap()).collect();
        let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::seconds(60)).unwrap();
        let spec = NewTask {
            queue: QueueName::default(),
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
            let outcome: Option<Result<Applied, DomainError>> = match &op {
                Op::Advance(s) => {
                    now += TimeDelta::seconds(*s);
                    None
                }
                Op::ToLeaseEnd(s) => {
                    if let Some(lease) = task.lease() {
                        now = now.max(lease.expires_at + TimeDelta::seconds(*s));
                    }
                    None
                }
                Op::Start(i, secs) => {
                    let worker = &pool[i % workers];
                    let token = token_of_attempt(before.attempt() + 1);
                    let lease = LeaseDuration::from_secs(*secs).unwrap();
                    let outcome = task.start(worker, token, lease, now);
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
                        prop_assert_eq!(task.attempt(), before.attempt() + 1);
                        prop_assert_eq!(task.lease().map(|l| l.token), Some(token));
                        prop_assert_eq!(
                            task.lease().map(|l| l.expires_at),
                            Some(now + TimeDelta::seconds(*secs))
                        );
                    }
                    Some(outcome.map(|()| Applied::Changed))
                }
                Op::Heartbeat(who, which, secs) => {
                    let caller = worker_for(&pool, &task, *who);
                    let token = token_for(&task, *which).unwrap_or(token_of_attempt(task.attempt().max(1)));
                    let lease = LeaseDuration::from_secs(*secs).unwrap();
                    let outcome = task.heartbeat(caller.as_ref(), token, lease, now);
                    let outcome = outcome.map(|()| Applied::Changed);
                    let reporter = Reporter::lease(caller, token);
                    if check_fenced(&before, &reporter, FencedCall::Heartbeat, &outcome)? == Verdict::Apply {
                        // Extended to now + lease, never shortened.
                        let asked = now + TimeDelta::seconds(*secs);
                        let held = before.lease().map(|l| l.expires_at);
                        prop_assert_eq!(task.lease().map(|l| l.expires_at), held.map(|h| h.max(asked)));
                        prop_assert_eq!(task.lease().map(|l| l.token), Some(token));
                    }
                    Some(outcome)
                }
                Op::Succeed(who, which, with_result) => {
                    let reporter = Reporter { worker_id: worker_for(&pool, &task, *who), lease_token: token_for(&task, *which) };
                    let result = with_result.then(|| json!({"ok": true}));
                    let outcome = task.succeed(&reporter, result.clone(), now);
                    if check_fenced(&before, &reporter, FencedCall::Succeed, &outcome)? == Verdict::Apply {
                        prop_assert_eq!(task.status(), TaskStatus::Succeeded);
                        prop_assert_eq!(task.result(), result.as_ref());
                        prop_assert_eq!(task.retry_state(), RetryState::None);
                        prop_assert_eq!(task.last_error(), None);
                        prop_assert_eq!(task.next_run_at(), None);
                        prop_assert_eq!(task.last_ended().copied(), ended_as(&before, AttemptEnd::Succeeded));
                    }
                    Some(outcome)
                }
                Op::Fail(who, which, error) => {
                    let reporter = Reporter { worker_id: worker_for(&pool, &task, *who), lease_token: token_for(&task, *which) };
                    let outcome = task.fail_and_schedule_retry(&reporter, error, now, &backoff);
                    if check_fenced(&before, &reporter, FencedCall::Fail, &outcome)? == Verdict::Apply {
                        let attempts = before.attempt_count() + 1;
                        prop_assert_eq!(task.attempt_count(), attempts);
                        prop_assert_eq!(task.last_error(), Some(error.as_str()));
                        prop_assert_eq!(task.last_ended().copied(), ended_as(&before, AttemptEnd::Failed));
                        if attempts < max {
                            prop_assert_eq!(task.status(), TaskStatus::Pending);
                            prop_assert_eq!(task.retry_state(), RetryState::RetryScheduled);
                            prop_assert_eq!(task.next_run_at(), Some(now + backoff.delay(task.id(), attempts)));
                        } else {
                            prop_assert_eq!(task.status(), TaskStatus::Failed);
                            prop_assert_eq!(task.retry_state(), RetryState::Exhausted);
                        }
                    }
                    Some(outcome)
                }
                Op::FailPermanently(who, which, error) => {
                    let reporter = Reporter { worker_id: worker_for(&pool, &task, *who), lease_token: token_for(&task, *which) };
                    let outcome = task.fail_permanently(&reporter, error, now);
                    if check_fenced(&before, &reporter, FencedCall::FailPermanently, &outcome)? == Verdict::Apply {
                        // FAILED at once, whatever attempts were left.
                        prop_assert_eq!(task.status(), TaskStatus::Failed);
                        prop_assert_eq!(task.retry_state(), RetryState::NonRetryable);
                        prop_assert_eq!(task.attempt_count(), before.attempt_count() + 1);
                        prop_assert_eq!(task.last_error(), Some(error.as_str()));
                        prop_assert_eq!(task.completed_at(), Some(now));
                        prop_assert_eq!(task.next_run_at(), None);
                        prop_assert_eq!(task.last_ended().copied(), ended_as(&before, AttemptEnd::FailedPermanently));
                    }
                    Some(outcome)
                }
                Op::Release(who, which) => {
                    let reporter = Reporter { worker_id: worker_for(&pool, &task, *who), lease_token: token_for(&task, *which) };
                    let outcome = task.release(&reporter, now);
                    if check_fenced(&before, &reporter, FencedCall::Release, &outcome)? == Verdict::Apply {
                        // Back to PENDING, runnable now, and no failure counted.
                        prop_assert_eq!(task.status(), TaskStatus::Pending);
                        prop_assert!(task.is_runnable_at(now));
                        prop_assert_eq!(task.attempt(), before.attempt());
                        prop_assert_eq!(task.attempt_count(), before.attempt_count());
                        prop_assert_eq!(task.retry_state(), before.retry_state());
                        prop_assert_eq!(task.last_error(), before.last_error());
                        let retrying = before.retry_state() == RetryState::RetryScheduled;
                        prop_assert_eq!(task.next_run_at(), retrying.then_some(now));
                        prop_assert_eq!(task.last_ended().copied(), ended_as(&before, AttemptEnd::Released));
                    }
                    Some(outcome)
                }
                Op::ExpireLease => {
                    let outcome = task.expire_lease(now, &backoff).map(|()| Applied::Changed);
                    match before.lease() {
                        None => {
                            let refused =
                                matches!(outcome, Err(DomainError::InvalidTransition { .. }));
                            prop_assert!(refused, "only a running task is reaped: {:?}", outcome);
                        }
                        Some(lease) if lease.expires_at > now => prop_assert_eq!(
                            &outcome,
                            &Err(DomainError::LeaseNotExpired {
                                task: task.id(),
                                expires_at: lease.expires_at,
                            })
                        ),
                        Some(lease) => {
                            prop_assert!(outcome.is_ok());
                            let holder = before.worker_id().unwrap();
                            let error = format!("lease expired (worker {holder})");
                            prop_assert_eq!(task.last_error(), Some(error.as_str()));
                            prop_assert_eq!(task.attempt_count(), before.attempt_count() + 1);
                            prop_assert_eq!(
                                task.last_ended(),
                                Some(&EndedAttempt {
                                    attempt: before.attempt(),
                                    token: lease.token,
                                    end: AttemptEnd::LeaseExpired,
                                })
                            );
                            let exhausted = task.attempt_count() == max;
                            prop_assert_eq!(task.status() == TaskStatus::Failed, exhausted);
                        }
                    }
                    Some(outcome)
                }
                Op::Cancel => {
                    let outcome = task.cancel(now);
                    prop_assert_eq!(outcome.is_ok(), !before.status().is_terminal());
                    if let (Ok(()), Some(lease)) = (&outcome, before.lease()) {
                        prop_assert_eq!(
                            task.last_ended(),
                            Some(&EndedAttempt {
                                attempt: before.attempt(),
                                token: lease.token,
                                end: AttemptEnd::Cancelled,
                            })
                        );
                    }
                    Some(outcome.map(|()| Applied::Changed))
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
                    Some(outcome.map(|()| Applied::Changed))
                }
            };

            match outcome {
                None => prop_assert_eq!(&task, &before),
                Some(Ok(Applied::Changed)) => {
                    prop_assert_eq!(task.version(), before.version() + 1, "after {:?}", op);
                    prop_assert_eq!(task.updated_at(), now);
                }
                Some(Ok(Applied::Replayed)) => {
                    prop_assert_eq!(&task, &before, "a replayed {:?} changes nothing", op);
                }
                Some(Err(_)) => prop_assert_eq!(&task, &before, "a refused {:?} changes nothing", op),
            }
            prop_assert_eq!(task.check_invariants(), Ok(()), "after {:?}: {:?}", op, task);
            prop_assert!(task.attempt() >= before.attempt(), "the attempt never decreases");
            prop_assert!(task.attempt() <= before.attempt() + 1, "one attempt at a time");
            prop_assert_eq!(
                task.status() == TaskStatus::Running,
                task.lease().is_some(),
                "RUNNING iff a lease is held"
            );
            if let Some(lease) = task.lease() {
                prop_assert_eq!(
                    lease.token,
                    token_of_attempt(task.attempt()),
                    "the only live lease is the current attempt's"
                );
                prop_assert!(Some(lease.expires_at) > task.processing_started_at());
            }
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
                matches!(task.retry_state(), RetryState::Exhausted | RetryState::NonRetryable),
                task.status() == TaskStatus::Failed,
                "FAILED iff its retries are exhausted or given up on"
            );
            if task.retry_state() == RetryState::Exhausted {
                prop_assert_eq!(task.attempt_count(), max, "EXHAUSTED used every attempt");
            }
            if task.retry_state() == RetryState::NonRetryable {
                prop_assert!(task.attempt_count() >= 1, "NON_RETRYABLE after a failed attempt");
            }
            if let Some(at) = task.next_run_at() {
                prop_assert!(!task.is_runnable_at(at - TimeDelta::microseconds(1)));
                prop_assert!(task.is_runnable_at(at));
            }
            prop_assert_eq!(Task::restore(task.to_record()), Ok(task.clone()));
        }
    }
}

/// Applies `op` as a caller would, whatever the task answers: a random lifecycle.
fn drive(task: &mut Task, op: &Op, now: &mut DateTime<Utc>, pool: &[WorkerId]) {
    let backoff = ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::seconds(60)).unwrap();
    let reporter = |task: &Task, who: Who, which: Token| Reporter {
        worker_id: worker_for(pool, task, who),
        lease_token: token_for(task, which),
    };
    // Refusals are part of a random lifecycle: only what the task becomes matters here.
    let _ = match op {
        Op::Advance(s) => {
            *now += TimeDelta::seconds(*s);
            Ok(Applied::Changed)
        }
        Op::ToLeaseEnd(s) => {
            if let Some(lease) = task.lease() {
                *now = (*now).max(lease.expires_at + TimeDelta::seconds(*s));
            }
            Ok(Applied::Changed)
        }
        Op::Start(i, secs) => {
            let token = token_of_attempt(task.attempt() + 1);
            let lease = LeaseDuration::from_secs(*secs).unwrap();
            task.start(&pool[i % pool.len()], token, lease, *now).map(|()| Applied::Changed)
        }
        Op::Heartbeat(who, which, secs) => {
            let caller = worker_for(pool, task, *who);
            let token = token_for(task, *which).unwrap_or(token_of_attempt(task.attempt().max(1)));
            let lease = LeaseDuration::from_secs(*secs).unwrap();
            task.heartbeat(caller.as_ref(), token, lease, *now).map(|()| Applied::Changed)
        }
        Op::Succeed(who, which, with_result) => {
            let result = with_result.then(|| json!({"ok": true}));
            task.succeed(&reporter(task, *who, *which), result, *now)
        }
        Op::Fail(who, which, error) => {
            task.fail_and_schedule_retry(&reporter(task, *who, *which), error, *now, &backoff)
        }
        Op::FailPermanently(who, which, error) => {
            task.fail_permanently(&reporter(task, *who, *which), error, *now)
        }
        Op::Release(who, which) => task.release(&reporter(task, *who, *which), *now),
        Op::ExpireLease => task.expire_lease(*now, &backoff).map(|()| Applied::Changed),
        Op::Cancel => task.cancel(*now).map(|()| Applied::Changed),
        Op::Rerun => task.rerun(*now).map(|()| Applied::Changed),
    };
}

proptest! {
    /// The guarded patch that storage applies without reading the task
    /// ([`Task::success_for_live_attempt`]) is the domain's success: on every task a random lifecycle reaches and for every
    /// fenced report, it applies exactly when [`Task::succeed`] changes the task, and then
    /// leaves the record field for field as [`Task::succeed`] does.
    #[test]
    fn the_live_success_patch_is_what_succeed_does_wherever_its_guard_matches(
        id in any::<u128>(),
        max_attempts in 1..=6_i64,
        ops in prop::collection::vec(op(), 1..60),
        stale in any::<usize>(),
        report_at in -5..=120_i64,
    ) {
        let pool: Vec<WorkerId> =
            (0..3).map(|i| WorkerId::parse(&format!("worker-{i}")).unwrap()).collect();
        let spec = NewTask {
            queue: QueueName::default(),
            name: TaskName::parse("prop").unwrap(),
            payload: json!({"n": 1}),
            priority: 0,
            max_attempts: MaxAttempts::new(max_attempts).unwrap(),
            run_at: None,
        };
        let mut now = t0();
        let mut task = Task::new(TaskId::from_uuid(Uuid::from_u128(id)), spec, now);
        let whos = [Who::Holder, Who::Other, Who::Nobody];
        let tokens = [Token::Live, Token::Stale(stale), Token::Unknown];

        for op in &ops {
            drive(&mut task, op, &mut now, &pool);
            // Sometimes before the task's creation or its attempt's start: a clock that
            // stepped back.
            let at = now + TimeDelta::seconds(report_at);
            for (who, which) in whos.iter().flat_map(|w| tokens.iter().map(move |t| (*w, *t))) {
                let reporter = Reporter {
                    worker_id: worker_for(&pool, &task, who),
                    lease_token: token_for(&task, which),
                };
                let result = Some(json!({"ok": who as u8}));
                let patch = Task::success_for_live_attempt(&reporter, result.clone(), at).unwrap();
                let mut succeeded = task.clone();

                let outcome = succeeded.succeed(&reporter, result, at);

                let patched = patch.apply(&task.to_record());
                match outcome {
                    Ok(Applied::Changed) => {
                        let expected = Some(succeeded.to_record());
                        prop_assert_eq!(patched, expected, "{:?} {:?} on {:?}", who, which, task);
                    }
                    _ => prop_assert_eq!(patched, None, "{:?} {:?}: {:?}", who, which, outcome),
                }
            }
        }
    }
}
