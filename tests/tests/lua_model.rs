//! The issue scripts against a plain model (a set and a quantity), for random
//! interleavings of requests and of batches, on the real Redis.

use api::admission::Admission;
use api::script::{BatchScript, Decision, IssueScript};
use proptest::prelude::*;
use redis::AsyncCommands;
use shared::{CouponId, CouponKeys, Layout, UserId};
use std::collections::HashSet;

fn fresh_keys() -> CouponKeys {
    Layout::default().coupon(CouponId::new(rand::random_range(1_000_000_000_000i64..i64::MAX)).unwrap())
}

/// Entries of this case in its partition stream (other cases, running at the
/// same time, write to the same partitions): they carry the case's own event.
async fn events_of(redis: &mut redis::aio::ConnectionManager, keys: &CouponKeys) -> Vec<String> {
    let entries: redis::streams::StreamRangeReply = redis.xrange_all(&keys.events).await.unwrap();
    let mine = |e: &redis::streams::StreamId| matches!(e.map.get("ev"), Some(redis::Value::BulkString(b)) if b == keys.meta.as_bytes());
    entries.ids.into_iter().filter(|e| mine(e)).map(|e| e.id).collect()
}

async fn connect() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(integration_tests::redis_url()).unwrap();
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("the test Redis must be running")
}

async fn clear(redis: &mut redis::aio::ConnectionManager, keys: &CouponKeys) {
    let _: () = redis.del(&[&keys.issued, &keys.meta]).await.unwrap();
    let ids = events_of(redis, keys).await;
    if !ids.is_empty() {
        let _: i64 = redis.xdel(&keys.events, &ids).await.unwrap();
    }
}

/// The coupon's metadata as the API installs it: `quantity`, open for a day.
async fn open_meta(redis: &mut redis::aio::ConnectionManager, keys: &CouponKeys, quantity: i64) {
    let now = chrono::Utc::now().timestamp_millis();
    meta(redis, keys, quantity, (now - 1000, now + 86_400_000), false).await;
}

/// The coupon as the API's cache holds it (admission reads only its id and pause).
fn open_coupon(keys: &CouponKeys, quantity: i64) -> shared::Coupon {
    let id = keys
        .meta
        .split(':')
        .nth(2)
        .and_then(|id| id.parse().ok())
        .map(|id| CouponId::new(id).unwrap())
        .unwrap();
    let now = chrono::Utc::now();
    shared::Coupon {
        id,
        name: "model".into(),
        total_quantity: quantity,
        issue_start: now - chrono::Duration::seconds(1),
        issue_end: now + chrono::Duration::days(1),
        paused: false,
    }
}

async fn meta(
    redis: &mut redis::aio::ConnectionManager,
    keys: &CouponKeys,
    quantity: i64,
    (start_ms, end_ms): (i64, i64),
    paused: bool,
) {
    let () = redis
        .hset_multiple(
            &keys.meta,
            &[
                ("total_quantity", quantity),
                ("issue_start_ms", start_ms),
                ("issue_end_ms", end_ms),
                ("paused", i64::from(paused)),
            ],
        )
        .await
        .unwrap();
}

/// The one-by-one model: a set of users and a quantity.
#[derive(Clone, Default)]
struct Model {
    accepted: Vec<i64>,
}

impl Model {
    fn decide(&mut self, user: i64, quantity: i64) -> Decision {
        if self.accepted.contains(&user) {
            Decision::AlreadyIssued
        } else if self.accepted.len() as i64 >= quantity {
            Decision::SoldOut
        } else {
            self.accepted.push(user);
            Decision::Accepted {
                position: self.accepted.len() as i64,
            }
        }
    }
}

