//! `coupon-consumer`: the issuing worker of coupon-rush.
//!
//! A member of a Redis Streams consumer group: it reads the active coupons'
//! event streams in batches, writes each batch to MySQL in one idempotent,
//! quantity-guarded transaction per coupon, then acks. Entries of dead or stuck
//! members are reclaimed; entries that cannot be written go to a dead-letter stream.
//!
//! # Layout
//! - [`worker`]: the step (`fetch` + `handle`) and the loop with backoff.
//! - [`streams`]: group, read, ack, reclaim, keep-alive and trim commands.
//! - [`store`]: the MySQL transaction.
//! - [`dead_letter`]: burying entries, listing and replaying them.
//! - [`ops_server`]: `/metrics` and `/healthz`.
//! - [`config`]: the configuration (env + flags) and the subcommands.

pub mod config;
pub mod dead_letter;
pub mod ops_server;
pub mod store;
pub mod streams;
pub mod worker;

pub use config::{Cli, Command, ConsumerConfig};
pub use worker::{Settings, Worker};

use streams::Member;

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] shared::db::DbSetupError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Connects to MySQL (migrating it) and Redis and builds the worker.
pub async fn build(config: &ConsumerConfig) -> Result<Worker, StartError> {
    let wait = std::time::Duration::from_secs(30);
    let db = shared::db::connect_and_migrate(&config.database, wait).await?;
    // The blocking reader must outwait its own BLOCK time.
    let reader =
        shared::redis_conn::connect_with_wait(&config.redis, config.block() + config.redis.timeout(), wait).await?;
    let conn = shared::redis_conn::connect_with_wait(&config.redis, config.redis.timeout(), wait).await?;
    let member = Member {
        group: config.consumer_group.clone(),
        name: config.name(),
    };
    Ok(Worker::new(member, reader, conn, db, Settings::from(config)))
}
