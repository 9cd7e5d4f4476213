//! The consumer's work: one [`Worker::fetch`] + [`Worker::handle`] step that
//! tests can drive, and [`Worker::run`], the loop around it with backoff and
//! graceful shutdown.
//!
//! - this file: the worker's state, fetching (reads, reclaims, refresh, trim);
//! - [`handle`]: writing, burying and acking a fetched batch;
//! - [`isolate`]: entries delivered too often, tried alone before being buried;
//! - [`lease`]: when each entry in hand was last confirmed pending, and the
//!   keep-alive that renews it;
//! - [`lost`]: entries Redis no longer has (lost with its data, or deleted);
//! - [`run`]: the loop with backoff and shutdown.
//!
//! An entry is acked only after the transaction that wrote it committed, so a
//! crash anywhere leaves it pending, to be reclaimed and written (idempotently)
//! again. While MySQL is down the batch is retried in memory and its entries kept
//! alive, so the delivery count measures crashes, not outages.

use crate::config::ConsumerConfig;
use crate::store;
use crate::streams::{self, Entry, Member};
use shared::redis_conn::RedisConn;
use shared::{CouponId, CouponKeys};
use sqlx::MySqlPool;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod handle;
mod isolate;
pub mod lease;
mod lost;
mod run;

pub use lease::{Book, Lease};

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
    reader: RedisConn,
    conn: RedisConn,
    db: MySqlPool,
    settings: Settings,
    streams: Vec<String>,
    /// Every entry in hand, for the keep-alive and the commit lease.
    leases: lease::Leases,
    /// Coupons whose stream lost pending entries (deleted) and whose users
    /// still have to be reconciled (retried until it succeeds).
    unreconciled: BTreeSet<CouponId>,
    next_refresh: Instant,
    next_reclaim: Instant,
    next_trim: Instant,
}

impl Worker {
    pub fn new(member: Member, reader: RedisConn, conn: RedisConn, db: MySqlPool, settings: Settings) -> Self {
        let now = Instant::now();
        Self {
            member,
            reader,
            conn,
            db,
            settings,
            streams: Vec::new(),
            leases: lease::Leases::default(),
            unreconciled: BTreeSet::new(),
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
    pub(crate) async fn recreate_groups(&mut self) -> redis::RedisResult<()> {
        for stream in self.streams.clone() {
            streams::ensure_group(&mut self.conn, &self.member, &stream).await?;
        }
        Ok(())
    }

    /// Entries this member left pending in an earlier life (same name).
    pub async fn recover(&mut self) -> Result<Batch, WorkerError> {
        self.refresh_streams().await?;
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
    /// duty (refresh, trim, reclaim) is due, which `fetch` would do first.
    pub fn prefetch(&self) -> Option<Prefetch> {
        let now = Instant::now();
        let due = now >= self.next_refresh || now >= self.next_trim || now >= self.next_reclaim;
        (!due && !self.streams.is_empty()).then(|| tokio::spawn(self.read_next()))
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
                tracing::warn!("consumer group missing (Redis lost its data?), recreating it");
                self.recreate_groups().await?;
                Ok(Batch::default())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// XAUTOCLAIMs entries idle past the claim time from every stream; a
    /// stream that had pending entries deleted has its users reconciled.
    async fn reclaim(&mut self) -> Result<Batch, WorkerError> {
        let idle_ms = self.settings.claim_idle.as_millis() as u64;
        let book = self.leases.open();
        let mut entries = Vec::new();
        for stream in self.streams.clone() {
            if entries.len() >= self.settings.batch_size {
                break;
            }
            let want = self.settings.batch_size - entries.len();
            let sent = Instant::now();
            match streams::autoclaim(&mut self.conn, &self.member, &stream, idle_ms, want).await {
                Ok((claimed, deleted)) => {
                    if let Some(coupon) = CouponKeys::coupon_of_events_stream(&stream).filter(|_| deleted > 0) {
                        // Redis dropped them from the PEL: their users are found by reconciling.
                        tracing::warn!(%stream, deleted, "pending entries were deleted from the stream before being processed");
                        self.unreconciled.insert(coupon);
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
}
