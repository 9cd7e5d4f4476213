//! What the 202 answers for one coupon say, as pure functions of what was seen:
//! at most `total_quantity` accepted, no user twice, positions distinct and in
//! range (exactly 1..=n for a new coupon), and the API's count after the load
//! agreeing with them.

use crate::check::Check;
use std::collections::HashSet;

/// The answers for one coupon, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CouponTally {
    pub requests: u64,
    pub accepted: u64,
    pub sold_out: u64,
    pub already_issued: u64,
    /// Transport errors and 5xx (the request may have been accepted).
    pub unknown: u64,
    /// Requests that never left: no connection could be made.
    pub not_sent: u64,
    /// Any other answer: a status or code the contract does not give to this request.
    pub unexpected: u64,
}

/// What the 202 answers for one coupon say about users and positions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub accepted: u64,
    /// Acceptances of a user beyond their first.
    pub duplicate_users: u64,
    pub example_duplicate_user: Option<i64>,
    /// Positions given more than once (counting each repeat).
    pub duplicate_positions: u64,
    /// Positions outside 1..=total_quantity.
    pub out_of_range: u64,
    /// 202s whose position could not be read.
    pub unread: u64,
    /// The positions are exactly 1..=accepted.
    pub gapless: bool,
}

impl Findings {
    /// Distinct users accepted: the rows MySQL should end up with.
    pub fn distinct_users(&self) -> u64 {
        self.accepted - self.duplicate_users
    }
}

/// Examines the `(user_id, position)` of every 202 for one coupon.
pub fn examine(accepted: impl IntoIterator<Item = (i64, Option<i64>)>, total_quantity: i64) -> Findings {
    let mut users = HashSet::new();
    let mut positions = HashSet::new();
    let mut findings = Findings::default();
    let mut max_position = 0;
    for (user, position) in accepted {
        findings.accepted += 1;
        if !users.insert(user) {
            findings.duplicate_users += 1;
            findings.example_duplicate_user.get_or_insert(user);
        }
        match position {
            None => findings.unread += 1,
            Some(p) if !(1..=total_quantity).contains(&p) => findings.out_of_range += 1,
            Some(p) => {
                max_position = max_position.max(p);
                if !positions.insert(p) {
                    findings.duplicate_positions += 1;
                }
            }
        }
    }
    findings.gapless = findings.unread == 0
        && findings.out_of_range == 0
        && findings.duplicate_positions == 0
        && u64::try_from(max_position).is_ok_and(|m| m == findings.accepted);
    findings
}

/// One coupon after the load, as the client and the API saw it.
#[derive(Clone, Debug)]
pub struct CouponFacts {
    pub id: i64,
    /// Created by this run (so every row and every Redis entry is this run's).
    pub created: bool,
    pub total_quantity: i64,
    /// `issued_quantity` from `GET /coupons/{id}` after the load (Redis); `None`
    /// if that call failed.
    pub redis_issued: Option<i64>,
    pub tally: CouponTally,
    pub findings: Findings,
}

