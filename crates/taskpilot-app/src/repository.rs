//! The storage port.

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_api::limits::{EARLIEST_INSTANT_MICROS, LATEST_INSTANT_MICROS};
use taskpilot_domain::{
    Fingerprint, IdempotencyKey, KeyClaim, LeaseDuration, LiveSuccess, QueueName, QueueState,
    RetryState, StoredResponse, Task, TaskId, TaskName, TaskStatus, TokenId, TokenName, WorkerId,
};

use crate::{
    DeadLetterGroup, DeadLetterQuery, RejectionCount, TaskCounts, TaskEvent, ThroughputMinute,
    WorkerSighting,
};

/// What storage can fail with. Adapters translate their own errors into these.
///
/// Nothing converts into it implicitly: an adapter says which of its errors are
/// [`RepoError::Unavailable`] and wraps the rest with [`RepoError::unexpected`], so that a
/// stray `?` cannot turn a missing row or a lost race into a 500.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// No task has this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task changed since it was read (its version moved on), or the id is taken.
    #[error("task {0} was modified concurrently")]
    Conflict(TaskId),
    /// The write would make a second PENDING or RUNNING task of one queue with one unique
    /// key; the task named holds the key.
    #[error("the unique key is held by task {0}")]
    UniqueKeyHeld(TaskId),
    /// Storage cannot be reached now; the same call may succeed later.
    #[error("storage unavailable: {0:#}")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or a broken row.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl RepoError {
    /// A bug or a broken row: what storage did is for the logs, not for the caller to act on.
    pub fn unexpected(error: impl Into<anyhow::Error>) -> Self {
        Self::Unexpected(error.into())
    }
}

/// Where a page of a listing starts: just after this task in newest-first order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last task of the previous page.
    pub created_at: DateTime<Utc>,
    /// Its id, which breaks ties between tasks created in the same microsecond.
    pub id: TaskId,
}

impl Cursor {
    /// The cursor just after `task`.
    pub fn after(task: &Task) -> Self {
        Self { created_at: task.created_at(), id: task.id() }
    }

    /// The opaque form handed to clients: hex of the creation instant and the id.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_uuid().as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads what [`Cursor::encode`] wrote; `None` for anything else, including an instant
    /// no task can have been created at: one outside the API's range of instants (years 0000
    /// to 9999, [`taskpilot_api::limits`]), which storage could not compare with.
    pub fn decode(raw: &str) -> Option<Self> {
        // Only the one spelling `encode` writes: 48 lowercase hex digits (`from_str_radix`
        // alone would also take a leading `+`).
        if raw.len() != 48 || !raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let bytes = (0..24)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let micros = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        if !(EARLIEST_INSTANT_MICROS..=LATEST_INSTANT_MICROS).contains(&micros) {
            return None;
        }
        let created_at = DateTime::from_timestamp_micros(micros)?;
        let id = uuid::Uuid::from_slice(&bytes[8..]).ok()?;
        Some(Self { created_at, id: TaskId::from_uuid(id) })
    }
}

/// Which tasks a listing wants: every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskFilter {
    /// Only tasks in this queue.
    pub queue: Option<QueueName>,
    /// Only tasks in one of these statuses; any status when empty.
    pub statuses: Vec<TaskStatus>,
    /// Only tasks in this retry state.
    pub retry_state: Option<RetryState>,
    /// Only tasks of this name.
    pub name: Option<TaskName>,
    /// Only tasks created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks that finished at or after this instant (so only terminal tasks).
    pub completed_after: Option<DateTime<Utc>>,
    /// Only tasks that finished strictly before this instant (so only terminal tasks).
    pub completed_before: Option<DateTime<Utc>>,
    /// Only tasks whose last error contains this text, case-insensitively; every character
    /// is literal (`%` and `_` included).
    pub error_contains: Option<String>,
    /// Only tasks whose payload contains this JSON value (PostgreSQL's `@>`): an object
    /// matches every payload holding at least its keys with those values. Storage looks only
    /// among the newest [`TaskFilter::MAX_PAYLOAD_MATCHES`] such tasks.
    pub payload_contains: Option<Value>,
    /// Only tasks in one of these queues (a token's reach); every queue when `None`.
    pub queues: Option<Vec<QueueName>>,
    /// Only tasks created by this token.
    pub created_by: Option<TokenId>,
}

