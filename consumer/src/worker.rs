//! The consumer's work: one [`Worker::fetch`] + [`Worker::handle`] step that
//! tests can drive, and [`Worker::run`], the loop around it with backoff and
//! graceful shutdown.
//!
//! An entry is acked only after the transaction that wrote it committed, so a
//! crash anywhere leaves it pending, to be reclaimed and written (idempotently)
//! again. While MySQL is down the batch is retried in memory and its entries kept
//! alive, so the delivery count measures crashes, not outages.

use crate::config::ConsumerConfig;
use crate::dead_letter;
use crate::store::{self, Written};
use crate::streams::{self, Entry, Member};
use redis::aio::ConnectionManager;
use shared::{CouponId, CouponKeys, IssueEvent};
use sqlx::MySqlPool;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why a step failed; the batch it was on stays pending and is retried.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("mysql: {0}")]
    Mysql(#[from] sqlx::Error),
}

/// Entries fetched for one step, and whether their delivery counts need checking
/// (reclaimed or recovered entries may have been delivered many times).
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub reclaimed: bool,
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub dead_lettered: usize,
}

/// Tunables of the loop, from [`ConsumerConfig`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub batch_size: usize,
    pub block: Duration,
    pub claim_idle: Duration,
    pub max_deliveries: usize,
    pub refresh: Duration,
}

impl From<&ConsumerConfig> for Settings {
    fn from(c: &ConsumerConfig) -> Self {
        Self {
            batch_size: c.batch_size as usize,
            block: c.block(),
            claim_idle: c.claim_idle(),
            max_deliveries: c.max_deliveries as usize,
            refresh: c.refresh(),
        }
    }
}

pub struct Worker {
    member: Member,
    /// Only for blocking XREADGROUP: a blocked read would stall anything sharing it.
    reader: ConnectionManager,
    conn: ConnectionManager,
    db: MySqlPool,
    settings: Settings,
    streams: Vec<String>,
    next_refresh: Instant,
    next_reclaim: Instant,
    next_trim: Instant,
}

impl Worker {
    pub fn new(
        member: Member,
        reader: ConnectionManager,
        conn: ConnectionManager,
        db: MySqlPool,
        settings: Settings,
    ) -> Self {
        let now = Instant::now();
        Self {
            member,
            reader,
            conn,
            db,
            settings,
            streams: Vec::new(),
            next_refresh: now,
            next_reclaim: now,
            next_trim: now,
        }
    }

    /// Re-reads the active coupons (from MySQL, which survives a Redis data loss)
    /// and makes sure the group exists on each one's stream.
    pub async fn refresh_streams(&mut self) -> Result<(), WorkerError> {
        let active = store::active_coupons(&self.db).await?;
        for id in active {
            let stream = CouponKeys::new(id).events;
            if !self.streams.contains(&stream) {
                streams::ensure_group(&mut self.conn, &self.member, &stream).await?;
                self.streams.push(stream);
            }
        }
        self.next_refresh = Instant::now() + self.settings.refresh;
        Ok(())
    }

    /// Recreates the group on every known stream (after Redis lost it).
    async fn recreate_groups(&mut self) -> redis::RedisResult<()> {
        for stream in self.streams.clone() {
            streams::ensure_group(&mut self.conn, &self.member, &stream).await?;
        }
        Ok(())
    }

    /// Entries this member left pending in an earlier life (same name).
    pub async fn recover(&mut self) -> Result<Batch, WorkerError> {
        self.refresh_streams().await?;
        let mut entries = Vec::new();
        for stream in self.streams.clone() {
            entries
                .extend(streams::own_pending(&mut self.conn, &self.member, &stream, self.settings.batch_size).await?);
        }
        Ok(Batch {
            entries,
            reclaimed: true,
        })
    }

