//! The dashboard's handlers: each reads or acts through one use case for the signed-in
//! caller ([`Viewer`]), maps the answer through the API's own response bodies ([`dto`]) into
//! a view ([`super::views`]) and renders it. A request from htmx (a live refresh) gets only
//! the page's live fragment.
//!
//! Actions follow one shape: a GET shows what will happen (the version the person judged,
//! or a bulk action's dry-run count) with a confirming button, the POST does it through the
//! use case with that version as its `If-Match`, and answers 303 to the page to look at.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError as _};
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use taskpilot_api::limits::{DEFAULT_BULK, DEFAULT_THROUGHPUT_MINUTES, MAX_ERROR_FILTER_CHARS};
use taskpilot_api::ListTasksQuery;
use taskpilot_app::{
    AccessService, AppError, BulkAction, BulkRequest, BulkSelection, DeadLetterGroup, NewToken,
    TaskService, ThroughputMinute, VersionMatch, WorkerView,
};
use taskpilot_domain::{
    ApiToken, Operation, QueueName, QueueScope, Task, TokenId, TokenKind, TokenName,
};

use super::error::UiError;
use super::views::{
    ago, shorten, when, when_opt, AttemptBlock, ConfirmPage, Counts, DeadLettersLive,
    DeadLettersPage, EventRow, FilterForm, GroupRow, OverviewLive, OverviewPage, QueueRow,
    QueuesLive, QueuesPage, RejectionRow, Shell, TaskPage, TaskRow, TasksLive, TasksPage, TokenRow,
    TokensPage, WorkerRow, WorkersLive, WorkersPage,
};
use super::{from_htmx, html, see_other, Viewer};
use crate::auth::Gate;
use crate::dto;
use crate::error::ApiError;
use crate::wake::WakeHub;

/// Runs a use case on the blocking pool, as the API's handlers do.
async fn run<T, F>(service: &web::Data<TaskService>, call: F) -> Result<T, UiError>
where
    F: FnOnce(&TaskService) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    Ok(crate::handlers::run(service, call).await?)
}

/// Runs a token use case on the blocking pool, for a caller allowed to manage tokens.
async fn run_tokens<T, F>(gate: &web::Data<Gate>, viewer: &Viewer, call: F) -> Result<T, UiError>
where
    F: FnOnce(&AccessService) -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    viewer.caller.may(Operation::ManageTokens).map_err(AppError::from)?;
    let access = gate.access().clone();
    web::block(move || call(&access))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(UiError::from)
}

/// Renders a template into a 200 page.
fn render(template: &impl Template) -> Result<HttpResponse, UiError> {
    render_with(StatusCode::OK, template)
}

fn render_with(status: StatusCode, template: &impl Template) -> Result<HttpResponse, UiError> {
    let body = template.render().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(html(status, body))
}

/// The page, or only its live fragment for htmx.
fn page_or_fragment(
    req: &HttpRequest,
    fragment: &impl Template,
    page: impl FnOnce(String) -> Result<HttpResponse, UiError>,
) -> Result<HttpResponse, UiError> {
    let live = fragment.render().map_err(|e| ApiError::Internal(e.into()))?;
    if from_htmx(req) {
        Ok(html(StatusCode::OK, live))
    } else {
        page(live)
    }
}

/// A fixed notice an action's redirect asks for (`?notice=cancelled`); nothing else from
/// the address is ever shown.
fn notice(req: &HttpRequest) -> Option<String> {
    #[derive(Deserialize)]
    struct Notice {
        notice: Option<String>,
    }
    let asked = serde_urlencoded::from_str::<Notice>(req.query_string()).ok()?.notice?;
    let text = match asked.as_str() {
        "cancelled" => "The task was cancelled.",
        "rerun" => "The task was put back to run again.",
        "paused" => "The queue is paused: claims take nothing from it.",
        "resumed" => "The queue is resumed.",
        "revoked" => "The token was revoked: every server refuses it within seconds.",
        _ => return None,
    };
    Some(text.to_owned())
}

fn now_text(now: DateTime<Utc>) -> String {
    when(now)
}

// ---- Overview ----

