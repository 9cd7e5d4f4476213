//! The system under a schedule: private Redis (AOF `always`) and MariaDB, two
//! `coupon-api` and three `coupon-consumer` processes, and the steps that
//! break and heal each of them.

use super::fault::{Fault, Planned, Shape};
use super::load::Targets;
use crate::binaries::{ApiProcess, ConsumerOptions, ConsumerProcess};
use crate::child::signal;
use crate::client::Client;
use crate::servers::{PrivateMariaDb, PrivateRedis};
use crate::spawn::{Env, ADMIN_TOKEN};
use serde_json::json;
use sqlx::{Connection, MySqlConnection};
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Every process of one run; each behind its own lock, taken by one fault at a time.
pub struct Rig {
    pub env: Env,
    redis: Mutex<PrivateRedis>,
    maria: Mutex<PrivateMariaDb>,
    apis: Vec<Mutex<ApiProcess>>,
    consumers: Vec<Mutex<ConsumerProcess>>,
    pub targets: Targets,
    /// The sale slots' quantities; slot 0 exists before the sale, slot 1 is
    /// created by the schedule's [`Fault::CreateCoupon`].
    pub quantities: Vec<i64>,
    /// When each FLUSHALL had completed, from the start of the sale.
    pub losses: StdMutex<Vec<Duration>>,
    /// When slot 1's coupon had been created, from the start of the sale.
    pub created: StdMutex<Option<Duration>>,
    /// What was done when, for the report.
    pub journal: StdMutex<Vec<String>>,
}

impl Rig {
    /// Starts the servers and processes and creates the first coupon.
    pub async fn start(shape: Shape, quantities: Vec<i64>) -> Self {
        let (redis, maria) = tokio::join!(PrivateRedis::start(), PrivateMariaDb::start());
        let env = Env::on(&redis.url(), &maria.url());
        let mut apis = Vec::new();
        for _ in 0..shape.apis {
            apis.push(ApiProcess::spawn(&env).await);
        }
        let first = apis[0].client.create_open_coupon(quantities[0]).await;
        let consumers = (0..shape.consumers).map(|i| Mutex::new(consumer(&env, i))).collect();
        let targets = Targets::default();
        *targets.bases.write().unwrap_or_else(|e| e.into_inner()) =
            apis.iter().map(|a| a.client.base.clone()).collect();
        // The next id MySQL hands out; corrected when the coupon is created.
        *targets.coupons.write().unwrap_or_else(|e| e.into_inner()) = vec![first, first + 1];
        Self {
            env,
            redis: Mutex::new(redis),
            maria: Mutex::new(maria),
            apis: apis.into_iter().map(Mutex::new).collect(),
            consumers,
            targets,
            quantities,
            losses: StdMutex::new(Vec::new()),
            created: StdMutex::new(None),
            journal: StdMutex::new(Vec::new()),
        }
    }

