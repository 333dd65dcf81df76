//! End to end: the real server on a free port, a real PostgreSQL (a fresh database per test,
//! see `taskpilot_diesel::testing`), and an HTTP client.
//!
//! Set TASKPILOT_TEST_DATABASE_URL to use a running PostgreSQL; otherwise a throwaway cluster
//! is started from the installed binaries.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::rt::task::JoinHandle;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_app::{
    AccessService, MockTokenRepository, ServiceDefaults, SystemClock, TaskService,
};
use taskpilot_diesel::local::LocalCluster;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_diesel::{PgPool, PgTaskRepository, PoolConfig};
use taskpilot_domain::{Clock, ExponentialBackoff, FixedClock, LeaseDuration, MaxAttempts};
use taskpilot_http::{run, AuthMode, Gate, HttpConfig, ServerHandle, WakeHub};

use common::{guarded, LONG_POLL_MS};

/// How often the test servers' reapers run: often, so that tests wait little for them.
const REAPER_INTERVAL: Duration = Duration::from_millis(50);

/// A running server and a client for it.
struct TestApp {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
    /// The server's wake-up hub: tests watch its waiting claims.
    hub: Arc<WakeHub>,
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
    taskpilot_diesel::build_pool(
        url,
        &PoolConfig { max_size: 8, connect_timeout, acquire_timeout: connect_timeout },
    )
    .unwrap()
}

fn service(pool: PgPool, clock: Arc<dyn Clock>, backoff_base: TimeDelta) -> TaskService {
    TaskService::new(
        Arc::new(PgTaskRepository::new(pool)),
        clock,
        Arc::new(ExponentialBackoff::new(backoff_base, backoff_base * 4).unwrap()),
        ServiceDefaults {
            max_attempts: MaxAttempts::new(25).unwrap(),
            lease: LeaseDuration::from_secs(300).unwrap(),
        },
    )
}

impl TestApp {
    /// The real server over `service`, LISTENing on `notify_url` when given; authentication
    /// as `taskpilot serve` on a loopback address does it by default (open until a token
    /// exists in `pool`'s database).
    fn spawn(service: TaskService, pool: PgPool, notify_url: Option<&str>) -> Self {
        let access =
            AccessService::new(Arc::new(PgTaskRepository::new(pool)), Arc::new(SystemClock));
        let gate = Gate::new(access, AuthMode::Auto, true);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let http = HttpConfig {
            max_body_bytes: 1024 * 1024,
            workers: 2,
            shutdown_timeout: Duration::from_secs(1),
            reaper_interval: REAPER_INTERVAL,
            ..HttpConfig::default()
        };
        let server = run(service, gate, http, listener, notify_url.map(str::to_owned)).unwrap();
        let (handle, hub) = (server.handle(), server.hub());
        actix_web::rt::spawn(server.into_future());
        let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        Self { base, client, handle, hub }
    }

    /// A server over `db` with the system clock and a backoff starting at `backoff_base`.
    fn on(db: &TestDatabase, backoff_base: TimeDelta) -> Self {
        let pool = pool(db.url(), Duration::from_secs(5));
        Self::spawn(
            service(pool.clone(), Arc::new(SystemClock), backoff_base),
            pool,
            Some(db.url()),
        )
    }

