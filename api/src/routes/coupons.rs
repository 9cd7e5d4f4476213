//! The coupons: `POST /coupons`, `GET /coupons` and `PATCH
//! /coupons/{coupon_id}` (admin), and `GET /coupons/{coupon_id}`.

use crate::amend::{self, CouponPatch};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{AdminRejections, AdminToken, ApiJson, ApiQuery, BodyRejections, CouponPath};
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
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// At least 1.
    #[schema(minimum = 1)]
    total_quantity: i64,
    /// RFC 3339 with an offset, years 1000 to 9998; requests are accepted from this instant on.
    #[schema(value_type = String, format = DateTime, pattern = "^(100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-")]
    issue_start: DateTime<FixedOffset>,
    /// RFC 3339 with an offset; after `issue_start`; requests are refused from this instant on.
    #[schema(value_type = String, format = DateTime, pattern = "^(100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-")]
    issue_end: DateTime<FixedOffset>,
    /// Created paused: nothing is accepted until `PATCH` sets it `false`.
    #[serde(default)]
    paused: bool,
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
    /// Paused by an operator: requests answer `409 issue_paused`.
    paused: bool,
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
            paused: c.paused,
        }
    }
}

impl CouponWithCounts {
    fn new(coupon: &Coupon, issued: i64) -> Self {
        Self {
            coupon: CouponBody::from(coupon),
            issued_quantity: issued,
            remaining: coupon.total_quantity - issued,
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
        let (start, end) = (instant(self.issue_start)?, instant(self.issue_end)?);
        if start >= end {
            return Err(ApiError::Unprocessable("issue_start must be before issue_end".into()));
        }
        Ok(CouponDraft {
            name: self.name,
            total_quantity: self.total_quantity,
            issue_start: start,
            issue_end: end,
            paused: self.paused,
        })
    }
}

/// An instant as MySQL keeps it: milliseconds (truncated, so Redis, MySQL and
/// the answer agree), written in the years 1001 to 9998, as the OpenAPI
/// document's `pattern` on every instant declares: whatever its offset, it is
/// then an instant a `DATETIME` holds (years 1000 to 9999 in UTC).
fn instant(t: DateTime<FixedOffset>) -> Result<DateTime<Utc>, ApiError> {
    Some(t)
        .filter(|t| (1001..=9998).contains(&chrono::Datelike::year(t)))
        .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()))
        .ok_or_else(|| {
            ApiError::Unprocessable("issue_start and issue_end must be written in the years 1001 to 9998".into())
        })
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
    Ok(Json(CouponWithCounts::new(&coupon.coupon, issued)))
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

/// A change to a coupon: any of its fields; those left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponChange {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// Raise it, or lower it down to the users already accepted
    /// (below: `409 quantity_below_issued`).
    #[schema(minimum = 1)]
    total_quantity: Option<i64>,
    /// Only before the sale starts. RFC 3339 with an offset, years 1000 to 9998.
    #[schema(value_type = Option<String>, format = DateTime, pattern = "^(100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-")]
    issue_start: Option<DateTime<FixedOffset>>,
    /// Extend the sale, or end it (now: the current time). After `issue_start`.
    #[schema(value_type = Option<String>, format = DateTime, pattern = "^(100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-")]
    issue_end: Option<DateTime<FixedOffset>>,
    /// `true` pauses the sale (`409 issue_paused`), `false` resumes it.
    paused: Option<bool>,
}

/// Changes a coupon: in MySQL, then in Redis, in force on every API instance
/// at once for issuing and within a second for reading. An empty change writes
/// MySQL's values to Redis again (a repair after a change that failed half-way).
#[utoipa::path(patch, path = "/coupons/{coupon_id}", request_body = CouponChange, security(("admin" = [])),
    params(("coupon_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = CouponWithCounts, description = "changed"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: malformed JSON or bad id"),
        (status = 404, body = ErrorBody, description = "`coupon_not_found`"),
        (status = 409, body = ErrorBody, description = "`quantity_below_issued`"),
        AdminRejections,
        BodyRejections,
        (status = 503, body = ErrorBody, description = "`unavailable`: the change may be in MySQL only; repeat it"),
    ))]
