//! Creates that carry an `Idempotency-Key`: the key is stored with the tasks it created, in
//! one transaction, and the same request sent again gets the first answer again. Which
//! request gets what is the domain's rule ([`taskpilot_domain::decide_idempotency`]).

use chrono::TimeDelta;
use sha2::{Digest, Sha256};
use taskpilot_domain::{
    decide_idempotency, Fingerprint, IdempotencyDecision, IdempotencyKey, StoredResponse, Task,
    TokenId,
};

use super::{CreateTask, Created, OnConflict, TaskService};
use crate::{Actor, AppError, NewIdempotencyKey, TaskEvent};

/// The scope of the keys sent on a server that runs without tokens.
pub const OPEN_SCOPE: &str = "open";

/// How long a key is kept when nothing else is configured: 24 hours.
pub const DEFAULT_IDEMPOTENCY_TTL: TimeDelta = TimeDelta::hours(24);

/// The fingerprint of a request: SHA-256 of its method, its path and its canonical body (the
/// same JSON value always written the same way), each ended by a NUL byte, which neither a
/// method nor a path holds.
pub fn fingerprint(method: &str, path: &str, canonical_body: &[u8]) -> Fingerprint {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), canonical_body] {
        hash.update(part);
        hash.update([0]);
    }
    Fingerprint::from_bytes(hash.finalize().into())
}

/// A create's `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key.
    pub key: IdempotencyKey,
    /// SHA-256 of the request's method, path and canonical body.
    pub fingerprint: Fingerprint,
}

/// What a create with a key answers.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedAnswer {
    /// The answer: the fresh one, or the first one again.
    pub response: StoredResponse,
    /// Whether it is the first one again (nothing was created now).
    pub replayed: bool,
    /// The tasks created now; none for a replay.
    pub created: Vec<Task>,
}

impl TaskService {
    /// The same service, keeping each `Idempotency-Key` for `ttl` (at least a microsecond).
    #[must_use]
    pub fn with_idempotency_ttl(mut self, ttl: TimeDelta) -> Self {
        self.idempotency_ttl = ttl.max(TimeDelta::microseconds(1));
        self
    }

    /// How long an `Idempotency-Key` is kept.
    pub fn idempotency_ttl(&self) -> TimeDelta {
        self.idempotency_ttl
    }

    /// [`TaskService::create_unique_by`] under an `Idempotency-Key` of `token`'s (see
    /// [`TaskService::create_batch_keyed`]); `render` gives the answer to keep for the task
    /// (the new one, or the active one that holds its unique key).
    ///
    /// # Errors
    /// As [`TaskService::create_batch_keyed`].
    pub fn create_keyed(
        &self,
        request: CreateTask,
        token: Option<TokenId>,
        idempotency: Idempotency,
        render: impl Fn(&Created) -> Result<StoredResponse, AppError>,
    ) -> Result<KeyedAnswer, AppError> {
        let on_conflict = request.on_conflict;
        let task = self.new_task(request, self.clock.now()).with_creator(token);
        self.store_keyed(vec![(task, on_conflict)], false, token, idempotency, |answers| {
            match answers {
                [answer] => render(answer),
                _ => Err(AppError::Unexpected(anyhow::anyhow!("one create, one answer"))),
            }
        })
    }

    /// [`TaskService::create_batch_unique_by`] under an `Idempotency-Key` of `token`'s: the
    /// tasks and the key, with the answer `render` gives for the items, are stored together.
    /// When the key holds already the same request's answer, that answer comes back and
    /// nothing is created. An answer whose items name the holders of their unique keys
    /// (nothing created for them) is kept like any other.
    ///
    /// # Errors
    /// [`AppError::IdempotencyKeyReused`] when the key was used for a different request;
    /// [`AppError::IdempotencyKeyInUse`] while the first request with it is still running;
    /// as [`TaskService::create_batch_unique_by`].
    pub fn create_batch_keyed(
        &self,
        requests: Vec<CreateTask>,
        token: Option<TokenId>,
        idempotency: Idempotency,
        render: impl Fn(&[Created]) -> Result<StoredResponse, AppError>,
    ) -> Result<KeyedAnswer, AppError> {
        let tasks = self.new_batch(requests, token)?;
        self.store_keyed(tasks, true, token, idempotency, render)
    }

