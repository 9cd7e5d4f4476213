//! `coupon-bench`: a flash sale against a running coupon-api, then a check of
//! the outcome.
//!
//! It creates coupons (or takes `--coupon` ids), lets `--users` users ask for
//! each one `1 + --retries` times under a closed (`--concurrency`) or open
//! (`--rate`) load model, prints throughput, latency percentiles and the answers
//! by status and code, then verifies the answers (never more accepted than the
//! quantity, no user twice, distinct positions) and, once the consumers have
//! drained, MySQL (a row for exactly the accepted users, `issued_quantity` =
//! rows). Exit status: 0 when every check passes, 1 when one fails, 2 when the
//! run could not be made.
//!
//! # Layout
//! - [`cli`]: options and their validation.
//! - [`plan`]: which request goes to which coupon and user, and when (pure).
//! - [`client`]: HTTP to coupon-api (hyper, keep-alive pool).
//! - [`load`]: the workers, the progress bar, Ctrl-C.
//! - [`stats`]: per-worker tallies and the latency histogram.
//! - [`verify`]: the checks (pure).
//! - [`mysql`]: the drain wait and the MySQL facts.
//! - [`report`]: the summary, for people and as JSON.

mod cli;
mod client;
mod load;
mod mysql;
mod plan;
mod report;
mod stats;
mod verify;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use clap::Parser as _;
use cli::{Coupons, Model, Settings, Stop};
use client::Api;
use load::{Shape, Target};
use report::{CouponSummary, DrainSummary, LatencyMs, Summary};
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;
use verify::{answer_checks, examine, mysql_checks, Check, CouponFacts};

