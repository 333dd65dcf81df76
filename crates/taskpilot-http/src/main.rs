//! The `taskpilot` binary: `taskpilot serve` (the default) and `taskpilot migrate`.

use std::net::TcpListener;

use anyhow::Context as _;
use clap::Parser as _;
use taskpilot_http::startup::{
    connect_and_migrate, database_clock, log_migrations, migration_lines, pool_source,
    resolve_database, settle_pool, task_service,
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
    let service = task_service(pool.clone(), clock, &config)?;
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
        let server = taskpilot_http::run(service, config.http(), listener, notify_url)?;
        server.metrics().observe_pool(pool_source(pool));
        server.await
    })?;
    tracing::info!("TaskPilot stopped");
    Ok(())
}
