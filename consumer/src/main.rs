//! The `coupon-consumer` binary: run the worker until a signal, or an operator
//! subcommand on dead letters.

use anyhow::Context;
use consumer::{dead_letter, Cli, Command, Health};
use shared::telemetry::Telemetry;
use shared::CouponId;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

// The consumer keeps the system allocator (the API uses mimalloc): draining a
// 130,055-event backlog over 1,000 coupons, mimalloc's peak RSS was 74-83 MiB
// against glibc's 27 MiB, for 75-77 against 79-86 ticks of CPU (BENCHMARKS.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::load().context("reading the configuration")?;
    let config = cli.consumer;
    let telemetry = Telemetry::init(&config.common.telemetry, "coupon-consumer").context("setting up telemetry")?;
    if let Some(command) = cli.command {
        return operate(&config, command).await;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "coupon-consumer starting");
    config.check()?;
    let metrics = shared::metrics::install();
    let listener = TcpListener::bind(&config.metrics_addr)
        .await
        .with_context(|| format!("binding METRICS_ADDR {}", config.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Served from the start: live, and not ready until the loop turns, while
    // MySQL and Redis are waited for.
    let health = Arc::new(Health::new(config.thresholds()));
    let server = tokio::spawn(consumer::ops_server::serve(
        listener,
        metrics,
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    let worker = consumer::build_reporting(&config, health)
        .await
        .context("starting coupon-consumer")?;
    tokio::spawn(async move {
        shared::shutdown::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    worker.run(stopped(stop_rx)).await;
    let _ = server.await;
    tracing::info!("coupon-consumer stopped");
    telemetry.shutdown().await;
    Ok(())
}

async fn operate(config: &consumer::ConsumerConfig, command: Command) -> anyhow::Result<()> {
    let dead_letters = || async {
        let mut conn = shared::redis_conn::connect(&config.common.redis, config.common.redis.timeout())
            .await
            .context("connecting to Redis")?;
        let layout = config.common.redis.layout();
        shared::startup::check_layout(&mut conn, layout).await?;
        anyhow::Ok((conn, layout))
    };
    match command {
        Command::Migrate => {
            shared::db::migrate_database(&config.common.database, shared::startup::START_WAIT)
                .await
                .context("migrating the database")?;
            tracing::info!("database migrated");
        }
        Command::ListDeadLetters { coupon } => {
            let (mut conn, layout) = dead_letters().await?;
            let coupon = coupon.map(CouponId::new).transpose().context("coupon id")?;
            for letter in dead_letter::list(&mut conn, &layout, coupon).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        Command::ReplayDeadLetters { coupon, id } => {
            let (mut conn, layout) = dead_letters().await?;
            let coupon = CouponId::new(coupon).context("coupon id")?;
            let replayed = dead_letter::replay(&mut conn, &layout, coupon, id.as_deref()).await?;
            println!("replayed {replayed} dead letter(s) of coupon {coupon}");
        }
    }
    Ok(())
}
