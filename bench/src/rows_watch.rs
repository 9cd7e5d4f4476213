//! MySQL's rows over time, for the report's drain chart: a task beside the load
//! and the drain that reads the coupons' `issued_quantity` (the consumers raise
//! it in the transaction of each insert, so it is the rows, read in one indexed
//! statement however many rows there are) every [`FIRST_INTERVAL`]. Memory
//! stays bounded: past [`MAX_SAMPLES`] every other sample is dropped and the
//! interval doubles.

use sqlx::{MySqlPool, QueryBuilder};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const FIRST_INTERVAL: Duration = Duration::from_millis(100);
/// Points enough for a chart's line.
pub const MAX_SAMPLES: usize = 1000;

/// The rows written since the watch started, at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSample {
    pub at: Instant,
    pub rows: i64,
}

/// The running watch; [`RowWatch::finish`] stops it and hands the samples over.
pub struct RowWatch {
    stop: watch::Sender<bool>,
    handle: JoinHandle<Vec<RowSample>>,
}

impl RowWatch {
    /// Starts watching `coupons`; their rows now are the baseline (zero).
    pub async fn start(pool: MySqlPool, coupons: Vec<i64>) -> Result<Self, sqlx::Error> {
        let baseline = issued_total(&pool, &coupons).await?;
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(sample(pool, coupons, baseline, stopped));
        Ok(Self { stop, handle })
    }

    /// Stops the watch; the samples in time order (none if the task failed).
    pub async fn finish(self) -> Vec<RowSample> {
        let _ = self.stop.send(true);
        self.handle.await.unwrap_or_default()
    }
}

/// The samples as (seconds since `start`, rows); samples before it count as at it.
pub fn since(samples: &[RowSample], start: Instant) -> Vec<(f64, i64)> {
    samples
        .iter()
        .map(|s| (s.at.saturating_duration_since(start).as_secs_f64(), s.rows))
        .collect()
}

/// Reads until told to stop; a failed read (MySQL away) is a gap in the line.
async fn sample(
    pool: MySqlPool,
    coupons: Vec<i64>,
    baseline: i64,
    mut stopped: watch::Receiver<bool>,
) -> Vec<RowSample> {
    // The baseline was read just now, before the load: no row yet.
    let mut samples = vec![RowSample {
        at: Instant::now(),
        rows: 0,
    }];
    let mut interval = FIRST_INTERVAL;
    let mut last = false;
    while !last {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            // One more read: the line ends where the drain did.
            _ = stopped.changed() => last = true,
        }
        // When the read was sent: a busy MySQL may take a while to answer.
        let at = Instant::now();
        if let Ok(total) = issued_total(&pool, &coupons).await {
            samples.push(RowSample {
                at,
                rows: total - baseline,
            });
        }
        if samples.len() >= MAX_SAMPLES {
            samples = samples.into_iter().step_by(2).collect();
            interval *= 2;
        }
    }
    samples
}

/// The sum of the coupons' `issued_quantity`.
async fn issued_total(pool: &MySqlPool, coupons: &[i64]) -> Result<i64, sqlx::Error> {
    if coupons.is_empty() {
        return Ok(0);
    }
    let mut query =
        QueryBuilder::new("SELECT CAST(COALESCE(SUM(issued_quantity), 0) AS SIGNED) FROM coupons WHERE id IN (");
    let mut ids = query.separated(", ");
    for &id in coupons {
        ids.push_bind(id);
    }
    query.push(")");
    query.build_query_scalar().fetch_one(pool).await
}
