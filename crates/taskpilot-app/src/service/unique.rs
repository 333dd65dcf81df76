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
        let mut held: Vec<Option<Task>> = vec![None; tasks.len()];
        // Every round answers at least one more item with a holder, so there are at most
        // as many rounds as items with a key, plus the last.
        for _ in 0..=tasks.len() {
            let answers: Vec<Created> = tasks
                .iter()
                .zip(&held)
                .map(|((task, _), holder)| match holder {
                    Some(holder) => Created { task: holder.clone(), created: false },
                    None => Created { task: task.clone(), created: true },
                })
                .collect();
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
            for (index, ((task, on_conflict), slot)) in tasks.iter().zip(&mut held).enumerate() {
                if slot.is_none() && same_key(task, &holder) {
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

/// Whether `task` would hold the key `holder` holds (same queue, same key).
pub(super) fn same_key(task: &Task, holder: &Task) -> bool {
    task.unique_key().is_some()
        && task.unique_key() == holder.unique_key()
        && task.queue() == holder.queue()
}

/// The first item of `tasks` that repeats the queue and unique key of an earlier one, with
/// the earlier one's index: a batch may hold each key of a queue once.
pub(super) fn repeated_key<'a>(
    tasks: impl IntoIterator<Item = (&'a QueueName, Option<&'a UniqueKey>)>,
) -> Option<(usize, usize)> {
    let mut seen: HashMap<(&QueueName, &UniqueKey), usize> = HashMap::new();
    for (index, (queue, key)) in tasks.into_iter().enumerate() {
        if let Some(key) = key {
            if let Some(first) = seen.insert((queue, key), index) {
                return Some((index, first));
            }
        }
    }
    None
}
