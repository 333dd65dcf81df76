//! A task's history: every transition and every refused stale call.

use chrono::{DateTime, Utc};
use taskpilot_domain::{StaleLease, Task, TaskId, TaskStatus, TokenName, WorkerId};

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A REST client (create, cancel, rerun).
    Client,
    /// A worker (start, claim, succeed, fail, heartbeat).
    Worker,
    /// The lease reaper of some server.
    Reaper,
}

impl Actor {
    /// The spelling storage and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "CLIENT",
            Self::Worker => "WORKER",
            Self::Reaper => "REAPER",
        }
    }

    /// Reads [`Actor::as_str`]'s spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Client, Self::Worker, Self::Reaper].into_iter().find(|a| a.as_str() == raw)
    }
}

/// The call a stale worker made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaleCall {
    /// A success report.
    Succeed,
    /// A failure report.
    Fail,
    /// A heartbeat.
    Heartbeat,
    /// A release: a stopping worker handing its task back unfinished.
    Release,
}

impl StaleCall {
    /// The spelling storage and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeed => "SUCCEED",
            Self::Fail => "FAIL",
            Self::Heartbeat => "HEARTBEAT",
            Self::Release => "RELEASE",
        }
    }

    /// Reads [`StaleCall::as_str`]'s spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Succeed, Self::Fail, Self::Heartbeat, Self::Release]
            .into_iter()
            .find(|c| c.as_str() == raw)
    }
}

/// What an entry of a task's history records, read from what it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The task was created.
    Created,
    /// An attempt started (a claim or a start).
    Started,
    /// The attempt succeeded.
    Succeeded,
    /// The attempt failed and the task failed for good (no attempts left, or not retryable).
    Failed,
    /// The attempt failed and another is scheduled.
    RetryScheduled,
    /// The worker handed the task back unfinished.
    Released,
    /// The attempt's lease ran out and the reaper ended it: a retry, failed for good, or
    /// (the task's crash budget used up) quarantined, FAILED with retry state QUARANTINED and
    /// an error that says so.
    LeaseExpired,
    /// The task was cancelled.
    Cancelled,
    /// A failed or cancelled task was put back with a fresh budget.
    Rerun,
    /// A call from a stale attempt was refused; the task did not change.
    RefusedCall,
}

impl EventKind {
    /// The spelling the API uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Started => "STARTED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::RetryScheduled => "RETRY_SCHEDULED",
            Self::Released => "RELEASED",
            Self::LeaseExpired => "LEASE_EXPIRED",
            Self::Cancelled => "CANCELLED",
            Self::Rerun => "RERUN",
            Self::RefusedCall => "REFUSED_CALL",
        }
    }
}

/// A refused stale call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its code: `LEASE_EXPIRED`, `ATTEMPT_SUPERSEDED`, `TASK_CANCELLED` or `OUTCOME_CONFLICT`.
    pub code: String,
    /// What the worker tried.
    pub call: StaleCall,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// The task.
    pub task_id: TaskId,
    /// The attempt the event belongs to (0 before the first start).
    pub attempt: u32,
    /// The status before; `None` for creation.
    pub from: Option<TaskStatus>,
    /// The status after; for a refused call, the status the task stayed in.
    pub to: TaskStatus,
    /// The worker involved, if any.
    pub worker_id: Option<WorkerId>,
    /// The error recorded by a failure, or why a stale call was refused.
    pub error: Option<String>,
    /// Who caused it.
    pub actor: Actor,
    /// For a refused stale call, what was refused and why; `None` for a transition.
    pub rejected: Option<Rejection>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The name of the API token the call was made with; `None` for the reaper, and for a
    /// server running without tokens.
    pub token: Option<TokenName>,
}

impl TaskEvent {
    /// What this entry records. One table over what every entry stores (the statuses before
    /// and after, who acted, whether a failure was recorded, whether it was a refusal), so
    /// that history written before kinds existed reads the same as new history.
    pub fn kind(&self) -> EventKind {
        use TaskStatus::{Cancelled, Failed, Pending, Running, Succeeded};
        if self.rejected.is_some() {
            return EventKind::RefusedCall;
        }
        match (self.from, self.to, self.actor) {
            (None, _, _) => EventKind::Created,
            (Some(_), Running, _) => EventKind::Started,
            (Some(_), Succeeded, _) => EventKind::Succeeded,
            (Some(Running), Pending | Failed, Actor::Reaper) => EventKind::LeaseExpired,
            (Some(_), Failed, _) => EventKind::Failed,
            (Some(Running), Pending, _) if self.error.is_some() => EventKind::RetryScheduled,
            (Some(Running), Pending, _) => EventKind::Released,
            (Some(_), Cancelled, _) => EventKind::Cancelled,
            (Some(Failed | Cancelled), Pending, _) => EventKind::Rerun,
            // No transition ends here (a pending or finished task is never put back to
            // pending but by a rerun); a stored row that does reads as the nearest kind.
            (Some(Pending | Succeeded), Pending, _) => EventKind::Rerun,
        }
    }

