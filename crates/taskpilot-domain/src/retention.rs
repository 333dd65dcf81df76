//! How long a finished task is kept: [`Retention`], one keep time per terminal status, and
//! the rule that says which finished task is due for deletion at `now`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::{Task, TaskStatus};

/// How long tasks of one terminal status are kept after they finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepFor {
    /// Never deleted.
    Forever,
    /// Deleted once they finished longer ago than this (always positive).
    Duration(TimeDelta),
}

impl KeepFor {
    /// The keep time written as a duration: zero means [`KeepFor::Forever`], as does a
    /// duration too long for any calendar (no task can have finished that long ago).
    pub fn from_duration(keep: Duration) -> Self {
        match TimeDelta::from_std(keep) {
            Ok(delta) if delta > TimeDelta::zero() => Self::Duration(delta),
            _ => Self::Forever,
        }
    }
}

/// The keep time as the settings write it: `forever`, or whole days, hours, minutes or
/// seconds (`14d`, `24h`, `15m`, `90s`), milliseconds when nothing coarser fits.
impl std::fmt::Display for KeepFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self::Duration(keep) = self else {
            return f.write_str("forever");
        };
        let ms = keep.num_milliseconds();
        let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
            .into_iter()
            .find(|(size, _)| ms % size == 0);
        match unit {
            Some((size, unit)) => write!(f, "{}{unit}", ms / size),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// Which finished tasks are deleted when: a keep time per terminal status.
///
/// A task is due for deletion at `now` when it is terminal and finished (its
/// `completed_at`) strictly before `now` minus its status's keep time. A rerun takes a task
/// out of a terminal status, so only what is still finished is ever due.
///
/// ```
/// use chrono::{TimeDelta, TimeZone, Utc};
/// use taskpilot_domain::{KeepFor, Retention, TaskStatus};
///
/// let retention = Retention::new(
///     KeepFor::Duration(TimeDelta::hours(24)),
///     KeepFor::Duration(TimeDelta::days(14)),
///     KeepFor::Forever,
/// );
/// let now = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
///
/// assert_eq!(retention.cutoff(TaskStatus::Succeeded, now), Some(now - TimeDelta::hours(24)));
/// assert_eq!(retention.cutoff(TaskStatus::Cancelled, now), None, "kept forever");
/// assert_eq!(retention.cutoff(TaskStatus::Running, now), None, "never deleted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    succeeded: KeepFor,
    failed: KeepFor,
    cancelled: KeepFor,
}

impl Retention {
    /// Succeeded tasks are kept 24 hours, failed ones 14 days (time to look into them),
    /// cancelled ones 7 days.
    pub const DEFAULT: Self = Self {
        succeeded: KeepFor::Duration(TimeDelta::hours(24)),
        failed: KeepFor::Duration(TimeDelta::days(14)),
        cancelled: KeepFor::Duration(TimeDelta::days(7)),
    };

    /// Nothing is ever deleted.
    pub const FOREVER: Self =
        Self { succeeded: KeepFor::Forever, failed: KeepFor::Forever, cancelled: KeepFor::Forever };

    /// A retention with these keep times.
    pub const fn new(succeeded: KeepFor, failed: KeepFor, cancelled: KeepFor) -> Self {
        Self { succeeded, failed, cancelled }
    }

    /// How long tasks in `status` are kept; [`KeepFor::Forever`] for a status that is not
    /// terminal, since only finished tasks are ever deleted.
    pub const fn keep(&self, status: TaskStatus) -> KeepFor {
        match status {
            TaskStatus::Succeeded => self.succeeded,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
            TaskStatus::Pending | TaskStatus::Running => KeepFor::Forever,
        }
    }

    /// The instant before which tasks in `status` that finished are due for deletion at
    /// `now`: `now` minus the keep time. `None` when none ever is: the status is not
    /// terminal, is kept forever, or the keep time reaches back before any representable
    /// instant.
    pub fn cutoff(&self, status: TaskStatus, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.keep(status) {
            KeepFor::Forever => None,
            KeepFor::Duration(keep) => now.checked_sub_signed(keep),
        }
    }

