//! Every error class of the API, in-process over a mocked repository: status, content type,
//! headers and the problem's `code`.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_app::{
    Actor, MockTaskRepository, Rejection, RejectionCount, RepoError, ServiceDefaults, StaleCall,
    SystemClock, TaskEvent, TaskService,
};
use taskpilot_domain::{
    Clock, FixedBackoff, LeaseDuration, LeaseToken, MaxAttempts, NewTask, QueueName, Reporter,
    Task, TaskId, TaskName, TaskStatus, WorkerId,
};
use taskpilot_http::{build_app, HttpConfig, WakeHub};

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
    };
    Task::new(task_id(), spec, now())
}

fn running_task(worker: &str) -> Task {
    let mut task = pending_task(None);
    task.start(&WorkerId::parse(worker).unwrap(), token(), lease(), now()).unwrap();
    task
}

fn service(repo: MockTaskRepository) -> TaskService {
    TaskService::new(
        Arc::new(repo),
        Arc::new(SystemClock),
        Arc::new(FixedBackoff(TimeDelta::seconds(10))),
        ServiceDefaults {
            max_attempts: MaxAttempts::new(25).unwrap(),
            lease: LeaseDuration::from_secs(300).unwrap(),
        },
    )
}

/// A repository holding `task`: reads return it, writes and recorded refusals succeed.
fn repo_returning(task: Task) -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
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

    fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap()
    }
}

async fn send(repo: MockTaskRepository, request: TestRequest) -> Reply {
    send_with_hub(repo, Arc::new(WakeHub::new()), request).await
}

