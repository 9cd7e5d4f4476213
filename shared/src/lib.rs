//! What `coupon-api` and `coupon-consumer` both need, and nothing else.
//!
//! # Layout
//! - [`ids`]: `CouponId` and `UserId`, parsed, never out of range.
//! - [`coupon`]: the coupon's metadata and its issue period.
//! - [`keys`]: every Redis key name, with the per-coupon hash tag.
//! - [`lease`]: the commit lease between a consumer's batch and a rebuild.
//! - [`event`]: the issue event carried by the stream (MessagePack).
//! - [`config`]: configuration shared by both binaries (env + flags).
//! - [`secrets`]: secrets read from files (`*_FILE`) and the parse that allows it.
//! - [`db`]: MySQL pool, database creation and migrations.
//! - [`redis_conn`]: Redis connections with bounded timeouts.
//! - [`retry`]: retrying until a deadline, for start-up.
//! - [`tls`]: rustls's crypto provider; TLS failures told from outages.
//! - [`startup`]: connecting both binaries to MySQL and Redis; `StartError`.
//! - [`ops`]: the `/healthz` and `/metrics` handlers both servers use.
//! - [`telemetry`]: logs, OpenTelemetry export and trace-context propagation.
//! - [`metrics`]: the Prometheus recorder and the metric names.
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal.

pub mod config;
pub mod coupon;
pub mod db;
pub mod event;
pub mod ids;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod redis_conn;
pub mod retry;
pub mod secrets;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tls;

pub use coupon::Coupon;
pub use event::IssueEvent;
pub use ids::{CouponId, UserId};
pub use keys::{CouponKeys, Layout, LegacyKeys, LegacyKind, PartitionKeys, StatusNote};
