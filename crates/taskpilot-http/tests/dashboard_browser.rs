//! The dashboard in a real browser: the built `taskpilot` binary on a fresh database, with
//! tokens minted by `taskpilot tokens create`, driven by `tests/browser/dashboard.mjs`
//! (headless Debian Chromium through playwright-core, run with node).
//!
//! `scripts/browser-deps` installs what is missing first (Chromium with apt-get when run as
//! root, playwright-core at a pinned version under the target directory), so that
//! `cargo test --workspace` on a fresh machine runs this test too. A screenshot of every
//! page lands in `<target dir>/dashboard-screenshots/`.

#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskpilot_diesel::testing::TestDatabase;

use common::HANG_GUARD;

/// The longest the whole browser run may take: it guards against a hang only (each of its
/// steps has its own guard of 20 s).
const BROWSER_GUARD: Duration = Duration::from_secs(300);

/// The workspace's target directory (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `taskpilot tokens create` on `db`: the token's id and secret.
fn create_token(db: &TestDatabase, kind: &str, name: &str) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(["tokens", "create", "--kind", kind, "--name", name])
        .env("DATABASE_URL", db.url())
        .env("TASKPILOT_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "tokens create failed: {output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    // "created viewer token "name" (<id>); its secret, shown only now:" then the secret.
    let id = lines[0].rsplit_once('(').unwrap().1.split_once(')').unwrap().0.to_owned();
    (id, lines[1].to_owned())
}

/// Whether the server on `port` answers `GET /readyz` with 200.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let target = target_dir();
    let node_dir = target.join("browser-test");
    let deps =
        Command::new(workspace().join("scripts/browser-deps")).arg(&node_dir).status().unwrap();
    assert!(deps.success(), "scripts/browser-deps could not install the browser test's needs");

    let db = TestDatabase::new();
    let (_, admin) = create_token(&db, "admin", "browser-admin");
    let (_, operator) = create_token(&db, "operator", "browser-operator");
    let (viewer_id, viewer) = create_token(&db, "viewer", "browser-viewer");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_path = target.join("tmp").join(format!("dashboard-browser-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_taskpilot"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", db.url())
            .env("TASKPILOT_WORKERS", "2")
            .env("TASKPILOT_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !ready(port) {
        assert!(started.elapsed() < HANG_GUARD, "the server never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    let shots = target.join("dashboard-screenshots");
    let mut node = Killed(
        Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs"))
            .env("TP_BASE", format!("http://127.0.0.1:{port}"))
            .env("TP_ADMIN", &admin)
            .env("TP_OPERATOR", &operator)
            .env("TP_VIEWER", &viewer)
            .env("TP_VIEWER_ID", &viewer_id)
            .env("TP_SCREENSHOTS", &shots)
            .env("TP_NODE_MODULES", node_dir.join("node_modules"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = node.0.stdout.take().unwrap();
    let mut stderr = node.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < BROWSER_GUARD, "the browser run hung");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "the browser run failed ({status}):\n{out}\n{err}\n--- server log ---\n{server_log}"
    );
    assert!(out.contains("dashboard: every step passed"), "{out}\n{err}");
    for page in
        ["login", "overview", "tasks", "task", "queues", "dead-letters", "workers", "tokens"]
    {
        assert!(shots.join(format!("{page}.png")).exists(), "no screenshot of {page}");
    }
    // No secret reaches the logs, nor any payload.
    for secret in [&admin, &operator, &viewer] {
        assert!(!server_log.contains(secret.as_str()), "a token secret was logged");
    }
    assert!(!server_log.contains("<b>escaped</b>"), "a payload was logged");
    let _ = std::fs::remove_file(&log_path);
}
