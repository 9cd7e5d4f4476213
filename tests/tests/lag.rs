//! Lag in seconds and the consumer's health, as an operator sees them on a
//! real `coupon-consumer` process: the age gauges grow while accepted requests
//! wait (held behind a MySQL row lock, or unread), drop to 0 once written; the
//! accepted-to-written histogram counts each row written with the time it
//! waited; `/readyz` turns 503 (saying why) when the worker has work it makes
//! no progress on and back once it does; `/healthz` fails only when the loop
//! stops turning, not while it retries through a MySQL outage.
//!
//! One test at a time: their thresholds are seconds, which a neighbour eating
//! the two cores could stretch.

use futures::StreamExt;
use integration_tests::binaries::{ConsumerOptions, ConsumerProcess};
use integration_tests::scrape::sample;
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::wait;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// Long enough for anything here to happen on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

const PENDING_AGE: &str = "coupon_stream_oldest_pending_age_seconds";
const UNDELIVERED_AGE: &str = "coupon_stream_oldest_undelivered_age_seconds";
const WAITED: &str = "coupon_consumer_accepted_to_written_seconds";

async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// A consumer process with these health thresholds (ms) and its ops endpoints.
struct Ops {
    consumer: ConsumerProcess,
    http: reqwest::Client,
    base: String,
}

impl Ops {
    async fn start(env: &Env, ready_stall_ms: u64, live_stall_ms: u64) -> Self {
        Self::start_with(env, ready_stall_ms, live_stall_ms, ConsumerOptions::default()).await
    }

    async fn start_with(env: &Env, ready_stall_ms: u64, live_stall_ms: u64, options: ConsumerOptions) -> Self {
        let options = ConsumerOptions {
            extra_env: vec![
                ("READY_STALL_MS".into(), ready_stall_ms.to_string()),
                ("LIVE_STALL_MS".into(), live_stall_ms.to_string()),
            ],
            ..options
        };
        let consumer = ConsumerProcess::spawn_serving(env, "lag", &options).await;
        let base = consumer.ops.clone().expect("spawn_serving gives the ops address");
        Self {
            consumer,
            http: reqwest::Client::new(),
            base,
        }
    }

    /// The status and JSON body (or text, as a JSON string) of `GET path`.
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.consumer.log_tail(20)));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn metrics(&self) -> String {
        match self.get("/metrics").await {
            (200, Value::String(text)) => text,
            other => panic!("/metrics answered {other:?}"),
        }
    }

    /// Waits until `path` answers `status`; returns the body.
    async fn until_status(&self, path: &str, status: u16) -> Value {
        wait::until(DEADLINE, &format!("{path} to answer {status}"), || async move {
            let (code, body) = self.get(path).await;
            (code == status).then_some(body)
        })
        .await
    }

    /// Waits until `check` holds on the metrics; returns them.
    async fn until_metrics(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let check = &check;
        wait::until(DEADLINE, what, || async move {
            let text = self.metrics().await;
            check(&text).then_some(text)
        })
        .await
    }
}

/// A gauge of `partition`; NaN (no comparison holds) when it is not there.
fn gauge(metrics: &str, name: &str, partition: u16) -> f64 {
    sample(metrics, &format!("{name}{{partition=\"{partition}\"}} ")).unwrap_or(f64::NAN)
}

fn count(metrics: &str) -> f64 {
    sample(metrics, &format!("{WAITED}_count")).unwrap_or(0.0)
}

fn sum(metrics: &str) -> f64 {
    sample(metrics, &format!("{WAITED}_sum")).unwrap_or(0.0)
}

fn bucket(metrics: &str, le: &str) -> f64 {
    sample(metrics, &format!("{WAITED}_bucket{{le=\"{le}\"}}")).unwrap_or(0.0)
}

fn partition_of(coupon: i64) -> u16 {
    shared::Layout::default().partition_of(shared::CouponId::new(coupon).unwrap())
}

async fn accept(app: &TestApp, coupon: i64, users: impl IntoIterator<Item = i64>) {
    for user in users {
        let (status, body) = app.client.issue(coupon, user).await;
        assert_eq!(status, 202, "user {user}: {body}");
    }
}

