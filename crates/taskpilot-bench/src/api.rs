//! The HTTP calls the scenarios make, behind one small type so that the transport can change
//! (reqwest today; the `taskpilot-client` crate once it covers the batch calls) without
//! touching the scenarios.

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A TaskPilot server's REST API.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// A task to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewTask {
    /// The task's name.
    pub name: &'static str,
    /// Its payload.
    pub payload: Value,
}

/// A claimed task: what a worker needs to report on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claimed {
    /// The task.
    pub id: Uuid,
    /// The attempt's lease token.
    pub lease_token: String,
    /// The payload it was created with.
    pub payload: Value,
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

#[derive(Deserialize)]
struct Items<T> {
    items: Vec<T>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimBody<'a> {
    worker_id: &'a str,
    limit: u32,
    lease_seconds: u32,
    wait_ms: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SucceedBody<'a> {
    worker_id: &'a str,
    lease_token: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompleteItem<'a> {
    id: Uuid,
    lease_token: &'a str,
    outcome: &'static str,
}

/// Every claim asks for this lease: far longer than any scenario keeps a task.
const LEASE_SECONDS: u32 = 300;

impl Api {
    /// The API at `base` (e.g. `http://127.0.0.1:8080`), with a connection pool that keeps
    /// one idle connection per concurrent caller.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// `POST /api/tasks`: the new task's id.
    pub async fn create(&self, task: &NewTask) -> anyhow::Result<Uuid> {
        let response = self.http.post(format!("{}/api/tasks", self.base)).json(task).send().await;
        Ok(parse::<Created>(response, "create").await?.id)
    }

    /// `POST /api/tasks/batch`: how many tasks were created.
    pub async fn create_batch(&self, tasks: &[NewTask]) -> anyhow::Result<usize> {
        #[derive(Serialize)]
        struct Body<'a> {
            tasks: &'a [NewTask],
        }
        let response = self
            .http
            .post(format!("{}/api/tasks/batch", self.base))
            .json(&Body { tasks })
            .send()
            .await;
        Ok(parse::<Items<Created>>(response, "batch create").await?.items.len())
    }

    /// `POST /api/tasks/claim` over every queue.
    pub async fn claim(
        &self,
        worker_id: &str,
        limit: u32,
        wait_ms: u32,
    ) -> anyhow::Result<Vec<Claimed>> {
        let body = ClaimBody { worker_id, limit, lease_seconds: LEASE_SECONDS, wait_ms };
        let response =
            self.http.post(format!("{}/api/tasks/claim", self.base)).json(&body).send().await;
        Ok(parse::<Items<Claimed>>(response, "claim").await?.items)
    }

    /// `PUT /api/tasks/{id}/succeed` with the lease token.
    pub async fn succeed(&self, worker_id: &str, task: &Claimed) -> anyhow::Result<()> {
        let body = SucceedBody { worker_id, lease_token: &task.lease_token };
        let response = self
            .http
            .put(format!("{}/api/tasks/{}/succeed", self.base, task.id))
            .json(&body)
            .send()
            .await;
        parse::<Value>(response, "succeed").await.map(drop)
    }

    /// `POST /api/tasks/complete`: every task succeeded, in one round trip.
    pub async fn complete(&self, tasks: &[Claimed]) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            items: Vec<CompleteItem<'a>>,
        }
        let items = tasks
            .iter()
            .map(|t| CompleteItem { id: t.id, lease_token: &t.lease_token, outcome: "succeeded" })
            .collect();
        let response = self
            .http
            .post(format!("{}/api/tasks/complete", self.base))
            .json(&Body { items })
            .send()
            .await;
        parse::<Value>(response, "batch complete").await.map(drop)
    }

    /// `GET /api/tasks/{id}`.
    pub async fn get(&self, id: Uuid) -> anyhow::Result<()> {
        let response = self.http.get(format!("{}/api/tasks/{id}", self.base)).send().await;
        parse::<Value>(response, "get").await.map(drop)
    }

    /// `GET /readyz` answered 200.
    pub async fn ready(&self) -> bool {
        matches!(
            self.http.get(format!("{}/readyz", self.base)).send().await,
            Ok(r) if r.status().is_success()
        )
    }
}

/// The body of a 2xx answer; anything else is an error naming the call and the problem.
async fn parse<T: for<'de> Deserialize<'de>>(
    response: reqwest::Result<reqwest::Response>,
    call: &str,
) -> anyhow::Result<T> {
    let response = response.with_context(|| format!("{call}: no answer"))?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| format!("{call}: body cut short"))?;
    if !status.is_success() {
        bail!("{call}: {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("{call}: unexpected answer"))
}
