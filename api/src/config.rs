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
    /// Live counter streams (`GET /coupons/{coupon_id}/live`) served at once
    /// by this instance; past it they answer 503. Each holds a connection:
    /// keep it well below `MAX_CONNECTIONS`, so buyers still get one.
    #[arg(long, env = "LIVE_MAX_WATCHERS", default_value_t = 5_000)]
    pub live_max_watchers: u32,
    /// How often a live stream with nothing new sends a heartbeat (a comment
    /// line), so proxies and clients see it alive (ms).
    #[arg(long, env = "LIVE_HEARTBEAT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub live_heartbeat_ms: u64,
    #[command(flatten)]
    pub identity: IdentityConfig,
    #[command(flatten)]
    pub limits: LimitConfig,
    /// Replicas an acceptance must reach (Redis `WAIT`) before it is answered
    /// 202; 0 answers as soon as the master has it.
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
    /// How long `WAIT` may take before the acceptances it covers are answered
    /// 503 (ms).
    #[arg(long, env = "REDIS_WAIT_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_wait_timeout_ms: u64,
    /// Status long-polls (`?wait=`) this process keeps waiting at once; past
    /// it a long-poll is answered 503 (each holds a connection and a task).
    #[arg(long, env = "STATUS_MAX_WAITERS", default_value_t = 10_000)]
    pub status_max_waiters: usize,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// Verified identity: with one key source set, issue and status requests need
/// a bearer JWT whose `sub` is the user; with none, the caller is trusted.
#[derive(Args, Clone, Debug, Default)]
pub struct IdentityConfig {
    /// The HMAC secret of HS256/384/512 tokens.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// A file holding `AUTH_JWT_SECRET` (its trailing newline dropped).
    #[arg(long, env = "AUTH_JWT_SECRET_FILE")]
    pub auth_jwt_secret_file: Option<PathBuf>,
    /// A PEM public key: RSA (RS256/384/512), EC (ES256/384) or Ed25519 (EdDSA).
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY_FILE")]
    pub auth_jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document; a token's `kid` selects its key.
    #[arg(long, env = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// When set, a token's `iss` must be this.
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,
    /// When set, a token's `aud` must hold this.
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (s).
    #[arg(long, env = "AUTH_JWT_LEEWAY_S", default_value_t = 30)]
    pub auth_jwt_leeway_s: u64,
}

/// The issue endpoint's rate limits (per API instance; see the README).
#[derive(Args, Clone, Debug)]
pub struct LimitConfig {
    /// Issue requests a second one user may make (0: no limit).
    #[arg(long, env = "RATE_LIMIT_USER_PER_S", default_value_t = 5.0, value_parser = non_negative)]
    pub rate_limit_user_per_s: f64,
    /// Issue requests one user may make at once.
    #[arg(long, env = "RATE_LIMIT_USER_BURST", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_user_burst: u32,
    /// Issue requests a second one client address (an IPv6 /64) may make (0: no limit).
    #[arg(long, env = "RATE_LIMIT_IP_PER_S", default_value_t = 0.0, value_parser = non_negative)]
    pub rate_limit_ip_per_s: f64,
    /// Issue requests one client address may make at once (default: its rate a second).
    #[arg(long, env = "RATE_LIMIT_IP_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_ip_burst: Option<u32>,
    /// Users (and, apart, addresses) each limiter remembers at most: its memory
    /// is allocated once for this many.
    #[arg(long, env = "RATE_LIMIT_MAX_KEYS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(64..))]
    pub rate_limit_max_keys: u32,
    /// Proxies (CIDRs or addresses, comma-separated) whose `X-Forwarded-For`
    /// names the client; from any other peer the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::limits::parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("`{text}` is not a number of requests a second (0 or more)")),
    }
}

impl ApiConfig {
    /// Replaces each secret whose `*_FILE` is set by that file's content.
    pub fn read_secret_files(&mut self, matches: &ArgMatches) -> Result<(), SecretError> {
        let given = secrets::given(matches, "admin_token");
        if let Some(token) = secrets::from_file("ADMIN_TOKEN", given, self.admin_token_file.as_deref())? {
            self.admin_token = Some(token);
        }
        let given = secrets::given(matches, "auth_jwt_secret");
        let file = self.identity.auth_jwt_secret_file.as_deref();
        if let Some(secret) = secrets::from_file("AUTH_JWT_SECRET", given, file)? {
            self.identity.auth_jwt_secret = Some(secret);
        }
        self.common.read_secret_files(matches)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `REDIS_WAIT_REPLICAS` and its timeout, if set.
    pub fn durable(&self) -> Option<crate::admission::Durable> {
        (self.redis_wait_replicas > 0).then(|| crate::admission::Durable {
            replicas: self.redis_wait_replicas,
            timeout: Duration::from_millis(self.redis_wait_timeout_ms),
        })
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn live_heartbeat(&self) -> Duration {
        Duration::from_millis(self.live_heartbeat_ms)
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
            ("rate_limit_user_per_s", &self.limits.rate_limit_user_per_s),
            ("rate_limit_user_burst", &self.limits.rate_limit_user_burst),
            ("rate_limit_ip_per_s", &self.limits.rate_limit_ip_per_s),
            ("trusted_proxies", &self.limits.trusted_proxies.len()),
            ("live_max_watchers", &self.live_max_watchers),
            ("live_heartbeat_ms", &self.live_heartbeat_ms),
            ("redis_wait_replicas", &self.redis_wait_replicas),
            ("redis_wait_timeout_ms", &self.redis_wait_timeout_ms),
            ("status_max_waiters", &self.status_max_waiters),
        ])
    }
}
