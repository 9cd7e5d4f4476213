//! TLS and secrets (operating a sale in production): the binaries reach a Redis
//! (standalone or cluster) that speaks only TLS and a MariaDB that requires it,
//! with certificates the test makes; an untrusted certificate and a server
//! without TLS are refused at start, fast, never answered with plaintext.
//! Every secret can come from a file (`*_FILE`), both ways at once is a
//! start-up error, and `--help` shows no secret's value.

use integration_tests::binaries::{run_to_exit, ApiProcess, ConsumerOptions, ConsumerProcess, SecretDir};
use integration_tests::cluster::PrivateCluster;
use integration_tests::pki::TestPki;
use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env};
use integration_tests::wait;
use shared::config::RedisTlsConfig;
use sqlx::Connection;
use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// A start-up that fails must do so well before the 30 s the binaries wait for
/// a server that is merely not up yet: a certificate does not get better.
const FAILS_WITHIN: Duration = Duration::from_secs(10);

/// The most a process may run before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(40);

fn trusting(ca: &Path) -> RedisTlsConfig {
    RedisTlsConfig {
        redis_ca_file: Some(ca.to_path_buf()),
        ..RedisTlsConfig::default()
    }
}

/// A database URL on `server` (no database) asking for `ssl_mode` with `ca`.
fn tls_database_url(server: &str, ssl_mode: &str, ca: &Path) -> String {
    format!(
        "{server}/{}?ssl-mode={ssl_mode}&ssl-ca={}",
        integration_tests::unique_database(),
        ca.display()
    )
}

