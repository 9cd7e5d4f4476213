//! "Did I get it?" (issue 14, part 3): `GET /coupons/{id}/issues/{user}`
//! answers from Redis, what the consumer recorded as it acked, and from MySQL
//! once Redis lost the coupon; `?wait=` long-polls wake on the consumer's
//! write, time out cleanly, end on shutdown and are bounded per process.

use integration_tests::keys;
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::wait;
use redis::AsyncCommands;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A coupon of `quantity` with users 1..=`quantity` accepted, none written yet.
async fn accepted_sale(app: &TestApp, quantity: i64) -> (i64, HashSet<i64>) {
    let coupon = app.client.create_open_coupon(quantity).await;
    for user in 1..=quantity {
        let (status, body) = app.client.issue(coupon, user).await;
        assert_eq!(status, 202, "{body}");
    }
    (coupon, (1..=quantity).collect())
}

/// Sets the user's `issued_at` in MySQL to `at`, behind the API's back.
async fn rewrite_issued_at(env: &Env, coupon: i64, user: i64, at: &str) {
    sqlx::query("UPDATE coupon_issues SET issued_at = ? WHERE coupon_id = ? AND user_id = ?")
        .bind(at)
        .bind(coupon)
        .bind(user)
        .execute(&env.db().await)
        .await
        .unwrap();
}

fn issued_at(body: &Value) -> &str {
    assert_eq!(body["status"], "issued", "{body}");
    body["issued_at"].as_str().unwrap()
}

#[tokio::test]
async fn status_comes_from_what_the_consumer_recorded_in_redis_not_from_mysql() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (coupon, users) = accepted_sale(&app, 3).await;
    assert_eq!(
        app.client.status(coupon, 1, None).await,
        (200, serde_json::json!({"status": "pending"}))
    );
    let (status, body) = app.client.status(coupon, 99, None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");

    let consumer = spawn::spawn_consumer(&env, "c1").await;
    env.until_written(coupon, &users).await;
    let (status, body) = app.client.status(coupon, 1, Some("10")).await;
    assert_eq!(status, 200, "{body}");
    let recorded = issued_at(&body).to_string();
    // MySQL now says otherwise; the answer is still what Redis recorded.
    rewrite_issued_at(&env, coupon, 1, "2001-02-03 04:05:06.789").await;
    let (_, body) = app.client.status(coupon, 1, None).await;
    assert_eq!(issued_at(&body), recorded, "read from Redis, not MySQL");
    let (_, body) = app.client.status(coupon, 99, None).await;
    assert_eq!(body["error"], "not_found", "{body}");
    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn after_redis_lost_the_coupon_status_comes_from_mysql_and_the_rebuild_restores_it() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (coupon, users) = accepted_sale(&app, 3).await;
    let consumer = spawn::spawn_consumer(&env, "c1").await;
    env.until_written(coupon, &users).await;
    let (_, body) = app.client.status(coupon, 2, Some("10")).await;
    issued_at(&body);

    rewrite_issued_at(&env, coupon, 2, "2001-02-03 04:05:06.789").await;
    let k = keys(coupon);
    let mut redis = env.redis().await;
    let _: () = redis.del(&[&k.meta, &k.issued, &k.issued_at, &k.failed]).await.unwrap();
    let body = wait::until(Duration::from_secs(20), "a status answer", || async {
        let (status, body) = app.client.status(coupon, 2, None).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(issued_at(&body), "2001-02-03T04:05:06.789Z", "{body}");

    // The rebuild put MySQL's times back into Redis: Redis answers again.
    wait::until(
        Duration::from_secs(20),
        "the rebuild to reinstall the coupon",
        || async {
            app.client.status(coupon, 2, None).await;
            let meta: bool = env.redis().await.exists(&k.meta).await.unwrap();
            meta.then_some(())
        },
    )
    .await;
    let time: Option<i64> = redis.hget(&k.issued_at, 2).await.unwrap();
    assert_eq!(time, Some(981_173_106_789), "issued_at restored from MySQL");
    rewrite_issued_at(&env, coupon, 2, "2002-02-03 04:05:06.789").await;
    let (_, body) = app.client.status(coupon, 2, None).await;
    assert_eq!(issued_at(&body), "2001-02-03T04:05:06.789Z", "read from Redis again");
    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn a_long_poll_answers_issued_as_soon_as_the_consumer_writes() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (coupon, users) = accepted_sale(&app, 2).await;
    let client = app.client.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move { client.status(coupon, 2, Some("25s")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "pending: the long-poll waits");
    let consumer = spawn::spawn_consumer(&env, "c1").await;
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, 200, "{body}");
    issued_at(&body);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered at the write, not at the end of the wait"
    );
    env.until_written(coupon, &users).await;
    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn a_long_poll_with_nothing_written_answers_pending_when_its_wait_ends() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (coupon, _) = accepted_sale(&app, 1).await;
    let started = Instant::now();
    let answer = app.client.status(coupon, 1, Some("1.5")).await;
    assert_eq!(answer, (200, serde_json::json!({"status": "pending"})));
    assert!(started.elapsed() >= Duration::from_millis(1500), "it waited");
    // A user with no accepted request is told at once.
    let (status, _) = app.client.status(coupon, 7, Some("30")).await;
    assert_eq!(status, 404);
    app.finish(&env).await;
}

#[tokio::test]
async fn long_polls_past_the_waiter_bound_are_answered_503_and_plain_reads_still_work() {
    let env = Env::shared().await;
    let config = api::ApiConfig {
        status_max_waiters: 2,
        ..spawn::api_config(&env, Some(spawn::ADMIN_TOKEN))
    };
    let app = spawn::spawn_app_with(config).await;
    let (coupon, _) = accepted_sale(&app, 2).await;
    let waiting: Vec<_> = (1..=2)
        .map(|user| {
            let client = app.client.clone();
            // Until it has a place: a probe below may hold one for a moment.
            tokio::spawn(async move {
                wait::until(Duration::from_secs(5), "a place among the waiters", || async {
                    let answer = client.status(coupon, user, Some("4")).await;
                    (answer.0 != 503).then_some(answer)
                })
                .await
            })
        })
        .collect();
    let (status, body) = wait::until(Duration::from_secs(3), "a long-poll refused", || async {
        let answer = app.client.status(coupon, 1, Some("0.1")).await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(app.client.status(coupon, 1, None).await.0, 200, "no wait, no bound");
    for poll in waiting {
        assert_eq!(poll.await.unwrap().1["status"], "pending");
    }
    assert_eq!(app.client.status(coupon, 1, Some("0.1")).await.0, 200, "room again");
    app.finish(&env).await;
}

#[tokio::test]
async fn waiting_long_polls_answer_at_once_when_the_api_shuts_down() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (coupon, _) = accepted_sale(&app, 1).await;
    let client = app.client.clone();
    let poll = tokio::spawn(async move { client.status(coupon, 1, Some("30")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown does not wait for the long-poll's 30 s");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(poll.await.unwrap(), (200, serde_json::json!({"status": "pending"})));
    env.cleanup().await;
}
