//! The operator's Grafana dashboard (`deploy/grafana/dashboards/`, issue 15)
//! against what the binaries really export: every query parses (`promtool`),
//! names only metrics (and label values) that `coupon-api` and
//! `coupon-consumer` expose after a sale, and every panel has a unit; Grafana
//! is provisioned beside Prometheus in the compose file.

use integration_tests::binaries::{ApiProcess, ConsumerOptions, ConsumerProcess};
use integration_tests::child::TempDir;
use integration_tests::repo_files::{promtool, read, scalar};
use integration_tests::scrape::{base_name, exported, named_in};
use integration_tests::spawn::Env;
use integration_tests::{sse, wait};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const DASHBOARD: &str = "deploy/grafana/dashboards/coupon-rush.json";

fn panels() -> Vec<Value> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        // A row holds its collapsed panels.
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        if panel["type"] != "row" {
            panels.push(panel.clone());
        }
    }
    panels
}

/// Every query of every panel, with Grafana's `$__rate_interval` as Prometheus would get it.
fn queries() -> Vec<String> {
    panels()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().replace("$__rate_interval", "1m"))
        .collect()
}

#[test]
fn every_panel_has_a_unit_a_query_and_the_provisioned_data_source() {
    let panels = panels();
    assert!(panels.len() >= 9, "{} panels", panels.len());
    let source: serde_norway::Value =
        serde_norway::from_str(&read("deploy/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    let uid = scalar(&source["datasources"][0]["uid"]);
    for panel in &panels {
        let title = panel["title"].as_str().unwrap();
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
        assert!(!unit.is_empty(), "panel `{title}` has no unit");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel `{title}` has no query");
        for source in std::iter::once(&panel["datasource"]).chain(targets.iter().map(|t| &t["datasource"])) {
            assert_eq!(source["uid"].as_str(), Some(uid.as_str()), "panel `{title}`");
        }
    }
}

#[test]
fn promtool_parses_every_query_of_the_dashboard() {
    let rules: Vec<String> = queries()
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::json!(expr)
            )
        })
        .collect();
    let dir = TempDir::new("dashboard-rules");
    let file = dir.path().join("dashboard.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{}", rules.concat()),
    )
    .unwrap();
    let out = promtool(dir.path(), &["check", "rules", "dashboard.yml"]);
    assert!(out.contains(&format!("SUCCESS: {} rules found", rules.len())), "{out}");
}

/// `(metric, label, value)` of every `metric{label="value"}` matcher in `expr`.
fn matchers(expr: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for name in named_in(expr) {
        let opening = format!("{name}{{");
        let mut rest = expr;
        while let Some(at) = rest.find(&opening) {
            rest = &rest[at + opening.len()..];
            // Label values may hold braces (`route="/coupons/{coupon_id}/issue"`): pairs end at quotes.
            let mut inside = rest.trim_start();
            while let Some((label, after)) = inside.split_once("=\"") {
                let (value, after) = after.split_once('"').unwrap();
                found.push((name.clone(), label.trim().into(), value.into()));
                inside = after.trim_start().trim_start_matches(',').trim_start();
                if inside.starts_with('}') {
                    break;
                }
            }
        }
    }
    found
}

async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_reads_is_exported_after_a_sale() {
    let env = Env::shared().await;
    let api = ApiProcess::spawn(&env).await;
    let consumer = ConsumerProcess::spawn_serving(&env, "dash-c1", &ConsumerOptions::default()).await;
    let coupon = api.client.create_open_coupon(5).await;
    // A watcher, so that the live counter's gauges have a coupon.
    let http = reqwest::Client::new();
    let mut watcher = sse::open(&http, &format!("{}/coupons/{coupon}/live", api.client.base))
        .await
        .unwrap();
    watcher.next_data().await.unwrap();
    for user in 1..=8 {
        api.client.issue(coupon, user).await;
    }
    wait::until(Duration::from_secs(30), "the sale's rows in MySQL", || async {
        (env.mysql_users(coupon).await.len() == 5).then_some(())
    })
    .await;
    // Readiness probes set the API's MySQL gauge, as compose's and Kubernetes' do.
    assert_eq!(api.client.get("/readyz").await.0, 200);
    let api_text = metrics_text(&http, &api.client.base).await;
    let consumer_text = metrics_text(&http, consumer.ops.as_ref().unwrap()).await;
    let both = format!("{api_text}\n{consumer_text}");
    let names: BTreeSet<String> = exported(&both);

    let queries = queries();
    let mut read_by_dashboard = BTreeSet::new();
    for expr in &queries {
        for name in named_in(expr) {
            assert!(
                names.contains(&name) || names.contains(base_name(&name)),
                "`{name}` (in `{expr}`) is exported by neither binary: {names:?}"
            );
            read_by_dashboard.insert(base_name(&name).to_string());
        }
        for (name, label, value) in matchers(expr) {
            let wanted = format!("{label}=\"{value}\"");
            assert!(
                both.lines()
                    .any(|l| l.starts_with(name.as_str()) && l.contains(&wanted)),
                "no series `{name}{{{wanted}}}` (in `{expr}`) after a sale"
            );
        }
    }
    for wanted in [
        "coupon_issue_decisions_total",
        "coupon_http_request_duration_seconds",
        "coupon_live_remaining",
        "coupon_stream_oldest_undelivered_age_seconds",
        "coupon_stream_pending",
        "coupon_dead_letters_total",
        "coupon_consumer_mysql_write_duration_seconds",
        "coupon_redis_errors_total",
    ] {
        assert!(
            read_by_dashboard.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
    drop(watcher);
    env.cleanup().await;
}

#[test]
fn grafana_is_provisioned_beside_prometheus_in_compose() {
    let compose: serde_norway::Value = serde_norway::from_str(&read("deploy/compose/compose.yaml")).unwrap();
    let grafana = &compose["services"]["grafana"];
    assert!(scalar(&grafana["image"]).starts_with("grafana/grafana:"));
    let mounts: Vec<String> = grafana["volumes"].as_sequence().unwrap().iter().map(scalar).collect();
    assert!(
        mounts.contains(&"../grafana/provisioning:/etc/grafana/provisioning:ro".to_string()),
        "{mounts:?}"
    );
    let dashboards = mounts
        .iter()
        .find_map(|m| m.strip_prefix("../grafana/dashboards:"))
        .expect("the dashboards mounted")
        .trim_end_matches(":ro");
    let provider: serde_norway::Value =
        serde_norway::from_str(&read("deploy/grafana/provisioning/dashboards/coupon-rush.yml")).unwrap();
    assert_eq!(scalar(&provider["providers"][0]["options"]["path"]), dashboards);
    let source: serde_norway::Value =
        serde_norway::from_str(&read("deploy/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    let prometheus_port = scalar(&compose["services"]["prometheus"]["ports"][0]);
    assert!(prometheus_port.ends_with(":9090"), "{prometheus_port}");
    assert_eq!(scalar(&source["datasources"][0]["url"]), "http://prometheus:9090");
    assert!(
        grafana["depends_on"]["prometheus"].is_mapping(),
        "Grafana starts after Prometheus"
    );
    let password = scalar(&grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]);
    let secret = password
        .strip_prefix("/run/secrets/")
        .expect("the admin password is a secret");
    let file = scalar(&compose["secrets"][secret]["file"]);
    assert!(!read(&format!("deploy/compose/{}", file.trim_start_matches("./")))
        .trim()
        .is_empty());
}
