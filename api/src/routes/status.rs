//! `GET /coupons/{coupon_id}/issues/{user_id}`: did the user get it? Answered
//! from Redis ([`crate::status`]); with `?wait=` a long-poll that answers as
//! soon as the status is final, or when the wait ends ([`crate::waiters`]).

use crate::app::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, IssuePath, UserRejections};
use crate::lookup;
use crate::status::{self, IssueStatus};
use crate::waiters::{Waiter, RECHECK};
use axum::extract::{Query, Request, State};
use axum::Json;
use serde::Deserialize;
use shared::UserId;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a long-poll waits, whatever it asks for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long to wait for a final status.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Seconds (integer or decimal, `5s` too) to wait for the status to become
    /// `issued` or `failed` before answering; capped at 30. Absent or 0: answer at once.
    #[param(value_type = Option<String>, example = "5")]
    wait: Option<String>,
}

/// Tells whether the user's accepted request is in MySQL yet.
#[utoipa::path(get, path = "/coupons/{coupon_id}/issues/{user_id}",
    params(("coupon_id" = i64, Path, minimum = 1), ("user_id" = i64, Path, minimum = 1), StatusQuery),
    responses(
        (status = 200, body = IssueStatus),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad id or bad `wait`"),
        UserRejections,
        (status = 404, body = ErrorBody, description = "`coupon_not_found`, or `not_found`: no accepted request for this user"),
        (status = 503, body = ErrorBody, description = "`unavailable`, also when too many long-polls wait"),
    ),
    security((), ("user_jwt" = [])))]
pub async fn status(
    State(app): State<AppState>,
    caller: Caller,
    IssuePath { coupon, user }: IssuePath,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> Result<Json<IssueStatus>, ApiError> {
    // A token's user may read only their own status.
    let user = caller.user(&app, Some(user))?;
    let wait = match query.wait.as_deref() {
        Some(text) => parse_wait(text)?,
        None => Duration::ZERO,
    };
    let coupon = lookup::coupon(&app, coupon).await?;
    let deadline = Instant::now() + wait;
    let mut found = status::read(&app, &coupon, user).await?;
    // Only a pending status waits (and takes a place among the waiters).
    if matches!(found, Some(IssueStatus::Pending)) && !wait.is_zero() {
        let waiter = app.waiters.join(coupon.id, user)?;
        found = long_poll(&app, &coupon, user, &waiter, deadline).await?;
    }
    let found = found.ok_or(ApiError::NotFound("this user has no accepted request for this coupon"))?;
    Ok(Json(found))
}

/// Reads the status until it is final (or unknown), woken by the user's
/// notes and re-reading every [`RECHECK`], until `deadline` or shutdown.
async fn long_poll(
    app: &AppState,
    coupon: &lookup::Cached,
    user: UserId,
    waiter: &Waiter,
    deadline: Instant,
) -> Result<Option<IssueStatus>, ApiError> {
    loop {
        let woken = waiter.woken();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let found = status::read(app, coupon, user).await?;
        let pending = matches!(found, Some(IssueStatus::Pending));
        let now = Instant::now();
        if !pending || now >= deadline || waiter.is_stopping() {
            return Ok(found);
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
            () = waiter.stopping() => {}
        }
    }
}

/// `wait` as a duration: seconds, integer or decimal, optionally ending in
/// `s`; at most [`MAX_WAIT`] (more is capped).
pub fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    let seconds: f64 = text
        .strip_suffix('s')
        .unwrap_or(text)
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && !text.starts_with(['+', '-']))
        .ok_or_else(|| ApiError::InvalidRequest(format!("wait must be a number of seconds (0 to 30), not {text:?}")))?;
    Ok(Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64())))
}

/// How much longer than the request timeout `request` may take: its `wait`,
/// if it is a long-poll of this route (the handler answers by then).
pub fn allowance(route: Option<&str>, request: &Request) -> Duration {
    if route != Some("/coupons/{coupon_id}/issues/{user_id}") {
        return Duration::ZERO;
    }
    let wait = request
        .uri()
        .query()
        .and_then(|query| form_urlencoded_wait(query).and_then(|text| parse_wait(&text).ok()));
    wait.unwrap_or_default()
}

/// The `wait` parameter of a query string, decoded as `Query` decodes it.
fn form_urlencoded_wait(query: &str) -> Option<String> {
    let Query(parsed) = Query::<StatusQuery>::try_from_uri(&format!("/?{query}").parse().ok()?).ok()?;
    parsed.wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_seconds_in_several_forms_and_is_capped() {
        let ok = |text: &str| parse_wait(text).map_err(|e| e.to_string());
        assert_eq!(ok("5"), Ok(Duration::from_secs(5)));
        assert_eq!(ok("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(ok("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(ok("0"), Ok(Duration::ZERO));
        assert_eq!(ok("3600"), Ok(MAX_WAIT));
        for bad in ["", "s", "-1", "+1", "NaN", "inf", "1e400", "5m", "five", " 5"] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
    }
}