    /// The transition that turned `before` into `after`.
    pub fn transition(before: Option<&Task>, after: &Task, actor: Actor) -> Self {
        let worker_id = after.worker_id().or_else(|| before.and_then(Task::worker_id)).cloned();
        // `attempt_count` counts failed attempts since creation or the last rerun, so it rises
        // exactly when this transition recorded a failure.
        let failed = after.attempt_count() > before.map_or(0, Task::attempt_count);
        Self {
            task_id: after.id(),
            attempt: after.attempt(),
            from: before.map(Task::status),
            to: after.status(),
            worker_id,
            error: if failed { after.last_error().map(str::to_owned) } else { None },
            actor,
            rejected: None,
            at: after.updated_at(),
            token: None,
        }
    }

    /// The same entry, recorded as written for the API token named `token`.
    #[must_use]
    pub fn by(mut self, token: Option<TokenName>) -> Self {
        self.token = token;
        self
    }

    /// A call refused because its lease token was stale, filed under the caller's attempt
    /// when the task knows it, else the task's current one.
    pub fn rejection(
        task: &Task,
        worker_id: Option<WorkerId>,
        call: StaleCall,
        refusal: &StaleLease,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            task_id: task.id(),
            attempt: refusal.caller_attempt().unwrap_or(task.attempt()),
            from: Some(task.status()),
            to: task.status(),
            worker_id,
            error: Some(refusal.to_string()),
            actor: Actor::Worker,
            rejected: Some(Rejection { code: refusal.code().to_owned(), call }),
            at,
            token: None,
        }
    }
}

/// How many stale calls of one kind were refused, across every server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectionCount {
    /// The refusal's code.
    pub code: String,
    /// What was refused. A refused `SUCCEED` is direct evidence that a task ran twice.
    pub call: StaleCall,
    /// How many times.
    pub count: u64,
}

