//! Whether the worker is alive and doing its job, for `/healthz` and `/readyz`.
//!
//! The worker's loop marks each turn (a read returned, a batch attempt ended,
//! successful or not) and each bit of progress (entries committed, buried or
//! acked); the lag task says, about once a second, whether this member has
//! work: entries it holds, or entries no member has read yet. From these:
//!
//! - **live** unless the loop has started and then not turned for
//!   [`Thresholds::stuck`]: an idle loop still turns every `BLOCK_MS`, and a
//!   retry through a MySQL outage turns on every attempt, so only a call that
//!   hangs (or a loop that stopped) fails it;
//! - **ready** once the loop turned, while it turns, while the lag is being
//!   measured (Redis answers it), and unless it has had work for
//!   [`Thresholds::stalled`] without making progress (a MySQL outage, a row
//!   lock held elsewhere, a batch that fails again and again).
//!
//! Everything is a few atomics: marking costs nothing on the hot path.

use crate::worker::LAG_EVERY;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long each kind of silence may last before it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Work waiting without progress this long: not ready.
    pub stalled: Duration,
    /// The loop not turning this long: not live (and not ready).
    pub stuck: Duration,
}

/// Never, in the atomics holding instants as ms since [`Health::epoch`].
const NEVER: u64 = u64::MAX;

/// Lag measurements missed before the lag counts as unknown, whatever the
/// stalled threshold: one late round is no outage.
const MISSED_MEASUREMENTS: u32 = 3;

/// The worker's health, shared by the loop, the lag task and the ops server.
#[derive(Debug)]
pub struct Health {
    thresholds: Thresholds,
    epoch: Instant,
    /// The last turn of the loop.
    turned: AtomicU64,
    /// The last moment this member was known to be doing its job: it made
    /// progress, or it had no work.
    settled: AtomicU64,
    /// Whether the last lag measurement found work for this member.
    has_work: AtomicBool,
    /// The last lag measurement that Redis answered.
    measured: AtomicU64,
}

/// Why the worker is not live or not ready: the JSON body of a `503`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Problem {
    /// The loop has not turned once yet.
    Starting,
    /// The loop has not turned for `seconds`.
    Stuck { seconds: f64 },
    /// No lag measurement was answered for `seconds` (Redis unreachable?).
    LagUnknown { seconds: f64 },
    /// Work has waited `seconds` without anything committed or acked.
    NoProgress { seconds: f64 },
}

impl Problem {
    /// For people reading the body.
    pub fn message(&self) -> String {
        match self {
            Problem::Starting => "the worker loop has not started yet".into(),
            Problem::Stuck { seconds } => format!("the worker loop has not turned for {seconds:.1} s"),
            Problem::LagUnknown { seconds } => {
                format!("the stream lag has not been measured for {seconds:.1} s (Redis unreachable?)")
            }
            Problem::NoProgress { seconds } => format!(
                "entries have waited {seconds:.1} s without the worker committing or acking any (MySQL down or blocked?)"
            ),
        }
    }
}

