//! Handling a fetched batch: decode, write to MySQL within the batch's commit
//! lease, bury what can never be written, ack the rest, with the spans that join
//! each event to its request.
//!
//! A batch read from partitions holds events of many coupons: each stream's
//! entries are decoded (the event names its coupon), grouped by coupon, and each
//! coupon's events written in a transaction of its own, coupons in id order (a
//! transaction locks one coupon row, so two consumers never deadlock).
//!
//! Every entry leaves the batch the moment it is buried, dropped or acked, so a
//! retry after an error (MySQL down, an ack that failed) handles only what is
//! left and never buries an entry twice.

use super::{Batch, Book, Outcome, Worker, WorkerError};
use crate::dead_letter::{self, DeadReason, Owner};
use crate::store::{self, WriteError, Written};
use crate::streams::{self, finish::IssuedSet, Entry, Source};
use shared::{CouponId, IssueEvent, Layout};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A stream entry and the event it carries, handled as one.
pub(super) struct Item {
    pub entry: Entry,
    pub event: IssueEvent,
}

impl Borrow<IssueEvent> for Item {
    fn borrow(&self) -> &IssueEvent {
        &self.event
    }
}

/// Where a group of items comes from and how it is handled.
pub(super) struct Origin<'a> {
    pub source: Source,
    pub stream: &'a str,
    pub book: &'a Book,
    /// One entry tried alone (its isolated attempt is forgotten once acked).
    pub isolated: bool,
}

impl Worker {
    /// Writes, buries or acks every entry of `batch`, removing each from it once
    /// done, so that after an error a retry handles only what is left. A group
    /// found missing on the way (Redis lost its data) is recreated and the batch
    /// goes on: its entries are still accepted requests.
    pub async fn handle(&mut self, batch: &mut Batch) -> Result<Outcome, WorkerError> {
        let mut outcome = Outcome::default();
        match self.handle_once(batch, &mut outcome).await {
            Err(WorkerError::Redis(err)) if streams::is_nogroup(&err) => {
                self.recreate_groups().await?;
                self.handle_once(batch, &mut outcome).await?;
            }
            other => other?,
        }
        Ok(outcome)
    }

    async fn handle_once(&mut self, batch: &mut Batch, outcome: &mut Outcome) -> Result<(), WorkerError> {
        if batch.reclaimed {
            self.isolate_overdelivered(batch, outcome).await?;
            batch.reclaimed = false;
        }
        while let Some(entry) = batch.isolated.pop() {
            let mut alone = vec![entry];
            let result = self.handle_stream(&mut alone, &batch.book, true, outcome).await;
            batch.isolated.append(&mut alone);
            result?;
        }
        let mut by_stream: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in batch.entries.drain(..) {
            by_stream.entry(entry.stream.clone()).or_default().push(entry);
        }
        let mut groups = by_stream.into_values();
        while let Some(mut entries) = groups.next() {
            if let Err(err) = self.handle_stream(&mut entries, &batch.book, false, outcome).await {
                batch.entries = entries.into_iter().chain(groups.flatten()).collect();
                return Err(err);
            }
        }
        Ok(())
    }

    /// Handles `entries` (all of one stream; one alone when `isolated`) coupon
    /// by coupon, leaving in it whatever is not done when an error stops it.
    async fn handle_stream(
        &mut self,
        entries: &mut Vec<Entry>,
        book: &Book,
        isolated: bool,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let Some(stream) = entries.first().map(|e| e.stream.clone()) else {
            return Ok(());
        };
        let Some(source) = Source::of(&self.layout, &stream) else {
            // Only our streams are read, so Redis named one we never asked for.
            tracing::error!(%stream, count = entries.len(), "entries from a stream that is no partition's; dropped from the batch");
            entries.clear();
            return Ok(());
        };
        let mut by_coupon: BTreeMap<CouponId, Vec<Item>> = BTreeMap::new();
        for item in self.decode_all(source, entries, outcome).await? {
            by_coupon.entry(item.event.coupon_id).or_default().push(item);
        }
        let origin = Origin {
            source,
            stream: &stream,
            book,
            isolated,
        };
        let mut coupons = by_coupon.into_iter();
        while let Some((coupon, mut items)) = coupons.next() {
            if let Err(err) = self.write_and_ack(coupon, &origin, &mut items, outcome).await {
                let left = items.into_iter().chain(coupons.flat_map(|(_, items)| items));
                entries.extend(left.map(|item| item.entry));
                return Err(err);
            }
        }
        Ok(())
    }

    /// Takes `entries` as items, burying those that can never be written; on an
    /// error `entries` keeps what is not done.
    async fn decode_all(
        &mut self,
        source: Source,
        entries: &mut Vec<Entry>,
        outcome: &mut Outcome,
    ) -> Result<Vec<Item>, WorkerError> {
        let mut items = Vec::with_capacity(entries.len());
        let mut undecoded = std::mem::take(entries).into_iter();
        while let Some(entry) = undecoded.next() {
            match decode_for(&self.layout, source, &entry) {
                Ok(event) => items.push(Item { entry, event }),
                Err((owner, reason)) => {
                    if let Err(err) = self.bury((source, &entry), owner, &reason).await {
                        entries.extend(items.into_iter().map(|item| item.entry));
                        entries.push(entry);
                        entries.extend(undecoded);
                        return Err(err.into());
                    }
                    outcome.dead_lettered += 1;
                }
            }
        }
        Ok(items)
    }

