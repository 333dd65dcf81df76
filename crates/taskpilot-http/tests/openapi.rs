//! The OpenAPI document and the API page, from the real server on a fresh database: the
//! document lists exactly the routes the server registers, every operation documents the
//! errors it can answer, and the page loads nothing but this server's files.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use chrono::TimeDelta;
use serde_json::Value;
use taskpilot_api::ProblemCode;
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::openapi::needs_token;
use taskpilot_http::routes::endpoints;
use taskpilot_http::{HttpConfig, ServerHandle};

struct TestApp {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

impl TestApp {
    fn on(db: &TestDatabase) -> Self {
        let http = HttpConfig {
            workers: 1,
            shutdown_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        };
        let (base, handle) = common::spawn_server(db, TimeDelta::seconds(1), 25, http);
        let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
        Self { base, client, handle }
    }

    /// Sends `method path` without a body: status, content type and body.
    async fn send(&self, method: Method, path: &str) -> (StatusCode, String, Vec<u8>) {
        let mut response =
            self.client.request(method, format!("{}{path}", self.base)).send().await.unwrap();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.body().limit(16 * 1024 * 1024).await.unwrap().to_vec();
        (response.status(), content_type, body)
    }

    async fn document(&self) -> Value {
        let (status, content_type, body) = self.send(Method::GET, "/api/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        serde_json::from_slice(&body).unwrap()
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `(METHOD, path)` of every operation the document lists.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// The path with each `{parameter}` filled in with a value the route reads.
fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::now_v7().to_string()).replace("{file}", "swagger-ui.css")
}

#[actix_web::test]
async fn the_document_lists_exactly_the_routes_the_server_registers() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db);

    let document = app.document().await;

    let registered: BTreeSet<(String, String)> =
        endpoints().iter().map(|e| (e.method.to_string(), e.path.to_owned())).collect();
    let documented = operations(&document);
    assert_eq!(
        documented,
        registered,
        "only documented: {:?}; only registered: {:?}",
        documented.difference(&registered).collect::<Vec<_>>(),
        registered.difference(&documented).collect::<Vec<_>>(),
    );
    // And the server answers each of them, and refuses every other method on the same path
    // with the documented ones in Allow.
    for (method, path) in &documented {
        let (status, _, body) =
            app.send(Method::from_bytes(method.as_bytes()).unwrap(), &concrete(path)).await;
        let code = serde_json::from_slice::<Value>(&body).ok().map(|b| b["code"].clone());
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && code != Some(Value::from(ProblemCode::RouteNotFound.as_str())),
            "{method} {path}: {status} {code:?}"
        );
        let mut allowed: Vec<&str> =
            documented.iter().filter(|(_, p)| p == path).map(|(m, _)| m.as_str()).collect();
        allowed.sort_unstable();
        let reply = app
            .client
            .request(Method::PATCH, format!("{}{}", app.base, concrete(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED, "PATCH {path}");
        assert_eq!(reply.headers().get("allow").unwrap(), allowed.join(", ").as_str(), "{path}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn every_operation_documents_the_errors_it_can_answer_with_the_problem_body() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db);

    let document = app.document().await;

    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let codes = &document["components"]["schemas"]["ProblemCode"]["enum"];
    let all: Vec<&str> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, &serde_json::json!(all));
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_ascii_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        let statuses: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        let mut expected = BTreeSet::from(["500"]);
        if needs_token(&path) {
            expected.extend(["401", "403"]);
            assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{path}");
        }
        if operation.get("requestBody").is_some() {
            expected.extend(["400", "413", "415"]);
        }
        if path.contains("{id}") {
            expected.extend(["400", "404"]);
        }
        if path.starts_with("/api/tasks") || path == "/readyz" {
            expected.insert("503");
        }
        assert!(
            statuses.is_superset(&expected),
            "{method} {path}: {statuses:?}, want {expected:?}"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/ProblemBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    // Every answer of one task carries its ETag; cancel and rerun, and a queue's pause and
    // resume, take If-Match and say 412.
    let one_task_schema = "#/components/schemas/TaskResponse";
    let mut tagged = 0;
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_ascii_lowercase()];
        for (status, response) in operation["responses"].as_object().unwrap() {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            if status.starts_with('2') && schema == one_task_schema {
                assert!(response["headers"].get("ETag").is_some(), "{method} {path} {status}");
                tagged += 1;
            }
        }
        let takes_if_match = operation["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "If-Match" && p["in"] == "header"));
        let operator_action =
            ["/cancel", "/rerun", "/pause", "/resume"].iter().any(|action| path.ends_with(action));
        assert_eq!(takes_if_match, operator_action, "{method} {path}");
        assert_eq!(operation["responses"].get("412").is_some(), operator_action, "{method} {path}");
    }
    assert_eq!(
        tagged, 10,
        "create (201, and 200 for a held uniqueKey), get, start, heartbeat, succeed, fail, \
         release, cancel, rerun"
    );
    let text = document.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(document["components"]["schemas"].get(name).is_some(), "{name} is not defined");
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_api_page_loads_only_files_that_this_server_serves() {
    let db = TestDatabase::new();
    let app = TestApp::on(&db);

    let (status, content_type, page) = app.send(Method::GET, "/api/docs").await;

    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = String::from_utf8(page).unwrap();
    let mut loaded = Vec::new();
    for attribute in ["src=\"", "href=\"", "url: \""] {
        for rest in page.split(attribute).skip(1) {
            loaded.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    assert_eq!(loaded.len(), 4, "{loaded:?}");
    for url in loaded {
        assert!(url.starts_with('/') && !url.starts_with("//"), "{url} is not on this server");
        let (status, content_type, body) = app.send(Method::GET, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert!(!body.is_empty(), "{url}");
        let expected = if url.ends_with(".css") {
            "text/css"
        } else if url.ends_with(".js") {
            "text/javascript"
        } else {
            "application/json"
        };
        assert_eq!(content_type, expected, "{url}");
    }
    let (status, _, _) = app.send(Method::GET, "/api/docs/index.html").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
