//! The observer port: what the use cases tell whoever counts their work (the server's
//! metrics), without knowing how it is counted.

use taskpilot_domain::Task;

use crate::StaleCall;

/// Told what the use cases did, after storage accepted it. Each method is called once per
/// event, on the thread that ran the use case, so implementations must be cheap and must not
/// block (counters in memory); the defaults ignore the event.
///
/// Only what this service did is reported: another server's work reaches its own observer.
pub trait TaskObserver: Send + Sync {
    /// These tasks were created (one call per create, one per batch).
    fn created(&self, tasks: &[Task]) {
        let _ = tasks;
    }

    /// These tasks were started, by a claim or a start: each is RUNNING its new attempt.
    fn started(&self, tasks: &[Task]) {
        let _ = tasks;
    }

    /// This task's attempt ended (a report, a release, the reaper, a cancel while it ran):
    /// [`Task::last_ended`] says how.
    fn attempt_ended(&self, task: &Task) {
        let _ = task;
    }

    /// A stale call was refused with this stable code.
    fn refused(&self, call: StaleCall, code: &'static str) {
        let _ = (call, code);
    }

    /// A call repeated an accepted report, answered again without writing.
    fn replayed(&self, call: StaleCall) {
        let _ = call;
    }
}

/// Observes nothing: the service's observer until one is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl TaskObserver for NoObserver {}
