//! `coupon-tokens`: writes user JWTs, one per line, for load tools that can not
//! sign (wrk): users `--user-offset` .. `--user-offset + --count - 1`, each
//! token's `sub` its user, signed as `coupon-bench --jwt-*` signs them.

use clap::Parser;
use coupon_bench::cli::JwtArgs;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "coupon-tokens", version, about)]
struct Args {
    /// How many users (and tokens).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// The first user id.
    #[arg(long, default_value_t = 1)]
    user_offset: i64,
    /// Where to write them.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    jwt: JwtArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let minter = args
        .jwt
        .minter()?
        .ok_or_else(|| anyhow::anyhow!("--jwt-secret or --jwt-key-file is needed"))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out)?);
    for n in 0..args.count {
        let user = args.user_offset + i64::try_from(n)?;
        writeln!(out, "{}", minter.token(user)?)?;
    }
    out.flush()?;
    Ok(())
}
