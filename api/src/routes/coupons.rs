//! `POST /coupons` (admin) and `GET /coupons/{coupon_id}`.

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{AdminRejections, AdminToken, ApiJson, BodyRejections, CouponPath};
use crate::store::{self, CouponDraft};
use crate::{lookup, rebuild};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, FixedOffset, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use shared::Coupon;
use utoipa::ToSchema;

/// A new coupon.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCoupon {
    /// 1 to 200 characters.
    name: String,
    /// At least 1.
    #[schema(minimum = 1)]
    total_quantity: i64,
    /// RFC 3339 with an offset; requests are accepted from this instant on.
    #[schema(value_type = String, format = DateTime)]
    issue_start: DateTime<FixedOffset>,
    /// RFC 3339 with an offset; after `issue_start`; requests are refused from this instant on.
    #[schema(value_type = String, format = DateTime)]
    issue_end: DateTime<FixedOffset>,
}

/// A coupon as created.
#[derive(Serialize, ToSchema)]
pub struct CouponBody {
    #[schema(value_type = i64)]
    id: shared::CouponId,
    name: String,
    total_quantity: i64,
    issue_start: DateTime<Utc>,
    issue_end: DateTime<Utc>,
}

/// A coupon with its live counts.
#[derive(Serialize, ToSchema)]
pub struct CouponWithCounts {
    #[serde(flatten)]
    coupon: CouponBody,
    /// Accepted requests so far (Redis).
    issued_quantity: i64,
    /// `total_quantity - issued_quantity`.
    remaining: i64,
}

impl From<&Coupon> for CouponBody {
    fn from(c: &Coupon) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            total_quantity: c.total_quantity,
            issue_start: c.issue_start,
            issue_end: c.issue_end,
        }
    }
}

/// Creates a coupon in MySQL and publishes it to Redis.
#[utoipa::path(post, path = "/coupons", request_body = NewCoupon, security(("admin" = [])),
    responses(
        (status = 201, body = CouponBody, description = "created"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: malformed JSON"),
        AdminRejections,
        BodyRejections,
        (status = 503, body = ErrorBody, description = "`unavailable`"),
    ))]
pub async fn create(
    State(app): State<AppState>,
    _admin: AdminToken,
    body: Result<ApiJson<NewCoupon>, ApiError>,
) -> Result<(StatusCode, Json<CouponBody>), ApiError> {
    let ApiJson(new) = body?;
    let coupon = store::insert_coupon(&app.db, new.validate()?).await?;
    // The coupon exists once MySQL has it; if Redis is down now, the first
    // request for it rebuilds its state, so a failure here is not the client's.
    if let Err(err) = rebuild::publish_new(&mut app.redis(), &app.db, app.placement(), &coupon).await {
        tracing::warn!(coupon = %coupon.id, %err, "coupon created, Redis state deferred to first use");
    }
    let body = CouponBody::from(&coupon);
    app.cache.remember(coupon);
    Ok((StatusCode::CREATED, Json(body)))
}

impl NewCoupon {
    /// The contract's rules on a new coupon, and its instants as MySQL keeps them.
    fn validate(self) -> Result<CouponDraft, ApiError> {
        let chars = self.name.chars().count();
        if !(1..=200).contains(&chars) {
            return Err(ApiError::Unprocessable("name must be 1 to 200 characters".into()));
        }
        if self.total_quantity < 1 {
            return Err(ApiError::Unprocessable("total_quantity must be at least 1".into()));
        }
        // MySQL keeps milliseconds; truncate so Redis, MySQL and the answer agree.
        let ms = |t: DateTime<FixedOffset>| DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis());
        let (Some(start), Some(end)) = (ms(self.issue_start), ms(self.issue_end)) else {
            return Err(ApiError::Unprocessable(
                "issue_start and issue_end must be valid instants".into(),
            ));
        };
        // DATETIME holds years 1000 to 9999.
        let year = |t: &DateTime<Utc>| chrono::Datelike::year(t);
        if !(1000..=9998).contains(&year(&start)) || !(1000..=9998).contains(&year(&end)) {
            return Err(ApiError::Unprocessable(
                "issue_start and issue_end must be between the years 1000 and 9998".into(),
            ));
        }
        if start >= end {
            return Err(ApiError::Unprocessable("issue_start must be before issue_end".into()));
        }
        Ok(CouponDraft {
            name: self.name,
            total_quantity: self.total_quantity,
            issue_start: start,
            issue_end: end,
        })
    }
}

/// The coupon with its live issued count.
#[utoipa::path(get, path = "/coupons/{coupon_id}", params(("coupon_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = CouponWithCounts),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad id"),
        (status = 404, body = ErrorBody, description = "`coupon_not_found`"),
        (status = 503, body = ErrorBody, description = "`unavailable`"),
    ))]
pub async fn get(State(app): State<AppState>, CouponPath(id): CouponPath) -> Result<Json<CouponWithCounts>, ApiError> {
    let coupon = lookup::coupon(&app, id).await?;
    let issued = if app.placement().expired(&coupon) {
        // Its Redis state expired a retention after the period: MySQL counts.
        store::issued_quantity(&app.db, id).await?
    } else {
        live_issued(&app, &coupon).await?
    };
    Ok(Json(CouponWithCounts {
        coupon: CouponBody::from(&coupon.coupon),
        issued_quantity: issued,
        remaining: coupon.total_quantity - issued,
    }))
}

/// The issued count from Redis, rebuilding the coupon's state first if Redis lost it.
async fn live_issued(app: &AppState, coupon: &lookup::Cached) -> Result<i64, ApiError> {
    let keys = &coupon.keys;
    let mut redis = app.redis();
    let (meta_present, issued): (bool, i64) = redis::pipe()
        .exists(&keys.meta)
        .scard(&keys.issued)
        .query_async(&mut redis)
        .await?;
    if meta_present {
        return Ok(issued);
    }
    rebuild::rebuild(app, coupon).await?;
    Ok(redis.scard(&keys.issued).await?)
}
