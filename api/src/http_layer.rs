//! The middleware around every request: the OpenTelemetry HTTP server span
//! (continuing an incoming W3C `traceparent`), the latency histogram, and the
//! logging and counting of the Redis and MySQL failures behind error answers
//! (an [`ApiError`] only builds its answer; such a one leaves itself in the
//! response's extensions).
//!
//! Labels and span names are `&'static str`, read from a table built once from
//! the routes' own declarations (the OpenAPI paths of [`crate::routes::declared`]), so the hot path
//! formats and allocates nothing for them and no route can be left out.

use crate::error::ApiError;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use shared::telemetry::SPAN_TARGET;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// One declared route's labels.
struct Route {
    method: Method,
    path: String,
    /// `METHOD path`, the server span's name.
    span_name: String,
}

/// Every route, read from the OpenAPI paths the router declaration produced.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    let mut document = crate::routes::declared().into_openapi();
    let mut routes = Vec::new();
    for (path, item) in document.paths.paths.iter_mut() {
        for (method, _) in crate::routes::operations(item) {
            routes.push(Route {
                span_name: format!("{method} {path}"),
                path: path.clone(),
                method,
            });
        }
    }
    routes
});

/// `(method, route, span name)` of a request, static; unknown ones are pooled.
fn route_of(method: &Method, path: Option<&str>) -> (&'static str, &'static str, &'static str) {
    match ROUTES
        .iter()
        .find(|r| r.method == method && Some(r.path.as_str()) == path)
    {
        Some(r) => (r.method.as_str(), &r.path, &r.span_name),
        None => ("other", "unmatched", "HTTP request"),
    }
}

/// Every valid status code, so that each has a `&'static str` label.
static STATUSES: LazyLock<Vec<StatusCode>> =
    LazyLock::new(|| (100..1000).filter_map(|code| StatusCode::from_u16(code).ok()).collect());

fn status_label(status: StatusCode) -> &'static str {
    // `StatusCode` holds 100 to 999 only, so the lookup always finds it.
    usize::from(status.as_u16())
        .checked_sub(100)
        .and_then(|at| STATUSES.get(at))
        .map_or("other", StatusCode::as_str)
}

/// Wraps the request in a server span named `METHOD route`, records its latency,
/// and logs and counts the failure behind an error answer.
pub async fn trace_and_measure(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let (method, route, name) = route_of(request.method(), matched);
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
    continue_trace(&span, &request);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(error) = response.extensions().get::<Arc<ApiError>>() {
        span.in_scope(|| log_and_count(error));
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

/// Makes an incoming W3C trace context the span's parent.
fn continue_trace(span: &tracing::Span, request: &Request) {
    if span.is_disabled() {
        return;
    }
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

/// Failures of Redis and MySQL are the operators' business: logged with their
/// detail (which the answer never carries) and counted. The rest are the
/// client's, and the answer says all there is.
fn log_and_count(error: &ApiError) {
    match error {
        ApiError::Redis(err) => {
            tracing::warn!(%err, "redis call failed");
            metrics::counter!(shared::metrics::REDIS_ERRORS, "service" => "api").increment(1);
        }
        ApiError::Database(err) => {
            tracing::warn!(%err, "mysql call failed");
            metrics::counter!(shared::metrics::MYSQL_ERRORS, "service" => "api").increment(1);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_route_has_static_labels() {
        let issue = Some("/coupons/{coupon_id}/issue");
        assert_eq!(
            route_of(&Method::POST, issue),
            ("POST", "/coupons/{coupon_id}/issue", "POST /coupons/{coupon_id}/issue")
        );
        assert_eq!(route_of(&Method::GET, Some("/metrics")).2, "GET /metrics");
        assert_eq!(route_of(&Method::DELETE, issue).1, "unmatched");
        assert_eq!(route_of(&Method::GET, None).1, "unmatched");
    }

    #[test]
    fn every_status_is_its_own_label() {
        assert_eq!(status_label(StatusCode::ACCEPTED), "202");
        assert_eq!(status_label(StatusCode::from_u16(999).unwrap()), "999");
        assert_eq!(status_label(StatusCode::CONTINUE), "100");
    }
}