impl Health {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            epoch: Instant::now(),
            turned: AtomicU64::new(NEVER),
            settled: AtomicU64::new(NEVER),
            has_work: AtomicBool::new(false),
            measured: AtomicU64::new(NEVER),
        }
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The loop turned. The first turn also starts the clock of progress.
    pub fn turned(&self) {
        let now = self.now();
        self.turned.store(now, Ordering::Relaxed);
        let _ = self
            .settled
            .compare_exchange(NEVER, now, Ordering::Relaxed, Ordering::Relaxed);
        let _ = self
            .measured
            .compare_exchange(NEVER, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Entries left the worker's hands: committed, buried or acked.
    pub fn progressed(&self) {
        self.settled.store(self.now(), Ordering::Relaxed);
    }

    /// The lag task measured every partition: `has_work` is whether this
    /// member holds entries or any are unread.
    pub fn measured(&self, has_work: bool) {
        let now = self.now();
        self.measured.store(now, Ordering::Relaxed);
        self.has_work.store(has_work, Ordering::Relaxed);
        if !has_work {
            self.settled.store(now, Ordering::Relaxed);
        }
    }

    /// Seconds from `at` (ms since the epoch) to `now`.
    fn since(now: u64, at: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(at))
    }

    /// `Err` once the loop, having started, has not turned for the stuck threshold.
    pub fn liveness(&self) -> Result<(), Problem> {
        match self.turned.load(Ordering::Relaxed) {
            NEVER => Ok(()),
            turned => self.stuck(self.now(), turned),
        }
    }

    fn stuck(&self, now: u64, turned: u64) -> Result<(), Problem> {
        let silent = Self::since(now, turned);
        match silent > self.thresholds.stuck {
            true => Err(Problem::Stuck {
                seconds: silent.as_secs_f64(),
            }),
            false => Ok(()),
        }
    }

    /// `Err` while the loop has not started, is stuck, cannot measure the lag,
    /// or has had work without progress for the stalled threshold.
    pub fn readiness(&self) -> Result<(), Problem> {
        let now = self.now();
        let turned = self.turned.load(Ordering::Relaxed);
        if turned == NEVER {
            return Err(Problem::Starting);
        }
        self.stuck(now, turned)?;
        let unmeasured = Self::since(now, self.measured.load(Ordering::Relaxed));
        if unmeasured > self.thresholds.stalled.max(LAG_EVERY * MISSED_MEASUREMENTS) {
            return Err(Problem::LagUnknown {
                seconds: unmeasured.as_secs_f64(),
            });
        }
        let waiting = Self::since(now, self.settled.load(Ordering::Relaxed));
        if self.has_work.load(Ordering::Relaxed) && waiting > self.thresholds.stalled {
            return Err(Problem::NoProgress {
                seconds: waiting.as_secs_f64(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Thresholds = Thresholds {
        stalled: Duration::from_millis(40),
        stuck: Duration::from_millis(80),
    };

    fn pause(d: Duration) {
        std::thread::sleep(d + Duration::from_millis(10));
    }

    #[test]
    fn a_worker_not_started_is_live_but_not_ready() {
        let health = Health::new(SHORT);
        pause(SHORT.stuck);
        assert_eq!(health.liveness(), Ok(()));
        assert_eq!(health.readiness(), Err(Problem::Starting));
        health.turned();
        health.measured(false);
        assert_eq!(health.readiness(), Ok(()));
    }

    #[test]
    fn an_idle_loop_that_turns_stays_ready_however_long_nothing_happens() {
        let health = Health::new(SHORT);
        for _ in 0..6 {
            health.turned();
            health.measured(false);
            pause(SHORT.stalled / 2);
        }
        assert_eq!(health.readiness(), Ok(()));
        assert_eq!(health.liveness(), Ok(()));
    }

    #[test]
    fn work_without_progress_is_not_ready_until_something_is_committed() {
        let health = Health::new(SHORT);
        health.turned();
        health.measured(true);
        assert_eq!(health.readiness(), Ok(()), "work just arrived");
        for _ in 0..3 {
            pause(SHORT.stalled / 2);
            // A retry loop (MySQL down) turns, and the work is still there.
            health.turned();
            health.measured(true);
        }
        assert!(matches!(health.readiness(), Err(Problem::NoProgress { .. })));
        assert_eq!(health.liveness(), Ok(()), "turning: live");
        health.progressed();
        assert_eq!(health.readiness(), Ok(()));
    }

    #[test]
    fn a_loop_that_stops_turning_is_neither_live_nor_ready() {
        let health = Health::new(SHORT);
        health.turned();
        health.measured(false);
        pause(SHORT.stuck);
        health.measured(false);
        assert!(matches!(health.liveness(), Err(Problem::Stuck { .. })));
        assert!(matches!(health.readiness(), Err(Problem::Stuck { .. })));
        health.turned();
        assert_eq!(health.liveness(), Ok(()));
    }

    #[test]
    fn a_lag_nobody_measures_is_not_ready() {
        let long = Thresholds {
            stalled: Duration::from_millis(40),
            stuck: LAG_EVERY * 10,
        };
        let health = Health::new(long);
        health.turned();
        pause(long.stalled);
        assert_eq!(health.readiness(), Ok(()), "a late round or two is no outage");
        pause(LAG_EVERY * MISSED_MEASUREMENTS);
        health.turned();
        assert!(matches!(health.readiness(), Err(Problem::LagUnknown { .. })));
    }

    #[test]
    fn the_body_names_the_reason_and_its_seconds() {
        let body = serde_json::to_value(Problem::NoProgress { seconds: 31.5 }).unwrap();
        assert_eq!(body, serde_json::json!({"reason": "no_progress", "seconds": 31.5}));
    }
}
