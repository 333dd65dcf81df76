//! End to end: the real server on a free port, a real PostgreSQL (a fresh database per test,
//! see `taskpilot_diesel::testing`), and an HTTP client.
//!
//! Set TASKPILOT_TEST_DATABASE_URL to use a running PostgreSQL; otherwise a throwaway cluster
//! is started from the installed binaries.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_app::{SystemClock, TaskService};
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgPool, PgTaskRepository, PoolConfig};
use taskpilot_domain::{Clock, ExponentialBackoff, FixedClock, MaxAttempts};
use taskpilot_http::{run, HttpConfig};

/// A running server and a client for it.
struct TestApp {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn assert_status(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }

    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.headers.get(CONTENT_TYPE).unwrap(), "application/problem+json");
        assert_eq!(self.body["code"], code, "{}", self.body);
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }
}

fn pool(url: &str, connect_timeout: Duration) -> PgPool {
    taskpilot_diesel::build_pool(url, &PoolConfig { max_size: 8, connect_timeout }).unwrap()
}

fn service(pool: PgPool, clock: Arc<dyn Clock>, backoff_base: TimeDelta) -> TaskService {
    TaskService::new(
        Arc::new(PgTaskRepository::new(pool)),
        clock,
        Arc::new(ExponentialBackoff::new(backoff_base, backoff_base * 4).unwrap()),
        MaxAttempts::new(25).unwrap(),
    )
}

impl TestApp {
    fn spawn(service: TaskService) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let http = HttpConfig {
            max_body_bytes: 1024 * 1024,
            workers: 2,
            shutdown_timeout: Duration::from_secs(1),
        };
        let server = run(service, http, listener).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Self { base, client, handle }
    }

    /// A server over `db` with the system clock and a backoff starting at `backoff_base`.
    fn on(db: &TestDatabase, backoff_base: TimeDelta) -> Self {
        let pool = pool(db.url(), Duration::from_secs(5));
        Self::spawn(service(pool, Arc::new(SystemClock), backoff_base))
    }

    /// A server over `db` whose clock the test moves, with a 10 s backoff base.
    fn with_clock(db: &TestDatabase) -> (Self, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock::new(SystemClock.now()));
        let pool = pool(db.url(), Duration::from_secs(5));
        let app = Self::spawn(service(pool, clock.clone(), TimeDelta::seconds(10)));
        (app, clock)
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request = self.client.request(method, format!("{}{path}", self.base));
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        Self::read(response.unwrap()).await
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Reply {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header((CONTENT_TYPE, content_type))
            .send_body(body)
            .await;
        Self::read(response.unwrap()).await
    }

    async fn read(mut response: awc::ClientResponse) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.body().limit(16 * 1024 * 1024).await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, headers, body }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    async fn create(&self, body: Value) -> Value {
        self.send(Method::POST, "/api/tasks", Some(body))
            .await
            .assert_status(StatusCode::CREATED)
            .clone()
    }

    async fn transition(&self, id: &str, action: &str, body: Option<Value>) -> Reply {
        self.send(Method::PUT, &format!("/api/tasks/{id}/{action}"), body).await
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap()).unwrap().with_timezone(&Utc)
}

fn assert_micros_format(value: &Value) {
    let text = value.as_str().unwrap();
    // 2026-01-01T12:00:00.123456Z
    assert_eq!(text.len(), 27, "{text}");
    assert_eq!(&text[19..20], ".", "{text}");
    assert!(text[20..26].bytes().all(|b| b.is_ascii_digit()), "{text}");
    assert!(text.ends_with('Z'), "{text}");
}

