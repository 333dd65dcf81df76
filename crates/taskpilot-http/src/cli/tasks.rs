//! `taskpilot tasks …`: list, show, create, cancel, rerun, explain, history and bulk
//! actions, one REST call each.

use chrono::{DateTime, Utc};
use serde_json::Value;
use taskpilot_client::api::{
    BulkActionKind, BulkActionRequest, BulkActionResponse, BulkFilter, BulkOutcome,
    ExplainResponse, OnConflict, RetryState, TaskEventListResponse, TaskEventResponse,
    TaskListResponse,
};
use taskpilot_client::{CreateTaskRequest, ListTasksQuery, TaskResponse, TaskStatus};
use uuid::Uuid;

use super::table::{self, fields, or_dash, shorten, Table};
use super::{wire, Context, Failure, Printed};

/// `taskpilot tasks …`.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest first, one page at a time (GET /api/tasks); the next page's cursor
    /// goes to stderr.
    List(ListArgs),
    /// Show a task with its version, the `ETag` that --if-version takes (GET /api/tasks/{id}).
    Show {
        /// The task's id.
        id: Uuid,
    },
    /// Create a task (POST /api/tasks).
    Create(CreateArgs),
    /// Cancel a PENDING or RUNNING task (PUT /api/tasks/{id}/cancel).
    Cancel {
        /// The task's id.
        id: Uuid,
        /// Only if the task is still at this version (`tasks show` gives it); sent as
        /// If-Match.
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Rerun a FAILED or CANCELLED task with a fresh budget of attempts
    /// (PUT /api/tasks/{id}/rerun).
    Rerun {
        /// The task's id.
        id: Uuid,
        /// Only if the task is still at this version (`tasks show` gives it); sent as
        /// If-Match.
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Say what stands between a task and a worker, or why it will not run again
    /// (GET /api/tasks/{id}/explain).
    Explain {
        /// The task's id.
        id: Uuid,
    },
    /// A task's history, oldest first (GET /api/tasks/{id}/events).
    Events {
        /// The task's id.
        id: Uuid,
    },
    /// Rerun, cancel or delete many tasks, chosen by the list's filters or by id
    /// (POST /api/tasks/bulk).
    Bulk(BulkArgs),
}

/// The listing's filters, shared by `tasks list` and `tasks bulk`; every one given must
/// hold.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct FilterArgs {
    /// Only tasks in this status: PENDING, RUNNING, SUCCEEDED, FAILED or CANCELLED (any
    /// case); repeat it, or separate with commas, for several.
    #[arg(long, value_delimiter = ',', value_parser = parse_status)]
    pub status: Vec<TaskStatus>,
    /// Only tasks in this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only tasks of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only tasks in this retry state: NONE, RETRY_SCHEDULED, EXHAUSTED, NON_RETRYABLE or
    /// QUARANTINED (any case).
    #[arg(long, value_parser = parse_retry_state)]
    pub retry_state: Option<RetryState>,
    /// Only tasks created at or after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks that finished at or after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub completed_after: Option<DateTime<Utc>>,
    /// Only tasks that finished before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub completed_before: Option<DateTime<Utc>>,
    /// Only tasks whose last error contains this text, ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub last_error: Option<String>,
    /// Only tasks whose payload contains this JSON object, e.g. '{"customerId":42}'.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
}

impl FilterArgs {
    /// The filters as `GET /api/tasks` takes them: text, statuses comma-separated.
    fn query(&self) -> ListTasksQuery {
        let statuses: Vec<&str> = self.status.iter().map(|s| s.as_str()).collect();
        ListTasksQuery {
            queue: self.queue.clone(),
            status: (!statuses.is_empty()).then(|| statuses.join(",")),
            retry_state: self.retry_state.map(|s| s.as_str().to_owned()),
            name: self.name.clone(),
            created_after: self.created_after.map(taskpilot_api::time::format),
            created_before: self.created_before.map(taskpilot_api::time::format),
            completed_after: self.completed_after.map(taskpilot_api::time::format),
            completed_before: self.completed_before.map(taskpilot_api::time::format),
            last_error: self.last_error.clone(),
            payload: self.payload.as_ref().map(Value::to_string),
            limit: None,
            cursor: None,
        }
    }

