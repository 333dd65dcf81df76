//! API tokens end to end, on the built `taskpilot` binary over a fresh database: bootstrap
//! with `taskpilot tokens create`, open development mode, the refusal to serve a public
//! address with no token, every route against every kind of caller, revocation seen by a
//! second server, and no secret or payload in the logs.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::{Method, StatusCode};
use diesel::RunQueryDsl as _;
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;

use common::HANG_GUARD;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether the server on `port` answers `GET /readyz` with 200.
fn ready(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// A `taskpilot serve` process; killed when dropped. Its logs go to a file, read at the end.
struct Served {
    child: Child,
    base: String,
    log: tempfile_path::LogFile,
}

mod tempfile_path {
    use std::path::PathBuf;

    /// A log file under the target directory, removed when dropped.
    pub struct LogFile(pub PathBuf);

    impl LogFile {
        pub fn new() -> Self {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            Self(dir.join(format!("auth-{}.log", uuid::Uuid::now_v7())))
        }
    }

    impl Drop for LogFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Served {
    /// Starts the binary on a free loopback port with `extra` flags and waits until it
    /// answers `/healthz`.
    fn start(db: &TestDatabase, extra: &[&str]) -> Self {
        let port = free_port();
        let log = tempfile_path::LogFile::new();
        let file = std::fs::File::create(&log.0).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("DATABASE_URL", db.url())
            .env("TASKPILOT_LOG", "debug")
            .env("TASKPILOT_WORKERS", "2")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let served = Self { child, base: format!("http://127.0.0.1:{port}"), log };
        let started = Instant::now();
        // Poll the real condition (the server is ready: migrated, /readyz 200), with a guard
        // against a hang.
        while !ready(port) {
            assert!(
                started.elapsed() < HANG_GUARD,
                "the server never got ready: {}",
                served.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log.0) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut request = client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.insert_header((AUTHORIZATION, format!("Bearer {token}")));
        }
        let mut response = match body {
            Some(body) => request.send_json(body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let status = response.status();
        let challenge =
            response.headers().get(WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.body().await.unwrap();
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, challenge, body }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

/// `taskpilot tokens <args>` on `db`; its stdout lines, after checking that it succeeded.
fn tokens(db: &TestDatabase, args: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .arg("tokens")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("TASKPILOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "taskpilot tokens {args:?} failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// Creates a token with the CLI; its secret.
fn create_token(db: &TestDatabase, kind: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--kind", kind, "--name", name];
    args.extend_from_slice(extra);
    let lines = tokens(db, &args);
    let secret = lines.last().unwrap().clone();
    assert!(secret.starts_with(&format!("tp_{kind}_")), "{lines:?}");
    secret
}

/// Polls `check` until it holds, at most [`HANG_GUARD`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < HANG_GUARD, "never happened: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_loopback_server_runs_open_until_the_first_token_then_every_request_needs_one() {
    let db = TestDatabase::new();
    let server = Served::start(&db, &[]);

    let open = server.call(Method::GET, "/api/tasks", None, None).await;
    assert_eq!(open.status, StatusCode::OK, "{:?}", open.body);
    assert!(server.logs().contains("runs open"), "{}", server.logs());

    let admin = create_token(&db, "admin", "ops", &[]);
    eventually("the server asks for a token", async || {
        server.call(Method::GET, "/api/tasks", None, None).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    let refused = server.call(Method::GET, "/api/tasks", None, None).await;
    assert_eq!(refused.body["code"], "UNAUTHENTICATED");
    assert_eq!(refused.challenge.as_deref(), Some("Bearer realm=\"taskpilot\""));
    let allowed = server.call(Method::GET, "/api/tasks", Some(&admin), None).await;
    assert_eq!(allowed.status, StatusCode::OK);
    // The probes never need a token.
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(server.call(Method::GET, probe, None, None).await.status, StatusCode::OK);
    }

    let listed = tokens(&db, &["list"]);
    assert_eq!(listed.len(), 2, "a header and the one token: {listed:?}");
    assert!(listed[1].contains("\tadmin\tops\t*\t"), "{listed:?}");
    assert!(!listed.iter().any(|l| l.contains(&admin)), "list never shows a secret");
}

#[test]
fn a_public_address_with_no_token_refuses_to_start_unless_auth_is_off() {
    let db = TestDatabase::new();
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(["serve", "--bind", &format!("0.0.0.0:{port}")])
        .env("DATABASE_URL", db.url())
        .env("TASKPILOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("refusing to listen on 0.0.0.0"), "{said}");
    assert!(said.contains("taskpilot tokens create") && said.contains("--auth=off"), "{said}");

    // With a token it starts; with --auth=off too.
    let mut off = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(["serve", "--auth", "off", "--bind", &format!("0.0.0.0:{port}")])
        .env("DATABASE_URL", db.url())
        .env("TASKPILOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(off.try_wait().unwrap().is_none(), "--auth=off must start");
        assert!(started.elapsed() < HANG_GUARD, "it never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    off.kill().unwrap();
    off.wait().unwrap();
}

/// Which callers each route lets through. Letters: P producer, W worker, V viewer,
/// O operator, A admin, M metrics. A route a caller may not use answers 403 FORBIDDEN; a
/// task a producer did not create answers 404 (`own` rows).
struct Row {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    allowed: &'static str,
    /// Kinds that pass the route but, not having created the task, get 404.
    own: &'static str,
}

#[actix_web::test]
async fn every_route_answers_every_kind_of_caller_as_its_scopes_say() {
    let db = TestDatabase::new();
    let admin = create_token(&db, "admin", "admin", &[]);
    let server = Served::start(&db, &[]);
    let mut secrets = Vec::new();
    for kind in ["producer", "worker", "viewer", "operator", "metrics"] {
        let created = server
            .call(
                Method::POST,
                "/api/tokens",
                Some(&admin),
                Some(&json!({"name": kind, "kind": kind})),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert!(created.body["lastUsedAt"].is_null());
        secrets.push((
            kind.chars().next().unwrap().to_ascii_uppercase(),
            created.body["secret"].as_str().unwrap().to_owned(),
        ));
    }
    secrets.push(('A', admin.clone()));
    let task = server
        .call(
            Method::POST,
            "/api/tasks",
            Some(&admin),
            Some(&json!({"name": "x", "queue": "emails"})),
        )
        .await;
    let id = task.body["id"].as_str().unwrap().to_owned();
    let lease = json!({"workerId": "w", "leaseToken": "00000000-0000-7000-8000-000000000000"});
    let t = |p: &str| -> &'static str { Box::leak(p.replace("{id}", &id).into_boxed_str()) };
    let rows = vec![
        Row {
            method: Method::POST,
            path: "/api/tasks",
            body: Some(json!({"name": "x", "queue": "emails"})),
            allowed: "PA",
            own: "",
        },
        Row {
            method: Method::POST,
            path: "/api/tasks/batch",
            body: Some(json!({"tasks": [{"name": "x"}]})),
            allowed: "PA",
            own: "",
        },
        Row { method: Method::GET, path: "/api/tasks", body: None, allowed: "PVOA", own: "" },
        Row {
            method: Method::GET,
            path: t("/api/tasks/{id}"),
            body: None,
            allowed: "PVOA",
            own: "P",
        },
        Row {
            method: Method::GET,
            path: t("/api/tasks/{id}/events"),
            body: None,
            allowed: "PVOA",
            own: "P",
        },
        Row {
            method: Method::POST,
            path: "/api/tasks/claim",
            body: Some(json!({"workerId": "w", "queues": ["nothing-here"]})),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/heartbeat"),
            body: Some(lease.clone()),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/succeed"),
            body: Some(lease.clone()),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/fail"),
            body: Some(
                json!({"workerId": "w", "leaseToken": "00000000-0000-7000-8000-000000000000", "errorMessage": "e"}),
            ),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/release"),
            body: Some(lease.clone()),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::POST,
            path: "/api/tasks/complete",
            body: Some(
                json!({"items": [{"id": id, "leaseToken": "00000000-0000-7000-8000-000000000000", "outcome": "succeeded"}]}),
            ),
            allowed: "WA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/rerun"),
            body: None,
            allowed: "OA",
            own: "",
        },
        Row {
            method: Method::POST,
            path: "/api/tasks/bulk",
            body: Some(json!({"action": "cancel", "filter": {"queue": "nothing-here"}})),
            allowed: "OA",
            own: "",
        },
        Row {
            method: Method::GET,
            path: "/api/stats/rejections",
            body: None,
            allowed: "VOA",
            own: "",
        },
        Row {
            method: Method::GET,
            path: t("/api/tasks/{id}/explain"),
            body: None,
            allowed: "PVOA",
            own: "P",
        },
        Row { method: Method::GET, path: "/api/queues", body: None, allowed: "VOA", own: "" },
        Row {
            method: Method::GET,
            path: "/api/stats/throughput",
            body: None,
            allowed: "VOA",
            own: "",
        },
        // A producer lists its own failed tasks, as it lists its own tasks.
        Row {
            method: Method::GET,
            path: "/api/dead-letters",
            body: None,
            allowed: "PVOA",
            own: "",
        },
        Row { method: Method::GET, path: "/api/workers", body: None, allowed: "VOA", own: "" },
        Row {
            method: Method::GET,
            path: "/api/queues/emails",
            body: None,
            allowed: "VOA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: "/api/queues/emails/pause",
            body: None,
            allowed: "OA",
            own: "",
        },
        Row {
            method: Method::PUT,
            path: "/api/queues/emails/resume",
            body: None,
            allowed: "OA",
            own: "",
        },
        Row { method: Method::GET, path: "/api/tokens", body: None, allowed: "A", own: "" },
        Row {
            method: Method::DELETE,
            path: "/api/tokens/00000000-0000-7000-8000-000000000000",
            body: None,
            allowed: "A",
            own: "",
        },
        // Last: it changes the task.
        Row {
            method: Method::PUT,
            path: t("/api/tasks/{id}/cancel"),
            body: None,
            allowed: "POA",
            own: "P",
        },
    ];
    for row in &rows {
        for (letter, secret) in &secrets {
            let reply =
                server.call(row.method.clone(), row.path, Some(secret), row.body.as_ref()).await;
            let what =
                format!("{letter} {} {}: {} {}", row.method, row.path, reply.status, reply.body);
            if !row.allowed.contains(*letter) {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
                assert_eq!(reply.body["code"], "FORBIDDEN", "{what}");
            } else if row.own.contains(*letter) {
                assert_eq!(reply.status, StatusCode::NOT_FOUND, "{what}");
                assert_eq!(reply.body["code"], "TASK_NOT_FOUND", "{what}");
            } else {
                assert!(
                    reply.status != StatusCode::FORBIDDEN
                        && reply.status != StatusCode::UNAUTHORIZED,
                    "{what}"
                );
                assert!(!reply.status.is_server_error(), "{what}");
            }
        }
        // Nobody without a usable token passes any route.
        for bad in [
            None,
            Some("nope"),
            Some("tp_admin_00"),
            Some(&*format!("tp_admin_{}", "0".repeat(64))),
        ] {
            let reply = server.call(row.method.clone(), row.path, bad, row.body.as_ref()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{bad:?} {} {}",
                row.method,
                row.path
            );
            assert_eq!(reply.body["code"], "UNAUTHENTICATED");
            assert!(reply.challenge.as_deref().unwrap().starts_with("Bearer"));
        }
    }

    // History names the token behind each call: the admin created the task, the operator
    // (the first kind the cancel row let through) cancelled it.
    let events =
        server.call(Method::GET, &format!("/api/tasks/{id}/events"), Some(&admin), None).await;
    let by_kind: Vec<(&str, &str)> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["tokenName"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(by_kind.first(), Some(&("CREATED", "admin")), "{by_kind:?}");
    assert_eq!(by_kind.last(), Some(&("CANCELLED", "operator")), "{by_kind:?}");

    // A producer reads and cancels what it created, and nobody else's.
    let producer = &secrets[0].1;
    let mine = server
        .call(Method::POST, "/api/tasks", Some(producer), Some(&json!({"name": "mine"})))
        .await;
    let mine_id = mine.body["id"].as_str().unwrap();
    let read =
        server.call(Method::GET, &format!("/api/tasks/{mine_id}"), Some(producer), None).await;
    assert_eq!(read.status, StatusCode::OK);
    let listed = server.call(Method::GET, "/api/tasks", Some(producer), None).await;
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&mine_id) && !ids.contains(&id.as_str()), "{ids:?}");
    let cancelled = server
        .call(Method::PUT, &format!("/api/tasks/{mine_id}/cancel"), Some(producer), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);

    // Revoked and expired tokens are refused like unknown ones.
    let doomed = create_token(&db, "viewer", "doomed", &[]);
    let expiring = create_token(&db, "viewer", "expiring", &[]);
    let mut conn = db.pool().get().unwrap();
    diesel::sql_query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE name = 'expiring'",
    )
    .execute(&mut conn)
    .unwrap();
    let listed = tokens(&db, &["list"]);
    let doomed_id = listed
        .iter()
        .find(|l| l.contains("\tdoomed\t"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    tokens(&db, &["revoke", &doomed_id]);
    for (secret, detail) in [(doomed, "revoked"), (expiring, "expired")] {
        let reply = server.call(Method::GET, "/api/tasks", Some(&secret), None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{detail}");
        assert!(reply.body["detail"].as_str().unwrap().contains(detail), "{:?}", reply.body);
        assert!(reply.challenge.unwrap().contains("invalid_token"));
    }

    // Use is recorded.
    let listed = server.call(Method::GET, "/api/tokens", Some(&admin), None).await;
    let items = listed.body["items"].as_array().unwrap();
    let viewer = items.iter().find(|t| t["name"] == "viewer").unwrap();
    assert!(viewer["lastUsedAt"].is_string(), "{viewer}");
    assert!(items.iter().all(|t| t.get("secret").is_none()));
}

#[actix_web::test]
async fn a_token_limited_to_queues_touches_no_other_queue() {
    let db = TestDatabase::new();
    let admin = create_token(&db, "admin", "admin", &[]);
    let worker = create_token(&db, "worker", "sms-fleet", &["--queue", "sms"]);
    let producer = create_token(&db, "producer", "sms-app", &["--queue", "sms"]);
    let server = Served::start(&db, &[]);
    for queue in ["sms", "emails"] {
        let created = server
            .call(
                Method::POST,
                "/api/tasks",
                Some(&admin),
                Some(&json!({"name": "x", "queue": queue})),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }

    let outside = server
        .call(
            Method::POST,
            "/api/tasks/claim",
            Some(&worker),
            Some(&json!({"workerId": "w", "queues": ["emails"]})),
        )
        .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    assert_eq!(outside.body["queue"], "emails");
    // Claiming without naming queues takes from the token's own only.
    let claimed = server
        .call(
            Method::POST,
            "/api/tasks/claim",
            Some(&worker),
            Some(&json!({"workerId": "w", "limit": 10})),
        )
        .await;
    let queues: Vec<&str> = claimed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["sms"]);

    let refused = server
        .call(
            Method::POST,
            "/api/tasks",
            Some(&producer),
            Some(&json!({"name": "x", "queue": "emails"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let batch = server
        .call(
            Method::POST,
            "/api/tasks/batch",
            Some(&producer),
            Some(&json!({"tasks": [{"name": "a", "queue": "sms"}, {"name": "b"}]})),
        )
        .await;
    assert_eq!(batch.status, StatusCode::FORBIDDEN, "the default queue is outside too");
}

#[actix_web::test]
async fn a_revoked_token_stops_working_on_every_server_within_seconds() {
    let db = TestDatabase::new();
    let admin = create_token(&db, "admin", "admin", &[]);
    let first = Served::start(&db, &[]);
    let second = Served::start(&db, &[]);
    let created = first
        .call(
            Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(&json!({"name": "leaked", "kind": "viewer"})),
        )
        .await;
    let (id, leaked) = (
        created.body["id"].as_str().unwrap().to_owned(),
        created.body["secret"].as_str().unwrap().to_owned(),
    );
    // The second server has seen it work, so it remembers it.
    assert_eq!(
        second.call(Method::GET, "/api/tasks", Some(&leaked), None).await.status,
        StatusCode::OK
    );

    let revoked =
        first.call(Method::DELETE, &format!("/api/tokens/{id}"), Some(&admin), None).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(revoked.body["revokedAt"].is_string());
    assert_eq!(
        first.call(Method::GET, "/api/tasks", Some(&leaked), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let since = Instant::now();
    eventually("the second server refuses the revoked token", async || {
        second.call(Method::GET, "/api/tasks", Some(&leaked), None).await.status
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(since.elapsed() < Duration::from_secs(5), "took {:?}", since.elapsed());
}

#[actix_web::test]
async fn no_secret_and_no_payload_reaches_the_logs() {
    let db = TestDatabase::new();
    let admin = create_token(&db, "admin", "admin", &[]);
    let server = Served::start(&db, &[]);
    let marker = "PAYLOAD-MARKER-7f3a";
    let bogus = format!("tp_admin_{}", "ab".repeat(32));
    let created = server
        .call(
            Method::POST,
            "/api/tasks",
            Some(&admin),
            Some(&json!({"name": "x", "payload": {"secret": marker}})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let minted = server
        .call(
            Method::POST,
            "/api/tokens",
            Some(&admin),
            Some(&json!({"name": "w", "kind": "worker"})),
        )
        .await;
    let minted = minted.body["secret"].as_str().unwrap().to_owned();
    let claim = json!({"workerId": "w"});
    let claimed = server.call(Method::POST, "/api/tasks/claim", Some(&minted), Some(&claim)).await;
    let lease = claimed.body["items"][0]["leaseToken"].as_str().unwrap().to_owned();
    let done = json!({"workerId": "w", "leaseToken": lease, "result": {"echo": marker}});
    server.call(Method::PUT, &format!("/api/tasks/{id}/succeed"), Some(&minted), Some(&done)).await;
    for path in [
        "/api/tasks",
        &format!("/api/tasks/{id}"),
        &format!("/api/tasks/{id}/events"),
        "/api/tokens",
    ] {
        server.call(Method::GET, path, Some(&admin), None).await;
        server.call(Method::GET, path, Some(&bogus), None).await;
    }

    let logs = server.logs();
    assert!(logs.contains("request finished"), "the logs were written: {logs}");
    for secret in [&admin, &minted, &bogus, &lease] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
    }
    assert!(!logs.contains(marker), "a payload reached the logs");
}

#[actix_web::test]
async fn idempotency_keys_belong_to_the_token_that_sent_them() {
    let db = TestDatabase::new();
    let first = create_token(&db, "producer", "billing", &[]);
    let second = create_token(&db, "producer", "shipping", &[]);
    let server = Served::start(&db, &["--idempotency-ttl", "1h"]);
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let create = async |token: &str| {
        let mut response = client
            .post(format!("{}/api/tasks", server.base))
            .insert_header((AUTHORIZATION, format!("Bearer {token}")))
            .insert_header(("Idempotency-Key", "order-42"))
            .send_json(&json!({"name": "x"}))
            .await
            .unwrap();
        let replayed = response.headers().contains_key("Idempotent-Replayed");
        let body: Value = response.json().await.unwrap();
        (response.status(), replayed, body["id"].as_str().unwrap().to_owned())
    };

    let (status, replayed, by_first) = create(&first).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, replayed, by_second) = create(&second).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "another token's key");
    assert_ne!(by_first, by_second);
    let (status, replayed, again) = create(&first).await;
    assert_eq!((status, replayed, again), (StatusCode::CREATED, true, by_first));
}
