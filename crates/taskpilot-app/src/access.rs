//! API tokens: minting, listing and revoking them, and turning a request's bearer secret into
//! the [`Caller`] the use cases act for.
//!
//! A secret is `tp_<kind>_` followed by 64 hex digits (256 random bits from the operating
//! system). It is shown once, when minted; storage keeps its SHA-256 only, and a request's
//! token is found by that hash through a unique index, so no secret is ever compared with a
//! stored one. A verified token is remembered for [`AccessService::CACHE_FOR`], so that a
//! request does not cost a query; a revocation therefore takes effect on every server within
//! that time.
//!
//! The web dashboard signs people in with a token once and then carries a session secret in a
//! cookie: [`AccessService::start_session`] checks the token as a bearer request would, and
//! every later request turns the session back into the token's [`Caller`] through the same
//! checks ([`AccessService::session_caller`]), so a revoked or expired token ends its sessions
//! as it ends its bearer requests. Sessions are stored by the SHA-256 of their secret too.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use taskpilot_domain::{
    ApiToken, Caller, Clock, DashboardSession, Forbidden, Operation, QueueScope, TokenId,
    TokenKind, TokenName, Unusable,
};
use uuid::Uuid;

use crate::{AppError, RepoError};

/// The SHA-256 of a token's secret: what storage keys tokens by.
pub type SecretHash = [u8; 32];

/// The storage port for API tokens. Apart from [`crate::TaskRepository`]: tokens share no
/// transaction with tasks.
///
/// Implementations MUST keep the hash unique ([`RepoError::Conflict`] is never expected: a
/// collision of 256-bit secrets does not happen) and return [`RepoError::Unavailable`] when
/// the store cannot be reached.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait TokenRepository: Send + Sync {
    /// Stores a new token under the hash of its secret.
    fn insert_token(&self, token: &ApiToken, secret: &SecretHash) -> Result<(), RepoError>;

    /// The token whose secret hashes to `secret`, revoked and expired ones included.
    fn token_by_secret(&self, secret: &SecretHash) -> Result<Option<ApiToken>, RepoError>;

    /// Every token, newest first.
    fn tokens(&self) -> Result<Vec<ApiToken>, RepoError>;

    /// Marks a token revoked at `at`, keeping an earlier revocation; the token as stored
    /// afterwards, `None` for an unknown id.
    fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<Option<ApiToken>, RepoError>;

    /// Records that the token authenticated a request at `at`.
    fn touch_token(&self, id: TokenId, at: DateTime<Utc>) -> Result<(), RepoError>;

    /// Whether any token was ever created (revoked ones count: revoking every token must
    /// never reopen a server).
    fn any_token(&self) -> Result<bool, RepoError>;

    /// Stores a new dashboard session under the hash of its secret.
    fn insert_session(
        &self,
        session: &DashboardSession,
        secret: &SecretHash,
    ) -> Result<(), RepoError>;

    /// The session whose secret hashes to `secret`, with its token as stored now (revoked
    /// and expired ones included), in one read; expired sessions included.
    fn session_by_secret(
        &self,
        secret: &SecretHash,
    ) -> Result<Option<(DashboardSession, ApiToken)>, RepoError>;

    /// Deletes the session whose secret hashes to `secret`; nothing when there is none.
    fn delete_session(&self, secret: &SecretHash) -> Result<(), RepoError>;

    /// Deletes every session that ended at or before `now`; how many it deleted.
    fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// A token just minted: the stored token and its secret, which exists nowhere else.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token as stored.
    pub token: ApiToken,
    /// The secret to hand to its holder, once.
    pub secret: String,
}

/// What a token creation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Its name.
    pub name: TokenName,
    /// What it may do.
    pub kind: TokenKind,
    /// The queues it reaches.
    pub queues: QueueScope,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a request's bearer secret does not authenticate it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not shaped like any token TaskPilot mints.
    #[error("the bearer token is malformed")]
    Malformed,
    /// No token has this secret.
    #[error("the bearer token is not known")]
    Unknown,
    /// The token exists but no longer opens anything.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// A dashboard session that does not exist (any more) or has run its time.
    #[error("the dashboard session has ended")]
    SessionEnded,
    /// Storage cannot be reached to check it.
    #[error("storage unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or broken data.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl From<RepoError> for AuthError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(e) => Self::Unavailable(e),
            other => Self::Unexpected(anyhow::Error::new(AppError::from(other))),
        }
    }
}

