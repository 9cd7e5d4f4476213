//! `coupon-fleet`'s options: the shared ones (API, admin token, MySQL, JSON
//! file) and each subcommand's.

use clap::{Args as ClapArgs, Parser, Subcommand};
use std::path::PathBuf;

/// Many coupons open at once: create them, sell one, or spread a sale over many.
#[derive(Parser, Debug)]
#[command(name = "coupon-fleet", version, about, long_about = None)]
pub struct Args {
    /// Base URL of coupon-api (http only).
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub api_url: String,

    /// Bearer token for `POST /coupons` (create, spread).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,

    /// MySQL that the consumers write to (sale, spread).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "mysql://root@127.0.0.1:3306/coupon",
        global = true
    )]
    pub database_url: String,

    /// Give up on one HTTP request after this long.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", global = true)]
    pub timeout: f64,

    /// Write the outcome as JSON to this file.
    #[arg(long, value_name = "FILE", global = true)]
    pub json: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create coupons through `POST /coupons`, `--concurrency` at a time.
    Create(CreateArgs),
    /// A sale on one coupon; times its last 202 to its last row in MySQL.
    Sale(SaleArgs),
    /// A sale spread over many coupons, a few hot and the rest a trickle.
    Spread(SpreadArgs),
}

/// What coupons to create.
#[derive(ClapArgs, Debug, Clone)]
pub struct CreateArgs {
    /// How many.
    #[arg(long, value_name = "N")]
    pub count: usize,
    /// `total_quantity` of each.
    #[arg(long, default_value_t = 1000, value_name = "Q")]
    pub quantity: i64,
    /// Creations in flight at once.
    #[arg(long, default_value_t = 16, value_name = "C")]
    pub concurrency: usize,
    /// Each is open from a minute ago to this many hours from now.
    #[arg(long, default_value_t = 24.0, value_name = "H")]
    pub open_hours: f64,
    /// Write the created ids here, one a line, in id order.
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
}

impl CreateArgs {
    pub fn fleet(&self) -> Fleet {
        Fleet {
            count: self.count,
            quantity: self.quantity,
            concurrency: self.concurrency,
            open_hours: self.open_hours,
        }
    }
}

/// Coupons to create: how many, how big, how many creations at once.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub count: usize,
    pub quantity: i64,
    pub concurrency: usize,
    pub open_hours: f64,
}

/// A sale on one existing coupon.
#[derive(ClapArgs, Debug, Clone)]
pub struct SaleArgs {
    /// The coupon.
    #[arg(long, value_name = "ID")]
    pub coupon: i64,
    /// Distinct users, each asking once.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub users: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64, value_name = "C")]
    pub concurrency: usize,
    /// First user id [default: from the clock, so reruns do not collide].
    #[arg(long, value_name = "ID")]
    pub user_offset: Option<i64>,
    /// Stop waiting for the rows after this long past the last answer.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub drain_timeout: f64,
    /// How often the coupon's rows are counted while waiting.
    #[arg(long, default_value_t = 2, value_name = "MS")]
    pub poll_ms: u64,
}

/// A sale spread over many new coupons.
#[derive(ClapArgs, Debug, Clone)]
pub struct SpreadArgs {
    /// Coupons to create for the sale.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub coupons: usize,
    /// How many of them are hot.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub hot: usize,
    /// The share of the requests that go to the hot coupons; the rest trickle
    /// over the others.
    #[arg(long, default_value_t = 0.9, value_name = "F")]
    pub hot_share: f64,
    /// `total_quantity` of each coupon.
    #[arg(long, default_value_t = 1000, value_name = "Q")]
    pub quantity: i64,
    /// Requests in all, each from a new user.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub requests: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 128, value_name = "C")]
    pub concurrency: usize,
    /// Coupon creations in flight at once.
    #[arg(long, default_value_t = 16, value_name = "C")]
    pub create_concurrency: usize,
    /// How often the rows in MySQL are compared with the acceptances.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub sample_ms: u64,
    /// Stop waiting for the rows after this long past the last answer.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub drain_timeout: f64,
    /// First user id [default: from the clock, so reruns do not collide].
    #[arg(long, value_name = "ID")]
    pub user_offset: Option<i64>,
}
