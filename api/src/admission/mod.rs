//! Admission: how a request for a coupon is decided, with far less than one
//! Redis script call per request on the coupon's shard.
//!
//! - **Coalescing.** Each coupon has a lane: a queue drained by one task. A
//!   request joins the queue; if no call is in flight, a drain task starts at
//!   once (a lone request waits for nobody); while one is in flight, arrivals
//!   wait and go together in the next call, `lua/admit.lua`, which decides the
//!   whole batch in arrival order exactly as one-by-one calls would.
//! - **Sold-out memory** ([`memory`]): once a batch saw the coupon full, this
//!   process answers `sold_out` / `already_issued` itself for up to a second.
//! - **Durable acceptance** (`REDIS_WAIT_REPLICAS=N`): each batch's script
//!   call and one `WAIT N` go in one pipeline, so the `WAIT` covers the
//!   batch's writes on the connection that made them; if it falls short, the
//!   batch's acceptances are answered 503 (they stay accepted: a retry answers
//!   `already_issued`, the status endpoint `pending`).
//!
//! Fairness: a lane's queue keeps arrival order, and a request waits at most
//! for the call in flight when it arrived plus its own, so between instances
//! a request can be overtaken only by one that arrived at another instance
//! less than one batch call (a Redis round trip, `REDIS_TIMEOUT_MS` at the
//! very worst) later. Sold-out answers from memory stand for at most
//! [`memory::BELIEVED_FOR`] after a quantity raised on another instance.

pub mod memory;

use crate::error::ApiError;
use crate::script::{Batch, BatchScript, Decision};
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId, CouponKeys, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// The most requests one script call decides (the rest wait for the next).
const MAX_BATCH: usize = 512;
/// Lanes kept before idle ones are dropped (a coupon's lane, with the holders
/// of a sold-out coupon, must not outlive its use).
const LANES_KEPT: usize = 4096;

/// `REDIS_WAIT_REPLICAS` and how long `WAIT` may take.
#[derive(Clone, Copy, Debug)]
pub struct Durable {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Every coupon's lane; one per process.
pub struct Admission(Arc<Shared>);

struct Shared {
    /// The connection batches (and their `WAIT`) go on.
    redis: RedisConn,
    script: BatchScript,
    holders: redis::Script,
    durable: Option<Durable>,
    lanes: Mutex<Lanes>,
}

#[derive(Default)]
struct Lanes {
    by_coupon: HashMap<CouponId, Arc<Lane>>,
    /// The size at which idle lanes are next dropped.
    sweep_at: usize,
}

/// One coupon's queue and memory.
struct Lane {
    keys: CouponKeys,
    queue: Mutex<Queue>,
    memory: memory::Memory,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// Whether a drain task runs (it empties the queue before it stops).
    draining: bool,
}

struct Waiter {
    user: UserId,
    event: Vec<u8>,
    reply: oneshot::Sender<Result<Decision, Failure>>,
}

/// Why a request of a batch got no decision.
#[derive(Clone, Debug)]
enum Failure {
    Redis(redis::RedisError),
    /// `WAIT` confirmed fewer replicas than asked for.
    NotReplicated,
}

impl Admission {
    /// Batches go on `redis`; with `durable`, each waits for its replicas.
    pub fn new(redis: RedisConn, durable: Option<Durable>) -> Self {
        Self(Arc::new(Shared {
            redis,
            script: BatchScript::default(),
            holders: redis::Script::new(include_str!("../../../lua/holders.lua")),
            durable: durable.filter(|d| d.replicas > 0),
            lanes: Mutex::default(),
        }))
    }

    /// Decides `user`'s request for `coupon` (the `event` it makes is appended
    /// to the stream if accepted; an answer from memory never makes it), in
    /// arrival order with the process's other requests.
    pub async fn admit(
        &self,
        coupon: &Coupon,
        keys: &CouponKeys,
        user: UserId,
        event: impl FnOnce() -> Vec<u8>,
    ) -> Result<Decision, ApiError> {
        let lane = self.lane(coupon.id, keys);
        if !coupon.paused {
            match lane.memory.answer(user) {
                Some(memory::Answer::AlreadyIssued) => return Ok(Decision::AlreadyIssued),
                Some(memory::Answer::SoldOut) => return Ok(Decision::SoldOut),
                None => {}
            }
        }
        let event = event();
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push(Waiter { user, event, reply });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(drain(self.0.clone(), lane));
        }
        // The request's Redis span covers its wait for the batch that decides it
        // (a batch serves many traces, so the call itself is no one's child).
        let span = tracing::info_span!(target: "coupon_rush::trace", "EVALSHA issue", db.system.name = "redis", db.system = "redis", db.operation.name = "EVALSHA", otel.kind = "client");
        match answer.instrument(span).await {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(Failure::Redis(err))) => Err(ApiError::Redis(err)),
            Ok(Err(Failure::NotReplicated)) => Err(ApiError::Unavailable(
                "the acceptance did not reach REDIS_WAIT_REPLICAS replicas in time; retrying is safe",
            )),
            Err(_) => Err(ApiError::Unavailable("the admission task stopped; retrying is safe")),
        }
    }

    /// Forgets what this process remembers of the coupon: its quantity,
    /// period or state changed here.
    pub fn forget(&self, id: CouponId) {
        let lanes = self.0.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.by_coupon.get(&id) {
            lane.memory.forget();
        }
    }

    fn lane(&self, id: CouponId, keys: &CouponKeys) -> Arc<Lane> {
        let mut lanes = self.0.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if lanes.by_coupon.len() >= lanes.sweep_at.max(LANES_KEPT) && !lanes.by_coupon.contains_key(&id) {
            // A dropped lane still serves the requests that hold it; the next
            // request for its coupon makes a new one.
            lanes.by_coupon.retain(|_, lane| lane.busy());
            lanes.sweep_at = 2 * lanes.by_coupon.len();
        }
        lanes
            .by_coupon
            .entry(id)
            .or_insert_with(|| {
                Arc::new(Lane {
                    keys: keys.clone(),
                    queue: Mutex::default(),
                    memory: memory::Memory::default(),
                })
            })
            .clone()
    }
}

