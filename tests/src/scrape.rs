//! Reading what a `/metrics` endpoint answers (Prometheus text format), and
//! the metrics a PromQL expression (an alert's, a dashboard panel's) reads.

use std::collections::BTreeSet;

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

/// The names of the metrics a `/metrics` answer exports (a histogram by its
/// own name, as its `# TYPE` line gives it).
pub fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `coupon_` metric a PromQL expression names, as written (a
/// histogram's `_bucket`, `_count` or `_sum` included); label names and
/// values (`by (coupon_id)`, `{route="..."}`) are not metrics.
pub fn named_in(expr: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let selectors = without_labels(expr);
    let mut rest = selectors.as_str();
    while let Some(at) = rest.find("coupon_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        named.insert(name);
    }
    named
}

/// `expr` without what only names labels: `{...}` matchers and the
/// `by (...)` / `without (...)` of an aggregation.
fn without_labels(expr: &str) -> String {
    let mut kept = String::new();
    let mut rest = expr;
    loop {
        let braces = rest.find('{').map(|at| (at, at + 1, '}'));
        let grouping = ["by (", "without ("]
            .iter()
            .filter_map(|word| rest.find(word).map(|at| (at, at + word.len(), ')')))
            .min();
        let Some((start, inside, close)) = [braces, grouping].into_iter().flatten().min() else {
            kept.push_str(rest);
            return kept;
        };
        kept.push_str(&rest[..start]);
        kept.push(' ');
        rest = rest[inside..].split_once(close).map_or("", |(_, after)| after);
    }
}

/// A series name without a histogram's `_bucket`, `_count` or `_sum`.
pub fn base_name(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}
