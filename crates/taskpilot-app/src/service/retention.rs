//! Retention: deleting finished tasks once the domain's [`Retention`] says they are due.

use taskpilot_domain::{Retention, TaskStatus};

use super::TaskService;
use crate::AppError;

/// What one [`TaskService::prune`] call deleted, by terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Succeeded tasks deleted.
    pub succeeded: u64,
    /// Failed tasks deleted.
    pub failed: u64,
    /// Cancelled tasks deleted.
    pub cancelled: u64,
    /// Expired idempotency keys deleted (not counted in [`Pruned::total`], which counts
    /// tasks).
    pub idempotency_keys: u64,
    /// Whether some status filled its batch, so that more of it may be due already.
    pub more_due: bool,
}

impl Pruned {
    /// Tasks deleted in all.
    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Tasks in `status` deleted; zero for a status that is not terminal.
    pub fn count(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Succeeded => self.succeeded,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
            TaskStatus::Pending | TaskStatus::Running => 0,
        }
    }

    /// Adds `other`'s counts to these (running totals); `more_due` becomes `other`'s.
    pub fn add(&mut self, other: &Pruned) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.idempotency_keys += other.idempotency_keys;
        self.more_due = other.more_due;
    }

    fn record(&mut self, status: TaskStatus, deleted: u64) {
        match status {
            TaskStatus::Succeeded => self.succeeded += deleted,
            TaskStatus::Failed => self.failed += deleted,
            TaskStatus::Cancelled => self.cancelled += deleted,
            TaskStatus::Pending | TaskStatus::Running => {}
        }
    }
}

