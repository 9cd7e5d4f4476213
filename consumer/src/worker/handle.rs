//! Handling a fetched batch: decode, write to MySQL, bury what can never be
//! written, ack the rest, with the spans that join each event to its request.
//!
//! Every entry leaves the batch the moment it is buried or acked, so a retry
//! after an error (MySQL down, an ack that failed) handles only what is left and
//! never buries an entry twice.

use super::{Batch, Outcome, Worker, WorkerError};
use crate::dead_letter;
use crate::store::{self, Written};
use crate::streams::{self, Entry};
use shared::{CouponId, CouponKeys, IssueEvent, UserId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

impl Worker {
    /// Writes, buries or acks every entry of `batch`, removing each from it once
    /// done, so that after an error a retry handles only what is left.
    pub async fn handle(&mut self, batch: &mut Batch) -> Result<Outcome, WorkerError> {
        let mut outcome = Outcome::default();
        if batch.reclaimed {
            self.bury_overdelivered(&mut batch.entries, &mut outcome).await?;
            batch.reclaimed = false;
        }
        let mut by_stream: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in batch.entries.drain(..) {
            by_stream.entry(entry.stream.clone()).or_default().push(entry);
        }
        let mut groups = by_stream.into_iter();
        while let Some((stream, mut entries)) = groups.next() {
            if let Err(err) = self.handle_stream(&stream, &mut entries, &mut outcome).await {
                batch.entries = entries.into_iter().chain(groups.flat_map(|(_, e)| e)).collect();
                return Err(err);
            }
        }
        Ok(outcome)
    }

    /// Buries the entries delivered more than `MAX_DELIVERIES` times (they kept
    /// killing or stalling whoever took them).
    async fn bury_overdelivered(&mut self, entries: &mut Vec<Entry>, outcome: &mut Outcome) -> Result<(), WorkerError> {
        let mut ids_by_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for entry in entries.iter() {
            ids_by_stream.entry(&entry.stream).or_default().push(&entry.id);
        }
        let mut counts = HashMap::new();
        for (stream, ids) in ids_by_stream {
            for (id, n) in streams::delivery_counts(&mut self.conn, &self.member, stream, &ids).await? {
                counts.insert((stream.to_string(), id), n);
            }
        }
        let mut i = 0;
        while i < entries.len() {
            let entry = &entries[i];
            // Not pending with us (acked meanwhile): not over-delivered either.
            let delivered = counts
                .get(&(entry.stream.clone(), entry.id.clone()))
                .copied()
                .unwrap_or(0);
            match CouponKeys::coupon_of_events_stream(&entry.stream) {
                Some(coupon) if delivered > self.settings.max_deliveries => {
                    let user = IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref())
                        .ok()
                        .map(|e| e.user_id);
                    let reason = format!("delivered {delivered} times");
                    dead_letter::bury(&mut self.conn, &self.member, coupon, entry, user, &reason).await?;
                    entries.remove(i);
                    outcome.dead_lettered += 1;
                }
                _ => i += 1,
            }
        }
        Ok(())
    }

    async fn handle_stream(
        &mut self,
        stream: &str,
        entries: &mut Vec<Entry>,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let Some(coupon) = CouponKeys::coupon_of_events_stream(stream) else {
            // Only coupon streams are read, so Redis named one we never asked for.
            tracing::error!(%stream, count = entries.len(), "entries from a stream that is no coupon's; left pending");
            entries.clear();
            return Ok(());
        };
        let mut events = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            match decode_for(coupon, &entries[i]) {
                Ok(event) => {
                    events.push(event);
                    i += 1;
                }
                Err((user, reason)) => {
                    dead_letter::bury(&mut self.conn, &self.member, coupon, &entries[i], user, &reason).await?;
                    entries.remove(i);
                    outcome.dead_lettered += 1;
                }
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let written = self.write_traced(coupon, stream, &events, entries).await?;
        let refused_at: HashSet<usize> = written.refused.iter().map(|&(i, _)| i).collect();
        let written_users: Vec<i64> = (0..events.len())
            .filter(|i| !refused_at.contains(i))
            .map(|i| events[i].user_id.get())
            .collect();
        // Highest index first, so the indexes still to come stay valid.
        let mut refused = written.refused.clone();
        refused.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, refusal) in refused {
            let user = Some(events[i].user_id);
            dead_letter::bury(
                &mut self.conn,
                &self.member,
                coupon,
                &entries[i],
                user,
                refusal.reason(),
            )
            .await?;
            entries.remove(i);
            outcome.dead_lettered += 1;
        }
        if !entries.is_empty() {
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let issued = CouponKeys::new(coupon).issued;
            streams::ack_written(&mut self.conn, &self.member, stream, &issued, &ids, &written_users).await?;
            entries.clear();
        }
        record(&written);
        outcome.inserted += written.inserted;
        outcome.duplicates += written.duplicates;
        Ok(())
    }

    /// The MySQL transaction, with a span per event under the API request that
    /// accepted it, and under each a MySQL client span covering the transaction
    /// that wrote its row: one request reads as one trace across both services.
    async fn write_traced(
        &self,
        coupon: CouponId,
        stream: &str,
        events: &[IssueEvent],
        entries: &[Entry],
    ) -> Result<Written, WorkerError> {
        let spans: Vec<(tracing::Span, tracing::Span)> = events
            .iter()
            .zip(entries)
            .map(|(event, entry)| {
                let span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, "process issue event", otel.kind = "consumer", otel.status_code = tracing::field::Empty, messaging.system = "redis", messaging.operation.type = "process", messaging.destination.name = %stream, messaging.message.id = %entry.id, coupon.id = coupon.get(), user.id = event.user_id.get(), position = event.position);
                if !event.trace.is_empty() {
                    let _ = span.set_parent(shared::telemetry::extract_context(&event.trace));
                }
                let db_span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, parent: &span, "INSERT coupon_issues", otel.kind = "client", otel.status_code = tracing::field::Empty, db.system = "mysql", db.system.name = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", db.batch.size = events.len());
                (span, db_span)
            })
            .collect();
        let started = Instant::now();
        let result = store::write_issues(&self.db, coupon, events).await;
        metrics::histogram!(shared::metrics::MYSQL_WRITE_DURATION).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            for (span, db_span) in &spans {
                db_span.record("otel.status_code", "ERROR");
                span.record("otel.status_code", "ERROR");
            }
        }
        drop(spans);
        Ok(result?)
    }
}

/// The entry's event, or why it can never be written (and whose it was, if known).
fn decode_for(coupon: CouponId, entry: &Entry) -> Result<IssueEvent, (Option<UserId>, String)> {
    match IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref()) {
        Ok(event) if event.coupon_id == coupon => Ok(event),
        Ok(event) => Err((
            Some(event.user_id),
            format!(
                "wrong_stream: event of coupon {} in stream of coupon {coupon}",
                event.coupon_id
            ),
        )),
        Err(err) => Err((None, format!("undecodable: {err}"))),
    }
}

fn record(written: &Written) {
    let count = |result: &'static str, n: u64| {
        metrics::counter!(shared::metrics::EVENTS_PROCESSED, "result" => result).increment(n);
    };
    count("inserted", written.inserted);
    count("duplicate", written.duplicates);
    count("dead_lettered", written.refused.len() as u64);
}
