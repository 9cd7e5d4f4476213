//! Runs randomized fault schedules for as long as asked and prints every
//! failing seed, so that it can be replayed exactly:
//!
//! ```sh
//! cargo build --workspace --bins
//! cargo run -p integration-tests --bin chaos -- --seeds 200
//! cargo run -p integration-tests --bin chaos -- --first 4711 --seeds 1   # replay one
//! ```

use clap::Parser;
use integration_tests::chaos::{run_seed, Options};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Randomized fault schedules against private servers")]
struct Args {
    /// The first seed (default: a random one); seeds run in order from it.
    #[arg(long)]
    first: Option<u64>,
    /// How many seeds to run.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Start no new seed after this many minutes.
    #[arg(long)]
    minutes: Option<u64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let first = args.first.unwrap_or_else(|| rand::random_range(0..1_000_000));
    let stop_at = args.minutes.map(|m| Instant::now() + Duration::from_secs(m * 60));
    let options = Options::default();
    let (mut passed, mut failed) = (0, Vec::new());
    let started = Instant::now();
    for seed in first..first + args.seeds {
        if stop_at.is_some_and(|at| Instant::now() > at) {
            break;
        }
        let report = run_seed(seed, &options).await;
        print!("{report}");
        if report.passed() {
            passed += 1;
        } else {
            failed.push(seed);
        }
    }
    println!(
        "{} seeds from {first} in {:.0} s; failing seeds: {failed:?}",
        passed + failed.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
