//! The shared application state every handler receives.

use crate::lookup::CouponCache;
use shared::metrics::PrometheusHandle;
use shared::redis_conn::RedisConn;
use sqlx::MySqlPool;
use std::sync::Arc;

/// Everything a handler needs; cheap to clone (all inside one `Arc`).
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    /// Multiplexed, auto-reconnecting; every handler shares it.
    pub redis: RedisConn,
    pub db: MySqlPool,
    /// Where each coupon's keys and partition stream are.
    pub layout: shared::Layout,
    /// How long a coupon's Redis state outlives its issue period.
    pub retention: std::time::Duration,
    /// The memory tier of [`crate::lookup::coupon`].
    pub cache: CouponCache,
    /// Whose requests these are: verified JWTs, or the trusted caller's word.
    pub identity: crate::identity::Identity,
    /// The issue endpoint's per-user and per-client rate limits.
    pub limits: crate::limits::RateLimits,
    /// Decides issue requests, a batch per coupon per script call.
    pub admission: crate::admission::Admission,
    /// `None`: admin endpoints answer 403.
    pub admin_token: Option<String>,
    pub metrics: PrometheusHandle,
    /// `/metrics` is served on `METRICS_ADDR`, not on the API port.
    pub metrics_apart: bool,
    /// The coupon state rebuilds this process runs in the background.
    pub rebuilds: crate::rebuild::Rebuilds,
    /// The live counters' tickers and watchers (shared with the shutdown).
    pub live: Arc<crate::live::Hub>,
    /// How often an idle live stream sends a heartbeat.
    pub live_heartbeat: std::time::Duration,
    /// The status long-polls waiting in this process.
    pub waiters: Arc<crate::waiters::Waiters>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Where coupon state goes and how long it stays.
    pub fn placement(&self) -> crate::rebuild::Placement {
        crate::rebuild::Placement {
            layout: self.layout,
            retention: self.retention,
        }
    }

    pub fn redis(&self) -> RedisConn {
        self.redis.clone()
    }
}
