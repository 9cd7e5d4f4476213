//! The consumer's work: one [`Worker::fetch`] + [`Worker::handle`] step that
//! tests can drive, and [`Worker::run`], the loop around it with backoff and
//! graceful shutdown.
//!
//! The worker reads a fixed list of streams, the layout's partitions (plus,
//! after an upgrade, the coupons' streams of the layout before partitions until
//! they are drained), so what it and Redis do follows the events written, never
//! the number of coupons.
//!
//! - this file: the worker's state, fetching;
//! - [`upkeep`]: the periodic duties: reclaiming, trimming;
//! - [`lag`]: the task measuring the lag every second, for the gauges and
//!   the worker's [`Health`];
//! - [`handle`]: writing, burying and acking a fetched batch, coupon by coupon;
//! - [`isolate`]: entries delivered too often, tried alone before being buried;
//! - [`lease`]: when each entry in hand was last confirmed pending, and the
//!   keep-alive that renews it;
//! - [`lost`]: entries Redis no longer has (lost with its data, or deleted);
//! - [`legacy`]: finding, draining and deleting an upgrade's legacy streams;
//! - [`run`]: the loop with backoff and shutdown.
//!
//! An entry is acked only after the transaction that wrote it committed, so a
//! crash anywhere leaves it pending, to be reclaimed and written (idempotently)
//! again. While MySQL is down the batch is retried in memory and its entries kept
//! alive, so the delivery count measures crashes, not outages.

use crate::config::ConsumerConfig;
use crate::health::Health;
use crate::streams::{self, Entry, Group, Member, Source};
use shared::redis_conn::RedisConn;
use shared::startup::Connections;
use shared::Layout;
use sqlx::MySqlPool;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod handle;
mod isolate;
mod lag;
pub mod lease;
mod legacy;
mod lost;
mod run;
mod upkeep;

pub(crate) use lag::LAG_EVERY;
pub use lease::{Book, EntryRef, Lease};

/// How often streams are trimmed and drained legacy streams deleted.
const TRIM_EVERY: Duration = Duration::from_secs(5);

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
    /// Entries delivered more than `MAX_DELIVERIES` times, each to be written
    /// alone (its attempt counted already).
    pub isolated: Vec<Entry>,
    /// When each entry was last confirmed pending (the commit lease).
    pub book: Arc<Book>,
}

impl Batch {
    /// A batch of `entries`, confirmed pending at `confirmed` in `book`.
    fn new(entries: Vec<Entry>, reclaimed: bool, book: Arc<Book>, confirmed: Instant) -> Self {
        book.hold(&entries, confirmed);
        Self {
            entries,
            reclaimed,
            isolated: Vec::new(),
            book,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.isolated.is_empty()
    }

    /// The entries still to handle.
    pub fn len(&self) -> usize {
        self.entries.len() + self.isolated.len()
    }
}

/// A read in flight in the background, with the book its entries are kept
/// alive in from the moment it returns.
pub type Prefetch = tokio::task::JoinHandle<(redis::RedisResult<Vec<Entry>>, Arc<Book>)>;

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
    /// How often legacy streams are looked for, until a look finds none.
    pub legacy_scan: Duration,
    /// How long a coupon's Redis state outlives its issue period.
    pub retention: Duration,
}

impl From<&ConsumerConfig> for Settings {
    fn from(c: &ConsumerConfig) -> Self {
        Self {
            batch_size: c.batch_size as usize,
            block: c.block(),
            claim_idle: c.claim_idle(),
            max_deliveries: c.max_deliveries as usize,
            legacy_scan: c.legacy_scan(),
            retention: c.common.redis.retention(),
        }
    }
}

pub struct Worker {
    member: Member,
    /// Only for blocking XREADGROUP: a blocked read would stall anything sharing it.
    reader: RedisConn,
    conn: RedisConn,
    db: MySqlPool,
    layout: Layout,
    settings: Settings,
    /// The streams read: every partition's, then the legacy streams being drained.
    streams: Vec<String>,
    /// Whether the group was made sure of on every partition stream.
    ready: bool,
    legacy: legacy::Drain,
    /// Every entry in hand, for the keep-alive and the commit lease.
    leases: lease::Leases,
    /// Streams that lost pending entries (deleted), whose coupons' users still
    /// have to be reconciled (retried until it succeeds).
    unreconciled: BTreeSet<Source>,
    next_reclaim: Instant,
    next_trim: Instant,
    /// What `/healthz` and `/readyz` answer from.
    health: Arc<Health>,
}

