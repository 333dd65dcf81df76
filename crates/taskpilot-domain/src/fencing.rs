//! Fencing: which call speaks for which attempt, and what it gets.
//!
//! A worker's heartbeat or report carries the lease token of the attempt it speaks for, or no
//! token at all (clients that predate leases). What the task answers depends on two things
//! only: the kind of call ([`FencedCall`]) and what the task knows of the caller's attempt
//! ([`AttemptHistory`]). [`FencedCall::verdict`] is that rule, whole, in one table; the
//! transitions of [`Task`] ask it before they change anything.

use std::fmt;

use crate::{Action, DomainError, LeaseToken, StaleLease, Task, TaskState, WorkerId};

/// How an attempt ended; kept for the last ended attempt so that a late or repeated call
/// with its token gets a precise answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "SCREAMING_SNAKE_CASE")
)]
pub enum AttemptEnd {
    /// Its worker reported success.
    Succeeded,
    /// Its worker reported a failure that may be retried.
    Failed,
    /// Its worker reported a failure that no retry can fix.
    FailedPermanently,
    /// Its lease ran out and the reaper failed it.
    LeaseExpired,
    /// The task was cancelled while it ran.
    Cancelled,
    /// Its worker handed the task back unfinished (it was stopping): the task is runnable
    /// again at once, and the attempt counts as no failure.
    Released,
}

impl AttemptEnd {
    /// Every way an attempt ends.
    pub const ALL: [Self; 6] = [
        Self::Succeeded,
        Self::Failed,
        Self::FailedPermanently,
        Self::LeaseExpired,
        Self::Cancelled,
        Self::Released,
    ];

    /// The spelling that storage and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::FailedPermanently => "FAILED_PERMANENTLY",
            Self::LeaseExpired => "LEASE_EXPIRED",
            Self::Cancelled => "CANCELLED",
            Self::Released => "RELEASED",
        }
    }

    /// Reads [`AttemptEnd::as_str`]'s spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

impl fmt::Display for AttemptEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last attempt that ended, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedAttempt {
    /// Its number: the value [`Task::attempt`] had while it ran.
    pub attempt: u32,
    /// Its token.
    pub token: LeaseToken,
    /// How it ended.
    pub end: AttemptEnd,
}

/// Who reports on a running task, as far as they say.
///
/// A report with a lease token is fenced: it is accepted only from the live attempt, and a
/// repeat of an accepted report is recognised as such. Without a token only the worker id,
/// when given, is checked, for clients that predate leases. [`FencedCall::verdict`] has
/// every case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reporter {
    /// The worker, if it said who it is.
    pub worker_id: Option<WorkerId>,
    /// The attempt's token, if it sent one.
    pub lease_token: Option<LeaseToken>,
}

impl Reporter {
    /// A report that names nobody: accepted from anyone while the task runs.
    pub fn anyone() -> Self {
        Self::default()
    }

    /// A report that names its worker but carries no token.
    pub fn worker(worker_id: WorkerId) -> Self {
        Self { worker_id: Some(worker_id), lease_token: None }
    }

    /// A fenced report from the holder of `token`.
    pub fn lease(worker_id: Option<WorkerId>, token: LeaseToken) -> Self {
        Self { worker_id, lease_token: Some(token) }
    }
}

/// What an accepted report did. A replay changed nothing and must not be stored again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The task changed; store it.
    Changed,
    /// The same report was accepted before (its answer was probably lost); nothing changed.
    Replayed,
}

/// A call that speaks for an attempt of a task, and so is fenced by its lease token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FencedCall {
    /// [`Task::heartbeat`]: extend the lease.
    Heartbeat,
    /// [`Task::succeed`].
    Succeed,
    /// [`Task::fail_and_schedule_retry`].
    Fail,
    /// [`Task::fail_permanently`].
    FailPermanently,
    /// [`Task::release`].
    Release,
}

