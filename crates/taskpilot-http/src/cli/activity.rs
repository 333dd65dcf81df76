//! `taskpilot dead-letters` (GET /api/dead-letters) and `taskpilot workers`
//! (GET /api/workers): what failed, grouped, and who is working on what.

use taskpilot_client::api::{DeadLetterListResponse, WorkerResponse};

use super::table::{at, Table};
use super::{Context, Failure, Printed};

pub(super) async fn dead_letters(
    context: &Context,
    limit: Option<u32>,
) -> Result<Printed, Failure> {
    let answer = context.client.dead_letters(limit).await?;
    context.print(&answer, || dead_letters_text(&answer))
}

fn dead_letters_text(answer: &DeadLetterListResponse) -> String {
    if answer.items.is_empty() {
        return format!("no failed task among the newest {}\n", answer.scanned);
    }
    let mut table = Table::new(&["COUNT", "QUEUE", "NAME", "FIRST FAILED", "LAST FAILED", "ERROR"]);
    for group in &answer.items {
        table.row(vec![
            group.count.to_string(),
            group.queue.clone(),
            group.name.clone(),
            at(Some(group.first_failed_at)),
            at(Some(group.last_failed_at)),
            if group.error.is_empty() { "-".to_owned() } else { group.error.clone() },
        ]);
    }
    table.render()
}

pub(super) async fn workers(context: &Context) -> Result<Printed, Failure> {
    let workers = context.client.workers().await?;
    context.print(&workers, || workers_text(&workers))
}

fn workers_text(workers: &[WorkerResponse]) -> String {
    if workers.is_empty() {
        return "no worker seen in the last hour, and none holds a running task\n".to_owned();
    }
    let mut table =
        Table::new(&["WORKER", "LAST SEEN", "LAST CLAIM", "LAST HEARTBEAT", "RUNNING", "TASKS"]);
    for worker in workers {
        let tasks: Vec<String> =
            worker.running.iter().map(|t| format!("{} ({})", t.id, t.name)).collect();
        table.row(vec![
            worker.worker_id.clone(),
            at(worker.last_seen_at),
            at(worker.last_claim_at),
            at(worker.last_heartbeat_at),
            worker.running.len().to_string(),
            if tasks.is_empty() { "-".to_owned() } else { tasks.join(", ") },
        ]);
    }
    table.render()
}