/// Why a token does not sign in to the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The token does not authenticate at all.
    #[error(transparent)]
    Token(#[from] AuthError),
    /// The token is valid but its kind may not open the dashboard (producers, workers,
    /// metrics scrapers).
    #[error(transparent)]
    Refused(#[from] Forbidden),
}

/// A dashboard session just started: the stored session, the secret for the cookie (which
/// exists nowhere else), and the caller it acts for.
#[derive(Debug, Clone)]
pub struct StartedSession {
    /// The session as stored.
    pub session: DashboardSession,
    /// The session's secret, to hand to the browser once.
    pub secret: String,
    /// Who the session acts for.
    pub caller: Caller,
}

/// The token use cases and the authentication of requests.
#[derive(Clone)]
pub struct AccessService {
    repo: Arc<dyn TokenRepository>,
    clock: Arc<dyn Clock>,
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    tokens: HashMap<SecretHash, (ApiToken, Instant)>,
    sessions: HashMap<SecretHash, (DashboardSession, ApiToken, Instant)>,
    any_token: Option<(bool, Instant)>,
}

impl AccessService {
    /// How long a verified token, and the answer to "does any token exist?", are trusted
    /// before storage is asked again: the longest a revocation takes to reach a server.
    pub const CACHE_FOR: Duration = Duration::from_secs(2);
    /// Beyond this many remembered tokens the memory is cleared (a bound, not a working set).
    const CACHE_MAX: usize = 10_000;

    /// A service over this storage and clock.
    pub fn new(repo: Arc<dyn TokenRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock, cache: Arc::default() }
    }

    /// Mints a token with a fresh secret and stores it.
    ///
    /// # Errors
    /// [`AppError::Unavailable`] or [`AppError::Unexpected`] from storage or the random source.
    pub fn create_token(&self, request: NewToken) -> Result<IssuedToken, AppError> {
        let secret = mint_secret(request.kind)?;
        let token = ApiToken {
            id: TokenId::from_uuid(Uuid::now_v7()),
            name: request.name,
            kind: request.kind,
            queues: request.queues,
            created_at: taskpilot_domain::to_micros(self.clock.now()),
            expires_at: request.expires_at.map(taskpilot_domain::to_micros),
            last_used_at: None,
            revoked_at: None,
        };
        self.repo.insert_token(&token, &hash(&secret))?;
        self.locked().any_token = Some((true, Instant::now()));
        Ok(IssuedToken { token, secret })
    }

    /// Every token, newest first, revoked ones included.
    ///
    /// # Errors
    /// Storage errors.
    pub fn tokens(&self) -> Result<Vec<ApiToken>, AppError> {
        Ok(self.repo.tokens()?)
    }

    /// Revokes a token; revoking it again keeps the first revocation's time.
    ///
    /// # Errors
    /// [`AppError::TokenNotFound`] for an unknown id; storage errors.
    pub fn revoke(&self, id: TokenId) -> Result<ApiToken, AppError> {
        let token = self
            .repo
            .revoke_token(id, taskpilot_domain::to_micros(self.clock.now()))?
            .ok_or(AppError::TokenNotFound(id))?;
        let mut cache = self.locked();
        cache.tokens.retain(|_, (cached, _)| cached.id != id);
        cache.sessions.retain(|_, (_, cached, _)| cached.id != id);
        Ok(token)
    }

    /// The caller a bearer secret stands for, when answering it needs no storage: `None`
    /// when storage must be asked ([`AccessService::authenticate`]), so that an async caller
    /// can answer most requests without leaving its executor.
    pub fn authenticate_cached(&self, secret: &str) -> Option<Result<Caller, AuthError>> {
        let Some(hash) = parse_secret(secret).map(hash) else {
            return Some(Err(AuthError::Malformed));
        };
        let now = self.clock.now();
        let cache = self.locked();
        let (token, at) = cache.tokens.get(&hash)?;
        if at.elapsed() >= Self::CACHE_FOR || token.use_is_news(now) {
            return None;
        }
        Some(token.usable_at(now).map(|()| token.caller()).map_err(AuthError::from))
    }

    /// The caller a bearer secret stands for, asking storage when the memory of it is older
    /// than [`AccessService::CACHE_FOR`], and recording its use at most once a minute.
    ///
    /// # Errors
    /// [`AuthError`]: malformed, unknown, revoked or expired, or storage errors.
    pub fn authenticate(&self, secret: &str) -> Result<Caller, AuthError> {
        if let Some(answer) = self.authenticate_cached(secret) {
            return answer;
        }
        let hash = parse_secret(secret).map(hash).ok_or(AuthError::Malformed)?;
        let now = self.clock.now();
        let mut token = self.repo.token_by_secret(&hash)?.ok_or(AuthError::Unknown)?;
        token.usable_at(now)?;
        if token.use_is_news(now) {
            let at = taskpilot_domain::to_micros(now);
            self.repo.touch_token(token.id, at)?;
            token.last_used_at = Some(at);
        }
        let caller = token.caller();
        let mut cache = self.locked();
        if cache.tokens.len() >= Self::CACHE_MAX {
            cache.tokens.clear();
        }
        cache.tokens.insert(hash, (token, Instant::now()));
        Ok(caller)
    }

    /// Whether any token exists, when known without storage (see
    /// [`AccessService::any_token`]).
    pub fn any_token_cached(&self) -> Option<bool> {
        match self.locked().any_token {
            // Once a token exists it always will: no need to ask again.
            Some((true, _)) => Some(true),
            Some((false, at)) if at.elapsed() < Self::CACHE_FOR => Some(false),
            _ => None,
        }
    }

    /// Whether any token was ever created; while none was, a server on a loopback address
    /// may run open.
    ///
    /// # Errors
    /// Storage errors.
    pub fn any_token(&self) -> Result<bool, AppError> {
        if let Some(known) = self.any_token_cached() {
            return Ok(known);
        }
        let exists = self.repo.any_token()?;
        self.locked().any_token = Some((exists, Instant::now()));
        Ok(exists)
    }

    /// Signs `token_secret` in to the dashboard for `ttl`: checks the token as
    /// [`AccessService::authenticate`] does, refuses kinds that may not open the dashboard,
    /// and stores a new session (dropping the sessions that have ended).
    ///
    /// # Errors
    /// [`LoginError::Token`] when the token does not authenticate (or `ttl` is not a usable
    /// lifetime, as [`AuthError::Unexpected`]); [`LoginError::Refused`] for a kind without
    /// [`Operation::OpenDashboard`]; storage errors as [`LoginError::Token`].
    pub fn start_session(
        &self,
        token_secret: &str,
        ttl: chrono::TimeDelta,
    ) -> Result<StartedSession, LoginError> {
        let caller = self.authenticate(token_secret)?;
        caller.may(Operation::OpenDashboard)?;
        let Some(token) = caller.token_id() else {
            let open = anyhow::anyhow!("a token authenticated as open access");
            return Err(AuthError::Unexpected(open).into());
        };
        let now = self.clock.now();
        let session = DashboardSession::start(token, now, ttl).ok_or_else(|| {
            AuthError::Unexpected(anyhow::anyhow!("the session lifetime {ttl} is not usable"))
        })?;
        let secret =
            random_hex(SESSION_PREFIX).map_err(|e| AuthError::Unexpected(anyhow::Error::new(e)))?;
        self.repo.delete_expired_sessions(session.created_at).map_err(AuthError::from)?;
        self.repo.insert_session(&session, &hash(&secret)).map_err(AuthError::from)?;
        Ok(StartedSession { session, secret, caller })
    }

    /// The caller a dashboard session stands for, when answering it needs no storage: `None`
    /// when storage must be asked ([`AccessService::session_caller`]).
    pub fn session_caller_cached(&self, secret: &str) -> Option<Result<Caller, AuthError>> {
        let Some(hash) = parse_session(secret).map(hash) else {
            return Some(Err(AuthError::SessionEnded));
        };
        let now = self.clock.now();
        let cache = self.locked();
        let (session, token, at) = cache.sessions.get(&hash)?;
        if at.elapsed() >= Self::CACHE_FOR || token.use_is_news(now) {
            return None;
        }
        Some(session_answer(session, token, now))
    }

    /// The caller a dashboard session stands for: the session must last and its token must
    /// pass the checks of a bearer request, asked of storage when the memory of them is older
    /// than [`AccessService::CACHE_FOR`]; the token's use is recorded as a bearer request's.
    ///
    /// # Errors
    /// [`AuthError::SessionEnded`] for an unknown, malformed or ended session; the token's
    /// [`AuthError::Unusable`]; storage errors.
    pub fn session_caller(&self, secret: &str) -> Result<Caller, AuthError> {
        if let Some(answer) = self.session_caller_cached(secret) {
            return answer;
        }
        let hash = parse_session(secret).map(hash).ok_or(AuthError::SessionEnded)?;
        let now = self.clock.now();
        let (session, mut token) =
            self.repo.session_by_secret(&hash)?.ok_or(AuthError::SessionEnded)?;
        let answer = session_answer(&session, &token, now);
        if answer.is_ok() && token.use_is_news(now) {
            let at = taskpilot_domain::to_micros(now);
            self.repo.touch_token(token.id, at)?;
            token.last_used_at = Some(at);
        }
        let mut cache = self.locked();
        if cache.sessions.len() >= Self::CACHE_MAX {
            cache.sessions.clear();
        }
        cache.sessions.insert(hash, (session, token, Instant::now()));
        answer
    }

    /// Ends a dashboard session (signing out); ending one that does not exist does nothing.
    ///
    /// # Errors
    /// Storage errors.
    pub fn end_session(&self, secret: &str) -> Result<(), AppError> {
        let Some(hash) = parse_session(secret).map(hash) else {
            return Ok(());
        };
        self.repo.delete_session(&hash)?;
        self.locked().sessions.remove(&hash);
        Ok(())
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The number of hex digits after a secret's prefix.
const SECRET_HEX: usize = 64;

/// The start of every dashboard session secret, so that one is never mistaken for a token.
const SESSION_PREFIX: &str = "tps_";

fn mint_secret(kind: TokenKind) -> Result<String, AppError> {
    random_hex(kind.prefix())
}

/// `prefix` followed by [`SECRET_HEX`] hex digits from the operating system's random source.
fn random_hex(prefix: &str) -> Result<String, AppError> {
    let mut random = [0_u8; SECRET_HEX / 2];
    getrandom::fill(&mut random)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("no random source: {e}")))?;
    let mut secret = String::with_capacity(prefix.len() + SECRET_HEX);
    secret.push_str(prefix);
    for byte in random {
        // Writing to a String cannot fail.
        let _ = write!(secret, "{byte:02x}");
    }
    Ok(secret)
}