impl RejectionCount {
    /// Whether these refusals are evidence that a task ran twice: successes refused because
    /// their attempt had lost its lease (the domain's [`StaleLease::LOST_LEASE_CODES`]).
    pub fn shows_a_second_run(&self) -> bool {
        self.call == StaleCall::Succeed
            && StaleLease::LOST_LEASE_CODES.contains(&self.code.as_str())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use serde_json::json;
    use taskpilot_domain::{
        FixedBackoff, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName, Reporter,
        TaskName,
    };
    use uuid::Uuid;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn running() -> Task {
        let spec = NewTask {
            queue: QueueName::default_queue(),
            name: TaskName::parse("send-email").unwrap(),
            payload: json!({}),
            priority: 0,
            max_attempts: MaxAttempts::new(3).unwrap(),
            run_at: None,
            unique_key: None,
        };
        let mut task = Task::new(TaskId::from_uuid(Uuid::from_u128(1)), spec, t0());
        let token = LeaseToken::from_uuid(Uuid::from_u128(0xa1));
        let lease = LeaseDuration::from_secs(60).unwrap();
        task.start(&WorkerId::parse("w1").unwrap(), token, lease, t0()).unwrap();
        task
    }

    #[test]
    fn a_quarantining_expiry_reads_as_lease_expired_into_failed_with_the_quarantine_error() {
        let before = running().with_max_crashes(taskpilot_domain::MaxCrashes::new(1).unwrap());
        let mut after = before.clone();
        after
            .expire_lease(t0() + TimeDelta::seconds(60), &FixedBackoff(TimeDelta::zero()))
            .unwrap();

        let event = TaskEvent::transition(Some(&before), &after, Actor::Reaper);

        assert_eq!(event.kind(), EventKind::LeaseExpired);
        assert_eq!((event.from, event.to), (Some(TaskStatus::Running), TaskStatus::Failed));
        assert_eq!(
            event.error.as_deref(),
            Some("quarantined: lease expired 1 time (last worker w1)")
        );
    }

    #[test]
    fn every_transition_is_read_back_as_its_kind() {
        let backoff = FixedBackoff(TimeDelta::seconds(30));
        let lease = LeaseDuration::from_secs(60).unwrap();
        let w1 = WorkerId::parse("w1").unwrap();
        let token = |n| LeaseToken::from_uuid(Uuid::from_u128(n));
        let holder = |n| Reporter::lease(Some(w1.clone()), token(n));
        let later = |s| t0() + TimeDelta::seconds(s);
        // Each step: the change, who made it, the kind its event must read as.
        type Step<'a> = (&'a str, Box<dyn Fn(&mut Task) + 'a>, Actor, EventKind);
        let steps: Vec<Step<'_>> = vec![
            (
                "fail with attempts left",
                Box::new(|t| {
                    t.fail_and_schedule_retry(&holder(0xa1), "smtp", later(1), &backoff).unwrap();
                }),
                Actor::Worker,
                EventKind::RetryScheduled,
            ),
            (
                "start the retry",
                Box::new(|t| t.start(&w1, token(2), lease, later(60)).unwrap()),
                Actor::Worker,
                EventKind::Started,
            ),
            (
                "release",
                Box::new(|t| {
                    t.release(&holder(2), later(61)).unwrap();
                }),
                Actor::Worker,
                EventKind::Released,
            ),
            (
                "start again",
                Box::new(|t| t.start(&w1, token(3), lease, later(62)).unwrap()),
                Actor::Worker,
                EventKind::Started,
            ),
            (
                "the lease runs out",
                Box::new(|t| t.expire_lease(later(200), &backoff).unwrap()),
                Actor::Reaper,
                EventKind::LeaseExpired,
            ),
            (
                "start the last attempt",
                Box::new(|t| t.start(&w1, token(4), lease, later(300)).unwrap()),
                Actor::Worker,
                EventKind::Started,
            ),
            (
                "the last lease runs out",
                Box::new(|t| t.expire_lease(later(400), &backoff).unwrap()),
                Actor::Reaper,
                EventKind::LeaseExpired,
            ),
            ("rerun", Box::new(|t| t.rerun(later(401)).unwrap()), Actor::Client, EventKind::Rerun),
            (
                "start after the rerun",
                Box::new(|t| t.start(&w1, token(5), lease, later(402)).unwrap()),
                Actor::Worker,
                EventKind::Started,
            ),
            (
                "fail for good",
                Box::new(|t| {
                    t.fail_permanently(&holder(5), "bad", later(403)).unwrap();
                }),
                Actor::Worker,
                EventKind::Failed,
            ),
            (
                "rerun again",
                Box::new(|t| t.rerun(later(404)).unwrap()),
                Actor::Client,
                EventKind::Rerun,
            ),
            (
                "cancel while pending",
                Box::new(|t| t.cancel(later(405)).unwrap()),
                Actor::Client,
                EventKind::Cancelled,
            ),
            (
                "rerun the cancelled",
                Box::new(|t| t.rerun(later(406)).unwrap()),
                Actor::Client,
                EventKind::Rerun,
            ),
            (
                "start once more",
                Box::new(|t| t.start(&w1, token(6), lease, later(407)).unwrap()),
                Actor::Worker,
                EventKind::Started,
            ),
            (
                "succeed",
                Box::new(|t| {
                    t.succeed(&holder(6), None, later(408)).unwrap();
                }),
                Actor::Worker,
                EventKind::Succeeded,
            ),
        ];
        let mut task = running();
        let created = TaskEvent::transition(None, &task, Actor::Client);
        assert_eq!(created.kind(), EventKind::Created);

        for (what, change, actor, kind) in &steps {
            let before = task.clone();
            change(&mut task);

            let event = TaskEvent::transition(Some(&before), &task, *actor);

            assert_eq!(event.kind(), *kind, "{what}");
        }
        let stale = StaleLease::AttemptSuperseded { task: task.id(), current: task.attempt() };
        let refused = TaskEvent::rejection(&task, None, StaleCall::Succeed, &stale, later(500));
        assert_eq!(refused.kind(), EventKind::RefusedCall);
    }

