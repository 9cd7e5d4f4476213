//! A fault test's rig: its own Redis and MariaDB, the API on them, consumer
//! processes, and what the test reads of them (readers blocked, entries held,
//! MySQL settled and checked, dead letters).

use crate::sale::{evenly, sale, Answer};
use integration_tests::binaries::{consumer_command, ConsumerOptions, ConsumerProcess};
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::{keys, wait, CONSUMER_GROUP};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::Value;
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

/// How long the consumers get to write everything once the faults are over.
pub const SETTLE: Duration = Duration::from_secs(60);

/// A test's private servers, its API and its clients of both servers.
pub struct Rig {
    pub app: TestApp,
    pub env: Env,
    pub db: MySqlPool,
    redis_conn: ConnectionManager,
    pub redis: PrivateRedis,
    pub maria: PrivateMariaDb,
    /// Held until everything above is gone: one fault test at a time.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Rig {
    /// A rig with a coupon of `quantity` open for sale.
    pub async fn with_coupon(quantity: i64) -> (Self, i64) {
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

    pub fn consumer(&self, name: &str) -> ConsumerProcess {
        ConsumerProcess::spawn(&self.env, name, &ConsumerOptions::default())
    }

    /// Starts the consumers `names` and waits until they all read.
    pub async fn start_consumers<const N: usize>(&self, names: [&str; N]) -> [ConsumerProcess; N] {
        let consumers = names.map(|name| self.consumer(name));
        self.wait_readers(N).await;
        consumers
    }

    pub fn conn(&self) -> ConnectionManager {
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
    pub async fn pending_of(&self, coupon: i64, consumer: &str) -> usize {
        let consumers = consumers_of(&mut self.conn(), coupon).await.unwrap_or_default();
        consumers.get(consumer).copied().unwrap_or(0)
    }

    /// Polls every millisecond until `consumer` holds unacked entries.
    pub async fn wait_holding(&self, coupon: i64, consumer: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pending_of(coupon, consumer).await == 0 {
            assert!(Instant::now() < deadline, "{consumer} never held a batch");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sells to `users` (one every `period`, from the first user) and stops
    /// `consumer` with SIGTERM as soon as it holds a batch: it must exit 0
    /// within `limit`. Returns the sale's answers.
    pub async fn sigterm_mid_sale(
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
    pub async fn settle(&self, coupon: i64) -> HashSet<i64> {
        wait::until(SETTLE, "MySQL to hold exactly the users Redis accepted", || async {
            self.drained(coupon).await?;
            let accepted: HashSet<i64> = self.conn().smembers(keys(coupon).issued).await.ok()?;
            let rows = self.mysql_users(coupon).await?;
            (rows == accepted).then_some(rows)
        })
        .await
    }

    /// Whether the group has read the whole stream and acked everything.
    pub async fn drained(&self, coupon: i64) -> Option<()> {
        let stream = keys(coupon).events;
        let drained = verify::stream::drained(&mut self.conn(), &stream, CONSUMER_GROUP).await;
        drained.ok()?.then_some(())
    }

    /// The users with a row, or `None` while MySQL does not answer.
    pub async fn mysql_users(&self, coupon: i64) -> Option<HashSet<i64>> {
        verify::mysql::user_ids(&self.db, coupon, ALL_USERS).await.ok()
    }

    /// [`Rig::settle`], then [`Rig::check_mysql`]; returns the rows' users.
    pub async fn settle_and_check(&self, coupon: i64, quantity: i64) -> HashSet<i64> {
        let rows = self.settle(coupon).await;
        assert_eq!(self.check_mysql(coupon, quantity).await, rows);
        rows
    }

    /// Checks the MySQL side of the guarantees and returns the rows' users.
    pub async fn check_mysql(&self, coupon: i64, quantity: i64) -> HashSet<i64> {
        let ledger = Ledger::read(&self.db, coupon).await.unwrap();
        assert_eq!(ledger.rows, ledger.distinct_users, "no user has two rows");
        let issued = ledger.issued_quantity.expect("the coupon has a row");
        let check = verify::quantity_check(Some(coupon), issued, ledger.rows, quantity);
        assert!(check.pass, "{}: {}", check.name, check.detail);
        self.mysql_users(coupon).await.unwrap()
    }

    /// The coupon's dead-letter stream, read directly.
    pub async fn dead_letters(&self, coupon: i64) -> Vec<DeadLetter> {
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
pub struct DeadLetter {
    pub source_id: String,
    pub reason: String,
    pub ev: Vec<u8>,
}

async fn consumers_of(conn: &mut ConnectionManager, coupon: i64) -> Option<BTreeMap<String, usize>> {
    let reply: redis::streams::StreamInfoConsumersReply =
        conn.xinfo_consumers(keys(coupon).events, CONSUMER_GROUP).await.ok()?;
    Some(reply.consumers.into_iter().map(|c| (c.name, c.pending)).collect())
}

/// The consumers never exited (a fault must not take a survivor down).
pub fn assert_running(consumers: &mut [ConsumerProcess]) {
    for survivor in consumers {
        assert!(
            survivor.is_running(),
            "{} exited:\n{}",
            survivor.name,
            survivor.log_tail(30)
        );
    }
}

/// A valid issue event of `user` for `coupon`, as if Redis had accepted it now.
pub fn event(coupon: i64, user: i64) -> IssueEvent {
    IssueEvent {
        coupon_id: CouponId::new(coupon).unwrap(),
        user_id: UserId::new(user).unwrap(),
        accepted_at_ms: chrono::Utc::now().timestamp_millis(),
        position: 0,
        trace: Default::default(),
    }
}

/// XADDs `ev` (and `pos`) to the coupon's stream, bypassing the API.
pub async fn inject(rig: &Rig, coupon: i64, ev: &[u8], pos: &str) -> String {
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

pub async fn list_dead_letters(rig: &Rig, coupon: i64) -> Vec<Value> {
    let output = consumer_command(&rig.env, &["list-dead-letters", "--coupon", &coupon.to_string()]).await;
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

pub async fn wait_dead(rig: &Rig, coupon: i64, count: usize) -> Vec<DeadLetter> {
    wait::until(Duration::from_secs(20), "the dead letters, acked", || async {
        rig.drained(coupon).await?;
        let letters = rig.dead_letters(coupon).await;
        (letters.len() == count).then_some(letters)
    })
    .await
}
