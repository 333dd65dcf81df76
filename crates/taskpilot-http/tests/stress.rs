//! End-to-end stress: three `taskpilot serve` processes on one PostgreSQL database, twelve
//! workers claiming over HTTP, 2,000 tasks, about a fifth of the attempts failing, and workers
//! that freeze mid-task past their lease and come back late.
//!
//! At the end every task is terminal, each task's history is consistent (attempts numbered
//! one by one, each a claim one worker got, never two live at once, reaped only after their
//! lease ran out, one terminal transition, every outcome the one its worker reported), and
//! every late call from a reaped worker was refused with the precise code, recorded in the
//! task's history and counted in `/api/stats/rejections`. Some workers also send an accepted
//! success again (a replay: 200) and then a failure with the same token (OUTCOME_CONFLICT).
//!
//! Outcomes follow a hash of the task's number and attempt, so a run is reproducible up to
//! scheduling. The test talks to the servers only over HTTP, as workers and operators do.
//!
//! Set TASKPILOT_TEST_DATABASE_URL to use a running PostgreSQL; otherwise a throwaway cluster
//! is started from the installed binaries.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use actix_web::rt::task::JoinHandle;
use actix_web::rt::time::sleep;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use taskpilot_diesel::testing::TestDatabase;

const SERVERS: usize = 3;
const WORKERS: usize = 12;
const TASKS: u64 = 2_000;
/// Share of attempts a worker reports as failed, in percent.
const FAILURE_PERCENT: u64 = 20;
/// Every tenth task gets only [`SHORT_BUDGET`] attempts, so that some run out of them.
const SHORT_BUDGET: u64 = 2;
const LONG_BUDGET: u64 = 10;
const LEASE_SECS: u64 = 5;
const REAPER_INTERVAL_MS: u64 = 200;
const CLAIM_LIMIT: u64 = 10;
const CLAIM_WAIT_MS: u64 = 500;
/// How long a frozen worker stays away after its last heartbeat: past its lease, and past
/// the reaper pass that follows.
const FREEZE: Duration = Duration::from_millis(LEASE_SECS * 1_000 + 1_500);
/// Workers heartbeat a task before reporting when this much of its lease has gone by.
const HEARTBEAT_AFTER: Duration = Duration::from_secs(2);
/// How long a worker that took a task over from a frozen one waits for its late calls.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);
/// Tasks created at once, over all servers.
const CREATE_CONCURRENCY: usize = 24;
/// History reads at once, over all servers.
const READ_CONCURRENCY: usize = 24;
/// From the first task created to the last one terminal.
const WORK_DEADLINE: Duration = Duration::from_secs(50);

/// Workers 0 to FREEZERS - 1 freeze FREEZES_EACH times each.
const FREEZERS: usize = 2;
const FREEZES_EACH: usize = 2;
/// Tasks a frozen worker holds from the `fragile` queue, which no other worker reads.
const FRAGILE_PER_FREEZE: u64 = 5;
/// Tasks 0..FRAGILE go to the `fragile` queue with a single attempt: once reaped they fail
/// for good, so the late calls on them meet an attempt that nothing superseded.
const FRAGILE: u64 = FREEZERS as u64 * FREEZES_EACH as u64 * FRAGILE_PER_FREEZE;
const NORMAL_QUEUES: [&str; 2] = ["alpha", "beta"];
/// Workers send the success of every task whose number is a multiple of this twice, then a
/// failure with the same token.
const REPORT_AGAIN_EVERY: u64 = 50;

/// Whether attempt `attempt` of task number `n` fails: reproducible from run to run.
fn attempt_fails(n: u64, attempt: u64) -> bool {
    splitmix64((n << 8) | attempt) % 100 < FAILURE_PERCENT
}

fn max_attempts_of(n: u64) -> u64 {
    if n < FRAGILE {
        1
    } else if n % 10 == 9 {
        SHORT_BUDGET
    } else {
        LONG_BUDGET
    }
}

