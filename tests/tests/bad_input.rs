//! Every bad input the contract lists is answered 4xx with the error body and
//! changes nothing; random bytes and random JSON never get a 5xx.

use integration_tests::client::Answer;
use integration_tests::keys;
use integration_tests::spawn::{self, Env, TestApp};
use proptest::prelude::*;
use redis::AsyncCommands;
use serde_json::{json, Value};

async fn state(env: &Env, coupon: i64) -> (i64, i64, i64) {
    let keys = keys(coupon);
    let mut redis = env.redis().await;
    let issued: i64 = redis.scard(&keys.issued).await.unwrap();
    let events: i64 = redis.xlen(&keys.events).await.unwrap();
    let coupons: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons")
        .fetch_one(&env.db().await)
        .await
        .unwrap();
    (issued, events, coupons)
}

fn assert_error(answer: &Answer, statuses: &[u16], code: &str, case: &str) {
    let (status, body) = answer;
    assert!(statuses.contains(status), "{case}: status {status}, body {body}");
    assert_eq!(body["error"].as_str(), Some(code), "{case}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
}

async fn setup() -> (Env, TestApp, i64) {
    let (env, app) = spawn::spawn_shared_app().await;
    let coupon = app.client.create_open_coupon(5).await;
    (env, app, coupon)
}

#[tokio::test]
async fn every_bad_input_the_contract_lists_is_a_4xx_with_no_change_of_state() {
    let (env, app, coupon) = setup().await;
    let before = state(&env, coupon).await;
    let issue = format!("/coupons/{coupon}/issue");
    let json_ct = Some("application/json");
    let big = format!("{{\"user_id\": 1, \"pad\": \"{}\"}}", "x".repeat(17 * 1024));
    // (case, method, path, content type, body, accepted statuses, error code)
    type Case<'a> = (&'a str, &'a str, String, Option<&'a str>, Vec<u8>, &'a [u16], &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "POST",
            issue.clone(),
            json_ct,
            b"{\"user_id\": ".to_vec(),
            &[400],
            "invalid_request",
        ),
        (
            "wrong type",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": "42"}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "float id",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": 4.5}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "missing field",
            "POST",
            issue.clone(),
            json_ct,
            b"{}".to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "zero id",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": 0}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "negative id",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": -3}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "id past BIGINT",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": 9223372036854775808}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "unknown field",
            "POST",
            issue.clone(),
            json_ct,
            br#"{"user_id": 1, "admin": true}"#.to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "no content type",
            "POST",
            issue.clone(),
            None,
            br#"{"user_id": 1}"#.to_vec(),
            &[415],
            "invalid_request",
        ),
        (
            "wrong content type",
            "POST",
            issue.clone(),
            Some("text/plain"),
            br#"{"user_id": 1}"#.to_vec(),
            &[415],
            "invalid_request",
        ),
        (
            "body over 16 KiB",
            "POST",
            issue.clone(),
            json_ct,
            big.into_bytes(),
            &[413],
            "payload_too_large",
        ),
        (
            "coupon id not a number",
            "POST",
            "/coupons/abc/issue".into(),
            json_ct,
            br#"{"user_id": 1}"#.to_vec(),
            &[400],
            "invalid_request",
        ),
        (
            "coupon id zero",
            "POST",
            "/coupons/0/issue".into(),
            json_ct,
            br#"{"user_id": 1}"#.to_vec(),
            &[400],
            "invalid_request",
        ),
        (
            "coupon id past BIGINT",
            "GET",
            "/coupons/9223372036854775808".into(),
            None,
            vec![],
            &[400],
            "invalid_request",
        ),
        (
            "user id not a number",
            "GET",
            format!("/coupons/{coupon}/issues/x1"),
            None,
            vec![],
            &[400],
            "invalid_request",
        ),
        (
            "array body",
            "POST",
            issue.clone(),
            json_ct,
            b"[1]".to_vec(),
            &[422],
            "invalid_request",
        ),
        (
            "unknown route",
            "GET",
            "/nope".into(),
            None,
            vec![],
            &[404],
            "not_found",
        ),
        (
            "wrong method",
            "DELETE",
            issue.clone(),
            None,
            vec![],
            &[405],
            "method_not_allowed",
        ),
    ];
    for (case, method, path, content_type, body, statuses, code) in cases {
        let answer = app.client.raw(method, &path, content_type, body).await;
        assert_error(&answer, statuses, code, case);
    }
    let admin_cases = [
        (
            "name empty",
            json!({"name": "", "total_quantity": 1, "issue_start": "2026-01-01T00:00:00Z", "issue_end": "2027-01-01T00:00:00Z"}),
        ),
        (
            "name too long",
            json!({"name": "n".repeat(201), "total_quantity": 1, "issue_start": "2026-01-01T00:00:00Z", "issue_end": "2027-01-01T00:00:00Z"}),
        ),
        (
            "zero quantity",
            json!({"name": "a", "total_quantity": 0, "issue_start": "2026-01-01T00:00:00Z", "issue_end": "2027-01-01T00:00:00Z"}),
        ),
        (
            "end before start",
            json!({"name": "a", "total_quantity": 1, "issue_start": "2027-01-01T00:00:00Z", "issue_end": "2026-01-01T00:00:00Z"}),
        ),
        (
            "time without offset",
            json!({"name": "a", "total_quantity": 1, "issue_start": "2026-01-01T00:00:00", "issue_end": "2027-01-01T00:00:00Z"}),
        ),
        (
            "unknown field",
            json!({"name": "a", "total_quantity": 1, "issue_start": "2026-01-01T00:00:00Z", "issue_end": "2027-01-01T00:00:00Z", "x": 1}),
        ),
        (
            "missing field",
            json!({"name": "a", "total_quantity": 1, "issue_start": "2026-01-01T00:00:00Z"}),
        ),
    ];
    for (case, body) in admin_cases {
        let answer = app.client.create_coupon(body).await;
        assert_error(&answer, &[422], "invalid_request", case);
    }
    assert_eq!(
        state(&env, coupon).await,
        before,
        "no bad request changed Redis or MySQL"
    );
    app.finish(&env).await;
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::hash_map("(user_id|[a-z]{1,6})", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_random_json_never_get_a_5xx_nor_change_state() {
    let (env, app, coupon) = setup().await;
    let path = format!("/coupons/{coupon}/issue");
    let handle = tokio::runtime::Handle::current();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let inputs = (prop::collection::vec(any::<u8>(), 0..2048), any_json());
    let result = runner.run(&inputs, |(bytes, value)| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let before = state(&env, coupon).await;
                let raw = app.client.raw("POST", &path, Some("application/json"), bytes).await;
                let shaped = app
                    .client
                    .raw(
                        "POST",
                        &path,
                        Some("application/json"),
                        serde_json::to_vec(&value).unwrap(),
                    )
                    .await;
                for (status, body) in [&raw, &shaped] {
                    prop_assert!(*status < 500, "status {} body {}", status, body);
                    prop_assert!(*status == 202 || body["error"].as_str().is_some(), "body {}", body);
                }
                let valid = value.as_object().is_some_and(|o| {
                    o.len() == 1 && o.get("user_id").and_then(Value::as_i64).is_some_and(|id| id >= 1)
                });
                if !valid && raw.0 != 202 {
                    prop_assert_eq!(state(&env, coupon).await, before, "a refused request changed state");
                }
                Ok(())
            })
        })
    });
    result.unwrap();
    app.finish(&env).await;
}

