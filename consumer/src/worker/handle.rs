//! Handling a fetched batch: decode, write to MySQL, bury what can never be
//! written, ack the rest, with the spans that join each event to its request.

use super::{Batch, Outcome, Worker, WorkerError};
use crate::dead_letter;
use crate::store::{self, Written};
use crate::streams::{self, Entry};
use shared::{CouponId, CouponKeys, IssueEvent};
use std::collections::BTreeMap;
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

impl Worker {
    /// Writes, buries or acks every entry of `batch`, removing each from it once
    /// done, so that after an error a retry handles only what is left.
    pub async fn handle(&mut self, batch: &mut Batch) -> Result<Outcome, WorkerError> {
        let mut outcome = Outcome::default();
        if batch.reclaimed {
            self.bury_overdelivered(batch, &mut outcome).await?;
            batch.reclaimed = false;
        }
        let mut by_stream: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in batch.entries.drain(..) {
            by_stream.entry(entry.stream.clone()).or_default().push(entry);
        }
        let mut groups = by_stream.into_iter();
        while let Some((stream, entries)) = groups.next() {
            if let Err(err) = self.handle_stream(&stream, &entries, &mut outcome).await {
                batch.entries = entries.into_iter().chain(groups.flat_map(|(_, e)| e)).collect();
                return Err(err);
            }
        }
        Ok(outcome)
    }

    async fn bury_overdelivered(&mut self, batch: &mut Batch, outcome: &mut Outcome) -> Result<(), WorkerError> {
        let mut keep = Vec::with_capacity(batch.entries.len());
        let mut counts = std::collections::HashMap::new();
        let streams_in_batch: Vec<String> = batch
            .entries
            .iter()
            .map(|e| e.stream.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for stream in streams_in_batch {
            let ids: Vec<&str> = batch
                .entries
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.id.as_str())
                .collect();
            for (id, n) in streams::delivery_counts(&mut self.conn, &self.member, &stream, &ids).await? {
                counts.insert((stream.clone(), id), n);
            }
        }
        for entry in std::mem::take(&mut batch.entries) {
            let delivered = counts
                .get(&(entry.stream.clone(), entry.id.clone()))
                .copied()
                .unwrap_or(0);
            if delivered > self.settings.max_deliveries {
                let Some(coupon) = CouponKeys::coupon_of_events_stream(&entry.stream) else {
                    continue;
                };
                let user = IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref())
                    .ok()
                    .map(|e| e.user_id);
                dead_letter::bury(
                    &mut self.conn,
                    &self.member,
                    coupon,
                    &entry,
                    user,
                    &format!("delivered {delivered} times"),
                )
                .await?;
                outcome.dead_lettered += 1;
            } else {
                keep.push(entry);
            }
        }
        batch.entries = keep;
        Ok(())
    }

    async fn handle_stream(
        &mut self,
        stream: &str,
        entries: &[Entry],
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let Some(coupon) = CouponKeys::coupon_of_events_stream(stream) else {
            return Ok(());
        };
        let mut events = Vec::with_capacity(entries.len());
        let mut event_entries = Vec::with_capacity(entries.len());
        for entry in entries {
            match IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref()) {
                Ok(event) if event.coupon_id == coupon => {
                    events.push(event);
                    event_entries.push(entry);
                }
                Ok(event) => {
                    let reason = format!(
                        "wrong_stream: event of coupon {} in stream of coupon {coupon}",
                        event.coupon_id
                    );
                    dead_letter::bury(
                        &mut self.conn,
                        &self.member,
                        coupon,
                        entry,
                        Some(event.user_id),
                        &reason,
                    )
                    .await?;
                    outcome.dead_lettered += 1;
                }
                Err(err) => {
                    dead_letter::bury(
                        &mut self.conn,
                        &self.member,
                        coupon,
                        entry,
                        None,
                        &format!("undecodable: {err}"),
                    )
                    .await?;
                    outcome.dead_lettered += 1;
                }
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let written = self.write_traced(coupon, stream, &events, &event_entries).await?;
        let mut refused = vec![false; events.len()];
        for &(i, refusal) in &written.refused {
            refused[i] = true;
            dead_letter::bury(
                &mut self.conn,
                &self.member,
                coupon,
                event_entries[i],
                Some(events[i].user_id),
                refusal.reason(),
            )
            .await?;
        }
        let ids: Vec<&str> = event_entries
            .iter()
            .zip(&refused)
            .filter(|(_, r)| !**r)
            .map(|(e, _)| e.id.as_str())
            .collect();
        if !ids.is_empty() {
            streams::ack(&mut self.conn, &self.member, stream, &ids).await?;
        }
        metrics::counter!(shared::metrics::EVENTS_PROCESSED, "result" => "inserted").increment(written.inserted);
        metrics::counter!(shared::metrics::EVENTS_PROCESSED, "result" => "duplicate").increment(written.duplicates);
        metrics::counter!(shared::metrics::EVENTS_PROCESSED, "result" => "dead_lettered")
            .increment(written.refused.len() as u64);
        outcome.inserted += written.inserted;
        outcome.duplicates += written.duplicates;
        outcome.dead_lettered += written.refused.len();
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
        entries: &[&Entry],
    ) -> Result<Written, WorkerError> {
        let spans: Vec<(tracing::Span, tracing::Span)> = events
            .iter()
            .zip(entries)
            .map(|(event, entry)| {
                let span = tracing::info_span!("process issue event", otel.kind = "consumer", messaging.system = "redis", messaging.operation.type = "process", messaging.destination.name = %stream, messaging.message.id = %entry.id, coupon.id = coupon.get(), user.id = event.user_id.get(), position = event.position);
                if !event.trace.is_empty() {
                    let _ = span.set_parent(shared::telemetry::extract_context(&event.trace));
                }
                let db_span = tracing::info_span!(parent: &span, "INSERT coupon_issues", otel.kind = "client", db.system = "mysql", db.system.name = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", db.batch.size = events.len());
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
