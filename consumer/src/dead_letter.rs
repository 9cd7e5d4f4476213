//! The dead-letter stream of each coupon (`coupon:{id}:dead`): entries given up
//! on, with the reason, and the operator's list and replay of them.
//!
//! Moving an entry there, marking its user `failed` and acking the original are
//! one MULTI on one slot: an entry is never both dead and pending, nor lost.

use crate::store::Refusal;
use crate::streams::{Entry, Member};
use redis::streams::StreamRangeReply;
use redis::{RedisResult, Value};
use serde::Serialize;
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use shared::redis_conn::RedisConn;
use shared::{CouponId, CouponKeys, IssueEvent, UserId};
use std::fmt;

/// Why an accepted request was given up on. The variant names the metric label
/// (a bounded set); the text stored with the letter, and shown as the user's
/// `reason`, is the label with any detail after a colon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadReason {
    /// The entry is not a valid issue event (why, from the decoder).
    Undecodable(String),
    /// A valid event of another coupon, found in this coupon's stream.
    WrongStream {
        event_coupon: CouponId,
        stream_coupon: CouponId,
    },
    /// MySQL already holds `total_quantity` rows for the coupon.
    QuantityExceeded,
    /// MySQL has no such coupon.
    CouponNotFound,
    /// `accepted_at_ms` is no time a MySQL `DATETIME` can hold.
    InvalidAcceptedAt,
    /// Delivered more than `MAX_DELIVERIES` times and then tried alone this
    /// many times, each ended by a crash or a stall: a poison entry.
    TooManyAttempts { attempts: u64 },
    /// Held uncommitted past its commit lease while Redis lost its data (its
    /// group and pending list are gone): writing it now could go behind the back
    /// of the rebuild of the coupon's state (see `shared::lease`).
    LostWithRedisState,
    /// Its entry was deleted from the stream (XDEL, a MAXLEN trim) before any
    /// consumer wrote it; found by reconciling the coupon's users.
    EventDeleted,
}

impl DeadReason {
    /// The metric label and the first word of the stored reason.
    pub fn label(&self) -> &'static str {
        match self {
            DeadReason::Undecodable(_) => "undecodable",
            DeadReason::WrongStream { .. } => "wrong_stream",
            DeadReason::QuantityExceeded => "quantity_exceeded",
            DeadReason::CouponNotFound => "coupon_not_found",
            DeadReason::InvalidAcceptedAt => "invalid_accepted_at",
            DeadReason::TooManyAttempts { .. } => "too_many_attempts",
            DeadReason::LostWithRedisState => "lost_with_redis_state",
            DeadReason::EventDeleted => "event_deleted",
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())?;
        match self {
            DeadReason::Undecodable(why) => write!(f, ": {why}"),
            DeadReason::WrongStream {
                event_coupon,
                stream_coupon,
            } => write!(
                f,
                ": event of coupon {event_coupon} in stream of coupon {stream_coupon}"
            ),
            DeadReason::TooManyAttempts { attempts } => write!(f, ": tried alone {attempts} times"),
            _ => Ok(()),
        }
    }
}

impl From<Refusal> for DeadReason {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::QuantityExceeded => DeadReason::QuantityExceeded,
            Refusal::CouponNotFound => DeadReason::CouponNotFound,
            Refusal::InvalidAcceptedAt => DeadReason::InvalidAcceptedAt,
        }
    }
}

/// Moves `entry` to its coupon's dead-letter stream with `reason`, records the
/// user (when known) as failed, forgets its isolated attempts and acks the
/// original entry.
pub async fn bury(
    conn: &mut RedisConn,
    member: &Member,
    coupon: CouponId,
    entry: &Entry,
    user: Option<UserId>,
    reason: &DeadReason,
) -> RedisResult<()> {
    let keys = CouponKeys::new(coupon);
    let text = reason.to_string();
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XADD")
        .arg(&keys.dead)
        .arg("*")
        .arg(FIELD_EVENT)
        .arg(entry.payload.as_deref().unwrap_or_default())
        .arg(FIELD_POSITION)
        .arg(entry.position.as_deref().unwrap_or_default())
        .arg("reason")
        .arg(&text)
        .arg("source_id")
        .arg(&entry.id)
        .ignore();
    if let Some(user) = user {
        pipe.hset(&keys.failed, user.get(), &text).ignore();
    }
    pipe.hdel(&keys.attempts, &entry.id).ignore();
    pipe.cmd("XACK")
        .arg(&entry.stream)
        .arg(&member.group)
        .arg(&entry.id)
        .ignore();
    let () = pipe.query_async(conn).await?;
    counted(reason);
    tracing::warn!(%coupon, entry = %entry.id, user = ?user.map(UserId::get), reason = %text, "entry moved to the dead-letter stream");
    Ok(())
}

/// Records `user` of `coupon` as failed with `reason` and a dead letter, when
/// no entry is left to bury (it was deleted), unless the user is recorded
/// failed already (two consumers reconciling at once record it once). The
/// letter's event carries what is known (coupon and user); its position is
/// unknown, so a replay of it is buried again as undecodable. Returns whether
/// it was recorded.
pub async fn bury_user(conn: &mut RedisConn, coupon: CouponId, user: UserId, reason: &DeadReason) -> RedisResult<bool> {
    let keys = CouponKeys::new(coupon);
    let text = reason.to_string();
    let event = IssueEvent {
        coupon_id: coupon,
        user_id: user,
        accepted_at_ms: 0,
        position: 0,
        trace: Default::default(),
    };
    // One slot (both keys carry the coupon's hash tag), one step.
    let recorded: bool = redis::Script::new(
        "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end \
         redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[4], ARGV[5], '', 'reason', ARGV[2], 'source_id', '') \
         return 1",
    )
    .key(&keys.failed)
    .key(&keys.dead)
    .arg(user.get())
    .arg(&text)
    .arg(FIELD_EVENT)
    .arg(event.encode())
    .arg(FIELD_POSITION)
    .invoke_async(conn)
    .await?;
    if recorded {
        counted(reason);
        tracing::warn!(%coupon, user = user.get(), reason = %text, "accepted user recorded as failed");
    }
    Ok(recorded)
}

fn counted(reason: &DeadReason) {
    metrics::counter!(shared::metrics::DEAD_LETTERS, "reason" => reason.label()).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_reads_as_its_metric_label_with_any_detail_after_a_colon() {
        let coupon = |id| CouponId::new(id).unwrap();
        let cases = [
            (
                DeadReason::Undecodable("no `ev` field".into()),
                "undecodable: no `ev` field",
            ),
            (
                DeadReason::WrongStream {
                    event_coupon: coupon(2),
                    stream_coupon: coupon(1),
                },
                "wrong_stream: event of coupon 2 in stream of coupon 1",
            ),
            (DeadReason::from(Refusal::QuantityExceeded), "quantity_exceeded"),
            (DeadReason::from(Refusal::CouponNotFound), "coupon_not_found"),
            (DeadReason::from(Refusal::InvalidAcceptedAt), "invalid_accepted_at"),
            (
                DeadReason::TooManyAttempts { attempts: 6 },
                "too_many_attempts: tried alone 6 times",
            ),
            (DeadReason::LostWithRedisState, "lost_with_redis_state"),
            (DeadReason::EventDeleted, "event_deleted"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert!(text.starts_with(reason.label()), "{text}");
        }
    }
}
