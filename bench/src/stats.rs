//! What the load saw: a few [`Tally`] shards that the workers record into,
//! merged at the end: the latency histogram (µs), answers by status and by
//! `error` code, transport errors, the accepted answers that the
//! verification checks, and the [`Timeline`] the HTML report draws.

use crate::client::{AcceptedBody, ErrorBody, TransportError};
use crate::timeline::{Kind, Timeline};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;
use verify::CouponTally;

/// The histogram's range: 1 µs to an hour, 3 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Distinct transport error messages kept as examples.
const SAMPLES: usize = 5;

/// The `by_code` key of 202 answers.
pub const ACCEPTED: &str = "accepted";
/// The `by_code` key of error answers whose body has no readable `error`.
pub const NO_CODE: &str = "<no code>";

/// One 202 answer, as its body tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acceptance {
    /// Index into the run's coupons.
    pub coupon: usize,
    pub user_id: i64,
    /// `None` when the 202's body could not be read.
    pub position: Option<i64>,
}

/// A request whose fate the client does not know: no answer (but maybe sent) or
/// a 5xx. The server may have accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub coupon: usize,
    pub user_id: i64,
}

/// Everything one worker (or, merged, the whole run) saw.
pub struct Tally {
    pub requests: u64,
    /// From when the request was due (open model, less the timer's slack) or
    /// sent (closed model) to the whole answer.
    pub latency: Histogram<u64>,
    /// From when the request was sent to the whole answer.
    pub service: Histogram<u64>,
    pub by_status: BTreeMap<u16, u64>,
    pub by_code: BTreeMap<String, u64>,
    pub transport: BTreeMap<&'static str, u64>,
    pub transport_samples: Vec<String>,
    pub per_coupon: Vec<CouponTally>,
    pub accepted: Vec<Acceptance>,
    pub unknown: Vec<Unknown>,
    /// 202 answers whose body is not `{coupon_id, user_id, status: "accepted", position}`
    /// for the request sent.
    pub malformed_accepts: u64,
    pub malformed_sample: Option<String>,
    /// Requests sent more than [`crate::load::LATE`] after they were due (open
    /// model: the load generator or `--max-in-flight` could not keep up).
    pub late: u64,
    /// The longest wait between a request's due time and its sending.
    pub max_send_lag: Duration,
    /// Answers and latency over time.
    pub timeline: Timeline,
}

impl Tally {
    pub fn new(coupons: usize) -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            requests: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            service: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            by_status: BTreeMap::new(),
            by_code: BTreeMap::new(),
            transport: BTreeMap::new(),
            transport_samples: Vec::new(),
            per_coupon: vec![CouponTally::default(); coupons],
            accepted: Vec::new(),
            unknown: Vec::new(),
            malformed_accepts: 0,
            malformed_sample: None,
            late: 0,
            max_send_lag: Duration::ZERO,
            timeline: Timeline::new(coupons)?,
        })
    }

    /// Notes how long after its due time a request went out.
    pub fn record_send_lag(&mut self, lag: Duration) {
        if lag > crate::load::LATE {
            self.late += 1;
        }
        self.max_send_lag = self.max_send_lag.max(lag);
    }

    /// Counts one request for coupon number `coupon` (whose id is `coupon_id`)
    /// sent as `user_id`, answered `latency` after it was due and `service`
    /// after it was sent.
    pub fn record(
        &mut self,
        coupon: usize,
        coupon_id: i64,
        user_id: i64,
        answer: &Result<(StatusCode, Bytes), TransportError>,
        latency: Duration,
        service: Duration,
    ) -> Kind {
        self.requests += 1;
        self.latency.saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
        let Some(tally) = self.per_coupon.get_mut(coupon) else {
            return Kind::Error;
        };
        tally.requests += 1;
        let (status, body) = match answer {
            Ok((status, body)) => (*status, body),
            Err(err) => {
                *self.transport.entry(err.kind()).or_insert(0) += 1;
                if self.transport_samples.len() < SAMPLES {
                    let text = err.to_string();
                    if !self.transport_samples.contains(&text) {
                        self.transport_samples.push(text);
                    }
                }
                if err.maybe_processed() {
                    tally.unknown += 1;
                    self.unknown.push(Unknown { coupon, user_id });
                } else {
                    tally.not_sent += 1;
                }
                return Kind::Error;
            }
        };
        *self.by_status.entry(status.as_u16()).or_insert(0) += 1;
        if status == StatusCode::ACCEPTED {
            tally.accepted += 1;
            count(&mut self.by_code, ACCEPTED);
            match serde_json::from_slice::<AcceptedBody>(body) {
                Ok(b) if b.status == ACCEPTED && b.coupon_id == coupon_id && b.user_id == user_id => {
                    self.accepted.push(Acceptance {
                        coupon,
                        user_id: b.user_id,
                        position: Some(b.position),
                    });
                }
                _ => {
                    // Still an acceptance of the user that asked, position unknown.
                    self.accepted.push(Acceptance {
                        coupon,
                        user_id,
                        position: None,
                    });
                    self.malformed_accepts += 1;
                    if self.malformed_sample.is_none() {
                        self.malformed_sample = Some(String::from_utf8_lossy(body).into_owned());
                    }
                }
            }
            return Kind::Accepted;
        }
        let code = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.error)
            .unwrap_or(NO_CODE);
        count(&mut self.by_code, code);
        match (status.as_u16(), code) {
            (409, "sold_out") => {
                tally.sold_out += 1;
                Kind::SoldOut
            }
            (409, "already_issued") => {
                tally.already_issued += 1;
                Kind::AlreadyIssued
            }
            (500..=599, _) => {
                tally.unknown += 1;
                self.unknown.push(Unknown { coupon, user_id });
                Kind::Error
            }
            _ => {
                tally.unexpected += 1;
                Kind::OtherRejection
            }
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        // The histograms have the same bounds, so adding can not fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_insert(0) += n;
        }
        for (code, n) in other.by_code {
            *self.by_code.entry(code).or_insert(0) += n;
        }
        for (kind, n) in other.transport {
            *self.transport.entry(kind).or_insert(0) += n;
        }
        for sample in other.transport_samples {
            if self.transport_samples.len() < SAMPLES && !self.transport_samples.contains(&sample) {
                self.transport_samples.push(sample);
            }
        }
        if self.per_coupon.len() < other.per_coupon.len() {
            self.per_coupon.resize(other.per_coupon.len(), CouponTally::default());
        }
        for (mine, theirs) in self.per_coupon.iter_mut().zip(other.per_coupon) {
            mine.requests += theirs.requests;
            mine.accepted += theirs.accepted;
            mine.sold_out += theirs.sold_out;
            mine.already_issued += theirs.already_issued;
            mine.unknown += theirs.unknown;
            mine.not_sent += theirs.not_sent;
            mine.unexpected += theirs.unexpected;
        }
        self.accepted.extend(other.accepted);
        self.unknown.extend(other.unknown);
        self.malformed_accepts += other.malformed_accepts;
        if self.malformed_sample.is_none() {
            self.malformed_sample = other.malformed_sample;
        }
        self.late += other.late;
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
        self.timeline.merge(other.timeline);
    }

    /// Transport errors of every kind.
    pub fn transport_errors(&self) -> u64 {
        self.transport.values().sum()
    }
}

