//! Writing a coupon's Redis state from MySQL: publishing a coupon just created,
//! and rebuilding one whose state Redis lost (docs/GUARANTEES.md, guarantee 4).
//!
//! Both end in one atomic step, `lua/install.lua`, that writes the metadata the
//! issue script needs and the issued set, unless the same MySQL row (its
//! *incarnation*) is installed already: an instance that got there first may be
//! accepting users, and nothing it holds is touched.
//!
//! A rebuild runs in a task of its own, one per coupon per process, so that no
//! request deadline can cancel it half-way; requests wait for it up to their own
//! deadline. Across instances one holds the coupon's rebuild lock (renewed while
//! it works); the others wait for the metadata. Before reading MySQL the holder
//! waits out the commit lease ([`shared::lease`]), so a consumer's batch read
//! before Redis lost its data is either in MySQL by then or never committed.

use crate::app::AppState;
use crate::error::ApiError;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use shared::lease::COMMIT_LEASE;
use shared::redis_conn::RedisConn;
use shared::{Coupon, CouponId, CouponKeys, Layout, LegacyKeys};
use sqlx::MySqlPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// How long a rebuild lock lives if its holder dies; renewed every third of it.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// Added to the commit lease: the two sides' monotonic clocks may run at
/// slightly different rates, and the loss happened before the rebuild started.
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// How long a task waits for another instance's rebuild before it gives up
/// (a later request starts it again).
const GIVE_UP: Duration = Duration::from_secs(120);
/// Users added per SADD (and their times per HSET) while filling the set.
const CHUNK: usize = 5_000;

/// Why the state is written: the install script treats leftovers differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A coupon MySQL just created: whatever Redis holds under its id is stale.
    New,
    /// Redis lost the coupon's metadata: MySQL's users join the set.
    Rebuild,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::New => "new",
            Mode::Rebuild => "rebuild",
        }
    }
}

/// The rebuilds this process runs, by coupon; a receiver turns `true` when done.
#[derive(Default)]
pub struct Rebuilds(Mutex<HashMap<CouponId, watch::Receiver<bool>>>);

/// Where a coupon's Redis state goes and how long it stays.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub layout: Layout,
    /// How long the state outlives the coupon's issue period.
    pub retention: Duration,
}

impl Placement {
    /// When the coupon's state expires (unix ms); at or before now, there is
    /// nothing to write: the period ended longer ago than the retention.
    pub fn expires_at_ms(&self, coupon: &Coupon) -> i64 {
        let retention = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        coupon.issue_end.timestamp_millis().saturating_add(retention)
    }

    /// Passes `coupon`'s metadata to a script, as `lua/install.lua` and
    /// `lua/amend.lua` both take it: incarnation, name, total_quantity,
    /// issue_start_ms, issue_end_ms, paused, and when the state expires.
    pub fn metadata_args(&self, script: &mut redis::ScriptInvocation<'_>, coupon: &Coupon, incarnation: i64) {
        script
            .arg(incarnation)
            .arg(&coupon.name)
            .arg(coupon.total_quantity)
            .arg(coupon.issue_start.timestamp_millis())
            .arg(coupon.issue_end.timestamp_millis())
            .arg(if coupon.paused { "1" } else { "0" })
            .arg(self.expires_at_ms(coupon));
    }

    /// Whether the coupon's Redis state has (or would have) expired by now.
    pub fn expired(&self, coupon: &Coupon) -> bool {
        self.expires_at_ms(coupon) <= chrono::Utc::now().timestamp_millis()
    }
}

/// Publishes a coupon MySQL just created. Another instance may have been asked
/// for the new id first and rebuilt it (and be accepting users): then this
/// changes nothing.
pub async fn publish_new(
    redis: &mut RedisConn,
    db: &MySqlPool,
    placement: Placement,
    coupon: &Coupon,
) -> Result<(), ApiError> {
    let incarnation = incarnation(db, coupon.id).await?;
    install(redis, placement, coupon, incarnation, Mode::New).await
}

/// Makes sure the coupon's Redis state is rebuilt from MySQL (starting the
/// rebuild if this process is not running one) and waits until it is done. The
/// caller's deadline bounds the wait, never the rebuild.
pub async fn rebuild(app: &AppState, coupon: &Coupon) -> Result<(), ApiError> {
    let mut done = {
        let mut running = app.rebuilds.0.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(&coupon.id) {
            Some(done) if !*done.borrow() => done.clone(),
            _ => {
                let (tx, rx) = watch::channel(false);
                running.insert(coupon.id, rx.clone());
                tokio::spawn(run(app.clone(), coupon.clone(), tx));
                rx
            }
        }
    };
    // A dropped sender (the task panicked) also ends the wait; the caller's
    // script call then tells whether the state is there.
    let _ = done.wait_for(|finished| *finished).await;
    // What this process remembered of the coupon was of the state now replaced.
    app.admission.forget(coupon.id);
    Ok(())
}

