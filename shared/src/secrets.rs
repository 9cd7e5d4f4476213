//! Secrets from files, the Kubernetes way: each secret variable `X` (`ADMIN_TOKEN`,
//! `DATABASE_URL`, `REDIS_URL`, `REDIS_CLUSTER_URLS`) may instead be given as
//! `X_FILE`, the path of a file holding it (a mounted Secret), so that the value
//! is in no process environment. Setting both is a start-up error, not a silent
//! choice. Also the parse that keeps clap's matches, which tell a value given by
//! the operator from a default.

use clap::parser::ValueSource;
use clap::{ArgMatches, Parser};
use std::path::{Path, PathBuf};

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{name} and {name}_FILE are both set: set only one of them")]
    BothSet { name: &'static str },
    #[error("reading {name}_FILE ({path}): {source}", path = path.display())]
    Read {
        name: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name}_FILE ({path}) is empty", path = path.display())]
    Empty { name: &'static str, path: PathBuf },
}

/// Parses flags and environment as `T::parse()` does (printing help, version or a
/// usage error and exiting), and returns the matches too.
pub fn parse<T: Parser>() -> (T, ArgMatches) {
    let matches = T::command().get_matches();
    let config = T::from_arg_matches(&matches)
        .map_err(|err| err.format(&mut T::command()))
        .unwrap_or_else(|err| err.exit());
    (config, matches)
}

/// Whether the argument `id` (the field's name) was given by a flag or its
/// variable, rather than left to its default or unset.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches
        .value_source(id)
        .is_some_and(|source| source != ValueSource::DefaultValue)
}

/// The secret `name` read from `file` when `name`_FILE is set; `None` when it is
/// not (the value, or the default, stands). `given`: whether `name` itself was set.
pub fn from_file(name: &'static str, given: bool, file: Option<&Path>) -> Result<Option<String>, SecretError> {
    let Some(path) = file else {
        return Ok(None);
    };
    if given {
        return Err(SecretError::BothSet { name });
    }
    read(name, path).map(Some)
}

/// A secret file's content, its trailing newline dropped (`echo` and most editors
/// add one; no secret here ends with one).
fn read(name: &'static str, path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        name,
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty {
            name,
            path: path.to_path_buf(),
        });
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("coupon-rush-secret-{}", rand_suffix()));
        std::fs::write(&path, content).expect("writing a temporary file");
        path
    }

    fn rand_suffix() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    }

    #[test]
    fn a_file_gives_the_value_without_its_trailing_newline() {
        let path = file("mysql://u:p@db/coupon\n");
        let value = from_file("DATABASE_URL", false, Some(&path)).expect("readable");
        assert_eq!(value.as_deref(), Some("mysql://u:p@db/coupon"));
        let crlf = file("token\r\n");
        assert_eq!(
            from_file("ADMIN_TOKEN", false, Some(&crlf))
                .expect("readable")
                .as_deref(),
            Some("token")
        );
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(crlf);
    }

    #[test]
    fn no_file_leaves_the_value_as_it_is() {
        assert!(from_file("REDIS_URL", true, None).expect("nothing to read").is_none());
    }

    #[test]
    fn the_value_and_the_file_together_are_refused() {
        let path = file("redis://a\n");
        let err = from_file("REDIS_URL", true, Some(&path)).expect_err("both set");
        assert_eq!(
            err.to_string(),
            "REDIS_URL and REDIS_URL_FILE are both set: set only one of them"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_the_variable() {
        let missing = std::env::temp_dir().join("coupon-rush-no-such-secret");
        let err = from_file("ADMIN_TOKEN", false, Some(&missing)).expect_err("missing");
        assert!(err.to_string().starts_with("reading ADMIN_TOKEN_FILE ("), "{err}");
        let empty = file("\n");
        let err = from_file("ADMIN_TOKEN", false, Some(&empty)).expect_err("empty");
        assert!(
            matches!(
                err,
                SecretError::Empty {
                    name: "ADMIN_TOKEN",
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_file(empty);
    }
}