impl TaskFilter {
    /// A payload filter reaches at most this many tasks, the newest whose payload contains
    /// the value: later pages of such a listing end there.
    pub const MAX_PAYLOAD_MATCHES: u32 = 10_000;
}

/// One operator action on many tasks, as it is recorded once: see
/// [`TaskRepository::record_bulk_action`].
#[derive(Debug, Clone, PartialEq)]
pub struct BulkActionRecord {
    /// Its identity.
    pub id: uuid::Uuid,
    /// `rerun`, `cancel` or `delete`.
    pub action: &'static str,
    /// What selected the tasks: the filter's conditions or the ids, as JSON.
    pub selection: Value,
    /// The API token that asked for it, `None` under open access.
    pub token: Option<TokenName>,
    /// How many tasks matched.
    pub matched: u64,
    /// How many it changed (or deleted).
    pub done: u64,
    /// How many it left alone, each for a rule that refused it.
    pub skipped: u64,
    /// When it ran.
    pub at: DateTime<Utc>,
}

/// One compare-and-swap write of a batch: see [`TaskRepository::write_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWrite {
    /// The task as it should be stored.
    pub task: Task,
    /// The version it must still have in storage.
    pub expected_version: u64,
    /// The events of the transitions that made it, oldest first.
    pub events: Vec<TaskEvent>,
}

/// An `Idempotency-Key` to store together with the tasks of the create that used it; see
/// [`TaskRepository::insert_keyed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIdempotencyKey {
    /// Whose key it is: the token id that sent it, or `open` on a server without tokens.
    /// Keys of different scopes never meet.
    pub scope: String,
    /// The key.
    pub key: IdempotencyKey,
    /// The request that used it.
    pub fingerprint: Fingerprint,
    /// The answer the create gets, to answer again.
    pub response: StoredResponse,
    /// When it was stored, by the service's clock.
    pub created_at: DateTime<Utc>,
    /// From when on it is forgotten: a later request with it is a new request.
    pub expires_at: DateTime<Utc>,
}

/// What a worker asks for when it claims work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Who claims.
    pub worker: WorkerId,
    /// Only tasks in these queues; every queue when `None`.
    pub queues: Option<Vec<QueueName>>,
    /// At most this many tasks.
    pub limit: u32,
    /// The lease each claimed task gets.
    pub lease: LeaseDuration,
    /// The instant the claim happens at, from the service's clock.
    pub now: DateTime<Utc>,
}

/// What one queue did since an instant (see [`TaskRepository::queue_activity`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueActivity {
    /// The queue.
    pub queue: QueueName,
    /// Tasks created since then (still stored).
    pub created: u64,
    /// Tasks that finished (SUCCEEDED, FAILED or CANCELLED) since then.
    pub completed: u64,
}

