//! What the dashboard's templates (`templates/*.html`) are rendered from: one struct per page
//! or live fragment, its rows as text ready to show, and the formatting of times and ages.
//!
//! Every value reaches the HTML through askama, which escapes it: a payload holding
//! `<script>` shows as text. The rows are built from the API's own response bodies
//! ([`crate::dto`]), so the dashboard and the API never disagree on what a field says.

use askama::Template;
use chrono::{DateTime, Utc};
use taskpilot_api::{ExplainResponse, QueueResponse, TaskEventResponse, TaskResponse};

use super::assets;

/// An instant as people read it: `2026-12-01 17:08:03 UTC`.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// [`when`], or a dash for none.
pub fn when_opt(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), when)
}

/// A length of time as people read it: `45s`, `3m 12s`, `2h 05m`, `3d 4h`.
pub fn age(seconds: f64) -> String {
    // Whole seconds are enough here; negative ages (clock skew) read as none.
    let total = if seconds.is_finite() && seconds > 0.0 { seconds as u64 } else { 0 };
    let (d, h, m, s) = (total / 86_400, total / 3_600 % 24, total / 60 % 60, total % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// How long before `now` the instant `at` was, or a dash.
pub fn ago(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    at.map_or_else(
        || "—".to_owned(),
        |at| format!("{} ago", age((now - at).num_milliseconds() as f64 / 1000.0)),
    )
}

/// The caller as the page header shows it.
#[derive(Debug, Clone)]
pub struct Who {
    /// The token's name (`open-access` without a token).
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// Whether a session was signed in (so there is one to sign out of).
    pub signed_in: bool,
}

/// What every page around its content shows: the navigation, who is signed in, a notice.
#[derive(Debug, Clone, Default)]
pub struct Shell {
    /// The navigation entry of this page: `overview`, `queues`, `tasks`, …
    pub current: &'static str,
    /// Who is signed in; `None` on the sign-in page.
    pub who: Option<Who>,
    /// Whether the tokens page is in the navigation (admins).
    pub tokens: bool,
    /// A one-line notice after an action ("Task cancelled.").
    pub notice: Option<String>,
}

impl Shell {
    /// The address of an embedded file (see [`assets::url`]).
    pub fn asset(&self, name: &str) -> String {
        assets::url(name)
    }
}

/// `templates/login.html`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// The page frame.
    pub shell: Shell,
    /// Why the form is shown again, if it is.
    pub message: Option<String>,
    /// Where to go once signed in (a dashboard path).
    pub next: String,
}

/// `templates/error.html`: any refusal or failure, as a page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// The page frame.
    pub shell: Shell,
    /// The HTTP status.
    pub status: u16,
    /// The short title.
    pub title: String,
    /// What happened, in a sentence.
    pub detail: String,
    /// The stable code of the API's problem, when there is one.
    pub code: Option<String>,
    /// A page to load again (after a 412: the object as it is now).
    pub reload: Option<String>,
}

/// A count of tasks by status, ready to show.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Runnable now.
    pub runnable: u64,
    /// Waiting for a later run.
    pub scheduled: u64,
    /// Running.
    pub running: u64,
    /// Succeeded (kept).
    pub succeeded: u64,
    /// Failed (kept).
    pub failed: u64,
    /// Cancelled (kept).
    pub cancelled: u64,
}

impl Counts {
    /// The counts of an API body.
    pub fn of(c: &taskpilot_api::StatusCountsResponse) -> Self {
        Self {
            runnable: c.runnable,
            scheduled: c.scheduled,
            running: c.running,
            succeeded: c.succeeded,
            failed: c.failed,
            cancelled: c.cancelled,
        }
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Self) {
        self.runnable += other.runnable;
        self.scheduled += other.scheduled;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }
}

