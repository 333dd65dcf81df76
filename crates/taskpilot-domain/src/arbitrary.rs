//! Random lifecycles of a task, for property tests (the `proptest` feature): the operations a
//! caller may apply in any order, a strategy drawing them, and [`Lifecycle::states`], every
//! task a lifecycle reaches. The domain's own property tests and storage's equivalence tests
//! draw from these same strategies, so both judge the same reachable tasks.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::collection::SizeRange;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use crate::{
    Applied, BackoffPolicy, ExponentialBackoff, LeaseDuration, LeaseToken, MaxAttempts, MaxCrashes,
    NewTask, QueueName, Reporter, Task, TaskId, TaskName, WorkerId,
};

/// Who calls about the running attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The worker that holds the task (or the first worker when nobody does).
    Holder,
    /// A worker of the pool that does not hold the task.
    Other,
    /// No worker id at all: the worker is not checked.
    Nobody,
}

/// Which lease token a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The token of the task's current (or last) attempt.
    Live,
    /// The token of an earlier attempt, picked by the index modulo the attempts before.
    Stale(usize),
    /// A token the task never handed out.
    Unknown,
    /// None: an unfenced report, as clients that predate leases send.
    Without,
}

/// One thing that may happen to a task, or to the clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Start for the worker of the pool at that index (modulo its size), under that lease.
    Start(usize, LeaseDuration),
    /// A heartbeat asking for that lease.
    Heartbeat(Who, Token, LeaseDuration),
    /// A success report, with a result or without.
    Succeed(Who, Token, bool),
    /// A failure report with that error: a retry if attempts are left.
    Fail(Who, Token, String),
    /// A failure no retry can fix: `fail` with `retryable: false`.
    FailPermanently(Who, Token, String),
    /// A worker handing the task back unfinished: runnable again at once, no failure counted.
    Release(Who, Token),
    /// The reaper's visit.
    ExpireLease,
    /// The running attempt's worker dies or hangs: the clock moves to its lease's expiry
    /// (never back), then the reaper visits. Nothing when no attempt runs.
    Crash,
    /// A client's cancel.
    Cancel,
    /// A client's rerun.
    Rerun,
    /// Moves the clock on by that many seconds.
    Advance(i64),
    /// Moves the clock to the running lease's expiry plus that many seconds (never back).
    ToLeaseEnd(i64),
}

/// Any caller.
pub fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Holder), Just(Who::Other), Just(Who::Nobody)]
}

/// Any token, the live one most often.
pub fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        3 => Just(Token::Live),
        2 => any::<usize>().prop_map(Token::Stale),
        1 => Just(Token::Unknown),
        2 => Just(Token::Without),
    ]
}

/// Leases of 5 to 90 seconds: about as long as the clock's steps.
pub fn lease() -> impl Strategy<Value = LeaseDuration> {
    (i64::from(LeaseDuration::MIN_SECS)..=90)
        .prop_filter_map("a valid lease length", |s| LeaseDuration::from_secs(s).ok())
}

/// Any operation, weighted so that lifecycles go through every status.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3_usize, lease()).prop_map(|(w, l)| Op::Start(w, l)),
        2 => (who(), token(), lease()).prop_map(|(w, t, l)| Op::Heartbeat(w, t, l)),
        2 => (who(), token(), any::<bool>()).prop_map(|(w, t, r)| Op::Succeed(w, t, r)),
        3 => (who(), token(), "[a-z ]{0,12}").prop_map(|(w, t, e)| Op::Fail(w, t, e)),
        1 => (who(), token(), "[a-z ]{0,12}").prop_map(|(w, t, e)| Op::FailPermanently(w, t, e)),
        2 => (who(), token()).prop_map(|(w, t)| Op::Release(w, t)),
        2 => Just(Op::ExpireLease),
        2 => Just(Op::Crash),
        1 => Just(Op::Cancel),
        1 => Just(Op::Rerun),
        // Often short of the backoff or the lease, sometimes well past both.
        3 => (0..120_i64).prop_map(Op::Advance),
        // Just short of, exactly at, or just past the lease.
        2 => (-1..=1_i64).prop_map(Op::ToLeaseEnd),
    ]
}

/// When every lifecycle begins: 2026-01-01T12:00:00Z.
pub fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_767_268_800)
}

/// The token a lifecycle hands to attempt `n` (1-based).
pub fn token_of_attempt(n: u32) -> LeaseToken {
    LeaseToken::from_uuid(Uuid::from_u128((1 << 100) + u128::from(n)))
}

/// The worker id `who` stands for on `task`, drawn from `pool`.
pub fn worker_for(pool: &[WorkerId], task: &Task, who: Who) -> Option<WorkerId> {
    let holder = task.worker_id();
    match who {
        Who::Holder => holder.or(pool.first()).cloned(),
        Who::Other => pool.iter().find(|w| Some(*w) != holder).cloned(),
        Who::Nobody => None,
    }
}

