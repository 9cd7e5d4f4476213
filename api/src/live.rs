//! The live counters behind `GET /coupons/{coupon_id}/live`.
//!
//! A crowd watches one coupon, so what a watcher costs Redis must not grow with
//! the crowd: one ticker task per watched coupon per process reads the coupon
//! once every [`TICK`] (one pipeline) and publishes the snapshot on a
//! `tokio::sync::watch` channel that every watcher of that coupon in the process
//! shares. A watcher wakes only when the snapshot changed, and a slow one skips
//! to the latest: at most one event per tick. The ticker stops at the first tick
//! that finds no watcher left (deciding that and subscribing happen under one
//! lock, so a watcher never joins a ticker that is leaving).
//!
//! Watchers are bounded per process ([`Hub::admit`]): each holds a connection,
//! and buyers need connections too. On shutdown every stream ends
//! ([`Hub::shut_down`]) so the process exits promptly instead of waiting for
//! streams that never end.

use crate::app::AppState;
use crate::error::ApiError;
use crate::lookup::Cached;
use crate::{rebuild, store};
use serde::Serialize;
use shared::CouponId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// How often a watched coupon is read, and so the shortest time between two
/// events of one stream.
pub const TICK: Duration = Duration::from_millis(100);

/// What a watcher is told: the coupon's counts and where its sale stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    #[schema(value_type = i64)]
    pub coupon_id: CouponId,
    pub total_quantity: i64,
    /// Accepted requests so far (Redis), as `GET /coupons/{coupon_id}` counts them.
    pub issued_quantity: i64,
    /// `total_quantity - issued_quantity`; never below 0.
    pub remaining: i64,
    /// The issue period as the issue script judges it (by Redis' clock).
    pub period: Period,
    /// Paused by an operator: requests answer `409 issue_paused`.
    pub paused: bool,
}

/// Where the issue period stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Before `issue_start`: requests answer `409 issue_period_not_started`.
    NotStarted,
    /// Requests are decided on quantity.
    Open,
    /// From `issue_end` on: requests answer `409 issue_period_ended`.
    Ended,
}

impl Period {
    fn at(now_ms: i64, start_ms: i64, end_ms: i64) -> Self {
        match now_ms {
            now if now < start_ms => Period::NotStarted,
            now if now < end_ms => Period::Open,
            _ => Period::Ended,
        }
    }
}

/// The latest snapshot of one coupon; `None` until the first read.
pub type Feed = watch::Receiver<Option<Snapshot>>;

/// This process' watched coupons, its watcher bound and its shutdown switch.
pub struct Hub {
    tickers: Mutex<HashMap<CouponId, watch::Sender<Option<Snapshot>>>>,
    /// One permit per watcher.
    watchers: Arc<Semaphore>,
    /// `true` once the process shuts down: every stream ends.
    stopping: watch::Sender<bool>,
}

/// A watcher's place, given back (and the gauge lowered) when its stream is dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        metrics::gauge!(shared::metrics::LIVE_WATCHERS).decrement(1.0);
    }
}

impl Hub {
    pub fn new(max_watchers: usize) -> Self {
        // Shown from the start (at 0), not from the first watcher.
        metrics::gauge!(shared::metrics::LIVE_WATCHERS).increment(0.0);
        Self {
            tickers: Mutex::default(),
            watchers: Arc::new(Semaphore::new(max_watchers)),
            stopping: watch::Sender::new(false),
        }
    }

    /// A place for one more watcher, unless the process has as many as it
    /// takes (or is shutting down).
    pub fn admit(&self) -> Option<Admission> {
        if *self.stopping.borrow() {
            return None;
        }
        let permit = self.watchers.clone().try_acquire_owned().ok()?;
        metrics::gauge!(shared::metrics::LIVE_WATCHERS).increment(1.0);
        Some(Admission { _permit: permit })
    }

    /// The coupon's feed, starting its ticker if nobody in this process watches it yet.
    pub fn watch(&self, app: &AppState, coupon: Arc<Cached>) -> Feed {
        let mut tickers = self.tickers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = tickers.get(&coupon.id) {
            return feed.subscribe();
        }
        let (feed, watcher) = watch::channel(None);
        tickers.insert(coupon.id, feed.clone());
        tokio::spawn(tick(app.clone(), coupon, feed));
        watcher
    }

    /// Completes when the process starts shutting down.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    /// Ends every stream and admits no more watchers.
    pub fn shut_down(&self) {
        self.stopping.send_replace(true);
    }

    /// Forgets the coupon's ticker if no watcher is left; says whether it did.
    fn retire_if_unwatched(&self, id: CouponId, feed: &watch::Sender<Option<Snapshot>>) -> bool {
        let mut tickers = self.tickers.lock().unwrap_or_else(|e| e.into_inner());
        if feed.receiver_count() > 0 {
            return false;
        }
        tickers.remove(&id);
        true
    }
}

