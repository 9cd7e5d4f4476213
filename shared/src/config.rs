//! Configuration both binaries share, read from the environment or flags (clap),
//! with the contract's variable names and defaults. Secrets may come from files
//! (`*_FILE`, see [`crate::secrets`]); `--help` shows no secret's value.

use crate::keys::Layout;
use crate::secrets::{self, SecretError};
use clap::{ArgMatches, Args};
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

/// Where Redis is and how long to wait for it.
#[derive(Args, Clone, Debug)]
pub struct RedisConfig {
    /// The Redis server (standalone); `rediss://` for TLS.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Redis Cluster seed nodes, comma-separated (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`,
    /// `rediss://` for TLS); when set, the cluster is used and `REDIS_URL` is ignored.
    #[arg(long, env = "REDIS_CLUSTER_URLS", hide_env_values = true)]
    pub redis_cluster_urls: Option<String>,
    #[command(flatten)]
    pub tls: RedisTlsConfig,
    /// How long a Redis command may take before the caller gives up (ms).
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,
    /// Partition streams the issue events are spread over (coupon id mod this);
    /// fixed for a deployment: every process checks it against Redis at start.
    #[arg(long, env = "STREAM_PARTITIONS", default_value_t = Layout::DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(Layout::MAX_PARTITIONS)))]
    pub stream_partitions: u16,
    /// How long a coupon's Redis state (metadata, issued set, failed users)
    /// outlives its issue period before it expires (s); MySQL keeps the truth.
    #[arg(long, env = "COUPON_RETENTION_S", default_value_t = 7 * 24 * 3600)]
    pub coupon_retention_s: u64,
}

impl RedisConfig {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.coupon_retention_s)
    }

    /// How coupons map to partition streams.
    pub fn layout(&self) -> Layout {
        #[allow(clippy::expect_used)]
        Layout::new(u32::from(self.stream_partitions)).expect("clap bounds STREAM_PARTITIONS to the layout's range")
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The cluster's seed nodes, if a cluster is configured.
    pub fn cluster_seeds(&self) -> Option<Vec<String>> {
        let seeds: Vec<String> = self
            .redis_cluster_urls
            .as_deref()?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        (!seeds.is_empty()).then_some(seeds)
    }

    /// Where Redis is, for the start-up log line (passwords masked).
    pub fn describe(&self) -> String {
        match &self.redis_cluster_urls {
            Some(urls) if self.cluster_seeds().is_some() => {
                let masked: Vec<String> = urls.split(',').map(|u| mask_url(u.trim())).collect();
                format!("cluster({})", masked.join(","))
            }
            _ => mask_url(&self.redis_url),
        }
    }
}

/// What a `rediss://` connection trusts and shows besides the URL. Without a CA
/// file the system's roots are trusted; the files are read at start.
#[derive(Args, Clone, Debug, Default)]
pub struct RedisTlsConfig {
    /// PEM file of the CA certificate(s) the Redis server's certificate must chain to
    /// (`rediss://` only; unset: the system's roots).
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for a Redis that asks for one (`tls-auth-clients yes`);
    /// with `REDIS_CLIENT_KEY_FILE`.
    #[arg(long, env = "REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,
    /// PEM private key of `REDIS_CLIENT_CERT_FILE`.
    #[arg(long, env = "REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,
}

/// Where MySQL is and how many connections this instance may hold.
#[derive(Args, Clone, Debug)]
pub struct DatabaseConfig {
    /// MySQL 8 or MariaDB 10.6+; the database is created if missing. TLS through
    /// `?ssl-mode=REQUIRED|VERIFY_CA|VERIFY_IDENTITY&ssl-ca=/path/ca.pem`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/coupon",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Connections in this instance's pool; keep pool × instances below MySQL's
    /// `max_connections` (151 by default).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
    /// Create the database if missing and apply pending migrations at start
    /// (`false`: a DDL-free user runs the service; `migrate` does it apart).
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_migrations: bool,
}

/// OpenTelemetry export, with the variable names the OpenTelemetry spec defines.
#[derive(Args, Clone, Debug)]
pub struct TelemetryConfig {
    /// OTLP collector (for example Jaeger); unset means no trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otel_exporter_otlp_protocol: String,
    /// The service name on spans; defaults to the binary's name.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
}

