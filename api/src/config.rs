//! `coupon-api`'s configuration: the contract's variables, each also a flag.

use clap::Parser;
use shared::config::{mask_url, DatabaseConfig, RedisConfig, TelemetryConfig};
use std::time::Duration;

/// The HTTP API that accepts coupon issue requests through Redis.
#[derive(Parser, Clone, Debug)]
#[command(name = "coupon-api", version)]
pub struct ApiConfig {
    /// Where the API listens (`:0` picks a free port; the bound address is logged).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,
    /// Bearer token for admin endpoints; unset means admin endpoints answer 403.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The longest a request may take before it is answered 503 (ms).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 3000)]
    pub request_timeout_ms: u64,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl ApiConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The effective configuration for the start-up log line, secrets masked.
    pub fn summary(&self) -> String {
        format!(
            "listen_addr={} admin_token={} request_timeout_ms={} redis_url={} redis_timeout_ms={} database_url={} database_max_connections={} otlp_endpoint={} otlp_protocol={}",
            self.listen_addr,
            if self.admin_token.is_some() { "set" } else { "unset" },
            self.request_timeout_ms,
            self.redis.describe(),
            self.redis.redis_timeout_ms,
            mask_url(&self.database.database_url),
            self.database.database_max_connections,
            self.telemetry.otel_exporter_otlp_endpoint.as_deref().unwrap_or("unset"),
            self.telemetry.otel_exporter_otlp_protocol,
        )
    }
}
