//! A success stated in advance: what [`Task::succeed`] does to any task that is running the
//! attempt a report speaks for, as a guarded patch that storage can apply without reading
//! the task first.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Task, TaskRecord};
use crate::{
    to_micros, AttemptEnd, AttemptHistory, FencedCall, LeaseToken, Reporter, RetryState,
    TaskStatus, Verdict, WorkerId,
};

/// Which stored tasks a [`LiveSuccess`] applies to: those RUNNING the attempt of `token`,
/// held by `worker` when the report named one.
///
/// That is exactly the history [`AttemptHistory::LiveToken`] `{ other_worker: false }`, on
/// which the fencing table applies a success whatever else the task holds (its lease may
/// even have run out: only the reaper ends an attempt for that). A task the guard does not
/// match is for the full path, which reads it and asks the fencing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAttemptGuard {
    token: LeaseToken,
    worker: Option<WorkerId>,
}

impl LiveAttemptGuard {
    /// The status a matching task is in: [`TaskStatus::Running`].
    pub const STATUS: TaskStatus = TaskStatus::Running;

    /// The live attempt's token the stored task must hold.
    pub fn token(&self) -> LeaseToken {
        self.token
    }

    /// The worker the stored task must be held by, when the report named one.
    pub fn worker(&self) -> Option<&WorkerId> {
        self.worker.as_ref()
    }

    /// Whether `record` is a task this guard lets the patch apply to.
    pub fn matches(&self, record: &TaskRecord) -> bool {
        record.status == Self::STATUS
            && record.lease_token == Some(self.token)
            && self.worker.as_ref().is_none_or(|w| record.worker_id.as_ref() == Some(w))
    }
}

/// A success of the live attempt as a guarded patch: where [`LiveAttemptGuard`] matches,
/// the stored task becomes what [`Task::succeed`] would make of it, and a task it does not
/// match is left alone.
///
/// Applied to a matching task, every field changes as follows; the others keep their value:
///
/// | field | becomes |
/// | --- | --- |
/// | `status` | [`LiveSuccess::STATUS`] (SUCCEEDED) |
/// | `result` | [`LiveSuccess::result`] |
/// | `completed_at` | [`LiveSuccess::now`] |
/// | `ended_attempt`, `ended_attempt_token`, `ended_attempt_end` | the stored `attempt`, the guard's token, [`LiveSuccess::ENDED_AS`] (SUCCEEDED) |
/// | `lease_token`, `lease_expires_at`, `worker_id`, `processing_started_at`, `next_run_at` | none |
/// | `retry_state` | [`LiveSuccess::RETRY_STATE`] (NONE) |
/// | `last_error` | none |
/// | `updated_at` | the later of [`LiveSuccess::now`] and the stored `created_at` |
/// | `version` | the stored version plus one |
///
/// [`LiveSuccess::apply`] is that table in code; a property test holds it equal to
/// [`Task::succeed`] on every running task a random lifecycle reaches, and a storage adapter
/// translates the same table into one conditional write.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSuccess {
    guard: LiveAttemptGuard,
    result: Option<Value>,
    now: DateTime<Utc>,
}

impl LiveSuccess {
    /// The status a matching task gets.
    pub const STATUS: TaskStatus = TaskStatus::Succeeded;
    /// How the live attempt ends.
    pub const ENDED_AS: AttemptEnd = AttemptEnd::Succeeded;
    /// The retry state a matching task gets.
    pub const RETRY_STATE: RetryState = RetryState::None;

    /// Which tasks it applies to.
    pub fn guard(&self) -> &LiveAttemptGuard {
        &self.guard
    }

    /// What the worker reported.
    pub fn result(&self) -> Option<&Value> {
        self.result.as_ref()
    }

    /// Gives back what the worker reported, for the full path when the guard did not match.
    pub fn into_result(self) -> Option<Value> {
        self.result
    }

