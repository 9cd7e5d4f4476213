//! What the three binaries share around their work: a tokio runtime, an error
//! printed as `program: error` with exit status 2, and the files they write
//! (`--json`, `--report`).

use serde::Serialize;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The exit status of a run that could not be made (bad options, no runtime,
/// an error on the way); 0 and 1 are `coupon-bench`'s verdicts.
const CANNOT_RUN: u8 = 2;

/// Which tokio runtime a binary runs on.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    MultiThread,
    CurrentThread,
}

/// Prints `program: err` (with its causes) and gives the exit status of a run
/// that could not be made.
pub fn fail(program: &str, err: impl Display) -> ExitCode {
    eprintln!("{program}: {err:#}");
    ExitCode::from(CANNOT_RUN)
}

/// Runs `work` to its end on a new `runtime`. A runtime that does not start,
/// or an error of `work`, is printed by [`fail`] and is the exit status.
pub fn block_on<T, E: Display>(
    program: &str,
    runtime: Runtime,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, ExitCode> {
    let mut builder = match runtime {
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|err| fail(program, format_args!("starting the runtime: {err}")))?;
    runtime.block_on(work).map_err(|err| fail(program, err))
}

/// Why an output file (`--json`, `--report`) was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Chart(#[from] crate::html::charts::ChartError),
    /// The I/O error is in the message, not a source, so `{:#}` says it once.
    #[error("writing {}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

/// Writes `value` as pretty JSON, with a final newline, to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), OutputFileError> {
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: String) -> Result<(), OutputFileError> {
    std::fs::write(path, text).map_err(|error| OutputFileError::Write {
        path: path.to_path_buf(),
        error,
    })
}
