//! Operator actions on many tasks at once: rerun, cancel or delete what a filter or a list
//! of ids selects.
//!
//! Every task goes through the domain's rule for the action ([`Task::rerun`],
//! [`Task::cancel`], [`Task::check_deletable`]) on its stored state, and is written back with
//! compare-and-swap on the version that was judged, in batches of [`BULK_BATCH`] tasks per
//! transaction. A task that changed meanwhile (a worker finished it, another server acted on
//! it) is judged again on a fresh read, so two servers or a server and its workers never
//! both win. Nothing holds a lock between batches.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use taskpilot_api::limits::{BULK_BATCH, MAX_BULK};
use taskpilot_domain::{DomainError, QueueScope, Task, TaskId};
use uuid::Uuid;

use super::unique::same_key;
use super::TaskService;
use crate::{
    Actor, AppError, BulkActionRecord, Cursor, RepoError, TaskEvent, TaskFilter, TaskWrite,
};

/// How often a task that keeps changing under a bulk action is judged again before it is
/// skipped as being modified concurrently.
const MAX_BULK_ATTEMPTS: usize = 3;

/// What a bulk action does to each task it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// [`Task::rerun`]: a failed or cancelled task back to pending.
    Rerun,
    /// [`Task::cancel`]: a pending or running task stopped for good.
    Cancel,
    /// Deleted with its history; only terminal tasks ([`Task::check_deletable`]).
    Delete,
}

impl BulkAction {
    /// The action as the API and the audit record spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rerun => "rerun",
            Self::Cancel => "cancel",
            Self::Delete => "delete",
        }
    }
}

/// Which tasks a bulk action takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkSelection {
    /// The tasks a listing with this filter shows, newest first.
    Filter(TaskFilter),
    /// These tasks (each once, in the order given); unknown ids are skipped as not found.
    Ids(Vec<TaskId>),
}

/// A bulk action as a caller asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRequest {
    /// What to do.
    pub action: BulkAction,
    /// To which tasks.
    pub selection: BulkSelection,
    /// Only count what matches; change nothing and record nothing.
    pub dry_run: bool,
    /// At most this many tasks, 1 to [`MAX_BULK`].
    pub limit: u32,
    /// The version each of these tasks must still be at (an operator's `If-Match`, per task):
    /// a task at another version is skipped with [`AppError::PreconditionFailed`], checked
    /// against the version the write compares and swaps on. Empty: no such check.
    pub expected_versions: HashMap<TaskId, u64>,
}

/// What happened to one task.
#[derive(Debug)]
pub struct BulkItem {
    /// The task.
    pub id: TaskId,
    /// `Ok` when the action was done; otherwise the rule that refused it.
    pub outcome: Result<(), AppError>,
}

/// The answer of a bulk action.
#[derive(Debug)]
pub struct BulkReport {
    /// How many tasks matched, at most the request's limit.
    pub matched: u64,
    /// Whether more tasks than the limit match the filter (always `false` for ids).
    pub more: bool,
    /// Whether this was only a count.
    pub dry_run: bool,
    /// Each matched task's outcome, in the order they were taken; empty for a dry run.
    pub results: Vec<BulkItem>,
    /// The id of the recorded action; `None` for a dry run.
    pub id: Option<Uuid>,
}

impl BulkReport {
    /// How many tasks the action was done to.
    pub fn done(&self) -> u64 {
        self.results.iter().filter(|r| r.outcome.is_ok()).count() as u64
    }
}

