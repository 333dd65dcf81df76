//! The HTTP adapter in-process over a mocked repository: one request per route, the answer
//! every refusal maps to (status, content type, code, headers and members, in one table), the
//! requests refused before any use case runs (one table), and the batch endpoints' answers
//! item by item.
//!
//! Which call with which lease token on which attempt history is refused with which code is
//! the domain's fencing table's to say, and the use cases test that a refusal is recorded
//! once: here each refusal appears once, as whatever request meets it most simply.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_app::{AccessService, MockTokenRepository};
use taskpilot_app::{
    Actor, MockTaskRepository, RejectionCount, RepoError, ServiceDefaults, StaleCall, SystemClock,
    TaskEvent, TaskService,
};
use taskpilot_domain::{
    Clock, FixedBackoff, FixedClock, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName,
    Reporter, Task, TaskId, TaskName, TaskStatus, WorkerId,
};
use taskpilot_http::wake::Waiting;
use taskpilot_http::{build_app, AuthMode, Gate, HttpConfig, WakeHub};

use common::{guarded, LONG_POLL_MS};

const BODY_LIMIT: usize = 1024;
/// The token of the attempt `running_task` starts.
const TOKEN: &str = "5ec2e70000004000800000000000abcd";
/// A token of no attempt.
const OTHER_TOKEN: &str = "0f0f0000000040008000000000000000";

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn task_id() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::now_v7())
}

fn token() -> LeaseToken {
    LeaseToken::parse(TOKEN).unwrap()
}

fn lease() -> LeaseDuration {
    LeaseDuration::from_secs(60).unwrap()
}

fn pending_task(run_at: Option<DateTime<Utc>>) -> Task {
    let spec = NewTask {
        queue: QueueName::default_queue(),
        name: TaskName::parse("send-email").unwrap(),
        payload: json!({"to": "ada@example.com"}),
        priority: 0,
        max_attempts: MaxAttempts::new(3).unwrap(),
        run_at,
        unique_key: None,
    };
    Task::new(task_id(), spec, now())
}

fn running_task(worker: &str) -> Task {
    let mut task = pending_task(None);
    task.start(&WorkerId::parse(worker).unwrap(), token(), lease(), now()).unwrap();
    task
}

fn service(repo: MockTaskRepository, clock: Arc<dyn Clock>) -> TaskService {
    TaskService::new(
        Arc::new(repo),
        clock,
        Arc::new(FixedBackoff(TimeDelta::seconds(10))),
        ServiceDefaults {
            max_attempts: MaxAttempts::new(25).unwrap(),
            lease: LeaseDuration::from_secs(300).unwrap(),
        },
    )
}

/// A repository holding `task`: reads return it, writes and recorded refusals succeed. Its
/// one-statement success never matches, so every report is judged on the task as read.
fn repo_returning(task: Task) -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
    repo.expect_succeed_live().returning(|_, _| Ok(Vec::new()));
    repo.expect_get().returning(move |_| Ok(task.clone()));
    repo.expect_update().returning(|_, _, _| Ok(()));
    repo.expect_record_rejection().returning(|_| Ok(()));
    repo
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.headers.get(CONTENT_TYPE).unwrap(), "application/problem+json");
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["type"].is_string());
        assert!(self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
    }

    /// Asserts that the reply is the problem `expected` describes; `what` names the case.
    fn assert_refused(&self, what: &str, expected: &Refusal) {
        let body = &self.body;
        assert_eq!(self.status, expected.status, "{what}: {body}");
        assert_eq!(self.headers.get(CONTENT_TYPE).unwrap(), "application/problem+json", "{what}");
        assert_eq!(body["code"], expected.code, "{what}: {body}");
        assert_eq!(body["status"], expected.status.as_u16(), "{what}: {body}");
        assert!(body["type"].is_string() && body["title"].is_string(), "{what}: {body}");
        let detail = body["detail"].as_str().unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(!detail.is_empty(), "{what}: {body}");
        for (name, value) in &expected.members {
            assert_eq!(&body[*name], value, "{what}: member {name} of {body}");
        }
        for (name, value) in &expected.headers {
            let header = self.headers.get(*name).unwrap_or_else(|| panic!("{what}: no {name}"));
            if let Some(value) = value {
                assert_eq!(header.to_str().unwrap(), value, "{what}: header {name}");
            }
        }
        for text in &expected.detail_names {
            assert!(detail.contains(text.as_str()), "{what}: {text:?} not in {detail:?}");
        }
        if let Some(start) = &expected.detail_starts {
            assert!(detail.starts_with(start.as_str()), "{what}: {detail:?}");
        }
        if let Some(secret) = expected.hides {
            assert!(!body.to_string().contains(secret), "{what}: {body}");
        }
    }
}

/// The problem a refused request must answer, beyond the members every problem has.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    /// Members of the body and their values.
    members: Vec<(&'static str, Value)>,
    /// Response headers and their values (`None`: any value).
    headers: Vec<(&'static str, Option<String>)>,
    /// Texts the detail contains.
    detail_names: Vec<String>,
    /// How the detail starts.
    detail_starts: Option<String>,
    /// A text the body must not reveal.
    hides: Option<&'static str>,
}

fn refusal(status: StatusCode, code: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        members: Vec::new(),
        headers: Vec::new(),
        detail_names: Vec::new(),
        detail_starts: None,
        hides: None,
    }
}