#[actix_web::test]
async fn a_failing_task_is_retried_after_its_backoff_until_its_attempts_run_out() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);

    let created = app
        .send(
            Method::POST,
            "/api/tasks",
            Some(json!({ "name": "send-email", "payload": { "to": "ada@example.com" }, "maxAttempts": 3 })),
        )
        .await;
    let task = created.assert_status(StatusCode::CREATED).clone();
    let id = id_of(&task);
    assert_eq!(created.header("location"), format!("/api/tasks/{id}"));
    assert_eq!(task["status"], "PENDING");
    assert_eq!(task["retryState"], "NONE");
    assert_eq!(task["priority"], 0);
    assert_eq!(task["attemptCount"], 0);
    assert_eq!(task["maxAttempts"], 3);
    assert_eq!(task["payload"], json!({ "to": "ada@example.com" }));
    assert!(task["nextRunAt"].is_null());
    assert_eq!(app.get(&format!("/api/tasks/{id}")).await.assert_status(StatusCode::OK), &task);

    for attempt in 1..=3 {
        let started = app.transition(&id, "start", Some(json!({ "workerId": "worker-1" }))).await;
        let started = started.assert_status(StatusCode::OK);
        assert_eq!(started["status"], "RUNNING");
        assert_eq!(started["workerId"], "worker-1");
        assert!(!started["processingStartedAt"].is_null());

        let failed = app
            .transition(
                &id,
                "fail",
                Some(json!({ "workerId": "worker-1", "errorMessage": "smtp timeout" })),
            )
            .await;
        let failed = failed.assert_status(StatusCode::OK);
        assert_eq!(failed["attemptCount"], attempt);
        assert_eq!(failed["lastError"], "smtp timeout");
        assert!(failed["workerId"].is_null());
        assert!(failed["processingStartedAt"].is_null());
        if attempt == 3 {
            assert_eq!(failed["status"], "FAILED");
            assert_eq!(failed["retryState"], "EXHAUSTED");
            assert!(!failed["completedAt"].is_null());
            assert!(failed["nextRunAt"].is_null());
            break;
        }
        assert_eq!(failed["status"], "PENDING");
        assert_eq!(failed["retryState"], "RETRY_SCHEDULED");
        let next_run_at = time(&failed["nextRunAt"]);
        assert!(next_run_at > clock.now());

        let early = app.transition(&id, "start", Some(json!({ "workerId": "worker-1" }))).await;
        early.assert_problem(StatusCode::CONFLICT, "NOT_YET_RUNNABLE");
        assert_eq!(early.body["runnableAt"], failed["nextRunAt"]);
        let retry_after: u64 = early.header("retry-after").parse().unwrap();
        assert!((1..=80).contains(&retry_after), "Retry-After {retry_after}");

        clock.set(next_run_at);
    }

    let again = app.transition(&id, "start", Some(json!({ "workerId": "worker-1" }))).await;
    again.assert_problem(StatusCode::CONFLICT, "INVALID_TRANSITION");
    app.stop().await;
}

#[actix_web::test]
async fn a_retried_task_can_be_started_again_by_itself_once_the_real_backoff_has_passed() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::milliseconds(50));
    let id = id_of(&app.create(json!({ "name": "resize-image" })).await);
    app.transition(&id, "start", Some(json!({ "workerId": "w" })))
        .await
        .assert_status(StatusCode::OK);

    let failed = app.transition(&id, "fail", Some(json!({ "errorMessage": "oops" }))).await;
    let next_run_at = time(&failed.assert_status(StatusCode::OK)["nextRunAt"]);
    let mut restarted = None;
    for _ in 0..100 {
        let reply = app.transition(&id, "start", Some(json!({ "workerId": "w" }))).await;
        if reply.status == StatusCode::OK {
            restarted = Some(Utc::now());
            break;
        }
        reply.assert_problem(StatusCode::CONFLICT, "NOT_YET_RUNNABLE");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }

    let restarted = restarted.expect("the task never became startable again");
    assert!(restarted >= next_run_at, "started at {restarted}, runnable at {next_run_at}");
    app.stop().await;
}

#[actix_web::test]
async fn succeeding_clears_the_retry_metadata_and_stores_the_result() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let id = id_of(&app.create(json!({ "name": "charge-card" })).await);
    app.transition(&id, "start", Some(json!({ "workerId": "w1" })))
        .await
        .assert_status(StatusCode::OK);
    let failed = app.transition(&id, "fail", Some(json!({ "errorMessage": "declined" }))).await;
    clock.set(time(&failed.assert_status(StatusCode::OK)["nextRunAt"]));
    app.transition(&id, "start", Some(json!({ "workerId": "w2" })))
        .await
        .assert_status(StatusCode::OK);

    let done = app
        .transition(&id, "succeed", Some(json!({ "workerId": "w2", "result": { "receipt": 42 } })))
        .await;

    let done = done.assert_status(StatusCode::OK).clone();
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["retryState"], "NONE");
    assert!(done["nextRunAt"].is_null());
    assert!(done["lastError"].is_null());
    assert!(!done["completedAt"].is_null());
    assert_eq!(done["result"], json!({ "receipt": 42 }));
    assert_eq!(app.get(&format!("/api/tasks/{id}")).await.assert_status(StatusCode::OK), &done);
    app.stop().await;
}