    /// The instant of the success, to the microsecond: the task's `completed_at`, and its
    /// `updated_at` unless it was created later (a clock that stepped back).
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// `record` with the patch applied, or `None` when the guard does not match it.
    pub fn apply(&self, record: &TaskRecord) -> Option<TaskRecord> {
        if !self.guard.matches(record) {
            return None;
        }
        Some(TaskRecord {
            status: Self::STATUS,
            result: self.result.clone(),
            completed_at: Some(self.now),
            ended_attempt: Some(record.attempt),
            ended_attempt_token: Some(self.guard.token),
            ended_attempt_end: Some(Self::ENDED_AS),
            lease_token: None,
            lease_expires_at: None,
            worker_id: None,
            processing_started_at: None,
            next_run_at: None,
            retry_state: Self::RETRY_STATE,
            last_error: None,
            updated_at: self.now.max(record.created_at),
            version: record.version + 1,
            ..record.clone()
        })
    }
}

impl Task {
    /// What a success reported by `reporter` does to a task that runs the attempt of the
    /// report's token, stated before the task is read; `None` for a report without a token,
    /// which only the full path judges.
    ///
    /// On [`AttemptHistory::LiveToken`] `{ other_worker: false }` the fencing table answers
    /// [`Verdict::Apply`] for [`FencedCall::Succeed`], so the success can be written wherever
    /// the guard matches; on any other history the guard does not match.
    pub fn success_for_live_attempt(
        reporter: &Reporter,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Option<LiveSuccess> {
        const LIVE: AttemptHistory = AttemptHistory::LiveToken { other_worker: false };
        const _: () = assert!(
            matches!(FencedCall::Succeed.verdict(LIVE), Verdict::Apply),
            "a success of the live attempt applies whatever else the task holds"
        );
        let token = reporter.lease_token?;
        Some(LiveSuccess {
            guard: LiveAttemptGuard { token, worker: reporter.worker_id.clone() },
            result,
            now: to_micros(now),
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::test_support::{fenced, running, secs, start, t0, tok, worker, BACKOFF};

    #[test]
    fn a_report_without_a_token_has_no_live_success() {
        let reporter = Reporter::worker(worker("w1"));

        assert_eq!(Task::success_for_live_attempt(&reporter, None, t0()), None);
    }

    #[test]
    fn the_live_success_of_the_holder_is_what_succeed_makes() {
        let task = running(3);
        let reporter = Reporter::lease(Some(worker("w1")), tok(1));
        let at = t0() + secs(5);
        let patch = Task::success_for_live_attempt(&reporter, Some(json!({"n": 1})), at).unwrap();
        let mut succeeded = task.clone();

        succeeded.succeed(&reporter, Some(json!({"n": 1})), at).unwrap();

        assert_eq!(patch.apply(&task.to_record()), Some(succeeded.to_record()));
    }

    #[test]
    fn the_guard_leaves_another_workers_and_other_attempts_tasks_alone() {
        let mut retried = running(3);
        retried.fail_and_schedule_retry(&fenced(1), "boom", t0(), &BACKOFF).unwrap();
        let mut restarted = retried.clone();
        start(&mut restarted, "w1", t0() + secs(30)).unwrap();
        let cases = [
            (running(3), Reporter::lease(Some(worker("w2")), tok(1))),
            (running(3), Reporter::lease(None, tok(2))),
            (retried, fenced(1)),
            (restarted, fenced(1)),
        ];

        for (task, reporter) in cases {
            let patch = Task::success_for_live_attempt(&reporter, None, t0() + secs(40)).unwrap();

            assert_eq!(patch.apply(&task.to_record()), None, "{reporter:?} on {task:?}");
        }
    }

    #[test]
    fn updated_at_never_precedes_creation_even_when_the_clock_stepped_back() {
        let task = running(3);
        let patch = Task::success_for_live_attempt(&fenced(1), None, t0() - secs(10)).unwrap();

        let applied = patch.apply(&task.to_record()).unwrap();

        assert_eq!((applied.completed_at, applied.updated_at), (Some(t0() - secs(10)), t0()));
        Task::restore(applied).unwrap();
    }
}
