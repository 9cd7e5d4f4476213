//! Invariant checks of a flash sale: what the API answered (never more accepted
//! than the quantity, nobody twice, positions distinct), what MySQL holds after
//! the drain (a row for exactly the accepted users, `issued_quantity` = rows) and
//! whether the consumers left anything pending in Redis. `coupon-bench` reports
//! them as [`Check`]s after a load; the integration tests assert them after
//! killing servers. One definition of each guarantee, so the two can not drift.
//!
//! # Layout
//! - [`check`]: [`Check`], one named verdict with its detail.
//! - [`answers`]: what the 202s of one coupon say, and the checks of them.
//! - [`rows`]: MySQL's rows against the accepted users, and the checks of them.
//! - [`mysql`]: the reads those checks need (read only).
//! - [`stream`]: whether a consumer group has read and acked its whole stream.

pub mod answers;
pub mod check;
pub mod mysql;
pub mod rows;
pub mod stream;

pub use answers::{answer_checks, examine, CouponFacts, CouponTally, Findings};
pub use check::Check;
pub use rows::{compare_sets, mysql_checks, quantity_check, MysqlFacts, SetFindings};