async fn until_rows(env: &Env, coupon: i64, users: impl IntoIterator<Item = i64>) {
    let expected: HashSet<i64> = users.into_iter().collect();
    wait::until(DEADLINE, "every accepted user's row", || {
        let expected = expected.clone();
        async move { (env.mysql_users(coupon).await == expected).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_behind_a_locked_row_age_in_the_gauges_turn_readiness_503_and_are_counted_once_written() {
    let _serial = serial().await;
    let env = Env::shared().await;
    let app = spawn::spawn_app(&env).await;
    let coupon = app.client.create_open_coupon(20).await;
    let partition = partition_of(coupon);
    let ops = Ops::start(&env, 3000, 60_000).await;

    // Idle: ready, and every partition's ages are reported as 0.
    assert_eq!(ops.until_status("/readyz", 200).await["status"], "ready");
    let idle = ops
        .until_metrics("the age gauges of every partition", |m| {
            (0..shared::Layout::DEFAULT_PARTITIONS)
                .all(|p| gauge(m, PENDING_AGE, p) == 0.0 && gauge(m, UNDELIVERED_AGE, p) == 0.0)
        })
        .await;
    assert_eq!(count(&idle), 0.0, "nothing written yet");

    // One request written: one sample, and a short wait.
    accept(&app, coupon, [1]).await;
    until_rows(&env, coupon, [1]).await;
    let written_one = ops.until_metrics("one row counted", |m| count(m) == 1.0).await;
    assert!(sum(&written_one) < 5.0, "{}", sum(&written_one));

    // The consumer takes user 2 and waits on the row lock; the users accepted
    // next are left unread (it reads no more while its batch is in hand).
    let db = env.db().await;
    let lock = spawn::lock_coupon_row(&db, coupon).await;
    accept(&app, coupon, [2]).await;
    ops.until_metrics("user 2 pending with the consumer", |m| {
        gauge(m, PENDING_AGE, partition) > 0.0
    })
    .await;
    accept(&app, coupon, 3..=6).await;
    let held = ops
        .until_metrics("both ages past 2 s", |m| {
            gauge(m, PENDING_AGE, partition) >= 2.0 && gauge(m, UNDELIVERED_AGE, partition) >= 2.0
        })
        .await;
    let later = ops
        .until_metrics("the ages to grow", |m| {
            gauge(m, PENDING_AGE, partition) >= gauge(&held, PENDING_AGE, partition) + 1.0
                && gauge(m, UNDELIVERED_AGE, partition) >= gauge(&held, UNDELIVERED_AGE, partition) + 1.0
        })
        .await;
    assert!(
        gauge(&later, PENDING_AGE, partition) > gauge(&later, UNDELIVERED_AGE, partition),
        "user 2 has waited longer than users 3 to 6"
    );
    let others = (0..shared::Layout::DEFAULT_PARTITIONS).filter(|&p| p != partition);
    assert!(
        others
            .clone()
            .all(|p| gauge(&later, PENDING_AGE, p) == 0.0 && gauge(&later, UNDELIVERED_AGE, p) == 0.0),
        "only the coupon's partition lags"
    );

    // No progress with work waiting: not ready, and why; still live (the
    // statement waits on a lock, well within LIVE_STALL_MS).
    let not_ready = ops.until_status("/readyz", 503).await;
    assert_eq!(not_ready["status"], "not_ready", "{not_ready}");
    assert_eq!(not_ready["reason"], "no_progress", "{not_ready}");
    assert!(not_ready["seconds"].as_f64().unwrap() > 3.0, "{not_ready}");
    assert!(
        not_ready["message"].as_str().unwrap().contains("committing"),
        "{not_ready}"
    );
    assert_eq!(ops.get("/healthz").await.0, 200);
    assert_eq!(
        count(&ops.metrics().await),
        1.0,
        "nothing written while the row is locked"
    );

    // Unlocked: all five written, each counted once with the seconds it waited.
    lock.rollback().await.unwrap();
    until_rows(&env, coupon, 1..=6).await;
    let after = ops.until_metrics("five more rows counted", |m| count(m) == 6.0).await;
    assert!(
        sum(&after) - sum(&written_one) >= 5.0 * 2.0,
        "each of the five waited 2 s or more: {} s in all",
        sum(&after) - sum(&written_one)
    );
    assert_eq!(
        bucket(&after, "1") - bucket(&written_one, "1"),
        0.0,
        "none of the five was written within 1 s"
    );
    assert_eq!(bucket(&after, "+Inf"), 6.0);
    ops.until_metrics("the ages back to 0", |m| {
        gauge(m, PENDING_AGE, partition) == 0.0 && gauge(m, UNDELIVERED_AGE, partition) == 0.0
    })
    .await;
    assert_eq!(ops.until_status("/readyz", 200).await["status"], "ready");

    let mut consumer = ops.consumer;
    consumer.sigterm(Duration::from_secs(15)).await;
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_stays_live_and_ready_and_one_whose_loop_is_stuck_fails_liveness_until_it_turns_again() {
    let _serial = serial().await;
    let env = Env::shared().await;
    let app = spawn::spawn_app(&env).await;
    let coupon = app.client.create_open_coupon(5).await;
    let ops = Ops::start(&env, 2000, 3000).await;
    ops.until_status("/readyz", 200).await;

    // Idle well past both thresholds: the loop turns every BLOCK_MS.
    let idle_until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < idle_until {
        assert_eq!(ops.get("/healthz").await, (200, Value::String("ok".into())));
        assert_eq!(ops.get("/readyz").await, (200, serde_json::json!({"status": "ready"})));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The batch's statement waits on the row lock: the loop does not turn.
    let db = env.db().await;
    let lock = spawn::lock_coupon_row(&db, coupon).await;
    accept(&app, coupon, [1]).await;
    let stuck = ops.until_status("/healthz", 503).await;
    assert_eq!(stuck["status"], "stuck", "{stuck}");
    assert_eq!(stuck["reason"], "stuck", "{stuck}");
    assert!(stuck["seconds"].as_f64().unwrap() > 3.0, "{stuck}");
    let (code, not_ready) = ops.get("/readyz").await;
    assert_eq!(
        (code, &not_ready["reason"]),
        (503, &Value::from("stuck")),
        "{not_ready}"
    );

    lock.rollback().await.unwrap();
    until_rows(&env, coupon, [1]).await;
    assert_eq!(ops.until_status("/healthz", 200).await, Value::String("ok".into()));
    ops.until_status("/readyz", 200).await;

    let mut consumer = ops.consumer;
    consumer.sigterm(Duration::from_secs(15)).await;
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_retrying_through_a_mysql_outage_stays_live_but_is_not_ready_until_mysql_is_back() {
    let _serial = serial().await;
    let (redis, mut maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
    let env = Env::on(&redis.url(), &maria.url());
    let app = spawn::spawn_app(&env).await;
    let coupon = app.client.create_open_coupon(10).await;
    let partition = partition_of(coupon);
    // Every attempt may wait out the pool's acquire timeout (3 s): turns stay
    // well within the default LIVE_STALL_MS.
    let ops = Ops::start(&env, 2000, 60_000).await;
    ops.until_status("/readyz", 200).await;

    maria.kill9();
    accept(&app, coupon, 1..=3).await;
    let not_ready = ops.until_status("/readyz", 503).await;
    assert_eq!(not_ready["reason"], "no_progress", "{not_ready}");
    ops.until_metrics("the pending age past 2 s", |m| gauge(m, PENDING_AGE, partition) >= 2.0)
        .await;
    assert_eq!(ops.get("/healthz").await.0, 200, "retrying is turning");

    maria.restart().await;
    until_rows(&env, coupon, 1..=3).await;
    ops.until_status("/readyz", 200).await;
    let written = ops
        .until_metrics("the ages back to 0 and three rows counted", |m| {
            gauge(m, PENDING_AGE, partition) == 0.0 && count(m) == 3.0
        })
        .await;
    assert!(
        sum(&written) >= 3.0 * 2.0,
        "each waited out the outage: {}",
        sum(&written)
    );

    let mut consumer = ops.consumer;
    consumer.sigterm(Duration::from_secs(15)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_draining_a_backlog_longer_than_the_threshold_stays_ready_while_it_makes_progress() {
    let _serial = serial().await;
    let env = Env::shared().await;
    let app = spawn::spawn_app(&env).await;
    // Enough entries that even a fast machine drains them one per batch in
    // several READY_STALL_MS (1,500 took 2.98 s on an idle 2-core box).
    const USERS: i64 = 3000;
    const READY_STALL_MS: u64 = 1000;
    let coupon = app.client.create_open_coupon(USERS).await;
    let partition = partition_of(coupon);
    // Accepted before any consumer runs: a backlog read one entry per batch.
    let answers: Vec<u16> = futures::stream::iter(1..=USERS)
        .map(|user| {
            let client = app.client.clone();
            async move { client.issue(coupon, user).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|&code| code == 202), "every request accepted");
    let options = ConsumerOptions {
        batch_size: 1,
        ..ConsumerOptions::default()
    };
    let ops = Ops::start_with(&env, READY_STALL_MS, 60_000, options).await;

    // Always work waiting, never more than a few ms without a commit: ready
    // throughout, once the loop has turned.
    ops.until_status("/readyz", 200).await;
    let started = tokio::time::Instant::now();
    let mut oldest_unread = 0.0_f64;
    loop {
        let (code, body) = ops.get("/readyz").await;
        assert_eq!(code, 200, "not ready while draining: {body}");
        oldest_unread = oldest_unread.max(gauge(&ops.metrics().await, UNDELIVERED_AGE, partition));
        if env.ledger(coupon).await.rows == USERS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the backlog drains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    assert!(
        drained > Duration::from_millis(3 * READY_STALL_MS),
        "the drain ({drained:?}) must outlast READY_STALL_MS several times to show anything"
    );
    assert!(
        oldest_unread > 1.0,
        "the backlog showed as unread for {oldest_unread} s"
    );

    let mut consumer = ops.consumer;
    consumer.sigterm(Duration::from_secs(15)).await;
    app.finish(&env).await;
}