async fn send_with_hub(repo: MockTaskRepository, hub: Arc<WakeHub>, request: TestRequest) -> Reply {
    let http = HttpConfig { max_body_bytes: BODY_LIMIT, ..HttpConfig::default() };
    let app = test::init_service(build_app(service(repo), hub, &http)).await;
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
async fn malformed_json_is_a_400_malformed_request() {
    let reply = send(MockTaskRepository::new(), post_tasks(r#"{"name": "#)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
}

#[actix_web::test]
async fn a_field_of_the_wrong_type_is_a_400_malformed_request() {
    let reply =
        send(MockTaskRepository::new(), post_tasks(r#"{"name": "x", "priority": "high"}"#)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("invalid type"), "{}", reply.detail());
}

#[actix_web::test]
async fn an_unknown_field_is_a_400_malformed_request_that_names_the_field() {
    let reply =
        send(MockTaskRepository::new(), post_tasks(r#"{"name": "x", "colour": "red"}"#)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("colour"), "{}", reply.detail());
}

#[actix_web::test]
async fn a_missing_name_is_a_400_malformed_request_that_names_the_field() {
    let reply = send(MockTaskRepository::new(), post_tasks(r#"{"priority": 1}"#)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("name"), "{}", reply.detail());
}

#[actix_web::test]
async fn an_empty_name_fails_validation() {
    let reply = send(MockTaskRepository::new(), post_tasks(r#"{"name": ""}"#)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[actix_web::test]
async fn a_name_longer_than_200_characters_fails_validation() {
    let body = json!({ "name": "n".repeat(201) }).to_string();

    let reply = send(MockTaskRepository::new(), post_tasks(&body)).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(reply.detail().contains("200"), "{}", reply.detail());
}

#[actix_web::test]
async fn max_attempts_of_0_or_101_fails_validation() {
    for max_attempts in [0, 101, -1] {
        let body = json!({ "name": "x", "maxAttempts": max_attempts }).to_string();

        let reply = send(MockTaskRepository::new(), post_tasks(&body)).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(reply.detail().contains("maxAttempts"), "{}", reply.detail());
    }
}

#[actix_web::test]
async fn a_blank_overlong_or_control_character_worker_id_fails_validation() {
    let uri = format!("/api/tasks/{}/start", task_id());
    for worker in [String::new(), "   ".to_owned(), "w".repeat(129), "bad\nworker".to_owned()] {
        let reply =
            send(MockTaskRepository::new(), put_json(&uri, json!({ "workerId": worker }))).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(reply.detail().contains("workerId"), "{}", reply.detail());
    }
}

#[actix_web::test]
async fn an_invalid_uuid_in_the_path_is_a_400_malformed_request() {
    let reply =
        send(MockTaskRepository::new(), TestRequest::get().uri("/api/tasks/not-a-uuid")).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("not-a-uuid"), "{}", reply.detail());
}

#[actix_web::test]
async fn a_body_over_the_limit_is_a_413_payload_too_large() {
    let body = json!({ "name": "x", "payload": "p".repeat(BODY_LIMIT) }).to_string();

    let reply = send(MockTaskRepository::new(), post_tasks(&body)).await;

    reply.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

#[actix_web::test]
async fn a_body_that_is_not_declared_as_json_is_a_415_unsupported_media_type() {
    let plain = TestRequest::post()
        .uri("/api/tasks")
        .insert_header((CONTENT_TYPE, "text/plain"))
        .set_payload(r#"{"name": "x"}"#);
    let undeclared = TestRequest::post().uri("/api/tasks").set_payload(r#"{"name": "x"}"#);

    for request in [plain, undeclared] {
        let reply = send(MockTaskRepository::new(), request).await;

        reply.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    }
}

#[actix_web::test]
async fn an_unknown_task_is_a_404_task_not_found() {
    let id = task_id();
    let mut repo = MockTaskRepository::new();
    repo.expect_get().returning(|id| Err(RepoError::NotFound(id)));

    let reply = send(repo, TestRequest::get().uri(&format!("/api/tasks/{id}"))).await;

    reply.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    assert_eq!(reply.body["taskId"], id.to_string());
}

#[actix_web::test]
async fn starting_a_running_task_is_a_409_invalid_transition() {
    let task = running_task("worker-1");
    let uri = format!("/api/tasks/{}/start", task.id());

    let reply = send(repo_returning(task), put_json(&uri, json!({ "workerId": "worker-2" }))).await;

    reply.assert_problem(StatusCode::CONFLICT, "INVALID_TRANSITION");
    assert_eq!(reply.body["taskStatus"], "RUNNING");
    assert_eq!(reply.body["action"], "start");
}

#[actix_web::test]
async fn starting_before_next_run_at_is_a_409_not_yet_runnable_with_retry_after() {
    let runnable_at = now() + TimeDelta::seconds(90);
    let task = pending_task(Some(runnable_at));
    let uri = format!("/api/tasks/{}/start", task.id());

    let reply = send(repo_returning(task), put_json(&uri, json!({ "workerId": "worker-1" }))).await;

    reply.assert_problem(StatusCode::CONFLICT, "NOT_YET_RUNNABLE");
    let retry_after: u64 =
        reply.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((89..=90).contains(&retry_after), "Retry-After {retry_after}");
    let runnable_at = taskpilot_http::dto::format_time(runnable_at);
    assert_eq!(reply.body["runnableAt"], runnable_at);
    assert!(reply.detail().contains(&runnable_at), "{}", reply.detail());
}

#[actix_web::test]
async fn a_report_from_another_worker_is_a_409_worker_mismatch() {
    let task = running_task("worker-1");
    let id = task.id();

    let succeed = send(
        repo_returning(task.clone()),
        put_json(&format!("/api/tasks/{id}/succeed"), json!({ "workerId": "worker-2" })),
    )
    .await;
    let fail = send(
        repo_returning(task),
        put_json(
            &format!("/api/tasks/{id}/fail"),
            json!({ "workerId": "worker-2", "errorMessage": "boom" }),
        ),
    )
    .await;

    succeed.assert_problem(StatusCode::CONFLICT, "WORKER_MISMATCH");
    fail.assert_problem(StatusCode::CONFLICT, "WORKER_MISMATCH");
}

#[actix_web::test]
async fn losing_every_race_is_a_409_concurrent_modification() {
    let task = pending_task(None);
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    repo.expect_get().returning(move |_| Ok(task.clone()));
    repo.expect_update().returning(|t, _, _| Err(RepoError::Conflict(t.id())));

    let reply = send(repo, TestRequest::put().uri(&format!("/api/tasks/{id}/cancel"))).await;

    reply.assert_problem(StatusCode::CONFLICT, "CONCURRENT_MODIFICATION");
}

#[actix_web::test]
async fn an_unreachable_database_is_a_503_database_unavailable_with_retry_after() {
    let mut repo = MockTaskRepository::new();
    repo.expect_get()
        .returning(|_| Err(RepoError::Unavailable(anyhow::anyhow!("connection refused"))));

    let reply = send(repo, TestRequest::get().uri(&format!("/api/tasks/{}", task_id()))).await;

    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
    assert!(reply.headers.contains_key("retry-after"));
    assert!(!reply.detail().contains("connection refused"));
}

#[actix_web::test]
async fn an_unexpected_storage_error_is_a_500_with_a_generic_body() {
    let mut repo = MockTaskRepository::new();
    repo.expect_get()
        .returning(|_| Err(RepoError::Unexpected(anyhow::anyhow!("row 42 is broken"))));

    let reply = send(repo, TestRequest::get().uri(&format!("/api/tasks/{}", task_id()))).await;

    reply.assert_problem(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");
    assert!(!reply.body.to_string().contains("row 42"));
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
async fn bad_list_filters_fail_validation() {
    for query in ["status=DONE", "limit=0", "limit=501", "limit=many", "cursor=junk", "name=%0A"] {
        let reply =
            send(MockTaskRepository::new(), TestRequest::get().uri(&format!("/api/tasks?{query}")))
                .await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
}

#[actix_web::test]
async fn an_unknown_query_parameter_is_a_400_malformed_request() {
    let reply =
        send(MockTaskRepository::new(), TestRequest::get().uri("/api/tasks?colour=red")).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("colour"), "{}", reply.detail());
}

#[actix_web::test]
async fn an_unknown_route_is_a_404_route_not_found() {
    let reply = send(MockTaskRepository::new(), TestRequest::get().uri("/api/nothing")).await;

    reply.assert_problem(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND");
}

#[actix_web::test]
async fn a_wrong_method_is_a_405_method_not_allowed_with_allow() {
    let reply = send(MockTaskRepository::new(), TestRequest::delete().uri("/api/tasks")).await;

    reply.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(reply.headers.get("allow").unwrap(), "GET, POST");
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

#[actix_web::test]
async fn succeed_still_checks_a_body_when_one_is_sent() {
    let task = running_task("worker-1");
    let uri = format!("/api/tasks/{}/succeed", task.id());
    let request = TestRequest::put()
        .uri(&uri)
        .insert_header((CONTENT_TYPE, "application/json"))
        .set_payload(r#"{"workerId": "worker-1", "reslut": 1}"#);

    let reply = send(repo_returning(task), request).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(reply.detail().contains("reslut"), "{}", reply.detail());
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
async fn claim_values_out_of_range_fail_validation_without_touching_the_database() {
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
        let reply = send(MockTaskRepository::new(), post_claim(body.clone())).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(!reply.detail().is_empty(), "{body}");
    }
}

#[actix_web::test]
async fn a_claim_limit_error_names_the_bounds() {
    let reply =
        send(MockTaskRepository::new(), post_claim(json!({ "workerId": "w", "limit": 0 }))).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(reply.detail().contains("between 1 and 100"), "{}", reply.detail());
}

#[actix_web::test]
async fn a_long_poll_on_nothing_looks_once_more_at_its_deadline_and_no_more() {
    let mut repo = MockTaskRepository::new();
    repo.expect_claim().times(2).returning(|_| Ok(vec![]));
    let started = Instant::now();

    let reply = send(repo, post_claim(json!({ "workerId": "w", "waitMs": 300 }))).await;

    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"], json!([]));
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
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
    let hub = Arc::new(WakeHub::new());
    let waker = hub.clone();
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        waker.wake();
    });
    let started = Instant::now();

    let reply =
        send_with_hub(repo, hub, post_claim(json!({ "workerId": "w", "waitMs": 20_000 }))).await;

    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"].as_array().unwrap().len(), 1);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[actix_web::test]
async fn a_long_poll_returns_empty_at_once_when_the_server_shuts_down() {
    let mut repo = MockTaskRepository::new();
    repo.expect_claim().times(1).returning(|_| Ok(vec![]));
    let hub = Arc::new(WakeHub::new());
    let closer = hub.clone();
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        closer.close();
    });
    let started = Instant::now();

    let reply =
        send_with_hub(repo, hub, post_claim(json!({ "workerId": "w", "waitMs": 20_000 }))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["items"], json!([]));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[actix_web::test]
async fn get_claim_is_a_405_not_a_task_lookup() {
    let reply = send(MockTaskRepository::new(), TestRequest::get().uri("/api/tasks/claim")).await;

    reply.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(reply.headers.get("allow").unwrap(), "POST");
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
async fn a_succeed_after_the_lease_was_reaped_is_a_409_lease_expired() {
    let task = ended_task("expired");
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    repo.expect_get().returning(move |_| Ok(task.clone()));
    repo.expect_update().times(0);
    repo.expect_record_rejection()
        .withf(|e| {
            e.rejected
                == Some(Rejection { code: "LEASE_EXPIRED".to_owned(), call: StaleCall::Succeed })
        })
        .times(1)
        .returning(|_| Ok(()));

    let reply = send(
        repo,
        put_json(
            &format!("/api/tasks/{id}/succeed"),
            json!({ "workerId": "worker-1", "leaseToken": TOKEN }),
        ),
    )
    .await;

    reply.assert_problem(StatusCode::CONFLICT, "LEASE_EXPIRED");
    assert_eq!(reply.body["attempt"], 1);
    assert_eq!(reply.body["type"], "urn:taskpilot:problem:lease-expired");
}

#[actix_web::test]
async fn a_report_with_an_unknown_token_is_a_409_attempt_superseded() {
    let task = running_task("worker-1");
    let id = task.id();

    let reply = send(
        repo_returning(task),
        put_json(
            &format!("/api/tasks/{id}/fail"),
            json!({ "errorMessage": "boom", "leaseToken": OTHER_TOKEN }),
        ),
    )
    .await;

    reply.assert_problem(StatusCode::CONFLICT, "ATTEMPT_SUPERSEDED");
    assert_eq!(reply.body["taskId"], id.to_string());
    assert_eq!(reply.body["currentAttempt"], 1);
}

#[actix_web::test]
async fn a_heartbeat_after_a_cancel_is_a_409_task_cancelled() {
    let task = ended_task("cancelled");
    let id = task.id();

    let reply = send(
        repo_returning(task),
        put_json(
            &format!("/api/tasks/{id}/heartbeat"),
            json!({ "workerId": "worker-1", "leaseToken": TOKEN }),
        ),
    )
    .await;

    reply.assert_problem(StatusCode::CONFLICT, "TASK_CANCELLED");
    assert_eq!(reply.body["taskId"], id.to_string());
}

#[actix_web::test]
async fn a_replayed_success_is_a_200_with_the_stored_task_and_writes_nothing() {
    let task = ended_task("succeeded");
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    let stored = task.clone();
    repo.expect_get().returning(move |_| Ok(stored.clone()));
    repo.expect_update().times(0);
    repo.expect_record_rejection().times(0);

    let reply = send(
        repo,
        put_json(
            &format!("/api/tasks/{id}/succeed"),
            json!({ "workerId": "worker-1", "leaseToken": TOKEN, "result": {"n": 2} }),
        ),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "SUCCEEDED");
    assert_eq!(reply.body["result"], json!({"n": 1}), "the stored result, not the replay's");
}

#[actix_web::test]
async fn a_different_outcome_for_an_ended_attempt_is_a_409_outcome_conflict() {
    let task = ended_task("succeeded");
    let id = task.id();

    let reply = send(
        repo_returning(task),
        put_json(
            &format!("/api/tasks/{id}/fail"),
            json!({ "errorMessage": "late", "leaseToken": TOKEN }),
        ),
    )
    .await;

    reply.assert_problem(StatusCode::CONFLICT, "OUTCOME_CONFLICT");
    assert_eq!(reply.body["recordedOutcome"], "SUCCEEDED");
}

#[actix_web::test]
async fn a_lease_token_that_is_not_a_token_fails_validation() {
    let id = task_id();
    for (action, body) in [
        ("heartbeat", json!({ "workerId": "w", "leaseToken": "not-a-token" })),
        ("succeed", json!({ "leaseToken": "" })),
        ("fail", json!({ "errorMessage": "x", "leaseToken": "1234" })),
        ("release", json!({ "workerId": "w", "leaseToken": "not-a-token" })),
    ] {
        let reply =
            send(MockTaskRepository::new(), put_json(&format!("/api/tasks/{id}/{action}"), body))
                .await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(reply.detail().contains("leaseToken"), "{}", reply.detail());
    }
}

#[actix_web::test]
async fn a_heartbeat_needs_a_worker_and_a_token() {
    let uri = format!("/api/tasks/{}/heartbeat", task_id());

    let no_token =
        send(MockTaskRepository::new(), put_json(&uri, json!({ "workerId": "w" }))).await;
    let bad_lease = send(
        MockTaskRepository::new(),
        put_json(&uri, json!({ "workerId": "w", "leaseToken": TOKEN, "leaseSeconds": 1 })),
    )
    .await;

    no_token.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(no_token.detail().contains("leaseToken"), "{}", no_token.detail());
    bad_lease.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(bad_lease.detail().contains("leaseSeconds"), "{}", bad_lease.detail());
}

#[actix_web::test]
async fn a_start_with_a_lease_out_of_range_fails_validation() {
    let uri = format!("/api/tasks/{}/start", task_id());

    let reply = send(
        MockTaskRepository::new(),
        put_json(&uri, json!({ "workerId": "w", "leaseSeconds": 86_401 })),
    )
    .await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[actix_web::test]
async fn a_nul_character_in_a_payload_or_result_fails_validation() {
    let task = running_task("w");
    let uri = format!("/api/tasks/{}/succeed", task.id());

    let payload = send(
        MockTaskRepository::new(),
        post_tasks(r#"{"name": "x", "payload": {"note": "a\u0000b"}}"#),
    )
    .await;
    let key =
        send(MockTaskRepository::new(), post_tasks(r#"{"name": "x", "payload": {"\u0000": 1}}"#))
            .await;
    let result =
        send(repo_returning(task), put_json(&uri, json!({ "result": ["ok", "\u{0}"] }))).await;

    for reply in [&payload, &key] {
        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(reply.detail().contains("payload"), "{}", reply.detail());
    }
    result.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(result.detail().contains("result"), "{}", result.detail());
}

#[actix_web::test]
async fn a_bad_queue_name_fails_validation_on_create_and_list() {
    let create =
        send(MockTaskRepository::new(), post_tasks(r#"{"name": "x", "queue": "Emails"}"#)).await;
    let list =
        send(MockTaskRepository::new(), TestRequest::get().uri("/api/tasks?queue=a%20b")).await;

    create.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(create.detail().contains("queue"), "{}", create.detail());
    list.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
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
    assert!(items[1]["error"].is_string());
    let keys: Vec<&str> = items[1].as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "attempt",
        "from",
        "to",
        "workerId",
        "error",
        "actor",
        "rejectedCode",
        "rejectedCall",
        "at",
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
async fn a_reporter_without_token_keeps_the_foundation_behaviour() {
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

// ---- fail with retryable: false, and the batch endpoints ----

fn post_json(uri: &str, body: Value) -> TestRequest {
    TestRequest::post().uri(uri).set_json(body)
}

async fn send_with_http(repo: MockTaskRepository, http: HttpConfig, request: TestRequest) -> Reply {
    let app = test::init_service(build_app(service(repo), Arc::new(WakeHub::new()), &http)).await;
    let response = test::call_service(&app, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    Reply { status, headers, body }
}

/// A repository that must not be touched.
fn untouched_repo() -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
    repo.expect_insert_many().never();
    repo.expect_get_many().never();
    repo.expect_write_many().never();
    repo
}

#[actix_web::test]
async fn a_fail_with_retryable_false_fails_the_task_for_good_with_attempts_left() {
    let task = running_task("w1");
    let uri = format!("/api/tasks/{}/fail", task.id());

    let reply = send(
        repo_returning(task),
        put_json(
            &uri,
            json!({"errorMessage": "bad input", "leaseToken": TOKEN, "retryable": false}),
        ),
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "FAILED");
    assert_eq!(reply.body["retryState"], "NON_RETRYABLE");
    assert_eq!(reply.body["lastError"], "bad input");
}

#[actix_web::test]
async fn a_fail_without_retryable_schedules_a_retry_as_before() {
    let task = running_task("w1");
    let uri = format!("/api/tasks/{}/fail", task.id());

    let reply = send(repo_returning(task), put_json(&uri, json!({"errorMessage": "flaky"}))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["status"], "PENDING");
    assert_eq!(reply.body["retryState"], "RETRY_SCHEDULED");
}

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
async fn a_batch_create_with_one_bad_task_creates_none_and_names_its_index() {
    let mut tasks: Vec<Value> = (0..5).map(|i| json!({"name": format!("job-{i}")})).collect();
    tasks[3] = json!({"name": ""});

    let reply =
        send(untouched_repo(), post_json("/api/tasks/batch", json!({ "tasks": tasks }))).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(reply.detail().starts_with("tasks[3].name "), "{}", reply.detail());
    assert_eq!(reply.body["index"], 3);
}

#[actix_web::test]
async fn a_batch_create_checks_every_field_of_every_task() {
    for (task, field) in [
        (json!({"name": "x", "maxAttempts": 0}), "tasks[1].maxAttempts"),
        (json!({"name": "x", "queue": "Bad Queue"}), "tasks[1].queue"),
        (json!({"name": "x", "payload": "nul \u{0}"}), "tasks[1].payload"),
    ] {
        let tasks = json!([{"name": "ok"}, task]);

        let reply =
            send(untouched_repo(), post_json("/api/tasks/batch", json!({ "tasks": tasks }))).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(reply.detail().starts_with(field), "{}", reply.detail());
        assert_eq!(reply.body["index"], 1);
    }
}

#[actix_web::test]
async fn an_empty_or_oversized_batch_fails_validation_without_touching_the_database() {
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"name": "x"})).collect();
    for (uri, body, got) in [
        ("/api/tasks/batch", json!({"tasks": []}), "got 0"),
        ("/api/tasks/batch", json!({ "tasks": too_many }), "got 1001"),
        ("/api/tasks/complete", json!({"items": []}), "got 0"),
    ] {
        let reply = send(untouched_repo(), post_json(uri, body)).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(
            reply.detail().contains("1 to 1000") && reply.detail().contains(got),
            "{}",
            reply.detail()
        );
    }
}

#[actix_web::test]
async fn a_batch_of_the_wrong_shape_is_a_400_malformed_request() {
    for (uri, body) in [
        ("/api/tasks/batch", json!({"task": []})),
        ("/api/tasks/batch", json!([{"name": "x"}])),
        ("/api/tasks/batch", json!({"tasks": [{"name": "x", "colour": "red"}]})),
        (
            "/api/tasks/complete",
            json!({"items": [{"id": "nope", "leaseToken": TOKEN, "outcome": "succeeded"}]}),
        ),
        (
            "/api/tasks/complete",
            json!({"items": [{"id": task_id().to_string(), "leaseToken": TOKEN, "outcome": "done"}]}),
        ),
        (
            "/api/tasks/complete",
            json!({"items": [{"id": task_id().to_string(), "outcome": "succeeded"}]}),
        ),
    ] {
        let reply = send(untouched_repo(), post_json(uri, body)).await;

        reply.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    }
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

    let accepted = send_with_http(repo, http, post_json("/api/tasks/batch", body.clone())).await;
    let single = send_with_http(
        untouched_repo(),
        http,
        post_json("/api/tasks", json!({"name": "x", "payload": "p".repeat(2 * BODY_LIMIT)})),
    )
    .await;
    let tasks: Vec<Value> = (0..300).map(|i| json!({"name": format!("job-{i}")})).collect();
    let refused = send_with_http(
        untouched_repo(),
        http,
        post_json("/api/tasks/batch", json!({ "tasks": tasks })),
    )
    .await;

    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    single.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    refused.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    assert_eq!(refused.body["limitBytes"], 4 * BODY_LIMIT);
}

#[actix_web::test]
async fn batch_endpoints_take_post_only() {
    for uri in ["/api/tasks/batch", "/api/tasks/complete"] {
        let reply = send(untouched_repo(), TestRequest::get().uri(uri)).await;

        reply.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
        assert_eq!(reply.headers.get("allow").unwrap(), "POST");
    }
}

/// A repository holding `tasks` for batch reads; batch writes succeed and lose nothing.
fn repo_holding(tasks: Vec<Task>) -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
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
async fn a_release_with_a_stale_token_gets_the_fencing_code_of_a_succeed_and_is_recorded() {
    let cases = [
        (ended_task("expired"), TOKEN, "LEASE_EXPIRED"),
        (ended_task("cancelled"), TOKEN, "TASK_CANCELLED"),
        (ended_task("succeeded"), TOKEN, "OUTCOME_CONFLICT"),
        (running_task("worker-1"), OTHER_TOKEN, "ATTEMPT_SUPERSEDED"),
    ];
    for (task, token, code) in cases {
        let id = task.id();
        let mut repo = MockTaskRepository::new();
        repo.expect_get().returning(move |_| Ok(task.clone()));
        repo.expect_update().never();
        repo.expect_record_rejection()
            .withf(move |e| {
                e.rejected == Some(Rejection { code: code.to_owned(), call: StaleCall::Release })
            })
            .times(1)
            .returning(|_| Ok(()));

        let reply =
            send(repo, put_release(id, json!({ "workerId": "worker-1", "leaseToken": token })))
                .await;

        reply.assert_problem(StatusCode::CONFLICT, code);
    }
}

#[actix_web::test]
async fn a_release_by_another_worker_is_a_409_worker_mismatch() {
    let task = running_task("worker-1");
    let id = task.id();

    let reply = send(
        repo_returning(task),
        put_release(id, json!({ "workerId": "worker-2", "leaseToken": TOKEN })),
    )
    .await;

    reply.assert_problem(StatusCode::CONFLICT, "WORKER_MISMATCH");
}

#[actix_web::test]
async fn a_replayed_release_is_a_200_and_a_late_outcome_with_its_token_a_409_outcome_conflict() {
    let task = ended_task("released");
    let id = task.id();
    let mut repo = MockTaskRepository::new();
    let stored = task.clone();
    repo.expect_get().returning(move |_| Ok(stored.clone()));
    repo.expect_update().never();
    repo.expect_record_rejection().never();

    let replay = send(repo, put_release(id, json!({ "leaseToken": TOKEN }))).await;
    let late = send(
        repo_returning(task.clone()),
        put_json(&format!("/api/tasks/{id}/succeed"), json!({ "leaseToken": TOKEN })),
    )
    .await;

    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["status"], "PENDING");
    assert_eq!(replay.body["updatedAt"], taskpilot_http::dto::format_time(task.updated_at()));
    late.assert_problem(StatusCode::CONFLICT, "OUTCOME_CONFLICT");
    assert_eq!(late.body["recordedOutcome"], "RELEASED");
}

#[actix_web::test]
async fn a_release_of_a_task_that_is_not_running_is_a_409_attempt_superseded() {
    // The token is required over HTTP, so the foundation's unfenced rule (INVALID_TRANSITION)
    // does not apply: a pending task that never handed the token out says it is not its own.
    let task = pending_task(None);
    let id = task.id();

    let reply = send(repo_returning(task), put_release(id, json!({ "leaseToken": TOKEN }))).await;

    reply.assert_problem(StatusCode::CONFLICT, "ATTEMPT_SUPERSEDED");
    assert_eq!(reply.body["currentAttempt"], 0);
}

#[actix_web::test]
async fn a_release_needs_its_lease_token_and_takes_no_other_fields() {
    let id = task_id();

    let no_token = send(untouched_repo(), put_release(id, json!({ "workerId": "w" }))).await;
    let unknown = send(
        untouched_repo(),
        put_release(id, json!({ "leaseToken": TOKEN, "errorMessage": "stopping" })),
    )
    .await;
    let bad_worker =
        send(untouched_repo(), put_release(id, json!({ "workerId": " ", "leaseToken": TOKEN })))
            .await;
    let wrong_method = send(
        untouched_repo(),
        TestRequest::post().uri(&format!("/api/tasks/{id}/release")).set_json(json!({})),
    )
    .await;

    no_token.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(no_token.detail().contains("leaseToken"), "{}", no_token.detail());
    unknown.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(unknown.detail().contains("errorMessage"), "{}", unknown.detail());
    bad_worker.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    wrong_method.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    assert_eq!(wrong_method.headers.get("allow").unwrap(), "PUT");
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