    /// The next entries to handle: reclaimed ones when due, else new ones
    /// (blocking up to the block time).
    pub async fn fetch(&mut self) -> Result<Batch, WorkerError> {
        let now = Instant::now();
        if now >= self.next_refresh {
            // Keep reading the streams we know while MySQL is away.
            if let Err(err) = self.refresh_streams().await {
                tracing::warn!(%err, "refreshing the list of active coupons failed");
                self.next_refresh = now + self.settings.refresh;
            }
        }
        if now >= self.next_trim {
            self.trim_all().await?;
        }
        if now >= self.next_reclaim {
            self.next_reclaim = now + self.settings.claim_idle / 2;
            let batch = self.reclaim().await?;
            if !batch.entries.is_empty() {
                return Ok(batch);
            }
        }
        if self.streams.is_empty() {
            tokio::time::sleep(self.settings.block).await;
            return Ok(Batch::default());
        }
        let block_ms = self.settings.block.as_millis() as u64;
        match streams::read_new(
            &mut self.reader,
            &self.member,
            &self.streams,
            self.settings.batch_size,
            block_ms,
        )
        .await
        {
            Ok(entries) => {
                metrics::histogram!(shared::metrics::BATCH_SIZE).record(entries.len() as f64);
                Ok(Batch {
                    entries,
                    reclaimed: false,
                })
            }
            Err(err) if streams::is_nogroup(&err) => {
                tracing::warn!("consumer group missing (Redis lost its data?), recreating it");
                self.recreate_groups().await?;
                Ok(Batch::default())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// XAUTOCLAIMs entries idle past the claim time from every stream.
    async fn reclaim(&mut self) -> Result<Batch, WorkerError> {
        let idle_ms = self.settings.claim_idle.as_millis() as u64;
        let mut entries = Vec::new();
        for stream in self.streams.clone() {
            if entries.len() >= self.settings.batch_size {
                break;
            }
            let want = self.settings.batch_size - entries.len();
            match streams::autoclaim(&mut self.conn, &self.member, &stream, idle_ms, want).await {
                Ok((claimed, deleted)) => {
                    if deleted > 0 {
                        // Redis already dropped them from the PEL; nothing is left to write.
                        tracing::warn!(%stream, deleted, "pending entries were deleted from the stream before being processed");
                    }
                    entries.extend(claimed);
                }
                Err(err) if streams::is_nogroup(&err) => self.recreate_groups().await?,
                Err(err) => return Err(err.into()),
            }
        }
        if !entries.is_empty() {
            tracing::info!(count = entries.len(), "reclaimed entries idle with other members");
            metrics::counter!(shared::metrics::RECLAIMED).increment(entries.len() as u64);
        }
        Ok(Batch {
            entries,
            reclaimed: true,
        })
    }

    async fn trim_all(&mut self) -> Result<(), WorkerError> {
        self.next_trim = Instant::now() + Duration::from_secs(5);
        for stream in self.streams.clone() {
            let Some(coupon) = CouponKeys::coupon_of_events_stream(&stream) else {
                continue;
            };
            match streams::trim(&mut self.conn, &self.member, &stream).await {
                Ok((len, pending)) => {
                    metrics::gauge!(shared::metrics::STREAM_LENGTH, "coupon" => coupon.to_string()).set(len as f64);
                    metrics::gauge!(shared::metrics::STREAM_PENDING, "coupon" => coupon.to_string())
                        .set(pending as f64);
                }
                Err(err) if streams::is_nogroup(&err) || err.code() == Some("ERR") => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

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

    /// Keeps the batch's entries ours while we retry it (see [`streams::keep_alive`]).
    async fn keep_alive(&mut self, batch: &Batch) {
        let mut by_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for entry in &batch.entries {
            by_stream
                .entry(entry.stream.as_str())
                .or_default()
                .push(entry.id.as_str());
        }
        for (stream, ids) in by_stream {
            if let Err(err) = streams::keep_alive(&mut self.conn, &self.member, stream, &ids).await {
                tracing::debug!(%err, "keep-alive of pending entries failed");
            }
        }
    }

    /// Runs until `shutdown` completes: fetch, handle, retry with backoff. A batch
    /// in flight at shutdown is finished if it can be, else left pending for the
    /// others to reclaim.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.settings.claim_idle / 2);
        let mut batch = loop {
            match self.recover().await {
                Ok(batch) => break batch,
                Err(err) => {
                    tracing::warn!(%err, "recovering own pending entries failed, retrying");
                    tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(backoff.next()) => {} }
                }
            }
        };
        loop {
            while !batch.entries.is_empty() {
                match self.handle(&mut batch).await {
                    Ok(outcome) => {
                        backoff.reset();
                        tracing::debug!(?outcome, "batch handled");
                    }
                    Err(err) => {
                        error_metric(&err);
                        let delay = backoff.next();
                        tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, left = batch.entries.len(), "batch failed, will retry it");
                        self.keep_alive(&batch).await;
                        tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(delay) => {} }
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                fetched = self.fetch() => match fetched {
                    Ok(next) => { backoff.reset(); batch = next; }
                    Err(err) => {
                        error_metric(&err);
                        let delay = backoff.next();
                        tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, "reading the streams failed");
                        tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(delay) => {} }
                    }
                },
            }
        }
    }
}

fn error_metric(err: &WorkerError) {
    match err {
        WorkerError::Redis(_) => metrics::counter!(shared::metrics::REDIS_ERRORS, "op" => "consumer").increment(1),
        WorkerError::Mysql(_) => metrics::counter!(shared::metrics::MYSQL_ERRORS, "op" => "consumer").increment(1),
    }
}

/// Exponential backoff with full jitter, from 50 ms up to `max`.
struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            attempt: 0,
            max: max.max(Duration::from_millis(100)),
        }
    }

    fn next(&mut self) -> Duration {
        let ceiling = Duration::from_millis(50)
            .saturating_mul(1 << self.attempt.min(10))
            .min(self.max);
        self.attempt += 1;
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}