#[tokio::test]
async fn oversized_headers_and_too_many_headers_are_refused_before_the_app() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (env, app, _) = setup().await;
    let addr = app.client.base.trim_start_matches("http://").to_string();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let many = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect::<String>()
    );
    for request in [big, many] {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // The server may answer and close before reading everything.
        let _ = socket.write_all(request.as_bytes()).await;
        let mut answer = vec![0u8; 64];
        let n = socket.read(&mut answer).await.unwrap();
        let head = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    }
    app.finish(&env).await;
}

#[tokio::test]
async fn instants_in_the_years_a_datetime_holds_are_coupons_and_the_others_are_4xx_never_503() {
    let (env, app, _) = setup().await;
    let coupon =
        |start: &str, end: &str| json!({"name": "old", "total_quantity": 1, "issue_start": start, "issue_end": end});
    // Once answered 503: MySQL refused a year-1034 value sent as a TIMESTAMP.
    let (status, body) = app
        .client
        .create_coupon(coupon("1034-06-28T08:54:57Z", "1035-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["issue_start"], "1034-06-28T08:54:57Z");
    let (status, body) = app.client.issue(body["id"].as_i64().unwrap(), 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("issue_period_ended")),
        "{body}"
    );
    for (start, end) in [
        ("1000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
        ("2000-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
        ("0999-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
    ] {
        let (status, body) = app.client.create_coupon(coupon(start, end)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("invalid_request")),
            "{start}..{end}: {body}"
        );
    }
    app.finish(&env).await;
}