    /// A server over `db` whose clock the test moves, with a 10 s backoff base.
    fn with_clock(db: &TestDatabase) -> (Self, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock::new(SystemClock.now()));
        let pool = pool(db.url(), Duration::from_secs(5));
        let app = Self::spawn(
            service(pool.clone(), clock.clone(), TimeDelta::seconds(10)),
            pool,
            Some(db.url()),
        );
        (app, clock)
    }

    /// `POST /api/tasks/claim` with `body`; the reply must be 200, its items are returned.
    async fn claim(&self, body: Value) -> Vec<Value> {
        let reply = self.send(Method::POST, "/api/tasks/claim", Some(body)).await;
        reply.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone()
    }

    /// Sends a long-polling claim with `body` (and a `waitMs` of [`LONG_POLL_MS`]) and returns
    /// once it waits on the server's hub, its first look having found nothing; await
    /// [`answer`] for its reply.
    async fn waiting_claim(&self, mut body: Value) -> JoinHandle<Reply> {
        body["waitMs"] = json!(LONG_POLL_MS);
        let waiting = self.hub.waiting().now;
        let request = self.client.post(format!("{}/api/tasks/claim", self.base));
        let claim = actix_web::rt::spawn(async move {
            TestApp::read(request.send_json(&body).await.unwrap()).await
        });
        guarded("the claim's wait", self.hub.wait_for_waiters(waiting + 1)).await;
        claim
    }

    /// The task's history.
    async fn events(&self, id: &str) -> Vec<Value> {
        let reply = self.get(&format!("/api/tasks/{id}/events")).await;
        reply.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone()
    }

    /// Polls the task until `done` says so (what the reaper does shows nowhere but in the
    /// task: nothing to wait on but the task itself).
    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        guarded(&format!("the change of task {id}"), async {
            loop {
                let task = self.get(&format!("/api/tasks/{id}")).await;
                let task = task.assert_status(StatusCode::OK);
                if done(task) {
                    return task.clone();
                }
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request = self.client.request(method, format!("{}{path}", self.base));
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        Self::read(response.unwrap()).await
    }

    /// `PUT /api/tasks/{id}/{action}` without a body, with `If-Match: if_match` when given.
    async fn operator(&self, id: &str, action: &str, if_match: Option<&str>) -> Reply {
        let mut request =
            self.client.request(Method::PUT, format!("{}/api/tasks/{id}/{action}", self.base));
        if let Some(tags) = if_match {
            request = request.insert_header(("If-Match", tags));
        }
        Self::read(request.send().await.unwrap()).await
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

    /// Creates a task and returns it as any read shows it: without `created`, which only the
    /// create answers carry.
    async fn create(&self, body: Value) -> Value {
        let mut task = self
            .send(Method::POST, "/api/tasks", Some(body))
            .await
            .assert_status(StatusCode::CREATED)
            .clone();
        assert_eq!(task.as_object_mut().unwrap().remove("created"), Some(json!(true)));
        task
    }

    async fn transition(&self, id: &str, action: &str, body: Option<Value>) -> Reply {
        self.send(Method::PUT, &format!("/api/tasks/{id}/{action}"), body).await
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The reply of a claim that [`TestApp::waiting_claim`] sent.
async fn answer(claim: JoinHandle<Reply>) -> Reply {
    guarded("the claim's answer", claim).await.unwrap()
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
    let mut task = created.assert_status(StatusCode::CREATED).clone();
    let id = id_of(&task);
    assert_eq!(created.header("location"), format!("/api/tasks/{id}"));
    assert_eq!(task.as_object_mut().unwrap().remove("created"), Some(json!(true)));
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
    // A start is what this test is about, so it polls with starts: nothing else tells when
    // the backoff has passed.
    let restarted = guarded("the restart", async {
        loop {
            let reply = app.transition(&id, "start", Some(json!({ "workerId": "w" }))).await;
            if reply.status == StatusCode::OK {
                return Utc::now();
            }
            reply.assert_problem(StatusCode::CONFLICT, "NOT_YET_RUNNABLE");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

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
async fn a_run_at_is_answered_as_stored_and_one_the_format_cannot_write_is_refused() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let create = |run_at: &str| json!({ "name": "later", "runAt": run_at });

    let leap = app.send(Method::POST, "/api/tasks", Some(create("2998-12-31T23:59:60.5Z"))).await;
    let latest =
        app.send(Method::POST, "/api/tasks", Some(create("9999-12-31T23:59:59.999999Z"))).await;
    let beyond = ["9999-12-31T23:59:59-01:00", "9999-12-31T23:59:60Z", "0000-01-01T00:00:00+00:01"];

    let mut leap = leap.assert_status(StatusCode::CREATED).clone();
    assert_eq!(leap.as_object_mut().unwrap().remove("created"), Some(json!(true)));
    assert_eq!(leap["nextRunAt"], "2999-01-01T00:00:00.500000Z");
    let stored = app.get(&format!("/api/tasks/{}", id_of(&leap))).await;
    assert_eq!(stored.assert_status(StatusCode::OK), &leap);
    let latest = latest.assert_status(StatusCode::CREATED).clone();
    let stored = app.get(&format!("/api/tasks/{}", id_of(&latest))).await;
    assert_eq!(stored.assert_status(StatusCode::OK)["nextRunAt"], "9999-12-31T23:59:59.999999Z");
    for run_at in beyond {
        let refused = app.send(Method::POST, "/api/tasks", Some(create(run_at))).await;
        refused.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(refused.body["detail"].as_str().unwrap().starts_with("runAt must be"), "{run_at}");
    }
    let not_rfc_3339 =
        app.send(Method::POST, "/api/tasks", Some(create("+10000-01-01T00:00:00Z"))).await;
    not_rfc_3339.assert_problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST");
    let listed = app.get("/api/tasks").await;
    assert_eq!(listed.assert_status(StatusCode::OK)["items"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[actix_web::test]
async fn a_cursor_the_server_did_not_hand_out_is_refused_however_it_was_crafted() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    app.create(json!({ "name": "a" })).await;
    app.create(json!({ "name": "b" })).await;
    let page = app.get("/api/tasks?limit=1").await;
    let issued = page.assert_status(StatusCode::OK)["nextCursor"].as_str().unwrap().to_owned();
    let id_part = &issued[16..];
    // Far in the future, before PostgreSQL's earliest instant (4713 BC: it answered 500), and
    // just past the API's years 0000 to 9999 on either side.
    let crafted = [
        format!("{:016x}{id_part}", i64::MAX / 2),
        format!("{:016x}{id_part}", i64::MIN / 2),
        format!("{:016x}{id_part}", 253_402_300_800_000_000_i64),
        format!("{:016x}{id_part}", -62_167_219_200_000_001_i64),
    ];

    let next = app.get(&format!("/api/tasks?limit=1&cursor={issued}")).await;

    assert_eq!(next.assert_status(StatusCode::OK)["items"][0]["name"], "a");
    for cursor in crafted {
        let refused = app.get(&format!("/api/tasks?cursor={cursor}")).await;
        refused.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    }
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
    let app = TestApp::spawn(
        service(pool.clone(), Arc::new(SystemClock), TimeDelta::seconds(1)),
        pool,
        Some(url.as_str()),
    );
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
    // The pool reconnects on its own schedule and tells no one: poll the route itself.
    let recovered = guarded("the recovery after the database came back", async {
        loop {
            let reply = app.get(&format!("/api/tasks/{id}")).await;
            if reply.status == StatusCode::OK {
                return reply;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(recovered.body["name"], "survivor");
    // Each pooled connection the outage killed fails once more when next used (see
    // availability.rs), so readiness is polled too rather than asked once.
    guarded("readiness after the database came back", async {
        while app.get("/readyz").await.status != StatusCode::OK {
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    app.stop().await;
}

// --- Claims, leases, fencing, history, one clock, long-poll --------------------------------

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

fn token_of(task: &Value) -> String {
    task["leaseToken"].as_str().unwrap_or_else(|| panic!("no leaseToken in {task}")).to_owned()
}

#[actix_web::test]
async fn claims_take_the_highest_priority_then_the_longest_waiting_and_exactly_the_batch_limit() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let mut created = BTreeMap::new();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 5), ("d", 1), ("e", 0)] {
        let task = app.create(json!({ "name": name, "priority": priority })).await;
        created.insert(id_of(&task), name);
    }
    let names =
        |items: &[Value]| -> Vec<&str> { ids(items).iter().map(|id| created[id]).collect() };

    let first = app.claim(json!({ "workerId": "w1", "limit": 3 })).await;
    let second = app.claim(json!({ "workerId": "w2", "limit": 10 })).await;
    let third = app.claim(json!({ "workerId": "w3", "limit": 10 })).await;

    assert_eq!(names(&first), ["b", "c", "d"]);
    assert_eq!(names(&second), ["a", "e"]);
    assert!(third.is_empty());
    for task in first.iter().chain(&second) {
        assert_eq!(task["status"], "RUNNING");
        assert_eq!(task["attempt"], 1);
        assert!(task["leaseExpiresAt"].is_string());
        assert_micros_format(&task["leaseExpiresAt"]);
    }
    assert!(first.iter().all(|t| t["workerId"] == "w1"));
    app.stop().await;
}

#[actix_web::test]
async fn a_claim_takes_only_tasks_from_the_queues_it_names() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let email = id_of(&app.create(json!({ "name": "send", "queue": "emails" })).await);
    let report = id_of(&app.create(json!({ "name": "build", "queue": "reports" })).await);
    let plain = app.create(json!({ "name": "other" })).await;

    let reports = app.claim(json!({ "workerId": "w", "limit": 10, "queues": ["reports"] })).await;
    let listed = app.get("/api/tasks?queue=emails").await;
    let rest =
        app.claim(json!({ "workerId": "w", "limit": 10, "queues": ["emails", "nope"] })).await;

    assert_eq!(ids(&reports), [report]);
    assert_eq!(reports[0]["queue"], "reports");
    let listed = listed.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone();
    assert_eq!(ids(&listed), std::slice::from_ref(&email));
    assert_eq!(ids(&rest), [email]);
    assert_eq!(plain["queue"], "default");
    app.stop().await;
}

#[actix_web::test]
async fn the_lease_token_appears_only_in_answers_to_the_worker_holding_the_lease() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let claimed_id = id_of(&app.create(json!({ "name": "claimed" })).await);
    let started_id = id_of(&app.create(json!({ "name": "started" })).await);

    let claimed = app.claim(json!({ "workerId": "w1" })).await;
    let started = app.transition(&started_id, "start", Some(json!({ "workerId": "w2" }))).await;
    let started = started.assert_status(StatusCode::OK).clone();
    let claim_token = token_of(&claimed[0]);
    let heartbeat = app
        .transition(
            &claimed_id,
            "heartbeat",
            Some(json!({ "workerId": "w1", "leaseToken": claim_token })),
        )
        .await;
    let get = app.get(&format!("/api/tasks/{claimed_id}")).await;
    let list = app.get("/api/tasks").await;
    let running = app.get("/api/tasks?status=RUNNING").await;
    let events = app.get(&format!("/api/tasks/{claimed_id}/events")).await;

    assert_eq!(id_of(&claimed[0]), claimed_id);
    let start_token = token_of(&started);
    assert_ne!(claim_token, start_token);
    assert_eq!(token_of(heartbeat.assert_status(StatusCode::OK)), claim_token);
    for reply in [&get, &list, &running, &events] {
        let text = reply.assert_status(StatusCode::OK).to_string();
        assert!(!text.contains("leaseToken"), "{text}");
        assert!(!text.contains(&claim_token) && !text.contains(&start_token), "{text}");
    }
    assert!(get.body["leaseExpiresAt"].is_string());
    app.stop().await;
}

#[actix_web::test]
async fn a_heartbeat_extends_the_lease_from_now() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    app.create(json!({ "name": "long" })).await;
    let claimed = app.claim(json!({ "workerId": "w", "leaseSeconds": 30 })).await;
    let (id, token) = (id_of(&claimed[0]), token_of(&claimed[0]));
    let first_expiry = time(&claimed[0]["leaseExpiresAt"]);

    clock.advance(TimeDelta::seconds(20));
    let beat = app
        .transition(
            &id,
            "heartbeat",
            Some(json!({ "workerId": "w", "leaseToken": token, "leaseSeconds": 30 })),
        )
        .await;

    let beat = beat.assert_status(StatusCode::OK);
    assert_eq!(first_expiry, time(&claimed[0]["updatedAt"]) + TimeDelta::seconds(30));
    assert_eq!(time(&beat["leaseExpiresAt"]), first_expiry + TimeDelta::seconds(20));
    let stored = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(stored.assert_status(StatusCode::OK)["leaseExpiresAt"], beat["leaseExpiresAt"]);
    app.stop().await;
}

#[actix_web::test]
async fn the_reaper_fails_an_expired_attempt_and_the_late_worker_is_told_why() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let id = id_of(&app.create(json!({ "name": "slow", "maxAttempts": 3 })).await);
    let claimed = app.claim(json!({ "workerId": "w1", "leaseSeconds": 5 })).await;
    let late_token = token_of(&claimed[0]);

    clock.advance(TimeDelta::seconds(6));
    let reaped = app.wait_for(&id, |t| t["status"] == "PENDING").await;
    let late = app
        .transition(
            &id,
            "succeed",
            Some(json!({ "workerId": "w1", "leaseToken": late_token, "result": 1 })),
        )
        .await;
    clock.set(time(&reaped["nextRunAt"]));
    let second = app.claim(json!({ "workerId": "w2", "leaseSeconds": 5 })).await;
    let later = app
        .transition(&id, "succeed", Some(json!({ "workerId": "w1", "leaseToken": late_token })))
        .await;

    assert_eq!(reaped["lastError"], "lease expired (worker w1)");
    assert_eq!(reaped["retryState"], "RETRY_SCHEDULED");
    assert_eq!(reaped["attemptCount"], 1);
    assert!(reaped["leaseExpiresAt"].is_null());
    late.assert_problem(StatusCode::CONFLICT, "LEASE_EXPIRED");
    assert_eq!(late.body["taskId"], id.as_str());
    assert_eq!(ids(&second), std::slice::from_ref(&id));
    assert_eq!(second[0]["attempt"], 2);
    later.assert_problem(StatusCode::CONFLICT, "ATTEMPT_SUPERSEDED");
    let task = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(task.assert_status(StatusCode::OK)["workerId"], "w2");
    app.stop().await;
}

#[actix_web::test]
async fn the_reaper_fails_a_task_for_good_when_its_attempts_are_used_up() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let id = id_of(&app.create(json!({ "name": "doomed", "maxAttempts": 1 })).await);
    app.claim(json!({ "workerId": "w1", "leaseSeconds": 5 })).await;

    clock.advance(TimeDelta::seconds(5));
    let failed = app.wait_for(&id, |t| t["status"] == "FAILED").await;

    assert_eq!(failed["retryState"], "EXHAUSTED");
    assert_eq!(failed["lastError"], "lease expired (worker w1)");
    let events = app.events(&id).await;
    let last = events.last().unwrap();
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("RUNNING"), Some("FAILED")));
    assert_eq!(last["actor"], "REAPER");
    assert_eq!(last["workerId"], "w1");
    app.stop().await;
}

#[actix_web::test]
async fn a_task_whose_every_worker_dies_is_quarantined_after_its_crash_budget_and_rerun_anew() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    // 25 attempts (the server default), 3 crashes (the default crash budget).
    let created = app.create(json!({ "name": "poison" })).await;
    let id = id_of(&created);
    assert_eq!(
        (created["crashCount"].as_u64(), created["maxCrashes"].as_u64()),
        (Some(0), Some(3))
    );
    let mut seen = Vec::new();

    for n in 1..=3 {
        let worker = format!("w-{n}");
        let claimed = app.claim(json!({ "workerId": worker, "leaseSeconds": 5 })).await;
        assert_eq!(ids(&claimed), std::slice::from_ref(&id), "claim {n}");
        // The worker dies: nobody heartbeats or reports, the lease runs out.
        clock.advance(TimeDelta::seconds(5));
        let reaped = app.wait_for(&id, |t| t["crashCount"] == n).await;
        seen.push((reaped["status"].clone(), reaped["retryState"].clone()));
        if let Some(next) = reaped["nextRunAt"].as_str() {
            clock.set(next.parse().unwrap());
        }
    }

    let reply = app.get(&format!("/api/tasks/{id}")).await;
    let task = reply.assert_status(StatusCode::OK);
    assert_eq!(
        seen,
        [
            (json!("PENDING"), json!("RETRY_SCHEDULED")),
            (json!("PENDING"), json!("RETRY_SCHEDULED")),
            (json!("FAILED"), json!("QUARANTINED")),
        ]
    );
    assert_eq!(task["status"], "FAILED");
    assert_eq!(task["retryState"], "QUARANTINED");
    assert_eq!((task["crashCount"].as_u64(), task["maxCrashes"].as_u64()), (Some(3), Some(3)));
    assert_eq!(task["attemptCount"], 3, "22 of its 25 attempts were never run");
    assert_eq!(task["lastError"], "quarantined: lease expired 3 times (last worker w-3)");
    assert!(app.claim(json!({ "workerId": "w-4" })).await.is_empty(), "nobody gets it again");
    let events = app.events(&id).await;
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "LEASE_EXPIRED");
    assert_eq!((last["from"].as_str(), last["to"].as_str()), (Some("RUNNING"), Some("FAILED")));
    assert_eq!(last["error"], "quarantined: lease expired 3 times (last worker w-3)");

    let rerun = app.operator(&id, "rerun", None).await;

    let rerun = rerun.assert_status(StatusCode::OK);
    assert_eq!(rerun["status"], "PENDING");
    assert_eq!(rerun["retryState"], "NONE");
    assert_eq!((rerun["crashCount"].as_u64(), rerun["attemptCount"].as_u64()), (Some(0), Some(0)));
    assert_eq!(rerun["lastError"], Value::Null);
    app.stop().await;
}

#[actix_web::test]
async fn a_crash_budget_is_taken_from_create_and_batch_items_and_validated_naming_the_field() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));

    let one = app.create(json!({ "name": "x", "maxCrashes": 1 })).await;
    let batch = app
        .send(
            Method::POST,
            "/api/tasks/batch",
            Some(json!({ "tasks": [{ "name": "a", "maxCrashes": 100 }, { "name": "b" }] })),
        )
        .await;
    let bad =
        app.send(Method::POST, "/api/tasks", Some(json!({ "name": "x", "maxCrashes": 0 }))).await;
    let bad_item = app
        .send(
            Method::POST,
            "/api/tasks/batch",
            Some(json!({ "tasks": [{ "name": "a" }, { "name": "b", "maxCrashes": 101 }] })),
        )
        .await;

    assert_eq!(one["maxCrashes"], 1);
    let items = batch.assert_status(StatusCode::CREATED)["items"].as_array().unwrap().clone();
    let budgets: Vec<_> = items.iter().map(|t| t["maxCrashes"].as_u64()).collect();
    assert_eq!(budgets, [Some(100), Some(3)]);
    bad.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(bad.body["detail"].as_str().unwrap().starts_with("maxCrashes"), "{}", bad.body);
    bad_item.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(bad_item.body["index"], 1);
    assert!(bad_item.body["detail"].as_str().unwrap().starts_with("tasks[1].maxCrashes"));
    app.stop().await;
}

#[actix_web::test]
async fn operators_act_only_on_the_version_they_saw_when_they_send_if_match() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let created = app.send(Method::POST, "/api/tasks", Some(json!({ "name": "report" }))).await;
    let id = id_of(created.assert_status(StatusCode::CREATED));
    assert_eq!(created.header("etag"), "\"1\"");
    let seen = app.get(&format!("/api/tasks/{id}")).await;
    let seen_tag = seen.header("etag").to_owned();
    assert_eq!(seen_tag, "\"1\"");
    // Someone else moves the task on: a worker starts it.
    let started =
        app.transition(&id, "start", Some(json!({ "workerId": "w1", "leaseSeconds": 60 }))).await;
    assert_eq!(started.header("etag"), "\"2\"");

    let stale = app.operator(&id, "cancel", Some(&seen_tag)).await;

    stale.assert_problem(StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");
    assert_eq!(stale.body["currentVersion"], 2);
    assert_eq!(stale.body["taskId"], id.as_str());
    let unchanged = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(unchanged.assert_status(StatusCode::OK)["status"], "RUNNING");
    assert_eq!(unchanged.header("etag"), "\"2\"");

    let current = unchanged.header("etag").to_owned();
    let cancelled = app.operator(&id, "cancel", Some(&format!("\"1\", {current}"))).await;

    assert_eq!(cancelled.assert_status(StatusCode::OK)["status"], "CANCELLED");
    assert_eq!(cancelled.header("etag"), "\"3\"");

    let any = app.operator(&id, "rerun", Some("*")).await;
    assert_eq!(any.assert_status(StatusCode::OK)["status"], "PENDING");
    assert_eq!(any.header("etag"), "\"4\"");
    let weak = app.operator(&id, "cancel", Some("W/\"4\"")).await;
    weak.assert_problem(StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");
    let malformed = app.operator(&id, "cancel", Some("4")).await;
    malformed.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(malformed.body["detail"].as_str().unwrap().starts_with("If-Match"));
    // A refused precondition on an unknown task is still a 404.
    let unknown =
        app.operator("0190a5c6-0000-7000-8000-000000000000", "cancel", Some("\"1\"")).await;
    unknown.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");

    let plain = app.operator(&id, "cancel", None).await;

    assert_eq!(plain.assert_status(StatusCode::OK)["status"], "CANCELLED");
    assert_eq!(plain.header("etag"), "\"5\"");
    app.stop().await;
}

#[actix_web::test]
async fn a_replayed_success_gets_the_same_task_and_a_different_outcome_is_a_conflict() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let id = id_of(&app.create(json!({ "name": "once" })).await);
    let token = token_of(&app.claim(json!({ "workerId": "w" })).await[0]);
    let report = json!({ "workerId": "w", "leaseToken": token, "result": { "n": 1 } });

    let first = app.transition(&id, "succeed", Some(report.clone())).await;
    let replay = app.transition(&id, "succeed", Some(report)).await;
    let other = app
        .transition(
            &id,
            "fail",
            Some(json!({ "workerId": "w", "leaseToken": token, "errorMessage": "no" })),
        )
        .await;

    let first = first.assert_status(StatusCode::OK).clone();
    assert_eq!(first["status"], "SUCCEEDED");
    assert_eq!(replay.assert_status(StatusCode::OK), &first);
    other.assert_problem(StatusCode::CONFLICT, "OUTCOME_CONFLICT");
    assert_eq!(other.body["recordedOutcome"], "SUCCEEDED");
    let events = app.events(&id).await;
    let succeeded = events.iter().filter(|e| e["to"] == "SUCCEEDED" && e["from"] == "RUNNING");
    assert_eq!(succeeded.count(), 1, "the replay is not a second transition: {events:?}");
    app.stop().await;
}

#[actix_web::test]
async fn refused_stale_calls_are_counted_and_recorded_in_the_history() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let before = app.get("/api/stats/rejections").await;
    let id = id_of(&app.create(json!({ "name": "twice" })).await);
    let token = token_of(&app.claim(json!({ "workerId": "w1", "leaseSeconds": 5 })).await[0]);
    clock.advance(TimeDelta::seconds(6));
    app.wait_for(&id, |t| t["status"] == "PENDING").await;

    let late = json!({ "workerId": "w1", "leaseToken": token, "result": "late" });
    app.transition(&id, "succeed", Some(late.clone())).await;
    app.transition(&id, "succeed", Some(late)).await;
    app.transition(&id, "heartbeat", Some(json!({ "workerId": "w1", "leaseToken": token }))).await;
    let stats = app.get("/api/stats/rejections").await;

    assert_eq!(before.assert_status(StatusCode::OK), &json!({ "items": [], "staleSuccesses": 0 }));
    let stats = stats.assert_status(StatusCode::OK);
    assert_eq!(stats["staleSuccesses"], 2);
    let counts: BTreeMap<(String, String), u64> = stats["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let key = (c["code"].as_str().unwrap().into(), c["call"].as_str().unwrap().into());
            (key, c["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(counts[&("LEASE_EXPIRED".to_owned(), "SUCCEED".to_owned())], 2);
    assert_eq!(counts[&("LEASE_EXPIRED".to_owned(), "HEARTBEAT".to_owned())], 1);
    let refused: Vec<_> =
        app.events(&id).await.into_iter().filter(|e| !e["rejectedCode"].is_null()).collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for event in &refused {
        assert_eq!(event["rejectedCode"], "LEASE_EXPIRED");
        assert_eq!(event["attempt"], 1);
        assert_eq!(event["workerId"], "w1");
        assert_eq!(event["from"], event["to"]);
    }
    assert_eq!(refused[2]["rejectedCall"], "HEARTBEAT");
    app.stop().await;
}

#[actix_web::test]
async fn the_events_of_a_full_lifecycle_come_back_oldest_first() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let id = id_of(&app.create(json!({ "name": "story" })).await);
    let first = token_of(&app.claim(json!({ "workerId": "w1" })).await[0]);
    clock.advance(TimeDelta::seconds(1));
    let failed = app
        .transition(
            &id,
            "fail",
            Some(json!({ "workerId": "w1", "leaseToken": first, "errorMessage": "flaky" })),
        )
        .await;
    clock.set(time(&failed.assert_status(StatusCode::OK)["nextRunAt"]));
    let second = token_of(&app.claim(json!({ "workerId": "w2" })).await[0]);
    app.transition(&id, "heartbeat", Some(json!({ "workerId": "w2", "leaseToken": second })))
        .await
        .assert_status(StatusCode::OK);
    clock.advance(TimeDelta::seconds(1));
    app.transition(&id, "succeed", Some(json!({ "workerId": "w2", "leaseToken": second })))
        .await
        .assert_status(StatusCode::OK);

    let events = app.events(&id).await;
    let unknown = app.get(&format!("/api/tasks/{}/events", uuid::Uuid::now_v7())).await;

    let story: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["attempt"].as_u64().unwrap(),
                e["from"].as_str().unwrap_or("-"),
                e["to"].as_str().unwrap(),
                e["workerId"].as_str().unwrap_or("-"),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        story,
        [
            ("CREATED", 0, "-", "PENDING", "-", "CLIENT"),
            ("STARTED", 1, "PENDING", "RUNNING", "w1", "WORKER"),
            ("RETRY_SCHEDULED", 1, "RUNNING", "PENDING", "w1", "WORKER"),
            ("STARTED", 2, "PENDING", "RUNNING", "w2", "WORKER"),
            ("SUCCEEDED", 2, "RUNNING", "SUCCEEDED", "w2", "WORKER"),
        ]
    );
    assert_eq!(events[2]["error"], "flaky");
    let times: Vec<_> = events.iter().map(|e| time(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    events.iter().for_each(|e| assert_micros_format(&e["at"]));
    unknown.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    app.stop().await;
}

/// Sessions of LISTEN connections on `db`.
fn listener_sessions(db: &TestDatabase) -> i64 {
    count_sessions(db, "application_name = 'taskpilot-listener'")
}

/// Sessions on `db` that match `condition`, by PostgreSQL's own account.
fn count_sessions(db: &TestDatabase, condition: &str) -> i64 {
    use diesel::prelude::*;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.pool().get().unwrap();
    let row: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND {condition}"
    ))
    .bind::<diesel::sql_types::Text, _>(db.name())
    .get_result(&mut conn)
    .unwrap();
    row.n
}

/// Returns once `servers` servers LISTEN for runnable tasks on `db`, so that a NOTIFY from
/// now on reaches each of them. A listener announces itself to no one in-process, so this
/// polls PostgreSQL: a listening session is idle after its LISTEN (or its later health check).
async fn until_listening(db: &TestDatabase, servers: i64) {
    let listening = "application_name = 'taskpilot-listener' AND state = 'idle' \
                     AND (query LIKE 'LISTEN %' OR query = 'SELECT 1')";
    guarded("the LISTEN", async {
        while count_sessions(db, listening) < servers {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[actix_web::test]
async fn a_waiting_claim_wakes_up_when_another_request_creates_a_task() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    until_listening(&db, 1).await;
    let claim = app.waiting_claim(json!({ "workerId": "w" })).await;

    let id = id_of(&app.create(json!({ "name": "wanted" })).await);

    let reply = answer(claim).await;
    let body = reply.assert_status(StatusCode::OK);
    assert_eq!(ids(body["items"].as_array().unwrap()), [id]);
    app.stop().await;
}

#[actix_web::test]
async fn a_claim_waiting_on_one_server_wakes_up_for_a_task_created_through_another() {
    let db = TestDatabase::new();
    let waiting_server = TestApp::on(&db, TimeDelta::seconds(1));
    let other_server = TestApp::on(&db, TimeDelta::seconds(1));
    until_listening(&db, 2).await;
    let claim = waiting_server.waiting_claim(json!({ "workerId": "w", "queues": ["cross"] })).await;

    let id = id_of(&other_server.create(json!({ "name": "elsewhere", "queue": "cross" })).await);

    let reply = answer(claim).await;
    let body = reply.assert_status(StatusCode::OK);
    assert_eq!(ids(body["items"].as_array().unwrap()), [id]);
    waiting_server.stop().await;
    other_server.stop().await;
}

#[actix_web::test]
async fn a_waiting_claim_wakes_up_when_a_scheduled_task_comes_due() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let run_at = clock.now() + TimeDelta::seconds(1);
    let created = app.create(json!({ "name": "later", "runAt": run_at })).await;
    // By the service's clock the task is not due: the claim's first look cannot take it.
    let claim = app.waiting_claim(json!({ "workerId": "w" })).await;

    clock.set(run_at);

    let reply = answer(claim).await;
    let claimed = reply.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone();
    assert_eq!(ids(&claimed), [id_of(&created)]);
    assert!(time(&claimed[0]["processingStartedAt"]) >= time(&created["nextRunAt"]));
    app.stop().await;
}

#[actix_web::test]
async fn a_waiting_claim_wakes_up_when_a_short_retry_backoff_ends() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::milliseconds(300));
    let id = id_of(&app.create(json!({ "name": "flaky" })).await);
    let token = token_of(&app.claim(json!({ "workerId": "w1" })).await[0]);
    // The task is running: the claim's first look cannot take it.
    let claim = app.waiting_claim(json!({ "workerId": "w2" })).await;

    let failed = app
        .transition(
            &id,
            "fail",
            Some(json!({ "workerId": "w1", "leaseToken": token, "errorMessage": "retry me" })),
        )
        .await;

    let next_run_at = time(&failed.assert_status(StatusCode::OK)["nextRunAt"]);
    let reply = answer(claim).await;
    let claimed = reply.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone();
    assert_eq!(ids(&claimed), [id]);
    assert_eq!(claimed[0]["attempt"], 2);
    assert!(time(&claimed[0]["processingStartedAt"]) >= next_run_at);
    app.stop().await;
}

#[actix_web::test]
async fn a_claim_with_a_short_wait_on_an_empty_queue_waits_then_returns_nothing() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));

    let claimed =
        guarded("the claim's answer", app.claim(json!({ "workerId": "w", "waitMs": 300 }))).await;

    assert!(claimed.is_empty());
    let waiting = app.hub.waiting();
    assert_eq!(waiting.now, 0, "{waiting:?}");
    assert!(waiting.begun >= 1, "the claim answered without waiting: {waiting:?}");
    app.stop().await;
}

