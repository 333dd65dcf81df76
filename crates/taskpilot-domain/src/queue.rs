//! Queues as a resource: whether a queue is paused ([`QueueState`], and the rule that a paused
//! queue gives no task to a claim), and why a task is not running ([`explain`], one function
//! over plain facts that decides which reasons apply, in which order, and their sentences).

use chrono::{DateTime, TimeDelta, Utc};

use crate::{AttemptEnd, QueueName, RetryState, Task, TaskState, TokenName, WorkerId};

/// Who paused a queue, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// The name of the API token that paused it.
    pub by: TokenName,
    /// When.
    pub at: DateTime<Utc>,
}

/// The stored state of a queue. A queue that was never paused or resumed has no stored state
/// and is [`QueueState::default`]: not paused, version 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueState {
    /// Set while the queue is paused.
    pub paused: Option<Pause>,
    /// Bumped by every change; 0 while nothing was ever stored.
    pub version: u64,
    /// When it last changed; `None` while nothing was ever stored.
    pub updated_at: Option<DateTime<Utc>>,
}

impl QueueState {
    /// Whether a claim may take tasks from the queue: not while it is paused. Storage
    /// enforces this inside its claim; everything else (creates, heartbeats, completions, the
    /// reaper) works on a paused queue as on any other.
    pub fn is_claimable(&self) -> bool {
        self.paused.is_none()
    }

    /// The state after `by` pauses the queue at `now`; `None` when it is already paused, which
    /// keeps who paused it first and when (pausing is idempotent).
    pub fn pause(&self, by: &TokenName, now: DateTime<Utc>) -> Option<Self> {
        if self.paused.is_some() {
            return None;
        }
        let now = crate::to_micros(now);
        Some(Self {
            paused: Some(Pause { by: by.clone(), at: now }),
            version: self.version + 1,
            updated_at: Some(now),
        })
    }

    /// The state after the queue is resumed at `now`; `None` when it is not paused.
    pub fn resume(&self, now: DateTime<Utc>) -> Option<Self> {
        self.paused.as_ref()?;
        Some(Self {
            paused: None,
            version: self.version + 1,
            updated_at: Some(crate::to_micros(now)),
        })
    }
}

/// At most this many runnable tasks ahead of a task are counted; beyond, [`explain`] says
/// "at least".
pub const AHEAD_CAP: u32 = 10_000;

/// A claim this long ago, or none at all, counts as "no worker is claiming from the queue".
pub const CLAIM_IDLE_AFTER: TimeDelta = TimeDelta::seconds(10);

/// How many runnable tasks a claim takes before a task: those of its queue with a higher
/// priority, or the same priority and runnable earlier (the claim order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahead {
    /// How many were counted, at most [`AHEAD_CAP`].
    pub count: u64,
    /// Whether counting stopped at the cap: there may be more.
    pub capped: bool,
}

/// What [`explain`] reasons from, gathered by the application from storage and the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainFacts<'a> {
    /// The task as stored.
    pub task: &'a Task,
    /// Now, by the service's clock.
    pub now: DateTime<Utc>,
    /// The state of the task's queue.
    pub queue: &'a QueueState,
    /// The runnable tasks ahead of it; only known (and only asked for) while it is runnable.
    pub ahead: Option<Ahead>,
    /// The last claim this server answered that could take from the task's queue.
    pub last_claim_at: Option<DateTime<Utc>>,
    /// Since when this server has been watching claims (it remembers them in memory only).
    pub claims_watched_since: DateTime<Utc>,
    /// For a cancelled task, the name of the token that cancelled it, from its history.
    pub cancelled_by: Option<TokenName>,
}