    /// Writes `items` (all of `coupon`) within their lease, buries the refused
    /// and acks the rest; each leaves `items` once done.
    async fn write_and_ack(
        &mut self,
        coupon: CouponId,
        origin: &Origin<'_>,
        items: &mut Vec<Item>,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let written = loop {
            if items.is_empty() {
                return Ok(());
            }
            match self.write_traced(coupon, origin, items).await {
                Ok(written) => break written,
                // Confirmed again: what is still pending is renewed and written
                // on the next turn; what Redis lost is dropped or buried.
                Err(WriteError::LeaseExpired) => self.reconfirm(coupon, origin, items, outcome).await?,
                Err(WriteError::Mysql(err)) => return Err(err.into()),
            }
        };
        self.bury_refused(origin.source, items, &written, outcome).await?;
        // All written now (or already there): their users go back into the set.
        let ids: Vec<&str> = items.iter().map(|i| i.entry.id.as_str()).collect();
        let users: Vec<i64> = items.iter().map(|i| i.event.user_id.get()).collect();
        let keys = self.layout.coupon(coupon);
        let set = origin.source.is_partition().then_some(IssuedSet {
            meta: &keys.meta,
            issued: &keys.issued,
        });
        streams::ack_written(&mut self.conn, &self.member, origin.stream, set, &ids, &users).await?;
        if origin.isolated {
            self.forget_attempts(origin.source, &ids).await?;
        }
        origin.book.release(origin.stream, ids);
        items.clear();
        record(&written);
        outcome.inserted += written.inserted;
        outcome.duplicates += written.duplicates;
        Ok(())
    }

    /// Buries the items MySQL refused for good. Each leaves `items` as it is
    /// buried, highest index first so the indexes still to come stay valid.
    async fn bury_refused(
        &mut self,
        source: Source,
        items: &mut Vec<Item>,
        written: &Written,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let mut refused = written.refused.clone();
        refused.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, refusal) in refused {
            let item = &items[i];
            let (owner, reason) = (Owner::from(&item.event), DeadReason::from(refusal));
            let at = (source, &item.entry);
            self.bury(at, owner, &reason).await?;
            items.remove(i);
            outcome.dead_lettered += 1;
        }
        Ok(())
    }

    /// Buries entry `at` (of its source) with `reason` (see [`dead_letter::bury`]).
    pub(super) async fn bury(
        &mut self,
        at: (Source, &Entry),
        owner: Owner,
        reason: &DeadReason,
    ) -> redis::RedisResult<()> {
        dead_letter::bury(&mut self.conn, &self.layout, &self.member, at, owner, reason).await
    }

    /// The MySQL transaction, with a span per event under the API request that
    /// accepted it, and under each a MySQL client span covering the transaction
    /// that wrote its row: one request reads as one trace across both services.
    async fn write_traced(&self, coupon: CouponId, origin: &Origin<'_>, items: &[Item]) -> Result<Written, WriteError> {
        let stream = origin.stream;
        let spans: Vec<(tracing::Span, tracing::Span)> = items
            .iter()
            .map(|Item { entry, event }| {
                let span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, "process issue event", otel.kind = "consumer", otel.status_code = tracing::field::Empty, messaging.system = "redis", messaging.operation.type = "process", messaging.destination.name = %stream, messaging.message.id = %entry.id, coupon.id = coupon.get(), user.id = event.user_id.get(), position = event.position);
                if !event.trace.is_empty() {
                    let _ = span.set_parent(shared::telemetry::extract_context(&event.trace));
                }
                let db_span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, parent: &span, "INSERT coupon_issues", otel.kind = "client", otel.status_code = tracing::field::Empty, db.system = "mysql", db.system.name = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", db.batch.size = items.len());
                (span, db_span)
            })
            .collect();
        let lease = origin
            .book
            .lease(stream, items.iter().map(|i| i.entry.id.as_str()).collect());
        let started = Instant::now();
        let result = store::write_issues(&self.db, coupon, items, &lease).await;
        metrics::histogram!(shared::metrics::MYSQL_WRITE_DURATION).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            for (span, db_span) in &spans {
                db_span.record("otel.status_code", "ERROR");
                span.record("otel.status_code", "ERROR");
            }
        }
        drop(spans);
        result
    }
}

/// The entry's event, or why it can never be written (and whose it was, as
/// far as known).
fn decode_for(layout: &Layout, source: Source, entry: &Entry) -> Result<IssueEvent, (Owner, DeadReason)> {
    match IssueEvent::decode(entry.payload.as_deref(), entry.position.as_deref()) {
        Ok(event) if source.holds(layout, event.coupon_id) => Ok(event),
        Ok(event) => Err((
            Owner::from(&event),
            DeadReason::WrongStream {
                event_coupon: event.coupon_id,
                stream: entry.stream.clone(),
            },
        )),
        Err(err) => Err((
            Owner {
                coupon: source.coupon(),
                user: None,
            },
            DeadReason::Undecodable(err.to_string()),
        )),
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
