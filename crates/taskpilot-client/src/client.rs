//! [`Client`]: one typed method per REST call, with the retry rules of [`RetryPolicy`].

use std::fmt::Display;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ETAG, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use taskpilot_api::{
    BulkActionRequest, BulkActionResponse, ClaimResponse, ClaimTasksRequest, CompleteTasksRequest,
    CompleteTasksResponse, CompletionItem, CompletionResult, CreateTaskBatchRequest,
    CreateTaskBatchResponse, CreateTaskRequest, CreateTokenRequest, CreatedTokenResponse,
    ExplainResponse, FailTaskRequest, HeartbeatRequest, ListTasksQuery, ProblemBody,
    QueueListResponse, QueueResponse, RejectionStatsResponse, ReleaseTaskRequest, StartTaskRequest,
    StatsResponse, SucceedTaskRequest, TaskEventListResponse, TaskEventResponse, TaskListResponse,
    TaskResponse, TokenListResponse, TokenResponse,
};
use uuid::Uuid;

#[cfg(doc)]
use taskpilot_api::ProblemCode;

use crate::retry::Safety;
use crate::{ClientError, RetryPolicy};

/// How long a call may take before the client gives up on it, unless configured otherwise;
/// a long-polling claim gets its `waitMs` on top.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long establishing a connection may take.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection stays in the pool: less than the server's keep-alive (actix-web
/// closes idle connections after 5 s), so that a request is rarely sent on a connection the
/// server is closing at that moment; such a request might have arrived or not, and a create
/// could not be repeated.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A TaskPilot REST client.
///
/// Cheap to clone (clones share one connection pool) and `Send + Sync`, so one client serves a
/// whole multi-threaded program. Every method is one API call, repeated on transient failures
/// only where that is safe (see [`RetryPolicy`]); a refusal by the server is a
/// [`ClientError::Api`] with its [`ProblemCode`].
///
/// ```no_run
/// # async fn demo() -> Result<(), taskpilot_client::ClientError> {
/// use taskpilot_client::{Client, CreateTaskRequest};
///
/// let client = Client::try_new("http://127.0.0.1:8080")?;
/// let task = client.create(&CreateTaskRequest::new("send-email")).await?;
/// let again = client.get(&task.id).await?;
/// assert_eq!(again.status, task.status);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    timeout: Duration,
    token: Option<Token>,
}

/// An answer with the version its `ETag` names: a task's or a queue's, which every change
/// moves on. Send it back as the expected version ([`Client::cancel_if_version`],
/// [`Client::rerun_if_version`]) to act only if nobody changed the task since.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The answer's body.
    pub value: T,
    /// The version of the answer's `ETag` (`"7"` is 7); `None` when it had none (a replayed
    /// create has none) or a tag that names no version.
    pub version: Option<u64>,
}

/// An API token's secret; its `Debug` shows only its kind prefix, so that no log of a
/// client or builder leaks it.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.0.match_indices('_').nth(1).map_or("", |(i, _)| &self.0[..=i]);
        write!(f, "Token({kind}…)")
    }
}

/// Configures a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    http: Option<reqwest::Client>,
    token: Option<Token>,
}

/// The environment variable [`ClientBuilder::token_from_env`] reads.
pub const TOKEN_ENV: &str = "TASKPILOT_TOKEN";

impl ClientBuilder {
    /// Sends this API token (`tp_<kind>_…`) as `Authorization: Bearer` with every call.
    #[must_use]
    pub fn token(mut self, secret: impl Into<String>) -> Self {
        self.token = Some(Token(secret.into()));
        self
    }

    /// Sends the token in `TASKPILOT_TOKEN`, when it is set and not empty; no token
    /// otherwise (a server running open on a loopback address needs none).
    #[must_use]
    pub fn token_from_env(self) -> Self {
        match std::env::var(TOKEN_ENV) {
            Ok(secret) if !secret.trim().is_empty() => self.token(secret.trim()),
            _ => self,
        }
    }