    /// The cutoff of every terminal status that is not kept forever, in lifecycle order.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Vec<(TaskStatus, DateTime<Utc>)> {
        TaskStatus::ALL
            .into_iter()
            .filter_map(|status| Some((status, self.cutoff(status, now)?)))
            .collect()
    }

    /// Whether `task` is due for deletion at `now`.
    pub fn is_due(&self, task: &Task, now: DateTime<Utc>) -> bool {
        match (self.cutoff(task.status(), now), task.completed_at()) {
            (Some(cutoff), Some(completed_at)) => completed_at < cutoff,
            _ => false,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::test_support::{secs, t0, task_in};

    fn days(n: i64) -> KeepFor {
        KeepFor::Duration(TimeDelta::days(n))
    }

    #[test]
    fn a_zero_keep_time_keeps_forever() {
        assert_eq!(KeepFor::from_duration(Duration::ZERO), KeepFor::Forever);
        assert_eq!(KeepFor::from_duration(Duration::MAX), KeepFor::Forever);
        assert_eq!(
            KeepFor::from_duration(Duration::from_secs(90)),
            KeepFor::Duration(TimeDelta::seconds(90))
        );
    }

    #[test]
    fn keep_times_are_written_in_their_coarsest_whole_unit() {
        let written = [
            KeepFor::Forever,
            days(14),
            KeepFor::Duration(TimeDelta::hours(36)),
            KeepFor::Duration(TimeDelta::minutes(15)),
            KeepFor::Duration(TimeDelta::seconds(90)),
            KeepFor::Duration(TimeDelta::milliseconds(1_500)),
        ]
        .map(|k| k.to_string());

        assert_eq!(written, ["forever", "14d", "36h", "15m", "90s", "1500ms"]);
    }

    #[test]
    fn the_defaults_keep_succeeded_a_day_failed_two_weeks_and_cancelled_one_week() {
        let r = Retention::default();

        assert_eq!(r.keep(TaskStatus::Succeeded), KeepFor::Duration(TimeDelta::hours(24)));
        assert_eq!(r.keep(TaskStatus::Failed), days(14));
        assert_eq!(r.keep(TaskStatus::Cancelled), days(7));
    }

    #[test]
    fn each_terminal_status_is_cut_off_at_now_minus_its_own_keep_time() {
        let r = Retention::new(days(1), days(14), days(7));
        let now = t0();

        assert_eq!(
            r.cutoffs(now),
            [
                (TaskStatus::Succeeded, now - TimeDelta::days(1)),
                (TaskStatus::Failed, now - TimeDelta::days(14)),
                (TaskStatus::Cancelled, now - TimeDelta::days(7)),
            ]
        );
    }

    #[test]
    fn tasks_that_are_not_finished_are_never_due() {
        let r = Retention::new(days(1), days(1), days(1));
        let much_later = t0() + TimeDelta::days(10_000);

        for status in [TaskStatus::Pending, TaskStatus::Running] {
            assert_eq!(r.keep(status), KeepFor::Forever);
            assert_eq!(r.cutoff(status, much_later), None);
            assert!(!r.is_due(&task_in(status), much_later), "{status}");
        }
    }

    #[test]
    fn a_status_kept_forever_has_no_cutoff_and_the_others_keep_theirs() {
        let r = Retention::new(KeepFor::Forever, days(14), KeepFor::Forever);
        let now = t0() + TimeDelta::days(10_000);

        assert_eq!(r.cutoffs(now), [(TaskStatus::Failed, now - TimeDelta::days(14))]);
        assert!(!r.is_due(&task_in(TaskStatus::Succeeded), now));
        assert!(!r.is_due(&task_in(TaskStatus::Cancelled), now));
        assert!(r.is_due(&task_in(TaskStatus::Failed), now));
        assert!(Retention::FOREVER.cutoffs(now).is_empty());
    }

    #[test]
    fn a_finished_task_is_due_only_once_it_finished_strictly_before_the_cutoff() {
        let r = Retention::new(KeepFor::Duration(secs(60)), days(1), days(1));
        let task = task_in(TaskStatus::Succeeded);
        let finished = task.completed_at().unwrap();

        assert!(!r.is_due(&task, finished + secs(59)));
        assert!(!r.is_due(&task, finished + secs(60)), "exactly the keep time: still kept");
        assert!(r.is_due(&task, finished + secs(61)));
    }

    #[test]
    fn a_keep_time_reaching_before_any_instant_deletes_nothing() {
        let r = Retention::new(KeepFor::Duration(TimeDelta::MAX), days(1), days(1));

        assert_eq!(r.cutoff(TaskStatus::Succeeded, t0()), None);
        assert!(!r.is_due(&task_in(TaskStatus::Succeeded), t0()));
    }
}
