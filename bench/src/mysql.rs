//! MySQL, read only: waits for the consumers to write every accepted request
//! (polling the row counts, timing the drain from the end of the load), then
//! reads the facts the checks need: rows, `coupons.issued_quantity`, user ids,
//! and the span of `issued_at` (the consumers' write rate).

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use verify::mysql::{self, Ledger, UserRange, ALL_USERS};
use verify::{compare_sets, MysqlFacts};

/// How often the counts are polled while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Above this many rows the user sets are not compared, only counted.
pub const MAX_SET_ROWS: i64 = 1_000_000;

/// What one coupon's drain waits for.
pub struct Goal {
    pub coupon_id: i64,
    /// Created by this run: every row of the coupon is this run's.
    pub created: bool,
    /// Rows to wait for: created coupons count all their rows, others only the
    /// rows of this run's user range (`users`).
    pub expected: i64,
    /// The user ids this run saw accepted.
    pub accepted: HashSet<i64>,
    /// User ids whose answer was lost: their rows may or may not come.
    pub unknown: HashSet<i64>,
    /// This run's user id range.
    pub users: UserRange,
}

impl Goal {
    /// The users whose rows count: all of a created coupon's, this run's range
    /// of an existing one.
    fn counted_users(&self) -> UserRange {
        if self.created {
            ALL_USERS
        } else {
            self.users
        }
    }
}

/// How one coupon's drain went.
#[derive(Clone, Debug, Default)]
pub struct CouponDrain {
    /// Rows counted at the first poll after the load.
    pub rows_at_load_end: i64,
    /// Rows counted at the last poll.
    pub rows_at_end: i64,
    /// When every row was in, after the end of the load.
    pub done_after: Option<Duration>,
}

/// How the whole drain went.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    pub coupons: Vec<CouponDrain>,
    /// Every coupon drained before the timeout.
    pub complete: bool,
    /// A Ctrl-C cut the wait short.
    pub interrupted: bool,
    /// The last MySQL error seen while polling, if any.
    pub last_error: Option<String>,
}

/// A read-only MySQL pool.
pub struct Db {
    pool: MySqlPool,
}

impl Db {
    /// Connects (a few connections, short timeouts) and checks the tables are there.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let db = Self { pool };
        sqlx::query("SELECT 1 FROM coupon_issues LIMIT 1")
            .fetch_optional(&db.pool)
            .await?;
        Ok(db)
    }

    /// The pool, for the report's watch of the rows.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The rows that count for `goal`.
    async fn counted(&self, goal: &Goal) -> Result<i64, sqlx::Error> {
        mysql::rows(&self.pool, goal.coupon_id, goal.counted_users()).await
    }

    /// Whether `goal` is met: enough rows, and (for an existing coupon, whose
    /// count may include rows of lost answers) a row for every accepted user.
    async fn met(&self, goal: &Goal, counted: i64) -> Result<bool, sqlx::Error> {
        if counted < goal.expected {
            return Ok(false);
        }
        if goal.created || goal.unknown.is_empty() {
            return Ok(true);
        }
        let users: HashSet<i64> = mysql::user_ids(&self.pool, goal.coupon_id, goal.users).await?;
        Ok(goal.accepted.iter().all(|u| users.contains(u)))
    }

    /// Polls until every goal is met, `timeout` after `load_ended` at the latest.
    /// A new Ctrl-C (the `interrupt` count going up) stops the wait.
    pub async fn drain(
        &self,
        goals: &[Goal],
        load_ended: Instant,
        timeout: Duration,
        mut interrupt: watch::Receiver<u32>,
    ) -> Drain {
        let interrupts_before = *interrupt.borrow_and_update();
        let deadline = load_ended + timeout;
        let expected: i64 = goals.iter().map(|g| g.expected).sum();
        let bar = ProgressBar::new(u64::try_from(expected).unwrap_or(0));
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} waiting for MySQL {elapsed_precise} [{bar:30}] {pos}/{len} rows {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let mut drain = Drain {
            coupons: vec![CouponDrain::default(); goals.len()],
            ..Drain::default()
        };
        let mut first = vec![true; goals.len()];
        let mut pending: Vec<usize> = (0..goals.len()).collect();
        loop {
            let mut still = Vec::with_capacity(pending.len());
            for &i in &pending {
                let (Some(goal), Some(state)) = (goals.get(i), drain.coupons.get_mut(i)) else {
                    continue;
                };
                let result = match self.counted(goal).await {
                    Ok(n) => self.met(goal, n).await.map(|met| (n, met)),
                    Err(err) => Err(err),
                };
                match result {
                    Ok((n, met)) => {
                        if std::mem::take(&mut first[i]) {
                            state.rows_at_load_end = n;
                        }
                        state.rows_at_end = n;
                        if met {
                            state.done_after = Some(load_ended.elapsed());
                        } else {
                            still.push(i);
                        }
                    }
                    Err(err) => {
                        drain.last_error = Some(err.to_string());
                        still.push(i);
                    }
                }
            }
            pending = still;
            let counted: i64 = drain.coupons.iter().map(|c| c.rows_at_end).sum();
            bar.set_position(u64::try_from(counted).unwrap_or(0));
            if pending.is_empty() {
                drain.complete = true;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                Ok(()) = interrupt.changed() => {
                    if *interrupt.borrow() > interrupts_before {
                        drain.interrupted = true;
                        break;
                    }
                }
            }
        }
        bar.finish_and_clear();
        drain
    }

    /// The facts the MySQL checks need for `goal`, after the drain.
    pub async fn facts(&self, goal: &Goal, drained: bool) -> Result<MysqlFacts, sqlx::Error> {
        let ledger = Ledger::read(&self.pool, goal.coupon_id).await?;
        let range_rows = mysql::rows(&self.pool, goal.coupon_id, goal.users).await?;
        let compared = if goal.created { ledger.rows } else { range_rows };
        let sets = if compared <= MAX_SET_ROWS {
            let in_db: Vec<i64> = mysql::user_ids(&self.pool, goal.coupon_id, goal.counted_users()).await?;
            Some(compare_sets(&goal.accepted, in_db, &goal.unknown))
        } else {
            None
        };
        let issued_between = mysql::issued_between(&self.pool, goal.coupon_id, goal.users).await?;
        Ok(MysqlFacts {
            rows: ledger.rows,
            range_rows,
            // A coupon without a row can match no count.
            issued_quantity: ledger.issued_quantity.unwrap_or(-1),
            drained,
            sets,
            issued_between,
        })
    }
}
