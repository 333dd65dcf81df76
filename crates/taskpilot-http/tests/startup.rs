//! The `taskpilot` binary starting without its database: it serves at once (503 until the
//! database is reached and migrated) rather than exiting, and it never creates a database an
//! explicit `DATABASE_URL` names.
//!
//! A database that comes up later is a TCP proxy in front of the test server that closes
//! every connection until the test lets it forward them.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::io::BufRead as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use diesel::prelude::*;
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;

use common::{guarded, HANG_GUARD};

/// `url` with its host and port replaced by `authority`, and the authority it had.
fn via(url: &str, authority: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (server, path) = rest.split_once('/').unwrap();
    let (user, host) = match server.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), server),
    };
    let upstream = if host.contains(':') { host.to_owned() } else { format!("{host}:5432") };
    (format!("{scheme}://{user}{authority}/{path}"), upstream)
}

/// A database server that is not there until [`Proxy::open`]: it accepts and closes every
/// connection, then forwards them to the real one.
struct Proxy {
    port: u16,
    forwarding: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(false));
        let forward = forwarding.clone();
        let open = Arc::new(Mutex::new(Vec::new()));
        let connections = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !forward.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                connections.lock().unwrap().push(client.try_clone().unwrap());
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, forwarding, open }
    }

    fn open(&self) {
        self.forwarding.store(true, Ordering::SeqCst);
    }

    /// The database goes away: every connection is cut and new ones are closed at once.
    fn close(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
        for connection in self.open.lock().unwrap().drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The binary serving on a free port with `database_url`, its log lines collected.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(database_url: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("TASKPILOT_BIND", format!("127.0.0.1:{port}"))
            .env("TASKPILOT_WORKERS", "1")
            .env("TASKPILOT_DB_POOL_SIZE", "2")
            .env("TASKPILOT_SHUTDOWN_TIMEOUT_SECS", "1")
            .env("TASKPILOT_LOG", "info")
            .env("TASKPILOT_DB_ACQUIRE_TIMEOUT_MS", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot start the taskpilot binary");
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    fn logged(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(request: awc::ClientRequest, body: Option<Value>) -> (StatusCode, Value) {
    let sent = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    let mut response = sent.unwrap();
    let bytes = response.body().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (response.status(), body)
}

/// Polls `path` until it answers `status`: nothing else announces that the server is up or
/// ready across the process boundary.
async fn until_answers(server: &mut Server, client: &awc::Client, path: &str, status: StatusCode) {
    guarded(&format!("{path} answering {status}"), async {
        loop {
            if let Ok(Some(exit)) = server.child.try_wait() {
                panic!("taskpilot exited while waiting for {path}: {exit}");
            }
            let answer = client.get(format!("{}{path}", server.base)).send().await;
            if answer.is_ok_and(|r| r.status() == status) {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[actix_web::test]
async fn a_server_whose_database_comes_up_later_serves_503_then_migrates_and_works() {
    let db = TestDatabase::empty();
    let (_, upstream) = via(db.url(), "unused");
    let proxy = Proxy::start(upstream);
    let (url, _) = via(db.url(), &format!("127.0.0.1:{}", proxy.port));
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut server = Server::start(&url);
    until_answers(&mut server, &client, "/healthz", StatusCode::OK).await;

    let (ready, problem) = send(client.get(format!("{}/readyz", server.base)), None).await;
    let (created, refused) =
        send(client.post(format!("{}/api/tasks", server.base)), Some(json!({"name": "early"})))
            .await;
    proxy.open();
    until_answers(&mut server, &client, "/readyz", StatusCode::OK).await;
    let (later, task) =
        send(client.post(format!("{}/api/tasks", server.base)), Some(json!({"name": "later"})))
            .await;

    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["code"], "DATABASE_UNAVAILABLE");
    assert_eq!(created, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused["code"], "DATABASE_UNAVAILABLE");
    assert_eq!(later, StatusCode::CREATED, "{task}");
    assert_eq!(task["name"], "later");
    assert!(server.child.try_wait().unwrap().is_none(), "the server must keep running");
    assert_eq!(server.logged("the database is not ready"), 1, "{:?}", server.log.lock().unwrap());
}

/// Runs the binary with `args` until it exits by itself (at most [`HANG_GUARD`]); its
/// success and what it wrote to stderr.
fn run_to_exit(args: &[&str], database_url: &str) -> (bool, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_taskpilot"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("TASKPILOT_BIND", "127.0.0.1:0")
        .env("TASKPILOT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match exited.recv_timeout(HANG_GUARD) {
        Ok(output) => {
            let output = output.unwrap();
            (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
        }
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("taskpilot {args:?} did not exit within {HANG_GUARD:?}");
        }
    }
}

#[test]
fn an_explicit_database_url_naming_a_missing_database_exits_saying_so_and_creates_nothing() {
    let db = TestDatabase::empty();
    let name = format!("taskpilot_missing_{}", uuid::Uuid::now_v7().simple());
    let (server, _) = db.url().rsplit_once('/').unwrap();
    let missing = format!("{server}/{name}");

    let served = run_to_exit(&["serve"], &missing);
    let migrated = run_to_exit(&["migrate"], &missing);

    for (what, (success, stderr)) in [("serve", served), ("migrate", migrated)] {
        assert!(!success, "{what} must fail");
        assert!(
            stderr.contains(&format!("database \"{name}\" does not exist")),
            "{what}: {stderr}"
        );
        assert!(stderr.contains("createdb"), "{what}: {stderr}");
    }
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let found: Count =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .unwrap();
    assert_eq!(found.n, 0, "database {name} was created");
}

#[actix_web::test]
async fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let db = TestDatabase::new();
    let (_, upstream) = via(db.url(), "unused");
    let proxy = Proxy::start(upstream);
    proxy.open();
    let (url, _) = via(db.url(), &format!("127.0.0.1:{}", proxy.port));
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut server = Server::start(&url);
    until_answers(&mut server, &client, "/readyz", StatusCode::OK).await;

    proxy.close();
    let mut refused = Vec::new();
    for i in 0..20 {
        let create = client.post(format!("{}/api/tasks", server.base));
        refused.push(send(create, Some(json!({ "name": format!("during-{i}") }))).await.0);
    }
    proxy.open();
    until_answers(&mut server, &client, "/readyz", StatusCode::OK).await;
    guarded("the end of the outage in the log", async {
        while server.logged("is available again") == 0 {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    assert!(refused.iter().all(|status| *status == StatusCode::SERVICE_UNAVAILABLE), "{refused:?}");
    let log = server.log.lock().unwrap().clone();
    // Apart from the start-up's warning that the server runs open (no token exists).
    let warnings: Vec<&String> =
        log.iter().filter(|line| line.contains(" WARN ") && !line.contains("runs open")).collect();
    assert_eq!(server.logged("the database is unavailable"), 1, "{log:#?}");
    assert_eq!(warnings.len(), 1, "one warning for the whole outage: {warnings:#?}");
    let ended: Vec<&String> =
        log.iter().filter(|line| line.contains("is available again")).collect();
    assert_eq!(ended.len(), 1, "{log:#?}");
    let failed: u64 = ended[0]
        .split("failed_calls=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", ended[0]));
    assert!(failed >= 20, "{failed} calls counted for 20 refused requests: {}", ended[0]);
}