#[actix_web::test]
async fn stopping_the_server_releases_waiting_claims_at_once() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let claim = app.waiting_claim(json!({ "workerId": "w" })).await;

    guarded("the stop", app.stop()).await;

    let reply = answer(claim).await;
    assert_eq!(reply.assert_status(StatusCode::OK), &json!({ "items": [] }));
}

#[actix_web::test]
async fn a_stopped_server_leaves_no_reaper_and_no_listener_behind() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    // A server of the same reaper interval and clock on a database of its own: its reaps
    // show when a reaper left running would have acted.
    let witness_db = TestDatabase::new();
    let witness_pool = pool(witness_db.url(), Duration::from_secs(5));
    let witness_service = service(witness_pool.clone(), clock.clone(), TimeDelta::seconds(1));
    let witness = TestApp::spawn(witness_service, witness_pool, None);
    let id = id_of(&app.create(json!({ "name": "orphan" })).await);
    app.claim(json!({ "workerId": "w", "leaseSeconds": 5 })).await;
    until_listening(&db, 1).await;
    let listening = listener_sessions(&db);

    app.stop().await;
    // Two reaps in a row: the second comes a whole reaper interval after the clock first
    // moved, time for any reaper on that interval to have had a pass.
    for _ in 0..2 {
        let witnessed =
            id_of(&witness.create(json!({ "name": "witness", "maxAttempts": 1 })).await);
        witness.claim(json!({ "workerId": "w", "leaseSeconds": 5 })).await;
        clock.advance(TimeDelta::seconds(60));
        witness.wait_for(&witnessed, |t| t["status"] == "FAILED").await;
    }
    // The backend ends a moment after its client hung up, and says so only in
    // pg_stat_activity: poll it.
    guarded("the end of the LISTEN session", async {
        while listener_sessions(&db) > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    assert_eq!(listening, 1, "the server was listening");
    let direct = service(db.pool(), clock, TimeDelta::seconds(1));
    let task = direct.get(id.parse::<uuid::Uuid>().unwrap().into()).unwrap();
    assert_eq!(task.status(), taskpilot_domain::TaskStatus::Running, "reaped after the stop");
    witness.stop().await;
}

#[actix_web::test]
async fn eight_concurrent_clients_claim_each_of_200_tasks_exactly_once() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let mut created = BTreeSet::new();
    for i in 0..200 {
        created.insert(id_of(&app.create(json!({ "name": "bulk", "priority": i % 3 })).await));
    }

    let clients: Vec<_> = (0..8)
        .map(|worker| {
            let (client, base) = (app.client.clone(), app.base.clone());
            actix_web::rt::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let body = json!({ "workerId": format!("w{worker}"), "limit": 7 });
                    let response =
                        client.post(format!("{base}/api/tasks/claim")).send_json(&body).await;
                    let reply = TestApp::read(response.unwrap()).await;
                    let items = reply.assert_status(StatusCode::OK)["items"].as_array().unwrap();
                    if items.is_empty() {
                        return mine;
                    }
                    assert!(items.len() <= 7);
                    mine.extend(ids(items));
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for client in clients {
        claimed.extend(client.await.unwrap());
    }

    let distinct: BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 200, "some task was claimed twice");
    assert_eq!(distinct, created);
    let running = app.get("/api/tasks?status=RUNNING&limit=500").await;
    assert_eq!(running.assert_status(StatusCode::OK)["items"].as_array().unwrap().len(), 200);
    app.stop().await;
}

/// PostgreSQL's own clock, read while the statement runs.
fn database_now(db: &TestDatabase) -> DateTime<Utc> {
    use diesel::prelude::*;

    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        now: DateTime<Utc>,
    }
    let mut conn = db.pool().get().unwrap();
    let row: Now =
        diesel::sql_query("SELECT clock_timestamp() AS now").get_result(&mut conn).unwrap();
    row.now
}