/// One thing that stands between a task and a worker, or why it will never run again.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// PENDING with a run time in the future: delayed, or waiting out a retry's backoff.
    Scheduled {
        /// When it becomes runnable.
        run_at: DateTime<Utc>,
        /// Whether it waits for a retry (failed attempts count against it).
        retry: bool,
    },
    /// Its queue is paused: claims skip it.
    QueuePaused {
        /// The queue.
        queue: QueueName,
        /// Who paused it.
        by: TokenName,
        /// Since when.
        since: DateTime<Utc>,
    },
    /// Runnable tasks of its queue that a claim takes first.
    TasksAhead {
        /// The queue.
        queue: QueueName,
        /// How many.
        ahead: Ahead,
    },
    /// This server has answered no claim that could take from its queue for a while.
    NoRecentClaim {
        /// The queue.
        queue: QueueName,
        /// The last such claim, if this server saw one.
        last_claim_at: Option<DateTime<Utc>>,
        /// How long ago that was (or since this server began watching), in whole seconds.
        idle_seconds: i64,
    },
    /// A worker holds it.
    Running {
        /// The worker.
        worker: WorkerId,
        /// When the attempt started.
        started_at: DateTime<Utc>,
        /// When its lease runs out unless heartbeated.
        lease_expires_at: DateTime<Utc>,
        /// The last time its worker was heard from: the start or the last heartbeat.
        last_heard_at: DateTime<Utc>,
        /// Whether the lease already ran out (the reaper will take the task back).
        lease_expired: bool,
    },
    /// It succeeded.
    Succeeded {
        /// When.
        at: Option<DateTime<Utc>>,
    },
    /// Every attempt failed.
    AttemptsExhausted {
        /// How many attempts failed.
        attempts: u32,
        /// When it failed for good.
        at: Option<DateTime<Utc>>,
    },
    /// Its leases expired as often as its crash budget allows (its workers died or hung
    /// on it), so it was taken out of the queue.
    Quarantined {
        /// How many times its lease expired.
        crashes: u32,
        /// When it was quarantined.
        at: Option<DateTime<Utc>>,
    },
    /// Its worker reported a failure that no retry can fix.
    NonRetryable {
        /// When.
        at: Option<DateTime<Utc>>,
    },
    /// It was cancelled.
    Cancelled {
        /// The token that cancelled it, when its history names one.
        by: Option<TokenName>,
        /// When.
        at: Option<DateTime<Utc>>,
    },
}

/// Every code a [`Reason`] can have, in the order [`explain`] lists them.
pub const REASON_CODES: [&str; 10] = [
    "SCHEDULED",
    "QUEUE_PAUSED",
    "TASKS_AHEAD",
    "NO_RECENT_CLAIM",
    "RUNNING",
    "SUCCEEDED",
    "ATTEMPTS_EXHAUSTED",
    "QUARANTINED",
    "NON_RETRYABLE",
    "CANCELLED",
];

fn when(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(String::new, |at| format!(" at {}", at.format("%Y-%m-%dT%H:%M:%S%.6fZ")))
}

fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Reason {
    /// The stable code clients switch on: one of [`REASON_CODES`].
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Scheduled { .. } => "SCHEDULED",
            Self::QueuePaused { .. } => "QUEUE_PAUSED",
            Self::TasksAhead { .. } => "TASKS_AHEAD",
            Self::NoRecentClaim { .. } => "NO_RECENT_CLAIM",
            Self::Running { .. } => "RUNNING",
            Self::Succeeded { .. } => "SUCCEEDED",
            Self::AttemptsExhausted { .. } => "ATTEMPTS_EXHAUSTED",
            Self::Quarantined { .. } => "QUARANTINED",
            Self::NonRetryable { .. } => "NON_RETRYABLE",
            Self::Cancelled { .. } => "CANCELLED",
        }
    }

    /// The reason as a sentence for people.
    pub fn message(&self) -> String {
        match self {
            Self::Scheduled { run_at, retry: false } => {
                format!("It is scheduled to run at {}.", instant(*run_at))
            }
            Self::Scheduled { run_at, retry: true } => {
                format!("An attempt failed; the retry is scheduled for {}.", instant(*run_at))
            }
            Self::QueuePaused { queue, by, since } => format!(
                "Its queue {queue} is paused (by {by} since {}): claims take nothing from it until it is resumed.",
                instant(*since)
            ),
            Self::TasksAhead { queue, ahead } => {
                let n = ahead.count;
                let tasks = if n == 1 { "task" } else { "tasks" };
                let at_least = if ahead.capped { "at least " } else { "" };
                format!(
                    "{at_least}{n} runnable {tasks} of queue {queue} at equal or higher priority will be claimed before it."
                )
            }
            Self::NoRecentClaim { queue, last_claim_at: Some(at), idle_seconds } => format!(
                "No worker has claimed from queue {queue} on this server for {idle_seconds} s (last claim at {}).",
                instant(*at)
            ),
            Self::NoRecentClaim { queue, last_claim_at: None, idle_seconds } => format!(
                "No worker has claimed from queue {queue} on this server since it started {idle_seconds} s ago."
            ),
            Self::Running { worker, lease_expires_at, last_heard_at, lease_expired: false, .. } => {
                format!(
                    "It is running: worker {worker} holds it under a lease until {}; last heard from at {}.",
                    instant(*lease_expires_at),
                    instant(*last_heard_at)
                )
            }
            Self::Running { worker, lease_expires_at, last_heard_at, lease_expired: true, .. } => {
                format!(
                    "Worker {worker} held it under a lease that ran out at {} (last heard from at {}); the reaper will take it back.",
                    instant(*lease_expires_at),
                    instant(*last_heard_at)
                )
            }
            Self::Succeeded { at } => format!("It succeeded{}; it will not run again.", when(*at)),
            Self::AttemptsExhausted { attempts, at } => format!(
                "It failed{}: all {attempts} attempts failed. Rerun it to try again.",
                when(*at)
            ),
            Self::Quarantined { crashes, at } => format!(
                "It was quarantined{}: its lease expired {crashes} times (its workers died or hung on it), its whole crash budget. Rerun it to try again.",
                when(*at)
            ),
            Self::NonRetryable { at } => format!(
                "It failed{}: its worker reported a failure that no retry can fix. Rerun it to try again.",
                when(*at)
            ),
            Self::Cancelled { by: Some(by), at } => {
                format!("It was cancelled by {by}{}. Rerun it to run it again.", when(*at))
            }
            Self::Cancelled { by: None, at } => {
                format!("It was cancelled{}. Rerun it to run it again.", when(*at))
            }
        }
    }
}

