//! Changing a live coupon (`PATCH /coupons/{coupon_id}`): MySQL is written
//! first, then Redis, and Redis is never looser than MySQL on the way.
//!
//! Under the coupon row's lock (so two operators' changes, and a rebuild,
//! serialise), the change is written to MySQL but not committed; Redis then
//! gets the *strictest* of the old and new values (the lower quantity, the
//! later start, the earlier end, paused if either is), refused atomically if
//! more users were accepted than that quantity; only then does MySQL commit,
//! and Redis gets the new values. Whatever fails in between, Redis accepts no
//! request that neither the old nor the new coupon would (a lowered quantity
//! can never be oversold), and the next PATCH (even an empty one) or a rebuild
//! of the state writes MySQL's values again.

use crate::app::AppState;
use crate::error::ApiError;
use crate::rebuild::Placement;
use crate::store;
use chrono::{DateTime, Utc};
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId};
use std::sync::LazyLock;

/// The fields a PATCH may change; `None` leaves one as it is.
#[derive(Debug, Default, Clone)]
pub struct CouponPatch {
    pub name: Option<String>,
    pub total_quantity: Option<i64>,
    pub issue_start: Option<DateTime<Utc>>,
    pub issue_end: Option<DateTime<Utc>>,
    pub paused: Option<bool>,
}

/// A coupon as changed, with its accepted count.
#[derive(Debug)]
pub struct Amended {
    pub coupon: Coupon,
    pub issued: i64,
}

/// The coupon's row, locked.
#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    draft: store::CouponDraft,
    issued_quantity: i64,
    incarnation: i64,
}

static AMEND: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("../../lua/amend.lua")));

/// What Redis did with a change.
enum Applied {
    /// In force; this many users are accepted.
    Done { issued: i64 },
    /// Redis holds no state of this coupon: the next request rebuilds it from MySQL.
    NoState,
    /// More users are accepted than the quantity allows: nothing changed.
    BelowIssued { issued: i64 },
}

/// Changes coupon `id` as `patch` says (see the module doc for the order).
pub async fn amend(app: &AppState, id: CouponId, patch: CouponPatch) -> Result<Amended, ApiError> {
    let mut redis = app.redis();
    let now = redis_now(&mut redis).await?;
    let mut tx = app.db.begin().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT name, total_quantity, issue_start, issue_end, paused, issued_quantity, \
         CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS incarnation FROM coupons WHERE id = ? FOR UPDATE",
    )
    .bind(id.get())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Row {
        draft,
        issued_quantity,
        incarnation,
    }) = row
    else {
        return Err(ApiError::CouponNotFound);
    };
    let old = draft.with_id(id);
    let new = patch.apply(&old, now)?;
    if new.total_quantity < issued_quantity {
        return Err(ApiError::QuantityBelowIssued {
            issued: issued_quantity,
        });
    }
    sqlx::query(
        "UPDATE coupons SET name = ?, total_quantity = ?, issue_start = ?, issue_end = ?, paused = ? WHERE id = ?",
    )
    .bind(&new.name)
    .bind(new.total_quantity)
    .bind(store::datetime(new.issue_start))
    .bind(store::datetime(new.issue_end))
    .bind(new.paused)
    .bind(id.get())
    .execute(&mut *tx)
    .await?;
    let placement = app.placement();
    if let Applied::BelowIssued { issued } = apply(&mut redis, placement, &strictest(&old, &new), incarnation).await? {
        tx.rollback().await?;
        return Err(ApiError::QuantityBelowIssued { issued });
    }
    tx.commit().await?;
    let issued = match apply(&mut redis, placement, &new, incarnation).await? {
        Applied::Done { issued } | Applied::BelowIssued { issued } => issued,
        Applied::NoState => issued_quantity,
    };
    app.cache.remember(new.clone());
    app.admission.forget(id);
    tracing::info!(coupon = %id, ?patch, "coupon changed by an operator");
    Ok(Amended { coupon: new, issued })
}

