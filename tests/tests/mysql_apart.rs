//! The API without MySQL, and MySQL without DDL at run time: an API instance
//! keeps issuing (and stays ready) while MySQL is down, one started during the
//! outage serves too, and with `RUN_MIGRATIONS=false` the services run as a
//! user with data rights only while `coupon-api migrate` prepares the
//! database apart.

use integration_tests::servers::{PrivateMariaDb, PrivateRedis};
use integration_tests::spawn::{self, Env};
use integration_tests::wait;
use serde_json::Value;
use sqlx::Connection;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issuing_goes_on_while_mysql_is_down_even_on_an_instance_started_during_the_outage() {
    let mut maria = PrivateMariaDb::start().await;
    let redis = PrivateRedis::start().await;
    let env = Env::on(&redis.url(), &maria.url());
    let first = spawn::spawn_app(&env).await;
    let coupon = first.client.create_open_coupon(10).await;
    assert_eq!(first.client.issue(coupon, 1).await.0, 202);

    maria.kill9();
    let (status, body) = first.client.get("/readyz").await;
    assert_eq!(
        (status, &body["redis"], &body["mysql"]),
        (200, &Value::from("ok"), &Value::from("unavailable")),
        "{body}"
    );
    assert_eq!(
        first.client.issue(coupon, 2).await.0,
        202,
        "a running instance keeps issuing"
    );

    // A new instance (a restart, a scale-out) starts and serves without MySQL.
    let second = spawn::start_app(spawn::api_config(&env, Some(spawn::ADMIN_TOKEN))).await;
    let (status, body) = second.client.get("/readyz").await;
    assert_eq!((status, &body["mysql"]), (200, &Value::from("unavailable")), "{body}");
    let (status, body) = second.client.issue(coupon, 3).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = second.client.issue(coupon, 1).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_issued")));
    let text = second
        .client
        .http
        .get(format!("{}/metrics", second.client.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("coupon_api_mysql_up 0"), "{text}");

    // MySQL back: the new instance's pool connects, the consumer writes all three.
    maria.restart().await;
    wait::until(Duration::from_secs(20), "the new instance to reach MySQL", || async {
        (second.client.get("/readyz").await.1["mysql"] == "ok").then_some(())
    })
    .await;
    let consumer = spawn::spawn_consumer(&env, "c").await;
    wait::until(Duration::from_secs(20), "three rows", || async {
        (env.mysql_users(coupon).await.len() == 3).then_some(())
    })
    .await;
    consumer.stop().await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_migrations_apart_the_services_run_as_a_user_without_ddl_rights() {
    let env = Env::shared().await;
    let database = env.database_url.rsplit('/').next().unwrap().to_string();
    // The migration job, with DDL rights.
    integration_tests::binaries::operator_command("coupon-api", &env, &["migrate"]).await;

    // A user with data rights only on that database.
    let user = format!("dml_{}", &database[database.len().saturating_sub(20)..]);
    let mut root = sqlx::MySqlConnection::connect(&integration_tests::mysql_server_url())
        .await
        .unwrap();
    for statement in [
        format!("CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY 'pw'"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO '{user}'@'%'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut root)
            .await
            .unwrap();
    }
    let dml_url = env.database_url.replacen("root@", &format!("{user}:pw@"), 1);
    let mut dml = env.clone();
    dml.database_url = dml_url;

    // Without RUN_MIGRATIONS=false that user could not even start a consumer ...
    let mut config = spawn::consumer_config(&dml, "c");
    config.common.database.run_migrations = true;
    assert!(
        consumer::build(&config).await.is_err(),
        "CREATE DATABASE needs rights it has not"
    );
    // ... with it, both services run and a sale ends in MySQL.
    let mut api_config = spawn::api_config(&dml, Some(spawn::ADMIN_TOKEN));
    api_config.common.database.run_migrations = false;
    let app = spawn::start_app(api_config).await;
    config.common.database.run_migrations = false;
    let consumer = spawn::spawn_consumer_with(config).await;
    let coupon = app.client.create_open_coupon(5).await;
    for user in 1..=3 {
        assert_eq!(app.client.issue(coupon, user).await.0, 202);
    }
    wait::until(Duration::from_secs(20), "three rows", || async {
        (env.mysql_users(coupon).await.len() == 3).then_some(())
    })
    .await;
    consumer.stop().await;
    app.stop().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP USER '{user}'@'%'")))
        .execute(&mut root)
        .await
        .unwrap();
    env.cleanup().await;
}
