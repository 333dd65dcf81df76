//! The client's creates carry an `Idempotency-Key`, so that repeating one whose answer was
//! lost never creates twice: against the real server, through a proxy that drops the first
//! answer after the server sent it (so after it committed).

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use common::TestServer;
use taskpilot_client::{
    Client, ClientError, CreateTaskRequest, ListTasksQuery, ProblemCode, RetryPolicy,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of the server. On its first connection it forwards the request, waits for
/// the first bytes of the server's answer (the server answers only once it committed), and
/// closes the client's connection without passing them on. Later connections pass through,
/// and `answers` keeps what the server sent on them.
struct LossyProxy {
    base: String,
    connections: Arc<Mutex<usize>>,
    answers: Arc<Mutex<Vec<u8>>>,
    requests: Arc<Mutex<Vec<u8>>>,
}

impl LossyProxy {
    async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(Mutex::new(0));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, log, sent) = (connections.clone(), answers.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let first = {
                    let mut n = count.lock().unwrap();
                    *n += 1;
                    *n == 1
                };
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, first, log.clone(), sent.clone()));
            }
        });
        Self { base, connections, answers, requests }
    }

    fn client(&self) -> Client {
        let retry = RetryPolicy::default()
            .initial_delay(Duration::from_millis(10))
            .max_elapsed(Duration::from_secs(20));
        Client::builder(&self.base).retry(retry).build().unwrap()
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    drop_answer: bool,
    answers: Arc<Mutex<Vec<u8>>>,
    requests: Arc<Mutex<Vec<u8>>>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        loop {
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    requests.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if server_write.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut chunk = [0u8; 8192];
    loop {
        match server_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(_) if drop_answer => break,
            Ok(n) => {
                answers.lock().unwrap().extend_from_slice(&chunk[..n]);
                if client_write.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    upward.abort();
}

/// The `Idempotency-Key` values of the requests seen, in order.
fn keys(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("idempotency-key").then(|| value.trim().to_owned())
        })
        .collect()
}

async fn all_tasks(server: &TestServer) -> usize {
    server.client().list(&ListTasksQuery::default()).await.unwrap().items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_repeated_and_gets_the_one_task_it_made() {
    let server = TestServer::start(TimeDelta::seconds(60));
    let proxy = LossyProxy::start(&server.base).await;

    let task = proxy.client().create(&CreateTaskRequest::new("send-email")).await.unwrap();

    assert_eq!(*proxy.connections.lock().unwrap(), 2, "the first answer was lost, then a repeat");
    let sent = keys(&proxy.requests.lock().unwrap());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], sent[1], "the repeat carries the same key");
    assert_eq!(uuid::Uuid::parse_str(&sent[0]).unwrap().get_version_num(), 4);
    let answer = String::from_utf8_lossy(&proxy.answers.lock().unwrap()).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 201"), "{answer}");
    assert!(answer.contains("idempotent-replayed: true"), "{answer}");
    let stored = server.client().list(&ListTasksQuery::default()).await.unwrap().items;
    assert_eq!(stored.len(), 1, "exactly one task");
    assert_eq!(stored[0].id, task.id, "the repeat got the task the first try made");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_was_lost_is_repeated_and_creates_once() {
    let server = TestServer::start(TimeDelta::seconds(60));
    let proxy = LossyProxy::start(&server.base).await;
    let batch = vec![CreateTaskRequest::new("a"), CreateTaskRequest::new("b")];

    let tasks = proxy.client().create_batch(batch).await.unwrap();

    assert_eq!(*proxy.connections.lock().unwrap(), 2);
    assert_eq!(tasks.len(), 2);
    assert_eq!(all_tasks(&server).await, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_gets_a_fresh_key_and_a_key_of_the_callers_is_kept() {
    let server = TestServer::start(TimeDelta::seconds(60));
    let client = server.client();
    let request = CreateTaskRequest::new("send-email");

    let first = client.create(&request).await.unwrap();
    let second = client.create(&request).await.unwrap();
    let keyed = client.create_with_key(&request, "order-42").await.unwrap();
    let again = client.create_with_key(&request, "order-42").await.unwrap();
    let reused =
        client.create_with_key(&CreateTaskRequest::new("other"), "order-42").await.unwrap_err();
    let bad_key = client.create_with_key(&request, "two words").await.unwrap_err();

    assert_ne!(first.id, second.id, "two creates, two tasks");
    assert_eq!(keyed.id, again.id, "the same key and request: the same task");
    assert!(
        matches!(
            reused,
            ClientError::Api { status: 422, code: ProblemCode::IdempotencyKeyReused, .. }
        ),
        "{reused:?}"
    );
    assert!(matches!(bad_key, ClientError::Api { status: 400, .. }), "{bad_key:?}");
    assert_eq!(all_tasks(&server).await, 3);
    server.stop().await;
}
