//! The worker loop: fetch, handle, retry with backoff, stop on shutdown.

use super::{Batch, Worker, WorkerError};
use crate::streams;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

impl Worker {
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
