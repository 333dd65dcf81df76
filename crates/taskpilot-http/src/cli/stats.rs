//! `taskpilot stats`: the stored counts per queue and status (GET /api/stats) and the
//! refused stale calls (GET /api/stats/rejections).

use serde::Serialize;
use taskpilot_client::api::{RejectionStatsResponse, StatsResponse};

use super::queues::{age, count_cells, COUNT_COLUMNS};
use super::table::{fields, Table};
use super::{Context, Failure, Printed};

/// The two answers as `--json` prints them: one document, each answer whole under its name.
#[derive(Debug, Serialize)]
struct Both<'a> {
    /// `GET /api/stats`.
    stats: &'a StatsResponse,
    /// `GET /api/stats/rejections`.
    rejections: &'a RejectionStatsResponse,
}

pub(super) async fn run(context: &Context) -> Result<Printed, Failure> {
    let (stats, rejections) =
        tokio::try_join!(context.client.stats(), context.client.rejection_stats())?;
    context.print(&Both { stats: &stats, rejections: &rejections }, || text(&stats, &rejections))
}

fn text(stats: &StatsResponse, rejections: &RejectionStatsResponse) -> String {
    let mut header = vec!["QUEUE"];
    header.extend(COUNT_COLUMNS);
    header.push("OLDEST RUNNABLE");
    let mut counts = Table::new(&header);
    for queue in &stats.queues {
        let mut row = vec![queue.queue.clone()];
        row.extend(count_cells(&queue.counts));
        row.push(age(queue.oldest_runnable_age_seconds));
        counts.row(row);
    }
    if let Some(other) = &stats.other_queues {
        let mut row = vec!["(other)".to_owned()];
        row.extend(count_cells(other));
        row.push(String::new());
        counts.row(row);
    }
    let mut total = vec!["(total)".to_owned()];
    total.extend(count_cells(&stats.totals));
    total.push(String::new());
    counts.row(total);

    let mut out = counts.render();
    out.push('\n');
    if rejections.items.is_empty() {
        out.push_str("refused stale calls: none\n");
    } else {
        let mut refused = Table::new(&["REFUSED", "CALL", "COUNT"]);
        for item in &rejections.items {
            refused.row(vec![item.code.clone(), item.call.clone(), item.count.to_string()]);
        }
        out.push_str(&refused.render());
    }
    out.push_str(&fields(&[("stale successes", rejections.stale_successes.to_string())]));
    out
}
