//! `coupon-fleet sale`: `--users` users ask once each for one coupon, then the
//! coupon's rows are counted every `--poll-ms` until every accepted user has
//! one: the time from the last 202 to the last row is what the consumers add
//! to a sale, however many other coupons are open.

use super::answers::Answers;
use super::cli::SaleArgs;
use super::{body_for, rows};
use crate::client::Api;
use sqlx::MySqlPool;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the sale did and how long its rows took.
#[derive(Debug, serde::Serialize)]
pub struct SaleOutcome {
    pub coupon_id: i64,
    pub requests: u64,
    pub accepted: u64,
    pub answers: Answers,
    /// From the first request to the last answer.
    pub load_s: f64,
    /// The coupon's rows at the first count after the last answer.
    pub rows_at_load_end: i64,
    /// At the last count.
    pub rows_at_end: i64,
    /// Every accepted user's row was in before the timeout.
    pub drained: bool,
    /// From the last 202 to the count that saw every accepted row.
    pub last_202_to_rows_s: Option<f64>,
    /// How long the counting went on (the timeout when not drained).
    pub waited_s: f64,
}

impl SaleOutcome {
    pub fn line(&self) -> String {
        let drain = match self.last_202_to_rows_s {
            Some(s) => format!("all {} rows in MySQL {s:.3} s after the last 202", self.accepted),
            None => format!(
                "NOT drained: {}/{} rows after {:.0} s",
                self.rows_at_end, self.accepted, self.waited_s
            ),
        };
        format!(
            "sale on coupon {}: {} requests in {:.2} s, answers {}; {drain}",
            self.coupon_id,
            self.requests,
            self.load_s,
            self.answers.brief()
        )
    }
}

/// Runs the sale and the wait for its rows.
pub async fn run(api: &Api, db: &MySqlPool, s: &SaleArgs) -> anyhow::Result<SaleOutcome> {
    anyhow::ensure!(
        s.users > 0 && s.concurrency > 0,
        "--users and --concurrency must be at least 1"
    );
    let before = rows::rows_of(db, s.coupon).await?;
    anyhow::ensure!(
        before == 0,
        "coupon {} already has {before} rows: sell a fresh one",
        s.coupon
    );
    let uri = api.issue_uri(s.coupon)?;
    let offset = s.user_offset.unwrap_or_else(crate::cli::default_user_offset);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..s.concurrency {
        let (api, uri, next, users) = (api.clone(), uri.clone(), Arc::clone(&next), s.users);
        workers.spawn(async move {
            let mut answers = Answers::default();
            let mut last_202 = None;
            loop {
                let n = next.fetch_add(1, Relaxed);
                if n >= users {
                    return (answers, last_202);
                }
                let user = offset.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
                let answer = api.post_issue(uri.clone(), user, body_for(user)).await;
                if answers.record(&answer) {
                    last_202 = Some(Instant::now());
                }
            }
        });
    }
    let mut answers = Answers::default();
    let mut last_202: Option<Instant> = None;
    while let Some(joined) = workers.join_next().await {
        let (worker_answers, worker_last) = joined?;
        answers.merge(worker_answers);
        last_202 = last_202.max(worker_last);
    }
    let load_end = Instant::now();
    let accepted = i64::try_from(answers.accepted).unwrap_or(i64::MAX);
    let deadline = load_end + Duration::try_from_secs_f64(s.drain_timeout).unwrap_or(Duration::from_secs(300));
    let poll = Duration::from_millis(s.poll_ms.max(1));
    let mut rows_at_load_end = None;
    let (rows_at_end, done) = loop {
        let n = rows::rows_of(db, s.coupon).await?;
        let now = Instant::now();
        rows_at_load_end.get_or_insert(n);
        if n >= accepted {
            break (n, Some(now));
        }
        if now >= deadline {
            break (n, None);
        }
        tokio::time::sleep(poll).await;
    };
    Ok(SaleOutcome {
        coupon_id: s.coupon,
        requests: answers.total(),
        accepted: answers.accepted,
        load_s: load_end.duration_since(started).as_secs_f64(),
        rows_at_load_end: rows_at_load_end.unwrap_or(rows_at_end),
        rows_at_end,
        drained: done.is_some(),
        last_202_to_rows_s: done.map(|d| d.saturating_duration_since(last_202.unwrap_or(load_end)).as_secs_f64()),
        waited_s: Instant::now().duration_since(load_end).as_secs_f64(),
        answers,
    })
}
