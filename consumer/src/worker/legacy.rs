//! Draining an upgrade's leftovers: the coupons' streams of the layout before
//! partitions (`coupon:{<id>}:events`), which an API of the old version filled.
//!
//! At start, and then every `LEGACY_SCAN_MS` until a look finds no key of the
//! old layout, every master is scanned for them. Each stream found is read like
//! a partition (same group, same handling: its events carry their coupon), a
//! few at a time so a deployment of many coupons does not bring back a read
//! over every coupon's stream; once the group has read and acked every entry of
//! one, it is deleted (in one step with that check, so an entry added meanwhile
//! is never lost). The API rebuilds such a coupon's new state only once its
//! legacy stream is gone. The coupon's other old keys are adopted on the way:
//! dead letters and failed marks move to the partition layout
//! ([`crate::dead_letter::adopt`]), and the old issued set and metadata, which
//! MySQL's rows replace once the stream is drained, are deleted.

use super::{Worker, WorkerError};
use crate::dead_letter::adopt;
use crate::streams::{self, Group};
use redis::AsyncCommands;
use shared::{CouponId, LegacyKeys, LegacyKind};
use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

/// Legacy streams read at once; the others wait their turn.
const READ_AT_ONCE: usize = 16;

/// The legacy streams found: those read now and those waiting.
#[derive(Debug)]
pub(super) struct Drain {
    reading: Vec<String>,
    waiting: VecDeque<String>,
    /// When to look for legacy streams next; `None` once a look found none.
    next_scan: Option<Instant>,
}

impl Drain {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            reading: Vec::new(),
            waiting: VecDeque::new(),
            next_scan: Some(now),
        }
    }

    pub(super) fn reading(&self) -> &[String] {
        &self.reading
    }

    pub(super) fn scan_due(&self, now: Instant) -> bool {
        self.next_scan.is_some_and(|at| now >= at)
    }

    pub(super) fn forget(&mut self, stream: &str) {
        self.reading.retain(|s| s != stream);
    }

    fn knows(&self, stream: &str) -> bool {
        self.reading.iter().chain(&self.waiting).any(|s| s == stream)
    }
}

impl Worker {
    /// Looks for legacy streams when due; a failed look is retried next time.
    pub(super) async fn scan_legacy_if_due(&mut self, now: Instant) {
        if !self.legacy.scan_due(now) {
            return;
        }
        self.legacy.next_scan = Some(now + self.settings.legacy_scan);
        if let Err(err) = self.scan_legacy().await {
            tracing::warn!(%err, "looking for legacy streams failed, will retry");
        }
    }

    /// Scans every master for keys of the old layout: queues the new streams
    /// and starts reading as many as allowed, then adopts the other keys. Once a
    /// scan finds none, scanning stops.
    async fn scan_legacy(&mut self) -> Result<(), WorkerError> {
        let found = streams::scan::everywhere(&mut self.conn, LegacyKeys::PATTERN, None).await?;
        let mut leftovers: BTreeSet<CouponId> = BTreeSet::new();
        let mut found_streams = Vec::new();
        for key in found {
            match LegacyKeys::parse(&key) {
                Some((_, LegacyKind::Events)) => found_streams.push(key),
                Some((coupon, _)) => {
                    leftovers.insert(coupon);
                }
                None => {}
            }
        }
        if found_streams.is_empty() && leftovers.is_empty() {
            tracing::debug!("no key of the layout before partitions left: no longer looking for them");
            self.legacy.next_scan = None;
            return Ok(());
        }
        if !found_streams.is_empty() {
            tracing::info!(
                count = found_streams.len(),
                "found streams of the layout before partitions: draining them"
            );
        }
        for stream in found_streams {
            if !self.legacy.knows(&stream) {
                self.legacy.waiting.push_back(stream);
            }
        }
        self.top_up_legacy().await?;
        for coupon in leftovers {
            self.adopt_leftovers(coupon).await?;
        }
        Ok(())
    }

    /// Moves `coupon`'s old dead letters and failed marks to the partition
    /// layout and, once its old stream is gone, deletes its old issued set and
    /// metadata (an old rebuild lock or attempts hash, too).
    async fn adopt_leftovers(&mut self, coupon: CouponId) -> Result<(), WorkerError> {
        let expires_at_ms = self.state_expiry(coupon).await?;
        let adopted = adopt::adopt(&mut self.conn, &self.layout, coupon, expires_at_ms).await?;
        if adopted != adopt::Adopted::default() {
            tracing::info!(%coupon, letters = adopted.letters, failed = adopted.failed, "moved the dead letters and failed marks of the layout before partitions");
        }
        let legacy = LegacyKeys::new(coupon);
        if !self.legacy.knows(&legacy.events) && !self.conn.exists::<_, bool>(&legacy.events).await? {
            let tag = format!("coupon:{{{coupon}}}");
            let _: i64 = self
                .conn
                .del(&[
                    legacy.meta,
                    legacy.issued,
                    format!("{tag}:rebuild"),
                    format!("{tag}:rebuild-set"),
                    format!("{tag}:attempts"),
                ])
                .await?;
        }
        Ok(())
    }

    /// When `coupon`'s Redis state expires: `COUPON_RETENTION_S` after its
    /// issue period ends (now, for a coupon MySQL no longer has).
    async fn state_expiry(&self, coupon: CouponId) -> Result<i64, WorkerError> {
        let end_ms: Option<i64> =
            sqlx::query_scalar("SELECT CAST(UNIX_TIMESTAMP(issue_end) * 1000 AS SIGNED) FROM coupons WHERE id = ?")
                .bind(coupon.get())
                .fetch_optional(&self.db)
                .await?;
        let end_ms = end_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        Ok(end_ms.saturating_add(self.settings.retention.as_millis() as i64))
    }

    /// Deletes the legacy streams read to their end and acked, then starts
    /// reading waiting ones in their place.
    pub(super) async fn drain_legacy(&mut self) -> Result<(), WorkerError> {
        for stream in self.legacy.reading.clone() {
            if streams::drop_if_drained(&mut self.conn, &self.member, &stream).await? {
                tracing::info!(%stream, "legacy stream drained and deleted");
                self.legacy.forget(&stream);
                self.sync_streams();
                if let Some(coupon) = LegacyKeys::coupon_of_events_stream(&stream) {
                    self.adopt_leftovers(coupon).await?;
                }
            }
        }
        self.top_up_legacy().await
    }

    /// Moves waiting legacy streams to the read list, up to [`READ_AT_ONCE`].
    async fn top_up_legacy(&mut self) -> Result<(), WorkerError> {
        let mut result = Ok(());
        while self.legacy.reading.len() < READ_AT_ONCE {
            let Some(stream) = self.legacy.waiting.pop_front() else {
                break;
            };
            match self.start_reading(&stream).await {
                Ok(true) => self.legacy.reading.push(stream),
                Ok(false) => {}
                Err(err) => {
                    self.legacy.waiting.push_front(stream);
                    result = Err(err);
                    break;
                }
            }
        }
        self.sync_streams();
        result
    }

    /// Whether `stream` is to be read: one already drained is deleted right
    /// away instead; on the others the group is made sure of.
    async fn start_reading(&mut self, stream: &str) -> Result<bool, WorkerError> {
        if streams::drop_if_drained(&mut self.conn, &self.member, stream).await? {
            tracing::info!(%stream, "legacy stream had nothing left to read: deleted");
            return Ok(false);
        }
        let group = streams::ensure_group(&mut self.conn, &self.member, stream, false).await?;
        Ok(group != Group::NoStream)
    }
}
