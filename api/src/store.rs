//! The API's MySQL writes and reads outside the coupon lookup: creating a
//! coupon, and the status lookup. Neither is on the issue path. (Reading a
//! coupon and its issued users for a rebuild belongs to [`crate::lookup`].)

use chrono::{DateTime, Utc};
use shared::{Coupon, CouponId, UserId};
use sqlx::MySqlPool;

/// A coupon's fields before MySQL gave it an id: a validated new coupon, or a
/// row read back (the columns have the same names).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CouponDraft {
    pub name: String,
    pub total_quantity: i64,
    pub issue_start: DateTime<Utc>,
    pub issue_end: DateTime<Utc>,
}

impl CouponDraft {
    pub fn with_id(self, id: CouponId) -> Coupon {
        Coupon {
            id,
            name: self.name,
            total_quantity: self.total_quantity,
            issue_start: self.issue_start,
            issue_end: self.issue_end,
        }
    }
}

/// Inserts a coupon and returns it with its new id.
pub async fn insert_coupon(db: &MySqlPool, draft: CouponDraft) -> Result<Coupon, sqlx::Error> {
    let result = sqlx::query("INSERT INTO coupons (name, total_quantity, issue_start, issue_end) VALUES (?, ?, ?, ?)")
        .bind(&draft.name)
        .bind(draft.total_quantity)
        .bind(draft.issue_start)
        .bind(draft.issue_end)
        .execute(db)
        .await?;
    let id = i64::try_from(result.last_insert_id())
        .ok()
        .and_then(|id| CouponId::new(id).ok())
        .ok_or_else(|| sqlx::Error::Protocol("MySQL returned an out-of-range coupon id".into()))?;
    Ok(draft.with_id(id))
}

/// When the user's row was written, if it is in MySQL.
pub async fn issued_at(db: &MySqlPool, coupon: CouponId, user: UserId) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT issued_at FROM coupon_issues WHERE coupon_id = ? AND user_id = ?")
        .bind(coupon.get())
        .bind(user.get())
        .fetch_optional(db)
        .await
}

/// The coupon's `issued_quantity` as MySQL counts it (rows written).
pub async fn issued_quantity(db: &MySqlPool, coupon: CouponId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT issued_quantity FROM coupons WHERE id = ?")
        .bind(coupon.get())
        .fetch_one(db)
        .await
}
