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
    pub paused: bool,
}

impl CouponDraft {
    pub fn with_id(self, id: CouponId) -> Coupon {
        Coupon {
            id,
            name: self.name,
            total_quantity: self.total_quantity,
            issue_start: self.issue_start,
            issue_end: self.issue_end,
            paused: self.paused,
        }
    }
}

/// Inserts a coupon and returns it with its new id.
pub async fn insert_coupon(db: &MySqlPool, draft: CouponDraft) -> Result<Coupon, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO coupons (name, total_quantity, issue_start, issue_end, paused) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&draft.name)
    .bind(draft.total_quantity)
    .bind(datetime(draft.issue_start))
    .bind(datetime(draft.issue_end))
    .bind(draft.paused)
    .execute(db)
    .await?;
    let id = i64::try_from(result.last_insert_id())
        .ok()
        .and_then(|id| CouponId::new(id).ok())
        .ok_or_else(|| sqlx::Error::Protocol("MySQL returned an out-of-range coupon id".into()))?;
    Ok(draft.with_id(id))
}

/// A `DATETIME` parameter. Bound as a `DateTime<Utc>`, sqlx sends a
/// `TIMESTAMP`, which MySQL refuses before 1970 (a year-1034 `issue_start`
/// answered 503); the column is a `DATETIME(3)` holding years 1000 to 9999.
pub fn datetime(at: DateTime<Utc>) -> chrono::NaiveDateTime {
    at.naive_utc()
}

/// A coupon as listed, with the rows MySQL holds for it.
#[derive(Debug)]
pub struct ListedCoupon {
    pub coupon: Coupon,
    pub issued_quantity: i64,
}

#[derive(sqlx::FromRow)]
struct ListedRow {
    id: i64,
    #[sqlx(flatten)]
    draft: CouponDraft,
    issued_quantity: i64,
}

/// Up to `limit` coupons after id `after` (in the order asked), by id.
pub async fn list_coupons(
    db: &MySqlPool,
    after: Option<i64>,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<ListedCoupon>, sqlx::Error> {
    let sql = if newest_first {
        "SELECT id, name, total_quantity, issue_start, issue_end, paused, issued_quantity FROM coupons \
         WHERE id < ? ORDER BY id DESC LIMIT ?"
    } else {
        "SELECT id, name, total_quantity, issue_start, issue_end, paused, issued_quantity FROM coupons \
         WHERE id > ? ORDER BY id LIMIT ?"
    };
    let after = after.unwrap_or(if newest_first { i64::MAX } else { 0 });
    let rows: Vec<ListedRow> = sqlx::query_as(sql).bind(after).bind(limit).fetch_all(db).await?;
    rows.into_iter()
        .map(|row| {
            let id = CouponId::new(row.id).map_err(|_| sqlx::Error::Protocol("a coupon id out of range".into()))?;
            Ok(ListedCoupon {
                coupon: row.draft.with_id(id),
                issued_quantity: row.issued_quantity,
            })
        })
        .collect()
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
