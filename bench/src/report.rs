//! The summary: one [`Summary`] with every figure of the run, printed for people
//! (stdout) and written as JSON (`--json`) for scripts.

use crate::stats::Percentiles;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use verify::Check;

/// Everything a run measured and concluded.
#[derive(Serialize, Debug)]
pub struct Summary {
    /// Every check passed.
    pub pass: bool,
    /// Ctrl-C stopped the load or the drain early.
    pub interrupted: bool,
    pub config: Config,
    pub requests: u64,
    /// From the first request sent to the last answer.
    pub duration_s: f64,
    pub throughput_rps: f64,
    /// From when each request was due (open model: its scheduled time, so a
    /// slow server can not hide behind a slowed-down client, less at most 1 ms
    /// of the timer's own lateness; closed model: when it was sent) to its whole
    /// answer.
    pub latency_ms: LatencyMs,
    /// Open model: from when each request was actually sent to its whole answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_latency_ms: Option<LatencyMs>,
    /// Answers by HTTP status (as strings, for JSON).
    pub by_status: BTreeMap<String, u64>,
    /// Answers by `error` code; 202s under `accepted`.
    pub by_code: BTreeMap<String, u64>,
    pub transport_errors: BTreeMap<String, u64>,
    pub transport_errors_total: u64,
    /// Examples of transport error messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transport_error_samples: Vec<String>,
    /// Open model: requests sent more than 5 ms after they were due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_sends: Option<u64>,
    /// Open model: the longest wait between a due time and the send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_send_lag_ms: Option<f64>,
    pub coupons: Vec<CouponSummary>,
    /// `None` with `--no-verify`.
    pub drain: Option<DrainSummary>,
    pub checks: Vec<Check>,
}

/// The run's settings.
#[derive(Serialize, Debug)]
pub struct Config {
    pub api_url: String,
    /// `closed` or `open`.
    pub model: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    pub users: u64,
    pub user_offset: i64,
    pub retries: u64,
    pub coupons_created: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Debug, Default, Clone, Copy)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One coupon's figures.
#[derive(Serialize, Debug)]
pub struct CouponSummary {
    pub id: i64,
    pub created: bool,
    pub total_quantity: i64,
    /// `issued_quantity` from the API after the load.
    pub api_issued_quantity: Option<i64>,
    pub requests: u64,
    pub accepted: u64,
    pub sold_out: u64,
    pub already_issued: u64,
    /// Transport errors and 5xx: the request may or may not have been accepted.
    pub lost_answers: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_rows: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mysql_issued_quantity: Option<i64>,
    /// Seconds after the end of the load until every row was in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
}

