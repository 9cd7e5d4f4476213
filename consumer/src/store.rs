//! The consumer's MySQL write: one transaction per batch, whatever coupons its
//! events are of. It locks their coupon rows in id order (two consumers never
//! deadlock), inserts the new issues idempotently in one statement and raises
//! each coupon's `issued_quantity` by exactly the rows inserted for it, never
//! past `total_quantity` (guarantee 4 of docs/GUARANTEES.md holds here even if
//! Redis forgot everything).

use crate::worker::Lease;
use chrono::{DateTime, Datelike, Utc};
use shared::{CouponId, IssueEvent};
use sqlx::{AssertSqlSafe, FromRow, MySqlPool, QueryBuilder, Row};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

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
    /// it held the coupon rows: it rolled back (see `shared::lease`).
    #[error("the batch's commit lease ran out before it could commit")]
    LeaseExpired,
}

/// What one transaction did with a batch's events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Indexes (into the events given) of the rows inserted (and added to
    /// their coupons' `issued_quantity`).
    pub inserted: Vec<usize>,
    /// Events whose row was already there: redeliveries, no-ops.
    pub duplicates: u64,
    /// Indexes (into the events given) refused for good, with why.
    pub refused: Vec<(usize, Refusal)>,
    /// When each (coupon, user) with a row has it issued (unix ms, as
    /// `issued_at` holds it): this batch's time for those inserted, the row's
    /// own for redeliveries. Their acks record it for the status endpoint.
    pub issued_at_ms: HashMap<(CouponId, i64), i64>,
}

/// A coupon's row as locked by the transaction.
#[derive(Clone, Copy, Debug, sqlx::FromRow)]
struct Locked {
    id: i64,
    total_quantity: i64,
    issued_quantity: i64,
}

/// Whether a transaction looks up which of its users already have a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// Only for coupons whose events do not all fit in the room left.
    NearSellOut,
    /// For every coupon: a redelivery was found among the events.
    Always,
}

/// Writes `events` (of any coupons) in one transaction. The coupons' rows are
/// locked first, in id order, so concurrent consumers of a coupon serialise
/// here and the room left is exact; then, holding them, the batch's `lease` is
/// checked: an expired one rolls back (a rebuild may have read MySQL without
/// these rows).
#[tracing::instrument(name = "INSERT coupon_issues", skip_all, fields(db.system.name = "mysql", db.system = "mysql", db.operation.name = "INSERT", db.collection.name = "coupon_issues", otel.kind = "client", events = events.len()))]
pub async fn write_issues<E: Borrow<IssueEvent>>(
    db: &MySqlPool,
    events: &[E],
    lease: &Lease<'_>,
) -> Result<Written, WriteError> {
    let mut by_coupon: BTreeMap<CouponId, Vec<usize>> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        by_coupon.entry(event.borrow().coupon_id).or_default().push(i);
    }
    if let Some(written) = write_once(db, events, &by_coupon, lease, Lookup::NearSellOut).await? {
        return Ok(written);
    }
    // Every coupon's existing users looked up under its row lock: a planned
    // insert can meet a row only if something wrote one without that lock.
    write_once(db, events, &by_coupon, lease, Lookup::Always)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("a row appeared under the coupon's lock".into()).into())
}

