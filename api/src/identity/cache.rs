//! Tokens verified lately, so that the same token sent again (a person
//! pressing twice, a bot hammering) costs a hash lookup instead of a signature
//! check (an ES256 verify is tens of µs, several times a whole request).
//! Keyed by the token's SHA-256; an entry is believed until the token's own
//! `exp` (plus the leeway), the same test `jsonwebtoken` makes. Fixed size:
//! a full shard drops what has expired, or else everything, and the next
//! request of a dropped token is simply verified again.

use shared::UserId;
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;

/// A token's SHA-256 → what its verification found.
type Shard = HashMap<[u8; 32], Verified>;

/// Verified tokens and their users.
pub struct VerifiedTokens {
    shards: Box<[Mutex<Shard>]>,
    capacity_per_shard: usize,
}

#[derive(Clone, Copy)]
struct Verified {
    user: UserId,
    /// Unix seconds after which the token is no longer accepted (`exp` + leeway).
    until: u64,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> Self {
        let capacity_per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_capacity(capacity_per_shard)))
                .collect(),
            capacity_per_shard,
        }
    }

    /// The user of `token` if it was verified and is still within its `exp`.
    pub fn get(&self, digest: &[u8; 32], now: u64) -> Option<UserId> {
        let shard = self.shard(digest);
        let found = shard.get(digest).copied()?;
        (now <= found.until).then_some(found.user)
    }

    /// Remembers that `digest`'s token is `user`'s until `until`.
    pub fn insert(&self, digest: [u8; 32], user: UserId, until: u64, now: u64) {
        let mut shard = self.shard(&digest);
        if shard.len() >= self.capacity_per_shard {
            shard.retain(|_, verified| verified.until >= now);
            if shard.len() >= self.capacity_per_shard {
                shard.clear();
            }
        }
        shard.insert(digest, Verified { user, until });
    }

    fn shard(&self, digest: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard> {
        // SHA-256 output is uniform: its first byte picks the shard.
        let index = usize::from(digest[0]) % SHARDS;
        // A poisoned lock only means a panic mid-insert: the map is still usable.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The key a token is remembered by.
pub fn digest(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}