#[actix_web::test]
async fn with_the_database_clock_wired_the_service_tells_postgresql_time() {
    use clap::Parser as _;

    let db = TestDatabase::new();
    let cli =
        taskpilot_http::Cli::try_parse_from(["taskpilot", "--clock-refresh-secs", "1"]).unwrap();
    let clock = taskpilot_http::startup::database_clock(db.pool(), &cli.config).unwrap();
    let service = taskpilot_http::startup::task_service(db.pool(), clock, &cli.config).unwrap();
    let app = TestApp::spawn(service.clone(), db.pool(), Some(db.url()));

    let before = database_now(&db);
    let service_now = service.now();
    let created = app.create(json!({ "name": "timed" })).await;
    let after = database_now(&db);

    let slack = TimeDelta::seconds(1);
    assert!(service_now >= before - slack && service_now <= after + slack, "{service_now}");
    let created_at = time(&created["createdAt"]);
    assert!(created_at >= before - slack && created_at <= after + slack, "{created_at}");
    app.stop().await;
}

/// What the hub logs at debug level each time a claim parks (see `taskpilot_http::wake`).
const CLAIM_WAITS_LOG: &str = "a claim waits for a wake-up";

/// A `taskpilot serve` process of its own; killed when dropped. Its hub logs each claim that
/// parks, so that a test can wait for that across the process boundary.
struct ServerProcess {
    child: std::process::Child,
    base: String,
    /// The process's log lines, as it writes them.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ServerProcess {
    async fn start(database_url: &str, client: &awc::Client) -> Self {
        use std::io::BufRead as _;

        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_taskpilot"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("TASKPILOT_BIND", format!("127.0.0.1:{port}"))
            .env("TASKPILOT_WORKERS", "1")
            .env("TASKPILOT_DB_POOL_SIZE", "2")
            .env("TASKPILOT_SHUTDOWN_TIMEOUT_SECS", "1")
            .env("TASKPILOT_LOG", "warn,taskpilot_http::wake=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cannot start the taskpilot binary");
        let stdout = child.stdout.take().unwrap();
        let (lines, log) = tokio::sync::mpsc::unbounded_channel();
        // Read to the end even once nobody listens, so that the process never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut process = Self { child, base: format!("http://127.0.0.1:{port}"), log };
        // Nothing announces readiness but the route itself: poll it.
        guarded("the process's readiness", async {
            loop {
                if let Ok(Some(status)) = process.child.try_wait() {
                    panic!("taskpilot exited before it was ready: {status}");
                }
                let ready = client.get(format!("{}/readyz", process.base)).send().await;
                if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return;
                }
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        process
    }

    /// Returns once the process logs a line containing `text`.
    async fn until_logged(&mut self, text: &str) {
        guarded(&format!("the log line {text:?}"), async {
            while let Some(line) = self.log.recv().await {
                if line.contains(text) {
                    return;
                }
            }
            panic!("the process ended its log before {text:?}");
        })
        .await;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn a_claim_waiting_in_one_server_process_wakes_up_for_a_task_created_through_another() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let mut process = ServerProcess::start(db.url(), &app.client).await;
    until_listening(&db, 2).await;
    let request = app.client.post(format!("{}/api/tasks/claim", process.base));
    let claim = actix_web::rt::spawn(async move {
        let body = json!({ "workerId": "w", "waitMs": LONG_POLL_MS });
        TestApp::read(request.send_json(&body).await.unwrap()).await
    });
    process.until_logged(CLAIM_WAITS_LOG).await;

    let id = id_of(&app.create(json!({ "name": "across" })).await);

    let reply = answer(claim).await;
    let items = reply.assert_status(StatusCode::OK)["items"].as_array().unwrap();
    assert_eq!(ids(items), [id]);
    assert!(items[0]["leaseToken"].is_string());
    drop(process);
    app.stop().await;
}

// ---- batches and non-retryable failures ----

impl TestApp {
    /// `POST /api/tasks/complete` with `items`; the reply must be 200, its items are returned.
    async fn complete(&self, items: Value) -> Vec<Value> {
        let reply =
            self.send(Method::POST, "/api/tasks/complete", Some(json!({ "items": items }))).await;
        reply.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone()
    }

    /// Every task, following the pages.
    async fn list_all(&self) -> Vec<Value> {
        let mut listed = Vec::new();
        let mut path = "/api/tasks?limit=500".to_owned();
        loop {
            let page = self.get(&path).await;
            let page = page.assert_status(StatusCode::OK);
            listed.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(cursor) => path = format!("/api/tasks?limit=500&cursor={cursor}"),
                None => return listed,
            }
        }
    }
}

#[actix_web::test]
async fn a_batch_of_1000_tasks_is_created_in_order_and_listed() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let tasks: Vec<Value> = (0..1000)
        .map(|i| json!({ "name": "bulk", "queue": "batch", "payload": { "i": i }, "priority": i % 7 }))
        .collect();

    let reply = app.send(Method::POST, "/api/tasks/batch", Some(json!({ "tasks": tasks }))).await;
    let listed = app.list_all().await;

    let mut created = reply.assert_status(StatusCode::CREATED)["items"].as_array().unwrap().clone();
    assert_eq!(created.len(), 1000);
    for task in &mut created {
        assert_eq!(task.as_object_mut().unwrap().remove("created"), Some(json!(true)));
    }
    for (i, task) in created.iter().enumerate() {
        assert_eq!(task["payload"]["i"], i, "answers come in the order asked");
        assert_eq!(task["status"], "PENDING");
        assert_eq!(task["queue"], "batch");
        assert_micros_format(&task["createdAt"]);
    }
    let created_ids: BTreeSet<String> = created.iter().map(id_of).collect();
    let listed_ids: BTreeSet<String> = listed.iter().map(id_of).collect();
    assert_eq!(created_ids.len(), 1000);
    assert_eq!(listed_ids, created_ids);
    let one = app.get(&format!("/api/tasks/{}", id_of(&created[500]))).await;
    assert_eq!(one.assert_status(StatusCode::OK), &created[500]);
    let events = app.events(&id_of(&created[0])).await;
    assert_eq!(events.len(), 1, "creation is in each task's history: {events:?}");
    assert_eq!(events[0]["to"], "PENDING");
    app.stop().await;
}

#[actix_web::test]
async fn a_batch_with_one_invalid_task_creates_none_and_names_its_index() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let mut tasks: Vec<Value> = (0..10).map(|i| json!({ "name": format!("job-{i}") })).collect();
    tasks[7] = json!({ "name": "job-7", "maxAttempts": 0 });

