//! Finding a coupon, read top to bottom: process memory, then the coupon's Redis
//! metadata hash, then (one request at a time per process) MySQL, rebuilding the
//! coupon's Redis state from it ([`crate::rebuild`]).
//!
//! - Memory: a hit costs nothing. An operator may change a coupon
//!   (`PATCH /coupons/{id}`), so a known coupon is believed for [`FRESH_FOR`],
//!   then read again from Redis: every instance shows a change within a second.
//!   (What the issue script decides, period, pause and quantity, it reads from
//!   Redis itself, so a change is in force there at once.) A coupon MySQL does
//!   not have is remembered as missing for [`MISSING_TTL`], so a flood of
//!   requests for an unknown id costs one MySQL query a second at most.
//! - Redis: the issue script refuses everything while the metadata hash is
//!   missing, and the rebuild installs that hash and the set in one step, so no
//!   request is decided on a half-filled issued set.
//! - MySQL: the source of truth, read only when Redis lost the coupon.

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::CouponDraft;
use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId, CouponKeys, Layout};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a coupon's metadata in memory is believed.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long "MySQL has no such coupon" is believed.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered missing ids, against a scan of random ids.
const MISSING_MAX: usize = 100_000;

/// The coupon's metadata, from memory when possible. Only a coupon that Redis
/// does not know costs a MySQL query, one at a time per process; if MySQL has
/// it, its Redis state is rebuilt before it is returned.
pub async fn coupon(app: &AppState, id: CouponId) -> Result<Arc<Cached>, ApiError> {
    if let Some(coupon) = app.cache.recall(id)? {
        return Ok(coupon);
    }
    if let Some(coupon) = read_meta(&mut app.redis(), id, &app.layout.coupon(id)).await? {
        return Ok(app.cache.remember(coupon));
    }
    let _one_at_a_time = app.cache.loading.lock().await;
    // Another request may have loaded it (or found it missing) while we waited.
    if let Some(coupon) = app.cache.recall(id)? {
        return Ok(coupon);
    }
    let Some(coupon) = read_row(app, id).await? else {
        app.cache.mark_missing(id);
        return Err(ApiError::CouponNotFound);
    };
    crate::rebuild::rebuild(app, &coupon).await?;
    Ok(app.cache.remember(coupon))
}

/// A coupon in memory, with its Redis key names built once rather than per request.
#[derive(Debug)]
pub struct Cached {
    pub coupon: Coupon,
    pub keys: CouponKeys,
    /// When it was read.
    loaded: Instant,
}

impl std::ops::Deref for Cached {
    type Target = Coupon;
    fn deref(&self) -> &Coupon {
        &self.coupon
    }
}

/// The memory tier: known coupons and recently missing ids.
pub struct CouponCache {
    /// Where each coupon's keys are.
    layout: Layout,
    known: RwLock<HashMap<CouponId, Arc<Cached>>>,
    missing: RwLock<HashMap<CouponId, Instant>>,
    /// Serialises MySQL lookups so a burst of misses makes one query.
    loading: tokio::sync::Mutex<()>,
}

impl CouponCache {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            known: RwLock::default(),
            missing: RwLock::default(),
            loading: tokio::sync::Mutex::default(),
        }
    }

    /// `Some` if known, [`ApiError::CouponNotFound`] if MySQL said so within
    /// [`MISSING_TTL`], `None` if memory cannot tell.
    fn recall(&self, id: CouponId) -> Result<Option<Arc<Cached>>, ApiError> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is fine.
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        if let Some(coupon) = known.get(&id).filter(|c| c.loaded.elapsed() < FRESH_FOR) {
            return Ok(Some(coupon.clone()));
        }
        let missing = self.missing.read().unwrap_or_else(|e| e.into_inner());
        match missing.get(&id) {
            Some(at) if at.elapsed() < MISSING_TTL => Err(ApiError::CouponNotFound),
            _ => Ok(None),
        }
    }

    /// Keeps `coupon` for [`FRESH_FOR`] (and forgets that it was missing).
    pub fn remember(&self, coupon: Coupon) -> Arc<Cached> {
        let coupon = Arc::new(Cached {
            keys: self.layout.coupon(coupon.id),
            coupon,
            loaded: Instant::now(),
        });
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        known.insert(coupon.id, coupon.clone());
        self.missing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&coupon.id);
        coupon
    }

    fn mark_missing(&self, id: CouponId) {
        let mut missing = self.missing.write().unwrap_or_else(|e| e.into_inner());
        if missing.len() >= MISSING_MAX {
            missing.retain(|_, at| at.elapsed() < MISSING_TTL);
        }
        missing.insert(id, Instant::now());
    }
}

/// The coupon as Redis stores it in its metadata hash, if the hash is there.
async fn read_meta(redis: &mut RedisConn, id: CouponId, keys: &CouponKeys) -> Result<Option<Coupon>, ApiError> {
    let fields: HashMap<String, String> = redis.hgetall(&keys.meta).await?;
    Ok(parse_meta(id, &fields))
}

fn parse_meta(id: CouponId, fields: &HashMap<String, String>) -> Option<Coupon> {
    let ms =
        |name: &str| -> Option<DateTime<Utc>> { Utc.timestamp_millis_opt(fields.get(name)?.parse().ok()?).single() };
    Some(Coupon {
        id,
        name: fields.get("name")?.clone(),
        total_quantity: fields.get("total_quantity")?.parse().ok()?,
        issue_start: ms("issue_start_ms")?,
        issue_end: ms("issue_end_ms")?,
        paused: fields.get("paused").is_some_and(|p| p == "1"),
    })
}

/// The coupon, if MySQL has it.
async fn read_row(app: &AppState, id: CouponId) -> Result<Option<Coupon>, ApiError> {
    let row: Option<CouponDraft> =
        sqlx::query_as("SELECT name, total_quantity, issue_start, issue_end, paused FROM coupons WHERE id = ?")
            .bind(id.get())
            .fetch_optional(&app.db)
            .await?;
    Ok(row.map(|row| row.with_id(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_metadata_reads_as_missing() {
        let id = CouponId::new(1).unwrap();
        let mut fields: HashMap<String, String> = [
            ("name", "x"),
            ("total_quantity", "5"),
            ("issue_start_ms", "0"),
            ("issue_end_ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(parse_meta(id, &fields).map(|c| c.total_quantity), Some(5));
        fields.remove("issue_end_ms");
        assert_eq!(parse_meta(id, &fields), None);
    }
}