    fn note(&self, t0: Instant, what: String) {
        let line = format!("{:>6} ms {what}", t0.elapsed().as_millis());
        self.journal.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    pub fn coupon(&self, slot: usize) -> i64 {
        self.targets.coupons.read().unwrap_or_else(|e| e.into_inner())[slot]
    }

    /// Waits until the step's time, breaks its target, and heals it when the
    /// fault's time is up.
    pub async fn play(&self, step: Planned, t0: Instant) {
        tokio::time::sleep_until(t0 + step.at).await;
        self.note(t0, format!("start: {}", step.fault));
        let lasts = step.fault.lasts();
        match step.fault {
            Fault::KillApi { which, .. } => {
                let mut api = self.apis[which].lock().await;
                api.kill9();
                tokio::time::sleep(lasts).await;
                *api = ApiProcess::respawn(&self.env).await;
                self.targets.bases.write().unwrap_or_else(|e| e.into_inner())[which] = api.client.base.clone();
            }
            Fault::KillConsumer { which, .. } => {
                let mut consumer_process = self.consumers[which].lock().await;
                consumer_process.kill9();
                tokio::time::sleep(lasts).await;
                *consumer_process = consumer(&self.env, which);
            }
            Fault::KillMariaDb { .. } => {
                let mut maria = self.maria.lock().await;
                maria.kill9();
                tokio::time::sleep(lasts).await;
                maria.restart().await;
            }
            Fault::FreezeMariaDb { .. } => {
                let maria = self.maria.lock().await;
                freeze(maria.pid(), lasts).await;
            }
            Fault::FreezeRedis { .. } => {
                let redis = self.redis.lock().await;
                freeze(redis.pid(), lasts).await;
            }
            Fault::KillRedis { .. } => {
                let mut redis = self.redis.lock().await;
                redis.kill9();
                tokio::time::sleep(lasts).await;
                redis.restart().await;
            }
            Fault::FlushAll => {
                self.redis.lock().await.flushall().await;
                self.losses.lock().unwrap_or_else(|e| e.into_inner()).push(t0.elapsed());
            }
            Fault::LockCouponRow { hold } => self.lock_coupon_row(hold).await,
            Fault::CreateCoupon => self.create_second_coupon(t0).await,
        }
        self.note(t0, format!("healed: {}", step.fault));
    }

    /// Holds the first coupon's row lock, as a slow transaction would.
    async fn lock_coupon_row(&self, hold: Duration) {
        let _maria = self.maria.lock().await;
        let mut conn = MySqlConnection::connect(&self.env.database_url)
            .await
            .expect("connecting to the private MariaDB to lock a row");
        let mut tx = conn.begin().await.expect("BEGIN");
        sqlx::query("SELECT id FROM coupons WHERE id = ? FOR UPDATE")
            .bind(self.coupon(0))
            .fetch_optional(&mut *tx)
            .await
            .expect("locking the coupon row");
        tokio::time::sleep(hold).await;
        tx.rollback().await.expect("ROLLBACK");
    }

    /// Creates slot 1's coupon through the first API instance, retrying while
    /// a fault makes the API answer 503.
    async fn create_second_coupon(&self, t0: Instant) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let base = self.targets.bases.read().unwrap_or_else(|e| e.into_inner())[0].clone();
            let now = chrono::Utc::now();
            let body = json!({
                "name": "created mid-sale",
                "total_quantity": self.quantities[1],
                "issue_start": (now - chrono::Duration::seconds(1)).to_rfc3339(),
                "issue_end": (now + chrono::Duration::hours(1)).to_rfc3339(),
            });
            let sent = reqwest::Client::new()
                .post(format!("{base}/coupons"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let created = match sent {
                Ok(response) if response.status().as_u16() == 201 => response.json::<serde_json::Value>().await.ok(),
                _ => None,
            };
            if let Some(created) = created {
                let id = created["id"].as_i64().expect("a created coupon has an id");
                self.targets.coupons.write().unwrap_or_else(|e| e.into_inner())[1] = id;
                *self.created.lock().unwrap_or_else(|e| e.into_inner()) = Some(t0.elapsed());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the second coupon could not be created within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After the schedule: every process still up (a fault's target was
    /// restarted by its heal step; anything else that exited did so on its own).
    pub async fn exited_on_their_own(&self) -> Vec<String> {
        let mut exited = Vec::new();
        for api in &self.apis {
            let mut api = api.lock().await;
            if !api.is_running() {
                exited.push(format!("{} exited:\n{}", api.label, api.log_tail(20)));
            }
        }
        for consumer_process in &self.consumers {
            let mut c = consumer_process.lock().await;
            if !c.is_running() {
                exited.push(format!("{} exited:\n{}", c.label, c.log_tail(20)));
            }
        }
        exited
    }

    /// A client of the first API instance, for status lookups after the sale.
    pub async fn client(&self) -> Client {
        self.apis[0].lock().await.client.clone()
    }

    /// The tails of every process log, for a failure report.
    pub async fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for api in &self.apis {
            let api = api.lock().await;
            out.push_str(&format!("--- {} ---\n{}\n", api.label, api.log_tail(lines)));
        }
        for consumer_process in &self.consumers {
            let c = consumer_process.lock().await;
            out.push_str(&format!("--- {} ---\n{}\n", c.label, c.log_tail(lines)));
        }
        out
    }
}

fn consumer(env: &Env, i: usize) -> ConsumerProcess {
    ConsumerProcess::spawn(env, &format!("consumer{i}"), &ConsumerOptions::default())
}

/// SIGSTOP, then SIGCONT after `lasts`.
async fn freeze(pid: Option<u32>, lasts: Duration) {
    let pid = pid.expect("a frozen server is running");
    signal(pid, "-STOP");
    tokio::time::sleep(lasts).await;
    signal(pid, "-CONT");
}
