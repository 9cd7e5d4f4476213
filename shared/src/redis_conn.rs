//! Redis connections: one type for a standalone server (an auto-reconnecting
//! multiplexed `ConnectionManager`) and a Redis Cluster (redis-rs's async cluster
//! client, which follows MOVED/ASK and fail-overs), both with bounded timeouts so
//! an outage becomes a fast error instead of a hung request; TLS (rustls) for
//! `rediss://` URLs, with the CA and client certificate of `REDIS_*_FILE`.

use crate::config::{RedisConfig, RedisTlsConfig};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ClientTlsConfig, Cmd, Pipeline, RedisFuture, TlsCertificates, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connection to standalone Redis or to a Redis Cluster. Cheap to clone: the
/// clones share the underlying multiplexed connection(s).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether commands go to a cluster, where every multi-key command must stay
    /// in one slot (all keys of a coupon share its hash tag).
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Why Redis could not be connected to.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnectError {
    #[error("reading {variable} ({path}): {source}", path = path.display())]
    ReadFile {
        variable: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE go together: set both or neither")]
    HalfClientCertificate,
    #[error(
        "REDIS_CA_FILE or REDIS_CLIENT_CERT_FILE is set but {variable} is not a `rediss://` URL: \
         TLS files need a TLS connection"
    )]
    TlsFilesWithoutTls { variable: &'static str },
    #[error("REDIS_CLUSTER_URLS mixes `rediss://` and `redis://` seeds: all or none use TLS")]
    MixedSeeds,
    /// The TLS handshake failed: an untrusted or unfit certificate, or a server
    /// without TLS. Waiting does not cure it, so it is never retried.
    #[error(
        "TLS with Redis failed (is the server's certificate issued by the CA of REDIS_CA_FILE, or \
         by a system root, for the host in the URL?): {0}"
    )]
    Tls(redis::RedisError),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl RedisConnectError {
    /// Whether waiting for Redis can cure it: only a connection that failed for
    /// another reason than TLS or the configuration.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RedisConnectError::Redis(_))
    }

    /// A connection error, as [`RedisConnectError::Tls`] when TLS is the cause.
    fn classify(err: redis::RedisError) -> Self {
        if crate::tls::is_tls_failure(&err) {
            RedisConnectError::Tls(err)
        } else {
            RedisConnectError::Redis(err)
        }
    }
}

fn is_tls_url(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// What to connect to, checked and with its TLS files read once, before any
/// attempt: a bad configuration fails at once instead of being retried.
enum Target {
    Single(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// The first seed on its own, to try the TLS handshake with first: the
        /// cluster client keeps only the text of a failed connection's cause.
        tls_probe: Option<redis::Client>,
    },
}

impl Target {
    fn new(config: &RedisConfig, response_timeout: Duration) -> Result<Self, RedisConnectError> {
        crate::tls::install_crypto_provider();
        let certificates = tls_certificates(&config.tls)?;
        if let Some(seeds) = config.cluster_seeds() {
            let tls = seeds.iter().filter(|seed| is_tls_url(seed)).count();
            if tls != 0 && tls != seeds.len() {
                return Err(RedisConnectError::MixedSeeds);
            }
            let mut builder = ClusterClientBuilder::new(seeds.clone())
                .connection_timeout(config.timeout())
                .response_timeout(response_timeout)
                .retries(3)
                .max_retry_wait(500);
            let tls_probe = match (tls, certificates) {
                (0, Some(_)) => {
                    return Err(RedisConnectError::TlsFilesWithoutTls {
                        variable: "REDIS_CLUSTER_URLS",
                    })
                }
                (0, None) => None,
                (_, Some(certificates)) => {
                    builder = builder.certs(certificates.clone());
                    Some(redis::Client::build_with_tls(seeds[0].as_str(), certificates)?)
                }
                (_, None) => Some(redis::Client::open(seeds[0].as_str())?),
            };
            let client = Box::new(builder.build()?);
            return Ok(Target::Cluster { client, tls_probe });
        }
        let url = config.redis_url.as_str();
        let client = match certificates {
            Some(_) if !is_tls_url(url) => return Err(RedisConnectError::TlsFilesWithoutTls { variable: "REDIS_URL" }),
            Some(certificates) => redis::Client::build_with_tls(url, certificates)?,
            None => redis::Client::open(url)?,
        };
        Ok(Target::Single(client))
    }

    async fn connect(&self, config: &RedisConfig, response_timeout: Duration) -> Result<RedisConn, RedisConnectError> {
        match self {
            Target::Cluster { client, tls_probe } => {
                if let Some(probe) = tls_probe {
                    let probe_config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.timeout()))
                        .set_response_timeout(Some(config.timeout()));
                    // Only a TLS failure counts here: the cluster may well be
                    // reachable through another seed.
                    if let Err(err) = probe.get_multiplexed_async_connection_with_config(&probe_config).await {
                        if crate::tls::is_tls_failure(&err) {
                            return Err(RedisConnectError::Tls(err));
                        }
                    }
                }
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(RedisConnectError::classify)?;
                Ok(RedisConn::Cluster(connection))
            }
            Target::Single(client) => {
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout()))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_with_config(client.clone(), manager_config)
                    .await
                    .map_err(RedisConnectError::classify)?;
                Ok(RedisConn::Single(manager))
            }
        }
    }
}

