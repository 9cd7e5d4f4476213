//! Operating a live sale through the admin API, with two API instances on one
//! Redis and MySQL: pause and resume, end now, extend, raise the quantity, all
//! in force on the other instance at once (within a second for a coupon that
//! instance saw sold out and answers from memory); what the rules refuse changes
//! nothing; listing pages through every coupon; and a change that reached
//! MySQL but not Redis is repaired by the next PATCH or by a rebuild.

use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::wait;
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::time::Duration;

/// Two API instances of one deployment.
struct Pair {
    env: Env,
    a: TestApp,
    b: TestApp,
}

impl Pair {
    async fn start() -> Self {
        let env = Env::shared().await;
        let a = spawn::spawn_app(&env).await;
        let b = spawn::spawn_app(&env).await;
        Self { env, a, b }
    }

    async fn finish(self) {
        self.b.stop().await;
        self.a.finish(&self.env).await;
    }

    /// The coupon's row as MySQL holds it.
    async fn row(&self, coupon: i64) -> (String, i64, bool, i64) {
        sqlx::query_as(
            "SELECT name, total_quantity, paused, CAST(UNIX_TIMESTAMP(issue_end) * 1000 AS SIGNED) FROM coupons WHERE id = ?",
        )
        .bind(coupon)
        .fetch_one(&self.env.db().await)
        .await
        .unwrap()
    }
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_end_extend_and_raise_are_in_force_on_every_instance_within_a_second() {
    let pair = Pair::start().await;
    let coupon = pair.a.client.create_open_coupon(2).await;
    let (a, b) = (&pair.a.client, &pair.b.client);
    assert_eq!(b.issue(coupon, 1).await.0, 202);

    // Paused on one instance: the other refuses the very next request.
    let (status, body) = a.patch_coupon(coupon, json!({"paused": true})).await;
    assert_eq!((status, &body["paused"]), (200, &json!(true)), "{body}");
    let (status, body) = b.issue(coupon, 2).await;
    assert_eq!((status, error(&body)), (409, "issue_paused"), "{body}");
    // Its view shows it within a second.
    wait::until(
        Duration::from_millis(1500),
        "the other instance to show the pause",
        || async { (b.get(&format!("/coupons/{coupon}")).await.1["paused"] == json!(true)).then_some(()) },
    )
    .await;
    let (status, _) = a.patch_coupon(coupon, json!({"paused": false})).await;
    assert_eq!(status, 200);
    assert_eq!(b.issue(coupon, 2).await.0, 202);

    // Sold out; raising the quantity reopens it on the instance that raised it
    // at once, on the others (which answer a sold-out coupon from memory)
    // within a second.
    let (status, body) = b.issue(coupon, 3).await;
    assert_eq!((status, error(&body)), (409, "sold_out"));
    let (status, body) = a.patch_coupon(coupon, json!({"total_quantity": 3})).await;
    assert_eq!(
        (
            status,
            &body["total_quantity"],
            &body["issued_quantity"],
            &body["remaining"]
        ),
        (200, &json!(3), &json!(2), &json!(1)),
        "{body}"
    );
    wait::until(
        Duration::from_millis(1500),
        "the other instance to reopen the coupon",
        || async { (b.issue(coupon, 3).await.0 == 202).then_some(()) },
    )
    .await;

    // Ended now, then extended.
    let now = chrono::Utc::now();
    let (status, _) = a
        .patch_coupon(coupon, json!({"issue_end": rfc3339(now), "total_quantity": 10}))
        .await;
    assert_eq!(status, 200);
    // (b saw the coupon sold out just now: its memory may answer sold_out
    // for up to a second.)
    let ended = wait::until(
        Duration::from_millis(1500),
        "the other instance to see the end",
        || async {
            let (status, body) = b.issue(coupon, 4).await;
            (error(&body) != "sold_out").then_some((status, body))
        },
    )
    .await;
    assert_eq!((ended.0, error(&ended.1)), (409, "issue_period_ended"), "{}", ended.1);
    let later = now + chrono::Duration::hours(2);
    let (status, body) = a.patch_coupon(coupon, json!({"issue_end": rfc3339(later)})).await;
    assert_eq!(
        (status, body["issue_end"].as_str()),
        (200, Some(rfc3339(later).as_str())),
        "{body}"
    );
    assert_eq!(b.issue(coupon, 4).await.0, 202);
    let (name, total, paused, end_ms) = pair.row(coupon).await;
    assert_eq!(
        (name.as_str(), total, paused, end_ms),
        ("flash sale", 10, false, later.timestamp_millis())
    );
    // The state's expiry moved with the end.
    let mut redis = pair.env.redis().await;
    let keys = shared::Layout::default().coupon(shared::CouponId::new(coupon).unwrap());
    let expires_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys.meta)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(expires_at, later.timestamp_millis() + 7 * 24 * 3600 * 1000);
    pair.finish().await;
}

