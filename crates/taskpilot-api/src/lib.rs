//! TaskPilot's REST wire contract: every request and response body of the HTTP API, the
//! problem+json error body with its stable [`ProblemCode`]s (each with its HTTP status,
//! [`ProblemCode::status`]), every size and time limit ([`limits`]), and the time format.
//!
//! The server (`taskpilot-http`) and clients (`taskpilot-client`) share these types, so that
//! what one writes the other reads. Every type derives both `Serialize` and `Deserialize`;
//! fields are camelCase on the wire. Requests refuse unknown fields, as the server does;
//! optional request fields that are `None` are left out when serializing.
//!
//! This crate must not depend on the server's crates (actix, the domain, the use cases): it
//! is the contract, and a client pulls nothing else. Conversions from domain types live in
//! the HTTP crate. With the `openapi` feature, every body also derives utoipa's `ToSchema`
//! (and the list query `IntoParams`), and the `openapi` module holds the schemas of the values the
//! server checks further than their JSON type: the server's OpenAPI document is built from
//! them.
//!
//! ```
//! use taskpilot_api::CreateTaskRequest;
//!
//! # fn main() -> Result<(), serde_json::Error> {
//! let request = CreateTaskRequest::new("send-email").queue("mail").priority(5);
//! let body = serde_json::to_value(&request)?;
//! assert_eq!(body, serde_json::json!({"queue": "mail", "name": "send-email", "payload": {}, "priority": 5}));
//! # Ok(())
//! # }
//! ```

mod activity;
mod batch;
mod bulk;
pub mod limits;
#[cfg(feature = "openapi")]
pub mod openapi;
mod problem;
mod queues;
mod tasks;
pub mod time;
mod tokens;

pub use activity::{
    DeadLetterGroupResponse, DeadLetterListResponse, DeadLettersQuery, RunningTaskResponse,
    ThroughputMinuteResponse, ThroughputQuery, ThroughputResponse, WorkerListResponse,
    WorkerResponse,
};
pub use batch::{
    CompleteTasksRequest, CompleteTasksResponse, CompletionItem, CompletionOutcome,
    CompletionResult, CreateTaskBatchRequest, CreateTaskBatchResponse,
};
pub use bulk::{
    BulkActionKind, BulkActionRequest, BulkActionResponse, BulkFilter, BulkOutcome, BulkResult,
};
pub use problem::{ProblemBody, ProblemCode, PROBLEM_JSON};
pub use queues::{ExplainReasonResponse, ExplainResponse, QueueListResponse, QueueResponse};
pub use tasks::{
    ClaimResponse, ClaimTasksRequest, CreateTaskRequest, FailTaskRequest, HeartbeatRequest,
    ListTasksQuery, OnConflict, QueueStatsResponse, RejectionCountResponse, RejectionStatsResponse,
    ReleaseTaskRequest, RetryState, StartTaskRequest, StatsResponse, StatusCountsResponse,
    SucceedTaskRequest, TaskEventListResponse, TaskEventResponse, TaskListResponse, TaskResponse,
    TaskStatus,
};
pub use tokens::{
    CreateTokenRequest, CreatedTokenResponse, TokenKind, TokenListResponse, TokenResponse,
};