    /// How transient failures are repeated; [`RetryPolicy::default`] unless set.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The longest a call may take (30 s by default); long-polling claims get their wait on
    /// top.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest establishing a connection may take (5 s by default). Ignored with
    /// [`ClientBuilder::http_client`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Uses this reqwest client (for proxies, TLS roots, ...) instead of building one.
    #[must_use]
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] when the base URL is not an absolute http(s) URL, or is
    /// https without the `rustls` feature (or a client of your own);
    /// [`ClientError::Build`] when the HTTP client cannot be built.
    pub fn build(self) -> Result<Client, ClientError> {
        let mut base = Url::parse(&self.base_url)
            .map_err(|e| ClientError::InvalidUrl(format!("{}: {e}", self.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ClientError::InvalidUrl(format!("{}: not an http(s) URL", self.base_url)));
        }
        if base.scheme() == "https" && !cfg!(feature = "rustls") && self.http.is_none() {
            return Err(ClientError::InvalidUrl(format!(
                "{}: https needs taskpilot-client's `rustls` feature",
                self.base_url
            )));
        }
        // Paths are appended segment by segment: a base of `http://h/prefix` or
        // `http://h/prefix/` both lead to `http://h/prefix/api/...`.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .tcp_nodelay(true)
                .build()
                .map_err(ClientError::Build)?,
        };
        Ok(Client { http, base, retry: self.retry, timeout: self.timeout, token: self.token })
    }
}