impl TaskService {
    /// The service's retention: which finished tasks [`TaskService::prune`] deletes.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Deletes, with their history, up to `limit` finished tasks of each terminal status
    /// that the service's [`Retention`] says are due now, oldest first; a status kept
    /// forever is not asked about. Then up to `limit` idempotency keys that expired
    /// ([`TaskService::idempotency_ttl`] after they were stored). Each status is one short call to storage, which skips
    /// tasks others hold locked, so any number of servers may prune at once. Call it again
    /// while [`Pruned::more_due`] says so.
    ///
    /// # Errors
    /// Storage errors. What earlier statuses of the same call deleted stays deleted.
    pub fn prune(&self, limit: u32) -> Result<Pruned, AppError> {
        let mut pruned = Pruned::default();
        if limit == 0 {
            return Ok(pruned);
        }
        let now = self.clock.now();
        for (status, cutoff) in self.retention.cutoffs(now) {
            let deleted = self.repo.delete_finished(status, cutoff, limit)?;
            pruned.record(status, deleted);
            pruned.more_due |= deleted >= u64::from(limit);
        }
        let keys = self.repo.delete_expired_keys(now, limit)?;
        pruned.idempotency_keys = keys;
        pruned.more_due |= keys >= u64::from(limit);
        Ok(pruned)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use chrono::{DateTime, TimeDelta, Utc};
    use mockall::Sequence;
    use taskpilot_domain::{Clock, FixedBackoff, KeepFor};

    use super::super::fixtures::{defaults, now, BACKOFF};
    use super::*;
    use crate::{MockTaskRepository, RepoError};

    /// A clock that counts how often it is asked.
    struct CountingClock(AtomicUsize);

    impl Clock for CountingClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.fetch_add(1, Ordering::SeqCst);
            now()
        }
    }

    fn keep_days(n: i64) -> KeepFor {
        KeepFor::Duration(TimeDelta::days(n))
    }

    fn service_with(repo: MockTaskRepository, retention: Retention) -> TaskService {
        TaskService::new(
            Arc::new(repo),
            Arc::new(CountingClock(AtomicUsize::new(0))),
            Arc::new(FixedBackoff(BACKOFF)),
            defaults(),
        )
        .with_retention(retention)
    }

    #[test]
    fn prune_asks_the_clock_once_and_deletes_each_terminal_status_before_its_own_cutoff() {
        let mut seq = Sequence::new();
        let mut repo = MockTaskRepository::new();
        for (status, keep, deleted) in [
            (TaskStatus::Succeeded, TimeDelta::days(1), 3),
            (TaskStatus::Failed, TimeDelta::days(14), 0),
            (TaskStatus::Cancelled, TimeDelta::days(7), 2),
        ] {
            repo.expect_delete_finished()
                .withf(move |s, before, limit| {
                    *s == status && *before == now() - keep && *limit == 100
                })
                .times(1)
                .in_sequence(&mut seq)
                .returning(move |_, _, _| Ok(deleted));
        }
        repo.expect_delete_expired_keys()
            .withf(|at, limit| *at == now() && *limit == 100)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(1));
        let clock = Arc::new(CountingClock(AtomicUsize::new(0)));
        let service = TaskService::new(
            Arc::new(repo),
            clock.clone(),
            Arc::new(FixedBackoff(BACKOFF)),
            defaults(),
        )
        .with_retention(Retention::new(keep_days(1), keep_days(14), keep_days(7)));
        // The service read the clock once to date its record of claims.
        clock.0.store(0, Ordering::SeqCst);

        let pruned = service.prune(100).unwrap();

        assert_eq!(
            pruned,
            Pruned { succeeded: 3, failed: 0, cancelled: 2, idempotency_keys: 1, more_due: false },
            "no batch was full"
        );
        assert_eq!(pruned.total(), 5);
        assert_eq!(clock.0.load(Ordering::SeqCst), 1, "one instant for every status");
    }

    #[test]
    fn a_status_kept_forever_is_never_asked_about() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished()
            .withf(|s, _, _| *s == TaskStatus::Failed)
            .times(1)
            .returning(|_, _, _| Ok(1));
        repo.expect_delete_expired_keys().times(1).returning(|_, _| Ok(0));
        let retention = Retention::new(KeepFor::Forever, keep_days(14), KeepFor::Forever);

        let pruned = service_with(repo, retention).prune(10).unwrap();

        assert_eq!(pruned, Pruned { failed: 1, ..Pruned::default() });
    }

    #[test]
    fn keeping_every_task_forever_still_deletes_expired_idempotency_keys() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished().never();
        repo.expect_delete_expired_keys()
            .withf(|at, limit| *at == now() && *limit == 10)
            .times(1)
            .returning(|_, _| Ok(4));

        let pruned = service_with(repo, Retention::FOREVER).prune(10).unwrap();

        assert_eq!(pruned, Pruned { idempotency_keys: 4, ..Pruned::default() });
        assert_eq!(pruned.total(), 0, "the total counts tasks");
    }

    #[test]
    fn a_full_batch_of_keys_says_more_may_be_due() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished().returning(|_, _, _| Ok(0));
        repo.expect_delete_expired_keys().times(1).returning(|_, limit| Ok(u64::from(limit)));

        let pruned = service_with(repo, Retention::default()).prune(50).unwrap();

        assert_eq!(pruned.idempotency_keys, 50);
        assert!(pruned.more_due);
    }

    #[test]
    fn a_full_batch_says_more_may_be_due() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished().returning(|status, _, limit| {
            Ok(if status == TaskStatus::Cancelled { u64::from(limit) } else { 0 })
        });
        repo.expect_delete_expired_keys().returning(|_, _| Ok(0));

        let pruned = service_with(repo, Retention::default()).prune(50).unwrap();

        assert_eq!(pruned.cancelled, 50);
        assert!(pruned.more_due);
    }

    #[test]
    fn a_storage_outage_stops_the_pass_and_is_reported_as_unavailable() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished()
            .withf(|s, _, _| *s == TaskStatus::Succeeded)
            .times(1)
            .returning(|_, _, _| {
                Err(RepoError::Unavailable(anyhow::anyhow!("connection refused")))
            });

        let outcome = service_with(repo, Retention::default()).prune(10);

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }

    #[test]
    fn a_zero_limit_deletes_nothing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_delete_finished().never();

        let pruned = service_with(repo, Retention::default()).prune(0).unwrap();

        assert_eq!(pruned, Pruned::default());
    }

    #[test]
    fn a_service_keeps_the_default_retention_unless_told_otherwise() {
        let service = super::super::fixtures::service(MockTaskRepository::new());

        assert_eq!(service.retention(), Retention::default());
    }

    #[test]
    fn running_totals_add_up_per_status() {
        let mut totals = Pruned::default();

        totals.add(&Pruned {
            succeeded: 2,
            failed: 1,
            cancelled: 0,
            idempotency_keys: 1,
            more_due: true,
        });
        totals.add(&Pruned {
            succeeded: 3,
            failed: 0,
            cancelled: 4,
            idempotency_keys: 2,
            more_due: false,
        });

        assert_eq!(
            totals,
            Pruned { succeeded: 5, failed: 1, cancelled: 4, idempotency_keys: 3, more_due: false }
        );
        assert_eq!(totals.count(TaskStatus::Succeeded), 5);
        assert_eq!(totals.count(TaskStatus::Pending), 0);
    }
}
