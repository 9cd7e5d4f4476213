//! Reading what a `/metrics` endpoint answers (Prometheus text format).

/// The value of the first sample line starting with `prefix` (the metric's
/// name and, to pick one series, its labels as rendered).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
