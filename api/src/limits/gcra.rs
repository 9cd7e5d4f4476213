//! A keyed rate limiter (GCRA, the algorithm of `governor` and redis-cell) in a
//! table of fixed size, so a flood of distinct keys can not grow its memory.
//!
//! Each key holds one instant, its "theoretical arrival time": a request is
//! allowed when that instant is at most `burst` intervals ahead of now, and
//! then moves it one interval on. A key whose instant is past is the same as an
//! absent key, so entries are dropped once past (a sweep of a full shard); if a
//! shard is still full of live keys, a new key is allowed without being
//! remembered (counted as `untracked`) rather than refused: a flood of distinct
//! keys must not lock out people, and the keys already tracked stay limited.
//! `governor`'s keyed limiter grows without bound until swept, hence this.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards, each behind its own lock, so API threads rarely meet.
const SHARDS: usize = 64;

/// A full shard is swept at most this often; in between, new keys go untracked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Allowed, but the table was full: this key is not remembered.
    Untracked,
    /// Over the limit: the next request is allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

/// `per_second` requests a second per key, up to `burst` at once.
pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Nanoseconds between requests at the sustained rate.
    interval: u64,
    /// How far ahead of now a key's instant may be: `burst` intervals.
    tolerance: u64,
    capacity_per_shard: usize,
    epoch: Instant,
}

struct Shard {
    /// Key's hash → its theoretical arrival time, in ns since `epoch`.
    arrivals: Arrivals,
    last_sweep: u64,
}

/// The keys are already randomly keyed SipHash values: hashing them again
/// would cost a second SipHash per request and add nothing.
type Arrivals = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// A hasher that takes a `u64` key as its own hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys reach this table; fold anything else in anyway.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl RateLimiter {
    /// `None` when `per_second` is not above 0 (the limit is off).
    pub fn new(per_second: f64, burst: u32, max_keys: usize) -> Option<Self> {
        if per_second.is_nan() || per_second <= 0.0 {
            return None;
        }
        let interval = (1e9 / per_second).round().max(1.0) as u64;
        let capacity_per_shard = max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    // Allocated once, at full size: no growth under load.
                    arrivals: Arrivals::with_capacity_and_hasher(capacity_per_shard, Default::default()),
                    last_sweep: 0,
                })
            })
            .collect();
        Some(Self {
            shards,
            hasher: RandomState::new(),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
            capacity_per_shard,
            epoch: Instant::now(),
        })
    }

    /// Counts one request of `key` now.
    pub fn check(&self, key: impl Hash) -> Verdict {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: impl Hash, at: Instant) -> Verdict {
        let now = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        // The table holds the key's hash: 64 bits of a randomly keyed SipHash,
        // which no client can aim at another's.
        let key = self.hasher.hash_one(key);
        // The shard from bits the table does not use: it places a key by its
        // low bits and tags it with its top seven.
        let index = ((key >> 32) % SHARDS as u64) as usize;
        // A poisoned lock only means another request panicked mid-update of
        // one u64: the table is still usable.
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let arrival = shard.arrivals.get(&key).copied().unwrap_or(now).max(now);
        let next = arrival + self.interval;
        if next > now + self.tolerance {
            let retry_after = Duration::from_nanos(next - self.tolerance - now);
            return Verdict::Limited { retry_after };
        }
        if let Some(slot) = shard.arrivals.get_mut(&key) {
            *slot = next;
            return Verdict::Allowed;
        }
        if shard.arrivals.len() >= self.capacity_per_shard && !shard.sweep(now, self.capacity_per_shard) {
            return Verdict::Untracked;
        }
        shard.arrivals.insert(key, next);
        Verdict::Allowed
    }

    /// Keys remembered now (for tests and the memory bound).
    pub fn tracked(&self) -> usize {
        self.sum(|shard| shard.arrivals.len())
    }

    /// Slots allocated for keys: fixed at construction.
    pub fn allocated(&self) -> usize {
        self.sum(|shard| shard.arrivals.capacity())
    }

    fn sum(&self, of: impl Fn(&Shard) -> usize) -> usize {
        self.shards
            .iter()
            .map(|shard| of(&shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .sum()
    }
}

impl Shard {
    /// Drops keys whose instant is past; whether fewer than `limit` are left.
    fn sweep(&mut self, now: u64, limit: usize) -> bool {
        if now.saturating_sub(self.last_sweep) < SWEEP_EVERY.as_nanos() as u64 && self.last_sweep != 0 {
            return false;
        }
        self.last_sweep = now.max(1);
        // Into a new table of the same size rather than `retain`: removals
        // leave tombstones that would make the next insert grow the table.
        let mut live = Arrivals::with_capacity_and_hasher(limit, Default::default());
        live.extend(self.arrivals.drain().filter(|(_, arrival)| *arrival > now));
        self.arrivals = live;
        self.arrivals.len() < limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_one_interval_per_request() {
        let limiter = RateLimiter::new(5.0, 5, 1000).expect("5/s is a limit");
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check_at(7, start), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after } = limiter.check_at(7, start) else {
            panic!("the sixth request at once is over the burst");
        };
        assert_eq!(retry_after, Duration::from_millis(200));
        assert_eq!(
            limiter.check_at(8, start),
            Verdict::Allowed,
            "another key has its own burst"
        );
        assert_eq!(
            limiter.check_at(7, start + Duration::from_millis(200)),
            Verdict::Allowed
        );
        assert!(matches!(
            limiter.check_at(7, start + Duration::from_millis(200)),
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        assert!(RateLimiter::new(0.0, 5, 10).is_none());
    }

    #[test]
    fn a_million_distinct_keys_stay_within_the_table_and_a_hammering_key_stays_limited() {
        let limiter = RateLimiter::new(5.0, 5, 100_000).expect("a limit");
        let allocated = limiter.allocated();
        let start = Instant::now();
        for _ in 0..5 {
            limiter.check_at(u64::MAX, start);
        }
        let mut untracked = 0;
        for key in 0..1_000_000u64 {
            // The flood takes 2 s: swept keys are past after 1 s.
            let at = start + Duration::from_micros(key * 2);
            if limiter.check_at(key, at) == Verdict::Untracked {
                untracked += 1;
            }
            if key % 100_000 == 0 {
                assert!(
                    matches!(limiter.check_at(u64::MAX, at), Verdict::Limited { .. }),
                    "the hammering key is limited whatever the flood"
                );
                limiter.check_at(u64::MAX, at + Duration::from_millis(200));
            }
        }
        assert!(limiter.tracked() <= 100_000 + SHARDS, "{} keys held", limiter.tracked());
        assert_eq!(limiter.allocated(), allocated, "the table never grew");
        assert!(
            untracked > 0,
            "a flood faster than the table holds leaves some keys untracked"
        );
        assert!(untracked < 900_000, "sweeps made room: {untracked} untracked");
    }
}