/// How the consumers caught up.
#[derive(Serialize, Debug)]
pub struct DrainSummary {
    /// Every accepted request reached MySQL before `--drain-timeout`.
    pub complete: bool,
    /// Seconds from the end of the load until all rows were in.
    pub time_s: Option<f64>,
    /// `--drain-timeout`.
    pub timeout_s: f64,
    /// Rows still to write when the load ended.
    pub rows_pending_at_load_end: i64,
    /// Rows written after the load ended (until all were in, or the timeout).
    pub rows_written_after_load: i64,
    /// Those rows over the drain time; `None` if nothing was pending.
    pub rate_rows_per_s: Option<f64>,
    /// Seconds from the first to the last `issued_at` of this run's rows.
    pub write_span_s: Option<f64>,
    /// This run's rows over `write_span_s`: how fast the consumers wrote.
    pub write_rate_rows_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Summary {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let model = match (c.concurrency, c.rate) {
            (Some(n), _) => format!("closed model, {n} workers"),
            (None, Some(r)) => format!(
                "open model, {r} req/s (at most {} in flight)",
                c.max_in_flight.unwrap_or(0)
            ),
            (None, None) => c.model.to_string(),
        };
        let _ = writeln!(out, "coupon-bench against {}: {model}", c.api_url);
        let _ = writeln!(
            out,
            "  users {} (ids {}..={}), {} retr{} each, coupons {}",
            c.users,
            c.user_offset,
            c.user_offset.saturating_add(i64::try_from(c.users).unwrap_or(0) - 1),
            c.retries,
            if c.retries == 1 { "y" } else { "ies" },
            self.coupons
                .iter()
                .map(|k| k.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        if self.interrupted {
            let _ = writeln!(out, "  INTERRUPTED by Ctrl-C");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "duration          {:.3} s", self.duration_s);
        let _ = writeln!(out, "requests          {}", self.requests);
        let _ = writeln!(out, "throughput        {:.0} req/s", self.throughput_rps);
        let l = &self.latency_ms;
        let label = if self.service_latency_ms.is_some() {
            "latency from due"
        } else {
            "latency"
        };
        let _ = writeln!(out, "{label:<17} {}", l.render());
        if let Some(service) = &self.service_latency_ms {
            let _ = writeln!(out, "latency from send {}", service.render());
        }
        let _ = writeln!(out, "by status         {}", join(&self.by_status));
        let _ = writeln!(out, "by code           {}", join(&self.by_code));
        let _ = writeln!(
            out,
            "transport errors  {}{}",
            self.transport_errors_total,
            if self.transport_errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", join(&self.transport_errors))
            }
        );
        for sample in &self.transport_error_samples {
            let _ = writeln!(out, "                  e.g. {sample}");
        }
        if let Some(late) = self.late_sends {
            let _ = writeln!(
                out,
                "late sends        {late} sent > 5 ms after due (max lag {:.3} ms)",
                self.max_send_lag_ms.unwrap_or(0.0)
            );
        }
        let _ = writeln!(out);
        for k in &self.coupons {
            let _ = write!(
                out,
                "coupon {}{}: total {}, accepted {}, sold_out {}, already_issued {}, lost answers {}, API issued {}",
                k.id,
                if k.created { " (new)" } else { "" },
                k.total_quantity,
                k.accepted,
                k.sold_out,
                k.already_issued,
                k.lost_answers,
                k.api_issued_quantity.map_or("?".to_string(), |v| v.to_string()),
            );
            if let Some(rows) = k.mysql_rows {
                let _ = write!(
                    out,
                    ", MySQL rows {rows} (issued_quantity {})",
                    k.mysql_issued_quantity.map_or("?".to_string(), |v| v.to_string())
                );
            }
            let _ = writeln!(out);
        }
        match &self.drain {
            None => {
                let _ = writeln!(out, "drain             not measured (--no-verify)");
            }
            Some(d) => {
                let pending = d.rows_pending_at_load_end;
                let _ = match (d.time_s, d.rate_rows_per_s) {
                    (Some(t), Some(rate)) => writeln!(
                        out,
                        "drain             {pending} rows pending at load end, all in {t:.3} s after it ({rate:.0} rows/s)"
                    ),
                    (Some(t), None) => writeln!(
                        out,
                        "drain             {pending} rows pending at load end, all in {t:.3} s after it"
                    ),
                    (None, _) => writeln!(
                        out,
                        "drain             {pending} rows pending at load end, NOT all in after {:.1} s ({} written meanwhile)",
                        d.timeout_s, d.rows_written_after_load
                    ),
                };
                if let (Some(span), Some(rate)) = (d.write_span_s, d.write_rate_rows_per_s) {
                    let _ = writeln!(
                        out,
                        "consumer writes   first to last issued_at {span:.3} s: {rate:.0} rows/s"
                    );
                }
                if let Some(err) = &d.last_error {
                    let _ = writeln!(out, "                  last MySQL error: {err}");
                }
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "checks");
        for check in &self.checks {
            let coupon = check.coupon.map(|c| format!(" [coupon {c}]")).unwrap_or_default();
            let verdict = if check.pass { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict}  {}{coupon}: {}", check.name, check.detail);
        }
        let failed = self.checks.iter().filter(|c| !c.pass).count();
        let _ = writeln!(
            out,
            "\nRESULT: {} ({} checks, {failed} failed)",
            if self.pass { "PASS" } else { "FAIL" },
            self.checks.len()
        );
        out
    }
}

fn join<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "-".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl LatencyMs {
    fn render(&self) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }

    /// The summary in milliseconds of a histogram of microseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let p = Percentiles::of(h);
        Self {
            p50: ms(p.p50),
            p90: ms(p.p90),
            p99: ms(p.p99),
            p999: ms(p.p999),
            max: ms(p.max),
            mean: p.mean / 1000.0,
        }
    }
}

/// Microseconds as milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}
