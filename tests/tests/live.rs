//! The live counter, `GET /coupons/{coupon_id}/live` (issue 15): what a
//! watcher is told and when, the watcher bound, a crowd of thousands on one
//! API process whose Redis cost stays flat, and the end of every stream on
//! SIGTERM.

use futures::stream::{self, StreamExt};
use integration_tests::binaries::ApiProcess;
use integration_tests::child::raise_fd_limit;
use integration_tests::client::post_issue;
use integration_tests::servers::command_calls;
use integration_tests::spawn::{self, Env, ADMIN_TOKEN};
use integration_tests::sse::{self, EventStream, Message};
use integration_tests::wait;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What the counter's read is made of (`INFO commandstats` names).
const COUNTER_COMMANDS: [&str; 3] = ["hmget", "scard", "time"];

fn live_url(base: &str, coupon: i64) -> String {
    format!("{base}/coupons/{coupon}/live")
}

/// The next event's data within `within`; panics on a heartbeat-only silence or an end.
async fn next_data(stream: &mut EventStream, within: Duration) -> Value {
    tokio::time::timeout(within, stream.next_data())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .unwrap_or_else(|end| panic!("the stream ended: {end:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_is_told_the_count_at_once_then_each_change_and_hears_a_heartbeat_in_between() {
    let env = Env::shared().await;
    let mut config = spawn::api_config(&env, Some(ADMIN_TOKEN));
    config.live_heartbeat_ms = 300;
    config.live_max_watchers = 2;
    let app = spawn::spawn_app_with(config).await;
    let http = reqwest::Client::new();
    let coupon = app.client.create_open_coupon(3).await;

    let (status, body) = sse::open(&http, &live_url(&app.client.base, coupon + 1_000_000))
        .await
        .err()
        .expect("an unknown coupon gets no stream");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("coupon_not_found")),
        "{body}"
    );

    let mut first = sse::open(&http, &live_url(&app.client.base, coupon)).await.unwrap();
    assert_eq!(
        first.header("x-accel-buffering"),
        Some("no"),
        "nginx must not buffer the events"
    );
    let now = next_data(&mut first, Duration::from_secs(2)).await;
    assert_eq!(
        now,
        json!({"coupon_id": coupon, "total_quantity": 3, "issued_quantity": 0, "remaining": 3,
            "period": "open", "paused": false})
    );
    let quiet = tokio::time::timeout(Duration::from_secs(2), first.next()).await;
    assert_eq!(quiet.ok(), Some(Message::Heartbeat), "nothing changed: a heartbeat");

    assert_eq!(app.client.issue(coupon, 7).await.0, 202);
    let after = next_data(&mut first, Duration::from_secs(2)).await;
    assert_eq!(
        (after["issued_quantity"].as_i64(), after["remaining"].as_i64()),
        (Some(1), Some(2))
    );
    let (status, _) = app.client.patch_coupon(coupon, json!({"paused": true})).await;
    assert_eq!(status, 200);
    let paused = next_data(&mut first, Duration::from_secs(2)).await;
    assert_eq!(paused["paused"], json!(true), "{paused}");

    // Two watchers at most (LIVE_MAX_WATCHERS): the third is refused until one leaves.
    let _second = sse::open(&http, &live_url(&app.client.base, coupon)).await.unwrap();
    let (status, body) = sse::open(&http, &live_url(&app.client.base, coupon))
        .await
        .err()
        .expect("a third watcher is over the bound");
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    drop(first);
    let mut third = wait::until(
        Duration::from_secs(5),
        "a place freed by a watcher that left",
        || async { sse::open(&http, &live_url(&app.client.base, coupon)).await.ok() },
    )
    .await;
    assert_eq!(
        next_data(&mut third, Duration::from_secs(2)).await["issued_quantity"],
        json!(1)
    );
    app.finish(&env).await;
}

