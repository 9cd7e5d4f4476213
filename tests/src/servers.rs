//! Private servers and real processes for fault tests.
//!
//! Fault tests kill servers with SIGKILL, restart and flush them: they never
//! touch the machine's shared Redis and MariaDB. Each test starts its own
//! `redis-server` and `mariadbd` as child processes on free ports, in temporary
//! directories, and runs the built `coupon-consumer` / `coupon-api` binaries as
//! real processes, so that `kill -9` is real. A server or binary that cannot be
//! started fails the test with the reason and its log tail: nothing is skipped.
//!
//! Temporary directories are removed on drop (kept when `COUPON_KEEP_TEST_DIRS`
//! is set); when a test panics, every log tail is printed first.

use crate::client::Client;
use crate::spawn::{Env, ADMIN_TOKEN};
use sqlx::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was (re)started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("coupon-rush-{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("COUPON_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A port that was free a moment ago (a collision is retried by the callers),
/// below 55535: a cluster node also listens on its port + 10000.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..55_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let clone = file.try_clone().expect("cloning a log file handle");
    (Stdio::from(file), Stdio::from(clone))
}

fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let (out, err) = log_file(log);
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// SIGKILL and reap; a child that already exited is only reaped.
fn kill9_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn has_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// A `redis-server` of one test: AOF with `appendfsync always`, no RDB,
/// `noeviction`, on a free port.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// More `redis-server` arguments (e.g. cluster mode).
    extra_args: Vec<String>,
}

impl PrivateRedis {
    /// Starts it and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`PrivateRedis::start`], with more `redis-server` arguments.
    pub async fn start_with(extra_args: &[&str]) -> Self {
        let mut redis = Self {
            port: 0,
            child: None,
            dir: TempDir::new("redis"),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        for _ in 0..5 {
            redis.port = free_port();
            redis.child = Some(redis.spawn());
            match redis.wait_ready().await {
                Ok(()) => return redis,
                Err(why) if log_tail(&redis.log(), 50).contains("Address already in use") => {
                    eprintln!("private Redis: port {} was taken ({why}), retrying", redis.port);
                    redis.kill9();
                }
                Err(why) => panic!("private Redis did not start: {why}\n{}", log_tail(&redis.log(), 30)),
            }
        }
        panic!("private Redis: no free port after 5 attempts");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new("redis-server");
        command.current_dir(self.dir.path()).args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.dir.path().to_string_lossy(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--daemonize",
            "no",
        ]);
        command.args(&self.extra_args);
        spawn_logged(command, &self.log())
    }

    /// Waits until PING answers PONG (not LOADING), or the process dies.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if self.child.as_mut().is_none_or(has_exited) {
                return Err("redis-server exited".into());
            }
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(err) => last = err,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no PONG within {START_DEADLINE:?}: {last}"))
    }

    async fn ping(&self) -> Result<(), String> {
        let attempt = async {
            let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(pong)) if pong == "PONG" => Ok(()),
            Ok(Ok(other)) => Err(format!("PING answered {other}")),
            Ok(Err(err)) => Err(err),
            Err(_) => Err("PING timed out".into()),
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9_child(&mut child);
        }
    }

    /// Starts it again on the same port and directory, so the AOF is replayed.
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Some(self.spawn());
        if let Err(why) = self.wait_ready().await {
            panic!("private Redis did not restart: {why}\n{}", log_tail(&self.log(), 30));
        }
    }

    pub async fn flushall(&self) {
        let client = redis::Client::open(self.url()).expect("the private Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the private Redis");
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- private Redis log tail ---\n{}", log_tail(&self.log(), 20));
        }
        self.kill9();
    }
}

