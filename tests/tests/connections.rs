//! What a slow, idle or greedy client can hold of the API: a request head not
//! sent within `HEADER_READ_TIMEOUT_MS`, or a kept-alive connection idle that
//! long, is closed; past `MAX_CONNECTIONS` new connections wait until one
//! ends; and `/metrics` can be served on its own address (`METRICS_ADDR`).

use integration_tests::spawn::{self, Env, TestApp};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn app(env: &Env, max_connections: u32, header_read_timeout_ms: u64, metrics_addr: Option<&str>) -> TestApp {
    let mut config = spawn::api_config(env, Some(spawn::ADMIN_TOKEN));
    config.max_connections = max_connections;
    config.header_read_timeout_ms = header_read_timeout_ms;
    config.metrics_addr = metrics_addr.map(String::from);
    spawn::spawn_app_with(config).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.client.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `within` passes); returns
/// what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((received, started.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n";

#[tokio::test]
async fn a_slow_request_head_and_an_idle_connection_are_cut_off_at_the_timeout() {
    let env = Env::shared().await;
    let app = app(&env, 100, 500, None).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: api\r\n").await.unwrap();
    let (_, after) = until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("the slow client is cut off");
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}, before the timeout"
    );

    let mut idle = connect(&app).await;
    idle.write_all(REQUEST).await.unwrap();
    let (answer, after) = until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "answered first"
    );
    assert!(after >= Duration::from_millis(400), "closed after {after:?}");
    app.finish(&env).await;
}

#[tokio::test]
async fn past_max_connections_a_new_client_waits_until_one_ends() {
    let env = Env::shared().await;
    let app = app(&env, 2, 10_000, None).await;
    let mut holders = vec![connect(&app).await, connect(&app).await];
    for holder in &mut holders {
        holder.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(&app).await;
    third.write_all(REQUEST).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(800), third.read(&mut buf)).await;
    assert!(early.is_err(), "served although two connections were open: {early:?}");
    drop(holders.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a connection ended")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    app.finish(&env).await;
}

#[tokio::test]
async fn metrics_served_apart_are_not_on_the_api_port() {
    let env = Env::shared().await;
    let app = app(&env, 100, 10_000, Some("127.0.0.1:0")).await;
    let (status, body) = app.client.get("/metrics").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let base = app.metrics_base.clone().expect("a metrics address");
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("coupon_http_request_duration_seconds"), "{text}");
    app.finish(&env).await;
}
