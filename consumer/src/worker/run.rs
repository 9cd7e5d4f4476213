//! The worker loop: fetch, handle, retry with backoff, stop on shutdown; each
//! turn and each bit of progress reported to the worker's health.

use super::{Worker, WorkerError};
use std::future::Future;
use std::time::Duration;

/// How long a batch in hand may still finish after SIGTERM before it is
/// abandoned (a MySQL statement stuck on a lock must not hold the exit; the
/// abandoned entries stay pending and are reclaimed, and the write is idempotent).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Worker {
    /// Runs until `shutdown` completes: fetch, handle, retry with backoff. A batch
    /// in hand at shutdown gets [`SHUTDOWN_GRACE`] to finish, else it is left
    /// pending for the others to reclaim.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Every entry in hand (and every prefetched one) is kept alive and its
        // lease renewed until its batch is dropped.
        let _keep_alive = self.keep_alive();
        let _lag = self.watch_lag();
        crate::dead_letter::count_from_zero();
        shared::metrics::count_errors_from_zero("consumer");
        let health = self.health.clone();
        let mut backoff = Backoff::new(self.settings.claim_idle / 2);
        let mut batch = loop {
            let recovered = self.recover().await;
            health.turned();
            match recovered {
                Ok(batch) => break batch,
                Err(err) => {
                    tracing::warn!(%err, "recovering own pending entries failed, retrying");
                    tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(backoff.next()) => {} }
                }
            }
        };
        loop {
            let prefetched = if batch.is_empty() { None } else { self.prefetch() };
            while !batch.is_empty() {
                let before = batch.len();
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
                // A retry (MySQL down) is a turn; only entries leaving the
                // batch (committed, buried, acked) are progress.
                health.turned();
                if batch.len() < before {
                    health.progressed();
                }
                match result {
                    Ok(outcome) => {
                        backoff.reset();
                        tracing::debug!(?outcome, "batch handled");
                    }
                    Err(err) => {
                        error_metric(&err);
                        let delay = backoff.next();
                        tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, left = batch.entries.len() + batch.isolated.len(), "batch failed, will retry it");
                        tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(delay) => {} }
                    }
                }
            }
            let next = async {
                match prefetched {
                    Some(task) => match task.await {
                        Ok((read, book)) => self.take_read(read, book).await,
                        // The read task did not run to its end: read again.
                        Err(_) => self.fetch().await,
                    },
                    None => self.fetch().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                fetched = next => {
                    health.turned();
                    match fetched {
                        Ok(next) => { backoff.reset(); batch = next; }
                        Err(err) => {
                            error_metric(&err);
                            let delay = backoff.next();
                            tracing::warn!(%err, retry_in_ms = delay.as_millis() as u64, "reading the streams failed");
                            tokio::select! { () = &mut shutdown => return, () = tokio::time::sleep(delay) => {} }
                        }
                    }
                }
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