fn malformed() -> Refusal {
    refusal(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST")
}

fn invalid() -> Refusal {
    refusal(StatusCode::BAD_REQUEST, "VALIDATION_FAILED")
}

fn conflict(code: &'static str, task: TaskId) -> Refusal {
    refusal(StatusCode::CONFLICT, code).member("taskId", task.to_string())
}

impl Refusal {
    fn member(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.members.push((name, value.into()));
        self
    }

    fn header(mut self, name: &'static str, value: Option<&str>) -> Self {
        self.headers.push((name, value.map(str::to_owned)));
        self
    }

    fn allow(self, methods: &str) -> Self {
        self.header("allow", Some(methods))
    }

    fn names(mut self, text: impl Into<String>) -> Self {
        self.detail_names.push(text.into());
        self
    }

    fn starts(mut self, text: &str) -> Self {
        self.detail_starts = Some(text.to_owned());
        self
    }

    fn hides(mut self, text: &'static str) -> Self {
        self.hides = Some(text);
        self
    }
}

/// The application over `repo` with the system clock, a hub of its own and the default
/// limits (a [`BODY_LIMIT`] for single requests) answers `request`.
async fn send(repo: MockTaskRepository, request: TestRequest) -> Reply {
    let http = HttpConfig { max_body_bytes: BODY_LIMIT, ..HttpConfig::default() };
    call(service(repo, Arc::new(SystemClock)), Arc::new(WakeHub::new()), &http, request).await
}

/// `service` behind the application, waiting claims on `hub`, limits from `http`, answers
/// `request`.
async fn call(
    service: TaskService,
    hub: Arc<WakeHub>,
    http: &HttpConfig,
    request: TestRequest,
) -> Reply {
    // Authentication is off: these tests are about bodies and refusals, not tokens.
    let access = AccessService::new(Arc::new(MockTokenRepository::new()), Arc::new(SystemClock));
    let gate = Gate::new(access, AuthMode::Off, true);
    let app = test::init_service(build_app(service, gate, hub, http)).await;
    let response = test::call_service(&app, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    Reply { status, headers, body }
}

fn post_tasks(body: &str) -> TestRequest {
    TestRequest::post()
        .uri("/api/tasks")
        .insert_header((CONTENT_TYPE, "application/json"))
        .set_payload(body.to_owned())
}

fn put_json(uri: &str, body: Value) -> TestRequest {
    TestRequest::put().uri(uri).set_json(body)
}

fn post_json(uri: &str, body: Value) -> TestRequest {
    TestRequest::post().uri(uri).set_json(body)
}

/// A repository that must not be touched: any call fails the request.
fn untouched_repo() -> MockTaskRepository {
    MockTaskRepository::new()
}

#[actix_web::test]
async fn creating_a_task_answers_201_with_location_and_the_camel_case_task() {
    let mut repo = MockTaskRepository::new();
    repo.expect_insert().times(1).returning(|_, _| Ok(()));

    let reply = send(repo, post_tasks(r#"{"name": "send-email", "priority": 5}"#)).await;

    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.headers.get("location").unwrap().to_str().unwrap(),
        format!("/api/tasks/{id}")
    );
    assert_eq!(reply.body["status"], "PENDING");
    assert_eq!(reply.body["retryState"], "NONE");
    assert_eq!(reply.body["payload"], json!({}));
    assert_eq!(reply.body["priority"], 5);
    assert_eq!(reply.body["maxAttempts"], 25);
    assert_eq!(reply.body["attemptCount"], 0);
    assert_eq!(reply.body["queue"], "default");
    assert_eq!(reply.body["attempt"], 0);
    for field in [
        "nextRunAt",
        "lastError",
        "workerId",
        "processingStartedAt",
        "leaseExpiresAt",
        "result",
        "completedAt",
    ] {
        assert!(reply.body[field].is_null(), "{field} should be null: {}", reply.body);
    }
    assert!(reply.body.get("leaseToken").is_none(), "{}", reply.body);
    let created_at = reply.body["createdAt"].as_str().unwrap();
    assert_eq!(created_at.len(), "2026-01-01T12:00:00.000000Z".len(), "{created_at}");
    assert!(created_at.ends_with('Z'));
}

#[actix_web::test]
async fn every_refusal_of_a_use_case_answers_its_status_code_headers_and_members() {
    let at = now();
    let clock: Arc<dyn Clock> = Arc::new(FixedClock::new(at));
    let running = running_task("worker-1");
    let runnable_at = at + TimeDelta::seconds(90);
    let not_yet = pending_task(Some(runnable_at));
    let expired = ended_task("expired");
    let cancelled = ended_task("cancelled");
    let succeeded = ended_task("succeeded");
    let released = ended_task("released");
    let unknown = task_id();
    let racing = {
        let task = pending_task(None);
        let mut repo = MockTaskRepository::new();
        let stored = task.clone();
        repo.expect_succeed_live().returning(|_, _| Ok(Vec::new()));
        repo.expect_get().returning(move |_| Ok(stored.clone()));
        repo.expect_update().returning(|t, _, _| Err(RepoError::Conflict(t.id())));
        (task.id(), repo)
    };
    let failing = |error: fn() -> RepoError| {
        let mut repo = MockTaskRepository::new();
        repo.expect_succeed_live().returning(move |_, _| Err(error()));
        repo.expect_get().returning(move |_| Err(error()));
        repo
    };
    let holder = json!({ "workerId": "worker-1", "leaseToken": TOKEN });
    let uri = |task: &Task, action: &str| format!("/api/tasks/{}/{action}", task.id());
    let cases = [
        (
            "an unknown task",
            {
                let mut repo = MockTaskRepository::new();
                repo.expect_get().returning(|id| Err(RepoError::NotFound(id)));
                repo
            },
            TestRequest::get().uri(&format!("/api/tasks/{unknown}")),
            refusal(StatusCode::NOT_FOUND, "TASK_NOT_FOUND").member("taskId", unknown.to_string()),
        ),
        (
            "a start of a running task",
            repo_returning(running.clone()),
            put_json(&uri(&running, "start"), json!({ "workerId": "worker-2" })),
            conflict("INVALID_TRANSITION", running.id())
                .member("taskStatus", "RUNNING")
                .member("action", "start"),
        ),
        (
            "a start before the next run",
            repo_returning(not_yet.clone()),
            put_json(&uri(&not_yet, "start"), json!({ "workerId": "worker-1" })),
            conflict("NOT_YET_RUNNABLE", not_yet.id())
                .member("runnableAt", taskpilot_http::dto::format_time(runnable_at))
                .header("retry-after", Some("90"))
                .names(taskpilot_http::dto::format_time(runnable_at)),
        ),
        (
            "a report from another worker",
            repo_returning(running.clone()),
            put_json(&uri(&running, "succeed"), json!({ "workerId": "worker-2" })),
            conflict("WORKER_MISMATCH", running.id()),
        ),
        (
            "a write that loses every race",
            racing.1,
            TestRequest::put().uri(&format!("/api/tasks/{}/cancel", racing.0)),
            conflict("CONCURRENT_MODIFICATION", racing.0),
        ),
        (
            "a token whose lease was reaped",
            repo_returning(expired.clone()),
            put_json(&uri(&expired, "succeed"), holder.clone()),
            conflict("LEASE_EXPIRED", expired.id())
                .member("attempt", 1)
                .member("type", "urn:taskpilot:problem:lease-expired"),
        ),
        (
            "a token of no attempt",
            repo_returning(running.clone()),
            put_json(
                &uri(&running, "fail"),
                json!({ "errorMessage": "boom", "leaseToken": OTHER_TOKEN }),
            ),
            conflict("ATTEMPT_SUPERSEDED", running.id()).member("currentAttempt", 1),
        ),
        (
            "a token of a cancelled attempt",
            repo_returning(cancelled.clone()),
            put_json(&uri(&cancelled, "heartbeat"), holder.clone()),
            conflict("TASK_CANCELLED", cancelled.id()).member("attempt", 1),
        ),
        (
            "another outcome for a succeeded attempt",
            repo_returning(succeeded.clone()),
            put_json(
                &uri(&succeeded, "fail"),
                json!({ "errorMessage": "late", "leaseToken": TOKEN }),
            ),
            conflict("OUTCOME_CONFLICT", succeeded.id())
                .member("attempt", 1)
                .member("recordedOutcome", "SUCCEEDED"),
        ),
        (
            "an outcome for a released attempt",
            repo_returning(released.clone()),
            put_json(&uri(&released, "succeed"), json!({ "leaseToken": TOKEN })),
            conflict("OUTCOME_CONFLICT", released.id()).member("recordedOutcome", "RELEASED"),
        ),
        (
            "an unreachable database",
            failing(|| RepoError::Unavailable(anyhow::anyhow!("connection refused"))),
            TestRequest::get().uri(&format!("/api/tasks/{unknown}")),
            refusal(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
                .header("retry-after", None)
                .hides("connection refused"),
        ),
        (
            "an unexpected storage error",
            failing(|| RepoError::Unexpected(anyhow::anyhow!("row 42 is broken"))),
            TestRequest::get().uri(&format!("/api/tasks/{unknown}")),
            refusal(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR").hides("row 42"),
        ),
    ];

    for (what, repo, request, expected) in cases {
        let http = HttpConfig::default();
        let reply =
            call(service(repo, clock.clone()), Arc::new(WakeHub::new()), &http, request).await;

        reply.assert_refused(what, &expected);
    }
}

#[actix_web::test]
async fn requests_that_cannot_be_read_or_break_a_limit_are_refused_before_any_use_case() {
    let id = task_id();
    let start = format!("/api/tasks/{id}/start");
    let heartbeat = format!("/api/tasks/{id}/heartbeat");
    let succeed = format!("/api/tasks/{id}/succeed");
    let release = format!("/api/tasks/{id}/release");
    let list = |query: &str| TestRequest::get().uri(&format!("/api/tasks?{query}"));
    let batch = |tasks: Value| post_json("/api/tasks/batch", json!({ "tasks": tasks }));
    let complete = |items: Value| post_json("/api/tasks/complete", json!({ "items": items }));
    let five_jobs: Vec<Value> = (0..5).map(|i| json!({"name": format!("job-{i}")})).collect();
    let mut one_unnamed = five_jobs.clone();
    one_unnamed[3] = json!({"name": ""});
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"name": "x"})).collect();
    let mut cases = vec![
        // Bodies and paths that cannot be read.
        ("malformed JSON", post_tasks(r#"{"name": "#), malformed()),
        (
            "a field of the wrong type",
            post_tasks(r#"{"name": "x", "priority": "high"}"#),
            malformed().names("priority must be an integer, got the string \"high\""),
        ),
        (
            "an unknown field",
            post_tasks(r#"{"name": "x", "colour": "red"}"#),
            malformed().names("colour"),
        ),
        ("a missing name", post_tasks(r#"{"priority": 1}"#), malformed().names("name")),
        (
            "an unknown field of a sent succeed body",
            TestRequest::put()
                .uri(&succeed)
                .insert_header((CONTENT_TYPE, "application/json"))
                .set_payload(r#"{"workerId": "worker-1", "reslut": 1}"#),
            malformed().names("reslut"),
        ),
        (
            "a heartbeat without a token",
            put_json(&heartbeat, json!({ "workerId": "w" })),
            malformed().names("leaseToken"),
        ),
        (
            "a release without a token",
            put_json(&release, json!({ "workerId": "w" })),
            malformed().names("leaseToken"),
        ),
        (
            "a release with a field of another report",
            put_json(&release, json!({ "leaseToken": TOKEN, "errorMessage": "stopping" })),
            malformed().names("errorMessage"),
        ),
        (
            "an id that is not a UUID",
            TestRequest::get().uri("/api/tasks/not-a-uuid"),
            malformed().names("not-a-uuid"),
        ),
        ("an unknown query parameter", list("colour=red"), malformed().names("colour")),
        (
            "a body over the limit",
            post_tasks(&json!({ "name": "x", "payload": "p".repeat(BODY_LIMIT) }).to_string()),
            refusal(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        ),
        (
            "a body declared as text",
            TestRequest::post()
                .uri("/api/tasks")
                .insert_header((CONTENT_TYPE, "text/plain"))
                .set_payload(r#"{"name": "x"}"#),
            refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        (
            "a body not declared at all",
            TestRequest::post().uri("/api/tasks").set_payload(r#"{"name": "x"}"#),
            refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE"),
        ),
        // Routes and methods.
        (
            "an unknown route",
            TestRequest::get().uri("/api/nothing"),
            refusal(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND"),
        ),
        ("DELETE /api/tasks", TestRequest::delete().uri("/api/tasks"), not_allowed("GET, POST")),
        ("GET /api/tasks/claim", TestRequest::get().uri("/api/tasks/claim"), not_allowed("POST")),
        ("GET /api/tasks/batch", TestRequest::get().uri("/api/tasks/batch"), not_allowed("POST")),
        (
            "GET /api/tasks/complete",
            TestRequest::get().uri("/api/tasks/complete"),
            not_allowed("POST"),
        ),
        ("POST of a release", post_json(&release, json!({})), not_allowed("PUT")),
        // Values out of their range.
        ("an empty name", post_tasks(r#"{"name": ""}"#), invalid()),
        (
            "a name over 200 characters",
            post_tasks(&json!({ "name": "n".repeat(201) }).to_string()),
            invalid().names("200"),
        ),
        (
            "a bad queue name",
            post_tasks(r#"{"name": "x", "queue": "Emails"}"#),
            invalid().names("queue"),
        ),
        (
            "a NUL in a payload",
            post_tasks(r#"{"name": "x", "payload": {"note": "a\u0000b"}}"#),
            invalid().names("payload"),
        ),
        (
            "a NUL in a payload's key",
            post_tasks(r#"{"name": "x", "payload": {"\u0000": 1}}"#),
            invalid().names("payload"),
        ),
        (
            "a NUL in a result",
            put_json(&succeed, json!({ "result": ["ok", "\u{0}"] })),
            invalid().names("result"),
        ),
        (
            "a start with a lease over a day",
            put_json(&start, json!({ "workerId": "w", "leaseSeconds": 86_401 })),
            invalid(),
        ),
        (
            "a heartbeat with a lease under 5 s",
            put_json(
                &heartbeat,
                json!({ "workerId": "w", "leaseToken": TOKEN, "leaseSeconds": 1 }),
            ),
            invalid().names("leaseSeconds"),
        ),
        (
            "a blank worker id on a release",
            put_json(&release, json!({ "workerId": " ", "leaseToken": TOKEN })),
            invalid(),
        ),
        (
            "an unnamed task in a batch",
            batch(json!(one_unnamed)),
            invalid().starts("tasks[3].name ").member("index", 3),
        ),
        ("an empty batch", batch(json!([])), invalid().names("1 to 1000").names("got 0")),
        ("a batch of 1001", batch(json!(too_many)), invalid().names("1 to 1000").names("got 1001")),
        ("an empty completion", complete(json!([])), invalid().names("1 to 1000").names("got 0")),
        // Batches of the wrong shape.
        ("a batch without tasks", post_json("/api/tasks/batch", json!({"task": []})), malformed()),
        (
            "a batch as a bare list",
            post_json("/api/tasks/batch", json!([{"name": "x"}])),
            malformed(),
        ),
        (
            "a batch task with an unknown field",
            batch(json!([{"name": "x", "colour": "red"}])),
            malformed(),
        ),
        (
            "a completion of an id that is not a UUID",
            complete(json!([{"id": "nope", "leaseToken": TOKEN, "outcome": "succeeded"}])),
            malformed(),
        ),
        (
            "a completion with an unknown outcome",
            complete(json!([{"id": id.to_string(), "leaseToken": TOKEN, "outcome": "done"}])),
            malformed(),
        ),
        (
            "a completion without a token",
            complete(json!([{"id": id.to_string(), "outcome": "succeeded"}])),
            malformed(),
        ),
    ];
    for max_attempts in [0, 101, -1] {
        let body = json!({ "name": "x", "maxAttempts": max_attempts }).to_string();
        cases.push(("maxAttempts out of range", post_tasks(&body), invalid().names("maxAttempts")));
    }
    for worker in [String::new(), "   ".to_owned(), "w".repeat(129), "bad\nworker".to_owned()] {
        let request = put_json(&start, json!({ "workerId": worker }));
        cases.push(("a bad worker id", request, invalid().names("workerId")));
    }
    for query in [
        "status=DONE",
        "limit=0",
        "limit=501",
        "limit=many",
        "cursor=junk",
        "name=%0A",
        "queue=a%20b",
    ] {
        cases.push(("a bad list filter", list(query), invalid()));
    }
    for (action, body) in [
        ("heartbeat", json!({ "workerId": "w", "leaseToken": "not-a-token" })),
        ("succeed", json!({ "leaseToken": "" })),
        ("fail", json!({ "errorMessage": "x", "leaseToken": "1234" })),
        ("release", json!({ "workerId": "w", "leaseToken": "not-a-token" })),
    ] {
        let request = put_json(&format!("/api/tasks/{id}/{action}"), body);
        cases.push(("a lease token that is not one", request, invalid().names("leaseToken")));
    }
    for (task, field) in [
        (json!({"name": "x", "maxAttempts": 0}), "tasks[1].maxAttempts"),
        (json!({"name": "x", "queue": "Bad Queue"}), "tasks[1].queue"),
        (json!({"name": "x", "payload": "nul \u{0}"}), "tasks[1].payload"),
    ] {
        let request = batch(json!([{"name": "ok"}, task]));
        cases.push(("a bad field in a batch", request, invalid().starts(field).member("index", 1)));
    }
    for body in [
        json!({ "workerId": "w", "limit": 0 }),
        json!({ "workerId": "w", "limit": 101 }),
        json!({ "workerId": "w", "limit": -1 }),
        json!({ "workerId": "w", "waitMs": -1 }),
        json!({ "workerId": "w", "waitMs": 30_001 }),
        json!({ "workerId": "w", "leaseSeconds": 4 }),
        json!({ "workerId": "w", "leaseSeconds": 86_401 }),
        json!({ "workerId": "w", "queues": [] }),
        json!({ "workerId": "w", "queues": ["Emails"] }),
        json!({ "workerId": "w", "queues": ["q".repeat(65)] }),
        json!({ "workerId": "" }),
    ] {
        let expected =
            if body["limit"] == 0 { invalid().names("between 1 and 100") } else { invalid() };
        cases.push(("a claim value out of range", post_claim(body), expected));
    }

    for (what, request, expected) in cases {
        let reply = send(untouched_repo(), request).await;

        reply.assert_refused(what, &expected);
    }
}

fn raw(method: &str, uri: &str, body: &str) -> TestRequest {
    TestRequest::default()
        .method(method.parse().unwrap())
        .uri(uri)
        .insert_header((CONTENT_TYPE, "application/json"))
        .set_payload(body.to_owned())
}

#[actix_web::test]
async fn a_body_or_item_that_is_not_a_json_object_is_malformed_and_writes_nothing() {
    let id = task_id();
    let uri = |action: &str| format!("/api/tasks/{id}/{action}");
    let whole = "the request body must be a JSON object, got an array";
    let cases = [
        (raw("POST", "/api/tasks", r#"[null, "x"]"#), whole),
        (raw("POST", "/api/tasks/claim", r#"["w", 1]"#), whole),
        (raw("PUT", &uri("start"), r#"["w"]"#), whole),
        (raw("PUT", &uri("heartbeat"), &format!(r#"["w", "{TOKEN}"]"#)), whole),
        (raw("PUT", &uri("succeed"), &format!(r#"[null, "{TOKEN}"]"#)), whole),
        (raw("PUT", &uri("fail"), r#"["boom"]"#), whole),
        (raw("PUT", &uri("release"), &format!(r#"[null, "{TOKEN}"]"#)), whole),
        (raw("POST", "/api/tasks/batch", r#"[[{"name": "x"}]]"#), whole),
        (
            raw("POST", "/api/tasks/batch", r#"{"tasks": [{"name": "a"}, [null, "x"]]}"#),
            "tasks[1] must be a JSON object, got an array",
        ),
        (raw("POST", "/api/tasks/complete", &format!(r#"[[{{"id": "{id}"}}]]"#)), whole),
        (
            raw(
                "POST",
                "/api/tasks/complete",
                &format!(r#"{{"items": [["{id}", "{TOKEN}", null, "succeeded"]]}}"#),
            ),
            "items[0] must be a JSON object, got an array",
        ),
    ];

    for (request, detail) in cases {
        // The repository expects no call: a write would fail the request with a 500.
        let reply = send(untouched_repo(), request).await;

        reply.assert_refused(detail, &malformed().names(detail));
    }
}

#[actix_web::test]
async fn an_integer_too_large_for_its_field_is_out_of_range_whatever_its_size() {
    let id = task_id();
    let start = format!("/api/tasks/{id}/start");
    let heartbeat = format!("/api/tasks/{id}/heartbeat");
    let huge = "99999999999999999999999";
    let cases = [
        (
            raw("POST", "/api/tasks", &format!(r#"{{"name": "x", "maxAttempts": {huge}}}"#)),
            "maxAttempts",
        ),
        (raw("POST", "/api/tasks", r#"{"name": "x", "maxAttempts": 2147483648}"#), "maxAttempts"),
        (raw("POST", "/api/tasks", r#"{"name": "x", "maxAttempts": -1e300}"#), "maxAttempts"),
        (raw("POST", "/api/tasks", r#"{"name": "x", "priority": 2147483648}"#), "priority"),
        (
            raw("POST", "/api/tasks", &format!(r#"{{"name": "x", "priority": -{huge}}}"#)),
            "priority",
        ),
        (
            raw("POST", "/api/tasks/claim", &format!(r#"{{"workerId": "w", "limit": {huge}}}"#)),
            "limit",
        ),
        (raw("POST", "/api/tasks/claim", r#"{"workerId": "w", "limit": 2147483648}"#), "limit"),
        (raw("POST", "/api/tasks/claim", r#"{"workerId": "w", "waitMs": 1e30}"#), "waitMs"),
        (
            raw(
                "POST",
                "/api/tasks/claim",
                &format!(r#"{{"workerId": "w", "leaseSeconds": {huge}}}"#),
            ),
            "leaseSeconds",
        ),
        (
            raw("PUT", &start, &format!(r#"{{"workerId": "w", "leaseSeconds": {huge}}}"#)),
            "leaseSeconds",
        ),
        (
            raw(
                "PUT",
                &heartbeat,
                &format!(
                    r#"{{"workerId": "w", "leaseToken": "{TOKEN}", "leaseSeconds": -{huge}}}"#
                ),
            ),
            "leaseSeconds",
        ),
    ];

    for (request, field) in cases {
        let reply = send(untouched_repo(), request).await;

        reply.assert_refused(field, &invalid().starts(field));
    }
    let batch =
        format!(r#"{{"tasks": [{{"name": "a"}}, {{"name": "b", "maxAttempts": {huge}}}]}}"#);
    let reply = send(untouched_repo(), raw("POST", "/api/tasks/batch", &batch)).await;
    reply.assert_refused(
        "a batch",
        &invalid().starts("tasks[1].maxAttempts is out of range").member("index", 1),
    );
}

#[actix_web::test]
async fn a_value_of_the_wrong_type_names_its_field_and_what_it_takes() {
    let id = task_id();
    let cases = [
        (
            raw("POST", "/api/tasks", r#"{"name": "x", "runAt": "tomorrow"}"#),
            "runAt must be an RFC 3339 instant such as 2026-11-26T10:00:00Z, got the string \"tomorrow\"",
        ),
        (
            raw("POST", "/api/tasks", r#"{"name": "x", "maxAttempts": "3"}"#),
            "maxAttempts must be an integer, got the string \"3\"",
        ),
        (
            raw("POST", "/api/tasks", r#"{"name": "x", "maxAttempts": 2.5}"#),
            "maxAttempts must be an integer, got the number 2.5",
        ),
        (
            raw("POST", "/api/tasks/claim", r#"{"workerId": "w", "queues": "mail"}"#),
            "queues must be an array, got the string \"mail\"",
        ),
        (
            raw("PUT", &format!("/api/tasks/{id}/fail"), r#"{"errorMessage": "x", "retryable": "no"}"#),
            "retryable must be true or false, got the string \"no\"",
        ),
        (
            raw("POST", "/api/tasks/batch", r#"{"tasks": [{"name": "a"}, {"name": "b", "priority": "high"}]}"#),
            "tasks[1].priority must be an integer, got the string \"high\"",
        ),
        (
            raw(
                "POST",
                "/api/tasks/complete",
                &format!(r#"{{"items": [{{"id": "{id}", "leaseToken": "{TOKEN}", "outcome": "done"}}]}}"#),
            ),
            "items[0].outcome must be one of `succeeded`, `failed`, `released`, got the string \"done\"",
        ),
        (
            raw("POST", "/api/tasks", r#"{"name": "x", "colour": "red"}"#),
            "the request body has an unknown field `colour`",
        ),
        (raw("POST", "/api/tasks", r#"{"priority": 1}"#), "the request body lacks the required field `name`"),
    ];

    for (request, detail) in cases {
        let reply = send(untouched_repo(), request).await;

        reply.assert_refused(detail, &malformed().starts(detail));
    }
}

fn not_allowed(allow: &str) -> Refusal {
    refusal(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED").allow(allow)
}

#[actix_web::test]
async fn readyz_is_503_when_the_database_is_unreachable_and_200_when_it_answers() {
    let mut down = MockTaskRepository::new();
    down.expect_ping().returning(|| Err(RepoError::Unavailable(anyhow::anyhow!("timed out"))));
    let mut up = MockTaskRepository::new();
    up.expect_ping().returning(|| Ok(()));

    let down = send(down, TestRequest::get().uri("/readyz")).await;
    let up = send(up, TestRequest::get().uri("/readyz")).await;

    down.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(up.status, StatusCode::OK);
}

#[actix_web::test]
async fn healthz_is_200_without_touching_the_database() {
    let reply = send(MockTaskRepository::new(), TestRequest::get().uri("/healthz")).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
}

#[actix_web::test]
async fn succeed_accepts_a_request_without_a_body() {
    let task = running_task("worker-1");
    let uri = format!("/api/tasks/{}/succeed", task.id());

    let reply = send(repo_returning(task), TestRequest::put().uri(&uri)).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "SUCCEEDED");
    assert!(reply.body["result"].is_null());
}

#[actix_web::test]
async fn a_sane_request_id_is_echoed_and_a_missing_one_is_minted() {
    let given = send(
        MockTaskRepository::new(),
        TestRequest::get().uri("/healthz").insert_header(("x-request-id", "req-42")),
    )
    .await;
    let minted = send(MockTaskRepository::new(), TestRequest::get().uri("/healthz")).await;
    let replaced = send(
        MockTaskRepository::new(),
        TestRequest::get().uri("/healthz").insert_header(("x-request-id", "a b")),
    )
    .await;

    assert_eq!(given.headers.get("x-request-id").unwrap(), "req-42");
    let minted = minted.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&minted).is_ok(), "{minted}");
    assert_ne!(replaced.headers.get("x-request-id").unwrap(), "a b");
}

#[actix_web::test]
async fn no_client_input_produces_a_server_error() {
    let id = task_id();
    let paths = [
        ("POST", "/api/tasks".to_owned()),
        ("POST", "/api/tasks/claim".to_owned()),
        ("PUT", format!("/api/tasks/{id}/start")),
        ("PUT", format!("/api/tasks/{id}/heartbeat")),
        ("GET", format!("/api/tasks/{id}/events")),
        ("GET", "/api/stats/rejections".to_owned()),
        ("PUT", format!("/api/tasks/{id}/succeed")),
        ("PUT", format!("/api/tasks/{id}/fail")),
        ("PUT", format!("/api/tasks/{id}/cancel")),
        ("PUT", format!("/api/tasks/{id}/rerun")),
        ("PUT", "/api/tasks/%00/start".to_owned()),
        ("GET", "/api/tasks?limit=-1&status=%FF".to_owned()),
        ("GET", "/api/tasks?cursor=%20".to_owned()),
    ];
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: [&[u8]; 14] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"123",
        b"\"x\"",
        br#"{"name": null, "workerId": 5, "errorMessage": []}"#,
        br#"{"name": "\u0000", "workerId": "\u0000", "errorMessage": "x"}"#,
        br#"{"name": "x", "priority": 99999999999, "runAt": "yesterday"}"#,
        br#"{"name": "x", "payload": {"a\u0000": "\u0000"}, "result": "\u0000"}"#,
        br#"{"workerId": "w", "limit": 1e99, "waitMs": -5, "leaseToken": "x", "queues": "q"}"#,
        br#"{"workerId": "w", "limit": 1, "waitMs": 0, "leaseSeconds": 4294967301}"#,
        b"\xff\xfe\xfd",
        nested.as_bytes(),
    ];

    for (method, path) in &paths {
        for body in bodies {
            let mut repo = MockTaskRepository::new();
            repo.expect_get().returning(|id| Err(RepoError::NotFound(id)));
            repo.expect_insert().returning(|_, _| Ok(()));
            repo.expect_list().returning(|_, _, _| Ok(vec![]));
            repo.expect_claim().returning(|_| Ok(vec![]));
            repo.expect_events().returning(|_| Ok(vec![]));
            repo.expect_rejection_counts().returning(|| Ok(vec![]));
            let request = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(path)
                .insert_header((CONTENT_TYPE, "application/json"))
                .set_payload(body.to_vec());

            let reply = send(repo, request).await;

            assert!(
                reply.status.is_client_error() || reply.status.is_success(),
                "{method} {path} with {:?} gave {}: {}",
                String::from_utf8_lossy(body),
                reply.status,
                reply.body
            );
        }
    }
}

// --- Claims, leases and fencing -----------------------------------------------------------

fn post_claim(body: Value) -> TestRequest {
    TestRequest::post().uri("/api/tasks/claim").set_json(body)
}

/// A running task whose attempt 1 (token [`TOKEN`]) ended as `how` said.
fn ended_task(how: &str) -> Task {
    let mut task = running_task("worker-1");
    let holder = Reporter::lease(None, token());
    let backoff = FixedBackoff(TimeDelta::seconds(10));
    match how {
        "expired" => task.expire_lease(now() + TimeDelta::seconds(61), &backoff).unwrap(),
        "cancelled" => task.cancel(now()).unwrap(),
        "succeeded" => {
            task.succeed(&holder, Some(json!({"n": 1})), now()).unwrap();
        }
        "released" => {
            task.release(&holder, now()).unwrap();
        }
        other => panic!("no such ending: {other}"),
    }
    task
}

#[actix_web::test]
async fn a_claim_answers_the_claimed_tasks_with_their_lease_tokens() {
    let task = running_task("worker-1");
    let mut repo = MockTaskRepository::new();
    repo.expect_claim()
        .withf(|r| {
            r.worker.as_str() == "worker-1"
                && r.limit == 3
                && r.lease.secs() == 30
                && r.queues == Some(vec![QueueName::parse("emails").unwrap()])
        })
        .times(1)
        .returning(move |_| Ok(vec![task.clone()]));

    let reply = send(
        repo,
        post_claim(json!({
            "workerId": "worker-1", "limit": 3, "queues": ["emails", "emails"], "leaseSeconds": 30
        })),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["leaseToken"], TOKEN);
    assert_eq!(items[0]["attempt"], 1);
    assert_eq!(items[0]["status"], "RUNNING");
    assert!(items[0]["leaseExpiresAt"].is_string());
}

#[actix_web::test]
async fn a_claim_without_options_takes_one_task_from_every_queue_with_the_default_lease() {
    let mut repo = MockTaskRepository::new();
    repo.expect_claim()
        .withf(|r| r.limit == 1 && r.queues.is_none() && r.lease.secs() == 300)
        .times(1)
        .returning(|_| Ok(vec![]));

    let reply = send(repo, post_claim(json!({ "workerId": "worker-1" }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({ "items": [] }));
}

#[actix_web::test]
async fn a_long_poll_on_nothing_waits_once_and_looks_once_more_at_its_deadline() {
    let mut repo = MockTaskRepository::new();
    repo.expect_claim().times(2).returning(|_| Ok(vec![]));
    let hub = Arc::new(WakeHub::new());
    let http = HttpConfig::default();
    let service = service(repo, Arc::new(SystemClock));

    let request = post_claim(json!({ "workerId": "w", "waitMs": 300 }));
    let reply = guarded("the claim's answer", call(service, hub.clone(), &http, request)).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"], json!([]));
    assert_eq!(hub.waiting(), Waiting { now: 0, begun: 1 });
}

/// A long-polling claim over `repo` and a hub of its own, on which `then` acts once the claim
/// waits; the claim's reply and what the hub counted.
async fn long_poll(repo: MockTaskRepository, then: fn(&WakeHub)) -> (Reply, Waiting) {
    let hub = Arc::new(WakeHub::new());
    let service = service(repo, Arc::new(SystemClock));
    let request = post_claim(json!({ "workerId": "w", "waitMs": LONG_POLL_MS }));
    let http = HttpConfig::default();

    let (reply, ()) = guarded("the claim's answer", async {
        tokio::join!(call(service, hub.clone(), &http, request), async {
            hub.wait_for_waiters(1).await;
            then(&hub);
        })
    })
    .await;

    (reply, hub.waiting())
}

#[actix_web::test]
async fn a_woken_long_poll_claims_again_at_once() {
    let task = running_task("w");
    let mut repo = MockTaskRepository::new();
    let mut sequence = mockall::Sequence::new();
    repo.expect_claim().times(1).in_sequence(&mut sequence).returning(|_| Ok(vec![]));
    repo.expect_claim()
        .times(1)
        .in_sequence(&mut sequence)
        .returning(move |_| Ok(vec![task.clone()]));

    let (reply, waiting) = long_poll(repo, WakeHub::wake).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(waiting, Waiting { now: 0, begun: 1 });
}

#[actix_web::test]
async fn a_long_poll_returns_empty_at_once_when_the_server_shuts_down() {
    let mut repo = MockTaskRepository::new();
    // One look, no second one at the deadline.
    repo.expect_claim().times(1).returning(|_| Ok(vec![]));

    let (reply, _) = long_poll(repo, WakeHub::close).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"], json!([]));
}

#[actix_web::test]
async fn start_and_heartbeat_show_the_lease_token_but_get_and_list_never_do() {
    let task = running_task("worker-1");
    let id = task.id();
    let mut listed = MockTaskRepository::new();
    let page = vec![task.clone()];
    listed.expect_list().returning(move |_, _, _| Ok(page.clone()));

    let heartbeat = send(
        repo_returning(task.clone()),
        put_json(
            &format!("/api/tasks/{id}/heartbeat"),
            json!({ "workerId": "worker-1", "leaseToken": TOKEN, "leaseSeconds": 120 }),
        ),
    )
    .await;
    let get = send(repo_returning(task), TestRequest::get().uri(&format!("/api/tasks/{id}"))).await;
    let list = send(listed, TestRequest::get().uri("/api/tasks")).await;
    let started = send(
        repo_returning(pending_task(None)),
        put_json(&format!("/api/tasks/{id}/start"), json!({ "workerId": "w", "leaseSeconds": 5 })),
    )
    .await;

    assert_eq!(heartbeat.status, StatusCode::OK, "{}", heartbeat.body);
    assert_eq!(heartbeat.body["leaseToken"], TOKEN);
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let minted = started.body["leaseToken"].as_str().unwrap();
    assert!(LeaseToken::parse(minted).is_ok(), "{minted}");
    let expires = DateTime::parse_from_rfc3339(started.body["leaseExpiresAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let lease = expires
        - DateTime::parse_from_rfc3339(started.body["updatedAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
    assert_eq!(lease, TimeDelta::seconds(5));
    assert_eq!(get.status, StatusCode::OK);
    assert!(get.body.get("leaseToken").is_none(), "{}", get.body);
    assert!(get.body["leaseExpiresAt"].is_string());
    assert!(list.body["items"][0].get("leaseToken").is_none(), "{}", list.body);
    assert!(!get.body.to_string().contains(TOKEN));
    assert!(!list.body.to_string().contains(TOKEN));
}

#[actix_web::test]
async fn a_task_is_created_in_the_queue_it_names() {
    let mut repo = MockTaskRepository::new();
    repo.expect_insert()
        .withf(|t, _| t.queue().as_str() == "emails")
        .times(1)
        .returning(|_, _| Ok(()));

    let reply = send(repo, post_tasks(r#"{"name": "x", "queue": "emails"}"#)).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["queue"], "emails");
}

#[actix_web::test]
async fn a_listing_filters_by_queue() {
    let mut repo = MockTaskRepository::new();
    repo.expect_list()
        .withf(|f, _, _| f.queue == Some(QueueName::parse("emails").unwrap()))
        .times(1)
        .returning(|_, _, _| Ok(vec![]));

    let reply = send(repo, TestRequest::get().uri("/api/tasks?queue=emails")).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[actix_web::test]
async fn events_come_back_oldest_first_in_the_documented_shape() {
    let task = running_task("worker-1");
    let id = task.id();
    let created = TaskEvent::transition(None, &pending_task(None), Actor::Client);
    let refused = TaskEvent::rejection(
        &task,
        Some(WorkerId::parse("late").unwrap()),
        StaleCall::Succeed,
        &taskpilot_domain::StaleLease::AttemptSuperseded { task: id, current: 1 },
        now(),
    );
    let events = vec![created, refused];
    let mut repo = MockTaskRepository::new();
    repo.expect_events().times(1).returning(move |_| Ok(events.clone()));

    let reply = send(repo, TestRequest::get().uri(&format!("/api/tasks/{id}/events"))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["kind"], "CREATED");
    assert_eq!(items[0]["from"], Value::Null);
    assert_eq!(items[0]["to"], "PENDING");
    assert_eq!(items[0]["actor"], "CLIENT");
    assert_eq!(items[0]["attempt"], 0);
    assert_eq!(items[0]["rejectedCode"], Value::Null);
    assert_eq!(items[1]["from"], "RUNNING");
    assert_eq!(items[1]["to"], "RUNNING");
    assert_eq!(items[1]["workerId"], "late");
    assert_eq!(items[1]["actor"], "WORKER");
    assert_eq!(items[1]["rejectedCode"], "ATTEMPT_SUPERSEDED");
    assert_eq!(items[1]["rejectedCall"], "SUCCEED");
    assert_eq!(items[1]["kind"], "REFUSED_CALL");
    assert!(items[1]["error"].is_string());
    let keys: Vec<&str> = items[1].as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "kind",
        "attempt",
        "from",
        "to",
        "workerId",
        "error",
        "actor",
        "rejectedCode",
        "rejectedCall",
        "at",
        "tokenName",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
}

#[actix_web::test]
async fn the_events_of_an_unknown_task_are_a_404() {
    let id = task_id();
    let mut repo = MockTaskRepository::new();
    repo.expect_events().returning(|_| Ok(vec![]));
    repo.expect_get().returning(|id| Err(RepoError::NotFound(id)));

    let reply = send(repo, TestRequest::get().uri(&format!("/api/tasks/{id}/events"))).await;

    reply.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
}

#[actix_web::test]
async fn rejection_stats_count_stale_successes_apart() {
    let mut repo = MockTaskRepository::new();
    repo.expect_rejection_counts().times(1).returning(|| {
        Ok(vec![
            RejectionCount { code: "LEASE_EXPIRED".into(), call: StaleCall::Succeed, count: 3 },
            RejectionCount {
                code: "ATTEMPT_SUPERSEDED".into(),
                call: StaleCall::Succeed,
                count: 2,
            },
            RejectionCount { code: "TASK_CANCELLED".into(), call: StaleCall::Heartbeat, count: 7 },
        ])
    });

    let reply = send(repo, TestRequest::get().uri("/api/stats/rejections")).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["staleSuccesses"], 5);
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        reply.body["items"][2],
        json!({ "code": "TASK_CANCELLED", "call": "HEARTBEAT", "count": 7 })
    );
}

#[actix_web::test]
async fn no_stats_yet_are_zero_stale_successes() {
    let mut repo = MockTaskRepository::new();
    repo.expect_rejection_counts().returning(|| Ok(vec![]));

    let reply = send(repo, TestRequest::get().uri("/api/stats/rejections")).await;

    assert_eq!(reply.body, json!({ "items": [], "staleSuccesses": 0 }));
}

#[actix_web::test]
async fn a_replayed_report_answers_200_with_the_stored_task_and_writes_nothing() {
    let succeeded = ended_task("succeeded");
    let released = ended_task("released");
    let cases = [
        (
            "a replayed success",
            succeeded.clone(),
            "succeed",
            json!({ "workerId": "worker-1", "leaseToken": TOKEN, "result": {"n": 2} }),
            // The stored result, not the replay's.
            [("status", json!("SUCCEEDED")), ("result", json!({"n": 1}))],
        ),
        (
            "a replayed release",
            released.clone(),
            "release",
            json!({ "leaseToken": TOKEN }),
            [
                ("status", json!("PENDING")),
                ("updatedAt", json!(taskpilot_http::dto::format_time(released.updated_at()))),
            ],
        ),
    ];
    for (what, task, action, body, stored) in cases {
        let id = task.id();
        let mut repo = MockTaskRepository::new();
        // A replay's token no longer holds the task: the one-statement success misses.
        repo.expect_succeed_live().returning(|_, _| Ok(Vec::new()));
        repo.expect_get().returning(move |_| Ok(task.clone()));
        repo.expect_update().never();
        repo.expect_record_rejection().never();

        let reply = send(repo, put_json(&format!("/api/tasks/{id}/{action}"), body)).await;

        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
        for (name, value) in stored {
            assert_eq!(reply.body[name], value, "{what}: {name} of {}", reply.body);
        }
    }
}

#[actix_web::test]
async fn a_fail_schedules_a_retry_unless_it_says_retryable_false() {
    let cases = [
        (
            json!({"errorMessage": "bad input", "leaseToken": TOKEN, "retryable": false}),
            ("FAILED", "NON_RETRYABLE"),
            Some("bad input"),
        ),
        (json!({"errorMessage": "flaky"}), ("PENDING", "RETRY_SCHEDULED"), None),
    ];
    for (body, (status, retry_state), last_error) in cases {
        let task = running_task("w1");
        let uri = format!("/api/tasks/{}/fail", task.id());

        let reply = send(repo_returning(task), put_json(&uri, body.clone())).await;

        assert_eq!(reply.status, StatusCode::OK, "{body}: {}", reply.body);
        assert_eq!(reply.body["status"], status, "{body}");
        assert_eq!(reply.body["retryState"], retry_state, "{body}");
        if let Some(last_error) = last_error {
            assert_eq!(reply.body["lastError"], last_error, "{body}");
        }
    }
}

#[actix_web::test]
async fn a_success_reported_by_worker_id_alone_is_accepted_and_recorded() {
    let task = running_task("worker-1");
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    let stored = task.clone();
    repo.expect_get().returning(move |_| Ok(stored.clone()));
    repo.expect_update()
        .withf(|t, _, e| t.status() == TaskStatus::Succeeded && e.is_some())
        .times(1)
        .returning(|_, _, _| Ok(()));

    let reply = send(
        repo,
        put_json(&format!("/api/tasks/{id}/succeed"), json!({ "workerId": "worker-1" })),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["attempt"], 1);
    assert!(reply.body.get("leaseToken").is_none());
}

// --- The batch endpoints ----------------------------------------------------------------

#[actix_web::test]
async fn a_batch_create_answers_201_with_every_task_in_order() {
    let mut repo = MockTaskRepository::new();
    repo.expect_insert_many()
        .withf(|tasks, events| tasks.len() == 3 && events.len() == 3)
        .times(1)
        .returning(|_, _| Ok(()));
    let tasks: Vec<Value> = (0..3).map(|i| json!({"name": format!("job-{i}")})).collect();

    let reply = send(repo, post_json("/api/tasks/batch", json!({ "tasks": tasks }))).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let names: Vec<&str> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job-0", "job-1", "job-2"]);
    assert_eq!(reply.body["items"][0]["status"], "PENDING");
}

#[actix_web::test]
async fn batch_bodies_have_their_own_larger_limit() {
    // Over the 1 KiB limit of every other endpoint, under the batch limit.
    let tasks: Vec<Value> = (0..100).map(|i| json!({"name": format!("job-{i}")})).collect();
    let body = json!({ "tasks": tasks });
    assert!(body.to_string().len() > BODY_LIMIT);
    let mut repo = MockTaskRepository::new();
    repo.expect_insert_many().times(1).returning(|_, _| Ok(()));
    let http = HttpConfig {
        max_body_bytes: BODY_LIMIT,
        max_batch_body_bytes: 4 * BODY_LIMIT,
        ..HttpConfig::default()
    };

    let send = |repo: MockTaskRepository, request: TestRequest| {
        call(service(repo, Arc::new(SystemClock)), Arc::new(WakeHub::new()), &http, request)
    };

    let accepted = send(repo, post_json("/api/tasks/batch", body.clone())).await;
    let single = send(
        untouched_repo(),
        post_json("/api/tasks", json!({"name": "x", "payload": "p".repeat(2 * BODY_LIMIT)})),
    )
    .await;
    let tasks: Vec<Value> = (0..300).map(|i| json!({"name": format!("job-{i}")})).collect();
    let refused =
        send(untouched_repo(), post_json("/api/tasks/batch", json!({ "tasks": tasks }))).await;

    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    single.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    refused.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert_eq!(refused.body["limitBytes"], 4 * BODY_LIMIT);
}

/// A repository holding `tasks` for batch reads; batch writes succeed and lose nothing. Its
/// one-statement success never matches, so every item is judged on the task as read.
fn repo_holding(tasks: Vec<Task>) -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
    repo.expect_succeed_live().returning(|_, _| Ok(Vec::new()));
    repo.expect_get_many().returning(move |ids| {
        Ok(tasks.iter().filter(|t| ids.contains(&t.id())).cloned().collect())
    });
    repo.expect_write_many().returning(|_, _| Ok(Vec::new()));
    repo
}

#[actix_web::test]
async fn a_batch_completion_answers_each_item_in_order_with_its_own_status() {
    let ok = running_task("w1");
    let retry = running_task("w1");
    let permanent = running_task("w1");
    let stale = running_task("w1");
    let unknown = task_id();
    let items = json!([
        {"id": ok.id().to_string(), "leaseToken": TOKEN, "workerId": "w1", "outcome": "succeeded", "result": {"n": 1}},
        {"id": retry.id().to_string(), "leaseToken": TOKEN, "outcome": "failed", "errorMessage": "flaky"},
        {"id": permanent.id().to_string(), "leaseToken": TOKEN, "outcome": "failed", "errorMessage": "bad", "retryable": false},
        {"id": stale.id().to_string(), "leaseToken": OTHER_TOKEN, "outcome": "succeeded"},
        {"id": unknown.to_string(), "leaseToken": TOKEN, "outcome": "succeeded"},
        {"id": ok.id().to_string(), "leaseToken": TOKEN, "outcome": "failed"},
    ]);
    let repo = repo_holding(vec![ok.clone(), retry.clone(), permanent.clone(), stale.clone()]);

    let reply = send(repo, post_json("/api/tasks/complete", json!({ "items": items }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answers = reply.body["items"].as_array().unwrap();
    assert_eq!(answers.len(), 6);
    let statuses: Vec<u64> = answers.iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200, 409, 404, 400]);
    assert_eq!(answers[0]["id"], ok.id().to_string());
    assert_eq!(answers[0]["task"]["status"], "SUCCEEDED");
    assert_eq!(answers[0]["task"]["result"], json!({"n": 1}));
    assert_eq!(answers[1]["task"]["retryState"], "RETRY_SCHEDULED");
    assert_eq!(answers[2]["task"]["status"], "FAILED");
    assert_eq!(answers[2]["task"]["retryState"], "NON_RETRYABLE");
    assert_eq!(answers[3]["error"]["code"], "ATTEMPT_SUPERSEDED");
    assert_eq!(answers[3]["error"]["taskId"], stale.id().to_string());
    assert_eq!(answers[4]["error"]["code"], "TASK_NOT_FOUND");
    assert_eq!(answers[5]["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(answers[5]["error"]["index"], 5);
    assert!(answers[5]["error"]["detail"].as_str().unwrap().starts_with("items[5].errorMessage"));
    for answer in &answers[..3] {
        assert!(answer.get("error").is_none(), "{answer}");
        assert!(answer["task"].get("leaseToken").is_none(), "{answer}");
    }
    assert!(answers[3].get("task").is_none());
}

#[actix_web::test]
async fn invalid_items_are_answered_alone_and_the_rest_still_complete() {
    let ok = running_task("w1");
    let id = ok.id().to_string();
    for (item, detail) in [
        (
            json!({"id": id, "leaseToken": "not-a-token", "outcome": "succeeded"}),
            "items[0].leaseToken",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "workerId": " ", "outcome": "succeeded"}),
            "items[0].workerId",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "succeeded", "errorMessage": "x"}),
            "items[0].errorMessage",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "succeeded", "retryable": false}),
            "items[0].errorMessage and retryable",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "failed", "errorMessage": "x", "result": 1}),
            "items[0].result",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "succeeded", "result": "\u{0}"}),
            "items[0].result",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "released", "errorMessage": "x"}),
            "items[0].result, errorMessage and retryable are not for outcome released",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "released", "result": 1}),
            "items[0].result, errorMessage",
        ),
        (
            json!({"id": id, "leaseToken": TOKEN, "outcome": "released", "retryable": true}),
            "items[0].result, errorMessage",
        ),
    ] {
        let items = json!([item, {"id": id, "leaseToken": TOKEN, "outcome": "succeeded"}]);

        let reply = send(
            repo_holding(vec![ok.clone()]),
            post_json("/api/tasks/complete", json!({ "items": items })),
        )
        .await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let answers = reply.body["items"].as_array().unwrap();
        assert_eq!(answers[0]["status"], 400, "{}", reply.body);
        assert_eq!(answers[0]["error"]["code"], "VALIDATION_FAILED");
        let got = answers[0]["error"]["detail"].as_str().unwrap();
        assert!(got.starts_with(detail), "{got}");
        assert_eq!(answers[1]["status"], 200, "{}", reply.body);
    }
}

#[actix_web::test]
async fn a_batch_completion_with_nothing_valid_touches_no_storage() {
    let items = json!([{"id": task_id().to_string(), "leaseToken": "x", "outcome": "succeeded"}]);

    let reply =
        send(untouched_repo(), post_json("/api/tasks/complete", json!({ "items": items }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"][0]["status"], 400);
}

#[actix_web::test]
async fn an_unreachable_database_fails_a_batch_completion_as_a_whole_with_503() {
    let mut repo = MockTaskRepository::new();
    repo.expect_succeed_live()
        .returning(|_, _| Err(RepoError::Unavailable(anyhow::anyhow!("connection refused"))));
    repo.expect_get_many()
        .returning(|_| Err(RepoError::Unavailable(anyhow::anyhow!("connection refused"))));
    let items = json!([{"id": task_id().to_string(), "leaseToken": TOKEN, "outcome": "succeeded"}]);

    let reply = send(repo, post_json("/api/tasks/complete", json!({ "items": items }))).await;

    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
    assert!(reply.headers.get("retry-after").is_some());
}

#[actix_web::test]
async fn the_batch_answers_read_back_as_the_shared_api_types() {
    let ok = running_task("w1");
    let items = json!([
        {"id": ok.id().to_string(), "leaseToken": TOKEN, "outcome": "succeeded"},
        {"id": task_id().to_string(), "leaseToken": TOKEN, "outcome": "succeeded"},
    ]);

    let reply = send(
        repo_holding(vec![ok.clone()]),
        post_json("/api/tasks/complete", json!({ "items": items })),
    )
    .await;
    let answer: taskpilot_api::CompleteTasksResponse = serde_json::from_value(reply.body).unwrap();

    assert_eq!(answer.items[0].task.as_ref().unwrap().status, taskpilot_api::TaskStatus::Succeeded);
    let error = answer.items[1].error.as_ref().unwrap();
    assert_eq!(error.problem_code(), Some(taskpilot_api::ProblemCode::TaskNotFound));
    assert_eq!(error.status, 404);
}

// --- Release -------------------------------------------------------------------------------

fn put_release(id: TaskId, body: Value) -> TestRequest {
    put_json(&format!("/api/tasks/{id}/release"), body)
}

#[actix_web::test]
async fn a_release_answers_200_with_the_task_pending_runnable_and_no_failure_counted() {
    let task = running_task("worker-1");
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    repo.expect_get().returning(move |_| Ok(task.clone()));
    repo.expect_update()
        .withf(|t, v, e| {
            *v == 2
                && t.status() == TaskStatus::Pending
                && t.attempt_count() == 0
                && e.is_some_and(|e| e.from == Some(TaskStatus::Running) && e.error.is_none())
        })
        .times(1)
        .returning(|_, _, _| Ok(()));
    repo.expect_record_rejection().never();

    let reply =
        send(repo, put_release(id, json!({ "workerId": "worker-1", "leaseToken": TOKEN }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "PENDING");
    assert_eq!(reply.body["retryState"], "NONE");
    assert_eq!(
        (reply.body["attempt"].as_u64(), reply.body["attemptCount"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(reply.body["nextRunAt"], Value::Null, "runnable at once");
    assert_eq!(reply.body["lastError"], Value::Null);
    assert_eq!(reply.body["workerId"], Value::Null);
    assert!(reply.body.get("leaseToken").is_none(), "{}", reply.body);
}

#[actix_web::test]
async fn a_batch_completion_releases_items_with_outcome_released() {
    let first = running_task("w1");
    let retry = {
        let mut task = running_task("w1");
        let backoff = FixedBackoff(TimeDelta::zero());
        task.fail_and_schedule_retry(&Reporter::lease(None, token()), "flaky", now(), &backoff)
            .unwrap();
        task.start(
            &WorkerId::parse("w1").unwrap(),
            LeaseToken::parse(OTHER_TOKEN).unwrap(),
            lease(),
            now(),
        )
        .unwrap();
        task
    };
    let items = json!([
        {"id": first.id().to_string(), "leaseToken": TOKEN, "workerId": "w1", "outcome": "released"},
        {"id": retry.id().to_string(), "leaseToken": OTHER_TOKEN, "outcome": "released"},
        {"id": first.id().to_string(), "leaseToken": TOKEN, "outcome": "succeeded"},
    ]);
    let repo = repo_holding(vec![first.clone(), retry.clone()]);

    let reply = send(repo, post_json("/api/tasks/complete", json!({ "items": items }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let answers = reply.body["items"].as_array().unwrap();
    let statuses: Vec<u64> = answers.iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 409]);
    assert_eq!(answers[0]["task"]["status"], "PENDING");
    assert_eq!(answers[0]["task"]["attemptCount"], 0);
    assert_eq!(answers[0]["task"]["nextRunAt"], Value::Null);
    assert_eq!(answers[1]["task"]["status"], "PENDING");
    assert_eq!(answers[1]["task"]["retryState"], "RETRY_SCHEDULED");
    assert_eq!(answers[1]["task"]["attemptCount"], 1);
    assert!(answers[1]["task"]["nextRunAt"].is_string(), "a scheduled retry, due now");
    assert_eq!(answers[2]["error"]["code"], "OUTCOME_CONFLICT");
    assert_eq!(answers[2]["error"]["recordedOutcome"], "RELEASED");
}
