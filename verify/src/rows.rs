//! What MySQL holds for one coupon after the drain, against the accepted users:
//! a row for every accepted user, none unexplained (a lost answer may or may
//! not have a row), and `coupons.issued_quantity` equal to the rows and within
//! the quantity.

use crate::answers::CouponFacts;
use crate::check::Check;
use chrono::NaiveDateTime;
use std::collections::HashSet;

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
pub fn compare_sets(
    accepted: &HashSet<i64>,
    in_db: impl IntoIterator<Item = i64>,
    unknown: &HashSet<i64>,
) -> SetFindings {
    let db: HashSet<i64> = in_db.into_iter().collect();
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
    checks.push(quantity_check(id, m.issued_quantity, m.rows, c.total_quantity));
    checks
}

/// `coupons.issued_quantity` counts the rows (raised in the same transaction as
/// each insert) and never passes the quantity.
pub fn quantity_check(coupon: Option<i64>, issued_quantity: i64, rows: i64, total_quantity: i64) -> Check {
    Check::new(
        "coupons.issued_quantity = rows <= total_quantity",
        coupon,
        issued_quantity == rows && rows <= total_quantity,
        format!("issued_quantity {issued_quantity}, rows {rows}, total_quantity {total_quantity}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::tests::facts;
    use crate::check::failed;

    #[test]
    fn mysql_sets_must_match_except_for_users_whose_answer_was_lost() {
        let accepted: HashSet<i64> = [1, 2, 3].into();
        let unknown: HashSet<i64> = [9].into();
        assert_eq!(compare_sets(&accepted, [3, 2, 1], &unknown), SetFindings::default());
        let lost_but_accepted = compare_sets(&accepted, [1, 2, 3, 9], &unknown);
        assert_eq!((lost_but_accepted.extra, lost_but_accepted.unexplained), (1, 0));
        let wrong = compare_sets(&accepted, [1, 2, 7], &unknown);
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