    #[test]
    fn a_cancel_while_running_reads_as_cancelled() {
        let mut task = running();
        let before = task.clone();
        task.cancel(t0()).unwrap();

        let event = TaskEvent::transition(Some(&before), &task, Actor::Client);

        assert_eq!(event.kind(), EventKind::Cancelled);
    }

    #[test]
    fn actors_and_stale_calls_read_back_what_they_spell() {
        for actor in [Actor::Client, Actor::Worker, Actor::Reaper] {
            assert_eq!(Actor::parse(actor.as_str()), Some(actor));
        }
        for call in [StaleCall::Succeed, StaleCall::Fail, StaleCall::Heartbeat, StaleCall::Release]
        {
            assert_eq!(StaleCall::parse(call.as_str()), Some(call));
        }
        assert_eq!(StaleCall::Release.as_str(), "RELEASE");
        assert_eq!(Actor::parse("client"), None);
        assert_eq!(StaleCall::parse("CLAIM"), None);
    }

    #[test]
    fn a_failure_event_names_the_worker_that_held_the_task_and_its_error() {
        let before = running();
        let mut after = before.clone();
        let later = t0() + TimeDelta::seconds(5);
        after
            .fail_and_schedule_retry(
                &Reporter::anyone(),
                "boom",
                later,
                &FixedBackoff(TimeDelta::zero()),
            )
            .unwrap();

        let event = TaskEvent::transition(Some(&before), &after, Actor::Worker);

        assert_eq!(
            event,
            TaskEvent {
                token: None,
                task_id: before.id(),
                attempt: 1,
                from: Some(TaskStatus::Running),
                to: TaskStatus::Pending,
                worker_id: Some(WorkerId::parse("w1").unwrap()),
                error: Some("boom".to_owned()),
                actor: Actor::Worker,
                rejected: None,
                at: later,
            }
        );
    }

    #[test]
    fn a_release_event_names_the_worker_that_held_the_task_and_carries_no_error() {
        let before = running();
        let mut after = before.clone();
        let later = t0() + TimeDelta::seconds(5);
        after.release(&Reporter::anyone(), later).unwrap();

        let event = TaskEvent::transition(Some(&before), &after, Actor::Worker);

        assert_eq!(
            (event.attempt, event.from, event.to),
            (1, Some(TaskStatus::Running), TaskStatus::Pending)
        );
        assert_eq!(event.worker_id, Some(WorkerId::parse("w1").unwrap()));
        assert_eq!(event.error, None, "a release records no failure");
        assert_eq!(event.at, later);
    }

    #[test]
    fn a_transition_that_records_no_failure_carries_no_error() {
        let before = running();
        let mut after = before.clone();
        after.cancel(t0()).unwrap();

        let event = TaskEvent::transition(Some(&before), &after, Actor::Client);

        assert_eq!(event.error, None);
        assert_eq!(event.worker_id, before.worker_id().cloned(), "the worker it was taken from");
    }

    #[test]
    fn a_rejection_leaves_the_status_as_it_was_and_says_why() {
        let task = running();

        let refusal =
            taskpilot_domain::StaleLease::AttemptSuperseded { task: task.id(), current: 1 };

        let event = TaskEvent::rejection(&task, None, StaleCall::Succeed, &refusal, t0());

        assert_eq!((event.from, event.to), (Some(TaskStatus::Running), TaskStatus::Running));
        assert_eq!(event.actor, Actor::Worker);
        assert_eq!(
            event.rejected,
            Some(Rejection { code: "ATTEMPT_SUPERSEDED".to_owned(), call: StaleCall::Succeed })
        );
        assert_eq!(event.error, Some(refusal.to_string()));
    }

    #[test]
    fn only_a_success_from_an_attempt_that_lost_its_lease_shows_a_second_run() {
        let count = |code: &str, call| RejectionCount { code: code.to_owned(), call, count: 1 };

        assert!(count("LEASE_EXPIRED", StaleCall::Succeed).shows_a_second_run());
        assert!(count("ATTEMPT_SUPERSEDED", StaleCall::Succeed).shows_a_second_run());
        assert!(!count("OUTCOME_CONFLICT", StaleCall::Succeed).shows_a_second_run());
        assert!(!count("TASK_CANCELLED", StaleCall::Succeed).shows_a_second_run());
        assert!(!count("LEASE_EXPIRED", StaleCall::Fail).shows_a_second_run());
        assert!(!count("LEASE_EXPIRED", StaleCall::Release).shows_a_second_run());
    }
}
