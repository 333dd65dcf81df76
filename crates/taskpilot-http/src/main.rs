//! The `taskpilot` binary: `taskpilot serve` (the default) and `taskpilot migrate`.

use std::net::TcpListener;

use anyhow::Context as _;
use clap::Parser as _;
use taskpilot_http::startup::{
    access_service, auth_gate, connect_and_migrate, database_clock, log_migrations,
    migration_lines, resolve_database, run_tokens_command, settle_pool, task_service,
};
use taskpilot_http::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.clone();
    taskpilot_http::server::init_tracing(&config.log)?;

    // Refuse bad settings before touching any database.
    config.backoff()?;
    config.service_defaults()?;

    // Blocking start-up (probing, maybe starting a cluster, migrating) runs before the runtime.
    let database = resolve_database(&config)?;
    let (pool, migrated) = connect_and_migrate(&database.url, &config)?;
    if let Command::Tokens(command) = cli.subcommand() {
        let access = access_service(pool.clone(), std::sync::Arc::new(taskpilot_app::SystemClock));
        let done = run_tokens_command(&command, &access);
        settle_pool(&pool, &config);
        for line in done? {
            println!("{line}");
        }
        return Ok(());
    }
    if cli.subcommand() == Command::Migrate {
        // What an operator asked for goes to stdout, apart from the logs.
        for line in migration_lines(&migrated) {
            println!("{line}");
        }
        // Exiting while the pool still opens connections in the background can crash the
        // process in libpq's exit handlers: let it finish first.
        settle_pool(&pool, &config);
        return Ok(());
    }
    log_migrations(&migrated);

    let clock = database_clock(pool.clone(), &config)?;
    let gate = auth_gate(access_service(pool.clone(), clock.clone()), &config)?;
    let service = task_service(pool, clock, &config)?;
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
    actix_web::rt::System::new().block_on(async move {
        taskpilot_http::run(service, gate, config.http(), listener, notify_url)?.await
    })?;
    tracing::info!("TaskPilot stopped");
    Ok(())
}