/// `GET /ui`: tasks by queue and status from the maintained counts, the oldest runnable
/// task's age, pause states, refused stale calls, and the last hour's throughput.
pub async fn overview(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let caller = viewer.caller.clone();
    let (queues, rejections, throughput) = run(&service, move |s| {
        let acting = s.acting_as(&caller);
        Ok((
            acting.queues()?,
            acting.rejection_counts()?,
            acting.throughput(DEFAULT_THROUGHPUT_MINUTES, None)?,
        ))
    })
    .await?;
    let now = service.now();
    let queues: Vec<QueueRow> =
        dto::queue_list_response(&queues, now).items.iter().map(|q| QueueRow::of(q, now)).collect();
    let mut totals = Counts::default();
    for q in &queues {
        totals.add(&q.counts);
    }
    let stats = dto::rejection_stats_response(&rejections);
    let fragment = OverviewLive {
        totals,
        queues,
        rejections: stats
            .items
            .iter()
            .map(|r| RejectionRow { code: r.code.clone(), call: r.call.clone(), count: r.count })
            .collect(),
        stale_successes: stats.stale_successes,
        chart: chart_series(&throughput),
        updated: now_text(now),
    };
    page_or_fragment(&req, &fragment, |live| {
        render(&OverviewPage { shell: viewer.shell_on("overview"), live })
    })
}

/// The throughput chart's data: one column per series, as uPlot takes them (unix seconds on
/// the x axis).
fn chart_series(minutes: &[ThroughputMinute]) -> String {
    let column = |f: fn(&ThroughputMinute) -> u64| minutes.iter().map(f).collect::<Vec<_>>();
    serde_json::json!({
        "t": minutes.iter().map(|m| m.minute.timestamp()).collect::<Vec<_>>(),
        "created": column(|m| m.created),
        "succeeded": column(|m| m.succeeded),
        "failed": column(|m| m.failed),
        "cancelled": column(|m| m.cancelled),
    })
    .to_string()
}

// ---- Queues ----

/// `GET /ui/queues`: every queue with its pause state; pause and resume buttons for the
/// callers whose grants allow them.
pub async fn queues(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let caller = viewer.caller.clone();
    let queues = run(&service, move |s| s.acting_as(&caller).queues()).await?;
    let now = service.now();
    let fragment = QueuesLive {
        queues: dto::queue_list_response(&queues, now)
            .items
            .iter()
            .map(|q| QueueRow::of(q, now))
            .collect(),
        manage: viewer.caller.may(Operation::ManageQueues).is_ok(),
        updated: now_text(now),
    };
    page_or_fragment(&req, &fragment, |live| {
        let shell = Shell { notice: notice(&req), ..viewer.shell_on("queues") };
        render(&QueuesPage { shell, live })
    })
}

/// The version a form acts on, as its hidden `version` field gives it.
#[derive(Debug, Deserialize)]
struct VersionForm {
    version: String,
}

/// The form's version as the `If-Match` of the use case.
fn version_match(body: &[u8]) -> Result<VersionMatch, UiError> {
    let form = serde_urlencoded::from_bytes::<VersionForm>(body)
        .map_err(|_| ApiError::Malformed("the form must give the version it acts on".into()))?;
    let version = form.version.trim().parse::<u64>().map_err(|_| {
        ApiError::Validation(format!("version must be a number, got {:?}", form.version))
    })?;
    Ok(VersionMatch::OneOf(vec![version]))
}

/// `POST /ui/queues/{name}/pause`: pauses the queue at the version shown.
pub async fn pause_queue(
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    let queue = dto::queue_name(&path)?;
    let expected = version_match(&body)?;
    let caller = viewer.caller.clone();
    run(&service, move |s| s.acting_as(&caller).pause_queue(&queue, &expected))
        .await
        .map_err(|e| e.reload("/ui/queues".to_owned()))?;
    Ok(see_other("/ui/queues?notice=paused"))
}

/// `POST /ui/queues/{name}/resume`: resumes the queue at the version shown; waiting claims
/// look again.
pub async fn resume_queue(
    viewer: Viewer,
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    let queue = dto::queue_name(&path)?;
    let expected = version_match(&body)?;
    let caller = viewer.caller.clone();
    run(&service, move |s| s.acting_as(&caller).resume_queue(&queue, &expected))
        .await
        .map_err(|e| e.reload("/ui/queues".to_owned()))?;
    hub.wake();
    Ok(see_other("/ui/queues?notice=resumed"))
}

// ---- Tasks ----

impl FilterForm {
    fn of(q: &ListTasksQuery) -> Self {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            queue: text(&q.queue),
            status: text(&q.status),
            retry_state: text(&q.retry_state),
            name: text(&q.name),
            created_after: text(&q.created_after),
            created_before: text(&q.created_before),
            completed_after: text(&q.completed_after),
            completed_before: text(&q.completed_before),
            last_error: text(&q.last_error),
            payload: text(&q.payload),
            limit: text(&q.limit),
        }
    }

    /// Every retry state, for the form's list.
    pub fn retry_states(&self) -> [&'static str; 5] {
        ["NONE", "RETRY_SCHEDULED", "EXHAUSTED", "NON_RETRYABLE", "QUARANTINED"]
    }
}