/// Files the secrets of [`CommonConfig`] may be read from instead of their
/// variables (a mounted Kubernetes Secret, a Compose secret).
#[derive(Args, Clone, Debug, Default)]
pub struct SecretFiles {
    /// A file holding `REDIS_URL` (its trailing newline dropped); not with `REDIS_URL`.
    #[arg(long, env = "REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// A file holding `REDIS_CLUSTER_URLS`; not with `REDIS_CLUSTER_URLS`.
    #[arg(long, env = "REDIS_CLUSTER_URLS_FILE")]
    pub redis_cluster_urls_file: Option<PathBuf>,
    /// A file holding `DATABASE_URL`; not with `DATABASE_URL`.
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
}

/// What both binaries are configured with: Redis, MySQL and trace export.
#[derive(Args, Clone, Debug)]
pub struct CommonConfig {
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    #[command(flatten)]
    pub secret_files: SecretFiles,
}

impl CommonConfig {
    /// Replaces each secret whose `*_FILE` is set by that file's content; `matches`
    /// (from [`secrets::parse`]) tell whether the variable itself was set too.
    pub fn read_secret_files(&mut self, matches: &ArgMatches) -> Result<(), SecretError> {
        let files = &self.secret_files;
        if let Some(url) = secrets::from_file(
            "REDIS_URL",
            secrets::given(matches, "redis_url"),
            files.redis_url_file.as_deref(),
        )? {
            self.redis.redis_url = url;
        }
        if let Some(urls) = secrets::from_file(
            "REDIS_CLUSTER_URLS",
            secrets::given(matches, "redis_cluster_urls"),
            files.redis_cluster_urls_file.as_deref(),
        )? {
            self.redis.redis_cluster_urls = Some(urls);
        }
        if let Some(url) = secrets::from_file(
            "DATABASE_URL",
            secrets::given(matches, "database_url"),
            files.database_url_file.as_deref(),
        )? {
            self.database.database_url = url;
        }
        Ok(())
    }

    /// The effective configuration for the start-up log line: a binary's `own`
    /// settings, then the common ones, as `name=value` pairs with secrets masked.
    pub fn summary(&self, own: &[(&str, &dyn Display)]) -> String {
        let common: [(&str, &dyn Display); 8] = [
            ("redis_url", &self.redis.describe()),
            ("redis_timeout_ms", &self.redis.redis_timeout_ms),
            ("stream_partitions", &self.redis.stream_partitions),
            ("coupon_retention_s", &self.redis.coupon_retention_s),
            ("database_url", &mask_url(&self.database.database_url)),
            ("database_max_connections", &self.database.database_max_connections),
            (
                "otlp_endpoint",
                &self.telemetry.otel_exporter_otlp_endpoint.as_deref().unwrap_or("unset"),
            ),
            ("otlp_protocol", &self.telemetry.otel_exporter_otlp_protocol),
        ];
        let pairs: Vec<String> = own.iter().chain(&common).map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(" ")
    }
}

/// A URL with its password replaced, for the start-up log line.
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_own_then_common_settings_with_secrets_masked() {
        let common = CommonConfig {
            redis: RedisConfig {
                redis_url: "redis://127.0.0.1:6379".into(),
                redis_cluster_urls: None,
                tls: RedisTlsConfig::default(),
                redis_timeout_ms: 1000,
                stream_partitions: 16,
                coupon_retention_s: 604800,
            },
            database: DatabaseConfig {
                database_url: "mysql://root:s3cret@db/coupon".into(),
                database_max_connections: 8,
                run_migrations: true,
            },
            telemetry: TelemetryConfig {
                otel_exporter_otlp_endpoint: None,
                otel_exporter_otlp_protocol: "grpc".into(),
                otel_service_name: None,
            },
            secret_files: SecretFiles::default(),
        };
        let summary = common.summary(&[("listen_addr", &":0"), ("admin_token", &"set")]);
        assert_eq!(
            summary,
            "listen_addr=:0 admin_token=set redis_url=redis://127.0.0.1:6379 redis_timeout_ms=1000 stream_partitions=16 coupon_retention_s=604800 \
             database_url=mysql://root:***@db/coupon database_max_connections=8 otlp_endpoint=unset otlp_protocol=grpc"
        );
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            mask_url("mysql://root:s3cret@db:3306/coupon"),
            "mysql://root:***@db:3306/coupon"
        );
        assert_eq!(mask_url("redis://:pw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(
            mask_url("mysql://root@127.0.0.1/coupon"),
            "mysql://root@127.0.0.1/coupon"
        );
    }
}