/// What the task knows of the attempt a call speaks for: everything the verdict depends on.
///
/// [`AttemptHistory::of`] computes it from the task and the [`Reporter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptHistory {
    /// The call carries the running attempt's token.
    LiveToken {
        /// The call names a worker other than the one that holds the task.
        other_worker: bool,
    },
    /// The call carries no token, and the task is running.
    NoTokenRunning {
        /// The call names a worker other than the one that holds the task.
        other_worker: bool,
    },
    /// The call carries no token, and the task is not running.
    NoTokenNotRunning,
    /// The token is neither the running attempt's nor the last ended attempt's: an older
    /// attempt's, or one the task never handed out.
    UnknownToken,
    /// The token is the last ended attempt's.
    EndedToken {
        /// How that attempt ended.
        end: AttemptEnd,
        /// A newer attempt has started since (and so holds the task now).
        superseded: bool,
    },
}

/// What a fenced call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The call speaks for the live attempt: the transition applies.
    Apply,
    /// The call repeats how its attempt already ended: accepted, and nothing changes.
    Replay,
    /// The call is refused, and the task is left as it was.
    Refuse(Refusal),
}

/// Why a fenced call is refused; each maps to one [`DomainError`] and one stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// [`DomainError::WorkerMismatch`]: another worker holds the task.
    WorkerMismatch,
    /// [`DomainError::InvalidTransition`]: the task is not running, and the call is no stale
    /// one (it has no token, or it is a heartbeat racing its own attempt's report).
    InvalidTransition,
    /// [`StaleLease::LeaseExpired`].
    LeaseExpired,
    /// [`StaleLease::AttemptSuperseded`].
    AttemptSuperseded,
    /// [`StaleLease::TaskCancelled`].
    TaskCancelled,
    /// [`StaleLease::OutcomeConflict`].
    OutcomeConflict,
}

impl FencedCall {
    /// Every fenced call.
    pub const ALL: [Self; 5] =
        [Self::Heartbeat, Self::Succeed, Self::Fail, Self::FailPermanently, Self::Release];

    /// The transition named when the call is refused with [`Refusal::InvalidTransition`]. A
    /// permanent failure is a `fail` (the API's `fail` with `retryable: false`).
    pub const fn action(self) -> Action {
        match self {
            Self::Heartbeat => Action::Heartbeat,
            Self::Succeed => Action::Succeed,
            Self::Fail | Self::FailPermanently => Action::Fail,
            Self::Release => Action::Release,
        }
    }

    /// What this call gets on a task whose attempt history, seen from the call, is
    /// `history`: the whole fencing rule. Rows are read top down; the first that matches
    /// answers.
    ///
    /// A new call kind is a variant of [`FencedCall`] plus, if it differs from what the
    /// wildcards give, its rows; a new stale-token rule is one row above the rows it
    /// overrides. For instance, a `Snooze` call that ends its attempt as `Snoozed` and
    /// replays itself adds:
    ///
    /// ```text
    ///      (Release, EndedToken { end: End::Released, .. }) => Replay,
    /// +    (Snooze, EndedToken { end: End::Snoozed, .. }) => Replay,
    /// ```
    ///
    /// and telling the worker of a cancelled attempt `TASK_CANCELLED` even after a newer
    /// attempt started is, above the first `superseded: true` row:
    ///
    /// ```text
    /// +    (_, EndedToken { end: End::Cancelled, superseded: true }) => Refuse(TaskCancelled),
    /// ```
    pub const fn verdict(self, history: AttemptHistory) -> Verdict {
        use AttemptEnd as End;
        use AttemptHistory::{
            EndedToken, LiveToken, NoTokenNotRunning, NoTokenRunning, UnknownToken,
        };
        use FencedCall::{Fail, FailPermanently, Heartbeat, Release, Succeed};
        use Refusal::{
            AttemptSuperseded, InvalidTransition, LeaseExpired, OutcomeConflict, TaskCancelled,
            WorkerMismatch,
        };
        use Verdict::{Apply, Refuse, Replay};

        match (self, history) {
            // The live attempt, fenced by its token or (without one) by the worker id alone.
            (_, LiveToken { other_worker: false } | NoTokenRunning { other_worker: false }) => {
                Apply
            }
            (_, LiveToken { other_worker: true } | NoTokenRunning { other_worker: true }) => {
                Refuse(WorkerMismatch)
            }
            // Without a token, only a running task takes calls.
            (_, NoTokenNotRunning) => Refuse(InvalidTransition),
            (_, UnknownToken) => Refuse(AttemptSuperseded),
            // Once a newer attempt started, that is what the caller of a reaped or cancelled
            // attempt needs to know, and a heartbeat from any older attempt.
            (_, EndedToken { end: End::Cancelled | End::LeaseExpired, superseded: true }) => {
                Refuse(AttemptSuperseded)
            }
            (Heartbeat, EndedToken { superseded: true, .. }) => Refuse(AttemptSuperseded),
            (_, EndedToken { end: End::Cancelled, .. }) => Refuse(TaskCancelled),
            (_, EndedToken { end: End::LeaseExpired, .. }) => Refuse(LeaseExpired),
            // A heartbeat racing its own worker's report is no stale call, just late.
            (Heartbeat, EndedToken { .. }) => Refuse(InvalidTransition),
            // The same end again: the first answer was lost; it stands, and nothing changes.
            (Succeed, EndedToken { end: End::Succeeded, .. })
            | (Fail, EndedToken { end: End::Failed, .. })
            | (FailPermanently, EndedToken { end: End::FailedPermanently, .. })
            | (Release, EndedToken { end: End::Released, .. }) => Replay,
            (_, EndedToken { .. }) => Refuse(OutcomeConflict),
        }
    }
}

