//! A coupon's Redis state (metadata hash, issued set): publishing
//! it when a coupon is created and rebuilding it from MySQL when Redis lost it.
//!
//! The script refuses everything while the metadata hash is missing, and the
//! rebuild writes that hash last, so no request is decided on a half-filled set.
//! One instance rebuilds under a lock; the others wait for the hash to appear.

use crate::error::ApiError;
use crate::store;
use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId, CouponKeys};
use sqlx::MySqlPool;
use std::collections::HashMap;
use std::time::Duration;

/// How long a rebuild lock lives if its holder dies mid-way.
const LOCK_TTL_MS: u64 = 30_000;
/// Users added per SADD while refilling the set.
const CHUNK: usize = 1_000;

/// The coupon as Redis stores it in its metadata hash, if the hash is there.
pub async fn load_meta(redis: &mut RedisConn, id: CouponId) -> Result<Option<Coupon>, ApiError> {
    let fields: HashMap<String, String> = redis.hgetall(&CouponKeys::new(id).meta).await?;
    Ok(parse_meta(id, &fields))
}

fn parse_meta(id: CouponId, fields: &HashMap<String, String>) -> Option<Coupon> {
    let ms =
        |name: &str| -> Option<DateTime<Utc>> { Utc.timestamp_millis_opt(fields.get(name)?.parse().ok()?).single() };
    Some(Coupon {
        id,
        name: fields.get("name")?.clone(),
        total_quantity: fields.get("total_quantity")?.parse().ok()?,
        issue_start: ms("issue_start_ms")?,
        issue_end: ms("issue_end_ms")?,
    })
}

/// Publishes a coupon MySQL just created. A new id can have no legitimate Redis
/// state, so whatever Redis holds under it (left over from a database that was
/// reset while Redis was not) is dropped first; it would otherwise count against
/// the new coupon's quantity.
pub async fn publish_new(
    redis: &mut RedisConn,
    db: &MySqlPool,
    coupon: &Coupon,
    wait: Duration,
) -> Result<(), ApiError> {
    let keys = CouponKeys::new(coupon.id);
    let _: () = redis
        .del(&[&keys.meta, &keys.issued, &keys.events, &keys.dead, &keys.failed])
        .await?;
    rebuild(redis, db, coupon, wait).await
}

/// Rebuilds the coupon's Redis state from MySQL, once across all instances:
/// the lock holder refills the set and then writes the metadata; the others wait
/// until the metadata is back. Safe to repeat (SADD and HSET are idempotent).
pub async fn rebuild(redis: &mut RedisConn, db: &MySqlPool, coupon: &Coupon, wait: Duration) -> Result<(), ApiError> {
    let keys = CouponKeys::new(coupon.id);
    let token = format!(
        "{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let locked: Option<String> = redis::cmd("SET")
        .arg(&keys.rebuild_lock)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_TTL_MS)
        .query_async(redis)
        .await?;
    if locked.is_none() {
        return wait_for_meta(redis, &keys, wait).await;
    }
    let result = refill(redis, db, coupon, &keys).await;
    // Release only our own lock: compare-and-delete in one step.
    let _: Result<i64, _> = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(&keys.rebuild_lock)
    .arg(&token)
    .invoke_async(redis)
    .await;
    result
}

async fn refill(redis: &mut RedisConn, db: &MySqlPool, coupon: &Coupon, keys: &CouponKeys) -> Result<(), ApiError> {
    let users = store::issued_users(db, coupon.id).await?;
    for chunk in users.chunks(CHUNK) {
        let _: () = redis.sadd(&keys.issued, chunk).await?;
    }
    let _: () = redis::pipe()
        .hset_multiple(
            &keys.meta,
            &[
                ("name", coupon.name.clone()),
                ("total_quantity", coupon.total_quantity.to_string()),
                ("issue_start_ms", coupon.issue_start.timestamp_millis().to_string()),
                ("issue_end_ms", coupon.issue_end.timestamp_millis().to_string()),
            ],
        )
        .query_async(redis)
        .await?;
    metrics::counter!(shared::metrics::STATE_REBUILDS).increment(1);
    tracing::info!(coupon = %coupon.id, restored_users = users.len(), "coupon state written to Redis from MySQL");
    Ok(())
}

async fn wait_for_meta(redis: &mut RedisConn, keys: &CouponKeys, wait: Duration) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        let present: bool = redis.exists(&keys.meta).await?;
        if present {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(ApiError::Unavailable(
        "the coupon's state is being rebuilt, retry shortly",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_metadata_reads_as_missing() {
        let id = CouponId::new(1).unwrap();
        let mut fields: HashMap<String, String> = [
            ("name", "x"),
            ("total_quantity", "5"),
            ("issue_start_ms", "0"),
            ("issue_end_ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(parse_meta(id, &fields).map(|c| c.total_quantity), Some(5));
        fields.remove("issue_end_ms");
        assert_eq!(parse_meta(id, &fields), None);
    }
}
