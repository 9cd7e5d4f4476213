//! A page rendered by headless Chromium (Debian's `chromium`, which
//! deploy/local/test-tools.sh installs), as someone opening it would see it,
//! offline: every request off the machine goes to a dead proxy. One run takes
//! the screenshot and collects the console (an uncaught exception, a resource
//! that failed), another dumps the DOM after the page's scripts ran.

use crate::child::TempDir;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The browser binary.
const CHROMIUM: &str = "chromium";
/// A cold start on a busy machine takes a few seconds.
const WITHIN: Duration = Duration::from_secs(90);

/// What the browser made of a page.
#[derive(Debug)]
pub struct Rendering {
    /// The DOM after the page loaded, serialized.
    pub dom: String,
    /// Every console message of the page (an error thrown by a script, a
    /// resource that did not load): a page without a script has none.
    pub page_errors: Vec<String>,
}

/// Renders `html` into `png` at `width`×`height` pixels. Panics when Chromium
/// is missing or fails (never a silent skip).
pub async fn render(html: &Path, png: &Path, (width, height): (u32, u32)) -> Rendering {
    let url = format!("file://{}", html.canonicalize().expect("the page exists").display());
    let screenshot = [
        format!("--screenshot={}", png.display()),
        format!("--window-size={width},{height}"),
        "--enable-logging=stderr".into(),
        "--v=0".into(),
        url.clone(),
    ];
    let shot = run(&screenshot).await;
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 0,
        "chromium wrote no screenshot to {}:\n{}",
        png.display(),
        shot.1
    );
    let page_errors = shot
        .1
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    let (dom, _) = run(&["--dump-dom".into(), url]).await;
    Rendering { dom, page_errors }
}

/// Runs headless Chromium with its own profile and no network; its stdout and stderr.
async fn run(args: &[String]) -> (String, String) {
    let profile = TempDir::new("chromium-profile");
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Anything not on this machine fails to load: the page must need nothing.
        .args(["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WITHIN, command.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {args:?} did not finish within {WITHIN:?}"))
        .unwrap_or_else(|e| panic!("running chromium (run deploy/local/test-tools.sh to install it): {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}):\n{stderr}",
        output.status
    );
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}
