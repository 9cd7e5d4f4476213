//! The middleware around every request: the OpenTelemetry HTTP server span
//! (continuing an incoming W3C `traceparent`) and the latency histogram.
//!
//! Labels and span names are `&'static str` for every route and status the API
//! answers, so the hot path formats and allocates nothing for them.

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use shared::telemetry::SPAN_TARGET;
use std::collections::HashMap;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Every route of the router, `(method, route, span name)`.
const ROUTES: &[(Method, &str, &str)] = &[
    (
        Method::POST,
        "/coupons/{coupon_id}/issue",
        "POST /coupons/{coupon_id}/issue",
    ),
    (
        Method::GET,
        "/coupons/{coupon_id}/issues/{user_id}",
        "GET /coupons/{coupon_id}/issues/{user_id}",
    ),
    (Method::GET, "/coupons/{coupon_id}", "GET /coupons/{coupon_id}"),
    (Method::POST, "/coupons", "POST /coupons"),
    (Method::GET, "/healthz", "GET /healthz"),
    (Method::GET, "/readyz", "GET /readyz"),
    (Method::GET, "/metrics", "GET /metrics"),
    (Method::GET, "/openapi.json", "GET /openapi.json"),
];

/// `(method, route, span name)` of a request, static; unknown ones are pooled.
fn route_of(method: &Method, matched: Option<&MatchedPath>) -> (&'static str, &'static str, &'static str) {
    let path = matched.map(MatchedPath::as_str);
    let known = ROUTES.iter().find(|(m, route, _)| m == method && Some(*route) == path);
    match known {
        Some((m, route, name)) => (method_label(m), route, name),
        None => ("other", "unmatched", "HTTP request"),
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        _ => "other",
    }
}

/// The status as a static label: every status the API answers, else `other`.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        201 => "201",
        202 => "202",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

/// Wraps the request in a server span named `METHOD route` and records its latency.
pub async fn trace_and_measure(request: Request, next: Next) -> Response {
    let (method, route, name) = route_of(request.method(), request.extensions().get::<MatchedPath>());
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "HTTP request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = request.method().as_str(),
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
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
            let _ = span.set_parent(shared::telemetry::extract_context(&carrier));
        }
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
        "status" => status_label(status),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
