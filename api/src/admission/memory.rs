//! The sold-out memory: once a batch saw a coupon with every unit accepted,
//! this process answers its requests itself, `already_issued` to the users who
//! hold it and `sold_out` to the others, without Redis, for at most
//! [`BELIEVED_FOR`] after Redis last said so.
//!
//! Why that stays right:
//! - A full coupon's set only changes when the quantity is raised (PATCH), or
//!   when Redis lost it and it is rebuilt from MySQL. A PATCH or a rebuild in
//!   this process forgets the memory at once ([`Memory::forget`]); one on
//!   another instance is seen by the first request after [`BELIEVED_FOR`],
//!   which goes to Redis again.
//! - The holders and the quantity are read in one atomic step
//!   (`lua/holders.lua`), and kept only if the holders fill the quantity.
//! - A forget bumps a generation; a batch decided before it may not install
//!   what it saw after it.
//! - The memory ends at the coupon's end by Redis' clock (its `now` in the
//!   batch reply), so an ended coupon is answered `issue_period_ended` as the
//!   script would; a paused coupon (as this process knows it) goes to Redis.

use shared::UserId;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long Redis' word that a coupon is sold out is believed without asking
/// again: the bound on how late a quantity raised on another instance is seen.
pub const BELIEVED_FOR: Duration = Duration::from_secs(1);
/// A coupon with more units than this is never remembered (its holders would
/// take too much memory): its requests keep going to Redis, batched.
pub const HOLDERS_MAX: i64 = 200_000;

/// What this process remembers of one coupon.
#[derive(Default)]
pub struct Memory {
    full: RwLock<Option<Full>>,
    /// Bumped by every forget.
    generation: AtomicU64,
}

/// A coupon seen sold out.
struct Full {
    holders: Arc<HashSet<i64>>,
    total: i64,
    /// Until when it is believed.
    until: Instant,
}

/// What a remembered coupon answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    AlreadyIssued,
    SoldOut,
}

impl Memory {
    /// The answer for `user`, if the coupon is remembered sold out.
    pub fn answer(&self, user: UserId) -> Option<Answer> {
        let full = self.full.read().unwrap_or_else(|e| e.into_inner());
        let full = full.as_ref().filter(|full| Instant::now() < full.until)?;
        Some(if full.holders.contains(&user.get()) {
            Answer::AlreadyIssued
        } else {
            Answer::SoldOut
        })
    }

    /// Whether a sold-out coupon is remembered and believed now.
    pub fn is_fresh(&self) -> bool {
        let full = self.full.read().unwrap_or_else(|e| e.into_inner());
        full.as_ref().is_some_and(|full| Instant::now() < full.until)
    }

    /// Forgets the coupon (its quantity or state changed here).
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.full.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Drops what is remembered (a batch found the coupon refused or missing).
    pub fn clear(&self) {
        *self.full.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The generation a batch starts in, for [`Memory::confirm`] and [`Memory::install`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// After a batch decided in `generation` that saw `issued` of `total`
    /// accepted, with `left` until the coupon's end: `true` if the holders are
    /// remembered already (the memory is renewed), `false` if they must be
    /// read ([`Memory::install`]). A batch that saw room forgets.
    pub fn confirm(&self, generation: u64, issued: i64, total: i64, left: Duration) -> bool {
        let mut full = self.full.write().unwrap_or_else(|e| e.into_inner());
        if generation != self.generation() || issued < total {
            *full = None;
            return true;
        }
        match full.as_mut() {
            Some(known) if known.total == total && known.holders.len() as i64 == issued => {
                known.until = Instant::now() + left.min(BELIEVED_FOR);
                true
            }
            _ => total > HOLDERS_MAX,
        }
    }

    /// Remembers `holders` of a coupon of `total` units as read in one step
    /// with its quantity, if they fill it and nothing was forgotten since `generation`.
    pub fn install(&self, generation: u64, total: i64, holders: HashSet<i64>, left: Duration) {
        let mut full = self.full.write().unwrap_or_else(|e| e.into_inner());
        if generation != self.generation() || total < 1 || (holders.len() as i64) < total {
            return;
        }
        *full = Some(Full {
            holders: Arc::new(holders),
            total,
            until: Instant::now() + left.min(BELIEVED_FOR),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn a_full_coupon_answers_its_holders_and_the_others_until_forgotten() {
        let memory = Memory::default();
        let generation = memory.generation();
        assert!(!memory.confirm(generation, 2, 2, BELIEVED_FOR));
        memory.install(generation, 2, HashSet::from([1, 2]), BELIEVED_FOR);
        assert_eq!(memory.answer(user(1)), Some(Answer::AlreadyIssued));
        assert_eq!(memory.answer(user(3)), Some(Answer::SoldOut));
        memory.forget();
        assert_eq!(memory.answer(user(3)), None);
    }

    #[test]
    fn what_a_batch_saw_before_a_forget_is_not_installed_after_it() {
        let memory = Memory::default();
        let generation = memory.generation();
        memory.forget();
        memory.install(generation, 2, HashSet::from([1, 2]), BELIEVED_FOR);
        assert_eq!(memory.answer(user(3)), None);
    }

    #[test]
    fn holders_short_of_the_quantity_or_a_batch_with_room_leave_nothing() {
        let memory = Memory::default();
        memory.install(memory.generation(), 3, HashSet::from([1, 2]), BELIEVED_FOR);
        assert_eq!(memory.answer(user(3)), None);
        memory.install(memory.generation(), 2, HashSet::from([1, 2]), BELIEVED_FOR);
        assert!(memory.confirm(memory.generation(), 2, 3, BELIEVED_FOR));
        assert_eq!(memory.answer(user(3)), None);
    }

    #[test]
    fn the_memory_ends_with_the_coupon() {
        let memory = Memory::default();
        memory.install(memory.generation(), 1, HashSet::from([1]), Duration::ZERO);
        assert_eq!(memory.answer(user(2)), None);
    }
}