/// What [`explain`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Whether a claim would take the task now (PENDING, due, its queue not paused); it may
    /// still wait behind others ([`Reason::TasksAhead`]).
    pub runnable: bool,
    /// What stands between it and a worker, in the order of [`REASON_CODES`]; empty when a
    /// claim would take it next.
    pub reasons: Vec<Reason>,
}

/// Why the task is not running, from the facts: the one table of which reasons apply.
///
/// | task | reasons |
/// | --- | --- |
/// | SUCCEEDED | `SUCCEEDED` |
/// | FAILED | `QUARANTINED` when its crash budget ran out, `NON_RETRYABLE` when its worker said so, else `ATTEMPTS_EXHAUSTED` |
/// | CANCELLED | `CANCELLED` (by the token its history names) |
/// | RUNNING | `RUNNING` (worker, lease expiry, last heard from) |
/// | PENDING, not due | `SCHEDULED`, then `QUEUE_PAUSED` if paused |
/// | PENDING, due | `QUEUE_PAUSED` if paused; `TASKS_AHEAD` if any; `NO_RECENT_CLAIM` if not paused and no claim for [`CLAIM_IDLE_AFTER`] |
pub fn explain(facts: &ExplainFacts<'_>) -> Explanation {
    let task = facts.task;
    let completed = task.completed_at();
    let reasons = match task.state() {
        TaskState::Succeeded { .. } => vec![Reason::Succeeded { at: completed }],
        TaskState::Failed { .. } => {
            let non_retryable = task.retry_state() == RetryState::NonRetryable
                || task.last_ended().is_some_and(|e| e.end == AttemptEnd::FailedPermanently);
            if task.retry_state() == RetryState::Quarantined {
                vec![Reason::Quarantined { crashes: task.crash_count(), at: completed }]
            } else if non_retryable {
                vec![Reason::NonRetryable { at: completed }]
            } else {
                vec![Reason::AttemptsExhausted { attempts: task.attempt_count(), at: completed }]
            }
        }
        TaskState::Cancelled { .. } => {
            vec![Reason::Cancelled { by: facts.cancelled_by.clone(), at: completed }]
        }
        TaskState::Running { worker_id, started_at, lease } => vec![Reason::Running {
            worker: worker_id.clone(),
            started_at: *started_at,
            lease_expires_at: lease.expires_at,
            last_heard_at: task.updated_at(),
            lease_expired: lease.expires_at <= facts.now,
        }],
        TaskState::Pending { next_run_at } => pending_reasons(facts, *next_run_at),
    };
    let runnable = task.is_runnable_at(facts.now) && facts.queue.is_claimable();
    Explanation { runnable, reasons }
}

