//! The HTTP calls the scenarios make, through `taskpilot-client` (what TaskPilot's users
//! get), behind one small type so that the scenarios do not depend on the client's surface.

use anyhow::{bail, Context as _};
use serde_json::Value;
use taskpilot_client::{
    ClaimTasksRequest, Client, CompletionItem, CreateTaskRequest, SucceedTaskRequest,
};
use uuid::Uuid;

/// A TaskPilot server's REST API.
#[derive(Clone, Debug)]
pub struct Api {
    client: Client,
}

/// A task to create.
pub type NewTask = CreateTaskRequest;

/// A task named `name` carrying `payload`.
pub fn new_task(name: &str, payload: Value) -> NewTask {
    CreateTaskRequest::new(name).payload(payload)
}

/// A claimed task: what a worker needs to report on it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task.
    pub id: Uuid,
    /// The attempt's lease token.
    pub lease_token: String,
    /// The payload it was created with.
    pub payload: Value,
}

/// Every claim asks for this lease: far longer than any scenario keeps a task.
const LEASE_SECONDS: i64 = 300;

impl Api {
    /// The API at `base` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// When the client cannot be built.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let client = Client::try_new(base).context("cannot build the TaskPilot client")?;
        Ok(Self { client })
    }

    /// The client itself, for the worker runtime.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `POST /api/tasks`: the new task's id.
    pub async fn create(&self, task: &NewTask) -> anyhow::Result<Uuid> {
        Ok(self.client.create(task).await.context("create")?.id)
    }

    /// `POST /api/tasks/batch`: how many tasks were created.
    pub async fn create_batch(&self, tasks: &[NewTask]) -> anyhow::Result<usize> {
        let created = self.client.create_batch(tasks.to_vec()).await.context("batch create")?;
        Ok(created.len())
    }

    /// `POST /api/tasks/claim` over every queue.
    pub async fn claim(
        &self,
        worker_id: &str,
        limit: u32,
        wait_ms: u32,
    ) -> anyhow::Result<Vec<Claimed>> {
        let request = ClaimTasksRequest {
            worker_id: worker_id.to_owned(),
            limit: Some(i64::from(limit)),
            queues: None,
            lease_seconds: Some(LEASE_SECONDS),
            wait_ms: Some(i64::from(wait_ms)),
        };
        let tasks = self.client.claim(&request).await.context("claim")?;
        tasks
            .into_iter()
            .map(|t| {
                let lease_token = t.lease_token.context("a claimed task without lease token")?;
                Ok(Claimed { id: t.id, lease_token, payload: t.payload })
            })
            .collect()
    }

    /// `PUT /api/tasks/{id}/succeed` with the lease token.
    pub async fn succeed(&self, worker_id: &str, task: &Claimed) -> anyhow::Result<()> {
        let request = SucceedTaskRequest {
            worker_id: Some(worker_id.to_owned()),
            lease_token: Some(task.lease_token.clone()),
            result: None,
        };
        self.client.succeed(task.id, &request).await.context("succeed").map(drop)
    }

    /// `POST /api/tasks/complete`: every task succeeded, in one round trip.
    pub async fn complete(&self, tasks: &[Claimed]) -> anyhow::Result<()> {
        let items = tasks
            .iter()
            .map(|t| CompletionItem::succeeded(t.id, t.lease_token.clone(), None))
            .collect();
        let results = self.client.complete_batch(items).await.context("batch complete")?;
        if let Some(refused) = results.iter().find(|r| r.status != 200) {
            bail!(
                "batch complete: task {} answered {}: {:?}",
                refused.id,
                refused.status,
                refused.error
            );
        }
        Ok(())
    }

    /// `GET /api/tasks/{id}`.
    pub async fn get(&self, id: Uuid) -> anyhow::Result<()> {
        self.client.get(id).await.context("get").map(drop)
    }

    /// `GET /readyz` answered 200.
    pub async fn ready(&self) -> bool {
        self.client.ready().await.is_ok()
    }
}
