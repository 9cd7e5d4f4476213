//! The consumer's side of the commit lease ([`shared::lease`]): when each entry
//! in hand was last confirmed pending in its group, and the keep-alive that
//! renews that and keeps the entries from going idle.
//!
//! Every read opens a [`Book`] for its entries; the worker's one keep-alive task
//! renews every book still alive (a batch in hand, a prefetched read), so an entry
//! is kept alive from the moment it is read until its batch is dropped, and a
//! book dropped unhandled (an abandoned read) stops being kept alive by itself.

use super::{Task, Worker};
use crate::streams::{self, Entry, Member};
use shared::redis_conn::RedisConn;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

/// When each entry of one read was last confirmed pending, by stream and id.
#[derive(Debug, Default)]
pub struct Book {
    confirmed: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Book {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Instant>>> {
        // The map stays consistent whatever panicked while holding it.
        self.confirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `entries` as confirmed pending at `at` (just before the command
    /// that delivered them was sent).
    pub fn hold(&self, entries: &[Entry], at: Instant) {
        let mut confirmed = self.lock();
        for entry in entries {
            confirmed
                .entry(entry.stream.clone())
                .or_default()
                .insert(entry.id.clone(), at);
        }
    }

    /// Renews the `pending` ids of `stream` still held, confirmed at `at`.
    pub fn renew(&self, stream: &str, pending: &[String], at: Instant) {
        if let Some(ids) = self.lock().get_mut(stream) {
            for id in pending {
                if let Some(confirmed) = ids.get_mut(id) {
                    *confirmed = (*confirmed).max(at);
                }
            }
        }
    }

    /// Stops keeping `ids` of `stream` alive (acked, buried or dropped).
    pub fn release<'a>(&self, stream: &str, ids: impl IntoIterator<Item = &'a str>) {
        if let Some(held) = self.lock().get_mut(stream) {
            for id in ids {
                held.remove(id);
            }
        }
    }

    fn held(&self) -> Vec<(String, Vec<String>)> {
        self.lock()
            .iter()
            .map(|(stream, ids)| (stream.clone(), ids.keys().cloned().collect()))
            .collect()
    }

    /// The lease of `entries` (each of any stream), for one transaction.
    pub fn lease<'a>(&'a self, entries: Vec<EntryRef<'a>>) -> Lease<'a> {
        Lease { book: self, entries }
    }
}

/// One entry a lease covers: its stream and id.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub stream: &'a str,
    pub id: &'a str,
}

impl<'a> From<&'a Entry> for EntryRef<'a> {
    fn from(entry: &'a Entry) -> Self {
        Self {
            stream: &entry.stream,
            id: &entry.id,
        }
    }
}

/// The lease a transaction checks once it holds the lock of every coupon row
/// it writes.
pub struct Lease<'a> {
    book: &'a Book,
    entries: Vec<EntryRef<'a>>,
}

impl Lease<'_> {
    /// Whether every entry was confirmed pending less than `COMMIT_LEASE` ago.
    pub fn holds(&self) -> bool {
        let confirmed = self.book.lock();
        self.entries.iter().all(|e| {
            confirmed
                .get(e.stream)
                .and_then(|held| held.get(e.id))
                .is_some_and(|at| shared::lease::within(*at))
        })
    }
}

/// The books of one worker still alive, for its keep-alive task.
#[derive(Clone, Debug, Default)]
pub struct Leases {
    books: Arc<Mutex<Vec<Weak<Book>>>>,
}

impl Leases {
    /// A new book, kept alive until it is dropped.
    pub fn open(&self) -> Arc<Book> {
        let book = Arc::new(Book::default());
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        books.retain(|b| b.strong_count() > 0);
        books.push(Arc::downgrade(&book));
        book
    }

    fn live(&self) -> Vec<Arc<Book>> {
        let books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        books.iter().filter_map(Weak::upgrade).collect()
    }
}

impl Worker {
    /// Starts the task that, every `every`, re-confirms every entry this worker
    /// holds (XCLAIM JUSTID: resets their idle time without counting a
    /// delivery) and renews the lease of those Redis returned: neither a slow
    /// MySQL statement nor a long backoff lets them go idle long enough for
    /// another member to reclaim them from a live consumer, nor lets the lease of
    /// a batch waiting on MySQL run out while Redis still has it.
    pub(super) fn keep_alive(&self) -> Task {
        let every = (self.settings.claim_idle / 3).min(shared::lease::COMMIT_LEASE / 4);
        let (mut conn, member, leases) = (self.conn.clone(), self.member.clone(), self.leases.clone());
        Task(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                renew_all(&mut conn, &member, &leases.live()).await;
            }
        }))
    }
}

/// One round of the keep-alive over every live book.
async fn renew_all(conn: &mut RedisConn, member: &Member, books: &[Arc<Book>]) {
    let mut by_stream: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for book in books {
        for (stream, ids) in book.held() {
            by_stream.entry(stream).or_default().extend(ids);
        }
    }
    for (stream, ids) in by_stream {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let sent = Instant::now();
        match streams::keep_alive(conn, member, &stream, &ids).await {
            Ok(pending) => books.iter().for_each(|book| book.renew(&stream, &pending, sent)),
            Err(err) => tracing::debug!(%err, %stream, "keep-alive of pending entries failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            stream: "s".into(),
            id: id.into(),
            payload: None,
            position: None,
        }
    }

    #[test]
    fn a_lease_holds_while_every_entry_was_confirmed_recently() {
        let book = Book::default();
        let old = Instant::now()
            .checked_sub(shared::lease::COMMIT_LEASE * 2)
            .unwrap_or_else(Instant::now);
        book.hold(&[entry("1-0"), entry("2-0")], Instant::now());
        let lease = |ids: &[&'static str]| ids.iter().map(|&id| EntryRef { stream: "s", id }).collect();
        assert!(book.lease(lease(&["1-0", "2-0"])).holds());
        book.hold(&[entry("2-0")], old);
        assert!(!book.lease(lease(&["1-0", "2-0"])).holds(), "2-0 is stale");
        book.renew("s", &["2-0".to_string()], Instant::now());
        assert!(book.lease(lease(&["1-0", "2-0"])).holds(), "renewed");
        book.release("s", ["1-0"]);
        assert!(!book.lease(lease(&["1-0"])).holds(), "released entries hold no lease");
        let elsewhere = EntryRef { stream: "t", id: "2-0" };
        assert!(
            !book.lease(vec![elsewhere]).holds(),
            "an entry of another stream is not held"
        );
    }

    #[test]
    fn a_dropped_book_is_no_longer_kept_alive() {
        let leases = Leases::default();
        let kept = leases.open();
        drop(leases.open());
        assert_eq!(leases.live().len(), 1);
        drop(kept);
        assert!(leases.live().is_empty());
    }
}