/// `/ui/tasks?…` for `query`, leaving out what it does not set, so the address is as short
/// as the filter.
fn tasks_url(query: &ListTasksQuery) -> String {
    let blank = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    let mut q = query.clone();
    for field in [
        &mut q.queue,
        &mut q.status,
        &mut q.retry_state,
        &mut q.name,
        &mut q.created_after,
        &mut q.created_before,
        &mut q.completed_after,
        &mut q.completed_before,
        &mut q.last_error,
        &mut q.payload,
        &mut q.limit,
        &mut q.cursor,
    ] {
        if blank(field) {
            *field = None;
        }
    }
    match serde_urlencoded::to_string(&q) {
        Ok(encoded) if !encoded.is_empty() => format!("/ui/tasks?{encoded}"),
        _ => "/ui/tasks".to_owned(),
    }
}

/// `GET /ui/tasks?…`: one keyset page of tasks, newest first, filtered by every parameter of
/// `GET /api/tasks` (so the address can be shared), with a link to the next page.
pub async fn tasks(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let shell = viewer.shell_on("tasks");
    let query = match serde_urlencoded::from_str::<ListTasksQuery>(req.query_string()) {
        Ok(query) => query,
        Err(e) => {
            let error = format!("These filters cannot be read: {e}.");
            let page = TasksPage {
                shell,
                form: FilterForm::default(),
                error: Some(error),
                live: String::new(),
            };
            return render_with(StatusCode::BAD_REQUEST, &page);
        }
    };
    let form = FilterForm::of(&query);
    let dto::ListRequest { filter, cursor, limit } = match dto::list_request(query.clone()) {
        Ok(request) => request,
        Err(e) => {
            let error = e.problem_body().detail;
            let page = TasksPage { shell, form, error: Some(error), live: String::new() };
            return render_with(StatusCode::BAD_REQUEST, &page);
        }
    };
    let caller = viewer.caller.clone();
    let on_page = cursor.clone();
    let listed =
        run(&service, move |s| s.acting_as(&caller).list(&filter, on_page.as_deref(), limit)).await;
    let page = match listed {
        Ok(page) => page,
        Err(UiError::Api { error, .. }) if error.status_code() == StatusCode::BAD_REQUEST => {
            let error = error.problem_body().detail;
            let page = TasksPage { shell, form, error: Some(error), live: String::new() };
            return render_with(StatusCode::BAD_REQUEST, &page);
        }
        Err(e) => return Err(e),
    };
    let wire = dto::list_response(&page);
    let fragment = TasksLive {
        tasks: wire.items.iter().map(TaskRow::of).collect(),
        this_page: tasks_url(&query),
        next_page: wire
            .next_cursor
            .map(|next| tasks_url(&ListTasksQuery { cursor: Some(next), ..query.clone() })),
        first_page: cursor.map(|_| tasks_url(&ListTasksQuery { cursor: None, ..query.clone() })),
        live: query.cursor.as_deref().is_none_or(str::is_empty),
        updated: now_text(service.now()),
    };
    page_or_fragment(&req, &fragment, |live| render(&TasksPage { shell, form, error: None, live }))
}

