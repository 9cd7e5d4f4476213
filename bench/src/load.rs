//! Runs the load: the workers of the closed model (each sends when its answer
//! is in) or of the open model (each takes the next due slot and sends at its
//! due time, latency counted from then), the live progress bar, and the stop on
//! Ctrl-C. Workers record into a few [`Tally`] shards (about two per CPU, each
//! behind a mutex held for a few hundred nanoseconds), so memory does not grow
//! with the number of workers and the locks are rarely contended.

use crate::cli::Model;
use crate::client::Api;
use crate::plan::{due_at, Plan};
use crate::stats::Tally;
use crate::timeline::Kind;
use http::Uri;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A request sent this much after it was due counts as late (open model).
pub const LATE: Duration = Duration::from_millis(5);
/// Open model: the timer wakes a sleeper up to 1 ms after the instant asked
/// for (its granularity). That much send lag is the load generator's own and is
/// not charged to the server; any lag beyond it (all workers busy: the server
/// is slow) is, so coordinated omission stays corrected.
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// A coupon under load.
#[derive(Clone, Debug)]
pub struct Target {
    pub id: i64,
    /// `POST /coupons/{id}/issue`, built once.
    pub uri: Uri,
}

/// How much to send and how fast.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub model: Model,
    /// Requests to send; `None` = until `run_for` is over.
    pub limit: Option<u64>,
    /// Closed model with `--duration`: no request is sent after this.
    pub run_for: Option<Duration>,
}

/// What the load did.
pub struct Outcome {
    pub tally: Tally,
    pub started: Instant,
    /// When the last answer came in.
    pub ended: Instant,
    /// Ctrl-C stopped it early.
    pub interrupted: bool,
}

/// Live counts, shared by the workers and the progress bar.
#[derive(Default)]
struct Live {
    next: AtomicU64,
    done: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
}

struct Ctx {
    api: Api,
    plan: Arc<Plan>,
    targets: Vec<Target>,
    shape: Shape,
    live: Live,
    started: Instant,
    shards: Vec<Mutex<Tally>>,
}

/// Sends the load and waits for every answer. `interrupt` counts Ctrl-Cs: the
/// first one stops sending.
pub async fn run(
    api: Api,
    plan: Arc<Plan>,
    targets: Vec<Target>,
    shape: Shape,
    interrupt: watch::Receiver<u32>,
) -> anyhow::Result<Outcome> {
    let workers = shape.model.workers();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut shards = Vec::new();
    for _ in 0..(2 * cpus).min(workers).max(1) {
        shards.push(Mutex::new(Tally::new(targets.len())?));
    }
    let mut merged = Tally::new(targets.len())?;
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        api,
        plan,
        targets,
        shape,
        live: Live::default(),
        started,
        shards,
    });
    let bar = progress_bar(&shape);
    let (bar_stop, bar_stopped) = watch::channel(false);
    let ticker = tokio::spawn(tick(Arc::clone(&ctx), bar.clone(), bar_stopped));
    let handles: Vec<_> = (0..workers)
        .map(|n| tokio::spawn(worker(Arc::clone(&ctx), n, interrupt.clone())))
        .collect();
    for handle in handles {
        handle.await?;
    }
    let ended = Instant::now();
    for shard in &ctx.shards {
        let mut tally = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let empty = Tally::new(0)?;
        merged.merge(std::mem::replace(&mut *tally, empty));
    }
    let _ = bar_stop.send(true);
    let _ = ticker.await;
    bar.finish_and_clear();
    Ok(Outcome {
        tally: merged,
        started,
        ended,
        interrupted: *interrupt.borrow() > 0,
    })
}

async fn worker(ctx: Arc<Ctx>, number: usize, mut interrupt: watch::Receiver<u32>) {
    let Some(shard) = ctx.shards.get(number % ctx.shards.len().max(1)) else {
        return;
    };
    let limit = ctx.shape.limit.unwrap_or(u64::MAX);
    let deadline = ctx.shape.run_for.map(|d| ctx.started + d);
    loop {
        if *interrupt.borrow() > 0 {
            break;
        }
        let index = ctx.live.next.fetch_add(1, Relaxed);
        if index >= limit {
            break;
        }
        let due = match ctx.shape.model {
            Model::Closed { .. } => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
            Model::Open { rate, .. } => {
                let due = ctx.started + due_at(index, rate);
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    Ok(()) = interrupt.changed() => break,
                }
                due
            }
        };
        let slot = ctx.plan.slot(index);
        let Some(target) = ctx.targets.get(slot.coupon) else {
            break;
        };
        let sent = Instant::now();
        let answer = ctx
            .api
            .post_issue(
                target.uri.clone(),
                ctx.plan.user_id(slot.user),
                ctx.plan.body(slot.user),
            )
            .await;
        let answered = Instant::now();
        let lag = sent.duration_since(due);
        let charged_from = due + lag.min(TIMER_SLACK);
        let latency = answered.duration_since(charged_from);
        let kind = {
            let mut tally = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            tally.record_send_lag(lag);
            let kind = tally.record(
                slot.coupon,
                target.id,
                ctx.plan.user_id(slot.user),
                &answer,
                latency,
                answered.duration_since(sent),
            );
            let at = due.duration_since(ctx.started);
            tally.timeline.record(slot.coupon, at, kind, latency);
            kind
        };
        let counter = match kind {
            Kind::Accepted => &ctx.live.accepted,
            Kind::SoldOut | Kind::AlreadyIssued | Kind::OtherRejection => &ctx.live.rejected,
            Kind::Error => &ctx.live.errors,
        };
        counter.fetch_add(1, Relaxed);
        ctx.live.done.fetch_add(1, Relaxed);
    }
}

fn progress_bar(shape: &Shape) -> ProgressBar {
    let (bar, template) = match (shape.limit, shape.run_for) {
        (Some(n), _) => (
            ProgressBar::new(n),
            "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} {msg}",
        ),
        // Closed model with --duration: the bar is the time.
        (None, Some(d)) => (
            ProgressBar::new(d.as_millis().try_into().unwrap_or(u64::MAX)),
            "{spinner} {elapsed_precise} [{bar:30}] {msg}",
        ),
        (None, None) => (ProgressBar::new_spinner(), "{spinner} {elapsed_precise} {msg}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Refreshes the bar five times a second until told to stop. The rate is the
/// requests answered per second, smoothed over about a second.
async fn tick(ctx: Arc<Ctx>, bar: ProgressBar, mut stopped: watch::Receiver<bool>) {
    let by_count = ctx.shape.limit.is_some();
    let mut last = (Instant::now(), 0u64);
    let mut rate: Option<f64> = None;
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => break,
        }
        let now = Instant::now();
        let done = ctx.live.done.load(Relaxed);
        let secs = now.duration_since(last.0).as_secs_f64();
        if secs > 0.0 {
            let current = done.saturating_sub(last.1) as f64 / secs;
            rate = Some(rate.map_or(current, |r| 0.7 * r + 0.3 * current));
            last = (now, done);
        }
        let requests = if by_count {
            bar.set_position(done);
            String::new()
        } else {
            let elapsed = ctx.started.elapsed().as_millis();
            bar.set_position(elapsed.try_into().unwrap_or(u64::MAX));
            format!("{done} requests · ")
        };
        bar.set_message(format!(
            "{requests}{:.0} req/s · accepted {} · rejected {} · errors {}",
            rate.unwrap_or(0.0),
            ctx.live.accepted.load(Relaxed),
            ctx.live.rejected.load(Relaxed),
            ctx.live.errors.load(Relaxed),
        ));
    }
}
