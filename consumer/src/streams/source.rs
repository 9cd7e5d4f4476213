//! What a stream the consumer reads is: one of the layout's partition streams,
//! or a coupon's stream of the layout before partitions, drained after an
//! upgrade. Where an entry's dead letter and isolated attempts go follows from it.

use shared::{CouponId, Layout, LegacyKeys, PartitionKeys};

/// A stream the consumer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Partition `n` of the layout: events of every coupon mapped to it.
    Partition(u16),
    /// One coupon's stream of the layout before partitions (an upgrade's leftover).
    Legacy(CouponId),
}

impl Source {
    /// What `stream` is, if it is a stream of either layout.
    pub fn of(layout: &Layout, stream: &str) -> Option<Self> {
        layout
            .partition_of_stream(stream)
            .map(Source::Partition)
            .or_else(|| LegacyKeys::coupon_of_events_stream(stream).map(Source::Legacy))
    }

    /// The stream's key.
    pub fn stream(&self, layout: &Layout) -> String {
        match *self {
            Source::Partition(index) => layout.partition(index).events,
            Source::Legacy(coupon) => LegacyKeys::new(coupon).events,
        }
    }

    /// The partition whose dead-letter stream and attempts hash serve this
    /// stream's entries (a legacy stream's: its coupon's partition).
    pub fn partition(&self, layout: &Layout) -> PartitionKeys {
        match *self {
            Source::Partition(index) => layout.partition(index),
            Source::Legacy(coupon) => layout.coupon(coupon).partition,
        }
    }

    /// Whether the stream shares its partition's slot, so that acking its
    /// entries can go in one script with the partition's keys.
    pub fn is_partition(&self) -> bool {
        matches!(self, Source::Partition(_))
    }

    /// Whether an event of `coupon` belongs in this stream.
    pub fn holds(&self, layout: &Layout, coupon: CouponId) -> bool {
        match *self {
            Source::Partition(index) => layout.partition_of(coupon) == index,
            Source::Legacy(own) => own == coupon,
        }
    }

    /// The coupon every entry of the stream is of, when the stream says.
    pub fn coupon(&self) -> Option<CouponId> {
        match *self {
            Source::Partition(_) => None,
            Source::Legacy(coupon) => Some(coupon),
        }
    }

    /// The field counting isolated attempts at entry `id` in the partition's
    /// attempts hash: the id itself, prefixed by the stream for a legacy stream
    /// (two streams may hand out the same id).
    pub fn attempts_field(&self, layout: &Layout, id: &str) -> String {
        match self {
            Source::Partition(_) => id.to_string(),
            Source::Legacy(_) => format!("{}/{id}", self.stream(layout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_and_legacy_streams_are_told_apart_and_hold_their_own_events() {
        let layout = Layout::new(4).unwrap();
        let coupon = |n| CouponId::new(n).unwrap();
        let partition = Source::of(&layout, &layout.partition(2).events).unwrap();
        assert_eq!(partition, Source::Partition(2));
        assert!(partition.holds(&layout, coupon(6)) && !partition.holds(&layout, coupon(7)));
        assert_eq!(partition.attempts_field(&layout, "1-0"), "1-0");

        let legacy = Source::of(&layout, "coupon:{7}:events").unwrap();
        assert_eq!(legacy, Source::Legacy(coupon(7)));
        assert!(legacy.holds(&layout, coupon(7)) && !legacy.holds(&layout, coupon(3)));
        assert_eq!(legacy.partition(&layout), layout.partition(3));
        assert_eq!(legacy.stream(&layout), "coupon:{7}:events");
        assert_eq!(legacy.attempts_field(&layout, "1-0"), "coupon:{7}:events/1-0");
        assert_eq!(Source::of(&layout, "events:{p9}"), None);
        assert_eq!(Source::of(&layout, "dead:{p1}"), None);
    }
}
