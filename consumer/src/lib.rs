//! `coupon-consumer`: the issuing worker of coupon-rush.
//!
//! A member of a Redis Streams consumer group: it reads the fixed set of
//! partition streams (every coupon maps to one) in batches, writes each batch to
//! MySQL in one idempotent, quantity-guarded transaction per coupon, then acks.
//! Entries of dead or stuck members are reclaimed; entries that cannot be
//! written go to their partition's dead-letter stream. Streams of the layout
//! before partitions, left by an upgrade, are drained and deleted.
//!
//! # Layout
//! - [`worker`]: the step (`fetch` + `handle`) and the loop with backoff.
//! - [`streams`]: group, read, ack, reclaim, keep-alive, trim and scan commands.
//! - [`store`]: the MySQL transaction.
//! - [`dead_letter`]: burying entries, listing and replaying them.
//! - [`ops_server`]: `/metrics`, `/healthz` and `/readyz`.
//! - [`health`]: whether the worker is live and ready, as the loop reports it.
//! - [`config`]: the configuration (env + flags) and the subcommands.

pub mod config;
pub mod dead_letter;
pub mod health;
pub mod ops_server;
pub mod store;
pub mod streams;
pub mod worker;

pub use config::{Cli, Command, ConsumerConfig};
pub use health::Health;
pub use worker::{Settings, Worker};

use std::sync::Arc;
use streams::Member;

/// Why the consumer could not start (shared with the API).
pub use shared::startup::StartError;

/// Connects to MySQL (migrating it) and Redis and builds the worker.
pub async fn build(config: &ConsumerConfig) -> Result<Worker, StartError> {
    build_reporting(config, Arc::new(Health::new(config.thresholds()))).await
}

/// [`build`], the worker reporting to `health` (which the ops server may
/// answer from before the connections are up).
pub async fn build_reporting(config: &ConsumerConfig, health: Arc<Health>) -> Result<Worker, StartError> {
    let connections = shared::startup::connect(&config.common, shared::startup::Mysql::Wait).await?;
    // The blocking reader must outwait its own BLOCK time.
    let read_timeout = config.block() + config.common.redis.timeout();
    let reader = shared::startup::redis_connection(&config.common, read_timeout).await?;
    let member = Member {
        group: config.consumer_group.clone(),
        name: config.name(),
    };
    Ok(Worker::new(member, reader, connections, Settings::from(config), health))
}
