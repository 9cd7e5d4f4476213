//! The shared application state and the one lookup every coupon route starts
//! with: cache, then Redis, then (rarely, once) MySQL with a state rebuild.

use crate::cache::{Cached, CouponCache};
use crate::error::ApiError;
use crate::script::IssueScript;
use crate::{state, store};
use shared::metrics::PrometheusHandle;
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId};
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;

/// Everything a handler needs; cheap to clone (all inside one `Arc`).
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    /// Multiplexed, auto-reconnecting; every handler shares it.
    pub redis: RedisConn,
    pub db: MySqlPool,
    pub cache: CouponCache,
    pub script: IssueScript,
    /// `None`: admin endpoints answer 403.
    pub admin_token: Option<String>,
    pub metrics: PrometheusHandle,
    /// How long a request waits for another instance's rebuild.
    pub rebuild_wait: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn redis(&self) -> RedisConn {
        self.redis.clone()
    }

    /// The coupon's metadata, from the cache when possible. Only a coupon that
    /// Redis does not know costs a MySQL query, one at a time per process; if
    /// MySQL has it, its Redis state is rebuilt before it is returned.
    pub async fn coupon(&self, id: CouponId) -> Result<Arc<Cached>, ApiError> {
        if let Some(coupon) = self.cache.get(id) {
            return Ok(coupon);
        }
        if self.cache.recently_missing(id) {
            return Err(ApiError::CouponNotFound);
        }
        if let Some(coupon) = state::load_meta(&mut self.redis(), id).await? {
            return Ok(self.cache.insert(coupon));
        }
        let _one_at_a_time = self.cache.loading.lock().await;
        if let Some(coupon) = self.cache.get(id) {
            return Ok(coupon);
        }
        if self.cache.recently_missing(id) {
            return Err(ApiError::CouponNotFound);
        }
        match store::find_coupon(&self.db, id).await? {
            Some(coupon) => {
                self.rebuild(&coupon).await?;
                Ok(self.cache.insert(coupon))
            }
            None => {
                self.cache.mark_missing(id);
                Err(ApiError::CouponNotFound)
            }
        }
    }

    /// Refills the coupon's Redis state from MySQL (see [`state::rebuild`]).
    pub async fn rebuild(&self, coupon: &Coupon) -> Result<(), ApiError> {
        state::rebuild(&mut self.redis(), &self.db, coupon, self.rebuild_wait).await
    }
}
