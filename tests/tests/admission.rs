//! Admission of a hot coupon as users see it: a sold-out coupon answered from
//! the API's memory still tells holders `already_issued` and keeps the issued
//! count exact, reopens when the quantity is raised (on the instance that
//! raised it at once, on the others within a second) or when Redis lost the
//! state; with `REDIS_WAIT_REPLICAS`, a 202 means the replica has it, and a
//! replica that is gone answers 503 and loses nothing.

use integration_tests::servers::PrivateRedis;
use integration_tests::spawn::{self, Env};
use integration_tests::wait;
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::time::Duration;

/// Script calls Redis has run so far.
async fn script_calls(env: &Env) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    let calls = |line: &str| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_eval:"))
        .filter_map(calls)
        .sum()
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sold_out_coupon_answers_holders_and_reopens_on_every_instance_when_the_quantity_is_raised() {
    let env = Env::shared().await;
    let (a, b) = (spawn::spawn_app(&env).await, spawn::spawn_app(&env).await);
    let coupon = a.client.create_open_coupon(2).await;
    assert_eq!(a.client.issue(coupon, 1).await.0, 202);
    assert_eq!(b.client.issue(coupon, 2).await.0, 202);
    // Sold out on both (each now answers from memory): holders still learn so.
    for client in [&a.client, &b.client] {
        for _ in 0..3 {
            let (status, body) = client.issue(coupon, 3).await;
            assert_eq!((status, error(&body)), (409, "sold_out"), "{body}");
            for holder in [1, 2] {
                let (status, body) = client.issue(coupon, holder).await;
                assert_eq!((status, error(&body)), (409, "already_issued"), "{body}");
            }
        }
        let (_, body) = client.get(&format!("/coupons/{coupon}")).await;
        assert_eq!(
            (&body["issued_quantity"], &body["remaining"]),
            (&json!(2), &json!(0)),
            "{body}"
        );
    }
    // ... without asking Redis: at most one script call per instance a second.
    let calls_before = script_calls(&env).await;
    for user in 10..40 {
        assert_eq!(b.client.issue(coupon, user).await.1["error"], json!("sold_out"));
    }
    let calls = script_calls(&env).await - calls_before;
    assert!(calls <= 2, "{calls} script calls for 30 sold-out requests");

    // Raised on a: a accepts the very next request; b within a second.
    let (status, body) = a.client.patch_coupon(coupon, json!({"total_quantity": 4})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(a.client.issue(coupon, 3).await.0, 202);
    let started = std::time::Instant::now();
    wait::until(
        Duration::from_millis(1500),
        "the other instance to reopen the coupon",
        || async { (b.client.issue(coupon, 4).await.0 == 202).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "reopened after {:?}",
        started.elapsed()
    );
    let (status, body) = b.client.issue(coupon, 5).await;
    assert_eq!((status, error(&body)), (409, "sold_out"), "{body}");
    let (_, body) = b.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(body["issued_quantity"], json!(4), "{body}");
    b.stop().await;
    a.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sold_out_coupon_whose_redis_state_was_lost_reopens_with_what_mysql_has() {
    let redis = PrivateRedis::start().await;
    let env = Env::on(&redis.url(), &integration_tests::mysql_server_url());
    let app = spawn::spawn_app(&env).await;
    let coupon = app.client.create_open_coupon(1).await;
    assert_eq!(app.client.issue(coupon, 1).await.0, 202);
    assert_eq!(app.client.issue(coupon, 2).await.1["error"], json!("sold_out"));
    // No consumer ran: MySQL has nobody, so the rebuilt coupon has room again.
    redis.flushall().await;
    wait::until(
        Duration::from_secs(10),
        "the rebuilt coupon to accept again",
        || async { (app.client.issue(coupon, 2).await.0 == 202).then_some(()) },
    )
    .await;
    let (_, body) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(body["issued_quantity"], json!(1), "{body}");
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_wait_replicas_a_202_is_on_the_replica_and_a_stopped_replica_answers_503_losing_nothing() {
    let master = PrivateRedis::start().await;
    let mut replica = PrivateRedis::start_replica_of(&master).await;
    let env = Env::on(&master.url(), &integration_tests::mysql_server_url());
    let mut config = spawn::api_config(&env, Some(spawn::ADMIN_TOKEN));
    config.redis_wait_replicas = 1;
    config.redis_wait_timeout_ms = 300;
    let app = spawn::spawn_app_with(config).await;
    let coupon = app.client.create_open_coupon(10).await;
    let keys = integration_tests::keys(coupon);
    let mut on_replica = replica.client().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(app.client.issue(coupon, 1).await.0, 202);
    let there: bool = on_replica.sismember(&keys.issued, 1).await.unwrap();
    assert!(there, "a 202 was answered before the replica had the user");

    replica.kill9();
    let (status, body) = app.client.issue(coupon, 2).await;
    assert_eq!((status, error(&body)), (503, "unavailable"), "{body}");
    // What was written stays: the retry is told it has the coupon, and it is pending.
    let (status, body) = app.client.issue(coupon, 2).await;
    assert_eq!((status, error(&body)), (409, "already_issued"), "{body}");
    let (status, body) = app.client.get(&format!("/coupons/{coupon}/issues/2")).await;
    assert_eq!((status, &body["status"]), (200, &json!("pending")), "{body}");
    // A refusal is answered as it is, whatever the WAIT after it says.
    let (status, body) = app.client.issue(coupon, 1).await;
    assert_eq!((status, error(&body)), (409, "already_issued"), "{body}");

    replica.restart().await;
    replica.wait_linked().await;
    // A master that lost its scripts (a restart, a flush) gets the script
    // again, and the WAIT still follows it.
    let mut on_master = master.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut on_master)
        .await
        .unwrap();
    assert_eq!(app.client.issue(coupon, 3).await.0, 202);
    let mut on_replica = replica.client().get_multiplexed_async_connection().await.unwrap();
    let members: Vec<i64> = on_replica.smembers(&keys.issued).await.unwrap();
    let mut members = members;
    members.sort();
    assert_eq!(members, vec![1, 2, 3], "the replica caught up with everything accepted");
    let (_, body) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(body["issued_quantity"], json!(3), "{body}");
    app.finish(&env).await;
}
