//! `Idempotency-Key` on the creates, over HTTP against the real server and PostgreSQL (a
//! fresh database per test): a request sent again answers the first answer again, a key
//! used for another request is refused, racing requests with one key create once.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::Duration;

use actix_web::http::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use actix_web::http::StatusCode;
use awc::http::header::HeaderValue;
use chrono::TimeDelta;
use serde_json::Value;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::{HttpConfig, ServerHandle};

struct Server {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap()
    }

    fn replayed(&self) -> Option<&str> {
        self.headers.get("Idempotent-Replayed").map(|v| v.to_str().unwrap())
    }

    fn assert_problem(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.headers.get(CONTENT_TYPE).unwrap(), "application/problem+json");
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        body
    }
}

impl Server {
    fn on(db: &TestDatabase) -> Self {
        let http = HttpConfig { workers: 2, ..HttpConfig::default() };
        let (base, handle) = common::spawn_server(db, TimeDelta::seconds(60), 3, http);
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Self { base, client, handle }
    }

    /// POSTs `body` as written (so tests control spacing and member order) with `key`.
    async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Reply {
        let key = key.map(|k| HeaderValue::from_str(k).unwrap());
        send(self.client.clone(), format!("{}{path}", self.base), key, body.to_owned()).await
    }

    async fn post_with_raw_key(&self, key: HeaderValue, body: &str) -> Reply {
        send(self.client.clone(), format!("{}/api/tasks", self.base), Some(key), body.to_owned())
            .await
    }

    async fn task_count(&self) -> usize {
        let mut response =
            self.client.get(format!("{}/api/tasks?limit=500", self.base)).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        body["items"].as_array().unwrap().len()
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn send(client: awc::Client, url: String, key: Option<HeaderValue>, body: String) -> Reply {
    let mut request = client.post(url).insert_header((CONTENT_TYPE, "application/json"));
    if let Some(key) = key {
        request = request.insert_header(("Idempotency-Key", key));
    }
    let mut response = request.send_body(body).await.unwrap();
    let bytes = response.body().await.unwrap();
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

const BODY: &str = r#"{"name": "send-email", "payload": {"to": "ada@example.com", "n": 1}}"#;
/// [`BODY`] spaced and ordered differently: the same request.
const SAME_BODY: &str = r#"{"payload":{"n":1,"to":"ada@example.com"},"name":"send-email"}"#;

#[actix_web::test]
async fn the_same_create_sent_again_answers_the_first_answer_again_and_creates_once() {
    let db = TestDatabase::new();
    let server = Server::on(&db);

    let first = server.post("/api/tasks", Some("order-42"), BODY).await;
    let again = server.post("/api/tasks", Some("order-42"), SAME_BODY).await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.replayed(), None);
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.replayed(), Some("true"));
    assert_eq!(again.text, first.text, "the first body, byte for byte");
    assert_eq!(again.headers.get(LOCATION), first.headers.get(LOCATION));
    assert_eq!(again.headers.get(CONTENT_TYPE).unwrap(), "application/json");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first.headers.get(LOCATION).unwrap(), &format!("/api/tasks/{id}"));
    assert_eq!(server.task_count().await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn a_key_used_for_another_request_is_refused() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let first = server.post("/api/tasks", Some("order-42"), BODY).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);

    let other_body = server.post("/api/tasks", Some("order-42"), r#"{"name": "other"}"#).await;
    let other_path = server
        .post("/api/tasks/batch", Some("order-42"), &format!(r#"{{"tasks": [{BODY}]}}"#))
        .await;

    for reply in [other_body, other_path] {
        let problem =
            reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
        assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"), "{problem}");
    }
    assert_eq!(server.task_count().await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn without_a_key_every_create_creates() {
    let db = TestDatabase::new();
    let server = Server::on(&db);

    for _ in 0..2 {
        let reply = server.post("/api/tasks", None, BODY).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        assert_eq!(reply.replayed(), None);
    }

    assert_eq!(server.task_count().await, 2);
    server.stop().await;
}

#[actix_web::test]
async fn a_refused_create_keeps_no_key() {
    let db = TestDatabase::new();
    let server = Server::on(&db);

    let refused = server.post("/api/tasks", Some("k"), r#"{"name": "x", "maxAttempts": 0}"#).await;
    let other = server.post("/api/tasks", Some("k"), BODY).await;

    refused.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(other.status, StatusCode::CREATED, "the key is still free: {}", other.text);
    assert_eq!(other.replayed(), None);
    server.stop().await;
}

#[actix_web::test]
async fn a_key_that_is_not_1_to_255_visible_ascii_characters_is_refused_naming_the_header() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let bad = [
        HeaderValue::from_static(""),
        HeaderValue::from_static("two words"),
        HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
    ];

    for key in bad {
        let reply = server.post_with_raw_key(key.clone(), BODY).await;
        let problem = reply.assert_problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
        assert!(problem["detail"].as_str().unwrap().starts_with("Idempotency-Key"), "{key:?}");
    }
    let longest = server.post("/api/tasks", Some(&"k".repeat(255)), BODY).await;

    assert_eq!(longest.status, StatusCode::CREATED, "{}", longest.text);
    assert_eq!(server.task_count().await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn racing_creates_with_one_new_key_create_one_task() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let racers = 8;

    let url = format!("{}/api/tasks", server.base);
    let racing: Vec<_> = (0..racers)
        .map(|_| {
            let key = Some(HeaderValue::from_static("race"));
            actix_web::rt::spawn(send(server.client.clone(), url.clone(), key, BODY.to_owned()))
        })
        .collect();
    let mut replies = Vec::new();
    for reply in racing {
        replies.push(reply.await.unwrap());
    }

    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    let fresh = created.iter().filter(|r| r.replayed().is_none()).count();
    assert_eq!(fresh, 1, "exactly one created");
    for reply in &replies {
        if reply.status == StatusCode::CREATED {
            assert_eq!(reply.text, created[0].text, "a replay of the one task");
        } else {
            reply.assert_problem(StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_USE");
        }
    }
    assert_eq!(server.task_count().await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn a_batch_sent_again_answers_its_first_answer_again() {
    let db = TestDatabase::new();
    let server = Server::on(&db);
    let batch = format!(r#"{{"tasks": [{BODY}, {{"name": "second"}}]}}"#);

    let first = server.post("/api/tasks/batch", Some("batch-1"), &batch).await;
    let again = server.post("/api/tasks/batch", Some("batch-1"), &batch).await;

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json()["items"].as_array().unwrap().len(), 2);
    assert_eq!((again.status, again.replayed()), (StatusCode::CREATED, Some("true")));
    assert_eq!(again.text, first.text);
    assert_eq!(server.task_count().await, 2);
    server.stop().await;
}