    let reply = app.send(Method::POST, "/api/tasks/batch", Some(json!({ "tasks": tasks }))).await;

    reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(reply.body["index"], 7);
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("tasks[7].maxAttempts"), "{detail}");
    assert!(app.list_all().await.is_empty(), "nothing of the batch was created");
    app.stop().await;
}

#[actix_web::test]
async fn a_batch_completion_answers_each_outcome_on_its_own_under_the_fencing_rules() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    // The highest priority is claimed first, alone, and its lease left to expire.
    let tasks = json!([
        { "name": "expires", "priority": 10, "maxAttempts": 3 },
        { "name": "ok", "maxAttempts": 3 },
        { "name": "retry", "maxAttempts": 3 },
        { "name": "permanent", "maxAttempts": 3 },
        { "name": "superseded", "maxAttempts": 3 },
    ]);
    let reply = app.send(Method::POST, "/api/tasks/batch", Some(json!({ "tasks": tasks }))).await;
    let created = reply.assert_status(StatusCode::CREATED)["items"].as_array().unwrap().clone();
    let id: BTreeMap<&str, String> =
        created.iter().map(|t| (t["name"].as_str().unwrap(), id_of(t))).collect();
    let expiring = app.claim(json!({ "workerId": "w", "leaseSeconds": 5 })).await;
    assert_eq!(id_of(&expiring[0]), id["expires"]);
    let late_token = token_of(&expiring[0]);
    clock.advance(TimeDelta::seconds(6));
    app.wait_for(&id["expires"], |t| t["status"] == "PENDING").await;
    let claimed = app.claim(json!({ "workerId": "w", "limit": 10 })).await;
    assert_eq!(claimed.len(), 4, "the reaped task waits for its retry");
    let token: BTreeMap<String, String> = claimed.iter().map(|t| (id_of(t), token_of(t))).collect();
    let unknown = uuid::Uuid::now_v7().to_string();
    let items = json!([
        { "id": id["ok"], "leaseToken": token[&id["ok"]], "workerId": "w", "outcome": "succeeded", "result": { "done": true } },
        { "id": id["retry"], "leaseToken": token[&id["retry"]], "outcome": "failed", "errorMessage": "flaky" },
        { "id": id["permanent"], "leaseToken": token[&id["permanent"]], "outcome": "failed", "errorMessage": "bad input", "retryable": false },
        { "id": id["expires"], "leaseToken": late_token, "outcome": "succeeded" },
        { "id": id["superseded"], "leaseToken": "0f0f0000000040008000000000000000", "outcome": "succeeded" },
        { "id": unknown, "leaseToken": token[&id["ok"]], "outcome": "succeeded" },
    ]);

    let answers = app.complete(items.clone()).await;
    let replay = app.complete(json!([items[0].clone(), items[2].clone()])).await;

    let statuses: Vec<u64> = answers.iter().map(|a| a["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200, 409, 409, 404], "{answers:?}");
    let answer_ids: Vec<&str> = answers.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(
        answer_ids[..3],
        [id["ok"].as_str(), id["retry"].as_str(), id["permanent"].as_str()]
    );
    assert_eq!(answers[0]["task"]["status"], "SUCCEEDED");
    assert_eq!(answers[0]["task"]["result"], json!({ "done": true }));
    assert_eq!(answers[1]["task"]["status"], "PENDING");
    assert_eq!(answers[1]["task"]["retryState"], "RETRY_SCHEDULED");
    assert_eq!(answers[1]["task"]["lastError"], "flaky");
    assert_eq!(answers[2]["task"]["status"], "FAILED");
    assert_eq!(answers[2]["task"]["retryState"], "NON_RETRYABLE");
    assert_eq!(answers[2]["task"]["attemptCount"], 1);
    assert_eq!(answers[3]["error"]["code"], "LEASE_EXPIRED");
    assert_eq!(answers[3]["error"]["taskId"], id["expires"].as_str());
    assert_eq!(answers[4]["error"]["code"], "ATTEMPT_SUPERSEDED");
    assert_eq!(answers[5]["error"]["code"], "TASK_NOT_FOUND");
    assert_eq!(answers[5]["id"], unknown.as_str());
    assert_eq!(replay[0], answers[0], "a replay answers the stored task");
    assert_eq!(replay[1], answers[1 + 1]);
    let superseded = app.get(&format!("/api/tasks/{}", id["superseded"])).await;
    assert_eq!(superseded.assert_status(StatusCode::OK)["status"], "RUNNING");
    let stats = app.get("/api/stats/rejections").await;
    let stats = stats.assert_status(StatusCode::OK);
    // Each refusal is recorded once, as a single call's would be.
    assert_eq!(
        stats["items"],
        json!([
            { "call": "SUCCEED", "code": "ATTEMPT_SUPERSEDED", "count": 1 },
            { "call": "SUCCEED", "code": "LEASE_EXPIRED", "count": 1 },
        ])
    );
    assert_eq!(stats["staleSuccesses"], 2, "{stats}");
    let events = app.events(&id["ok"]).await;
    let succeeded = events.iter().filter(|e| e["to"] == "SUCCEEDED").count();
    assert_eq!(succeeded, 1, "the replay is not a second transition: {events:?}");
    let typed: taskpilot_api::CompleteTasksResponse =
        serde_json::from_value(json!({ "items": answers })).unwrap();
    assert_eq!(
        typed.items[2].task.as_ref().unwrap().retry_state,
        taskpilot_api::RetryState::NonRetryable
    );
    assert_eq!(
        typed.items[3].error.as_ref().unwrap().problem_code(),
        Some(taskpilot_api::ProblemCode::LeaseExpired)
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_fail_with_retryable_false_fails_the_task_at_once_with_attempts_left() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(1));
    let id = id_of(&app.create(json!({ "name": "hopeless", "maxAttempts": 5 })).await);
    let token = token_of(&app.claim(json!({ "workerId": "w" })).await[0]);

    let failed = app
        .transition(
            &id,
            "fail",
            Some(json!({ "workerId": "w", "leaseToken": token, "errorMessage": "no such user", "retryable": false })),
        )
        .await;

    let failed = failed.assert_status(StatusCode::OK);
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["retryState"], "NON_RETRYABLE");
    assert_eq!(failed["attemptCount"], 1);
    assert_eq!(failed["maxAttempts"], 5);
    assert_eq!(failed["lastError"], "no such user");
    assert!(failed["nextRunAt"].is_null());
    assert!(app.claim(json!({ "workerId": "w" })).await.is_empty(), "no retry is scheduled");
    let stored = app.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(stored.assert_status(StatusCode::OK), failed);
    app.stop().await;
}