impl fmt::Display for FencedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Heartbeat => "heartbeat",
            Self::Succeed => "succeed",
            Self::Fail => "fail",
            Self::FailPermanently => "fail permanently",
            Self::Release => "release",
        })
    }
}

impl AttemptHistory {
    /// Every history a call can meet.
    pub const ALL: [Self; 18] = [
        Self::LiveToken { other_worker: false },
        Self::LiveToken { other_worker: true },
        Self::NoTokenRunning { other_worker: false },
        Self::NoTokenRunning { other_worker: true },
        Self::NoTokenNotRunning,
        Self::UnknownToken,
        Self::EndedToken { end: AttemptEnd::Succeeded, superseded: false },
        Self::EndedToken { end: AttemptEnd::Succeeded, superseded: true },
        Self::EndedToken { end: AttemptEnd::Failed, superseded: false },
        Self::EndedToken { end: AttemptEnd::Failed, superseded: true },
        Self::EndedToken { end: AttemptEnd::FailedPermanently, superseded: false },
        Self::EndedToken { end: AttemptEnd::FailedPermanently, superseded: true },
        Self::EndedToken { end: AttemptEnd::LeaseExpired, superseded: false },
        Self::EndedToken { end: AttemptEnd::LeaseExpired, superseded: true },
        Self::EndedToken { end: AttemptEnd::Cancelled, superseded: false },
        Self::EndedToken { end: AttemptEnd::Cancelled, superseded: true },
        Self::EndedToken { end: AttemptEnd::Released, superseded: false },
        Self::EndedToken { end: AttemptEnd::Released, superseded: true },
    ];

    /// What `task` knows of the attempt `reporter` speaks for.
    pub fn of(task: &Task, reporter: &Reporter) -> Self {
        let running = match task.state() {
            TaskState::Running { worker_id, lease, .. } => Some((worker_id, lease.token)),
            _ => None,
        };
        let other_worker = running.is_some_and(|(holder, _)| {
            reporter.worker_id.as_ref().is_some_and(|caller| caller != holder)
        });
        match (reporter.lease_token, running) {
            (None, Some(_)) => Self::NoTokenRunning { other_worker },
            (None, None) => Self::NoTokenNotRunning,
            (Some(token), Some((_, live))) if token == live => Self::LiveToken { other_worker },
            (Some(token), _) => match task.last_ended().filter(|e| e.token == token) {
                Some(ended) => {
                    Self::EndedToken { end: ended.end, superseded: task.attempt() > ended.attempt }
                }
                None => Self::UnknownToken,
            },
        }
    }
}

