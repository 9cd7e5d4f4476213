//! The command line: every option (clap derive, with `env` where a deployment sets
//! it), and its validation into a [`Settings`] that the rest of the binary trusts.

use crate::tokens::Minter;
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Workers in the closed model when neither `--concurrency` nor `--rate` is given.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// A flash sale against a running coupon-api: many users ask for a coupon at once,
/// then the outcome is checked against the API's answers and MySQL.
#[derive(Parser, Debug)]
#[command(name = "coupon-bench", version, about, long_about = None)]
pub struct Args {
    /// Base URL of coupon-api (http only).
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// Bearer token for `POST /coupons`; needed unless every coupon is given with `--coupon`.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// An existing coupon to hammer (repeatable). Without it, coupons are created.
    #[arg(long = "coupon", value_name = "ID", conflicts_with_all = ["create_coupons", "quantity"])]
    pub coupons: Vec<i64>,

    /// How many coupons to create when no `--coupon` is given.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub create_coupons: usize,

    /// `total_quantity` of each created coupon.
    #[arg(long, default_value_t = 1000, value_name = "Q")]
    pub quantity: i64,

    /// Distinct users; each asks for every coupon.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub users: u64,

    /// First user id [default: the current Unix time in ms × 1,000,000, so reruns do not collide].
    #[arg(long, value_name = "ID")]
    pub user_offset: Option<i64>,

    /// Extra times each user asks for each coupon (after everyone asked once).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub retries: u64,

    /// Closed model: C workers, each sends its next request when its answer is in
    /// [default: 64 unless --rate is given].
    #[arg(long, value_name = "C", conflicts_with = "rate")]
    pub concurrency: Option<usize>,

    /// Open model: R requests per second at fixed arrival times whatever the answers;
    /// latency counts from the scheduled send time (no coordinated omission).
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

    /// Open model: most requests in flight at once (and connections).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_in_flight: usize,

    /// Run for this long (cycling through the users again if they are all done).
    #[arg(long, value_name = "SECS", conflicts_with = "requests")]
    pub duration: Option<f64>,

    /// Send exactly this many requests [default: every user's 1 + K requests for every coupon].
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,

    /// Give up on a request (counted as a transport error) after this long.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,

    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write an HTML report to this file: the answers and latency over time, the
    /// acceptance curve, the drain, the settings and the checks, in one page that
    /// opens offline.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// MySQL that the consumers write to, for the verification.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "mysql://root@127.0.0.1:3306/coupon"
    )]
    pub database_url: String,

    /// How long to wait for the consumers to write every accepted request to MySQL.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub drain_timeout: f64,

    /// Skip the MySQL checks (the checks of the API's answers still run).
    #[arg(long)]
    pub no_verify: bool,

    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// Tokens for an API that verifies user JWTs: each issue (and status) request
