//! The consumer's MySQL write: one transaction per coupon per batch that inserts
//! the new issues idempotently and raises `issued_quantity` by exactly the rows
//! inserted, never past `total_quantity` (guarantee 4 of docs/GUARANTEES.md
//! holds here even if Redis forgot everything).

use crate::worker::Lease;
use chrono::{DateTime, Datelike, Utc};
use shared::{CouponId, IssueEvent};
use sqlx::{MySqlPool, QueryBuilder};
use std::borrow::Borrow;
use std::collections::HashSet;

/// Why an event can never be written; it goes to the dead-letter stream (as a
/// `dead_letter::DeadReason`, which names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// MySQL already holds `total_quantity` rows for the coupon.
    QuantityExceeded,
    /// MySQL has no such coupon.
    CouponNotFound,
    /// `accepted_at_ms` is no time a MySQL `DATETIME` can hold.
    InvalidAcceptedAt,
}

/// Why a batch's transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("mysql: {0}")]
    Mysql(#[from] sqlx::Error),
    /// Its entries were last confirmed pending `COMMIT_LEASE` ago or more when
    /// it held the coupon row: it rolled back (see `shared::lease`).
    #[error("the batch's commit lease ran out before it could commit")]
    LeaseExpired,
}

/// What one transaction did with a coupon's events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted (and added to `issued_quantity`).
    pub inserted: u64,
    /// Events whose row was already there: redeliveries, no-ops.
    pub duplicates: u64,
    /// Indexes (into the events given) refused for good, with why.
    pub refused: Vec<(usize, Refusal)>,
}

/// Writes `events` (all of `coupon`) in one transaction. The coupon's row is
/// locked first, so concurrent consumers of one coupon serialise here and the
/// room left is exact; then, holding it, the batch's `lease` is checked: an
/// expired one rolls back (a rebuild may have read MySQL without these rows).
#[tracing::instrument(name = "INSERT coupon_issues", skip_all, fields(db.system.name = "mysql", db.system = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", otel.kind = "client", coupon = %coupon, events = events.len()))]
pub async fn write_issues<E: Borrow<IssueEvent>>(
    db: &MySqlPool,
    coupon: CouponId,
    events: &[E],
    lease: &Lease<'_>,
) -> Result<Written, WriteError> {
    let mut tx = db.begin().await?;
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT total_quantity, issued_quantity FROM coupons WHERE id = ? FOR UPDATE")
            .bind(coupon.get())
            .fetch_optional(&mut *tx)
            .await?;
    if !lease.holds() {
        tx.rollback().await?;
        return Err(WriteError::LeaseExpired);
    }
    let Some((total, issued)) = row else {
        return Ok(Written {
            refused: (0..events.len()).map(|i| (i, Refusal::CouponNotFound)).collect(),
            ..Written::default()
        });
    };
    // When every event fits in the room left, telling redeliveries apart first
    // can not change the outcome: INSERT IGNORE skips them and its row count says
    // how many were new. Only near sell-out is the lookup needed (benchmarked:
    // it was a third of the consumer's MySQL time).
    let existing = if events.len() as i64 <= total - issued {
        HashSet::new()
    } else {
        existing_users(&mut tx, coupon, events).await?
    };
    let plan = plan(events, &existing, total - issued);
    let mut written = Written {
        duplicates: plan.duplicates,
        refused: plan.refused,
        inserted: 0,
    };
    if !plan.insert.is_empty() {
        let now = Utc::now();
        let mut insert = QueryBuilder::new(
            "INSERT IGNORE INTO coupon_issues (coupon_id, user_id, position, accepted_at, issued_at) ",
        );
        insert.push_values(plan.insert.iter().map(|&i| events[i].borrow()), |mut row, event| {
            #[allow(clippy::expect_used)]
            let accepted_at = accepted_at(event).expect("plan() refuses every event without a valid accepted_at");
            row.push_bind(coupon.get())
                .push_bind(event.user_id.get())
                .push_bind(event.position)
                .push_bind(accepted_at)
                .push_bind(now);
        });
        written.inserted = insert.build().execute(&mut *tx).await?.rows_affected();
        written.duplicates += plan.insert.len() as u64 - written.inserted;
    }
    if written.inserted > 0 {
        let raised = sqlx::query("UPDATE coupons SET issued_quantity = issued_quantity + ? WHERE id = ? AND issued_quantity + ? <= total_quantity")
            .bind(written.inserted)
            .bind(coupon.get())
            .bind(written.inserted)
            .execute(&mut *tx)
            .await?;
        if raised.rows_affected() != 1 {
            // Impossible while the row lock holds; refuse to commit rather than drift.
            return Err(sqlx::Error::Protocol("issued_quantity guard refused the update".into()).into());
        }
    }
    tx.commit().await?;
    Ok(written)
}

