//! The lag task: every [`LAG_EVERY`], one script call per partition stream
//! (all in flight at once) measures the group's lag there, in entries and in
//! seconds, for the gauges labelled `partition` (a bounded label set) and for
//! the worker's [`crate::health::Health`] (whether this member has work).
//!
//! It runs beside the loop, not in it, so the lag keeps being reported while
//! the loop is busy, or stuck, on a batch: exactly when it grows. Its cost is
//! O(partitions) a second whatever the number of coupons or entries. Legacy
//! streams being drained after an upgrade are not measured (they have no
//! partition to be labelled with, and they only shrink).

use super::{Task, Worker};
use crate::streams::{self, lag::StreamLag, Member};
use metrics::Gauge;
use shared::metrics::{OLDEST_PENDING_AGE, OLDEST_UNDELIVERED_AGE, STREAM_LENGTH, STREAM_PENDING};
use shared::redis_conn::RedisConn;
use shared::Layout;
use std::time::Duration;

/// How often the lag is measured: an alert on 5 s of lag needs it about every second.
pub(crate) const LAG_EVERY: Duration = Duration::from_secs(1);

/// One partition's gauges, registered once.
struct Gauges {
    stream: String,
    length: Gauge,
    pending: Gauge,
    oldest_pending: Gauge,
    oldest_undelivered: Gauge,
}

impl Gauges {
    fn of(layout: &Layout) -> Vec<Self> {
        layout
            .all()
            .map(|partition| {
                let label = [("partition", partition.index.to_string())];
                Self {
                    length: metrics::gauge!(STREAM_LENGTH, &label),
                    pending: metrics::gauge!(STREAM_PENDING, &label),
                    oldest_pending: metrics::gauge!(OLDEST_PENDING_AGE, &label),
                    oldest_undelivered: metrics::gauge!(OLDEST_UNDELIVERED_AGE, &label),
                    stream: partition.events,
                }
            })
            .collect()
    }

    /// An age of nothing is 0: an idle partition reports no stale age.
    fn set(&self, lag: &StreamLag) {
        let seconds = |age: Option<Duration>| age.map_or(0.0, |a| a.as_secs_f64());
        self.length.set(lag.length as f64);
        self.pending.set(lag.pending as f64);
        self.oldest_pending.set(seconds(lag.oldest_pending));
        self.oldest_undelivered.set(seconds(lag.oldest_undelivered));
    }
}

impl Worker {
    /// Starts the lag task (stopped when the returned [`Task`] is dropped).
    pub(super) fn watch_lag(&self) -> Task {
        let (conn, member, health) = (self.conn.clone(), self.member.clone(), self.health.clone());
        let gauges = Gauges::of(&self.layout);
        Task(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LAG_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match measure_all(&conn, &member, &gauges).await {
                    Ok(has_work) => {
                        health.measured(has_work);
                        failing = false;
                    }
                    Err(err) => {
                        metrics::counter!(shared::metrics::REDIS_ERRORS, shared::metrics::LABEL_SERVICE => "consumer")
                            .increment(1);
                        match std::mem::replace(&mut failing, true) {
                            false => tracing::warn!(%err, "measuring the stream lag failed; retrying every second"),
                            true => tracing::debug!(%err, "measuring the stream lag failed"),
                        }
                    }
                }
            }
        }))
    }
}

/// Measures every partition and sets its gauges; returns whether `member`
/// has work on any. A partition that fails leaves its gauges as they were and
/// the whole round unreported to the health (an error).
async fn measure_all(conn: &RedisConn, member: &Member, gauges: &[Gauges]) -> redis::RedisResult<bool> {
    let rounds = gauges.iter().map(|partition| {
        let mut conn = conn.clone();
        async move {
            let lag = streams::lag::measure(&mut conn, member, &partition.stream).await?;
            partition.set(&lag);
            Ok(lag.has_work())
        }
    });
    let mut has_work = false;
    let mut failure = None;
    for result in futures::future::join_all(rounds).await {
        match result {
            Ok(work) => has_work |= work,
            Err(err) => failure = Some(err),
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(has_work),
    }
}
