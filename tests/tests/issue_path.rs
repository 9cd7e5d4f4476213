//! The issuance path end to end (issue #2): HTTP → Lua → stream → consumer
//! group → MySQL, against the real Redis and MariaDB of this machine.

use futures::stream::{self, StreamExt};
use integration_tests::checks::assert_sold_out;
use integration_tests::spawn;
use integration_tests::{keys, wait, CONSUMER_GROUP};
use redis::AsyncCommands;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_flash_sale_accepts_exactly_the_quantity_and_mysql_ends_equal() {
    let (env, app) = spawn::spawn_shared_app().await;
    let consumers = [
        spawn::spawn_consumer(&env, "c1").await,
        spawn::spawn_consumer(&env, "c2").await,
    ];
    let quantity = 100;
    let coupon = app.client.create_open_coupon(quantity).await;

    // 1,000 users, each asking three times, 256 requests in flight at once.
    let requests: Vec<i64> = (0..3).flat_map(|_| 1..=1000i64).collect();
    let answers: Vec<(i64, (u16, serde_json::Value))> = stream::iter(requests)
        .map(|user| {
            let client = app.client.clone();
            async move { (user, client.issue(coupon, user).await) }
        })
        .buffer_unordered(256)
        .collect()
        .await;

    let accepted: Vec<(i64, i64)> = answers
        .iter()
        .filter(|(_, (status, _))| *status == 202)
        .map(|(user, (_, body))| (*user, body["position"].as_i64().unwrap()))
        .collect();
    let accepted_users = assert_sold_out(coupon, &accepted, quantity);
    let mut codes: HashMap<String, usize> = HashMap::new();
    for (user, (status, body)) in &answers {
        if *status != 202 {
            assert_eq!(*status, 409, "{body}");
            let code = body["error"].as_str().unwrap().to_string();
            if code == "already_issued" {
                assert!(accepted_users.contains(user), "only accepted users hear already_issued");
            }
            *codes.entry(code).or_default() += 1;
        }
    }
    assert_eq!(codes.get("already_issued"), Some(&(2 * quantity as usize)));
    assert_eq!(codes.values().sum::<usize>(), 3000 - quantity as usize);

    let (_, view) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(
        (view["issued_quantity"].as_i64(), view["remaining"].as_i64()),
        (Some(quantity), Some(0))
    );

    wait::until(
        Duration::from_secs(30),
        "the consumers to write every accepted user",
        || async { (env.mysql_users(coupon).await.len() as i64 == quantity).then_some(()) },
    )
    .await;
    assert_eq!(
        env.mysql_users(coupon).await,
        accepted_users,
        "MySQL holds exactly the accepted users"
    );
    assert_eq!(env.ledger(coupon).await.issued_quantity, Some(quantity));
    let some_user = *accepted_users.iter().next().unwrap();
    let (status, body) = app.client.get(&format!("/coupons/{coupon}/issues/{some_user}")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("issued")), "{body}");
    assert!(body["issued_at"].as_str().is_some());

    for consumer in consumers {
        assert!(consumer.is_running());
        consumer.stop().await;
    }
    app.finish(&env).await;
}

#[tokio::test]
async fn requests_outside_the_issue_period_or_for_unknown_coupons_are_refused_without_a_trace() {
    let (env, app) = spawn::spawn_shared_app().await;
    let now = chrono::Utc::now();
    let window = |from: i64, to: i64| {
        json!({"name": "later", "total_quantity": 5,
            "issue_start": (now + chrono::Duration::minutes(from)).to_rfc3339(),
            "issue_end": (now + chrono::Duration::minutes(to)).to_rfc3339()})
    };
    let (_, future) = app.client.create_coupon(window(60, 120)).await;
    let (_, past) = app.client.create_coupon(window(-120, -60)).await;
    let (future, past) = (future["id"].as_i64().unwrap(), past["id"].as_i64().unwrap());

    let (status, body) = app.client.issue(future, 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("issue_period_not_started"))
    );
    let (status, body) = app.client.issue(past, 1).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("issue_period_ended")));
    let unknown = future + 1_000_000;
    for _ in 0..3 {
        let (status, body) = app.client.issue(unknown, 1).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("coupon_not_found")));
    }
    let (status, body) = app.client.get(&format!("/coupons/{unknown}")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("coupon_not_found")));
    let (status, body) = app.client.get(&format!("/coupons/{past}/issues/1")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let mut redis = env.redis().await;
    for coupon in [future, past, unknown] {
        let issued: i64 = redis.scard(keys(coupon).issued).await.unwrap();
        let events: i64 = redis.exists(keys(coupon).events).await.unwrap();
        assert_eq!((issued, events), (0, 0), "a refused request changes nothing");
    }
    app.finish(&env).await;
}

