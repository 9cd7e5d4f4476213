//! The `coupon-api` binary: configuration, telemetry, serve until a signal.

use anyhow::Context;
use api::{ApiConfig, Application};
use shared::telemetry::Telemetry;

/// mimalloc: under load glibc malloc/free took about a fifth of the API's CPU
/// (perf, BENCHMARKS.md); mimalloc's per-thread free lists make that small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::load().context("reading the configuration")?;
    let telemetry = Telemetry::init(&config.common.telemetry, "coupon-api").context("setting up telemetry")?;
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
