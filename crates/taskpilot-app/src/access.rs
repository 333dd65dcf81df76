//! API tokens: minting, listing and revoking them, and turning a request's bearer secret into
//! the [`Caller`] the use cases act for.
//!
//! A secret is `tp_<kind>_` followed by 64 hex digits (256 random bits from the operating
//! system). It is shown once, when minted; storage keeps its SHA-256 only, and a request's
//! token is found by that hash through a unique index, so no secret is ever compared with a
//! stored one. A verified token is remembered for [`AccessService::CACHE_FOR`], so that a
//! request does not cost a query; a revocation therefore takes effect on every server within
//! that time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use taskpilot_domain::{
    ApiToken, Caller, Clock, QueueScope, TokenId, TokenKind, TokenName, Unusable,
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
        self.locked().tokens.retain(|_, (cached, _)| cached.id != id);
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

    fn locked(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The number of hex digits after a secret's prefix.
const SECRET_HEX: usize = 64;

fn mint_secret(kind: TokenKind) -> Result<String, AppError> {
    let mut random = [0_u8; SECRET_HEX / 2];
    getrandom::fill(&mut random)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("no random source: {e}")))?;
    let mut secret = String::with_capacity(kind.prefix().len() + SECRET_HEX);
    secret.push_str(kind.prefix());
    for byte in random {
        // Writing to a String cannot fail.
        let _ = write!(secret, "{byte:02x}");
    }
    Ok(secret)
}

/// The secret when it has the shape of one TaskPilot mints.
fn parse_secret(secret: &str) -> Option<&str> {
    let rest = TokenKind::ALL.iter().find_map(|kind| secret.strip_prefix(kind.prefix()))?;
    let well_formed = rest.len() == SECRET_HEX
        && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then_some(secret)
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
    fn revoking_an_unknown_token_is_not_found() {
        let mut repo = MockTokenRepository::new();
        repo.expect_revoke_token().times(1).returning(|_, _| Ok(None));
        let service = AccessService::new(Arc::new(repo), Arc::new(FixedClock::new(t0())));
        let id = TokenId::from_uuid(Uuid::from_u128(1));
        assert!(matches!(service.revoke(id), Err(AppError::TokenNotFound(i)) if i == id));
    }
}