/// One attempt at the transaction. `None` (rolled back) when, having skipped
/// the lookup of existing users, the insert met a redelivery: its row count no
/// longer tells each coupon's inserted rows, so the caller tries again with
/// [`Lookup::Always`].
async fn write_once<E: Borrow<IssueEvent>>(
    db: &MySqlPool,
    events: &[E],
    by_coupon: &BTreeMap<CouponId, Vec<usize>>,
    lease: &Lease<'_>,
    lookup: Lookup,
) -> Result<Option<Written>, WriteError> {
    let mut tx = db.begin().await?;
    let locked = lock_coupons(&mut tx, by_coupon.keys().copied()).await?;
    if !lease.holds() {
        tx.rollback().await?;
        return Err(WriteError::LeaseExpired);
    }
    let mut written = Written::default();
    // The issue time, as `DATETIME(3)` keeps it (ms).
    let now = DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_else(Utc::now);
    // When every event of a coupon fits in the room left, telling redeliveries
    // apart first can not change the outcome: INSERT IGNORE skips them and the
    // row count says how many were new. Only near sell-out is the lookup
    // needed (benchmarked: it was a third of the consumer's MySQL time).
    let looked_up: Vec<(CouponId, Vec<i64>)> = by_coupon
        .iter()
        .filter_map(|(coupon, indexes)| {
            let row = locked.get(coupon)?;
            let fits = indexes.len() as i64 <= row.total_quantity - row.issued_quantity;
            (lookup == Lookup::Always || !fits).then(|| {
                (
                    *coupon,
                    indexes.iter().map(|&i| events[i].borrow().user_id.get()).collect(),
                )
            })
        })
        .collect();
    let existing = existing_rows(&mut tx, &looked_up).await?;
    let mut insert: Vec<usize> = Vec::new();
    let mut planned: BTreeMap<CouponId, u64> = BTreeMap::new();
    for (coupon, indexes) in by_coupon {
        let Some(row) = locked.get(coupon) else {
            written
                .refused
                .extend(indexes.iter().map(|&i| (i, Refusal::CouponNotFound)));
            continue;
        };
        let coupon_events: Vec<&IssueEvent> = indexes.iter().map(|&i| events[i].borrow()).collect();
        let rows = existing.get(coupon);
        let plan = plan(
            &coupon_events,
            |user| rows.is_some_and(|rows| rows.contains_key(&user)),
            row.total_quantity - row.issued_quantity,
        );
        for &j in &plan.insert {
            let user = coupon_events[j].user_id.get();
            written.issued_at_ms.insert((*coupon, user), now.timestamp_millis());
        }
        for (user, at) in rows.into_iter().flatten() {
            written.issued_at_ms.insert((*coupon, *user), *at);
        }
        written.duplicates += plan.duplicates;
        written
            .refused
            .extend(plan.refused.into_iter().map(|(j, refusal)| (indexes[j], refusal)));
        if !plan.insert.is_empty() {
            planned.insert(*coupon, plan.insert.len() as u64);
        }
        insert.extend(plan.insert.into_iter().map(|j| indexes[j]));
    }
    if !insert.is_empty() {
        let inserted = insert_rows(&mut tx, insert.iter().map(|&i| events[i].borrow()), now).await?;
        if inserted != insert.len() as u64 {
            // Only possible without the lookup: a redelivery was planned as new.
            tx.rollback().await?;
            return Ok(None);
        }
        written.inserted = insert;
        raise_issued(&mut tx, &planned).await?;
    }
    tx.commit().await?;
    Ok(Some(written))
}

// The statements below are built per batch, their text varying with its
// coupons and rows: none is kept prepared (`persistent(false)`), or every
// connection would cache up to a hundred of them, some of hundreds of KiB,
// on both sides (measured: consumer RSS 74-82 MiB in the spread sale with them
// cached).

// The statements of a batch are sent as text with their values written in
// (`raw_sql`: one round trip, nothing prepared). Their shape changes with
// every batch (its coupons, its rows): prepared, each would cost a PREPARE
// whose answer describes every placeholder (measured: a 1,024-row insert took
// 50 ms instead of 7), and kept in sqlx's per-connection cache, megabytes of
// placeholder metadata each. Every value written in is an integer or a time
// formatted here, never text from outside, so nothing needs quoting.

/// Writes `values` separated by commas.
fn push_list<T: std::fmt::Display>(sql: &mut String, values: impl IntoIterator<Item = T>) {
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(sql, "{value}");
    }
}

/// Locks the rows of `coupons` (ascending: a `BTreeMap`'s keys), in id order.
async fn lock_coupons(
    tx: &mut sqlx::MySqlConnection,
    coupons: impl Iterator<Item = CouponId>,
) -> Result<HashMap<CouponId, Locked>, sqlx::Error> {
    let mut sql = String::from("SELECT id, total_quantity, issued_quantity FROM coupons WHERE id IN (");
    push_list(&mut sql, coupons.map(CouponId::get));
    sql.push_str(") ORDER BY id FOR UPDATE");
    let rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(tx).await?;
    let mut locked = HashMap::with_capacity(rows.len());
    for row in rows {
        let row = Locked::from_row(&row)?;
        if let Ok(id) = CouponId::new(row.id) {
            locked.insert(id, row);
        }
    }
    Ok(locked)
}