/// One queue as the overview and the queues page show it.
#[derive(Debug, Clone)]
pub struct QueueRow {
    /// Its name.
    pub name: String,
    /// Its tasks by status.
    pub counts: Counts,
    /// How long its oldest runnable task has waited, or a dash.
    pub oldest_runnable: String,
    /// Whether it is paused.
    pub paused: bool,
    /// By whom and since when, when paused.
    pub paused_note: String,
    /// Created in the last minute.
    pub created_last_minute: u64,
    /// Finished in the last minute.
    pub completed_last_minute: u64,
    /// This server's last claim from it.
    pub last_claim: String,
    /// Its version, for the pause and resume buttons' If-Match.
    pub version: u64,
}

impl QueueRow {
    /// The row of a queue as the API answers it.
    pub fn of(q: &QueueResponse, now: DateTime<Utc>) -> Self {
        Self {
            name: q.name.clone(),
            counts: Counts::of(&q.counts),
            oldest_runnable: q.oldest_runnable_age_seconds.map_or_else(|| "—".to_owned(), age),
            paused: q.paused,
            paused_note: match (&q.paused_by, q.paused_at) {
                (Some(by), Some(at)) => format!("by {by}, {}", ago(Some(at), now)),
                _ => String::new(),
            },
            created_last_minute: q.created_last_minute,
            completed_last_minute: q.completed_last_minute,
            last_claim: ago(q.last_claim_at, now),
            version: q.version,
        }
    }
}

/// One kind of refused stale call.
#[derive(Debug, Clone)]
pub struct RejectionRow {
    /// The refusal's code.
    pub code: String,
    /// The call refused.
    pub call: String,
    /// How many times.
    pub count: u64,
}

/// `templates/overview.html`.
#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    /// The page frame.
    pub shell: Shell,
    /// The live fragment, rendered ([`OverviewLive`]).
    pub live: String,
}

/// `templates/overview_live.html`: what the overview refreshes.
#[derive(Template)]
#[template(path = "overview_live.html")]
pub struct OverviewLive {
    /// Every queue together.
    pub totals: Counts,
    /// Each queue.
    pub queues: Vec<QueueRow>,
    /// Refused stale calls by code and call.
    pub rejections: Vec<RejectionRow>,
    /// How many of them were late successes (a task that ran twice).
    pub stale_successes: u64,
    /// The throughput chart's data as JSON (`{"t":[…],"created":[…],"completed":[…]}`).
    pub chart: String,
    /// When this was read.
    pub updated: String,
}

/// `templates/queues.html`.
#[derive(Template)]
#[template(path = "queues.html")]
pub struct QueuesPage {
    /// The page frame.
    pub shell: Shell,
    /// The live fragment, rendered ([`QueuesLive`]).
    pub live: String,
}

/// `templates/queues_live.html`.
#[derive(Template)]
#[template(path = "queues_live.html")]
pub struct QueuesLive {
    /// Each queue.
    pub queues: Vec<QueueRow>,
    /// Whether the caller may pause and resume them.
    pub manage: bool,
    /// When this was read.
    pub updated: String,
}

/// One task of a listing.
#[derive(Debug, Clone)]
pub struct TaskRow {
    /// Its id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: &'static str,
    /// Its retry state.
    pub retry_state: &'static str,
    /// `attempt count / max attempts`.
    pub attempts: String,
    /// When it was created.
    pub created: String,
    /// When it finished, or a dash.
    pub completed: String,
    /// Its last error, cut short.
    pub last_error: String,
}

impl TaskRow {
    /// The row of a task as the API answers it.
    pub fn of(t: &TaskResponse) -> Self {
        Self {
            id: t.id.to_string(),
            queue: t.queue.clone(),
            name: t.name.clone(),
            status: t.status.as_str(),
            retry_state: t.retry_state.as_str(),
            attempts: format!("{} / {}", t.attempt_count, t.max_attempts),
            created: when(t.created_at),
            completed: when_opt(t.completed_at),
            last_error: t.last_error.as_deref().map(|e| shorten(e, 120)).unwrap_or_default(),
        }
    }
}

