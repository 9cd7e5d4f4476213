//! Dead letters and failed marks an upgrade left under a coupon's keys of the
//! layout before partitions (`coupon:{<id>}:dead`, `coupon:{<id>}:failed`),
//! moved to the partition layout, where `list-dead-letters`, `replay` and the
//! status endpoint look: a request given up on before the upgrade stays
//! `failed` with its reason, and its letter can be replayed at any time.
//!
//! The legacy keys live in another slot than the partition's: on a cluster no
//! step spans both. Each chunk is copied first and deleted from the old key
//! after, so a crash in between copies it twice (a replayed duplicate is a
//! no-op in MySQL), never loses it.

use redis::{AsyncCommands, RedisResult};
use shared::redis_conn::RedisConn;
use shared::{CouponId, Layout, LegacyKeys};

/// Dead letters moved per step.
const CHUNK: usize = 500;

/// What [`adopt`] moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    pub letters: usize,
    pub failed: usize,
}

/// Moves `coupon`'s legacy dead letters to its partition's dead-letter stream
/// (fields unchanged: the event names its coupon) and its legacy failed marks
/// to its failed hash (a mark there already wins), which expires at
/// `expires_at_ms` unless the coupon's metadata gives it its own expiry.
pub async fn adopt(
    conn: &mut RedisConn,
    layout: &Layout,
    coupon: CouponId,
    expires_at_ms: i64,
) -> RedisResult<Adopted> {
    let (legacy, keys) = (LegacyKeys::new(coupon), layout.coupon(coupon));
    let mut adopted = Adopted::default();
    loop {
        let range: redis::streams::StreamRangeReply = conn.xrange_count(&legacy.dead, "-", "+", CHUNK).await?;
        if range.ids.is_empty() {
            break;
        }
        let mut copy = redis::pipe();
        for letter in &range.ids {
            let fields = letter
                .map
                .iter()
                .map(|(k, v)| Ok((k.as_str(), redis::from_redis_value::<Vec<u8>>(v.clone())?)))
                .collect::<RedisResult<Vec<(&str, Vec<u8>)>>>()?;
            copy.cmd("XADD").arg(&keys.dead).arg("*").arg(fields).ignore();
        }
        let () = copy.query_async(conn).await?;
        let ids: Vec<&str> = range.ids.iter().map(|l| l.id.as_str()).collect();
        let _: i64 = conn.xdel(&legacy.dead, &ids).await?;
        adopted.letters += ids.len();
    }
    let marks: Vec<(String, String)> = conn.hgetall(&legacy.failed).await?;
    if !marks.is_empty() {
        let mut copy = redis::pipe();
        for (user, reason) in &marks {
            copy.hset_nx(&keys.failed, user, reason).ignore();
        }
        let meta_ttl: i64 = conn.pttl(&keys.meta).await?;
        if meta_ttl > 0 {
            copy.pexpire(&keys.failed, meta_ttl).ignore();
        } else {
            copy.pexpire_at(&keys.failed, expires_at_ms).ignore();
        }
        let () = copy.query_async(conn).await?;
        adopted.failed = marks.len();
    }
    let _: i64 = conn.del(&[&legacy.dead, &legacy.failed]).await?;
    Ok(adopted)
}