impl CouponPatch {
    /// The coupon as changed, if the change is one the rules allow at `now`.
    fn apply(&self, old: &Coupon, now: DateTime<Utc>) -> Result<Coupon, ApiError> {
        let invalid = |message: &str| Err(ApiError::Unprocessable(message.to_string()));
        let mut new = old.clone();
        if let Some(name) = &self.name {
            if !(1..=200).contains(&name.chars().count()) {
                return invalid("name must be 1 to 200 characters");
            }
            new.name = name.clone();
        }
        if let Some(total) = self.total_quantity {
            if total < 1 {
                return invalid("total_quantity must be at least 1");
            }
            new.total_quantity = total;
        }
        if let Some(start) = self.issue_start {
            if start != old.issue_start && now >= old.issue_start {
                return invalid("issue_start can only change before the sale starts");
            }
            new.issue_start = start;
        }
        if let Some(end) = self.issue_end {
            new.issue_end = end;
        }
        if let Some(paused) = self.paused {
            new.paused = paused;
        }
        if new.issue_start >= new.issue_end {
            return invalid("issue_start must be before issue_end");
        }
        Ok(new)
    }
}

/// What neither `old` nor `new` would refuse: the lower quantity, the later
/// start, the earlier end, paused if either is.
fn strictest(old: &Coupon, new: &Coupon) -> Coupon {
    Coupon {
        total_quantity: old.total_quantity.min(new.total_quantity),
        issue_start: old.issue_start.max(new.issue_start),
        issue_end: old.issue_end.min(new.issue_end),
        paused: old.paused || new.paused,
        ..new.clone()
    }
}

/// Writes `coupon`'s values to its Redis metadata (see `lua/amend.lua`).
async fn apply(
    redis: &mut RedisConn,
    placement: Placement,
    coupon: &Coupon,
    incarnation: i64,
) -> Result<Applied, ApiError> {
    let keys = placement.layout.coupon(coupon.id);
    let mut amend = AMEND.prepare_invoke();
    amend
        .key(&keys.meta)
        .key(&keys.issued)
        .key(&keys.failed)
        .key(&keys.issued_at);
    placement.metadata_args(&mut amend, coupon, incarnation);
    let (code, issued): (i64, i64) = amend.invoke_async(redis).await?;
    Ok(match code {
        1 => Applied::Done { issued },
        -1 => Applied::BelowIssued { issued },
        _ => Applied::NoState,
    })
}

/// Redis' clock: the one the issue script judges the period by.
pub async fn redis_now(redis: &mut RedisConn) -> Result<DateTime<Utc>, ApiError> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(redis).await?;
    DateTime::<Utc>::from_timestamp_millis(secs * 1000 + micros / 1000)
        .ok_or(ApiError::Unavailable("Redis answered TIME with no valid instant"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).single().unwrap()
    }

    fn coupon() -> Coupon {
        Coupon {
            id: CouponId::new(1).unwrap(),
            name: "sale".into(),
            total_quantity: 100,
            issue_start: at(1000),
            issue_end: at(2000),
            paused: false,
        }
    }

    #[test]
    fn the_start_moves_only_before_the_sale_starts_and_the_period_stays_ordered() {
        let later = CouponPatch {
            issue_start: Some(at(1500)),
            ..CouponPatch::default()
        };
        assert_eq!(later.apply(&coupon(), at(999)).unwrap().issue_start, at(1500));
        assert!(later.apply(&coupon(), at(1000)).is_err(), "started");
        let same = CouponPatch {
            issue_start: Some(at(1000)),
            issue_end: Some(at(3000)),
            ..CouponPatch::default()
        };
        assert_eq!(same.apply(&coupon(), at(1500)).unwrap().issue_end, at(3000));
        let inverted = CouponPatch {
            issue_end: Some(at(900)),
            ..CouponPatch::default()
        };
        assert!(inverted.apply(&coupon(), at(1500)).is_err());
    }

    #[test]
    fn redis_first_gets_what_neither_the_old_nor_the_new_coupon_would_refuse() {
        let new = Coupon {
            total_quantity: 50,
            issue_start: at(500),
            issue_end: at(3000),
            paused: true,
            ..coupon()
        };
        let strict = strictest(&coupon(), &new);
        assert_eq!(
            (
                strict.total_quantity,
                strict.issue_start,
                strict.issue_end,
                strict.paused
            ),
            (50, at(1000), at(2000), true)
        );
    }
}
