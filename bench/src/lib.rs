//! `coupon-bench`: a flash sale against a running coupon-api, then a check of
//! the outcome.
//!
//! It creates coupons (or takes `--coupon` ids), lets `--users` users ask for
//! each one `1 + --retries` times under a closed (`--concurrency`) or open
//! (`--rate`) load model, prints throughput, latency percentiles and the answers
//! by status and code, then verifies the answers (never more accepted than the
//! quantity, no user twice, distinct positions) and, once the consumers have
//! drained, MySQL (a row for exactly the accepted users, `issued_quantity` =
//! rows); `--report` writes it all, charted over time, as one HTML file.
//! Exit status: 0 when every check passes, 1 when one fails, 2 when the run
//! could not be made.
//!
//! The checks themselves are the `verify` crate's, which the integration tests
//! assert too. The binaries are thin: `coupon-bench` (`src/main.rs`) runs
//! [`sale::run`]; `coupon-ceiling` and `coupon-insert-ceiling` (`src/bin/`) are
//! the baselines `deploy/bench/run.sh` measures against. All three start
//! through [`program`].
//!
//! # Layout
//! - [`cli`]: options and their validation.
//! - [`plan`]: which request goes to which coupon and user, and when (pure).
//! - [`client`]: HTTP to coupon-api (hyper, keep-alive pool).
//! - [`load`]: the workers, the progress bar, Ctrl-C.
//! - [`stats`]: per-worker tallies and the latency histogram.
//! - [`timeline`]: answers and latency over time, in bounded buckets.
//! - [`mysql`]: the drain wait and the MySQL facts.
//! - [`mysql_phase`]: what the drain waits for, and the MySQL checks of a run.
//! - [`sale`]: the whole run, from the coupons to the verdict.
//! - [`tokens`]: user JWTs for an API that verifies them.
//! - [`report`]: the summary, for people and as JSON.
//! - [`html`]: the HTML report (`--report`): its charts and page.
//! - [`rows_watch`]: MySQL's rows over time, for the report's drain chart.
//! - [`program`]: what the binaries share: the runtime, the exit status, the files they write.
//! - [`fleet`]: `coupon-fleet` (`src/bin/`): many coupons at once, for
//!   `deploy/bench/coupons.sh`.

pub mod cli;
pub mod client;
pub mod fleet;
pub mod html;
pub mod load;
pub mod mysql;
pub mod mysql_phase;
pub mod plan;
pub mod program;
pub mod report;
pub mod rows_watch;
pub mod sale;
pub mod stats;
pub mod timeline;
pub mod tokens;
