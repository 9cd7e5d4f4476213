//! Entries Redis no longer has. A batch whose commit lease ran out is
//! confirmed again ([`Worker::reconfirm`]); the users of entries deleted from a
//! stream before anyone wrote them are found by reconciling the coupons of that
//! stream ([`Worker::reconcile_pending`]): for a partition, every coupon whose
//! metadata is in its slot (a rare event, so a SCAN of one slot is fine). Either
//! way an accepted request ends as a row or as `failed` with a reason, never
//! `pending` for ever.

use super::handle::Item;
use super::{Book, Outcome, Worker, WorkerError};
use crate::dead_letter::{self, DeadReason, Owner};
use crate::store;
use crate::streams::{self, Source};
use redis::AsyncCommands;
use shared::{CouponId, IssueEvent, LegacyKeys, UserId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Entries read per XRANGE while reconciling a stream.
const RANGE_CHUNK: usize = 1000;
/// Coupons reconciled against one read of their partition stream.
const COUPONS_AT_ONCE: usize = 64;

impl Worker {
    /// After a write refused to commit on an expired lease: asks Redis which of
    /// `items` are still pending (XCLAIM JUSTID, per stream) and renews those.
    /// The others are pending nowhere (or their group is gone: Redis lost its
    /// data): those whose user MySQL already has are dropped, the rest buried as
    /// [`DeadReason::LostWithRedisState`].
    pub(super) async fn reconfirm(
        &mut self,
        book: &Book,
        items: &mut Vec<Item>,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let mut by_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for item in items.iter() {
            by_stream.entry(&item.entry.stream).or_default().push(&item.entry.id);
        }
        let mut pending: HashSet<(String, String)> = HashSet::new();
        for (stream, ids) in by_stream {
            let sent = Instant::now();
            let still = match streams::keep_alive(&mut self.conn, &self.member, stream, &ids).await {
                Ok(still) => still,
                Err(err) if streams::is_nogroup(&err) => {
                    self.recreate_groups().await?;
                    Vec::new()
                }
                Err(err) => return Err(err.into()),
            };
            book.renew(stream, &still, sent);
            pending.extend(still.into_iter().map(|id| (stream.to_string(), id)));
        }
        let (kept, lost): (Vec<Item>, Vec<Item>) = std::mem::take(items)
            .into_iter()
            .partition(|i| pending.contains(&(i.entry.stream.clone(), i.entry.id.clone())));
        *items = kept;
        if lost.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            lost = lost.len(),
            "entries held past their commit lease are no longer pending"
        );
        let mut by_coupon: BTreeMap<CouponId, Vec<Item>> = BTreeMap::new();
        for item in lost {
            by_coupon.entry(item.event.coupon_id).or_default().push(item);
        }
        let mut coupons = by_coupon.into_iter();
        while let Some((coupon, mut lost)) = coupons.next() {
            if let Err(err) = self.settle_lost(coupon, book, &mut lost, outcome).await {
                items.append(&mut lost);
                items.extend(coupons.flat_map(|(_, lost)| lost));
                return Err(err);
            }
        }
        Ok(())
    }

    /// Drops the `lost` items (all of `coupon`) whose user has a row, and buries
    /// the rest; each leaves `lost` once settled.
    async fn settle_lost(
        &mut self,
        coupon: CouponId,
        book: &Book,
        lost: &mut Vec<Item>,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let users: Vec<i64> = lost.iter().map(|i| i.event.user_id.get()).collect();
        let written = store::users_with_rows(&self.db, coupon, Some(&users)).await?;
        while let Some(item) = lost.pop() {
            if written.contains(&item.event.user_id.get()) {
                outcome.duplicates += 1;
            } else {
                let (at, owner) = ((item.source, &item.entry), Owner::from(&item.event));
                let reason = DeadReason::LostWithRedisState;
                if let Err(err) = self.bury(at, owner, &reason).await {
                    lost.push(item);
                    return Err(err.into());
                }
                outcome.dead_lettered += 1;
            }
            book.release(&item.entry.stream, [item.entry.id.as_str()]);
        }
        Ok(())
    }

    /// Reconciles the coupons of every stream that had pending entries
    /// deleted; a stream that fails stays queued for the next reclaim.
    pub(super) async fn reconcile_pending(&mut self) {
        for source in std::mem::take(&mut self.unreconciled) {
            match self.reconcile(source).await {
                Ok(failed) => tracing::info!(?source, failed, "reconciled the users of deleted entries"),
                Err(err) => {
                    tracing::warn!(?source, %err, "reconciling the users of deleted entries failed, will retry");
                    self.unreconciled.insert(source);
                }
            }
        }
    }

    /// Reconciles the coupons `source` holds: a partition's (those whose
    /// metadata is in its slot), or a legacy stream's one coupon (its users in
    /// the legacy issued set). Returns how many users were lost.
    async fn reconcile(&mut self, source: Source) -> Result<usize, WorkerError> {
        let stream = source.stream(&self.layout);
        let coupons: Vec<(CouponId, String)> = match source {
            Source::Legacy(coupon) => vec![(coupon, LegacyKeys::new(coupon).issued)],
            Source::Partition(index) => {
                let partition = self.layout.partition(index);
                let metas =
                    streams::scan::in_slot(&mut self.conn, &partition.events, &partition.meta_pattern()).await?;
                let coupons = metas.iter().filter_map(|key| partition.coupon_of_meta_key(key));
                coupons.map(|c| (c, self.layout.coupon(c).issued)).collect()
            }
        };
        let mut lost = 0;
        for chunk in coupons.chunks(COUPONS_AT_ONCE) {
            lost += self.reconcile_coupons(&stream, chunk).await?;
        }
        Ok(lost)
    }

    /// Records as failed ([`DeadReason::EventDeleted`]) every user the
    /// `coupons` accepted (each one's issued set) who has no row, is not
    /// recorded failed and has no entry left in `stream`. Read in that order,
    /// MySQL last, so that a user accepted, written or buried meanwhile is never
    /// taken for lost: the script adds the user and the entry at once, an entry
    /// leaves the stream only after it was written or buried (trimming keeps
    /// pending entries), and rows stay. Returns how many were lost.
    async fn reconcile_coupons(&mut self, stream: &str, coupons: &[(CouponId, String)]) -> Result<usize, WorkerError> {
        let mut accepted = Vec::with_capacity(coupons.len());
        for (coupon, issued) in coupons {
            let users: Vec<i64> = self.conn.smembers(issued).await?;
            accepted.push((*coupon, users));
        }
        let in_stream = self.users_in_stream(stream).await?;
        let mut lost = 0;
        for (coupon, users) in accepted {
            let keys = self.layout.coupon(coupon);
            let failed: HashSet<i64> = self.conn.hkeys(&keys.failed).await?;
            let rows = store::users_with_rows(&self.db, coupon, None).await?;
            let left = in_stream.get(&coupon);
            for user in users {
                if left.is_some_and(|l| l.contains(&user)) || failed.contains(&user) || rows.contains(&user) {
                    continue;
                }
                match UserId::new(user) {
                    Ok(user) => {
                        let reason = DeadReason::EventDeleted;
                        let recorded =
                            dead_letter::bury_user(&mut self.conn, &self.layout, coupon, user, &reason).await?;
                        lost += usize::from(recorded);
                    }
                    Err(err) => tracing::error!(%coupon, user, %err, "the issued set holds an invalid user id"),
                }
            }
        }
        Ok(lost)
    }

    /// The users of every (decodable) entry left in `stream`, by coupon.
    async fn users_in_stream(&mut self, stream: &str) -> Result<HashMap<CouponId, HashSet<i64>>, WorkerError> {
        let mut users: HashMap<CouponId, HashSet<i64>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let entries = streams::range_after(&mut self.conn, stream, after.as_deref(), RANGE_CHUNK).await?;
            let done = entries.len() < RANGE_CHUNK;
            after = entries.last().map(|e| e.id.clone());
            for entry in &entries {
                if let Ok(event) = IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref()) {
                    users.entry(event.coupon_id).or_default().insert(event.user_id.get());
                }
            }
            if done {
                return Ok(users);
            }
        }
    }
}
