//! Scale-out (issue #6): two APIs and three consumers on a private Redis Cluster
//! (three masters, one replica), several coupons, the same guarantees; a
//! master failing over to its replica in the middle of a sale; durable
//! acceptance, each coupon confirmed by its own master's replicas; and the
//! status notes that wake long-polls, heard on every node.

use futures::stream::{self, StreamExt};
use integration_tests::checks::assert_sold_out;
use integration_tests::client::Client;
use integration_tests::cluster::PrivateCluster;
use integration_tests::spawn::{self, Env};
use integration_tests::{keys, CONSUMER_GROUP};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Every (coupon, user) request, spread over the APIs round robin; returns the
/// accepted (coupon, user, position) and the other answers' status codes.
async fn sale(apis: &[Client], requests: Vec<(i64, i64)>, in_flight: usize) -> (Vec<(i64, i64, i64)>, Vec<u16>) {
    let answers: Vec<(i64, i64, u16, serde_json::Value)> = stream::iter(requests.into_iter().enumerate())
        .map(|(i, (coupon, user))| {
            let api = apis[i % apis.len()].clone();
            async move {
                let (status, body) = api.issue(coupon, user).await;
                (coupon, user, status, body)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut accepted = Vec::new();
    let mut others = Vec::new();
    for (coupon, user, status, body) in answers {
        if status == 202 {
            accepted.push((coupon, user, body["position"].as_i64().unwrap()));
        } else {
            others.push(status);
        }
    }
    (accepted, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apis_and_three_consumers_on_a_cluster_keep_every_guarantee_for_several_coupons() {
    let cluster = PrivateCluster::start().await;
    let env = Env::on_cluster(&cluster.seeds(), &integration_tests::mysql_server_url());
    let (a, b) = (spawn::spawn_app(&env).await, spawn::spawn_app(&env).await);
    let consumers = [
        spawn::spawn_consumer(&env, "k1").await,
        spawn::spawn_consumer(&env, "k2").await,
        spawn::spawn_consumer(&env, "k3").await,
    ];
    let quantity = 50;
    let mut coupons = Vec::new();
    for _ in 0..4 {
        let coupon = a.client.create_open_coupon(quantity).await;
        // Created on one instance, visible on the other at once.
        let (status, view) = b.client.get(&format!("/coupons/{coupon}")).await;
        assert_eq!((status, view["remaining"].as_i64()), (200, Some(quantity)), "{view}");
        coupons.push(coupon);
    }
    let requests: Vec<(i64, i64)> = (0..2)
        .flat_map(|_| (1..=150i64).flat_map(|user| coupons.iter().map(move |&c| (c, user))))
        .collect();
    let (accepted, others) = sale(&[a.client.clone(), b.client.clone()], requests, 128).await;
    assert!(
        others.iter().all(|s| *s == 409),
        "only 409s besides the 202s: {others:?}"
    );

    for &coupon in &coupons {
        // Exactly the quantity accepted across both APIs.
        let mine: Vec<(i64, i64)> = accepted
            .iter()
            .filter(|(c, _, _)| *c == coupon)
            .map(|(_, u, p)| (*u, *p))
            .collect();
        let users = assert_sold_out(coupon, &mine, quantity);
        env.until_written(coupon, &users).await;
        // Each API answers "did I get it?" from the cluster.
        let user = *users.iter().next().unwrap();
        for api in [&a, &b] {
            let (status, body) = api.client.status(coupon, user, Some("10")).await;
            assert_eq!((status, body["status"].as_str()), (200, Some("issued")), "{body}");
        }
    }
    // Which consumers took entries, per stream (XINFO routed to the stream's node).
    let mut redis = shared::redis_conn::connect(&env.redis_config(), Duration::from_secs(2))
        .await
        .unwrap();
    let mut per_consumer: HashMap<String, usize> = HashMap::new();
    for &coupon in &coupons {
        let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(keys(coupon).events)
            .arg(CONSUMER_GROUP)
            .query_async(&mut redis)
            .await
            .unwrap();
        for consumer in info.consumers {
            *per_consumer.entry(consumer.name).or_default() += 1;
        }
    }
    assert!(per_consumer.len() >= 2, "the work was shared: {per_consumer:?}");
    for consumer in consumers {
        assert!(consumer.is_running());
        consumer.stop().await;
    }
    a.stop().await;
    b.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failing_over_to_its_replica_mid_sale_loses_nothing_accepted() {
    let cluster = PrivateCluster::start().await;
    let env = Env::on_cluster(&cluster.seeds(), &integration_tests::mysql_server_url());
    let app = spawn::spawn_app(&env).await;
    let consumers = [
        spawn::spawn_consumer(&env, "f1").await,
        spawn::spawn_consumer(&env, "f2").await,
    ];
    // A coupon whose keys live on the master that has a replica.
    let mut coupon = 0;
    for _ in 0..30 {
        let candidate = app.client.create_open_coupon(3500).await;
        if cluster.on_first_master(&keys(candidate).events) {
            coupon = candidate;
            break;
        }
    }
    assert!(coupon > 0, "no coupon landed on the first master in 30 tries");

    let client = app.client.clone();
    let first_wave = tokio::spawn(async move { sale(&[client], (1..=3000).map(|u| (coupon, u)).collect(), 8).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.fail_over_first_master().await;
    assert!(!first_wave.is_finished(), "the fail-over happened during the sale");
    let (mut accepted, mut others) = first_wave.await.unwrap();
    let (more, rest) = sale(
        std::slice::from_ref(&app.client),
        (2500..=4000).map(|u| (coupon, u)).collect(),
        16,
    )
    .await;
    accepted.extend(more);
    others.extend(rest);
    assert!(
        others.iter().all(|s| *s == 409 || *s == 503),
        "only 409 or 503 (during the fail-over): {others:?}"
    );

    let users: HashSet<i64> = accepted.iter().map(|(_, u, _)| *u).collect();
    assert_eq!(
        users.len(),
        accepted.len(),
        "nobody accepted twice across the fail-over"
    );
    assert!(accepted.len() <= 3500);
    env.until_written(coupon, &users).await;
    assert_eq!(
        env.ledger(coupon).await.issued_quantity,
        Some(users.len() as i64),
        "every accepted request is one row, and nothing else"
    );
    for consumer in consumers {
        assert!(consumer.is_running());
        consumer.stop().await;
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_wait_replicas_each_coupon_is_confirmed_by_the_replica_of_its_own_master() {
    let cluster = PrivateCluster::start().await;
    let env = Env::on_cluster(&cluster.seeds(), &integration_tests::mysql_server_url());
    let mut config = spawn::api_config(&env, Some(spawn::ADMIN_TOKEN));
    config.redis_wait_replicas = 1;
    config.redis_wait_timeout_ms = 300;
    let app = spawn::spawn_app_with(config).await;
    // One coupon on the master that has a replica, one on a master without.
    let (mut replicated, mut alone) = (None, None);
    for _ in 0..40 {
        let coupon = app.client.create_open_coupon(10).await;
        if cluster.on_first_master(&keys(coupon).issued) {
            replicated.get_or_insert(coupon);
        } else {
            alone.get_or_insert(coupon);
        }
        if replicated.is_some() && alone.is_some() {
            break;
        }
    }
    let replicated = replicated.expect("a coupon on the first master in 40 tries");
    let alone = alone.expect("a coupon on another master in 40 tries");

    // WAIT went to the coupon's master with its script call: had it gone to
    // another node, the first answer would be 503 or the second 202.
    let (status, body) = app.client.issue(replicated, 1).await;
    assert_eq!(status, 202, "its master's replica confirmed it: {body}");
    let (status, body) = app.client.issue(alone, 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("unavailable")),
        "no replica of its master can confirm it: {body}"
    );
    let (status, body) = app.client.issue(alone, 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_issued")),
        "what the master wrote stays: {body}"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_consumers_status_note_is_heard_on_every_node_and_wakes_a_long_poll() {
    let cluster = PrivateCluster::start().await;
    let env = Env::on_cluster(&cluster.seeds(), &integration_tests::mysql_server_url());
    let app = spawn::spawn_app(&env).await;
    let coupon = app.client.create_open_coupon(5).await;
    assert_eq!(app.client.issue(coupon, 1).await.0, 202);
    // An API process subscribes through one seed: whichever node the consumer
    // publishes on, the note must reach every node, the replica too.
    let channel = keys(coupon).partition.written;
    let mut nodes = cluster.seeds();
    nodes.push(cluster.replica.url());
    let mut heard = Vec::new();
    for node in &nodes {
        let mut pubsub = redis::Client::open(node.as_str())
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        pubsub.subscribe(&channel).await.unwrap();
        heard.push(pubsub);
    }

    let client = app.client.clone();
    let poll = tokio::spawn(async move { client.status(coupon, 1, Some("25s")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "pending: the long-poll waits");
    let consumer = spawn::spawn_consumer(&env, "n1").await;
    let (status, body) = poll.await.unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("issued")), "{body}");
    for (node, pubsub) in nodes.iter().zip(&mut heard) {
        let note = tokio::time::timeout(Duration::from_secs(10), async {
            let mut messages = pubsub.on_message();
            loop {
                let payload: String = messages.next().await.expect("subscribed").get_payload().unwrap();
                match shared::StatusNote::parse(&payload) {
                    Some(note) if note.coupon.get() == coupon => return note,
                    _ => continue,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no note for coupon {coupon} on {node} within 10 s"));
        assert!(note.users.contains(&1), "the note names user 1: {:?}", note.users);
    }
    consumer.stop().await;
    app.stop().await;
    env.cleanup().await;
}
