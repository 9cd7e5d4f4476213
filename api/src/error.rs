//! The API's one error type and its mapping to the contract's status codes and
//! error bodies. Internal details are never sent; `http_layer` logs them.

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::sync::Arc;

/// Every way a request can fail; each variant names its status and `error` code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: malformed JSON, bad ids, bad values.
    #[error("{0}")]
    InvalidRequest(String),
    /// 415 `invalid_request`: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `invalid_request`: well-formed JSON of the wrong shape or values.
    #[error("{0}")]
    Unprocessable(String),
    /// 413 `payload_too_large`: the body is over the limit.
    #[error("the request body is larger than 16 KiB")]
    PayloadTooLarge,
    /// 401 `unauthorized`.
    #[error("a valid `Authorization: Bearer` admin token is required")]
    Unauthorized,
    /// 401 `unauthorized` with `WWW-Authenticate: Bearer error="invalid_token"`:
    /// an issue or status request without a valid user JWT.
    #[error("{0}")]
    InvalidToken(#[from] crate::identity::AuthError),
    /// 403 `forbidden`: the token's user is not the user the request names.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 429 `rate_limited` with `Retry-After`.
    #[error("too many requests: retry in {} ms", retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },
    /// 403 `admin_disabled`: `ADMIN_TOKEN` is unset.
    #[error("admin endpoints are disabled: ADMIN_TOKEN is not set")]
    AdminDisabled,
    /// 404 `coupon_not_found`.
    #[error("no such coupon")]
    CouponNotFound,
    /// 404 `not_found`: no accepted request for this user, or no such route.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409 `already_issued`.
    #[error("this user was already issued this coupon")]
    AlreadyIssued,
    /// 409 `sold_out`.
    #[error("all coupons have been issued")]
    SoldOut,
    /// 409 `issue_period_not_started`.
    #[error("the issue period has not started")]
    NotStarted,
    /// 409 `issue_period_ended`.
    #[error("the issue period has ended")]
    Ended,
    /// 409 `issue_paused`: an operator paused the sale.
    #[error("the sale is paused")]
    Paused,
    /// 409 `quantity_below_issued`: a `total_quantity` below the accepted count.
    #[error("total_quantity can not go below the {issued} already issued")]
    QuantityBelowIssued { issued: i64 },
    /// 503 `unavailable`: Redis failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// 503 `unavailable`: MySQL failed or timed out.
    #[error("mysql: {0}")]
    Database(#[from] sqlx::Error),
    /// 503 `unavailable`: the request ran past its deadline, or a rebuild is
    /// in progress elsewhere and did not finish in time.
    #[error("{0}")]
    Unavailable(&'static str),
}

/// The contract's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code.
    #[schema(example = "sold_out")]
    pub error: &'static str,
    /// A text for people.
    pub message: String,
}

impl ApiError {
    /// What axum's `Json` answers a body without `Content-Type: application/json`.
    pub fn missing_json() -> Self {
        ApiError::UnsupportedMediaType("Expected request with `Content-Type: application/json`".into())
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request"),
            Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Unauthorized | InvalidToken(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
            CouponNotFound => (StatusCode::NOT_FOUND, "coupon_not_found"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AlreadyIssued => (StatusCode::CONFLICT, "already_issued"),
            SoldOut => (StatusCode::CONFLICT, "sold_out"),
            NotStarted => (StatusCode::CONFLICT, "issue_period_not_started"),
            Ended => (StatusCode::CONFLICT, "issue_period_ended"),
            Paused => (StatusCode::CONFLICT, "issue_paused"),
            QuantityBelowIssued { .. } => (StatusCode::CONFLICT, "quantity_below_issued"),
            Redis(_) | Database(_) | Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    /// Builds the answer and nothing else: a Redis or MySQL failure rides
    /// along in the response's extensions, and [`crate::http_layer`] logs and
    /// counts it.
    fn into_response(self) -> Response {
        let (status, error) = self.status_and_code();
        let message = match &self {
            ApiError::Redis(_) | ApiError::Database(_) => {
                "the service is temporarily unavailable, retry shortly".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error, message })).into_response();
        match &self {
            ApiError::InvalidToken(_) => {
                let challenge = HeaderValue::from_static(r#"Bearer error="invalid_token""#);
                response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
            }
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                // Whole seconds, rounded up: `Retry-After: 0` would invite a retry at once.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        // Only the operators' failures ride along; the client's own say all
        // there is in the answer, and the hot path is spared an allocation.
        if matches!(self, ApiError::Redis(_) | ApiError::Database(_)) {
            response.extensions_mut().insert(Arc::new(self));
        }
        response
    }
}
