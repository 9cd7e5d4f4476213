//! `coupon-fleet`: many coupons open at once — create them through the API,
//! time a small sale on one of them to MySQL, or spread a sale over many
//! (`deploy/bench/coupons.sh`; the library's `fleet` module says how).
//!
//! ```sh
//! coupon-fleet --api-url http://127.0.0.1:8092 create --count 5000 --ids ids.txt
//! coupon-fleet --database-url mysql://root@127.0.0.1:3306/coupon_fleet sale --coupon 42 --users 1000
//! coupon-fleet spread --coupons 1000 --hot 100 --requests 1000000 --json spread.json
//! ```

use clap::Parser;
use coupon_bench::fleet::{self, cli::Args};
use coupon_bench::program::{self, Runtime};
use std::process::ExitCode;

const PROGRAM: &str = "coupon-fleet";

fn main() -> ExitCode {
    match program::block_on(PROGRAM, Runtime::MultiThread, fleet::run(Args::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
