//! Which failures the client repeats, against a scripted HTTP stub: it counts the requests it
//! receives and answers each from its script, so that no timing is
//! involved.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskpilot_client::{
    Client, CompletionItem, CreateTaskRequest, Outcome, ProblemCode, RetryPolicy,
    SucceedTaskRequest, TaskContext, Worker,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the stub does with one request.
#[derive(Clone)]
enum Reply {
    /// Answers with this status, extra headers and JSON body.
    Json(u16, &'static str, String),
    /// Reads the request, then closes the connection without answering.
    Hangup,
}

fn unavailable() -> Reply {
    let body = json!({
        "type": "urn:taskpilot:problem:database-unavailable", "title": "Database unavailable",
        "status": 503, "detail": "the database cannot be reached", "code": "DATABASE_UNAVAILABLE"
    });
    Reply::Json(503, "Retry-After: 1\r\n", body.to_string())
}

fn bad_gateway() -> Reply {
    Reply::Json(502, "", String::new())
}

fn ok(body: serde_json::Value) -> Reply {
    Reply::Json(200, "", body.to_string())
}

const ID: &str = "01a21737-a3e9-72f0-a04f-fb7d104d651a";

fn task_json() -> serde_json::Value {
    json!({
        "id": ID, "queue": "default", "name": "send-email", "payload": {}, "priority": 0,
        "status": "SUCCEEDED", "retryState": "NONE", "attempt": 1, "attemptCount": 0,
        "maxAttempts": 3, "crashCount": 0, "maxCrashes": 3, "nextRunAt": null, "lastError": null,
        "workerId": null,
        "processingStartedAt": null, "leaseExpiresAt": null, "result": null,
        "completedAt": "2026-11-26T09:37:33.000000Z", "createdAt": "2026-11-26T09:37:32.137733Z",
        "updatedAt": "2026-11-26T09:37:33.000000Z"
    })
}

/// Picks the reply to a request from its request line (`POST /api/tasks HTTP/1.1`) and how
/// many requests came before it.
type Script = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

/// A stub server following a script; `requests` counts what it received.
struct Stub {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Stub {
    /// Answers the n-th request with `replies[n]`, the last one again after the end.
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, replies)
    }

    fn serve(listener: TcpListener, replies: Vec<Reply>) -> Self {
        Self::routed(listener, Arc::new(move |_, n| replies[n.min(replies.len() - 1)].clone()))
    }