    fn store_keyed(
        &self,
        tasks: Vec<(Task, OnConflict)>,
        batch: bool,
        token: Option<TokenId>,
        idempotency: Idempotency,
        render: impl Fn(&[Created]) -> Result<StoredResponse, AppError>,
    ) -> Result<KeyedAnswer, AppError> {
        let now = self.clock.now();
        let scope = token.map_or_else(|| OPEN_SCOPE.to_owned(), |t| t.to_string());
        let (_, answer) = self.store_unique(tasks, batch, |new, answers| {
            let events: Vec<TaskEvent> = new
                .iter()
                .map(|t| self.stamp(TaskEvent::transition(None, t, Actor::Client)))
                .collect();
            let key = NewIdempotencyKey {
                scope: scope.clone(),
                key: idempotency.key.clone(),
                fingerprint: idempotency.fingerprint,
                response: render(answers)?,
                created_at: now,
                expires_at: now.checked_add_signed(self.idempotency_ttl).unwrap_or(now),
            };
            let claim = self.repo.insert_keyed(new, &events, &key)?;
            match decide_idempotency(claim, &key.fingerprint) {
                IdempotencyDecision::Created => {
                    self.observer.created(new);
                    Ok(KeyedAnswer {
                        response: key.response,
                        replayed: false,
                        created: new.to_vec(),
                    })
                }
                IdempotencyDecision::Replay(response) => {
                    Ok(KeyedAnswer { response, replayed: true, created: Vec::new() })
                }
                IdempotencyDecision::Reused => Err(AppError::IdempotencyKeyReused),
                IdempotencyDecision::InUse => Err(AppError::IdempotencyKeyInUse),
            }
        })?;
        Ok(answer)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::{Arc, Mutex};

    use taskpilot_domain::{IdempotencyRecord, KeyClaim};
    use uuid::Uuid;

    use super::super::fixtures::{create_request, creation_event, now, service, storage_down};
    use super::*;
    use crate::MockTaskRepository;

    fn idempotency(fingerprint: u8) -> Idempotency {
        Idempotency {
            key: IdempotencyKey::parse("key-1").unwrap(),
            fingerprint: Fingerprint::from_bytes([fingerprint; 32]),
        }
    }

    fn answer_of(task: &Task) -> StoredResponse {
        StoredResponse {
            status: 201,
            body: format!("{{\"id\":\"{}\"}}", task.id()),
            location: Some(format!("/api/tasks/{}", task.id())),
        }
    }

    #[expect(clippy::unnecessary_wraps, reason = "the shape `render` takes")]
    fn answer_for(answer: &Created) -> Result<StoredResponse, AppError> {
        Ok(answer_of(&answer.task))
    }

    fn first_answer() -> StoredResponse {
        StoredResponse { status: 201, body: "{\"id\":\"first\"}".to_owned(), location: None }
    }

    fn holding(fingerprint: u8) -> MockTaskRepository {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed().times(1).returning(move |_, _, _| {
            Ok(KeyClaim::Held(IdempotencyRecord {
                fingerprint: Fingerprint::from_bytes([fingerprint; 32]),
                response: first_answer(),
            }))
        });
        repo.expect_insert().never();
        repo.expect_insert_many().never();
        repo
    }

    #[test]
    fn a_new_key_is_stored_with_the_task_its_answer_and_its_expiry() {
        let stored = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&stored);
        let token = TokenId::from_uuid(Uuid::from_u128(9));
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed()
            .withf(move |tasks, events, key| {
                tasks.len() == 1
                    && events == [creation_event(&tasks[0]).by(None)]
                    && key.scope == token.to_string()
                    && key.key.as_str() == "key-1"
                    && key.fingerprint == Fingerprint::from_bytes([1; 32])
                    && key.response == answer_of(&tasks[0])
                    && key.created_at == now()
                    && key.expires_at == now() + TimeDelta::hours(2)
            })
            .times(1)
            .returning(move |tasks, _, _| {
                *sink.lock().unwrap() = Some(tasks[0].clone());
                Ok(KeyClaim::Stored)
            });
        repo.expect_insert().never();
        let service = service(repo).with_idempotency_ttl(TimeDelta::hours(2));

        let answer = service
            .create_keyed(create_request(), Some(token), idempotency(1), answer_for)
            .unwrap();

        let task = stored.lock().unwrap().clone().unwrap();
        assert!(!answer.replayed);
        assert_eq!(answer.response, answer_of(&task));
        assert_eq!(answer.created, vec![task]);
    }

