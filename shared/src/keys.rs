//! Every Redis key name of the system, built in one place.
//!
//! All keys of one coupon carry the hash tag `{<coupon_id>}` so that the issue
//! script and every multi-key command for that coupon stay in one cluster slot.

use crate::ids::CouponId;

/// The keys of one coupon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouponKeys {
    /// SET of accepted user ids; its cardinality is the issued quantity.
    pub issued: String,
    /// STREAM of issue events, read by the consumer group.
    pub events: String,
    /// HASH of the coupon's metadata; its absence means Redis lost the coupon's
    /// state and it must be rebuilt from MySQL before anything is accepted.
    pub meta: String,
    /// STREAM of events given up on, with the reason.
    pub dead: String,
    /// HASH user id -> reason, for users whose accepted request was dead-lettered.
    pub failed: String,
    /// Lock held by the one API instance that rebuilds the coupon's state.
    pub rebuild_lock: String,
    /// SET the rebuild fills from MySQL before it installs it in one step.
    pub rebuild_set: String,
    /// HASH entry id -> attempts at an entry of the events stream delivered
    /// more than `MAX_DELIVERIES` times, each made alone (the consumer's
    /// isolation of a possible poison entry); deleted once it is acked or buried.
    pub attempts: String,
}

impl CouponKeys {
    pub fn new(coupon: CouponId) -> Self {
        let tag = format!("coupon:{{{coupon}}}");
        Self {
            issued: format!("{tag}:issued"),
            events: format!("{tag}:events"),
            meta: format!("{tag}:meta"),
            dead: format!("{tag}:dead"),
            failed: format!("{tag}:failed"),
            rebuild_lock: format!("{tag}:rebuild"),
            rebuild_set: format!("{tag}:rebuild-set"),
            attempts: format!("{tag}:attempts"),
        }
    }

    /// The coupon whose events stream this is, if it is one.
    pub fn coupon_of_events_stream(key: &str) -> Option<CouponId> {
        key.strip_prefix("coupon:{")?.strip_suffix("}:events")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_of_a_coupon_share_one_hash_tag() {
        let id = CouponId::new(42).unwrap();
        let keys = CouponKeys::new(id);
        for key in [&keys.issued, &keys.events, &keys.meta, &keys.dead, &keys.failed] {
            assert!(key.starts_with("coupon:{42}:"), "{key}");
        }
        assert_eq!(CouponKeys::coupon_of_events_stream(&keys.events), Some(id));
        assert_eq!(CouponKeys::coupon_of_events_stream(&keys.issued), None);
    }
}
