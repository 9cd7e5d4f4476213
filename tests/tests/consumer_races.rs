//! The consumer's races with Redis losing its data, with MySQL's row lock and
//! with its own restarts (issue 10, findings 1, 3, 4 and 5): a batch held past
//! its commit lease after a FLUSHALL is not committed behind a rebuild's back; a
//! healthy entry redelivered past `MAX_DELIVERIES` is still issued; a user whose
//! pending entry was deleted ends `failed`, not `pending` for ever; a worker
//! handed a reclaimed batch when Redis lost its data goes on.
//!
//! Each test runs its own `redis-server` (and, where consumers are processes
//! killed with SIGKILL, its own `mariadbd`); see `integration_tests::servers`.

use integration_tests::binaries::{ConsumerOptions, ConsumerProcess};
use integration_tests::keys;
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env, TestApp};
use redis::AsyncCommands;
use serde_json::Value;
use shared::lease::COMMIT_LEASE;
use shared::IssueEvent;
use sqlx::{MySql, MySqlPool, Transaction};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// How long a status may take to reach its final value once nothing blocks it.
const SETTLE: Duration = Duration::from_secs(20);

/// One test's servers, its in-process API and its clients of both servers.
struct Stage {
    app: TestApp,
    env: Env,
    db: MySqlPool,
    redis: PrivateRedis,
    /// Kept for its `Drop`, which stops the server.
    _maria: Option<PrivateMariaDb>,
    /// One test at a time: each kills and restarts processes on timings that
    /// only mean something without a neighbour eating the two cores.
    _serial: MutexGuard<'static, ()>,
}

impl Stage {
    /// Private Redis and MariaDB, a coupon of `quantity` on sale and consumer
    /// `c1` running (its first user written); for tests that kill consumers.
    async fn selling(quantity: i64) -> (Self, i64, ConsumerProcess) {
        let serial = serial().await;
        let (redis, maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
        let env = Env::on(&redis.url(), &maria.url());
        let stage = Self::on(env, redis, Some(maria), serial).await;
        let coupon = stage.app.client.create_open_coupon(quantity).await;
        let consumer = stage.consumer("c1");
        stage.accept(coupon, [1]).await;
        let status = stage.settled(coupon, &[1]).await;
        assert_eq!(status[&1]["status"], "issued", "the first user: {status:?}");
        (stage, coupon, consumer)
    }

    async fn on(env: Env, redis: PrivateRedis, maria: Option<PrivateMariaDb>, serial: MutexGuard<'static, ()>) -> Self {
        let app = spawn::spawn_app(&env).await;
        let db = env.db().await;
        Self {
            app,
            env,
            db,
            redis,
            _maria: maria,
            _serial: serial,
        }
    }

    fn consumer(&self, name: &str) -> ConsumerProcess {
        ConsumerProcess::spawn(&self.env, name, &ConsumerOptions::default())
    }

    async fn redis(&self) -> redis::aio::ConnectionManager {
        self.env.redis().await
    }

    async fn accept(&self, coupon: i64, users: impl IntoIterator<Item = i64>) {
        for user in users {
            let (status, body) = self.app.client.issue(coupon, user).await;
            assert_eq!(status, 202, "user {user}: {body}");
        }
    }

    /// See [`spawn::lock_coupon_row`].
    async fn lock_row(&self, coupon: i64) -> Transaction<'static, MySql> {
        spawn::lock_coupon_row(&self.db, coupon).await
    }

    /// The user's status body (`{"status": "not_found"}` for a 404).
    async fn status(&self, coupon: i64, user: i64) -> Value {
        let (code, body) = self.app.client.get(&format!("/coupons/{coupon}/issues/{user}")).await;
        match code {
            200 => body,
            404 => serde_json::json!({ "status": "not_found" }),
            _ => panic!("status of user {user}: {code} {body}"),
        }
    }