/// A background task of the worker (keep-alive, lag), aborted when the
/// worker's loop ends.
pub(crate) struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// A worker reading as `member`, blocking reads on `reader`, everything
    /// else on `connections`, reporting how it does to `health`.
    pub fn new(
        member: Member,
        reader: RedisConn,
        connections: Connections,
        settings: Settings,
        health: Arc<Health>,
    ) -> Self {
        let Connections {
            db,
            redis: conn,
            layout,
        } = connections;
        let now = Instant::now();
        Self {
            member,
            reader,
            conn,
            db,
            streams: layout.all().map(|p| p.events).collect(),
            layout,
            ready: false,
            legacy: legacy::Drain::new(now),
            settings,
            leases: lease::Leases::default(),
            unreconciled: BTreeSet::new(),
            next_reclaim: now,
            next_trim: now,
            health,
        }
    }

    /// What the worker reports to `/healthz` and `/readyz`.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Makes sure the group exists on every partition stream, once.
    async fn ensure_ready(&mut self) -> Result<(), WorkerError> {
        if !self.ready {
            for partition in self.layout.all() {
                streams::ensure_group(&mut self.conn, &self.member, &partition.events, true).await?;
            }
            self.ready = true;
        }
        Ok(())
    }

    /// Recreates the group on every partition stream (after Redis lost it) and
    /// stops reading the legacy streams that are gone (drained and deleted by
    /// another member, or lost with Redis' data).
    pub(crate) async fn recreate_groups(&mut self) -> redis::RedisResult<()> {
        for partition in self.layout.all() {
            if streams::ensure_group(&mut self.conn, &self.member, &partition.events, true).await? == Group::Created {
                tracing::warn!(stream = %partition.events, "consumer group missing (Redis lost its data?), recreated it");
            }
        }
        for stream in self.legacy.reading().to_vec() {
            if streams::ensure_group(&mut self.conn, &self.member, &stream, false).await? == Group::NoStream {
                tracing::info!(%stream, "legacy stream gone (drained by another member?), no longer read");
                self.legacy.forget(&stream);
            }
        }
        self.sync_streams();
        Ok(())
    }

    /// The streams to read: the partitions, then the legacy streams being drained.
    fn sync_streams(&mut self) {
        let partitions = self.layout.all().map(|p| p.events);
        self.streams = partitions.chain(self.legacy.reading().iter().cloned()).collect();
    }

    /// Entries this member left pending in an earlier life (same name).
    pub async fn recover(&mut self) -> Result<Batch, WorkerError> {
        self.ensure_ready().await?;
        self.scan_legacy_if_due(Instant::now()).await;
        let confirmed = Instant::now();
        let mut entries = Vec::new();
        for stream in self.streams.clone() {
            entries
                .extend(streams::own_pending(&mut self.conn, &self.member, &stream, self.settings.batch_size).await?);
        }
        Ok(Batch::new(entries, true, self.leases.open(), confirmed))
    }

    /// The next entries to handle: reclaimed ones when due, else new ones
    /// (blocking up to the block time).
    pub async fn fetch(&mut self) -> Result<Batch, WorkerError> {
        self.ensure_ready().await?;
        let now = Instant::now();
        self.scan_legacy_if_due(now).await;
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
        let (read, book) = self.read_next().await;
        self.take_read(read, book).await
    }

    /// The next XREADGROUP of new entries, on the reader connection; its entries
    /// go into a new book (kept alive) as soon as it returns.
    fn read_next(
        &self,
    ) -> impl std::future::Future<Output = (redis::RedisResult<Vec<streams::Entry>>, Arc<Book>)> + Send + 'static {
        let (mut reader, member, streams) = (self.reader.clone(), self.member.clone(), self.streams.clone());
        let (count, block_ms) = (self.settings.batch_size, self.settings.block.as_millis() as u64);
        let book = self.leases.open();
        async move {
            let sent = Instant::now();
            let read = streams::read_new(&mut reader, &member, &streams, count, block_ms).await;
            if let Ok(entries) = &read {
                book.hold(entries, sent);
            }
            (read, book)
        }
    }

    /// Starts the next read in the background while the current batch is
    /// written, so Redis and MySQL round trips overlap; only when no periodic
    /// duty (legacy scan, trim, reclaim) is due, which `fetch` would do first.
    pub fn prefetch(&self) -> Option<Prefetch> {
        let now = Instant::now();
        let due = !self.ready || self.legacy.scan_due(now) || now >= self.next_trim || now >= self.next_reclaim;
        (!due).then(|| tokio::spawn(self.read_next()))
    }

    /// A finished read as a batch (its entries already in `book`); a missing
    /// group (Redis lost its data) is recreated.
    pub async fn take_read(
        &mut self,
        read: redis::RedisResult<Vec<streams::Entry>>,
        book: Arc<Book>,
    ) -> Result<Batch, WorkerError> {
        match read {
            Ok(entries) => {
                metrics::histogram!(shared::metrics::BATCH_SIZE).record(entries.len() as f64);
                Ok(Batch {
                    entries,
                    book,
                    ..Batch::default()
                })
            }
            Err(err) if streams::is_nogroup(&err) => {
                self.recreate_groups().await?;
                Ok(Batch::default())
            }
            Err(err) => Err(err.into()),
        }
    }
}
