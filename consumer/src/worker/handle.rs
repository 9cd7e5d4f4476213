//! Handling a fetched batch: decode, write to MySQL within the batch's commit
//! lease, bury what can never be written, ack the rest, with the spans that join
//! each event to its request.
//!
//! A batch read from partitions holds events of many coupons (and of several
//! streams): all of them are written in one transaction, which locks their
//! coupon rows in id order (see [`store::write_issues`]), so a batch costs one
//! commit however many coupons it touches, and two consumers never deadlock.
//! The acks then go out together, one per stream and coupon (a coupon's issued
//! set shares its partition stream's slot).
//!
//! Every entry leaves the batch the moment it is buried, dropped or acked, so a
//! retry after an error (MySQL down, an ack that failed) handles only what is
//! left and never buries an entry twice.

use super::{Batch, Book, EntryRef, Outcome, Worker, WorkerError};
use crate::dead_letter::{self, DeadReason, Owner};
use crate::store::{self, WriteError, Written};
use crate::streams::finish::{IssuedSet, WrittenUsers};
use crate::streams::{self, Entry, Source};
use shared::{CouponId, IssueEvent, Layout};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A stream entry, the stream it came from and the event it carries, handled as one.
pub(super) struct Item {
    pub source: Source,
    pub entry: Entry,
    pub event: IssueEvent,
}

impl Borrow<IssueEvent> for Item {
    fn borrow(&self) -> &IssueEvent {
        &self.event
    }
}

/// What [`Worker::ack_all`] got done: the entries acked (by stream and id), and
/// the last failure, if any call failed (its entries stay to be retried).
#[derive(Default)]
struct Acked {
    done: HashSet<(String, String)>,
    failure: Option<WorkerError>,
}

