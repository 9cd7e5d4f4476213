//! Retrying until a deadline: how both binaries wait at start for MySQL and
//! Redis, which in a compose file or a pod come up at the same time as they do.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The pause between two attempts.
const PAUSE: Duration = Duration::from_millis(500);

/// Runs `attempt` until it succeeds or `wait` has passed, logging each failure as
/// "`what` is not reachable yet". After the deadline the last error is returned.
pub async fn until<T, E, F>(wait: Duration, what: &str, attempt: impl FnMut() -> F) -> Result<T, E>
where
    E: Display,
    F: Future<Output = Result<T, E>>,
{
    until_permanent(wait, what, attempt, |_| false).await
}

/// As [`until`], but an error that `permanent` says waiting cannot cure (a
/// certificate that is not trusted, a server without TLS when TLS is required)
/// is returned at once instead of being retried until the deadline.
pub async fn until_permanent<T, E, F>(
    wait: Duration,
    what: &str,
    mut attempt: impl FnMut() -> F,
    permanent: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: Display,
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if !permanent(&err) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%err, "{what} is not reachable yet, retrying");
                tokio::time::sleep(PAUSE).await;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_it_succeeds() {
        let mut calls = 0;
        let ok = until(Duration::from_secs(5), "thing", || {
            calls += 1;
            let result = if calls < 3 { Err("down") } else { Ok(calls) };
            async move { result }
        })
        .await;
        assert_eq!(ok, Ok(3));
    }

    #[tokio::test]
    async fn past_the_deadline_the_last_error_is_returned() {
        let mut calls = 0;
        let failed: Result<(), String> = until(Duration::ZERO, "thing", || {
            calls += 1;
            let err = format!("down {calls}");
            async move { Err(err) }
        })
        .await;
        assert_eq!(failed, Err("down 1".to_string()));
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let mut calls = 0;
        let failed: Result<(), &str> = until_permanent(
            Duration::from_secs(5),
            "thing",
            || {
                calls += 1;
                async { Err("untrusted certificate") }
            },
            |err| err.contains("certificate"),
        )
        .await;
        assert_eq!((failed, calls), (Err("untrusted certificate"), 1));
    }
}
