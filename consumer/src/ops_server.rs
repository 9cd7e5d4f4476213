//! The consumer's small HTTP server on `METRICS_ADDR`: `/metrics` (the same
//! handler as the API's), `/healthz` (liveness: `503` when the worker loop is
//! stuck) and `/readyz` (`503` while the worker is starting, stuck, cut off
//! from Redis, or has work it makes no progress on); see [`crate::health`].

use crate::health::{Health, Problem};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use shared::metrics::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the handlers read.
#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

pub fn router(metrics: PrometheusHandle, health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Ops { metrics, health })
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    shared::ops::metrics_text(&ops.metrics)
}

/// `200 ok` unless the worker loop is stuck: then `503` and why, as JSON.
async fn healthz(State(ops): State<Ops>) -> Response {
    match ops.health.liveness() {
        Ok(()) => shared::ops::healthz().await.into_response(),
        Err(problem) => unavailable("stuck", &problem),
    }
}

/// `200 {"status": "ready"}`, or `503` and why, as JSON.
async fn readyz(State(ops): State<Ops>) -> Response {
    match ops.health.readiness() {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(problem) => unavailable("not_ready", &problem),
    }
}

/// `503` with `{"status", "reason", "message", ...}` (the problem's own fields).
fn unavailable(status: &str, problem: &Problem) -> Response {
    let mut body = serde_json::to_value(problem).unwrap_or_default();
    if let Some(fields) = body.as_object_mut() {
        fields.insert("status".into(), status.into());
        fields.insert("message".into(), problem.message().into());
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
