//! The paced sale a schedule runs against: users asking at planned times,
//! spread over the API instances, retrying an unclear answer as a real client
//! would, every answer recorded with when it was sent.

use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::RwLock;
use std::time::Duration;
use tokio::time::Instant;

/// How many times a client asks again after a 503 or no answer.
const RETRIES: usize = 2;
/// Requests in flight at once, over all instances.
const CONCURRENCY: usize = 64;

/// Where the load goes; an API instance restarted on a new port, or a coupon
/// created under another id than predicted, is updated here mid-sale.
#[derive(Debug, Default)]
pub struct Targets {
    pub bases: RwLock<Vec<String>>,
    /// Coupon id of each sale slot.
    pub coupons: RwLock<Vec<i64>>,
}

impl Targets {
    fn base(&self, i: usize) -> String {
        let bases = self.bases.read().unwrap_or_else(|e| e.into_inner());
        bases[i % bases.len()].clone()
    }

    fn coupon(&self, slot: usize) -> i64 {
        self.coupons.read().unwrap_or_else(|e| e.into_inner())[slot]
    }
}

/// One planned request: a user of a sale slot, at a time from the start.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub at: Duration,
    pub slot: usize,
    pub user: i64,
}

/// The requests of a sale: for each slot's quantity, 1.25 × as many users,
/// arriving evenly at random over the sale (so it sells out near its end, with
/// the faults), three in ten asking twice.
pub fn plan(seed: u64, sale: Duration, quantities: &[i64]) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a1e);
    let mut requests = Vec::new();
    for (slot, &quantity) in quantities.iter().enumerate() {
        for user in 1..=quantity * 5 / 4 {
            let asks = if rng.random_bool(0.3) { 2 } else { 1 };
            for _ in 0..asks {
                let at = sale.mul_f64(rng.random_range(0.0..0.95));
                requests.push(Request { at, slot, user });
            }
        }
    }
    requests.sort_by_key(|r| r.at);
    requests
}

/// One answer; `status` is `None` when no answer came (connection refused,
/// reset, timed out).
#[derive(Clone, Debug)]
pub struct Answer {
    pub slot: usize,
    pub coupon: i64,
    pub user: i64,
    pub status: Option<u16>,
    /// The `error` code, or the transport error.
    pub code: String,
    pub position: Option<i64>,
    /// When it was sent, from the start of the sale.
    pub sent: Duration,
    pub elapsed: Duration,
}

impl Answer {
    /// A 503 or no answer: the request may or may not have been accepted.
    pub fn unclear(&self) -> bool {
        self.status.is_none() || self.status == Some(503)
    }

    pub fn kind(&self) -> &str {
        match self.status {
            Some(202) => "accepted",
            Some(_) => &self.code,
            None => "no_answer",
        }
    }
}

/// Runs the plan from `t0`; returns every answer, retries included.
pub async fn run(targets: &Targets, plan: Vec<Request>, t0: Instant) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("building an HTTP client");
    let answers: Vec<Vec<Answer>> = stream::iter(plan.into_iter().enumerate())
        .map(|(i, request)| {
            let http = http.clone();
            async move {
                tokio::time::sleep_until(t0 + request.at).await;
                let mut answers = Vec::new();
                for attempt in 0..=RETRIES {
                    let answer = ask(&http, targets, i + attempt, request, t0).await;
                    let again = answer.unclear();
                    answers.push(answer);
                    if !again {
                        break;
                    }
                    let pause = rand::random_range(300..800);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                answers
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    answers.into_iter().flatten().collect()
}

async fn ask(http: &reqwest::Client, targets: &Targets, i: usize, request: Request, t0: Instant) -> Answer {
    let coupon = targets.coupon(request.slot);
    let sent = t0.elapsed();
    let started = Instant::now();
    let reply = crate::client::post_issue(http, &targets.base(i), coupon, request.user).await;
    Answer {
        slot: request.slot,
        coupon,
        user: request.user,
        status: reply.status,
        code: reply.code,
        position: reply.position,
        sent,
        elapsed: started.elapsed(),
    }
}
