//! The operators' list filters and bulk actions over HTTP: the real server, a real
//! PostgreSQL (a fresh database per test) and API tokens.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use actix_web::http::{Method, StatusCode};
use chrono::TimeDelta;
use diesel::prelude::*;
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::HttpConfig;

use common::spawn_server;

struct Api {
    base: String,
    client: awc::Client,
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body
    }

    fn problem(&self, status: StatusCode, code: &str, names: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert!(self.body["detail"].as_str().unwrap().contains(names), "{}", self.body);
    }
}

impl Api {
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .unwrap();
        let status = response.status();
        let bytes = response.body().limit(64 * 1024 * 1024).await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, body }
    }

    async fn token(&self, admin: &str, name: &str, kind: &str) -> String {
        let created = self
            .call(admin, Method::POST, "/api/tokens", Some(json!({"name": name, "kind": kind})))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        created.body["secret"].as_str().unwrap().to_owned()
    }

    async fn bulk(&self, token: &str, body: Value) -> Reply {
        self.call(token, Method::POST, "/api/tasks/bulk", Some(body)).await
    }

    /// Every task the listing with `query` shows, through every page.
    async fn list_all(&self, token: &str, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/api/tasks?{query}&limit=500&cursor={cursor}");
            let page = self.call(token, Method::GET, &path, None).await;
            items.extend(page.ok()["items"].as_array().unwrap().iter().cloned());
            match page.body["nextCursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return items,
            }
        }
    }

    async fn create(&self, token: &str, queue: &str, n: usize) -> Vec<String> {
        let tasks: Vec<Value> = (0..n)
            .map(|i| json!({"name": "job", "queue": queue, "maxAttempts": 1, "payload": {"n": i}}))
            .collect();
        let reply =
            self.call(token, Method::POST, "/api/tasks/batch", Some(json!({"tasks": tasks}))).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["items"].as_array().unwrap().iter().map(id_of).collect()
    }

    /// Claims up to `n` tasks of `queue`; their ids and lease tokens.
    async fn claim(&self, token: &str, queue: &str, n: usize) -> Vec<(String, String)> {
        let mut claimed = Vec::new();
        while claimed.len() < n {
            let limit = (n - claimed.len()).min(100);
            let reply = self
                .call(
                    token,
                    Method::POST,
                    "/api/tasks/claim",
                    Some(json!({"workerId": "w", "queues": [queue], "limit": limit})),
                )
                .await;
            let items = reply.ok()["items"].as_array().unwrap().clone();
            assert!(!items.is_empty(), "nothing left to claim in {queue}");
            claimed.extend(
                items.iter().map(|t| (id_of(t), t["leaseToken"].as_str().unwrap().to_owned())),
            );
        }
        claimed
    }

    async fn complete(&self, token: &str, leases: &[(String, String)], outcome: &str) {
        let items: Vec<Value> = leases
            .iter()
            .map(|(id, lease)| {
                let mut item = json!({"id": id, "leaseToken": lease, "outcome": outcome});
                if outcome == "failed" {
                    item["errorMessage"] = json!("disk 100% full");
                }
                item
            })
            .collect();
        let reply = self
            .call(token, Method::POST, "/api/tasks/complete", Some(json!({"items": items})))
            .await;
        for item in reply.ok()["items"].as_array().unwrap() {
            assert_eq!(item["status"], 200, "{item}");
        }
    }
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

