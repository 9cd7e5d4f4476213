//! The whole run of `coupon-bench`: the coupons, the load, the checks of the
//! answers, the MySQL phase and the summary, printed and written as JSON.

use crate::cli::{Coupons, Model, Settings, Stop};
use crate::client::{self, Api};
use crate::load::{self, Shape, Target};
use crate::mysql_phase::{self, MysqlPhase};
use crate::report::{self, CouponSummary, LatencyMs, Summary};
use crate::rows_watch::{self, RowWatch};
use crate::{html, mysql, plan, program, stats};
use anyhow::Context as _;
use shared::config::mask_url;
use std::sync::Arc;
use tokio::sync::watch;
use verify::{answer_checks, examine, Check, CouponFacts};

/// A coupon of the run.
struct Sale {
    id: i64,
    created: bool,
    total_quantity: i64,
}

/// The whole run; `Ok(true)` when every check passed.
pub async fn run(s: Settings) -> anyhow::Result<bool> {
    let interrupt = watch_ctrl_c();
    let api = Api::new(&s.api_url, s.model.workers(), s.timeout).with_minter(s.minter.clone());
    let db = if s.verify_mysql {
        // sqlx repeats its message as the error's source: keep it once.
        let db = mysql::Db::connect(&s.database_url)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| {
                format!(
                    "connecting to MySQL at {} (--no-verify skips the MySQL checks)",
                    mask_url(&s.database_url)
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

    let watch = match (&db, &s.report) {
        (Some(db), Some(_)) => {
            let ids = sales.iter().map(|sale| sale.id).collect();
            let watch = RowWatch::start(db.pool().clone(), ids).await;
            Some(watch.context("reading the coupons' issued_quantity for the report")?)
        }
        _ => None,
    };
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
            let phase = mysql_phase::check_mysql(db, &api, &s, &facts, tally, outcome.ended, interrupt.clone()).await;
            interrupted |= phase.interrupted;
            checks.extend(phase.checks.iter().cloned());
            Some(phase)
        }
        None => None,
    };
    let samples = match watch {
        Some(watch) => watch.finish().await,
        None => Vec::new(),
    };
    let summary = summarize(&s, tally, load_secs, &facts, mysql, checks, interrupted);
    print!("{}", summary.render());
    if let Some(path) = &s.json {
        program::write_json(path, &summary)?;
    }
    if let Some(path) = &s.report {
        let report = html::Report {
            summary: &summary,
            tally,
            rows: &rows_watch::since(&samples, outcome.started),
            generated: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        html::write(path, &report)?;
        eprintln!("coupon-bench: report written to {}", path.display());
    }
    Ok(summary.pass)
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
