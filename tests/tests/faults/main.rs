//! Fault tests of guarantees 3 and 4 (CONTRACT.md): every 202 ends as exactly
//! one `coupon_issues` row through killed consumers, a MariaDB crash, a frozen
//! MariaDB and a Redis restart; MySQL holds the line when Redis forgets
//! everything, even users a consumer has not written yet; poison entries are
//! dead-lettered and can be replayed; a consumer stopped with SIGTERM mid-batch
//! exits 0 promptly and loses nothing.
//!
//! Each test runs its own private `redis-server` and `mariadbd` (never the
//! machine's shared ones: see `integration_tests::servers`), consumers as real
//! processes (so `kill -9` is real), and the API in-process (plus, once, as a
//! process). Every answer of a sale is recorded; a 503 or a lost answer makes
//! its user "maybe accepted", a 202 makes it "certainly accepted".
//!
//! # Layout
//! - `rig`: a test's private servers, API, consumers and what it reads of them.
//! - `sale`: the sale: requests on a schedule, every answer recorded and checked.

mod rig;
mod sale;

use integration_tests::binaries::{consumer_command, ApiProcess};
use integration_tests::checks::assert_rows_match;
use integration_tests::child::signal;
use integration_tests::{keys, wait};
use rand::seq::SliceRandom;
use redis::AsyncCommands;
use rig::{assert_running, event, inject, list_dead_letters, wait_dead, Rig, SETTLE};
use sale::{at, evenly, sale, tally, timeline};
use shared::IssueEvent;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_request_reaches_mysql_once_through_killed_consumers_a_mysql_crash_and_a_redis_restart() {
    let quantity = 1000;
    let (mut rig, coupon) = Rig::with_coupon(quantity).await;
    let mut consumers = Vec::from(rig.start_consumers(["c1", "c2", "c3"]).await);

    // 1,500 users over 9 s: first tries arrive evenly (so the coupon sells out
    // late, after every fault), each user retrying 0 to 3 times later on.
    let sale_ms = 9_000.0;
    let mut users: Vec<i64> = (1..=1500).collect();
    users.shuffle(&mut rand::rng());
    let mut schedule: Vec<(Duration, i64)> = Vec::new();
    for (i, &user) in users.iter().enumerate() {
        let first = i as f64 / 1500.0 * sale_ms * 0.95;
        schedule.push((Duration::from_secs_f64(first / 1000.0), user));
        for _ in 0..rand::random_range(0..=3) {
            let retry = rand::random_range(first..sale_ms);
            schedule.push((Duration::from_secs_f64(retry / 1000.0), user));
        }
    }
    schedule.sort();
    let requests = schedule.len();
    let t0 = Instant::now();
    let selling = tokio::spawn(sale(vec![rig.app.client.base.clone()], coupon, schedule, 32));

    at(t0, 1_000).await;
    rig.wait_holding(coupon, "c1").await;
    consumers[0].kill9();
    let c1_left = rig.pending_of(coupon, "c1").await;

    at(t0, 2_000).await;
    rig.maria.kill9();
    // With MySQL gone, whatever c2 holds now it can not have written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.wait_holding(coupon, "c2").await;
    consumers[1].kill9();
    let c2_left = rig.pending_of(coupon, "c2").await;
    assert!(c2_left > 0, "c2 was killed holding entries it could not write");
    at(t0, 4_000).await;
    rig.maria.restart().await;

    at(t0, 4_500).await;
    rig.redis.kill9();
    at(t0, 5_500).await;
    rig.redis.restart().await;

    at(t0, 6_000).await;
    consumers.push(rig.consumer("c4"));

    let answers = selling.await.unwrap();
    let sale_took = t0.elapsed();
    let tally = tally(&answers, quantity);
    let accepted = tally.accepted.clone();
    eprintln!(
        "{requests} requests in {sale_took:?}: {:?}; c1 left {c1_left} pending, c2 left {c2_left}",
        tally.codes
    );
    eprintln!("{}", timeline(&answers));
    assert!(accepted.len() as i64 <= quantity);
    assert!(
        tally.codes.get("unavailable").copied().unwrap_or(0) > 0,
        "the sale ran into the Redis outage"
    );

    let rows = rig.settle_and_check(coupon, quantity).await;
    assert_rows_match(&rows, &accepted, &tally.ambiguous);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    let (_, view) = rig.app.client.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(view["issued_quantity"].as_i64(), Some(rows.len() as i64), "{view}");
    assert_running(&mut consumers[2..]);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_forgets_everything_nobody_is_accepted_twice_and_mysql_never_exceeds_the_quantity() {
    let quantity = 300;
    let (rig, coupon) = Rig::with_coupon(quantity).await;
    let [mut consumer] = rig.start_consumers(["c1"]).await;

    let base = rig.app.client.base.clone();
    let first = tally(
        &sale(vec![base.clone()], coupon, evenly(1..=200, Duration::ZERO), 32).await,
        quantity,
    );
    assert_eq!(first.accepted.len(), 200, "{:?}", first.codes);
    assert_eq!(rig.settle(coupon).await.len(), 200);

    rig.redis.flushall().await;
    // A second API, started now, knows nothing of the coupon: it rebuilds on its
    // first lookup, while the first API (coupon cached) rebuilds when the script
    // says the state is missing; only one of them may refill.
    let mut api2 = ApiProcess::spawn(&rig.env).await;

    // The accepted users again, and 300 new users for the 100 places left.
    let mut users: Vec<i64> = (1..=500).collect();
    users.shuffle(&mut rand::rng());
    let bases = vec![base, api2.client.base.clone()];
    let second = tally(
        &sale(bases, coupon, evenly(users, Duration::from_millis(2)), 32).await,
        quantity,
    );
    eprintln!("after FLUSHALL: {:?}", second.codes);
    let again: Vec<_> = second.accepted.iter().filter(|u| first.accepted.contains(u)).collect();
    assert!(
        again.is_empty(),
        "accepted before the flush and again after it: {again:?}"
    );
    let accepted: HashSet<i64> = first.accepted.union(&second.accepted).copied().collect();
    assert!(accepted.len() as i64 <= quantity, "{} accepted", accepted.len());

    let rows = rig.settle_and_check(coupon, quantity).await;
    assert_rows_match(&rows, &accepted, &second.ambiguous);
    assert!(
        consumer.is_running(),
        "the consumer survived NOGROUP:\n{}",
        consumer.log_tail(30)
    );
    assert!(api2.is_running(), "{}", api2.log_tail(30));
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_entries_are_dead_lettered_and_acked_and_an_operator_can_replay_them() {
    let (rig, coupon) = Rig::with_coupon(3).await;
    let [mut consumer] = rig.start_consumers(["c1"]).await;
    for user in 1..=3 {
        assert_eq!(rig.app.client.issue(coupon, user).await.0, 202);
    }
    assert_eq!(rig.settle(coupon).await.len(), 3);

    let garbage = inject(&rig, coupon, b"\xc1 not MessagePack", "1").await;
    let letters = wait_dead(&rig, coupon, 1).await;
    assert_eq!(letters[0].source_id, garbage);
    assert!(letters[0].reason.starts_with("undecodable"), "{letters:?}");

    // A valid event Redis never decided on, for a coupon MySQL has full.
    inject(&rig, coupon, &event(coupon, 99).encode(), "4").await;
    wait_dead(&rig, coupon, 2).await;
    let (status, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/99")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["reason"], "quantity_exceeded", "{body}");
    assert_eq!(
        rig.check_mysql(coupon, 3).await.len(),
        3,
        "MySQL refused the fourth row"
    );

    let listed = list_dead_letters(&rig, coupon).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[0]["user_id"].is_null() && listed[0]["source_id"] == garbage.as_str(),
        "{listed:?}"
    );
    assert_eq!(
        (listed[1]["user_id"].as_i64(), listed[1]["coupon_id"].as_i64()),
        (Some(99), Some(coupon))
    );
    assert_eq!(listed[1]["reason"], "quantity_exceeded");

    // The operator makes room for user 99 and replays that one letter.
    sqlx::query("UPDATE coupons SET total_quantity = 4 WHERE id = ?")
        .bind(coupon)
        .execute(&rig.db)
        .await
        .unwrap();
    let letter = listed[1]["id"].as_str().unwrap();
    let coupon_arg = coupon.to_string();
    let output = consumer_command(
        &rig.env,
        &["replay-dead-letters", "--coupon", &coupon_arg, "--id", letter],
    )
    .await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 1"));
    wait::until(
        Duration::from_secs(20),
        "user 99's replayed event to be written",
        || async { rig.mysql_users(coupon).await?.contains(&99).then_some(()) },
    )
    .await;
    let (_, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/99")).await;
    assert_eq!(body["status"], "issued", "{body}");
    assert_eq!(rig.check_mysql(coupon, 4).await.len(), 4);

    // Replaying the garbage buries it again, acked, under a new id.
    let output = consumer_command(&rig.env, &["replay-dead-letters", "--coupon", &coupon.to_string()]).await;
    assert!(String::from_utf8_lossy(&output.stdout).contains("replayed 1"));
    let letters = wait_dead(&rig, coupon, 1).await;
    assert_ne!(letters[0].source_id, garbage);
    assert!(letters[0].reason.starts_with("undecodable"), "{letters:?}");
    assert!(
        consumer.is_running(),
        "the consumer survived the poison:\n{}",
        consumer.log_tail(30)
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_stopped_with_sigterm_mid_batch_exits_zero_promptly_and_loses_nothing() {
    let (mut rig, coupon) = Rig::with_coupon(1000).await;

    // Stopped while writing.
    let [mut c1] = rig.start_consumers(["c1"]).await;
    let users = (1..=400, Duration::from_millis(4));
    let mut answers = rig
        .sigterm_mid_sale(&mut c1, coupon, users, Duration::from_secs(5))
        .await;

    // Stopped while retrying a batch MySQL can not take (each attempt may wait
    // out the pool's 3 s acquire timeout before the stop is noticed).
    let [mut c2] = rig.start_consumers(["c2"]).await;
    rig.maria.kill9();
    let users = (401..=600, Duration::from_millis(2));
    answers.extend(
        rig.sigterm_mid_sale(&mut c2, coupon, users, Duration::from_secs(6))
            .await,
    );
    assert!(
        rig.pending_of(coupon, "c2").await > 0,
        "c2 handed its batch back unwritten"
    );
    rig.maria.restart().await;

    let tally = tally(&answers, 1000);
    assert_eq!(tally.accepted.len(), 600, "{:?}", tally.codes);

    // c2 comes back under its own name (taking its own pending entries back at
    // start) and c3 joins (reclaiming whatever else was left idle).
    let mut survivors = vec![rig.consumer("c2"), rig.consumer("c3")];
    let rows = rig.settle_and_check(coupon, 1000).await;
    assert_eq!(rows, tally.accepted);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    assert_running(&mut survivors);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_mysql_delays_issues_without_losing_any_and_a_consumer_waiting_on_it_still_stops_on_sigterm() {
    let (rig, coupon) = Rig::with_coupon(1000).await;
    let base = rig.app.client.base.clone();
    let mut consumers = rig.start_consumers(["c1", "c2", "c3"]).await;
    let mut answers = sale(vec![base.clone()], coupon, evenly(1..=50, Duration::ZERO), 8).await;
    rig.settle(coupon).await;

    // SIGSTOP: connections stay open but nothing answers, unlike a crash. The
    // freeze outlasts CLAIM_IDLE_MS several times over.
    let mariadbd = rig.maria.pid().expect("MariaDB runs");
    signal(mariadbd, "-STOP");
    let frozen = Instant::now();
    answers.extend(sale(vec![base], coupon, evenly(51..=200, Duration::from_millis(5)), 16).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.wait_holding(coupon, "c1").await;
    let (status, took) = consumers[0].sigterm(Duration::from_secs(15)).await;
    assert!(
        status.success() && took < Duration::from_secs(8),
        "c1: {status} after {took:?}"
    );
    tokio::time::sleep_until(frozen + Duration::from_secs(5)).await;
    signal(mariadbd, "-CONT");

    let tally = tally(&answers, 1000);
    assert_eq!(tally.accepted.len(), 200, "{:?}", tally.codes);
    let rows = rig.settle_and_check(coupon, 1000).await;
    assert_eq!(rows, tally.accepted);
    assert!(rig.dead_letters(coupon).await.is_empty(), "nothing was dead-lettered");
    assert_running(&mut consumers[1..]);
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_holds_the_quantity_on_its_own_when_redis_forgets_the_users_a_consumer_has_not_written_yet() {
    let quantity = 100;
    let (rig, coupon) = Rig::with_coupon(quantity).await;
    let base = rig.app.client.base.clone();
    let [mut consumer] = rig.start_consumers(["c1"]).await;

    // The consumer reads the first users, then waits on the coupon's row lock.
    let mut lock = rig.db.begin().await.unwrap();
    let _: (i64,) = sqlx::query_as("SELECT total_quantity FROM coupons WHERE id = ? FOR UPDATE")
        .bind(coupon)
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    let first = tally(
        &sale(vec![base.clone()], coupon, evenly(1..=60, Duration::ZERO), 8).await,
        quantity,
    );
    assert_eq!(first.accepted.len(), 60);
    rig.wait_holding(coupon, "c1").await;

    // Redis forgets the users, the held batch's included, but not the coupon
    // (a partial loss no rebuild notices; a whole loss is fenced by the commit
    // lease, see rebuild_races.rs): it accepts a full quantity again.
    let () = rig.conn().del(keys(coupon).issued).await.unwrap();
    let second = tally(
        &sale(vec![base], coupon, evenly(61..=200, Duration::ZERO), 8).await,
        quantity,
    );
    assert_eq!(second.accepted.len() as i64, quantity, "{:?}", second.codes);
    lock.rollback().await.unwrap();

    // Redis' set now names users MySQL refused, so wait for the stream instead.
    let rows = wait::until(SETTLE, "the stream to drain and MySQL to fill up", || async {
        rig.drained(coupon).await?;
        let rows = rig.mysql_users(coupon).await?;
        (rows.len() as i64 == quantity).then_some(rows)
    })
    .await;
    assert_eq!(rig.check_mysql(coupon, quantity).await, rows);
    let accepted: HashSet<i64> = first.accepted.union(&second.accepted).copied().collect();
    assert!(rows.is_subset(&accepted), "every row is an accepted user");
    // Whatever the consumer held beyond the quantity was refused, not written.
    let refused: Vec<i64> = rig
        .dead_letters(coupon)
        .await
        .iter()
        .map(|letter| {
            assert_eq!(letter.reason, "quantity_exceeded", "{letter:?}");
            let event = IssueEvent::decode(Some(&letter.ev), Some(b"1")).unwrap();
            event.user_id.get()
        })
        .collect();
    assert!(!refused.is_empty(), "the held batch went past the quantity");
    for user in &refused {
        assert!(accepted.contains(user) && !rows.contains(user), "refused user {user}");
        let (status, body) = rig.app.client.get(&format!("/coupons/{coupon}/issues/{user}")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("failed")), "{body}");
    }
    assert!(consumer.is_running(), "{}", consumer.log_tail(30));
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_entry_is_dead_lettered_once_even_when_its_batch_is_retried() {
    let (mut rig, coupon) = Rig::with_coupon(10).await;
    let [consumer] = rig.start_consumers(["c1"]).await;
    rig.maria.kill9();
    // Garbage and a valid event in one transaction, so that one read gets both.
    let event = event(coupon, 5);
    let events = keys(coupon).events;
    let (garbage, _): (String, String) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg("ev")
        .arg(&b"\xc1 not MessagePack"[..])
        .arg("pos")
        .arg("1")
        .cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg("ev")
        .arg(event.encode())
        .arg("pos")
        .arg("1")
        .query_async(&mut rig.conn())
        .await
        .unwrap();
    wait::until(
        Duration::from_secs(30),
        "the consumer to retry the batch twice",
        || async { (consumer.log().matches("batch failed").count() >= 2).then_some(()) },
    )
    .await;
    rig.maria.restart().await;
    wait::until(SETTLE, "the valid event to be written", || async {
        rig.drained(coupon).await?;
        rig.mysql_users(coupon).await?.contains(&5).then_some(())
    })
    .await;
    let letters = rig.dead_letters(coupon).await;
    assert_eq!(letters.len(), 1, "one poison entry, one dead letter: {letters:?}");
    assert_eq!(letters[0].source_id, garbage);
    rig.app.stop().await;
}
