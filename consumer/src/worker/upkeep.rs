//! The worker's periodic duties, each O(streams read), never O(coupons):
//! reclaiming entries idle with other members, trimming what the group is done
//! with, and deleting drained legacy streams. (The lag is measured by its own
//! task, [`super::lag`], so that it is reported while the loop is busy too.)

use super::{Batch, Worker, WorkerError, TRIM_EVERY};
use crate::streams::{self, Source};
use std::time::Instant;

impl Worker {
    /// XAUTOCLAIMs entries idle past the claim time from every stream (up to a
    /// batch size each); a stream that had pending entries deleted has its
    /// coupons' users reconciled.
    pub(super) async fn reclaim(&mut self) -> Result<Batch, WorkerError> {
        let idle_ms = self.settings.claim_idle.as_millis() as u64;
        let book = self.leases.open();
        let mut entries = Vec::new();
        for stream in self.streams.clone() {
            let sent = Instant::now();
            match streams::autoclaim(&mut self.conn, &self.member, &stream, idle_ms, self.settings.batch_size).await {
                Ok((claimed, deleted)) => {
                    if let Some(source) = Source::of(&self.layout, &stream).filter(|_| deleted > 0) {
                        // Redis dropped them from the PEL: their users are found by reconciling.
                        tracing::warn!(%stream, deleted, "pending entries were deleted from the stream before being processed");
                        self.unreconciled.insert(source);
                    }
                    book.hold(&claimed, sent);
                    entries.extend(claimed);
                }
                Err(err) if streams::is_nogroup(&err) => self.recreate_groups().await?,
                Err(err) => return Err(err.into()),
            }
        }
        self.reconcile_pending().await;
        if !entries.is_empty() {
            tracing::info!(count = entries.len(), "reclaimed entries idle with other members");
            metrics::counter!(shared::metrics::RECLAIMED).increment(entries.len() as u64);
        }
        Ok(Batch {
            entries,
            reclaimed: true,
            book,
            ..Batch::default()
        })
    }

    /// Trims every partition stream, then deletes the legacy streams drained.
    pub(super) async fn trim_all(&mut self) -> Result<(), WorkerError> {
        self.next_trim = Instant::now() + TRIM_EVERY;
        for partition in self.layout.all() {
            match streams::trim(&mut self.conn, &self.member, &partition.events).await {
                Ok(()) => {}
                Err(err) if streams::is_nogroup(&err) || err.code() == Some("ERR") => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.drain_legacy().await
    }
}