    #[test]
    fn keys_sent_without_a_token_share_the_open_scope_and_last_a_day_by_default() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed()
            .withf(|_, _, key| {
                key.scope == OPEN_SCOPE && key.expires_at == now() + DEFAULT_IDEMPOTENCY_TTL
            })
            .times(1)
            .returning(|_, _, _| Ok(KeyClaim::Stored));

        let answer =
            service(repo).create_keyed(create_request(), None, idempotency(1), answer_for).unwrap();

        assert!(!answer.replayed);
    }

    #[test]
    fn the_same_request_again_gets_the_first_answer_and_creates_nothing() {
        let answer = service(holding(1))
            .create_keyed(create_request(), None, idempotency(1), answer_for)
            .unwrap();

        assert_eq!(
            answer,
            KeyedAnswer { response: first_answer(), replayed: true, created: Vec::new() }
        );
    }

    #[test]
    fn another_request_under_a_used_key_is_refused() {
        let outcome = service(holding(1)).create_batch_keyed(
            vec![create_request(); 2],
            None,
            idempotency(2),
            |_| Ok(first_answer()),
        );

        assert!(matches!(outcome, Err(AppError::IdempotencyKeyReused)), "{outcome:?}");
    }

    #[test]
    fn a_key_whose_first_request_is_still_running_is_in_use() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed().times(1).returning(|_, _, _| Ok(KeyClaim::InFlight));

        let outcome =
            service(repo).create_keyed(create_request(), None, idempotency(1), answer_for);

        assert!(matches!(outcome, Err(AppError::IdempotencyKeyInUse)), "{outcome:?}");
    }

    #[test]
    fn a_keyed_batch_stores_every_task_with_the_key_in_one_call() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed()
            .withf(|tasks, events, key| {
                tasks.len() == 3
                    && events.len() == 3
                    && key.response.body == tasks.len().to_string()
            })
            .times(1)
            .returning(|_, _, _| Ok(KeyClaim::Stored));

        let answer = service(repo)
            .create_batch_keyed(vec![create_request(); 3], None, idempotency(1), |tasks| {
                Ok(StoredResponse { status: 201, body: tasks.len().to_string(), location: None })
            })
            .unwrap();

        assert_eq!(answer.created.len(), 3);
    }

    #[test]
    fn a_keyed_batch_of_a_bad_size_is_refused_before_storage() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed().never();

        let outcome = service(repo)
            .create_batch_keyed(Vec::new(), None, idempotency(1), |_| Ok(first_answer()));

        assert!(matches!(outcome, Err(AppError::InvalidBatchSize(0))), "{outcome:?}");
    }

    #[test]
    fn a_request_that_cannot_be_answered_stores_nothing() {
        let mut repo = MockTaskRepository::new();
        repo.expect_insert_keyed().never();

        let outcome = service(repo).create_keyed(create_request(), None, idempotency(1), |_| {
            Err(AppError::Unexpected(anyhow::anyhow!("cannot write the answer")))
        });

        assert!(matches!(outcome, Err(AppError::Unexpected(_))), "{outcome:?}");
    }

    #[test]
    fn fingerprints_tell_method_path_and_body_apart() {
        let base = fingerprint("POST", "/api/tasks", b"{}");

        assert_eq!(base, fingerprint("POST", "/api/tasks", b"{}"));
        for other in [
            fingerprint("PUT", "/api/tasks", b"{}"),
            fingerprint("POST", "/api/tasks/batch", b"{}"),
            fingerprint("POST", "/api/tasks", b"{\"a\":1}"),
            fingerprint("POST", "/api/tasks{}", b""),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn storage_that_is_down_is_unavailable() {
        let outcome = service(storage_down()).create_keyed(
            create_request(),
            None,
            idempotency(1),
            answer_for,
        );

        assert!(matches!(outcome, Err(AppError::Unavailable(_))), "{outcome:?}");
    }
}
