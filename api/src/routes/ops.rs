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

/// `200` when Redis and MySQL answer, else `503`.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "Redis and MySQL answer"), (status = 503, description = "Redis or MySQL does not answer")))]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, &'static str) {
    let mut redis = app.redis();
    let redis_ok = async { redis::cmd("PING").query_async::<String>(&mut redis).await.is_ok() };
    let mysql_ok = async { sqlx::query("SELECT 1").execute(&app.db).await.is_ok() };
    let checks = async { tokio::join!(redis_ok, mysql_ok) };
    match tokio::time::timeout(Duration::from_secs(2), checks).await {
        Ok((true, true)) => (StatusCode::OK, "ready"),
        Ok((false, _)) => (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
        Ok((_, false)) => (StatusCode::SERVICE_UNAVAILABLE, "mysql unavailable"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "readiness checks timed out"),
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    shared::ops::metrics_text(&app.metrics)
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
