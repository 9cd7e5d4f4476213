//! How often one user, and one client address, may ask for a coupon: checked
//! on the issue path before any Redis call, in this process's memory.
//!
//! The limits are per API instance, not global: a global count would put a
//! Redis round trip on every request, on the very shard a hot coupon already
//! saturates, to stop requests that cost less than that round trip. Behind a
//! load balancer of N instances a user may get up to N times the rate; the
//! limit's purpose, that a bot firing at the opening millisecond does not
//! out-ask a person pressing once, holds at any N.

mod client;
mod gcra;

pub use client::{parse_net, TrustedProxies};
pub use gcra::{RateLimiter, Verdict};

use crate::config::LimitConfig;
use crate::error::ApiError;
use shared::{CouponId, UserId};
use std::net::IpAddr;

/// The issue endpoint's limits, each off when its rate is 0.
pub struct RateLimits {
    user: Option<RateLimiter>,
    client: Option<RateLimiter>,
    pub proxies: TrustedProxies,
}

impl RateLimits {
    pub fn from_config(config: &LimitConfig) -> Self {
        let client_burst = config
            .rate_limit_ip_burst
            .unwrap_or_else(|| config.rate_limit_ip_per_s.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        Self {
            user: RateLimiter::new(
                config.rate_limit_user_per_s,
                config.rate_limit_user_burst,
                config.rate_limit_max_keys as usize,
            ),
            client: RateLimiter::new(
                config.rate_limit_ip_per_s,
                client_burst,
                config.rate_limit_max_keys as usize,
            ),
            proxies: TrustedProxies(config.trusted_proxies.clone()),
        }
    }

    /// One more request from `client` (`None`: the router runs without the
    /// connection loop, as in unit tests, and no address is known).
    pub fn check_client(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.client, client) {
            (Some(limiter), Some(addr)) => judge(limiter, client::limit_key(addr), "ip"),
            _ => Ok(()),
        }
    }

    /// One more request of `user` for `coupon`. Counted per coupon: a person
    /// may ask for several coupons at once; what is limited is asking for one
    /// again and again.
    pub fn check_user(&self, user: UserId, coupon: CouponId) -> Result<(), ApiError> {
        match &self.user {
            Some(limiter) => judge(limiter, (user, coupon), "user"),
            None => Ok(()),
        }
    }
}

fn judge(limiter: &RateLimiter, key: impl std::hash::Hash, scope: &'static str) -> Result<(), ApiError> {
    match limiter.check(key) {
        Verdict::Allowed => Ok(()),
        Verdict::Untracked => {
            metrics::counter!(shared::metrics::RATE_LIMIT_UNTRACKED, "scope" => scope).increment(1);
            Ok(())
        }
        Verdict::Limited { retry_after } => {
            metrics::counter!(shared::metrics::RATE_LIMITED, "scope" => scope).increment(1);
            Err(ApiError::RateLimited { retry_after })
        }
    }
}