    /// The filters as a bulk action takes them; `None` when none was given.
    fn bulk(&self) -> Option<BulkFilter> {
        let filter = BulkFilter {
            queue: self.queue.clone(),
            status: (!self.status.is_empty()).then(|| self.status.clone()),
            retry_state: self.retry_state,
            name: self.name.clone(),
            created_after: self.created_after,
            created_before: self.created_before,
            completed_after: self.completed_after,
            completed_before: self.completed_before,
            last_error: self.last_error.clone(),
            payload: self.payload.clone(),
        };
        (filter != BulkFilter::default()).then_some(filter)
    }
}

/// `taskpilot tasks list`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ListArgs {
    /// Which tasks.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Tasks per page, 1 to 500 (the server's default is 50).
    #[arg(long)]
    pub limit: Option<i64>,
    /// The page after this cursor, as the previous page's hint gave it.
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
}

/// `taskpilot tasks create`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CreateArgs {
    /// The kind of work, 1 to 200 characters.
    #[arg(long)]
    pub name: String,
    /// The queue; the server's `default` when left out.
    #[arg(long)]
    pub queue: Option<String>,
    /// Input for the worker, any JSON value; `{}` when left out.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub payload: Option<Value>,
    /// Higher runs first; 0 when left out.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Attempts before the task fails for good, 1 to 100; the server's default when left out.
    #[arg(long)]
    pub max_attempts: Option<i64>,
    /// Lease expiries before the task is quarantined (its `maxCrashes`), 1 to 100; the
    /// server's default (its --max-crashes, which this flag is named apart from) when left
    /// out.
    #[arg(long = "task-max-crashes", id = "task_max_crashes", value_name = "N")]
    pub max_crashes: Option<i64>,
    /// Not runnable before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant, conflicts_with = "delay")]
    pub run_at: Option<DateTime<Utc>>,
    /// Not runnable before this long from now (by this machine's clock): a whole number and
    /// s, m, h or d, e.g. 30s.
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub delay: Option<std::time::Duration>,
    /// While an active task of the queue holds this key, no other is created.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// When an active task holds the unique key: `return` answers that task (the
    /// server's default), `reject` refuses with UNIQUE_KEY_HELD.
    #[arg(long, value_name = "return|reject", value_parser = parse_on_conflict)]
    pub on_conflict: Option<OnConflict>,
}

impl CreateArgs {
    fn request(&self) -> Result<CreateTaskRequest, Failure> {
        let run_at = match (self.run_at, self.delay) {
            (Some(at), _) => Some(at),
            (None, Some(delay)) => Some(
                chrono::TimeDelta::from_std(delay)
                    .ok()
                    .and_then(|delay| Utc::now().checked_add_signed(delay))
                    .ok_or_else(|| Failure::Usage("--delay is too long".to_owned()))?,
            ),
            (None, None) => None,
        };
        let mut request = CreateTaskRequest::new(self.name.clone());
        request.queue.clone_from(&self.queue);
        if let Some(payload) = &self.payload {
            request.payload = payload.clone();
        }
        request.priority = self.priority.unwrap_or_default();
        request.max_attempts = self.max_attempts;
        request.max_crashes = self.max_crashes;
        request.run_at = run_at;
        request.unique_key.clone_from(&self.unique_key);
        request.on_conflict = self.on_conflict;
        Ok(request)
    }
}

/// `taskpilot tasks bulk`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BulkArgs {
    /// What to do to each task: rerun, cancel or delete.
    #[arg(long, value_parser = parse_action)]
    pub action: BulkActionKind,
    /// Which tasks, by the list's filters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Which tasks, by id: comma-separated or repeated (instead of filters).
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<Uuid>,
    /// Take every task (within the token's queues): the server asks for it when no filter
    /// and no id is given.
    #[arg(long)]
    pub all: bool,
    /// Only count the tasks that match; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many tasks, newest first, 1 to 10,000 (the server's default is 1,000).
    #[arg(long)]
    pub limit: Option<i64>,
}

impl BulkArgs {
    fn request(&self) -> BulkActionRequest {
        BulkActionRequest {
            action: self.action,
            filter: self.filter.bulk(),
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
            versions: None,
            all: self.all.then_some(true),
            dry_run: self.dry_run.then_some(true),
            limit: self.limit,
        }
    }
}

