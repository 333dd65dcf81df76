//! TaskPilot's REST adapter over the app's [`TaskService`](taskpilot_app::TaskService), the
//! wiring of the `taskpilot` server around it, and the binary's operator commands.
//!
//! The crate has four parts, and its module dependencies point one way (wiring → adapter →
//! settings; the operator commands and the settings share only the command line's argument
//! types):
//!
//! - **Settings** ([`config`]): the command line and environment, as plain values. No I/O.
//! - **The HTTP adapter** ([`routes`], [`handlers`], [`auth`], [`body`], [`dto`], [`error`],
//!   the creates' `Idempotency-Key` in [`idempotency`],
//!   [`request_log`], [`metrics`], the claims' [`WakeHub`] in [`wake`], the API's document
//!   and page in [`openapi`], the web dashboard at `/ui` in [`ui`]): thin handlers that map
//!   a request into validated domain and use-case values ([`dto`]), run one use case on the
//!   blocking pool, and map the outcome back into an api body ([`dto`]), a problem+json
//!   error ([`error`]) or, for the dashboard, an HTML page. It decides no rule (those live
//!   in `taskpilot-domain`), reaches storage only through the app's ports, and never names
//!   [`server`].
//! - **The server's wiring** ([`server`]): start-up (the database, its migrations, the
//!   clock, the service), the background loops that wake waiting claims, logging set-up and
//!   [`run`]. It is the only module that names the storage adapter; the `taskpilot` binary
//!   (`main.rs`) calls it and nothing else names the storage either.
//!
//! - **The operator commands** ([`cli`]): `taskpilot tasks|queues|stats`, and `tokens` with a
//!   server named, as clients of a running server's REST API through `taskpilot-client`.
//!   They render answers and decide nothing; they name neither the adapter nor the wiring.
//!
//! Tests run the application in-process with [`build_app`] or the real server with [`run`]
//! on a listener of their own.
//!
//! Must never import: the storage adapter outside [`server`] and `main.rs`; the client crate
//! outside [`cli`].

pub mod activity;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod dto;
pub mod error;
pub mod handlers;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod request_log;
pub mod routes;
pub mod server;
pub mod tokens;
pub mod ui;
pub mod wake;

pub use auth::Gate;
pub use config::{AuthMode, Cli, Command, Config, HttpConfig, TokensCommand};
pub use error::ApiError;
pub use metrics::Metrics;
pub use routes::build_app;
// The wiring's modules under their short paths too, as the binary and the tests name them.
pub use server::{background, startup};
pub use server::{run, run_preparing, Preparation, Server, ServerHandle, StopSignal};
pub use wake::WakeHub;
