//! Schemathesis, a property-based tester driven by the OpenAPI document alone,
//! over every endpoint of a real API (with the admin token, so the admin
//! endpoints are reached too), every check on: it must find nothing. Its
//! settings, and the one allowance made (see the file), are in
//! `schemathesis.toml` at the repository root.

use integration_tests::spawn;
use std::process::Command;

/// Fixed seeds: the same cases on every run, so a failure reproduces.
const SEEDS: [u64; 2] = [2, 4];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_nothing_over_every_endpoint() {
    let (env, app) = spawn::spawn_shared_app().await;
    let config = integration_tests::repo_files::root().join("schemathesis.toml");
    let document = format!("{}/openapi.json", app.client.base);
    for seed in SEEDS {
        let run = tokio::task::spawn_blocking({
            let (config, document) = (config.clone(), document.clone());
            move || {
                Command::new("st")
                    .arg("--config-file")
                    .arg(&config)
                    .args([
                        "run",
                        &document,
                        "--checks",
                        "all",
                        "--max-examples",
                        "50",
                        "--workers",
                        "1",
                    ])
                    .args(["--seed", &seed.to_string()])
                    .args(["-H", &format!("Authorization: Bearer {}", spawn::ADMIN_TOKEN)])
                    .output()
            }
        })
        .await
        .unwrap()
        .unwrap_or_else(|err| {
            panic!("running `st` failed ({err}): install Schemathesis (deploy/local/test-tools.sh does)")
        });
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "Schemathesis (seed {seed}) found failures:\n{report}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(report.contains("passed"), "{report}");
    }
    app.finish(&env).await;
}
