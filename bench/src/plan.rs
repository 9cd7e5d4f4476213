//! The workload as pure arithmetic: which coupon and user the n-th request is
//! for, the pre-serialized request bodies, how many requests the run sends and,
//! in the open model, when each one is due.

use crate::cli::{Model, Stop};
use bytes::Bytes;
use std::time::Duration;

/// Every request of the run, addressed by its index.
///
/// Requests go round by round: in each round every user asks once for every
/// coupon (users in id order, a user's coupons one after the other); round 0 is
/// everyone's first try, rounds 1..=K the retries. Past the last round (with
/// `--duration` or a large `--requests`) the rounds start over.
pub struct Plan {
    coupons: usize,
    users: u64,
    user_offset: i64,
    rounds: u64,
    /// `{"user_id":N}` for every user, back to back; `starts[u]..starts[u + 1]` is user `u`'s.
    bodies: Bytes,
    starts: Vec<usize>,
}

/// One request: the coupon (an index into the run's coupons) and the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub coupon: usize,
    pub user: u64,
}

impl Plan {
    /// `coupons` ≥ 1 and `users` ≥ 1; `user_offset + users - 1` fits an `i64` (the CLI checks it).
    pub fn new(coupons: usize, users: u64, user_offset: i64, retries: u64) -> Self {
        let mut buf = Vec::with_capacity(usize::try_from(users).unwrap_or(0).saturating_mul(32));
        let mut starts = Vec::with_capacity(usize::try_from(users).unwrap_or(0).saturating_add(1));
        for user in 0..users {
            starts.push(buf.len());
            let id = user_offset.saturating_add(i64::try_from(user).unwrap_or(i64::MAX));
            buf.extend_from_slice(b"{\"user_id\":");
            buf.extend_from_slice(id.to_string().as_bytes());
            buf.push(b'}');
        }
        starts.push(buf.len());
        Self {
            coupons: coupons.max(1),
            users: users.max(1),
            user_offset,
            rounds: retries.saturating_add(1),
            bodies: Bytes::from(buf),
            starts,
        }
    }

    /// Requests in one round: every user once for every coupon.
    fn per_round(&self) -> u64 {
        self.users.saturating_mul(self.coupons as u64)
    }

    /// Every user's 1 + K requests for every coupon.
    pub fn full_run(&self) -> u64 {
        self.per_round().saturating_mul(self.rounds)
    }

    /// The `index`-th request.
    pub fn slot(&self, index: u64) -> Slot {
        let within_round = index % self.per_round();
        Slot {
            coupon: (within_round % self.coupons as u64) as usize,
            user: within_round / self.coupons as u64,
        }
    }

    /// The id of user number `user` (0-based).
    pub fn user_id(&self, user: u64) -> i64 {
        self.user_offset.saturating_add(i64::try_from(user).unwrap_or(i64::MAX))
    }

    /// The body asking for a coupon as user number `user`: a view of the shared
    /// buffer, no copy.
    pub fn body(&self, user: u64) -> Bytes {
        let user = usize::try_from(user).unwrap_or(usize::MAX);
        match (self.starts.get(user), self.starts.get(user.saturating_add(1))) {
            (Some(&start), Some(&end)) => self.bodies.slice(start..end),
            _ => Bytes::new(),
        }
    }
}

/// How many requests the run sends, or `None` for "until the duration is up"
/// (closed model with `--duration`).
pub fn request_limit(stop: Option<Stop>, model: Model, full_run: u64) -> Option<u64> {
    match (stop, model) {
        (None, _) => Some(full_run),
        (Some(Stop::Requests(n)), _) => Some(n),
        (Some(Stop::Duration(_)), Model::Closed { .. }) => None,
        // The requests due strictly before the end: index i is due at i / rate.
        (Some(Stop::Duration(d)), Model::Open { rate, .. }) => Some((d.as_secs_f64() * rate).ceil() as u64),
    }
}

/// Open model: when request `index` is due, counted from the start of the load.
/// Arrivals are evenly spaced, `1 / rate` apart, whatever the answers do.
pub fn due_at(index: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(index as f64 / rate).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_asks_every_coupon_once_per_round_before_any_retry() {
        let plan = Plan::new(2, 3, 100, 1);
        assert_eq!(plan.full_run(), 12);
        let slots: Vec<(usize, u64)> = (0..12).map(|i| plan.slot(i)).map(|s| (s.coupon, s.user)).collect();
        let round = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)];
        assert_eq!(&slots[..6], &round);
        assert_eq!(&slots[6..], &round);
        assert_eq!(plan.slot(12), plan.slot(0), "past the last round it starts over");
    }

    #[test]
    fn bodies_are_preserialized_json_with_the_offset_user_ids() {
        let plan = Plan::new(1, 3, 9_000_000_000, 0);
        assert_eq!(&plan.body(0)[..], b"{\"user_id\":9000000000}");
        assert_eq!(&plan.body(2)[..], b"{\"user_id\":9000000002}");
        assert_eq!(plan.user_id(2), 9_000_000_002);
        assert!(plan.body(3).is_empty());
        let parsed: serde_json::Value = serde_json::from_slice(&plan.body(1)).unwrap();
        assert_eq!(parsed["user_id"], 9_000_000_001i64);
    }

    #[test]
    fn the_open_model_schedule_spaces_arrivals_evenly_at_the_rate() {
        assert_eq!(due_at(0, 2000.0), Duration::ZERO);
        assert_eq!(due_at(1, 2000.0), Duration::from_micros(500));
        assert_eq!(due_at(2000, 2000.0), Duration::from_secs(1));
        assert_eq!(due_at(3, 0.5), Duration::from_secs(6));
        let gaps: Vec<Duration> = (1..100).map(|i| due_at(i, 400.0) - due_at(i - 1, 400.0)).collect();
        assert!(gaps
            .iter()
            .all(|g| g.abs_diff(Duration::from_micros(2500)) < Duration::from_nanos(2)));
    }

    #[test]
    fn an_open_model_duration_sends_the_requests_due_before_it_ends() {
        let open = Model::Open {
            rate: 2000.0,
            max_in_flight: 8,
        };
        let five_secs = Some(Stop::Duration(Duration::from_secs(5)));
        assert_eq!(request_limit(five_secs, open, 42), Some(10_000));
        let half = Some(Stop::Duration(Duration::from_millis(1500)));
        let slow = Model::Open {
            rate: 1.0,
            max_in_flight: 1,
        };
        assert_eq!(request_limit(half, slow, 42), Some(2), "due at 0 s and 1 s");
        let closed = Model::Closed { workers: 4 };
        assert_eq!(request_limit(five_secs, closed, 42), None);
        assert_eq!(request_limit(None, closed, 42), Some(42));
        assert_eq!(request_limit(Some(Stop::Requests(7)), open, 42), Some(7));
    }
}
