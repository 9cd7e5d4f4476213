//! Who is asking, and how often: with a key configured the issue and status
//! endpoints take the user from a verified JWT (HS256, ES256 from a PEM, a JWKS
//! by `kid`) and refuse every bad token 401 without touching Redis; a token
//! may act only for its own user (403); a user or client over its rate is
//! refused 429 with `Retry-After`, and `X-Forwarded-For` counts only from a
//! trusted proxy. All against the real servers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use coupon_bench::tokens::Minter;
use integration_tests::binaries::SecretDir;
use integration_tests::client::{Reply, UserRequest};
use integration_tests::pki::SigningKey;
use integration_tests::spawn::{self, Env, TestApp};
use integration_tests::{checks, scrape, wait};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "a-test-secret-of-thirty-two-bytes!!";
const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "coupon-rush";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn app_with(env: &Env, change: impl FnOnce(&mut api::ApiConfig)) -> TestApp {
    let mut config = spawn::api_config(env, Some(spawn::ADMIN_TOKEN));
    change(&mut config);
    spawn::spawn_app_with(config).await
}

/// An API verifying HS256 tokens of [`ISSUER`] for [`AUDIENCE`].
async fn hs256_app(env: &Env) -> TestApp {
    app_with(env, |config| {
        config.identity.auth_jwt_secret = Some(SECRET.into());
        config.identity.auth_jwt_issuer = Some(ISSUER.into());
        config.identity.auth_jwt_audience = Some(AUDIENCE.into());
    })
    .await
}

fn hs256() -> Minter {
    Minter::hmac(SECRET.as_bytes())
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
}

async fn issue(app: &TestApp, coupon: i64, token: Option<&str>, body: Option<Value>) -> Reply {
    let request = UserRequest {
        token,
        body,
        ..Default::default()
    };
    app.client.issue_with(coupon, request).await
}

async fn accepted_in_redis(env: &Env, coupon: i64) -> i64 {
    env.redis()
        .await
        .scard(integration_tests::keys(coupon).issued)
        .await
        .unwrap()
}

