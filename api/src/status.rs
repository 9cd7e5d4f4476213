//! Where a user's accepted request stands, read from Redis: the consumer
//! records each written user's `issued_at` in the coupon's `issued-at` hash in
//! the step that acks it, and a rebuild restores that hash from MySQL, so Redis
//! tells `issued`, `failed`, `pending` and not-found on its own. MySQL is read
//! only when Redis no longer holds the coupon's state (it expired a retention
//! after the period, or Redis lost it and no rebuild has run yet).

use crate::app::AppState;
use crate::error::ApiError;
use crate::lookup::Cached;
use crate::store;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use shared::redis_conn::RedisConn;
use shared::{CouponId, LegacyKeys, UserId};
use utoipa::ToSchema;

/// Where a user's accepted request stands.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum IssueStatus {
    /// The row is in MySQL.
    Issued { issued_at: DateTime<Utc> },
    /// Accepted, not yet written to MySQL.
    Pending,
    /// Accepted but given up on (dead-lettered).
    Failed { reason: String },
}

/// The user's status; `None` when the user has no accepted request.
pub async fn read(app: &AppState, coupon: &Cached, user: UserId) -> Result<Option<IssueStatus>, ApiError> {
    let keys = &coupon.keys;
    let (issued_at, reason, accepted, known): (Option<i64>, Option<String>, bool, bool) = redis::pipe()
        .hget(&keys.issued_at, user.get())
        .hget(&keys.failed, user.get())
        .sismember(&keys.issued, user.get())
        .exists(&keys.meta)
        .query_async(&mut app.redis())
        .await?;
    if !known {
        metrics::counter!(shared::metrics::STATUS_READS, "source" => "mysql").increment(1);
        return from_mysql(app, coupon.id, user).await;
    }
    metrics::counter!(shared::metrics::STATUS_READS, "source" => "redis").increment(1);
    if let Some(issued_at) = issued_at.and_then(DateTime::from_timestamp_millis) {
        return Ok(Some(IssueStatus::Issued { issued_at }));
    }
    if let Some(reason) = reason {
        return Ok(Some(IssueStatus::Failed { reason }));
    }
    if accepted {
        // Acked entries have their time recorded in the same step: not written yet.
        return Ok(Some(IssueStatus::Pending));
    }
    legacy_failure(&mut app.redis(), coupon.id, user).await
}

/// What MySQL (and the layout before partitions) tells once Redis lost the
/// coupon's state: `issued` or not found, or a legacy failure.
async fn from_mysql(app: &AppState, coupon: CouponId, user: UserId) -> Result<Option<IssueStatus>, ApiError> {
    if let Some(issued_at) = store::issued_at(&app.db, coupon, user).await? {
        return Ok(Some(IssueStatus::Issued { issued_at }));
    }
    legacy_failure(&mut app.redis(), coupon, user).await
}

/// Why `user`'s request was given up on before an upgrade to partitions, while
/// the consumers have not yet moved the mark (their legacy scan does).
async fn legacy_failure(
    redis: &mut RedisConn,
    coupon: CouponId,
    user: UserId,
) -> Result<Option<IssueStatus>, ApiError> {
    let reason: Option<String> = redis.hget(LegacyKeys::new(coupon).failed, user.get()).await?;
    Ok(reason.map(|reason| IssueStatus::Failed { reason }))
}
