//! Child processes of a test and what they need: a temporary directory each, a
//! free port, a log file for their output (its tail printed when a test
//! fails), and SIGKILL that reaps.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("coupon-rush-{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("COUPON_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A port that was free a moment ago (a collision is retried by the callers),
/// below 55535: a cluster node also listens on its port + 10000.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..55_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let clone = file.try_clone().expect("cloning a log file handle");
    (Stdio::from(file), Stdio::from(clone))
}

/// Starts `command` with its stdout and stderr appended to `log`.
pub fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let (out, err) = log_file(log);
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// SIGKILL and reap; a child that already exited is only reaped.
pub fn kill9_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the child has exited (or can not be asked).
pub fn has_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Raises this process' open-file limit to its hard limit (children started
/// afterwards inherit it): thousands of connections need thousands of
/// descriptors, and the soft limit is often 1024. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let pid = std::process::id().to_string();
    let hard = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output", "HARD", "--noheadings"])
        .output()
        .expect("running prlimit (util-linux)");
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit --nofile={hard} failed");
    hard.parse().unwrap_or(u64::MAX)
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}
