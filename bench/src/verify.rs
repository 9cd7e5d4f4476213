//! The checks, as pure functions of what was seen: the API's answers (at most
//! `total_quantity` accepted, no user twice, positions distinct and in range),
//! the API's counts after the load, and what MySQL holds after the drain. Each
//! check ends as a [`Check`] that passes or fails.

use crate::stats::CouponTally;
use chrono::NaiveDateTime;
use serde::Serialize;
use std::collections::HashSet;

/// One verdict.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// The coupon it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<i64>,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, coupon: Option<i64>, pass: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            coupon,
            pass,
            detail: detail.into(),
        }
    }
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

/// How the user ids in MySQL compare with the accepted ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetFindings {
    /// Accepted users without a row.
    pub missing: u64,
    pub example_missing: Vec<i64>,
    /// Rows of users this run did not see accepted ...
    pub extra: u64,
    /// ... and of those, the ones this run did not ask for with a lost answer.
    pub unexplained: u64,
    pub example_unexplained: Option<i64>,
}

/// Compares `in_db` (the coupon's user ids in MySQL) with the accepted users;
/// rows of users whose answer was lost (`unknown`) may or may not be there.
pub fn compare_sets(accepted: &HashSet<i64>, in_db: &[i64], unknown: &HashSet<i64>) -> SetFindings {
    let db: HashSet<i64> = in_db.iter().copied().collect();
    let mut findings = SetFindings::default();
    for user in accepted {
        if !db.contains(user) {
            findings.missing += 1;
            if findings.example_missing.len() < 5 {
                findings.example_missing.push(*user);
            }
        }
    }
    for user in &db {
        if !accepted.contains(user) {
            findings.extra += 1;
            if !unknown.contains(user) {
                findings.unexplained += 1;
                findings.example_unexplained.get_or_insert(*user);
            }
        }
    }
    findings.example_missing.sort_unstable();
    findings
}

/// One coupon in MySQL after the drain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlFacts {
    /// All rows of the coupon.
    pub rows: i64,
    /// Rows of users in this run's id range.
    pub range_rows: i64,
    /// `coupons.issued_quantity`.
    pub issued_quantity: i64,
    /// Every accepted row arrived before the drain timeout.
    pub drained: bool,
    /// The user sets, when they were compared (at most 1,000,000 rows).
    pub sets: Option<SetFindings>,
    /// The first and last `issued_at` of this run's users' rows.
    pub issued_between: Option<(NaiveDateTime, NaiveDateTime)>,
}

/// The checks of what MySQL holds for one coupon.
pub fn mysql_checks(c: &CouponFacts, m: &MysqlFacts) -> Vec<Check> {
    let id = Some(c.id);
    let accepted = i64::try_from(c.findings.distinct_users()).unwrap_or(i64::MAX);
    let unknown = i64::try_from(c.tally.unknown).unwrap_or(i64::MAX);
    let mut checks = vec![Check::new(
        "every accepted request reached MySQL",
        id,
        m.drained,
        if m.drained {
            "within the drain timeout".to_string()
        } else {
            format!("drain timed out: {} rows, {accepted} accepted", m.range_rows)
        },
    )];
    let sets_detail = |s: &SetFindings| {
        format!(
            "{} accepted users without a row{}, {} rows of users not seen accepted ({} unexplained{})",
            s.missing,
            if s.example_missing.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {:?})", s.example_missing)
            },
            s.extra,
            s.unexplained,
            s.example_unexplained
                .map(|u| format!(", e.g. user {u}"))
                .unwrap_or_default(),
        )
    };
    if c.created {
        let counts_ok = if unknown == 0 {
            m.rows == accepted
        } else {
            (accepted..=accepted.saturating_add(unknown)).contains(&m.rows)
        };
        let (pass, detail) = match &m.sets {
            Some(s) => (
                counts_ok && s.missing == 0 && s.unexplained == 0,
                format!("{} rows, {accepted} accepted: {}", m.rows, sets_detail(s)),
            ),
            None => (
                counts_ok,
                format!(
                    "{} rows, {accepted} accepted (counts only: too many rows to compare)",
                    m.rows
                ),
            ),
        };
        checks.push(Check::new("MySQL users = accepted users", id, pass, detail));
    } else {
        let (pass, detail) = match &m.sets {
            Some(s) => (
                m.rows >= accepted && s.missing == 0,
                format!(
                    "{} rows ({} of this run's users), {accepted} accepted, {} accepted users without a row",
                    m.rows, m.range_rows, s.missing
                ),
            ),
            None => (
                m.rows >= accepted && m.range_rows >= accepted,
                format!(
                    "{} rows ({} of this run's users), {accepted} accepted (counts only)",
                    m.rows, m.range_rows
                ),
            ),
        };
        checks.push(Check::new("MySQL holds every accepted user", id, pass, detail));
    }
    checks.push(Check::new(
        "coupons.issued_quantity = rows <= total_quantity",
        id,
        m.issued_quantity == m.rows && m.rows <= c.total_quantity,
        format!(
            "issued_quantity {}, rows {}, total_quantity {}",
            m.issued_quantity, m.rows, c.total_quantity
        ),
    ));
    checks
}

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(created: bool, total: i64, answers: &[(i64, Option<i64>)], redis: i64) -> CouponFacts {
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

    fn failed(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.pass).map(|c| c.name).collect()
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

    #[test]
    fn mysql_sets_must_match_except_for_users_whose_answer_was_lost() {
        let accepted: HashSet<i64> = [1, 2, 3].into();
        let unknown: HashSet<i64> = [9].into();
        assert_eq!(compare_sets(&accepted, &[3, 2, 1], &unknown), SetFindings::default());
        let lost_but_accepted = compare_sets(&accepted, &[1, 2, 3, 9], &unknown);
        assert_eq!((lost_but_accepted.extra, lost_but_accepted.unexplained), (1, 0));
        let wrong = compare_sets(&accepted, &[1, 2, 7], &unknown);
        assert_eq!(wrong.missing, 1);
        assert_eq!(wrong.example_missing, vec![3]);
        assert_eq!(wrong.unexplained, 1);
        assert_eq!(wrong.example_unexplained, Some(7));
    }

    #[test]
    fn an_existing_coupon_only_needs_a_row_for_every_accepted_user() {
        let c = facts(false, 100, &[(10, Some(41)), (11, Some(42))], 42);
        let m = MysqlFacts {
            rows: 42,
            range_rows: 2,
            issued_quantity: 42,
            drained: true,
            sets: Some(SetFindings::default()),
            issued_between: None,
        };
        assert_eq!(failed(&mysql_checks(&c, &m)), Vec::<&str>::new());
        let created = CouponFacts { created: true, ..c };
        assert_eq!(
            failed(&mysql_checks(&created, &m)),
            vec!["MySQL users = accepted users"]
        );
        let drifted = MysqlFacts {
            issued_quantity: 41,
            ..m
        };
        assert_eq!(
            failed(&mysql_checks(&created, &drifted)),
            vec![
                "MySQL users = accepted users",
                "coupons.issued_quantity = rows <= total_quantity"
            ]
        );
    }
}
