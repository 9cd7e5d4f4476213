//! The Prometheus alert rules (`deploy/prometheus/alerts.yml`): valid for
//! `promtool`, each alert proven by `promtool test rules` to fire on a
//! synthetic series and to stay quiet otherwise, every metric they read one the
//! binaries record, and the compose Prometheus loading them. `promtool` comes
//! with the Debian package `prometheus` (`deploy/local/services.sh` installs
//! it); without it these tests fail, they never skip.

use integration_tests::child::TempDir;
use integration_tests::repo_files::{promtool, read, root, scalar};
use integration_tests::scrape::{base_name, named_in};
use serde_norway::Value;
use std::collections::BTreeSet;

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts_test.yml";

fn yaml(relative: &str) -> Value {
    serde_norway::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every rule of the rules file.
fn rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().clone())
        .collect()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = promtool(&root(), &["check", "rules", RULES]);
    let count = rules().len();
    assert!(count >= 5, "{count} rules");
    assert!(out.contains(&format!("SUCCESS: {count} rules found")), "{out}");
}

#[test]
fn promtool_unit_tests_show_each_alert_firing_and_staying_quiet() {
    let out = promtool(&root(), &["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert is expected to fire somewhere, and to be quiet somewhere.
    let tests = yaml(RULE_TESTS);
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            let name = scalar(&case["alertname"]);
            match case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()) {
                true => fired.insert(name),
                false => quiet.insert(name),
            };
        }
    }
    for rule in rules() {
        let alert = scalar(&rule["alert"]);
        assert!(fired.contains(&alert), "{alert} is never shown firing");
        assert!(quiet.contains(&alert), "{alert} is never shown quiet");
    }
}

#[test]
fn the_alerts_read_only_metrics_the_binaries_record() {
    let recorded = read("shared/src/metrics.rs");
    let named: BTreeSet<String> = rules()
        .iter()
        .flat_map(|rule| named_in(&scalar(&rule["expr"])))
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    for name in named {
        let base = base_name(&name);
        assert!(
            recorded.contains(&format!("\"{base}\"")),
            "{name} is not a metric of shared/src/metrics.rs"
        );
    }
}

#[test]
fn the_compose_prometheus_loads_the_alert_rules() {
    let config = yaml("deploy/compose/prometheus.yml");
    let files: Vec<String> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(files, ["alerts.yml"]);
    let compose = yaml("deploy/compose/compose.yaml");
    let volumes: Vec<String> = compose["services"]["prometheus"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar)
        .collect();
    assert!(
        volumes.contains(&"../prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro".to_string()),
        "{volumes:?}"
    );

    // Laid out as the container sees /etc/prometheus: promtool follows rule_files.
    let dir = TempDir::new("prometheus-config");
    std::fs::write(dir.path().join("prometheus.yml"), read("deploy/compose/prometheus.yml")).unwrap();
    std::fs::write(dir.path().join("alerts.yml"), read(RULES)).unwrap();
    let out = promtool(dir.path(), &["check", "config", "prometheus.yml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules().len())),
        "{out}"
    );
}
