//! The batch endpoints: `POST /api/tasks/batch` and `POST /api/tasks/complete`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{CreateTaskRequest, ProblemBody, TaskResponse};

/// Body of `POST /api/tasks/batch`: 1 to [`MAX_BATCH`](crate::limits::MAX_BATCH) tasks, created all or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTaskBatchRequest {
    /// The tasks, each as `POST /api/tasks` takes it.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub tasks: Vec<CreateTaskRequest>,
}

/// Answer of `POST /api/tasks/batch` (201): the created tasks, in the order asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTaskBatchResponse {
    /// The tasks.
    pub items: Vec<TaskResponse>,
}

/// How an attempt ended, in a batch completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CompletionOutcome {
    /// Finished well: `result` may say what it produced.
    Succeeded,
    /// Failed: `errorMessage` says why, `retryable` whether a retry may help.
    Failed,
    /// Not finished: handed back by a stopping worker, runnable again at once, no failure
    /// counted (as `PUT /api/tasks/{id}/release`).
    Released,
}

/// One outcome of `POST /api/tasks/complete`, under the fencing rules of a single succeed,
/// fail or release: the lease token is required. Its values are checked item by item: an
/// invalid one gets its own 400 in the answer, so the schema leaves them as plain text and JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompletionItem {
    /// The task.
    pub id: Uuid,
    /// The token of the attempt that ended.
    pub lease_token: String,
    /// When given, must be the worker holding the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// How the attempt ended.
    pub outcome: CompletionOutcome,
    /// What a successful attempt produced; only with `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong; required with `failed`, refused with the other outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Whether a retry may help; only with `failed`, `true` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl CompletionItem {
    /// A success of the attempt holding `lease_token`.
    pub fn succeeded(id: Uuid, lease_token: impl Into<String>, result: Option<Value>) -> Self {
        Self {
            id,
            lease_token: lease_token.into(),
            worker_id: None,
            outcome: CompletionOutcome::Succeeded,
            result,
            error_message: None,
            retryable: None,
        }
    }

    /// A failure of the attempt holding `lease_token`; `retryable: false` fails the task for
    /// good.
    pub fn failed(
        id: Uuid,
        lease_token: impl Into<String>,
        error_message: impl Into<String>,
        retryable: bool,
    ) -> Self {
        Self {
            id,
            lease_token: lease_token.into(),
            worker_id: None,
            outcome: CompletionOutcome::Failed,
            result: None,
            error_message: Some(error_message.into()),
            retryable: Some(retryable),
        }
    }

    /// A release of the attempt holding `lease_token`: the task is handed back unfinished and
    /// is runnable again at once, with no failure counted.
    pub fn released(id: Uuid, lease_token: impl Into<String>) -> Self {
        Self {
            id,
            lease_token: lease_token.into(),
            worker_id: None,
            outcome: CompletionOutcome::Released,
            result: None,
            error_message: None,
            retryable: None,
        }
    }

    /// Reported by worker `worker_id`.
    #[must_use]
    pub fn worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }
}

/// Body of `POST /api/tasks/complete`: 1 to [`MAX_BATCH`](crate::limits::MAX_BATCH) outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompleteTasksRequest {
    /// The outcomes; several for one task are judged in order (a repeat is a replay).
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub items: Vec<CompletionItem>,
}

/// The answer for one outcome of a batch completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CompletionResult {
    /// The task the outcome was for.
    pub id: Uuid,
    /// What the single call would have answered: 200, or the error's status (400, 404,
    /// 409, ...).
    pub status: u16,
    /// With 200: the task after the outcome (or as it stands, for a replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskResponse>,
    /// Otherwise: the error, as the single call's body would have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProblemBody>,
}

/// Answer of `POST /api/tasks/complete` (200): one result per outcome, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteTasksResponse {
    /// The results.
    pub items: Vec<CompletionResult>,
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::tasks::tests::{running_task, running_task_wire};
    use crate::{ProblemCode, TaskStatus};

    fn round_trip<T>(value: &T, wire: &Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let written = serde_json::to_value(value).unwrap();
        assert_eq!(&written, wire);
        let read: T = serde_json::from_value(written).unwrap();
        assert_eq!(&read, value);
    }

    const ID: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);

    #[test]
    fn batch_creates_round_trip() {
        round_trip(
            &CreateTaskBatchRequest {
                tasks: vec![CreateTaskRequest::new("a"), CreateTaskRequest::new("b").priority(1)],
            },
            &json!({"tasks": [
                {"name": "a", "payload": {}, "priority": 0},
                {"name": "b", "payload": {}, "priority": 1},
            ]}),
        );
        round_trip(
            &CreateTaskBatchResponse { items: vec![running_task()] },
            &json!({"items": [running_task_wire()]}),
        );
    }

    #[test]
    fn completions_round_trip_and_leave_out_what_is_not_set() {
        round_trip(
            &CompleteTasksRequest {
                items: vec![
                    CompletionItem::succeeded(ID, "t1", Some(json!({"n": 1}))).worker("w"),
                    CompletionItem::succeeded(ID, "t1", None),
                    CompletionItem::failed(ID, "t2", "boom", false),
                    CompletionItem::released(ID, "t3").worker("w"),
                ],
            },
            &json!({"items": [
                {"id": ID.to_string(), "leaseToken": "t1", "workerId": "w",
                 "outcome": "succeeded", "result": {"n": 1}},
                {"id": ID.to_string(), "leaseToken": "t1", "outcome": "succeeded"},
                {"id": ID.to_string(), "leaseToken": "t2", "outcome": "failed",
                 "errorMessage": "boom", "retryable": false},
                {"id": ID.to_string(), "leaseToken": "t3", "workerId": "w", "outcome": "released"},
            ]}),
        );
    }

    #[test]
    fn completion_results_carry_a_task_or_a_problem() {
        let mut succeeded_wire = running_task_wire();
        succeeded_wire["status"] = json!("SUCCEEDED");
        succeeded_wire.as_object_mut().unwrap().remove("leaseToken");
        let problem = crate::ProblemBody::new(
            ProblemCode::LeaseExpired,
            "Lease expired",
            "the lease of attempt 1 expired",
        );
        round_trip(
            &CompleteTasksResponse {
                items: vec![
                    CompletionResult {
                        id: ID,
                        status: 200,
                        task: Some(crate::TaskResponse {
                            status: TaskStatus::Succeeded,
                            lease_token: None,
                            ..running_task()
                        }),
                        error: None,
                    },
                    CompletionResult { id: ID, status: 409, task: None, error: Some(problem) },
                ],
            },
            &json!({"items": [
                {"id": ID.to_string(), "status": 200, "task": succeeded_wire},
                {"id": ID.to_string(), "status": 409, "error": {
                    "type": "urn:taskpilot:problem:lease-expired",
                    "title": "Lease expired",
                    "status": 409,
                    "detail": "the lease of attempt 1 expired",
                    "code": "LEASE_EXPIRED",
                }},
            ]}),
        );
    }
}