/// The task: rebuild under the lock, or wait for the instance that holds it.
async fn run(app: AppState, coupon: Coupon, done: watch::Sender<bool>) {
    let keys = app.layout.coupon(coupon.id);
    let deadline = tokio::time::Instant::now() + GIVE_UP;
    let mut redis = app.redis();
    while tokio::time::Instant::now() < deadline {
        match attempt(&app, &mut redis, &coupon, &keys).await {
            Ok(true) => break,
            Ok(false) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) => {
                tracing::warn!(coupon = %coupon.id, %err, "rebuilding the coupon's Redis state failed, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    app.rebuilds
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&coupon.id);
    let _ = done.send(true);
}

/// One step: `true` once the metadata is there (written by us or another
/// instance), `false` while another instance holds the lock.
async fn attempt(app: &AppState, redis: &mut RedisConn, coupon: &Coupon, keys: &CouponKeys) -> Result<bool, ApiError> {
    if app.placement().expired(coupon) || redis.exists(&keys.meta).await? {
        return Ok(true);
    }
    // Unique enough among instances: pid plus the current nanosecond.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let token = format!("{}-{nanos}", std::process::id());
    let locked: Option<String> = redis::cmd("SET")
        .arg(&keys.rebuild_lock)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64)
        .query_async(redis)
        .await?;
    if locked.is_none() {
        return Ok(false);
    }
    let renewal = tokio::spawn(renew(redis.clone(), keys.rebuild_lock.clone(), token.clone()));
    let result = refill(app, redis, coupon, keys).await;
    renewal.abort();
    let _: Result<i64, _> = LockScript::release()
        .key(&keys.rebuild_lock)
        .arg(&token)
        .invoke_async(redis)
        .await;
    result.map(|()| true)
}

/// Waits out the commit lease, reads MySQL's users under the coupon row's lock
/// and installs them with the metadata.
async fn refill(app: &AppState, redis: &mut RedisConn, coupon: &Coupon, keys: &CouponKeys) -> Result<(), ApiError> {
    wait_for_legacy_drain(redis, coupon.id).await?;
    tokio::time::sleep(COMMIT_LEASE + LEASE_MARGIN).await;
    let mut tx = app.db.begin().await?;
    let incarnation: i64 = sqlx::query_scalar(
        "SELECT CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) FROM coupons WHERE id = ? FOR UPDATE",
    )
    .bind(coupon.id.get())
    .fetch_one(&mut *tx)
    .await?;
    let users: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT user_id, issued_at FROM coupon_issues WHERE coupon_id = ?")
            .bind(coupon.id.get())
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let _: () = redis.del(&[&keys.rebuild_set, &keys.rebuild_issued_at]).await?;
    for chunk in users.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|(user, _)| *user).collect();
        let times: Vec<(i64, i64)> = chunk.iter().map(|(user, at)| (*user, at.timestamp_millis())).collect();
        let _: () = redis::pipe()
            .sadd(&keys.rebuild_set, ids)
            .hset_multiple(&keys.rebuild_issued_at, &times)
            .query_async(redis)
            .await?;
    }
    install(redis, app.placement(), coupon, incarnation, Mode::Rebuild).await?;
    // The layout before partitions kept these; MySQL now holds all they said.
    let legacy = LegacyKeys::new(coupon.id);
    for key in [&legacy.meta, &legacy.issued] {
        let _: () = redis.del(key).await?;
    }
    metrics::counter!(shared::metrics::STATE_REBUILDS).increment(1);
    tracing::info!(coupon = %coupon.id, restored_users = users.len(), "coupon state written to Redis from MySQL");
    Ok(())
}

/// The row's incarnation: when it was created, in ms (a database that was reset
/// hands the same id out again, never with the same creation time).
async fn incarnation(db: &MySqlPool, id: CouponId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) FROM coupons WHERE id = ?")
        .bind(id.get())
        .fetch_one(db)
        .await
}

async fn install(
    redis: &mut RedisConn,
    placement: Placement,
    coupon: &Coupon,
    incarnation: i64,
    mode: Mode,
) -> Result<(), ApiError> {
    if placement.expired(coupon) {
        return Ok(());
    }
    let keys = placement.layout.coupon(coupon.id);
    let script = redis::Script::new(INSTALL);
    let mut install = script.prepare_invoke();
    install
        .key(&keys.meta)
        .key(&keys.issued)
        .key(&keys.rebuild_set)
        .key(&keys.failed)
        .key(&keys.issued_at)
        .key(&keys.rebuild_issued_at);
    placement.metadata_args(&mut install, coupon, incarnation);
    let _: i64 = install.arg(mode.arg()).invoke_async(redis).await?;
    Ok(())
}

/// Waits until the coupon's stream of the layout before partitions (if an
/// upgrade left one) is read and acked to the end: its events are accepted
/// requests that must be in MySQL before MySQL's users are installed. The
/// consumers drain and then delete it.
async fn wait_for_legacy_drain(redis: &mut RedisConn, coupon: CouponId) -> Result<(), ApiError> {
    let legacy = LegacyKeys::new(coupon);
    while redis.exists(&legacy.events).await? {
        tracing::info!(%coupon, stream = %legacy.events, "waiting for the consumers to drain the coupon's legacy stream");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Extends our lock every third of its life until aborted.
async fn renew(mut redis: RedisConn, lock: String, token: String) {
    loop {
        tokio::time::sleep(LOCK_TTL / 3).await;
        let renewed: Result<i64, _> = LockScript::renew()
            .key(&lock)
            .arg(&token)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut redis)
            .await;
        if !matches!(renewed, Ok(1)) {
            tracing::warn!(%lock, "could not renew the rebuild lock");
        }
    }
}

const INSTALL: &str = include_str!("../../lua/install.lua");

/// Compare-and-act on our own lock only.
struct LockScript;

impl LockScript {
    fn release() -> redis::Script {
        redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
    }

    fn renew() -> redis::Script {
        redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        )
    }
}
