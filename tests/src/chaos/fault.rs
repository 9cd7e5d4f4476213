//! The faults a schedule draws from, and schedules drawn from a seed.
//!
//! A fault names what it breaks ([`Target`]) and, where it lasts, for how long;
//! the schedule never breaks one target twice at once, so every fault's heal
//! step finds the target as its own apply step left it. Adding a fault is a
//! variant here, a weight in [`Fault::draw`] and an arm in the rig's `apply`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// What a fault breaks; two faults on one target never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Api(usize),
    Consumer(usize),
    Redis,
    MariaDb,
    /// Coupon creation and changes: at most one at a time.
    Admin,
}

/// One fault; durations are how long the target stays broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of an API process, restarted after `down`.
    KillApi { which: usize, down: Duration },
    /// kill -9 of a consumer process, restarted after `down`.
    KillConsumer { which: usize, down: Duration },
    /// kill -9 of MariaDB, restarted (crash recovery) after `down`.
    KillMariaDb { down: Duration },
    /// SIGSTOP of MariaDB, SIGCONT after `down`: a freeze, not a crash.
    FreezeMariaDb { down: Duration },
    /// SIGSTOP of Redis, SIGCONT after `down`.
    FreezeRedis { down: Duration },
    /// kill -9 of Redis (AOF, `appendfsync always`), restarted after `down`.
    KillRedis { down: Duration },
    /// FLUSHALL: Redis lost everything.
    FlushAll,
    /// A long-held lock on the sale's coupon row (slow MySQL for the consumers).
    LockCouponRow { hold: Duration },
    /// The second coupon of the sale is created now, through one API instance,
    /// while the load already asks every instance for its id.
    CreateCoupon,
}

impl Fault {
    pub fn target(&self) -> Target {
        match *self {
            Fault::KillApi { which, .. } => Target::Api(which),
            Fault::KillConsumer { which, .. } => Target::Consumer(which),
            Fault::KillMariaDb { .. } | Fault::FreezeMariaDb { .. } | Fault::LockCouponRow { .. } => Target::MariaDb,
            Fault::FreezeRedis { .. } | Fault::KillRedis { .. } | Fault::FlushAll => Target::Redis,
            Fault::CreateCoupon => Target::Admin,
        }
    }

    /// How long the target stays broken (zero for an instant fault).
    pub fn lasts(&self) -> Duration {
        match *self {
            Fault::KillApi { down, .. }
            | Fault::KillConsumer { down, .. }
            | Fault::KillMariaDb { down }
            | Fault::FreezeMariaDb { down }
            | Fault::FreezeRedis { down }
            | Fault::KillRedis { down } => down,
            Fault::LockCouponRow { hold } => hold,
            Fault::FlushAll | Fault::CreateCoupon => Duration::ZERO,
        }
    }

    /// Whether Redis loses acknowledged state: the one fault after which a 202
    /// may end `failed` (or unknown) instead of as a row.
    pub fn loses_redis_state(&self) -> bool {
        matches!(self, Fault::FlushAll)
    }

