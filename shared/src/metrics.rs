//! The Prometheus recorder both binaries install, and the names of the metrics
//! they record, so a dashboard has one list to read.

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::sync::OnceLock;

/// Issue decisions, labelled `outcome`.
pub const ISSUE_DECISIONS: &str = "coupon_issue_decisions_total";
/// HTTP request latency, labelled `method`, `route`, `status`.
pub const HTTP_REQUEST_DURATION: &str = "coupon_http_request_duration_seconds";
/// Latency of the issue Lua script call.
pub const SCRIPT_DURATION: &str = "coupon_issue_script_duration_seconds";
/// Redis errors, labelled [`LABEL_SERVICE`].
pub const REDIS_ERRORS: &str = "coupon_redis_errors_total";
/// MySQL errors, labelled [`LABEL_SERVICE`].
pub const MYSQL_ERRORS: &str = "coupon_mysql_errors_total";
/// 1 when the API's last readiness check reached MySQL, else 0 (the API keeps
/// issuing without it).
pub const API_MYSQL_UP: &str = "coupon_api_mysql_up";
/// Status long-polls (`?wait=`) waiting now in this API process.
pub const STATUS_WAITERS: &str = "coupon_api_status_waiters";
/// Status long-polls refused (503) because `STATUS_MAX_WAITERS` were waiting.
pub const STATUS_WAITERS_REFUSED: &str = "coupon_api_status_waiters_refused_total";
/// Status reads, labelled `source`: `redis` (the hot path) or `mysql` (Redis
/// no longer holds the coupon's state).
pub const STATUS_READS: &str = "coupon_api_status_reads_total";
/// Coupon states rebuilt from MySQL.
pub const STATE_REBUILDS: &str = "coupon_state_rebuilds_total";
/// Events the consumer handled, labelled `result` (inserted, duplicate, dead_lettered).
pub const EVENTS_PROCESSED: &str = "coupon_consumer_events_total";
/// Entries per batch the consumer read.
pub const BATCH_SIZE: &str = "coupon_consumer_batch_size";
/// Latency of one MySQL batch transaction.
pub const MYSQL_WRITE_DURATION: &str = "coupon_consumer_mysql_write_duration_seconds";
/// Entries in a partition stream, labelled `partition`.
pub const STREAM_LENGTH: &str = "coupon_stream_length";
/// Entries delivered but not acked in a partition stream, labelled `partition`.
pub const STREAM_PENDING: &str = "coupon_stream_pending";
/// Seconds since the oldest entry delivered but not acked (committed) in a
/// partition stream was accepted, labelled `partition`; 0 when none is pending.
pub const OLDEST_PENDING_AGE: &str = "coupon_stream_oldest_pending_age_seconds";
/// Seconds since the oldest entry no consumer has read yet in a partition
/// stream was accepted, labelled `partition`; 0 when every entry was read.
pub const OLDEST_UNDELIVERED_AGE: &str = "coupon_stream_oldest_undelivered_age_seconds";
/// Seconds from a request's acceptance (the event's `accepted_at_ms`) to the
/// commit of its row, one sample per row inserted.
pub const ACCEPTED_TO_WRITTEN: &str = "coupon_consumer_accepted_to_written_seconds";
/// Entries moved to a dead-letter stream, labelled `reason`.
pub const DEAD_LETTERS: &str = "coupon_dead_letters_total";
/// Entries reclaimed from other consumers with XAUTOCLAIM.
pub const RECLAIMED: &str = "coupon_consumer_reclaimed_total";
/// Issue requests refused `429 rate_limited`, labelled `scope` (`user`, `ip`).
pub const RATE_LIMITED: &str = "coupon_api_rate_limited_total";
/// Requests allowed without being remembered because the limiter's table was
/// full of live keys, labelled `scope`: a flood of distinct users or addresses.
pub const RATE_LIMIT_UNTRACKED: &str = "coupon_api_rate_limit_untracked_total";
/// Issue and status requests refused `401`/`403` by identity, labelled `reason`.
pub const AUTH_REFUSED: &str = "coupon_api_auth_refused_total";

/// Live counter streams open on an API instance.
pub const LIVE_WATCHERS: &str = "coupon_live_watchers";
/// A watched coupon's remaining quantity as its live ticker last read it,
/// labelled `coupon_id`: only coupons someone watches on that instance (a
/// coupon's series stays at its last value when its watchers leave).
pub const LIVE_REMAINING: &str = "coupon_live_remaining";

/// The label naming the binary that recorded a sample (`api`, `consumer`), on
/// the metrics both record.
pub const LABEL_SERVICE: &str = "service";

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Up to minutes: what an alert on seconds of lag needs to see.
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Shows the Redis and MySQL error counters of `service` (a
/// [`LABEL_SERVICE`] value) at 0 from the start: a dashboard then draws 0
/// rather than no data, and `rate()` sees the first error (a series that
/// appears at 1 has no increase to see).
pub fn count_errors_from_zero(service: &'static str) {
    for name in [REDIS_ERRORS, MYSQL_ERRORS] {
        metrics::counter!(name, LABEL_SERVICE => service).increment(0);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the global recorder once (later calls, as in tests that start several
/// apps in one process, share it) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = with_buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be set (a test harness): keep rendering ours.
            let _ = metrics::set_global_recorder(recorder);
            // Histograms keep every sample until drained; without a scrape they
            // would grow with every request. A plain thread, not a task: tests
            // start and stop many runtimes, the recorder outlives them all.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// Our histogram buckets on `builder` (a `Full` matcher is tried before a
/// `Suffix` one, whatever the order they are set in).
fn with_buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    #[allow(clippy::expect_used)]
    builder
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ACCEPTED_TO_WRITTEN.into()), LAG_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), SIZE_BUCKETS))
        .expect("only an empty bucket list is refused, and every list is a non-empty constant")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bucket_lists_are_accepted() {
        super::with_buckets(metrics_exporter_prometheus::PrometheusBuilder::new());
    }

    #[test]
    fn the_accepted_to_written_histogram_reaches_minutes_while_latencies_stop_at_seconds() {
        let recorder = super::with_buckets(metrics_exporter_prometheus::PrometheusBuilder::new()).build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!(super::ACCEPTED_TO_WRITTEN).record(42.0);
            metrics::histogram!(super::MYSQL_WRITE_DURATION).record(0.01);
        });
        let text = handle.render();
        let bucket = |name: &str, le: &str| text.contains(&format!("{name}_bucket{{le=\"{le}\"}}"));
        assert!(bucket(super::ACCEPTED_TO_WRITTEN, "600"), "{text}");
        assert!(bucket(super::ACCEPTED_TO_WRITTEN, "5"), "{text}");
        assert!(!bucket(super::MYSQL_WRITE_DURATION, "600"), "{text}");
        assert!(bucket(super::MYSQL_WRITE_DURATION, "2.5"), "{text}");
    }
}
