//! Every Redis key name of the system, built in one place, and the layout that
//! maps coupons to partition streams.
//!
//! Events reach consumers through a fixed number of partition streams, the way
//! Kafka partitions a topic: coupon `c` belongs to partition `c mod P`, so a
//! consumer's work follows the events written, never the number of coupons. A
//! coupon's own keys and its partition's keys carry the partition's hash tag
//! `{p<n>}`, so the issue script (set + partition stream) and every multi-key
//! command stay in one Redis Cluster slot. `P` is fixed for a deployment
//! (`STREAM_PARTITIONS`); every process checks it against the value recorded in
//! Redis at first start ([`LAYOUT_KEY`]).
//!
//! [`LegacyKeys`] names the layout before partitions (one stream per coupon,
//! tag `{<coupon_id>}`), which consumers drain after an upgrade.

use crate::ids::CouponId;

/// Where the partition count of a deployment is recorded.
pub const LAYOUT_KEY: &str = "coupon-rush:stream-partitions";

/// How coupons map to partition streams; fixed for a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    partitions: u16,
}

/// A partition count outside what the layout allows.
#[derive(Debug, thiserror::Error)]
#[error("STREAM_PARTITIONS must be 1 to {max}, not {0}", max = Layout::MAX_PARTITIONS)]
pub struct PartitionsOutOfRange(pub u32);

impl Default for Layout {
    fn default() -> Self {
        Self {
            partitions: Self::DEFAULT_PARTITIONS,
        }
    }
}

impl Layout {
    /// Enough for one Redis and for spreading over the shards of a cluster.
    pub const DEFAULT_PARTITIONS: u16 = 16;
    pub const MAX_PARTITIONS: u16 = 1024;

    pub fn new(partitions: u32) -> Result<Self, PartitionsOutOfRange> {
        match u16::try_from(partitions) {
            Ok(p) if (1..=Self::MAX_PARTITIONS).contains(&p) => Ok(Self { partitions: p }),
            _ => Err(PartitionsOutOfRange(partitions)),
        }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition a coupon's events go to.
    pub fn partition_of(&self, coupon: CouponId) -> u16 {
        // The remainder is below `partitions`, a u16.
        (coupon.get().rem_euclid(i64::from(self.partitions))) as u16
    }

    /// The keys of one coupon (its partition's included).
    pub fn coupon(&self, coupon: CouponId) -> CouponKeys {
        let partition = self.partition(self.partition_of(coupon));
        let tag = format!("coupon:{{p{}}}:{coupon}", partition.index);
        CouponKeys {
            issued: format!("{tag}:issued"),
            meta: format!("{tag}:meta"),
            failed: format!("{tag}:failed"),
            issued_at: format!("{tag}:issued-at"),
            rebuild_issued_at: format!("{tag}:rebuild-issued-at"),
            rebuild_lock: format!("{tag}:rebuild"),
            rebuild_set: format!("{tag}:rebuild-set"),
            events: partition.events.clone(),
            dead: partition.dead.clone(),
            attempts: partition.attempts.clone(),
            partition,
        }
    }

    /// The keys of partition `index` (below [`Layout::partitions`]).
    pub fn partition(&self, index: u16) -> PartitionKeys {
        let tag = format!("{{p{index}}}");
        PartitionKeys {
            index,
            events: format!("events:{tag}"),
            dead: format!("dead:{tag}"),
            attempts: format!("attempts:{tag}"),
            written: format!("written:{tag}"),
        }
    }

    /// Every partition, in order.
    pub fn all(&self) -> impl Iterator<Item = PartitionKeys> + '_ {
        (0..self.partitions).map(|i| self.partition(i))
    }

    /// The partition whose events stream `key` is, if it is one of this layout.
    pub fn partition_of_stream(&self, key: &str) -> Option<u16> {
        let index: u16 = key.strip_prefix("events:{p")?.strip_suffix('}')?.parse().ok()?;
        (index < self.partitions).then_some(index)
    }
}