impl Client {
    /// A builder for a client of the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http: None,
            token: None,
        }
    }

    /// A client of the server at `base_url` with the default settings.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn try_new(base_url: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(base_url).build()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `POST /api/tasks`: creates a task.
    ///
    /// Sends a fresh `Idempotency-Key` (a random UUID) and repeats the request with the same
    /// key after a transient failure: a broken connection, 502, 503, 504, or 409
    /// IDEMPOTENCY_KEY_IN_USE while the first try is still being handled. A repeat of a
    /// create the server already made answers that task again, so a lost answer never
    /// creates a duplicate.
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`] and transport errors.
    pub async fn create(&self, task: &CreateTaskRequest) -> Result<TaskResponse, ClientError> {
        self.create_with_key(task, &Uuid::new_v4().to_string()).await
    }

    /// [`Client::create`] with a key of the caller's, such as one kept with the work that
    /// asks for the task, so that even a create repeated by a restarted process creates
    /// once (within the server's `--idempotency-ttl`).
    ///
    /// # Errors
    /// As [`Client::create`]; [`ProblemCode::IdempotencyKeyReused`] when the key was used for
    /// a different request; [`ProblemCode::ValidationFailed`] for a key that is not 1 to 255
    /// visible ASCII characters.
    pub async fn create_with_key(
        &self,
        task: &CreateTaskRequest,
        idempotency_key: &str,
    ) -> Result<TaskResponse, ClientError> {
        let url = self.url(&["api", "tasks"]);
        self.send_keyed(Method::POST, url, Some(task), Some(idempotency_key)).await
    }

    /// `POST /api/tasks/batch`: creates up to 1,000 tasks in one transaction, all or none,
    /// and returns them in the order given. Keyed and repeated like [`Client::create`].
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`] naming the bad task's `index`
    /// ([`ClientError::extension`]) and transport errors.
    pub async fn create_batch(
        &self,
        tasks: Vec<CreateTaskRequest>,
    ) -> Result<Vec<TaskResponse>, ClientError> {
        self.create_batch_with_key(tasks, &Uuid::new_v4().to_string()).await
    }

    /// [`Client::create_batch`] with a key of the caller's (see [`Client::create_with_key`]).
    ///
    /// # Errors
    /// As [`Client::create_batch`] and [`Client::create_with_key`].
    pub async fn create_batch_with_key(
        &self,
        tasks: Vec<CreateTaskRequest>,
        idempotency_key: &str,
    ) -> Result<Vec<TaskResponse>, ClientError> {
        let body = CreateTaskBatchRequest { tasks };
        let url = self.url(&["api", "tasks", "batch"]);
        let answer: CreateTaskBatchResponse =
            self.send_keyed(Method::POST, url, Some(&body), Some(idempotency_key)).await?;
        Ok(answer.items)
    }

    /// `GET /api/tasks/{id}`.
    ///
    /// # Errors
    /// [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn get(&self, id: impl Display) -> Result<TaskResponse, ClientError> {
        let id = id.to_string();
        self.call(
            Method::GET,
            &["api", "tasks", &id],
            None::<&()>,
            Safety::Idempotent,
            Duration::ZERO,
        )
        .await
    }

    /// `GET /api/tasks/{id}` with the task's version, from the answer's `ETag`.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn get_versioned(
        &self,
        id: impl Display,
    ) -> Result<Versioned<TaskResponse>, ClientError> {
        let id = id.to_string();
        let url = self.url(&["api", "tasks", &id]);
        self.send_with(
            Method::GET,
            url,
            None::<&()>,
            Safety::Idempotent,
            Duration::ZERO,
            Extra::None,
        )
        .await
    }

    /// `GET /api/tasks?...`: one page of tasks, newest first; pass its `next_cursor` back in
    /// the query for the next page.
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`] for a bad filter or cursor, and transport errors.
    pub async fn list(&self, query: &ListTasksQuery) -> Result<TaskListResponse, ClientError> {
        let mut url = self.url(&["api", "tasks"]);
        // The query type's own serialization names the parameters: every present member
        // becomes `name=value`.
        if let Ok(Value::Object(members)) = serde_json::to_value(query) {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in members {
                match value {
                    Value::Null => {}
                    Value::String(text) => {
                        pairs.append_pair(&name, &text);
                    }
                    other => {
                        pairs.append_pair(&name, &other.to_string());
                    }
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.send(Method::GET, url, None::<&()>, Safety::Idempotent, Duration::ZERO).await
    }

    /// `POST /api/tasks/claim`: up to `limit` runnable tasks, started for this worker, each
    /// with its lease token; waits up to `waitMs` for one when none is runnable, and returns an
    /// empty list if none came.
    ///
    /// Repeated only after a connection that could not be made: a claim whose answer was lost
    /// holds its tasks until their leases run out.
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`] and transport errors.
    pub async fn claim(
        &self,
        request: &ClaimTasksRequest,
    ) -> Result<Vec<TaskResponse>, ClientError> {
        self.claim_with(request, Safety::Once).await
    }

    /// [`Client::claim`] tried once: the worker repeats claims itself, so that it can stop
    /// between two tries.
    pub(crate) async fn claim_once(
        &self,
        request: &ClaimTasksRequest,
    ) -> Result<Vec<TaskResponse>, ClientError> {
        self.claim_with(request, Safety::Never).await
    }

    async fn claim_with(
        &self,
        request: &ClaimTasksRequest,
        safety: Safety,
    ) -> Result<Vec<TaskResponse>, ClientError> {
        let wait = Duration::from_millis(request.wait_ms.unwrap_or(0).try_into().unwrap_or(0));
        let answer: ClaimResponse = self
            .call(Method::POST, &["api", "tasks", "claim"], Some(request), safety, wait)
            .await?;
        Ok(answer.items)
    }

    /// `PUT /api/tasks/{id}/start`: starts this task for a worker, opening an attempt with a
    /// lease token. Repeated only after a connection that could not be made.
    ///
    /// # Errors
    /// [`ProblemCode::InvalidTransition`], [`ProblemCode::NotYetRunnable`] (with
    /// [`ClientError::retry_after`]), [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn start(
        &self,
        id: impl Display,
        request: &StartTaskRequest,
    ) -> Result<TaskResponse, ClientError> {
        self.task_call(id, "start", request, Safety::Once).await
    }

    /// `PUT /api/tasks/{id}/heartbeat`: extends the attempt's lease. Safe to repeat.
    ///
    /// # Errors
    /// [`ClientError::is_attempt_over`]: the task was cancelled (stop working on it) or the
    /// attempt lost its lease; transport errors.
    pub async fn heartbeat(
        &self,
        id: impl Display,
        request: &HeartbeatRequest,
    ) -> Result<TaskResponse, ClientError> {
        self.task_call(id, "heartbeat", request, Safety::Idempotent).await
    }

    /// `PUT /api/tasks/{id}/succeed`: reports the attempt's success.
    ///
    /// With a lease token the call is fenced and replay-safe, so it is repeated on transient
    /// failures: a repeat after a lost answer gets 200 and the stored task. Without one it is
    /// repeated only after a connection that could not be made.
    ///
    /// # Errors
    /// [`ClientError::is_attempt_over`], [`ProblemCode::OutcomeConflict`],
    /// [`ProblemCode::InvalidTransition`], [`ProblemCode::WorkerMismatch`] and transport errors.
    pub async fn succeed(
        &self,
        id: impl Display,
        request: &SucceedTaskRequest,
    ) -> Result<TaskResponse, ClientError> {
        let safety = fenced(request.lease_token.is_some());
        self.task_call(id, "succeed", request, safety).await
    }

    /// `PUT /api/tasks/{id}/fail`: reports the attempt's failure; with `retryable: false` the
    /// task fails for good at once. Repeated as [`Client::succeed`].
    ///
    /// # Errors
    /// As [`Client::succeed`].
    pub async fn fail(
        &self,
        id: impl Display,
        request: &FailTaskRequest,
    ) -> Result<TaskResponse, ClientError> {
        let safety = fenced(request.lease_token.is_some());
        self.task_call(id, "fail", request, safety).await
    }

    /// `PUT /api/tasks/{id}/release`: hands the attempt's task back unfinished, for a worker
    /// that is stopping: the task is runnable again at once and no failure is counted, so a
    /// release on the last attempt does not fail it. The token fences the call and makes it
    /// replay-safe, so it is repeated on transient failures.
    ///
    /// # Errors
    /// As [`Client::succeed`]; a success or failure sent after it with the same token is
    /// [`ProblemCode::OutcomeConflict`].
    pub async fn release(
        &self,
        id: impl Display,
        request: &ReleaseTaskRequest,
    ) -> Result<TaskResponse, ClientError> {
        self.task_call(id, "release", request, Safety::Idempotent).await
    }

    /// `POST /api/tasks/complete`: reports up to 1,000 outcomes in one round trip, each under
    /// the fencing rules of a single report, and returns one answer per item in the order
    /// given. Every item carries its lease token, so the call is replay-safe and repeated on
    /// transient failures.
    ///
    /// # Errors
    /// For the batch as a whole: [`ProblemCode::ValidationFailed`] and transport errors. An
    /// item's refusal is in its own [`CompletionResult`].
    pub async fn complete_batch(
        &self,
        items: Vec<CompletionItem>,
    ) -> Result<Vec<CompletionResult>, ClientError> {
        let body = CompleteTasksRequest { items };
        let answer: CompleteTasksResponse = self
            .call(
                Method::POST,
                &["api", "tasks", "complete"],
                Some(&body),
                Safety::Idempotent,
                Duration::ZERO,
            )
            .await?;
        Ok(answer.items)
    }

    /// `PUT /api/tasks/{id}/cancel`: PENDING or RUNNING to CANCELLED. Repeated only after a
    /// connection that could not be made (a repeat would meet INVALID_TRANSITION).
    ///
    /// # Errors
    /// [`ProblemCode::InvalidTransition`], [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn cancel(&self, id: impl Display) -> Result<TaskResponse, ClientError> {
        self.task_call(id, "cancel", &(), Safety::Once).await
    }

    /// `PUT /api/tasks/{id}/rerun`: FAILED or CANCELLED back to PENDING with a fresh budget of
    /// attempts. Repeated only after a connection that could not be made.
    ///
    /// # Errors
    /// [`ProblemCode::InvalidTransition`], [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn rerun(&self, id: impl Display) -> Result<TaskResponse, ClientError> {
        self.task_call(id, "rerun", &(), Safety::Once).await
    }

    /// [`Client::cancel`] only if the task is still at `version` (sent as `If-Match`), so
    /// that an operator never cancels a task that changed since they looked at it.
    ///
    /// # Errors
    /// As [`Client::cancel`]; [`ProblemCode::PreconditionFailed`] when the task moved on (its
    /// `currentVersion` is an [`ClientError::extension`]); nothing was changed then.
    pub async fn cancel_if_version(
        &self,
        id: impl Display,
        version: u64,
    ) -> Result<TaskResponse, ClientError> {
        self.task_call_if(id, "cancel", version).await
    }

    /// [`Client::rerun`] only if the task is still at `version` (sent as `If-Match`).
    ///
    /// # Errors
    /// As [`Client::rerun`]; [`ProblemCode::PreconditionFailed`] when the task moved on.
    pub async fn rerun_if_version(
        &self,
        id: impl Display,
        version: u64,
    ) -> Result<TaskResponse, ClientError> {
        self.task_call_if(id, "rerun", version).await
    }

    /// `GET /api/tasks/{id}/explain`: what stands between the task and a worker, or why it
    /// will not run again.
    ///
    /// # Errors
    /// [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn explain(&self, id: impl Display) -> Result<ExplainResponse, ClientError> {
        let id = id.to_string();
        self.read(&["api", "tasks", &id, "explain"]).await
    }

    /// `POST /api/tasks/bulk`: reruns, cancels or deletes the tasks a filter or a list of ids
    /// names, each under the rule of the single call; with `dry_run`, only counts them.
    ///
    /// A dry run is repeated on transient failures; an action only after a connection that
    /// could not be made (a repeat would act on tasks that changed meanwhile).
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`] (no filter, ids nor `all`, or both a filter and
    /// ids; a bad filter value), [`ProblemCode::Forbidden`] for a token that may not act, and
    /// transport errors. A task a rule refused is a skipped [`taskpilot_api::BulkResult`].
    pub async fn bulk(
        &self,
        request: &BulkActionRequest,
    ) -> Result<BulkActionResponse, ClientError> {
        let safety = if request.dry_run == Some(true) { Safety::Idempotent } else { Safety::Once };
        self.call(Method::POST, &["api", "tasks", "bulk"], Some(request), safety, Duration::ZERO)
            .await
    }

    /// `GET /api/tasks/{id}/events`: the task's history, oldest first.
    ///
    /// # Errors
    /// [`ProblemCode::TaskNotFound`] and transport errors.
    pub async fn events(&self, id: impl Display) -> Result<Vec<TaskEventResponse>, ClientError> {
        let id = id.to_string();
        let answer: TaskEventListResponse = self
            .call(
                Method::GET,
                &["api", "tasks", &id, "events"],
                None::<&()>,
                Safety::Idempotent,
                Duration::ZERO,
            )
            .await?;
        Ok(answer.items)
    }

    /// `GET /api/stats/rejections`: refused stale calls by code and call, across all servers.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn rejection_stats(&self) -> Result<RejectionStatsResponse, ClientError> {
        self.call(
            Method::GET,
            &["api", "stats", "rejections"],
            None::<&()>,
            Safety::Idempotent,
            Duration::ZERO,
        )
        .await
    }

    /// `GET /api/stats`: the tasks stored, by queue and status, across every server, and
    /// each queue's oldest runnable task.
    ///
    /// # Errors
    /// [`ProblemCode::Forbidden`] for a token that may not read stats, and transport errors.
    pub async fn stats(&self) -> Result<StatsResponse, ClientError> {
        self.read(&["api", "stats"]).await
    }

    /// `GET /api/queues`: every queue that holds tasks or was ever paused (within the token's
    /// queues), by name.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn list_queues(&self) -> Result<Vec<QueueResponse>, ClientError> {
        let answer: QueueListResponse = self.read(&["api", "queues"]).await?;
        Ok(answer.items)
    }

    /// `GET /api/queues/{name}`: one queue, its counts and whether it is paused.
    ///
    /// # Errors
    /// [`ProblemCode::QueueNotFound`] when it holds no task and was never paused,
    /// [`ProblemCode::ValidationFailed`] for a name no queue can have, and transport errors.
    pub async fn queue(&self, name: &str) -> Result<QueueResponse, ClientError> {
        self.read(&["api", "queues", name]).await
    }

    /// `PUT /api/queues/{name}/pause`: no claim on any server takes from the queue until it is
    /// resumed. Pausing a paused queue changes nothing, so the call is repeated on transient
    /// failures.
    ///
    /// # Errors
    /// [`ProblemCode::Forbidden`] for a token that may not pause, and transport errors.
    pub async fn pause_queue(&self, name: &str) -> Result<QueueResponse, ClientError> {
        let path = ["api", "queues", name, "pause"];
        self.call(Method::PUT, &path, None::<&()>, Safety::Idempotent, Duration::ZERO).await
    }

    /// `PUT /api/queues/{name}/resume`: the queue is claimable again. Repeated as
    /// [`Client::pause_queue`].
    ///
    /// # Errors
    /// As [`Client::pause_queue`]; [`ProblemCode::QueueNotFound`] for a queue that does not
    /// exist.
    pub async fn resume_queue(&self, name: &str) -> Result<QueueResponse, ClientError> {
        let path = ["api", "queues", name, "resume"];
        self.call(Method::PUT, &path, None::<&()>, Safety::Idempotent, Duration::ZERO).await
    }

    /// `POST /api/tokens`: creates an API token; the answer holds its secret, which the
    /// server never shows again. Repeated only after a connection that could not be made
    /// (a repeat would mint a second token).
    ///
    /// # Errors
    /// [`ProblemCode::ValidationFailed`], [`ProblemCode::Forbidden`] for a token that is not
    /// an admin's, and transport errors.
    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<CreatedTokenResponse, ClientError> {
        self.call(Method::POST, &["api", "tokens"], Some(request), Safety::Once, Duration::ZERO)
            .await
    }

    /// `GET /api/tokens`: every token, newest first, revoked ones included; never a secret.
    ///
    /// # Errors
    /// [`ProblemCode::Forbidden`] for a token that is not an admin's, and transport errors.
    pub async fn list_tokens(&self) -> Result<Vec<TokenResponse>, ClientError> {
        let answer: TokenListResponse = self.read(&["api", "tokens"]).await?;
        Ok(answer.items)
    }

    /// `DELETE /api/tokens/{id}`: revokes a token; every server refuses it within a few
    /// seconds. Revoking again changes nothing, so the call is repeated on transient failures.
    ///
    /// # Errors
    /// [`ProblemCode::TokenNotFound`], [`ProblemCode::Forbidden`] for a token that is not an
    /// admin's, and transport errors.
    pub async fn revoke_token(&self, id: impl Display) -> Result<TokenResponse, ClientError> {
        let id = id.to_string();
        let path = ["api", "tokens", id.as_str()];
        self.call(Method::DELETE, &path, None::<&()>, Safety::Idempotent, Duration::ZERO).await
    }

    /// `GET /readyz`: `Ok` when the server is up and reaches PostgreSQL. Asked once, never
    /// repeated: it is a probe.
    ///
    /// # Errors
    /// [`ProblemCode::DatabaseUnavailable`] when the database cannot be reached; transport
    /// errors when the server cannot.
    pub async fn ready(&self) -> Result<(), ClientError> {
        let url = self.url(&["readyz"]);
        let response =
            self.try_once(Method::GET, url, None::<&()>, Duration::ZERO, Extra::None).await?;
        let _: Value = response.json().await.map_err(read_error)?;
        Ok(())
    }

    /// `PUT /api/tasks/{id}/{action}` with `body`.
    async fn task_call<B: Serialize + ?Sized>(
        &self,
        id: impl Display,
        action: &str,
        body: &B,
        safety: Safety,
    ) -> Result<TaskResponse, ClientError> {
        let id = id.to_string();
        self.call(Method::PUT, &["api", "tasks", &id, action], Some(body), safety, Duration::ZERO)
            .await
    }

    /// `PUT /api/tasks/{id}/{action}` with `If-Match: "version"`, repeated only after a
    /// connection that could not be made.
    async fn task_call_if(
        &self,
        id: impl Display,
        action: &str,
        version: u64,
    ) -> Result<TaskResponse, ClientError> {
        let id = id.to_string();
        let url = self.url(&["api", "tasks", &id, action]);
        let extra = Extra::IfMatch(version);
        let answer =
            self.send_with(Method::PUT, url, Some(&()), Safety::Once, Duration::ZERO, extra);
        Ok(answer.await?.value)
    }

    /// `GET` of `segments`, repeated on transient failures.
    async fn read<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        self.call(Method::GET, segments, None::<&()>, Safety::Idempotent, Duration::ZERO).await
    }

    /// `base` + `segments`, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
        safety: Safety,
        extra_timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = self.url(segments);
        self.send(method, url, body, safety, extra_timeout).await
    }

    /// Sends until an answer, a failure not worth repeating, or the policy gives up.
    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        safety: Safety,
        extra_timeout: Duration,
    ) -> Result<T, ClientError> {
        let answer = self.send_with(method, url, body, safety, extra_timeout, Extra::None).await?;
        Ok(answer.value)
    }

    /// [`Client::send`] with `Idempotency-Key: key` on every try, repeated as
    /// [`Safety::Keyed`].
    async fn send_keyed<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        key: Option<&str>,
    ) -> Result<T, ClientError> {
        let extra = key.map_or(Extra::None, Extra::IdempotencyKey);
        let answer =
            self.send_with(method, url, body, Safety::Keyed, Duration::ZERO, extra).await?;
        Ok(answer.value)
    }

    /// [`Client::send`] with `extra` on every try; the answer with the version of its `ETag`.
    async fn send_with<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        safety: Safety,
        extra_timeout: Duration,
        extra: Extra<'_>,
    ) -> Result<Versioned<T>, ClientError> {
        let first = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = match self
                .try_once(method.clone(), url.clone(), body, extra_timeout, extra)
                .await
            {
                Ok(response) => {
                    let version = etag_version(response.headers());
                    match response.json::<T>().await {
                        Ok(value) => Ok(Versioned { value, version }),
                        Err(e) => Err(read_error(e)),
                    }
                }
                Err(e) => Err(e),
            };
            let error = match outcome {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(delay) = self.retry.next_delay(tries, first.elapsed(), &error, safety) else {
                return Err(error);
            };
            tracing::debug!(
                http.method = %method,
                url.path = url.path(),
                error = %error,
                "transient failure (try {tries}); trying again in {delay:?}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request; a non-2xx answer becomes its [`ClientError`].
    async fn try_once<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        extra_timeout: Duration,
        extra: Extra<'_>,
    ) -> Result<Response, ClientError> {
        let mut request = self.http.request(method, url).timeout(self.timeout + extra_timeout);
        match extra {
            Extra::None => {}
            Extra::IdempotencyKey(key) => request = request.header(IDEMPOTENCY_KEY, key),
            // A strong entity tag, as the server's `ETag` spells it.
            Extra::IfMatch(version) => request = request.header(IF_MATCH, format!("\"{version}\"")),
        }
        if let Some(Token(secret)) = &self.token {
            // reqwest marks the header sensitive.
            request = request.bearer_auth(secret);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(send_error)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_from(response).await)
    }
}

/// A request header that only some calls send.
#[derive(Debug, Clone, Copy)]
enum Extra<'a> {
    None,
    /// Makes a create safe to repeat.
    IdempotencyKey(&'a str),
    /// Acts only on this version of the task or queue.
    IfMatch(u64),
}

/// The version a strong `ETag` names (`"7"` is 7); `None` without one, or for a weak tag,
/// which never matches an `If-Match`.
fn etag_version(headers: &HeaderMap) -> Option<u64> {
    let tag = headers.get(ETAG)?.to_str().ok()?;
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The header that makes a create safe to repeat.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A completion with a lease token is replay-safe; without one it is not.
fn fenced(has_token: bool) -> Safety {
    if has_token {
        Safety::Idempotent
    } else {
        Safety::Once
    }
}

/// A failure to send: connect errors prove the request never left.
fn send_error(e: reqwest::Error) -> ClientError {
    if e.is_connect() {
        ClientError::Connect(e)
    } else if e.is_builder() {
        ClientError::InvalidUrl(e.to_string())
    } else {
        ClientError::Transport(e)
    }
}

/// A failure while reading a 2xx answer.
fn read_error(e: reqwest::Error) -> ClientError {
    if e.is_decode() {
        ClientError::Decode(e)
    } else {
        ClientError::Transport(e)
    }
}

/// The error an unsuccessful answer stands for: its problem body when it has one.
async fn error_from(response: Response) -> ClientError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // A body that cannot be read is no worse than a body that is not a problem.
    let bytes = response.bytes().await.unwrap_or_default();
    let problem = serde_json::from_slice::<ProblemBody>(&bytes).ok();
    match problem {
        Some(problem) => match problem.problem_code() {
            Some(code) => ClientError::Api {
                status: status.as_u16(),
                code,
                detail: problem.detail.clone(),
                retry_after,
                problem: Box::new(problem),
            },
            None => ClientError::UnexpectedStatus {
                status: status.as_u16(),
                retry_after,
                problem: Some(Box::new(problem)),
            },
        },
        None => {
            ClientError::UnexpectedStatus { status: status.as_u16(), retry_after, problem: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_appended_to_the_base_one_encoded_segment_at_a_time() {
        let root = Client::try_new("http://127.0.0.1:8080").map(|c| c.url(&["api", "tasks"]));
        let prefixed = Client::try_new("http://h/taskpilot/").map(|c| c.url(&["api", "a/b?c"]));

        assert_eq!(root.ok().map(String::from).as_deref(), Some("http://127.0.0.1:8080/api/tasks"));
        assert_eq!(
            prefixed.ok().map(String::from).as_deref(),
            Some("http://h/taskpilot/api/a%2Fb%3Fc")
        );
    }

    #[test]
    fn a_base_that_is_not_an_http_url_is_refused() {
        let https = if cfg!(feature = "rustls") { "ftp://h/" } else { "https://h/" };
        for base in ["not a url", "ftp://h/", "mailto:ops@example.com", https] {
            let built = Client::try_new(base);

            assert!(matches!(built, Err(ClientError::InvalidUrl(_))), "{base}: {built:?}");
        }
    }
}