async fn existing_users<E: Borrow<IssueEvent>>(
    tx: &mut sqlx::MySqlConnection,
    coupon: CouponId,
    events: &[E],
) -> Result<HashSet<i64>, sqlx::Error> {
    let users: Vec<i64> = events.iter().map(|e| e.borrow().user_id.get()).collect();
    let rows: Vec<i64> = select_users(coupon, Some(&users))
        .build_query_scalar()
        .fetch_all(tx)
        .await?;
    Ok(rows.into_iter().collect())
}

/// When the API accepted `event`, if that is a time `coupon_issues.accepted_at`
/// (a `DATETIME`, years 1000 to 9999) can hold. The value comes from the stream,
/// so it is checked rather than trusted.
fn accepted_at(event: &IssueEvent) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(event.accepted_at_ms).filter(|t| (1000..=9999).contains(&t.year()))
}

/// Which events to insert, which are redeliveries and which can not be written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub insert: Vec<usize>,
    pub duplicates: u64,
    pub refused: Vec<(usize, Refusal)>,
}

/// Decides per event, in position order so that if the quantity no longer fits
/// (only possible after Redis lost state) the earliest accepted keep their rows.
/// An event without a valid acceptance time is refused outright.
pub fn plan<E: Borrow<IssueEvent>>(events: &[E], existing: &HashSet<i64>, room: i64) -> Plan {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].borrow().position);
    let mut seen = HashSet::new();
    let mut plan = Plan::default();
    let mut room = room.max(0);
    for i in order {
        let user = events[i].borrow().user_id.get();
        if accepted_at(events[i].borrow()).is_none() {
            plan.refused.push((i, Refusal::InvalidAcceptedAt));
        } else if existing.contains(&user) || !seen.insert(user) {
            plan.duplicates += 1;
        } else if room > 0 {
            room -= 1;
            plan.insert.push(i);
        } else {
            plan.refused.push((i, Refusal::QuantityExceeded));
        }
    }
    plan
}

/// The users with a row for `coupon`: those of `users`, or all when `None`.
pub async fn users_with_rows(
    db: &MySqlPool,
    coupon: CouponId,
    users: Option<&[i64]>,
) -> Result<HashSet<i64>, sqlx::Error> {
    if users.is_some_and(<[i64]>::is_empty) {
        return Ok(HashSet::new());
    }
    let rows: Vec<i64> = select_users(coupon, users).build_query_scalar().fetch_all(db).await?;
    Ok(rows.into_iter().collect())
}

/// `SELECT user_id` of `coupon`'s rows, only those of `users` when given
/// (never empty: `IN ()` is a syntax error).
fn select_users(coupon: CouponId, users: Option<&[i64]>) -> QueryBuilder<sqlx::MySql> {
    let mut select = QueryBuilder::new("SELECT user_id FROM coupon_issues WHERE coupon_id = ");
    select.push_bind(coupon.get());
    if let Some(users) = users {
        select.push(" AND user_id IN (");
        let mut list = select.separated(", ");
        for user in users {
            list.push_bind(*user);
        }
        select.push(")");
    }
    select
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::UserId;

    fn event(user: i64, position: i64) -> IssueEvent {
        IssueEvent {
            coupon_id: CouponId::new(1).unwrap(),
            user_id: UserId::new(user).unwrap(),
            accepted_at_ms: 0,
            position,
            trace: Default::default(),
        }
    }

    #[test]
    fn redeliveries_are_noops_and_the_earliest_keep_the_last_rooms() {
        let events = [event(30, 3), event(10, 1), event(20, 2), event(10, 1), event(40, 4)];
        let existing = HashSet::from([20]);
        let plan = plan(&events, &existing, 1);
        assert_eq!(plan.insert, vec![1]);
        assert_eq!(plan.duplicates, 2);
        assert_eq!(
            plan.refused,
            vec![(0, Refusal::QuantityExceeded), (4, Refusal::QuantityExceeded)]
        );
    }

    #[test]
    fn an_acceptance_time_mysql_can_not_hold_is_refused_not_replaced_by_now() {
        let at = |ms| IssueEvent {
            accepted_at_ms: ms,
            ..event(1, 1)
        };
        for bad in [i64::MAX, i64::MIN, -62_000_000_000_000, 253_402_300_800_000] {
            let plan = plan(&[at(bad)], &HashSet::new(), 10);
            assert_eq!(plan.refused, vec![(0, Refusal::InvalidAcceptedAt)], "{bad}");
            assert!(plan.insert.is_empty());
        }
        assert_eq!(plan(&[at(1_764_000_000_000)], &HashSet::new(), 10).insert, vec![0]);
    }
}
