//! Entries Redis no longer has. A batch whose commit lease ran out is
//! confirmed again ([`Worker::reconfirm`]); the users of entries deleted from a
//! stream before anyone wrote them are found by reconciling their coupon
//! ([`Worker::reconcile_pending`]). Either way an accepted request ends as a row
//! or as `failed` with a reason, never `pending` for ever.

use super::handle::Item;
use super::{Book, Outcome, Worker, WorkerError};
use crate::dead_letter::{self, DeadReason};
use crate::store;
use crate::streams;
use redis::AsyncCommands;
use shared::{CouponId, CouponKeys, IssueEvent, UserId};
use std::collections::HashSet;
use std::time::Instant;

/// Entries read per XRANGE while reconciling a stream.
const RANGE_CHUNK: usize = 1000;

impl Worker {
    /// After a write refused to commit on an expired lease: asks Redis which of
    /// `items` are still pending (XCLAIM JUSTID) and renews those. The others are
    /// pending nowhere (or their group is gone: Redis lost its data): those whose
    /// user MySQL already has are dropped, the rest buried as
    /// [`DeadReason::LostWithRedisState`].
    pub(super) async fn reconfirm(
        &mut self,
        coupon: CouponId,
        stream: &str,
        items: &mut Vec<Item>,
        book: &Book,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let ids: Vec<&str> = items.iter().map(|i| i.entry.id.as_str()).collect();
        let sent = Instant::now();
        let pending = match streams::keep_alive(&mut self.conn, &self.member, stream, &ids).await {
            Ok(pending) => pending,
            Err(err) if streams::is_nogroup(&err) => {
                tracing::warn!(%stream, "consumer group missing (Redis lost its data?), recreating it");
                self.recreate_groups().await?;
                Vec::new()
            }
            Err(err) => return Err(err.into()),
        };
        book.renew(stream, &pending, sent);
        let pending: HashSet<String> = pending.into_iter().collect();
        let (kept, mut lost): (Vec<Item>, Vec<Item>) = std::mem::take(items)
            .into_iter()
            .partition(|i| pending.contains(&i.entry.id));
        *items = kept;
        if lost.is_empty() {
            return Ok(());
        }
        tracing::warn!(%stream, lost = lost.len(), "entries held past their commit lease are no longer pending");
        let users: Vec<i64> = lost.iter().map(|i| i.event.user_id.get()).collect();
        let written = match store::users_with_rows(&self.db, coupon, Some(&users)).await {
            Ok(written) => written,
            Err(err) => {
                items.append(&mut lost);
                return Err(err.into());
            }
        };
        while let Some(item) = lost.pop() {
            if written.contains(&item.event.user_id.get()) {
                outcome.duplicates += 1;
            } else {
                let (entry, user) = (&item.entry, Some(item.event.user_id));
                let reason = DeadReason::LostWithRedisState;
                if let Err(err) = dead_letter::bury(&mut self.conn, &self.member, coupon, entry, user, &reason).await {
                    items.push(item);
                    items.append(&mut lost);
                    return Err(err.into());
                }
                outcome.dead_lettered += 1;
            }
            book.release(stream, [item.entry.id.as_str()]);
        }
        Ok(())
    }

    /// Reconciles every coupon whose stream had pending entries deleted; one
    /// that fails stays queued for the next reclaim.
    pub(super) async fn reconcile_pending(&mut self) {
        for coupon in std::mem::take(&mut self.unreconciled) {
            match self.reconcile(coupon).await {
                Ok(failed) => tracing::info!(%coupon, failed, "reconciled the users of deleted entries"),
                Err(err) => {
                    tracing::warn!(%coupon, %err, "reconciling the users of deleted entries failed, will retry");
                    self.unreconciled.insert(coupon);
                }
            }
        }
    }

    /// Records as failed ([`DeadReason::EventDeleted`]) every user `coupon`
    /// accepted (its issued set) who has no row, is not recorded failed and has
    /// no entry left in its stream. Read in that order, MySQL last, so that a user
    /// accepted, written or buried meanwhile is never taken for lost: the script
    /// adds the user and the entry at once, an entry leaves the stream only after
    /// it was written or buried (trimming keeps pending entries), and rows stay.
    /// Returns how many were lost.
    async fn reconcile(&mut self, coupon: CouponId) -> Result<usize, WorkerError> {
        let keys = CouponKeys::new(coupon);
        let accepted: Vec<i64> = self.conn.smembers(&keys.issued).await?;
        let in_stream = self.users_in_stream(&keys.events).await?;
        let failed: HashSet<i64> = self.conn.hkeys(&keys.failed).await?;
        let rows = store::users_with_rows(&self.db, coupon, None).await?;
        let mut lost = 0;
        for user in accepted {
            if in_stream.contains(&user) || failed.contains(&user) || rows.contains(&user) {
                continue;
            }
            match UserId::new(user) {
                Ok(user) => {
                    let reason = DeadReason::EventDeleted;
                    lost += usize::from(dead_letter::bury_user(&mut self.conn, coupon, user, &reason).await?);
                }
                Err(err) => tracing::error!(%coupon, user, %err, "the issued set holds an invalid user id"),
            }
        }
        Ok(lost)
    }

    /// The users of every (decodable) entry left in `stream`.
    async fn users_in_stream(&mut self, stream: &str) -> Result<HashSet<i64>, WorkerError> {
        let mut users = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let entries = streams::range_after(&mut self.conn, stream, after.as_deref(), RANGE_CHUNK).await?;
            let done = entries.len() < RANGE_CHUNK;
            after = entries.last().map(|e| e.id.clone());
            users.extend(entries.iter().filter_map(|e| {
                let event = IssueEvent::decode(e.payload.as_deref(), e.position.as_deref()).ok()?;
                Some(event.user_id.get())
            }));
            if done {
                return Ok(users);
            }
        }
    }
}
