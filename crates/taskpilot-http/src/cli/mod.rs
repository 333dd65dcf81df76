//! The operator commands: `taskpilot tasks …`, `queues …`, `stats`, and `tokens …` when a
//! server is named. They are clients of a running server's REST API, through
//! `taskpilot-client`: each parses its arguments into the API's request, makes the call
//! and renders the answer, as aligned columns for people or, with `--json`, as the server's
//! JSON for scripts. The server decides every rule; a refusal is printed with its problem
//! code and ends the process with [`EXIT_REFUSED`].
//!
//! Must never import: the storage adapter, the server's wiring ([`crate::server`]), the
//! handlers. These commands never resolve, probe or start a database.

mod queues;
mod stats;
mod table;
mod tasks;
mod tokens;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use taskpilot_client::{Client, ClientError, ProblemCode, RetryPolicy};

use crate::config::{Cli, Command, TokensCommand};

pub use queues::QueuesCommand;
pub use tasks::{BulkArgs, CreateArgs, FilterArgs, ListArgs, TasksCommand};

/// The server the client commands talk to when neither `--server` nor `TASKPILOT_SERVER`
/// names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Exit code: the command did what it was asked.
pub const EXIT_DONE: u8 = 0;
/// Exit code: the server refused the call (its problem code is printed), or answered
/// something this client cannot read.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad arguments; the same as clap's own for arguments it cannot parse.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached (connection refused, DNS, timeout), or the
/// connection broke before its answer.
pub const EXIT_UNREACHABLE: u8 = 3;

/// The exit codes, as `taskpilot --help` ends.
pub const EXIT_CODES_HELP: &str = "\
Exit codes of the client commands (tasks, queues, stats, tokens with --server):
  0  done
  1  refused by the server: `error: <CODE>: <detail>` on stderr, CODE being the problem's
     code (TASK_NOT_FOUND, FORBIDDEN, PRECONDITION_FAILED, ...)
  2  bad arguments
  3  server unreachable (connection refused, DNS, timeout)";

/// The flags of the client commands; each also reads an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RemoteArgs {
    /// The TaskPilot server the client commands call [default: http://127.0.0.1:8080].
    /// `tokens` goes through this server's API when a server is given here or in
    /// TASKPILOT_SERVER, and straight to the database when none is.
    #[arg(long, env = "TASKPILOT_SERVER", global = true, help_heading = "Client options")]
    pub server: Option<String>,

    /// The API token the client commands send (`tp_<kind>_…`); none is needed by a server
    /// running open.
    #[arg(
        long,
        env = "TASKPILOT_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Client options"
    )]
    pub token: Option<String>,

    /// Print the server's JSON answer, one document, instead of a table.
    #[arg(
        long,
        env = "TASKPILOT_JSON",
        global = true,
        value_parser = clap::builder::FalseyValueParser::new(),
        help_heading = "Client options"
    )]
    pub json: bool,
}

impl RemoteArgs {
    /// The server named, if any: an empty `TASKPILOT_SERVER` names none.
    fn server(&self) -> Option<&str> {
        self.server.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The token to send: none when it is unset or blank (an empty `TASKPILOT_TOKEN`).
    fn token(&self) -> Option<&str> {
        self.token.as_deref().map(str::trim).filter(|t| !t.is_empty())
    }
}

/// Runs `cli`'s command when it is a client command, and returns its exit code; `None` for
/// the server's own commands (`serve`, `migrate`, and `tokens` with no server named).
pub fn run_client_command(cli: &Cli) -> Option<ExitCode> {
    let command = match &cli.command {
        Some(Command::Tasks(command)) => Remote::Tasks(command),
        Some(Command::Queues(command)) => Remote::Queues(command),
        Some(Command::Stats) => Remote::Stats,
        Some(Command::Tokens(command)) if cli.remote.server().is_some() => Remote::Tokens(command),
        _ => return None,
    };
    let code = match execute(command, &cli.remote) {
        Ok(printed) => {
            printed.emit();
            EXIT_DONE
        }
        Err(failure) => {
            failure.report(&cli.remote);
            failure.exit_code()
        }
    };
    Some(ExitCode::from(code))
}

/// A client command, borrowed from the parsed command line.
#[derive(Debug, Clone, Copy)]
enum Remote<'a> {
    Tasks(&'a TasksCommand),
    Queues(&'a QueuesCommand),
    Stats,
    Tokens(&'a TokensCommand),
}

/// Runs `command` against the server on a current-thread runtime: one call at a time needs
/// no more.
fn execute(command: Remote<'_>, args: &RemoteArgs) -> Result<Printed, Failure> {
    let context = Context::new(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Local(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        match command {
            Remote::Tasks(command) => tasks::run(command, &context).await,
            Remote::Queues(command) => queues::run(command, &context).await,
            Remote::Stats => stats::run(&context).await,
            Remote::Tokens(command) => tokens::run(command, &context).await,
        }
    })
}

/// What every command needs: the client and how to print.
struct Context {
    client: Client,
    json: bool,
}

impl Context {
    fn new(args: &RemoteArgs) -> Result<Self, Failure> {
        let server = args.server().unwrap_or(DEFAULT_SERVER);
        // An operator at a prompt would rather hear about a server that is down than wait
        // through the client's default patience (5 tries within 30 s).
        let retry = RetryPolicy::default().max_attempts(3).max_elapsed(Duration::from_secs(5));
        let mut builder = Client::builder(server).retry(retry);
        if let Some(token) = args.token() {
            builder = builder.token(token);
        }
        Ok(Self { client: builder.build().map_err(Failure::Call)?, json: args.json })
    }

    /// `value` as one JSON document when `--json` was given, else what `table` renders.
    fn print<T: Serialize>(
        &self,
        value: &T,
        table: impl FnOnce() -> String,
    ) -> Result<Printed, Failure> {
        if !self.json {
            return Ok(Printed::new(table()));
        }
        let mut text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::Local(format!("cannot write the answer as JSON: {e}")))?;
        text.push('\n');
        Ok(Printed::new(text))
    }
}

/// What a command prints: its answer on stdout, and lines for people (the next page's
/// cursor, a version) on stderr, where they never spoil a script's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    stdout: String,
    hints: Vec<String>,
}

impl Printed {
    fn new(stdout: String) -> Self {
        Self { stdout, hints: Vec::new() }
    }

