//! The invariants every schedule must keep, checked on what the sale's
//! clients were told and what Redis and MySQL hold once the faults are over
//! and the consumers drained.
//!
//! Each invariant is a named function over one [`Evidence`]; adding one is a
//! function and a line in [`INVARIANTS`]. Where Redis lost everything
//! (FLUSHALL), a request sent before the loss may have been accepted and then
//! forgotten: its user may end without a row, `failed` (with a reason) or
//! unknown; every other promise is strict.

use super::load::Answer;
use crate::client::Client;
use redis::AsyncCommands;
use serde_json::Value;
use sqlx::MySqlPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// No answer may take longer (the API's request deadline is 3 s).
const MAX_LATENCY: Duration = Duration::from_secs(5);

/// One coupon of the sale, as the clients, Redis and MySQL see it.
#[derive(Debug, Default)]
pub struct CouponState {
    pub id: i64,
    pub quantity: i64,
    /// Users with a `coupon_issues` row.
    pub rows: BTreeSet<i64>,
    pub issued_quantity: i64,
    /// Users the API records as given up on (the `failed` hash), with the reason.
    pub failed: BTreeMap<i64, String>,
    /// Entries delivered and not acked; `None` when the stream has no group.
    pub pending: Option<usize>,
    /// Entries never delivered to the group.
    pub undelivered: bool,
    /// `GET /coupons/{id}/issues/{user}` for every user the sale involved.
    pub statuses: BTreeMap<i64, (u16, Value)>,
    /// Every answer for this coupon.
    pub answers: Vec<Answer>,
    /// Until when (from the start of the sale) a request may have been
    /// accepted and then lost with Redis' data.
    pub lost_until: Option<Duration>,
    /// Until when asking for this coupon may answer 404 (it did not exist yet).
    pub missing_until: Duration,
}

impl CouponState {
    /// Users told they hold the coupon (202, or `already_issued` after an
    /// unclear answer).
    pub fn promised(&self) -> BTreeSet<i64> {
        let told = |a: &&Answer| a.status == Some(202) || a.code == "already_issued";
        self.answers.iter().filter(told).map(|a| a.user).collect()
    }

    /// Users with an unclear answer (503 or none), who may hold it.
    pub fn maybe(&self) -> BTreeSet<i64> {
        self.answers.iter().filter(|a| a.unclear()).map(|a| a.user).collect()
    }

    /// Users who asked before Redis lost everything, so may have been forgotten.
    pub fn exempt(&self) -> BTreeSet<i64> {
        let Some(lost) = self.lost_until else {
            return BTreeSet::new();
        };
        self.answers.iter().filter(|a| a.sent < lost).map(|a| a.user).collect()
    }

    /// Users a strict promise was made to: promised, and not exempt.
    pub fn strictly_promised(&self) -> BTreeSet<i64> {
        self.promised().difference(&self.exempt()).copied().collect()
    }

    /// Whether the consumers are done: nothing pending or unread, and every
    /// strict promise in MySQL.
    pub fn drained(&self) -> bool {
        self.pending.unwrap_or(0) == 0 && !self.undelivered && self.strictly_promised().is_subset(&self.rows)
    }

    fn involved(&self) -> BTreeSet<i64> {
        let mut users = self.promised();
        users.extend(self.maybe());
        users.extend(self.rows.iter().copied());
        users
    }
}

type Invariant = fn(&CouponState) -> Result<(), String>;

/// Every invariant, by the name a failure report gives.
pub const INVARIANTS: &[(&str, Invariant)] = &[
    ("every answer is one the contract allows, in time", legal_answers),
    (
        "MySQL never holds more than the quantity, and counts its rows",
        mysql_holds_the_line,
    ),
    (
        "never more accepted than the quantity, one position each",
        accepted_within_quantity,
    ),
    ("nobody accepted twice", nobody_twice),
    ("every promise ends as exactly one row", promises_kept),
    ("every row was asked for", rows_were_asked_for),
    ("nothing is left pending", nothing_pending),
    ("the status endpoint agrees with MySQL", status_agrees),
    (
        "nothing is dead-lettered unless Redis lost its data",
        no_dead_letters_without_a_loss,
    ),
];

/// Every broken invariant, as `coupon: invariant: detail`.
pub fn violations(coupons: &[CouponState]) -> Vec<String> {
    let mut found = Vec::new();
    for coupon in coupons {
        for (name, check) in INVARIANTS {
            if let Err(detail) = check(coupon) {
                found.push(format!("coupon {}: {name}: {detail}", coupon.id));
            }
        }
    }
    found
}

fn legal_answers(c: &CouponState) -> Result<(), String> {
    let illegal: Vec<&Answer> = c
        .answers
        .iter()
        .filter(|a| {
            let allowed = match (a.status, a.code.as_str()) {
                (Some(202), _) | (None, _) | (Some(503), "unavailable") => true,
                (Some(409), code) => ["already_issued", "sold_out"].contains(&code),
                (Some(404), "coupon_not_found") => a.sent < c.missing_until,
                _ => false,
            };
            !allowed || a.elapsed > MAX_LATENCY
        })
        .take(5)
        .collect();
    ok_if(illegal.is_empty(), || format!("{illegal:?}"))
}

fn mysql_holds_the_line(c: &CouponState) -> Result<(), String> {
    let rows = c.rows.len() as i64;
    ok_if(rows <= c.quantity && c.issued_quantity == rows, || {
        format!(
            "{rows} rows, issued_quantity {}, quantity {}",
            c.issued_quantity, c.quantity
        )
    })
}