/// JSON as people read it: indented, keys in order.
fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `GET /ui/tasks/{id}`: the task, its payload and result, why it is where it is, and its
/// attempts from its history; cancel and rerun for callers who may, when the domain would
/// take them.
pub async fn task(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = dto::task_id(&path)?;
    let caller = viewer.caller.clone();
    let (task, events, explained) = run(&service, move |s| {
        let acting = s.acting_as(&caller);
        let explained = acting.explain(id)?;
        Ok((explained.task.clone(), acting.events(id)?, explained))
    })
    .await?;
    let now = service.now();
    let wire = dto::task_response(&task);
    let explain = dto::explain_response(&explained);
    let heartbeat = explain
        .reasons
        .iter()
        .find_map(|r| r.last_heartbeat_at)
        .map(|at| format!("{} ({})", when(at), ago(Some(at), now)));
    let mut attempts: Vec<AttemptBlock> = Vec::new();
    for event in dto::events_response(&events).items {
        let title = if event.attempt == 0 {
            "Created".to_owned()
        } else {
            format!("Attempt {}", event.attempt)
        };
        match attempts.last_mut() {
            Some(block) if block.title == title => block.events.push(EventRow::of(&event)),
            _ => attempts.push(AttemptBlock { title, events: vec![EventRow::of(&event)] }),
        }
    }
    // The buttons ask the domain, on a copy, whether it would take the action now: the page
    // offers what the use case would do, and the use case still decides when it is pressed.
    let cancel =
        viewer.caller.may(Operation::CancelTask).is_ok() && task.clone().cancel(now).is_ok();
    let rerun = viewer.caller.may(Operation::RerunTask).is_ok() && task.clone().rerun(now).is_ok();
    let page = TaskPage {
        shell: Shell { notice: notice(&req), ..viewer.shell_on("tasks") },
        facts: facts(&wire, task.version(), now),
        version: task.version(),
        payload: pretty(&wire.payload),
        result: wire.result.as_ref().map(pretty),
        explain,
        attempts,
        heartbeat,
        cancel,
        rerun,
        task: wire,
    };
    render(&page)
}

fn facts(
    t: &taskpilot_api::TaskResponse,
    version: u64,
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Queue", t.queue.clone()),
        ("Name", t.name.clone()),
        ("Status", t.status.as_str().to_owned()),
        ("Retry state", t.retry_state.as_str().to_owned()),
        ("Priority", t.priority.to_string()),
        ("Attempts used", format!("{} of {}", t.attempt_count, t.max_attempts)),
        ("Lease expiries", format!("{} of {}", t.crash_count, t.max_crashes)),
        ("Created", format!("{} ({})", when(t.created_at), ago(Some(t.created_at), now))),
        ("Updated", when(t.updated_at)),
        ("Version", version.to_string()),
    ];
    let optional = [
        ("Next run", t.next_run_at.map(when)),
        ("Worker", t.worker_id.clone()),
        ("Started", t.processing_started_at.map(when)),
        ("Lease expires", t.lease_expires_at.map(when)),
        ("Finished", t.completed_at.map(when)),
        ("Unique key", t.unique_key.clone()),
    ];
    facts.extend(optional.into_iter().filter_map(|(label, value)| value.map(|v| (label, v))));
    facts
}

/// The version of a confirmation page's address (`?version=7`).
#[derive(Debug, Default, Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

/// Which single-task action a confirmation is for.
#[derive(Debug, Clone, Copy)]
enum TaskAction {
    Cancel,
    Rerun,
}

impl TaskAction {
    fn path(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Rerun => "rerun",
        }
    }
}

async fn confirm_task_action(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
    action: TaskAction,
) -> Result<HttpResponse, UiError> {
    let id = dto::task_id(&path)?;
    let operation = match action {
        TaskAction::Cancel => Operation::CancelTask,
        TaskAction::Rerun => Operation::RerunTask,
    };
    viewer.caller.may(operation).map_err(AppError::from)?;
    let caller = viewer.caller.clone();
    let task: Task = run(&service, move |s| s.acting_as(&caller).get(id)).await?;
    let asked: VersionQuery = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let version = asked.version.unwrap_or_else(|| task.version().to_string());
    let (title, message, button, danger) = match action {
        TaskAction::Cancel => (
            "Cancel this task?",
            format!(
                "Task {} ({} in queue {}) is {}. Cancelling stops it for good; a running \
                 attempt's worker learns so at its next heartbeat or report. It can be rerun \
                 later.",
                task.id(),
                task.name(),
                task.queue(),
                task.status().as_str()
            ),
            "Yes, cancel it",
            true,
        ),
        TaskAction::Rerun => (
            "Rerun this task?",
            format!(
                "Task {} ({} in queue {}) is {}. Rerunning puts it back to PENDING with a fresh \
                 attempt budget and crash budget.",
                task.id(),
                task.name(),
                task.queue(),
                task.status().as_str()
            ),
            "Yes, rerun it",
            false,
        ),
    };
    render(&ConfirmPage {
        shell: viewer.shell_on("tasks"),
        title: title.to_owned(),
        message,
        action: format!("/ui/tasks/{id}/{}", action.path()),
        fields: vec![("version".to_owned(), version)],
        button: button.to_owned(),
        danger,
        back: format!("/ui/tasks/{id}"),
    })
}

/// `GET /ui/tasks/{id}/cancel`: asks before cancelling the version shown.
pub async fn confirm_cancel(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    confirm_task_action(req, viewer, service, path, TaskAction::Cancel).await
}

