//! The router's answers that need no server, driven with `oneshot` as axum's
//! testing example does: bad bodies, bad paths and admin-token rejections. The
//! state's Redis and MySQL handles are lazy and point where nothing listens, so
//! these run in milliseconds anywhere; what reaches a server would answer 503.

// A failing test should panic, helpers included (as in the integration tests).
#![allow(clippy::unwrap_used)]

use api::app::{AppState, Inner};
use api::lookup::CouponCache;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use shared::redis_conn::RedisConn;
use sqlx::mysql::MySqlPoolOptions;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// Port 1 (tcpmux): nothing listens there, so a connection is refused at once.
const NOWHERE_REDIS: &str = "redis://127.0.0.1:1";
const NOWHERE_MYSQL: &str = "mysql://root@127.0.0.1:1/nothing";
const TOKEN: &str = "router-test-token";

fn router(admin_token: Option<&str>) -> Router {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(Duration::from_millis(200)));
    let client = redis::Client::open(NOWHERE_REDIS).unwrap();
    let redis = RedisConn::Single(ConnectionManager::new_lazy_with_config(client, config).unwrap());
    let db = MySqlPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy(NOWHERE_MYSQL)
        .unwrap();
    let state = AppState(Arc::new(Inner {
        admission: api::admission::Admission::new(redis.clone(), None),
        redis,
        db,
        layout: shared::Layout::default(),
        retention: Duration::from_secs(3600),
        cache: CouponCache::new(shared::Layout::default()),
        identity: api::identity::Identity::Trusted,
        limits: api::limits::RateLimits::from_config(&api::config::LimitConfig {
            rate_limit_user_per_s: 0.0,
            rate_limit_user_burst: 1,
            rate_limit_ip_per_s: 0.0,
            rate_limit_ip_burst: None,
            rate_limit_max_keys: 64,
            trusted_proxies: Vec::new(),
        }),
        admin_token: admin_token.map(String::from),
        metrics: shared::metrics::install(),
        metrics_apart: false,
        rebuilds: Default::default(),
        live: Arc::new(api::live::Hub::new(10)),
        live_heartbeat: Duration::from_secs(15),
        waiters: api::waiters::Waiters::new(10),
    }));
    api::routes::router(state, Duration::from_secs(3))
}

/// Sends one request and returns the status and the JSON body.
async fn send(router: Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, body)
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(body.into()).unwrap()
}

fn issue(content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    post("/coupons/1/issue", content_type, body)
}

fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn a_body_over_16_kib_is_413_payload_too_large() {
    let big = format!("{{\"user_id\": 1, \"pad\": \"{}\"}}", "x".repeat(17 * 1024));
    let answer = send(router(None), issue(JSON, big)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    for content_type in [None, Some("text/plain")] {
        let answer = send(router(None), issue(content_type, r#"{"user_id": 1}"#)).await;
        assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let answer = send(router(None), issue(JSON, r#"{"user_id": "#)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn unknown_fields_wrong_types_and_ids_out_of_range_are_422() {
    for body in [
        r#"{"user_id": 1, "admin": true}"#,
        r#"{"user_id": "42"}"#,
        r#"{"user_id": 0}"#,
        r#"{"user_id": 9223372036854775808}"#,
        r#"[1]"#,
        r#"{}"#,
    ] {
        let answer = send(router(None), issue(JSON, body)).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
}

#[tokio::test]
async fn a_bad_id_in_the_path_is_400() {
    for path in ["/coupons/abc", "/coupons/0", "/coupons/1/issues/-5"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let answer = send(router(None), request).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn a_status_wait_that_is_no_number_of_seconds_is_400_before_anything_is_read() {
    for wait in ["abc", "-1", "5m", "NaN", "inf", "1e400", ""] {
        let request = Request::get(format!("/coupons/1/issues/2?wait={wait}"))
            .body(Body::empty())
            .unwrap();
        let answer = send(router(None), request).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_404_and_405() {
    let request = Request::get("/nothing/here").body(Body::empty()).unwrap();
    assert_error(&send(router(None), request).await, StatusCode::NOT_FOUND, "not_found");
    let request = Request::delete("/coupons/1").body(Body::empty()).unwrap();
    assert_error(
        &send(router(None), request).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

fn create(authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/coupons").header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    request.body(Body::from("{}")).unwrap()
}

#[tokio::test]
async fn admin_endpoints_answer_403_admin_disabled_without_an_admin_token() {
    let answer = send(router(None), create(Some(&format!("Bearer {TOKEN}")))).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "admin_disabled");
}

#[tokio::test]
async fn a_missing_or_wrong_admin_token_is_401_unauthorized() {
    let wrong = format!("Bearer {TOKEN}x");
    let short = format!("Bearer {}", &TOKEN[1..]);
    let basic = format!("Basic {TOKEN}");
    for authorization in [None, Some(wrong.as_str()), Some(short.as_str()), Some(basic.as_str())] {
        let answer = send(router(Some(TOKEN)), create(authorization)).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn the_right_admin_token_gets_past_the_check_to_the_body() {
    // `{}` is no coupon: the 422 shows the token was accepted, without MySQL.
    let answer = send(router(Some(TOKEN)), create(Some(&format!("Bearer {TOKEN}")))).await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
}

#[tokio::test]
async fn a_redis_failure_is_503_and_counted_by_the_middleware_without_its_detail() {
    let router = router(None);
    let request = Request::get("/coupons/7").body(Body::empty()).unwrap();
    let answer = send(router, request).await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let message = answer.1["message"].as_str().unwrap_or_default();
    assert!(!message.contains("127.0.0.1"), "no internal detail: {message}");
    let metrics = shared::metrics::install().render();
    assert!(
        metrics.contains("coupon_redis_errors_total{service=\"api\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_declared_route_is_in_the_openapi_document() {
    let request = Request::get("/openapi.json").body(Body::empty()).unwrap();
    let (status, doc) = send(router(None), request).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/coupons", "post"),
        ("/coupons/{coupon_id}", "get"),
        ("/coupons/{coupon_id}/issue", "post"),
        ("/coupons/{coupon_id}/issues/{user_id}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}
