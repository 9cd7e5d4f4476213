//! Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI.

use crate::app::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use std::time::Duration;

/// `200` while the process runs.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "the process runs")))]
pub async fn healthz() -> &'static str {
    shared::ops::healthz().await
}

/// What `/readyz` found.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` or `unavailable`: issuing needs only Redis.
    redis: &'static str,
    /// `ok` or `unavailable`: coupon creation, changes and the status of
    /// written issues need it; issuing does not.
    mysql: &'static str,
}

/// `200` when Redis answers (issuing needs nothing else), else `503`; MySQL's
/// state is reported in the body and in `coupon_api_mysql_up`.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Readiness, description = "Redis answers"),
    (status = 503, body = Readiness, description = "Redis does not answer")))]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let mut redis = app.redis();
    let redis_ok = async { redis::cmd("PING").query_async::<String>(&mut redis).await.is_ok() };
    let mysql_ok = async { sqlx::query("SELECT 1").execute(&app.db).await.is_ok() };
    let (redis_ok, mysql_ok) = tokio::join!(answers_soon(redis_ok), answers_soon(mysql_ok));
    metrics::gauge!(shared::metrics::API_MYSQL_UP).set(if mysql_ok { 1.0 } else { 0.0 });
    let word = |ok| if ok { "ok" } else { "unavailable" };
    let status = if redis_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            redis: word(redis_ok),
            mysql: word(mysql_ok),
        }),
    )
}

/// Whether `check` succeeded within two seconds (a server that does not
/// answer by then is as unavailable as one that refuses).
async fn answers_soon(check: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(2), check)
        .await
        .unwrap_or(false)
}

/// Prometheus text format (`404` here when `METRICS_ADDR` serves it apart).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"), (status = 404, body = crate::error::ErrorBody, description = "`not_found`: served on METRICS_ADDR")))]
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, crate::error::ApiError> {
    if app.metrics_apart {
        return Err(crate::error::ApiError::NotFound("metrics are served on METRICS_ADDR"));
    }
    Ok(shared::ops::metrics_text(&app.metrics))
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