pub async fn change(
    State(app): State<AppState>,
    _admin: AdminToken,
    CouponPath(id): CouponPath,
    body: Result<ApiJson<CouponChange>, ApiError>,
) -> Result<Json<CouponWithCounts>, ApiError> {
    let ApiJson(change) = body?;
    let patch = CouponPatch {
        name: change.name,
        total_quantity: change.total_quantity,
        issue_start: change.issue_start.map(instant).transpose()?,
        issue_end: change.issue_end.map(instant).transpose()?,
        paused: change.paused,
    };
    let amended = amend::amend(&app, id, patch).await?;
    Ok(Json(CouponWithCounts::new(&amended.coupon, amended.issued)))
}

/// Which page of coupons to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only coupons after this id in the chosen order (the previous page's `next_after`).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Coupons per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// `id` (oldest first, the default) or `newest` (newest first).
    #[param(inline)]
    order: Option<ListOrder>,
}

/// The order of a listing.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    Id,
    Newest,
}

/// One page of coupons.
#[derive(Serialize, ToSchema)]
pub struct CouponPage {
    coupons: Vec<CouponWithCounts>,
    /// Pass as `after` for the next page; absent on the last one.
    next_after: Option<i64>,
}

/// Lists coupons, by id or newest first, a page at a time.
#[utoipa::path(get, path = "/coupons", params(ListQuery), security(("admin" = [])),
    responses(
        (status = 200, body = CouponPage),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad query"),
        AdminRejections,
        (status = 503, body = ErrorBody, description = "`unavailable`"),
    ))]
pub async fn list(
    State(app): State<AppState>,
    _admin: AdminToken,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<CouponPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit must be 1 to 1000".into()));
    }
    if query.after.is_some_and(|after| after < 0) {
        return Err(ApiError::InvalidRequest("after must be 0 or more".into()));
    }
    let order = query.order.unwrap_or(ListOrder::Id);
    let rows = store::list_coupons(&app.db, query.after, limit, order == ListOrder::Newest).await?;
    let issued = accepted_counts(&app, &rows).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|row| row.coupon.id.get()))
        .flatten();
    let coupons = rows
        .iter()
        .zip(issued)
        .map(|(row, issued)| CouponWithCounts::new(&row.coupon, issued))
        .collect();
    Ok(Json(CouponPage { coupons, next_after }))
}

/// Each listed coupon's accepted count: Redis' where it holds the coupon's
/// state (one pipeline), MySQL's rows where it does not (expired or not yet
/// rebuilt).
async fn accepted_counts(app: &AppState, rows: &[store::ListedCoupon]) -> Result<Vec<i64>, ApiError> {
    let mut pipe = redis::pipe();
    for row in rows {
        let keys = app.layout.coupon(row.coupon.id);
        pipe.exists(&keys.meta).scard(&keys.issued);
    }
    let counts: Vec<(bool, i64)> = if rows.is_empty() {
        Vec::new()
    } else {
        let flat: Vec<redis::Value> = pipe.query_async(&mut app.redis()).await?;
        let mut counts = Vec::with_capacity(rows.len());
        for pair in flat.chunks(2) {
            let [present, issued] = pair else {
                return Err(ApiError::Unavailable("Redis answered the pipeline short"));
            };
            let present: bool = redis::from_redis_value(present.clone()).map_err(redis::RedisError::from)?;
            let issued: i64 = redis::from_redis_value(issued.clone()).map_err(redis::RedisError::from)?;
            counts.push((present, issued));
        }
        counts
    };
    Ok(rows
        .iter()
        .zip(counts)
        .map(|(row, (present, issued))| if present { issued } else { row.issued_quantity })
        .collect())
}
