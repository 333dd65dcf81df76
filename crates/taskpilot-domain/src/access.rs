//! Who may do what: the kinds of API token, the operations each kind grants (one table,
//! [`TokenKind::grants`]), the queues a token reaches, and when a stored token can be used.
//!
//! A token's secret never enters the domain: storage keeps a hash, the application layer
//! mints and checks secrets; here live only the rules that decide what a caller holding a
//! valid token may do.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::ids::check_text;
use crate::{QueueName, Task, ValidationError};

/// The identity of an API token (not its secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
pub struct TokenId(Uuid);

impl TokenId {
    /// Wraps a UUID that names a token.
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A token's name, as its holder and the task history see it: 1 to
/// [`TokenName::MAX_CHARS`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenName(String);

impl TokenName {
    /// The longest name accepted, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Validates a token name.
    ///
    /// # Errors
    /// [`ValidationError::TokenName`] when it is empty, too long or holds a control character.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        check_text(raw, Self::MAX_CHARS).map_err(ValidationError::TokenName)?;
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A preset of what a token may do; see [`TokenKind::grants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenKind {
    /// Creates tasks; reads and cancels the tasks it created.
    Producer,
    /// Claims and runs tasks: start, heartbeat, succeed, fail, release, batch complete.
    Worker,
    /// Reads everything: tasks, history, stats, queues, metrics.
    Viewer,
    /// A viewer that also cancels and reruns tasks, one at a time or in bulk, and pauses and
    /// resumes queues.
    Operator,
    /// Every operation, managing tokens included.
    Admin,
    /// Reads the Prometheus metrics only.
    Metrics,
}

/// Something a caller asks the API to do, as far as access is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Create one task or a batch.
    CreateTask,
    /// Read one task or its history.
    ReadTask,
    /// List tasks.
    ListTasks,
    /// Cancel a task.
    CancelTask,
    /// Rerun a finished task.
    RerunTask,
    /// Claim runnable tasks.
    Claim,
    /// A call on a task's lease: start by id, heartbeat, succeed, fail, release, and batch
    /// completion. The lease token is still needed on top of this grant.
    LeaseCall,
    /// Read the counters (`/api/stats`).
    ReadStats,
    /// Read the Prometheus metrics.
    ReadMetrics,
    /// Create, list and revoke tokens.
    ManageTokens,
    /// Rerun, cancel or delete many tasks at once (`POST /api/tasks/bulk`).
    BulkAction,
    /// Read the queues: their counts, pause state and activity (`/api/queues`).
    ReadQueues,
    /// Pause and resume queues.
    ManageQueues,
    /// Sign in to the web dashboard (`/ui`), which then acts with the token's other grants.
    OpenDashboard,
}

/// What a kind of token may do with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// On any task (within the token's queues).
    Any,
    /// Only on the tasks this token created; other tasks look as if they did not exist.
    Own,
    /// Not at all.
    Denied,
}

impl TokenKind {
    /// Every kind, in the order of the table.
    pub const ALL: [TokenKind; 6] = [
        TokenKind::Producer,
        TokenKind::Worker,
        TokenKind::Viewer,
        TokenKind::Operator,
        TokenKind::Admin,
        TokenKind::Metrics,
    ];

    /// The one table of who may do what.
    pub const fn grants(self, operation: Operation) -> Grant {
        use Grant::{Any, Denied, Own};
        use Operation as O;
        use TokenKind as K;
        match (self, operation) {
            (K::Admin, _) => Any,
            (K::Producer, O::CreateTask) => Any,
            (K::Producer, O::ReadTask | O::ListTasks | O::CancelTask) => Own,
            (K::Worker, O::Claim | O::LeaseCall) => Any,
            (
                K::Viewer | K::Operator,
                O::ReadTask
                | O::ListTasks
                | O::ReadStats
                | O::ReadMetrics
                | O::ReadQueues
                | O::OpenDashboard,
            ) => Any,
            (K::Operator, O::CancelTask | O::RerunTask | O::BulkAction | O::ManageQueues) => Any,
            (K::Metrics, O::ReadMetrics) => Any,
            _ => Denied,
        }
    }

    /// The kind as the API and the command line spell it: `producer`, `worker`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Producer => "producer",
            TokenKind::Worker => "worker",
            TokenKind::Viewer => "viewer",
            TokenKind::Operator => "operator",
            TokenKind::Admin => "admin",
            TokenKind::Metrics => "metrics",
        }
    }

    /// The readable start of every secret of this kind, e.g. `tp_worker_`, so that a leaked
    /// token says what it opens.
    pub const fn prefix(self) -> &'static str {
        match self {
            TokenKind::Producer => "tp_producer_",
            TokenKind::Worker => "tp_worker_",
            TokenKind::Viewer => "tp_viewer_",
            TokenKind::Operator => "tp_operator_",
            TokenKind::Admin => "tp_admin_",
            TokenKind::Metrics => "tp_metrics_",
        }
    }

    /// Reads a kind as [`TokenKind::as_str`] writes it.
    ///
    /// # Errors
    /// [`ValidationError::TokenKind`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| ValidationError::TokenKind(raw.to_owned()))
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The queues a token reaches: all of them, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueueScope {
    /// Every queue.
    #[default]
    All,
    /// Only these (never empty).
    Only(BTreeSet<QueueName>),
}

impl QueueScope {
    /// A scope from an optional list: `None` is every queue.
    ///
    /// # Errors
    /// [`ValidationError::TokenQueues`] for an empty list.
    pub fn from_list(queues: Option<Vec<QueueName>>) -> Result<Self, ValidationError> {
        match queues {
            None => Ok(Self::All),
            Some(list) if list.is_empty() => Err(ValidationError::TokenQueues),
            Some(list) => Ok(Self::Only(list.into_iter().collect())),
        }
    }

    /// Whether `queue` is within reach.
    pub fn allows(&self, queue: &QueueName) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(queue),
        }
    }

    /// The list, or `None` for every queue.
    pub fn to_list(&self) -> Option<Vec<QueueName>> {
        match self {
            Self::All => None,
            Self::Only(set) => Some(set.iter().cloned().collect()),
        }
    }

    /// The queues a claim may take from: those it asks for when all are within reach, the
    /// token's own list when it asks for none.
    ///
    /// # Errors
    /// [`Forbidden::Queue`] naming the first queue asked for outside the scope.
    pub fn claimable(
        &self,
        asked: Option<Vec<QueueName>>,
    ) -> Result<Option<Vec<QueueName>>, Forbidden> {
        match (self, asked) {
            (Self::All, asked) => Ok(asked),
            (Self::Only(_), None) => Ok(self.to_list()),
            (Self::Only(_), Some(asked)) => match asked.iter().find(|q| !self.allows(q)) {
                Some(outside) => Err(Forbidden::Queue(outside.clone())),
                None => Ok(Some(asked)),
            },
        }
    }
}

/// Why a caller with a valid token may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// Its kind does not grant the operation.
    #[error("a {kind} token may not do this")]
    Operation {
        /// The token's kind.
        kind: TokenKind,
    },
    /// The queue is outside the token's list.
    #[error("this token may not touch queue {0}")]
    Queue(QueueName),
}

/// Who is calling: the token that authenticated the request, or open access while the
/// server runs without tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    token: Option<TokenId>,
    name: TokenName,
    kind: TokenKind,
    queues: QueueScope,
}

impl Caller {
    /// A caller holding this token.
    pub fn token(token: TokenId, name: TokenName, kind: TokenKind, queues: QueueScope) -> Self {
        Self { token: Some(token), name, kind, queues }
    }

    /// Open access: no token, every operation, every queue (a server running without
    /// authentication acts for an admin).
    pub fn open() -> Self {
        Self {
            token: None,
            name: TokenName("open-access".to_owned()),
            kind: TokenKind::Admin,
            queues: QueueScope::All,
        }
    }

    /// The token acting, `None` under open access.
    pub fn token_id(&self) -> Option<TokenId> {
        self.token
    }

    /// The name history records for what this caller does.
    pub fn name(&self) -> &TokenName {
        &self.name
    }

    /// The token's kind.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The queues within reach.
    pub fn queues(&self) -> &QueueScope {
        &self.queues
    }

    /// What this caller may do with `operation`.
    ///
    /// # Errors
    /// [`Forbidden::Operation`] when its kind does not grant it.
    pub fn may(&self, operation: Operation) -> Result<Grant, Forbidden> {
        match self.kind.grants(operation) {
            Grant::Denied => Err(Forbidden::Operation { kind: self.kind }),
            grant => Ok(grant),
        }
    }

    /// Whether this caller may see `task` under `grant`: its queue is within reach and,
    /// for [`Grant::Own`], this token created it. A task it may not see is, to this caller,
    /// a task that does not exist.
    pub fn sees(&self, task: &Task, grant: Grant) -> bool {
        let owned = match grant {
            Grant::Any => true,
            Grant::Own => self.token.is_some() && task.created_by() == self.token,
            Grant::Denied => false,
        };
        owned && self.queues.allows(task.queue())
    }

    /// Whether this caller may put a task into `queue`.
    ///
    /// # Errors
    /// [`Forbidden::Queue`] when the queue is outside its list.
    pub fn may_use_queue(&self, queue: &QueueName) -> Result<(), Forbidden> {
        if self.queues.allows(queue) {
            Ok(())
        } else {
            Err(Forbidden::Queue(queue.clone()))
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Its identity.
    pub id: TokenId,
    /// Its name.
    pub name: TokenName,
    /// What it may do.
    pub kind: TokenKind,
    /// The queues it reaches.
    pub queues: QueueScope,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request, to within [`ApiToken::LAST_USED_PRECISION`].
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a stored token no longer opens anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// It was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// Its expiry has passed.
    #[error("the token has expired")]
    Expired,
}

impl ApiToken {
    /// `lastUsedAt` is written at most this often per token, so that authenticating a
    /// request is not a write.
    pub const LAST_USED_PRECISION: TimeDelta = TimeDelta::seconds(60);

    /// Whether the token opens anything at `now`.
    ///
    /// # Errors
    /// [`Unusable`] when it was revoked or has expired.
    pub fn usable_at(&self, now: DateTime<Utc>) -> Result<(), Unusable> {
        if self.revoked_at.is_some_and(|at| at <= now) {
            return Err(Unusable::Revoked);
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Err(Unusable::Expired);
        }
        Ok(())
    }

    /// Whether a use at `now` should be written down as `lastUsedAt`.
    pub fn use_is_news(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at.is_none_or(|at| now - at >= Self::LAST_USED_PRECISION)
    }

    /// The caller this token makes.
    pub fn caller(&self) -> Caller {
        Caller::token(self.id, self.name.clone(), self.kind, self.queues.clone())
    }
}

/// A signed-in session of the web dashboard: the token it acts with and how long it lasts.
/// Its secret never enters the domain (storage keeps a hash, as for tokens). A session opens
/// nothing on its own: every request through it checks its token as a bearer request would,
/// so revoking or expiring the token ends the session too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    /// The token the session acts with.
    pub token_id: TokenId,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it ends, whatever the token does.
    pub expires_at: DateTime<Utc>,
}

impl DashboardSession {
    /// A session of `token` started at `now` for `ttl`; `None` when `ttl` is not positive
    /// or its end is past the calendar.
    pub fn start(token: TokenId, now: DateTime<Utc>, ttl: TimeDelta) -> Option<Self> {
        if ttl <= TimeDelta::zero() {
            return None;
        }
        let created_at = crate::to_micros(now);
        let expires_at = crate::to_micros(created_at.checked_add_signed(ttl)?);
        Some(Self { token_id: token, created_at, expires_at })
    }

    /// Whether the session still lasts at `now` (its token is checked apart).
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::{MaxAttempts, NewTask, TaskId, TaskName};

    #[test]
    fn the_grant_table_says_who_may_do_what() {
        use Grant::{Any as A, Denied as D, Own as O};
        use Operation::*;
        let operations = [
            CreateTask,
            ReadTask,
            ListTasks,
            CancelTask,
            RerunTask,
            Claim,
            LeaseCall,
            ReadStats,
            ReadMetrics,
            ManageTokens,
            BulkAction,
            ReadQueues,
            ManageQueues,
            OpenDashboard,
        ];
        // Columns in the order of `operations`.
        let table: [(TokenKind, [Grant; 14]); 6] = [
            (TokenKind::Producer, [A, O, O, O, D, D, D, D, D, D, D, D, D, D]),
            (TokenKind::Worker, [D, D, D, D, D, A, A, D, D, D, D, D, D, D]),
            (TokenKind::Viewer, [D, A, A, D, D, D, D, A, A, D, D, A, D, A]),
            (TokenKind::Operator, [D, A, A, A, A, D, D, A, A, D, A, A, A, A]),
            (TokenKind::Admin, [A, A, A, A, A, A, A, A, A, A, A, A, A, A]),
            (TokenKind::Metrics, [D, D, D, D, D, D, D, D, A, D, D, D, D, D]),
        ];
        assert_eq!(table.map(|(kind, _)| kind), TokenKind::ALL, "every kind has its row");
        for (kind, row) in table {
            for (operation, expected) in operations.into_iter().zip(row) {
                assert_eq!(kind.grants(operation), expected, "{kind} {operation:?}");
            }
        }
    }

    #[test]
    fn kinds_read_back_as_they_are_written_and_prefix_their_secrets() {
        for kind in TokenKind::ALL {
            assert_eq!(TokenKind::parse(kind.as_str()), Ok(kind));
            assert_eq!(kind.prefix(), format!("tp_{kind}_"));
        }
        assert!(TokenKind::parse("root").is_err());
        assert!(TokenKind::parse("Admin").is_err());
    }

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    #[test]
    fn a_queue_list_bounds_what_a_claim_takes() {
        let only = QueueScope::from_list(Some(vec![q("emails"), q("sms")])).unwrap();
        assert_eq!(only.claimable(None), Ok(Some(vec![q("emails"), q("sms")])));
        assert_eq!(only.claimable(Some(vec![q("sms")])), Ok(Some(vec![q("sms")])));
        assert_eq!(
            only.claimable(Some(vec![q("sms"), q("billing")])),
            Err(Forbidden::Queue(q("billing")))
        );
        assert_eq!(QueueScope::All.claimable(None), Ok(None));
        assert_eq!(QueueScope::All.claimable(Some(vec![q("x")])), Ok(Some(vec![q("x")])));
        assert_eq!(QueueScope::from_list(Some(vec![])), Err(ValidationError::TokenQueues));
    }

    fn task_in(queue: &str, creator: Option<TokenId>) -> Task {
        let spec = NewTask {
            queue: q(queue),
            name: TaskName::parse("job").unwrap(),
            payload: json!({}),
            priority: 0,
            max_attempts: MaxAttempts::new(3).unwrap(),
            run_at: None,
            unique_key: None,
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Task::new(TaskId::from_uuid(Uuid::from_u128(1)), spec, now).with_creator(creator)
    }

    #[test]
    fn a_producer_sees_only_what_it_created_and_others_see_by_queue() {
        let mine = TokenId::from_uuid(Uuid::from_u128(10));
        let theirs = TokenId::from_uuid(Uuid::from_u128(11));
        let name = TokenName::parse("p").unwrap();
        let producer = Caller::token(mine, name.clone(), TokenKind::Producer, QueueScope::All);
        let grant = producer.may(Operation::ReadTask).unwrap();
        assert!(producer.sees(&task_in("emails", Some(mine)), grant));
        assert!(!producer.sees(&task_in("emails", Some(theirs)), grant));
        assert!(!producer.sees(&task_in("emails", None), grant), "tasks made without a token");

        let scope = QueueScope::from_list(Some(vec![q("emails")])).unwrap();
        let viewer = Caller::token(theirs, name, TokenKind::Viewer, scope);
        let grant = viewer.may(Operation::ReadTask).unwrap();
        assert!(viewer.sees(&task_in("emails", Some(mine)), grant));
        assert!(!viewer.sees(&task_in("billing", Some(mine)), grant));
        assert_eq!(
            viewer.may(Operation::CancelTask),
            Err(Forbidden::Operation { kind: TokenKind::Viewer })
        );
        assert!(Caller::open().sees(&task_in("billing", None), Grant::Any));
    }

    #[test]
    fn a_token_stops_working_when_revoked_or_expired_and_records_use_once_a_minute() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let token = ApiToken {
            id: TokenId::from_uuid(Uuid::from_u128(1)),
            name: TokenName::parse("ops").unwrap(),
            kind: TokenKind::Admin,
            queues: QueueScope::All,
            created_at: t0,
            expires_at: Some(t0 + TimeDelta::hours(1)),
            last_used_at: None,
            revoked_at: None,
        };
        assert_eq!(token.usable_at(t0), Ok(()));
        assert_eq!(token.usable_at(t0 + TimeDelta::hours(1)), Err(Unusable::Expired));
        let revoked = ApiToken { revoked_at: Some(t0 + TimeDelta::minutes(5)), ..token.clone() };
        assert_eq!(revoked.usable_at(t0 + TimeDelta::minutes(4)), Ok(()));
        assert_eq!(revoked.usable_at(t0 + TimeDelta::minutes(5)), Err(Unusable::Revoked));

        assert!(token.use_is_news(t0));
        let used = ApiToken { last_used_at: Some(t0), ..token };
        assert!(!used.use_is_news(t0 + TimeDelta::seconds(59)));
        assert!(used.use_is_news(t0 + TimeDelta::seconds(60)));
    }

    #[test]
    fn token_names_are_checked_like_other_names() {
        assert!(TokenName::parse("ci-deploy").is_ok());
        assert!(TokenName::parse("").is_err());
        assert!(TokenName::parse(&"x".repeat(65)).is_err());
        assert!(TokenName::parse("a\nb").is_err());
    }

    #[test]
    fn a_dashboard_session_lasts_its_ttl_and_only_a_positive_one() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let token = TokenId::from_uuid(Uuid::from_u128(1));

        let session = DashboardSession::start(token, t0, TimeDelta::hours(12)).unwrap();

        assert_eq!(session.expires_at, t0 + TimeDelta::hours(12));
        assert!(session.is_live_at(t0 + TimeDelta::hours(12) - TimeDelta::microseconds(1)));
        assert!(!session.is_live_at(t0 + TimeDelta::hours(12)));
        assert_eq!(DashboardSession::start(token, t0, TimeDelta::zero()), None);
        assert_eq!(DashboardSession::start(token, t0, TimeDelta::MAX), None);
    }
}
