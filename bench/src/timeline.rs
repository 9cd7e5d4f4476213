//! The run over time, for the HTML report: answers by kind and their latency in
//! time buckets by when each request was due (sent, in the closed model), and
//! when each coupon first answered `sold_out`. Memory stays bounded whatever
//! the run's length: the buckets start 10 ms wide, and when the run outgrows
//! [`MAX_BUCKETS`] neighbours are merged and the width doubles.

use hdrhistogram::{CreationError, Histogram};
use std::time::Duration;

/// The first bucket width: a short sale's sell-out is still visible.
const FIRST_WIDTH: Duration = Duration::from_millis(10);
/// At most this many buckets (points of a chart's line) per tally.
pub const MAX_BUCKETS: usize = 400;
/// One significant digit (within about 6 %) is plenty for a line on a chart,
/// and keeps a bucket's histogram near 2 KiB (three digits would take 100 KiB:
/// a few hundred buckets per worker shard is too much of that).
const SIGNIFICANT_DIGITS: u8 = 1;
/// The same range as the run's own latency histogram (µs).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What an answer was, as the report's charts tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Accepted,
    SoldOut,
    AlreadyIssued,
    /// Any other 4xx (outside the period, not found, rate limited, ...).
    OtherRejection,
    /// No answer, or a 5xx: the request's fate is unknown.
    Error,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Accepted,
        Kind::SoldOut,
        Kind::AlreadyIssued,
        Kind::OtherRejection,
        Kind::Error,
    ];

    /// The name on the charts.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Accepted => "accepted (202)",
            Kind::SoldOut => "sold out",
            Kind::AlreadyIssued => "already issued",
            Kind::OtherRejection => "other 4xx",
            Kind::Error => "errors (5xx, no answer)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One time slice of the run.
#[derive(Clone, Default)]
pub struct Bucket {
    /// Answers by [`Kind`], in [`Kind::ALL`]'s order.
    pub answers: [u64; Kind::ALL.len()],
    /// Latency in µs; `None` until the bucket's first request.
    pub latency: Option<Histogram<u32>>,
}

impl Bucket {
    /// How many answers of `kind`.
    pub fn count(&self, kind: Kind) -> u64 {
        self.answers.get(kind.index()).copied().unwrap_or(0)
    }

