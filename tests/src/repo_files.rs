//! Reading the repository's own files, for the tests that check deployment
//! files against what the binaries really accept: the files, the variables a
//! binary reads, and YAML scalars as text.

use serde_norway::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A file of the repository, by its path from the root.
pub fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// The variables a binary accepts: every `env = "..."` of its clap
/// configuration, plus `RUST_LOG`, which the tracing subscriber reads.
pub fn accepted_variables(config_sources: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for source in config_sources {
        let text = read(source);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("env = \"") {
            rest = &rest[at + "env = \"".len()..];
            let end = rest.find('"').unwrap();
            names.insert(rest[..end].to_string());
        }
    }
    assert!(read("shared/src/telemetry.rs").contains("EnvFilter::try_from_default_env"));
    names.insert("RUST_LOG".into());
    names
}

/// The variables `coupon-api` reads (checked to hold two it surely does, so a
/// parse that found nothing can not pass for "nothing set is unknown").
pub fn api_variables() -> BTreeSet<String> {
    variables(
        &["api/src/config.rs", "shared/src/config.rs"],
        ["LISTEN_ADDR", "REDIS_URL"],
    )
}

/// The variables `coupon-consumer` reads (checked as [`api_variables`]).
pub fn consumer_variables() -> BTreeSet<String> {
    variables(
        &["consumer/src/config.rs", "shared/src/config.rs"],
        ["METRICS_ADDR", "CONSUMER_NAME"],
    )
}

fn variables(config_sources: &[&str], surely: [&str; 2]) -> BTreeSet<String> {
    let accepted = accepted_variables(config_sources);
    assert!(surely.iter().all(|name| accepted.contains(*name)), "{accepted:?}");
    accepted
}

/// Runs `promtool args` in `dir`; panics with its output unless it succeeds.
/// `promtool` comes with the Debian package `prometheus`
/// (`deploy/local/services.sh` installs it).
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running promtool: {e}; install it with deploy/local/services.sh (Debian package `prometheus`)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A YAML scalar as text: a string as it is, anything else as YAML writes it
/// (`30s`, `8080`, `true`).
pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other).unwrap().trim().to_string(),
    }
}