/// `GET /ui/tasks/{id}/rerun`: asks before rerunning the version shown.
pub async fn confirm_rerun(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    confirm_task_action(req, viewer, service, path, TaskAction::Rerun).await
}

/// `POST /ui/tasks/{id}/cancel`: cancels the task if it is still at the version confirmed
/// (412, with a link to the task as it is now, if not).
pub async fn cancel(
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    act_on_task(viewer, service, path, body, TaskAction::Cancel).await
}

/// `POST /ui/tasks/{id}/rerun`: reruns the task if it is still at the version confirmed.
pub async fn rerun(
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    act_on_task(viewer, service, path, body, TaskAction::Rerun).await
}

/// Applies a confirmed cancel or rerun on the version the form carries, then shows the task.
async fn act_on_task(
    viewer: Viewer,
    service: web::Data<TaskService>,
    path: web::Path<String>,
    body: web::Bytes,
    action: TaskAction,
) -> Result<HttpResponse, UiError> {
    let id = dto::task_id(&path)?;
    let expected = version_match(&body)?;
    let caller = viewer.caller.clone();
    run(&service, move |s| {
        let acting = s.acting_as(&caller);
        match action {
            TaskAction::Cancel => acting.cancel_matching(id, &expected),
            TaskAction::Rerun => acting.rerun_matching(id, &expected),
        }
    })
    .await
    .map_err(|e| e.reload(format!("/ui/tasks/{id}")))?;
    let done = match action {
        TaskAction::Cancel => "cancelled",
        TaskAction::Rerun => "rerun",
    };
    tracing::info!(task.id = %id, "task {id} {done} from the dashboard by {}", viewer.caller.name());
    Ok(see_other(&format!("/ui/tasks/{id}?notice={done}")))
}

// ---- Dead letters and bulk actions ----

/// Most groups the dead-letter page shows.
const DEAD_LETTER_GROUPS: u32 = 100;

/// The row of a group, with the links that list it and act on it.
fn group_row(g: &DeadLetterGroup) -> GroupRow {
    // The group's error is the first line of the tasks' errors: the tasks whose error
    // contains it are the group's (and perhaps a few more, which the dry run counts).
    let error: String = g.error.chars().take(MAX_ERROR_FILTER_CHARS).collect();
    let filter = |action: Option<&str>| {
        let mut pairs = vec![("queue", g.queue.as_str()), ("name", g.name.as_str())];
        pairs.push(("status", "FAILED"));
        if !error.is_empty() {
            pairs.push(("lastError", error.as_str()));
        }
        if let Some(action) = action {
            pairs.insert(0, ("action", action));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    };
    GroupRow {
        queue: g.queue.as_str().to_owned(),
        name: g.name.as_str().to_owned(),
        error: g.error.clone(),
        error_short: if g.error.is_empty() {
            "(no error)".to_owned()
        } else {
            shorten(&g.error, 120)
        },
        count: g.count,
        first_failed: when(g.first_failed_at),
        last_failed: when(g.last_failed_at),
        list: format!("/ui/tasks?{}", filter(None)),
        rerun: format!("/ui/dead-letters/bulk?{}", filter(Some("rerun"))),
        delete: format!("/ui/dead-letters/bulk?{}", filter(Some("delete"))),
    }
}

/// `GET /ui/dead-letters`: failed tasks grouped by queue, name and error, with bulk rerun,
/// cancel and delete (after a dry-run count) for callers who may act in bulk.
pub async fn dead_letters(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let caller = viewer.caller.clone();
    let groups =
        run(&service, move |s| s.acting_as(&caller).dead_letters(DEAD_LETTER_GROUPS)).await?;
    let bulk = viewer.caller.may(Operation::BulkAction).is_ok();
    let fragment = DeadLettersLive {
        groups: groups.iter().map(group_row).collect(),
        bulk,
        updated: now_text(service.now()),
    };
    page_or_fragment(&req, &fragment, |live| {
        render(&DeadLettersPage {
            shell: viewer.shell_on("dead-letters"),
            live,
            bulk,
            bulk_limit: DEFAULT_BULK,
        })
    })
}

/// What a bulk action over a filter is asked with (the dead-letter page's form).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkForm {
    action: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    last_error: String,
}

impl BulkForm {
    fn action(&self) -> Result<BulkAction, UiError> {
        match self.action.as_str() {
            "rerun" => Ok(BulkAction::Rerun),
            "cancel" => Ok(BulkAction::Cancel),
            "delete" => Ok(BulkAction::Delete),
            other => Err(ApiError::Validation(format!(
                "action must be rerun, cancel or delete, got {other:?}"
            ))
            .into()),
        }
    }

