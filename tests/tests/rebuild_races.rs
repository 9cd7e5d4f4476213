//! The rebuild of a coupon's Redis state from MySQL, raced against what a
//! careful reading found (issue 10): a consumer's batch in flight while Redis
//! lost its data, another instance publishing a coupon that is already selling,
//! and a rebuild longer than one request's deadline.

use integration_tests::binaries::{ApiProcess, ConsumerOptions, ConsumerProcess};
use integration_tests::keys;
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::Env;
use integration_tests::wait;
use redis::AsyncCommands;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

/// One test at a time: each runs its own servers and processes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Asks until the answer is not a 503 (a client retrying as the contract allows).
async fn issue_until_decided(api: &ApiProcess, coupon: i64, user: i64, within: Duration) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + within;
    loop {
        let url = format!("{}/coupons/{coupon}/issue", api.client.base);
        let sent = api
            .client
            .http
            .post(url)
            .json(&serde_json::json!({ "user_id": user }))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if status != 503 {
                return (status, body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "user {user} got no decision within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_in_flight_when_redis_loses_its_data_is_counted_before_anyone_else_is_accepted() {
    let _serial = SERIAL.lock().await;
    let (redis, maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
    let env = Env::on(&redis.url(), &maria.url());
    let api = ApiProcess::spawn(&env).await;
    let quantity = 10;
    let coupon = api.client.create_open_coupon(quantity).await;
    let consumer = ConsumerProcess::spawn(&env, "c1", &ConsumerOptions::default());
    let db = env.db().await;

    // The consumer reads the first five users, then waits on the coupon row.
    let mut lock = db.begin().await.unwrap();
    sqlx::query("SELECT id FROM coupons WHERE id = ? FOR UPDATE")
        .bind(coupon)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    let mut accepted = BTreeSet::new();
    for user in 1..=5 {
        let (status, body) = api.client.issue(coupon, user).await;
        assert_eq!(status, 202, "{body}");
        accepted.insert(user);
    }
    let mut conn = env.redis().await;
    wait::until(Duration::from_secs(10), "the consumer to hold the five entries", || {
        let mut conn = conn.clone();
        async move {
            let pending: redis::streams::StreamPendingReply = conn
                .xpending(keys(coupon).events, integration_tests::CONSUMER_GROUP)
                .await
                .ok()?;
            (pending.count() == 5).then_some(())
        }
    })
    .await;

    // Redis forgets everything while the batch is in flight; the batch commits
    // a second later, well within its lease.
    redis.flushall().await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        lock.rollback().await.unwrap();
    });
    for user in 6..=15 {
        let (status, body) = issue_until_decided(&api, coupon, user, Duration::from_secs(30)).await;
        match status {
            202 => assert!(accepted.insert(user)),
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            other => panic!("user {user}: {other} {body}"),
        }
    }
    release.await.unwrap();

    let rows = wait::until(Duration::from_secs(30), "MySQL to fill up", || async {
        let rows: BTreeSet<i64> = env.mysql_users(coupon).await.into_iter().collect();
        (rows.len() as i64 == quantity).then_some(rows)
    })
    .await;
    let lost: Vec<&i64> = accepted.difference(&rows).collect();
    assert!(lost.is_empty(), "accepted users without a row: {lost:?}");
    assert_eq!(rows, accepted, "the five in flight plus five more, no more");
    let failed: Vec<(i64, String)> = conn.hgetall(keys(coupon).failed).await.unwrap();
    assert!(failed.is_empty(), "nobody accepted ends failed: {failed:?}");
    drop((consumer, api));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_with_many_users_is_rebuilt_even_when_the_rebuild_outlasts_every_request_deadline() {
    let _serial = SERIAL.lock().await;
    let (redis, maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
    let env = Env::on(&redis.url(), &maria.url());
    let api = ApiProcess::spawn_with(&env, &[("REQUEST_TIMEOUT_MS".into(), "100".into())]).await;
    let users: i64 = 500_000;
    let coupon = api.client.create_open_coupon(users + 10).await;
    let db = env.db().await;
    // Half a million issued users, written as a consumer would have.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO coupon_issues (coupon_id, user_id, position, accepted_at, issued_at) \
         SELECT {coupon}, n, n, NOW(3), NOW(3) FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*d.d + 10000*e.d + 100000*f.d + 1 AS n \
         FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) e, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) f) seq; \
         UPDATE coupons SET issued_quantity = {users} WHERE id = {coupon};"
    )))
    .execute(&db)
    .await
    .unwrap();
    redis.flushall().await;

    // Every request gives up after 100 ms; the rebuild must finish anyway.
    let started = Instant::now();
    let (status, body) = issue_until_decided(&api, coupon, users + 1, Duration::from_secs(40)).await;
    eprintln!("decided {:?} after the loss", started.elapsed());
    // A retry after a 503 whose script did run learns so: already_issued.
    assert!(status == 202 || body["error"] == "already_issued", "{status} {body}");
    let issued: i64 = env.redis().await.scard(keys(coupon).issued).await.unwrap();
    assert_eq!(
        issued,
        users + 1,
        "the rebuilt set holds every user of MySQL and the new one"
    );
    let (status, body) = api.client.issue(coupon, 7).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_issued")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_publish_by_the_creating_instance_keeps_what_another_instance_accepted_meanwhile() {
    let (env, app) = integration_tests::spawn::spawn_shared_app().await;
    let db = env.db().await;
    // The creating instance's INSERT has committed; its publish has not run yet.
    let now = chrono::Utc::now();
    let id = sqlx::query("INSERT INTO coupons (name, total_quantity, issue_start, issue_end) VALUES ('race', 10, ?, ?)")
        .bind(now - chrono::Duration::minutes(1))
        .bind(now + chrono::Duration::hours(1))
        .execute(&db)
        .await
        .unwrap()
        .last_insert_id() as i64;
    // Another instance is asked for the new id first, rebuilds it and accepts.
    for user in 1..=3 {
        let (status, body) = app.client.issue(id, user).await;
        assert_eq!(status, 202, "{body}");
    }
    // Now the creating instance publishes, late.
    let coupon = shared::Coupon {
        id: shared::CouponId::new(id).unwrap(),
        name: "race".into(),
        total_quantity: 10,
        issue_start: now - chrono::Duration::minutes(1),
        issue_end: now + chrono::Duration::hours(1),
        paused: false,
    };
    let mut redis = shared::redis_conn::connect(&env.redis_config(), Duration::from_secs(1))
        .await
        .unwrap();
    let placement = api::rebuild::Placement {
        layout: shared::Layout::default(),
        retention: Duration::from_secs(3600),
    };
    api::rebuild::publish_new(&mut redis, &db, placement, &coupon)
        .await
        .unwrap();

    let (_, view) = app.client.get(&format!("/coupons/{id}")).await;
    assert_eq!(view["issued_quantity"], 3, "the three acceptances survive: {view}");
    let (status, body) = app.client.issue(id, 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_issued")),
        "{body}"
    );
    let (status, body) = app.client.issue(id, 4).await;
    assert_eq!((status, body["position"].as_i64()), (202, Some(4)), "{body}");
    app.finish(&env).await;
}
