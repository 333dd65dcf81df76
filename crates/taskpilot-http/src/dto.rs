//! What goes over the wire. The bodies themselves are the shared contract in
//! [`taskpilot_api`] (re-exported here); this module builds the responses from domain and
//! use-case types, which the api crate must not know.
//!
//! Requests are deserialized strictly (unknown fields are refused and named) and then
//! validated into domain types by the handlers.
//!
//! A task's lease token is the secret of its running attempt: only [`holder_response`] shows
//! it, in the answers to the worker that holds the lease (claim, start, heartbeat).

pub use taskpilot_api::time::format as format_time;
pub use taskpilot_api::*;
use taskpilot_app::{RejectionCount, TaskEvent, TaskPage};
use taskpilot_domain::Task;

/// A domain status as the wire spells it.
pub fn status(status: taskpilot_domain::TaskStatus) -> TaskStatus {
    use taskpilot_domain::TaskStatus as S;
    match status {
        S::Pending => TaskStatus::Pending,
        S::Running => TaskStatus::Running,
        S::Succeeded => TaskStatus::Succeeded,
        S::Failed => TaskStatus::Failed,
        S::Cancelled => TaskStatus::Cancelled,
    }
}

/// A domain retry state as the wire spells it.
pub fn retry_state(state: taskpilot_domain::RetryState) -> RetryState {
    use taskpilot_domain::RetryState as R;
    match state {
        R::None => RetryState::None,
        R::RetryScheduled => RetryState::RetryScheduled,
        R::Exhausted => RetryState::Exhausted,
        R::NonRetryable => RetryState::NonRetryable,
    }
}

/// The task as anybody sees it: without the lease token.
pub fn task_response(task: &Task) -> TaskResponse {
    TaskResponse {
        id: task.id().as_uuid(),
        queue: task.queue().to_string(),
        name: task.name().to_string(),
        payload: task.payload().clone(),
        priority: task.priority(),
        status: status(task.status()),
        retry_state: retry_state(task.retry_state()),
        attempt: task.attempt(),
        attempt_count: task.attempt_count(),
        max_attempts: task.max_attempts().get(),
        next_run_at: task.next_run_at(),
        last_error: task.last_error().map(str::to_owned),
        worker_id: task.worker_id().map(ToString::to_string),
        processing_started_at: task.processing_started_at(),
        lease_expires_at: task.lease().map(|l| l.expires_at),
        lease_token: None,
        result: task.result().cloned(),
        completed_at: task.completed_at(),
        created_at: task.created_at(),
        updated_at: task.updated_at(),
    }
}

/// The task as its lease holder sees it: with the lease token of a running attempt.
pub fn holder_response(task: &Task) -> TaskResponse {
    TaskResponse { lease_token: task.lease().map(|l| l.token.to_string()), ..task_response(task) }
}

/// One page of `GET /api/tasks`.
pub fn list_response(page: &TaskPage) -> TaskListResponse {
    TaskListResponse {
        items: page.items.iter().map(task_response).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }
}

/// The answer to the worker that claimed `tasks`: each with its lease token.
pub fn claim_response(tasks: &[Task]) -> ClaimResponse {
    ClaimResponse { items: tasks.iter().map(holder_response).collect() }
}

/// One entry of a task's history.
pub fn event_response(event: &TaskEvent) -> TaskEventResponse {
    TaskEventResponse {
        attempt: event.attempt,
        from: event.from.map(status),
        to: status(event.to),
        worker_id: event.worker_id.as_ref().map(ToString::to_string),
        error: event.error.clone(),
        actor: event.actor.as_str().to_owned(),
        rejected_code: event.rejected.as_ref().map(|r| r.code.clone()),
        rejected_call: event.rejected.as_ref().map(|r| r.call.as_str().to_owned()),
        at: event.at,
    }
}

/// Refused stale calls by code and call, and how many were late successes.
pub fn rejection_stats_response(counts: &[RejectionCount]) -> RejectionStatsResponse {
    RejectionStatsResponse {
        items: counts
            .iter()
            .map(|c| RejectionCountResponse {
                code: c.code.clone(),
                call: c.call.as_str().to_owned(),
                count: c.count,
            })
            .collect(),
        stale_successes: counts.iter().filter(|c| c.shows_a_second_run()).map(|c| c.count).sum(),
    }
}