/// The token `which` stands for on `task`.
pub fn token_for(task: &Task, which: Token) -> Option<LeaseToken> {
    let attempt = task.attempt();
    match which {
        Token::Live => Some(token_of_attempt(attempt.max(1))),
        Token::Stale(i) if attempt > 1 => {
            let before = u64::from(attempt - 1);
            let earlier = u32::try_from(i as u64 % before).unwrap_or_default() + 1;
            Some(token_of_attempt(earlier))
        }
        // With no earlier attempt, an old token is one never seen.
        Token::Stale(_) | Token::Unknown => {
            Some(LeaseToken::from_uuid(Uuid::from_u128(0xdead_beef)))
        }
        Token::Without => None,
    }
}

/// Applies `op` as a caller would, whatever the task answers: one step of a random lifecycle.
pub fn drive(
    task: &mut Task,
    op: &Op,
    now: &mut DateTime<Utc>,
    pool: &[WorkerId],
    backoff: &impl BackoffPolicy,
) {
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
        Op::Start(i, lease) => {
            let token = token_of_attempt(task.attempt() + 1);
            match pool.get(i % pool.len().max(1)) {
                Some(worker) => task.start(worker, token, *lease, *now).map(|()| Applied::Changed),
                None => Ok(Applied::Replayed),
            }
        }
        Op::Heartbeat(who, which, lease) => {
            let caller = worker_for(pool, task, *who);
            let token = token_for(task, *which).unwrap_or(token_of_attempt(task.attempt().max(1)));
            task.heartbeat(caller.as_ref(), token, *lease, *now).map(|()| Applied::Changed)
        }
        Op::Succeed(who, which, with_result) => {
            let result = with_result.then(|| json!({"ok": true}));
            task.succeed(&reporter(task, *who, *which), result, *now)
        }
        Op::Fail(who, which, error) => {
            task.fail_and_schedule_retry(&reporter(task, *who, *which), error, *now, backoff)
        }
        Op::FailPermanently(who, which, error) => {
            task.fail_permanently(&reporter(task, *who, *which), error, *now)
        }
        Op::Release(who, which) => task.release(&reporter(task, *who, *which), *now),
        Op::ExpireLease => task.expire_lease(*now, backoff).map(|()| Applied::Changed),
        Op::Crash => match task.lease() {
            Some(lease) => {
                *now = (*now).max(lease.expires_at);
                task.expire_lease(*now, backoff).map(|()| Applied::Changed)
            }
            None => Ok(Applied::Replayed),
        },
        Op::Cancel => task.cancel(*now).map(|()| Applied::Changed),
        Op::Rerun => task.rerun(*now).map(|()| Applied::Changed),
    };
}

/// A random life of one task: created at [`t0`], then `ops` applied in order by [`drive`].
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The task as created.
    pub task: Task,
    /// The workers that start it and report on it: `worker-0`, `worker-1`, ...
    pub pool: Vec<WorkerId>,
    /// Its retry delays: exponential from 1 s to 60 s.
    pub backoff: ExponentialBackoff,
    /// What happens to it, in order.
    pub ops: Vec<Op>,
}

impl Lifecycle {
    /// Every task the lifecycle reaches, with the clock then: the new task first, then the
    /// task after each operation (unchanged where the task refused it).
    pub fn states(&self) -> Vec<(Task, DateTime<Utc>)> {
        let mut now = t0();
        let mut task = self.task.clone();
        let mut states = vec![(task.clone(), now)];
        for op in &self.ops {
            drive(&mut task, op, &mut now, &self.pool, &self.backoff);
            states.push((task.clone(), now));
        }
        states
    }
}

/// Lifecycles of a task with 1 to 6 attempts and a crash budget of 1 to 4, among 2 or 3
/// workers, of `ops` operations.
pub fn lifecycle(ops: impl Into<SizeRange>) -> impl Strategy<Value = Lifecycle> {
    let budgets = (1..=6_i64, 1..=4_i64);
    (any::<u128>(), budgets, 2..=3_usize, prop::collection::vec(op(), ops)).prop_filter_map(
        "valid constructor arguments",
        |(id, (max_attempts, max_crashes), workers, ops)| {
            let pool = (0..workers)
                .map(|i| WorkerId::parse(&format!("worker-{i}")).ok())
                .collect::<Option<Vec<_>>>()?;
            let spec = NewTask {
                queue: QueueName::default(),
                name: TaskName::parse("prop").ok()?,
                payload: json!({"n": 1}),
                priority: 0,
                max_attempts: MaxAttempts::new(max_attempts).ok()?,
                run_at: None,
                unique_key: None,
            };
            let task = Task::new(TaskId::from_uuid(Uuid::from_u128(id)), spec, t0())
                .with_max_crashes(MaxCrashes::new(max_crashes).ok()?);
            let backoff =
                ExponentialBackoff::new(TimeDelta::seconds(1), TimeDelta::seconds(60)).ok()?;
            Some(Lifecycle { task, pool, backoff, ops })
        },
    )
}