fn accepted_within_quantity(c: &CouponState) -> Result<(), String> {
    if c.lost_until.is_some() {
        // After a loss the set is rebuilt from MySQL: positions start again.
        return Ok(());
    }
    let positions: Vec<i64> = c.answers.iter().filter_map(|a| a.position).collect();
    let distinct: BTreeSet<i64> = positions.iter().copied().collect();
    let in_range = distinct.iter().all(|p| (1..=c.quantity).contains(p));
    ok_if(distinct.len() == positions.len() && in_range, || {
        format!(
            "{} positions, {} distinct, quantity {}",
            positions.len(),
            distinct.len(),
            c.quantity
        )
    })
}

fn nobody_twice(c: &CouponState) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let twice: Vec<i64> = c
        .answers
        .iter()
        .filter(|a| a.status == Some(202) && !c.exempt().contains(&a.user))
        .filter(|a| !seen.insert(a.user))
        .map(|a| a.user)
        .collect();
    ok_if(twice.is_empty(), || format!("users with two 202s: {twice:?}"))
}

fn promises_kept(c: &CouponState) -> Result<(), String> {
    let broken: Vec<i64> = c.strictly_promised().difference(&c.rows).copied().collect();
    let forgotten: Vec<i64> = c
        .promised()
        .intersection(&c.exempt())
        .filter(|u| !c.rows.contains(u) && !c.failed.contains_key(u) && status_of(c, **u) != Some("not_found"))
        .copied()
        .collect();
    ok_if(broken.is_empty() && forgotten.is_empty(), || {
        format!("promised without a row: {broken:?}; lost with Redis but neither failed nor unknown: {forgotten:?}")
    })
}

fn rows_were_asked_for(c: &CouponState) -> Result<(), String> {
    let asked: BTreeSet<i64> = c.promised().union(&c.maybe()).copied().collect();
    let unexplained: Vec<&i64> = c.rows.difference(&asked).collect();
    ok_if(unexplained.is_empty(), || {
        format!("rows of users never accepted: {unexplained:?}")
    })
}

fn nothing_pending(c: &CouponState) -> Result<(), String> {
    ok_if(c.pending.unwrap_or(0) == 0 && !c.undelivered, || {
        format!("pending {:?}, undelivered {}", c.pending, c.undelivered)
    })
}

fn status_agrees(c: &CouponState) -> Result<(), String> {
    let disagree: Vec<(i64, Option<&str>)> = c
        .involved()
        .into_iter()
        .map(|u| (u, status_of(c, u)))
        .filter(|&(u, status)| match status {
            Some("issued") => !c.rows.contains(&u),
            Some("failed") => c.rows.contains(&u) || !c.exempt().contains(&u),
            Some("not_found") => c.rows.contains(&u) || c.strictly_promised().contains(&u),
            _ => true,
        })
        .take(10)
        .collect();
    ok_if(disagree.is_empty(), || format!("(user, status): {disagree:?}"))
}

fn no_dead_letters_without_a_loss(c: &CouponState) -> Result<(), String> {
    ok_if(c.lost_until.is_some() || c.failed.is_empty(), || {
        format!("{:?}", c.failed)
    })
}

fn status_of(c: &CouponState, user: i64) -> Option<&str> {
    let (code, body) = c.statuses.get(&user)?;
    match code {
        200 => body["status"].as_str(),
        404 => Some("not_found"),
        _ => None,
    }
}

fn ok_if(ok: bool, detail: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(detail())
    }
}

/// Reads the coupon's Redis and MySQL state (not the statuses).
pub async fn observe(
    db: &MySqlPool,
    redis: &mut redis::aio::ConnectionManager,
    coupon: &mut CouponState,
) -> Result<(), String> {
    let users: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM coupon_issues WHERE coupon_id = ?")
        .bind(coupon.id)
        .fetch_all(db)
        .await
        .map_err(|e| e.to_string())?;
    coupon.rows = users.into_iter().collect();
    coupon.issued_quantity = sqlx::query_scalar("SELECT issued_quantity FROM coupons WHERE id = ?")
        .bind(coupon.id)
        .fetch_optional(db)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let keys = crate::keys(coupon.id);
    let failed: BTreeMap<i64, String> = redis.hgetall(&keys.failed).await.map_err(|e| e.to_string())?;
    coupon.failed = failed;
    let groups: Result<redis::streams::StreamInfoGroupsReply, _> = redis.xinfo_groups(&keys.events).await;
    let stream: Result<redis::streams::StreamInfoStreamReply, _> = redis.xinfo_stream(&keys.events).await;
    match (groups, stream) {
        (Ok(groups), Ok(stream)) => {
            let group = groups.groups.into_iter().find(|g| g.name == crate::CONSUMER_GROUP);
            coupon.pending = group.as_ref().map(|g| g.pending);
            coupon.undelivered = group.is_none_or(|g| g.last_delivered_id != stream.last_generated_id);
        }
        // No stream: nothing was written to it since Redis lost its data.
        _ => (coupon.pending, coupon.undelivered) = (None, false),
    }
    Ok(())
}

/// Asks the API for the status of every user the sale involved.
pub async fn ask_statuses(client: &Client, coupon: &mut CouponState) {
    for user in coupon.involved() {
        for _ in 0..5 {
            let path = format!("/coupons/{}/issues/{user}", coupon.id);
            if let Ok(response) = client.http.get(format!("{}{path}", client.base)).send().await {
                let code = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                if code != 503 {
                    coupon.statuses.insert(user, (code, body));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
