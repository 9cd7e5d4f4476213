//! The consumer's small HTTP server on `METRICS_ADDR`: `/metrics` and `/healthz`,
//! answered by the same handlers as the API's.

use axum::routing::get;
use axum::Router;
use shared::metrics::PrometheusHandle;
use std::future::Future;
use tokio::net::TcpListener;

pub fn router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(shared::ops::healthz))
        .route("/metrics", get(shared::ops::metrics))
        .with_state(metrics)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}
