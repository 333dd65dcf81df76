//! Which failures the client repeats, against a scripted HTTP stub: it counts the requests it
//! receives and answers each from its script (the last entry repeats), so that no timing is
//! involved.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskpilot_client::{
    Client, ClientError, CompletionItem, CreateTaskRequest, ProblemCode, RetryPolicy,
    SucceedTaskRequest,
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
        "maxAttempts": 3, "nextRunAt": null, "lastError": null, "workerId": null,
        "processingStartedAt": null, "leaseExpiresAt": null, "result": null,
        "completedAt": "2026-11-26T09:37:33.000000Z", "createdAt": "2026-11-26T09:37:32.137733Z",
        "updatedAt": "2026-11-26T09:37:33.000000Z"
    })
}

/// A stub server following `script`; `requests` counts what it received.
struct Stub {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Stub {
    async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script)
    }

    fn serve(listener: TcpListener, script: Vec<Reply>) -> Self {
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
async fn answer(mut stream: TcpStream, counter: &AtomicUsize, script: &[Reply]) {
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
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
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
        match &script[n.min(script.len() - 1)] {
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
async fn a_create_is_not_repeated_once_it_may_have_reached_the_server() {
    let refused = Stub::start(vec![unavailable(), ok(task_json())]).await;
    let hung_up = Stub::start(vec![Reply::Hangup, ok(task_json())]).await;
    let unfenced = Stub::start(vec![unavailable(), ok(task_json())]).await;
    let request = CreateTaskRequest::new("send-email");

    let unavailable = refused.client(quick()).create(&request).await.unwrap_err();
    let lost = hung_up.client(quick()).create(&request).await.unwrap_err();
    let unfenced_success = unfenced
        .client(quick())
        .succeed(ID, &SucceedTaskRequest { lease_token: None, ..fenced_success() })
        .await
        .unwrap_err();

    assert!(matches!(
        unavailable,
        ClientError::Api { status: 503, code: ProblemCode::DatabaseUnavailable, .. }
    ));
    assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(1)));
    assert!(matches!(lost, ClientError::Transport(_)), "{lost:?}");
    assert!(unfenced_success.is_transient());
    assert_eq!((refused.requests(), hung_up.requests(), unfenced.requests()), (1, 1, 1));
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