    /// A random fault, weighted towards the ones that happen most in production
    /// (coupon creation is placed by [`Schedule::generate`] itself).
    fn draw(rng: &mut StdRng, apis: usize, consumers: usize) -> Fault {
        let down = |rng: &mut StdRng| Duration::from_millis(rng.random_range(200..2_500));
        match rng.random_range(0..100) {
            0..=19 => Fault::KillConsumer {
                which: rng.random_range(0..consumers),
                down: down(rng),
            },
            20..=31 => Fault::KillApi {
                which: rng.random_range(0..apis),
                down: down(rng),
            },
            32..=43 => Fault::KillMariaDb { down: down(rng) },
            44..=53 => Fault::FreezeMariaDb { down: down(rng) },
            54..=63 => Fault::FreezeRedis { down: down(rng) },
            64..=73 => Fault::KillRedis { down: down(rng) },
            74..=79 => Fault::FlushAll,
            _ => Fault::LockCouponRow { hold: down(rng) },
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_millis();
        match *self {
            Fault::KillApi { which, down } => write!(f, "kill -9 api{which}, back after {} ms", ms(down)),
            Fault::KillConsumer { which, down } => write!(f, "kill -9 consumer{which}, back after {} ms", ms(down)),
            Fault::KillMariaDb { down } => write!(f, "kill -9 MariaDB, back after {} ms", ms(down)),
            Fault::FreezeMariaDb { down } => write!(f, "SIGSTOP MariaDB for {} ms", ms(down)),
            Fault::FreezeRedis { down } => write!(f, "SIGSTOP Redis for {} ms", ms(down)),
            Fault::KillRedis { down } => write!(f, "kill -9 Redis (AOF always), back after {} ms", ms(down)),
            Fault::FlushAll => write!(f, "FLUSHALL"),
            Fault::LockCouponRow { hold } => write!(f, "lock the coupon row for {} ms", ms(hold)),
            Fault::CreateCoupon => write!(f, "create the second coupon"),
        }
    }
}

/// A fault at its time from the start of the sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub fault: Fault,
}

impl Planned {
    fn until(&self) -> Duration {
        self.at + self.fault.lasts()
    }
}

/// What a seed draws: the faults, in time order. The same seed gives the same
/// schedule, so a failing seed replays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Planned>,
}

/// The shape of the rig a schedule is drawn for.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub apis: usize,
    pub consumers: usize,
    pub sale: Duration,
    pub max_faults: usize,
}

impl Schedule {
    /// Draws 1 to `max_faults` faults inside the sale; the second coupon is
    /// created exactly once, mid-sale, whatever else is drawn.
    pub fn generate(seed: u64, shape: Shape) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let sale_ms = shape.sale.as_millis() as u64;
        let mut steps = vec![Planned {
            at: Duration::from_millis(rng.random_range(sale_ms / 5..sale_ms / 2)),
            fault: Fault::CreateCoupon,
        }];
        let wanted = rng.random_range(1..=shape.max_faults);
        let mut attempts = 0;
        while steps.len() < wanted + 1 && attempts < 50 {
            attempts += 1;
            let fault = Fault::draw(&mut rng, shape.apis, shape.consumers);
            let planned = Planned {
                at: Duration::from_millis(rng.random_range(300..sale_ms.saturating_sub(800).max(301))),
                fault,
            };
            let overlaps = steps
                .iter()
                .any(|s| s.fault.target() == fault.target() && s.at <= planned.until() && planned.at <= s.until());
            if !overlaps {
                steps.push(planned);
            }
        }
        steps.sort_by_key(|s| s.at);
        Self { seed, steps }
    }

    /// When Redis last lost its state, if it did.
    pub fn last_loss(&self) -> Option<Duration> {
        self.steps
            .iter()
            .filter(|s| s.fault.loses_redis_state())
            .map(|s| s.at)
            .max()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {}:", self.seed)?;
        for step in &self.steps {
            write!(f, " [{} ms {}]", step.at.as_millis(), step.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            apis: 2,
            consumers: 3,
            sale: Duration::from_secs(8),
            max_faults: 4,
        }
    }

    #[test]
    fn one_seed_always_draws_the_same_schedule() {
        for seed in 0..50 {
            assert_eq!(Schedule::generate(seed, shape()), Schedule::generate(seed, shape()));
        }
    }

    #[test]
    fn no_target_is_broken_twice_at_once_and_the_coupon_is_created_once() {
        for seed in 0..500 {
            let schedule = Schedule::generate(seed, shape());
            let creations = schedule.steps.iter().filter(|s| s.fault == Fault::CreateCoupon).count();
            assert_eq!(creations, 1, "{schedule}");
            for (i, a) in schedule.steps.iter().enumerate() {
                for b in &schedule.steps[i + 1..] {
                    let apart = a.until() < b.at || b.until() < a.at;
                    assert!(a.fault.target() != b.fault.target() || apart, "{schedule}");
                }
            }
        }
    }
}
