//! Private `redis-server` and `mariadbd` processes for fault tests.
//!
//! Fault tests kill servers with SIGKILL, restart and flush them: they never
//! touch the machine's shared Redis and MariaDB. Each test starts its own
//! servers as child processes on free ports, in temporary directories. One
//! [`PrivateServer`] does the starting, the restarts on the same port and data,
//! and the clean-up for both; a [`Server`] says what differs: the program and
//! its arguments, where it logs, and the query that says it is ready. A server
//! that cannot be started fails the test with the reason and its log tail:
//! nothing is skipped.
//!
//! Temporary directories are removed on drop (kept when `COUPON_KEEP_TEST_DIRS`
//! is set); when a test panics, every log tail is printed first.
//!
//! Either server can also be started with TLS only ([`ServerTls`]): Redis on a
//! TLS port and no plain one, MariaDB with `require_secure_transport`.

use crate::child::{free_port, has_exited, kill9_child, log_tail, spawn_logged, TempDir};
use crate::pki::ServerTls;
use sqlx::Connection;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was (re)started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What differs from one kind of private server to another.
pub trait Server {
    /// For messages: `Redis`, `MariaDB`.
    const NAME: &'static str;
    /// The file in its directory the server logs to ("Address already in use"
    /// is looked for there).
    const LOG: &'static str;
    /// The file in its directory its stdout and stderr go to.
    const OUT: &'static str;

    /// Its URL on `port` (for MariaDB, the server without a database).
    fn url(&self, port: u16) -> String;
    /// The command that runs it on `port` with its data in `dir`.
    fn command(&self, port: u16, dir: &Path) -> Command;
    /// One attempt, with its own timeout, at the query that says it is ready.
    fn probe(&self, url: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// A server process of one test, on a free port, in its own directory.
pub struct PrivateServer<S: Server> {
    server: S,
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

/// A `redis-server`: AOF with `appendfsync always`, no RDB, `noeviction`.
pub type PrivateRedis = PrivateServer<Redis>;
/// A `mariadbd` installed into a fresh data directory, `root` without a
/// password over TCP.
pub type PrivateMariaDb = PrivateServer<MariaDb>;

impl<S: Server> PrivateServer<S> {
    /// Starts `server` in `dir` and waits until it is ready; a port taken in
    /// the meantime is retried with another.
    async fn launch(server: S, dir: TempDir) -> Self {
        let mut process = Self {
            server,
            port: 0,
            child: None,
            dir,
        };
        for _ in 0..5 {
            process.port = free_port();
            process.child = Some(process.spawn());
            match process.wait_ready().await {
                Ok(()) => return process,
                Err(why) if log_tail(&process.log(), 50).contains("Address already in use") => {
                    eprintln!("private {}: port {} was taken ({why}), retrying", S::NAME, process.port);
                    process.kill9();
                }
                Err(why) => panic!("private {} did not start: {why}\n{}", S::NAME, process.log_tail()),
            }
        }
        panic!("private {}: no free port after 5 attempts", S::NAME);
    }

    pub fn url(&self) -> String {
        self.server.url(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join(S::LOG)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log(), 30)
    }

    fn spawn(&self) -> Child {
        let command = self.server.command(self.port, self.dir.path());
        spawn_logged(command, &self.dir.path().join(S::OUT))
    }

    /// Waits until the probe answers, or the process dies.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if self.child.as_mut().is_none_or(has_exited) {
                return Err(format!("the {} process exited", S::NAME));
            }
            match self.server.probe(&self.url()).await {
                Ok(()) => return Ok(()),
                Err(err) => last = err,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready within {START_DEADLINE:?}: {last}"))
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9_child(&mut child);
        }
    }

    /// Starts it again on the same port and directory, so that it recovers
    /// what it had (Redis replays its AOF, MariaDB its redo log).
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Some(self.spawn());
        if let Err(why) = self.wait_ready().await {
            panic!("private {} did not restart: {why}\n{}", S::NAME, self.log_tail());
        }
    }
}

impl<S: Server> Drop for PrivateServer<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- private {} log tail ---\n{}", S::NAME, log_tail(&self.log(), 20));
        }
        self.kill9();
    }
}

/// `redis-server`, with more arguments if asked (e.g. cluster mode), on a TLS
/// port only if given [`ServerTls`].
pub struct Redis {
    extra_args: Vec<String>,
    tls: Option<ServerTls>,
}

impl Redis {
    /// A client of it, trusting the test's CA when it has TLS.
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            Some(tls) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&tls.ca)?),
                },
            ),
            None => redis::Client::open(url),
        }
    }
}

impl Server for Redis {
    const NAME: &'static str = "Redis";
    const LOG: &'static str = "redis.log";
    const OUT: &'static str = "redis.log";

    fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{port}")
    }

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut command = Command::new("redis-server");
        let port = port.to_string();
        let (plain_port, tls_port) = match self.tls {
            Some(_) => ("0", port.as_str()),
            None => (port.as_str(), "0"),
        };
        command.current_dir(dir).args([
            "--port",
            plain_port,
            "--tls-port",
            tls_port,
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.to_string_lossy(),
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
        if let Some(tls) = &self.tls {
            // Clients are not asked for a certificate; the CA is for the peers
            // of a cluster (`--tls-cluster`), which do present one.
            command
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        command.args(&self.extra_args);
        command
    }

    /// PING answering PONG (not LOADING).
    async fn probe(&self, url: &str) -> Result<(), String> {
        let attempt = async {
            let client = self.client(url).map_err(|e| e.to_string())?;
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
}

impl PrivateServer<Redis> {
    /// Starts it and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// As [`PrivateRedis::start`], with more `redis-server` arguments.
    pub async fn start_with(extra_args: &[&str]) -> Self {
        Self::start_configured(extra_args, None).await
    }

    /// As [`PrivateRedis::start`], on a TLS port only (a `rediss://` URL).
    pub async fn start_tls(tls: &ServerTls) -> Self {
        Self::start_configured(&[], Some(tls)).await
    }

    /// With more `redis-server` arguments, and TLS only if given `tls`.
    pub async fn start_configured(extra_args: &[&str], tls: Option<&ServerTls>) -> Self {
        let redis = Redis {
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            tls: tls.cloned(),
        };
        Self::launch(redis, TempDir::new("redis")).await
    }

    /// A replica of `master` (plain, no TLS), once its link to the master is up.
    pub async fn start_replica_of(master: &PrivateRedis) -> Self {
        let port = master.port().to_string();
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &port]).await;
        replica.wait_linked().await;
        replica
    }

    /// Waits until this replica's link to its master is up (after a start or
    /// a restart).
    pub async fn wait_linked(&self) {
        let conn = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("the private replica");
        crate::wait::until(Duration::from_secs(10), "the replica's link to its master", || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                info.contains("master_link_status:up").then_some(())
            }
        })
        .await;
    }

    /// A client of it (trusting the test's CA when it has TLS).
    pub fn client(&self) -> redis::Client {
        self.server.client(&self.url()).expect("the private Redis URL")
    }

    pub async fn flushall(&self) {
        let client = self.client();
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the private Redis");
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");
    }
}

/// How many times Redis ran each of `commands` (lower case, as `INFO
/// commandstats` names them) since it started, in total: on a test's own
/// Redis, what the code under test cost it.
pub async fn command_calls(redis: &mut impl redis::aio::ConnectionLike, commands: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    let calls = |command: &str| -> u64 {
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    commands.iter().map(|command| calls(command)).sum()
}

/// `mariadbd` on a data directory that `mariadb-install-db` made; with
/// [`ServerTls`], TLS and nothing else (`require_secure_transport`).
pub struct MariaDb {
    tls: Option<ServerTls>,
}

impl Server for MariaDb {
    const NAME: &'static str = "MariaDB";
    const LOG: &'static str = "mariadb.err";
    const OUT: &'static str = "mariadbd.out";

    fn url(&self, port: u16) -> String {
        format!("mysql://root@127.0.0.1:{port}")
    }

    fn command(&self, port: u16, dir: &Path) -> Command {
        let dir_text = dir.to_string_lossy();
        let mut command = Command::new("/usr/sbin/mariadbd");
        command.current_dir(dir).args([
            "--no-defaults".to_string(),
            format!("--datadir={dir_text}/data"),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={dir_text}/mysqld.sock"),
            format!("--pid-file={dir_text}/mysqld.pid"),
            format!("--log-error={dir_text}/{}", Self::LOG),
            "--innodb-buffer-pool-size=64M".into(),
            "--skip-log-bin".into(),
            "--max-connections=300".into(),
            "--user=root".into(),
            format!("--tmpdir={}", private_tmpdir(dir).display()),
        ]);
        if let Some(tls) = &self.tls {
            command.args([
                format!("--ssl-cert={}", tls.cert.display()),
                format!("--ssl-key={}", tls.key.display()),
                format!("--ssl-ca={}", tls.ca.display()),
                "--require-secure-transport=ON".into(),
            ]);
        }
        command
    }

    /// `SELECT 1` over TCP as root (over TLS when the server has it: sqlx's
    /// default `ssl-mode` is PREFERRED).
    async fn probe(&self, url: &str) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(2), select_one(url)).await {
            Ok(result) => result.map_err(|err| err.to_string()),
            Err(_) => Err("SELECT 1 timed out".into()),
        }
    }
}

impl PrivateServer<MariaDb> {
    /// Installs a data directory, starts the server and waits until `SELECT 1`
    /// works over TCP as root. Takes a few seconds (mostly the install).
    pub async fn start() -> Self {
        Self::start_configured(None).await
    }

    /// As [`PrivateMariaDb::start`], refusing every connection without TLS.
    pub async fn start_tls(tls: &ServerTls) -> Self {
        Self::start_configured(Some(tls)).await
    }

    async fn start_configured(tls: Option<&ServerTls>) -> Self {
        let started = Instant::now();
        let dir = TempDir::new("mariadb");
        install_mariadb(dir.path()).await;
        let installed = started.elapsed();
        let maria = Self::launch(MariaDb { tls: tls.cloned() }, dir).await;
        eprintln!(
            "private MariaDB on port {}: installed in {installed:?}, up after {:?}",
            maria.port,
            started.elapsed()
        );
        maria
    }
}

async fn select_one(server_url: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::MySqlConnection::connect(server_url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    conn.close().await
}

/// A temporary directory of the server's own. MariaDB deletes every `#sql*`
/// file in its tmpdir when it starts, so servers sharing /tmp delete the temp
/// tables of one still installing (`mariadb-install-db` failed with "Unknown
/// table 'mysql.tmp_user_socket'" when tests started servers at once).
fn private_tmpdir(dir: &Path) -> PathBuf {
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    tmp
}

async fn install_mariadb(dir: &Path) {
    let output = tokio::process::Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}/data", dir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--user=root")
        // The bootstrap server reads TMPDIR for its tmpdir.
        .env("TMPDIR", private_tmpdir(dir))
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
