//! `taskpilot queues …`: list, show, pause and resume queues.

use taskpilot_client::api::{QueueListResponse, QueueResponse, StatusCountsResponse};

use super::table::{self, fields, or_dash, Table};
use super::{Context, Failure, Printed};

/// `taskpilot queues …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum QueuesCommand {
    /// Every queue that holds tasks or was ever paused, with its counts (GET /api/queues).
    List,
    /// One queue: counts, oldest runnable task, pause state, last minute's traffic
    /// (GET /api/queues/{name}).
    Show {
        /// The queue.
        name: String,
    },
    /// Stop claims on every server from taking the queue's tasks; creates, heartbeats and
    /// completions go on (PUT /api/queues/{name}/pause).
    Pause {
        /// The queue.
        name: String,
    },
    /// Make the queue claimable again (PUT /api/queues/{name}/resume).
    Resume {
        /// The queue.
        name: String,
    },
}

pub(super) async fn run(command: &QueuesCommand, context: &Context) -> Result<Printed, Failure> {
    let client = &context.client;
    let queue = match command {
        QueuesCommand::List => {
            let list = QueueListResponse { items: client.list_queues().await? };
            return context.print(&list, || queue_table(&list.items));
        }
        QueuesCommand::Show { name } => client.queue(name).await?,
        QueuesCommand::Pause { name } => client.pause_queue(name).await?,
        QueuesCommand::Resume { name } => client.resume_queue(name).await?,
    };
    context.print(&queue, || queue_fields(&queue))
}

/// The status columns of a count, in the API's order.
pub(super) const COUNT_COLUMNS: [&str; 6] =
    ["RUNNABLE", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

/// `counts` as the cells of [`COUNT_COLUMNS`].
pub(super) fn count_cells(counts: &StatusCountsResponse) -> Vec<String> {
    [
        counts.runnable,
        counts.scheduled,
        counts.running,
        counts.succeeded,
        counts.failed,
        counts.cancelled,
    ]
    .iter()
    .map(u64::to_string)
    .collect()
}

/// An age in seconds, to a tenth; `-` when nothing is runnable.
pub(super) fn age(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"))
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

fn queue_table(queues: &[QueueResponse]) -> String {
    if queues.is_empty() {
        return "no queues\n".to_owned();
    }
    let mut header = vec!["NAME", "PAUSED"];
    header.extend(COUNT_COLUMNS);
    header.extend(["OLDEST RUNNABLE", "LAST CLAIM", "VERSION"]);
    let mut table = Table::new(&header);
    for queue in queues {
        let mut row = vec![queue.name.clone(), yes_no(queue.paused)];
        row.extend(count_cells(&queue.counts));
        row.extend([
            age(queue.oldest_runnable_age_seconds),
            table::at(queue.last_claim_at),
            queue.version.to_string(),
        ]);
        table.row(row);
    }
    table.render()
}

fn queue_fields(queue: &QueueResponse) -> String {
    let counts = &queue.counts;
    fields(&[
        ("name", queue.name.clone()),
        ("paused", yes_no(queue.paused)),
        ("paused by", or_dash(queue.paused_by.as_deref())),
        ("paused at", table::at(queue.paused_at)),
        ("version", queue.version.to_string()),
        ("runnable", counts.runnable.to_string()),
        ("scheduled", counts.scheduled.to_string()),
        ("running", counts.running.to_string()),
        ("succeeded", counts.succeeded.to_string()),
        ("failed", counts.failed.to_string()),
        ("cancelled", counts.cancelled.to_string()),
        ("running leases", queue.running_leases.to_string()),
        ("oldest runnable since", table::at(queue.oldest_runnable_since)),
        ("oldest runnable age", age(queue.oldest_runnable_age_seconds)),
        ("created last minute", queue.created_last_minute.to_string()),
        ("completed last minute", queue.completed_last_minute.to_string()),
        ("last claim (this server)", table::at(queue.last_claim_at)),
    ])
}