impl Refusal {
    /// The stable code clients and counters use; for the stale ones, that of the
    /// [`StaleLease`] they become.
    pub const fn code(self) -> &'static str {
        match self {
            Self::WorkerMismatch => "WORKER_MISMATCH",
            Self::InvalidTransition => "INVALID_TRANSITION",
            Self::LeaseExpired => "LEASE_EXPIRED",
            Self::AttemptSuperseded => "ATTEMPT_SUPERSEDED",
            Self::TaskCancelled => "TASK_CANCELLED",
            Self::OutcomeConflict => "OUTCOME_CONFLICT",
        }
    }

    /// The error that tells the caller of `call` on `task` why it was refused.
    fn to_error(self, task: &Task, reporter: &Reporter, call: FencedCall) -> DomainError {
        let id = task.id();
        // The table gives the codes below only where their data exists: a mismatch for a
        // running task and a named caller, the ended-attempt codes for the last ended
        // attempt's token. Anything else falls to the plain refusal.
        let ended = task.last_ended().filter(|e| Some(e.token) == reporter.lease_token);
        match (self, task.state(), &reporter.worker_id, ended) {
            (Self::WorkerMismatch, TaskState::Running { worker_id, .. }, Some(caller), _) => {
                DomainError::WorkerMismatch {
                    task: id,
                    holder: worker_id.clone(),
                    caller: caller.clone(),
                }
            }
            (Self::AttemptSuperseded, ..) => {
                StaleLease::AttemptSuperseded { task: id, current: task.attempt() }.into()
            }
            (Self::LeaseExpired, _, _, Some(e)) => {
                StaleLease::LeaseExpired { task: id, attempt: e.attempt }.into()
            }
            (Self::TaskCancelled, _, _, Some(e)) => {
                StaleLease::TaskCancelled { task: id, attempt: e.attempt }.into()
            }
            (Self::OutcomeConflict, _, _, Some(e)) => {
                StaleLease::OutcomeConflict { task: id, attempt: e.attempt, recorded: e.end }.into()
            }
            _ => DomainError::InvalidTransition {
                task: id,
                from: task.status(),
                action: call.action(),
            },
        }
    }
}

/// What a fenced call may do once the table let it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fence {
    /// Apply the transition.
    Apply,
    /// Answer as a replay: change nothing.
    Replay,
}