    fn routed(listener: TcpListener, script: Script) -> Self {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                let script = script.clone();
                tokio::spawn(async move { answer(stream, &counter, &script).await });
            }
        });
        Self { addr, requests }
    }

    fn client(&self, retry: RetryPolicy) -> Client {
        Client::builder(format!("http://{}", self.addr)).retry(retry).build().unwrap()
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves the requests of one connection.
async fn answer(mut stream: TcpStream, counter: &AtomicUsize, script: &Script) {
    let mut buffer = Vec::new();
    loop {
        // One request: headers, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let raw_head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let request_line = raw_head.lines().next().unwrap_or_default().to_owned();
        let head = raw_head.to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let n = counter.fetch_add(1, Ordering::SeqCst);
        match &script(&request_line, n) {
            Reply::Hangup => return,
            Reply::Json(status, headers, body) => {
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/{}\r\n{headers}content-length: {}\r\n\r\n{body}",
                    if *status < 300 { "json" } else { "problem+json" },
                    body.len()
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_secs(2))
}

fn fenced_success() -> SucceedTaskRequest {
    SucceedTaskRequest {
        worker_id: Some("w".to_owned()),
        lease_token: Some("t".to_owned()),
        result: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_repeated_after_503_with_retry_after_and_502() {
    let stub = Stub::start(vec![unavailable(), bad_gateway(), ok(task_json())]).await;

    let task = stub.client(quick()).get(ID).await.unwrap();

    assert_eq!(task.id.to_string(), ID);
    assert_eq!(stub.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_completion_is_repeated_after_its_answer_was_lost() {
    let stub = Stub::start(vec![Reply::Hangup, unavailable(), ok(task_json())]).await;
    let client = stub.client(quick());

    let task = client.succeed(ID, &fenced_success()).await.unwrap();

    assert_eq!(task.id.to_string(), ID);
    assert_eq!(stub.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completion_is_repeated_after_its_answer_was_lost() {
    let answer = json!({"items": [{"id": ID, "status": 200, "task": task_json()}]});
    let stub = Stub::start(vec![Reply::Hangup, ok(answer)]).await;
    let item = CompletionItem::succeeded(ID.parse().unwrap(), "t", None);

    let results = stub.client(quick()).complete_batch(vec![item]).await.unwrap();

    assert_eq!(results[0].status, 200);
    assert_eq!(stub.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_create_is_repeated_after_503_or_a_lost_answer_but_an_unfenced_report_is_not() {
    let refused = Stub::start(vec![unavailable(), ok(task_json())]).await;
    let hung_up = Stub::start(vec![Reply::Hangup, ok(task_json())]).await;
    let batch_lost = Stub::start(vec![Reply::Hangup, ok(json!({"items": [task_json()]}))]).await;
    let unfenced = Stub::start(vec![unavailable(), ok(task_json())]).await;
    let request = CreateTaskRequest::new("send-email");

    let created = refused.client(quick()).create(&request).await.unwrap();
    let after_lost = hung_up.client(quick()).create(&request).await.unwrap();
    let batch = batch_lost.client(quick()).create_batch(vec![request.clone()]).await.unwrap();
    let unfenced_success = unfenced
        .client(quick())
        .succeed(ID, &SucceedTaskRequest { lease_token: None, ..fenced_success() })
        .await
        .unwrap_err();

    assert_eq!(created.id.to_string(), ID);
    assert_eq!(after_lost.id.to_string(), ID);
    assert_eq!(batch.len(), 1);
    assert!(unfenced_success.is_transient());
    assert_eq!(
        (refused.requests(), hung_up.requests(), batch_lost.requests(), unfenced.requests()),
        (2, 2, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_repeated_while_no_connection_can_be_made() {
    // A port nobody listens on until the stub takes it, some tries later.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let client = Client::builder(format!("http://{addr}"))
        .retry(
            RetryPolicy::default()
                .max_attempts(100)
                .initial_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(100))
                .max_elapsed(Duration::from_secs(30)),
        )
        .build()
        .unwrap();

    let creating = tokio::spawn(async move { client.create(&CreateTaskRequest::new("t")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stub = Stub::serve(TcpListener::bind(addr).await.unwrap(), vec![ok(task_json())]);
    let created = creating.await.unwrap().unwrap();

    assert_eq!(created.id.to_string(), ID);
    assert_eq!(stub.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_gives_up_with_the_last_error() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let nobody =
        Client::builder(format!("http://{addr}")).retry(quick().max_attempts(3)).build().unwrap();
    let stub = Stub::start(vec![unavailable()]).await;

    let refused = nobody.get(ID).await.unwrap_err();
    let unavailable = stub.client(quick().max_attempts(2)).get(ID).await.unwrap_err();

    assert!(refused.never_arrived(), "{refused:?}");
    assert_eq!(unavailable.code(), Some(ProblemCode::DatabaseUnavailable));
    assert_eq!(stub.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reports_one_by_one_to_a_server_without_the_batch_endpoint() {
    let claimed = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let script: Script = {
        let (claimed, succeeded) = (claimed.clone(), succeeded.clone());
        Arc::new(move |line: &str, _| {
            if line.starts_with("POST /api/tasks/claim") {
                let mut task = task_json();
                task["status"] = json!("RUNNING");
                task["leaseToken"] = json!("token-1");
                let items =
                    if claimed.fetch_add(1, Ordering::SeqCst) == 0 { vec![task] } else { vec![] };
                ok(json!({"items": items}))
            } else if line.starts_with("POST /api/tasks/complete") {
                let body = json!({
                    "type": "urn:taskpilot:problem:route-not-found", "title": "Route not found",
                    "status": 404, "detail": "no route matches POST /api/tasks/complete",
                    "code": "ROUTE_NOT_FOUND"
                });
                Reply::Json(404, "", body.to_string())
            } else {
                succeeded.lock().unwrap().push(line.to_owned());
                ok(task_json())
            }
        })
    };
    let stub = Stub::routed(TcpListener::bind("127.0.0.1:0").await.unwrap(), script);
    let worker =
        Worker::new(stub.client(quick()), |_: TaskContext| async { Outcome::Succeed(None) })
            .claim_wait(Duration::from_millis(100));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    while succeeded.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(()).unwrap();
    let report = running.await.unwrap().unwrap();

    assert_eq!(*succeeded.lock().unwrap(), [format!("PUT /api/tasks/{ID}/succeed HTTP/1.1")]);
    assert_eq!((report.claimed, report.succeeded, report.unreported), (1, 1, 0));
}
