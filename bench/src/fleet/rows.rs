//! The MySQL reads of `coupon-fleet`: rows of one coupon, and rows and
//! `issued_quantity` of a contiguous range of coupon ids. Read only.

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use std::time::Duration;

/// A small read-only pool (the polls run one at a time).
pub async fn connect(url: &str) -> anyhow::Result<MySqlPool> {
    MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        // sqlx repeats its message as the error's source: keep it once.
        .map_err(|err| anyhow::anyhow!("connecting to MySQL at {}: {err}", shared::config::mask_url(url)))
}

/// `coupon_issues` rows of one coupon.
pub async fn rows_of(db: &MySqlPool, coupon: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issues WHERE coupon_id = ?")
        .bind(coupon)
        .fetch_one(db)
        .await
}

/// `coupon_issues` rows of the coupons `first..=last`.
pub async fn rows_between(db: &MySqlPool, first: i64, last: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issues WHERE coupon_id BETWEEN ? AND ?")
        .bind(first)
        .bind(last)
        .fetch_one(db)
        .await
}

/// The sum of `issued_quantity` over the coupons `first..=last`: the rows the
/// consumers committed (the contract raises it in the transaction that inserts
/// them), read from at most a few thousand primary-key rows rather than by
/// counting a growing `coupon_issues` twice a second on a two-core machine.
pub async fn issued_between(db: &MySqlPool, first: i64, last: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(COALESCE(SUM(issued_quantity), 0) AS SIGNED) FROM coupons WHERE id BETWEEN ? AND ?")
        .bind(first)
        .bind(last)
        .fetch_one(db)
        .await
}
