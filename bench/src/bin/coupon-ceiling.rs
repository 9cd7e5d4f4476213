//! `coupon-ceiling`: the best case of the design, for `deploy/bench/run.sh` to
//! measure coupon-api against.
//!
//! One route, `POST /coupons/{coupon_id}/issue` with `{"user_id": N}`, that runs
//! the project's own issue script (`lua/issue.lua`, the same text coupon-api
//! loads) by EVALSHA on one shared multiplexed `ConnectionManager`, with the same
//! key shapes ([`shared::CouponKeys`]) and an event payload of the same size as
//! coupon-api's, and answers `202 {"position":N}` (or `409`). And
//! `POST /trivial/coupons/{coupon_id}/issue`, the same request answered a fixed
//! `409 sold_out` with no Redis call: the floor of this stack, what any answer
//! costs in axum, hyper and the kernel (`deploy/bench/hot.sh`). Nothing else: no
//! tracing, no metrics, no coupon cache, no request timeout, no MySQL. The same
//! axum, tokio runtime, redis client settings and allocator (mimalloc) as
//! coupon-api, so the difference between the two is what coupon-api adds.
//!
//! The coupon's Redis metadata is not created here: set it up first with
//! `redis-cli HSET 'coupon:{pN}:ID:meta' total_quantity Q issue_start_ms 0 issue_end_ms 99999999999999` (an absent hash answers
//! 503, as the script reports the state as missing).
//!
//! ```sh
//! coupon-ceiling --redis-url redis://127.0.0.1:6390 --listen-addr 127.0.0.1:8091
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use coupon_bench::program::{self, Runtime};
use serde::Deserialize;
use shared::config::RedisConfig;
use shared::redis_conn::RedisConn;
use shared::{CouponId, IssueEvent, UserId};
use std::process::ExitCode;
use std::sync::Arc;

/// The same allocator as coupon-api, so allocation costs do not tilt the comparison.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The issue script, byte for byte what coupon-api runs.
const SCRIPT: &str = include_str!("../../../lua/issue.lua");

/// The best-case issue server: one EVALSHA per request and nothing else.
#[derive(Parser, Debug)]
#[command(name = "coupon-ceiling", version, about, long_about = None)]
struct Args {
    /// Where to listen.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8091")]
    listen_addr: String,
    #[command(flatten)]
    redis: RedisConfig,
}

/// What every handler shares.
struct Ceiling {
    /// Multiplexed, shared by every request, as in coupon-api.
    redis: RedisConn,
    script: redis::Script,
    /// A fixed issue event with coupon-api's encoding and size (no trace
    /// context: coupon-api carries none without an OTLP exporter).
    event: Vec<u8>,
}

#[derive(Deserialize)]
struct IssueRequest {
    user_id: i64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match program::block_on("coupon-ceiling", Runtime::MultiThread, serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn serve(args: Args) -> Result<(), String> {
    // coupon-api gives each command the Redis timeout as its response timeout.
    let redis = shared::redis_conn::connect(&args.redis, args.redis.timeout())
        .await
        .map_err(|err| format!("connecting to Redis at {}: {err}", args.redis.redis_url))?;
    let state = Arc::new(Ceiling {
        redis,
        script: redis::Script::new(SCRIPT),
        event: sample_event()?,
    });
    let event_len = state.event.len();
    let router = Router::new()
        .route("/coupons/{coupon_id}/issue", post(issue))
        .route("/trivial/coupons/{coupon_id}/issue", post(trivial))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(&args.listen_addr)
        .await
        .map_err(|err| format!("binding {}: {err}", args.listen_addr))?;
    let addr = listener.local_addr().map_err(|err| err.to_string())?;
    // deploy/bench/run.sh reads the payload size to give redis-benchmark the same.
    eprintln!("coupon-ceiling listening on {addr} (event payload {event_len} bytes)");
    axum::serve(listener, router)
        .with_graceful_shutdown(shared::shutdown::shutdown_signal())
        .await
        .map_err(|err| format!("serving: {err}"))
}

/// An event like those coupon-api appends, with 19-digit ids and a current
/// timestamp so that its size is the largest coupon-api's can be.
fn sample_event() -> Result<Vec<u8>, String> {
    let id = i64::MAX / 2;
    let event = IssueEvent {
        coupon_id: CouponId::new(id).map_err(|err| err.to_string())?,
        user_id: UserId::new(id).map_err(|err| err.to_string())?,
        accepted_at_ms: chrono::Utc::now().timestamp_millis(),
        position: 0,
        trace: Default::default(),
    };
    Ok(event.encode())
}

async fn issue(
    State(app): State<Arc<Ceiling>>,
    Path(coupon_id): Path<i64>,
    Json(request): Json<IssueRequest>,
) -> Response {
    let (Ok(coupon), Ok(user)) = (CouponId::new(coupon_id), UserId::new(request.user_id)) else {
        let body = r#"{"error":"invalid_request"}"#;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("content-type", "application/json")],
            body,
        )
            .into_response();
    };
    let keys = shared::Layout::default().coupon(coupon);
    let reply: redis::RedisResult<(i64, i64)> = app
        .script
        .key(&keys.issued)
        .key(&keys.events)
        .key(&keys.meta)
        .arg(user.get())
        .arg(app.event.as_slice())
        .invoke_async(&mut app.redis.clone())
        .await;
    let (status, body) = match reply {
        Ok((1, position)) => (StatusCode::ACCEPTED, format!(r#"{{"position":{position}}}"#)),
        Ok((2, _)) => (StatusCode::CONFLICT, r#"{"error":"already_issued"}"#.to_string()),
        Ok((3, _)) => (StatusCode::CONFLICT, r#"{"error":"sold_out"}"#.to_string()),
        Ok(_) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"unavailable"}"#.to_string(),
        ),
    };
    (status, [("content-type", "application/json")], body).into_response()
}

/// The floor under any answer on this stack: the same extractors as [`issue`]
/// and a fixed `409 sold_out`, with no Redis call.
async fn trivial(Path(coupon_id): Path<i64>, Json(request): Json<IssueRequest>) -> Response {
    let status = if coupon_id > 0 && request.user_id > 0 {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (
        status,
        [("content-type", "application/json")],
        r#"{"error":"sold_out"}"#,
    )
        .into_response()
}
