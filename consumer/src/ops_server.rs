//! The consumer's small HTTP server on `METRICS_ADDR`: `/metrics` and `/healthz`.

use axum::http::header;
use axum::routing::get;
use axum::Router;
use shared::metrics::PrometheusHandle;
use std::future::Future;
use tokio::net::TcpListener;

pub fn router(metrics: PrometheusHandle) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }),
    )
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