/// The keys of one partition, shared by every coupon mapped to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionKeys {
    pub index: u16,
    /// STREAM of issue events of the partition's coupons, read by the group.
    pub events: String,
    /// STREAM of events given up on, with the reason.
    pub dead: String,
    /// HASH entry id -> attempts at an entry delivered more than
    /// `MAX_DELIVERIES` times, each made alone (the consumer's isolation of a
    /// possible poison entry); deleted once it is acked or buried.
    pub attempts: String,
    /// Pub/sub channel on which an ack announces the users it recorded as
    /// written (issued) or failed: [`StatusNote`]. Not a key: a channel.
    pub written: String,
}

impl PartitionKeys {
    /// SCAN pattern of the metadata keys of the partition's coupons (all in
    /// the partition's slot).
    pub fn meta_pattern(&self) -> String {
        format!("coupon:{{p{}}}:*:meta", self.index)
    }

    /// The coupon whose metadata key `key` is, if it is one of this partition's.
    pub fn coupon_of_meta_key(&self, key: &str) -> Option<CouponId> {
        let prefix = format!("coupon:{{p{}}}:", self.index);
        key.strip_prefix(&prefix)?.strip_suffix(":meta")?.parse().ok()
    }
}

/// What an ack (or a burial) publishes on its partition's
/// [`PartitionKeys::written`] channel: the coupon, then the users whose status
/// just became final, separated by spaces (`"42 7 8 9"`). The API's long-polls
/// wake on it; built in Lua by the consumer's scripts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusNote {
    pub coupon: CouponId,
    pub users: Vec<i64>,
}

impl StatusNote {
    /// The note in a message's payload, if it is one.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut words = payload.split(' ');
        let coupon = words.next()?.parse().ok()?;
        let users = words.map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(Self { coupon, users })
    }
}

/// The keys of one coupon, all in its partition's slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouponKeys {
    /// SET of accepted user ids; its cardinality is the issued quantity.
    pub issued: String,
    /// HASH of the coupon's metadata; its absence means Redis lost (or expired)
    /// the coupon's state and it must be rebuilt from MySQL before anything
    /// is accepted.
    pub meta: String,
    /// HASH user id -> reason, for users whose accepted request was given up on.
    pub failed: String,
    /// HASH user id -> when the user's row was written (unix ms, MySQL's
    /// `issued_at`), set by the consumer's ack in the step that acks the
    /// entry: the status endpoint answers `issued` from it without MySQL.
    pub issued_at: String,
    /// HASH the rebuild fills from MySQL's `issued_at` before it installs it.
    pub rebuild_issued_at: String,
    /// Lock held by the one API instance that rebuilds the coupon's state.
    pub rebuild_lock: String,
    /// SET the rebuild fills from MySQL before it installs it in one step.
    pub rebuild_set: String,
    /// The partition's events stream (see [`PartitionKeys::events`]).
    pub events: String,
    /// The partition's dead-letter stream.
    pub dead: String,
    /// The partition's isolated-attempts hash.
    pub attempts: String,
    pub partition: PartitionKeys,
}

/// The keys of a coupon in the layout before partitions: one stream per
/// coupon. Only read to drain what an upgrade left behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyKeys {
    pub events: String,
    pub meta: String,
    pub issued: String,
    /// The coupon's dead-letter stream.
    pub dead: String,
    /// The coupon's users given up on, with why.
    pub failed: String,
}

/// Which of a coupon's keys of the layout before partitions a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyKind {
    Events,
    Meta,
    Issued,
    Dead,
    Failed,
    /// Any other key under the coupon's tag (a rebuild lock, an attempts hash).
    Other,
}

impl LegacyKeys {
    /// SCAN pattern of every key of the layout before partitions (a digit after
    /// the brace: the partition layout's tags start with `p`).
    pub const PATTERN: &'static str = "coupon:{[0-9]*}:*";

