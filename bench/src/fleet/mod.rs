//! `coupon-fleet`: many coupons open at once, for `deploy/bench/coupons.sh`
//! (issue 11: the consumer's cost must follow the events, not the coupons).
//!
//! Three subcommands, each talking only to coupon-api's HTTP API and reading
//! MySQL's `coupons` and `coupon_issues` (never a Redis key: the layout of the
//! streams is what the measurement compares across designs):
//! - `create`: N coupons through `POST /coupons`, many at a time.
//! - `sale`: a small sale on one coupon, and how long after its last 202 the
//!   last of its rows is in MySQL.
//! - `spread`: a sale spread over many coupons at once (a few hot, the rest a
//!   trickle), with the rows in MySQL against the acceptances over time.
//!
//! # Layout
//! - [`cli`]: the options of the three subcommands.
//! - [`create`]: concurrent coupon creation.
//! - [`answers`]: counting the answers of a load by code.
//! - [`one_sale`]: the `sale` subcommand.
//! - [`spread`]: the `spread` subcommand and its samples.
//! - [`rows`]: the MySQL reads (row counts, `issued_quantity` sums).

pub mod answers;
pub mod cli;
pub mod create;
pub mod one_sale;
pub mod rows;
pub mod spread;

use crate::client::Api;
use crate::program;
use std::path::Path;
use std::time::Duration;

/// Runs the subcommand `args` asks for, prints its summary line and writes its
/// JSON file when `--json` is given.
pub async fn run(args: cli::Args) -> anyhow::Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(30));
    match args.command {
        cli::Command::Create(c) => {
            let api = Api::new(&args.api_url, c.concurrency, timeout);
            let token = args.admin_token.unwrap_or_default();
            let created = create::run(&api, &token, &c.fleet()).await?;
            if let Some(path) = &c.ids {
                let text: String = created.ids.iter().map(|id| format!("{id}\n")).collect();
                std::fs::write(path, text).map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
            }
            println!("{}", created.line());
            write(args.json.as_deref(), &created)
        }
        cli::Command::Sale(s) => {
            let api = Api::new(&args.api_url, s.concurrency, timeout);
            let db = rows::connect(&args.database_url).await?;
            let outcome = one_sale::run(&api, &db, &s).await?;
            println!("{}", outcome.line());
            write(args.json.as_deref(), &outcome)
        }
        cli::Command::Spread(s) => {
            let api = Api::new(&args.api_url, s.concurrency.max(s.create_concurrency), timeout);
            let db = rows::connect(&args.database_url).await?;
            let token = args.admin_token.unwrap_or_default();
            let outcome = spread::run(&api, &db, &token, &s).await?;
            println!("{}", outcome.line());
            write(args.json.as_deref(), &outcome)
        }
    }
}

fn write(path: Option<&Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        program::write_json(path, value)?;
    }
    Ok(())
}

/// `{"user_id":N}`, the body of an issue request.
pub fn body_for(user_id: i64) -> bytes::Bytes {
    bytes::Bytes::from(format!("{{\"user_id\":{user_id}}}"))
}
