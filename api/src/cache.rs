//! The in-process coupon metadata cache that keeps the issue path off MySQL.
//!
//! A hit costs nothing. A miss reads the coupon's Redis metadata; only when Redis
//! does not have it either does one request (one at a time per process) ask MySQL,
//! and a coupon MySQL does not have is remembered as missing for a short while, so
//! a flood of requests for an unknown id costs one MySQL query a second at most.
//! Metadata never changes after creation, so positive entries never expire.

use shared::{Coupon, CouponId, CouponKeys};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long "MySQL has no such coupon" is believed.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered missing ids, against a scan of random ids.
const MISSING_MAX: usize = 100_000;

/// A cached coupon with its Redis key names, built once rather than per request.
#[derive(Debug)]
pub struct Cached {
    pub coupon: Coupon,
    pub keys: CouponKeys,
}

impl std::ops::Deref for Cached {
    type Target = Coupon;
    fn deref(&self) -> &Coupon {
        &self.coupon
    }
}

#[derive(Default)]
pub struct CouponCache {
    known: RwLock<HashMap<CouponId, Arc<Cached>>>,
    missing: RwLock<HashMap<CouponId, Instant>>,
    /// Serialises MySQL lookups so a burst of misses makes one query.
    pub loading: tokio::sync::Mutex<()>,
}

impl CouponCache {
    pub fn get(&self, id: CouponId) -> Option<Arc<Cached>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is fine.
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.get(&id).cloned()
    }

    pub fn insert(&self, coupon: Coupon) -> Arc<Cached> {
        let coupon = Arc::new(Cached {
            keys: CouponKeys::new(coupon.id),
            coupon,
        });
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known.insert(coupon.id, coupon.clone());
        self.missing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&coupon.id);
        coupon
    }

    /// Whether MySQL said, within [`MISSING_TTL`], that there is no such coupon.
    pub fn recently_missing(&self, id: CouponId) -> bool {
        let missing = self.missing.read().unwrap_or_else(|e| e.into_inner());
        missing.get(&id).is_some_and(|at| at.elapsed() < MISSING_TTL)
    }

    pub fn mark_missing(&self, id: CouponId) {
        let mut missing = self.missing.write().unwrap_or_else(|e| e.into_inner());
        if missing.len() >= MISSING_MAX {
            missing.retain(|_, at| at.elapsed() < MISSING_TTL);
        }
        missing.insert(id, Instant::now());
    }
}
