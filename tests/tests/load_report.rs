//! The load report (`coupon-bench --report`): made from a real small sale (API,
//! consumer, Redis, MariaDB), it holds every chart and the verification
//! table, needs nothing from the network, and renders in a browser without
//! page errors.

use integration_tests::binaries::run_to_exit;
use integration_tests::child::TempDir;
use integration_tests::chromium;
use integration_tests::spawn::{self, ADMIN_TOKEN};
use serde_json::Value;
use std::time::Duration;

/// The `<figure>` ids of the report's charts.
const CHARTS: [&str; 5] = [
    "chart-answers",
    "chart-latency-over-time",
    "chart-latency-histogram",
    "chart-acceptance",
    "chart-drain",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_real_sale_charts_it_lists_the_checks_and_renders_offline_without_page_errors() {
    let (env, app) = spawn::spawn_shared_app().await;
    let consumer = spawn::spawn_consumer(&env, "report").await;
    let dir = TempDir::new("report");
    let (html_path, json_path) = (dir.path().join("sale.html"), dir.path().join("sale.json"));
    let args = [
        "--api-url",
        &app.client.base,
        "--admin-token",
        ADMIN_TOKEN,
        "--users",
        "1500",
        "--retries",
        "1",
        "--quantity",
        "400",
        "--concurrency",
        "16",
        "--report",
        html_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ];
    let (bench, _) = run_to_exit("coupon-bench", &env, &args, &[], Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(
        bench.status.success(),
        "coupon-bench failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&bench.stdout)
    );
    assert!(
        stderr.contains(&format!("report written to {}", html_path.display())),
        "{stderr}"
    );

    let html = std::fs::read_to_string(&html_path).unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    for id in CHARTS {
        let at = html
            .find(&format!("<figure id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no chart {id}"));
        let figure = &html[at..at + html[at..].find("</figure>").unwrap()];
        assert!(
            figure.contains("<svg") && figure.contains("<polyline"),
            "chart {id} has no line"
        );
    }
    assert!(
        html.contains("<b>400 / 400</b>"),
        "the accepted tile says the coupon sold out"
    );
    assert!(html.contains("sold out at "), "the acceptance curve marks the sell-out");
    assert!(
        html.contains("rows in MySQL") && html.contains("all rows in at "),
        "the drain is drawn"
    );
    let checks_at = html.find("<section id=\"checks\">").expect("the verification table");
    let checks = &html[checks_at..];
    for check in summary["checks"].as_array().unwrap() {
        let name = check["name"].as_str().unwrap();
        assert!(
            checks.contains(&format!("<td>PASS</td><td>{}</td>", escape(name))),
            "check {name} not listed as PASS"
        );
    }
    for outside in ["<script", " src=", "<link", "url(", "@import"] {
        assert!(
            !html.contains(outside),
            "the report must open offline, but it has {outside}"
        );
    }

    let png = dir.path().join("sale.png");
    let rendering = chromium::render(&html_path, &png, (1200, 3000)).await;
    assert_eq!(rendering.page_errors, Vec::<String>::new());
    for id in CHARTS {
        assert!(
            rendering.dom.contains(&format!("<figure id=\"{id}\">")),
            "{id} not in the rendered page"
        );
    }
    assert!(rendering.dom.matches("<svg").count() >= CHARTS.len());
    assert!(
        std::fs::metadata(&png).unwrap().len() > 100_000,
        "a screenshot of charts is not tiny"
    );

    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn a_page_whose_script_throws_or_that_needs_the_network_renders_with_page_errors() {
    let dir = TempDir::new("broken-pages");
    let thrown = page_errors_of(&dir, "throws", "throw new Error('chart failed')").await;
    assert!(thrown.iter().any(|e| e.contains("chart failed")), "{thrown:?}");
    let fetch = "fetch('http://example.com/chart.js').catch(e => console.error('no network: ' + e))";
    let offline = page_errors_of(&dir, "fetches", fetch).await;
    assert!(offline.iter().any(|e| e.contains("no network")), "{offline:?}");
}

/// The page errors of a page in `dir` that runs `script`.
async fn page_errors_of(dir: &TempDir, name: &str, script: &str) -> Vec<String> {
    let page = dir.path().join(format!("{name}.html"));
    std::fs::write(
        &page,
        format!("<html><body><p>chart</p><script>{script}</script></body></html>"),
    )
    .unwrap();
    let png = dir.path().join(format!("{name}.png"));
    chromium::render(&page, &png, (400, 300)).await.page_errors
}

/// A check's name as the report writes it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