/// Answers `call` from `reporter` on `task` as [`FencedCall::verdict`] says.
///
/// # Errors
/// The [`DomainError`] of the [`Refusal`], with the task's particulars.
pub(crate) fn fence(
    task: &Task,
    reporter: &Reporter,
    call: FencedCall,
) -> Result<Fence, DomainError> {
    match call.verdict(AttemptHistory::of(task, reporter)) {
        Verdict::Apply => Ok(Fence::Apply),
        Verdict::Replay => Ok(Fence::Replay),
        Verdict::Refuse(refusal) => Err(refusal.to_error(task, reporter, call)),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::test_support::{
        failed, failed_permanently, fenced, lease, pending, released, running, secs, start, t0,
        task_id, task_in, tok, worker, BACKOFF,
    };
    use crate::{Action, TaskStatus};

    use AttemptEnd::{Cancelled, Failed, FailedPermanently, LeaseExpired, Released, Succeeded};
    use AttemptHistory::{EndedToken, LiveToken, NoTokenNotRunning, NoTokenRunning, UnknownToken};

    const APPLY: Verdict = Verdict::Apply;
    const REPLAY: Verdict = Verdict::Replay;
    const MISMATCH: Verdict = Verdict::Refuse(Refusal::WorkerMismatch);
    const INVALID: Verdict = Verdict::Refuse(Refusal::InvalidTransition);
    const EXPIRED: Verdict = Verdict::Refuse(Refusal::LeaseExpired);
    const SUPERSEDED: Verdict = Verdict::Refuse(Refusal::AttemptSuperseded);
    const CANCELLED: Verdict = Verdict::Refuse(Refusal::TaskCancelled);
    const CONFLICT: Verdict = Verdict::Refuse(Refusal::OutcomeConflict);

    const fn ended(end: AttemptEnd, superseded: bool) -> AttemptHistory {
        EndedToken { end, superseded }
    }

    /// The fencing rule written out, one row per history, one column per call: what
    /// [`FencedCall::verdict`] must answer.
    #[rustfmt::skip]
    const TABLE: [(AttemptHistory, [Verdict; 5]); 18] = [
        // history                               heartbeat   succeed     fail        for good    release
        (LiveToken { other_worker: false },      [APPLY,      APPLY,      APPLY,      APPLY,      APPLY]),
        (LiveToken { other_worker: true },       [MISMATCH,   MISMATCH,   MISMATCH,   MISMATCH,   MISMATCH]),
        (NoTokenRunning { other_worker: false }, [APPLY,      APPLY,      APPLY,      APPLY,      APPLY]),
        (NoTokenRunning { other_worker: true },  [MISMATCH,   MISMATCH,   MISMATCH,   MISMATCH,   MISMATCH]),
        (NoTokenNotRunning,                      [INVALID,    INVALID,    INVALID,    INVALID,    INVALID]),
        (UnknownToken,                           [SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED]),
        (ended(Succeeded, false),                [INVALID,    REPLAY,     CONFLICT,   CONFLICT,   CONFLICT]),
        (ended(Succeeded, true),                 [SUPERSEDED, REPLAY,     CONFLICT,   CONFLICT,   CONFLICT]),
        (ended(Failed, false),                   [INVALID,    CONFLICT,   REPLAY,     CONFLICT,   CONFLICT]),
        (ended(Failed, true),                    [SUPERSEDED, CONFLICT,   REPLAY,     CONFLICT,   CONFLICT]),
        (ended(FailedPermanently, false),        [INVALID,    CONFLICT,   CONFLICT,   REPLAY,     CONFLICT]),
        (ended(FailedPermanently, true),         [SUPERSEDED, CONFLICT,   CONFLICT,   REPLAY,     CONFLICT]),
        (ended(LeaseExpired, false),             [EXPIRED,    EXPIRED,    EXPIRED,    EXPIRED,    EXPIRED]),
        (ended(LeaseExpired, true),              [SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED]),
        (ended(Cancelled, false),                [CANCELLED,  CANCELLED,  CANCELLED,  CANCELLED,  CANCELLED]),
        (ended(Cancelled, true),                 [SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED, SUPERSEDED]),
        (ended(Released, false),                 [INVALID,    CONFLICT,   CONFLICT,   CONFLICT,   REPLAY]),
        (ended(Released, true),                  [SUPERSEDED, CONFLICT,   CONFLICT,   CONFLICT,   REPLAY]),
    ];

    #[test]
    fn every_call_on_every_attempt_history_gets_the_verdict_of_the_table() {
        let table = TABLE;
        let listed: Vec<AttemptHistory> = table.iter().map(|(history, _)| *history).collect();
        assert_eq!(listed, AttemptHistory::ALL, "every history is listed, once");

        for (history, verdicts) in table {
            for (call, expected) in FencedCall::ALL.into_iter().zip(verdicts) {
                assert_eq!(call.verdict(history), expected, "{call} on {history:?}");
            }
        }
    }

    #[test]
    fn each_refusal_has_a_stable_code() {
        let codes = [
            (Refusal::WorkerMismatch, "WORKER_MISMATCH"),
            (Refusal::InvalidTransition, "INVALID_TRANSITION"),
            (Refusal::LeaseExpired, "LEASE_EXPIRED"),
            (Refusal::AttemptSuperseded, "ATTEMPT_SUPERSEDED"),
            (Refusal::TaskCancelled, "TASK_CANCELLED"),
            (Refusal::OutcomeConflict, "OUTCOME_CONFLICT"),
        ];

        for (refusal, code) in codes {
            assert_eq!(refusal.code(), code);
        }
    }

    /// A task that reaches one attempt history, and who calls on it.
    struct Case {
        what: &'static str,
        task: Task,
        reporter: Reporter,
        history: AttemptHistory,
    }

    fn case(what: &'static str, task: Task, reporter: Reporter, history: AttemptHistory) -> Case {
        Case { what, task, reporter, history }
    }

    /// Tasks driven by transitions into every history a call can meet, several ways each.
    fn cases() -> Vec<Case> {
        let w1 = || Some(worker("w1"));
        let w2 = || Some(worker("w2"));
        let unknown = || Reporter::lease(None, tok(99));
        let with = |mut task: Task, step: &dyn Fn(&mut Task)| {
            step(&mut task);
            task
        };
        let reaped = |max_attempts| {
            with(running(max_attempts), &|t| t.expire_lease(t0() + secs(60), &BACKOFF).unwrap())
        };
        let restarted = |task: Task| with(task, &|t| start(t, "w2", t0() + secs(90)).unwrap());
        let rerun = |task: Task| with(task, &|t| t.rerun(t0() + secs(80)).unwrap());
        let failed_once = |max_attempts| {
            with(running(max_attempts), &|t| {
                t.fail_and_schedule_retry(&fenced(1), "boom", t0() + secs(1), &BACKOFF).unwrap();
            })
        };
        let succeeded = with(running(3), &|t| {
            t.succeed(&fenced(1), None, t0() + secs(1)).unwrap();
        });
        let cancelled = with(running(3), &|t| t.cancel(t0() + secs(1)).unwrap());
        let two_failed = with(restarted(failed_once(3)), &|t| {
            t.fail_and_schedule_retry(&fenced(2), "boom", t0() + secs(91), &BACKOFF).unwrap();
        });

        let mut cases = vec![
            case(
                "the holder with its token",
                running(3),
                Reporter::lease(w1(), tok(1)),
                LiveToken { other_worker: false },
            ),
            case("the live token alone", running(3), fenced(1), LiveToken { other_worker: false }),
            case(
                "the live token from another worker",
                running(3),
                Reporter::lease(w2(), tok(1)),
                LiveToken { other_worker: true },
            ),
            case(
                "the holder without a token",
                running(3),
                Reporter::worker(worker("w1")),
                NoTokenRunning { other_worker: false },
            ),
            case(
                "nobody, without a token",
                running(3),
                Reporter::anyone(),
                NoTokenRunning { other_worker: false },
            ),
            case(
                "another worker without a token",
                running(3),
                Reporter::worker(worker("w2")),
                NoTokenRunning { other_worker: true },
            ),
            case(
                "a reaped worker without a token, once a newer attempt runs",
                restarted(reaped(3)),
                Reporter::worker(worker("w1")),
                NoTokenRunning { other_worker: true },
            ),
            case(
                "the releasing worker again, without a token",
                released(3),
                Reporter::worker(worker("w1")),
                NoTokenNotRunning,
            ),
            case("a token never handed out, pending", pending(3), unknown(), UnknownToken),
            case("a token never handed out, running", running(3), unknown(), UnknownToken),
            case("a token never handed out, succeeded", succeeded.clone(), unknown(), UnknownToken),
            case("a token never handed out, failed", failed(2), unknown(), UnknownToken),
            case("the token of an attempt two back", two_failed, fenced(1), UnknownToken),
            case(
                "the succeeded attempt",
                succeeded,
                Reporter::lease(w1(), tok(1)),
                ended(Succeeded, false),
            ),
            case(
                "the failed attempt, retry pending",
                failed_once(3),
                fenced(1),
                ended(Failed, false),
            ),
            case(
                "the failed attempt, on its last try",
                failed_once(1),
                fenced(1),
                ended(Failed, false),
            ),
            case(
                "the failed attempt, once its retry runs",
                restarted(failed_once(3)),
                fenced(1),
                ended(Failed, true),
            ),
            case(
                "the attempt failed for good",
                failed_permanently(3),
                fenced(1),
                ended(FailedPermanently, false),
            ),
            case(
                "the attempt failed for good on its last try",
                failed_permanently(1),
                fenced(1),
                ended(FailedPermanently, false),
            ),
            case(
                "the attempt failed for good, rerun and started again",
                restarted(rerun(failed_permanently(3))),
                fenced(1),
                ended(FailedPermanently, true),
            ),
            case("the reaped attempt", reaped(3), fenced(1), ended(LeaseExpired, false)),
            case(
                "the reaped attempt, on its last try",
                reaped(1),
                fenced(1),
                ended(LeaseExpired, false),
            ),
            case(
                "the reaped attempt, once a newer one runs",
                restarted(reaped(3)),
                Reporter::lease(w1(), tok(1)),
                ended(LeaseExpired, true),
            ),
            case(
                "the cancelled attempt",
                cancelled.clone(),
                Reporter::lease(w1(), tok(1)),
                ended(Cancelled, false),
            ),
            case(
                "the cancelled attempt, rerun and started again",
                restarted(rerun(cancelled)),
                fenced(1),
                ended(Cancelled, true),
            ),
            case(
                "the released attempt",
                released(3),
                Reporter::lease(w1(), tok(1)),
                ended(Released, false),
            ),
            case(
                "the released attempt, once a newer one runs",
                restarted(released(3)),
                fenced(1),
                ended(Released, true),
            ),
        ];
        for status in TaskStatus::ALL.into_iter().filter(|s| *s != TaskStatus::Running) {
            for reporter in [Reporter::anyone(), Reporter::worker(worker("w2"))] {
                cases.push(case(
                    "no token on a task that is not running",
                    task_in(status),
                    reporter,
                    NoTokenNotRunning,
                ));
            }
        }
        cases
    }

    /// Makes `call` on `task` as `reporter`; `None` for a heartbeat without a token, which
    /// [`Task::heartbeat`] cannot be asked for.
    fn make(
        call: FencedCall,
        task: &mut Task,
        reporter: &Reporter,
    ) -> Option<Result<Applied, DomainError>> {
        let now = t0() + secs(500);
        let version = task.version();
        Some(match call {
            FencedCall::Heartbeat => {
                let token = reporter.lease_token?;
                task.heartbeat(reporter.worker_id.as_ref(), token, lease(), now).map(|()| {
                    if task.version() > version {
                        Applied::Changed
                    } else {
                        Applied::Replayed
                    }
                })
            }
            FencedCall::Succeed => task.succeed(reporter, Some(serde_json::json!(1)), now),
            FencedCall::Fail => task.fail_and_schedule_retry(reporter, "late", now, &BACKOFF),
            FencedCall::FailPermanently => task.fail_permanently(reporter, "late", now),
            FencedCall::Release => task.release(reporter, now),
        })
    }

    /// The error a refusal becomes, derived from the case alone: tokens are `tok(n)` for
    /// attempt `n`.
    fn expected_error(case: &Case, call: FencedCall, refusal: Refusal) -> DomainError {
        let task = task_id();
        let attempt =
            || u32::try_from(case.reporter.lease_token.unwrap().as_uuid().as_u128()).unwrap();
        match refusal {
            Refusal::WorkerMismatch => DomainError::WorkerMismatch {
                task,
                holder: case.task.worker_id().unwrap().clone(),
                caller: case.reporter.worker_id.clone().unwrap(),
            },
            Refusal::InvalidTransition => {
                let action = match call {
                    FencedCall::Heartbeat => Action::Heartbeat,
                    FencedCall::Succeed => Action::Succeed,
                    FencedCall::Fail | FencedCall::FailPermanently => Action::Fail,
                    FencedCall::Release => Action::Release,
                };
                DomainError::InvalidTransition { task, from: case.task.status(), action }
            }
            Refusal::AttemptSuperseded => {
                StaleLease::AttemptSuperseded { task, current: case.task.attempt() }.into()
            }
            Refusal::LeaseExpired => StaleLease::LeaseExpired { task, attempt: attempt() }.into(),
            Refusal::TaskCancelled => StaleLease::TaskCancelled { task, attempt: attempt() }.into(),
            Refusal::OutcomeConflict => {
                let EndedToken { end: recorded, .. } = case.history else {
                    panic!("{}: a conflict needs an ended attempt", case.what)
                };
                StaleLease::OutcomeConflict { task, attempt: attempt(), recorded }.into()
            }
        }
    }

    // Drives real tasks into every history and makes every call: each answers as the table
    // says, with the error's particulars, and changes nothing unless applied.
    #[test]
    fn each_transition_answers_fenced_calls_as_the_table_says() {
        let cases = cases();
        // A succeeded task is never started again, so nothing supersedes its attempt.
        let unreachable = ended(Succeeded, true);
        for history in AttemptHistory::ALL.into_iter().filter(|h| *h != unreachable) {
            assert!(cases.iter().any(|c| c.history == history), "no case reaches {history:?}");
        }

        for case in &cases {
            assert_eq!(
                AttemptHistory::of(&case.task, &case.reporter),
                case.history,
                "{}",
                case.what
            );
            for call in FencedCall::ALL {
                let what = format!("{call} on {}", case.what);
                let mut task = case.task.clone();

                let Some(outcome) = make(call, &mut task, &case.reporter) else { continue };

                match call.verdict(case.history) {
                    Verdict::Apply => {
                        assert_eq!(outcome, Ok(Applied::Changed), "{what}");
                        assert_eq!(task.version(), case.task.version() + 1, "{what}");
                        assert_eq!(task.updated_at(), t0() + secs(500), "{what}");
                        let lease = case.task.lease().unwrap();
                        let end = match call {
                            FencedCall::Heartbeat => None,
                            FencedCall::Succeed => Some(Succeeded),
                            FencedCall::Fail => Some(Failed),
                            FencedCall::FailPermanently => Some(FailedPermanently),
                            FencedCall::Release => Some(Released),
                        };
                        match end {
                            None => assert_eq!(task.lease().map(|l| l.token), Some(lease.token)),
                            Some(end) => assert_eq!(
                                task.last_ended().copied(),
                                Some(EndedAttempt {
                                    attempt: case.task.attempt(),
                                    token: lease.token,
                                    end
                                }),
                                "{what}"
                            ),
                        }
                        task.check_invariants().unwrap();
                    }
                    Verdict::Replay => {
                        assert_eq!(outcome, Ok(Applied::Replayed), "{what}");
                        assert_eq!(task, case.task, "a replayed {what} changes nothing");
                    }
                    Verdict::Refuse(refusal) => {
                        let error = outcome.unwrap_err();
                        assert_eq!(error, expected_error(case, call, refusal), "{what}");
                        if let DomainError::StaleLease(stale) = &error {
                            assert_eq!(stale.code(), refusal.code(), "{what}");
                        }
                        assert_eq!(task, case.task, "a refused {what} changes nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn attempt_end_spellings_round_trip() {
        for end in [
            AttemptEnd::Succeeded,
            AttemptEnd::Failed,
            AttemptEnd::FailedPermanently,
            AttemptEnd::LeaseExpired,
            AttemptEnd::Cancelled,
            AttemptEnd::Released,
        ] {
            assert_eq!(AttemptEnd::parse(end.as_str()), Some(end));
            assert_eq!(end.to_string(), end.as_str());
        }
        assert_eq!(AttemptEnd::Released.as_str(), "RELEASED");
        assert_eq!(AttemptEnd::parse("succeeded"), None);
        assert_eq!(AttemptEnd::parse("released"), None);
    }

    #[test]
    fn reporters_carry_what_the_caller_said() {
        let worker = WorkerId::parse("w1").unwrap();
        let token = tok(1);

        assert_eq!(Reporter::anyone(), Reporter { worker_id: None, lease_token: None });
        assert_eq!(
            Reporter::worker(worker.clone()),
            Reporter { worker_id: Some(worker.clone()), lease_token: None }
        );
        assert_eq!(
            Reporter::lease(Some(worker.clone()), token),
            Reporter { worker_id: Some(worker), lease_token: Some(token) }
        );
    }
}
