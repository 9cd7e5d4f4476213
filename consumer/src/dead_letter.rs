//! The dead-letter stream of each coupon (`coupon:{id}:dead`): entries given up
//! on, with the reason, and the operator's list and replay of them.
//!
//! Moving an entry there, marking its user `failed` and acking the original are
//! one MULTI on one slot: an entry is never both dead and pending, nor lost.

use crate::streams::{Entry, Member};
use redis::streams::StreamRangeReply;
use redis::{RedisResult, Value};
use serde::Serialize;
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use shared::redis_conn::RedisConn;
use shared::{CouponId, CouponKeys, UserId};

/// Moves `entry` to its coupon's dead-letter stream with `reason`, records the
/// user (when known) as failed, and acks the original entry.
pub async fn bury(
    conn: &mut RedisConn,
    member: &Member,
    coupon: CouponId,
    entry: &Entry,
    user: Option<UserId>,
    reason: &str,
) -> RedisResult<()> {
    let keys = CouponKeys::new(coupon);
    let mut pipe = redis::pipe();
    pipe.atomic();
    // A field the entry lacks is kept empty: the reason says what was wrong.
    let (payload, position) = (entry.payload.as_deref(), entry.position.as_deref());
    xadd_event(
        &mut pipe,
        &keys.dead,
        payload.unwrap_or_default(),
        position.unwrap_or_default(),
    )
    .arg("reason")
    .arg(reason)
    .arg("source_id")
    .arg(&entry.id)
    .ignore();
    if let Some(user) = user {
        pipe.hset(&keys.failed, user.get(), reason).ignore();
    }
    pipe.cmd("XACK")
        .arg(&entry.stream)
        .arg(&member.group)
        .arg(&entry.id)
        .ignore();
    let () = pipe.query_async(conn).await?;
    metrics::counter!(shared::metrics::DEAD_LETTERS, "reason" => reason.split(':').next().unwrap_or(reason).to_string()).increment(1);
    tracing::warn!(%coupon, entry = %entry.id, user = ?user.map(UserId::get), reason, "entry moved to the dead-letter stream");
    Ok(())
}

/// One dead letter, as the operator sees it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub coupon_id: i64,
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Its id in the events stream it came from.
    pub source_id: String,
    pub reason: String,
    /// `None` when the event could not be decoded.
    pub user_id: Option<i64>,
    pub position: String,
    #[serde(skip)]
    payload: Vec<u8>,
}

/// The dead letters of `coupon`, oldest first.
pub async fn list(conn: &mut RedisConn, coupon: CouponId) -> RedisResult<Vec<DeadLetter>> {
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(CouponKeys::new(coupon).dead)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    Ok(range
        .ids
        .into_iter()
        .map(|e| {
            let bytes = |f: &str| match e.map.get(f) {
                Some(Value::BulkString(b)) => b.clone(),
                _ => Vec::new(),
            };
            let text = |f: &str| String::from_utf8_lossy(&bytes(f)).into_owned();
            let payload = bytes(FIELD_EVENT);
            let user_id = shared::IssueEvent::decode(Some(&payload), Some(b"1"))
                .ok()
                .map(|ev| ev.user_id.get());
            DeadLetter {
                coupon_id: coupon.get(),
                source_id: text("source_id"),
                reason: text("reason"),
                position: text(FIELD_POSITION),
                user_id,
                payload,
                id: e.id,
            }
        })
        .collect())
}

/// Puts dead letters of `coupon` back on its events stream (all, or the one
/// with `only` as id) and clears their users' `failed` mark, atomically each.
/// Returns how many were replayed.
pub async fn replay(conn: &mut RedisConn, coupon: CouponId, only: Option<&str>) -> RedisResult<usize> {
    let keys = CouponKeys::new(coupon);
    let mut replayed = 0;
    for letter in list(conn, coupon).await? {
        if only.is_some_and(|id| id != letter.id) {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        xadd_event(&mut pipe, &keys.events, &letter.payload, letter.position.as_bytes()).ignore();
        if let Some(user) = letter.user_id {
            pipe.hdel(&keys.failed, user).ignore();
        }
        pipe.cmd("XDEL").arg(&keys.dead).arg(&letter.id).ignore();
        let () = pipe.query_async(conn).await?;
        replayed += 1;
    }
    Ok(replayed)
}

/// Queues an XADD to `stream` of an event's two fields; more fields may follow.
fn xadd_event<'a>(
    pipe: &'a mut redis::Pipeline,
    stream: &str,
    payload: &[u8],
    position: &[u8],
) -> &'a mut redis::Pipeline {
    pipe.cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(FIELD_EVENT)
        .arg(payload)
        .arg(FIELD_POSITION)
        .arg(position)
}