pub(super) async fn run(command: &TasksCommand, context: &Context) -> Result<Printed, Failure> {
    let client = &context.client;
    match command {
        TasksCommand::List(args) => {
            let query = ListTasksQuery {
                limit: args.limit.map(|l| l.to_string()),
                cursor: args.after.clone(),
                ..args.filter.query()
            };
            let page = client.list(&query).await?;
            let printed = context.print(&page, || task_table(&page))?;
            Ok(match &page.next_cursor {
                Some(cursor) => printed.hint(format!("next page: --after {cursor}")),
                None => printed,
            })
        }
        TasksCommand::Show { id } => {
            let answer = client.get_versioned(id).await?;
            let printed =
                context.print(&answer.value, || task_fields(&answer.value, answer.version))?;
            Ok(match (context.json, answer.version) {
                // The version is a header, not part of the task's JSON.
                (true, Some(version)) => printed.hint(format!("version: {version}")),
                _ => printed,
            })
        }
        TasksCommand::Create(args) => {
            let task = client.create(&args.request()?).await?;
            let printed = context.print(&task, || task_fields(&task, None))?;
            Ok(match task.created {
                Some(false) => printed.hint(format!(
                    "not created: task {} of the queue already holds this unique key",
                    task.id
                )),
                _ => printed,
            })
        }
        TasksCommand::Cancel { id, if_version } => {
            let task = match if_version {
                Some(version) => client.cancel_if_version(id, *version).await?,
                None => client.cancel(id).await?,
            };
            context.print(&task, || task_fields(&task, None))
        }
        TasksCommand::Rerun { id, if_version } => {
            let task = match if_version {
                Some(version) => client.rerun_if_version(id, *version).await?,
                None => client.rerun(id).await?,
            };
            context.print(&task, || task_fields(&task, None))
        }
        TasksCommand::Explain { id } => {
            let explained = client.explain(id).await?;
            context.print(&explained, || explain_text(&explained))
        }
        TasksCommand::Events { id } => {
            let history = TaskEventListResponse { items: client.events(id).await? };
            context.print(&history, || event_table(&history.items))
        }
        TasksCommand::Bulk(args) => {
            let report = client.bulk(&args.request()).await?;
            let printed = context.print(&report, || bulk_text(&report))?;
            Ok(if report.more {
                printed.hint("more tasks match than the limit: run it again for the rest".into())
            } else {
                printed
            })
        }
    }
}

fn task_table(page: &TaskListResponse) -> String {
    let mut table = Table::new(&[
        "ID",
        "QUEUE",
        "NAME",
        "STATUS",
        "RETRY",
        "ATTEMPTS",
        "PRIORITY",
        "CREATED",
        "LAST ERROR",
    ]);
    for task in &page.items {
        table.row(vec![
            task.id.to_string(),
            task.queue.clone(),
            task.name.clone(),
            task.status.as_str().to_owned(),
            task.retry_state.as_str().to_owned(),
            format!("{}/{}", task.attempt_count, task.max_attempts),
            task.priority.to_string(),
            table::at(Some(task.created_at)),
            task.last_error.as_deref().map_or_else(|| "-".to_owned(), |e| shorten(e, 60)),
        ]);
    }
    if table.is_empty() {
        return "no tasks\n".to_owned();
    }
    table.render()
}

fn task_fields(task: &TaskResponse, version: Option<u64>) -> String {
    let json =
        |value: &Option<Value>| value.as_ref().map_or_else(|| "-".to_owned(), Value::to_string);
    let mut pairs = vec![("id", task.id.to_string())];
    if let Some(version) = version {
        pairs.push(("version", version.to_string()));
    }
    if let Some(created) = task.created {
        pairs
            .push(("created", if created { "yes" } else { "no (it holds the unique key)" }.into()));
    }
    pairs.extend([
        ("queue", task.queue.clone()),
        ("name", task.name.clone()),
        ("status", task.status.as_str().to_owned()),
        ("retry state", task.retry_state.as_str().to_owned()),
        ("priority", task.priority.to_string()),
        ("attempt", task.attempt.to_string()),
        ("failed attempts", format!("{} of {}", task.attempt_count, task.max_attempts)),
        ("crashes", format!("{} of {}", task.crash_count, task.max_crashes)),
        ("next run", table::at(task.next_run_at)),
        ("worker", or_dash(task.worker_id.as_deref())),
        ("started", table::at(task.processing_started_at)),
        ("lease expires", table::at(task.lease_expires_at)),
        ("last error", or_dash(task.last_error.as_deref())),
        ("completed", table::at(task.completed_at)),
        ("created at", table::at(Some(task.created_at))),
        ("updated at", table::at(Some(task.updated_at))),
        ("unique key", or_dash(task.unique_key.as_deref())),
        ("payload", task.payload.to_string()),
        ("result", json(&task.result)),
    ]);
    fields(&pairs)
}

