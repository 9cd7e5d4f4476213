//! The dead-letter stream of each partition (`dead:{p<n>}`): entries given up
//! on, with the reason, each under the coupon of its event; [`letters`]: the
//! operator's list and replay of them.
//!
//! Moving an entry there, marking its user `failed` and acking the original are
//! one script in the partition's slot: an entry is never both dead and pending,
//! nor lost. (An entry of a legacy stream, or one found in the wrong partition,
//! lives in another slot: on a cluster its ack follows as a second step, so a
//! crash in between may bury it twice, never lose it.)

use crate::store::Refusal;
use crate::streams::{Entry, Member, Source};
use redis::{RedisResult, Script};
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use shared::redis_conn::RedisConn;
use shared::{CouponId, IssueEvent, Layout, UserId};
use std::fmt;
use std::sync::LazyLock;

pub mod adopt;
mod letters;

pub use letters::{list, replay, DeadLetter};

/// Why an accepted request was given up on. The variant names the metric label
/// (a bounded set); the text stored with the letter, and shown as the user's
/// `reason`, is the label with any detail after a colon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadReason {
    /// The entry is not a valid issue event (why, from the decoder).
    Undecodable(String),
    /// A valid event found in a stream its coupon does not map to.
    WrongStream { event_coupon: CouponId, stream: String },
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
    /// Every [`DeadReason::label`], for counters that start from 0.
    pub const LABELS: [&'static str; 8] = [
        "undecodable",
        "wrong_stream",
        "quantity_exceeded",
        "coupon_not_found",
        "invalid_accepted_at",
        "too_many_attempts",
        "lost_with_redis_state",
        "event_deleted",
    ];

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
            DeadReason::WrongStream { event_coupon, stream } => {
                write!(f, ": event of coupon {event_coupon} in stream {stream}")
            }
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

/// Whose an entry given up on was, as far as is known: the coupon and user of
/// its event, or, when it can not be decoded, the coupon its stream names (a
/// legacy stream's) and no user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub coupon: Option<CouponId>,
    pub user: Option<UserId>,
}

impl Owner {
    /// The owner of `entry` of `source`, from its event if it decodes.
    pub fn of(source: Source, entry: &Entry) -> Self {
        match IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref()) {
            Ok(event) => Self::from(&event),
            Err(_) => Self {
                coupon: source.coupon(),
                user: None,
            },
        }
    }
}

impl From<&IssueEvent> for Owner {
    fn from(event: &IssueEvent) -> Self {
        Self {
            coupon: Some(event.coupon_id),
            user: Some(event.user_id),
        }
    }
}

/// Buries an entry in one step of one slot: its dead letter; when its user is
/// known, the user's `failed` mark, expiring with the coupon's metadata so
/// nothing of a coupon outlives its retention; when given, forgets its
/// isolated attempts and acks it.
/// KEYS: the dead stream; then the failed hash and the meta hash when ARGV[5]
/// (the user) is not empty; then the attempts hash when ARGV[6] (its field) is
/// not empty; then the events stream when ARGV[7] (the group) is not empty.
/// ARGV[1] event, [2] position, [3] reason, [4] source entry id, [8] and [9]
/// the event and position field names, [10] the [`shared::StatusNote`] to
/// publish on channel [11] (waking the user's long-polls) or empty.
static BURY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('XADD', KEYS[1], '*', ARGV[8], ARGV[1], ARGV[9], ARGV[2], 'reason', ARGV[3], 'source_id', ARGV[4]) \
         local k = 2 \
         if ARGV[5] ~= '' then \
           redis.call('HSET', KEYS[k], ARGV[5], ARGV[3]) \
           local ttl = redis.call('PTTL', KEYS[k + 1]) \
           if ttl > 0 then redis.call('PEXPIRE', KEYS[k], ttl) end \
           k = k + 2 \
         end \
         if ARGV[6] ~= '' then redis.call('HDEL', KEYS[k], ARGV[6]) k = k + 1 end \
         if ARGV[7] ~= '' then redis.call('XACK', KEYS[k], ARGV[7], ARGV[4]) end \
         if ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[10]) end \
         return 1",
    )
});

