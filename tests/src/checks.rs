//! A sale's guarantees as test assertions, on the `verify` crate's findings
//! (the same definitions `coupon-bench` reports on).

use std::collections::HashSet;

/// Asserts what the 202s of a sold-out new coupon say: exactly `quantity`
/// accepted, nobody twice, positions exactly 1..=`quantity`. Returns the
/// accepted users.
pub fn assert_sold_out(coupon: i64, accepted: &[(i64, i64)], quantity: i64) -> HashSet<i64> {
    let answers = accepted.iter().map(|&(user, position)| (user, Some(position)));
    let findings = verify::examine(answers, quantity);
    assert_eq!(
        i64::try_from(findings.accepted),
        Ok(quantity),
        "coupon {coupon}: exactly total_quantity requests are accepted"
    );
    assert_eq!(
        findings.duplicate_users, 0,
        "coupon {coupon}: nobody is accepted twice: {findings:?}"
    );
    assert!(
        findings.gapless,
        "coupon {coupon}: positions are 1..N without gaps or repeats: {findings:?}"
    );
    accepted.iter().map(|&(user, _)| user).collect()
}

/// Asserts that every accepted user has a row, and that anyone else with a row
/// had an answer that may have been an acceptance (`ambiguous`).
pub fn assert_rows_match(rows: &HashSet<i64>, accepted: &HashSet<i64>, ambiguous: &HashSet<i64>) {
    let sets = verify::compare_sets(accepted, rows.iter().copied(), ambiguous);
    assert_eq!(
        sets.missing, 0,
        "accepted users without a row, e.g. {:?}",
        sets.example_missing
    );
    assert_eq!(
        sets.unexplained, 0,
        "rows for users never accepted, e.g. {:?}",
        sets.example_unexplained
    );
}
