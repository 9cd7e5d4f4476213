//! Finding keys by pattern without blocking Redis (SCAN, cursor followed to
//! its end): on the node holding one slot (a partition's coupons), or on every
//! master of a cluster (an upgrade's legacy streams). Both are rare: after
//! entries were deleted, and at start until no legacy stream is left.

use redis::cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{RedisResult, Value};
use shared::redis_conn::RedisConn;

/// Keys a SCAN step looks at (not a bound on the keys it returns).
const SCAN_COUNT: usize = 1000;

/// The keys matching `pattern` in the slot of `slot_key` (every key of the
/// pattern must carry `slot_key`'s hash tag); standalone, on the server.
pub async fn in_slot(conn: &mut RedisConn, slot_key: &str, pattern: &str) -> RedisResult<Vec<String>> {
    let node = SingleNodeRoutingInfo::SpecificNode(Route::with_key(slot_key, SlotAddr::Master));
    on_node(conn, &node, pattern, None).await
}

/// The keys matching `pattern` (of Redis type `kind`, when given) on every master.
pub async fn everywhere(conn: &mut RedisConn, pattern: &str, kind: Option<&str>) -> RedisResult<Vec<String>> {
    let RedisConn::Cluster(cluster) = conn else {
        return on_node(conn, &SingleNodeRoutingInfo::Random, pattern, kind).await;
    };
    // A PING to every master answers with each one's address.
    let masters = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let Value::Map(replies) = cluster.route_command(redis::cmd("PING"), masters).await? else {
        return Err(malformed("PING to every master"));
    };
    let mut keys = Vec::new();
    for (address, _) in replies {
        let address: String = redis::from_redis_value(address)?;
        let Some((host, port)) = address.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse().ok()?))) else {
            return Err(malformed("a master's address"));
        };
        let node = SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        };
        keys.extend(on_node(conn, &node, pattern, kind).await?);
    }
    Ok(keys)
}

/// SCAN on one node (standalone: the server, whatever `node` says).
async fn on_node(
    conn: &mut RedisConn,
    node: &SingleNodeRoutingInfo,
    pattern: &str,
    kind: Option<&str>,
) -> RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT);
        if let Some(kind) = kind {
            cmd.arg("TYPE").arg(kind);
        }
        let reply: Value = match conn {
            RedisConn::Cluster(cluster) => {
                cluster
                    .route_command(cmd, RoutingInfo::SingleNode(node.clone()))
                    .await?
            }
            RedisConn::Single(_) => cmd.query_async(conn).await?,
        };
        let (next, found): (String, Vec<String>) = redis::from_redis_value(reply)?;
        keys.extend(found);
        if next == "0" {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn malformed(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "malformed reply",
        what.to_string(),
    ))
}