    fn add(&mut self, other: Bucket) {
        for (mine, theirs) in self.answers.iter_mut().zip(other.answers) {
            *mine += theirs;
        }
        match (&mut self.latency, other.latency) {
            // Same bounds, so adding can not fail.
            (Some(mine), Some(theirs)) => drop(mine.add(&theirs)),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

/// Answers and latency over time.
#[derive(Clone)]
pub struct Timeline {
    width: Duration,
    buckets: Vec<Bucket>,
    /// Cloned for each new bucket (its creation checked once, in [`Timeline::new`]).
    empty: Histogram<u32>,
    /// Per coupon (index into the run's coupons): when the earliest request
    /// answered `sold_out` was due, from the start of the load.
    pub sold_out_at: Vec<Option<Duration>>,
}

impl Timeline {
    pub fn new(coupons: usize) -> Result<Self, CreationError> {
        Ok(Self {
            width: FIRST_WIDTH,
            buckets: Vec::new(),
            empty: Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)?,
            sold_out_at: vec![None; coupons],
        })
    }

    /// The width of every bucket.
    pub fn width(&self) -> Duration {
        self.width
    }

    /// The buckets from the start of the load, each [`Timeline::width`] wide.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Counts a request of coupon number `coupon`, due `at` after the start of
    /// the load, answered as `kind` after `latency`.
    pub fn record(&mut self, coupon: usize, at: Duration, kind: Kind, latency: Duration) {
        while self.index(at) >= MAX_BUCKETS {
            self.coarsen();
        }
        let index = self.index(at);
        if self.buckets.len() <= index {
            self.buckets.resize_with(index + 1, Bucket::default);
        }
        if let Some(bucket) = self.buckets.get_mut(index) {
            if let Some(n) = bucket.answers.get_mut(kind.index()) {
                *n += 1;
            }
            let histogram = bucket.latency.get_or_insert_with(|| self.empty.clone());
            histogram.saturating_record(crate::stats::micros(latency));
        }
        if kind == Kind::SoldOut {
            if let Some(first) = self.sold_out_at.get_mut(coupon) {
                *first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
    }

    /// A copy with at most `max` buckets (neighbours merged): fewer, fuller
    /// buckets for a chart that would be noise at the run's resolution.
    pub fn coarsened(&self, max: usize) -> Timeline {
        let mut coarse = self.clone();
        while coarse.buckets.len() > max.max(1) {
            coarse.coarsen();
        }
        coarse
    }

    /// Adds `other` (another shard's) into `self`, at the wider of the two widths.
    pub fn merge(&mut self, mut other: Timeline) {
        while self.width < other.width {
            self.coarsen();
        }
        while other.width < self.width {
            other.coarsen();
        }
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize_with(other.buckets.len(), Bucket::default);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            mine.add(theirs);
        }
        if self.sold_out_at.len() < other.sold_out_at.len() {
            self.sold_out_at.resize(other.sold_out_at.len(), None);
        }
        for (mine, theirs) in self.sold_out_at.iter_mut().zip(other.sold_out_at) {
            *mine = match (*mine, theirs) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    fn index(&self, at: Duration) -> usize {
        usize::try_from(at.as_nanos() / self.width.as_nanos().max(1)).unwrap_or(usize::MAX)
    }

    /// Doubles the width: each pair of neighbours becomes one bucket.
    fn coarsen(&mut self) {
        self.width *= 2;
        let old = std::mem::take(&mut self.buckets);
        let mut pairs = old.into_iter();
        while let Some(mut first) = pairs.next() {
            if let Some(second) = pairs.next() {
                first.add(second);
            }
            self.buckets.push(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_keeps_at_most_max_buckets_and_every_answer() {
        let mut timeline = Timeline::new(1).unwrap();
        for ms in 0..100_000u64 {
            timeline.record(0, Duration::from_millis(ms), Kind::Accepted, Duration::from_millis(1));
        }
        assert!(timeline.buckets().len() <= MAX_BUCKETS, "{}", timeline.buckets().len());
        assert_eq!(timeline.width(), Duration::from_millis(320));
        let total: u64 = timeline.buckets().iter().map(|b| b.count(Kind::Accepted)).sum();
        assert_eq!(total, 100_000);
        let first = timeline.buckets()[0].latency.as_ref().unwrap();
        assert_eq!(first.len(), 320);
    }

    #[test]
    fn merged_shards_of_different_widths_line_up_and_keep_the_first_sell_out() {
        let mut short = Timeline::new(2).unwrap();
        let mut long = Timeline::new(2).unwrap();
        short.record(1, Duration::from_millis(15), Kind::SoldOut, Duration::from_micros(10));
        short.record(1, Duration::from_millis(25), Kind::Error, Duration::from_micros(10));
        long.record(1, Duration::from_millis(40), Kind::SoldOut, Duration::from_micros(10));
        long.record(0, Duration::from_secs(10), Kind::Accepted, Duration::from_micros(10));
        short.merge(long);
        assert_eq!(short.width(), Duration::from_millis(40));
        assert_eq!(short.buckets()[0].count(Kind::SoldOut), 1);
        assert_eq!(short.buckets()[0].count(Kind::Error), 1);
        assert_eq!(short.buckets()[1].count(Kind::SoldOut), 1);
        assert_eq!(short.buckets().last().unwrap().count(Kind::Accepted), 1);
        assert_eq!(short.sold_out_at, vec![None, Some(Duration::from_millis(15))]);
        let coarse = short.coarsened(100);
        assert_eq!(
            (coarse.width(), coarse.buckets().len()),
            (Duration::from_millis(160), 63)
        );
        assert_eq!(coarse.buckets()[0].count(Kind::SoldOut), 2);
    }
}
