//! `coupon-consumer`'s configuration: the contract's variables, each also a
//! flag (secrets also from files, `*_FILE`), plus the operator subcommands for
//! dead letters.

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
    /// Where the consumer serves `/metrics` and `/healthz`.
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
    #[command(flatten)]
    pub common: CommonConfig,
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
        ])
    }
}