// --- Release ---------------------------------------------------------------------------------

#[actix_web::test]
async fn a_released_task_is_claimable_again_at_once_and_its_token_speaks_for_nothing_more() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(60));
    let id = id_of(&app.create(json!({ "name": "handed-back", "maxAttempts": 3 })).await);
    let first = app.claim(json!({ "workerId": "w1" })).await;
    let token = token_of(&first[0]);
    let release = json!({ "workerId": "w1", "leaseToken": token });

    let released = app.transition(&id, "release", Some(release.clone())).await;
    let again = app.claim(json!({ "workerId": "w2" })).await;
    let replay = app.transition(&id, "release", Some(release)).await;
    let late_success = app
        .transition(&id, "succeed", Some(json!({ "workerId": "w1", "leaseToken": token })))
        .await;

    let released = released.assert_status(StatusCode::OK);
    assert_eq!(released["status"], "PENDING");
    assert_eq!(released["retryState"], "NONE");
    assert_eq!(
        (released["attempt"].as_u64(), released["attemptCount"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(released["nextRunAt"].is_null() && released["lastError"].is_null(), "{released}");
    assert_eq!(ids(&again), std::slice::from_ref(&id), "claimable again at once, no backoff");
    assert_eq!(again[0]["attempt"], 2);
    assert_eq!(again[0]["attemptCount"], 0, "the release counted no failure");
    assert_ne!(token_of(&again[0]), token);
    let replay = replay.assert_status(StatusCode::OK);
    assert_eq!((&replay["status"], &replay["workerId"]), (&json!("RUNNING"), &json!("w2")));
    assert!(replay.get("leaseToken").is_none(), "the new attempt's token stays secret");
    late_success.assert_problem(StatusCode::CONFLICT, "OUTCOME_CONFLICT");
    assert_eq!(late_success.body["recordedOutcome"], "RELEASED");
    let events = app.events(&id).await;
    let transitions: Vec<(&Value, &Value, &Value)> = events
        .iter()
        .filter(|e| e["rejectedCode"].is_null())
        .map(|e| (&e["from"], &e["to"], &e["workerId"]))
        .collect();
    assert_eq!(
        transitions,
        [
            (&Value::Null, &json!("PENDING"), &Value::Null),
            (&json!("PENDING"), &json!("RUNNING"), &json!("w1")),
            (&json!("RUNNING"), &json!("PENDING"), &json!("w1")),
            (&json!("PENDING"), &json!("RUNNING"), &json!("w2")),
        ]
    );
    assert!(events[2]["error"].is_null(), "a release records no error: {events:?}");
    let stats = app.get("/api/stats/rejections").await;
    let stats = stats.assert_status(StatusCode::OK);
    assert_eq!(stats["staleSuccesses"], 0, "a success after a release is no second run");
    app.stop().await;
}

#[actix_web::test]
async fn releasing_the_last_attempt_does_not_fail_the_task_and_a_batch_can_release_too() {
    let db = TestDatabase::new();
    let (app, clock) = TestApp::with_clock(&db);
    let only = id_of(&app.create(json!({ "name": "one-shot", "maxAttempts": 1 })).await);
    let retried = id_of(&app.create(json!({ "name": "second-try", "maxAttempts": 2 })).await);
    let claimed = app.claim(json!({ "workerId": "w", "limit": 2 })).await;
    let token: BTreeMap<String, String> = claimed.iter().map(|t| (id_of(t), token_of(t))).collect();
    // `retried` fails once, so that its next attempt is its last.
    let failed = app
        .transition(
            &retried,
            "fail",
            Some(
                json!({ "workerId": "w", "leaseToken": token[&retried], "errorMessage": "flaky" }),
            ),
        )
        .await;
    failed.assert_status(StatusCode::OK);
    clock.advance(TimeDelta::seconds(20));
    let last = app.claim(json!({ "workerId": "w" })).await;
    assert_eq!((id_of(&last[0]), &last[0]["attempt"]), (retried.clone(), &json!(2)));

    let single = app
        .transition(&only, "release", Some(json!({ "workerId": "w", "leaseToken": token[&only] })))
        .await;
    let batch = app
        .complete(json!([
            { "id": retried, "leaseToken": token_of(&last[0]), "workerId": "w", "outcome": "released" },
        ]))
        .await;
    let again = app.claim(json!({ "workerId": "w2", "limit": 10 })).await;

    let single = single.assert_status(StatusCode::OK);
    assert_eq!((&single["status"], &single["retryState"]), (&json!("PENDING"), &json!("NONE")));
    assert_eq!(single["attemptCount"], 0);
    assert_eq!(batch[0]["status"], 200, "{batch:?}");
    let released = &batch[0]["task"];
    assert_eq!(released["status"], "PENDING", "not FAILED: a release is no failure");
    assert_eq!(released["retryState"], "RETRY_SCHEDULED");
    assert_eq!(released["attemptCount"], 1);
    assert_eq!(released["lastError"], "flaky");
    assert_eq!(time(&released["nextRunAt"]), time(&released["updatedAt"]), "due at once");
    let mut attempts: Vec<(String, u64, u64)> = again
        .iter()
        .map(|t| (id_of(t), t["attempt"].as_u64().unwrap(), t["attemptCount"].as_u64().unwrap()))
        .collect();
    attempts.sort();
    let mut expected = vec![(only.clone(), 2, 0), (retried.clone(), 3, 1)];
    expected.sort();
    assert_eq!(attempts, expected, "both claimable again at once");
    app.stop().await;
}

#[actix_web::test]
async fn a_waiting_claim_wakes_up_when_a_task_is_released() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(60));
    let id = id_of(&app.create(json!({ "name": "handed-back" })).await);
    let token = token_of(&app.claim(json!({ "workerId": "w1" })).await[0]);
    until_listening(&db, 1).await;
    let claim = app.waiting_claim(json!({ "workerId": "w2" })).await;

    let released = app
        .transition(&id, "release", Some(json!({ "workerId": "w1", "leaseToken": token })))
        .await;

    released.assert_status(StatusCode::OK);
    let reply = answer(claim).await;
    let body = reply.assert_status(StatusCode::OK);
    assert_eq!(ids(body["items"].as_array().unwrap()), [id]);
    assert_eq!(body["items"][0]["attempt"], 2);
    app.stop().await;
}

