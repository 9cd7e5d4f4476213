//! Redis connections: auto-reconnecting multiplexed connections with bounded
//! timeouts, so an outage becomes a fast error instead of a hung request.

use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// A connection manager whose commands fail after `response_timeout`. It
/// reconnects in the background; the command that met the dead connection fails
/// and is the caller's to retry.
pub async fn connect(config: &RedisConfig, response_timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.timeout()))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, manager_config).await
}

/// Connects, retrying until `wait` has passed, for start-up while Redis comes up.
pub async fn connect_with_wait(
    config: &RedisConfig,
    response_timeout: Duration,
    wait: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match connect(config, response_timeout).await {
            Ok(conn) => return Ok(conn),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%err, "Redis is not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err),
        }
    }
}
