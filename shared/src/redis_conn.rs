//! Redis connections: one type for a standalone server (an auto-reconnecting
//! multiplexed `ConnectionManager`) and a Redis Cluster (redis-rs's async cluster
//! client, which follows MOVED/ASK and fail-overs), both with bounded timeouts so
//! an outage becomes a fast error instead of a hung request.

use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// A connection to standalone Redis or to a Redis Cluster. Cheap to clone: the
/// clones share the underlying multiplexed connection(s).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether commands go to a cluster, where every multi-key command must stay
    /// in one slot (all keys of a coupon share its hash tag).
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to the cluster when `REDIS_CLUSTER_URLS` is set, else to `REDIS_URL`.
/// A standalone connection reconnects in the background; the command that met
/// the dead connection fails and is the caller's to retry.
pub async fn connect(config: &RedisConfig, response_timeout: Duration) -> redis::RedisResult<RedisConn> {
    if let Some(seeds) = config.cluster_seeds() {
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(config.timeout())
            .response_timeout(response_timeout)
            .retries(3)
            .max_retry_wait(500)
            .build()?;
        return Ok(RedisConn::Cluster(client.get_async_connection().await?));
    }
    let client = redis::Client::open(config.redis_url.as_str())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout()))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    Ok(RedisConn::Single(
        ConnectionManager::new_with_config(client, manager_config).await?,
    ))
}

/// Connects, retrying until `wait` has passed, for start-up while Redis comes up.
pub async fn connect_with_wait(
    config: &RedisConfig,
    response_timeout: Duration,
    wait: Duration,
) -> redis::RedisResult<RedisConn> {
    crate::retry::until(wait, "Redis", || connect(config, response_timeout)).await
}