fn event_table(events: &[TaskEventResponse]) -> String {
    let mut table =
        Table::new(&["AT", "KIND", "ATTEMPT", "FROM", "TO", "ACTOR", "WORKER", "TOKEN", "DETAIL"]);
    for event in events {
        let detail = match (&event.rejected_code, &event.rejected_call, &event.error) {
            (Some(code), Some(call), error) => {
                format!(
                    "{call} refused: {code}{}",
                    error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
                )
            }
            (_, _, Some(error)) => shorten(error, 60),
            _ => "-".to_owned(),
        };
        table.row(vec![
            table::at(Some(event.at)),
            event.kind.clone(),
            event.attempt.to_string(),
            or_dash(event.from.map(TaskStatus::as_str)),
            event.to.as_str().to_owned(),
            event.actor.clone(),
            or_dash(event.worker_id.as_deref()),
            or_dash(event.token_name.as_deref()),
            detail,
        ]);
    }
    table.render()
}

fn explain_text(explained: &ExplainResponse) -> String {
    let mut out = fields(&[
        ("task", explained.task_id.to_string()),
        ("status", explained.status.as_str().to_owned()),
        ("runnable now", if explained.runnable { "yes" } else { "no" }.to_owned()),
    ]);
    if explained.reasons.is_empty() {
        out.push_str("no reason: the next claim from its queue takes it\n");
        return out;
    }
    let mut reasons = Table::new(&["REASON", "MESSAGE"]);
    for reason in &explained.reasons {
        reasons.row(vec![reason.code.clone(), reason.message.clone()]);
    }
    out.push('\n');
    out.push_str(&reasons.render());
    out
}

fn bulk_text(report: &BulkActionResponse) -> String {
    let mut pairs = vec![
        ("dry run", if report.dry_run { "yes" } else { "no" }.to_owned()),
        ("matched", report.matched.to_string()),
        ("done", report.done.to_string()),
        ("skipped", report.skipped.to_string()),
        ("more", if report.more { "yes" } else { "no" }.to_owned()),
    ];
    if let Some(id) = report.id {
        pairs.push(("action id", id.to_string()));
    }
    let mut out = fields(&pairs);
    let mut skipped = Table::new(&["SKIPPED", "CODE", "DETAIL"]);
    for result in report.results.iter().filter(|r| r.outcome == BulkOutcome::Skipped) {
        skipped.row(vec![
            result.id.to_string(),
            or_dash(result.code.as_deref()),
            or_dash(result.detail.as_deref()),
        ]);
    }
    if !skipped.is_empty() {
        out.push('\n');
        out.push_str(&skipped.render());
    }
    out
}

fn parse_status(raw: &str) -> Result<TaskStatus, String> {
    wire(&raw.trim().to_ascii_uppercase())
}

fn parse_retry_state(raw: &str) -> Result<RetryState, String> {
    wire(&raw.trim().to_ascii_uppercase())
}

fn parse_action(raw: &str) -> Result<BulkActionKind, String> {
    wire(&raw.trim().to_ascii_lowercase())
}

fn parse_on_conflict(raw: &str) -> Result<OnConflict, String> {
    wire(&raw.trim().to_ascii_lowercase())
}

fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    taskpilot_api::time::parse(raw.trim())
        .map_err(|e| format!("{e}: expected {}", taskpilot_api::time::EXPECTED))
}

