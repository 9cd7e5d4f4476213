//! `coupon-api`'s configuration: the contract's variables, each also a flag,
//! secrets also from files (`*_FILE`).

use clap::{ArgMatches, Args, Parser, Subcommand};
use shared::config::CommonConfig;
use shared::secrets::{self, SecretError};
use std::path::PathBuf;
use std::time::Duration;

/// The HTTP API that accepts coupon issue requests through Redis.
#[derive(Parser, Clone, Debug)]
#[command(name = "coupon-api", version)]
pub struct Cli {
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Flags and environment, then the secrets given as files.
    pub fn load() -> Result<Self, SecretError> {
        let (mut cli, matches) = secrets::parse::<Self>();
        cli.api.read_secret_files(&matches)?;
        Ok(cli)
    }
}

/// Operator commands; without one, the API serves.
#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Create the database if missing and apply pending migrations, then exit
    /// (run it once per release, as a user with DDL rights; the services can
    /// then run with `RUN_MIGRATIONS=false` as a user without).
    Migrate,
}

#[derive(Args, Clone, Debug)]
pub struct ApiConfig {
    /// Where the API listens (`:0` picks a free port; the bound address is logged).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,
    /// Bearer token for admin endpoints; unset means admin endpoints answer 403.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding `ADMIN_TOKEN` (its trailing newline dropped); not with `ADMIN_TOKEN`.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The longest a request may take before it is answered 503 (ms).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 3000)]
    pub request_timeout_ms: u64,
    /// Connections served at once; past it new ones wait in the listen
    /// backlog, so slow or idle clients can not take every socket.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a client may take to send a request's head, or stay idle on a
    /// kept-alive connection, before the connection is closed (ms).
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Where `/metrics` is served instead of the API port (unset: on the API
    /// port), so that it need not be public.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Status long-polls (`?wait=`) this process keeps waiting at once; past
    /// it a long-poll is answered 503 (each holds a connection and a task).
    #[arg(long, env = "STATUS_MAX_WAITERS", default_value_t = 10_000)]
    pub status_max_waiters: usize,
    #[command(flatten)]
    pub common: CommonConfig,
}

impl ApiConfig {
    /// Replaces each secret whose `*_FILE` is set by that file's content.
    pub fn read_secret_files(&mut self, matches: &ArgMatches) -> Result<(), SecretError> {
        let given = secrets::given(matches, "admin_token");
        if let Some(token) = secrets::from_file("ADMIN_TOKEN", given, self.admin_token_file.as_deref())? {
            self.admin_token = Some(token);
        }
        self.common.read_secret_files(matches)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The effective configuration for the start-up log line, secrets masked.
    pub fn summary(&self) -> String {
        let admin_token = if self.admin_token.is_some() { "set" } else { "unset" };
        self.common.summary(&[
            ("listen_addr", &self.listen_addr),
            ("admin_token", &admin_token),
            ("request_timeout_ms", &self.request_timeout_ms),
            ("max_connections", &self.max_connections),
            ("header_read_timeout_ms", &self.header_read_timeout_ms),
            ("metrics_addr", &self.metrics_addr.as_deref().unwrap_or("the API's")),
            ("status_max_waiters", &self.status_max_waiters),
        ])
    }
}
