//! Fault tests of guarantees 3 and 4 (CONTRACT.md): every 202 ends as exactly
//! one `coupon_issues` row through killed consumers, a MariaDB crash, a frozen
//! MariaDB and a Redis restart; MySQL holds the line when Redis forgets
//! everything, even users a consumer has not written yet; poison entries are
//! dead-lettered and can be replayed; a consumer stopped with SIGTERM mid-batch
//! exits 0 promptly and loses nothing.
//!
//! Each test runs its own private `redis-server` and `mariadbd` (never the
//! machine's shared ones: see `integration_tests::servers`), consumers as real
//! processes (so `kill -9` is real), and the API in-process (plus, once, as a
//! process). Every answer of a sale is recorded; a 503 or a lost answer makes
//! its user "maybe accepted", a 202 makes it "certainly accepted".

use futures::stream::{self, StreamExt};
use integration_tests::binaries::{consumer_command, ApiProcess, ConsumerOptions, ConsumerProcess};
use integration_tests::checks::assert_rows_match;
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::{keys, wait, CONSUMER_GROUP};
use rand::seq::SliceRandom;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Value};
use shared::{CouponId, IssueEvent, UserId};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::time::Duration;
use tokio::time::Instant;
use verify::mysql::{Ledger, ALL_USERS};

/// One fault test at a time: each runs a sale against its own servers and
/// consumer processes, and on a 2-core machine the kill timings and latency
/// bounds only mean something without a neighbour eating the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// No answer may take longer than this (the API's request timeout is 3 s).
const MAX_LATENCY: Duration = Duration::from_secs(5);
/// How long the consumers get to write everything once the faults are over.
const SETTLE: Duration = Duration::from_secs(60);

/// A test's private servers, its API and its clients of both servers.
struct Rig {
    app: TestApp,
    env: Env,
    db: MySqlPool,
    redis_conn: ConnectionManager,
    redis: PrivateRedis,
    maria: PrivateMariaDb,
    /// Held until everything above is gone: one fault test at a time.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Rig {
    /// A rig with a coupon of `quantity` open for sale.
    async fn with_coupon(quantity: i64) -> (Self, i64) {
        let rig = Self::start().await;
        let coupon = rig.app.client.create_open_coupon(quantity).await;
        (rig, coupon)
    }

    async fn start() -> Self {
        let _serial = SERIAL.lock().await;
        let (redis, maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
        let env = Env::on(&redis.url(), &maria.url());
        let app = spawn::spawn_app(&env).await;
        // Short acquire timeout: polls while MariaDB is down must fail fast.
        let db = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            .connect(&env.database_url)
            .await
            .expect("connecting to the private MariaDB");
        let redis_conn = env.redis().await;
        Self {
            app,
            env,
            db,
            redis_conn,
            redis,
            maria,
            _serial,
        }
    }

    fn consumer(&self, name: &str) -> ConsumerProcess {
        ConsumerProcess::spawn(&self.env, name, &ConsumerOptions::default())
    }

    /// Starts the consumers `names` and waits until they all read.
    async fn start_consumers<const N: usize>(&self, names: [&str; N]) -> [ConsumerProcess; N] {
        let consumers = names.map(|name| self.consumer(name));
        self.wait_readers(N).await;
        consumers
    }

    fn conn(&self) -> ConnectionManager {
        self.redis_conn.clone()
    }

    /// Waits until `count` consumers are blocked reading their streams: started
    /// and past their set-up. (Redis 7.0 lists a consumer in XINFO CONSUMERS only
    /// once it was given an entry, so the blocked XREADGROUPs are what shows.)
    async fn wait_readers(&self, count: usize) {
        wait::until(
            Duration::from_secs(30),
            "the consumers to block on XREADGROUP",
            || async {
                let clients: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut self.conn())
                    .await
                    .ok()?;
                let blocked = clients
                    .lines()
                    .filter(|c| c.contains(" flags=b ") && c.contains(" cmd=xreadgroup "))
                    .count();
                (blocked >= count).then_some(())
            },
        )
        .await;
    }

    /// Entries delivered to `consumer` and not acked yet (0 when unknown).
    async fn pending_of(&self, coupon: i64, consumer: &str) -> usize {
        let consumers = consumers_of(&mut self.conn(), coupon).await.unwrap_or_default();
        consumers.get(consumer).copied().unwrap_or(0)
    }