fn outcomes(reply: &Value) -> Vec<(String, String, String)> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                id_of(r),
                r["outcome"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

fn start(db: &TestDatabase) -> (Api, taskpilot_http::ServerHandle) {
    let (base, handle) = spawn_server(db, TimeDelta::seconds(1), 1, HttpConfig::default());
    (Api { base, client: awc::Client::default() }, handle)
}

/// The first token is made under open access, as on a fresh loopback server.
async fn admin(api: &Api) -> String {
    api.token("", "root", "admin").await
}

#[actix_web::test]
async fn an_operator_reruns_a_thousand_failed_tasks_found_by_filter() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    let admin = admin(&api).await;
    let operator = api.token(&admin, "night-ops", "operator").await;
    let viewer = api.token(&admin, "watcher", "viewer").await;
    let producer = api.token(&admin, "shop", "producer").await;
    api.create(&admin, "bulk", 1_000).await;
    let leases = api.claim(&admin, "bulk", 1_000).await;
    api.complete(&admin, &leases, "failed").await;
    api.create(&admin, "other", 3).await;
    let failed = json!({"status": ["FAILED"], "queue": "bulk", "lastError": "100%"});

    let listed = api.list_all(&viewer, "status=FAILED,CANCELLED&queue=bulk&lastError=100%25").await;
    let dry = api
        .bulk(
            &operator,
            json!({"action": "rerun", "filter": failed, "dryRun": true, "limit": 10000}),
        )
        .await;
    let dry_default_limit =
        api.bulk(&operator, json!({"action": "rerun", "filter": failed, "dryRun": true})).await;
    for token in [&viewer, &producer] {
        api.bulk(token, json!({"action": "rerun", "filter": failed})).await.problem(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "may not",
        );
    }
    let rerun =
        api.bulk(&operator, json!({"action": "rerun", "filter": failed, "limit": 10000})).await;
    let pending = api.list_all(&viewer, "status=PENDING&queue=bulk").await;
    let still_failed = api.list_all(&viewer, "status=failed").await;
    let some = id_of(&pending[0]);
    let history = api.call(&viewer, Method::GET, &format!("/api/tasks/{some}/events"), None).await;

    assert_eq!(listed.len(), 1_000);
    let dry = dry.ok();
    assert_eq!(
        (dry["matched"].as_u64(), dry["more"].as_bool(), dry["dryRun"].as_bool()),
        (Some(1_000), Some(false), Some(true))
    );
    assert!(dry["results"].as_array().unwrap().is_empty() && dry.get("id").is_none(), "{dry}");
    let capped = dry_default_limit.ok();
    assert_eq!((capped["matched"].as_u64(), capped["more"].as_bool()), (Some(1_000), Some(false)));
    let rerun = rerun.ok();
    assert_eq!(
        (rerun["matched"].as_u64(), rerun["done"].as_u64(), rerun["skipped"].as_u64()),
        (Some(1_000), Some(1_000), Some(0))
    );
    assert!(outcomes(rerun).iter().all(|(_, outcome, _)| outcome == "DONE"));
    assert_eq!(pending.len(), 1_000);
    assert!(still_failed.is_empty());
    let last = history.ok()["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["to"].as_str(), last["tokenName"].as_str()),
        (Some("PENDING"), Some("night-ops")),
        "{last}"
    );
    // Recorded once, with the token and the counts.
    let mut conn = db.pool().get().unwrap();
    #[derive(QueryableByName)]
    struct Recorded {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        token_name: Option<String>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        done: i64,
    }
    let recorded: Vec<Recorded> =
        diesel::sql_query("SELECT action, token_name, done FROM bulk_actions")
            .load(&mut conn)
            .unwrap();
    assert_eq!(recorded.len(), 1, "dry runs and refusals record nothing");
    assert_eq!(
        (recorded[0].action.as_str(), recorded[0].token_name.as_deref(), recorded[0].done),
        ("rerun", Some("night-ops"), 1_000)
    );
    handle.stop(true).await;
}

#[actix_web::test]
async fn a_bulk_cancel_skips_finished_tasks_and_a_bulk_delete_removes_only_finished_ones() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    let admin = admin(&api).await;
    let operator = api.token(&admin, "night-ops", "operator").await;
    let ids = api.create(&admin, "mixed", 3).await;
    // Claims take the oldest first: ids[0] runs and succeeds, ids[1] runs, ids[2] waits.
    let done = api.claim(&admin, "mixed", 1).await;
    api.complete(&admin, &done, "succeeded").await;
    api.claim(&admin, "mixed", 1).await;
    let unknown = "01900000-0000-7000-8000-000000000000".to_owned();
    let mut asked = ids.clone();
    asked.push(unknown.clone());

    let cancel = api.bulk(&operator, json!({"action": "cancel", "ids": asked})).await;
    let fresh = api.create(&admin, "mixed", 1).await;
    let delete =
        api.bulk(&operator, json!({"action": "delete", "filter": {"queue": "mixed"}})).await;
    let gone = api.call(&operator, Method::GET, &format!("/api/tasks/{}", ids[2]), None).await;
    let kept = api.call(&operator, Method::GET, &format!("/api/tasks/{}", fresh[0]), None).await;

    let cancel = cancel.ok();
    assert_eq!(
        outcomes(cancel),
        vec![
            (ids[0].clone(), "SKIPPED".to_owned(), "INVALID_TRANSITION".to_owned()),
            (ids[1].clone(), "DONE".to_owned(), "-".to_owned()),
            (ids[2].clone(), "DONE".to_owned(), "-".to_owned()),
            (unknown, "SKIPPED".to_owned(), "TASK_NOT_FOUND".to_owned()),
        ],
        "{cancel}"
    );
    assert!(cancel["results"][0]["detail"].as_str().unwrap().contains("SUCCEEDED"), "{cancel}");
    assert_eq!(
        (cancel["matched"].as_u64(), cancel["done"].as_u64(), cancel["skipped"].as_u64()),
        (Some(3), Some(2), Some(2))
    );
    let delete = delete.ok();
    let mut deleted = outcomes(delete);
    deleted.sort();
    let mut expected = vec![
        (ids[0].clone(), "DONE".to_owned(), "-".to_owned()),
        (ids[1].clone(), "DONE".to_owned(), "-".to_owned()),
        (ids[2].clone(), "DONE".to_owned(), "-".to_owned()),
        (fresh[0].clone(), "SKIPPED".to_owned(), "INVALID_TRANSITION".to_owned()),
    ];
    expected.sort();
    assert_eq!(deleted, expected, "{delete}");
    gone.problem(StatusCode::NOT_FOUND, "TASK_NOT_FOUND", &ids[2]);
    kept.ok();
    handle.stop(true).await;
}

