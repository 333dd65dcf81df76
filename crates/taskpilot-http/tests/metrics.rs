//! `GET /metrics` and `GET /api/stats` from the real server on a fresh database, after a small
//! workload: the series a dashboard reads, with their values, in the text format's content
//! type, labelled by route patterns and capped queues only.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;
use taskpilot_http::{HttpConfig, ServerHandle};

use common::guarded;

struct App {
    base: String,
    client: awc::Client,
    handle: ServerHandle,
}

impl App {
    /// The real server on `db`, giving two queues their own labels.
    fn spawn(db: &TestDatabase) -> Self {
        let http = HttpConfig {
            workers: 1,
            shutdown_timeout: Duration::from_secs(1),
            metrics_max_queues: 2,
            ..HttpConfig::default()
        };
        let (base, handle) = common::spawn_server(db, TimeDelta::seconds(60), 3, http);
        Self { base, client: awc::Client::default(), handle }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        let mut response = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let bytes = response.body().await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (response.status(), body)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.send(method, path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// The scrape: its content type and its samples by series (name and labels as written).
    async fn scrape(&self) -> (String, BTreeMap<String, f64>) {
        let mut response = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type =
            response.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        let text = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect();
        (content_type, samples)
    }
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[actix_web::test]
async fn a_scrape_after_a_small_workload_shows_counts_events_and_requests() {
    let db = TestDatabase::new();
    let app = App::spawn(&db);
    let later = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    for (queue, run_at) in [("emails", None), ("emails", None), ("emails", Some(&later))] {
        let body = json!({"queue": queue, "name": "send", "runAt": run_at});
        app.ok("POST", "/api/tasks", Some(body)).await;
    }
    let batch =
        json!({"tasks": [{"queue": "sms", "name": "text"}, {"queue": "zz-extra", "name": "x"}]});
    app.ok("POST", "/api/tasks/batch", Some(batch)).await;
    let claim = json!({"workerId": "w1", "queues": ["emails"], "limit": 2});
    let claimed = app.ok("POST", "/api/tasks/claim", Some(claim)).await["items"].clone();
    let (first, second) = (&claimed[0], &claimed[1]);
    let report = |task: &Value| json!({"workerId": "w1", "leaseToken": task["leaseToken"]});
    let first_id = first["id"].as_str().unwrap();
    app.ok("PUT", &format!("/api/tasks/{first_id}/succeed"), Some(report(first))).await;
    app.ok("PUT", &format!("/api/tasks/{first_id}/succeed"), Some(report(first))).await;
    let fail = json!({"workerId": "w1", "leaseToken": second["leaseToken"], "errorMessage": "no",
                      "retryable": false});
    let second_id = second["id"].as_str().unwrap();
    app.ok("PUT", &format!("/api/tasks/{second_id}/fail"), Some(fail)).await;
    let late = json!({"workerId": "w1", "leaseToken": first["leaseToken"], "errorMessage": "late"});
    let (status, _) = app.send("PUT", &format!("/api/tasks/{first_id}/fail"), Some(late)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a failure after the attempt's success is refused");
    let nothing = json!({"workerId": "w1", "queues": ["nothing-here"], "limit": 1});
    app.ok("POST", "/api/tasks/claim", Some(nothing)).await;
    let waiting = json!({"workerId": "w1", "queues": ["nothing-here"], "limit": 1, "waitMs": 1});
    app.ok("POST", "/api/tasks/claim", Some(waiting)).await;
    let (status, _) = app.send("GET", "/no/such/route/42", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (content_type, samples) = guarded("the scrape", app.scrape()).await;

    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let expected = [
        // Stored counts: the first two queues by name on their own, the rest together.
        (r#"taskpilot_tasks{queue="emails",status="runnable"}"#, 0.0),
        (r#"taskpilot_tasks{queue="emails",status="scheduled"}"#, 1.0),
        (r#"taskpilot_tasks{queue="emails",status="succeeded"}"#, 1.0),
        (r#"taskpilot_tasks{queue="emails",status="failed"}"#, 1.0),
        (r#"taskpilot_tasks{queue="sms",status="runnable"}"#, 1.0),
        (r#"taskpilot_tasks{queue="(other)",status="runnable"}"#, 1.0),
        (r#"taskpilot_task_wait_seconds_count{queue="emails"}"#, 2.0),
        (r#"taskpilot_task_run_seconds_count{queue="emails"}"#, 2.0),
        (r#"taskpilot_task_run_seconds_bucket{le="+Inf",queue="emails"}"#, 2.0),
        // This server's events: queues labelled in the order it saw them, the third as other.
        (r#"taskpilot_tasks_created_total{queue="emails"}"#, 3.0),
        (r#"taskpilot_tasks_created_total{queue="sms"}"#, 1.0),
        (r#"taskpilot_tasks_created_total{queue="(other)"}"#, 1.0),
        (r#"taskpilot_tasks_claimed_total{queue="emails"}"#, 2.0),
        (r#"taskpilot_tasks_completed_total{queue="emails",outcome="succeeded"}"#, 1.0),
        (r#"taskpilot_tasks_completed_total{queue="emails",outcome="failed_permanently"}"#, 1.0),
        (r#"taskpilot_replays_total{call="SUCCEED"}"#, 1.0),
        (r#"taskpilot_claim_requests_total{outcome="claimed"}"#, 1.0),
        (r#"taskpilot_claim_requests_total{outcome="empty"}"#, 1.0),
        (r#"taskpilot_claim_requests_total{outcome="timed_out"}"#, 1.0),
        (r#"taskpilot_http_requests_total{route="/api/tasks",method="POST",code="201"}"#, 3.0),
        (
            r#"taskpilot_http_requests_total{route="/api/tasks/{id}/succeed",method="PUT",code="200"}"#,
            2.0,
        ),
        (r#"taskpilot_http_requests_total{route="(unmatched)",method="GET",code="404"}"#, 1.0),
        (
            r#"taskpilot_http_request_duration_seconds_count{route="/api/tasks/claim",method="POST"}"#,
            3.0,
        ),
        ("taskpilot_db_pool_max_connections", 4.0),
        ("taskpilot_stored_counts_up", 1.0),
    ];
    for (series, expected) in expected {
        assert_eq!(value(&samples, series), expected, "{series}");
    }
    assert!(value(&samples, "taskpilot_db_pool_checkouts_total") > 0.0);
    let refused = r#"taskpilot_refused_calls_total{call="FAIL",code="OUTCOME_CONFLICT"}"#;
    assert_eq!(value(&samples, refused), 1.0);
    assert!(samples.contains_key(r#"taskpilot_oldest_runnable_age_seconds{queue="sms"}"#));
    assert!(!samples.contains_key(r#"taskpilot_oldest_runnable_age_seconds{queue="emails"}"#));

    // Every route label is a route pattern (or unmatched), never a path asked for.
    let patterns: BTreeSet<&str> = [
        "/api/tasks",
        "/api/tasks/batch",
        "/api/tasks/claim",
        "/api/tasks/{id}/succeed",
        "/api/tasks/{id}/fail",
        "(unmatched)",
    ]
    .into();
    let routes: BTreeSet<&str> = samples
        .keys()
        .filter_map(|series| series.split("route=\"").nth(1))
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(routes, patterns);

    app.handle.stop(true).await;
}

#[actix_web::test]
async fn stats_give_the_same_counts_as_json() {
    let db = TestDatabase::new();
    let app = App::spawn(&db);
    let later = (Utc::now() + TimeDelta::hours(1)).to_rfc3339();
    for (queue, run_at) in [("emails", None), ("emails", Some(&later)), ("sms", None), ("zz", None)]
    {
        app.ok("POST", "/api/tasks", Some(json!({"queue": queue, "name": "n", "runAt": run_at})))
            .await;
    }
    let claim = json!({"workerId": "w1", "queues": ["sms"], "limit": 1});
    app.ok("POST", "/api/tasks/claim", Some(claim)).await;

    let stats = app.ok("GET", "/api/stats", None).await;

    let zero = json!({"runnable": 0, "scheduled": 0, "running": 0, "succeeded": 0, "failed": 0,
                      "cancelled": 0});
    let with = |changes: Value| {
        let mut counts = zero.clone();
        for (k, v) in changes.as_object().unwrap() {
            counts[k] = v.clone();
        }
        counts
    };
    assert_eq!(stats["totals"], with(json!({"runnable": 2, "scheduled": 1, "running": 1})));
    assert_eq!(stats["queues"][0]["queue"], "emails");
    assert_eq!(stats["queues"][0]["counts"], with(json!({"runnable": 1, "scheduled": 1})));
    assert!(stats["queues"][0]["oldestRunnableAgeSeconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(stats["queues"][1]["queue"], "sms");
    assert_eq!(stats["queues"][1]["counts"], with(json!({"running": 1})));
    assert_eq!(stats["queues"][1]["oldestRunnableSince"], Value::Null);
    assert_eq!(stats["queues"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["otherQueues"], with(json!({"runnable": 1})));

    app.handle.stop(true).await;
}
