//! Creates whose tasks carry a unique key: the answer of each task whose key another active
//! task of its queue holds.
//!
//! Storage refuses a batch (or a keyed create) that holds a key already held, naming the
//! holder and storing nothing (`RepoError::UniqueKeyHeld`). The service then answers the
//! items with that key with the holder (or refuses the request, for an item that asked for
//! `OnConflict::Reject`) and stores the rest again: one more round trip per held key, none
//! when no key is held.

use std::collections::HashMap;

use taskpilot_domain::{QueueName, Task, UniqueKey};

use super::{Created, OnConflict, TaskService};
use crate::{AppError, RepoError};

impl TaskService {
    /// Stores `tasks` (with `store`, which gets the tasks to create and every item's answer)
    /// and returns every item's answer with what `store` returned.
    ///
    /// `batch` tells whether the items are a batch's, whose refusals name the item.
    ///
    /// # Errors
    /// [`AppError::UniqueKeyHeld`] for a held key of an item that asked for
    /// [`OnConflict::Reject`]; [`AppError::ConcurrentModification`] when storage keeps
    /// naming holders it then cannot find; what `store` fails with otherwise.
    pub(super) fn store_unique<T>(
        &self,
        tasks: Vec<(Task, OnConflict)>,
        batch: bool,
        mut store: impl FnMut(&[Task], &[Created]) -> Result<T, AppError>,
    ) -> Result<(Vec<Created>, T), AppError> {
        // An item with the queue and key of an earlier item of the same request is the same
        // work: it answers what the earlier one answers, or refuses the request.
        let repeats = repeats(&tasks);
        for (index, repeat) in repeats.iter().enumerate() {
            if let Some(first) = *repeat {
                if tasks[index].1 == OnConflict::Reject {
                    return Err(AppError::RepeatedUniqueKey { index, first });
                }
            }
        }
        let mut held: Vec<Option<Task>> = vec![None; tasks.len()];
        // Every round answers at least one more item with a holder, so there are at most
        // as many rounds as items with a key, plus the last.
        for _ in 0..=tasks.len() {
            let mut answers: Vec<Created> = Vec::with_capacity(tasks.len());
            for (((task, _), holder), repeat) in tasks.iter().zip(&held).zip(&repeats) {
                let answer = match (repeat, holder) {
                    (Some(first), _) => {
                        Created { task: answers[*first].task.clone(), created: false }
                    }
                    (None, Some(holder)) => Created { task: holder.clone(), created: false },
                    (None, None) => Created { task: task.clone(), created: true },
                };
                answers.push(answer);
            }
            let new: Vec<Task> =
                answers.iter().filter(|a| a.created).map(|a| a.task.clone()).collect();
            let holder_id = match store(&new, &answers) {
                Ok(stored) => return Ok((answers, stored)),
                Err(AppError::UniqueKeyHeld { holder, .. }) => holder,
                Err(e) => return Err(e),
            };
            let holder = match self.repo.get(holder_id) {
                Ok(holder) => holder,
                // Finished and deleted since: the key is free, the create may be tried again.
                Err(RepoError::NotFound(_)) => {
                    return Err(AppError::ConcurrentModification(holder_id))
                }
                Err(e) => return Err(e.into()),
            };
            let mut matched = false;
            let items = tasks.iter().zip(&mut held).zip(&repeats).enumerate();
            for (index, (((task, on_conflict), slot), repeat)) in items {
                if repeat.is_none() && slot.is_none() && same_key(task, &holder) {
                    if *on_conflict == OnConflict::Reject {
                        let index = batch.then_some(index);
                        return Err(AppError::UniqueKeyHeld { holder: holder.id(), index });
                    }
                    *slot = Some(holder.clone());
                    matched = true;
                }
            }
            if !matched {
                // The holder named no longer holds any of these keys.
                return Err(AppError::ConcurrentModification(holder_id));
            }
        }
        Err(AppError::Unexpected(anyhow::anyhow!(
            "storage kept refusing unique keys the service had answered"
        )))
    }
}

/// For each item, the first earlier item with its queue and unique key, if any.
fn repeats(tasks: &[(Task, OnConflict)]) -> Vec<Option<usize>> {
    let mut first: HashMap<(&QueueName, &UniqueKey), usize> = HashMap::new();
    tasks
        .iter()
        .enumerate()
        .map(|(index, (task, _))| {
            let key = task.unique_key()?;
            match first.get(&(task.queue(), key)) {
                Some(earlier) => Some(*earlier),
                None => {
                    first.insert((task.queue(), key), index);
                    None
                }
            }
        })
        .collect()
}

