//! The page around the charts: the head and its style sheet, the headline
//! tiles and the tables, every text from the run escaped.

use crate::report::{LatencyMs, Summary};
use std::fmt::Write as _;

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
main { max-width: 1140px; margin: 0 auto; padding: 24px; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 0 0 4px; font-size: 19px; }
.sub { color: #59636e; margin: 0 0 20px; }
.pass { color: #1a7f37; } .fail { color: #cf222e; }
.tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin-bottom: 20px; }
.tile { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px; padding: 12px 14px; }
.tile b { display: block; font-size: 22px; margin-top: 4px; }
.tile span { color: #59636e; font-size: 13px; }
figure, section { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px; margin: 0 0 20px; padding: 14px; }
figcaption p, section p { color: #59636e; margin: 0 0 8px; font-size: 14px; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e6eaef; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
";

/// `<head>`, the style sheet and the title with the verdict.
pub fn head(s: &Summary, generated: &str) -> String {
    let verdict = verdict(s.pass);
    let c = &s.config;
    let model = match (c.concurrency, c.rate) {
        (Some(n), _) => format!("closed model, {n} workers"),
        (None, Some(r)) => format!("open model, {r} req/s"),
        (None, None) => c.model.to_string(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>coupon-bench report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Flash sale report: <span class=\"{}\">{}</span>{}</h1>\n\
         <p class=\"sub\">coupon-bench against {} · {} · {} requests · generated {}</p>\n",
        verdict.0,
        verdict.1,
        verdict.0,
        if s.interrupted { " (interrupted)" } else { "" },
        esc(&c.api_url),
        esc(&model),
        s.requests,
        esc(generated),
    )
}

/// The figures to take in at a glance.
pub fn tiles(s: &Summary, sold_out: Option<f64>) -> String {
    let accepted: u64 = s.coupons.iter().map(|c| c.accepted).sum();
    let total: i64 = s.coupons.iter().map(|c| c.total_quantity).sum();
    let failed = s.checks.iter().filter(|c| !c.pass).count();
    let drain = match &s.drain {
        None => "not measured".to_string(),
        Some(d) => d.time_s.map_or("not all in".to_string(), |t| format!("{t:.3} s")),
    };
    let tiles = [
        (
            "verdict",
            verdict(s.pass).0.to_string(),
            format!("{failed} of {} checks failed", s.checks.len()),
        ),
        (
            "throughput",
            format!("{:.0} req/s", s.throughput_rps),
            format!("{} requests in {:.3} s", s.requests, s.duration_s),
        ),
        (
            "latency p50 / p99",
            format!("{:.2} / {:.2} ms", s.latency_ms.p50, s.latency_ms.p99),
            format!("max {:.2} ms", s.latency_ms.max),
        ),
        (
            "accepted",
            format!("{accepted} / {total}"),
            "202 answers / total quantity".into(),
        ),
        (
            "sold out at",
            sold_out.map_or("not sold out".into(), |t| format!("{t:.3} s")),
            "first sold_out of the last coupon".into(),
        ),
        (
            "drain",
            drain,
            "from the end of the load to the last row in MySQL".into(),
        ),
        (
            "errors",
            s.transport_errors_total.to_string(),
            "requests without an answer".into(),
        ),
        (
            "sold out / already issued",
            format!("{} / {}", code(s, "sold_out"), code(s, "already_issued")),
            "409 answers".into(),
        ),
    ];
    let mut out = String::from("<div class=\"tiles\">\n");
    for (name, value, note) in tiles {
        let _ = writeln!(
            out,
            "<div class=\"tile\"><span>{}</span><b>{}</b><span>{}</span></div>",
            esc(name),
            esc(&value),
            esc(&note)
        );
    }
    out.push_str("</div>\n");
    out
}

/// One chart with its title and a line on how to read it.
pub fn figure(id: &str, title: &str, note: &str, svg: &str) -> String {
    format!(
        "<figure id=\"{id}\"><figcaption><h2>{}</h2><p>{}</p></figcaption>\n{svg}\n</figure>\n",
        esc(title),
        esc(note)
    )
}

/// The tables: latency, answers, coupons, settings, checks.
pub fn tables(s: &Summary) -> String {
    let mut latency = vec![latency_row("from due (or sent)", &s.latency_ms)];
    if let Some(service) = &s.service_latency_ms {
        latency.push(latency_row("from sent", service));
    }
    let mut answers: Vec<Vec<String>> = s
        .by_code
        .iter()
        .map(|(k, v)| vec![format!("code {k}"), v.to_string()])
        .collect();
    answers.extend(
        s.by_status
            .iter()
            .map(|(k, v)| vec![format!("HTTP {k}"), v.to_string()]),
    );
    answers.extend(
        s.transport_errors
            .iter()
            .map(|(k, v)| vec![format!("no answer: {k}"), v.to_string()]),
    );
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let coupons = s.coupons.iter().map(|k| {
        vec![
            k.id.to_string(),
            k.total_quantity.to_string(),
            k.requests.to_string(),
            k.accepted.to_string(),
            k.sold_out.to_string(),
            k.already_issued.to_string(),
            k.lost_answers.to_string(),
            opt(k.api_issued_quantity),
            opt(k.mysql_rows),
            k.drain_s.map_or("-".to_string(), |d| format!("{d:.3} s")),
        ]
    });
    let checks = s.checks.iter().map(|c| {
        vec![
            verdict(c.pass).0.to_string(),
            c.name.to_string(),
            c.coupon.map_or(String::new(), |id| id.to_string()),
            c.detail.clone(),
        ]
    });
    let mut out = section(
        "latency",
        "Latency (ms)",
        &["measured", "p50", "p90", "p99", "p99.9", "max", "mean"],
        latency,
    );
    out += &section("answers", "Answers", &["answer", "count"], answers);
    let coupon_head = [
        "coupon",
        "quantity",
        "requests",
        "accepted",
        "sold out",
        "already issued",
        "lost answers",
        "API issued",
        "MySQL rows",
        "drained after",
    ];
    out += &section("coupons", "Coupons", &coupon_head, coupons.collect());
    out += &section("settings", "Settings", &["setting", "value"], settings(s));
    out += &section(
        "checks",
        "Verification checks",
        &["verdict", "check", "coupon", "detail"],
        checks.collect(),
    );
    out
}

fn settings(s: &Summary) -> Vec<Vec<String>> {
    let c = &s.config;
    let last_user = c.user_offset.saturating_add(i64::try_from(c.users).unwrap_or(0) - 1);
    let mut rows = vec![
        ("API", c.api_url.clone()),
        ("load model", c.model.to_string()),
        ("users", format!("{} (ids {}..={last_user})", c.users, c.user_offset)),
        ("retries per user", c.retries.to_string()),
        (
            "coupons",
            if c.coupons_created {
                "created by the run"
            } else {
                "given (--coupon)"
            }
            .into(),
        ),
    ];
    let optional = [
        ("concurrency", c.concurrency.map(|n| n.to_string())),
        ("rate", c.rate.map(|r| format!("{r} req/s"))),
        ("max in flight", c.max_in_flight.map(|n| n.to_string())),
        ("drain timeout", s.drain.as_ref().map(|d| format!("{} s", d.timeout_s))),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    rows.into_iter().map(|(k, v)| vec![k.to_string(), v]).collect()
}

fn latency_row(what: &str, l: &LatencyMs) -> Vec<String> {
    let mut row = vec![what.to_string()];
    row.extend([l.p50, l.p90, l.p99, l.p999, l.max, l.mean].map(|v| format!("{v:.3}")));
    row
}

/// A titled table; cells that are numbers are right-aligned.
fn section(id: &str, title: &str, head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut out = format!("<section id=\"{id}\"><h2>{}</h2>\n<table>\n<tr>", esc(title));
    for name in head {
        let _ = write!(out, "<th>{}</th>", esc(name));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let class = if cell.parse::<f64>().is_ok() {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", esc(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></section>\n");
    out
}

fn verdict(pass: bool) -> (&'static str, &'static str) {
    if pass {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    }
}

fn code(s: &Summary, code: &str) -> u64 {
    s.by_code.get(code).copied().unwrap_or(0)
}

/// Text as HTML: `&`, `<`, `>` and quotes escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}
