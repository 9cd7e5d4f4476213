//! Logs and traces: a `tracing` subscriber that writes logs to stderr and, when an
//! OTLP endpoint is configured, exports spans through OpenTelemetry. Also the W3C
//! trace-context helpers that carry a trace through a stream event.

use crate::config::TelemetryConfig;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("unsupported OTEL_EXPORTER_OTLP_PROTOCOL `{0}` (use grpc or http/protobuf)")]
    Protocol(String),
    #[error("building the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already set: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The target of the spans that exist for traces only (one per request, per
/// script call, per consumed event). They go to the OpenTelemetry layer alone:
/// without an exporter nothing is interested in them and they cost nothing, and
/// the log writer never formats them on the hot path.
pub const SPAN_TARGET: &str = "coupon_rush::trace";

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes pending spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Must run inside the tokio runtime (the
    /// gRPC exporter and the batch processor need it).
    pub fn init(config: &TelemetryConfig, default_service: &str) -> Result<Self, TelemetryError> {
        let provider = match &config.otel_exporter_otlp_endpoint {
            Some(endpoint) if !endpoint.is_empty() => Some(provider(config, endpoint, default_service)?),
            _ => None,
        };
        let mut logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        if let Ok(directive) = format!("{SPAN_TARGET}=off").parse() {
            logs = logs.add_directive(directive);
        }
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(logs);
        // Not an `Option` layer: a `None` one declares an interest in every
        // callsite, so each request would still build (and drop) its spans.
        match &provider {
            Some(provider) => tracing_subscriber::registry()
                .with(logs)
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("coupon-rush"))
                        .with_filter(LevelFilter::INFO),
                )
                .try_init()?,
            None => tracing_subscriber::registry().with(logs).try_init()?,
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Self { provider })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. Blocking, so it runs off the async workers.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let result =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
            if let Ok(Err(err)) = result {
                tracing::warn!(%err, "flushing spans at shutdown failed");
            }
        }
    }
}

fn provider(
    config: &TelemetryConfig,
    endpoint: &str,
    default_service: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let timeout = Duration::from_secs(3);
    let exporter = match config.otel_exporter_otlp_protocol.as_str() {
        "grpc" => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()?,
        "http/protobuf" => SpanExporter::builder()
            .with_http()
            // The spec's base endpoint gets the signal path appended.
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(timeout)
            .build()?,
        other => return Err(TelemetryError::Protocol(other.to_string())),
    };
    let service = config
        .otel_service_name
        .clone()
        .unwrap_or_else(|| default_service.to_string());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// The most of a `tracestate` an event carries: the 512 characters W3C Trace
/// Context asks every vendor to pass on. A client's header could otherwise make
/// every event, and so a consumer's batch, as large as a header may be.
pub const MAX_TRACESTATE: usize = 512;

/// The W3C trace context of `span`, to travel inside an event; its
/// `tracestate` cut to [`MAX_TRACESTATE`].
pub fn inject_context(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    if let Some(state) = carrier.remove("tracestate") {
        let kept = bounded_tracestate(&state);
        if !kept.is_empty() {
            carrier.insert("tracestate".into(), kept);
        }
    }
    carrier
}

/// The leading list members of `state` that fit in [`MAX_TRACESTATE`]: the
/// spec's way to shorten it (members are dropped whole, from the right).
fn bounded_tracestate(state: &str) -> String {
    let mut kept = String::new();
    for member in state.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let needed = if kept.is_empty() {
            member.len()
        } else {
            kept.len() + 1 + member.len()
        };
        if needed > MAX_TRACESTATE {
            break;
        }
        if !kept.is_empty() {
            kept.push(',');
        }
        kept.push_str(member);
    }
    kept
}

/// The remote parent carried by an event, to hang the consumer's span under it.
pub fn extract_context(carrier: &HashMap<String, String>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(carrier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_tracestate_keeps_its_leading_members_that_fit() {
        assert_eq!(bounded_tracestate("a=1, b=2"), "a=1,b=2");
        let member = format!("v={}", "x".repeat(250));
        let long = [member.as_str(); 5].join(",");
        let kept = bounded_tracestate(&long);
        assert_eq!(kept, [member.as_str(); 2].join(","));
        assert!(kept.len() <= MAX_TRACESTATE);
        assert_eq!(bounded_tracestate(&format!("big={}", "y".repeat(600))), "");
    }

    /// The only test here that installs the global subscriber.
    #[test]
    fn without_an_exporter_no_trace_span_is_built_and_logs_still_are() {
        let config = TelemetryConfig {
            otel_exporter_otlp_endpoint: None,
            otel_exporter_otlp_protocol: "grpc".into(),
            otel_service_name: None,
        };
        let telemetry = Telemetry::init(&config, "test").expect("the first subscriber of this process");
        assert!(!telemetry.exporting());
        let span = tracing::info_span!(target: SPAN_TARGET, "POST /coupons/{coupon_id}/issue");
        assert!(
            span.is_disabled(),
            "a span for traces alone is built with nobody to export it"
        );
        assert!(
            tracing::enabled!(target: "coupon_rush", tracing::Level::ERROR),
            "logs still go out"
        );
    }
}
