//! The status long-polls of this process (`GET .../issues/{user}?wait=`): how
//! many wait (bounded, a gauge), what wakes them, and their end on shutdown.
//!
//! The consumer's ack (and a burial) publishes a [`StatusNote`] on its
//! partition's channel; this process holds one subscription to every
//! partition's channel, shared by all its waiters, and wakes only the waiters
//! of the users a note names. A waiter then reads the status again. A note can
//! be lost (the subscription reconnecting, a consumer of an older version), so
//! every waiter also re-reads at [`RECHECK`]: a lost note delays an answer,
//! never hangs one past its timeout.

use crate::error::ApiError;
use futures::StreamExt;
use shared::{CouponId, Layout, StatusNote, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// How often a waiter re-reads its status without being woken.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long the subscription waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// The registry of waiting long-polls.
pub struct Waiters {
    /// `STATUS_MAX_WAITERS`: past it, [`Waiters::join`] refuses.
    max: usize,
    waiting: AtomicUsize,
    /// One wake-up per (coupon, user) waited for.
    slots: Mutex<HashMap<(CouponId, UserId), Slot>>,
    /// Turns `true` on shutdown: every waiter answers at once.
    stopping: watch::Sender<bool>,
}

impl Waiters {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            waiting: AtomicUsize::new(0),
            slots: Mutex::default(),
            stopping: watch::Sender::new(false),
        })
    }

    /// A place among the waiters for `user`'s status, or 503 when
    /// `STATUS_MAX_WAITERS` wait already.
    pub fn join(self: &Arc<Self>, coupon: CouponId, user: UserId) -> Result<Waiter, ApiError> {
        let taken = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        if taken.is_err() {
            metrics::counter!(shared::metrics::STATUS_WAITERS_REFUSED).increment(1);
            return Err(ApiError::Unavailable(
                "too many status requests are waiting, retry shortly",
            ));
        }
        self.gauge();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry((coupon, user)).or_insert_with(|| Slot {
            wake: Arc::default(),
            waiting: 0,
        });
        slot.waiting += 1;
        Ok(Waiter {
            waiters: self.clone(),
            key: (coupon, user),
            wake: slot.wake.clone(),
        })
    }

    /// Wakes the waiters of the users `note` names.
    pub fn wake(&self, note: &StatusNote) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for user in &note.users {
            let Ok(user) = UserId::new(*user) else { continue };
            if let Some(slot) = slots.get(&(note.coupon, user)) {
                slot.wake.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (notes may have been missed: they all read again).
    fn wake_all(&self) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            slot.wake.notify_waiters();
        }
    }

    /// Shutdown: every waiter answers with what it knows now.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    fn gauge(&self) {
        metrics::gauge!(shared::metrics::STATUS_WAITERS).set(self.waiting.load(Ordering::Acquire) as f64);
    }
}

/// The wake-up of one (coupon, user) and how many wait on it.
struct Slot {
    wake: Arc<Notify>,
    waiting: usize,
}

/// One waiting long-poll; leaves the registry when dropped.
pub struct Waiter {
    waiters: Arc<Waiters>,
    key: (CouponId, UserId),
    wake: Arc<Notify>,
}

impl Waiter {
    /// What wakes this waiter: a note naming its user, or shutdown. Enable it
    /// (`Notified::enable`) before reading the status, so a note published
    /// between the read and the wait is not missed.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Completes when the process is shutting down.
    pub async fn stopping(&self) {
        let mut stopping = self.waiters.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.waiters.stopping.borrow()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut slots = self.waiters.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.waiting -= 1;
            if slot.waiting == 0 {
                slots.remove(&self.key);
            }
        }
        drop(slots);
        self.waiters.waiting.fetch_sub(1, Ordering::AcqRel);
        self.waiters.gauge();
    }
}

/// The subscription to every partition's channel, until shutdown: each note
/// wakes its users' waiters. On a failure it connects again (to the next
/// seed, in a cluster) and wakes every waiter, since notes may have been lost.
pub async fn listen(clients: Vec<redis::Client>, layout: Layout, waiters: Arc<Waiters>) {
    let channels: Vec<String> = layout.all().map(|p| p.written).collect();
    let mut stopping = waiters.stopping.subscribe();
    for client in clients.iter().cycle() {
        tokio::select! {
            result = subscribed(client, &channels, &waiters) => {
                if let Err(err) = result {
                    tracing::warn!(%err, "the status notes subscription failed; long-polls fall back to re-reading every second");
                }
            }
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        waiters.wake_all();
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_AFTER) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Subscribes through `client` and wakes waiters until the connection ends.
async fn subscribed(client: &redis::Client, channels: &[String], waiters: &Waiters) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channels).await?;
    // Notes published before the subscription took hold are unseen.
    waiters.wake_all();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload()?;
        match StatusNote::parse(&payload) {
            Some(note) => waiters.wake(&note),
            None => tracing::warn!(channel = message.get_channel_name(), %payload, "not a status note"),
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "the subscription's connection closed",
    )))
}
