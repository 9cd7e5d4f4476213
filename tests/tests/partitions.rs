//! The consumer on partition streams: thousands of coupons cost nothing while
//! quiet and a sale on several at once ends with exact rows; an event is written
//! however late it is read; dead letters live in their coupon's partition; the
//! users of deleted entries are found by scanning a partition's coupons; and an
//! upgrade's per-coupon streams are drained into MySQL, then deleted; on a
//! cluster too, where those streams and the partitions live on other nodes.

use integration_tests::cluster::PrivateCluster;
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::{wait, CONSUMER_GROUP};
use redis::AsyncCommands;
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId, IssueEvent, Layout, LegacyKeys, UserId};
use sqlx::MySqlPool;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// One test's deployment: its own Redis, a database and an API on them.
struct Stage {
    env: Env,
    app: TestApp,
    db: MySqlPool,
    redis: RedisConn,
    layout: Layout,
}

impl Stage {
    async fn start() -> Self {
        Self::on(Env::shared().await).await
    }

    async fn on(env: Env) -> Self {
        let app = spawn::spawn_app(&env).await;
        let db = env.db().await;
        let redis = shared::redis_conn::connect(&env.redis_config(), Duration::from_secs(5))
            .await
            .unwrap();
        Self {
            env,
            app,
            db,
            redis,
            layout: Layout::default(),
        }
    }

    /// Creates `count` coupons of `quantity` issued over `period` straight in
    /// MySQL (one statement per 500) and publishes each to Redis as the API
    /// does: thousands in a few seconds, where the HTTP API would take minutes.
    async fn coupons(
        &self,
        count: usize,
        quantity: i64,
        period: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    ) -> Vec<i64> {
        let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM coupons")
            .fetch_one(&self.db)
            .await
            .unwrap();
        for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
            let mut insert =
                sqlx::QueryBuilder::new("INSERT INTO coupons (name, total_quantity, issue_start, issue_end) ");
            insert.push_values(chunk, |mut row, n| {
                row.push_bind(format!("seller {n}"))
                    .push_bind(quantity)
                    .push_bind(period.0)
                    .push_bind(period.1);
            });
            insert.build().execute(&self.db).await.unwrap();
        }
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM coupons WHERE id > ? ORDER BY id")
            .bind(before)
            .fetch_all(&self.db)
            .await
            .unwrap();
        assert_eq!(ids.len(), count);
        let placement = api::rebuild::Placement {
            layout: self.layout,
            retention: Duration::from_secs(7 * 24 * 3600),
        };
        let mut redis = self.redis.clone();
        for &id in &ids {
            let coupon = Coupon {
                id: CouponId::new(id).unwrap(),
                name: "seller".into(),
                total_quantity: quantity,
                issue_start: period.0,
                issue_end: period.1,
                paused: false,
            };
            api::rebuild::publish_new(&mut redis, &self.db, placement, &coupon)
                .await
                .unwrap();
        }
        ids
    }

    /// Coupons open from a minute ago for an hour.
    async fn open_coupons(&self, count: usize, quantity: i64) -> Vec<i64> {
        let now = chrono::Utc::now();
        self.coupons(
            count,
            quantity,
            (now - chrono::Duration::minutes(1), now + chrono::Duration::hours(1)),
        )
        .await
    }

    /// Accepts `user` for `coupon` as the issue script does: into the issued
    /// set `issued`, its event onto `stream`.
    async fn accept_into(&self, (stream, issued): (&str, &str), coupon: i64, user: i64, accepted_at_ms: i64) {
        let mut redis = self.redis.clone();
        let position: i64 = redis.scard(issued).await.unwrap();
        let _: i64 = redis.sadd(issued, user).await.unwrap();
        xadd(&mut redis, stream, &event(coupon, user, accepted_at_ms), position + 1).await;
    }

    /// Accepts `user` for `coupon` on the partition layout, accepted now.
    async fn accept(&self, coupon: i64, user: i64) {
        let keys = self.layout.coupon(id(coupon));
        self.accept_into((&keys.events, &keys.issued), coupon, user, now_ms())
            .await;
    }

    /// Issues through the API, retrying while it answers 503 (a rebuild of
    /// the coupon's state waits out the commit lease first).
    async fn issue(&self, coupon: i64, user: i64) -> (u16, serde_json::Value) {
        wait::until(Duration::from_secs(15), "an answer other than 503", || async {
            let answer = self.app.client.issue(coupon, user).await;
            (answer.0 != 503).then_some(answer)
        })
        .await
    }

    async fn rows(&self, coupon: i64) -> BTreeSet<i64> {
        self.env.mysql_users(coupon).await.into_iter().collect()
    }

    /// Waits until MySQL holds exactly `users` for `coupon`.
    async fn wait_rows(&self, coupon: i64, users: &BTreeSet<i64>) {
        wait::until(Duration::from_secs(20), &format!("coupon {coupon}'s rows"), || async {
            (self.rows(coupon).await == *users).then_some(())
        })
        .await;
    }

    async fn finish(self) {
        self.app.finish(&self.env).await;
    }

    /// Once `count` dead letters are there: each one's coupon, user and reason
    /// (without its detail).
    async fn dead_letter_reasons(&self, count: usize) -> BTreeSet<(Option<i64>, Option<i64>, String)> {
        let letters = wait::until(Duration::from_secs(10), &format!("{count} dead letters"), || async {
            let mut redis = self.redis.clone();
            let letters = consumer::dead_letter::list(&mut redis, &self.layout, None).await.ok()?;
            (letters.len() == count).then_some(letters)
        })
        .await;
        let reason = |l: &consumer::dead_letter::DeadLetter| l.reason.split(':').next().unwrap_or_default().to_string();
        letters.iter().map(|l| (l.coupon_id, l.user_id, reason(l))).collect()
    }
}