/// Accepts `user` for a new coupon through `client` and waits for its row.
async fn issue_reaches_mysql(client: &integration_tests::client::Client, env: &Env, user: i64) {
    let coupon = client.create_open_coupon(5).await;
    let (status, body) = client.issue(coupon, user).await;
    assert_eq!(status, 202, "{body}");
    wait::until(Duration::from_secs(30), "the issue's row in MySQL", || async {
        (env.mysql_users(coupon).await == HashSet::from([user])).then_some(())
    })
    .await;
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `binary` to a start-up failure, which must come within [`FAILS_WITHIN`];
/// returns what it wrote to stderr.
async fn start_fails(binary: &str, env: &Env, extra_env: &[(&str, &str)]) -> String {
    let extra: Vec<(&str, &str)> = [("LISTEN_ADDR", "127.0.0.1:0"), ("METRICS_ADDR", "127.0.0.1:0")]
        .into_iter()
        .chain(extra_env.iter().copied())
        .collect();
    let (output, took) = run_to_exit(binary, env, &[], &extra, RUN_LIMIT).await;
    let text = stderr(&output);
    assert!(!output.status.success(), "{binary} started:\n{text}");
    assert!(took < FAILS_WITHIN, "{binary} took {took:?} to give up:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_issue_goes_through_redis_over_tls_and_mysql_with_verify_ca() {
    let pki = TestPki::new();
    let redis = PrivateRedis::start_tls(&pki.server()).await;
    let maria = PrivateMariaDb::start_tls(&pki.server()).await;
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let mut env = Env::on(&redis.url(), &maria.url());
    env.redis_tls = trusting(&pki.ca());
    env.database_url = tls_database_url(&maria.url(), "VERIFY_CA", &pki.ca());

    let app = spawn::spawn_app(&env).await;
    let consumer = spawn::spawn_consumer(&env, "tls-1").await;
    issue_reaches_mysql(&app.client, &env, 42).await;

    // The server refuses anything but TLS, and with VERIFY_IDENTITY the
    // certificate's name (127.0.0.1) is checked too.
    let identity = env.database_url.replace("VERIFY_CA", "VERIFY_IDENTITY");
    let mut conn = sqlx::MySqlConnection::connect(&identity)
        .await
        .expect("VERIFY_IDENTITY");
    let (_, cipher): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_one(&mut conn)
        .await
        .expect("reading Ssl_cipher");
    assert!(!cipher.is_empty(), "the session is not encrypted");
    let plain = format!("{}/mysql?ssl-mode=DISABLED", maria.url());
    let refused = sqlx::MySqlConnection::connect(&plain).await;
    assert!(refused.is_err(), "require_secure_transport let a plain connection in");

    consumer.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_certificate_from_another_ca_is_refused_at_start() {
    let pki = TestPki::new();
    let redis = PrivateRedis::start_tls(&pki.server()).await;
    let mut env = Env::on(&redis.url(), &integration_tests::mysql_server_url());

    // With no CA file, the system's roots are trusted, and they did not issue it either.
    for (ca, label) in [(Some(pki.wrong_ca()), "the wrong CA"), (None, "the system roots")] {
        env.redis_tls = RedisTlsConfig {
            redis_ca_file: ca,
            ..RedisTlsConfig::default()
        };
        for binary in ["coupon-api", "coupon-consumer"] {
            let text = start_fails(binary, &env, &[]).await;
            assert!(text.contains("TLS with Redis failed"), "{binary}, {label}:\n{text}");
            assert!(text.contains("UnknownIssuer"), "{binary}, {label}:\n{text}");
        }
    }
    // In process too: the typed error, not a hang.
    env.redis_tls = trusting(&pki.wrong_ca());
    let config = spawn::api_config(&env, None);
    let started = tokio::time::Instant::now();
    let built = tokio::time::timeout(RUN_LIMIT, api::Application::build(&config))
        .await
        .expect("a bounded start-up");
    assert!(
        matches!(
            built,
            Err(shared::startup::StartError::RedisConnect(
                shared::redis_conn::RedisConnectError::Tls(_)
            ))
        ),
        "{:?}",
        built.err()
    );
    assert!(started.elapsed() < FAILS_WITHIN, "{:?}", started.elapsed());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mysql_certificate_from_another_ca_is_refused_at_start() {
    let pki = TestPki::new();
    let maria = PrivateMariaDb::start_tls(&pki.server()).await;
    // MySQL is connected to first: Redis is never reached.
    let mut env = Env::on("redis://127.0.0.1:1", &maria.url());
    for mode in ["VERIFY_CA", "VERIFY_IDENTITY"] {
        env.database_url = tls_database_url(&maria.url(), mode, &pki.wrong_ca());
        for binary in ["coupon-api", "coupon-consumer"] {
            let text = start_fails(binary, &env, &[]).await;
            assert!(text.contains("TLS with MySQL failed"), "{binary}, {mode}:\n{text}");
            assert!(text.contains("UnknownIssuer"), "{binary}, {mode}:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssl_mode_required_on_a_server_without_tls_fails_instead_of_falling_back() {
    let pki = TestPki::new();
    let plain = PrivateMariaDb::start().await;
    let mut env = Env::on("redis://127.0.0.1:1", &plain.url());
    env.database_url = tls_database_url(&plain.url(), "REQUIRED", &pki.ca());
    let database = env
        .database_url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .unwrap()
        .to_string();
    for binary in ["coupon-api", "coupon-consumer"] {
        let text = start_fails(binary, &env, &[]).await;
        assert!(text.contains("TLS with MySQL failed"), "{binary}:\n{text}");
        assert!(text.contains("server does not support TLS"), "{binary}:\n{text}");
    }
    // Nothing was done in plaintext: the database the binaries create first is not there.
    let mut conn = sqlx::MySqlConnection::connect(&plain.url())
        .await
        .expect("the plain server");
    let found: Option<String> =
        sqlx::query_scalar("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
            .bind(&database)
            .fetch_optional(&mut conn)
            .await
            .expect("listing databases");
    assert_eq!(found, None, "the binaries talked to MySQL in plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_over_tls_accepts_an_issue_with_its_seeds_from_a_file() {
    let pki = TestPki::new();
    let cluster = PrivateCluster::start_tls(&pki.server()).await;
    assert!(
        cluster.seeds().iter().all(|s| s.starts_with("rediss://")),
        "{:?}",
        cluster.seeds()
    );
    let mut env = Env::on_cluster(&cluster.seeds(), &integration_tests::mysql_server_url());
    env.redis_tls = trusting(&pki.ca());
    env.secret_files = Some(SecretDir::new());

    let api = ApiProcess::spawn(&env).await;
    let consumer = ConsumerProcess::spawn(&env, "tls-cluster-1", &ConsumerOptions::default());
    issue_reaches_mysql(&api.client, &env, 7).await;
    let log = api.log();
    assert!(
        log.contains("cluster(rediss://"),
        "the start-up line names the cluster:\n{log}"
    );
    drop(consumer);
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_secret_can_come_from_a_file() {
    let mut env = Env::shared().await;
    let dir = SecretDir::new();
    env.secret_files = Some(dir.clone());

    // ADMIN_TOKEN_FILE, REDIS_URL_FILE, DATABASE_URL_FILE: the API creates a
    // coupon with the token of the file (its newline dropped), the consumer
    // writes the row. (REDIS_CLUSTER_URLS_FILE: the cluster test above.)
    let api = ApiProcess::spawn(&env).await;
    let consumer = ConsumerProcess::spawn(&env, "files-1", &ConsumerOptions::default());
    issue_reaches_mysql(&api.client, &env, 9).await;
    // The files' values, not the defaults (the machine's Redis and `coupon` database).
    let log = api.log();
    assert!(log.contains(&format!("redis_url={} ", env.redis_url)), "{log}");
    assert!(log.contains(&format!("database_url={} ", env.database_url)), "{log}");
    assert!(log.contains("admin_token=set"), "{log}");
    drop(consumer);
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_given_both_as_a_variable_and_as_a_file_is_a_start_up_error() {
    // No server is reached: the configuration is refused first.
    let env = Env::on("redis://127.0.0.1:1", "mysql://root@127.0.0.1:1");
    let dir = SecretDir::new();
    let cases = [
        ("coupon-api", "ADMIN_TOKEN", "a-token"),
        ("coupon-api", "REDIS_URL", "redis://127.0.0.1:2"),
        ("coupon-api", "DATABASE_URL", "mysql://root@127.0.0.1:2/coupon"),
        ("coupon-consumer", "REDIS_URL", "redis://127.0.0.1:2"),
        (
            "coupon-consumer",
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:2,redis://127.0.0.1:3",
        ),
        ("coupon-consumer", "DATABASE_URL", "mysql://root@127.0.0.1:2/coupon"),
    ];
    for (binary, name, value) in cases {
        let file = dir.write(name, value);
        let file_variable = format!("{name}_FILE");
        let file = file.to_string_lossy();
        let extra = [(name, value), (file_variable.as_str(), file.as_ref())];
        let text = start_fails(binary, &env, &extra).await;
        let expected = format!("{name} and {name}_FILE are both set: set only one of them");
        assert!(text.contains(&expected), "{binary}, {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_shows_no_secret_value_even_when_the_variables_are_set() {
    let env = Env::on(
        "redis://:redis-password-123@127.0.0.1:6379",
        "mysql://root:db-password-456@127.0.0.1:3306",
    );
    let extra = [
        ("ADMIN_TOKEN", "admin-token-789"),
        ("REDIS_CLUSTER_URLS", "redis://:cluster-password-012@10.0.0.1:6379"),
    ];
    let secrets = [
        "redis-password-123",
        "db-password-456",
        "admin-token-789",
        "cluster-password-012",
    ];
    for binary in ["coupon-api", "coupon-consumer"] {
        let (output, _) = run_to_exit(binary, &env, &["--help"], &extra, RUN_LIMIT).await;
        assert!(output.status.success(), "{binary} --help: {}", stderr(&output));
        let help = String::from_utf8_lossy(&output.stdout);
        for wanted in [
            "REDIS_URL",
            "REDIS_URL_FILE",
            "DATABASE_URL_FILE",
            "REDIS_CLUSTER_URLS_FILE",
            "REDIS_CA_FILE",
        ] {
            assert!(help.contains(wanted), "{binary} --help lacks {wanted}:\n{help}");
        }
        if binary == "coupon-api" {
            assert!(help.contains("ADMIN_TOKEN_FILE"), "{help}");
        }
        for secret in secrets {
            assert!(!help.contains(secret), "{binary} --help shows {secret}:\n{help}");
            assert!(!stderr(&output).contains(secret), "{binary} --help");
        }
    }
}