fn main() -> ExitCode {
    let settings = match cli::Args::parse().settings() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("coupon-bench: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("coupon-bench: starting the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("coupon-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A coupon of the run.
struct Sale {
    id: i64,
    created: bool,
    total_quantity: i64,
}

/// The whole run; `Ok(true)` when every check passed.
async fn run(s: Settings) -> anyhow::Result<bool> {
    let interrupt = watch_ctrl_c();
    let api = Api::new(&s.api_url, s.model.workers(), s.timeout);
    let db = if s.verify_mysql {
        // sqlx repeats its message as the error's source: keep it once.
        let db = mysql::Db::connect(&s.database_url)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| {
                format!(
                    "connecting to MySQL at {} (--no-verify skips the MySQL checks)",
                    mask(&s.database_url)
                )
            })?;
        Some(db)
    } else {
        None
    };
    let sales = prepare_coupons(&api, &s).await?;
    let plan = Arc::new(plan::Plan::new(sales.len(), s.users, s.user_offset, s.retries));
    let targets = sales
        .iter()
        .map(|sale| {
            Ok(Target {
                id: sale.id,
                uri: api.issue_uri(sale.id)?,
            })
        })
        .collect::<Result<Vec<_>, client::ApiError>>()?;
    let shape = Shape {
        model: s.model,
        limit: plan::request_limit(s.stop, s.model, plan.full_run()),
        run_for: match (s.stop, s.model) {
            (Some(Stop::Duration(d)), Model::Closed { .. }) => Some(d),
            _ => None,
        },
    };
    eprintln!(
        "coupon-bench: {} users (ids from {}) on coupon{} {}, {}",
        s.users,
        s.user_offset,
        if sales.len() == 1 { "" } else { "s" },
        sales.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(", "),
        match shape.limit {
            Some(n) => format!("{n} requests"),
            None => "until the duration is over".to_string(),
        }
    );

    let outcome = load::run(api.clone(), plan, targets, shape, interrupt.clone()).await?;
    let load_secs = outcome.ended.duration_since(outcome.started).as_secs_f64();
    let tally = &outcome.tally;

    // What the API says now, and the answer checks.
    let mut facts = Vec::with_capacity(sales.len());
    for (index, sale) in sales.iter().enumerate() {
        let redis_issued = match api.coupon(sale.id).await {
            Ok(state) => Some(state.issued_quantity),
            Err(err) => {
                eprintln!("coupon-bench: reading coupon {} after the load: {err}", sale.id);
                None
            }
        };
        let answers = tally
            .accepted
            .iter()
            .filter(|a| a.coupon == index)
            .map(|a| (a.user_id, a.position));
        facts.push(CouponFacts {
            id: sale.id,
            created: sale.created,
            total_quantity: sale.total_quantity,
            redis_issued,
            tally: tally.per_coupon.get(index).cloned().unwrap_or_default(),
            findings: examine(answers, sale.total_quantity),
        });
    }
    let mut checks = vec![Check::new(
        "every 202 body is an acceptance of the user that asked",
        None,
        tally.malformed_accepts == 0,
        match &tally.malformed_sample {
            None => format!("{} accepted answers read", tally.accepted.len()),
            Some(body) => format!("{} malformed, e.g. {body}", tally.malformed_accepts),
        },
    )];
    for fact in &facts {
        checks.extend(answer_checks(fact));
    }

    // MySQL, once the consumers caught up.
    let mut interrupted = outcome.interrupted;
    let mysql = match &db {
        Some(db) => {
            let phase = check_mysql(db, &api, &s, &facts, tally, outcome.ended, interrupt.clone()).await;
            interrupted |= phase.interrupted;
            checks.extend(phase.checks.iter().cloned());
            Some(phase)
        }
        None => None,
    };
    let summary = summarize(&s, tally, load_secs, &facts, mysql, checks, interrupted);
    print!("{}", summary.render());
    if let Some(path) = &s.json {
        summary.write_json(path)?;
    }
    Ok(summary.pass)
}

/// What the MySQL phase found.
struct MysqlPhase {
    checks: Vec<Check>,
    /// Per coupon: rows, `issued_quantity`, seconds until drained.
    figures: Vec<(Option<i64>, Option<i64>, Option<f64>)>,
    drain: DrainSummary,
    interrupted: bool,
}

/// Waits for the consumers to drain, then checks MySQL against the answers.
async fn check_mysql(
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

/// Everything the run measured and concluded, in one [`Summary`].
fn summarize(
    s: &Settings,
    tally: &stats::Tally,
    load_secs: f64,
    facts: &[CouponFacts],
    mysql: Option<MysqlPhase>,
    checks: Vec<Check>,
    interrupted: bool,
) -> Summary {
    let open = matches!(s.model, Model::Open { .. });
    let (figures, drain) = match mysql {
        Some(phase) => (phase.figures, Some(phase.drain)),
        None => (vec![(None, None, None); facts.len()], None),
    };
    Summary {
        pass: checks.iter().all(|c| c.pass),
        interrupted,
        config: report::Config {
            api_url: s.api_url.clone(),
            model: if open { "open" } else { "closed" },
            concurrency: match s.model {
                Model::Closed { workers } => Some(workers),
                Model::Open { .. } => None,
            },
            rate: match s.model {
                Model::Open { rate, .. } => Some(rate),
                Model::Closed { .. } => None,
            },
            max_in_flight: match s.model {
                Model::Open { max_in_flight, .. } => Some(max_in_flight),
                Model::Closed { .. } => None,
            },
            users: s.users,
            user_offset: s.user_offset,
            retries: s.retries,
            coupons_created: matches!(s.coupons, Coupons::Create { .. }),
        },
        requests: tally.requests,
        duration_s: load_secs,
        throughput_rps: if load_secs > 0.0 {
            tally.requests as f64 / load_secs
        } else {
            0.0
        },
        latency_ms: LatencyMs::of(&tally.latency),
        service_latency_ms: open.then(|| LatencyMs::of(&tally.service)),
        by_status: tally.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        by_code: tally.by_code.clone(),
        transport_errors: tally.transport.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        transport_errors_total: tally.transport_errors(),
        transport_error_samples: tally.transport_samples.clone(),
        late_sends: open.then_some(tally.late),
        max_send_lag_ms: open.then_some(tally.max_send_lag.as_secs_f64() * 1000.0),
        coupons: facts
            .iter()
            .zip(&figures)
            .map(|(f, (rows, issued, drain_s))| CouponSummary {
                id: f.id,
                created: f.created,
                total_quantity: f.total_quantity,
                api_issued_quantity: f.redis_issued,
                requests: f.tally.requests,
                accepted: f.findings.accepted,
                sold_out: f.tally.sold_out,
                already_issued: f.tally.already_issued,
                lost_answers: f.tally.unknown,
                mysql_rows: *rows,
                mysql_issued_quantity: *issued,
                drain_s: *drain_s,
            })
            .collect(),
        drain,
        checks,
    }
}

/// Creates the coupons (or reads the given ones) and checks each is there.
async fn prepare_coupons(api: &Api, s: &Settings) -> anyhow::Result<Vec<Sale>> {
    let mut sales = Vec::new();
    match &s.coupons {
        Coupons::Create { count, quantity } => {
            let token = s.admin_token.as_deref().unwrap_or_default();
            for n in 1..=*count {
                let name = format!("coupon-bench {} #{n}", s.user_offset);
                let id = api
                    .create_coupon(token, &name, *quantity)
                    .await
                    .context("creating a coupon")?;
                sales.push(Sale {
                    id,
                    created: true,
                    total_quantity: *quantity,
                });
            }
        }
        Coupons::Existing(ids) => {
            for &id in ids {
                let state = api.coupon(id).await.context("reading a --coupon")?;
                sales.push(Sale {
                    id,
                    created: false,
                    total_quantity: state.total_quantity,
                });
            }
        }
    }
    Ok(sales)
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

/// Counts Ctrl-Cs: the first stops the load, the next stops the drain wait,
/// the third exits at once.
fn watch_ctrl_c() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                // No signal handling: keep the sender alive, never signal.
                std::future::pending::<()>().await;
            }
            let mut count = 0;
            tx.send_modify(|n| {
                *n += 1;
                count = *n;
            });
            if count >= 3 {
                eprintln!("coupon-bench: interrupted");
                std::process::exit(130);
            }
            eprintln!("coupon-bench: Ctrl-C: stopping (press twice more to quit at once)");
        }
    });
    rx
}

/// The URL without its password.
fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
