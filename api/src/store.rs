//! The API's MySQL queries: creating coupons, loading one on a cache miss or a
//! rebuild, and the status lookup. None of them is on the issue path.

use chrono::{DateTime, Utc};
use shared::{Coupon, CouponId, UserId};
use sqlx::MySqlPool;

/// Inserts a coupon and returns it with its new id.
pub async fn insert_coupon(
    db: &MySqlPool,
    name: &str,
    total: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Coupon, sqlx::Error> {
    let result = sqlx::query("INSERT INTO coupons (name, total_quantity, issue_start, issue_end) VALUES (?, ?, ?, ?)")
        .bind(name)
        .bind(total)
        .bind(start)
        .bind(end)
        .execute(db)
        .await?;
    let id = i64::try_from(result.last_insert_id())
        .ok()
        .and_then(|id| CouponId::new(id).ok())
        .ok_or_else(|| sqlx::Error::Protocol("MySQL returned an out-of-range coupon id".into()))?;
    Ok(Coupon {
        id,
        name: name.to_string(),
        total_quantity: total,
        issue_start: start,
        issue_end: end,
    })
}

/// The coupon, if MySQL has it.
pub async fn find_coupon(db: &MySqlPool, id: CouponId) -> Result<Option<Coupon>, sqlx::Error> {
    let row: Option<(String, i64, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT name, total_quantity, issue_start, issue_end FROM coupons WHERE id = ?")
            .bind(id.get())
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(name, total_quantity, issue_start, issue_end)| Coupon {
        id,
        name,
        total_quantity,
        issue_start,
        issue_end,
    }))
}

/// Every user MySQL holds an issue for, to refill Redis after it lost its state.
pub async fn issued_users(db: &MySqlPool, id: CouponId) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM coupon_issues WHERE coupon_id = ?")
        .bind(id.get())
        .fetch_all(db)
        .await
}

/// When the user's row was written, if it is in MySQL.
pub async fn issued_at(db: &MySqlPool, coupon: CouponId, user: UserId) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT issued_at FROM coupon_issues WHERE coupon_id = ? AND user_id = ?")
        .bind(coupon.get())
        .bind(user.get())
        .fetch_optional(db)
        .await
}
