//! The worker loop: fetch, handle, retry with backoff, stop on shutdown.

use super::{Batch, Worker, WorkerError};
use crate::streams;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// How long a batch in hand may still finish after SIGTERM before it is
/// abandoned (a MySQL statement stuck on a lock must not hold the exit; the
/// abandoned entries stay pending and are reclaimed, and the write is idempotent).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Aborts the keep-alive task when the batch it guards is done.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// Keeps the batch's entries ours for as long as we hold it, on a timer of
    /// its own: neither a slow MySQL statement nor a long backoff may let them go
    /// idle long enough for another member to reclaim them from a live consumer
    /// (see [`streams::keep_alive`]).
    fn keep_alive(&self, batch: &Batch) -> KeepAlive {
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in &batch.entries {
            by_stream
                .entry(entry.stream.clone())
                .or_default()
                .push(entry.id.clone());
        }
        let (mut conn, member) = (self.conn.clone(), self.member.clone());
        let every = self.settings.claim_idle / 3;
        KeepAlive(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for (stream, ids) in &by_stream {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    if let Err(err) = streams::keep_alive(&mut conn, &member, stream, &ids).await {
                        tracing::debug!(%err, "keep-alive of pending entries failed");
                    }
                }
            }
        }))
    }

    /// Runs until `shutdown` completes: fetch, handle, retry with backoff. A batch
    /// in hand at shutdown gets [`SHUTDOWN_GRACE`] to finish, else it is left
    /// pending for the others to reclaim.
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
            let _keep_alive = (!batch.entries.is_empty()).then(|| self.keep_alive(&batch));
            let prefetched = if batch.entries.is_empty() {
                None
            } else {
                self.prefetch()
            };
            while !batch.entries.is_empty() {
                let result = {
                    let handled = self.handle(&mut batch);
                    tokio::pin!(handled);
                    tokio::select! {
                        result = &mut handled => result,
                        () = &mut shutdown => {
                            if tokio::time::timeout(SHUTDOWN_GRACE, handled).await.is_err() {
                                tracing::warn!("abandoning the batch in hand at shutdown; it stays pending and will be reclaimed");
                            }
                            return;
                        }
                    }
                };
                match result {
                    Ok(outcome) => {
                        backoff.reset();
                        tracing::debug!(?outcome, "batch handled");
                    }
                    Err(err) => {
                        error_metric(&err);
                        let delay = backoff.next();
                        tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, left = batch.entries.len(), "batch failed, will retry it");
                        tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(delay) => {} }
                    }
                }
            }
            let next = async {
                match prefetched {
                    Some(task) => match task.await {
                        Ok(read) => self.take_read(read).await,
                        // The read task did not run to its end: read again.
                        Err(_) => self.fetch().await,
                    },
                    None => self.fetch().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                fetched = next => match fetched {
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
    let name = match err {
        WorkerError::Redis(_) => shared::metrics::REDIS_ERRORS,
        WorkerError::Mysql(_) => shared::metrics::MYSQL_ERRORS,
    };
    metrics::counter!(name, shared::metrics::LABEL_SERVICE => "consumer").increment(1);
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
