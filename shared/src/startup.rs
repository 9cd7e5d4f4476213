//! The start-up both binaries share: MySQL (created and migrated, as
//! `RUN_MIGRATIONS` says) and Redis, each waited for while it comes up (MySQL
//! only where the binary can do nothing without it), and the one error that
//! says why not.

use crate::config::CommonConfig;
use crate::db::{self, DbSetupError};
use crate::keys::{Layout, LAYOUT_KEY};
use crate::redis_conn::{self, RedisConn, RedisConnectError};
use sqlx::MySqlPool;
use std::time::Duration;

/// How long a binary waits at start for MySQL and for Redis to answer.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// Why a binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] DbSetupError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: {0}")]
    RedisConnect(#[from] RedisConnectError),
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(
        "STREAM_PARTITIONS is {configured} but this Redis was set up with {recorded}: \
         every process of a deployment must use the same count (changing it moves \
         coupons to other partitions; see the README)"
    )]
    Layout { configured: u16, recorded: String },
    /// A binary's own setting that could not be used (a key file, ...).
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Whether a binary waits for MySQL at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mysql {
    /// The consumer: nothing to do without it.
    Wait,
    /// The API: issuing needs only Redis, so it starts, gets ready and serves
    /// while MySQL is down; its pool connects when first used.
    Lazily,
}

/// What both binaries connect to at start.
pub struct Connections {
    /// The MySQL pool (its database created and migrated when `RUN_MIGRATIONS`;
    /// with [`Mysql::Lazily`], maybe not yet).
    pub db: MySqlPool,
    /// A Redis connection whose commands time out after `REDIS_TIMEOUT_MS`.
    pub redis: RedisConn,
    /// The partition layout, checked against the one Redis recorded.
    pub layout: Layout,
}

/// Prepares the database and connects to MySQL as `mysql` says, then to
/// Redis, waiting up to [`START_WAIT`] for each it waits for.
pub async fn connect(config: &CommonConfig, mysql: Mysql) -> Result<Connections, StartError> {
    let db = match mysql {
        Mysql::Wait => db::connect_and_migrate(&config.database, START_WAIT).await?,
        Mysql::Lazily => db::connect_lazily(&config.database).await?,
    };
    let redis = redis_connection(config, config.redis.timeout()).await?;
    let layout = config.redis.layout();
    // A Redis that restarts answers LOADING while it replays its AOF.
    let loading = |err: &StartError| matches!(err, StartError::Redis(e) if e.code() == Some("LOADING"));
    let check = || {
        let mut redis = redis.clone();
        async move { check_layout(&mut redis, layout).await }
    };
    crate::retry::until_permanent(START_WAIT, "Redis", check, |err| !loading(err)).await?;
    Ok(Connections { db, redis, layout })
}

/// Records the partition count at the first start of a deployment and refuses
/// to run with another one: events written to partitions nobody reads, or a
/// coupon's keys looked up under another partition, would break every guarantee.
pub async fn check_layout(redis: &mut RedisConn, layout: Layout) -> Result<(), StartError> {
    let _: Option<String> = redis::cmd("SET")
        .arg(LAYOUT_KEY)
        .arg(layout.partitions())
        .arg("NX")
        .query_async(redis)
        .await?;
    let recorded: Option<String> = redis::cmd("GET").arg(LAYOUT_KEY).query_async(redis).await?;
    match recorded {
        Some(recorded) if recorded != layout.partitions().to_string() => Err(StartError::Layout {
            configured: layout.partitions(),
            recorded,
        }),
        _ => Ok(()),
    }
}

/// One more Redis connection with its own `response_timeout` (a blocking reader
/// must outwait its BLOCK time), waiting up to [`START_WAIT`] for Redis.
pub async fn redis_connection(config: &CommonConfig, response_timeout: Duration) -> Result<RedisConn, StartError> {
    Ok(redis_conn::connect_with_wait(&config.redis, response_timeout, START_WAIT).await?)
}
