//! The built `coupon-api` and `coupon-consumer` binaries as real processes of a
//! test (so that `kill -9` and SIGTERM are real), with a clean environment, a
//! log file each, and the consumer's operator subcommands run to completion.
//! A binary that is missing or does not start fails the test with the reason
//! and its log tail. A test may keep the secrets in files (`*_FILE`) instead of
//! variables ([`SecretDir`]).

use crate::child::{free_port, has_exited, kill9_child, log_tail, spawn_logged, TempDir};
use crate::client::Client;
use crate::spawn::{Env, ADMIN_TOKEN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `coupon-api` may take to answer `/healthz`.
const START_DEADLINE: Duration = Duration::from_secs(30);

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
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    secret(&mut command, env, "REDIS_URL", &env.redis_url);
    if let Some(urls) = &env.redis_cluster_urls {
        secret(&mut command, env, "REDIS_CLUSTER_URLS", urls);
    }
    secret(&mut command, env, "DATABASE_URL", &env.database_url);
    let tls = &env.redis_tls;
    for (name, file) in [
        ("REDIS_CA_FILE", &tls.redis_ca_file),
        ("REDIS_CLIENT_CERT_FILE", &tls.redis_client_cert_file),
        ("REDIS_CLIENT_KEY_FILE", &tls.redis_client_key_file),
    ] {
        command.envs(file.iter().map(|path| (name, path)));
    }
    command
}

/// Gives the secret `name` its `value`: as the variable, or as a file named in
/// `name`_FILE when the test keeps `env`'s secrets in files.
fn secret(command: &mut Command, env: &Env, name: &str, value: &str) {
    match &env.secret_files {
        Some(dir) => command.env(format!("{name}_FILE"), dir.write(name, value)),
        None => command.env(name, value),
    };
}

/// A directory of secret files, one per variable, as a mounted Kubernetes
/// Secret has them; shared by the clones of an [`Env`].
#[derive(Clone)]
pub struct SecretDir(Arc<TempDir>);

impl SecretDir {
    pub fn new() -> Self {
        Self(Arc::new(TempDir::new("secrets")))
    }