/// A `mariadbd` of one test, installed into a fresh data directory, with `root`
/// and no password over TCP.
pub struct PrivateMariaDb {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl PrivateMariaDb {
    /// Installs a data directory, starts the server and waits until `SELECT 1`
    /// works over TCP as root. Takes a few seconds (mostly the install).
    pub async fn start() -> Self {
        let started = Instant::now();
        let dir = TempDir::new("mariadb");
        install_mariadb(dir.path()).await;
        let installed = started.elapsed();
        let mut maria = Self {
            port: 0,
            child: None,
            dir,
        };
        for _ in 0..5 {
            maria.port = free_port();
            maria.child = Some(maria.spawn());
            match maria.wait_ready().await {
                Ok(()) => {
                    eprintln!(
                        "private MariaDB on port {}: installed in {installed:?}, up after {:?}",
                        maria.port,
                        started.elapsed()
                    );
                    return maria;
                }
                Err(why) if log_tail(&maria.log(), 50).contains("Address already in use") => {
                    eprintln!("private MariaDB: port {} was taken ({why}), retrying", maria.port);
                    maria.kill9();
                }
                Err(why) => panic!("private MariaDB did not start: {why}\n{}", log_tail(&maria.log(), 30)),
            }
        }
        panic!("private MariaDB: no free port after 5 attempts");
    }

    /// The server URL without a database, for [`Env::on`].
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("mariadb.err")
    }

    fn spawn(&self) -> Child {
        let dir = self.dir.path().to_string_lossy();
        let mut command = Command::new("/usr/sbin/mariadbd");
        command.current_dir(self.dir.path()).args([
            "--no-defaults".to_string(),
            format!("--datadir={dir}/data"),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={dir}/mysqld.sock"),
            format!("--pid-file={dir}/mysqld.pid"),
            format!("--log-error={dir}/mariadb.err"),
            "--innodb-buffer-pool-size=64M".into(),
            "--skip-log-bin".into(),
            "--max-connections=300".into(),
            "--user=root".into(),
        ]);
        spawn_logged(command, &self.dir.path().join("mariadbd.out"))
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if self.child.as_mut().is_none_or(has_exited) {
                return Err("mariadbd exited".into());
            }
            match tokio::time::timeout(Duration::from_secs(2), select_one(&self.server_url())).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => last = err.to_string(),
                Err(_) => last = "SELECT 1 timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("SELECT 1 did not work within {START_DEADLINE:?}: {last}"))
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9_child(&mut child);
        }
    }

    /// Starts it again on the same port and data directory (crash recovery).
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Some(self.spawn());
        if let Err(why) = self.wait_ready().await {
            panic!("private MariaDB did not restart: {why}\n{}", log_tail(&self.log(), 30));
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- private MariaDB log tail ---\n{}", log_tail(&self.log(), 20));
        }
        self.kill9();
    }
}

async fn select_one(server_url: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::MySqlConnection::connect(server_url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    conn.close().await
}

async fn install_mariadb(dir: &Path) {
    let output = tokio::process::Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}/data", dir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--user=root")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running mariadb-install-db (is MariaDB installed?): {e}"));
    assert!(
        output.status.success(),
        "mariadb-install-db failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where the built binaries are: `COUPON_BIN_DIR`, else the workspace's
/// `target/debug` (`cargo build --workspace --bins` runs before the tests).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("COUPON_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

/// The path of a built binary; panics with what to run when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (or set COUPON_BIN_DIR)",
        path.display()
    );
    path
}

/// A command for a built binary with a clean environment: only what is given.
fn binary_command(name: &str, env: &Env) -> Command {
    let mut command = Command::new(binary(name));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_URL", &env.redis_url)
        .envs(env.redis_cluster_urls.iter().map(|urls| ("REDIS_CLUSTER_URLS", urls)))
        .env("DATABASE_URL", &env.database_url);
    command
}

/// A built binary running as a child process, logging to a file.
pub struct BinProcess {
    pub label: String,
    child: Child,
    dir: TempDir,
}

impl BinProcess {
    fn spawn(label: &str, command: Command) -> Self {
        let dir = TempDir::new(label);
        let child = spawn_logged(command, &dir.path().join("out.log"));
        Self {
            label: label.to_string(),
            child,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.path().join("out.log"), lines)
    }

    pub fn is_running(&mut self) -> bool {
        !has_exited(&mut self.child)
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        kill9_child(&mut self.child);
    }