/// `text` cut to at most `chars` characters, with an ellipsis when cut.
pub fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The filter form of the tasks page, as given (so that it shows what was asked).
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    /// `queue`.
    pub queue: String,
    /// `status` (comma-separated).
    pub status: String,
    /// `retryState`.
    pub retry_state: String,
    /// `name`.
    pub name: String,
    /// `createdAfter`.
    pub created_after: String,
    /// `createdBefore`.
    pub created_before: String,
    /// `completedAfter`.
    pub completed_after: String,
    /// `completedBefore`.
    pub completed_before: String,
    /// `lastError`.
    pub last_error: String,
    /// `payload` (a JSON object).
    pub payload: String,
    /// `limit`.
    pub limit: String,
}

/// `templates/tasks.html`.
#[derive(Template)]
#[template(path = "tasks.html")]
pub struct TasksPage {
    /// The page frame.
    pub shell: Shell,
    /// The filters as asked.
    pub form: FilterForm,
    /// Why the filters were refused, if they were.
    pub error: Option<String>,
    /// The live fragment, rendered ([`TasksLive`]); empty when the filters were refused.
    pub live: String,
}

/// `templates/tasks_live.html`: one page of tasks.
#[derive(Template)]
#[template(path = "tasks_live.html")]
pub struct TasksLive {
    /// The tasks, newest first.
    pub tasks: Vec<TaskRow>,
    /// This listing's address (what refreshes it).
    pub this_page: String,
    /// The next page's address, when there is one.
    pub next_page: Option<String>,
    /// The first page's address, when this is a later one.
    pub first_page: Option<String>,
    /// Whether it refreshes itself (only the first page does: later pages hold still).
    pub live: bool,
    /// When this was read.
    pub updated: String,
}

/// One entry of a task's attempt timeline.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// When.
    pub at: String,
    /// What (`STARTED`, `LEASE_EXPIRED`, `REFUSED_CALL`, …).
    pub kind: String,
    /// `FROM → TO`.
    pub change: String,
    /// The worker involved.
    pub worker: String,
    /// Who acted: `CLIENT`, `WORKER` or `REAPER`, with the token's name.
    pub actor: String,
    /// A failure's error, or the refused call and its code.
    pub detail: String,
    /// Whether it records a refused call (shown apart).
    pub refused: bool,
}

impl EventRow {
    /// The row of an event as the API answers it.
    pub fn of(e: &TaskEventResponse) -> Self {
        let change = match e.from {
            Some(from) if from != e.to => format!("{} → {}", from.as_str(), e.to.as_str()),
            Some(_) => e.to.as_str().to_owned(),
            None => format!("→ {}", e.to.as_str()),
        };
        let actor = match &e.token_name {
            Some(token) => format!("{} ({token})", e.actor),
            None => e.actor.clone(),
        };
        let detail = match (&e.rejected_call, &e.rejected_code, &e.error) {
            (Some(call), Some(code), _) => format!("{call} refused: {code}"),
            (_, _, Some(error)) => error.clone(),
            _ => String::new(),
        };
        Self {
            at: when(e.at),
            kind: e.kind.clone(),
            change,
            worker: e.worker_id.clone().unwrap_or_default(),
            actor,
            detail,
            refused: e.rejected_code.is_some(),
        }
    }
}

/// One attempt of a task and what happened in it.
#[derive(Debug, Clone)]
pub struct AttemptBlock {
    /// `Created` for attempt 0, else `Attempt n`.
    pub title: String,
    /// Its events, oldest first.
    pub events: Vec<EventRow>,
}

