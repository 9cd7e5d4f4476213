//! `coupon-fleet spread`: a sale over many coupons at once. `--coupons` new
//! coupons, of which `--hot` take `--hot-share` of the requests and the rest
//! share the remainder (a trickle each); every request is a new user's. While
//! it runs, the rows the consumers committed (the coupons' `issued_quantity`)
//! are compared with the 202s so far every `--sample-ms`; after the last
//! answer, every 20 ms until they match: whether the drain keeps up with the
//! acceptance, and how far behind it is when the load ends.

use super::answers::Answers;
use super::cli::{Fleet, SpreadArgs};
use super::{body_for, create, rows};
use crate::client::Api;
use anyhow::Context as _;
use http::Uri;
use sqlx::MySqlPool;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the rows are read once the load is over (to time the drain).
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// One comparison of acceptances and rows.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Since the first request.
    pub t_s: f64,
    pub answered: u64,
    pub accepted: u64,
    /// Rows committed for the sale's coupons.
    pub rows: i64,
    /// `accepted - rows`: acceptances not yet in MySQL.
    pub lag: i64,
}

/// What the spread sale did.
#[derive(Debug, serde::Serialize)]
pub struct SpreadOutcome {
    pub coupons: usize,
    pub hot: usize,
    pub hot_share: f64,
    pub quantity: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub create_s: f64,
    pub requests: u64,
    pub accepted: u64,
    pub hot_answers: Answers,
    pub trickle_answers: Answers,
    pub load_s: f64,
    pub throughput_rps: f64,
    pub max_lag: i64,
    pub max_lag_t_s: f64,
    /// Acceptances not in MySQL at the first read after the last answer.
    pub lag_at_load_end: i64,
    /// Every acceptance had its row before the timeout.
    pub drained: bool,
    /// From the last answer to the read that found every row.
    pub drain_after_load_s: Option<f64>,
    /// `COUNT(*)` of the sale's rows at the end (the samples read `issued_quantity`).
    pub rows_counted: i64,
    pub samples: Vec<Sample>,
}

impl SpreadOutcome {
    pub fn line(&self) -> String {
        let drain = match self.drain_after_load_s {
            Some(s) => format!("every row in MySQL {s:.2} s after the last answer"),
            None => format!("NOT drained: {} of {} rows", self.rows_counted, self.accepted),
        };
        format!(
            "spread sale over {} coupons ({} hot): {} requests in {:.1} s ({:.0}/s), {} accepted; \
             lag max {} at {:.1} s, {} at the load's end; {drain}",
            self.coupons,
            self.hot,
            self.requests,
            self.load_s,
            self.throughput_rps,
            self.accepted,
            self.max_lag,
            self.max_lag_t_s,
            self.lag_at_load_end
        )
    }
}

/// Which coupon (index) request `index` asks for: a hash of the index decides
/// hot or trickle and which one, so hot and trickle requests interleave evenly
/// over the whole run, and every coupon of a class gets about the same share.
pub fn pick(index: u64, coupons: usize, hot: usize, hot_share: f64) -> usize {
    let x = splitmix64(index);
    let hot = hot.min(coupons);
    let trickle = coupons - hot;
    let to_hot = trickle == 0 || (hot > 0 && ((x >> 11) as f64 / (1u64 << 53) as f64) < hot_share);
    let spread = (x % 1_000_003) as usize;
    if to_hot {
        spread % hot.max(1)
    } else {
        hot + spread % trickle
    }
}

