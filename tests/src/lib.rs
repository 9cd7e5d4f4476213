//! Test harness for coupon-rush's integration tests: every test gets its own
//! MySQL database (random coupon ids, so tests sharing a Redis never meet) and
//! talks to real Redis and MariaDB servers. Nothing is mocked.
//!
//! # Layout
//! - [`spawn`]: the API and consumers, in-process, on free ports.
//! - [`client`]: a small HTTP client for the contract's endpoints.
//! - [`otlp`]: a real OTLP/HTTP receiver that decodes exported spans.
//! - [`repo_files`]: the repository's own files, for the deployment-file checks.
//! - [`scrape`]: reading a `/metrics` answer.
//! - [`sse`]: reading a Server-Sent Events stream (the live counter).
//! - [`cluster`]: a private three-master Redis Cluster with one replica.
//! - [`servers`]: private `redis-server` / `mariadbd` processes for fault and TLS tests.
//! - [`pki`]: a test's own CA and server certificate (and a wrong CA), as PEM files.
//! - [`binaries`]: the built `coupon-api` / `coupon-consumer` as real processes.
//! - [`child`]: what every child process needs: a directory, a port, a log.
//! - [`wait`]: polling for a condition with a deadline (never a bare sleep).
//! - [`checks`]: a sale's guarantees as assertions, on the `verify` crate.
//! - [`chaos`]: randomized fault schedules and the invariants they must keep.
//! - [`chromium`]: a page rendered by headless Chromium, offline: screenshot, DOM, page errors.

pub mod binaries;
pub mod chaos;
pub mod checks;
pub mod child;
pub mod chromium;
pub mod client;
pub mod cluster;
pub mod otlp;
pub mod pki;
pub mod repo_files;
pub mod scrape;
pub mod servers;
pub mod spawn;
pub mod sse;
pub mod wait;

use shared::{CouponId, CouponKeys};

/// The consumer group every consumer of the tests reads in.
pub const CONSUMER_GROUP: &str = "coupon-issuers";

/// The Redis keys of a coupon, by the id the API gave it.
pub fn keys(coupon: i64) -> CouponKeys {
    shared::Layout::default().coupon(CouponId::new(coupon).expect("coupon ids the API gives are positive"))
}

/// The shared services this machine runs; override with the usual variables.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A MySQL server URL without a database.
pub fn mysql_server_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A fresh, unique database name for one test.
pub fn unique_database() -> String {
    format!("cr_test_{:016x}", rand::random::<u64>())
}