    /// The bulk request over this filter: its filter is validated as the listing's is, and a
    /// filter with no condition is refused, as `POST /api/tasks/bulk` refuses one without
    /// `all`.
    fn request(&self, dry_run: bool) -> Result<BulkRequest, UiError> {
        let action = self.action()?;
        let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
        let query = ListTasksQuery {
            queue: some(&self.queue),
            name: some(&self.name),
            status: some(&self.status),
            last_error: some(&self.last_error),
            ..ListTasksQuery::default()
        };
        let dto::ListRequest { filter, .. } = dto::list_request(query)?;
        if filter == taskpilot_app::TaskFilter::default() {
            return Err(ApiError::Validation(
                "give at least one condition (queue, name, status or error): a bulk action \
                 from the dashboard never takes every task"
                    .to_owned(),
            )
            .into());
        }
        Ok(BulkRequest {
            action,
            selection: BulkSelection::Filter(filter),
            dry_run,
            limit: DEFAULT_BULK,
            expected_versions: Default::default(),
        })
    }

    fn fields(&self) -> Vec<(String, String)> {
        [
            ("action", &self.action),
            ("queue", &self.queue),
            ("name", &self.name),
            ("status", &self.status),
            ("lastError", &self.last_error),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (label, value) in [
            ("queue", &self.queue),
            ("name", &self.name),
            ("status", &self.status),
            ("error containing", &self.last_error),
        ] {
            if !value.trim().is_empty() {
                parts.push(format!("{label} {:?}", value.trim()));
            }
        }
        parts.join(", ")
    }
}

/// `GET /ui/dead-letters/bulk?action=…&queue=…`: counts what the action would take (a dry
/// run, which changes nothing) and asks before doing it.
pub async fn confirm_bulk(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let form: BulkForm = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::Malformed(format!("the bulk action cannot be read: {e}")))?;
    let request = form.request(true)?;
    let caller = viewer.caller.clone();
    let report = run(&service, move |s| s.acting_as(&caller).bulk(&request)).await?;
    let more = if report.more { " (the first of more: run it again for the rest)" } else { "" };
    let message = format!(
        "{} tasks with {} match now{more}. Each goes through the rule of the single {}: a \
         task that changed meanwhile is skipped.",
        report.matched,
        form.describe(),
        form.action
    );
    render(&ConfirmPage {
        shell: viewer.shell_on("dead-letters"),
        title: format!("{} {} tasks?", capitalized(&form.action), report.matched),
        message,
        action: "/ui/dead-letters/bulk".to_owned(),
        fields: form.fields(),
        button: format!("Yes, {} them", form.action),
        danger: form.action != "rerun",
        back: "/ui/dead-letters".to_owned(),
    })
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `POST /ui/dead-letters/bulk`: does the confirmed bulk action and says what it did.
pub async fn bulk(
    viewer: Viewer,
    service: web::Data<TaskService>,
    hub: web::Data<WakeHub>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    let form: BulkForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::Malformed(format!("the bulk action cannot be read: {e}")))?;
    let request = form.request(false)?;
    let rerun = request.action == BulkAction::Rerun;
    let caller = viewer.caller.clone();
    let report = run(&service, move |s| s.acting_as(&caller).bulk(&request)).await?;
    if rerun && report.done() > 0 {
        hub.wake();
    }
    let skipped = report.results.len() as u64 - report.done();
    tracing::info!(
        bulk.action = %form.action,
        bulk.done = report.done(),
        "bulk {} from the dashboard by {}: {} done, {skipped} skipped",
        form.action,
        viewer.caller.name(),
        report.done()
    );
    let notice = format!(
        "{}: {} of {} matching tasks done, {skipped} skipped (they changed meanwhile or the \
         rule refused them).",
        capitalized(&form.action),
        report.done(),
        report.matched
    );
    let shell = Shell { notice: Some(notice), ..viewer.shell_on("dead-letters") };
    let page = ConfirmPage {
        shell,
        title: "Bulk action done".to_owned(),
        message: format!("The {} over {} is done.", form.action, form.describe()),
        action: "/ui/dead-letters/bulk".to_owned(),
        fields: Vec::new(),
        button: String::new(),
        danger: false,
        back: "/ui/dead-letters".to_owned(),
    };
    render(&page)
}

// ---- Workers ----

