//! The MySQL phase of a run: what the drain waits for per coupon (from the
//! answers), the wait, the facts and their checks, and the drain's figures.

use crate::cli::Settings;
use crate::client::Api;
use crate::mysql;
use crate::report::DrainSummary;
use crate::stats;
use chrono::NaiveDateTime;
use std::collections::HashSet;
use tokio::sync::watch;
use verify::{mysql_checks, Check, CouponFacts};

/// What the MySQL phase found.
pub struct MysqlPhase {
    pub checks: Vec<Check>,
    /// Per coupon: rows, `issued_quantity`, seconds until drained.
    pub figures: Vec<(Option<i64>, Option<i64>, Option<f64>)>,
    pub drain: DrainSummary,
    pub interrupted: bool,
}

/// Waits for the consumers to drain, then checks MySQL against the answers.
pub async fn check_mysql(
    db: &mysql::Db,
    api: &Api,
    s: &Settings,
    facts: &[CouponFacts],
    tally: &stats::Tally,
    load_ended: tokio::time::Instant,
    interrupt: watch::Receiver<u32>,
) -> MysqlPhase {
    let last_user = s
        .user_offset
        .saturating_add(i64::try_from(s.users).unwrap_or(i64::MAX) - 1);
    let goals: Vec<mysql::Goal> = facts
        .iter()
        .enumerate()
        .map(|(index, fact)| {
            let accepted: HashSet<i64> = tally
                .accepted
                .iter()
                .filter(|a| a.coupon == index)
                .map(|a| a.user_id)
                .collect();
            let distinct = i64::try_from(accepted.len()).unwrap_or(i64::MAX);
            mysql::Goal {
                coupon_id: fact.id,
                created: fact.created,
                // A new coupon's rows are all this run's: as many as Redis
                // accepted, which includes requests whose answer was lost.
                expected: if fact.created {
                    distinct.max(fact.redis_issued.unwrap_or(0))
                } else {
                    distinct
                },
                accepted,
                unknown: tally
                    .unknown
                    .iter()
                    .filter(|u| u.coupon == index)
                    .map(|u| u.user_id)
                    .collect(),
                users: (s.user_offset, last_user),
            }
        })
        .collect();
    let drain = db.drain(&goals, load_ended, s.drain_timeout, interrupt).await;
    let mut checks = Vec::new();
    let mut figures = vec![(None, None, None); facts.len()];
    let mut written = Vec::new();
    for (index, (goal, fact)) in goals.iter().zip(facts).enumerate() {
        let state = drain.coupons.get(index).cloned().unwrap_or_default();
        let m = match db.facts(goal, state.done_after.is_some()).await {
            Ok(m) => m,
            Err(err) => {
                let detail = format!("reading the rows: {err}");
                checks.push(Check::new("MySQL readable", Some(fact.id), false, detail));
                continue;
            }
        };
        let mut found = mysql_checks(fact, &m);
        if let Some(sets) = m.sets.as_ref().filter(|s| s.missing > 0) {
            // Say where the first missing users stand: pending, failed or lost.
            let mut said = Vec::new();
            for user in sets.example_missing.iter().take(3) {
                said.push(format!("user {user}: {}", api.issue_status(fact.id, *user).await));
            }
            if let Some(check) = found.iter_mut().rev().find(|c| !c.pass && c.name.starts_with("MySQL")) {
                check.detail.push_str(&format!("; the API says {}", said.join(", ")));
            }
        }
        checks.extend(found);
        written.push((m.range_rows, m.issued_between));
        if let Some(slot) = figures.get_mut(index) {
            *slot = (
                Some(m.rows),
                Some(m.issued_quantity),
                state.done_after.map(|d| d.as_secs_f64()),
            );
        }
    }
    MysqlPhase {
        checks,
        figures,
        drain: summarize_drain(&goals, &drain, &written, s.drain_timeout),
        interrupted: drain.interrupted,
    }
}

/// The drain's figures across coupons; `written` has, per coupon, this run's
/// rows and their first and last `issued_at`.
fn summarize_drain(
    goals: &[mysql::Goal],
    drain: &mysql::Drain,
    written: &[(i64, Option<(NaiveDateTime, NaiveDateTime)>)],
    timeout: std::time::Duration,
) -> DrainSummary {
    let pending: i64 = goals
        .iter()
        .zip(&drain.coupons)
        .map(|(g, c)| (g.expected - c.rows_at_load_end).max(0))
        .sum();
    let drained: i64 = drain
        .coupons
        .iter()
        .map(|c| (c.rows_at_end - c.rows_at_load_end).max(0))
        .sum();
    let time_s = if drain.complete {
        drain
            .coupons
            .iter()
            .filter_map(|c| c.done_after)
            .max()
            .map(|d| d.as_secs_f64())
    } else {
        None
    };
    let first = written.iter().filter_map(|(_, span)| span.map(|s| s.0)).min();
    let last = written.iter().filter_map(|(_, span)| span.map(|s| s.1)).max();
    let rows: i64 = written.iter().map(|(rows, _)| *rows).sum();
    let write_span_s = first
        .zip(last)
        .and_then(|(first, last)| (last - first).to_std().ok())
        .map(|d| d.as_secs_f64());
    DrainSummary {
        complete: drain.complete,
        time_s,
        timeout_s: timeout.as_secs_f64(),
        rows_pending_at_load_end: pending,
        rows_written_after_load: drained,
        rate_rows_per_s: time_s.filter(|t| *t > 0.0 && pending > 0).map(|t| drained as f64 / t),
        write_span_s,
        write_rate_rows_per_s: write_span_s.filter(|s| *s > 0.0).map(|s| rows as f64 / s),
        last_error: drain.last_error.clone(),
    }
}