/// A well-mixed 64-bit hash (Vigna's SplitMix64 finaliser).
fn splitmix64(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Live counts the sampler reads while the workers run.
#[derive(Default)]
struct Live {
    next: AtomicU64,
    answered: AtomicU64,
    accepted: AtomicU64,
}

/// Creates the coupons, runs the sale and samples it until its rows are in.
pub async fn run(api: &Api, db: &MySqlPool, token: &str, s: &SpreadArgs) -> anyhow::Result<SpreadOutcome> {
    anyhow::ensure!(
        s.coupons > 0 && s.hot <= s.coupons,
        "--hot must be at most --coupons (>= 1)"
    );
    anyhow::ensure!((0.0..=1.0).contains(&s.hot_share), "--hot-share must be from 0 to 1");
    anyhow::ensure!(
        s.concurrency > 0 && s.requests > 0,
        "--concurrency and --requests must be at least 1"
    );
    let fleet = Fleet {
        count: s.coupons,
        quantity: s.quantity,
        concurrency: s.create_concurrency,
        open_hours: 24.0,
    };
    let created = create::run(api, token, &fleet).await?;
    eprintln!("coupon-fleet: {}", created.line());
    let (first_id, last_id) = created.contiguous().context(
        "the created coupon ids have gaps (another client creating coupons?): rows can not be read by range",
    )?;
    let uris = created
        .ids
        .iter()
        .map(|&id| api.issue_uri(id))
        .collect::<Result<Vec<Uri>, _>>()?;
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let load = spawn_load(api, Arc::new(uris), Arc::clone(&live), s);
    let sampled = sample(db, (first_id, last_id), &live, load, started, s).await?;
    let rows_counted = rows::rows_between(db, first_id, last_id).await?;
    let (hot_answers, trickle_answers) = sampled.answers;
    let accepted = hot_answers.accepted + trickle_answers.accepted;
    let requests = hot_answers.total() + trickle_answers.total();
    let max = sampled.samples.iter().max_by_key(|x| x.lag).copied();
    Ok(SpreadOutcome {
        coupons: s.coupons,
        hot: s.hot,
        hot_share: s.hot_share,
        quantity: s.quantity,
        first_id,
        last_id,
        create_s: created.seconds,
        requests,
        accepted,
        hot_answers,
        trickle_answers,
        load_s: sampled.load_s,
        throughput_rps: if sampled.load_s > 0.0 {
            requests as f64 / sampled.load_s
        } else {
            0.0
        },
        max_lag: max.map_or(0, |m| m.lag),
        max_lag_t_s: max.map_or(0.0, |m| m.t_s),
        lag_at_load_end: sampled.lag_at_load_end,
        drained: sampled.drain_after_load_s.is_some(),
        drain_after_load_s: sampled.drain_after_load_s,
        rows_counted,
        samples: sampled.samples,
    })
}

type Load = tokio::task::JoinHandle<anyhow::Result<(Answers, Answers)>>;

/// Starts the workers; the handle gives the answers (hot, trickle) once all are done.
fn spawn_load(api: &Api, uris: Arc<Vec<Uri>>, live: Arc<Live>, s: &SpreadArgs) -> Load {
    let offset = s.user_offset.unwrap_or_else(crate::cli::default_user_offset);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..s.concurrency {
        let (api, uris, live, s) = (api.clone(), Arc::clone(&uris), Arc::clone(&live), s.clone());
        workers.spawn(async move {
            let (mut hot, mut trickle) = (Answers::default(), Answers::default());
            loop {
                let n = live.next.fetch_add(1, Relaxed);
                if n >= s.requests {
                    return (hot, trickle);
                }
                let coupon = pick(n, uris.len(), s.hot, s.hot_share);
                let Some(uri) = uris.get(coupon) else {
                    return (hot, trickle);
                };
                let user = offset.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
                let answer = api.post_issue(uri.clone(), user, body_for(user)).await;
                let tally = if coupon < s.hot { &mut hot } else { &mut trickle };
                if tally.record(&answer) {
                    live.accepted.fetch_add(1, Relaxed);
                }
                live.answered.fetch_add(1, Relaxed);
            }
        });
    }
    tokio::spawn(async move {
        let (mut hot, mut trickle) = (Answers::default(), Answers::default());
        while let Some(joined) = workers.join_next().await {
            let (h, t) = joined?;
            hot.merge(h);
            trickle.merge(t);
        }
        Ok((hot, trickle))
    })
}

/// What the sampling saw.
struct Sampled {
    answers: (Answers, Answers),
    load_s: f64,
    lag_at_load_end: i64,
    drain_after_load_s: Option<f64>,
    samples: Vec<Sample>,
}

/// Reads the rows every `--sample-ms` while the load runs, then every
/// [`DRAIN_POLL`] until they match the acceptances or the timeout passes.
async fn sample(
    db: &MySqlPool,
    (first, last): (i64, i64),
    live: &Live,
    mut load: Load,
    started: Instant,
    s: &SpreadArgs,
) -> anyhow::Result<Sampled> {
    let every = Duration::from_millis(s.sample_ms.max(DRAIN_POLL.as_millis() as u64));
    let timeout = Duration::try_from_secs_f64(s.drain_timeout).unwrap_or(Duration::from_secs(300));
    let mut samples: Vec<Sample> = Vec::new();
    let mut ended: Option<(Instant, (Answers, Answers), i64)> = None;
    let mut next_kept = started;
    loop {
        match &ended {
            None => tokio::select! {
                () = tokio::time::sleep_until(next_kept) => {}
                joined = &mut load => {
                    ended = Some((Instant::now(), joined??, i64::MIN));
                }
            },
            Some(_) => tokio::time::sleep(DRAIN_POLL).await,
        }
        let (answered, accepted) = (live.answered.load(Relaxed), live.accepted.load(Relaxed));
        let rows = rows::issued_between(db, first, last).await?;
        let now = Instant::now();
        let lag = i64::try_from(accepted).unwrap_or(i64::MAX) - rows;
        let t_s = now.duration_since(started).as_secs_f64();
        let here = Sample {
            t_s,
            answered,
            accepted,
            rows,
            lag,
        };
        let done = ended.is_some() && lag <= 0;
        if let Some((_, _, lag_at_end)) = &mut ended {
            if *lag_at_end == i64::MIN {
                *lag_at_end = lag;
            }
        }
        if now >= next_kept || done {
            samples.push(here);
            next_kept = now + every;
            // Progress for the log, every eighth sample.
            if samples.len().trailing_zeros() >= 3 {
                eprintln!("coupon-fleet: {t_s:.1} s: {answered} answered, {accepted} accepted, {rows} rows");
            }
        }
        if let Some((load_end, answers, lag_at_load_end)) = &ended {
            if done || now >= *load_end + timeout {
                return Ok(Sampled {
                    answers: answers.clone(),
                    load_s: load_end.duration_since(started).as_secs_f64(),
                    lag_at_load_end: *lag_at_load_end,
                    drain_after_load_s: done.then(|| now.duration_since(*load_end).as_secs_f64()),
                    samples,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_coupons_get_their_share_and_every_coupon_some_requests() {
        let mut per_coupon = vec![0u64; 1000];
        for i in 0..1_000_000 {
            per_coupon[pick(i, 1000, 100, 0.9)] += 1;
        }
        let hot: u64 = per_coupon[..100].iter().sum();
        assert!((895_000..=905_000).contains(&hot), "hot got {hot}");
        assert!(per_coupon[..100].iter().all(|&n| (8_500..=9_500).contains(&n)));
        assert!(per_coupon[100..].iter().all(|&n| (60..=170).contains(&n)));
    }

    #[test]
    fn without_trickle_coupons_every_request_is_hot_and_without_hot_none() {
        assert!((0..1000).all(|i| pick(i, 5, 5, 0.0) < 5));
        assert!((0..1000).all(|i| pick(i, 5, 0, 1.0) < 5));
        assert!((0..1000).all(|i| pick(i, 1, 0, 0.5) == 0));
    }
}
