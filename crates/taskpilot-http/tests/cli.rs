//! The operator commands end to end: the built `taskpilot` binary serving a fresh database,
//! and the same binary run as a client against it (`tasks`, `queues`, `stats`, `tokens`
//! with `--server`), checking what it prints and the exit code a script would see. The
//! client runs are given a database URL that cannot be reached, so that any of them that
//! touched a database would fail.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use taskpilot_client::api::{ClaimTasksRequest, FailTaskRequest, SucceedTaskRequest};
use taskpilot_client::{Client, TaskStatus};
use taskpilot_diesel::testing::TestDatabase;

use common::HANG_GUARD;

/// What the client runs get as their database: nothing listens there.
const NO_DATABASE: &str = "postgres://nobody@127.0.0.1:9/none";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `taskpilot serve` on a free loopback port over a fresh database; killed when dropped.
struct Served {
    child: Child,
    base: String,
    log: PathBuf,
    db: TestDatabase,
}

impl Served {
    /// Starts the server and waits until it is ready (migrated, `/readyz` 200).
    fn start() -> Self {
        let db = TestDatabase::new();
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli-{}.log", uuid::Uuid::now_v7()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", db.url())
            .env("TASKPILOT_LOG", "warn")
            .env("TASKPILOT_WORKERS", "1")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let served = Self { child, base: format!("http://127.0.0.1:{port}"), log, db };
        let started = Instant::now();
        while !ready(port) {
            assert!(started.elapsed() < HANG_GUARD, "never ready: {}", served.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The CLI against this server, with `token` if given.
    fn cli(&self, token: Option<&str>, args: &[&str]) -> Run {
        let mut all = vec!["--server", self.base.as_str()];
        if let Some(token) = token {
            all.extend(["--token", token]);
        }
        all.extend_from_slice(args);
        cli(&all)
    }

    /// The Rust client of this server, with `token` if given.
    fn client(&self, token: Option<&str>) -> Client {
        let builder = Client::builder(&self.base);
        match token {
            Some(token) => builder.token(token).build().unwrap(),
            None => builder.build().unwrap(),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
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

/// One run of the binary: its exit code and what it printed.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The run, after checking that it exited 0.
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Its stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The `field: value` line of `field`, as the detail views print it.
    fn field(&self, field: &str) -> &str {
        let prefix = format!("{field}:");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {field:?} in {self:?}"))
    }

    /// The table row whose first column is `first`, split into its columns.
    fn row(&self, first: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|columns| columns.first() == Some(&first))
            .unwrap_or_else(|| panic!("no row {first:?} in {self:?}"))
    }
}

/// `taskpilot <args>` with none of the client's variables from the environment, and a
/// database no client command may need.
fn cli(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(args)
        .env_remove("TASKPILOT_SERVER")
        .env_remove("TASKPILOT_TOKEN")
        .env_remove("TASKPILOT_JSON")
        .env("DATABASE_URL", NO_DATABASE)
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs `future` to its end on a runtime of its own: the test's calls through the API.
fn api<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Repeats `run` until `done` holds for its result, at most [`HANG_GUARD`].
fn eventually(what: &str, mut run: impl FnMut() -> Run, done: impl Fn(&Run) -> bool) -> Run {
    let started = Instant::now();
    loop {
        let result = run();
        if done(&result) {
            return result;
        }
        assert!(started.elapsed() < HANG_GUARD, "never happened: {what}; last {result:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Claims up to `limit` tasks of `queue` and fails each (with `maxAttempts` 1, for good).
fn claim_and_fail(server: &Served, queue: &str, limit: i64) {
    let client = server.client(None);
    api(async {
        let claim = ClaimTasksRequest {
            worker_id: "w1".into(),
            limit: Some(limit),
            queues: Some(vec![queue.into()]),
            lease_seconds: None,
            wait_ms: None,
        };
        for task in client.claim(&claim).await.unwrap() {
            let fail = FailTaskRequest {
                error_message: "smtp timeout".into(),
                worker_id: Some("w1".into()),
                lease_token: task.lease_token.clone(),
                retryable: None,
            };
            assert_eq!(client.fail(task.id, &fail).await.unwrap().status, TaskStatus::Failed);
        }
    });
}

#[test]
fn a_task_created_from_the_command_line_is_listed_shown_explained_and_has_a_history() {
    let server = Served::start();

    let created = server
        .cli(
            None,
            &[
                "--json",
                "tasks",
                "create",
                "--queue",
                "mail",
                "--name",
                "send-email",
                "--payload",
                r#"{"to":"ada@example.com"}"#,
                "--priority",
                "5",
            ],
        )
        .ok()
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    let other = server.cli(None, &["tasks", "create", "--name", "later", "--delay", "1h"]).ok();
    let table = server.cli(None, &["tasks", "list"]).ok();
    let filtered = server
        .cli(
            None,
            &[
                "tasks",
                "list",
                "--json",
                "--status",
                "pending",
                "--queue",
                "mail",
                "--payload",
                r#"{"to":"ada@example.com"}"#,
            ],
        )
        .ok();
    let first_page = server.cli(None, &["tasks", "list", "--limit", "1"]).ok();
    let cursor = first_page.stderr.trim().strip_prefix("next page: --after ").unwrap().to_owned();
    let second_page = server.cli(None, &["tasks", "list", "--limit", "1", "--after", &cursor]).ok();
    let shown = server.cli(None, &["tasks", "show", &id]).ok();
    let shown_json = server.cli(None, &["tasks", "show", &id, "--json"]).ok();
    let events = server.cli(None, &["tasks", "events", &id]).ok();
    let explained = server.cli(None, &["tasks", "explain", &id]).ok();
    let explained_later = server.cli(None, &["tasks", "explain", other.field("id"), "--json"]).ok();

    assert_eq!(created["status"], "PENDING");
    assert_eq!((created["queue"].as_str(), created["priority"].as_i64()), (Some("mail"), Some(5)));
    assert_eq!(created["created"], true);
    assert_eq!(other.field("status"), "PENDING");
    assert_ne!(other.field("next run"), "-", "a delayed task has a run time");
    let header = table.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("STATUS"), "{table:?}");
    let row = table.row(&id);
    assert_eq!(&row[1..4], ["mail", "send-email", "PENDING"], "{table:?}");
    let items = filtered.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.iter().map(|t| t["id"].as_str().unwrap()).collect::<Vec<_>>(), [id.as_str()]);
    assert!(filtered.stderr.is_empty(), "one page only: no hint {filtered:?}");
    // Newest first: the delayed task, then the first one.
    assert!(first_page.stdout.contains(other.field("id")), "{first_page:?}");
    assert!(second_page.stdout.contains(&id) && second_page.stderr.is_empty(), "{second_page:?}");
    assert_eq!(shown.field("id"), id);
    assert_eq!(shown.field("version"), "1");
    assert_eq!(shown.field("payload"), r#"{"to":"ada@example.com"}"#);
    assert_eq!(shown_json.json()["id"], id.as_str());
    assert_eq!(shown_json.stderr.trim(), "version: 1", "the ETag goes to stderr with --json");
    let creation = events.stdout.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(&creation[1..5], ["CREATED", "0", "-", "PENDING"], "{events:?}");
    assert_eq!(events.stdout.lines().count(), 2, "a header and the creation: {events:?}");
    assert_eq!(explained.field("runnable now"), "yes", "{explained:?}");
    assert_eq!(explained_later.json()["reasons"][0]["code"], "SCHEDULED", "{explained_later:?}");
}

#[test]
fn refusals_exit_1_and_name_their_problem_code() {
    let server = Served::start();
    let id = server.cli(None, &["tasks", "create", "--name", "t"]).ok().field("id").to_owned();

    let unknown = server.cli(None, &["tasks", "cancel", "01930000-0000-7000-8000-000000000001"]);
    let stale = server.cli(None, &["tasks", "cancel", &id, "--if-version", "7"]);
    let current = server.cli(None, &["tasks", "cancel", &id, "--if-version", "1"]);
    let stale_rerun = server.cli(None, &["tasks", "rerun", &id, "--if-version", "1"]);
    let version = server.cli(None, &["tasks", "show", &id]).ok().field("version").to_owned();
    let rerun = server.cli(None, &["tasks", "rerun", &id, "--if-version", &version]);
    let invalid = server.cli(None, &["tasks", "create", "--name", "t", "--max-attempts", "0"]);

    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.starts_with("error: TASK_NOT_FOUND: "), "{unknown:?}");
    assert!(unknown.stdout.is_empty());
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.starts_with("error: PRECONDITION_FAILED: "), "{stale:?}");
    assert_eq!(current.ok().field("status"), "CANCELLED");
    assert_eq!(stale_rerun.code, 1);
    assert!(stale_rerun.stderr.starts_with("error: PRECONDITION_FAILED: "), "{stale_rerun:?}");
    assert_eq!(rerun.ok().field("status"), "PENDING");
    assert_eq!(invalid.code, 1);
    assert!(invalid.stderr.starts_with("error: VALIDATION_FAILED: "), "{invalid:?}");
}

#[test]
fn a_bulk_dry_run_counts_the_failed_tasks_and_the_rerun_then_changes_them() {
    let server = Served::start();
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let args =
                ["tasks", "create", "--queue", "jobs", "--name", "flaky", "--max-attempts", "1"];
            server.cli(None, &args).ok().field("id").to_owned()
        })
        .collect();
    server.cli(None, &["tasks", "create", "--queue", "jobs", "--name", "fine"]).ok();
    claim_and_fail(&server, "jobs", 2);
    let filter = ["--action", "rerun", "--queue", "jobs", "--status", "FAILED"];
    let status =
        |id: &str| server.cli(None, &["tasks", "show", id]).ok().field("status").to_owned();

    let dry = server.cli(None, &[&["tasks", "bulk", "--dry-run"][..], &filter].concat()).ok();
    let after_dry: Vec<String> = ids.iter().map(|id| status(id)).collect();
    let done = server.cli(None, &[&["tasks", "bulk"][..], &filter].concat()).ok();
    let after: Vec<String> = ids.iter().map(|id| status(id)).collect();
    let nothing_left = server.cli(None, &[&["tasks", "bulk", "--json"][..], &filter].concat()).ok();

    assert_eq!((dry.field("matched"), dry.field("done"), dry.field("dry run")), ("2", "0", "yes"));
    assert_eq!(after_dry, ["FAILED", "FAILED"], "a dry run changes nothing");
    assert_eq!((done.field("matched"), done.field("done"), done.field("skipped")), ("2", "2", "0"));
    assert_eq!(after, ["PENDING", "PENDING"]);
    assert_eq!(nothing_left.json()["matched"], 0);
}

#[test]
fn a_paused_queue_gives_claims_nothing_until_it_is_resumed() {
    let server = Served::start();
    let id = server.cli(None, &["tasks", "create", "--queue", "mail", "--name", "send"]).ok();
    let id = id.field("id").to_owned();
    let client = server.client(None);
    let claim = || {
        api(client.claim(&ClaimTasksRequest {
            worker_id: "w1".into(),
            limit: Some(1),
            queues: Some(vec!["mail".into()]),
            lease_seconds: None,
            wait_ms: None,
        }))
        .unwrap()
    };

    let paused = server.cli(None, &["queues", "pause", "mail"]).ok();
    let while_paused = claim();
    let listed = server.cli(None, &["queues", "list"]).ok();
    let shown = server.cli(None, &["--json", "queues", "show", "mail"]).ok().json();
    let explained = server.cli(None, &["tasks", "explain", &id]).ok();
    let resumed = server.cli(None, &["queues", "resume", "mail"]).ok();
    let after = claim();
    let missing = server.cli(None, &["queues", "show", "nothing-here"]);

    assert_eq!(paused.field("paused"), "yes", "{paused:?}");
    assert!(while_paused.is_empty(), "{while_paused:?}");
    assert_eq!(&listed.row("mail")[1..3], ["yes", "1"], "{listed:?}");
    assert_eq!((shown["paused"].as_bool(), shown["version"].as_u64()), (Some(true), Some(1)));
    assert!(explained.stdout.contains("QUEUE_PAUSED"), "{explained:?}");
    assert_eq!((resumed.field("paused"), resumed.field("version")), ("no", "2"));
    assert_eq!(after.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(), [id]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.starts_with("error: QUEUE_NOT_FOUND: "), "{missing:?}");
}

#[test]
fn stats_show_the_counts_per_queue_and_the_refused_stale_calls() {
    let server = Served::start();
    for (queue, name) in [("mail", "a"), ("mail", "b"), ("jobs", "c")] {
        server
            .cli(
                None,
                &["tasks", "create", "--queue", queue, "--name", name, "--max-attempts", "1"],
            )
            .ok();
    }
    claim_and_fail(&server, "jobs", 1);
    // A late report with the lease of an attempt that already ended is refused and counted.
    let client = server.client(None);
    api(async {
        let claim = ClaimTasksRequest {
            worker_id: "w2".into(),
            limit: Some(1),
            queues: Some(vec!["mail".into()]),
            lease_seconds: None,
            wait_ms: None,
        };
        let task = client.claim(&claim).await.unwrap().remove(0);
        let succeed = SucceedTaskRequest {
            worker_id: Some("w2".into()),
            lease_token: task.lease_token.clone(),
            result: None,
        };
        client.succeed(task.id, &succeed).await.unwrap();
        let late = FailTaskRequest {
            error_message: "late".into(),
            worker_id: Some("w2".into()),
            lease_token: task.lease_token.clone(),
            retryable: None,
        };
        client.fail(task.id, &late).await.unwrap_err();
    });

    let table = server.cli(None, &["stats"]).ok();
    let json = server.cli(None, &["stats", "--json"]).ok().json();

    let header = table.row("QUEUE");
    assert_eq!(
        &header[1..7],
        ["RUNNABLE", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
    );
    assert_eq!(&table.row("mail")[1..7], ["1", "0", "0", "1", "0", "0"], "{table:?}");
    assert_eq!(&table.row("jobs")[1..7], ["0", "0", "0", "0", "1", "0"], "{table:?}");
    assert_eq!(&table.row("(total)")[1..7], ["1", "0", "0", "1", "1", "0"], "{table:?}");
    assert_eq!(&table.row("OUTCOME_CONFLICT")[1..], ["FAIL", "1"], "{table:?}");
    assert_eq!(json["stats"]["totals"]["failed"], 1);
    assert_eq!(json["stats"]["queues"][1]["queue"], "mail");
    assert_eq!(json["rejections"]["items"][0]["code"], "OUTCOME_CONFLICT");
}

#[test]
fn tokens_go_through_the_api_when_a_server_is_named() {
    let server = Served::start();
    // The first admin token is made on the database, as without a server.
    let bootstrap = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(["tokens", "create", "--kind", "admin", "--name", "ops"])
        .env_remove("TASKPILOT_SERVER")
        .env("DATABASE_URL", server.db.url())
        .env("TASKPILOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(bootstrap.status.success(), "{bootstrap:?}");
    let admin = String::from_utf8(bootstrap.stdout).unwrap().lines().last().unwrap().to_owned();
    let closed = eventually(
        "the server asks for a token",
        || server.cli(None, &["tasks", "list"]),
        |run| run.code == 1,
    );
    let id = server.cli(Some(&admin), &["tasks", "create", "--name", "t"]).ok();
    let id = id.field("id").to_owned();

    let created = server
        .cli(Some(&admin), &["tokens", "create", "--kind", "viewer", "--name", "dash", "--json"])
        .ok()
        .json();
    let viewer = created["secret"].as_str().unwrap().to_owned();
    let viewer_id = created["id"].as_str().unwrap().to_owned();
    let reads = server.cli(Some(&viewer), &["tasks", "list"]);
    let refused = server.cli(Some(&viewer), &["tasks", "cancel", &id]);
    let listed = server.cli(Some(&admin), &["tokens", "list"]).ok();
    let revoked = server.cli(Some(&admin), &["tokens", "revoke", &viewer_id]).ok();
    let gone = eventually(
        "the revoked token is refused",
        || server.cli(Some(&viewer), &["tasks", "list"]),
        |run| run.code != 0,
    );

    assert!(closed.stderr.starts_with("error: UNAUTHENTICATED: "), "{closed:?}");
    assert!(closed.stderr.contains("--token"), "a hint names the flag: {closed:?}");
    assert!(viewer.starts_with("tp_viewer_"), "{created:?}");
    assert_eq!(reads.code, 0, "{reads:?}");
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.starts_with("error: FORBIDDEN: "), "{refused:?}");
    assert_eq!(&listed.row(&viewer_id)[1..4], ["viewer", "dash", "*"], "{listed:?}");
    assert!(!listed.stdout.contains(&viewer) && !listed.stdout.contains(&admin));
    assert!(revoked.stdout.starts_with(&format!("revoked viewer token \"dash\" ({viewer_id})")));
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.starts_with("error: UNAUTHENTICATED: "), "{gone:?}");
}

#[test]
fn bad_arguments_exit_2_and_a_server_that_cannot_be_reached_exits_3() {
    let closed = format!("http://127.0.0.1:{}", free_port());

    let unknown_flag = cli(&["tasks", "list", "--colour", "red"]);
    let bad_id = cli(&["--server", &closed, "tasks", "show", "not-a-uuid"]);
    let bad_json = cli(&["--server", &closed, "tasks", "create", "--name", "x", "--payload", "{"]);
    let bad_server = cli(&["--server", "not a url", "tasks", "list"]);
    let unreachable = cli(&["--server", &closed, "tasks", "list"]);
    let unreachable_tokens = cli(&["--server", &closed, "tokens", "list"]);
    let help = cli(&["--help"]);

    for run in [&unknown_flag, &bad_id, &bad_json, &bad_server] {
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(unreachable.stderr.starts_with(&format!("error: cannot reach the server at {closed}")));
    assert_eq!(unreachable_tokens.code, 3, "with a server, tokens never use the database");
    let help = help.ok().stdout;
    for documented in ["TASKPILOT_SERVER", "TASKPILOT_TOKEN", "--json", "3  server unreachable"] {
        assert!(help.contains(documented), "{documented} missing from --help");
    }
}