/// Moves `entry` of `source` to the dead-letter stream of its owner's coupon's
/// partition (or of its stream's partition when the coupon is unknown) with
/// `reason`, records the user (when known) as failed, forgets its isolated
/// attempts and acks the original entry.
pub async fn bury(
    conn: &mut RedisConn,
    layout: &Layout,
    member: &Member,
    (source, entry): (Source, &Entry),
    owner: Owner,
    reason: &DeadReason,
) -> RedisResult<()> {
    let home = source.partition(layout);
    let grave = owner
        .coupon
        .map_or_else(|| home.clone(), |c| layout.coupon(c).partition);
    let text = reason.to_string();
    let mut bury = BURY.prepare_invoke();
    bury.key(&grave.dead)
        .arg(entry.payload.as_deref().unwrap_or_default())
        .arg(entry.position.as_deref().unwrap_or_default())
        .arg(&text)
        .arg(&entry.id);
    let (note, channel) = match (owner.coupon, owner.user) {
        (Some(coupon), Some(user)) => {
            let keys = layout.coupon(coupon);
            bury.key(&keys.failed).key(&keys.meta).arg(user.get());
            (format!("{coupon} {user}"), keys.partition.written)
        }
        _ => {
            bury.arg("");
            (String::new(), String::new())
        }
    };
    // The attempts hash and the stream may live in another slot than the
    // grave (a legacy stream, an event in the wrong partition); a standalone
    // server takes keys of any slot in one script.
    let cluster = conn.is_cluster();
    let forget_here = !cluster || home == grave;
    let ack_here = !cluster || (source.is_partition() && home == grave);
    let field = source.attempts_field(layout, &entry.id);
    if forget_here {
        bury.key(&home.attempts).arg(&field);
    } else {
        bury.arg("");
    }
    if ack_here {
        bury.key(&entry.stream).arg(&member.group);
    } else {
        bury.arg("");
    }
    let _: i64 = bury
        .arg(FIELD_EVENT)
        .arg(FIELD_POSITION)
        .arg(note)
        .arg(channel)
        .invoke_async(conn)
        .await?;
    if !forget_here {
        let _: i64 = redis::cmd("HDEL")
            .arg(&home.attempts)
            .arg(&field)
            .query_async(conn)
            .await?;
    }
    if !ack_here {
        let _: i64 = redis::cmd("XACK")
            .arg(&entry.stream)
            .arg(&member.group)
            .arg(&entry.id)
            .query_async(conn)
            .await?;
    }
    counted(reason);
    tracing::warn!(coupon = ?owner.coupon.map(CouponId::get), entry = %entry.id, stream = %entry.stream, user = ?owner.user.map(UserId::get), reason = %text, "entry moved to the dead-letter stream");
    Ok(())
}

/// Records the user as failed unless recorded already (HSETNX), with a dead
/// letter, the failed hash expiring with the coupon's metadata. KEYS: the
/// failed hash, the dead stream, the meta hash (one slot). ARGV: the user, the
/// reason, then the event field's name and value and the position field's name.
static BURY_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end \
         local ttl = redis.call('PTTL', KEYS[3]) \
         if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end \
         redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[4], ARGV[5], '', 'reason', ARGV[2], 'source_id', '') \
         return 1",
    )
});

/// Records `user` of `coupon` as failed with `reason` and a dead letter, when
/// no entry is left to bury (it was deleted), unless the user is recorded
/// failed already (two consumers reconciling at once record it once). The
/// letter's event carries what is known (coupon and user); its position is
/// unknown, so a replay of it is buried again as undecodable. Returns whether
/// it was recorded.
pub async fn bury_user(
    conn: &mut RedisConn,
    layout: &Layout,
    coupon: CouponId,
    user: UserId,
    reason: &DeadReason,
) -> RedisResult<bool> {
    let keys = layout.coupon(coupon);
    let text = reason.to_string();
    let event = IssueEvent {
        coupon_id: coupon,
        user_id: user,
        accepted_at_ms: 0,
        position: 0,
        trace: Default::default(),
    };
    let recorded: bool = BURY_USER
        .key(&keys.failed)
        .key(&keys.dead)
        .key(&keys.meta)
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

/// Shows the dead-letter counter of every reason at 0 from the start: an alert
/// on its `increase()` needs a sample before the first letter (a series that
/// appears at 1 has no increase to see).
pub fn count_from_zero() {
    for reason in DeadReason::LABELS {
        metrics::counter!(shared::metrics::DEAD_LETTERS, "reason" => reason).increment(0);
    }
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
                    stream: "events:{p1}".into(),
                },
                "wrong_stream: event of coupon 2 in stream events:{p1}",
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
        assert_eq!(cases.len(), DeadReason::LABELS.len(), "one case per reason");
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert!(text.starts_with(reason.label()), "{text}");
            assert!(DeadReason::LABELS.contains(&reason.label()), "{text}: counted from 0");
        }
    }
}