    /// Polls every millisecond until `consumer` holds unacked entries.
    async fn wait_holding(&self, coupon: i64, consumer: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pending_of(coupon, consumer).await == 0 {
            assert!(Instant::now() < deadline, "{consumer} never held a batch");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sells to `users` (one every `period`, from the first user) and stops
    /// `consumer` with SIGTERM as soon as it holds a batch: it must exit 0
    /// within `limit`. Returns the sale's answers.
    async fn sigterm_mid_sale(
        &self,
        consumer: &mut ConsumerProcess,
        coupon: i64,
        (users, period): (RangeInclusive<i64>, Duration),
        limit: Duration,
    ) -> Vec<Answer> {
        let bases = vec![self.app.client.base.clone()];
        let selling = tokio::spawn(sale(bases, coupon, evenly(users, period), 32));
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.wait_holding(coupon, &consumer.name).await;
        let (status, took) = consumer.sigterm(Duration::from_secs(15)).await;
        let name = &consumer.name;
        assert!(status.success() && took < limit, "{name}: {status} after {took:?}");
        eprintln!("{name}, stopped holding a batch: {status} after {took:?}");
        selling.await.unwrap()
    }

    /// Waits until every stream entry was delivered and acked and MySQL holds
    /// exactly the users of Redis' issued set; returns them.
    async fn settle(&self, coupon: i64) -> HashSet<i64> {
        wait::until(SETTLE, "MySQL to hold exactly the users Redis accepted", || async {
            self.drained(coupon).await?;
            let accepted: HashSet<i64> = self.conn().smembers(keys(coupon).issued).await.ok()?;
            let rows = self.mysql_users(coupon).await?;
            (rows == accepted).then_some(rows)
        })
        .await
    }

    /// Whether the group has read the whole stream and acked everything.
    async fn drained(&self, coupon: i64) -> Option<()> {
        let stream = keys(coupon).events;
        let drained = verify::stream::drained(&mut self.conn(), &stream, CONSUMER_GROUP).await;
        drained.ok()?.then_some(())
    }

    /// The users with a row, or `None` while MySQL does not answer.
    async fn mysql_users(&self, coupon: i64) -> Option<HashSet<i64>> {
        verify::mysql::user_ids(&self.db, coupon, ALL_USERS).await.ok()
    }

    /// [`Rig::settle`], then [`Rig::check_mysql`]; returns the rows' users.
    async fn settle_and_check(&self, coupon: i64, quantity: i64) -> HashSet<i64> {
        let rows = self.settle(coupon).await;
        assert_eq!(self.check_mysql(coupon, quantity).await, rows);
        rows
    }

    /// Checks the MySQL side of the guarantees and returns the rows' users.
    async fn check_mysql(&self, coupon: i64, quantity: i64) -> HashSet<i64> {
        let ledger = Ledger::read(&self.db, coupon).await.unwrap();
        assert_eq!(ledger.rows, ledger.distinct_users, "no user has two rows");
        let issued = ledger.issued_quantity.expect("the coupon has a row");
        let check = verify::quantity_check(Some(coupon), issued, ledger.rows, quantity);
        assert!(check.pass, "{}: {}", check.name, check.detail);
        self.mysql_users(coupon).await.unwrap()
    }

    /// The coupon's dead-letter stream, read directly.
    async fn dead_letters(&self, coupon: i64) -> Vec<DeadLetter> {
        let range: redis::streams::StreamRangeReply = self.conn().xrange_all(keys(coupon).dead).await.unwrap();
        range
            .ids
            .into_iter()
            .map(|e| {
                let field = |name: &str| match e.map.get(name) {
                    Some(redis::Value::BulkString(bytes)) => bytes.clone(),
                    _ => Vec::new(),
                };
                let text = |name: &str| String::from_utf8_lossy(&field(name)).into_owned();
                DeadLetter {
                    source_id: text("source_id"),
                    reason: text("reason"),
                    ev: field("ev"),
                }
            })
            .collect()
    }
}

/// One entry of a `coupon:{id}:dead` stream.
#[derive(Debug)]
struct DeadLetter {
    source_id: String,
    reason: String,
    ev: Vec<u8>,
}

async fn consumers_of(conn: &mut ConnectionManager, coupon: i64) -> Option<BTreeMap<String, usize>> {
    let reply: redis::streams::StreamInfoConsumersReply =
        conn.xinfo_consumers(keys(coupon).events, CONSUMER_GROUP).await.ok()?;
    Some(reply.consumers.into_iter().map(|c| (c.name, c.pending)).collect())
}

/// One answer to an issue request; `status` is `None` for a transport error.
#[derive(Clone, Debug)]
struct Answer {
    user: i64,
    status: Option<u16>,
    /// The `error` code, or the transport error's text.
    code: String,
    position: Option<i64>,
    /// When it was sent, from the start of the sale.
    sent: Duration,
    elapsed: Duration,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

async fn ask(http: &reqwest::Client, base: &str, coupon: i64, user: i64, sent_at: Duration) -> Answer {
    let started = Instant::now();
    let sent = http
        .post(format!("{base}/coupons/{coupon}/issue"))
        .json(&json!({ "user_id": user }))
        .send()
        .await;
    let (status, body) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) => (Some(status), serde_json::from_slice(&body).unwrap_or(Value::Null)),
                Err(err) => (None, json!({ "error": err.to_string() })),
            }
        }
        Err(err) => (None, json!({ "error": err.to_string() })),
    };
    Answer {
        user,
        status,
        code: body["error"].as_str().unwrap_or_default().to_string(),
        position: body["position"].as_i64(),
        sent: sent_at,
        elapsed: started.elapsed(),
    }
}

