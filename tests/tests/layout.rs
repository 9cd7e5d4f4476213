//! The partitioned layout from the outside: a coupon's Redis state expires a
//! retention after its issue period while MySQL keeps answering for it, and a
//! process configured with another partition count than the deployment's
//! refuses to start.

use integration_tests::spawn::{self, Env};
use integration_tests::{keys, wait};
use redis::AsyncCommands;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_coupons_redis_state_expires_after_its_retention_and_mysql_answers_for_it() {
    let env = Env::shared().await;
    let mut config = spawn::api_config(&env, Some(spawn::ADMIN_TOKEN));
    config.common.redis.coupon_retention_s = 2;
    let app = spawn::spawn_app_with(config).await;
    let consumer = spawn::spawn_consumer(&env, "c1").await;
    let now = chrono::Utc::now();
    let (status, body) = app
        .client
        .create_coupon(json!({
            "name": "short",
            "total_quantity": 5,
            "issue_start": (now - chrono::Duration::seconds(10)).to_rfc3339(),
            "issue_end": (now + chrono::Duration::seconds(1)).to_rfc3339(),
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    let coupon = body["id"].as_i64().unwrap();
    let (status, body) = app.client.issue(coupon, 7).await;
    assert_eq!(status, 202, "{body}");

    let mut redis = env.redis().await;
    let ttl: i64 = redis.pttl(keys(coupon).meta).await.unwrap();
    assert!(
        (1..=3_500).contains(&ttl),
        "the state expires 2 s after the period's end: {ttl} ms"
    );
    wait::until(Duration::from_secs(10), "the coupon's keys to expire", || {
        let mut redis = redis.clone();
        async move {
            let left: i64 = redis.exists(&[keys(coupon).meta, keys(coupon).issued]).await.ok()?;
            (left == 0).then_some(())
        }
    })
    .await;

    // MySQL answers for it, and asking does not bring the keys back.
    let (_, view) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(view["issued_quantity"], 1, "{view}");
    let (status, body) = app.client.get(&format!("/coupons/{coupon}/issues/7")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("issued")), "{body}");
    let (status, body) = app.client.issue(coupon, 8).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("issue_period_ended")),
        "{body}"
    );
    let left: i64 = redis.exists(&[keys(coupon).meta, keys(coupon).issued]).await.unwrap();
    assert_eq!(left, 0, "no state was rebuilt for an expired coupon");
    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn a_process_with_another_partition_count_than_the_deployments_refuses_to_start() {
    let env = Env::shared().await;
    let app = spawn::spawn_app(&env).await;
    let mut config = spawn::api_config(&env, Some(spawn::ADMIN_TOKEN));
    config.common.redis.stream_partitions = 8;
    let refused = api::Application::build(&config).await;
    let err = refused.err().expect("a second partition count is refused");
    assert!(err.to_string().contains("STREAM_PARTITIONS is 8"), "{err}");
    let mut consumer_config = spawn::consumer_config(&env, "c8");
    consumer_config.common.redis.stream_partitions = 8;
    assert!(
        consumer::build(&consumer_config).await.is_err(),
        "the consumer refuses too"
    );
    app.finish(&env).await;
}
