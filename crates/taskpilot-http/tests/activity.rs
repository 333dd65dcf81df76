//! What operators read about the queue's activity over HTTP: throughput per minute, failed
//! tasks grouped by error and the workers seen, on the real server and a real PostgreSQL.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use actix_web::http::{Method, StatusCode};
use chrono::TimeDelta;
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::HttpConfig;

use common::{guarded, spawn_server};

struct Api {
    base: String,
    client: awc::Client,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .unwrap();
        let bytes = response.body().await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (response.status(), body)
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.call(token, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn token(&self, admin: &str, name: &str, kind: &str, queues: Option<&[&str]>) -> String {
        let mut request = json!({"name": name, "kind": kind});
        if let Some(queues) = queues {
            request["queues"] = json!(queues);
        }
        let (status, body) = self.call(admin, Method::POST, "/api/tokens", Some(request)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["secret"].as_str().unwrap().to_owned()
    }

    async fn create(&self, token: &str, queue: &str, n: usize) {
        let tasks: Vec<Value> =
            (0..n).map(|_| json!({"name": "send", "queue": queue, "maxAttempts": 1})).collect();
        let (status, body) =
            self.call(token, Method::POST, "/api/tasks/batch", Some(json!({"tasks": tasks}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Claims `n` tasks of `queue` as `worker`: their ids and lease tokens.
    async fn claim(
        &self,
        token: &str,
        worker: &str,
        queue: &str,
        n: usize,
    ) -> Vec<(String, String)> {
        let (status, body) = self
            .call(
                token,
                Method::POST,
                "/api/tasks/claim",
                Some(json!({"workerId": worker, "queues": [queue], "limit": n})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), n, "{body}");
        items
            .iter()
            .map(|t| {
                (t["id"].as_str().unwrap().to_owned(), t["leaseToken"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    async fn fail(&self, token: &str, worker: &str, (id, lease): &(String, String), error: &str) {
        let (status, body) = self
            .call(
                token,
                Method::PUT,
                &format!("/api/tasks/{id}/fail"),
                Some(json!({"workerId": worker, "leaseToken": lease, "errorMessage": error})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

fn start(db: &TestDatabase) -> (Api, taskpilot_http::ServerHandle) {
    let (base, handle) = spawn_server(db, TimeDelta::seconds(1), 1, HttpConfig::default());
    (Api { base, client: awc::Client::default() }, handle)
}

fn sum(throughput: &Value, field: &str) -> u64 {
    throughput["items"].as_array().unwrap().iter().map(|m| m[field].as_u64().unwrap()).sum()
}

#[actix_web::test]
async fn operators_see_throughput_dead_letters_and_the_workers_with_what_they_run() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    let admin = api.token("", "root", "admin", None).await;
    let viewer = api.token(&admin, "watcher", "viewer", None).await;
    let emails_only = api.token(&admin, "mailroom", "viewer", Some(&["emails"])).await;

    api.create(&admin, "emails", 5).await;
    api.create(&admin, "images", 2).await;
    let claimed = api.claim(&admin, "w-1", "emails", 4).await;
    api.fail(&admin, "w-1", &claimed[0], "SMTP 550: no such mailbox\n  at send (mail.rs:1)").await;
    api.fail(&admin, "w-1", &claimed[1], "SMTP 550: no such mailbox\n  at send (mail.rs:2)").await;
    api.fail(&admin, "w-1", &claimed[2], "timeout").await;
    let (status, body) = api
        .call(
            &admin,
            Method::PUT,
            &format!("/api/tasks/{}/heartbeat", claimed[3].0),
            Some(json!({"workerId": "w-1", "leaseToken": claimed[3].1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Throughput: every minute of the window, the counts summed over it.
    let throughput = api.get(&viewer, "/api/stats/throughput?minutes=5").await;
    assert_eq!(throughput["items"].as_array().unwrap().len(), 5);
    assert_eq!(throughput["queue"], Value::Null);
    assert_eq!((sum(&throughput, "created"), sum(&throughput, "failed")), (7, 3));
    assert_eq!(sum(&throughput, "completed"), 3);
    let last = &throughput["items"][4];
    assert!(last["minute"].as_str().unwrap().ends_with(":00.000000Z"), "{last}");
    let images = api.get(&viewer, "/api/stats/throughput?queue=images").await;
    assert_eq!(images["items"].as_array().unwrap().len(), 60, "the last hour by default");
    assert_eq!((sum(&images, "created"), sum(&images, "failed")), (2, 0));
    let reach = api.get(&emails_only, "/api/stats/throughput").await;
    assert_eq!(sum(&reach, "created"), 5, "a token limited to emails counts only emails");
    let (status, body) =
        api.call(&emails_only, Method::GET, "/api/stats/throughput?queue=images", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
        "{body}"
    );

    // Dead letters: grouped by the first line of the error.
    let dead = api.get(&viewer, "/api/dead-letters").await;
    let groups: Vec<(&str, &str, u64)> = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["queue"].as_str().unwrap(),
                g["error"].as_str().unwrap(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(groups, [("emails", "SMTP 550: no such mailbox", 2), ("emails", "timeout", 1)]);
    assert_eq!(
        api.get(&viewer, "/api/dead-letters?limit=1").await["items"].as_array().unwrap().len(),
        1
    );

    // Workers: the server writes what it saw within about a second.
    let workers = guarded("the worker's calls recorded", async {
        loop {
            let workers = api.get(&viewer, "/api/workers").await;
            if workers["items"][0]["lastHeartbeatAt"].is_string() {
                return workers;
            }
            actix_web::rt::task::yield_now().await;
        }
    })
    .await;
    let w = &workers["items"][0];
    assert_eq!(w["workerId"], "w-1");
    assert!(w["lastClaimAt"].is_string() && w["lastSeenAt"].is_string(), "{w}");
    let running = w["running"].as_array().unwrap();
    assert_eq!(running.len(), 1, "{w}");
    assert_eq!(running[0]["id"], claimed[3].0.as_str());
    assert!(
        running[0]["leaseExpiresAt"].is_string() && running[0].get("leaseToken").is_none(),
        "{w}"
    );

    handle.stop(true).await;
}

#[actix_web::test]
async fn bad_activity_queries_are_refused_naming_the_parameter() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    for (path, names) in [
        ("/api/stats/throughput?minutes=0", "minutes"),
        ("/api/stats/throughput?minutes=1441", "minutes"),
        ("/api/stats/throughput?minutes=soon", "minutes"),
        ("/api/stats/throughput?queue=%20", "queue"),
        ("/api/dead-letters?limit=501", "limit"),
    ] {
        let (status, body) = api.call("", Method::GET, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], "VALIDATION_FAILED", "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(names), "{path}: {body}");
    }
    let (status, body) = api.call("", Method::GET, "/api/dead-letters?page=2", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MALFORMED_REQUEST")),
        "{body}"
    );
    // Empty values count as absent.
    let empty = api.get("", "/api/stats/throughput?minutes=&queue=").await;
    assert_eq!(empty["items"].as_array().unwrap().len(), 60);
    assert_eq!(api.get("", "/api/workers").await, json!({"items": []}));
    handle.stop(true).await;
}