/// A token with `alg: none` and no signature.
fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_token_is_refused_401_with_a_bearer_challenge_and_changes_nothing() {
    let env = Env::shared().await;
    let app = hs256_app(&env).await;
    let coupon = app.client.create_open_coupon(10).await;
    let good = hs256();
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.claims(7);
        change(&mut claims);
        claims
    };
    let es256 = Minter::from_pem(SigningKey::es256().private_pem.as_bytes()).unwrap();
    let other_secret = Minter::hmac(b"another-secret-another-secret-!!")
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE);
    let valid = good.token(7).unwrap();
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims(&|c| c["sub"] = json!("8")).to_string());
        parts.join(".")
    };
    let signed = |change: &dyn Fn(&mut Value)| Some(good.sign(&claims(change)).unwrap());
    let without = |claim: &'static str| {
        signed(&move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(claim);
        })
    };
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a JWT", Some("not-a-jwt".into())),
        ("three dots of garbage", Some("a.b.c".into())),
        ("signed with another secret", Some(other_secret.token(7).unwrap())),
        ("its payload changed after signing", Some(tampered)),
        ("expired past the leeway", signed(&|c| c["exp"] = json!(now() - 120))),
        (
            "not valid before a minute from now",
            signed(&|c| c["nbf"] = json!(now() + 120)),
        ),
        ("no exp", without("exp")),
        ("another issuer", signed(&|c| c["iss"] = json!("https://evil.test"))),
        ("no issuer", without("iss")),
        ("another audience", signed(&|c| c["aud"] = json!("someone-else"))),
        ("no audience", without("aud")),
        ("alg none", Some(unsigned(&claims(&|_| {})))),
        (
            "ES256 where the key is an HMAC secret",
            Some(es256.sign(&claims(&|_| {})).unwrap()),
        ),
        ("sub not a number", signed(&|c| c["sub"] = json!("alice"))),
        ("sub 0", signed(&|c| c["sub"] = json!("0"))),
        ("sub negative", signed(&|c| c["sub"] = json!("-5"))),
        ("sub past BIGINT", signed(&|c| c["sub"] = json!("9223372036854775808"))),
        ("sub with a fraction", signed(&|c| c["sub"] = json!("7.0"))),
        ("sub a JSON number", signed(&|c| c["sub"] = json!(7))),
        ("no sub", without("sub")),
    ];
    for (what, token) in &bad {
        for body in [None, Some(json!({})), Some(json!({ "user_id": 7 }))] {
            let reply = issue(&app, coupon, token.as_deref(), body.clone()).await;
            assert_eq!(
                (reply.status, reply.code()),
                (401, "unauthorized"),
                "{what} {body:?}: {}",
                reply.body
            );
            assert_eq!(
                reply.header("www-authenticate"),
                Some(r#"Bearer error="invalid_token""#),
                "{what}"
            );
        }
        let status = app.client.status_with(coupon, 7, token.as_deref()).await;
        assert_eq!(status.status, 401, "{what}: status {}", status.body);
    }
    assert_eq!(accepted_in_redis(&env, coupon).await, 0, "no bad token reached Redis");
    let (_, coupon_now) = app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(coupon_now["issued_quantity"], 0);
    // The same user with a good token, after all that, is the first accepted.
    let reply = issue(&app, coupon, Some(&valid), None).await;
    assert_eq!(
        (reply.status, reply.body["position"].as_i64()),
        (202, Some(1)),
        "{}",
        reply.body
    );
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_issues_to_its_own_user_with_or_without_a_body_and_may_read_only_its_own_status() {
    let env = Env::shared().await;
    let app = hs256_app(&env).await;
    let coupon = app.client.create_open_coupon(10).await;
    let minter = hs256();
    let (alice, bob, carol) = (101, 102, 103);
    let token = |user| minter.token(user).unwrap();

    let reply = issue(&app, coupon, Some(&token(alice)), None).await;
    assert_eq!(
        (reply.status, reply.body["user_id"].as_i64()),
        (202, Some(alice)),
        "no body: {}",
        reply.body
    );
    let reply = issue(&app, coupon, Some(&token(bob)), Some(json!({}))).await;
    assert_eq!(
        (reply.status, reply.body["user_id"].as_i64()),
        (202, Some(bob)),
        "{{}}: {}",
        reply.body
    );
    let reply = issue(&app, coupon, Some(&token(carol)), Some(json!({ "user_id": carol }))).await;
    assert_eq!(reply.status, 202, "its own id: {}", reply.body);
    let reply = issue(&app, coupon, Some(&token(alice)), Some(json!({ "user_id": 999 }))).await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, "forbidden"),
        "another user's id: {}",
        reply.body
    );
    let reply = issue(&app, coupon, Some(&token(alice)), None).await;
    assert_eq!((reply.status, reply.code()), (409, "already_issued"));
    assert_eq!(accepted_in_redis(&env, coupon).await, 3, "999 was never added");

    let own = app.client.status_with(coupon, alice, Some(&token(alice))).await;
    assert_eq!(own.status, 200, "{}", own.body);
    let other = app.client.status_with(coupon, bob, Some(&token(alice))).await;
    assert_eq!((other.status, other.code()), (403, "forbidden"), "{}", other.body);
    let none = app.client.status_with(coupon, alice, None).await;
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_verified_before_is_refused_once_its_exp_passes() {
    let env = Env::shared().await;
    let app = app_with(&env, |config| {
        config.identity.auth_jwt_secret = Some(SECRET.into());
        config.identity.auth_jwt_leeway_s = 0;
    })
    .await;
    let coupon = app.client.create_open_coupon(10).await;
    let mut minter = Minter::hmac(SECRET.as_bytes());
    minter.lifetime = Duration::from_secs(2);
    let token = minter.token(77).unwrap();
    assert_eq!(issue(&app, coupon, Some(&token), None).await.status, 202);
    assert_eq!(issue(&app, coupon, Some(&token), None).await.code(), "already_issued");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = issue(&app, coupon, Some(&token), None).await;
    assert_eq!((late.status, late.code()), (401, "unauthorized"), "{}", late.body);
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn es256_and_eddsa_public_keys_verify_their_tokens_and_refuse_an_hmac_signed_with_the_public_key() {
    let env = Env::shared().await;
    let secrets = SecretDir::new();
    for key in [SigningKey::es256(), SigningKey::ed25519()] {
        let public = secrets.write("public.pem", &key.public_pem);
        let app = app_with(&env, |config| config.identity.auth_jwt_public_key_file = Some(public)).await;
        let coupon = app.client.create_open_coupon(10).await;
        let minter = Minter::from_pem(key.private_pem.as_bytes()).unwrap();
        let reply = issue(&app, coupon, Some(&minter.token(5).unwrap()), None).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        // The classic confusion: the public key, known to all, used as an HMAC secret.
        let confused = Minter::hmac(key.public_pem.as_bytes()).token(6).unwrap();
        let reply = issue(&app, coupon, Some(&confused), None).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(accepted_in_redis(&env, coupon).await, 1);
        app.stop().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_jwks_picks_each_tokens_key_by_kid() {
    let env = Env::shared().await;
    let (first, second) = (SigningKey::es256(), SigningKey::es256());
    let jwk = |key: &SigningKey, kid: &str| {
        let encoding = EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    };
    let set = JwkSet {
        keys: vec![jwk(&first, "2026-a"), jwk(&second, "2026-b")],
    };
    let secrets = SecretDir::new();
    let path = secrets.write("jwks.json", &serde_json::to_string(&set).unwrap());
    let app = app_with(&env, |config| config.identity.auth_jwks_file = Some(path)).await;
    let coupon = app.client.create_open_coupon(10).await;
    let signer = |key: &SigningKey| Minter::from_pem(key.private_pem.as_bytes()).unwrap();

    let by_a = signer(&first).with_kid("2026-a").token(1).unwrap();
    let by_b = signer(&second).with_kid("2026-b").token(2).unwrap();
    assert_eq!(issue(&app, coupon, Some(&by_a), None).await.status, 202);
    assert_eq!(issue(&app, coupon, Some(&by_b), None).await.status, 202);
    for (what, token) in [
        (
            "a kid the set lacks",
            signer(&first).with_kid("2025-z").token(3).unwrap(),
        ),
        ("no kid in a set of two", signer(&first).token(3).unwrap()),
        (
            "signed by a, named b",
            signer(&first).with_kid("2026-b").token(3).unwrap(),
        ),
    ] {
        let reply = issue(&app, coupon, Some(&token), None).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    }
    assert_eq!(accepted_in_redis(&env, coupon).await, 2);
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_can_not_be_read_stops_the_start() {
    let env = Env::shared().await;
    let secrets = SecretDir::new();
    let mut config = spawn::api_config(&env, None);
    config.identity.auth_jwt_public_key_file = Some(secrets.write("public.pem", "not a key"));
    let refused = api::Application::build(&config).await;
    assert!(
        matches!(&refused, Err(err) if err.to_string().contains("no RSA, EC")),
        "a bad PEM"
    );
    config.identity.auth_jwt_secret = Some(SECRET.into());
    assert!(api::Application::build(&config).await.is_err(), "two key sources");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_over_the_limit_gets_429_with_retry_after_and_keeps_the_coupon() {
    let env = Env::shared().await;
    let app = app_with(&env, |config| {
        config.limits.rate_limit_user_per_s = 1.0;
        config.limits.rate_limit_user_burst = 2;
    })
    .await;
    let coupon = app.client.create_open_coupon(10).await;
    assert_eq!(app.client.issue(coupon, 42).await.0, 202);
    assert_eq!(app.client.issue(coupon, 42).await.1["error"], "already_issued");
    let limited = issue(&app, coupon, None, Some(json!({ "user_id": 42 }))).await;
    assert_eq!(
        (limited.status, limited.code()),
        (429, "rate_limited"),
        "{}",
        limited.body
    );
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(app.client.issue(coupon, 43).await.0, 202, "another user is not limited");
    let other_coupon = app.client.create_open_coupon(10).await;
    assert_eq!(
        app.client.issue(other_coupon, 42).await.0,
        202,
        "nor the user for another coupon"
    );

    let (status, body) = app.client.get(&format!("/coupons/{coupon}/issues/42")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "the acceptance stays"
    );
    assert_eq!(accepted_in_redis(&env, coupon).await, 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.client.issue(coupon, 42).await.1["error"],
        "already_issued",
        "after Retry-After"
    );
    let metrics = app
        .client
        .http
        .get(format!("{}/metrics", app.client.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert_eq!(
        scrape::sample(&metrics, r#"coupon_api_rate_limited_total{scope="user"}"#),
        Some(1.0)
    );
    app.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_for_names_the_client_only_when_a_trusted_proxy_says_so() {
    let env = Env::shared().await;
    let limit = |config: &mut api::ApiConfig| {
        config.limits.rate_limit_ip_per_s = 1.0;
        config.limits.rate_limit_ip_burst = Some(2);
    };
    let from = |addr: &str| vec![("x-forwarded-for", addr.to_string())];
    let ask = |app: &TestApp, coupon: i64, user: i64, forwarded: &str| {
        let request = UserRequest {
            body: Some(json!({ "user_id": user })),
            headers: from(forwarded),
            ..Default::default()
        };
        let client = app.client.clone();
        async move { client.issue_with(coupon, request).await.status }
    };

    // The test connects from 127.0.0.1, which is not trusted here: every
    // request is 127.0.0.1's whatever it claims.
    let untrusted = app_with(&env, limit).await;
    let coupon = untrusted.client.create_open_coupon(100).await;
    let statuses = [
        ask(&untrusted, coupon, 1, "203.0.113.1").await,
        ask(&untrusted, coupon, 2, "203.0.113.2").await,
        ask(&untrusted, coupon, 3, "203.0.113.3").await,
    ];
    assert_eq!(statuses, [202, 202, 429]);
    untrusted.stop().await;

    let trusted = app_with(&env, |config| {
        limit(config);
        config.limits.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let statuses = [
        ask(&trusted, coupon, 11, "203.0.113.1").await,
        ask(&trusted, coupon, 12, "203.0.113.2").await,
        ask(&trusted, coupon, 13, "203.0.113.3").await,
        ask(&trusted, coupon, 14, "203.0.113.4, 127.0.0.1").await,
    ];
    assert_eq!(
        statuses,
        [202, 202, 202, 202],
        "each forwarded client has its own budget"
    );
    let statuses = [
        ask(&trusted, coupon, 21, "198.51.100.9").await,
        ask(&trusted, coupon, 22, "198.51.100.9").await,
        ask(&trusted, coupon, 23, "6.6.6.6, 198.51.100.9").await,
    ];
    assert_eq!(
        statuses,
        [202, 202, 429],
        "one client behind the proxy, whatever it prepends"
    );
    trusted.finish(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_with_tokens_is_exact_in_mysql() {
    let env = Env::shared().await;
    let app = hs256_app(&env).await;
    let consumer = spawn::spawn_consumer(&env, "identity-sale").await;
    let quantity = 50;
    let coupon = app.client.create_open_coupon(quantity).await;
    let minter = hs256();
    let users: Vec<i64> = (1..=300).map(|n| 7_000_000 + n).collect();
    let requests = users.iter().map(|&user| {
        let token = minter.token(user).unwrap();
        let client = app.client.clone();
        async move {
            let request = UserRequest {
                token: Some(&token),
                ..Default::default()
            };
            (user, client.issue_with(coupon, request).await)
        }
    });
    let replies = futures::future::join_all(requests).await;
    let accepted: Vec<(i64, i64)> = replies
        .iter()
        .filter(|(_, reply)| reply.status == 202)
        .map(|(user, reply)| (*user, reply.body["position"].as_i64().unwrap()))
        .collect();
    for (_, reply) in &replies {
        assert!(reply.status == 202 || reply.code() == "sold_out", "{}", reply.body);
    }
    let accepted = checks::assert_sold_out(coupon, &accepted, quantity);
    let rows = wait::until(Duration::from_secs(30), "every acceptance in MySQL", || async {
        let rows = env.mysql_users(coupon).await;
        (rows.len() == accepted.len()).then_some(rows)
    })
    .await;
    checks::assert_rows_match(&rows, &accepted, &HashSet::new());
    consumer.stop().await;
    app.finish(&env).await;
}