/// Creates a coupon whose period starts and ends at these offsets from now,
/// and opens a watcher of it.
async fn watch_new_coupon(
    app: &spawn::TestApp,
    quantity: i64,
    (start, end): (chrono::Duration, chrono::Duration),
) -> (i64, EventStream) {
    let now = chrono::Utc::now();
    let (status, body) = app
        .client
        .create_coupon(json!({"name": "watched", "total_quantity": quantity,
            "issue_start": (now + start).to_rfc3339(), "issue_end": (now + end).to_rfc3339()}))
        .await;
    assert_eq!(status, 201, "{body}");
    let coupon = body["id"].as_i64().unwrap();
    let watcher = sse::open(&reqwest::Client::new(), &live_url(&app.client.base, coupon))
        .await
        .unwrap();
    (coupon, watcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_period_state_turns_open_when_the_sale_starts() {
    let (env, app) = spawn::spawn_shared_app().await;
    let from_now = (chrono::Duration::milliseconds(1500), chrono::Duration::hours(1));
    let (_, mut watcher) = watch_new_coupon(&app, 5, from_now).await;
    assert_eq!(
        next_data(&mut watcher, Duration::from_secs(2)).await["period"],
        "not_started"
    );
    assert_eq!(next_data(&mut watcher, Duration::from_secs(5)).await["period"], "open");
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_whose_redis_state_expired_shows_mysqls_count_as_ended() {
    let (env, app) = spawn::spawn_shared_app().await;
    // Ended longer ago than the retention (a week): Redis holds nothing of it.
    let from_now = (-chrono::Duration::days(30), -chrono::Duration::days(20));
    let (coupon, mut watcher) = watch_new_coupon(&app, 4, from_now).await;
    assert_eq!(
        next_data(&mut watcher, Duration::from_secs(2)).await,
        json!({"coupon_id": coupon, "total_quantity": 4, "issued_quantity": 0, "remaining": 4,
            "period": "ended", "paused": false})
    );
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_coupon_whose_redis_state_was_lost_is_rebuilt_by_its_ticker() {
    let (env, app) = spawn::spawn_shared_app().await;
    let from_now = (-chrono::Duration::minutes(1), chrono::Duration::hours(1));
    let (coupon, mut watcher) = watch_new_coupon(&app, 6, from_now).await;
    assert_eq!(
        next_data(&mut watcher, Duration::from_secs(2)).await["remaining"],
        json!(6)
    );
    let keys = integration_tests::keys(coupon);
    let mut redis = env.redis().await;
    let () = redis::cmd("DEL").arg(&keys.meta).query_async(&mut redis).await.unwrap();
    wait::until(Duration::from_secs(20), "the metadata rebuilt from MySQL", || {
        let mut redis = redis.clone();
        let meta = keys.meta.clone();
        async move {
            let exists: bool = redis::cmd("EXISTS").arg(&meta).query_async(&mut redis).await.unwrap();
            exists.then_some(())
        }
    })
    .await;
    assert_eq!(app.client.issue(coupon, 11).await.0, 202);
    let after = next_data(&mut watcher, Duration::from_secs(5)).await;
    assert_eq!(
        (after["issued_quantity"].as_i64(), after["remaining"].as_i64()),
        (Some(1), Some(5))
    );
    app.finish(&env).await;
}

/// Counter commands per second Redis ran over `window`.
async fn counter_rate(redis: &mut redis::aio::ConnectionManager, window: Duration) -> f64 {
    let before = command_calls(redis, &COUNTER_COMMANDS).await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = command_calls(redis, &COUNTER_COMMANDS).await;
    (after - before) as f64 / started.elapsed().as_secs_f64()
}

/// What one watcher saw, from its first event to the end of its stream.
struct Seen {
    issued: Vec<i64>,
    remaining: Vec<i64>,
    end: Message,
}

/// Opens a watcher (at most `opening`'s permits at once, so the listen
/// backlog is not flooded), counts its first event in `ready` and each one
/// that shows the sale done in `done`, and reads until the stream ends.
fn watch(
    http: reqwest::Client,
    url: String,
    opening: Arc<Semaphore>,
    counts: Arc<(AtomicUsize, AtomicUsize)>,
    quantity: i64,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut opening = Some(opening.acquire_owned().await.unwrap());
        let mut stream = sse::open(&http, &url).await.unwrap_or_else(|e| panic!("{e:?}"));
        let mut seen = Seen {
            issued: Vec::new(),
            remaining: Vec::new(),
            end: Message::Ended,
        };
        loop {
            match stream.next_data().await {
                Ok(data) => {
                    if opening.take().is_some() {
                        counts.0.fetch_add(1, Ordering::SeqCst);
                    }
                    seen.issued.push(data["issued_quantity"].as_i64().unwrap());
                    seen.remaining.push(data["remaining"].as_i64().unwrap());
                    if data["issued_quantity"] == json!(quantity) {
                        counts.1.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(end) => {
                    seen.end = end;
                    return seen;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_watchers_see_a_sale_count_down_at_a_flat_redis_cost_and_their_streams_end_on_sigterm() {
    let limit = raise_fd_limit();
    assert!(
        limit >= 12_000,
        "5,000 watchers need about 11,000 descriptors here and there; the limit is {limit}"
    );
    let env = Env::shared().await;
    let mut api = ApiProcess::spawn_with(&env, &[("LIVE_MAX_WATCHERS".into(), "6000".into())]).await;
    let quantity = 300;
    let coupon = api.client.create_open_coupon(quantity).await;
    let url = live_url(&api.client.base, coupon);
    let mut redis = env.redis().await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let opening = Arc::new(Semaphore::new(200));
    let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let spawn_watchers = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| watch(http.clone(), url.clone(), opening.clone(), counts.clone(), quantity))
            .collect()
    };
    let all_ready = |n: usize| {
        let counts = counts.clone();
        async move {
            let what = format!("{n} watchers told the count");
            wait::until(Duration::from_secs(120), &what, || async {
                (counts.0.load(Ordering::SeqCst) >= n).then_some(())
            })
            .await
        }
    };

    let mut watchers = spawn_watchers(10);
    all_ready(10).await;
    let few = counter_rate(&mut redis, Duration::from_secs(3)).await;
    watchers.extend(spawn_watchers(4_990));
    all_ready(5_000).await;
    let many = counter_rate(&mut redis, Duration::from_secs(3)).await;
    eprintln!("counter commands per second: {few:.1} with 10 watchers, {many:.1} with 5,000");
    // One pipeline of three commands per 100 ms tick, whoever watches.
    assert!((15.0..=33.0).contains(&few), "{few:.1}/s with 10 watchers");
    assert!(
        many <= few * 1.2 + 3.0,
        "{many:.1}/s with 5,000 watchers against {few:.1}/s with 10"
    );

    // The sale: 400 users for 300 coupons, 32 requests in flight.
    let issue_http = reqwest::Client::new();
    let accepted = stream::iter(1..=400i64)
        .map(|user| post_issue(&issue_http, &api.client.base, coupon, user))
        .buffer_unordered(32)
        .filter(|reply| std::future::ready(reply.status == Some(202)))
        .count()
        .await;
    assert_eq!(accepted, quantity as usize);
    wait::until(
        Duration::from_secs(60),
        "every watcher told the sale is done",
        || async { (counts.1.load(Ordering::SeqCst) >= 5_000).then_some(()) },
    )
    .await;

    let (status, took) = api.sigterm(Duration::from_secs(20)).await;
    assert!(status.success(), "coupon-api exited {status}");
    assert!(took < Duration::from_secs(10), "coupon-api took {took:?} to stop");
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("a stream ends with the process")
            .unwrap();
        assert_eq!(seen.end, Message::Ended, "a clean end of the stream");
        assert_eq!(seen.issued.last(), Some(&quantity));
        assert_eq!(seen.remaining.last(), Some(&0));
        assert!(seen.remaining.windows(2).all(|w| w[1] <= w[0]), "{:?}", seen.remaining);
        assert!(seen.issued.windows(2).all(|w| w[1] >= w[0]), "{:?}", seen.issued);
    }
    env.cleanup().await;
}