fn parse_json(raw: &str) -> Result<Value, String> {
    serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use super::*;
    use crate::config::{Cli, Command};

    fn tasks(args: &[&str]) -> TasksCommand {
        let cli = Cli::try_parse_from(std::iter::once("taskpilot").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Some(Command::Tasks(command)) => command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_list_filter_becomes_its_query_parameter() {
        let TasksCommand::List(args) = tasks(&[
            "tasks",
            "list",
            "--status",
            "failed,CANCELLED",
            "--status",
            "pending",
            "--queue",
            "q",
            "--name",
            "n",
            "--retry-state",
            "exhausted",
            "--created-after",
            "2026-12-01T02:00:00+02:00",
            "--created-before",
            "2026-12-02T00:00:00Z",
            "--completed-after",
            "2026-12-01T00:00:00Z",
            "--completed-before",
            "2026-12-03T00:00:00Z",
            "--last-error",
            "timeout",
            "--payload",
            r#"{"customerId": 42}"#,
        ]) else {
            panic!("a list")
        };

        assert_eq!(
            args.filter.query(),
            ListTasksQuery {
                queue: Some("q".into()),
                status: Some("FAILED,CANCELLED,PENDING".into()),
                retry_state: Some("EXHAUSTED".into()),
                name: Some("n".into()),
                created_after: Some("2026-12-01T00:00:00.000000Z".into()),
                created_before: Some("2026-12-02T00:00:00.000000Z".into()),
                completed_after: Some("2026-12-01T00:00:00.000000Z".into()),
                completed_before: Some("2026-12-03T00:00:00.000000Z".into()),
                last_error: Some("timeout".into()),
                payload: Some(r#"{"customerId":42}"#.into()),
                limit: None,
                cursor: None,
            }
        );
    }

    #[test]
    fn a_bulk_action_names_its_filter_or_its_ids_and_only_what_was_given() {
        let TasksCommand::Bulk(by_filter) =
            tasks(&["tasks", "bulk", "--action", "rerun", "--status", "FAILED", "--dry-run"])
        else {
            panic!("a bulk action")
        };
        let TasksCommand::Bulk(by_ids) = tasks(&[
            "tasks",
            "bulk",
            "--action",
            "cancel",
            "--ids",
            "01930000-0000-7000-8000-000000000001,01930000-0000-7000-8000-000000000002",
        ]) else {
            panic!("a bulk action")
        };

        assert_eq!(
            serde_json::to_value(by_filter.request()).unwrap(),
            json!({"action": "rerun", "filter": {"status": ["FAILED"]}, "dryRun": true})
        );
        assert_eq!(
            serde_json::to_value(by_ids.request()).unwrap(),
            json!({"action": "cancel", "ids": ["01930000-0000-7000-8000-000000000001",
                                               "01930000-0000-7000-8000-000000000002"]})
        );
    }

    #[test]
    fn a_create_sends_what_was_given_and_a_delay_becomes_a_run_time() {
        let TasksCommand::Create(args) = tasks(&[
            "tasks",
            "create",
            "--queue",
            "mail",
            "--name",
            "send",
            "--payload",
            "[1]",
            "--priority",
            "-3",
            "--max-attempts",
            "2",
            "--unique-key",
            "k",
            "--on-conflict",
            "reject",
            "--delay",
            "1h",
            "--task-max-crashes",
            "4",
        ]) else {
            panic!("a create")
        };

        let before = Utc::now();
        let request = args.request().unwrap();

        let run_at = request.run_at.unwrap();
        assert!(run_at >= before + chrono::TimeDelta::hours(1), "{run_at}");
        assert_eq!(
            request,
            CreateTaskRequest {
                queue: Some("mail".into()),
                payload: json!([1]),
                priority: -3,
                max_attempts: Some(2),
                max_crashes: Some(4),
                run_at: Some(run_at),
                unique_key: Some("k".into()),
                on_conflict: Some(OnConflict::Reject),
                ..CreateTaskRequest::new("send")
            }
        );
    }

    #[test]
    fn a_create_leaves_what_was_not_given_to_the_server_even_beside_its_own_settings() {
        // `--max-crashes` and `--default-max-attempts` are the server's settings, accepted
        // by every subcommand: they must not leak into the task.
        let TasksCommand::Create(args) =
            tasks(&["tasks", "create", "--name", "x", "--max-crashes", "7"])
        else {
            panic!("a create")
        };

        assert_eq!(args.request().unwrap(), CreateTaskRequest::new("x"));
    }

    #[test]
    fn arguments_the_api_cannot_take_are_refused_before_any_call() {
        for args in [
            &["tasks", "list", "--status", "DONE"][..],
            &["tasks", "show", "not-a-uuid"],
            &["tasks", "create", "--name", "x", "--payload", "{"],
            &[
                "tasks",
                "create",
                "--name",
                "x",
                "--run-at",
                "2026-12-01T00:00:00Z",
                "--delay",
                "1s",
            ],
            &["tasks", "create", "--name", "x", "--delay", "soon"],
            &["tasks", "bulk", "--action", "explode"],
        ] {
            let parsed =
                Cli::try_parse_from(std::iter::once("taskpilot").chain(args.iter().copied()));

            assert_eq!(parsed.map(|_| ()).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }
}