fn pending_reasons(facts: &ExplainFacts<'_>, next_run_at: Option<DateTime<Utc>>) -> Vec<Reason> {
    let queue = facts.task.queue().clone();
    let mut reasons = Vec::new();
    let due = next_run_at.is_none_or(|at| at <= facts.now);
    if let Some(run_at) = next_run_at.filter(|_| !due) {
        let retry = facts.task.retry_state() == RetryState::RetryScheduled;
        reasons.push(Reason::Scheduled { run_at, retry });
    }
    if let Some(pause) = &facts.queue.paused {
        reasons.push(Reason::QueuePaused {
            queue: queue.clone(),
            by: pause.by.clone(),
            since: pause.at,
        });
    }
    if !due {
        return reasons;
    }
    if let Some(ahead) = facts.ahead.filter(|a| a.count > 0) {
        reasons.push(Reason::TasksAhead { queue: queue.clone(), ahead });
    }
    if facts.queue.is_claimable() {
        let since = facts.last_claim_at.unwrap_or(facts.claims_watched_since);
        let idle = facts.now - since;
        if idle >= CLAIM_IDLE_AFTER {
            reasons.push(Reason::NoRecentClaim {
                queue,
                last_claim_at: facts.last_claim_at,
                idle_seconds: idle.num_seconds(),
            });
        }
    }
    reasons
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::{Reporter, TaskStatus};

    fn name(n: &str) -> TokenName {
        TokenName::parse(n).unwrap()
    }

    fn paused_at(at: DateTime<Utc>) -> QueueState {
        QueueState::default().pause(&name("ops"), at).unwrap()
    }

    #[test]
    fn pausing_is_idempotent_and_resuming_makes_the_queue_claimable_again() {
        let fresh = QueueState::default();
        assert!(fresh.is_claimable());
        assert_eq!(fresh.resume(t0()), None, "resuming a queue that is not paused changes nothing");

        let paused = fresh.pause(&name("ops"), t0()).unwrap();
        assert!(!paused.is_claimable());
        assert_eq!(paused.paused, Some(Pause { by: name("ops"), at: t0() }));
        assert_eq!((paused.version, paused.updated_at), (1, Some(t0())));
        assert_eq!(paused.pause(&name("other"), t0() + secs(5)), None, "the first pause stays");

        let resumed = paused.resume(t0() + secs(9)).unwrap();
        assert!(resumed.is_claimable());
        assert_eq!((resumed.version, resumed.updated_at), (2, Some(t0() + secs(9))));
    }

    /// Facts for `task` with an unpaused queue, a claim a second ago, nothing ahead.
    fn facts<'a>(task: &'a Task, queue: &'a QueueState, now: DateTime<Utc>) -> ExplainFacts<'a> {
        ExplainFacts {
            task,
            now,
            queue,
            ahead: task.is_runnable_at(now).then_some(Ahead { count: 0, capped: false }),
            last_claim_at: Some(now - secs(1)),
            claims_watched_since: t0() - secs(3600),
            cancelled_by: None,
        }
    }

    fn codes(e: &Explanation) -> Vec<&'static str> {
        e.reasons.iter().map(Reason::code).collect()
    }

    #[test]
    fn a_runnable_task_next_in_line_has_no_reason_and_is_runnable() {
        let task = pending(3);
        let open = QueueState::default();
        let e = explain(&facts(&task, &open, t0()));
        assert!(e.runnable);
        assert!(e.reasons.is_empty(), "{e:?}");
    }

    #[test]
    fn a_delayed_task_is_scheduled_and_a_retry_says_so() {
        let run_at = t0() + secs(600);
        let task = Task::new(task_id(), spec(3, Some(run_at)), t0());
        let open = QueueState::default();
        let e = explain(&facts(&task, &open, t0()));
        assert!(!e.runnable);
        assert_eq!(e.reasons, vec![Reason::Scheduled { run_at, retry: false }]);
        assert!(e.reasons[0].message().contains("2026-01-01T12:10:00.000000Z"));

        let mut retried = running(3);
        retried.fail_and_schedule_retry(&Reporter::anyone(), "flaky", t0(), &BACKOFF).unwrap();
        let e = explain(&facts(&retried, &open, t0()));
        assert_eq!(e.reasons, vec![Reason::Scheduled { run_at: t0() + secs(30), retry: true }]);
        assert!(e.reasons[0].message().contains("retry"));
    }

    #[test]
    fn a_paused_queue_stops_a_due_task_and_names_who_paused_it() {
        let task = pending(3);
        let paused = paused_at(t0() - secs(60));
        let mut f = facts(&task, &paused, t0());
        f.last_claim_at = None;
        let e = explain(&f);
        assert!(!e.runnable);
        // No NO_RECENT_CLAIM: claims skip a paused queue by design.
        assert_eq!(codes(&e), ["QUEUE_PAUSED"]);
        assert!(e.reasons[0].message().contains("by ops since 2026-01-01T11:59:00.000000Z"));

        let later = Task::new(task_id(), spec(3, Some(t0() + secs(5))), t0());
        let e = explain(&facts(&later, &paused, t0()));
        assert_eq!(codes(&e), ["SCHEDULED", "QUEUE_PAUSED"]);
    }

    #[test]
    fn tasks_ahead_are_counted_and_a_capped_count_says_at_least() {
        let task = pending(3);
        let open = QueueState::default();
        let mut f = facts(&task, &open, t0());
        f.ahead = Some(Ahead { count: 1, capped: false });
        let e = explain(&f);
        assert!(e.runnable, "waiting in line is still runnable");
        assert_eq!(codes(&e), ["TASKS_AHEAD"]);
        assert!(e.reasons[0].message().starts_with("1 runnable task of queue default"));

        f.ahead = Some(Ahead { count: u64::from(AHEAD_CAP), capped: true });
        let message = explain(&f).reasons[0].message();
        assert!(message.starts_with("at least 10000 runnable tasks"), "{message}");
    }

    #[test]
    fn no_claim_for_a_while_is_a_reason_and_so_is_none_since_the_server_started() {
        let task = pending(3);
        let open = QueueState::default();
        let mut f = facts(&task, &open, t0());
        f.last_claim_at = Some(t0() - CLAIM_IDLE_AFTER + secs(1));
        assert!(explain(&f).reasons.is_empty(), "a claim within the idle time");

        f.last_claim_at = Some(t0() - secs(42));
        let e = explain(&f);
        assert_eq!(
            e.reasons,
            vec![Reason::NoRecentClaim {
                queue: QueueName::default(),
                last_claim_at: Some(t0() - secs(42)),
                idle_seconds: 42,
            }]
        );
        assert!(e.reasons[0].message().contains("for 42 s"));

        f.last_claim_at = None;
        f.claims_watched_since = t0() - secs(300);
        let message = explain(&f).reasons[0].message();
        assert!(message.contains("since it started 300 s ago"), "{message}");
    }

    #[test]
    fn a_running_task_names_its_worker_lease_and_last_heartbeat() {
        let mut task = running(3);
        task.heartbeat(None, tok(1), lease(), t0() + secs(20)).unwrap();
        let open = QueueState::default();
        let e = explain(&facts(&task, &open, t0() + secs(30)));
        assert!(!e.runnable);
        assert_eq!(
            e.reasons,
            vec![Reason::Running {
                worker: worker("w1"),
                started_at: t0(),
                lease_expires_at: t0() + secs(80),
                last_heard_at: t0() + secs(20),
                lease_expired: false,
            }]
        );
        assert!(e.reasons[0].message().contains("worker w1 holds it"));

        let e = explain(&facts(&task, &open, t0() + secs(80)));
        assert!(e.reasons[0].message().contains("ran out"), "{e:?}");
    }

    #[test]
    fn a_terminal_task_says_why_it_will_not_run() {
        let open = QueueState::default();
        let cases = [
            (task_in(TaskStatus::Succeeded), "SUCCEEDED", "succeeded"),
            (failed(3), "ATTEMPTS_EXHAUSTED", "all 3 attempts failed"),
            (failed_permanently(3), "NON_RETRYABLE", "no retry can fix"),
            (quarantined(25, 3), "QUARANTINED", "lease expired 3 times"),
            (task_in(TaskStatus::Cancelled), "CANCELLED", "cancelled at"),
        ];
        for (task, code, words) in cases {
            let e = explain(&facts(&task, &open, t0() + secs(3600)));
            assert!(!e.runnable);
            assert_eq!(codes(&e), [code]);
            assert!(e.reasons[0].message().contains(words), "{code}: {}", e.reasons[0].message());
            assert!(task.status().is_terminal());
        }
        let cancelled = task_in(TaskStatus::Cancelled);
        let mut f = facts(&cancelled, &open, t0());
        f.cancelled_by = Some(name("billing-app"));
        assert!(explain(&f).reasons[0].message().contains("cancelled by billing-app"));
    }

    #[test]
    fn every_reason_code_is_listed_in_order() {
        let q = QueueName::default();
        let at = t0();
        let every = [
            Reason::Scheduled { run_at: at, retry: false },
            Reason::QueuePaused { queue: q.clone(), by: name("x"), since: at },
            Reason::TasksAhead { queue: q.clone(), ahead: Ahead { count: 2, capped: false } },
            Reason::NoRecentClaim { queue: q, last_claim_at: None, idle_seconds: 1 },
            Reason::Running {
                worker: worker("w"),
                started_at: at,
                lease_expires_at: at,
                last_heard_at: at,
                lease_expired: false,
            },
            Reason::Succeeded { at: None },
            Reason::AttemptsExhausted { attempts: 1, at: None },
            Reason::Quarantined { crashes: 3, at: None },
            Reason::NonRetryable { at: None },
            Reason::Cancelled { by: None, at: None },
        ];
        assert_eq!(every.map(|r| r.code()), REASON_CODES);
    }
}
