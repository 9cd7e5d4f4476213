//! The commit lease: how a consumer's batch in flight and an API instance's
//! rebuild of a coupon's Redis state (after Redis lost it) stay apart.
//!
//! # The race it closes
//! A consumer reads entries, then commits them to MySQL and only then acks them
//! and puts their users back into the issued set. If Redis loses its data in
//! between (FLUSHALL, failover to an empty replica), an API instance rebuilds the
//! issued set from MySQL's rows, which do not hold that batch yet; the API then
//! accepts up to one batch of users too many, and MySQL later refuses them: a
//! `202` that never becomes a coupon.
//!
//! # The protocol
//! - **Consumer.** Every entry it holds carries the [`Instant`] at which it was
//!   last *confirmed* pending in its group: taken just before the command that
//!   proved it (the XREADGROUP or XAUTOCLAIM that delivered it, or a keep-alive
//!   XCLAIM JUSTID that returned it). The keep-alive runs at least every
//!   `COMMIT_LEASE / 4`. The batch's MySQL transaction locks the coupon row
//!   (`SELECT ... FOR UPDATE`) and then refuses to commit (rolls back) if any of
//!   its entries was last confirmed [`COMMIT_LEASE`] ago or more. On that
//!   refusal the consumer confirms again: entries still pending are renewed and
//!   retried; entries no longer pending anywhere (or whose group is gone) were
//!   lost with Redis' data: if MySQL has the user's row they are dropped, else the
//!   user is recorded `failed` with a reason.
//! - **API rebuild.** It takes the coupon's rebuild lock (while the metadata is
//!   missing nothing is accepted), waits `COMMIT_LEASE` plus a margin for clock
//!   rate differences, and only then reads MySQL's rows, under `SELECT ... FOR
//!   UPDATE` on the coupon row.
//!
//! # Why that is enough
//! Once Redis lost its data at time `F`, nothing that predates `F` can be
//! confirmed again (the group is gone, or recreated without those ids), so every
//! such entry was last confirmed before `F`. The rebuild reads at `R >= F +
//! COMMIT_LEASE`. A consumer transaction that locked the coupon row before the
//! rebuild's read commits before it (the rebuild waits for the lock) and the
//! rebuild sees its rows; one that locks it later finds its lease older than
//! `COMMIT_LEASE` and rolls back. Only durations on each side's own monotonic
//! clock are compared, never wall clocks of two machines.
//!
//! A consumer that commits within its lease is unaffected: normal batches commit
//! in milliseconds and the keep-alive renews the lease of a batch waiting on a
//! slow MySQL for as long as Redis answers.

use std::time::{Duration, Instant};

/// How long after its entries were last confirmed pending a consumer may still
/// commit a batch; how long a rebuild waits (plus a margin) before reading MySQL.
pub const COMMIT_LEASE: Duration = Duration::from_secs(2);

/// Whether something last confirmed at `confirmed` may still be committed.
pub fn within(confirmed: Instant) -> bool {
    confirmed.elapsed() < COMMIT_LEASE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_confirmation_holds_and_an_old_one_does_not() {
        assert!(within(Instant::now()));
        let old = Instant::now().checked_sub(COMMIT_LEASE + Duration::from_millis(1));
        assert!(old.is_none_or(|old| !within(old)));
    }
}
