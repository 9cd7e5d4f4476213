//! Draining an upgrade's leftovers: the coupons' streams of the layout before
//! partitions (`coupon:{<id>}:events`), which an API of the old version filled.
//!
//! At start, and then every `LEGACY_SCAN_MS` until a look finds none, every
//! master is scanned for them. Each found is read like a partition (same group,
//! same handling: its events carry their coupon), a few at a time so a
//! deployment of many coupons does not bring back a read over every coupon's
//! stream; once the group has read and acked every entry of one, it is deleted
//! (in one step with that check, so an entry added meanwhile is never lost).
//! The API rebuilds such a coupon's new state only once its legacy stream is gone.

use super::{Worker, WorkerError};
use crate::streams::{self, Group};
use shared::LegacyKeys;
use std::collections::VecDeque;
use std::time::Instant;

/// Legacy streams read at once; the others wait their turn.
const READ_AT_ONCE: usize = 64;

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

    /// Scans every master for legacy streams, queues the new ones and starts
    /// reading as many as allowed. Once a scan finds none, scanning stops.
    async fn scan_legacy(&mut self) -> Result<(), WorkerError> {
        let found = streams::scan::everywhere(&mut self.conn, LegacyKeys::EVENTS_PATTERN, "stream").await?;
        let found: Vec<String> = found
            .into_iter()
            .filter(|key| LegacyKeys::coupon_of_events_stream(key).is_some())
            .collect();
        if found.is_empty() {
            tracing::debug!("no legacy stream left: no longer looking for them");
            self.legacy.next_scan = None;
            return Ok(());
        }
        tracing::info!(
            count = found.len(),
            "found streams of the layout before partitions: draining them"
        );
        for stream in found {
            if !self.legacy.knows(&stream) {
                self.legacy.waiting.push_back(stream);
            }
        }
        self.top_up_legacy().await
    }

    /// Deletes the legacy streams read to their end and acked, then starts
    /// reading waiting ones in their place.
    pub(super) async fn drain_legacy(&mut self) -> Result<(), WorkerError> {
        for stream in self.legacy.reading.clone() {
            if streams::drop_if_drained(&mut self.conn, &self.member, &stream).await? {
                tracing::info!(%stream, "legacy stream drained and deleted");
                self.legacy.forget(&stream);
                self.sync_streams();
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