/// One multi-row `INSERT IGNORE` of `events`; returns the rows inserted.
async fn insert_rows<'e>(
    tx: &mut sqlx::MySqlConnection,
    events: impl Iterator<Item = &'e IssueEvent>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let now = datetime(now);
    let mut sql =
        String::from("INSERT IGNORE INTO coupon_issues (coupon_id, user_id, position, accepted_at, issued_at) VALUES ");
    for (i, event) in events.enumerate() {
        #[allow(clippy::expect_used)]
        let accepted_at = accepted_at(event).expect("plan() refuses every event without a valid accepted_at");
        let _ = write!(
            sql,
            "{}({},{},{},'{}','{now}')",
            if i > 0 { "," } else { "" },
            event.coupon_id.get(),
            event.user_id.get(),
            event.position,
            datetime(accepted_at),
        );
    }
    Ok(sqlx::raw_sql(AssertSqlSafe(sql)).execute(tx).await?.rows_affected())
}

/// A `DATETIME(3)` literal's text (UTC).
fn datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Raises each coupon's `issued_quantity` by its rows inserted, in one
/// statement guarded so that no coupon passes its `total_quantity`.
async fn raise_issued(tx: &mut sqlx::MySqlConnection, by: &BTreeMap<CouponId, u64>) -> Result<(), sqlx::Error> {
    let mut raise = String::from("issued_quantity + CASE id");
    for (coupon, n) in by {
        let _ = write!(raise, " WHEN {} THEN {n}", coupon.get());
    }
    raise.push_str(" END");
    let mut sql = format!("UPDATE coupons SET issued_quantity = {raise} WHERE id IN (");
    push_list(&mut sql, by.keys().map(|c| c.get()));
    let _ = write!(sql, ") AND {raise} <= total_quantity");
    let raised = sqlx::raw_sql(AssertSqlSafe(sql)).execute(tx).await?.rows_affected();
    if raised != by.len() as u64 {
        // Impossible while the row locks hold; refuse to commit rather than drift.
        return Err(sqlx::Error::Protocol("issued_quantity guard refused the update".into()));
    }
    Ok(())
}

/// Which of the `users` of each coupon already have a row, with its
/// `issued_at` (unix ms), in one query.
async fn existing_rows(
    tx: &mut sqlx::MySqlConnection,
    wanted: &[(CouponId, Vec<i64>)],
) -> Result<HashMap<CouponId, HashMap<i64, i64>>, sqlx::Error> {
    let mut existing: HashMap<CouponId, HashMap<i64, i64>> = HashMap::new();
    if wanted.is_empty() {
        return Ok(existing);
    }
    let mut sql = String::from("SELECT coupon_id, user_id, issued_at FROM coupon_issues WHERE ");
    for (n, (coupon, users)) in wanted.iter().enumerate() {
        let _ = write!(
            sql,
            "{}(coupon_id = {} AND user_id IN (",
            if n > 0 { " OR " } else { "" },
            coupon.get()
        );
        push_list(&mut sql, users);
        sql.push_str("))");
    }
    for row in sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(tx).await? {
        let (coupon, user): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let issued_at: DateTime<Utc> = row.try_get(2)?;
        if let Ok(coupon) = CouponId::new(coupon) {
            existing
                .entry(coupon)
                .or_default()
                .insert(user, issued_at.timestamp_millis());
        }
    }
    Ok(existing)
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
pub fn plan(events: &[&IssueEvent], existing: impl Fn(i64) -> bool, room: i64) -> Plan {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].position);
    let mut seen = HashSet::new();
    let mut plan = Plan::default();
    let mut room = room.max(0);
    for i in order {
        let user = events[i].user_id.get();
        if accepted_at(events[i]).is_none() {
            plan.refused.push((i, Refusal::InvalidAcceptedAt));
        } else if existing(user) || !seen.insert(user) {
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
        let plan = plan(&events.iter().collect::<Vec<_>>(), |u| existing.contains(&u), 1);
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
            let plan = plan(&[&at(bad)], |_| false, 10);
            assert_eq!(plan.refused, vec![(0, Refusal::InvalidAcceptedAt)], "{bad}");
            assert!(plan.insert.is_empty());
        }
        assert_eq!(plan(&[&at(1_764_000_000_000)], |_| false, 10).insert, vec![0]);
    }
}
