//! `uniqueKey` on tasks, over HTTP against the real server and PostgreSQL (a fresh database
//! per test): while a task with the key is PENDING or RUNNING, a create with it answers that
//! task (200, `created: false`) or, asked to, 409 UNIQUE_KEY_HELD naming it; per item in
//! batches; a rerun into a held key is a 409; the key is free again once its holder finished.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::http::{Method, StatusCode};
use chrono::TimeDelta;
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::{HttpConfig, ServerHandle};

struct Server {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    location: Option<String>,
    replayed: Option<String>,
    content_type: Option<String>,
    body: Value,
}

impl Reply {
    fn assert_problem(&self, status: StatusCode, code: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(self.body["code"], code, "{}", self.body);
        &self.body
    }

    fn id(&self) -> &str {
        self.body["id"].as_str().unwrap()
    }
}

impl Server {
    fn on(db: &TestDatabase) -> Self {
        let http = HttpConfig { workers: 2, ..HttpConfig::default() };
        let (base, handle) = common::spawn_server(db, TimeDelta::seconds(60), 1, http);
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Self { base, client, handle }
    }

    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Value) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header((CONTENT_TYPE, "application/json"));
        if let Some(key) = key {
            request = request.insert_header(("Idempotency-Key", key));
        }
        let mut response = request.send_body(body.to_string()).await.unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &awc::http::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (location, replayed, content_type) = (
            header(LOCATION),
            header("Idempotent-Replayed".parse().unwrap()),
            header(CONTENT_TYPE),
        );
        let bytes = response.body().await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status: response.status(), location, replayed, content_type, body }
    }

    async fn create(&self, body: Value) -> Reply {
        self.call(Method::POST, "/api/tasks", None, body).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, None, body).await
    }

    async fn get_task(&self, id: &str) -> Value {
        self.call(Method::GET, &format!("/api/tasks/{id}"), None, Value::Null).await.body
    }

    /// Claims the one runnable task of `queue` and reports it succeeded.
    async fn run_to_success(&self, queue: &str, id: &str) {
        let claimed = self
            .call(
                Method::POST,
                "/api/tasks/claim",
                None,
                json!({"workerId": "w1", "queues": [queue], "limit": 1}),
            )
            .await;
        assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
        let task = &claimed.body["items"][0];
        assert_eq!(task["id"], id, "{}", claimed.body);
        let token = task["leaseToken"].as_str().unwrap();
        let done = self
            .put(
                &format!("/api/tasks/{id}/succeed"),
                json!({"workerId": "w1", "leaseToken": token}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert_eq!(done.body["status"], "SUCCEEDED");
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

#[actix_web::test]
async fn a_held_key_answers_the_holder_with_200_or_409_when_asked_to_reject() {
    let db = TestDatabase::new();
    let server = Server::on(&db);

    let first = server.create(json!({"name": "sync", "uniqueKey": "account-7"})).await;
    let again = server.create(json!({"name": "sync-again", "uniqueKey": "account-7"})).await;
    let rejected = server
        .create(json!({"name": "sync", "uniqueKey": "account-7", "onConflict": "reject"}))
        .await;
    let elsewhere =
        server.create(json!({"name": "sync", "uniqueKey": "account-7", "queue": "other"})).await;
    let plain = server.create(json!({"name": "no-key"})).await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["created"], true);
    assert_eq!(first.body["uniqueKey"], "account-7");
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.id(), first.id());
    assert_eq!(again.body["name"], "sync", "the holder, not the request");
    assert_eq!(again.location.as_deref(), Some(format!("/api/tasks/{}", first.id()).as_str()));
    let problem = rejected.assert_problem(StatusCode::CONFLICT, "UNIQUE_KEY_HELD");
    assert_eq!(problem["taskId"], first.id());
    assert_eq!(problem["title"], "Unique key held");
    assert_eq!(elsewhere.status, StatusCode::CREATED, "keys are per queue");
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_eq!(plain.body["uniqueKey"], Value::Null);
    let read = server.get_task(first.id()).await;
    assert_eq!(read["uniqueKey"], "account-7");
    assert!(read.get("created").is_none(), "created is on create answers only");
    server.stop().await;
}

#[actix_web::test]
async fn an_invalid_unique_key_or_on_conflict_is_a_400_naming_the_field() {
    let db = TestDatabase::new();
    let server = Server::on(&db);

    let cases = [
        (json!({"name": "n", "uniqueKey": ""}), "VALIDATION_FAILED", "uniqueKey"),
        (json!({"name": "n", "uniqueKey": "k".repeat(256)}), "VALIDATION_FAILED", "uniqueKey"),
        (json!({"name": "n", "uniqueKey": "a\nb"}), "VALIDATION_FAILED", "uniqueKey"),
        (json!({"name": "n", "uniqueKey": 7}), "MALFORMED_REQUEST", "uniqueKey"),
        (json!({"name": "n", "onConflict": "ignore"}), "MALFORMED_REQUEST", "onConflict"),
    ];
    for (body, code, field) in cases {
        let reply = server.create(body.clone()).await;
        let problem = reply.assert_problem(StatusCode::BAD_REQUEST, code);
        assert!(problem["detail"].as_str().unwrap().contains(field), "{body}: {problem}");
    }
    server.stop().await;
}

#[actix_web::test]
async fn batch_items_answer_created_true_or_false_and_a_rejecting_item_refuses_the_batch() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let holder = server.create(json!({"name": "sync", "uniqueKey": "k"})).await;
    let batch =
        |tasks: Value| server.call(Method::POST, "/api/tasks/batch", None, json!({"tasks": tasks}));

    let mixed = batch(json!([{"name": "a", "uniqueKey": "fresh"}, {"name": "b", "uniqueKey": "k"}, {"name": "c"}])).await;
    let refused =
        batch(json!([{"name": "a", "uniqueKey": "other"}, {"name": "b", "uniqueKey": "k", "onConflict": "reject"}]))
            .await;
    let repeated = batch(json!([
        {"name": "a", "uniqueKey": "twice"},
        {"name": "b", "uniqueKey": "twice"},
        {"name": "c", "uniqueKey": "twice", "onConflict": "reject"},
    ]))
    .await;
    let repeated_once =
        batch(json!([{"name": "a", "uniqueKey": "twice"}, {"name": "b", "uniqueKey": "twice"}]))
            .await;

    assert_eq!(mixed.status, StatusCode::CREATED, "{}", mixed.body);
    let items = mixed.body["items"].as_array().unwrap();
    let created: Vec<&Value> = items.iter().map(|i| &i["created"]).collect();
    assert_eq!(created, [&json!(true), &json!(false), &json!(true)]);
    assert_eq!(items[1]["id"], holder.id());
    let problem = refused.assert_problem(StatusCode::CONFLICT, "UNIQUE_KEY_HELD");
    assert_eq!((&problem["taskId"], &problem["index"]), (&json!(holder.id()), &json!(1)));
    let problem = repeated.assert_problem(StatusCode::CONFLICT, "UNIQUE_KEY_HELD");
    assert_eq!((&problem["index"], &problem["heldByIndex"]), (&json!(2), &json!(0)), "{problem}");
    assert_eq!(repeated_once.status, StatusCode::CREATED, "{}", repeated_once.body);
    let items = repeated_once.body["items"].as_array().unwrap();
    assert_eq!((&items[0]["created"], &items[1]["created"]), (&json!(true), &json!(false)));
    assert_eq!(items[1]["id"], items[0]["id"]);
    let listed = server.call(Method::GET, "/api/tasks?limit=100", None, Value::Null).await;
    let listed = listed.body["items"].as_array().unwrap().len();
    assert_eq!(listed, 4, "holder, fresh, c and one of the repeated key only");
    server.stop().await;
}