/// Whether `task` would hold the key `holder` holds (same queue, same key).
pub(super) fn same_key(task: &Task, holder: &Task) -> bool {
    task.unique_key().is_some()
        && task.unique_key() == holder.unique_key()
        && task.queue() == holder.queue()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::{Arc, Mutex};

    use taskpilot_domain::{
        Fingerprint, IdempotencyKey, KeyClaim, StoredResponse, TaskId, TaskStatus,
    };

    use super::super::fixtures::{create_request, failed, service, task_id};
    use super::super::{BulkAction, BulkRequest, BulkSelection, CreateTask, Idempotency};
    use super::*;
    use crate::MockTaskRepository;

    fn keyed(key: &str, on_conflict: OnConflict) -> CreateTask {
        CreateTask {
            unique_key: Some(UniqueKey::parse(key).unwrap()),
            on_conflict,
            ..create_request()
        }
    }

    /// A task that holds `key` in the default queue, with id `n`.
    fn holder(key: &str, n: u128) -> Task {
        let mut record = failed().to_record();
        record.id = task_id(n);
        record.unique_key = Some(UniqueKey::parse(key).unwrap());
        let mut task = Task::restore(record).unwrap();
        task.rerun(super::super::fixtures::now()).unwrap();
        task
    }

    fn held_by(repo: &mut MockTaskRepository, holder: &Task) {
        let stored = holder.clone();
        repo.expect_get().withf(move |id| *id == stored.id()).returning({
            let stored = holder.clone();
            move |_| Ok(stored.clone())
        });
    }

    #[test]
    fn a_create_whose_key_is_held_returns_the_holder_and_creates_nothing() {
        let holder = holder("account-7", 9);
        let mut repo = MockTaskRepository::new();
        let h = holder.id();
        repo.expect_insert().times(1).returning(move |_, _| Err(RepoError::UniqueKeyHeld(h)));
        held_by(&mut repo, &holder);

        let answer =
            service(repo).create_unique_by(keyed("account-7", OnConflict::Return), None).unwrap();

        assert_eq!(answer, Created { task: holder, created: false });
    }

    #[test]
    fn with_reject_a_held_key_is_refused_naming_the_holder_without_reading_it() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert().times(1).returning(|_, _| Err(RepoError::UniqueKeyHeld(task_id(9))));
        repo.expect_get().never();

        let refused = service(repo).create_unique_by(keyed("account-7", OnConflict::Reject), None);

        assert!(
            matches!(refused, Err(AppError::UniqueKeyHeld { holder, index: None }) if holder == task_id(9)),
            "{refused:?}"
        );
    }

    #[test]
    fn a_free_key_creates_the_task_with_its_key() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert()
            .withf(|t, _| t.unique_key().map(UniqueKey::as_str) == Some("k"))
            .times(1)
            .returning(|_, _| Ok(()));

        let answer = service(repo).create_unique_by(keyed("k", OnConflict::Reject), None).unwrap();

        assert!(answer.created);
        assert_eq!(answer.task.status(), TaskStatus::Pending);
    }

    #[test]
    fn a_batch_answers_a_held_key_with_its_holder_and_stores_the_other_items_again() {
        let holder = holder("b", 9);
        let mut repo = MockTaskRepository::new();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let h = holder.id();
        repo.expect_insert_many().times(2).returning(move |tasks, events| {
            assert_eq!(tasks.len(), events.len());
            seen.lock().unwrap().push(tasks.len());
            if tasks.iter().any(|t| t.unique_key().map(UniqueKey::as_str) == Some("b")) {
                Err(RepoError::UniqueKeyHeld(h))
            } else {
                Ok(())
            }
        });
        held_by(&mut repo, &holder);
        let requests =
            vec![keyed("a", OnConflict::Return), keyed("b", OnConflict::Return), create_request()];

        let answers = service(repo).create_batch_unique_by(requests, None).unwrap();

        assert_eq!(*sizes.lock().unwrap(), vec![3, 2]);
        let created: Vec<bool> = answers.iter().map(|a| a.created).collect();
        assert_eq!(created, vec![true, false, true]);
        assert_eq!(answers[1].task, holder);
    }

    #[test]
    fn a_batch_item_that_rejects_a_held_key_refuses_the_whole_batch_naming_its_index() {
        let holder = holder("b", 9);
        let mut repo = MockTaskRepository::new();
        let h = holder.id();
        repo.expect_insert_many().times(1).returning(move |_, _| Err(RepoError::UniqueKeyHeld(h)));
        held_by(&mut repo, &holder);
        let requests = vec![keyed("a", OnConflict::Return), keyed("b", OnConflict::Reject)];

        let refused = service(repo).create_batch_unique_by(requests, None);

        assert!(
            matches!(refused, Err(AppError::UniqueKeyHeld { holder, index: Some(1) }) if holder == h),
            "{refused:?}"
        );
    }

    #[test]
    fn a_repeated_key_answers_the_earlier_item_or_refuses_the_batch_before_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_many()
            .withf(|tasks, _| tasks.len() == 3)
            .times(1)
            .returning(|_, _| Ok(()));
        let other_queue = CreateTask {
            queue: Some(QueueName::parse("other").unwrap()),
            ..keyed("k", OnConflict::Return)
        };
        let requests = vec![
            keyed("k", OnConflict::Return),
            other_queue,
            create_request(),
            keyed("k", OnConflict::Return),
        ];
        let service = service(repo);

        let answers = service.create_batch_unique_by(requests, None).unwrap();
        let refused = service.create_batch_unique_by(
            vec![create_request(), keyed("k", OnConflict::Return), keyed("k", OnConflict::Reject)],
            None,
        );

        let created: Vec<bool> = answers.iter().map(|a| a.created).collect();
        assert_eq!(created, vec![true, true, true, false]);
        assert_eq!(answers[3].task, answers[0].task);
        assert!(matches!(refused, Err(AppError::RepeatedUniqueKey { index: 2, first: 1 })));
    }

    #[test]
    fn a_keyed_create_whose_unique_key_is_held_stores_the_answer_naming_the_holder() {
        let holder = holder("k", 9);
        let mut repo = MockTaskRepository::new();
        let h = holder.id();
        let stored = Arc::new(Mutex::new(Vec::new()));
        let seen = stored.clone();
        repo.expect_insert_keyed().times(2).returning(move |tasks, _, key| {
            seen.lock().unwrap().push((tasks.len(), key.response.status));
            if tasks.is_empty() {
                Ok(KeyClaim::Stored)
            } else {
                Err(RepoError::UniqueKeyHeld(h))
            }
        });
        held_by(&mut repo, &holder);
        let idempotency = Idempotency {
            key: IdempotencyKey::parse("request-1").unwrap(),
            fingerprint: Fingerprint::from_bytes([1; 32]),
        };

        let answer = service(repo)
            .create_keyed(keyed("k", OnConflict::Return), None, idempotency, |answer| {
                Ok(StoredResponse {
                    status: if answer.created { 201 } else { 200 },
                    body: answer.task.id().to_string(),
                    location: None,
                })
            })
            .unwrap();

        assert_eq!(*stored.lock().unwrap(), vec![(1, 201), (0, 200)]);
        assert_eq!(answer.response.status, 200);
        assert_eq!(answer.response.body, h.to_string());
        assert!(answer.created.is_empty());
    }

    #[test]
    fn a_bulk_rerun_skips_a_task_whose_key_is_held_and_reruns_the_others() {
        let key = |n: u128, k: &str| {
            let mut record = failed().to_record();
            record.id = task_id(n);
            record.unique_key = Some(UniqueKey::parse(k).unwrap());
            Task::restore(record).unwrap()
        };
        // 1 meets a stored holder, 3 repeats the key of 2: both are skipped.
        let tasks = vec![key(1, "held"), key(2, "twice"), key(3, "twice"), key(4, "free")];
        let holder = holder("held", 9);
        let mut repo = MockTaskRepository::new();
        let listed = tasks.clone();
        repo.expect_get_many().returning(move |_| Ok(listed.clone()));
        let h = holder.id();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        repo.expect_write_many().returning(move |writes, _| {
            seen.lock().unwrap().push(writes.len());
            if writes.iter().any(|w| w.task.id() == task_id(1)) {
                Err(RepoError::UniqueKeyHeld(h))
            } else {
                Ok(vec![])
            }
        });
        held_by(&mut repo, &holder);
        repo.expect_record_bulk_action()
            .withf(|r| (r.matched, r.done, r.skipped) == (4, 2, 2))
            .times(1)
            .returning(|_| Ok(()));
        let ids = tasks.iter().map(Task::id).collect();
        let request = BulkRequest {
            action: BulkAction::Rerun,
            selection: BulkSelection::Ids(ids),
            dry_run: false,
            limit: 10,
            expected_versions: std::collections::HashMap::new(),
        };

        let report = service(repo).bulk(&request, &taskpilot_domain::QueueScope::All).unwrap();

        assert_eq!(*sizes.lock().unwrap(), vec![3, 2]);
        let holders: Vec<Option<TaskId>> = report
            .results
            .iter()
            .map(|r| match r.outcome {
                Err(AppError::UniqueKeyHeld { holder, .. }) => Some(holder),
                _ => None,
            })
            .collect();
        assert_eq!(holders, vec![Some(h), None, Some(task_id(2)), None]);
    }
}
