//! Starting the API and consumers in-process for a test, against real servers.

use crate::binaries::SecretDir;
use crate::client::Client;
use crate::servers::PrivateRedis;
use shared::config::{CommonConfig, DatabaseConfig, RedisConfig, RedisTlsConfig, TelemetryConfig};
use sqlx::{MySql, MySqlPool, Transaction};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use verify::mysql::Ledger;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Where one test's data lives.
#[derive(Clone, Debug)]
pub struct Env {
    pub redis_url: String,
    /// Seed nodes when the test runs against a Redis Cluster.
    pub redis_cluster_urls: Option<String>,
    pub database_url: String,
    /// The CA (and client certificate) for a `rediss://` Redis.
    pub redis_tls: RedisTlsConfig,
    /// Where the binaries run as processes find their secrets, when in files
    /// (`*_FILE`) rather than variables.
    pub secret_files: Option<SecretDir>,
    /// The test's own Redis, when it has one; stopped with the last clone.
    redis_server: Option<Arc<OwnRedis>>,
}

/// A private `redis-server` owned by an [`Env`].
struct OwnRedis(PrivateRedis);

impl std::fmt::Debug for OwnRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnRedis({})", self.0.url())
    }
}

impl Env {
    /// A Redis of the test's own and a new database on the shared MariaDB.
    /// Every deployment owns its Redis: the partition streams carry every
    /// coupon's events, so two tests' consumers on one Redis would read each
    /// other's (a private `redis-server` starts in milliseconds).
    pub async fn shared() -> Self {
        let redis = PrivateRedis::start().await;
        let mut env = Self::on(&redis.url(), &crate::mysql_server_url());
        env.redis_server = Some(Arc::new(OwnRedis(redis)));
        env
    }

    /// A new database on `mysql_server`, with Redis at `redis_url`.
    pub fn on(redis_url: &str, mysql_server: &str) -> Self {
        Self {
            redis_url: redis_url.into(),
            redis_cluster_urls: None,
            database_url: format!("{mysql_server}/{}", crate::unique_database()),
            redis_tls: RedisTlsConfig::default(),
            secret_files: None,
            redis_server: None,
        }
    }

    /// A new database on `mysql_server`, with the Redis Cluster of `seeds`.
    pub fn on_cluster(seeds: &[String], mysql_server: &str) -> Self {
        Self {
            redis_cluster_urls: Some(seeds.join(",")),
            ..Self::on(&seeds[0], mysql_server)
        }
    }

    pub fn redis_config(&self) -> RedisConfig {
        RedisConfig {
            redis_url: self.redis_url.clone(),
            redis_cluster_urls: self.redis_cluster_urls.clone(),
            tls: self.redis_tls.clone(),
            redis_timeout_ms: 1000,
            stream_partitions: shared::Layout::DEFAULT_PARTITIONS,
            coupon_retention_s: 7 * 24 * 3600,
        }
    }

    pub fn database_config(&self) -> DatabaseConfig {
        DatabaseConfig {
            database_url: self.database_url.clone(),
            database_max_connections: 8,
            run_migrations: true,
        }
    }

    /// What both binaries share: this Redis and database, no trace export.
    pub fn common_config(&self) -> CommonConfig {
        CommonConfig {
            redis: self.redis_config(),
            database: self.database_config(),
            telemetry: no_telemetry(),
            secret_files: Default::default(),
        }
    }

    pub async fn db(&self) -> MySqlPool {
        MySqlPool::connect(&self.database_url)
            .await
            .expect("connecting to the test database")
    }

    /// The users with a row for `coupon` in the test's database.
    pub async fn mysql_users(&self, coupon: i64) -> HashSet<i64> {
        verify::mysql::user_ids(&self.db().await, coupon, verify::mysql::ALL_USERS)
            .await
            .expect("reading coupon_issues")
    }

    /// Waits until the consumers have written exactly `users` for `coupon`.
    pub async fn until_written(&self, coupon: i64, users: &HashSet<i64>) {
        crate::wait::until(
            Duration::from_secs(60),
            "the consumers to write every accepted user",
            || async { (self.mysql_users(coupon).await == *users).then_some(()) },
        )
        .await;
    }

    /// What the test's database holds for `coupon`: rows, distinct users and
    /// `issued_quantity`.
    pub async fn ledger(&self, coupon: i64) -> Ledger {
        Ledger::read(&self.db().await, coupon)
            .await
            .expect("reading the ledger")
    }

    pub async fn redis(&self) -> redis::aio::ConnectionManager {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        redis::aio::ConnectionManager::new(client)
            .await
            .expect("connecting to the test Redis")
    }

    /// Drops the test's database (best effort).
    pub async fn cleanup(&self) {
        let name = self.database_url.rsplit('/').next().unwrap_or_default().to_string();
        if let Ok(pool) = MySqlPool::connect(&crate::mysql_server_url()).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                .execute(&pool)
                .await;
        }
    }
}