/// The storage port for tasks. Implementations are synchronous; callers run them off any
/// async executor.
///
/// One trait rather than one per role (the compare-and-swap store, the queue, history and
/// counts), because the roles share their transactions: a transition is stored with its
/// event, a batch's writes with its refusals, a claim starts tasks and records their start
/// events, so every role writes the same two tables atomically. An embedder implements it
/// once over one connection pool; a test author gets one `MockTaskRepository`, whose
/// unexpected calls fail the test, so a test sets up only the methods its use case touches.
///
/// Implementations MUST:
/// - return [`RepoError::NotFound`] for unknown ids;
/// - write in [`TaskRepository::update`] only when the stored version equals
///   `expected_version`, and return [`RepoError::Conflict`] otherwise, so that two
///   concurrent transitions of one task can never both win;
/// - store a task and the event that describes its change atomically: both or neither;
/// - return [`RepoError::Unavailable`] when the store cannot be reached, so that callers can
///   tell "try again later" from a bug;
/// - store times to the microsecond and give back exactly what they stored.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TaskRepository: Send + Sync {
    /// Stores a new task and its creation event. [`RepoError::Conflict`] when its id is taken.
    ///
    /// When the task has a [`Task::unique_key`] that another PENDING or RUNNING task of its
    /// queue holds, stores nothing and returns [`RepoError::UniqueKeyHeld`] naming that task.
    /// Implementations MUST decide that atomically with the insert, so that of any number of
    /// racing inserts with one key exactly one is stored and the others name it.
    fn insert(&self, task: &Task, event: &TaskEvent) -> Result<(), RepoError>;

    /// Loads one task.
    fn get(&self, id: TaskId) -> Result<Task, RepoError>;

    /// Replaces a task whose stored version is `expected_version` with `task`, and records
    /// `event` with it when given. [`RepoError::UniqueKeyHeld`] when the task would become
    /// PENDING or RUNNING while another such task of its queue holds its unique key.
    #[expect(clippy::needless_lifetimes, reason = "mockall cannot mock an elided Option<&T>")]
    fn update<'a>(
        &self,
        task: &Task,
        expected_version: u64,
        event: Option<&'a TaskEvent>,
    ) -> Result<(), RepoError>;

    /// Starts up to `request.limit` runnable tasks for `request.worker` in one atomic step and
    /// returns them as started.
    ///
    /// Runnable means [`Task::is_runnable_at`] `request.now`, in `request.queues` when given,
    /// and in a queue whose stored state [`QueueState::is_claimable`] (not paused): the claim
    /// MUST read the pause state in the same statement or transaction that picks the tasks, so
    /// that a pause stored by any server holds for every claim that starts after it.
    /// Order: priority descending, then the moment the task became runnable (`next_run_at`,
    /// else `created_at`) ascending, then id. Each task MUST change exactly as
    /// [`Task::start`] would change it, with a fresh token from a cryptographic random
    /// source, and get a start event. A claim MUST NOT wait for tasks another claim is
    /// taking, and holds no lock once it returns.
    fn claim(&self, request: &ClaimRequest) -> Result<Vec<Task>, RepoError>;

    /// Up to `limit` running tasks whose lease expired at or before `now`, oldest expiry first.
    fn expired_leases(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError>;

    /// The earliest `next_run_at` of a pending task that is later than `after`: when the
    /// next scheduled retry or delayed task becomes runnable.
    fn earliest_scheduled_run(
        &self,
        after: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, RepoError>;

    /// Stores new tasks and their creation events, all or none, in one round trip.
    /// [`RepoError::Conflict`] naming the first id that is taken; [`RepoError::UniqueKeyHeld`]
    /// (storing nothing) when a stored task holds the unique key of one of them.
    fn insert_many(&self, tasks: &[Task], events: &[TaskEvent]) -> Result<(), RepoError>;

    /// Stores `key` and, with it in one transaction, the new tasks and their creation events,
    /// all or none, when the key is free in its scope: never stored, or stored with an
    /// `expires_at` at or before `key.created_at` (that old row is replaced). Otherwise it
    /// stores nothing and says what holds the key: [`KeyClaim::Held`] with what was stored,
    /// or [`KeyClaim::InFlight`] while another transaction that stores the same key has not
    /// ended yet after a short wait.
    ///
    /// Implementations MUST make two calls with the same scope and key that race store at
    /// most one of them (the key is stored before the tasks), and MUST NOT keep a key whose
    /// tasks were not stored. [`RepoError::Conflict`] as [`TaskRepository::insert_many`].
    fn insert_keyed(
        &self,
        tasks: &[Task],
        events: &[TaskEvent],
        key: &NewIdempotencyKey,
    ) -> Result<KeyClaim, RepoError>;

    /// Deletes up to `limit` idempotency keys whose `expires_at` is at or before `now`,
    /// oldest first, skipping rows others hold locked, and returns how many it deleted.
    fn delete_expired_keys(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, RepoError>;

    /// Loads the tasks with these ids that exist, in any order, in one round trip.
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError>;

    /// Applies many compare-and-swap writes and records `rejections`, in one atomic round
    /// trip. Each write succeeds only if its task's stored version is still
    /// `expected_version`; its events are recorded only if it does. Returns the ids of the
    /// writes that lost (stored version moved on, or the task is gone); the others are stored.
    /// [`RepoError::UniqueKeyHeld`] (storing nothing) when a write would make a second active
    /// task of one queue and unique key.
    fn write_many(
        &self,
        writes: &[TaskWrite],
        rejections: &[TaskEvent],
    ) -> Result<Vec<TaskId>, RepoError>;

    /// Applies each success wherever its guard matches the stored task, in one atomic round
    /// trip without reading the tasks first, and returns the tasks it changed, as stored, in
    /// any order. A task it leaves alone is for the full path (read, judge, compare and swap),
    /// which tells a replay, a refusal or a lost race apart.
    ///
    /// Implementations MUST:
    /// - change a task only when [`LiveSuccess::guard`] matches it as stored at the moment of
    ///   the write (RUNNING the attempt of the guard's token, held by the guard's worker when
    ///   it names one), and then exactly as [`LiveSuccess::apply`] changes its record;
    /// - leave every other task alone, unknown ids included, and record nothing for it;
    /// - store with each changed task, atomically, the event that
    ///   [`TaskEvent::transition`]`(Some(&stored), &changed, Actor::Worker)` describes
    ///   (from RUNNING to SUCCEEDED, the attempt and the worker that ran it, at the new
    ///   `updated_at`);
    /// - apply a repeated id once, with its first success.
    ///
    /// [`Actor::Worker`]: crate::Actor::Worker
    /// `token` is the name of the API token the successes were reported with, for their
    /// history entries.
    #[expect(clippy::needless_lifetimes, reason = "mockall cannot mock an elided Option<&T>")]
    fn succeed_live<'a>(
        &self,
        successes: &[(TaskId, LiveSuccess)],
        token: Option<&'a TokenName>,
    ) -> Result<Vec<Task>, RepoError>;

    /// Records a refused stale call.
    fn record_rejection(&self, event: &TaskEvent) -> Result<(), RepoError>;

    /// A task's history, oldest first. Empty, not an error, for an unknown id.
    fn events(&self, id: TaskId) -> Result<Vec<TaskEvent>, RepoError>;

    /// How many stale calls were refused, by code and call, over the store's whole history.
    fn rejection_counts(&self) -> Result<Vec<RejectionCount>, RepoError>;

    /// The maintained counts at `now`: tasks by queue and status (PENDING split into runnable
    /// and scheduled at `now`), the oldest runnable task of each queue, and the wait and run
    /// times of attempts. The first `max_queues` queues in name order get their own entries,
    /// the rest are summed into [`TaskCounts::other_queues`].
    ///
    /// Implementations MUST:
    /// - count exactly what is stored, as a `COUNT(*)` of the tasks by queue and status would,
    ///   including the writes of every other server;
    /// - keep the counts with the writes themselves (in the same transactions), so that this
    ///   call does not count the tasks: its cost must not grow with the number of tasks stored;
    /// - keep the durations as counters that never go down, not even when retention deletes
    ///   tasks.
    fn task_counts(&self, now: DateTime<Utc>, max_queues: u32) -> Result<TaskCounts, RepoError>;

    /// Compacts what keeps the counts (folds up to `limit` changes into their sums), so that
    /// [`TaskRepository::task_counts`] stays cheap, and returns by how many records it shrank
    /// them (0 when nothing was left to compact). Safe to call from any number of servers at
    /// once: one does the work, the others return 0 at once. Storage that needs no compaction
    /// returns 0.
    fn fold_counts(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, RepoError>;

    /// Up to `limit` tasks matching `filter`, newest first (by creation time, then id, both
    /// descending), starting strictly after `after` when given.
    fn list(
        &self,
        filter: &TaskFilter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<Task>, RepoError>;

    /// Deletes each task whose stored version is still the version given, with its whole
    /// history, all in one transaction, and returns the ids it did not delete (the version
    /// moved on, or the task is gone). The caller has judged each task deletable
    /// ([`Task::check_deletable`]) at that version.
    fn delete_many(&self, tasks: &[(TaskId, u64)]) -> Result<Vec<TaskId>, RepoError>;

    /// Records one bulk action, once, for the operators' audit.
    fn record_bulk_action(&self, record: &BulkActionRecord) -> Result<(), RepoError>;

    /// Succeeds when the store answers.
    fn ping(&self) -> Result<(), RepoError>;

    /// The stored state of every queue that has one (was ever paused or resumed), in name
    /// order.
    fn queue_states(&self) -> Result<Vec<(QueueName, QueueState)>, RepoError>;

    /// The stored state of `queue`; [`QueueState::default`] when it has none.
    fn queue_state(&self, queue: &QueueName) -> Result<QueueState, RepoError>;

    /// Stores `state` for `queue` when its stored version is still `expected_version` (0: no
    /// state stored yet) and returns whether it did (`false`: another write won; read again).
    ///
    /// Implementations MUST, when `state` is claimable, wake the long-polling claims of every
    /// server waiting on the queue once the write is durable (the notification of tasks that
    /// became runnable).
    fn write_queue_state(
        &self,
        queue: &QueueName,
        state: &QueueState,
        expected_version: u64,
    ) -> Result<bool, RepoError>;

    /// By queue, the tasks created and the tasks finished at or after `since`, for the queues
    /// where either is not zero. Its cost follows the number of tasks created and finished
    /// since then, not the number stored.
    fn queue_activity(&self, since: DateTime<Utc>) -> Result<Vec<QueueActivity>, RepoError>;

    /// How many runnable tasks of `task`'s queue a claim at `now` takes before `task` (higher
    /// priority, or the same priority and runnable earlier, then lower id), counting at most
    /// `cap`.
    fn runnable_ahead(&self, task: &Task, now: DateTime<Utc>, cap: u32) -> Result<u64, RepoError>;

    /// Deletes up to `limit` tasks in `status` that finished (`completed_at`) strictly before
    /// `completed_before`, oldest first, with their whole history, and returns how many it
    /// deleted. Retention (`TaskService::prune`) calls it once per terminal status.
    ///
    /// Implementations MUST:
    /// - delete nothing when `status` is not terminal: a pending or running task is never
    ///   deleted, however old;
    /// - delete each task together with every event of its history in one transaction, so
    ///   that no history outlives its task and no task loses part of its history;
    /// - delete at most `limit` tasks per call, so that one call is one short transaction;
    /// - skip tasks that another transaction holds locked rather than wait for them (the
    ///   next call finds them), so that any number of servers may prune at once without
    ///   blocking each other or the writers of those tasks, and no task is counted twice.
    fn delete_finished(
        &self,
        status: TaskStatus,
        completed_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, RepoError>;

    /// Tasks created and finished per minute from the minute that starts at `since` on, for
    /// the minutes in which any were, oldest first, summed over `queues` (every queue when
    /// `None`).
    ///
    /// Implementations MUST keep these counts as the tasks are written, not count stored
    /// tasks to answer: the cost follows the number of minutes, and tasks deleted since
    /// (retention, bulk delete) still count in the minute they were created and finished in.
    #[expect(clippy::needless_lifetimes, reason = "mockall cannot mock an elided Option<&T>")]
    fn throughput<'a>(
        &self,
        since: DateTime<Utc>,
        queues: Option<&'a [QueueName]>,
    ) -> Result<Vec<ThroughputMinute>, RepoError>;

    /// The FAILED tasks among the newest `query.scan` of them (by when they failed), grouped
    /// by queue, name and the first line of the last error cut at `query.error_chars`
    /// characters, the largest groups first (then the latest failure), at most `query.limit`.
    fn dead_letters(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetterGroup>, RepoError>;

    /// Stores these sightings, each instant kept only when later than the stored one (so
    /// servers may write in any order), and forgets workers last seen before
    /// `forget_before`.
    fn record_workers(
        &self,
        sightings: &[WorkerSighting],
        forget_before: DateTime<Utc>,
    ) -> Result<(), RepoError>;

    /// The stored sightings of workers last seen at or after `seen_since`, the most recent
    /// first, at most `limit`.
    fn workers(
        &self,
        seen_since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WorkerSighting>, RepoError>;
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::{TimeZone, Timelike};
    use uuid::Uuid;

    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            created_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
                .unwrap()
                .with_nanosecond(123_456_000)
                .unwrap(),
            id: TaskId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00ff)),
        }
    }

    #[test]
    fn a_cursor_survives_encode_and_decode() {
        let encoded = cursor().encode();

        assert_eq!(encoded.len(), 48);
        assert!(encoded.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(Cursor::decode(&encoded), Some(cursor()));
    }

    #[test]
    fn cursors_before_the_epoch_and_with_extreme_ids_survive_too() {
        let at = |micros| DateTime::from_timestamp_micros(micros).unwrap();
        for c in [
            Cursor { created_at: at(EARLIEST_INSTANT_MICROS), id: TaskId::from_uuid(Uuid::nil()) },
            Cursor { created_at: at(LATEST_INSTANT_MICROS), id: TaskId::from_uuid(Uuid::max()) },
            Cursor { created_at: DateTime::UNIX_EPOCH, id: TaskId::from_uuid(Uuid::nil()) },
            Cursor {
                created_at: Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(),
                id: TaskId::from_uuid(Uuid::max()),
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn junk_is_not_a_cursor() {
        let good = cursor().encode();
        let junk = [
            String::new(),
            "not-a-cursor".to_owned(),
            good[..47].to_owned(),
            format!("{good}0"),
            format!("{}zz", &good[..46]),
            format!("{}é", &good[..46]),
            format!(" {}", &good[..47]),
            "-1".repeat(24),
            "+0".repeat(24),
            good.to_uppercase(),
            // An instant beyond what chrono can represent.
            format!("7fffffffffffffff{}", &good[16..]),
            // Instants chrono holds but PostgreSQL does not, or the API cannot write.
            format!("{:016x}{}", i64::MIN / 2, &good[16..]),
            format!("{:016x}{}", 4_000_000_000_000_000_000_i64, &good[16..]),
            format!("{:016x}{}", LATEST_INSTANT_MICROS + 1, &good[16..]),
            format!("{:016x}{}", EARLIEST_INSTANT_MICROS - 1, &good[16..]),
        ];

        for raw in junk {
            assert_eq!(Cursor::decode(&raw), None, "{raw:?}");
        }
    }

    #[test]
    fn the_cursor_after_a_task_points_at_its_creation_and_id() {
        use serde_json::json;
        use taskpilot_domain::{MaxAttempts, NewTask, TaskName};

        let c = cursor();
        let spec = NewTask {
            queue: QueueName::default_queue(),
            name: TaskName::parse("n").unwrap(),
            payload: json!({}),
            priority: 0,
            max_attempts: MaxAttempts::new(1).unwrap(),
            run_at: None,
            unique_key: None,
        };
        let task = Task::new(c.id, spec, c.created_at);

        assert_eq!(Cursor::after(&task), c);
    }
}
