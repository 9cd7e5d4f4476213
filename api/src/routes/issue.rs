//! `POST /coupons/{coupon_id}/issue`, the hot path (its status is
//! [`super::status`]).

use crate::app::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{BodyRejections, CouponPath, OptionalJson, UserRejections};
use crate::script::Decision;
use crate::{lookup, rebuild};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::{CouponId, IssueEvent, UserId};
use utoipa::ToSchema;

/// Who asks for the coupon. Required when the API trusts its caller; when it
/// verifies JWTs the user is the token's `sub`, and the body may be `{}` or
/// absent (a `user_id` other than the token's is `403 forbidden`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    #[serde(default)]
    #[schema(value_type = i64, minimum = 1, required = true)]
    user_id: Option<UserId>,
}

/// The request was accepted; MySQL is written shortly after.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    #[schema(value_type = i64)]
    coupon_id: CouponId,
    #[schema(value_type = i64)]
    user_id: UserId,
    /// Always `accepted`.
    status: &'static str,
    /// This user's 1-based place among the accepted.
    position: i64,
}

/// Asks for one coupon, first come first served.
#[utoipa::path(post, path = "/coupons/{coupon_id}/issue", request_body = IssueRequest,
    params(("coupon_id" = i64, Path, minimum = 1)),
    responses(
        (status = 202, body = Accepted, description = "accepted"),
        (status = 400, body = ErrorBody, description = "`invalid_request`"),
        UserRejections,
        (status = 404, body = ErrorBody, description = "`coupon_not_found`"),
        (status = 409, body = ErrorBody, description = "`already_issued`, `sold_out`, `issue_period_not_started`, `issue_period_ended` or `issue_paused`"),
        BodyRejections,
        (status = 429, body = ErrorBody, description = "`rate_limited`: this user or client asked too often; `Retry-After` says when to ask again",
            headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, body = ErrorBody, description = "`unavailable`: retrying is safe"),
    ),
    security((), ("user_jwt" = [])))]
pub async fn issue(
    State(app): State<AppState>,
    caller: Caller,
    CouponPath(id): CouponPath,
    body: Result<OptionalJson<IssueRequest>, ApiError>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let result = match admit(&app, &caller, id, body) {
        Ok(user) => decide(&app, id, user).await,
        Err(err) => Err(err),
    };
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(err) => err.status_and_code().1,
    };
    metrics::counter!(shared::metrics::ISSUE_DECISIONS, "outcome" => outcome).increment(1);
    Ok((StatusCode::ACCEPTED, Json(result?)))
}

/// The user an issue request is for, once every check made before Redis passed.
fn admit(
    app: &AppState,
    caller: &Caller,
    coupon: CouponId,
    body: Result<OptionalJson<IssueRequest>, ApiError>,
) -> Result<UserId, ApiError> {
    let named = match body? {
        OptionalJson(Some(request)) => request.user_id,
        // Only a token can stand for an absent body.
        OptionalJson(None) if app.identity.is_trusted() => return Err(ApiError::missing_json()),
        OptionalJson(None) => None,
    };
    caller.admit(app, named, coupon)
}

async fn decide(app: &AppState, id: CouponId, user: UserId) -> Result<Accepted, ApiError> {
    let coupon = lookup::coupon(app, id).await?;
    // The period and the pause are the script's to judge, by Redis' clock.
    let event = || {
        IssueEvent {
            coupon_id: coupon.id,
            user_id: user,
            accepted_at_ms: Utc::now().timestamp_millis(),
            position: 0,
            trace: shared::telemetry::inject_context(&tracing::Span::current()),
        }
        .encode()
    };
    let keys = &coupon.keys;
    let mut decision = app.admission.admit(&coupon, keys, user, event).await?;
    if decision == Decision::StateMissing && app.placement().expired(&coupon) {
        // Its state expired a retention after its period ended: nothing to rebuild.
        return Err(ApiError::Ended);
    }
    if decision == Decision::StateMissing {
        rebuild::rebuild(app, &coupon).await?;
        decision = app.admission.admit(&coupon, keys, user, event).await?;
    }
    match decision {
        Decision::Accepted { position } => Ok(Accepted {
            coupon_id: coupon.id,
            user_id: user,
            status: "accepted",
            position,
        }),
        Decision::AlreadyIssued => Err(ApiError::AlreadyIssued),
        Decision::SoldOut => Err(ApiError::SoldOut),
        Decision::NotStarted => Err(ApiError::NotStarted),
        Decision::Ended => Err(ApiError::Ended),
        Decision::Paused => Err(ApiError::Paused),
        Decision::StateMissing => Err(ApiError::Unavailable(
            "the coupon's state is being rebuilt, retry shortly",
        )),
    }
}