#[tokio::test]
async fn creating_a_coupon_needs_the_admin_token() {
    let (env, app) = spawn::spawn_shared_app().await;
    let body = json!({"name": "x", "total_quantity": 1, "issue_start": "2026-01-01T00:00:00Z", "issue_end": "2027-01-01T00:00:00Z"});
    let url = format!("{}/coupons", app.client.base);
    for token in [None, Some("wrong"), Some("test-admin-token-but-longer")] {
        let mut request = app.client.http.post(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "unauthorized");
    }
    let (status, created) = app.client.create_coupon(body.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(created["issue_end"], "2027-01-01T00:00:00Z");

    let disabled = spawn::spawn_app_with(spawn::api_config(&env, None)).await;
    let response = disabled
        .client
        .http
        .post(format!("{}/coupons", disabled.client.base))
        .bearer_auth("anything")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "admin_disabled");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons")
        .fetch_one(&env.db().await)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the authorised request created a coupon");
    disabled.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn an_event_delivered_twice_is_written_once() {
    let (env, app) = spawn::spawn_shared_app().await;
    let coupon = app.client.create_open_coupon(10).await;
    let (status, _) = app.client.issue(coupon, 77).await;
    assert_eq!(status, 202);
    // Duplicate the accepted entry in the stream, as a redelivery after a crash
    // between commit and ack would present it.
    let mut redis = env.redis().await;
    let entries: redis::streams::StreamRangeReply = redis.xrange_all(keys(coupon).events).await.unwrap();
    let original = &entries.ids[0];
    let field = |f: &str| match original.map.get(f) {
        Some(redis::Value::BulkString(b)) => b.clone(),
        other => panic!("unexpected field {f}: {other:?}"),
    };
    let _: String = redis
        .xadd(keys(coupon).events, "*", &[("ev", field("ev")), ("pos", field("pos"))])
        .await
        .unwrap();

    let consumer = spawn::spawn_consumer(&env, "dup").await;
    wait::until(Duration::from_secs(20), "both entries to be read and acked", || {
        let mut redis = redis.clone();
        async move {
            let drained = verify::stream::drained(&mut redis, &keys(coupon).events, CONSUMER_GROUP).await;
            drained.ok()?.then_some(())
        }
    })
    .await;
    assert_eq!(env.mysql_users(coupon).await, HashSet::from([77]));
    assert_eq!(
        env.ledger(coupon).await.issued_quantity,
        Some(1),
        "the redelivery did not count twice"
    );
    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn a_new_coupon_starts_empty_even_if_redis_holds_leftovers_under_its_id() {
    let (env, app) = spawn::spawn_shared_app().await;
    let db = env.db().await;
    let database = env.database_url.rsplit('/').next().unwrap().to_string();
    // MariaDB and MySQL 8 may cache this; ANALYZE makes it current.
    sqlx::query("ANALYZE TABLE coupons").execute(&db).await.unwrap();
    let next: u64 = sqlx::query_scalar(
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'coupons'",
    )
    .bind(&database)
    .fetch_one(&db)
    .await
    .unwrap();
    // Leftovers of a database that was reset while Redis was not: a full set.
    let mut redis = env.redis().await;
    let next = i64::try_from(next).unwrap();
    let stale = keys(next);
    let () = redis.sadd(&stale.issued, &[1, 2, 3]).await.unwrap();
    let () = redis.hset(&stale.meta, "total_quantity", 3).await.unwrap();

    let coupon = app.client.create_open_coupon(3).await;
    assert_eq!(coupon, next);
    let (status, body) = app.client.issue(coupon, 1).await;
    assert_eq!((status, body["position"].as_i64()), (202, Some(1)), "{body}");
    let (_, view) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(view["issued_quantity"], 1);
    app.finish(&env).await;
}
