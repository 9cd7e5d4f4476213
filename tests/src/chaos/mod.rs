//! Randomized fault schedules, Jepsen-style: from a seed, a schedule of faults
//! ([`fault`]) is drawn and played against a paced sale ([`load`]) on two API
//! instances and three consumers over private servers ([`rig`]); once the
//! faults are healed and the consumers drained, every invariant ([`check`]) is
//! checked. The same seed draws the same schedule, so a failure replays:
//! `cargo run -p integration-tests --bin chaos -- --first SEED --seeds 1`.

pub mod check;
pub mod fault;
pub mod load;
pub mod rig;

use check::CouponState;
use fault::{Schedule, Shape};
use rig::Rig;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// How long the consumers get to write everything once the faults are over.
const DRAIN: Duration = Duration::from_secs(60);
/// How long an API instance believes a coupon missing after a miss.
const MISSING_TTL: Duration = Duration::from_millis(1_500);

/// What one run looks like.
#[derive(Clone, Debug)]
pub struct Options {
    pub shape: Shape,
    /// Quantity of each sale slot: the coupon that exists from the start, and
    /// the one the schedule creates mid-sale.
    pub quantities: Vec<i64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            shape: Shape {
                apis: 2,
                consumers: 3,
                sale: Duration::from_secs(8),
                max_faults: 4,
            },
            quantities: vec![300, 100],
        }
    }
}

/// What one seed did and found.
pub struct SeedReport {
    pub schedule: Schedule,
    /// Answers by kind (accepted, sold_out, unavailable, no_answer, ...).
    pub answers: BTreeMap<String, usize>,
    pub violations: Vec<String>,
    pub took: Duration,
    pub journal: Vec<String>,
    /// Process log tails, when something was violated.
    pub logs: String,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "FAILED" };
        writeln!(f, "{verdict} in {:.1} s: {}", self.took.as_secs_f64(), self.schedule)?;
        writeln!(f, "  answers: {:?}", self.answers)?;
        for violation in &self.violations {
            writeln!(f, "  VIOLATED {violation}")?;
        }
        if !self.passed() {
            for line in &self.journal {
                writeln!(f, "  {line}")?;
            }
            write!(f, "{}", self.logs)?;
        }
        Ok(())
    }
}

/// Runs one seed from start to checks, on servers of its own.
pub async fn run_seed(seed: u64, options: &Options) -> SeedReport {
    let started = Instant::now();
    let schedule = Schedule::generate(seed, options.shape);
    let rig = Rig::start(options.shape, options.quantities.clone()).await;
    let plan = load::plan(seed, options.shape.sale, &options.quantities);
    let t0 = Instant::now() + Duration::from_millis(300);
    let faults = futures::future::join_all(schedule.steps.iter().map(|step| rig.play(*step, t0)));
    let (answers, _) = tokio::join!(load::run(&rig.targets, plan, t0), faults);
    let mut tally = BTreeMap::new();
    for answer in &answers {
        *tally.entry(answer.kind().to_string()).or_default() += 1;
    }
    let mut violations = rig.exited_on_their_own().await;
    let coupons = settle(&rig, answers).await;
    violations.extend(check::violations(&coupons));
    let logs = if violations.is_empty() {
        String::new()
    } else {
        rig.log_tails(40).await
    };
    let journal = rig.journal.lock().unwrap_or_else(|e| e.into_inner()).clone();
    SeedReport {
        schedule,
        answers: tally,
        violations,
        took: started.elapsed(),
        journal,
        logs,
    }
}

/// Waits (up to [`DRAIN`]) until the consumers have written everything, then
/// reads the final state of every coupon of the sale.
async fn settle(rig: &Rig, answers: Vec<load::Answer>) -> Vec<CouponState> {
    let lost_until = rig
        .losses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .max()
        .copied();
    let created = rig
        .created
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(Duration::MAX);
    let db = rig.env.db().await;
    // Every coupon the answers name: a creation that answered 503 may still have
    // committed (and been retried under the next id), so answers are grouped by
    // the id they were sent to, and each id's quantity is MySQL's.
    let mut ids: Vec<i64> = (0..rig.quantities.len()).map(|slot| rig.coupon(slot)).collect();
    ids.extend(answers.iter().map(|a| a.coupon));
    ids.sort_unstable();
    ids.dedup();
    let mut coupons = Vec::new();
    for id in ids {
        let quantity: Option<i64> = sqlx::query_scalar("SELECT total_quantity FROM coupons WHERE id = ?")
            .bind(id)
            .fetch_optional(&db)
            .await
            .expect("reading a coupon's quantity after the sale");
        let answers: Vec<load::Answer> = answers.iter().filter(|a| a.coupon == id).cloned().collect();
        let first_slot = answers.iter().map(|a| a.slot).min().unwrap_or(0);
        coupons.push(CouponState {
            id,
            quantity: quantity.unwrap_or(0),
            answers,
            lost_until,
            missing_until: match (quantity, first_slot) {
                (None, _) => Duration::MAX,
                (Some(_), 0) => Duration::ZERO,
                (Some(_), _) => created.saturating_add(MISSING_TTL),
            },
            ..CouponState::default()
        });
    }
    let mut redis = rig.env.redis().await;
    let deadline = Instant::now() + DRAIN;
    loop {
        let mut drained = true;
        for coupon in &mut coupons {
            let observed = check::observe(&db, &mut redis, coupon).await;
            drained &= observed.is_ok() && coupon.drained();
        }
        if drained || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = rig.client().await;
    for coupon in &mut coupons {
        check::ask_statuses(&client, coupon).await;
    }
    coupons
}