impl Lane {
    /// Whether it has requests, or remembers its coupon sold out.
    fn busy(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).draining || self.memory.is_fresh()
    }
}

/// A running drain: if its task unwinds before it ends, its waiters are
/// answered (their senders dropped) and the next arrival starts a new task.
struct Draining {
    lane: Arc<Lane>,
    ended: bool,
}

impl Drop for Draining {
    fn drop(&mut self) {
        if !self.ended {
            let mut queue = self.lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.clear();
            queue.draining = false;
        }
    }
}

/// Decides the lane's queue, a batch per call, until it is empty.
async fn drain(shared: Arc<Shared>, lane: Arc<Lane>) {
    let mut guard = Draining { lane, ended: false };
    loop {
        let lane = guard.lane.clone();
        let batch: Vec<Waiter> = {
            let mut queue = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.waiting.is_empty() {
                queue.draining = false;
                guard.ended = true;
                return;
            }
            let n = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..n).collect()
        };
        let generation = lane.memory.generation();
        let mut redis = shared.redis.clone();
        let requests: Vec<(UserId, &[u8])> = batch.iter().map(|w| (w.user, w.event.as_slice())).collect();
        let decided = decide(&shared, &mut redis, &lane.keys, &requests).await;
        let ends = Instant::now();
        let outcomes = match &decided {
            Ok(decided) => answers(&shared, decided),
            Err(err) => vec![Err(Failure::Redis(err.clone())); batch.len()],
        };
        let decided = decided.map(|decided| decided.batch);
        for (waiter, outcome) in batch.into_iter().zip(outcomes) {
            let _ = waiter.reply.send(outcome);
        }
        if let Ok(decided) = decided {
            let open_for = Duration::from_millis(u64::try_from(decided.open_for_ms).unwrap_or(0));
            remember(&shared, &lane, generation, &decided, ends + open_for).await;
        }
    }
}

/// A batch's decisions and, with `REDIS_WAIT_REPLICAS`, how many replicas
/// acknowledged its writes.
struct Decided {
    batch: Batch,
    replicated: Option<i64>,
}

/// Runs the batch; with durable acceptance, `WAIT` in the same pipeline.
async fn decide(
    shared: &Shared,
    redis: &mut RedisConn,
    keys: &CouponKeys,
    requests: &[(UserId, &[u8])],
) -> redis::RedisResult<Decided> {
    match shared.durable {
        None => Ok(Decided {
            batch: shared.script.run(redis, keys, requests).await?,
            replicated: None,
        }),
        Some(durable) => {
            let (batch, acked) = shared
                .script
                .run_and_wait(redis, keys, requests, durable.replicas, durable.timeout)
                .await?;
            Ok(Decided {
                batch,
                replicated: Some(acked),
            })
        }
    }
}

/// The batch's answers, its acceptances only where `WAIT` confirmed them.
fn answers(shared: &Shared, decided: &Decided) -> Vec<Result<Decision, Failure>> {
    let decisions = &decided.batch.decisions;
    let short = match (shared.durable, decided.replicated) {
        (Some(durable), Some(acked)) => acked < i64::from(durable.replicas),
        _ => false,
    };
    if short && decisions.iter().any(|d| matches!(d, Decision::Accepted { .. })) {
        tracing::warn!(?decided.replicated, "WAIT timed out: the batch's acceptances answered 503");
    }
    let answer = |decision: &Decision| match decision {
        Decision::Accepted { .. } if short => Err(Failure::NotReplicated),
        _ => Ok(*decision),
    };
    decisions.iter().map(answer).collect()
}

/// Keeps the lane's memory in step with what the batch saw; reads the
/// holders when the coupon is newly seen full.
async fn remember(shared: &Shared, lane: &Lane, generation: u64, batch: &Batch, ends: Instant) {
    if !batch.each {
        lane.memory.clear();
        return;
    }
    let left = || ends.saturating_duration_since(Instant::now());
    if lane.memory.confirm(generation, batch.issued, batch.total, left()) {
        return;
    }
    let read: redis::RedisResult<(i64, Vec<i64>)> = shared
        .holders
        .key(&lane.keys.issued)
        .key(&lane.keys.meta)
        .invoke_async(&mut shared.redis.clone())
        .await;
    match read {
        Ok((total, holders)) => {
            lane.memory
                .install(generation, total, holders.into_iter().collect::<HashSet<_>>(), left())
        }
        Err(err) => tracing::debug!(%err, "reading a sold-out coupon's holders failed; asked again next time"),
    }
}