impl Percentiles {
    /// The summary of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Whole microseconds, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// `map[key] += 1`, allocating the key only the first time.
fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<(StatusCode, Bytes), TransportError> {
        Ok((StatusCode::from_u16(status).unwrap(), Bytes::from(body.to_string())))
    }

    #[test]
    fn answers_are_counted_by_status_code_and_coupon() {
        let mut tally = Tally::new(2).unwrap();
        let ms = Duration::from_millis(1);
        let ok = answer(202, r#"{"coupon_id":5,"user_id":10,"status":"accepted","position":1}"#);
        assert_eq!(tally.record(0, 5, 10, &ok, ms, ms), Kind::Accepted);
        let sold = answer(409, r#"{"error":"sold_out","message":"x"}"#);
        assert_eq!(tally.record(1, 6, 10, &sold, ms, ms), Kind::SoldOut);
        let down = answer(503, r#"{"error":"unavailable","message":"x"}"#);
        assert_eq!(tally.record(1, 6, 11, &down, ms, ms), Kind::Error);
        let lost = Err(TransportError::Timeout);
        assert_eq!(tally.record(0, 5, 12, &lost, ms, ms), Kind::Error);
        let refused = Err(TransportError::Connect("refused".into()));
        assert_eq!(tally.record(0, 5, 13, &refused, ms, ms), Kind::Error);

        assert_eq!(tally.requests, 5);
        assert_eq!(tally.by_status.get(&202), Some(&1));
        assert_eq!(tally.by_code.get("sold_out"), Some(&1));
        assert_eq!(tally.by_code.get("unavailable"), Some(&1));
        assert_eq!(tally.transport_errors(), 2);
        assert_eq!(
            tally.accepted,
            vec![Acceptance {
                coupon: 0,
                user_id: 10,
                position: Some(1)
            }]
        );
        assert_eq!(
            tally.unknown,
            vec![Unknown { coupon: 1, user_id: 11 }, Unknown { coupon: 0, user_id: 12 }]
        );
        assert_eq!(
            tally.per_coupon[0].not_sent, 1,
            "a failed connect is an error, not an unknown"
        );
        assert_eq!(tally.per_coupon[1].sold_out, 1);
    }

    #[test]
    fn a_202_for_another_user_counts_as_malformed_but_still_accepted() {
        let mut tally = Tally::new(1).unwrap();
        let wrong = answer(202, r#"{"coupon_id":5,"user_id":99,"status":"accepted","position":1}"#);
        tally.record(0, 5, 10, &wrong, Duration::from_millis(1), Duration::from_millis(1));
        assert_eq!(tally.malformed_accepts, 1);
        assert_eq!(tally.accepted[0].user_id, 10);
        assert_eq!(tally.accepted[0].position, None);
        assert_eq!(tally.per_coupon[0].accepted, 1);
    }

    #[test]
    fn merged_tallies_add_up_and_keep_the_latency_distribution() {
        let mut a = Tally::new(1).unwrap();
        let mut b = Tally::new(1).unwrap();
        let sold = answer(409, r#"{"error":"sold_out"}"#);
        for i in 1..=100u64 {
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.record(0, 1, 1, &sold, Duration::from_millis(i), Duration::from_micros(i));
        }
        a.merge(b);
        assert_eq!(a.requests, 100);
        assert_eq!(a.per_coupon[0].sold_out, 100);
        let p = Percentiles::of(&a.latency);
        assert!((49_900..=50_100).contains(&p.p50), "p50 {}", p.p50);
        assert!((98_900..=99_100).contains(&p.p99), "p99 {}", p.p99);
        assert!((99_900..=100_100).contains(&p.max), "max {}", p.max);
        let service = Percentiles::of(&a.service);
        assert!((49..=51).contains(&service.p50), "service p50 {}", service.p50);
    }
}
