//! The `taskpilot` binary: `taskpilot serve` (the default) and `taskpilot migrate`.

use std::net::TcpListener;

use anyhow::Context as _;
use clap::Parser as _;
use taskpilot_diesel::SchemaReady;
use taskpilot_http::startup::{
    self, connect_and_migrate, database_clock, migration_lines, prepare_database, resolve_database,
    settle_pool, task_service_awaiting,
};
use taskpilot_http::{Cli, Command, Preparation, StopSignal};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.clone();
    taskpilot_http::server::init_tracing(&config.log)?;

    // Refuse bad settings before touching any database.
    config.backoff()?;
    config.service_defaults()?;

    // Blocking start-up (probing, maybe starting a cluster) runs before the runtime.
    let database = resolve_database(&config)?;
    if cli.subcommand() == Command::Migrate {
        let (pool, migrated) = connect_and_migrate(&database.url, &config)?;
        // What an operator asked for goes to stdout, apart from the logs.
        for line in migration_lines(&migrated) {
            println!("{line}");
        }
        // Exiting while the pool still opens connections in the background can crash the
        // process in libpq's exit handlers: let it finish first.
        settle_pool(&pool, &config);
        return Ok(());
    }

    // Serve at once, whether or not the database answers yet: until it is reached and
    // migrated, /readyz and the API answer 503 (a crash loop under an orchestrator helps
    // nobody), and a database that turns out not to exist stops the server.
    let pool = startup::pool(&database.url, &config)?;
    let ready = SchemaReady::pending();
    let clock = database_clock(pool.clone(), &config)?;
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
    let prepare: Preparation = Box::new(move |stop: &StopSignal| {
        prepare_database(&database.url, &pool, &config, &ready, stop)
    });
    actix_web::rt::System::new().block_on(async move {
        taskpilot_http::run_preparing(service, http, listener, notify_url, Some(prepare))?.await
    })?;
    tracing::info!("TaskPilot stopped");
    Ok(())
}
