//! Reading the repository's own files, for the tests that check deployment
//! files against what the binaries really accept.

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