fn queue_of(n: u64) -> &'static str {
    if n < FRAGILE {
        "fragile"
    } else {
        NORMAL_QUEUES[(n % 2) as usize]
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------------------------
// Server processes

/// The `taskpilot` processes; killed when dropped, so a failing test leaves none behind.
struct Servers {
    children: Vec<Child>,
    bases: Vec<String>,
}

impl Servers {
    fn start(database_url: &str, count: usize) -> Self {
        let mut servers = Self { children: Vec::new(), bases: Vec::new() };
        for _ in 0..count {
            // The port is free now and the child binds it a moment later. Should anything take
            // it meanwhile, the child exits and `wait_ready` says so.
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut command = Command::new(env!("CARGO_BIN_EXE_taskpilot"));
            // Only the settings below: none from the developer's shell.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("TASKPILOT_") {
                    command.env_remove(name);
                }
            }
            let child = command
                .arg("serve")
                .env("DATABASE_URL", database_url)
                .env("TASKPILOT_BIND", format!("127.0.0.1:{port}"))
                .env("TASKPILOT_BACKOFF_BASE_MS", "20")
                .env("TASKPILOT_BACKOFF_MAX_MS", "200")
                .env("TASKPILOT_DEFAULT_MAX_ATTEMPTS", LONG_BUDGET.to_string())
                .env("TASKPILOT_DEFAULT_LEASE_SECS", LEASE_SECS.to_string())
                .env("TASKPILOT_REAPER_INTERVAL_MS", REAPER_INTERVAL_MS.to_string())
                .env("TASKPILOT_DB_POOL_SIZE", "6")
                .env("TASKPILOT_WORKERS", "2")
                .env("TASKPILOT_SHUTDOWN_TIMEOUT_SECS", "1")
                .env("TASKPILOT_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .expect("cannot start the taskpilot binary");
            servers.children.push(child);
            servers.bases.push(format!("http://127.0.0.1:{port}"));
        }
        servers
    }

    /// Waits until every server answers GET /readyz with 200.
    async fn wait_ready(&mut self, client: &awc::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, base) in self.bases.iter().enumerate() {
            loop {
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    panic!("server {i} ({base}) exited before it was ready: {status}");
                }
                let ready = client.get(format!("{base}/readyz")).send().await;
                if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    break;
                }
                assert!(Instant::now() < deadline, "server {i} ({base}) not ready within 30 s");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Panics when a server died during the run: its absence would explain anything else.
    fn assert_alive(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server {i} ({}) exited during the run: {status}", self.bases[i]);
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One server, as a client sees it.
#[derive(Clone)]
struct Api {
    client: awc::Client,
    base: String,
}

struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl Api {
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let url = format!("{}{path}", self.base);
        let request = self.client.request(method.clone(), &url);
        let response = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response =
            response.unwrap_or_else(|e| panic!("{method} {url}: no answer from the server: {e}"));
        let status = response.status();
        let bytes = response.body().limit(64 * 1024 * 1024).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {url}: {status} with a body that is not JSON ({e})")
            })
        };
        Reply { status, body }
    }

    /// Sends a worker's call again while the server says "try again": 503, or a lost race
    /// inside the server (409 CONCURRENT_MODIFICATION). Safe for reports: a repeated report
    /// with the same token is a replay and gets the stored task.
    async fn send_retrying(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut tries = 0;
        loop {
            let reply = self.send(method.clone(), path, body).await;
            let transient = reply.status == StatusCode::SERVICE_UNAVAILABLE
                || (reply.status == StatusCode::CONFLICT
                    && reply.code() == "CONCURRENT_MODIFICATION");
            tries += 1;
            if !transient || tries == 10 {
                return reply;
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send_retrying(Method::GET, path, None).await
    }
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap_or_else(|| panic!("no id in {task}")).to_owned()
}

fn u64_of(task: &Value, field: &str) -> u64 {
    task[field].as_u64().unwrap_or_else(|| panic!("no number {field} in {task}"))
}

fn number_of(task: &Value) -> u64 {
    u64_of(&task["payload"], "n")
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}"));
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// Workers

/// What a worker reported for an attempt it ran: a success or a (retryable) failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum WorkerReport {
    Succeeded,
    Failed,
}

/// A call made with a token that no longer spoke for a live attempt, or made again after the
/// attempt ended, and how the server answered.
#[derive(Debug, Clone)]
struct StaleCall {
    task: String,
    attempt: u64,
    call: &'static str,
    /// The refusal the state of the task called for.
    expected: &'static str,
    /// The status the task was in (for late calls: seen just before, and still so after).
    met: &'static str,
    status: StatusCode,
    code: String,
}

/// What the workers did, as they saw it.
#[derive(Default)]
struct Ledger {
    /// Who got each attempt from a claim, by task and attempt.
    claimed: HashMap<(String, u64), String>,
    /// Outcomes accepted with 200, by task and attempt.
    accepted: HashMap<(String, u64), WorkerReport>,
    /// Late calls of frozen workers.
    late: Vec<StaleCall>,
    /// Calls of workers that believed they held their lease and were refused anyway (a slow
    /// machine can make any worker late).
    refused_on_time: Vec<StaleCall>,
    /// Failure reports sent after the same attempt's accepted success.
    second_thoughts: Vec<StaleCall>,
    /// Accepted successes sent again.
    replays: u64,
    /// Tasks whose frozen worker has made its late calls.
    late_done: HashSet<String>,
    /// Answers no worker should ever get.
    problems: Vec<String>,
    claims: u64,
    freezes: u64,
}

type Shared = Rc<RefCell<Ledger>>;

/// What a frozen worker saw of its task when it came back.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The refusal its late calls must get.
    expected: &'static str,
    /// The task's status then. A newer attempt that took over from the frozen worker waits
    /// for its late calls (see [`Held::takes_over`]), so those meet it running.
    status: &'static str,
}

/// A claimed task as the worker keeps it.
struct Held {
    id: String,
    n: u64,
    attempt: u64,
    token: String,
    /// The previous attempt was reaped: this one takes over from a frozen worker.
    takes_over: bool,
    /// The lease runs at least until LEASE_SECS after this: the claim (or the last
    /// heartbeat) was sent then.
    lease_from: Instant,
}