/// The CA and client certificate of `REDIS_CA_FILE` and `REDIS_CLIENT_*_FILE`,
/// read; `None` when none is set (a `rediss://` URL then trusts the system's roots).
fn tls_certificates(tls: &RedisTlsConfig) -> Result<Option<TlsCertificates>, RedisConnectError> {
    let read = |variable: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| RedisConnectError::ReadFile {
            variable,
            path: path.to_path_buf(),
            source,
        })
    };
    let root_cert = tls
        .redis_ca_file
        .as_deref()
        .map(|path| read("REDIS_CA_FILE", path))
        .transpose()?;
    let client_tls = match (&tls.redis_client_cert_file, &tls.redis_client_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("REDIS_CLIENT_CERT_FILE", cert)?,
            client_key: read("REDIS_CLIENT_KEY_FILE", key)?,
        }),
        (None, None) => None,
        _ => return Err(RedisConnectError::HalfClientCertificate),
    };
    Ok((root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates { client_tls, root_cert }))
}

/// Connects to the cluster when `REDIS_CLUSTER_URLS` is set, else to `REDIS_URL`,
/// over TLS for `rediss://` URLs. A standalone connection reconnects in the
/// background; the command that met the dead connection fails and is the
/// caller's to retry.
pub async fn connect(config: &RedisConfig, response_timeout: Duration) -> Result<RedisConn, RedisConnectError> {
    Target::new(config, response_timeout)?
        .connect(config, response_timeout)
        .await
}

/// Clients for pub/sub connections: one for `REDIS_URL`, or one per seed of
/// `REDIS_CLUSTER_URLS` (a cluster forwards every `PUBLISH` to all its nodes,
/// so any one node hears them; the next seed serves when one is down).
pub fn pubsub_clients(config: &RedisConfig) -> Result<Vec<redis::Client>, RedisConnectError> {
    crate::tls::install_crypto_provider();
    let certificates = tls_certificates(&config.tls)?;
    let urls = config.cluster_seeds().unwrap_or_else(|| vec![config.redis_url.clone()]);
    urls.iter()
        .map(|url| match &certificates {
            Some(certificates) if is_tls_url(url) => {
                Ok(redis::Client::build_with_tls(url.as_str(), certificates.clone())?)
            }
            _ => Ok(redis::Client::open(url.as_str())?),
        })
        .collect()
}

/// Connects, retrying until `wait` has passed, for start-up while Redis comes up;
/// a configuration or TLS error fails at once.
pub async fn connect_with_wait(
    config: &RedisConfig,
    response_timeout: Duration,
    wait: Duration,
) -> Result<RedisConn, RedisConnectError> {
    let target = Target::new(config, response_timeout)?;
    crate::retry::until_permanent(
        wait,
        "Redis",
        || target.connect(config, response_timeout),
        RedisConnectError::is_permanent,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, cluster: Option<&str>, tls: RedisTlsConfig) -> RedisConfig {
        RedisConfig {
            redis_url: url.into(),
            redis_cluster_urls: cluster.map(String::from),
            tls,
            redis_timeout_ms: 1000,
            stream_partitions: crate::Layout::DEFAULT_PARTITIONS,
            coupon_retention_s: 60,
        }
    }

    fn ca_file() -> RedisTlsConfig {
        // Cargo.toml: any readable file does, the content is parsed at connect.
        RedisTlsConfig {
            redis_ca_file: Some(PathBuf::from(env!("CARGO_MANIFEST_PATH"))),
            ..RedisTlsConfig::default()
        }
    }

    fn error(config: &RedisConfig) -> RedisConnectError {
        match Target::new(config, Duration::from_secs(1)) {
            Ok(_) => panic!("accepted"),
            Err(err) => err,
        }
    }

    #[test]
    fn tls_files_without_a_rediss_url_are_refused_before_connecting() {
        let err = error(&config("redis://127.0.0.1:6379", None, ca_file()));
        assert!(
            matches!(err, RedisConnectError::TlsFilesWithoutTls { variable: "REDIS_URL" }),
            "{err}"
        );
        assert!(err.is_permanent());
        let err = error(&config(
            "",
            Some("redis://127.0.0.1:7000,redis://127.0.0.1:7001"),
            ca_file(),
        ));
        assert!(matches!(
            err,
            RedisConnectError::TlsFilesWithoutTls {
                variable: "REDIS_CLUSTER_URLS"
            }
        ));
    }

    #[test]
    fn seeds_all_use_tls_or_none_do() {
        let err = error(&config(
            "",
            Some("rediss://127.0.0.1:7000,redis://127.0.0.1:7001"),
            ca_file(),
        ));
        assert!(matches!(err, RedisConnectError::MixedSeeds), "{err}");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_a_missing_file_is_named() {
        let half = RedisTlsConfig {
            redis_client_cert_file: Some(PathBuf::from(env!("CARGO_MANIFEST_PATH"))),
            ..RedisTlsConfig::default()
        };
        let err = error(&config("rediss://127.0.0.1:6379", None, half));
        assert!(matches!(err, RedisConnectError::HalfClientCertificate), "{err}");
        let missing = RedisTlsConfig {
            redis_ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..RedisTlsConfig::default()
        };
        let err = error(&config("rediss://127.0.0.1:6379", None, missing));
        assert!(
            err.to_string()
                .starts_with("reading REDIS_CA_FILE (/nonexistent/ca.pem): "),
            "{err}"
        );
    }
}