/// The acks of one stream and coupon: one script call.
struct Ack<'a> {
    stream: &'a str,
    coupon: CouponId,
    source: Source,
    ids: Vec<&'a str>,
    users: Vec<i64>,
    /// When each of `users` was issued (unix ms).
    issued_at_ms: Vec<i64>,
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
            let result = self.handle_entries(&mut alone, &batch.book, true, outcome).await;
            batch.isolated.append(&mut alone);
            result?;
        }
        let mut entries = std::mem::take(&mut batch.entries);
        let result = self.handle_entries(&mut entries, &batch.book, false, outcome).await;
        batch.entries = entries;
        result
    }

    /// Handles `entries` (one alone when `isolated`) in one transaction,
    /// leaving in it whatever is not done when an error stops it.
    async fn handle_entries(
        &mut self,
        entries: &mut Vec<Entry>,
        book: &Book,
        isolated: bool,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let mut items = self.decode_all(entries, book, outcome).await?;
        let result = self.write_and_ack(&mut items, book, isolated, outcome).await;
        entries.extend(items.into_iter().map(|item| item.entry));
        result
    }

    /// Takes `entries` as items, burying those that can never be written; on an
    /// error `entries` keeps what is not done.
    async fn decode_all(
        &mut self,
        entries: &mut Vec<Entry>,
        book: &Book,
        outcome: &mut Outcome,
    ) -> Result<Vec<Item>, WorkerError> {
        let mut items = Vec::with_capacity(entries.len());
        let mut undecoded = std::mem::take(entries).into_iter();
        while let Some(entry) = undecoded.next() {
            let Some(source) = Source::of(&self.layout, &entry.stream) else {
                // Only our streams are read, so Redis named one we never asked for.
                tracing::error!(stream = %entry.stream, entry = %entry.id, "entry from a stream that is no partition's; dropped from the batch");
                book.release(&entry.stream, [entry.id.as_str()]);
                continue;
            };
            match decode_for(&self.layout, source, &entry) {
                Ok(event) => items.push(Item { source, entry, event }),
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

    /// Writes `items` within their lease, buries the refused and acks the
    /// rest; each leaves `items` once done.
    async fn write_and_ack(
        &mut self,
        items: &mut Vec<Item>,
        book: &Book,
        isolated: bool,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let written = loop {
            if items.is_empty() {
                return Ok(());
            }
            match self.write_traced(items, book).await {
                Ok(written) => break written,
                // Confirmed again: what is still pending is renewed and written
                // on the next turn; what Redis lost is dropped or buried.
                Err(WriteError::LeaseExpired) => self.reconfirm(book, items, outcome).await?,
                Err(WriteError::Mysql(err)) => return Err(err.into()),
            }
        };
        record(&written, items);
        outcome.inserted += written.inserted.len() as u64;
        outcome.duplicates += written.duplicates;
        self.bury_refused(items, &written, outcome).await?;
        // All written now (or already there): their users go back into the sets.
        let acked = self.ack_all(items, &written, book, isolated).await;
        items.retain(|item| !acked.done.contains(&(item.entry.stream.clone(), item.entry.id.clone())));
        match acked.failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Acks every item, one script call per stream and coupon, all in flight
    /// at once; forgets the isolated attempts of those acked when `isolated`.
    async fn ack_all(&mut self, items: &[Item], written: &Written, book: &Book, isolated: bool) -> Acked {
        let mut groups: BTreeMap<(&str, CouponId), Ack<'_>> = BTreeMap::new();
        for item in items {
            let ack = groups
                .entry((item.entry.stream.as_str(), item.event.coupon_id))
                .or_insert_with(|| Ack {
                    stream: &item.entry.stream,
                    coupon: item.event.coupon_id,
                    source: item.source,
                    ids: Vec::new(),
                    users: Vec::new(),
                    issued_at_ms: Vec::new(),
                });
            let user = item.event.user_id.get();
            #[allow(clippy::expect_used)]
            let issued_at = *written
                .issued_at_ms
                .get(&(item.event.coupon_id, user))
                .expect("the refused left `items` before the acks: every one left was inserted or found written");
            ack.ids.push(&item.entry.id);
            ack.users.push(user);
            ack.issued_at_ms.push(issued_at);
        }
        let (layout, member) = (&self.layout, &self.member);
        let calls = groups.into_values().map(|ack| {
            let mut conn = self.conn.clone();
            async move {
                let keys = layout.coupon(ack.coupon);
                let set = ack.source.is_partition().then_some(IssuedSet {
                    coupon: ack.coupon,
                    keys: &keys,
                });
                let users = WrittenUsers {
                    users: &ack.users,
                    issued_at_ms: &ack.issued_at_ms,
                };
                let result = streams::ack_written(&mut conn, member, ack.stream, set, &ack.ids, users).await;
                (ack, result)
            }
        });
        let mut acked = Acked::default();
        for (ack, result) in futures::future::join_all(calls).await {
            let result = match result {
                Ok(()) if isolated => self.forget_attempts(ack.source, &ack.ids).await,
                other => other.map_err(WorkerError::from),
            };
            match result {
                Ok(()) => {
                    book.release(ack.stream, ack.ids.iter().copied());
                    acked
                        .done
                        .extend(ack.ids.iter().map(|id| (ack.stream.to_string(), id.to_string())));
                }
                Err(err) => acked.failure = Some(err),
            }
        }
        acked
    }

    /// Buries the items MySQL refused for good. Each leaves `items` as it is
    /// buried, highest index first so the indexes still to come stay valid.
    async fn bury_refused(
        &mut self,
        items: &mut Vec<Item>,
        written: &Written,
        outcome: &mut Outcome,
    ) -> Result<(), WorkerError> {
        let mut refused = written.refused.clone();
        refused.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, refusal) in refused {
            let item = &items[i];
            let (owner, reason) = (Owner::from(&item.event), DeadReason::from(refusal));
            self.bury((item.source, &item.entry), owner, &reason).await?;
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
    async fn write_traced(&self, items: &[Item], book: &Book) -> Result<Written, WriteError> {
        let spans: Vec<(tracing::Span, tracing::Span)> = items
            .iter()
            .map(|Item { entry, event, .. }| {
                let span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, "process issue event", otel.kind = "consumer", otel.status_code = tracing::field::Empty, messaging.system = "redis", messaging.operation.type = "process", messaging.destination.name = %entry.stream, messaging.message.id = %entry.id, coupon.id = event.coupon_id.get(), user.id = event.user_id.get(), position = event.position);
                if !event.trace.is_empty() {
                    let _ = span.set_parent(shared::telemetry::extract_context(&event.trace));
                }
                let db_span = tracing::info_span!(target: shared::telemetry::SPAN_TARGET, parent: &span, "INSERT coupon_issues", otel.kind = "client", otel.status_code = tracing::field::Empty, db.system = "mysql", db.system.name = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", db.batch.size = items.len());
                (span, db_span)
            })
            .collect();
        let lease = book.lease(items.iter().map(|i| EntryRef::from(&i.entry)).collect());
        let started = Instant::now();
        let result = store::write_issues(&self.db, items, &lease).await;
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

/// The outcome counters, and for each row inserted the time from its
/// acceptance (the API's clock) to now, just after the commit (ours; a
/// negative difference from clock skew counts as 0).
fn record(written: &Written, items: &[Item]) {
    let count = |result: &'static str, n: u64| {
        metrics::counter!(shared::metrics::EVENTS_PROCESSED, "result" => result).increment(n);
    };
    count("inserted", written.inserted.len() as u64);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let waited = metrics::histogram!(shared::metrics::ACCEPTED_TO_WRITTEN);
    for item in written.inserted.iter().filter_map(|&i| items.get(i)) {
        waited.record(now_ms.saturating_sub(item.event.accepted_at_ms).max(0) as f64 / 1000.0);
    }
    count("duplicate", written.duplicates);
    count("dead_lettered", written.refused.len() as u64);
}
