//! Entries delivered more than `MAX_DELIVERIES` times: a poison entry (one
//! that crashes or stalls whoever takes it) or a healthy one whose count grew
//! for other reasons: prefetched reads, startup recovery, a cluster read that
//! failed half-way, rolling restarts. Neither is buried for its count alone:
//! each is tried alone, in a transaction of its own, after counting the attempt
//! in its partition's attempts hash; only when those isolated attempts pass the cap
//! (each ended by a crash or a stall, never by a retry in memory) is it buried.

use super::{Batch, Outcome, Worker, WorkerError};
use crate::dead_letter::{DeadReason, Owner};
use crate::streams::{self, Entry, Source};
use std::collections::{BTreeMap, HashMap};

impl Worker {
    /// Moves the batch's over-delivered entries to `batch.isolated`, counting
    /// one isolated attempt each, and buries those past the cap.
    pub(super) async fn isolate_overdelivered(
        &mut self,
        batch: &mut Batch,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let counts = self.delivery_counts(&batch.entries).await?;
        let cap = self.settings.max_deliveries;
        let (over, rest): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut batch.entries)
            .into_iter()
            .partition(|e| counts.get(&(e.stream.clone(), e.id.clone())).is_some_and(|&n| n > cap));
        batch.entries = rest;
        let mut over = over.into_iter();
        while let Some(entry) = over.next() {
            if let Err(err) = self.isolate(entry.clone(), batch, outcome).await {
                // Back to the batch, to be counted on the retry (again, if only
                // the bury failed: one attempt too many, never one too few).
                batch.entries.push(entry);
                batch.entries.extend(over);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Counts one isolated attempt at `entry`; buries it past the cap, else
    /// queues it to be tried alone.
    async fn isolate(&mut self, entry: Entry, batch: &mut Batch, outcome: &mut Outcome) -> Result<(), WorkerError> {
        let Some(source) = Source::of(&self.layout, &entry.stream) else {
            batch.entries.push(entry);
            return Ok(());
        };
        let attempts: u64 = redis::cmd("HINCRBY")
            .arg(source.partition(&self.layout).attempts)
            .arg(source.attempts_field(&self.layout, &entry.id))
            .arg(1)
            .query_async(&mut self.conn)
            .await?;
        if attempts <= self.settings.max_deliveries as u64 {
            tracing::info!(stream = %entry.stream, entry = %entry.id, attempts, "entry delivered too often: trying it alone");
            batch.isolated.push(entry);
            return Ok(());
        }
        let (owner, reason) = (Owner::of(source, &entry), DeadReason::TooManyAttempts { attempts });
        self.bury((source, &entry), owner, &reason).await?;
        batch.book.release(&entry.stream, [entry.id.as_str()]);
        outcome.dead_lettered += 1;
        Ok(())
    }

    /// How many times each entry (pending with this member) was delivered, by
    /// stream and id. A missing group (Redis lost its data) is recreated: the
    /// counts went with it.
    async fn delivery_counts(&mut self, entries: &[Entry]) -> Result<HashMap<(String, String), usize>, WorkerError> {
        let mut ids_by_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for entry in entries {
            ids_by_stream.entry(&entry.stream).or_default().push(&entry.id);
        }
        let mut counts = HashMap::new();
        for (stream, ids) in ids_by_stream {
            match streams::delivery_counts(&mut self.conn, &self.member, stream, &ids).await {
                Ok(found) => counts.extend(found.into_iter().map(|(id, n)| ((stream.to_string(), id), n))),
                Err(err) if streams::is_nogroup(&err) => self.recreate_groups().await?,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(counts)
    }

    /// Forgets the isolated attempts at `ids` of `source` once they are acked.
    pub(super) async fn forget_attempts(&mut self, source: Source, ids: &[&str]) -> Result<(), WorkerError> {
        let fields: Vec<String> = ids.iter().map(|id| source.attempts_field(&self.layout, id)).collect();
        let _: i64 = redis::cmd("HDEL")
            .arg(source.partition(&self.layout).attempts)
            .arg(fields)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}
