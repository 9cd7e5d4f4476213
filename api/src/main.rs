//! The `coupon-api` binary: configuration, telemetry, serve until a signal.

use anyhow::Context;
use api::{Application, Cli, Command};
use shared::telemetry::Telemetry;

/// mimalloc: under load glibc malloc/free took about a fifth of the API's CPU
/// (perf, BENCHMARKS.md); mimalloc's per-thread free lists make that small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::load().context("reading the configuration")?;
    let config = cli.api;
    let telemetry = Telemetry::init(&config.common.telemetry, "coupon-api").context("setting up telemetry")?;
    if let Some(Command::Migrate) = cli.command {
        shared::db::migrate_database(&config.common.database, shared::startup::START_WAIT)
            .await
            .context("migrating the database")?;
        tracing::info!("database migrated");
        telemetry.shutdown().await;
        return Ok(());
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "coupon-api starting");
    let app = Application::build(&config).await.context("starting coupon-api")?;
    let addr = app.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, "coupon-api listening");
    app.run_until(shared::shutdown::shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("coupon-api stopped");
    telemetry.shutdown().await;
    Ok(())
}
