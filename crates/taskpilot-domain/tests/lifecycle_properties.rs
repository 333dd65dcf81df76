//! Property test: random sequences of operations never break a task's invariants, and every
//! heartbeat and report gets what the fencing table ([`FencedCall::verdict`]) says, whatever
//! the order of starts, heartbeats, reports, reaps and cancels; and the guarded patch of a
//! live attempt's success is [`Task::succeed`] wherever its guard matches.
#![expect(clippy::unwrap_used, reason = "tests")]

use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;
use taskpilot_domain::arbitrary::{
    lifecycle, t0, token_for, token_of_attempt, worker_for, Lifecycle, Op, Token, Who,
};
use taskpilot_domain::{
    Applied, AttemptEnd, AttemptHistory, BackoffPolicy, DomainError, EndedAttempt, FencedCall,
    Refusal, Reporter, RetryState, StaleLease, Task, TaskStatus, Verdict,
};

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
        life in lifecycle(1..80),
    ) {
        let Lifecycle { mut task, pool, backoff, ops } = life;
        let workers = pool.len();
        let mut now = t0();
        let max = task.max_attempts().get();
        let max_crashes = task.max_crashes().get();

        for op in ops {
            let before = task.clone();
            // A crash is the clock reaching the running lease's end, then the reaper's visit.
            let op = match op {
                Op::Crash => {
                    if let Some(lease) = task.lease() {
                        now = now.max(lease.expires_at);
                    }
                    Op::ExpireLease
                }
                other => other,
            };
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
                Op::Start(i, lease) => {
                    let worker = &pool[i % workers];
                    let token = token_of_attempt(before.attempt() + 1);
                    let outcome = task.start(worker, token, *lease, now);
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
                            Some(now + lease.as_delta())
                        );
                    }
                    Some(outcome.map(|()| Applied::Changed))
                }
                Op::Heartbeat(who, which, lease) => {
                    let caller = worker_for(&pool, &task, *who);
                    let token = token_for(&task, *which).unwrap_or(token_of_attempt(task.attempt().max(1)));
                    let outcome = task.heartbeat(caller.as_ref(), token, *lease, now);
                    let outcome = outcome.map(|()| Applied::Changed);
                    let reporter = Reporter::lease(caller, token);
                    if check_fenced(&before, &reporter, FencedCall::Heartbeat, &outcome)? == Verdict::Apply {
                        // Extended to now + lease, never shortened.
                        let asked = now + lease.as_delta();
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
                            let crashes = before.crash_count() + 1;
                            prop_assert_eq!(task.crash_count(), crashes, "a lease expiry is a crash");
                            prop_assert_eq!(task.attempt_count(), before.attempt_count() + 1);
                            prop_assert_eq!(
                                task.last_ended(),
                                Some(&EndedAttempt {
                                    attempt: before.attempt(),
                                    token: lease.token,
                                    end: AttemptEnd::LeaseExpired,
                                })
                            );
                            if crashes == max_crashes {
                                // Quarantined, whatever attempts were left.
                                prop_assert_eq!(task.status(), TaskStatus::Failed);
                                prop_assert_eq!(task.retry_state(), RetryState::Quarantined);
                                let times = if crashes == 1 { "time" } else { "times" };
                                let error = format!(
                                    "quarantined: lease expired {crashes} {times} (last worker {holder})"
                                );
                                prop_assert_eq!(task.last_error(), Some(error.as_str()));
                            } else {
                                let error = format!("lease expired (worker {holder})");
                                prop_assert_eq!(task.last_error(), Some(error.as_str()));
                                let exhausted = task.attempt_count() == max;
                                prop_assert_eq!(task.status() == TaskStatus::Failed, exhausted);
                            }
                        }
                    }
                    Some(outcome)
                }
                Op::Crash => unreachable!("a crash is an expiry at the lease's end, above"),
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
                        prop_assert_eq!(task.crash_count(), 0, "a rerun gives a fresh crash budget");
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
            prop_assert!(task.crash_count() <= max_crashes, "crashCount never exceeds maxCrashes");
            prop_assert!(task.crash_count() <= task.attempt_count(), "every crash is a failed attempt");
            prop_assert_eq!(task.max_crashes().get(), max_crashes, "the crash budget never changes");
            if !matches!(op, Op::ExpireLease | Op::Rerun) {
                prop_assert_eq!(
                    task.crash_count(),
                    before.crash_count(),
                    "only the reaper counts crashes, only a rerun resets them: {:?}",
                    op
                );
            }
            prop_assert_eq!(
                matches!(
                    task.retry_state(),
                    RetryState::Exhausted | RetryState::NonRetryable | RetryState::Quarantined
                ),
                task.status() == TaskStatus::Failed,
                "FAILED iff its retries are exhausted, given up on or quarantined"
            );
            if task.retry_state() == RetryState::Quarantined {
                prop_assert_eq!(task.crash_count(), max_crashes, "QUARANTINED used every crash");
            }
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

proptest! {
    /// The guarded patch that storage applies without reading the task
    /// ([`Task::success_for_live_attempt`]) is the domain's success: on every task a random lifecycle reaches and for every
    /// fenced report, it applies exactly when [`Task::succeed`] changes the task, and then
    /// leaves the record field for field as [`Task::succeed`] does.
    #[test]
    fn the_live_success_patch_is_what_succeed_does_wherever_its_guard_matches(
        life in lifecycle(1..60),
        stale in any::<usize>(),
        report_at in -5..=120_i64,
    ) {
        let pool = &life.pool;
        let whos = [Who::Holder, Who::Other, Who::Nobody];
        let tokens = [Token::Live, Token::Stale(stale), Token::Unknown];

        for (task, now) in life.states().into_iter().skip(1) {
            // Sometimes before the task's creation or its attempt's start: a clock that
            // stepped back.
            let at = now + TimeDelta::seconds(report_at);
            for (who, which) in whos.iter().flat_map(|w| tokens.iter().map(move |t| (*w, *t))) {
                let reporter = Reporter {
                    worker_id: worker_for(pool, &task, who),
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