/// Whether the batches' answers are what the model gives the batches one by
/// one in some order of the batches (each batch is atomic; their order is
/// the order they reached Redis).
fn some_order_explains(batches: &[Vec<i64>], answers: &[Vec<Decision>], quantity: i64) -> bool {
    fn explain(
        left: &mut Vec<usize>,
        model: Model,
        batches: &[Vec<i64>],
        answers: &[Vec<Decision>],
        quantity: i64,
    ) -> bool {
        if left.is_empty() {
            return true;
        }
        for i in 0..left.len() {
            let batch = left.remove(i);
            let mut next = model.clone();
            let fits = batches[batch]
                .iter()
                .zip(&answers[batch])
                .all(|(&u, &d)| next.decide(u, quantity) == d);
            if fits && explain(left, next, batches, answers, quantity) {
                return true;
            }
            left.insert(i, batch);
        }
        false
    }
    explain(
        &mut (0..batches.len()).collect(),
        Model::default(),
        batches,
        answers,
        quantity,
    )
}

fn requests_of<'a>(users: &[i64], event: &'a [u8]) -> Vec<(UserId, &'a [u8])> {
    users.iter().map(|&u| (UserId::new(u).unwrap(), event)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Batches decided at once by several connections give exactly the answers
    /// of one-by-one requests: positions, a user twice in a batch, sold out at
    /// the boundary; one event per acceptance, with its position.
    #[test]
    fn concurrent_batches_decide_like_the_model_one_by_one(
        quantity in 1i64..8,
        batches in prop::collection::vec(prop::collection::vec(1i64..12, 1..10), 1..5),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(async {
            let redis = connect().await;
            let keys = fresh_keys();
            open_meta(&mut redis.clone(), &keys, quantity).await;
            let script = std::sync::Arc::new(BatchScript::default());
            let tasks: Vec<_> = batches.iter().map(|users| {
                let (mut redis, keys, script, users) = (redis.clone(), keys.clone(), script.clone(), users.clone());
                tokio::spawn(async move {
                    let event = keys.meta.clone();
                    script.run(&mut redis, &keys, &requests_of(&users, event.as_bytes())).await.unwrap()
                })
            }).collect();
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.unwrap().decisions);
            }
            prop_assert!(some_order_explains(&batches, &answers, quantity), "{batches:?} -> {answers:?}");
            let accepted = answers.iter().flatten().filter(|d| matches!(d, Decision::Accepted { .. })).count();
            prop_assert_eq!(events_of(&mut redis.clone(), &keys).await.len(), accepted, "one event per acceptance");
            clear(&mut redis.clone(), &keys).await;
            Ok(())
        })?;
    }

    /// Requests that reach one process together are decided in arrival order,
    /// exactly as one by one, whatever batches the process makes of them.
    #[test]
    fn admission_answers_in_arrival_order_like_the_model(quantity in 1i64..8, users in prop::collection::vec(1i64..12, 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut redis = connect().await;
            let keys = fresh_keys();
            open_meta(&mut redis, &keys, quantity).await;
            let admission = Admission::new(shared::redis_conn::RedisConn::Single(redis.clone()), None);
            let coupon = open_coupon(&keys, quantity);
            // join_all polls in order: each request joins the queue in list order.
            let got = futures::future::join_all(users.iter().map(|&u| {
                admission.admit(&coupon, &keys, UserId::new(u).unwrap(), || keys.meta.as_bytes().to_vec())
            })).await;
            let mut model = Model::default();
            for (&user, got) in users.iter().zip(got) {
                prop_assert_eq!(got.unwrap(), model.decide(user, quantity), "user {}", user);
            }
            clear(&mut redis, &keys).await;
            Ok(())
        })?;
    }

    /// Sequentially, every answer is exactly the model's.
    #[test]
    fn the_script_decides_like_the_model(quantity in 1i64..8, users in prop::collection::vec(1i64..12, 0..40)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut redis = connect().await;
            let keys = fresh_keys();
            let script = IssueScript::default();
            open_meta(&mut redis, &keys, quantity).await;
            let mut model: Vec<i64> = Vec::new();
            for user in users {
                let got = script.run(&mut redis, &keys, UserId::new(user).unwrap(), keys.meta.as_bytes()).await.unwrap();
                let expected = if model.contains(&user) {
                    Decision::AlreadyIssued
                } else if model.len() as i64 >= quantity {
                    Decision::SoldOut
                } else {
                    model.push(user);
                    Decision::Accepted { position: model.len() as i64 }
                };
                prop_assert_eq!(got, expected);
            }
            let len = events_of(&mut redis, &keys).await.len() as i64;
            prop_assert_eq!(len, model.len() as i64, "one event per acceptance");
            clear(&mut redis, &keys).await;
            Ok(())
        })?;
    }

    /// Concurrently, the answers form a valid first-come-first-served outcome.
    #[test]
    fn concurrent_requests_never_oversell_nor_double_issue(quantity in 1i64..10, users in prop::collection::vec(1i64..20, 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        runtime.block_on(async {
            let redis = connect().await;
            let keys = fresh_keys();
            open_meta(&mut redis.clone(), &keys, quantity).await;
            let script = std::sync::Arc::new(IssueScript::default());
            let tasks: Vec<_> = users.iter().map(|&user| {
                let (mut redis, keys, script) = (redis.clone(), keys.clone(), script.clone());
                tokio::spawn(async move { (user, script.run(&mut redis, &keys, UserId::new(user).unwrap(), keys.meta.as_bytes()).await.unwrap()) })
            }).collect();
            let mut accepted = Vec::new();
            let mut sold_out = 0;
            for task in tasks {
                match task.await.unwrap() {
                    (user, Decision::Accepted { position }) => accepted.push((user, position)),
                    (_, Decision::SoldOut) => sold_out += 1,
                    (user, Decision::AlreadyIssued) => prop_assert!(users.iter().filter(|u| **u == user).count() > 1),
                    (_, other) => prop_assert!(false, "an open coupon with its state answered {other:?}"),
                }
            }
            let distinct: HashSet<i64> = users.iter().copied().collect();
            let expected = quantity.min(distinct.len() as i64);
            prop_assert_eq!(accepted.len() as i64, expected);
            let accepted_users: HashSet<i64> = accepted.iter().map(|(u, _)| *u).collect();
            prop_assert_eq!(accepted_users.len(), accepted.len(), "no user accepted twice");
            let positions: HashSet<i64> = accepted.iter().map(|(_, p)| *p).collect();
            prop_assert_eq!(positions, (1..=expected).collect::<HashSet<_>>());
            prop_assert!(sold_out == 0 || expected == quantity, "sold out only once the quantity is reached");
            clear(&mut redis.clone(), &keys).await;
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_coupon_whose_redis_state_is_gone_accepts_nobody_until_rebuilt() {
    let mut redis = connect().await;
    let keys = fresh_keys();
    let decision = IssueScript::default()
        .run(&mut redis, &keys, UserId::new(1).unwrap(), b"e")
        .await
        .unwrap();
    assert_eq!(decision, Decision::StateMissing);
    let members: i64 = redis.scard(&keys.issued).await.unwrap();
    assert_eq!(members, 0);
}

#[tokio::test]
async fn the_period_and_the_pause_are_judged_by_redis_and_refuse_without_a_trace() {
    let mut redis = connect().await;
    let script = IssueScript::default();
    let now = chrono::Utc::now().timestamp_millis();
    let cases = [
        ((now + 60_000, now + 120_000), false, Decision::NotStarted),
        ((now - 120_000, now - 60_000), false, Decision::Ended),
        ((now - 60_000, now + 60_000), true, Decision::Paused),
        ((now - 60_000, now + 60_000), false, Decision::Accepted { position: 1 }),
    ];
    for (period, paused, expected) in cases {
        let keys = fresh_keys();
        meta(&mut redis, &keys, 5, period, paused).await;
        let got = script
            .run(&mut redis, &keys, UserId::new(7).unwrap(), keys.meta.as_bytes())
            .await
            .unwrap();
        assert_eq!(got, expected, "{period:?} paused={paused}");
        let members: i64 = redis.scard(&keys.issued).await.unwrap();
        let accepted = matches!(expected, Decision::Accepted { .. });
        assert_eq!(members, i64::from(accepted));
        assert_eq!(events_of(&mut redis, &keys).await.len(), usize::from(accepted));
        clear(&mut redis, &keys).await;
    }
}