#[actix_web::test]
async fn a_finished_task_past_its_retention_is_pruned_and_then_answers_404_like_any_unknown_task() {
    let db = TestDatabase::new();
    let retention = taskpilot_domain::Retention::new(
        taskpilot_domain::KeepFor::Duration(TimeDelta::seconds(1)),
        taskpilot_domain::KeepFor::Forever,
        taskpilot_domain::KeepFor::Forever,
    );
    let service = service(
        pool(db.url(), Duration::from_secs(5)),
        Arc::new(SystemClock),
        TimeDelta::seconds(1),
    )
    .with_retention(retention);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http = HttpConfig {
        workers: 2,
        shutdown_timeout: Duration::from_secs(1),
        prune_interval: Duration::from_millis(50),
        ..HttpConfig::default()
    };
    let access = AccessService::new(Arc::new(MockTokenRepository::new()), Arc::new(SystemClock));
    let server =
        run(service, Gate::new(access, AuthMode::Off, true), http, listener, None).unwrap();
    let (handle, hub) = (server.handle(), server.hub());
    actix_web::rt::spawn(server.into_future());
    let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
    let app = TestApp { base, client, handle, hub };
    let done = id_of(&app.create(json!({ "name": "send-receipt" })).await);
    let waiting = id_of(&app.create(json!({ "name": "send-later" })).await);
    let cancelled = id_of(&app.create(json!({ "name": "never-mind" })).await);
    app.transition(&done, "start", Some(json!({ "workerId": "w1" })))
        .await
        .assert_status(StatusCode::OK);
    app.transition(&done, "succeed", Some(json!({ "workerId": "w1" })))
        .await
        .assert_status(StatusCode::OK);
    app.transition(&cancelled, "cancel", None).await.assert_status(StatusCode::OK);

    // Nothing to wait on but the task itself: poll until the pruner has deleted it.
    let gone = guarded("the pruning of the succeeded task", async {
        loop {
            let reply = app.get(&format!("/api/tasks/{done}")).await;
            if reply.status == StatusCode::NOT_FOUND {
                return reply;
            }
            reply.assert_status(StatusCode::OK);
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    gone.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    app.get(&format!("/api/tasks/{done}/events"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    let kept = app.get(&format!("/api/tasks/{waiting}")).await;
    assert_eq!(kept.assert_status(StatusCode::OK)["status"], "PENDING", "not finished: kept");
    let kept = app.get(&format!("/api/tasks/{cancelled}")).await;
    assert_eq!(kept.assert_status(StatusCode::OK)["status"], "CANCELLED", "kept forever");
    app.stop().await;
}

/// The queue named `name` in a `GET /api/queues` answer.
fn queue_in<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {list}"))
}

fn reason_codes(explained: &Value) -> Vec<&str> {
    explained["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect()
}

#[actix_web::test]
async fn a_paused_queue_gives_claims_nothing_takes_tasks_and_its_resume_wakes_a_claim_on_another_server(
) {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(10));
    let other = TestApp::on(&db, TimeDelta::seconds(10));

    let paused = app.send(Method::PUT, "/api/queues/emails/pause", None).await;
    let paused = paused.assert_status(StatusCode::OK).clone();
    assert_eq!((paused["name"].as_str(), paused["paused"].as_bool()), (Some("emails"), Some(true)));
    // No token on this server: the caller is open access, and that is the name recorded.
    assert_eq!(paused["pausedBy"], "open-access");
    assert_micros_format(&paused["pausedAt"]);
    assert_eq!(paused["version"], 1);
    let again = app.send(Method::PUT, "/api/queues/emails/pause", None).await;
    assert_eq!(again.assert_status(StatusCode::OK)["pausedAt"], paused["pausedAt"], "idempotent");

    let waiting_task = app.create(json!({"name": "send", "queue": "emails"})).await;
    let id = id_of(&waiting_task);
    app.create(json!({"name": "text", "queue": "sms"})).await;
    assert!(app.claim(json!({"workerId": "w", "queues": ["emails"]})).await.is_empty());
    let sms = app.claim(json!({"workerId": "w"})).await;
    assert_eq!(sms.iter().map(|t| t["queue"].as_str().unwrap()).collect::<Vec<_>>(), ["sms"]);

    let explained = app.get(&format!("/api/tasks/{id}/explain")).await;
    let explained = explained.assert_status(StatusCode::OK).clone();
    assert_eq!(
        (explained["runnable"].as_bool(), explained["status"].as_str()),
        (Some(false), Some("PENDING"))
    );
    assert_eq!(reason_codes(&explained), ["QUEUE_PAUSED"]);
    assert_eq!(explained["reasons"][0]["by"], "open-access");
    assert_eq!(explained["reasons"][0]["since"], paused["pausedAt"]);

    let listed = app.get("/api/queues").await;
    let listed = listed.assert_status(StatusCode::OK);
    let emails = queue_in(listed, "emails");
    assert_eq!(
        (emails["paused"].as_bool(), emails["pausedBy"].as_str()),
        (Some(true), Some("open-access"))
    );
    assert_eq!(emails["counts"]["runnable"], 1);
    assert_eq!(emails["createdLastMinute"], 1);
    assert!(emails["oldestRunnableAgeSeconds"].as_f64().unwrap() >= 0.0);
    let sms_queue = queue_in(listed, "sms");
    assert_eq!(
        (sms_queue["counts"]["running"].as_u64(), sms_queue["runningLeases"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(sms_queue["paused"], false);
    assert!(sms_queue["pausedBy"].is_null());
    assert_micros_format(&sms_queue["lastClaimAt"]);
    let one = app.get("/api/queues/emails").await;
    let mut one = one.assert_status(StatusCode::OK).clone();
    let mut emails = emails.clone();
    // The age is as of each answer; the rest is the same queue.
    for q in [&mut one, &mut emails] {
        q.as_object_mut().unwrap().remove("oldestRunnableAgeSeconds");
    }
    assert_eq!(one, emails, "one queue as the list shows it");

    // A claim waits on the other server; the resume, sent to this one, wakes it through
    // PostgreSQL's notification.
    let claim = other.waiting_claim(json!({"workerId": "w2", "queues": ["emails"]})).await;
    let resumed = app.send(Method::PUT, "/api/queues/emails/resume", None).await;
    let resumed = resumed.assert_status(StatusCode::OK);
    assert_eq!((resumed["paused"].as_bool(), resumed["version"].as_u64()), (Some(false), Some(2)));
    assert!(resumed["pausedBy"].is_null() && resumed["pausedAt"].is_null());
    let woken = answer(claim).await;
    let items = woken.assert_status(StatusCode::OK)["items"].as_array().unwrap().clone();
    assert_eq!(items.iter().map(id_of).collect::<Vec<_>>(), [id.as_str()]);

    let explained = app.get(&format!("/api/tasks/{id}/explain")).await;
    let explained = explained.assert_status(StatusCode::OK);
    assert_eq!(reason_codes(explained), ["RUNNING"]);
    let running = &explained["reasons"][0];
    assert_eq!(running["workerId"], "w2");
    assert_eq!(running["leaseExpiresAt"], items[0]["leaseExpiresAt"]);
    assert!(running["message"].as_str().unwrap().contains("worker w2 holds it"), "{running}");

    other.stop().await;
    app.stop().await;
}

#[actix_web::test]
async fn explain_says_when_a_delayed_task_runs_and_why_a_finished_one_will_not() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(10));
    let run_at = "2100-01-01T00:00:00.000000Z";
    let delayed = app.create(json!({"name": "later", "runAt": run_at})).await;
    let explained = app.get(&format!("/api/tasks/{}/explain", id_of(&delayed))).await;
    let explained = explained.assert_status(StatusCode::OK);
    assert_eq!(reason_codes(explained), ["SCHEDULED"]);
    assert_eq!(explained["reasons"][0]["at"], run_at);
    assert_eq!(explained["runnable"], false);
    assert!(explained["summary"].as_str().unwrap().contains(run_at), "{explained}");

    let now = app.create(json!({"name": "now"})).await;
    let explained = app.get(&format!("/api/tasks/{}/explain", id_of(&now))).await;
    let explained = explained.assert_status(StatusCode::OK);
    assert_eq!(explained["runnable"], true);
    assert!(reason_codes(explained).iter().all(|c| *c == "NO_RECENT_CLAIM"), "{explained}");

    let cancelled = app.transition(&id_of(&now), "cancel", None).await;
    cancelled.assert_status(StatusCode::OK);
    let explained = app.get(&format!("/api/tasks/{}/explain", id_of(&now))).await;
    let explained = explained.assert_status(StatusCode::OK);
    assert_eq!(reason_codes(explained), ["CANCELLED"]);
    assert_eq!(explained["status"], "CANCELLED");

    let missing = app.get("/api/tasks/00000000-0000-7000-8000-000000000000/explain").await;
    missing.assert_problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND");
    let unknown = app.get("/api/queues/never-used").await;
    unknown.assert_problem(StatusCode::NOT_FOUND, "QUEUE_NOT_FOUND");
    assert_eq!(unknown.body["queue"], "never-used");
    let bad = app.send(Method::PUT, "/api/queues/Not%20A%20Queue/pause", None).await;
    bad.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    app.stop().await;
}

#[actix_web::test]
async fn pause_and_resume_honour_if_match_against_the_queues_etag() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db, TimeDelta::seconds(10));
    let put = |action: &'static str, if_match: &'static str| {
        let request = app
            .client
            .put(format!("{}/api/queues/audits/{action}", app.base))
            .insert_header(("If-Match", if_match));
        async move { TestApp::read(request.send().await.unwrap()).await }
    };

    let paused = put("pause", "\"0\"").await;
    paused.assert_status(StatusCode::OK);
    assert_eq!(paused.header("etag"), "\"1\"");
    let stale = put("resume", "\"0\"").await;
    stale.assert_problem(StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED");
    assert_eq!(stale.body["currentVersion"], 1);
    let listed = app.get("/api/queues/audits").await;
    assert_eq!(
        listed.assert_status(StatusCode::OK)["paused"],
        true,
        "the refused resume did nothing"
    );
    assert_eq!(listed.header("etag"), "\"1\"");

    let resumed = put("resume", "\"7\", \"1\"").await;
    assert_eq!(resumed.assert_status(StatusCode::OK)["paused"], false);
    assert_eq!(resumed.header("etag"), "\"2\"");
    put("pause", "*").await.assert_status(StatusCode::OK);
    put("pause", "three").await.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    app.stop().await;
}
