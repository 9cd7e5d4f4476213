//! `coupon-bench`: a flash sale against a running coupon-api, then a check of
//! the outcome (the crate's library says how). Exit status: 0 when every check
//! passes, 1 when one fails, 2 when the run could not be made.

use clap::Parser as _;
use coupon_bench::program::{self, Runtime};
use coupon_bench::{cli, sale};
use std::process::ExitCode;

const PROGRAM: &str = "coupon-bench";

fn main() -> ExitCode {
    let settings = match cli::Args::parse().settings() {
        Ok(settings) => settings,
        Err(err) => return program::fail(PROGRAM, err),
    };
    match program::block_on(PROGRAM, Runtime::MultiThread, sale::run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(code) => code,
    }
}
