//! A sale of a fault test: requests sent on a schedule to one or more APIs,
//! every answer recorded with its timing, and what the answers say checked
//! against the contract.

use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// No answer may take longer than this (the API's request timeout is 3 s).
const MAX_LATENCY: Duration = Duration::from_secs(5);

/// One answer to an issue request; `status` is `None` for a transport error.
#[derive(Clone, Debug)]
pub struct Answer {
    user: i64,
    status: Option<u16>,
    /// The `error` code, or the transport error's text.
    code: String,
    position: Option<i64>,
    /// When it was sent, from the start of the sale.
    sent: Duration,
    elapsed: Duration,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

async fn ask(http: &reqwest::Client, base: &str, coupon: i64, user: i64, sent_at: Duration) -> Answer {
    let started = Instant::now();
    let reply = integration_tests::client::post_issue(http, base, coupon, user).await;
    Answer {
        user,
        status: reply.status,
        code: reply.code,
        position: reply.position,
        sent: sent_at,
        elapsed: started.elapsed(),
    }
}

/// Sends each `(offset, user)` request at its offset from now to the APIs at
/// `bases` in turn, with at most `concurrency` in flight; returns every answer.
pub async fn sale(bases: Vec<String>, coupon: i64, schedule: Vec<(Duration, i64)>, concurrency: usize) -> Vec<Answer> {
    let http = http_client();
    let start = Instant::now();
    stream::iter(schedule.into_iter().enumerate())
        .map(|(i, (offset, user))| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            async move {
                tokio::time::sleep_until(start + offset).await;
                ask(&http, &base, coupon, user, start.elapsed()).await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// `users` in order, one every `period`.
pub fn evenly(users: impl IntoIterator<Item = i64>, period: Duration) -> Vec<(Duration, i64)> {
    users
        .into_iter()
        .enumerate()
        .map(|(i, user)| (period * i as u32, user))
        .collect()
}

/// What a sale's answers say: who was accepted, who may or may not have been
/// (503 or no answer), and how many of each code.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: HashSet<i64>,
    pub ambiguous: HashSet<i64>,
    pub codes: BTreeMap<String, usize>,
}

/// Checks every answer is one the contract allows, in time, and nobody was
/// accepted twice or at a taken position (nor outside 1..=`quantity`).
pub fn tally(answers: &[Answer], quantity: i64) -> Tally {
    let mut tally = Tally::default();
    let mut accepted = Vec::new();
    for a in answers {
        assert!(a.elapsed < MAX_LATENCY, "a request hung: {a:?}");
        let code = match a.status {
            Some(202) => {
                accepted.push((a.user, a.position));
                "accepted".to_string()
            }
            Some(409) if ["already_issued", "sold_out"].contains(&a.code.as_str()) => a.code.clone(),
            Some(503) if a.code == "unavailable" => {
                tally.ambiguous.insert(a.user);
                a.code.clone()
            }
            None => {
                tally.ambiguous.insert(a.user);
                "transport_error".to_string()
            }
            Some(_) => panic!("an answer the contract does not allow here: {a:?}"),
        };
        *tally.codes.entry(code).or_default() += 1;
    }
    let findings = verify::examine(accepted.iter().copied(), quantity);
    assert_eq!(findings.unread, 0, "a 202 has a position: {findings:?}");
    assert_eq!(findings.duplicate_users, 0, "a user was accepted twice: {findings:?}");
    assert_eq!(findings.duplicate_positions, 0, "two users were given one position");
    assert_eq!(findings.out_of_range, 0, "positions are within 1..={quantity}");
    tally.accepted = accepted.into_iter().map(|(user, _)| user).collect();
    tally
}

/// Answers per half second of the sale, for the log: `t: code=count ...`.
pub fn timeline(answers: &[Answer]) -> String {
    let mut slots: BTreeMap<u128, BTreeMap<String, usize>> = BTreeMap::new();
    for a in answers {
        let code = match a.status {
            Some(202) => "accepted".to_string(),
            Some(_) => a.code.clone(),
            None => "transport_error".to_string(),
        };
        *slots
            .entry(a.sent.as_millis() / 500)
            .or_default()
            .entry(code)
            .or_default() += 1;
    }
    let slowest = answers.iter().map(|a| a.elapsed).max().unwrap_or_default();
    let lines: Vec<String> = slots
        .iter()
        .map(|(slot, codes)| format!("  {:>5} ms: {codes:?}", slot * 500))
        .collect();
    format!("slowest answer {slowest:?}\n{}", lines.join("\n"))
}

pub async fn at(t0: Instant, ms: u64) {
    tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
}