    /// Every user's status once each is `issued` or `failed`, or as it is
    /// after [`SETTLE`].
    async fn settled(&self, coupon: i64, users: &[i64]) -> BTreeMap<i64, Value> {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut statuses = BTreeMap::new();
            for &user in users {
                statuses.insert(user, self.status(coupon, user).await);
            }
            let done = statuses
                .values()
                .all(|s| ["issued", "failed"].contains(&s["status"].as_str().unwrap_or("")));
            if done || Instant::now() > deadline {
                return statuses;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The coupon's pending entries: id, holder, times delivered.
    async fn pending(&self, coupon: i64) -> Vec<(String, String, usize)> {
        let reply: redis::RedisResult<redis::streams::StreamPendingCountReply> = redis::cmd("XPENDING")
            .arg(keys(coupon).events)
            .arg("coupon-issuers")
            .arg("-")
            .arg("+")
            .arg(100)
            .query_async(&mut self.redis().await)
            .await;
        let ids = reply.map(|r| r.ids).unwrap_or_default();
        ids.into_iter().map(|p| (p.id, p.consumer, p.times_delivered)).collect()
    }

    /// Waits until `consumer` holds `count` entries of the coupon or more;
    /// returns them.
    async fn held_by(&self, coupon: i64, consumer: &str, count: usize) -> Vec<(String, usize)> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let held: Vec<(String, usize)> = self
                .pending(coupon)
                .await
                .into_iter()
                .filter(|(_, holder, _)| holder == consumer)
                .map(|(id, _, delivered)| (id, delivered))
                .collect();
            if held.len() >= count {
                return held;
            }
            assert!(
                Instant::now() < deadline,
                "{consumer} never held {count} entries: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every entry of the stream `key`.
    async fn entries(&self, key: String) -> Vec<redis::streams::StreamId> {
        let range: redis::streams::StreamRangeReply = self.redis().await.xrange_all(key).await.unwrap();
        range.ids
    }

    /// The users of the coupon's entries `ids`.
    async fn users_of(&self, coupon: i64, ids: &[String]) -> BTreeSet<i64> {
        let entries = self.entries(keys(coupon).events).await;
        entries
            .iter()
            .filter(|e| ids.contains(&e.id))
            .filter_map(user_of)
            .collect()
    }

    async fn rows(&self, coupon: i64) -> BTreeSet<i64> {
        let users: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM coupon_issues WHERE coupon_id = ?")
            .bind(coupon)
            .fetch_all(&self.db)
            .await
            .unwrap();
        users.into_iter().collect()
    }

    /// The users of the coupon's dead letters (`None` where undecodable).
    async fn dead_letter_users(&self, coupon: i64) -> Vec<Option<i64>> {
        self.entries(keys(coupon).dead).await.iter().map(user_of).collect()
    }
}

async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// The user of a stream entry, if it decodes.
fn user_of(entry: &redis::streams::StreamId) -> Option<i64> {
    match entry.map.get("ev") {
        Some(redis::Value::BulkString(ev)) => IssueEvent::decode(Some(ev), Some(b"1")).ok().map(|e| e.user_id.get()),
        _ => None,
    }
}

fn status_and_reason(body: &Value) -> (&str, &str) {
    (
        body["status"].as_str().unwrap_or(""),
        body["reason"].as_str().unwrap_or(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_held_behind_the_row_lock_past_its_lease_after_redis_lost_its_data_is_not_committed_and_its_users_end_failed(
) {
    let (stage, coupon, _consumer) = Stage::selling(100).await;

    // The consumer reads some of ten users, then waits on the coupon row's lock.
    let lock = stage.lock_row(coupon).await;
    let users: Vec<i64> = (2..=11).collect();
    stage.accept(coupon, users.clone()).await;
    stage.held_by(coupon, "c1", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = stage
        .held_by(coupon, "c1", 1)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let held = stage.users_of(coupon, &ids).await;

    // Redis forgets everything (the entries not read yet with it); a rebuild
    // from MySQL (waiting out the lease) would not see the held users, so the
    // consumer must not write them once its lease is over.
    stage.redis.flushall().await;
    tokio::time::sleep(COMMIT_LEASE + Duration::from_secs(1)).await;
    lock.rollback().await.unwrap();

    let statuses = stage.settled(coupon, &users).await;
    let failed: BTreeSet<i64> = statuses
        .iter()
        .filter(|(_, body)| status_and_reason(body) == ("failed", "lost_with_redis_state"))
        .map(|(&user, _)| user)
        .collect();
    assert!(held.is_subset(&failed), "held {held:?}: {statuses:?}");
    for (user, body) in &statuses {
        // The rest were never read: lost with Redis' data, unknown now.
        assert!(
            failed.contains(user) || body["status"] == "not_found",
            "user {user}: {statuses:?}"
        );
    }
    assert_eq!(
        stage.rows(coupon).await,
        BTreeSet::from([1]),
        "only the first user has a row"
    );
    let buried: BTreeSet<i64> = stage.dead_letter_users(coupon).await.into_iter().flatten().collect();
    assert_eq!(buried, failed);
    stage.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accepted_request_redelivered_past_max_deliveries_through_consumer_restarts_still_ends_issued() {
    let (stage, coupon, mut consumer) = Stage::selling(10).await;
    let max_deliveries = ConsumerOptions::default().max_deliveries as usize;

    // The row lock keeps every attempt from committing; each restart under the
    // same name takes the entry back, which counts one more delivery.
    let lock = stage.lock_row(coupon).await;
    stage.accept(coupon, [2]).await;
    let mut delivered = stage.held_by(coupon, "c1", 1).await[0].1;
    while delivered <= max_deliveries + 1 {
        consumer.kill9();
        consumer = stage.consumer("c1");
        let deadline = Instant::now() + Duration::from_secs(15);
        let before = delivered;
        while delivered == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Gone from the pending list: it was given up on.
            let Some(entry) = stage.pending(coupon).await.pop() else {
                break;
            };
            delivered = entry.2;
        }
        if delivered == before {
            break;
        }
    }
    eprintln!("delivered {delivered} times (MAX_DELIVERIES {max_deliveries})");
    lock.rollback().await.unwrap();

    let statuses = stage.settled(coupon, &[2]).await;
    assert_eq!(statuses[&2]["status"], "issued", "{statuses:?}");
    assert!(delivered > max_deliveries, "XPENDING counted {delivered} deliveries");
    assert_eq!(stage.rows(coupon).await, BTreeSet::from([1, 2]));
    assert!(
        stage.dead_letter_users(coupon).await.is_empty(),
        "nothing was dead-lettered"
    );
    assert!(consumer.is_running(), "{}", consumer.log_tail(30));
    stage.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_whose_pending_entry_was_deleted_from_the_stream_ends_failed_instead_of_pending_for_ever() {
    let (stage, coupon, mut c1) = Stage::selling(10).await;

    // c1 is killed holding user 2's entry, which an operator (or a MAXLEN trim)
    // then deletes from the stream.
    let lock = stage.lock_row(coupon).await;
    stage.accept(coupon, [2]).await;
    let held = stage.held_by(coupon, "c1", 1).await;
    c1.kill9();
    lock.rollback().await.unwrap();
    let deleted: i64 = redis::cmd("XDEL")
        .arg(keys(coupon).events)
        .arg(&held[0].0)
        .query_async(&mut stage.redis().await)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(stage.status(coupon, 2).await["status"], "pending");

    // Another consumer reclaims c1's entries and finds that one deleted.
    let mut c2 = stage.consumer("c2");
    let statuses = stage.settled(coupon, &[1, 2]).await;
    assert_eq!(
        status_and_reason(&statuses[&2]),
        ("failed", "event_deleted"),
        "{statuses:?}"
    );
    assert_eq!(statuses[&1]["status"], "issued", "{statuses:?}");
    assert_eq!(stage.dead_letter_users(coupon).await, vec![Some(2)]);
    assert_eq!(stage.rows(coupon).await, BTreeSet::from([1]));
    assert!(c2.is_running(), "{}", c2.log_tail(30));
    stage.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_handed_a_reclaimed_batch_as_redis_loses_its_data_recreates_the_group_and_goes_on() {
    let serial = serial().await;
    let redis = PrivateRedis::start().await;
    let env = Env::on(&redis.url(), &integration_tests::mysql_server_url());
    let stage = Stage::on(env, redis, None, serial).await;
    let coupon = stage.app.client.create_open_coupon(10).await;
    let users: Vec<i64> = (1..=5).collect();
    stage.accept(coupon, users.clone()).await;

    // Worker a reads the five and stalls; worker b reclaims them.
    let mut a = consumer::build(&spawn::consumer_config(&stage.env, "a")).await.unwrap();
    assert_eq!(a.fetch().await.unwrap().entries.len(), 5);
    let mut config = spawn::consumer_config(&stage.env, "b");
    config.claim_idle_ms = 100;
    let mut b = consumer::build(&config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut batch = b.fetch().await.unwrap();
    assert!(batch.reclaimed && batch.entries.len() == 5, "{batch:?}");

    stage.redis.flushall().await;
    let mut attempts = Vec::new();
    while !batch.entries.is_empty() && attempts.len() < 3 {
        attempts.push(b.handle(&mut batch).await.map_err(|e| e.to_string()));
    }
    assert!(batch.entries.is_empty(), "every attempt failed: {attempts:?}");
    // Within the lease they are written; past it they are failed with the reason.
    for (user, body) in stage.settled(coupon, &users).await {
        let outcome = status_and_reason(&body);
        assert!(
            outcome.0 == "issued" || outcome == ("failed", "lost_with_redis_state"),
            "user {user}: {body}"
        );
    }

    // And the worker goes on: a user accepted after the loss is written by its
    // next steps.
    stage.accept(coupon, [6]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stage.rows(coupon).await.contains(&6) {
        assert!(Instant::now() < deadline, "worker b never wrote user 6");
        let mut next = b.fetch().await.unwrap();
        b.handle(&mut next).await.unwrap();
    }
    assert_eq!(stage.status(coupon, 6).await["status"], "issued");
    stage.app.stop().await;
    stage.env.cleanup().await;
}