/// carries one minted for its user, as an identity provider would sign it.
#[derive(clap::Args, Debug, Default)]
pub struct JwtArgs {
    /// Mint HS256 tokens with this secret (the API's `AUTH_JWT_SECRET`).
    #[arg(
        long,
        env = "AUTH_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_key_file"
    )]
    pub jwt_secret: Option<String>,
    /// Mint tokens with this PEM private key (PKCS#8: EC → ES256, RSA → RS256,
    /// Ed25519 → EdDSA; the API holds the public half).
    #[arg(long, value_name = "FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// The `kid` header of each token (for an API with a JWKS).
    #[arg(long, value_name = "KID")]
    pub jwt_kid: Option<String>,
    /// The `iss` claim (the API's `AUTH_JWT_ISSUER`).
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` claim (the API's `AUTH_JWT_AUDIENCE`).
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    /// The minter these options ask for; `None` without a secret or key.
    pub fn minter(&self) -> Result<Option<Minter>, CliError> {
        let minter = match (&self.jwt_secret, &self.jwt_key_file) {
            (Some(secret), _) if !secret.is_empty() => Minter::hmac(secret.as_bytes()),
            (_, Some(path)) => {
                let pem = std::fs::read(path).map_err(|err| CliError::JwtKey(format!("{}: {err}", path.display())))?;
                Minter::from_pem(&pem).map_err(|err| CliError::JwtKey(format!("{}: {err}", path.display())))?
            }
            _ => return Ok(None),
        };
        let minter = match &self.jwt_kid {
            Some(kid) => minter.with_kid(kid),
            None => minter,
        };
        let minter = match &self.jwt_issuer {
            Some(issuer) => minter.with_issuer(issuer),
            None => minter,
        };
        Ok(Some(match &self.jwt_audience {
            Some(audience) => minter.with_audience(audience),
            None => minter,
        }))
    }
}

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Model {
    /// `workers` loops, each waits for its answer before sending again.
    Closed { workers: usize },
    /// Requests at `rate` per second, at most `max_in_flight` at once.
    Open { rate: f64, max_in_flight: usize },
}

impl Model {
    /// How many requests may be in flight at once: the connection pool's size.
    pub fn workers(&self) -> usize {
        match *self {
            Model::Closed { workers } => workers,
            Model::Open { max_in_flight, .. } => max_in_flight,
        }
    }
}

/// When the load stops (besides Ctrl-C).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this many requests.
    Requests(u64),
    /// After this long.
    Duration(Duration),
}

/// Which coupons the sale is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Coupons {
    /// Existing coupons, given on the command line.
    Existing(Vec<i64>),
    /// Coupons to create, each with `quantity`.
    Create { count: usize, quantity: i64 },
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub api_url: String,
    pub admin_token: Option<String>,
    pub coupons: Coupons,
    pub users: u64,
    pub user_offset: i64,
    pub retries: u64,
    pub model: Model,
    pub stop: Option<Stop>,
    pub timeout: Duration,
    pub json: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub database_url: String,
    pub drain_timeout: Duration,
    pub verify_mysql: bool,
    /// Signs each request's user token, when the API verifies them.
    pub minter: Option<Minter>,
}

/// An option that can not work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--{0} must be a positive number of seconds")]
    Seconds(&'static str),
    #[error("--rate must be a positive number of requests per second")]
    Rate,
    #[error("--coupon ids must be from 1 to 9223372036854775807")]
    CouponId,
    #[error("--user-offset must be at least 1 and leave room for --users ids below 9223372036854775807")]
    UserRange,
    #[error("--admin-token (or ADMIN_TOKEN) is needed to create coupons; or pass --coupon ID")]
    AdminToken,
    #[error("--api-url must be an http:// URL")]
    ApiUrl,
    #[error("--jwt-key-file {0}")]
    JwtKey(String),
}

impl Args {
    /// Checks the options and fills in the defaults that depend on others.
    pub fn settings(self) -> Result<Settings, CliError> {
        let api_url = self.api_url.trim_end_matches('/').to_string();
        if !api_url.starts_with("http://") {
            return Err(CliError::ApiUrl);
        }
        if self.users == 0 {
            return Err(CliError::Zero("users"));
        }
        let coupons = if self.coupons.is_empty() {
            if self.create_coupons == 0 {
                return Err(CliError::Zero("create-coupons"));
            }
            if self.quantity < 1 {
                return Err(CliError::Zero("quantity"));
            }
            if self.admin_token.as_deref().unwrap_or("").is_empty() {
                return Err(CliError::AdminToken);
            }
            Coupons::Create {
                count: self.create_coupons,
                quantity: self.quantity,
            }
        } else {
            if self.coupons.iter().any(|&id| id < 1) {
                return Err(CliError::CouponId);
            }
            let mut seen = std::collections::HashSet::new();
            let mut ids = self.coupons;
            ids.retain(|id| seen.insert(*id));
            Coupons::Existing(ids)
        };
        let user_offset = self.user_offset.unwrap_or_else(default_user_offset);
        let last = i64::try_from(self.users - 1)
            .ok()
            .and_then(|span| user_offset.checked_add(span));
        if user_offset < 1 || last.is_none() {
            return Err(CliError::UserRange);
        }
        let model = match (self.rate, self.concurrency) {
            (Some(rate), _) if !(rate.is_finite() && rate > 0.0) => return Err(CliError::Rate),
            (Some(_), _) if self.max_in_flight == 0 => return Err(CliError::Zero("max-in-flight")),
            (Some(rate), _) => Model::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            (None, Some(0)) => return Err(CliError::Zero("concurrency")),
            (None, workers) => Model::Closed {
                workers: workers.unwrap_or(DEFAULT_CONCURRENCY),
            },
        };
        let stop = match (self.duration, self.requests) {
            (Some(secs), _) => Some(Stop::Duration(seconds(secs, "duration")?)),
            (None, Some(0)) => return Err(CliError::Zero("requests")),
            (None, Some(n)) => Some(Stop::Requests(n)),
            (None, None) => None,
        };
        Ok(Settings {
            api_url,
            minter: self.jwt.minter()?,
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            coupons,
            users: self.users,
            user_offset,
            retries: self.retries,
            model,
            stop,
            timeout: seconds(self.timeout, "timeout")?,
            json: self.json,
            report: self.report,
            database_url: self.database_url,
            drain_timeout: seconds(self.drain_timeout, "drain-timeout")?,
            verify_mysql: !self.no_verify,
        })
    }
}

fn seconds(secs: f64, name: &'static str) -> Result<Duration, CliError> {
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(CliError::Seconds(name))
    }
}

/// The current Unix time in milliseconds × 1,000,000: runs started a millisecond
/// apart with fewer than a million users each never share a user id, and the
/// value stays below `i64::MAX` until the year 2262.
pub fn default_user_offset() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    i64::try_from(ms % 9_000_000_000_000)
        .unwrap_or(1)
        .saturating_mul(1_000_000)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, CliError> {
        let mut argv = vec!["coupon-bench", "--admin-token", "t"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).map_err(|_| CliError::ApiUrl)?.settings()
    }

    #[test]
    fn without_a_model_the_closed_model_with_64_workers_is_used() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.model, Model::Closed { workers: 64 });
        assert_eq!(settings.stop, None);
        assert_eq!(
            settings.coupons,
            Coupons::Create {
                count: 1,
                quantity: 1000
            }
        );
    }

    #[test]
    fn rate_selects_the_open_model_and_can_not_be_combined_with_concurrency() {
        let settings = parse(&["--rate", "2000", "--duration", "5"]).unwrap();
        assert_eq!(
            settings.model,
            Model::Open {
                rate: 2000.0,
                max_in_flight: 1024
            }
        );
        assert_eq!(settings.stop, Some(Stop::Duration(Duration::from_secs(5))));
        assert!(Args::try_parse_from(["coupon-bench", "--rate", "1", "--concurrency", "2"]).is_err());
        assert_eq!(parse(&["--rate", "0"]).unwrap_err(), CliError::Rate);
    }

    #[test]
    fn user_ids_must_stay_within_the_signed_bigint_range() {
        let max = i64::MAX.to_string();
        assert_eq!(
            parse(&["--user-offset", &max, "--users", "2"]).unwrap_err(),
            CliError::UserRange
        );
        assert!(parse(&["--user-offset", &max, "--users", "1"]).is_ok());
        assert_eq!(parse(&["--user-offset", "0"]).unwrap_err(), CliError::UserRange);
        assert!(default_user_offset() > 1_000_000);
    }

    #[test]
    fn creating_coupons_needs_an_admin_token_but_existing_coupons_do_not() {
        let no_token = Args::try_parse_from(["coupon-bench"]).unwrap();
        if std::env::var_os("ADMIN_TOKEN").is_none() {
            assert_eq!(no_token.settings().unwrap_err(), CliError::AdminToken);
        }
        let existing = Args::try_parse_from(["coupon-bench", "--coupon", "7", "--coupon", "9"]).unwrap();
        assert_eq!(existing.settings().unwrap().coupons, Coupons::Existing(vec![7, 9]));
    }
}
