//! The coupon as both binaries see it.

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
    /// Paused by an operator: nothing is accepted until resumed.
    #[serde(default)]
    pub paused: bool,
}
