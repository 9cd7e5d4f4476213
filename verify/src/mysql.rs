//! The MySQL reads the checks need, read only: a coupon's rows (all of them or
//! those of a range of user ids), their user ids, its `issued_quantity` and when
//! its rows were written.

use chrono::NaiveDateTime;
use sqlx::MySqlPool;

/// A range of user ids, both ends included.
pub type UserRange = (i64, i64);

/// Every user id: the range that leaves no row of a coupon out.
pub const ALL_USERS: UserRange = (i64::MIN, i64::MAX);

/// What a coupon's rows add up to, read in one statement (one snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ledger {
    /// `coupon_issues` rows of the coupon.
    pub rows: i64,
    /// Distinct users among those rows (the unique key makes it `rows`).
    pub distinct_users: i64,
    /// `coupons.issued_quantity`; `None` when the coupon has no row.
    pub issued_quantity: Option<i64>,
}

impl Ledger {
    pub async fn read(db: &MySqlPool, coupon: i64) -> Result<Self, sqlx::Error> {
        let (rows, distinct_users, issued_quantity) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM coupon_issues WHERE coupon_id = ?), \
             (SELECT COUNT(DISTINCT user_id) FROM coupon_issues WHERE coupon_id = ?), \
             (SELECT issued_quantity FROM coupons WHERE id = ?)",
        )
        .bind(coupon)
        .bind(coupon)
        .bind(coupon)
        .fetch_one(db)
        .await?;
        Ok(Self {
            rows,
            distinct_users,
            issued_quantity,
        })
    }
}

/// The coupon's rows of users in `users`.
pub async fn rows(db: &MySqlPool, coupon: i64, (first, last): UserRange) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issues WHERE coupon_id = ? AND user_id BETWEEN ? AND ?")
        .bind(coupon)
        .bind(first)
        .bind(last)
        .fetch_one(db)
        .await
}

/// The user ids of the coupon's rows in `users`, collected as the caller likes
/// (a `Vec` keeps a repeated id, a set does not).
pub async fn user_ids<C: FromIterator<i64>>(
    db: &MySqlPool,
    coupon: i64,
    (first, last): UserRange,
) -> Result<C, sqlx::Error> {
    let users: Vec<i64> =
        sqlx::query_scalar("SELECT user_id FROM coupon_issues WHERE coupon_id = ? AND user_id BETWEEN ? AND ?")
            .bind(coupon)
            .bind(first)
            .bind(last)
            .fetch_all(db)
            .await?;
    Ok(users.into_iter().collect())
}

/// The first and last `issued_at` of the coupon's rows in `users`.
pub async fn issued_between(
    db: &MySqlPool,
    coupon: i64,
    (first, last): UserRange,
) -> Result<Option<(NaiveDateTime, NaiveDateTime)>, sqlx::Error> {
    let (earliest, latest): (Option<NaiveDateTime>, Option<NaiveDateTime>) = sqlx::query_as(
        "SELECT MIN(issued_at), MAX(issued_at) FROM coupon_issues WHERE coupon_id = ? AND user_id BETWEEN ? AND ?",
    )
    .bind(coupon)
    .bind(first)
    .bind(last)
    .fetch_one(db)
    .await?;
    Ok(earliest.zip(latest))
}
