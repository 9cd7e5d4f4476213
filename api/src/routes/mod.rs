//! The router: every route of the contract, its limits and its fallbacks.
//!
//! A route is declared once, by its handler's `#[utoipa::path]` (method, path,
//! OpenAPI entry) and one `routes!` line here; the axum router, the OpenAPI
//! document ([`crate::openapi`]) and the span and metric labels
//! ([`crate::http_layer`]) are all read from [`declared`].

pub mod coupons;
pub mod issue;
pub mod live;
pub mod ops;
pub mod status;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http_layer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Duration;
use tower::ServiceBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Request bodies over this are answered 413.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Every route with its handler and OpenAPI entry, from the handlers' annotations.
pub fn declared() -> OpenApiRouter<AppState> {
    let coupons = OpenApiRouter::new()
        .routes(routes!(coupons::create, coupons::list))
        .routes(routes!(coupons::get, coupons::change));
    let issue = OpenApiRouter::new()
        .routes(routes!(issue::issue))
        .routes(routes!(status::status));
    let live = OpenApiRouter::new().routes(routes!(live::live));
    let ops = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi));
    OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(tagged("coupons", coupons))
        .merge(tagged("issue", issue))
        .merge(tagged("live", live))
        .merge(tagged("ops", ops))
}

/// Tags a module's operations with its name, as `#[derive(OpenApi)]` does.
fn tagged(tag: &str, mut routes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    for item in routes.get_openapi_mut().paths.paths.values_mut() {
        for (_, operation) in operations(item) {
            operation.tags.get_or_insert_with(Vec::new).push(tag.to_string());
        }
    }
    routes
}

/// A path item's operations with their methods (those axum can route).
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::POST, &mut item.post),
        (Method::PUT, &mut item.put),
        (Method::PATCH, &mut item.patch),
        (Method::DELETE, &mut item.delete),
        (Method::HEAD, &mut item.head),
        (Method::OPTIONS, &mut item.options),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

/// `/metrics` alone, for `METRICS_ADDR`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(app): State<AppState>| async move { shared::ops::metrics_text(&app.metrics) }),
        )
        .with_state(state)
}

/// Answers 503 once a request has taken `limit` (plus the `wait` of a
/// status long-poll, which answers by then itself).
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let limit = limit + status::allowance(route, &request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable("the request took too long").into_response(),
    }
}

/// Every route, with body limit, request timeout and the JSON 404/405 answers.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (routes, _document) = declared().split_for_parts();
    routes
        .fallback(|| async { ApiError::NotFound("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(http_layer::trace_and_measure))
                .layer(axum::middleware::from_fn_with_state(request_timeout, deadline)),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