/// The row of a worker.
fn worker_row(w: &WorkerView, now: DateTime<Utc>) -> WorkerRow {
    WorkerRow {
        id: w.worker_id.as_str().to_owned(),
        last_claim: ago(w.last_claim_at, now),
        last_heartbeat: ago(w.last_heartbeat_at, now),
        running: w
            .running
            .iter()
            .map(|t| (t.id().to_string(), format!("{} ({})", t.name(), t.queue())))
            .collect(),
    }
}

/// `GET /ui/workers`: every worker seen recently, its running tasks, last claim and last
/// heartbeat.
pub async fn workers(
    req: HttpRequest,
    viewer: Viewer,
    service: web::Data<TaskService>,
) -> Result<HttpResponse, UiError> {
    let caller = viewer.caller.clone();
    let workers = run(&service, move |s| s.acting_as(&caller).workers()).await?;
    let now = service.now();
    let fragment = WorkersLive {
        workers: workers.iter().map(|w| worker_row(w, now)).collect(),
        updated: now_text(now),
    };
    page_or_fragment(&req, &fragment, |live| {
        render(&WorkersPage { shell: viewer.shell_on("workers"), live })
    })
}

// ---- Tokens ----

fn token_row(t: &ApiToken) -> TokenRow {
    TokenRow {
        id: t.id.to_string(),
        name: t.name.as_str().to_owned(),
        kind: t.kind.as_str().to_owned(),
        queues: t.queues.to_list().map_or_else(
            || "every queue".to_owned(),
            |l| l.iter().map(QueueName::as_str).collect::<Vec<_>>().join(", "),
        ),
        created: when(t.created_at),
        expires: when_opt(t.expires_at),
        last_used: when_opt(t.last_used_at),
        revoked: t.revoked_at.map(when),
    }
}

async fn tokens_page(
    gate: &web::Data<Gate>,
    viewer: &Viewer,
    shell: Shell,
    status: StatusCode,
    created: Option<(TokenRow, String)>,
    error: Option<String>,
) -> Result<HttpResponse, UiError> {
    let tokens = run_tokens(gate, viewer, AccessService::tokens).await?;
    let page = TokensPage {
        shell,
        tokens: tokens.iter().map(token_row).collect(),
        kinds: TokenKind::ALL.iter().map(|k| k.as_str()).collect(),
        created,
        error,
    };
    render_with(status, &page)
}

/// `GET /ui/tokens`: every token (admins only), with the creation form.
pub async fn tokens(
    req: HttpRequest,
    viewer: Viewer,
    gate: web::Data<Gate>,
) -> Result<HttpResponse, UiError> {
    let shell = Shell { notice: notice(&req), ..viewer.shell_on("tokens") };
    tokens_page(&gate, &viewer, shell, StatusCode::OK, None, None).await
}

/// The token creation form, as posted.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenForm {
    name: String,
    kind: String,
    #[serde(default)]
    queues: String,
    #[serde(default)]
    expires_in_days: String,
}

/// The longest lifetime the form offers a token, in days: ten years.
const MAX_TOKEN_DAYS: i64 = 3_650;

fn new_token(form: &TokenForm, now: DateTime<Utc>) -> Result<NewToken, UiError> {
    let queues: Vec<&str> =
        form.queues.split(',').map(str::trim).filter(|q| !q.is_empty()).collect();
    let queues = if queues.is_empty() {
        None
    } else {
        Some(queues.into_iter().map(QueueName::parse).collect::<Result<Vec<_>, _>>()?)
    };
    let expires_at = match form.expires_in_days.trim() {
        "" => None,
        days => {
            let days =
                days.parse::<i64>().ok().filter(|d| (1..=MAX_TOKEN_DAYS).contains(d)).ok_or_else(
                    || {
                        ApiError::Validation(format!(
                            "expires in days must be a whole number from 1 to {MAX_TOKEN_DAYS}, \
                         got {days:?}"
                        ))
                    },
                )?;
            Some(now + chrono::TimeDelta::days(days))
        }
    };
    Ok(NewToken {
        name: TokenName::parse(form.name.trim())?,
        kind: TokenKind::parse(form.kind.trim())?,
        queues: QueueScope::from_list(queues)?,
        expires_at,
    })
}