impl TaskService {
    /// Runs a bulk action over the tasks `request` selects within `reach` (tasks outside it
    /// count as not existing), recorded once with this service's token unless it is a dry
    /// run, and on each changed task's history.
    ///
    /// # Errors
    /// [`AppError::InvalidBulkLimit`]; storage errors stop the action where it is (the
    /// batches already written stay written).
    pub fn bulk(&self, request: &BulkRequest, reach: &QueueScope) -> Result<BulkReport, AppError> {
        if !(1..=MAX_BULK).contains(&request.limit) {
            return Err(AppError::InvalidBulkLimit(request.limit));
        }
        let limit = request.limit as usize;
        let mut matched = 0_u64;
        let mut more = false;
        let mut results = Vec::new();
        match &request.selection {
            BulkSelection::Filter(filter) => {
                let mut filter = filter.clone();
                filter.queues = reach.to_list();
                let mut after: Option<Cursor> = None;
                loop {
                    let room = limit - matched as usize;
                    if room == 0 {
                        more = !self.repo.list(&filter, after, 1)?.is_empty();
                        break;
                    }
                    let want = room.min(BULK_BATCH as usize);
                    let page = self.repo.list(&filter, after, want as u32)?;
                    after = page.last().map(Cursor::after);
                    matched += page.len() as u64;
                    let full = page.len() == want;
                    if !request.dry_run {
                        results.extend(self.bulk_batch(request, page)?);
                    }
                    if !full {
                        break;
                    }
                }
            }
            BulkSelection::Ids(ids) => {
                let mut seen = HashSet::with_capacity(ids.len());
                let ids: Vec<TaskId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
                if ids.len() > limit {
                    return Err(AppError::InvalidBulkLimit(ids.len() as u32));
                }
                for chunk in ids.chunks(BULK_BATCH as usize) {
                    let found = self.repo.get_many(chunk)?;
                    let mut tasks = Vec::with_capacity(chunk.len());
                    let mut items = Vec::new();
                    for id in chunk {
                        match found.iter().find(|t| t.id() == *id) {
                            Some(task) if reach.allows(task.queue()) => tasks.push(task.clone()),
                            _ => items
                                .push(BulkItem { id: *id, outcome: Err(AppError::NotFound(*id)) }),
                        }
                    }
                    matched += tasks.len() as u64;
                    if !request.dry_run {
                        items.extend(self.bulk_batch(request, tasks)?);
                        items.sort_by_key(|item| chunk.iter().position(|id| *id == item.id));
                        results.extend(items);
                    }
                }
            }
        }
        if request.dry_run {
            return Ok(BulkReport { matched, more, dry_run: true, results, id: None });
        }
        let mut report = BulkReport { matched, more, dry_run: false, results, id: None };
        let done = report.done();
        let record = BulkActionRecord {
            id: Uuid::now_v7(),
            action: request.action.as_str(),
            selection: selection_json(&request.selection),
            token: self.token.clone(),
            matched,
            done,
            skipped: report.results.len() as u64 - done,
            at: self.clock.now(),
        };
        self.repo.record_bulk_action(&record)?;
        report.id = Some(record.id);
        Ok(report)
    }

    /// Judges and writes one batch, judging again on a fresh read the tasks that changed
    /// since they were read; the outcomes in the order of `tasks`.
    fn bulk_batch(
        &self,
        request: &BulkRequest,
        tasks: Vec<Task>,
    ) -> Result<Vec<BulkItem>, AppError> {
        let action = request.action;
        let order: Vec<TaskId> = tasks.iter().map(Task::id).collect();
        let mut outcomes: Vec<BulkItem> = Vec::with_capacity(tasks.len());
        let mut pending = tasks;
        for attempt in 0..MAX_BULK_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let now = self.clock.now();
            let mut judged: Vec<(Task, Task)> = Vec::with_capacity(pending.len());
            for before in pending {
                if let Some(&expected) = request.expected_versions.get(&before.id()) {
                    if before.version() != expected {
                        outcomes.push(BulkItem {
                            id: before.id(),
                            outcome: Err(AppError::PreconditionFailed {
                                task: before.id(),
                                current_version: before.version(),
                            }),
                        });
                        continue;
                    }
                }
                let mut after = before.clone();
                let verdict = match action {
                    BulkAction::Rerun => after.rerun(now),
                    BulkAction::Cancel => after.cancel(now),
                    BulkAction::Delete => after.check_deletable(),
                };
                match verdict {
                    Ok(()) => judged.push((before, after)),
                    Err(refused) => outcomes.push(refusal(before.id(), refused)),
                }
            }
            if judged.is_empty() {
                break;
            }
            let lost: Vec<TaskId> = match action {
                BulkAction::Delete => {
                    let doomed: Vec<(TaskId, u64)> =
                        judged.iter().map(|(before, _)| (before.id(), before.version())).collect();
                    self.repo.delete_many(&doomed)?
                }
                BulkAction::Rerun | BulkAction::Cancel => {
                    self.write_judged(&mut judged, &mut outcomes)?
                }
            };
            let lost: HashSet<TaskId> = lost.into_iter().collect();
            for (before, after) in &judged {
                if !lost.contains(&before.id()) {
                    if action != BulkAction::Delete {
                        self.observe_transition(before, after);
                    }
                    outcomes.push(BulkItem { id: before.id(), outcome: Ok(()) });
                }
            }
            let lost: Vec<TaskId> = lost.into_iter().collect();
            if lost.is_empty() {
                break;
            }
            if attempt + 1 == MAX_BULK_ATTEMPTS {
                outcomes.extend(
                    lost.into_iter().map(|id| BulkItem {
                        id,
                        outcome: Err(AppError::ConcurrentModification(id)),
                    }),
                );
                break;
            }
            let fresh = self.repo.get_many(&lost)?;
            for id in &lost {
                if !fresh.iter().any(|t| t.id() == *id) {
                    outcomes.push(BulkItem { id: *id, outcome: Err(AppError::NotFound(*id)) });
                }
            }
            pending = fresh;
        }
        outcomes.sort_by_key(|item| order.iter().position(|id| *id == item.id));
        Ok(outcomes)
    }
}