    /// Sends SIGTERM and waits up to `within` for the exit; returns the status
    /// and how long the exit took. Panics (after SIGKILL) if it did not exit.
    pub async fn sigterm(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        while started.elapsed() < within {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9();
        panic!(
            "{} did not exit within {within:?} of SIGTERM\n{}",
            self.label,
            self.log_tail(30)
        );
    }
}

impl Drop for BinProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log tail ---\n{}", self.label, self.log_tail(20));
        }
        self.kill9();
    }
}

/// The consumer's tunables, as environment variables; short times for tests.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub batch_size: u32,
    pub block_ms: u64,
    pub claim_idle_ms: u64,
    pub refresh_ms: u64,
    pub max_deliveries: u64,
    pub rust_log: String,
    /// More variables, e.g. the OpenTelemetry exporter's.
    pub extra_env: Vec<(String, String)>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            block_ms: 200,
            claim_idle_ms: 1500,
            refresh_ms: 200,
            max_deliveries: 5,
            rust_log: "info".into(),
            extra_env: Vec::new(),
        }
    }
}

/// A `coupon-consumer` process (see [`BinProcess`] for its controls).
pub struct ConsumerProcess {
    pub name: String,
    pub process: BinProcess,
}

impl ConsumerProcess {
    pub fn spawn(env: &Env, name: &str, options: &ConsumerOptions) -> Self {
        let mut command = binary_command("coupon-consumer", env);
        command
            .env("CONSUMER_NAME", name)
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("BATCH_SIZE", options.batch_size.to_string())
            .env("BLOCK_MS", options.block_ms.to_string())
            .env("CLAIM_IDLE_MS", options.claim_idle_ms.to_string())
            .env("REFRESH_MS", options.refresh_ms.to_string())
            .env("MAX_DELIVERIES", options.max_deliveries.to_string())
            .env("RUST_LOG", &options.rust_log)
            .envs(options.extra_env.iter().map(|(k, v)| (k, v)));
        Self {
            name: name.to_string(),
            process: BinProcess::spawn(&format!("consumer-{name}"), command),
        }
    }
}

impl std::ops::Deref for ConsumerProcess {
    type Target = BinProcess;
    fn deref(&self) -> &BinProcess {
        &self.process
    }
}

impl std::ops::DerefMut for ConsumerProcess {
    fn deref_mut(&mut self) -> &mut BinProcess {
        &mut self.process
    }
}

/// Runs an operator subcommand of `coupon-consumer` (e.g. `list-dead-letters`)
/// to completion against `env`.
pub async fn consumer_command(env: &Env, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(binary_command("coupon-consumer", env));
    command.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("coupon-consumer {args:?} did not finish within 30 s"))
        .unwrap_or_else(|e| panic!("running coupon-consumer {args:?}: {e}"));
    assert!(
        output.status.success(),
        "coupon-consumer {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `coupon-api` process on a free port, with the test admin token.
pub struct ApiProcess {
    pub client: Client,
    pub process: BinProcess,
}

impl ApiProcess {
    /// Starts it and waits until `/healthz` answers.
    pub async fn spawn(env: &Env) -> Self {
        Self::spawn_with(env, &[]).await
    }

    /// As [`ApiProcess::spawn`], with more variables (e.g. the OTLP exporter's).
    pub async fn spawn_with(env: &Env, extra_env: &[(String, String)]) -> Self {
        let port = free_port();
        let mut command = binary_command("coupon-api", env);
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().map(|(k, v)| (k, v)));
        let mut api = Self {
            client: Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN.into())),
            process: BinProcess::spawn("api", command),
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            assert!(
                api.process.is_running(),
                "coupon-api exited:\n{}",
                api.process.log_tail(30)
            );
            let health = api.client.http.get(format!("{}/healthz", api.client.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                crate::spawn::randomize_coupon_ids(&env.database_url).await;
                return api;
            }
            assert!(
                Instant::now() < deadline,
                "coupon-api did not answer /healthz within {START_DEADLINE:?}:\n{}",
                api.process.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl std::ops::Deref for ApiProcess {
    type Target = BinProcess;
    fn deref(&self) -> &BinProcess {
        &self.process
    }
}

impl std::ops::DerefMut for ApiProcess {
    fn deref_mut(&mut self) -> &mut BinProcess {
        &mut self.process
    }
}
