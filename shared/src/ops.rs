//! The operations endpoints both servers answer alike: `/healthz` and
//! `/metrics` (the API's on its own port, the consumer's on `METRICS_ADDR`).

use crate::metrics::PrometheusHandle;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// `GET /healthz`: `200 ok` while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics` for a router whose state is the recorder's handle.
pub async fn metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    metrics_text(&handle)
}

/// The `/metrics` answer: everything recorded so far, in Prometheus text format.
pub fn metrics_text(handle: &PrometheusHandle) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], handle.render())
}
