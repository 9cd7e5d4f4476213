//! The middleware around every request: the OpenTelemetry HTTP server span
//! (continuing an incoming W3C `traceparent`) and the latency histogram.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Wraps the request in a server span named `METHOD route` and records its latency.
pub async fn trace_and_measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().as_str().to_string();
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
    );
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            Some((
                name.to_string(),
                request.headers().get(name)?.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    if !carrier.is_empty() {
        // Ignored when no OpenTelemetry layer is installed: nothing to join then.
        let _ = span.set_parent(shared::telemetry::extract_context(&carrier));
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    metrics::histogram!(
        shared::metrics::HTTP_REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => status.as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