impl Held {
    fn from_claim(task: &Value, lease_from: Instant) -> Self {
        Self {
            lease_from,
            id: id_of(task),
            n: number_of(task),
            attempt: u64_of(task, "attempt"),
            token: task["leaseToken"]
                .as_str()
                .unwrap_or_else(|| panic!("claimed task without leaseToken: {task}"))
                .to_owned(),
            takes_over: task["lastError"].as_str().is_some_and(|e| e.starts_with("lease expired")),
        }
    }

    fn outcome(&self) -> WorkerReport {
        if attempt_fails(self.n, self.attempt) {
            WorkerReport::Failed
        } else {
            WorkerReport::Succeeded
        }
    }

    /// The report this worker makes for this attempt: path, call name and body.
    fn report(&self, worker: &str) -> (String, &'static str, Value) {
        match self.outcome() {
            WorkerReport::Succeeded => (
                format!("/api/tasks/{}/succeed", self.id),
                "SUCCEED",
                json!({ "workerId": worker, "leaseToken": self.token, "result": { "n": self.n } }),
            ),
            WorkerReport::Failed => (
                format!("/api/tasks/{}/fail", self.id),
                "FAIL",
                json!({
                    "workerId": worker,
                    "leaseToken": self.token,
                    "errorMessage": format!("simulated failure of task {} attempt {}", self.n, self.attempt),
                }),
            ),
        }
    }

    fn heartbeat(&self, worker: &str) -> (String, Value) {
        (
            format!("/api/tasks/{}/heartbeat", self.id),
            json!({ "workerId": worker, "leaseToken": self.token, "leaseSeconds": LEASE_SECS }),
        )
    }
}

struct Worker {
    index: usize,
    name: String,
    api: Api,
    ledger: Shared,
    stop: Rc<Cell<bool>>,
}

impl Worker {
    async fn run(self) {
        let mut freezes = 0;
        while !self.stop.get() {
            let batch = self.claim(&NORMAL_QUEUES, CLAIM_LIMIT).await;
            // The first freeze waits for real work to hold; later ones happen even when the
            // normal queues ran dry, since their fragile tasks wait for them.
            if self.index < FREEZERS && freezes < FREEZES_EACH && (freezes > 0 || !batch.is_empty())
            {
                freezes += 1;
                let fragile = self.claim_fragile().await;
                self.freeze(batch, fragile).await;
                continue;
            }
            for task in &batch {
                self.process(task).await;
            }
        }
    }

    async fn claim(&self, queues: &[&str], limit: u64) -> Vec<Held> {
        let body = json!({
            "workerId": self.name,
            "limit": limit,
            "queues": queues,
            "leaseSeconds": LEASE_SECS,
            "waitMs": CLAIM_WAIT_MS,
        });
        let sent = Instant::now();
        let reply = self.api.send_retrying(Method::POST, "/api/tasks/claim", Some(&body)).await;
        assert_eq!(reply.status, StatusCode::OK, "claim by {}: {}", self.name, reply.body);
        let items = reply.body["items"].as_array().unwrap_or_else(|| panic!("{}", reply.body));
        let mut ledger = self.ledger.borrow_mut();
        ledger.claims += 1;
        if items.len() as u64 > limit {
            ledger.problems.push(format!("{} tasks for a claim of {limit}", items.len()));
        }
        let mut held = Vec::new();
        for task in items {
            if task["status"] != "RUNNING"
                || task["workerId"] != self.name.as_str()
                || !queues.contains(&task["queue"].as_str().unwrap_or(""))
            {
                ledger
                    .problems
                    .push(format!("claim by {} in {queues:?} returned {task}", self.name));
            }
            let task = Held::from_claim(task, sent);
            let key = (task.id.clone(), task.attempt);
            if let Some(other) = ledger.claimed.insert(key, self.name.clone()) {
                ledger.problems.push(format!(
                    "attempt {} of {} claimed by {other} and {}",
                    task.attempt, task.id, self.name
                ));
            }
            held.push(task);
        }
        held
    }

