//! Every error class of the API, in-process over a mocked repository: status, content type,
//! headers and the problem's `code`.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_app::{MockTaskRepository, RepoError, SystemClock, TaskService};
use taskpilot_domain::{
    Clock, FixedBackoff, MaxAttempts, NewTask, Task, TaskId, TaskName, WorkerId,
};
use taskpilot_http::{build_app, HttpConfig};

const BODY_LIMIT: usize = 1024;

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn task_id() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::now_v7())
}

fn pending_task(run_at: Option<DateTime<Utc>>) -> Task {
    let spec = NewTask {
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
    task.start(&WorkerId::parse(worker).unwrap(), now()).unwrap();
    task
}

fn service(repo: MockTaskRepository) -> TaskService {
    TaskService::new(
        Arc::new(repo),
        Arc::new(SystemClock),
        Arc::new(FixedBackoff(TimeDelta::seconds(10))),
        MaxAttempts::new(25).unwrap(),
    )
}

fn repo_returning(task: Task) -> MockTaskRepository {
    let mut repo = MockTaskRepository::new();
    repo.expect_get().returning(move |_| Ok(task.clone()));
    repo.expect_update().returning(|_, _| Ok(()));
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
    let http = HttpConfig { max_body_bytes: BODY_LIMIT, ..HttpConfig::default() };
    let app = test::init_service(build_app(service(repo), &http)).await;
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
    repo.expect_insert().times(1).returning(|_| Ok(()));

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
    for field in
        ["nextRunAt", "lastError", "workerId", "processingStartedAt", "result", "completedAt"]
    {
        assert!(reply.body[field].is_null(), "{field} should be null: {}", reply.body);
    }
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
    repo.expect_update().returning(|t, _| Err(RepoError::Conflict(t.id())));

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
        ("PUT", format!("/api/tasks/{id}/start")),
        ("PUT", format!("/api/tasks/{id}/succeed")),
        ("PUT", format!("/api/tasks/{id}/fail")),
        ("PUT", format!("/api/tasks/{id}/cancel")),
        ("PUT", format!("/api/tasks/{id}/rerun")),
        ("PUT", "/api/tasks/%00/start".to_owned()),
        ("GET", "/api/tasks?limit=-1&status=%FF".to_owned()),
        ("GET", "/api/tasks?cursor=%20".to_owned()),
    ];
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: [&[u8]; 11] = [
        b"",
        b"{",
        b"null",
        b"[]",
        b"123",
        b"\"x\"",
        br#"{"name": null, "workerId": 5, "errorMessage": []}"#,
        br#"{"name": "\u0000", "workerId": "\u0000", "errorMessage": "x"}"#,
        br#"{"name": "x", "priority": 99999999999, "runAt": "yesterday"}"#,
        b"\xff\xfe\xfd",
        nested.as_bytes(),
    ];

    for (method, path) in &paths {
        for body in bodies {
            let mut repo = MockTaskRepository::new();
            repo.expect_get().returning(|id| Err(RepoError::NotFound(id)));
            repo.expect_insert().returning(|_| Ok(()));
            repo.expect_list().returning(|_, _, _| Ok(vec![]));
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