/// The checks of the API's answers for one coupon.
pub fn answer_checks(c: &CouponFacts) -> Vec<Check> {
    let id = Some(c.id);
    let f = &c.findings;
    let accepted = i64::try_from(f.accepted).unwrap_or(i64::MAX);
    let mut checks = vec![Check::new(
        "accepted <= total_quantity",
        id,
        accepted <= c.total_quantity && c.redis_issued.is_none_or(|r| r <= c.total_quantity),
        format!(
            "{accepted} answered 202, API issued_quantity {}, total_quantity {}",
            show(c.redis_issued),
            c.total_quantity
        ),
    )];
    checks.push(Check::new(
        "no user accepted twice",
        id,
        f.duplicate_users == 0,
        match f.example_duplicate_user {
            None => format!("{} distinct users accepted", f.accepted),
            Some(user) => format!("{} repeat acceptances, e.g. user {user}", f.duplicate_users),
        },
    ));
    // A new coupon's positions are exactly 1..=n, unless an answer was lost.
    let want_gapless = c.created && c.tally.unknown == 0;
    let positions_ok =
        f.duplicate_positions == 0 && f.out_of_range == 0 && f.unread == 0 && (!want_gapless || f.gapless);
    checks.push(Check::new(
        "positions distinct and within 1..=total_quantity",
        id,
        positions_ok,
        format!(
            "{} repeated, {} out of range, {} unreadable{}",
            f.duplicate_positions,
            f.out_of_range,
            f.unread,
            if want_gapless {
                if f.gapless {
                    ", exactly 1..=accepted"
                } else {
                    ", NOT exactly 1..=accepted"
                }
            } else {
                ""
            }
        ),
    ));
    if let Some(redis) = c.redis_issued {
        let unknown = i64::try_from(c.tally.unknown).unwrap_or(i64::MAX);
        let (pass, rule) = if c.created {
            (
                (accepted..=accepted.saturating_add(unknown)).contains(&redis),
                "accepted (+ answers lost)",
            )
        } else {
            (redis >= accepted, ">= accepted (coupon used before)")
        };
        checks.push(Check::new(
            "API issued_quantity matches the 202s",
            id,
            pass,
            format!("API says {redis}, want {rule}: {accepted} accepted, {unknown} answers lost"),
        ));
        if c.tally.sold_out > 0 {
            checks.push(Check::new(
                "sold_out only once the coupon is full",
                id,
                redis == c.total_quantity,
                format!(
                    "{} sold_out answers; issued_quantity {redis} of {}",
                    c.tally.sold_out, c.total_quantity
                ),
            ));
        }
    }
    checks.push(Check::new(
        "every answer is one the contract allows",
        id,
        c.tally.unexpected == 0,
        format!(
            "{} answers other than 202, 409 sold_out / already_issued or 5xx",
            c.tally.unexpected
        ),
    ));
    checks
}

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::check::failed;

    /// One coupon's facts from its 202s, the API agreeing with `redis`.
    pub(crate) fn facts(created: bool, total: i64, answers: &[(i64, Option<i64>)], redis: i64) -> CouponFacts {
        let findings = examine(answers.iter().copied(), total);
        CouponFacts {
            id: 1,
            created,
            total_quantity: total,
            redis_issued: Some(redis),
            tally: CouponTally {
                accepted: findings.accepted,
                ..CouponTally::default()
            },
            findings,
        }
    }

    #[test]
    fn distinct_users_with_positions_one_to_n_pass_every_answer_check() {
        let c = facts(true, 3, &[(10, Some(2)), (11, Some(1)), (12, Some(3))], 3);
        assert!(c.findings.gapless);
        assert_eq!(failed(&answer_checks(&c)), Vec::<&str>::new());
    }

    #[test]
    fn a_user_accepted_twice_fails_even_with_distinct_positions() {
        let c = facts(true, 5, &[(10, Some(1)), (10, Some(2))], 2);
        assert_eq!(c.findings.duplicate_users, 1);
        assert_eq!(c.findings.example_duplicate_user, Some(10));
        assert_eq!(failed(&answer_checks(&c)), vec!["no user accepted twice"]);
    }

    #[test]
    fn more_acceptances_than_the_quantity_fail() {
        let c = facts(true, 2, &[(10, Some(1)), (11, Some(2)), (12, Some(3))], 3);
        let failures = failed(&answer_checks(&c));
        assert!(failures.contains(&"accepted <= total_quantity"));
        assert!(failures.contains(&"positions distinct and within 1..=total_quantity"));
        assert_eq!(c.findings.out_of_range, 1);
    }

    #[test]
    fn repeated_or_missing_positions_fail_for_a_new_coupon() {
        let repeated = facts(true, 5, &[(10, Some(1)), (11, Some(1))], 2);
        assert_eq!(repeated.findings.duplicate_positions, 1);
        assert!(!answer_checks(&repeated)[2].pass);
        let gap = facts(true, 5, &[(10, Some(1)), (11, Some(3))], 2);
        assert!(!gap.findings.gapless);
        assert!(!answer_checks(&gap)[2].pass);
        // An existing coupon has positions from earlier runs: gaps are expected.
        let earlier = facts(false, 5, &[(10, Some(4)), (11, Some(2))], 5);
        assert_eq!(failed(&answer_checks(&earlier)), Vec::<&str>::new());
    }

    #[test]
    fn sold_out_answers_while_the_coupon_is_not_full_fail() {
        let mut c = facts(true, 5, &[(10, Some(1))], 1);
        c.tally.sold_out = 3;
        assert_eq!(
            failed(&answer_checks(&c)),
            vec!["sold_out only once the coupon is full"]
        );
    }
}
