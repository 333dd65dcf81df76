//! The `taskpilot` binary: `taskpilot serve` (the default) and `taskpilot migrate`.

use std::net::TcpListener;

use anyhow::Context as _;
use clap::Parser as _;
use taskpilot_http::startup::{connect_and_migrate, resolve_database, task_service};
use taskpilot_http::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.clone();
    taskpilot_http::telemetry::init_tracing(&config.log)?;

    // Refuse bad settings before touching any database.
    config.backoff()?;
    config.default_max_attempts()?;

    // Blocking start-up (probing, maybe starting a cluster, migrating) runs before the runtime.
    let database = resolve_database(&config)?;
    let pool = connect_and_migrate(&database.url, &config)?;
    if cli.subcommand() == Command::Migrate {
        return Ok(());
    }

    let service = task_service(pool, &config)?;
    let listener = TcpListener::bind(config.bind)
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(
        address = %config.bind,
        workers = config.workers,
        "TaskPilot listening on http://{}",
        config.bind
    );
    actix_web::rt::System::new()
        .block_on(async move { taskpilot_http::run(service, config.http(), listener)?.await })?;
    tracing::info!("TaskPilot stopped");
    Ok(())
}