    pub fn new(coupon: CouponId) -> Self {
        let tag = format!("coupon:{{{coupon}}}");
        Self {
            events: format!("{tag}:events"),
            meta: format!("{tag}:meta"),
            issued: format!("{tag}:issued"),
            dead: format!("{tag}:dead"),
            failed: format!("{tag}:failed"),
        }
    }

    /// The coupon and kind of a key of the layout before partitions, if it is one.
    pub fn parse(key: &str) -> Option<(CouponId, LegacyKind)> {
        let (coupon, suffix) = key.strip_prefix("coupon:{")?.split_once("}:")?;
        let kind = match suffix {
            "events" => LegacyKind::Events,
            "meta" => LegacyKind::Meta,
            "issued" => LegacyKind::Issued,
            "dead" => LegacyKind::Dead,
            "failed" => LegacyKind::Failed,
            _ => LegacyKind::Other,
        };
        Some((coupon.parse().ok()?, kind))
    }

    /// The coupon whose legacy events stream this is, if it is one.
    pub fn coupon_of_events_stream(key: &str) -> Option<CouponId> {
        match Self::parse(key)? {
            (coupon, LegacyKind::Events) => Some(coupon),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> CouponId {
        CouponId::new(n).unwrap()
    }

    #[test]
    fn a_coupon_and_its_partition_share_one_hash_tag() {
        let layout = Layout::new(16).unwrap();
        let keys = layout.coupon(id(42));
        assert_eq!(layout.partition_of(id(42)), 10);
        for key in [
            &keys.issued,
            &keys.meta,
            &keys.failed,
            &keys.issued_at,
            &keys.rebuild_issued_at,
            &keys.rebuild_lock,
            &keys.rebuild_set,
        ] {
            assert!(key.starts_with("coupon:{p10}:42:"), "{key}");
        }
        for key in [&keys.events, &keys.dead, &keys.attempts, &keys.partition.written] {
            assert!(key.ends_with(":{p10}"), "{key}");
        }
        assert_eq!(layout.partition_of_stream(&keys.events), Some(10));
        assert_eq!(layout.partition_of_stream(&keys.dead), None);
        assert_eq!(Layout::new(8).unwrap().partition_of_stream(&keys.events), None);
        assert_eq!(keys.partition.coupon_of_meta_key(&keys.meta), Some(id(42)));
        assert_eq!(keys.partition.coupon_of_meta_key(&keys.issued), None);
        assert_eq!(keys.partition.meta_pattern(), "coupon:{p10}:*:meta");
    }

    #[test]
    fn coupons_spread_over_every_partition_and_the_count_is_bounded() {
        let layout = Layout::new(4).unwrap();
        let used: std::collections::BTreeSet<u16> = (1..=8).map(|n| layout.partition_of(id(n))).collect();
        assert_eq!(used.len(), 4);
        assert_eq!(layout.all().count(), 4);
        assert!(Layout::new(0).is_err() && Layout::new(1025).is_err() && Layout::new(1024).is_ok());
    }

    #[test]
    fn a_status_note_names_its_coupon_and_users() {
        let note = StatusNote::parse("42 7 8").unwrap();
        assert_eq!((note.coupon, note.users), (id(42), vec![7, 8]));
        assert_eq!(StatusNote::parse("42").unwrap().users, Vec::<i64>::new());
        assert!(StatusNote::parse("x 1").is_none() && StatusNote::parse("42 y").is_none());
    }

    #[test]
    fn legacy_streams_name_their_coupon() {
        let legacy = LegacyKeys::new(id(42));
        assert_eq!(legacy.events, "coupon:{42}:events");
        assert_eq!(LegacyKeys::coupon_of_events_stream(&legacy.events), Some(id(42)));
        assert_eq!(LegacyKeys::coupon_of_events_stream("events:{p1}"), None);
    }
}