/// Holds `SELECT ... FOR UPDATE` on the coupon's row, as a slow MySQL
/// transaction would: a consumer writing the coupon waits on it until the
/// returned transaction ends.
pub async fn lock_coupon_row(db: &MySqlPool, coupon: i64) -> Transaction<'static, MySql> {
    let mut lock = db.begin().await.unwrap();
    let _: (i64,) = sqlx::query_as("SELECT total_quantity FROM coupons WHERE id = ? FOR UPDATE")
        .bind(coupon)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    lock
}

fn no_telemetry() -> TelemetryConfig {
    TelemetryConfig {
        otel_exporter_otlp_endpoint: None,
        otel_exporter_otlp_protocol: "grpc".into(),
        otel_service_name: None,
    }
}

/// A running API.
pub struct TestApp {
    pub client: Client,
    /// `http://ADDR` of `METRICS_ADDR`, when metrics are served apart.
    pub metrics_base: Option<String>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    /// Stops accepting and waits for in-flight requests, as on SIGTERM.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }

    /// The usual end of a test on the shared servers: [`TestApp::stop`], then
    /// the test's database dropped.
    pub async fn finish(self, env: &Env) {
        self.stop().await;
        env.cleanup().await;
    }
}

/// Builds an API config for `env`; `admin_token: None` disables admin endpoints.
pub fn api_config(env: &Env, admin_token: Option<&str>) -> api::ApiConfig {
    api::ApiConfig {
        listen_addr: "127.0.0.1:0".into(),
        admin_token: admin_token.map(String::from),
        admin_token_file: None,
        request_timeout_ms: 3000,
        max_connections: 10_000,
        header_read_timeout_ms: 10_000,
        metrics_addr: None,
        identity: Default::default(),
        limits: default_limits(),
        live_max_watchers: 5_000,
        live_heartbeat_ms: 15_000,
        redis_wait_replicas: 0,
        redis_wait_timeout_ms: 1000,
        status_max_waiters: 10_000,
        common: env.common_config(),
    }
}

/// The rate limits as the binary sets them when no variable is given.
pub fn default_limits() -> api::config::LimitConfig {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        limits: api::config::LimitConfig,
    }
    <Defaults as clap::Parser>::parse_from(["coupon-api"]).limits
}

/// Starts an API with the admin token set. The first start also moves the
/// coupon ids of the test's database to a random range, so that tests sharing
/// one Redis never touch each other's keys.
pub async fn spawn_app(env: &Env) -> TestApp {
    spawn_app_with(api_config(env, Some(ADMIN_TOKEN))).await
}

/// The usual start of a test: a new database on the shared servers and an API
/// on it (see [`spawn_app`]).
pub async fn spawn_shared_app() -> (Env, TestApp) {
    let env = Env::shared().await;
    let app = spawn_app(&env).await;
    (env, app)
}

/// Moves a fresh database's coupon ids to a random range, so that tests sharing
/// one Redis never touch each other's keys (they are named by coupon id).
pub async fn randomize_coupon_ids(database_url: &str) {
    let pool = MySqlPool::connect(database_url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons")
        .fetch_one(&pool)
        .await
        .unwrap();
    if count == 0 {
        let start = rand::random_range(1_000_000_000i64..4_000_000_000_000_000_000);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE coupons AUTO_INCREMENT = {start}"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
}

pub async fn spawn_app_with(config: api::ApiConfig) -> TestApp {
    let app = start_app(config.clone()).await;
    randomize_coupon_ids(&config.common.database.database_url).await;
    app
}

/// Starts an API as it is, touching nothing in MySQL (which may be down).
pub async fn start_app(config: api::ApiConfig) -> TestApp {
    let app = api::Application::build(&config).await.expect("building the API");
    let addr = app.local_addr().unwrap();
    let metrics_base = app.metrics_addr().map(|addr| format!("http://{}", addr.unwrap()));
    let (stop, mut rx) = watch::channel(false);
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    TestApp {
        client: Client::new(format!("http://{addr}"), config.admin_token.clone()),
        metrics_base,
        stop,
        handle,
    }
}

/// Consumer settings for tests: small batches, short block and claim times.
pub fn consumer_config(env: &Env, name: &str) -> consumer::ConsumerConfig {
    consumer::ConsumerConfig {
        consumer_group: crate::CONSUMER_GROUP.into(),
        consumer_name: Some(name.into()),
        metrics_addr: "127.0.0.1:0".into(),
        batch_size: 64,
        block_ms: 200,
        claim_idle_ms: 1500,
        max_deliveries: 5,
        legacy_scan_ms: 200,
        ready_stall_ms: 30_000,
        live_stall_ms: 60_000,
        common: env.common_config(),
    }
}

/// A running in-process consumer.
pub struct TestConsumer {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl TestConsumer {
    /// Stops it as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("consumer stops")
            .unwrap();
    }

    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }
}

pub async fn spawn_consumer(env: &Env, name: &str) -> TestConsumer {
    spawn_consumer_with(consumer_config(env, name)).await
}

pub async fn spawn_consumer_with(config: consumer::ConsumerConfig) -> TestConsumer {
    let worker = consumer::build(&config).await.expect("building the consumer");
    let (stop, mut rx) = watch::channel(false);
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    TestConsumer { stop, handle }
}
