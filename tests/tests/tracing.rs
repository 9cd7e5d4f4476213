//! One request, one trace (issue #4): both binaries run as processes exporting
//! OTLP/HTTP to a real receiver in the test; the trace of an issue request must
//! hold the API's server span, the Redis script span under it, the consumer's
//! processing span as its descendant and the MySQL span under that.

use integration_tests::binaries::{ApiProcess, ConsumerOptions, ConsumerProcess};
use integration_tests::otlp::{Receiver, Span};
use integration_tests::spawn::Env;
use integration_tests::wait;
use std::time::{Duration, Instant};

fn telemetry_env(receiver: &str) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.get(key).map(String::as_str)
}

/// The span of `trace` named `name`, which must come from `service` and carry
/// `attribute`.
fn span<'a>(trace: &'a [Span], name: &str, service: &str, (key, value): (&str, &str)) -> &'a Span {
    let span = trace
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no `{name}` span in {trace:#?}"));
    assert_eq!(span.service, service, "the service of `{name}`");
    assert_eq!(attribute(span, key), Some(value), "`{key}` of `{name}`");
    span
}

fn parent_of<'a>(span: &Span, spans: &'a [Span]) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.span_id == span.parent_span_id && s.trace_id == span.trace_id)
}

fn is_descendant(span: &Span, ancestor: &Span, spans: &[Span]) -> bool {
    let mut current = parent_of(span, spans);
    while let Some(parent) = current {
        if parent.span_id == ancestor.span_id {
            return true;
        }
        current = parent_of(parent, spans);
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_request_is_one_trace_across_the_api_and_the_consumer() {
    let receiver = Receiver::start().await;
    let env = Env::shared().await;
    let mut api = ApiProcess::spawn_with(&env, &telemetry_env(&receiver.endpoint)).await;
    let options = ConsumerOptions {
        extra_env: telemetry_env(&receiver.endpoint),
        ..ConsumerOptions::default()
    };
    let mut consumer = ConsumerProcess::spawn(&env, "traced", &options);

    let coupon = api.client.create_open_coupon(10).await;
    // The client's own trace context is continued by the API.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = api
        .client
        .http
        .post(format!("{}/coupons/{coupon}/issue", api.client.base))
        .header("traceparent", format!("00-{client_trace}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"user_id": 4242}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait::until(Duration::from_secs(20), "the consumer to write the row", || {
        let client = api.client.clone();
        async move {
            let (_, body) = client.get(&format!("/coupons/{coupon}/issues/4242")).await;
            (body["status"] == "issued").then_some(())
        }
    })
    .await;
    // Graceful stops flush the batch span processors.
    let (status, _) = consumer.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "the consumer exits 0 on SIGTERM: {status}");
    let (status, _) = api.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "the API exits 0 on SIGTERM: {status}");

    let spans = wait::until(Duration::from_secs(10), "the consumer's spans to arrive", || {
        let spans = receiver.spans();
        async move { spans.iter().any(|s| s.name == "INSERT coupon_issues").then_some(spans) }
    })
    .await;
    let trace_id = hex_decode(client_trace);
    let trace: Vec<Span> = spans.into_iter().filter(|s| s.trace_id == trace_id).collect();

    let server = span(
        &trace,
        "POST /coupons/{coupon_id}/issue",
        "coupon-api",
        ("http.request.method", "POST"),
    );
    assert_eq!(server.kind, 2, "a server span");
    assert_eq!(attribute(server, "http.route"), Some("/coupons/{coupon_id}/issue"));
    assert_eq!(attribute(server, "http.response.status_code"), Some("202"));
    assert_eq!(
        server.parent_span_id,
        hex_decode("00f067aa0ba902b7"),
        "the incoming traceparent is the parent"
    );

    let script = span(&trace, "EVALSHA issue", "coupon-api", ("db.system", "redis"));
    assert_eq!(script.kind, 3, "a client span");
    assert!(
        is_descendant(script, server, &trace),
        "the Redis span is under the request"
    );

    let process = span(&trace, "process issue event", "coupon-consumer", ("user.id", "4242"));
    assert!(
        is_descendant(process, server, &trace),
        "the consumer span continues the request's trace"
    );

    let insert = span(
        &trace,
        "INSERT coupon_issues",
        "coupon-consumer",
        ("db.system", "mysql"),
    );
    assert_eq!(
        parent_of(insert, &trace).map(|p| p.name.as_str()),
        Some("process issue event")
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_neither_stops_nor_slows_the_api() {
    // Nothing listens on this port: every export fails.
    let dead_collector = format!("http://127.0.0.1:{}", integration_tests::child::free_port());
    let env = Env::shared().await;
    let api = ApiProcess::spawn_with(&env, &telemetry_env(&dead_collector)).await;
    let coupon = api.client.create_open_coupon(1000).await;
    let started = Instant::now();
    for user in 1..=300 {
        let (status, body) = api.client.issue(coupon, user).await;
        assert_eq!(status, 202, "{body}");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "300 sequential requests took {elapsed:?}"
    );
    env.cleanup().await;
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
