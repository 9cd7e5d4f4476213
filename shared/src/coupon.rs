//! The coupon as both binaries see it, and its time rules.

use crate::ids::CouponId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A coupon's metadata: everything but its live issued count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub total_quantity: i64,
    pub issue_start: DateTime<Utc>,
    pub issue_end: DateTime<Utc>,
}

/// Where `now` falls in a coupon's issue period `[issue_start, issue_end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    NotStarted,
    Open,
    Ended,
}

impl Coupon {
    pub fn period_at(&self, now: DateTime<Utc>) -> Period {
        if now < self.issue_start {
            Period::NotStarted
        } else if now >= self.issue_end {
            Period::Ended
        } else {
            Period::Open
        }
    }
}