/// Sends each `(offset, user)` request at its offset from now to the APIs at
/// `bases` in turn, with at most `concurrency` in flight; returns every answer.
async fn sale(bases: Vec<String>, coupon: i64, schedule: Vec<(Duration, i64)>, concurrency: usize) -> Vec<Answer> {
    let http = http_client();
    let start = Instant::now();
    stream::iter(schedule.into_iter().enumerate())
        .map(|(i, (offset, user))| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            async move {
                tokio::time::sleep_until(start + offset).await;
                ask(&http, &base, coupon, user, start.elapsed()).await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// `users` in order, one every `period`.
fn evenly(users: impl IntoIterator<Item = i64>, period: Duration) -> Vec<(Duration, i64)> {
    users
        .into_iter()
        .enumerate()
        .map(|(i, user)| (period * i as u32, user))
        .collect()
}

/// What a sale's answers say: who was accepted, who may or may not have been
/// (503 or no answer), and how many of each code.
#[derive(Debug, Default)]
struct Tally {
    accepted: HashSet<i64>,
    ambiguous: HashSet<i64>,
    codes: BTreeMap<String, usize>,
}

/// Checks every answer is one the contract allows, in time, and nobody was
/// accepted twice or at a taken position (nor outside 1..=`quantity`).
fn tally(answers: &[Answer], quantity: i64) -> Tally {
    let mut tally = Tally::default();
    let mut accepted = Vec::new();
    for a in answers {
        assert!(a.elapsed < MAX_LATENCY, "a request hung: {a:?}");
        let code = match a.status {
            Some(202) => {
                accepted.push((a.user, a.position));
                "accepted".to_string()
            }
            Some(409) if ["already_issued", "sold_out"].contains(&a.code.as_str()) => a.code.clone(),
            Some(503) if a.code == "unavailable" => {
                tally.ambiguous.insert(a.user);
                a.code.clone()
            }
            None => {
                tally.ambiguous.insert(a.user);
                "transport_error".to_string()
            }
            Some(_) => panic!("an answer the contract does not allow here: {a:?}"),
        };
        *tally.codes.entry(code).or_default() += 1;
    }
    let findings = verify::examine(accepted.iter().copied(), quantity);
    assert_eq!(findings.unread, 0, "a 202 has a position: {findings:?}");
    assert_eq!(findings.duplicate_users, 0, "a user was accepted twice: {findings:?}");
    assert_eq!(findings.duplicate_positions, 0, "two users were given one position");
    assert_eq!(findings.out_of_range, 0, "positions are within 1..={quantity}");
    tally.accepted = accepted.into_iter().map(|(user, _)| user).collect();
    tally
}

/// The consumers never exited (a fault must not take a survivor down).
fn assert_running(consumers: &mut [ConsumerProcess]) {
    for survivor in consumers {
        assert!(
            survivor.is_running(),
            "{} exited:\n{}",
            survivor.name,
            survivor.log_tail(30)
        );
    }
}

/// Answers per half second of the sale, for the log: `t: code=count ...`.
fn timeline(answers: &[Answer]) -> String {
    let mut slots: BTreeMap<u128, BTreeMap<String, usize>> = BTreeMap::new();
    for a in answers {
        let code = match a.status {
            Some(202) => "accepted".to_string(),
            Some(_) => a.code.clone(),
            None => "transport_error".to_string(),
        };
        *slots
            .entry(a.sent.as_millis() / 500)
            .or_default()
            .entry(code)
            .or_default() += 1;
    }
    let slowest = answers.iter().map(|a| a.elapsed).max().unwrap_or_default();
    let lines: Vec<String> = slots
        .iter()
        .map(|(slot, codes)| format!("  {:>5} ms: {codes:?}", slot * 500))
        .collect();
    format!("slowest answer {slowest:?}\n{}", lines.join("\n"))
}

async fn at(t0: Instant, ms: u64) {
    tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_request_reaches_mysql_once_through_killed_consumers_a_mysql_crash_and_a_redis_restart() {
    let quantity = 1000;
    let (mut rig, coupon) = Rig::with_coupon(quantity).await;
    let mut consumers = Vec::from(rig.start_consumers(["c1", "c2", "c3"]).await);

    // 1,500 users over 9 s: first tries arrive evenly (so the coupon sells out
    // late, after every fault), each user retrying 0 to 3 times later on.
    let sale_ms = 9_000.0;
    let mut users: Vec<i64> = (1..=1500).collect();
    users.shuffle(&mut rand::rng());
    let mut schedule: Vec<(Duration, i64)> = Vec::new();
    for (i, &user) in users.iter().enumerate() {
        let first = i as f64 / 1500.0 * sale_ms * 0.95;
        schedule.push((Duration::from_secs_f64(first / 1000.0), user));
        for _ in 0..rand::random_range(0..=3) {
            let retry = rand::random_range(first..sale_ms);
            schedule.push((Duration::from_secs_f64(retry / 1000.0), user));
        }
    }
    schedule.sort();
    let requests = schedule.len();
    let t0 = Instant::now();
    let selling = tokio::spawn(sale(vec![rig.app.client.base.clone()], coupon, schedule, 32));

    at(t0, 1_000).await;
    rig.wait_holding(coupon, "c1").await;
    consumers[0].kill9();
    let c1_left = rig.pending_of(coupon, "c1").await;

    at(t0, 2_000).await;
    rig.maria.kill9();
    // With MySQL gone, whatever c2 holds now it can not have written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.wait_holding(coupon, "c2").await;
    consumers[1].kill9();
    let c2_left = rig.pending_of(coupon, "c2").await;
    assert!(c2_left > 0, "c2 was killed holding entries it could not write");
    at(t0, 4_000).await;
    rig.maria.restart().await;

    at(t0, 4_500).await;
    rig.redis.kill9();
    at(t0, 5_500).await;
    rig.redis.restart().await;

    at(t0, 6_000).await;
    consumers.push(rig.consumer("c4"));

    let answers = selling.await.unwrap();
    let sale_took = t0.elapsed();
    let tally = tally(&answers, quantity);
    let accepted = tally.accepted.clone();
    eprintln!(
        "{requests} requests in {sale_took:?}: {:?}; c1 left {c1_left} pending, c2 left {c2_left}",
        tally.codes
    );
    eprintln!("{}", timeline(&answers));
    assert!(accepted.len() as i64 <= quantity);
    assert!(
        tally.codes.get("unavailable").copied().unwrap_or(0) > 0,
        "the sale ran into the Redis outage"
    );

    let rows = rig.settle_and_check(coupon, quantity).await;
    assert_rows_match(&rows, &accepted, &tally.ambiguous);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    let (_, view) = rig.app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(view["issued_quantity"].as_i64(), Some(rows.len() as i64), "{view}");
    assert_running(&mut consumers[2..]);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_forgets_everything_nobody_is_accepted_twice_and_mysql_never_exceeds_the_quantity() {
    let quantity = 300;
    let (rig, coupon) = Rig::with_coupon(quantity).await;
    let [mut consumer] = rig.start_consumers(["c1"]).await;

    let base = rig.app.client.base.clone();
    let first = tally(
        &sale(vec![base.clone()], coupon, evenly(1..=200, Duration::ZERO), 32).await,
        quantity,
    );
    assert_eq!(first.accepted.len(), 200, "{:?}", first.codes);
    assert_eq!(rig.settle(coupon).await.len(), 200);

    rig.redis.flushall().await;
    // A second API, started now, knows nothing of the coupon: it rebuilds on its
    // first lookup, while the first API (coupon cached) rebuilds when the script
    // says the state is missing; only one of them may refill.
    let mut api2 = ApiProcess::spawn(&rig.env).await;

    // The accepted users again, and 300 new users for the 100 places left.
    let mut users: Vec<i64> = (1..=500).collect();
    users.shuffle(&mut rand::rng());
    let bases = vec![base, api2.client.base.clone()];
    let second = tally(
        &sale(bases, coupon, evenly(users, Duration::from_millis(2)), 32).await,
        quantity,
    );
    eprintln!("after FLUSHALL: {:?}", second.codes);
    let again: Vec<_> = second.accepted.iter().filter(|u| first.accepted.contains(u)).collect();
    assert!(
        again.is_empty(),
        "accepted before the flush and again after it: {again:?}"
    );
    let accepted: HashSet<i64> = first.accepted.union(&second.accepted).copied().collect();
    assert!(accepted.len() as i64 <= quantity, "{} accepted", accepted.len());

    let rows = rig.settle_and_check(coupon, quantity).await;
    assert_rows_match(&rows, &accepted, &second.ambiguous);
    assert!(
        consumer.is_running(),
        "the consumer survived NOGROUP:\n{}",
        consumer.log_tail(30)
    );
    assert!(api2.is_running(), "{}", api2.log_tail(30));
    rig.app.stop().await;
}

/// A valid issue event of `user` for `coupon`, as if Redis had accepted it now.
fn event(coupon: i64, user: i64) -> IssueEvent {
    IssueEvent {
        coupon_id: CouponId::new(coupon).unwrap(),
        user_id: UserId::new(user).unwrap(),
        accepted_at_ms: chrono::Utc::now().timestamp_millis(),
        position: 0,
        trace: Default::default(),
    }
}

/// XADDs `ev` (and `pos`) to the coupon's stream, bypassing the API.
async fn inject(rig: &Rig, coupon: i64, ev: &[u8], pos: &str) -> String {
    redis::cmd("XADD")
        .arg(keys(coupon).events)
        .arg("*")
        .arg("ev")
        .arg(ev)
        .arg("pos")
        .arg(pos)
        .query_async(&mut rig.conn())
        .await
        .unwrap()
}

async fn list_dead_letters(rig: &Rig, coupon: i64) -> Vec<Value> {
    let output = consumer_command(&rig.env, &["list-dead-letters", "--coupon", &coupon.to_string()]).await;
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

async fn wait_dead(rig: &Rig, coupon: i64, count: usize) -> Vec<DeadLetter> {
    wait::until(Duration::from_secs(20), "the dead letters, acked", || async {
        rig.drained(coupon).await?;
        let letters = rig.dead_letters(coupon).await;
        (letters.len() == count).then_some(letters)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_entries_are_dead_lettered_and_acked_and_an_operator_can_replay_them() {
    let (rig, coupon) = Rig::with_coupon(3).await;
    let [mut consumer] = rig.start_consumers(["c1"]).await;
    for user in 1..=3 {
        assert_eq!(rig.app.client.issue(coupon, user).await.0, 202);
    }
    assert_eq!(rig.settle(coupon).await.len(), 3);

    let garbage = inject(&rig, coupon, b"\xc1 not MessagePack", "1").await;
    let letters = wait_dead(&rig, coupon, 1).await;
    assert_eq!(letters[0].source_id, garbage);
    assert!(letters[0].reason.starts_with("undecodable"), "{letters:?}");

    // A valid event Redis never decided on, for a coupon MySQL has full.
    inject(&rig, coupon, &event(coupon, 99).encode(), "4").await;
    wait_dead(&rig, coupon, 2).await;
    let (status, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/99")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["reason"], "quantity_exceeded", "{body}");
    assert_eq!(
        rig.check_mysql(coupon, 3).await.len(),
        3,
        "MySQL refused the fourth row"
    );

    let listed = list_dead_letters(&rig, coupon).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[0]["user_id"].is_null() && listed[0]["source_id"] == garbage.as_str(),
        "{listed:?}"
    );
    assert_eq!(
        (listed[1]["user_id"].as_i64(), listed[1]["coupon_id"].as_i64()),
        (Some(99), Some(coupon))
    );
    assert_eq!(listed[1]["reason"], "quantity_exceeded");

    // The operator makes room for user 99 and replays that one letter.
    sqlx::query("UPDATE coupons SET total_quantity = 4 WHERE id = ?")
        .bind(coupon)
        .execute(&rig.db)
        .await
        .unwrap();
    let letter = listed[1]["id"].as_str().unwrap();
    let coupon_arg = coupon.to_string();
    let output = consumer_command(
        &rig.env,
        &["replay-dead-letters", "--coupon", &coupon_arg, "--id", letter],
    )
    .await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 1"));
    wait::until(
        Duration::from_secs(20),
        "user 99's replayed event to be written",
        || async { rig.mysql_users(coupon).await?.contains(&99).then_some(()) },
    )
    .await;
    let (_, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/99")).await;
    assert_eq!(body["status"], "issued", "{body}");
    assert_eq!(rig.check_mysql(coupon, 4).await.len(), 4);

    // Replaying the garbage buries it again, acked, under a new id.
    let output = consumer_command(&rig.env, &["replay-dead-letters", "--coupon", &coupon.to_string()]).await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 1"));
    let letters = wait_dead(&rig, coupon, 1).await;
    assert_ne!(letters[0].source_id, garbage);
    assert!(letters[0].reason.starts_with("undecodable"), "{letters:?}");
    assert!(
        consumer.is_running(),
        "the consumer survived the poison:\n{}",
        consumer.log_tail(30)
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_stopped_with_sigterm_mid_batch_exits_zero_promptly_and_loses_nothing() {
    let (mut rig, coupon) = Rig::with_coupon(1000).await;

    // Stopped while writing.
    let [mut c1] = rig.start_consumers(["c1"]).await;
    let users = (1..=400, Duration::from_millis(4));
    let mut answers = rig
        .sigterm_mid_sale(&mut c1, coupon, users, Duration::from_secs(5))
        .await;

    // Stopped while retrying a batch MySQL can not take (each attempt may wait
    // out the pool's 3 s acquire timeout before the stop is noticed).
    let [mut c2] = rig.start_consumers(["c2"]).await;
    rig.maria.kill9();
    let users = (401..=600, Duration::from_millis(2));
    answers.extend(
        rig.sigterm_mid_sale(&mut c2, coupon, users, Duration::from_secs(6))
            .await,
    );
    assert!(
        rig.pending_of(coupon, "c2").await > 0,
        "c2 handed its batch back unwritten"
    );
    rig.maria.restart().await;

    let tally = tally(&answers, 1000);
    assert_eq!(tally.accepted.len(), 600, "{:?}", tally.codes);

    // c2 comes back under its own name (taking its own pending entries back at
    // start) and c3 joins (reclaiming whatever else was left idle).
    let mut survivors = vec![rig.consumer("c2"), rig.consumer("c3")];
    let rows = rig.settle_and_check(coupon, 1000).await;
    assert_eq!(rows, tally.accepted);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    assert_running(&mut survivors);
    rig.app.stop().await;
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_mysql_delays_issues_without_losing_any_and_a_consumer_waiting_on_it_still_stops_on_sigterm() {
    let (rig, coupon) = Rig::with_coupon(1000).await;
    let base = rig.app.client.base.clone();
    let mut consumers = rig.start_consumers(["c1", "c2", "c3"]).await;
    let mut answers = sale(vec![base.clone()], coupon, evenly(1..=50, Duration::ZERO), 8).await;
    rig.settle(coupon).await;

    // SIGSTOP: connections stay open but nothing answers, unlike a crash. The
    // freeze outlasts CLAIM_IDLE_MS several times over.
    let mariadbd = rig.maria.pid().expect("MariaDB runs");
    signal(mariadbd, "-STOP");
    let frozen = Instant::now();
    answers.extend(sale(vec![base], coupon, evenly(51..=200, Duration::from_millis(5)), 16).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.wait_holding(coupon, "c1").await;
    let (status, took) = consumers[0].sigterm(Duration::from_secs(15)).await;
    assert!(
        status.success() && took < Duration::from_secs(8),
        "c1: {status} after {took:?}"
    );
    tokio::time::sleep_until(frozen + Duration::from_secs(5)).await;
    signal(mariadbd, "-CONT");

    let tally = tally(&answers, 1000);
    assert_eq!(tally.accepted.len(), 200, "{:?}", tally.codes);
    let rows = rig.settle_and_check(coupon, 1000).await;
    assert_eq!(rows, tally.accepted);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    assert_running(&mut consumers[1..]);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_holds_the_quantity_on_its_own_when_redis_forgets_users_a_consumer_has_not_written_yet() {
    let quantity = 100;
    let (rig, coupon) = Rig::with_coupon(quantity).await;
    let base = rig.app.client.base.clone();
    let [mut consumer] = rig.start_consumers(["c1"]).await;

    // The consumer reads the first users, then waits on the coupon's row lock.
    let mut lock = rig.db.begin().await.unwrap();
    let _: (i64,) = sqlx::query_as("SELECT total_quantity FROM coupons WHERE id = ? FOR UPDATE")
        .bind(coupon)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    let first = tally(
        &sale(vec![base.clone()], coupon, evenly(1..=60, Duration::ZERO), 8).await,
        quantity,
    );
    assert_eq!(first.accepted.len(), 60);
    rig.wait_holding(coupon, "c1").await;

    // Redis forgets everything, the held batch included; the API rebuilds from
    // MySQL (no rows yet) and accepts a full quantity again.
    rig.redis.flushall().await;
    let second = tally(
        &sale(vec![base], coupon, evenly(61..=200, Duration::ZERO), 8).await,
        quantity,
    );
    assert_eq!(second.accepted.len() as i64, quantity, "{:?}", second.codes);
    lock.rollback().await.unwrap();

    // Redis' set now names users MySQL refused, so wait for the stream instead.
    let rows = wait::until(SETTLE, "the stream to drain and MySQL to fill up", || async {
        rig.drained(coupon).await?;
        let rows = rig.mysql_users(coupon).await?;
        (rows.len() as i64 == quantity).then_some(rows)
    })
    .await;
    assert_eq!(rig.check_mysql(coupon, quantity).await, rows);
    let accepted: HashSet<i64> = first.accepted.union(&second.accepted).copied().collect();
    assert!(rows.is_subset(&accepted), "every row is an accepted user");
    // Whatever the consumer held beyond the quantity was refused, not written.
    let refused: Vec<i64> = rig
        .dead_letters(coupon)
        .await
        .iter()
        .map(|letter| {
            assert_eq!(letter.reason, "quantity_exceeded", "{letter:?}");
            let event = IssueEvent::decode(Some(&letter.ev), Some(b"1")).unwrap();
            event.user_id.get()
        })
        .collect();
    assert!(!refused.is_empty(), "the held batch went past the quantity");
    for user in &refused {
        assert!(accepted.contains(user) && !rows.contains(user), "refused user {user}");
        let (status, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/{user}")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("failed")), "{body}");
    }
    assert!(consumer.is_running(), "{}", consumer.log_tail(30));
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_entry_is_dead_lettered_once_even_when_its_batch_is_retried() {
    let (mut rig, coupon) = Rig::with_coupon(10).await;
    let [consumer] = rig.start_consumers(["c1"]).await;
    rig.maria.kill9();
    // Garbage and a valid event in one transaction, so that one read gets both.
    let event = event(coupon, 5);
    let events = keys(coupon).events;
    let (garbage, _): (String, String) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg("ev")
        .arg(&b"\xc1 not MessagePack"[..])
        .arg("pos")
        .arg("1")
        .cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg("ev")
        .arg(event.encode())
        .arg("pos")
        .arg("1")
        .query_async(&mut rig.conn())
        .await
        .unwrap();
    wait::until(
        Duration::from_secs(30),
        "the consumer to retry the batch twice",
        || async { (consumer.log().matches("batch failed").count() >= 2).then_some(()) },
    )
    .await;
    rig.maria.restart().await;
    wait::until(SETTLE, "the valid event to be written", || async {
        rig.drained(coupon).await?;
        rig.mysql_users(coupon).await?.contains(&5).then_some(())
    })
    .await;
    let letters = rig.dead_letters(coupon).await;
    assert_eq!(letters.len(), 1, "one poison entry, one dead letter: {letters:?}");
    assert_eq!(letters[0].source_id, garbage);
    rig.app.stop().await;
}
