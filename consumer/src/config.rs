//! `coupon-consumer`'s configuration: the contract's variables, each also a
//! flag (secrets also from files, `*_FILE`), plus the operator subcommands for
//! dead letters.

use crate::health::Thresholds;
use clap::{Args, Parser, Subcommand};
use shared::config::CommonConfig;
use shared::secrets::{self, SecretError};
use std::time::Duration;

/// The issuing worker: a Redis Streams consumer-group member writing to MySQL.
#[derive(Parser, Clone, Debug)]
#[command(name = "coupon-consumer", version)]
pub struct Cli {
    #[command(flatten)]
    pub consumer: ConsumerConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Flags and environment, then the secrets given as files.
    pub fn load() -> Result<Self, SecretError> {
        let (mut cli, matches) = secrets::parse::<Self>();
        cli.consumer.common.read_secret_files(&matches)?;
        Ok(cli)
    }
}

/// Operator commands; without one, the consumer runs.
#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// List the dead letters of a coupon (or of every coupon) as JSON lines.
    ListDeadLetters {
        #[arg(long)]
        coupon: Option<i64>,
    },
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Put a coupon's dead letters back on its partition stream (all, or one entry id).
    ReplayDeadLetters {
        #[arg(long)]
        coupon: i64,
        /// The dead-letter entry id; all of the coupon's when omitted.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct ConsumerConfig {
    /// The Redis Streams consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "coupon-issuers")]
    pub consumer_group: String,
    /// This instance's name inside the group (default: hostname and pid).
    #[arg(long, env = "CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// Where the consumer serves `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Entries read per XREADGROUP from each partition stream (1 to 1000); a
    /// batch holds at most this many per partition.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// How long one XREADGROUP blocks waiting for entries (ms).
    #[arg(long, env = "BLOCK_MS", default_value_t = 1000)]
    pub block_ms: u64,
    /// Entries pending this long with another (dead or stuck) member are reclaimed (ms).
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 5000)]
    pub claim_idle_ms: u64,
    /// An entry delivered more than this many times is tried alone; tried alone
    /// more than this many times too, it goes to the dead-letter stream.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: u64,
    /// How often streams of the layout before partitions (an upgrade's
    /// leftovers, drained then deleted) are looked for, until a look finds none (ms).
    #[arg(long, env = "LEGACY_SCAN_MS", default_value_t = 60_000)]
    pub legacy_scan_ms: u64,
    /// `/readyz` answers 503 once this member has had work (entries it holds,
    /// or entries no member has read) this long without committing, burying or
    /// acking any (ms).
    #[arg(long, env = "READY_STALL_MS", default_value_t = 30_000)]
    pub ready_stall_ms: u64,
    /// `/healthz` answers 503 once the worker loop has not turned this long
    /// (ms); above `BLOCK_MS` + `REDIS_TIMEOUT_MS`, which an idle turn can take.
    #[arg(long, env = "LIVE_STALL_MS", default_value_t = 60_000)]
    pub live_stall_ms: u64,
    #[command(flatten)]
    pub common: CommonConfig,
}

/// A liveness threshold an idle loop could reach without anything wrong.
#[derive(Debug, thiserror::Error)]
#[error("LIVE_STALL_MS ({live_ms}) must exceed BLOCK_MS + REDIS_TIMEOUT_MS ({turn_ms}): an idle loop turn can take that long")]
pub struct LiveStallTooShort {
    pub live_ms: u64,
    pub turn_ms: u64,
}

impl ConsumerConfig {
    pub fn name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "consumer".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }

    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }

    pub fn legacy_scan(&self) -> Duration {
        Duration::from_millis(self.legacy_scan_ms)
    }

    /// The health thresholds, as configured.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            stalled: Duration::from_millis(self.ready_stall_ms),
            stuck: Duration::from_millis(self.live_stall_ms),
        }
    }

    /// Refuses a liveness threshold that a healthy idle loop could reach: one
    /// blocked read lasts up to `BLOCK_MS`, plus `REDIS_TIMEOUT_MS` if Redis
    /// does not answer it.
    pub fn check(&self) -> Result<(), LiveStallTooShort> {
        let turn_ms = self.block_ms.saturating_add(self.common.redis.redis_timeout_ms);
        match self.live_stall_ms > turn_ms {
            true => Ok(()),
            false => Err(LiveStallTooShort {
                live_ms: self.live_stall_ms,
                turn_ms,
            }),
        }
    }

    /// The effective configuration for the start-up log line, secrets masked.
    pub fn summary(&self) -> String {
        self.common.summary(&[
            ("group", &self.consumer_group),
            ("name", &self.name()),
            ("metrics_addr", &self.metrics_addr),
            ("batch_size", &self.batch_size),
            ("block_ms", &self.block_ms),
            ("claim_idle_ms", &self.claim_idle_ms),
            ("max_deliveries", &self.max_deliveries),
            ("legacy_scan_ms", &self.legacy_scan_ms),
            ("ready_stall_ms", &self.ready_stall_ms),
            ("live_stall_ms", &self.live_stall_ms),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> super::ConsumerConfig {
        Cli::try_parse_from(std::iter::once("coupon-consumer").chain(args.iter().copied()))
            .unwrap()
            .consumer
    }

    #[test]
    fn a_liveness_threshold_an_idle_turn_could_reach_is_refused() {
        let timeouts = ["--block-ms", "1000", "--redis-timeout-ms", "1000"];
        assert!(parse(&timeouts).check().is_ok(), "the defaults");
        let short = parse(&[&timeouts[..], &["--live-stall-ms", "2000"]].concat());
        assert_eq!(
            short.check().unwrap_err().to_string(),
            "LIVE_STALL_MS (2000) must exceed BLOCK_MS + REDIS_TIMEOUT_MS (2000): an idle loop turn can take that long"
        );
        assert!(parse(&[&timeouts[..], &["--live-stall-ms", "2001"]].concat())
            .check()
            .is_ok());
    }
}
