//! The router: every route of the contract, its limits and its fallbacks.

pub mod coupons;
pub mod issue;
pub mod ops;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http_layer;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use std::time::Duration;
use tower::ServiceBuilder;

/// Request bodies over this are answered 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Every route, with body limit, request timeout and the JSON 404/405 answers.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    Router::new()
        .route("/coupons", post(coupons::create))
        .route("/coupons/{coupon_id}", get(coupons::get))
        .route("/coupons/{coupon_id}/issue", post(issue::issue))
        .route("/coupons/{coupon_id}/issues/{user_id}", get(issue::status))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async { ApiError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(http_layer::trace_and_measure))
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    ApiError::Unavailable("the request took too long")
                }))
                .timeout(request_timeout),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