#[actix_web::test]
async fn a_bulk_action_by_ids_leaves_a_task_that_moved_past_its_expected_version() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    let admin = admin(&api).await;
    let operator = api.token(&admin, "night-ops", "operator").await;
    let ids = api.create(&admin, "versions", 2).await;
    // The operator saw both tasks as created (ETag "1"); then a worker started the first
    // (claims take the oldest first).
    api.claim(&admin, "versions", 1).await;

    let body = json!({"action": "cancel", "ids": ids, "versions": {&ids[0]: 1, &ids[1]: 1}});
    let cancel = api.bulk(&operator, body).await;
    let stray = api
        .bulk(&operator, json!({"action": "cancel", "ids": [&ids[0]], "versions": {&ids[1]: 1}}))
        .await;

    assert_eq!(
        outcomes(cancel.ok()),
        vec![
            (ids[0].clone(), "SKIPPED".to_owned(), "PRECONDITION_FAILED".to_owned()),
            (ids[1].clone(), "DONE".to_owned(), "-".to_owned()),
        ]
    );
    let status = |id: String| {
        let api = &api;
        let admin = admin.clone();
        async move {
            let now = api.call(&admin, Method::GET, &format!("/api/tasks/{id}"), None).await;
            now.ok()["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(status(ids[0].clone()).await, "RUNNING", "left as the worker has it");
    assert_eq!(status(ids[1].clone()).await, "CANCELLED");
    stray.problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", "versions.");
    handle.stop(true).await;
}

#[actix_web::test]
async fn filters_and_bulk_bodies_refuse_bad_values_naming_the_parameter() {
    let db = TestDatabase::new();
    let (api, handle) = start(&db);
    let admin = admin(&api).await;
    let list = |query: &'static str| {
        let (api, admin) = (&api, &admin);
        async move { api.call(admin, Method::GET, &format!("/api/tasks?{query}"), None).await }
    };
    let bad_queries = [
        ("status=FAILED,NOPE", "status"),
        ("status=FAILED,", "status"),
        ("retryState=exhausted", "retryState"),
        ("createdAfter=yesterday", "createdAfter"),
        ("completedBefore=2026-12-01", "completedBefore"),
        ("payload=%5B1%5D", "payload"),
        ("payload=%7Bnope", "payload"),
        ("lastError=a%00b", "lastError"),
    ];
    for (query, names) in bad_queries {
        list(query).await.problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", names);
    }
    // One spelling of several statuses: comma-separated; a repeated parameter is refused.
    let repeated = list("status=FAILED&status=CANCELLED").await;
    assert_eq!(repeated.status, StatusCode::BAD_REQUEST, "{}", repeated.body);
    assert!(repeated.body["detail"].as_str().unwrap().contains("status"), "{}", repeated.body);
    list("status=failed,Cancelled&retryState=NONE&createdAfter=2026-01-01T00:00:00%2B02:00&lastError=x&payload=%7B%22a%22%3A1%7D")
        .await
        .ok();
    let bad_bodies = [
        (json!({"action": "delete"}), "filter or ids"),
        (json!({"action": "delete", "filter": {}}), "all"),
        (json!({"action": "delete", "filter": {"lastError": ""}}), "all"),
        (json!({"action": "cancel", "filter": {"queue": "a"}, "ids": []}), "not both"),
        (json!({"action": "cancel", "ids": []}), "ids"),
        (json!({"action": "cancel", "filter": {"queue": "a"}, "limit": 10001}), "limit"),
        (json!({"action": "cancel", "filter": {"queue": "a"}, "limit": 0}), "limit"),
        (json!({"action": "cancel", "filter": {"queue": "A B"}}), "filter.queue"),
        (json!({"action": "cancel", "filter": {"payload": 5}}), "filter.payload"),
    ];
    for (body, names) in bad_bodies {
        api.bulk(&admin, body).await.problem(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", names);
    }
    // An unknown action or field is a body that cannot be read.
    let unknown = api.bulk(&admin, json!({"action": "explode", "all": true})).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    // Every task, asked for explicitly: none exist yet, so nothing happens.
    let everything = api.bulk(&admin, json!({"action": "delete", "all": true})).await;
    assert_eq!(everything.ok()["matched"], 0);
    handle.stop(true).await;
}