#[actix_web::test]
async fn cancelled_and_failed_tasks_can_be_rerun_with_a_fresh_budget() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let pending = id_of(&app.create(json!({ "name": "a" })).await);
    let running = id_of(&app.create(json!({ "name": "b", "maxAttempts": 1 })).await);
    app.transition(&running, "start", Some(json!({ "workerId": "w" })))
        .await
        .assert_status(StatusCode::OK);

    let cancelled = app.transition(&pending, "cancel", None).await;
    let failed = app.transition(&running, "fail", Some(json!({ "errorMessage": "x" }))).await;
    let cancel_again = app.transition(&pending, "cancel", None).await;
    let rerun_cancelled = app.transition(&pending, "rerun", None).await;
    let rerun_failed = app.transition(&running, "rerun", None).await;
    let rerun_pending = app.transition(&running, "rerun", None).await;

    let cancelled = cancelled.assert_status(StatusCode::OK);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(!cancelled["completedAt"].is_null());
    let failed = failed.assert_status(StatusCode::OK);
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["retryState"], "EXHAUSTED");
    cancel_again.assert_problem(StatusCode::CONFLICT, "INVALID_TRANSITION");
    for rerun in [rerun_cancelled, rerun_failed] {
        let task = rerun.assert_status(StatusCode::OK);
        assert_eq!(task["status"], "PENDING");
        assert_eq!(task["attemptCount"], 0);
        assert_eq!(task["retryState"], "NONE");
        assert!(task["nextRunAt"].is_null());
        assert!(task["completedAt"].is_null());
    }
    rerun_pending.assert_problem(StatusCode::CONFLICT, "INVALID_TRANSITION");
    app.stop().await;
}

#[actix_web::test]
async fn reports_from_a_worker_that_does_not_hold_the_task_are_refused() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let id = id_of(&app.create(json!({ "name": "a" })).await);
    app.transition(&id, "start", Some(json!({ "workerId": "w1" })))
        .await
        .assert_status(StatusCode::OK);

    let succeed = app.transition(&id, "succeed", Some(json!({ "workerId": "w2" }))).await;
    let fail =
        app.transition(&id, "fail", Some(json!({ "workerId": "w2", "errorMessage": "x" }))).await;

    succeed.assert_problem(StatusCode::CONFLICT, "WORKER_MISMATCH");
    fail.assert_problem(StatusCode::CONFLICT, "WORKER_MISMATCH");
    let task = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(task.assert_status(StatusCode::OK)["workerId"], "w1");
    app.stop().await;
}