    #[must_use]
    fn hint(mut self, line: String) -> Self {
        self.hints.push(line);
        self
    }

    fn emit(&self) {
        // A reader that went away (`| head`) is no failure of the command: what it did is
        // done.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.stdout.as_bytes()).and_then(|()| out.flush());
        let mut err = std::io::stderr().lock();
        for hint in &self.hints {
            let _ = writeln!(err, "{hint}");
        }
    }
}

/// Why a client command did not do what it was asked.
#[derive(Debug)]
enum Failure {
    /// An argument that clap could read but the API cannot take (exit 2).
    Usage(String),
    /// The call failed: refused, unreachable, or an answer that cannot be read.
    Call(ClientError),
    /// This process could not do its part (exit 1).
    Local(String),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Self::Call(error)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Local(_) => EXIT_REFUSED,
            Self::Call(error) => match error {
                ClientError::Connect(_) | ClientError::Transport(_) => EXIT_UNREACHABLE,
                ClientError::InvalidUrl(_) | ClientError::Build(_) => EXIT_USAGE,
                _ => EXIT_REFUSED,
            },
        }
    }

    /// The one line on stderr (two with a hint) that says what went wrong.
    fn message(&self, args: &RemoteArgs) -> Vec<String> {
        let server = args.server().unwrap_or(DEFAULT_SERVER);
        let line = match self {
            Self::Usage(text) => format!("error: {text}"),
            Self::Local(text) => format!("error: {text}"),
            Self::Call(error) => {
                match error {
                    ClientError::Api { code, detail, .. } => format!("error: {code}: {detail}"),
                    ClientError::UnexpectedStatus { status, problem: Some(problem), .. } => {
                        format!("error: {}: {} (HTTP {status})", problem.code, problem.detail)
                    }
                    ClientError::UnexpectedStatus { status, .. } => {
                        format!("error: HTTP {status}: the answer from {server} is no TaskPilot problem")
                    }
                    ClientError::Connect(_) => {
                        format!("error: cannot reach the server at {server}: {}", causes(error))
                    }
                    ClientError::Transport(_) => {
                        format!("error: no answer from the server at {server}: {}", causes(error))
                    }
                    ClientError::InvalidUrl(_) => format!("error: --server: {error}"),
                    other => format!("error: {}", causes(other)),
                }
            }
        };
        let mut lines = vec![table::cell(&line)];
        if let Self::Call(error) = self {
            if error.code() == Some(ProblemCode::Unauthenticated) && args.token().is_none() {
                lines.push(
                    "hint: the server wants an API token: pass --token or set TASKPILOT_TOKEN"
                        .to_owned(),
                );
            }
        }
        lines
    }

    fn report(&self, args: &RemoteArgs) {
        let mut err = std::io::stderr().lock();
        for line in self.message(args) {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// What finally went wrong under `error`: its innermost source ("Connection refused",
/// "failed to lookup address information: ...", "operation timed out"), which reqwest's
/// own message leaves out; `error` itself when it has no source.
fn causes(error: &ClientError) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// Reads a value as the API spells it (`FAILED`, `rerun`, `viewer`, ...), for clap: the
/// wire types own the list of values, so that a new one needs no change here.
fn wire<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|e| e.to_string().replace("variant", "value"))
}

/// How the API spells `value` (`FAILED`, `viewer`, ...).
fn spelled<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use taskpilot_client::api::{BulkActionKind, TaskStatus};

    use super::*;

    fn args(server: Option<&str>, token: Option<&str>) -> RemoteArgs {
        RemoteArgs {
            server: server.map(str::to_owned),
            token: token.map(str::to_owned),
            json: false,
        }
    }

    #[test]
    fn values_are_read_as_the_api_spells_them() {
        assert_eq!(wire::<TaskStatus>("FAILED"), Ok(TaskStatus::Failed));
        assert_eq!(wire::<BulkActionKind>("rerun"), Ok(BulkActionKind::Rerun));
        let unknown = wire::<TaskStatus>("DONE").unwrap_err();
        assert!(unknown.contains("`PENDING`") && unknown.contains("unknown value"), "{unknown}");
        assert_eq!(spelled(&BulkActionKind::Delete), "delete");
    }

    #[test]
    fn a_blank_server_or_token_names_none_so_tokens_stay_on_the_database() {
        let blank = args(Some(" "), Some(""));

        assert_eq!((blank.server(), blank.token()), (None, None));
        assert_eq!(args(Some("http://h:1"), None).server(), Some("http://h:1"));
    }

    #[test]
    fn a_bad_server_url_is_a_usage_error() {
        let failure = Context::new(&args(Some("not a url"), None)).err().unwrap();

        assert_eq!(failure.exit_code(), EXIT_USAGE);
        assert!(failure.message(&args(Some("not a url"), None))[0].starts_with("error: --server"));
    }
}