/// `templates/task.html`.
#[derive(Template)]
#[template(path = "task.html")]
pub struct TaskPage {
    /// The page frame.
    pub shell: Shell,
    /// The task as the API answers it.
    pub task: TaskResponse,
    /// Its version, which its cancel and rerun confirm (the API's `ETag`).
    pub version: u64,
    /// Its fields as label and value, in reading order.
    pub facts: Vec<(&'static str, String)>,
    /// The payload, pretty-printed.
    pub payload: String,
    /// The result, pretty-printed, when there is one.
    pub result: Option<String>,
    /// Why it is not running.
    pub explain: ExplainResponse,
    /// The attempts, oldest first.
    pub attempts: Vec<AttemptBlock>,
    /// The current attempt's last heartbeat, when it runs.
    pub heartbeat: Option<String>,
    /// Whether to offer cancelling it (the caller may, and the domain would take it).
    pub cancel: bool,
    /// Whether to offer rerunning it.
    pub rerun: bool,
}

/// `templates/confirm.html`: the step before an action.
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    /// The page frame.
    pub shell: Shell,
    /// The question.
    pub title: String,
    /// What the action will do.
    pub message: String,
    /// Where the form posts.
    pub action: String,
    /// The hidden fields the action needs (the version it was judged on, a filter).
    pub fields: Vec<(String, String)>,
    /// The confirming button's label.
    pub button: String,
    /// Whether the action destroys something (a red button).
    pub danger: bool,
    /// Where "back" goes.
    pub back: String,
}

/// One token of the tokens page.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its queues, or `every queue`.
    pub queues: String,
    /// When it was created.
    pub created: String,
    /// When it expires, or a dash.
    pub expires: String,
    /// When it was last used, or a dash.
    pub last_used: String,
    /// When it was revoked, if it was.
    pub revoked: Option<String>,
}

/// `templates/tokens.html`.
#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    /// The page frame.
    pub shell: Shell,
    /// Every token, newest first.
    pub tokens: Vec<TokenRow>,
    /// The kinds a token may have, for the form.
    pub kinds: Vec<&'static str>,
    /// A token just created and its secret, shown this once.
    pub created: Option<(TokenRow, String)>,
    /// Why the creation form was refused, if it was.
    pub error: Option<String>,
}

/// One group of failed tasks: same queue, name and error.
#[derive(Debug, Clone)]
pub struct GroupRow {
    /// The queue.
    pub queue: String,
    /// The task name.
    pub name: String,
    /// The error, in full (the cell's title).
    pub error: String,
    /// The error, cut short for the cell.
    pub error_short: String,
    /// How many failed tasks share it.
    pub count: u64,
    /// When the first of them failed.
    pub first_failed: String,
    /// When the last of them failed.
    pub last_failed: String,
    /// The tasks page listing them.
    pub list: String,
    /// The dry run of rerunning them.
    pub rerun: String,
    /// The dry run of deleting them.
    pub delete: String,
}

/// `templates/dead_letters.html`.
#[derive(Template)]
#[template(path = "dead_letters.html")]
pub struct DeadLettersPage {
    /// The page frame.
    pub shell: Shell,
    /// The live fragment, rendered ([`DeadLettersLive`]).
    pub live: String,
    /// Whether the caller may act in bulk.
    pub bulk: bool,
    /// The most tasks one bulk run takes.
    pub bulk_limit: u32,
}

/// `templates/dead_letters_live.html`.
#[derive(Template)]
#[template(path = "dead_letters_live.html")]
pub struct DeadLettersLive {
    /// The groups, most tasks first.
    pub groups: Vec<GroupRow>,
    /// Whether the caller may act in bulk.
    pub bulk: bool,
    /// When this was read.
    pub updated: String,
}

/// One worker of the workers page.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    /// Its id.
    pub id: String,
    /// Its last claim, as an age.
    pub last_claim: String,
    /// Its last heartbeat, as an age.
    pub last_heartbeat: String,
    /// The tasks it runs: id and `name (queue)`.
    pub running: Vec<(String, String)>,
}

/// `templates/workers.html`.
#[derive(Template)]
#[template(path = "workers.html")]
pub struct WorkersPage {
    /// The page frame.
    pub shell: Shell,
    /// The live fragment, rendered ([`WorkersLive`]).
    pub live: String,
}

/// `templates/workers_live.html`.
#[derive(Template)]
#[template(path = "workers_live.html")]
pub struct WorkersLive {
    /// The workers seen recently.
    pub workers: Vec<WorkerRow>,
    /// When this was read.
    pub updated: String,
}