    /// This freeze's share of the fragile tasks (created among the first).
    async fn claim_fragile(&self) -> Vec<Held> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut fragile = Vec::new();
        while (fragile.len() as u64) < FRAGILE_PER_FREEZE {
            let limit = FRAGILE_PER_FREEZE - fragile.len() as u64;
            fragile.extend(self.claim(&["fragile"], limit).await);
            assert!(Instant::now() < deadline, "{} found no fragile task to hold", self.name);
        }
        fragile
    }

    /// Runs one task to its report, heartbeating first when the batch has been slow.
    async fn process(&self, task: &Held) {
        if task.takes_over {
            // Stay on the task until its frozen worker has made its late calls, so that they
            // meet a newer attempt that is running, the case fencing exists for.
            let until = Instant::now() + TAKEOVER_WAIT;
            while Instant::now() < until && !self.ledger.borrow().late_done.contains(&task.id) {
                sleep(Duration::from_millis(20)).await;
            }
        }
        if task.lease_from.elapsed() > HEARTBEAT_AFTER {
            let (path, body) = task.heartbeat(&self.name);
            let reply = self.api.send_retrying(Method::PUT, &path, Some(&body)).await;
            if reply.status != StatusCode::OK {
                self.refused_on_time(task, "HEARTBEAT", &reply);
                return;
            }
        }
        let (path, call, body) = task.report(&self.name);
        let reply = self.api.send_retrying(Method::PUT, &path, Some(&body)).await;
        if reply.status != StatusCode::OK {
            self.refused_on_time(task, call, &reply);
            return;
        }
        let expected = match task.outcome() {
            WorkerReport::Succeeded => ["SUCCEEDED"].as_slice(),
            WorkerReport::Failed => ["PENDING", "FAILED"].as_slice(),
        };
        {
            let mut ledger = self.ledger.borrow_mut();
            if !expected.contains(&reply.body["status"].as_str().unwrap_or("")) {
                ledger.problems.push(format!("{call} of {} answered {}", task.id, reply.body));
            }
            let key = (task.id.clone(), task.attempt);
            if ledger.accepted.insert(key, task.outcome()).is_some() {
                ledger
                    .problems
                    .push(format!("attempt {} of {} reported twice", task.attempt, task.id));
            }
        }
        if task.outcome() == WorkerReport::Succeeded && task.n.is_multiple_of(REPORT_AGAIN_EVERY) {
            self.report_again(task, &path, &body, &reply.body).await;
        }
    }

    /// The worker lost the answer to its success and sends it again (a replay: 200 and the
    /// stored task), then changes its mind (409 OUTCOME_CONFLICT: one outcome per attempt).
    async fn report_again(&self, task: &Held, path: &str, body: &Value, stored: &Value) {
        let replay = self.api.send_retrying(Method::PUT, path, Some(body)).await;
        if replay.status != StatusCode::OK || replay.body != *stored {
            self.ledger.borrow_mut().problems.push(format!(
                "replayed success of {}: {} {}, first answer {stored}",
                task.id, replay.status, replay.body
            ));
        }
        self.ledger.borrow_mut().replays += 1;

        let fail = json!({
            "workerId": self.name,
            "leaseToken": task.token,
            "errorMessage": "second thoughts",
        });
        let path = format!("/api/tasks/{}/fail", task.id);
        let reply = self.api.send_retrying(Method::PUT, &path, Some(&fail)).await;
        self.ledger.borrow_mut().second_thoughts.push(StaleCall {
            task: task.id.clone(),
            attempt: task.attempt,
            call: "FAIL",
            expected: "OUTCOME_CONFLICT",
            met: "SUCCEEDED",
            status: reply.status,
            code: reply.code().to_owned(),
        });
    }

    fn refused_on_time(&self, task: &Held, call: &'static str, reply: &Reply) {
        let mut ledger = self.ledger.borrow_mut();
        // A slow worker may lose its lease, but not before it ran out.
        let held_for = task.lease_from.elapsed();
        if held_for + Duration::from_millis(250) < Duration::from_secs(LEASE_SECS) {
            ledger.problems.push(format!(
                "{call} of {} attempt {} by {} refused ({} {}) {} ms into its {LEASE_SECS} s \
                 lease: the lease was cut short",
                task.id,
                task.attempt,
                self.name,
                reply.status,
                reply.body,
                held_for.as_millis()
            ));
        }
        if reply.status != StatusCode::CONFLICT {
            ledger.problems.push(format!(
                "{call} of {} attempt {} by {}: {} {}",
                task.id, task.attempt, self.name, reply.status, reply.body
            ));
        }
        ledger.refused_on_time.push(StaleCall {
            task: task.id.clone(),
            attempt: task.attempt,
            call,
            expected: "LEASE_EXPIRED or ATTEMPT_SUPERSEDED",
            met: "unknown",
            status: reply.status,
            code: reply.code().to_owned(),
        });
    }

    /// A worker that heartbeats its tasks, finishes half of its batch, then stops answering
    /// for longer than its lease (a long GC pause, a partition) and comes back to report the
    /// rest and the fragile tasks with its old tokens.
    async fn freeze(&self, mut batch: Vec<Held>, fragile: Vec<Held>) {
        self.ledger.borrow_mut().freezes += 1;
        let heartbeats_sent = Instant::now();
        for task in &mut batch {
            task.lease_from = heartbeats_sent;
        }
        for task in batch.iter().chain(&fragile) {
            let (path, body) = task.heartbeat(&self.name);
            let reply = self.api.send_retrying(Method::PUT, &path, Some(&body)).await;
            assert_eq!(reply.status, StatusCode::OK, "live heartbeat: {}", reply.body);
        }
        let frozen_at = heartbeats_sent;
        // Claims come highest priority first: hold those, so that they are started again soon
        // after their reaping.
        let (held, done) = batch.split_at(batch.len().div_ceil(2));
        for task in done {
            self.process(task).await;
        }

        sleep(FREEZE.saturating_sub(frozen_at.elapsed())).await;

        for held in [held, fragile.as_slice()] {
            for (i, task) in held.iter().enumerate() {
                let seen = self.wait_until_moved_on(task).await;
                if i == 0 {
                    let (path, body) = task.heartbeat(&self.name);
                    self.late_call(task, "HEARTBEAT", seen, &path, &body).await;
                }
                let (path, call, body) = task.report(&self.name);
                self.late_call(task, call, seen, &path, &body).await;
                self.ledger.borrow_mut().late_done.insert(task.id.clone());
            }
        }
    }

    /// Waits until the reaper has ended `task`'s attempt and the task has moved on: started
    /// again by someone else, or failed for good. Returns the refusal a call with the old token
    /// must then get and the status it meets. (A lease that ran out but was not reaped yet
    /// still belongs to its worker: the reaper re-checks expiry, and a report before it is
    /// accepted.)
    async fn wait_until_moved_on(&self, task: &Held) -> Seen {
        let reaped_by = Instant::now() + Duration::from_secs(10);
        let moved_on_by = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.api.get(&format!("/api/tasks/{}", task.id)).await;
            assert_eq!(now.status, StatusCode::OK, "{}", now.body);
            let status = match now.body["status"].as_str() {
                Some("PENDING") => "PENDING",
                Some("RUNNING") => "RUNNING",
                Some("SUCCEEDED") => "SUCCEEDED",
                Some("FAILED") => "FAILED",
                _ => panic!("task {} in an unexpected state: {}", task.id, now.body),
            };
            if u64_of(&now.body, "attempt") > task.attempt {
                return Seen { expected: "ATTEMPT_SUPERSEDED", status };
            }
            match status {
                "FAILED" => return Seen { expected: "LEASE_EXPIRED", status },
                "RUNNING" => assert!(
                    Instant::now() < reaped_by,
                    "attempt {} of task {} still runs 10 s after its frozen worker's lease ran \
                     out: the reaper did not reap it: {}",
                    task.attempt,
                    task.id,
                    now.body
                ),
                _ => assert!(
                    Instant::now() < moved_on_by,
                    "task {} was not started again within 30 s of its reaping: {}",
                    task.id,
                    now.body
                ),
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn late_call(
        &self,
        task: &Held,
        call: &'static str,
        seen: Seen,
        path: &str,
        body: &Value,
    ) {
        let reply = self.api.send_retrying(Method::PUT, path, Some(body)).await;
        self.ledger.borrow_mut().late.push(StaleCall {
            task: task.id.clone(),
            attempt: task.attempt,
            call,
            expected: seen.expected,
            met: seen.status,
            status: reply.status,
            code: reply.code().to_owned(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Phases

/// Creates tasks 0..TASKS over all servers; returns their ids by number.
async fn create_tasks(apis: &[Api]) -> Vec<String> {
    let next = Rc::new(Cell::new(0_u64));
    let ids = Rc::new(RefCell::new(vec![String::new(); TASKS as usize]));
    let creators: Vec<_> = (0..CREATE_CONCURRENCY)
        .map(|_| {
            let (apis, next, ids) = (apis.to_vec(), next.clone(), ids.clone());
            actix_web::rt::spawn(async move {
                loop {
                    let n = next.get();
                    if n == TASKS {
                        return;
                    }
                    next.set(n + 1);
                    let body = json!({
                        "name": "stress",
                        "queue": queue_of(n),
                        "payload": { "n": n },
                        "priority": n % 4,
                        "maxAttempts": max_attempts_of(n),
                    });
                    let api = &apis[n as usize % apis.len()];
                    let reply = api.send(Method::POST, "/api/tasks", Some(&body)).await;
                    assert_eq!(reply.status, StatusCode::CREATED, "create {n}: {}", reply.body);
                    ids.borrow_mut()[n as usize] = id_of(&reply.body);
                }
            })
        })
        .collect();
    for creator in creators {
        creator.await.expect("a creator panicked");
    }
    Rc::try_unwrap(ids).expect("creators are done").into_inner()
}

/// Whether any task is pending or running, per the listing of one server.
async fn any_in(api: &Api, status: &str) -> bool {
    let reply = api.get(&format!("/api/tasks?status={status}&limit=1")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    !reply.body["items"].as_array().unwrap().is_empty()
}

/// Waits until every task is terminal, or panics at `deadline`.
async fn wait_until_all_terminal(
    api: &Api,
    servers: &mut Servers,
    workers: &[JoinHandle<()>],
    ledger: &Shared,
    deadline: Instant,
) {
    loop {
        // Cheap looks first; a task can slip between them (pending, then running, then pending
        // again), so the full listing decides. Terminal is for good: once every task is, they
        // stay so.
        if !any_in(api, "RUNNING").await
            && !any_in(api, "PENDING").await
            && list_all(api, None).await.iter().all(is_terminal)
        {
            return;
        }
        servers.assert_alive();
        // A worker only returns once told to stop: one that did panicked (its message is above).
        assert!(workers.iter().all(|w| !w.is_finished()), "a worker panicked");
        let problems = ledger.borrow().problems.join("\n");
        assert!(problems.is_empty(), "workers got wrong answers:\n{problems}");
        if Instant::now() > deadline {
            let pending = list_all(api, Some("PENDING")).await.len();
            let running = list_all(api, Some("RUNNING")).await.len();
            panic!(
                "after {} s, {pending} tasks are still pending and {running} running",
                WORK_DEADLINE.as_secs()
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

fn is_terminal(task: &Value) -> bool {
    matches!(task["status"].as_str(), Some("SUCCEEDED" | "FAILED" | "CANCELLED"))
}

/// Every task, or every task in `status`, page by page.
async fn list_all(api: &Api, status: Option<&str>) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/tasks?limit=500".to_owned();
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let reply = api.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        tasks.extend(reply.body["items"].as_array().unwrap().iter().cloned());
        match reply.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return tasks,
        }
    }
}

/// Every task's history, by id.
async fn read_histories(apis: &[Api], ids: &[String]) -> HashMap<String, Vec<Value>> {
    let next = Rc::new(Cell::new(0_usize));
    let ids = Rc::new(ids.to_vec());
    let histories = Rc::new(RefCell::new(HashMap::new()));
    let readers: Vec<_> = (0..READ_CONCURRENCY)
        .map(|r| {
            let (api, next, ids, histories) =
                (apis[r % apis.len()].clone(), next.clone(), ids.clone(), histories.clone());
            actix_web::rt::spawn(async move {
                loop {
                    let i = next.get();
                    if i == ids.len() {
                        return;
                    }
                    next.set(i + 1);
                    let reply = api.get(&format!("/api/tasks/{}/events", ids[i])).await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    let items = reply.body["items"].as_array().unwrap().clone();
                    histories.borrow_mut().insert(ids[i].clone(), items);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.expect("a history reader panicked");
    }
    Rc::try_unwrap(histories).expect("readers are done").into_inner()
}

// ---------------------------------------------------------------------------------------------
// Checks

/// What one task's history adds up to.
#[derive(Default)]
struct HistoryFigures {
    attempts: u64,
    worker_failures: u64,
    reaped: u64,
    worker_ends: u64,
}

/// A refused call as a history records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Refusal {
    call: String,
    code: String,
    attempt: u64,
}

/// Checks one task's history against the rules and against what its workers were told;
/// returns the refusals it records.
fn check_history(
    task: &Value,
    events: &[Value],
    ledger: &Ledger,
    figures: &mut HistoryFigures,
) -> Vec<Refusal> {
    let id = id_of(task);
    let n = number_of(task);
    let lease = TimeDelta::seconds(LEASE_SECS as i64);
    let context = || format!("task {id} (n = {n}), history {}", Value::from(events.to_vec()));

    let mut refusals = Vec::new();
    let mut status = "PENDING";
    let mut attempt = 0_u64;
    let mut running_since: Option<DateTime<Utc>> = None;
    let mut holder = String::new();
    let mut last_end: Option<DateTime<Utc>> = None;
    let mut terminal_transitions = 0;
    let mut failures = 0_u64;

    let (first, rest) = events.split_first().unwrap_or_else(|| panic!("{}", context()));
    assert!(
        first["from"].is_null() && first["to"] == "PENDING" && first["attempt"] == 0,
        "the history must start with the creation: {}",
        context()
    );
    for event in rest {
        if let Some(code) = event["rejectedCode"].as_str() {
            let call = event["rejectedCall"].as_str().unwrap_or("");
            let attempt = u64_of(event, "attempt");
            refusals.push(Refusal { call: call.to_owned(), code: code.to_owned(), attempt });
            assert_eq!(event["from"], event["to"], "a refusal changes nothing: {}", context());
            continue;
        }
        let at = time(&event["at"]);
        let event_attempt = u64_of(event, "attempt");
        assert_eq!(event["from"], status, "transitions must chain: {}", context());
        assert!(
            !matches!(status, "SUCCEEDED" | "FAILED" | "CANCELLED"),
            "a transition after the terminal one: {}",
            context()
        );
        let to = event["to"].as_str().unwrap_or("");
        match (status, to) {
            ("PENDING", "RUNNING") => {
                assert_eq!(event_attempt, attempt + 1, "attempts go up one by one: {}", context());
                assert_eq!(event["actor"], "WORKER", "{}", context());
                // Every start is a claim some worker got, and no other worker got it.
                holder = event["workerId"].as_str().unwrap_or("").to_owned();
                assert_eq!(
                    ledger.claimed.get(&(id.clone(), event_attempt)),
                    Some(&holder),
                    "a start no claim handed out: {}",
                    context()
                );
                // No two live leases at once: a new attempt starts after the last one ended
                // (by at least the backoff, on the database's clock).
                if let Some(end) = last_end {
                    assert!(at >= end, "attempt {event_attempt} started at {at}, before the previous one ended at {end}: {}", context());
                }
                attempt = event_attempt;
                running_since = Some(at);
                figures.attempts += 1;
            }
            ("RUNNING", "PENDING" | "SUCCEEDED" | "FAILED") => {
                assert_eq!(event_attempt, attempt, "an attempt ends as itself: {}", context());
                let started = running_since.take().unwrap();
                assert!(at >= started, "attempt {attempt} ended before it started: {}", context());
                let exhausted = attempt == max_attempts_of(n);
                assert_eq!(event["workerId"], holder.as_str(), "the holder ends it: {}", context());
                match (event["actor"].as_str().unwrap_or(""), to) {
                    ("REAPER", _) => {
                        figures.reaped += 1;
                        failures += 1;
                        assert!(
                            at - started >= lease,
                            "attempt {attempt} reaped {} ms after it started, before its {LEASE_SECS} s lease ran out: {}",
                            (at - started).num_milliseconds(),
                            context()
                        );
                        assert!(
                            !ledger.accepted.contains_key(&(id.clone(), attempt)),
                            "attempt {attempt} was both reported and reaped: {}",
                            context()
                        );
                        assert_eq!(to == "FAILED", exhausted, "{}", context());
                        assert_eq!(
                            event["error"],
                            format!("lease expired (worker {holder})").as_str(),
                            "{}",
                            context()
                        );
                    }
                    ("WORKER", "SUCCEEDED") => {
                        figures.worker_ends += 1;
                        assert_eq!(
                            ledger.accepted.get(&(id.clone(), attempt)),
                            Some(&WorkerReport::Succeeded),
                            "a success no worker was told was accepted: {}",
                            context()
                        );
                    }
                    ("WORKER", _) => {
                        figures.worker_ends += 1;
                        figures.worker_failures += 1;
                        failures += 1;
                        assert_eq!(
                            ledger.accepted.get(&(id.clone(), attempt)),
                            Some(&WorkerReport::Failed),
                            "a failure no worker was told was accepted: {}",
                            context()
                        );
                        assert_eq!(to == "FAILED", exhausted, "{}", context());
                    }
                    (actor, _) => panic!("attempt {attempt} ended by {actor}: {}", context()),
                }
                last_end = Some(at);
            }
            (from, to) => panic!("unexpected transition {from} -> {to}: {}", context()),
        }
        if matches!(to, "SUCCEEDED" | "FAILED") {
            terminal_transitions += 1;
        }
        status = to;
    }

    assert_eq!(terminal_transitions, 1, "exactly one terminal transition: {}", context());
    assert_eq!(task["status"], status, "the task is where its history ends: {}", context());
    assert_eq!(u64_of(task, "attempt"), attempt, "{}", context());
    assert_eq!(u64_of(task, "attemptCount"), failures, "failed attempts: {}", context());
    refusals
}

// ---------------------------------------------------------------------------------------------
// The test

#[actix_web::test]
async fn three_servers_and_twelve_workers_lose_no_task_and_accept_no_stale_result() {
    let began = Instant::now();
    let db = TestDatabase::new();
    let client = awc::Client::builder().timeout(Duration::from_secs(35)).finish();
    let mut servers = Servers::start(db.url(), SERVERS);
    servers.wait_ready(&client).await;
    let apis: Vec<Api> = servers
        .bases
        .iter()
        .map(|base| Api { client: client.clone(), base: base.clone() })
        .collect();
    let ready_after = began.elapsed();

    // Work: workers are waiting (long-polling) before the first task exists.
    let work_began = Instant::now();
    let ledger: Shared = Rc::default();
    let stop = Rc::new(Cell::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|index| {
            let worker = Worker {
                index,
                name: format!("worker-{index:02}"),
                api: apis[index % SERVERS].clone(),
                ledger: ledger.clone(),
                stop: stop.clone(),
            };
            actix_web::rt::spawn(worker.run())
        })
        .collect();
    let ids = create_tasks(&apis).await;
    let created_after = work_began.elapsed();
    wait_until_all_terminal(&apis[0], &mut servers, &workers, &ledger, work_began + WORK_DEADLINE)
        .await;
    let work_took = work_began.elapsed();
    // Frozen workers still make their late calls before they stop.
    stop.set(true);
    for worker in workers {
        worker.await.expect("a worker panicked");
    }
    servers.assert_alive();
    let ledger = Rc::try_unwrap(ledger).ok().expect("workers are done").into_inner();

    // Every task is terminal, after the late calls too, and with the reason it should have.
    let check_began = Instant::now();
    let tasks = list_all(&apis[1], None).await;
    let listed: HashSet<String> = tasks.iter().map(id_of).collect();
    assert!(
        tasks.len() == ids.len() && ids.iter().all(|id| listed.contains(id)),
        "every created task is listed once: {} created, {} listed",
        ids.len(),
        tasks.len()
    );
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for task in &tasks {
        let terminal = task["status"] == "SUCCEEDED"
            || (task["status"] == "FAILED" && task["retryState"] == "EXHAUSTED");
        assert!(terminal, "a task that is not terminal: {task}");
        *by_status.entry(task["status"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert!(
        ledger.problems.is_empty(),
        "workers got wrong answers:\n{}",
        ledger.problems.join("\n")
    );

    // Every late call from a reaped worker was refused, with a code that says why.
    assert_eq!(ledger.freezes, (FREEZERS * FREEZES_EACH) as u64, "every planned freeze happened");
    for late in ledger.late.iter().chain(&ledger.second_thoughts) {
        assert!(
            late.status == StatusCode::CONFLICT && late.code == late.expected,
            "a stale call was not refused as {}: {late:?}",
            late.expected
        );
    }
    let mut late_by_state: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for late in &ledger.late {
        *late_by_state.entry((late.met, late.code.as_str())).or_default() += 1;
    }
    for (met, code) in [("FAILED", "LEASE_EXPIRED"), ("RUNNING", "ATTEMPT_SUPERSEDED")] {
        assert!(
            late_by_state.contains_key(&(met, code)),
            "no late call met a {met} task and was refused as {code}: {late_by_state:?}"
        );
    }
    for refused in &ledger.refused_on_time {
        assert!(
            matches!(refused.code.as_str(), "LEASE_EXPIRED" | "ATTEMPT_SUPERSEDED"),
            "a worker's call was refused for a reason other than a lost lease: {refused:?}"
        );
    }

    // Every history is consistent and tells what the workers were told.
    let histories = read_histories(&apis, &ids).await;
    let mut figures = HistoryFigures::default();
    let mut refused: HashMap<&str, Vec<&StaleCall>> = HashMap::new();
    for call in ledger.late.iter().chain(&ledger.refused_on_time).chain(&ledger.second_thoughts) {
        refused.entry(call.task.as_str()).or_default().push(call);
    }
    for task in &tasks {
        let id = id_of(task);
        let mut recorded = check_history(task, &histories[&id], &ledger, &mut figures);
        let mut made = refused.remove(id.as_str()).unwrap_or_default();
        recorded.sort();
        made.sort_by_key(|c| (c.call, c.code.clone(), c.attempt));
        let pairs: Vec<_> = recorded.iter().zip(&made).collect();
        let matches = recorded.len() == made.len()
            && pairs.iter().all(|(r, m)| {
                // A reaped attempt's call is filed under its own attempt; one from an attempt
                // the task has moved past, under the attempt that superseded it.
                r.call == m.call
                    && r.code == m.code
                    && match r.code.as_str() {
                        "LEASE_EXPIRED" | "OUTCOME_CONFLICT" => r.attempt == m.attempt,
                        _ => r.attempt > m.attempt,
                    }
            });
        assert!(
            matches,
            "task {id}: the history records refusals {recorded:?}, the workers were refused {made:?}"
        );
    }
    assert_eq!(
        figures.worker_ends,
        ledger.accepted.len() as u64,
        "every accepted report is in a history, and nothing else a worker sent"
    );
    let mut made: BTreeMap<(String, String), u64> = BTreeMap::new();
    for call in ledger.late.iter().chain(&ledger.refused_on_time).chain(&ledger.second_thoughts) {
        *made.entry((call.call.to_owned(), call.code.clone())).or_default() += 1;
    }

    // And the counters an operator reads say the same.
    let stats = apis[2].get("/api/stats/rejections").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for item in stats.body["items"].as_array().unwrap() {
        let key =
            (item["call"].as_str().unwrap().to_owned(), item["code"].as_str().unwrap().to_owned());
        *counted.entry(key).or_default() += u64_of(item, "count");
    }
    assert_eq!(counted, made, "the rejection counters count every refused call");
    let stale_successes =
        made.iter().filter(|((call, _), _)| call == "SUCCEED").map(|(_, c)| c).sum::<u64>();
    assert_eq!(u64_of(&stats.body, "staleSuccesses"), stale_successes, "{}", stats.body);
    let check_took = check_began.elapsed();

    let seconds = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    eprintln!(
        "stress: {} tasks on {SERVERS} servers and {WORKERS} workers: {by_status:?}\n\
         stress: {} attempts, {} failed by their worker and {} reaped ({:.1}% failed), {} claims\n\
         stress: {} freezes, {} late calls from reaped workers by (status met, refusal) \
         {late_by_state:?}\n\
         stress: {} replayed successes; refusals {made:?}, {stale_successes} stale successes\n\
         stress: servers ready in {}, tasks created in {}, all terminal in {}, \
         checked in {}, total {}",
        tasks.len(),
        figures.attempts,
        figures.worker_failures,
        figures.reaped,
        100.0 * (figures.worker_failures + figures.reaped) as f64 / figures.attempts as f64,
        ledger.claims,
        ledger.freezes,
        ledger.late.len(),
        ledger.replays,
        seconds(ready_after),
        seconds(created_after),
        seconds(work_took),
        seconds(check_took),
        seconds(began.elapsed()),
    );
    drop(servers);
}