#[actix_web::test]
async fn twenty_concurrent_starts_of_one_task_give_exactly_one_winner() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let id = id_of(&app.create(json!({ "name": "contended" })).await);

    let starts: Vec<_> = (0..20)
        .map(|i| {
            let request = app.client.put(format!("{}/api/tasks/{id}/start", app.base));
            actix_web::rt::spawn(async move {
                let reply = TestApp::read(
                    request.send_json(&json!({ "workerId": format!("w{i}") })).await.unwrap(),
                )
                .await;
                (reply.status, reply.body)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for start in starts {
        replies.push(start.await.unwrap());
    }

    let winners: Vec<_> = replies.iter().filter(|(status, _)| *status == StatusCode::OK).collect();
    assert_eq!(winners.len(), 1, "{replies:?}");
    for (status, body) in &replies {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert!(["INVALID_TRANSITION", "CONCURRENT_MODIFICATION"]
                .contains(&body["code"].as_str().unwrap()));
        }
    }
    let stored = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(stored.assert_status(StatusCode::OK)["workerId"], winners[0].1["workerId"]);
    app.stop().await;
}

#[actix_web::test]
async fn timestamps_come_back_exactly_as_created_to_the_microsecond() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let run_at = "2030-05-06T07:08:09.123456Z";
    let created = app.create(json!({ "name": "later", "runAt": run_at })).await;
    let id = id_of(&created);

    let fetched = app.get(&format!("/api/tasks/{id}")).await;

    let fetched = fetched.assert_status(StatusCode::OK);
    assert_eq!(fetched, &created);
    for field in ["createdAt", "updatedAt", "nextRunAt"] {
        assert_micros_format(&fetched[field]);
    }
    assert_eq!(fetched["nextRunAt"], run_at);
    app.stop().await;
}

#[actix_web::test]
async fn listing_pages_newest_first_and_filters_by_status_and_name() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(
            &app.create(json!({ "name": if i % 2 == 0 { "even" } else { "odd" } })).await,
        ));
    }
    app.transition(&created[1], "start", Some(json!({ "workerId": "w" })))
        .await
        .assert_status(StatusCode::OK);

    let mut listed = Vec::new();
    let mut path = "/api/tasks?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&path).await;
        let page = page.assert_status(StatusCode::OK);
        pages += 1;
        listed.extend(page["items"].as_array().unwrap().iter().map(id_of));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/tasks?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let odd = app.get("/api/tasks?name=odd").await;
    let running = app.get("/api/tasks?status=RUNNING").await;
    let default_page = app.get("/api/tasks").await;

    let newest_first: Vec<_> = created.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(pages, 3);
    let odd: Vec<_> =
        odd.assert_status(StatusCode::OK)["items"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(odd, vec![created[3].clone(), created[1].clone()]);
    let running = running.assert_status(StatusCode::OK);
    assert_eq!(running["items"].as_array().unwrap().len(), 1);
    assert_eq!(running["items"][0]["id"], created[1].as_str());
    assert!(running["nextCursor"].is_null());
    assert_eq!(default_page.assert_status(StatusCode::OK)["items"].as_array().unwrap().len(), 5);
    app.stop().await;
}

#[actix_web::test]
async fn every_client_error_comes_back_from_the_real_server_as_problem_json() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let unknown = uuid::Uuid::now_v7();
    let over_limit = json!({ "name": "x", "payload": "p".repeat(1024 * 1024) }).to_string();

    let malformed = app.send_raw(Method::POST, "/api/tasks", "application/json", "{".into()).await;
    let unknown_field =
        app.send(Method::POST, "/api/tasks", Some(json!({ "name": "x", "nmae": "y" }))).await;
    let invalid =
        app.send(Method::POST, "/api/tasks", Some(json!({ "name": "x", "maxAttempts": 0 }))).await;
    let bad_uuid = app.get("/api/tasks/123").await;
    let not_json = app.send_raw(Method::POST, "/api/tasks", "text/plain", "name=x".into()).await;
    let too_large = app.send_raw(Method::POST, "/api/tasks", "application/json", over_limit).await;
    let not_found = app.get(&format!("/api/tasks/{unknown}")).await;
    let no_route = app.get("/api/task").await;

    malformed.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    unknown_field.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    assert!(unknown_field.body["detail"].as_str().unwrap().contains("nmae"));
    invalid.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    bad_uuid.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    not_json.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    too_large.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
    not_found.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    no_route.assert_problem(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND");
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn the_server_answers_503_while_the_database_is_down_and_recovers_by_itself() {
    let cluster = LocalCluster::start_throwaway().expect("a throwaway PostgreSQL cluster");
    let url = cluster.url("taskpilot_outage");
    taskpilot_diesel::ensure_database(&url).unwrap();
    let pool = pool(&url, Duration::from_millis(500));
    taskpilot_diesel::run_migrations(&pool).unwrap();
    let app = TestApp::spawn(service(pool, Arc::new(SystemClock), TimeDelta::seconds(1)));
    let id = id_of(&app.create(json!({ "name": "survivor" })).await);

    cluster.stop().unwrap();
    let during_get = app.get(&format!("/api/tasks/{id}")).await;
    let during_create = app.send(Method::POST, "/api/tasks", Some(json!({ "name": "x" }))).await;
    let during_ready = app.get("/readyz").await;
    let during_health = app.get("/healthz").await;

    for reply in [&during_get, &during_create, &during_ready] {
        reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
        assert!(reply.header("retry-after").parse::<u64>().unwrap() >= 1);
    }
    assert_eq!(during_health.status, StatusCode::OK);

    cluster.restart().unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        let reply = app.get(&format!("/api/tasks/{id}")).await;
        if reply.status == StatusCode::OK {
            recovered = Some(reply);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = recovered.expect("the server did not recover after the database came back");
    assert_eq!(recovered.body["name"], "survivor");
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    app.stop().await;
}
