//! The `taskpilot` binary: `taskpilot serve` (the default), `taskpilot migrate`,
//! `taskpilot tokens`, and the operator commands that call a running server
//! (`tasks`, `queues`, `stats`; see `taskpilot_http::cli`).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use taskpilot_diesel::SchemaReady;
use taskpilot_http::startup::{
    self, access_service_awaiting, check_exposure, connect_and_migrate, database_clock,
    is_loopback, migration_lines, pool_source, prepare_database, resolve_database,
    run_tokens_command, settle_pool, task_service_awaiting,
};
use taskpilot_http::{Cli, Command, Gate, Preparation, StopSignal};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The operator commands talk to a server over HTTP: no database, no logs on stdout.
    if let Some(exit) = taskpilot_http::cli::run_client_command(&cli) {
        return Ok(exit);
    }
    let config = cli.config.clone();
    taskpilot_http::server::init_tracing(&config.log)?;

    // Refuse bad settings before touching any database.
    config.backoff()?;
    config.service_defaults()?;

    // Blocking start-up (probing, maybe starting a cluster) runs before the runtime.
    let database = resolve_database(&config)?;
    if let Command::Tokens(command) = cli.subcommand() {
        let (pool, _) = connect_and_migrate(&database.url, &config)?;
        let access = startup::access_service(pool.clone(), Arc::new(taskpilot_app::SystemClock));
        let done = run_tokens_command(&command, &access);
        settle_pool(&pool, &config);
        for line in done? {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if cli.subcommand() == Command::Migrate {
        let (pool, migrated) = connect_and_migrate(&database.url, &config)?;
        // What an operator asked for goes to stdout, apart from the logs.
        for line in migration_lines(&migrated) {
            println!("{line}");
        }
        // Exiting while the pool still opens connections in the background can crash the
        // process in libpq's exit handlers: let it finish first.
        settle_pool(&pool, &config);
        return Ok(ExitCode::SUCCESS);
    }

    // Serve at once, whether or not the database answers yet: until it is reached and
    // migrated, /readyz and the API answer 503 (a crash loop under an orchestrator helps
    // nobody), and a database that turns out not to exist stops the server.
    let pool = startup::pool(&database.url, &config)?;
    let ready = SchemaReady::pending();
    let clock = database_clock(pool.clone(), &config)?;
    let access = access_service_awaiting(pool.clone(), clock.clone(), ready.clone());
    let gate = Gate::new(access.clone(), config.auth, is_loopback(config.bind));
    let service = task_service_awaiting(pool.clone(), clock, &config, ready.clone())?;
    let listener = TcpListener::bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(
        address = %config.bind,
        workers = config.workers,
        "TaskPilot listening on http://{}",
        config.bind
    );
    // The server LISTENs for runnable tasks on a connection of its own to the same database.
    let notify_url = Some(database.url.clone());
    let http = config.http();
    let metrics_pool = pool.clone();
    let prepare: Preparation = Box::new(move |stop: &StopSignal| {
        prepare_database(&database.url, &pool, &config, &ready, stop)?;
        // Whether the server may run as configured depends on the tokens in the database.
        check_exposure(&access, &config)
    });
    actix_web::rt::System::new().block_on(async move {
        let server = taskpilot_http::run_preparing(
            service,
            gate,
            http,
            listener,
            notify_url,
            Some(prepare),
        )?;
        server.metrics().observe_pool(pool_source(metrics_pool));
        server.await
    })?;
    tracing::info!("TaskPilot stopped");
    Ok(ExitCode::SUCCESS)
}
