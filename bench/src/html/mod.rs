//! The HTML report (`--report FILE`), what k6, Gatling and Locust hand out: one
//! self-contained file to open and share. The charts are inline SVG drawn by
//! `plotters` ([`charts`]); the page has no script and loads nothing, so it
//! opens offline. It tells the verdict and headline figures, then charts the
//! answers and latency over time, the latency histogram, the acceptance curve
//! and the drain, then tables the latency, the answers, the coupons, the
//! settings and the verification checks.

pub mod charts;
mod page;

use crate::program::{self, OutputFileError};
use crate::report::Summary;
use crate::stats::Tally;
use std::path::Path;

/// What the report is made of.
pub struct Report<'a> {
    pub summary: &'a Summary,
    pub tally: &'a Tally,
    /// MySQL's rows written since the load started: (seconds from its start,
    /// rows); empty with `--no-verify`.
    pub rows: &'a [(f64, i64)],
    /// When the report was made (RFC 3339).
    pub generated: String,
}

/// The charts, by the `id` of their `<figure>` (the tests look for each).
pub const CHARTS: [(&str, &str); 5] = [
    ("chart-answers", "Answers per second"),
    ("chart-latency-over-time", "Latency over time"),
    ("chart-latency-histogram", "Latency histogram"),
    ("chart-acceptance", "Acceptance curve"),
    ("chart-drain", "Drain: rows in MySQL"),
];

/// Writes the report to `path`.
pub fn write(path: &Path, report: &Report<'_>) -> Result<(), OutputFileError> {
    program::write_file(path, render(report)?)
}

/// The whole page.
pub fn render(report: &Report<'_>) -> Result<String, charts::ChartError> {
    let s = report.summary;
    let load_s = s.duration_s;
    let timeline = &report.tally.timeline;
    let coarse = timeline.coarsened(charts::POINTS);
    let total: i64 = s.coupons.iter().map(|c| c.total_quantity).sum();
    let sold_out = sold_out_at(report.tally);
    let drained_at = s.drain.as_ref().and_then(|d| d.time_s).map(|t| load_s + t);
    let svgs = [
        charts::throughput(&coarse, load_s)?,
        charts::latency_over_time(&coarse, load_s)?,
        charts::latency_histogram(&report.tally.latency)?,
        charts::acceptance(timeline, load_s, total, sold_out)?,
        charts::drain(timeline, report.rows, load_s, drained_at)?,
    ];
    let notes = [
        format!(
            "Answers by kind, per {} ms bucket of the time each request was due.",
            coarse.width().as_millis()
        ),
        "Percentiles of each time bucket (to about 6 %); the whole run's exact figures are in the table below.".into(),
        "How many requests took how long, from due (or sent) to the whole answer.".into(),
        "Requests accepted so far against the coupons' total quantity; the red line is the first sold_out answer of the last coupon to sell out.".into(),
        if report.rows.is_empty() {
            "MySQL was not watched (--no-verify): only the accepted requests are drawn.".to_string()
        } else {
            "Accepted requests against the rows the consumers wrote to MySQL: the gap between the lines is their lag.".into()
        },
    ];
    let mut html = page::head(s, &report.generated);
    html.push_str(&page::tiles(s, sold_out));
    for (((id, title), svg), note) in CHARTS.iter().zip(svgs).zip(notes) {
        html.push_str(&page::figure(id, title, &note, &svg));
    }
    html.push_str(&page::tables(s));
    html.push_str("</main>\n</body>\n</html>\n");
    Ok(html)
}

/// When the last coupon to sell out first answered `sold_out` (from the start
/// of the load); `None` if one never did.
fn sold_out_at(tally: &Tally) -> Option<f64> {
    let firsts = &tally.timeline.sold_out_at;
    let all: Option<Vec<_>> = firsts.iter().copied().collect();
    all.and_then(|at| at.into_iter().max()).map(|d| d.as_secs_f64())
}