fn id(coupon: i64) -> CouponId {
    CouponId::new(coupon).unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn event(coupon: i64, user: i64, accepted_at_ms: i64) -> Vec<u8> {
    IssueEvent {
        coupon_id: id(coupon),
        user_id: UserId::new(user).unwrap(),
        accepted_at_ms,
        position: 0,
        trace: Default::default(),
    }
    .encode()
}

async fn xadd(redis: &mut RedisConn, stream: &str, event: &[u8], position: i64) -> String {
    redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(FIELD_EVENT)
        .arg(event)
        .arg(FIELD_POSITION)
        .arg(position)
        .query_async(redis)
        .await
        .unwrap()
}

/// Asserts that `key` expires with the coupon's metadata `meta`.
async fn assert_expires_with(redis: &mut RedisConn, key: &str, meta: &str) {
    let (ttl, meta_ttl): (i64, i64) = (redis.pttl(key).await.unwrap(), redis.pttl(meta).await.unwrap());
    assert!(
        ttl > 0 && (meta_ttl - ttl).abs() < 5_000,
        "{key}: {ttl} ms, {meta}: {meta_ttl} ms"
    );
}

/// Every stream key in the test's Redis.
async fn streams(redis: &mut RedisConn) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("TYPE")
            .arg("stream")
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .unwrap();
        keys.extend(found);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_on_several_of_two_thousand_coupons_at_once_ends_with_exact_rows() {
    let stage = Stage::start().await;
    let coupons = stage.open_coupons(2000, 20).await;
    let c1 = spawn::spawn_consumer(&stage.env, "c1").await;
    let c2 = spawn::spawn_consumer(&stage.env, "c2").await;

    // Seven coupons of different partitions (and two of one), 30 users each, at once.
    let hot: Vec<i64> = [0, 1, 2, 3, 16, 17, 1999].iter().map(|&i| coupons[i]).collect();
    let requests = hot.iter().flat_map(|&coupon| (1..=30).map(move |user| (coupon, user)));
    let answers = futures::future::join_all(requests.map(|(coupon, user)| {
        let client = stage.app.client.clone();
        async move { (coupon, user, client.issue(coupon, user).await) }
    }))
    .await;
    for &coupon in &hot {
        let accepted: BTreeSet<i64> = answers
            .iter()
            .filter(|(c, _, (status, _))| *c == coupon && *status == 202)
            .map(|&(_, user, _)| user)
            .collect();
        assert_eq!(accepted.len(), 20, "coupon {coupon} sells its 20");
        stage.wait_rows(coupon, &accepted).await;
        let ledger = stage.env.ledger(coupon).await;
        assert_eq!((ledger.rows, ledger.issued_quantity), (20, Some(20)), "{ledger:?}");
    }

    // Only the partitions exist as streams: none per coupon, whatever their number.
    let mut redis = stage.redis.clone();
    let partitions: BTreeSet<String> = stage.layout.all().map(|p| p.events).collect();
    assert_eq!(streams(&mut redis).await, partitions);
    c1.stop().await;
    c2.stop().await;
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_of_many_coupons_with_a_redelivery_a_sell_out_and_a_missing_coupon_writes_exact_rows() {
    let stage = Stage::start().await;
    let coupons = stage.open_coupons(3, 10).await;
    let (plain, last_rooms, redelivered) = (coupons[0], coupons[1], coupons[2]);
    // Two rooms left of ten: as if Redis had lost its state and accepted anew.
    sqlx::query("UPDATE coupons SET total_quantity = 2 WHERE id = ?")
        .bind(last_rooms)
        .execute(&stage.db)
        .await
        .unwrap();
    // User 7's row was committed before a crash that kept its entry pending.
    sqlx::query("INSERT INTO coupon_issues (coupon_id, user_id, position, accepted_at, issued_at) VALUES (?, 7, 1, NOW(), NOW())")
        .bind(redelivered)
        .execute(&stage.db)
        .await
        .unwrap();
    sqlx::query("UPDATE coupons SET issued_quantity = 1 WHERE id = ?")
        .bind(redelivered)
        .execute(&stage.db)
        .await
        .unwrap();
    let missing = coupons.iter().max().unwrap() + 1000;
    for user in 1..=3 {
        stage.accept(plain, user).await;
    }
    for user in 1..=4 {
        stage.accept(last_rooms, user).await;
    }
    stage.accept(redelivered, 7).await;
    stage.accept(redelivered, 8).await;
    let keys = stage.layout.coupon(id(missing));
    stage
        .accept_into((&keys.events, &keys.issued), missing, 1, now_ms())
        .await;

    // Every event is in the streams before the consumer starts: its first read
    // takes them all, of four coupons in several partitions, as one batch.
    let consumer = spawn::spawn_consumer(&stage.env, "c").await;
    stage.wait_rows(plain, &BTreeSet::from([1, 2, 3])).await;
    stage.wait_rows(last_rooms, &BTreeSet::from([1, 2])).await;
    stage.wait_rows(redelivered, &BTreeSet::from([7, 8])).await;
    for (coupon, issued) in [(plain, 3), (last_rooms, 2), (redelivered, 2)] {
        let ledger = stage.env.ledger(coupon).await;
        assert_eq!(
            (ledger.rows, ledger.issued_quantity),
            (issued, Some(issued)),
            "coupon {coupon}: {ledger:?}"
        );
    }
    let reasons = stage.dead_letter_reasons(3).await;
    assert_eq!(
        reasons,
        BTreeSet::from([
            (Some(last_rooms), Some(3), "quantity_exceeded".to_string()),
            (Some(last_rooms), Some(4), "quantity_exceeded".to_string()),
            (Some(missing), Some(1), "coupon_not_found".to_string()),
        ])
    );
    consumer.stop().await;
    stage.finish().await;
}

#[tokio::test]
async fn an_event_read_two_days_after_its_coupon_ended_is_still_written() {
    let stage = Stage::start().await;
    let now = chrono::Utc::now();
    let (start, end) = (now - chrono::Duration::days(3), now - chrono::Duration::days(2));
    let coupon = stage.coupons(1, 5, (start, end)).await[0];
    // Accepted in its last second, read only now (no consumer ran meanwhile).
    let keys = stage.layout.coupon(id(coupon));
    let accepted_at = end.timestamp_millis() - 1000;
    stage
        .accept_into((&keys.events, &keys.issued), coupon, 7, accepted_at)
        .await;

    let consumer = spawn::spawn_consumer(&stage.env, "late").await;
    stage.wait_rows(coupon, &BTreeSet::from([7])).await;
    consumer.stop().await;
    stage.finish().await;
}

#[tokio::test]
async fn the_ack_puts_users_back_only_into_a_set_that_expires_with_its_coupon() {
    let stage = Stage::start().await;
    let coupons = stage.open_coupons(2, 5).await;
    let (expired, lost) = (coupons[0], coupons[1]);
    for coupon in coupons {
        stage.accept(coupon, 3).await;
    }
    // One coupon's state expires before its event is written; the other's set
    // alone is gone (its metadata stays).
    let mut redis = stage.redis.clone();
    let (gone, kept) = (stage.layout.coupon(id(expired)), stage.layout.coupon(id(lost)));
    let _: i64 = redis.del(&[&gone.meta, &gone.issued]).await.unwrap();
    let _: i64 = redis.del(&kept.issued).await.unwrap();

    let consumer = spawn::spawn_consumer(&stage.env, "c").await;
    stage.wait_rows(expired, &BTreeSet::from([3])).await;
    stage.wait_rows(lost, &BTreeSet::from([3])).await;
    consumer.stop().await;
    let left: i64 = redis.exists(&gone.issued).await.unwrap();
    assert_eq!(left, 0, "no issued set without metadata (it would never expire)");
    let users: Vec<i64> = redis.smembers(&kept.issued).await.unwrap();
    assert_eq!(users, vec![3]);
    assert_expires_with(&mut redis, &kept.issued, &kept.meta).await;
    stage.finish().await;
}

#[tokio::test]
async fn dead_letters_go_to_their_coupons_partition_and_replay_from_there() {
    let stage = Stage::start().await;
    let coupons = stage.open_coupons(2, 5).await;
    let (refused, misplaced) = (coupons[0], coupons[1]);
    let mut redis = stage.redis.clone();
    // An event MySQL can never hold, and a valid one in another coupon's partition.
    let keys = stage.layout.coupon(id(refused));
    stage
        .accept_into((&keys.events, &keys.issued), refused, 1, i64::MAX)
        .await;
    let wrong = stage.layout.coupon(id(refused)).events;
    assert_ne!(wrong, stage.layout.coupon(id(misplaced)).events);
    xadd(&mut redis, &wrong, &event(misplaced, 2, now_ms()), 1).await;

    let consumer = spawn::spawn_consumer(&stage.env, "c").await;
    let reasons = stage.dead_letter_reasons(2).await;
    assert_eq!(
        reasons,
        BTreeSet::from([
            (Some(refused), Some(1), "invalid_accepted_at".to_string()),
            (Some(misplaced), Some(2), "wrong_stream".to_string()),
        ])
    );
    // The failed mark expires with the coupon's state.
    assert_expires_with(&mut redis, &keys.failed, &keys.meta).await;
    let (_, status) = stage.app.client.get(&format!("/coupons/{refused}/issues/1")).await;
    assert_eq!(status["status"], "failed", "{status}");

    // Each coupon lists its own; the misplaced one, replayed onto its own
    // partition, is written.
    let mine = consumer::dead_letter::list(&mut redis, &stage.layout, Some(id(misplaced)))
        .await
        .unwrap();
    assert_eq!(mine.iter().map(|l| l.user_id).collect::<Vec<_>>(), vec![Some(2)]);
    let replayed = consumer::dead_letter::replay(&mut redis, &stage.layout, id(misplaced), None)
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    stage.wait_rows(misplaced, &BTreeSet::from([2])).await;
    assert!(stage.rows(refused).await.is_empty());
    consumer.stop().await;
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_of_entries_deleted_from_a_partition_end_failed_and_the_others_are_written() {
    let stage = Stage::start().await;
    // Two coupons of one partition, and one of another.
    let coupons = stage.open_coupons(17, 10).await;
    let (a, b, other) = (coupons[0], coupons[16], coupons[1]);
    for (coupon, user) in [(a, 1), (b, 2), (other, 3), (a, 4)] {
        stage.accept(coupon, user).await;
    }
    // Worker x takes every entry and stalls; then a's first and b's are deleted.
    let mut x = consumer::build(&spawn::consumer_config(&stage.env, "x")).await.unwrap();
    assert_eq!(x.fetch().await.unwrap().entries.len(), 4);
    let mut redis = stage.redis.clone();
    let partition = stage.layout.coupon(id(a)).events;
    let range: redis::streams::StreamRangeReply = redis.xrange_all(&partition).await.unwrap();
    let deleted: Vec<&str> = range.ids.iter().take(2).map(|e| e.id.as_str()).collect();
    let _: i64 = redis.xdel(&partition, &deleted).await.unwrap();

    // Worker y reclaims: two deleted, a's second and other's written.
    let mut config = spawn::consumer_config(&stage.env, "y");
    config.claim_idle_ms = 100;
    let mut y = consumer::build(&config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut batch = y.fetch().await.unwrap();
    assert!(batch.reclaimed, "{batch:?}");
    y.handle(&mut batch).await.unwrap();
    stage.wait_rows(a, &BTreeSet::from([4])).await;
    stage.wait_rows(other, &BTreeSet::from([3])).await;
    for (coupon, user) in [(a, 1), (b, 2)] {
        let (_, status) = stage.app.client.get(&format!("/coupons/{coupon}/issues/{user}")).await;
        assert_eq!(status["status"], "failed", "coupon {coupon} user {user}: {status}");
        assert!(
            status["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("event_deleted"),
            "{status}"
        );
    }
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrades_per_coupon_streams_are_drained_into_mysql_its_dead_letters_adopted_and_its_old_keys_deleted() {
    let stage = Stage::start().await;
    let coupons = stage.open_coupons(3, 10).await;
    let mut redis = stage.redis.clone();
    // What the old layout left: the coupons' own streams and sets (their new
    // state not yet built), with one old consumer's entries pending.
    for &coupon in &coupons {
        let keys = stage.layout.coupon(id(coupon));
        let _: i64 = redis.del(&[&keys.meta, &keys.issued]).await.unwrap();
    }
    let legacy: Vec<LegacyKeys> = coupons.iter().map(|&c| LegacyKeys::new(id(c))).collect();
    for (coupon, keys) in coupons.iter().zip(&legacy) {
        for user in 1..=3 {
            stage
                .accept_into((&keys.events, &keys.issued), *coupon, user, now_ms())
                .await;
        }
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&legacy[0].events)
        .arg(CONSUMER_GROUP)
        .arg("0")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(CONSUMER_GROUP)
        .arg("old-consumer")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(&legacy[0].events)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();
    // And a coupon whose events were all written before the upgrade but one,
    // given up on: its dead letter and failed mark.
    let given_up = stage.open_coupons(1, 10).await[0];
    let old = LegacyKeys::new(id(given_up));
    let _: String = redis::cmd("XADD")
        .arg(&old.dead)
        .arg("*")
        .arg(FIELD_EVENT)
        .arg(event(given_up, 9, now_ms()))
        .arg(FIELD_POSITION)
        .arg(4)
        .arg("reason")
        .arg("quantity_exceeded")
        .arg("source_id")
        .arg("1-1")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: i64 = redis.hset(&old.failed, 9, "quantity_exceeded").await.unwrap();
    let status_of_given_up = || async {
        wait::until(Duration::from_secs(15), "an answer other than 503", || async {
            let (status, body) = stage.app.client.get(&format!("/coupons/{given_up}/issues/9")).await;
            (status != 503).then_some(body)
        })
        .await
    };
    // Before any consumer of the new version ran, the status tells already.
    let status = status_of_given_up().await;
    assert_eq!(
        (&status["status"], &status["reason"]),
        (&"failed".into(), &"quantity_exceeded".into()),
        "{status}"
    );

    let mut config = spawn::consumer_config(&stage.env, "new");
    config.claim_idle_ms = 300;
    let consumer = spawn::spawn_consumer_with(config).await;
    for &coupon in &coupons {
        stage.wait_rows(coupon, &BTreeSet::from([1, 2, 3])).await;
    }
    wait::until(Duration::from_secs(20), "the legacy streams to be deleted", || async {
        let mut redis = stage.redis.clone();
        let left: i64 = redis
            .exists(legacy.iter().map(|k| &k.events).collect::<Vec<_>>())
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;

    // Nothing of the old layout is left; the request given up on is still
    // failed, and its letter, now in the partition's stream, replays.
    wait::until(
        Duration::from_secs(20),
        "every key of the old layout to be gone",
        || async {
            let mut redis = stage.redis.clone();
            let keys: Vec<&String> = legacy
                .iter()
                .flat_map(|k| [&k.meta, &k.issued, &k.dead, &k.failed])
                .collect();
            let left: i64 = redis.exists(keys).await.ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    let status = status_of_given_up().await;
    assert_eq!(
        (&status["status"], &status["reason"]),
        (&"failed".into(), &"quantity_exceeded".into()),
        "{status}"
    );
    let keys = stage.layout.coupon(id(given_up));
    assert_expires_with(&mut redis, &keys.failed, &keys.meta).await;
    let letters = consumer::dead_letter::list(&mut redis, &stage.layout, Some(id(given_up)))
        .await
        .unwrap();
    assert_eq!(letters.iter().map(|l| l.user_id).collect::<Vec<_>>(), vec![Some(9)]);
    let replayed = consumer::dead_letter::replay(&mut redis, &stage.layout, id(given_up), None)
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    stage.wait_rows(given_up, &BTreeSet::from([9])).await;

    // The API rebuilds the coupon's new state from MySQL: the drained users
    // stay issued and a new one is accepted and written.
    let (status, body) = stage.issue(coupons[0], 2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_issued")),
        "{body}"
    );
    let (status, body) = stage.issue(coupons[0], 4).await;
    assert_eq!(status, 202, "{body}");
    stage.wait_rows(coupons[0], &BTreeSet::from([1, 2, 3, 4])).await;
    let users: HashSet<i64> = redis
        .smembers(stage.layout.coupon(id(coupons[0])).issued)
        .await
        .unwrap();
    assert_eq!(users, HashSet::from([1, 2, 3, 4]));
    consumer.stop().await;
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_legacy_streams_of_every_master_drain_and_deleted_entries_are_reconciled() {
    let cluster = PrivateCluster::start().await;
    let stage = Stage::on(Env::on_cluster(
        &cluster.seeds(),
        &integration_tests::mysql_server_url(),
    ))
    .await;
    let coupons = stage.open_coupons(40, 10).await;
    let mut redis = stage.redis.clone();
    // Six coupons of the old layout, three whose stream is on the first master
    // and three elsewhere (the ids are random: 38 candidates make both sure),
    // one holding an entry that is no event; a partition holding another
    // partition's event; and a coupon of the new layout with two users.
    let (candidates, misplaced, a) = (&coupons[..38], coupons[38], coupons[39]);
    let on_first = |&&c: &&i64| cluster.on_first_master(&LegacyKeys::new(id(c)).events);
    let old: Vec<i64> = (candidates.iter().filter(on_first).take(3))
        .chain(candidates.iter().filter(|c| !on_first(c)).take(3))
        .copied()
        .collect();
    let legacy: Vec<LegacyKeys> = old.iter().map(|&c| LegacyKeys::new(id(c))).collect();
    for (&coupon, keys) in old.iter().zip(&legacy) {
        let new = stage.layout.coupon(id(coupon));
        let _: i64 = redis.del(&[&new.meta, &new.issued]).await.unwrap();
        for user in 1..=2 {
            stage
                .accept_into((&keys.events, &keys.issued), coupon, user, now_ms())
                .await;
        }
    }
    assert!(
        legacy.iter().any(|k| cluster.on_first_master(&k.events)),
        "some on the first master"
    );
    assert!(
        legacy.iter().any(|k| !cluster.on_first_master(&k.events)),
        "some elsewhere"
    );
    xadd(&mut redis, &legacy[0].events, b"not an event", 3).await;
    let wrong = stage.layout.coupon(id(a)).events;
    xadd(&mut redis, &wrong, &event(misplaced, 5, now_ms()), 1).await;
    stage.accept(a, 1).await;
    stage.accept(a, 2).await;

    // Worker x takes every entry and stalls; a's first entry is deleted.
    let mut x = consumer::build(&spawn::consumer_config(&stage.env, "x")).await.unwrap();
    assert_eq!(x.fetch().await.unwrap().entries.len(), 6 * 2 + 1 + 3);
    let range: redis::streams::StreamRangeReply = redis.xrange_all(&wrong).await.unwrap();
    let _: i64 = redis.xdel(&wrong, &[&range.ids[1].id]).await.unwrap();

    // Worker y reclaims them all and handles them, then drains what is left.
    let mut config = spawn::consumer_config(&stage.env, "y");
    config.claim_idle_ms = 100;
    let mut y = consumer::build(&config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut batch = y.fetch().await.unwrap();
    assert!(batch.reclaimed && batch.entries.len() == 6 * 2 + 1 + 2, "{batch:?}");
    y.handle(&mut batch).await.unwrap();
    for &coupon in &old {
        assert_eq!(stage.rows(coupon).await, BTreeSet::from([1, 2]), "coupon {coupon}");
    }
    assert_eq!(stage.rows(a).await, BTreeSet::from([2]));
    let (_, status) = stage.app.client.get(&format!("/coupons/{a}/issues/1")).await;
    assert_eq!(status["reason"], "event_deleted", "{status}");
    let letters = consumer::dead_letter::list(&mut redis, &stage.layout, None)
        .await
        .unwrap();
    let reasons: BTreeSet<String> = letters
        .iter()
        .map(|l| l.reason.split(':').next().unwrap_or_default().into())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["event_deleted".into(), "undecodable".into(), "wrong_stream".into()])
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut left = Vec::new();
        for keys in &legacy {
            let exists: bool = redis.exists(&keys.events).await.unwrap();
            if exists {
                left.push(&keys.events);
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "legacy streams never deleted: {left:?}"
        );
        let mut batch = y.fetch().await.unwrap();
        y.handle(&mut batch).await.unwrap();
    }
    stage.finish().await;
}