impl TaskService {
    /// Writes the judged tasks (compare and swap) and returns the ids of the writes that
    /// lost. A rerun whose task's unique key another active task of the queue holds (stored,
    /// or rerun earlier in the same batch) is skipped with [`AppError::UniqueKeyHeld`], and
    /// the others are written without it.
    fn write_judged(
        &self,
        judged: &mut Vec<(Task, Task)>,
        outcomes: &mut Vec<BulkItem>,
    ) -> Result<Vec<TaskId>, AppError> {
        let mut active: Vec<Task> = Vec::new();
        judged.retain(|(_, after)| match active.iter().find(|a| same_key(after, a)) {
            _ if after.status().is_terminal() => true,
            Some(first) => {
                outcomes.push(held(after.id(), first.id()));
                false
            }
            None => {
                active.push(after.clone());
                true
            }
        });
        loop {
            let writes: Vec<TaskWrite> = judged
                .iter()
                .map(|(before, after)| TaskWrite {
                    task: after.clone(),
                    expected_version: before.version(),
                    events: vec![self.stamp(TaskEvent::transition(
                        Some(before),
                        after,
                        Actor::Client,
                    ))],
                })
                .collect();
            let holder = match self.repo.write_many(&writes, &[]) {
                Ok(lost) => return Ok(lost),
                Err(RepoError::UniqueKeyHeld(holder)) => holder,
                Err(e) => return Err(e.into()),
            };
            let before = judged.len();
            match self.repo.get(holder) {
                Ok(holder) => judged.retain(|(_, after)| {
                    let keep = !same_key(after, &holder);
                    if !keep {
                        outcomes.push(held(after.id(), holder.id()));
                    }
                    keep
                }),
                // Gone since: its key is free, so the next round may write them all.
                Err(RepoError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if judged.len() == before {
                // Every round leaves one key out or sees a holder vanish; storage naming a
                // holder of none of these keys is a race best answered as one.
                return Err(AppError::ConcurrentModification(holder));
            }
        }
    }
}

/// A rerun skipped because `holder` holds its task's unique key.
fn held(id: TaskId, holder: TaskId) -> BulkItem {
    BulkItem { id, outcome: Err(AppError::UniqueKeyHeld { holder, index: None }) }
}

fn refusal(id: TaskId, refused: DomainError) -> BulkItem {
    BulkItem { id, outcome: Err(AppError::Conflict(refused)) }
}

/// The selection as the audit record keeps it.
fn selection_json(selection: &BulkSelection) -> Value {
    match selection {
        BulkSelection::Ids(ids) => {
            json!({ "ids": ids.iter().map(|id| id.as_uuid().to_string()).collect::<Vec<_>>() })
        }
        BulkSelection::Filter(f) => {
            let mut out = serde_json::Map::new();
            let at =
                |t: &chrono::DateTime<chrono::Utc>| Value::from(taskpilot_api::time::format(*t));
            if let Some(q) = &f.queue {
                out.insert("queue".into(), q.as_str().into());
            }
            if !f.statuses.is_empty() {
                out.insert(
                    "status".into(),
                    f.statuses.iter().map(|s| Value::from(s.as_str())).collect(),
                );
            }
            if let Some(r) = f.retry_state {
                out.insert("retryState".into(), r.as_str().into());
            }
            if let Some(n) = &f.name {
                out.insert("name".into(), n.as_str().into());
            }
            for (key, value) in [
                ("createdAfter", &f.created_after),
                ("createdBefore", &f.created_before),
                ("completedAfter", &f.completed_after),
                ("completedBefore", &f.completed_before),
            ] {
                if let Some(t) = value {
                    out.insert(key.into(), at(t));
                }
            }
            if let Some(e) = &f.error_contains {
                out.insert("error".into(), e.as_str().into());
            }
            if let Some(p) = &f.payload_contains {
                out.insert("payload".into(), p.clone());
            }
            json!({ "filter": out })
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::{Arc, Mutex};

    use taskpilot_domain::{TaskStatus, TokenName};

    use super::super::fixtures::*;
    use super::*;
    use crate::MockTaskRepository;

    fn as_id(task: &Task, n: u128) -> Task {
        let mut record = task.to_record();
        record.id = task_id(n);
        Task::restore(record).unwrap()
    }

    fn failed_tasks(n: u128) -> Vec<Task> {
        (1..=n).map(|i| as_id(&failed(), i)).collect()
    }

    fn by_filter(action: BulkAction, limit: u32) -> BulkRequest {
        let filter = TaskFilter { statuses: vec![TaskStatus::Failed], ..TaskFilter::default() };
        BulkRequest {
            action,
            selection: BulkSelection::Filter(filter),
            dry_run: false,
            limit,
            expected_versions: HashMap::new(),
        }
    }

    /// A repository listing `tasks` newest first as storage would, by cursor and limit.
    fn listing(repo: &mut MockTaskRepository, tasks: Vec<Task>, calls: Arc<Mutex<Vec<u32>>>) {
        repo.expect_list().returning(move |_, after, limit| {
            calls.lock().unwrap().push(limit);
            let start = match after {
                None => 0,
                Some(c) => tasks.iter().position(|t| t.id() == c.id).unwrap() + 1,
            };
            Ok(tasks.iter().skip(start).take(limit as usize).cloned().collect())
        });
    }

    #[test]
    fn a_bulk_rerun_walks_the_filter_in_batches_of_500_and_records_itself_once() {
        let mut repo = MockTaskRepository::new();
        let calls = Arc::new(Mutex::new(Vec::new()));
        listing(&mut repo, failed_tasks(1_200), calls.clone());
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = written.clone();
        repo.expect_write_many().returning(move |writes, rejections| {
            assert!(rejections.is_empty());
            for w in writes {
                assert_eq!(w.task.status(), TaskStatus::Pending);
                assert_eq!(w.expected_version, failed().version());
                assert_eq!(w.events[0].token.as_ref().map(TokenName::as_str), Some("ops"));
            }
            seen.lock().unwrap().push(writes.len());
            Ok(vec![])
        });
        repo.expect_record_bulk_action()
            .withf(|r| {
                r.action == "rerun"
                    && (r.matched, r.done, r.skipped) == (1_200, 1_200, 0)
                    && r.token.as_ref().map(TokenName::as_str) == Some("ops")
                    && r.selection == json!({"filter": {"status": ["FAILED"]}})
            })
            .times(1)
            .returning(|_| Ok(()));
        let service = service(repo).for_token(Some(TokenName::parse("ops").unwrap()));

        let report = service.bulk(&by_filter(BulkAction::Rerun, 10_000), &QueueScope::All).unwrap();

        assert_eq!((report.matched, report.done(), report.more), (1_200, 1_200, false));
        assert_eq!(*written.lock().unwrap(), vec![500, 500, 200]);
        assert_eq!(*calls.lock().unwrap(), vec![500, 500, 500]);
        assert!(report.id.is_some());
    }

    #[test]
    fn a_dry_run_counts_up_to_the_limit_says_more_match_and_writes_nothing() {
        let mut repo = MockTaskRepository::new();
        let calls = Arc::new(Mutex::new(Vec::new()));
        listing(&mut repo, failed_tasks(700), calls.clone());
        repo.expect_write_many().never();
        repo.expect_record_bulk_action().never();
        let request = BulkRequest { dry_run: true, ..by_filter(BulkAction::Rerun, 600) };

        let report = service(repo).bulk(&request, &QueueScope::All).unwrap();

        assert_eq!((report.matched, report.more, report.dry_run), (600, true, true));
        assert!(report.results.is_empty());
        assert_eq!(*calls.lock().unwrap(), vec![500, 100, 1]);
    }

    #[test]
    fn a_bulk_cancel_skips_what_the_domain_refuses_with_its_rule() {
        let mut repo = MockTaskRepository::new();
        let tasks = vec![as_id(&pending(), 1), as_id(&succeeded(), 2), as_id(&running(), 3)];
        repo.expect_get_many().returning(move |_| Ok(tasks.clone()));
        repo.expect_write_many()
            .withf(|writes, _| {
                writes.iter().map(|w| w.task.id()).collect::<Vec<_>>() == [task_id(1), task_id(3)]
            })
            .times(1)
            .returning(|_, _| Ok(vec![]));
        repo.expect_record_bulk_action()
            .withf(|r| (r.matched, r.done, r.skipped) == (3, 2, 1))
            .times(1)
            .returning(|_| Ok(()));
        let ids = vec![task_id(1), task_id(2), task_id(3), task_id(2)];
        let request = BulkRequest {
            action: BulkAction::Cancel,
            selection: BulkSelection::Ids(ids),
            dry_run: false,
            limit: 1_000,
            expected_versions: HashMap::new(),
        };

        let report = service(repo).bulk(&request, &QueueScope::All).unwrap();

        let outcomes: Vec<(TaskId, bool)> =
            report.results.iter().map(|r| (r.id, r.outcome.is_ok())).collect();
        assert_eq!(outcomes, [(task_id(1), true), (task_id(2), false), (task_id(3), true)]);
        assert!(matches!(
            &report.results[1].outcome,
            Err(AppError::Conflict(DomainError::InvalidTransition {
                from: TaskStatus::Succeeded,
                ..
            }))
        ));
    }

    #[test]
    fn a_bulk_delete_judges_again_a_task_that_changed_and_skips_unknown_and_live_tasks() {
        let mut repo = MockTaskRepository::new();
        let stored = vec![as_id(&failed(), 1), as_id(&cancelled(), 2), as_id(&running(), 3)];
        let rerun_meanwhile = {
            let mut t = as_id(&cancelled(), 2);
            t.rerun(now()).unwrap();
            t
        };
        let mut reads = 0;
        repo.expect_get_many().returning(move |ids| {
            reads += 1;
            if reads == 1 {
                Ok(stored.clone())
            } else {
                assert_eq!(ids, [task_id(2)]);
                Ok(vec![rerun_meanwhile.clone()])
            }
        });
        repo.expect_delete_many()
            .times(1)
            .withf(|doomed| {
                doomed.iter().map(|(id, _)| *id).collect::<Vec<_>>() == [task_id(1), task_id(2)]
            })
            .returning(|_| Ok(vec![task_id(2)]));
        repo.expect_record_bulk_action()
            .withf(|r| r.action == "delete" && (r.matched, r.done, r.skipped) == (3, 1, 3))
            .times(1)
            .returning(|_| Ok(()));
        let request = BulkRequest {
            action: BulkAction::Delete,
            selection: BulkSelection::Ids(vec![task_id(1), task_id(2), task_id(3), task_id(4)]),
            dry_run: false,
            limit: 1_000,
            expected_versions: HashMap::new(),
        };

        let report = service(repo).bulk(&request, &QueueScope::All).unwrap();

        let codes: Vec<(TaskId, String)> = report
            .results
            .iter()
            .map(|r| {
                (r.id, r.outcome.as_ref().map_or_else(|e| format!("{e:?}"), |()| "done".into()))
            })
            .collect();
        assert_eq!(codes[0], (task_id(1), "done".to_owned()));
        assert!(
            codes[1].1.contains("action: Delete") && codes[1].1.contains("Pending"),
            "{codes:?}"
        );
        assert!(
            codes[2].1.contains("action: Delete") && codes[2].1.contains("Running"),
            "{codes:?}"
        );
        assert!(
            matches!(report.results[3].outcome, Err(AppError::NotFound(id)) if id == task_id(4))
        );
    }

    #[test]
    fn a_bulk_action_refuses_a_limit_outside_1_to_10000_without_asking_storage() {
        for limit in [0, 10_001] {
            let outcome = service(MockTaskRepository::new())
                .bulk(&by_filter(BulkAction::Cancel, limit), &QueueScope::All);
            assert!(matches!(outcome, Err(AppError::InvalidBulkLimit(l)) if l == limit));
        }
    }
}