/// The ticker of one coupon: reads it every [`TICK`] while anyone watches, and
/// publishes what changed.
async fn tick(app: AppState, coupon: Arc<Cached>, feed: watch::Sender<Option<Snapshot>>) {
    let remaining = metrics::gauge!(shared::metrics::LIVE_REMAINING, "coupon_id" => coupon.id.to_string());
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut failing, mut settled) = (false, false);
    loop {
        every.tick().await;
        if app.live.retire_if_unwatched(coupon.id, &feed) {
            return;
        }
        if settled {
            continue;
        }
        let reading = read(&app, &coupon).await;
        if let Err(err) = &reading {
            count_failure(&coupon, err, std::mem::replace(&mut failing, true));
        }
        let snapshot = match reading {
            Ok(Reading::Live(snapshot)) => snapshot,
            Ok(Reading::Final(snapshot)) => {
                settled = true;
                snapshot
            }
            // Rebuilt meanwhile: the next tick reads it. On a failure
            // watchers keep the last snapshot.
            Ok(Reading::Rebuilt) | Err(_) => continue,
        };
        failing = false;
        remaining.set(snapshot.remaining as f64);
        feed.send_if_modified(|latest| {
            let changed = latest.as_ref() != Some(&snapshot);
            *latest = Some(snapshot);
            changed
        });
    }
}

/// Counts a failed read by what failed, and warns once per failing spell.
fn count_failure(coupon: &Cached, err: &ApiError, already_failing: bool) {
    let name = match err {
        ApiError::Database(_) => shared::metrics::MYSQL_ERRORS,
        _ => shared::metrics::REDIS_ERRORS,
    };
    metrics::counter!(name, shared::metrics::LABEL_SERVICE => "api").increment(1);
    match already_failing {
        false => tracing::warn!(coupon = %coupon.id, %err, "reading a live counter failed; retrying"),
        true => tracing::debug!(coupon = %coupon.id, %err, "reading a live counter failed"),
    }
}

/// What one read found.
enum Reading {
    /// The coupon's live state in Redis.
    Live(Snapshot),
    /// Its Redis state expired a retention after the period: MySQL's count,
    /// which nothing changes any more.
    Final(Snapshot),
    /// Redis had lost the state; it was rebuilt from MySQL.
    Rebuilt,
}

/// The counter's one read per tick: the metadata the issue script reads, the
/// issued set's size and Redis' clock, in one pipeline. When Redis lost the
/// coupon's state it is rebuilt from MySQL first, as `GET
/// /coupons/{coupon_id}` does.
async fn read(app: &AppState, coupon: &Cached) -> Result<Reading, ApiError> {
    let keys = &coupon.keys;
    let (meta, issued, (seconds, micros)): (Vec<Option<i64>>, i64, (i64, i64)) = redis::pipe()
        .hmget(
            &keys.meta,
            &["total_quantity", "issue_start_ms", "issue_end_ms", "paused"],
        )
        .scard(&keys.issued)
        .cmd("TIME")
        .query_async(&mut app.redis())
        .await?;
    let now_ms = seconds * 1000 + micros / 1000;
    if let [Some(total), Some(start_ms), Some(end_ms), paused] = meta[..] {
        let period = Period::at(now_ms, start_ms, end_ms);
        return Ok(Reading::Live(snapshot(
            coupon,
            total,
            issued,
            period,
            paused == Some(1),
        )));
    }
    if app.placement().expired(coupon) {
        let issued = store::issued_quantity(&app.db, coupon.id).await?;
        let total = coupon.total_quantity;
        return Ok(Reading::Final(snapshot(
            coupon,
            total,
            issued,
            Period::Ended,
            coupon.paused,
        )));
    }
    rebuild::rebuild(app, coupon).await?;
    Ok(Reading::Rebuilt)
}

fn snapshot(coupon: &Cached, total: i64, issued: i64, period: Period, paused: bool) -> Snapshot {
    Snapshot {
        coupon_id: coupon.id,
        total_quantity: total,
        issued_quantity: issued,
        remaining: (total - issued).max(0),
        period,
        paused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_starts_at_issue_start_and_ends_at_issue_end() {
        assert_eq!(Period::at(999, 1000, 2000), Period::NotStarted);
        assert_eq!(Period::at(1000, 1000, 2000), Period::Open);
        assert_eq!(Period::at(1999, 1000, 2000), Period::Open);
        assert_eq!(Period::at(2000, 1000, 2000), Period::Ended);
    }

    #[test]
    fn a_snapshot_is_json_with_the_counts_and_the_period() {
        let snapshot = Snapshot {
            coupon_id: CouponId::new(7).unwrap(),
            total_quantity: 10,
            issued_quantity: 3,
            remaining: 7,
            period: Period::NotStarted,
            paused: false,
        };
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"coupon_id": 7, "total_quantity": 10, "issued_quantity": 3,
                "remaining": 7, "period": "not_started", "paused": false})
        );
    }
}