#[tokio::test]
async fn what_the_rules_refuse_changes_nothing_in_mysql_or_redis() {
    let pair = Pair::start().await;
    let client = &pair.a.client;
    let coupon = client.create_open_coupon(3).await;
    for user in 1..=2 {
        assert_eq!(client.issue(coupon, user).await.0, 202);
    }
    let before = (
        pair.row(coupon).await,
        client.get(&format!("/coupons/{coupon}")).await.1,
    );
    let now = chrono::Utc::now();
    let refused = [
        (json!({"total_quantity": 1}), 409, "quantity_below_issued"),
        (json!({"total_quantity": 0}), 422, "invalid_request"),
        (json!({"name": ""}), 422, "invalid_request"),
        (
            json!({"issue_start": rfc3339(now + chrono::Duration::minutes(5))}),
            422,
            "invalid_request",
        ),
        (
            json!({"issue_end": rfc3339(now - chrono::Duration::hours(1))}),
            422,
            "invalid_request",
        ),
        (json!({"issue_end": "1034-06-28T08:54:57Z"}), 422, "invalid_request"),
        (json!({"paused": "yes"}), 422, "invalid_request"),
        (json!({"colour": "red"}), 422, "invalid_request"),
    ];
    for (change, status, code) in refused {
        let (got, body) = client.patch_coupon(coupon, change.clone()).await;
        assert_eq!((got, error(&body)), (status, code), "{change}: {body}");
    }
    let (got, body) = client.patch_coupon(coupon + 1_000_000, json!({"paused": true})).await;
    assert_eq!((got, error(&body)), (404, "coupon_not_found"));
    let anonymous = integration_tests::client::Client::new(client.base.clone(), None);
    let (got, body) = anonymous.patch_coupon(coupon, json!({"paused": true})).await;
    assert_eq!((got, error(&body)), (401, "unauthorized"));
    let after = (
        pair.row(coupon).await,
        client.get(&format!("/coupons/{coupon}")).await.1,
    );
    assert_eq!(before, after);
    assert_eq!(client.issue(coupon, 3).await.0, 202, "still selling its last one");

    // Before its start, the start may move.
    let future = client
        .create_coupon(json!({"name": "later", "total_quantity": 5,
            "issue_start": rfc3339(now + chrono::Duration::hours(1)),
            "issue_end": rfc3339(now + chrono::Duration::hours(2))}))
        .await
        .1["id"]
        .as_i64()
        .unwrap();
    let (status, body) = client.issue(future, 1).await;
    assert_eq!((status, error(&body)), (409, "issue_period_not_started"));
    let (status, _) = client
        .patch_coupon(
            future,
            json!({"issue_start": rfc3339(now - chrono::Duration::seconds(1))}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.issue(future, 1).await.0, 202);
    pair.finish().await;
}

#[tokio::test]
async fn listing_pages_through_every_coupon_by_id_or_newest_first() {
    let pair = Pair::start().await;
    let client = &pair.a.client;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(client.create_open_coupon(4).await);
    }
    assert_eq!(client.issue(ids[1], 9).await.0, 202);
    let page = |query: String| async move {
        client
            .admin(reqwest::Method::GET, &format!("/coupons?{query}"), None)
            .await
    };
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = page(format!("limit=2&after={after}")).await;
        assert_eq!(status, 200, "{body}");
        let coupons = body["coupons"].as_array().unwrap();
        seen.extend(coupons.iter().map(|c| c["id"].as_i64().unwrap()));
        match body["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, newest) = page("order=newest&limit=3".into()).await;
    let newest: Vec<i64> = newest["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(newest, ids.iter().rev().take(3).copied().collect::<Vec<_>>());
    let (_, first) = page(format!("limit=2&after={}", ids[0])).await;
    assert_eq!(first["coupons"][0]["issued_quantity"], 1, "{first}");
    for bad in ["limit=0", "limit=1001", "after=-1", "order=sideways", "limit=x"] {
        let (status, body) = page(bad.into()).await;
        assert_eq!((status, error(&body)), (400, "invalid_request"), "{bad}: {body}");
    }
    pair.finish().await;
}

#[tokio::test]
async fn a_change_in_mysql_that_never_reached_redis_is_repaired_by_the_next_patch_or_a_rebuild() {
    let pair = Pair::start().await;
    let client = &pair.a.client;
    let coupon = client.create_open_coupon(5).await;
    // As if a PATCH committed MySQL and Redis failed before its write.
    let db = pair.env.db().await;
    sqlx::query("UPDATE coupons SET paused = TRUE WHERE id = ?")
        .bind(coupon)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(client.issue(coupon, 1).await.0, 202, "Redis does not know yet");
    // An empty PATCH writes MySQL's values to Redis again.
    let (status, body) = client.patch_coupon(coupon, json!({})).await;
    assert_eq!((status, &body["paused"]), (200, &json!(true)), "{body}");
    let (status, body) = client.issue(coupon, 2).await;
    assert_eq!((status, error(&body)), (409, "issue_paused"));

    // Or Redis loses the state and the rebuild reads MySQL's.
    sqlx::query("UPDATE coupons SET paused = FALSE, total_quantity = 2 WHERE id = ?")
        .bind(coupon)
        .execute(&db)
        .await
        .unwrap();
    let mut redis = pair.env.redis().await;
    let keys = shared::Layout::default().coupon(shared::CouponId::new(coupon).unwrap());
    let _: i64 = redis.del(&keys.meta).await.unwrap();
    let answer = wait::until(Duration::from_secs(15), "an answer other than 503", || async {
        let answer = pair.b.client.issue(coupon, 2).await;
        (answer.0 != 503).then_some(answer)
    })
    .await;
    assert_eq!(answer.0, 202, "{}", answer.1);
    let (status, body) = pair.b.client.issue(coupon, 3).await;
    assert_eq!(
        (status, error(&body)),
        (409, "sold_out"),
        "the rebuilt state has MySQL's quantity"
    );
    pair.finish().await;
}

/// libfaketime, preloaded into a process to give it another clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_whose_clock_runs_a_minute_fast_cannot_open_a_sale_early() {
    assert!(
        std::path::Path::new(LIBFAKETIME).is_file(),
        "{LIBFAKETIME} is missing: apt-get install faketime (deploy/local/test-tools.sh does)"
    );
    let env = Env::shared().await;
    let app = spawn::spawn_app(&env).await;
    let now = chrono::Utc::now();
    let (status, body) = app
        .client
        .create_coupon(json!({"name": "at noon", "total_quantity": 5,
            "issue_start": rfc3339(now + chrono::Duration::seconds(30)),
            "issue_end": rfc3339(now + chrono::Duration::hours(1))}))
        .await;
    assert_eq!(status, 201, "{body}");
    let coupon = body["id"].as_i64().unwrap();
    let fast = integration_tests::binaries::ApiProcess::spawn_with(
        &env,
        &[
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            ("FAKETIME".into(), "+60s".into()),
            // Only the wall clock: tokio's timers keep the real pace.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
    )
    .await;
    // Its clock is really a minute ahead: its answers are dated so.
    let response = fast
        .client
        .http
        .get(format!("{}/healthz", fast.client.base))
        .send()
        .await
        .unwrap();
    let date = response.headers()["date"].to_str().unwrap().to_string();
    let dated = chrono::DateTime::parse_from_rfc2822(&date).unwrap();
    let ahead = dated.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!(
        (50..=70).contains(&ahead),
        "the process' clock is {ahead} s ahead ({date})"
    );
    // By its own clock the sale opened half a minute ago; Redis says it has not.
    let (status, body) = fast.client.issue(coupon, 1).await;
    assert_eq!((status, error(&body)), (409, "issue_period_not_started"), "{body}");
    let (status, body) = app.client.issue(coupon, 1).await;
    assert_eq!((status, error(&body)), (409, "issue_period_not_started"), "{body}");
    drop(fast);
    app.finish(&env).await;
}

#[tokio::test]
async fn a_patch_whose_redis_write_fails_after_mysql_was_written_changes_neither() {
    let pair = Pair::start().await;
    let client = &pair.a.client;
    let coupon = client.create_open_coupon(5).await;
    assert_eq!(client.issue(coupon, 1).await.0, 202);
    // Redis answers reads (the PATCH's TIME) but refuses every write: the
    // change reaches MySQL (uncommitted) and fails at Redis.
    let mut redis = pair.env.redis().await;
    let set = |n: i64| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(n)
            .to_owned()
    };
    let () = set(1).query_async(&mut redis).await.unwrap();
    let (status, body) = client
        .patch_coupon(coupon, json!({"paused": true, "total_quantity": 9}))
        .await;
    let () = set(0).query_async(&mut redis).await.unwrap();
    assert_eq!((status, error(&body)), (503, "unavailable"), "{body}");
    let (_, total, paused, _) = pair.row(coupon).await;
    assert_eq!((total, paused), (5, false), "MySQL rolled back");
    let keys = shared::Layout::default().coupon(shared::CouponId::new(coupon).unwrap());
    let meta: (String, String) = redis::cmd("HMGET")
        .arg(&keys.meta)
        .arg("total_quantity")
        .arg("paused")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(meta, ("5".to_string(), "0".to_string()), "Redis untouched");
    assert_eq!(client.issue(coupon, 2).await.0, 202, "still selling");
    // Repeated once Redis writes again, it is in force.
    let (status, _) = client
        .patch_coupon(coupon, json!({"paused": true, "total_quantity": 9}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(error(&client.issue(coupon, 3).await.1), "issue_paused");
    pair.finish().await;
}