    /// Writes `value` and a newline (as `echo` and editors leave it) to the
    /// file `name`, and returns its path.
    pub fn write(&self, name: &str, value: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Default for SecretDir {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SecretDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretDir({})", self.0.path().display())
    }
}

/// Runs a built binary with `env`'s configuration, `args` and `extra_env` until
/// it exits by itself, which it must within `within` (it is killed otherwise);
/// for `--help` and for start-ups that must fail. Returns its output and how
/// long it ran.
pub async fn run_to_exit(
    name: &str,
    env: &Env,
    args: &[&str],
    extra_env: &[(&str, &str)],
    within: Duration,
) -> (Output, Duration) {
    let mut command = tokio::process::Command::from(binary_command(name, env));
    command
        .args(args)
        .envs(extra_env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(within, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not exit within {within:?}"))
        .unwrap_or_else(|e| panic!("running {name} {args:?}: {e}"));
    (output, started.elapsed())
}

/// A built binary running as a child process, logging to a file, with what the
/// test knows of it besides (`R`: a consumer's name, an API's client), which
/// it derefs to.
pub struct BinProcess<R> {
    pub label: String,
    child: Child,
    dir: TempDir,
    role: R,
}

impl<R> BinProcess<R> {
    fn start(label: &str, command: Command, role: R) -> Self {
        let dir = TempDir::new(label);
        let child = spawn_logged(command, &dir.path().join("out.log"));
        Self {
            label: label.to_string(),
            child,
            dir,
            role,
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

impl<R> std::ops::Deref for BinProcess<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.role
    }
}

impl<R> Drop for BinProcess<R> {
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
            max_deliveries: 5,
            rust_log: "info".into(),
            extra_env: Vec::new(),
        }
    }
}

/// What a test knows of a `coupon-consumer` process besides its controls.
pub struct Consumer {
    /// Its name in the consumer group.
    pub name: String,
    /// The base URL of its `/metrics`, `/healthz` and `/readyz`, when started
    /// with [`ConsumerProcess::spawn_serving`].
    pub ops: Option<String>,
}

/// A `coupon-consumer` process (see [`BinProcess`] for its controls).
pub type ConsumerProcess = BinProcess<Consumer>;

impl BinProcess<Consumer> {
    /// Starts it with its ops server on a port of its own choosing (unknown).
    pub fn spawn(env: &Env, name: &str, options: &ConsumerOptions) -> Self {
        Self::spawn_on(env, name, options, "127.0.0.1:0")
    }

    /// Starts it with its ops server on a free port ([`Consumer::ops`]) and
    /// waits until `/healthz` answers; a port taken in the meantime is retried
    /// with another.
    pub async fn spawn_serving(env: &Env, name: &str, options: &ConsumerOptions) -> Self {
        let http = reqwest::Client::new();
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut consumer = Self::spawn_on(env, name, options, &addr);
            let base = format!("http://{addr}");
            consumer.role.ops = Some(base.clone());
            let deadline = Instant::now() + START_DEADLINE;
            loop {
                if !consumer.is_running() {
                    break;
                }
                let health = http.get(format!("{base}/healthz")).send().await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return consumer;
                }
                assert!(
                    Instant::now() < deadline,
                    "coupon-consumer did not answer /healthz within {START_DEADLINE:?}:\n{}",
                    consumer.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let log = consumer.log();
            assert!(
                log.contains("binding METRICS_ADDR"),
                "coupon-consumer exited:\n{}",
                consumer.log_tail(30)
            );
            eprintln!("consumer {name}: port of {addr} was taken, retrying");
        }
        panic!("consumer {name}: no free port for METRICS_ADDR after 5 attempts");
    }

    fn spawn_on(env: &Env, name: &str, options: &ConsumerOptions, metrics_addr: &str) -> Self {
        let mut command = binary_command("coupon-consumer", env);
        command
            .env("CONSUMER_NAME", name)
            .env("METRICS_ADDR", metrics_addr)
            .env("BATCH_SIZE", options.batch_size.to_string())
            .env("BLOCK_MS", options.block_ms.to_string())
            .env("CLAIM_IDLE_MS", options.claim_idle_ms.to_string())
            .env("MAX_DELIVERIES", options.max_deliveries.to_string())
            .env("RUST_LOG", &options.rust_log)
            .envs(options.extra_env.iter().map(|(k, v)| (k, v)));
        let role = Consumer {
            name: name.to_string(),
            ops: None,
        };
        Self::start(&format!("consumer-{name}"), command, role)
    }
}

/// Runs an operator subcommand of `coupon-consumer` (e.g. `list-dead-letters`)
/// to completion against `env`.
pub async fn consumer_command(env: &Env, args: &[&str]) -> Output {
    operator_command("coupon-consumer", env, args).await
}

/// Runs an operator subcommand of binary `name` (e.g. `coupon-api migrate`)
/// to completion against `env`; it must succeed.
pub async fn operator_command(name: &str, env: &Env, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(binary_command(name, env));
    command.args(args).env("RUST_LOG", "warn").stdin(Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not finish within 30 s"))
        .unwrap_or_else(|e| panic!("running {name} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{name} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What a test knows of a `coupon-api` process besides its controls.
pub struct Api {
    /// A client of it, with the test admin token.
    pub client: Client,
}

/// A `coupon-api` process on a free port (see [`BinProcess`] for its controls).
pub type ApiProcess = BinProcess<Api>;

impl BinProcess<Api> {
    /// Starts it and waits until `/healthz` answers.
    pub async fn spawn(env: &Env) -> Self {
        Self::spawn_with(env, &[]).await
    }

    /// As [`ApiProcess::spawn`], with more variables (e.g. the OTLP exporter's).
    pub async fn spawn_with(env: &Env, extra_env: &[(String, String)]) -> Self {
        let api = Self::launch(env, extra_env).await;
        crate::spawn::randomize_coupon_ids(&env.database_url).await;
        api
    }

    /// Starts it again after a crash: on a database that has its coupons, and
    /// without needing MySQL (which a fault may have taken away meanwhile).
    pub async fn respawn(env: &Env) -> Self {
        Self::launch(env, &[]).await
    }

    async fn launch(env: &Env, extra_env: &[(String, String)]) -> Self {
        let port = free_port();
        let mut command = binary_command("coupon-api", env);
        secret(&mut command, env, "ADMIN_TOKEN", ADMIN_TOKEN);
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .envs(extra_env.iter().map(|(k, v)| (k, v)));
        let client = Client::new(format!("http://127.0.0.1:{port}"), Some(ADMIN_TOKEN.into()));
        let mut api = Self::start("api", command, Api { client });
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            assert!(api.is_running(), "coupon-api exited:\n{}", api.log_tail(30));
            let health = api.client.http.get(format!("{}/healthz", api.client.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return api;
            }
            assert!(
                Instant::now() < deadline,
                "coupon-api did not answer /healthz within {START_DEADLINE:?}:\n{}",
                api.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