#[actix_web::test]
async fn a_rerun_into_a_held_key_is_a_409_and_a_bulk_rerun_skips_it() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let old = server.create(json!({"name": "sync", "uniqueKey": "k"})).await;
    let cancelled = server.put(&format!("/api/tasks/{}/cancel", old.id()), Value::Null).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    let holder = server.create(json!({"name": "sync", "uniqueKey": "k"})).await;
    assert_eq!(holder.status, StatusCode::CREATED, "a cancelled task holds no key");

    let rerun = server.put(&format!("/api/tasks/{}/rerun", old.id()), Value::Null).await;
    let bulk = server
        .call(Method::POST, "/api/tasks/bulk", None, json!({"action": "rerun", "ids": [old.id()]}))
        .await;

    let problem = rerun.assert_problem(StatusCode::CONFLICT, "UNIQUE_KEY_HELD");
    assert_eq!(problem["taskId"], holder.id());
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.body);
    assert_eq!((&bulk.body["done"], &bulk.body["skipped"]), (&json!(0), &json!(1)));
    assert_eq!(bulk.body["results"][0]["outcome"], "SKIPPED");
    assert_eq!(bulk.body["results"][0]["code"], "UNIQUE_KEY_HELD");
    assert_eq!(server.get_task(old.id()).await["status"], "CANCELLED");
    server.stop().await;
}

#[actix_web::test]
async fn once_the_holder_succeeded_the_same_key_creates_a_new_task() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let first = server.create(json!({"name": "sync", "queue": "q", "uniqueKey": "k"})).await;
    server.run_to_success("q", first.id()).await;

    let next = server.create(json!({"name": "sync", "queue": "q", "uniqueKey": "k"})).await;

    assert_eq!(next.status, StatusCode::CREATED, "{}", next.body);
    assert_eq!(next.body["created"], true);
    assert_ne!(next.id(), first.id());
    server.stop().await;
}

#[actix_web::test]
async fn an_idempotent_create_that_met_a_held_key_answers_its_200_again() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let holder = server.create(json!({"name": "sync", "uniqueKey": "k"})).await;
    let body = json!({"name": "sync", "uniqueKey": "k"});

    let first = server.call(Method::POST, "/api/tasks", Some("req-1"), body.clone()).await;
    let again = server.call(Method::POST, "/api/tasks", Some("req-1"), body).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!((first.id(), &first.body["created"]), (holder.id(), &json!(false)));
    assert_eq!(first.replayed, None);
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.replayed.as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
    server.stop().await;
}
