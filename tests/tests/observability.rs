//! What operators and client authors read: `/metrics` on both binaries moves
//! when a sale runs, and `/openapi.json` describes what the API really answers.

use integration_tests::scrape::sample;
use integration_tests::spawn;
use integration_tests::wait;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_metrics_endpoints_expose_values_that_move_during_a_sale() {
    let (env, app) = spawn::spawn_shared_app().await;
    let consumer = spawn::spawn_consumer(&env, "metrics").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer_metrics = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(consumer::ops_server::serve(
        listener,
        shared::metrics::install(),
        std::sync::Arc::new(consumer::Health::new(
            spawn::consumer_config(&env, "metrics").thresholds(),
        )),
        std::future::pending(),
    ));

    let text = |c: &integration_tests::client::Client, url: String| {
        let http = c.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let before = text(&app.client, format!("{}/metrics", app.client.base)).await;
    let accepted_before = sample(&before, "coupon_issue_decisions_total{outcome=\"accepted\"}").unwrap_or(0.0);

    let coupon = app.client.create_open_coupon(3).await;
    for user in 1..=5 {
        app.client.issue(coupon, user).await;
    }
    app.client.issue(coupon, 1).await;

    let api_metrics = text(&app.client, format!("{}/metrics", app.client.base)).await;
    assert!(
        sample(&api_metrics, "coupon_issue_decisions_total{outcome=\"accepted\"}").unwrap() >= accepted_before + 3.0
    );
    assert!(sample(&api_metrics, "coupon_issue_decisions_total{outcome=\"sold_out\"}").unwrap() >= 2.0);
    assert!(sample(&api_metrics, "coupon_issue_decisions_total{outcome=\"already_issued\"}").unwrap() >= 1.0);
    assert!(api_metrics.contains("coupon_http_request_duration_seconds_bucket{method=\"POST\",route=\"/coupons/{coupon_id}/issue\",status=\"202\""));
    // Redis decided the three acceptances and the first sold out; the sold-out
    // memory may answer the rest without a script call.
    assert!(sample(&api_metrics, "coupon_issue_script_duration_seconds_count").unwrap() >= 4.0);

    let partition = shared::Layout::default().partition_of(shared::CouponId::new(coupon).unwrap());
    let label = format!("{{partition=\"{partition}\"}}");
    let consumer_text = wait::until(
        Duration::from_secs(20),
        "the consumer's metrics to show the sale",
        || {
            let (client, url, label) = (app.client.clone(), consumer_metrics.clone(), label.clone());
            async move {
                let body = client.http.get(url).send().await.ok()?.text().await.ok()?;
                let inserted = sample(&body, "coupon_consumer_events_total{result=\"inserted\"}")?;
                let lag = sample(&body, &format!("coupon_stream_pending{label}"))?;
                (inserted >= 3.0 && lag == 0.0).then_some(body)
            }
        },
    )
    .await;
    assert!(sample(&consumer_text, "coupon_consumer_mysql_write_duration_seconds_count").unwrap() >= 1.0);
    assert!(sample(&consumer_text, "coupon_consumer_batch_size_count").unwrap() >= 1.0);
    assert!(sample(&consumer_text, &format!("coupon_stream_length{label}")).is_some());

    consumer.stop().await;
    app.finish(&env).await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_status_the_api_answers() {
    let (env, app) = spawn::spawn_shared_app().await;
    let (status, doc) = app.client.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = |path: &str, method: &str| -> Vec<u16> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} undocumented"));
        responses.keys().map(|k| k.parse().unwrap()).collect()
    };
    let coupon = app.client.create_open_coupon(1).await;
    let issue = format!("/coupons/{coupon}/issue");
    // Every answer observed here must be documented for its operation.
    let json = Some("application/json");
    let observed = [
        (
            "/coupons/{coupon_id}/issue",
            "post",
            vec![
                app.client.issue(coupon, 1).await.0,
                app.client.issue(coupon, 1).await.0,
                app.client.issue(coupon, 2).await.0,
                app.client.issue(coupon + 99, 2).await.0,
                app.client.raw("POST", &issue, json, b"{".to_vec()).await.0,
                app.client.raw("POST", &issue, None, b"{}".to_vec()).await.0,
                app.client.raw("POST", &issue, json, b"{}".to_vec()).await.0,
                app.client.raw("POST", &issue, json, vec![b' '; 20_000]).await.0,
            ],
        ),
        (
            "/coupons/{coupon_id}",
            "get",
            vec![
                app.client.get(&format!("/coupons/{coupon}")).await.0,
                app.client.get("/coupons/0").await.0,
            ],
        ),
        (
            "/coupons/{coupon_id}/issues/{user_id}",
            "get",
            vec![
                app.client.get(&format!("/coupons/{coupon}/issues/1")).await.0,
                app.client.get(&format!("/coupons/{coupon}/issues/2")).await.0,
            ],
        ),
        (
            "/coupons",
            "post",
            vec![app.client.create_coupon(serde_json::json!({})).await.0],
        ),
        ("/healthz", "get", vec![app.client.get("/healthz").await.0]),
        ("/readyz", "get", vec![app.client.get("/readyz").await.0]),
        ("/metrics", "get", vec![app.client.get("/metrics").await.0]),
    ];
    for (path, method, statuses) in observed {
        let documented = documented(path, method);
        for status in statuses {
            assert!(
                documented.contains(&status),
                "{method} {path} answered {status}, which is not documented"
            );
        }
    }
    for (path, method) in [("/coupons/{coupon_id}/issue", "post"), ("/coupons", "post")] {
        for (code, response) in doc["paths"][path][method]["responses"].as_object().unwrap() {
            if code.starts_with('4') || code.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema,
                    &Value::from("#/components/schemas/ErrorBody"),
                    "{method} {path} {code}"
                );
            }
        }
    }
    app.finish(&env).await;
}