/// `POST /ui/tokens`: creates a token and shows its secret, this once.
pub async fn create_token(
    viewer: Viewer,
    gate: web::Data<Gate>,
    service: web::Data<TaskService>,
    body: web::Bytes,
) -> Result<HttpResponse, UiError> {
    viewer.caller.may(Operation::ManageTokens).map_err(AppError::from)?;
    let shell = viewer.shell_on("tokens");
    let request = serde_urlencoded::from_bytes::<TokenForm>(&body)
        .map_err(|e| UiError::from(ApiError::Malformed(format!("the form cannot be read: {e}"))))
        .and_then(|form| new_token(&form, service.now()));
    let request = match request {
        Ok(request) => request,
        Err(UiError::Api { error, .. }) if error.status_code() == StatusCode::BAD_REQUEST => {
            let detail = error.problem_body().detail;
            return tokens_page(&gate, &viewer, shell, StatusCode::BAD_REQUEST, None, Some(detail))
                .await;
        }
        Err(e) => return Err(e),
    };
    let issued = run_tokens(&gate, &viewer, move |a| a.create_token(request)).await?;
    tracing::info!(
        token.id = %issued.token.id,
        token.kind = %issued.token.kind,
        "token {} created from the dashboard by {}",
        issued.token.name,
        viewer.caller.name()
    );
    let created = Some((token_row(&issued.token), issued.secret));
    tokens_page(&gate, &viewer, shell, StatusCode::CREATED, created, None).await
}

fn token_id(raw: &str) -> Result<TokenId, UiError> {
    uuid::Uuid::parse_str(raw)
        .map(TokenId::from_uuid)
        .map_err(|e| ApiError::Malformed(format!("token id {raw:?} is not a UUID: {e}")).into())
}

/// `GET /ui/tokens/{id}/revoke`: asks before revoking.
pub async fn confirm_revoke(
    viewer: Viewer,
    gate: web::Data<Gate>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = token_id(&path)?;
    let tokens = run_tokens(&gate, &viewer, AccessService::tokens).await?;
    let token = tokens.iter().find(|t| t.id == id).ok_or(AppError::TokenNotFound(id))?;
    let yours = viewer.caller.token_id() == Some(id);
    render(&ConfirmPage {
        shell: viewer.shell_on("tokens"),
        title: format!("Revoke token “{}”?", token.name),
        message: format!(
            "The {} token {} stops working on every server within seconds, and so do the \
             dashboard sessions signed in with it{}. This cannot be undone.",
            token.kind,
            token.name,
            if yours { ", yours included" } else { "" }
        ),
        action: format!("/ui/tokens/{id}/revoke"),
        fields: Vec::new(),
        button: "Yes, revoke it".to_owned(),
        danger: true,
        back: "/ui/tokens".to_owned(),
    })
}

/// `POST /ui/tokens/{id}/revoke`: revokes the token.
pub async fn revoke_token(
    viewer: Viewer,
    gate: web::Data<Gate>,
    path: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = token_id(&path)?;
    let token = run_tokens(&gate, &viewer, move |a| a.revoke(id)).await?;
    tracing::info!(token.id = %token.id, "token {} revoked from the dashboard by {}", token.name, viewer.caller.name());
    Ok(see_other("/ui/tokens?notice=revoked"))
}

/// The dashboard's default service: no page has this address.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, UiError> {
    Err(ApiError::RouteNotFound(format!("{} {}", req.method(), req.path())).into())
}

#[cfg(test)]
mod tests {
    use super::super::views::age;
    use super::*;

    #[test]
    fn a_shared_listing_address_keeps_only_the_filters_it_sets() {
        let query = ListTasksQuery {
            queue: Some("emails".into()),
            status: Some("FAILED,CANCELLED".into()),
            name: Some(String::new()),
            payload: Some("{\"customerId\":42}".into()),
            ..ListTasksQuery::default()
        };

        let url = tasks_url(&query);

        assert_eq!(
            url,
            "/ui/tasks?queue=emails&status=FAILED%2CCANCELLED&payload=%7B%22customerId%22%3A42%7D"
        );
        let back: ListTasksQuery =
            serde_urlencoded::from_str(url.trim_start_matches("/ui/tasks?")).unwrap_or_default();
        assert_eq!(back, ListTasksQuery { name: None, ..query });
        assert_eq!(tasks_url(&ListTasksQuery::default()), "/ui/tasks");
    }

    #[test]
    fn ages_read_in_the_largest_units_that_matter() {
        assert_eq!(age(0.4), "0s");
        assert_eq!(age(45.0), "45s");
        assert_eq!(age(192.0), "3m 12s");
        assert_eq!(age(2.0 * 3600.0 + 5.0 * 60.0), "2h 05m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(age(-5.0), "0s");
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