/// Whether `rest` is [`SECRET_HEX`] lowercase hex digits, as minted.
fn is_minted_hex(rest: &str) -> bool {
    rest.len() == SECRET_HEX
        && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The secret when it has the shape of one TaskPilot mints.
fn parse_secret(secret: &str) -> Option<&str> {
    let rest = TokenKind::ALL.iter().find_map(|kind| secret.strip_prefix(kind.prefix()))?;
    is_minted_hex(rest).then_some(secret)
}

/// The session secret when it has the shape of one TaskPilot mints.
fn parse_session(secret: &str) -> Option<&str> {
    secret.strip_prefix(SESSION_PREFIX).filter(|rest| is_minted_hex(rest)).map(|_| secret)
}

/// Who a stored session acts for at `now`: its token's caller while both last.
fn session_answer(
    session: &DashboardSession,
    token: &ApiToken,
    now: DateTime<Utc>,
) -> Result<Caller, AuthError> {
    if !session.is_live_at(now) {
        return Err(AuthError::SessionEnded);
    }
    token.usable_at(now)?;
    Ok(token.caller())
}

fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use taskpilot_domain::FixedClock;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn request(kind: TokenKind) -> NewToken {
        NewToken {
            name: TokenName::parse("ops").unwrap(),
            kind,
            queues: QueueScope::All,
            expires_at: None,
        }
    }

    fn stored(issued: &IssuedToken) -> ApiToken {
        issued.token.clone()
    }

    #[test]
    fn a_minted_secret_names_its_kind_carries_256_bits_and_is_stored_only_as_its_hash() {
        let mut repo = MockTokenRepository::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        repo.expect_insert_token().times(2).returning(move |token, hash| {
            sink.lock().unwrap().push((token.clone(), *hash));
            Ok(())
        });
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));

        let first = service.create_token(request(TokenKind::Worker)).unwrap();
        let second = service.create_token(request(TokenKind::Worker)).unwrap();

        assert!(first.secret.starts_with("tp_worker_"));
        assert_eq!(first.secret.len(), "tp_worker_".len() + 64);
        assert_ne!(first.secret, second.secret);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, stored(&first));
        assert_eq!(seen[0].1, hash(&first.secret), "the hash, not the secret");
    }

    #[test]
    fn a_malformed_secret_is_refused_without_asking_storage() {
        let service = AccessService::new(
            Arc::new(MockTokenRepository::new()),
            Arc::new(FixedClock::new(t0())),
        );
        for bad in
            ["", "tp_admin_", "tp_root_0000", "Bearer x", &format!("tp_admin_{}", "G".repeat(64))]
        {
            assert!(matches!(service.authenticate(bad), Err(AuthError::Malformed)), "{bad:?}");
        }
    }

    fn token(kind: TokenKind) -> ApiToken {
        ApiToken {
            id: TokenId::from_uuid(Uuid::from_u128(9)),
            name: TokenName::parse("fleet").unwrap(),
            kind,
            queues: QueueScope::All,
            created_at: t0(),
            expires_at: Some(t0() + TimeDelta::hours(1)),
            last_used_at: None,
            revoked_at: None,
        }
    }

    const SECRET: &str =
        "tp_worker_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const SECRET_VIEWER: &str =
        "tp_viewer_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_known_token_is_checked_once_and_its_use_recorded_once_a_minute() {
        let mut repo = MockTokenRepository::new();
        repo.expect_token_by_secret()
            .withf(|h| *h == hash(SECRET))
            .times(1)
            .returning(|_| Ok(Some(token(TokenKind::Worker))));
        repo.expect_touch_token().times(1).returning(|_, _| Ok(()));
        let clock = Arc::new(FixedClock::new(t0()));
        let service = AccessService::new(Arc::new(repo), clock.clone());

        let caller = service.authenticate(SECRET).unwrap();
        assert_eq!(caller.kind(), TokenKind::Worker);
        assert_eq!(caller.name().as_str(), "fleet");
        // Within the cache time and the minute: no storage at all.
        clock.advance(TimeDelta::seconds(1));
        for _ in 0..3 {
            assert_eq!(service.authenticate(SECRET).unwrap(), caller);
        }
    }

    #[test]
    fn unknown_expired_and_revoked_tokens_do_not_authenticate() {
        let mut repo = MockTokenRepository::new();
        let expired = ApiToken { expires_at: Some(t0()), ..token(TokenKind::Admin) };
        let revoked = ApiToken { revoked_at: Some(t0()), ..token(TokenKind::Admin) };
        let mut answers = vec![Some(revoked), Some(expired), None].into_iter();
        repo.expect_token_by_secret().times(3).returning(move |_| Ok(answers.next().unwrap()));
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));

        assert!(matches!(
            service.authenticate(SECRET),
            Err(AuthError::Unusable(Unusable::Revoked))
        ));
        assert!(matches!(
            service.authenticate(SECRET),
            Err(AuthError::Unusable(Unusable::Expired))
        ));
        assert!(matches!(service.authenticate(SECRET), Err(AuthError::Unknown)));
    }

    #[test]
    fn once_a_token_exists_the_answer_is_never_asked_again() {
        let mut repo = MockTokenRepository::new();
        repo.expect_any_token().times(1).returning(|| Ok(false));
        repo.expect_insert_token().times(1).returning(|_, _| Ok(()));
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));

        assert!(!service.any_token().unwrap());
        service.create_token(request(TokenKind::Admin)).unwrap();
        assert!(service.any_token().unwrap());
        assert_eq!(service.any_token_cached(), Some(true));
    }

    #[test]
    fn a_session_acts_for_its_token_until_it_ends_and_signing_out_forgets_it() {
        let mut repo = MockTokenRepository::new();
        let viewer = token(TokenKind::Viewer);
        let stored = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&stored);
        repo.expect_token_by_secret().times(1).returning(|_| Ok(Some(token(TokenKind::Viewer))));
        repo.expect_touch_token().times(1).returning(|_, _| Ok(()));
        repo.expect_delete_expired_sessions().times(1).returning(|_| Ok(0));
        repo.expect_insert_session().times(1).returning(move |session, hash| {
            *sink.lock().unwrap() = Some((session.clone(), *hash));
            Ok(())
        });
        let lookup = Arc::clone(&stored);
        let held = viewer.clone();
        repo.expect_session_by_secret().times(2).returning(move |hash| {
            let stored = lookup.lock().unwrap().clone().unwrap();
            assert_eq!(*hash, stored.1, "looked up by the hash of the cookie's secret");
            Ok(Some((stored.0, ApiToken { last_used_at: Some(t0()), ..held.clone() })))
        });
        repo.expect_delete_session().times(1).returning(|_| Ok(()));
        let clock = Arc::new(FixedClock::new(t0()));
        let service = AccessService::new(Arc::new(repo), clock.clone());

        let started = service.start_session(SECRET_VIEWER, TimeDelta::minutes(30)).unwrap();

        assert!(started.secret.starts_with("tps_"));
        assert_eq!(stored.lock().unwrap().as_ref().unwrap().1, hash(&started.secret));
        assert_eq!(started.session.expires_at, t0() + TimeDelta::minutes(30));
        assert_eq!(service.session_caller(&started.secret).unwrap(), viewer.caller());
        // Within the cache time: no storage.
        assert_eq!(service.session_caller(&started.secret).unwrap(), viewer.caller());
        // The token's use a minute later is news: storage is asked again, and the session
        // is over by then.
        clock.advance(TimeDelta::minutes(30));
        assert!(matches!(service.session_caller(&started.secret), Err(AuthError::SessionEnded)));
        service.end_session(&started.secret).unwrap();
        assert!(matches!(service.session_caller("tps_nonsense"), Err(AuthError::SessionEnded)));
    }

    #[test]
    fn a_token_that_may_not_open_the_dashboard_starts_no_session() {
        let mut repo = MockTokenRepository::new();
        repo.expect_token_by_secret().returning(|_| Ok(Some(token(TokenKind::Worker))));
        repo.expect_touch_token().returning(|_, _| Ok(()));
        repo.expect_insert_session().never();
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));

        let refused = service.start_session(SECRET, TimeDelta::hours(12));

        assert!(matches!(refused, Err(LoginError::Refused(_))), "{refused:?}");
    }

    #[test]
    fn revoking_a_token_ends_its_sessions_on_this_server_at_once() {
        let mut repo = MockTokenRepository::new();
        let session =
            DashboardSession::start(token(TokenKind::Admin).id, t0(), TimeDelta::hours(1)).unwrap();
        let active = ApiToken { last_used_at: Some(t0()), ..token(TokenKind::Admin) };
        let revoked = ApiToken { revoked_at: Some(t0()), ..active.clone() };
        let mut answers = vec![active.clone(), revoked.clone()].into_iter();
        repo.expect_session_by_secret()
            .times(2)
            .returning(move |_| Ok(Some((session.clone(), answers.next().unwrap()))));
        repo.expect_revoke_token().times(1).returning(move |_, _| Ok(Some(revoked.clone())));
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));
        let secret = format!("tps_{}", "ab".repeat(32));

        assert!(service.session_caller(&secret).is_ok());
        service.revoke(active.id).unwrap();

        assert!(matches!(
            service.session_caller(&secret),
            Err(AuthError::Unusable(Unusable::Revoked))
        ));
    }

    #[test]
    fn revoking_an_unknown_token_is_not_found() {
        let mut repo = MockTokenRepository::new();
        repo.expect_revoke_token().times(1).returning(|_, _| Ok(None));
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));
        let id = TokenId::from_uuid(Uuid::from_u128(1));
        assert!(matches!(service.revoke(id), Err(AppError::TokenNotFound(i)) if i == id));
    }
}
