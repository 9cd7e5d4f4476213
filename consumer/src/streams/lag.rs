//! How far a group is behind on one stream, in time: the age of its oldest
//! pending entry and of its oldest undelivered one, read in one script call
//! per stream whatever its length (entry ids start with the millisecond Redis
//! added them, so an age is Redis' clock minus the id's time; no clock of ours
//! is compared with Redis').

use super::Member;
use redis::{RedisResult, Script};
use shared::redis_conn::RedisConn;
use std::sync::LazyLock;
use std::time::Duration;

/// The stream's length and, for the group (`ARGV[1]`), its pending count, the
/// pending count of member `ARGV[2]`, and the ages in ms (`-1`: none) of the
/// oldest pending entry (XPENDING's smallest id) and of the oldest entry not
/// yet delivered (the first after the group's last-delivered-id). Each command
/// is O(1) or O(members of the group). KEYS: the stream.
static MEASURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local t = redis.call('TIME') \
         local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
         local function age(id) \
           if not id then return -1 end \
           return math.max(0, now - tonumber(string.match(id, '^(%d+)'))) \
         end \
         if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, -1, -1} end \
         local last = nil \
         for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
           local name, delivered = nil, nil \
           for i = 1, #group, 2 do \
             if group[i] == 'name' then name = group[i + 1] end \
             if group[i] == 'last-delivered-id' then delivered = group[i + 1] end \
           end \
           if name == ARGV[1] then last = delivered end \
         end \
         local len = redis.call('XLEN', KEYS[1]) \
         if not last then return {len, 0, 0, -1, -1} end \
         local summary = redis.call('XPENDING', KEYS[1], ARGV[1]) \
         local own = 0 \
         if type(summary[4]) == 'table' then \
           for _, holder in ipairs(summary[4]) do \
             if holder[1] == ARGV[2] then own = tonumber(holder[2]) end \
           end \
         end \
         local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)[1] \
         return {len, summary[1], own, age(summary[2]), age(first and first[1])}",
    )
});

/// One stream's lag for a group, as [`measure`] read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLag {
    /// Entries in the stream.
    pub length: u64,
    /// Entries delivered to some member and not acked yet.
    pub pending: u64,
    /// Of those, the ones delivered to the member asking.
    pub own_pending: u64,
    /// How long ago the oldest pending entry was added (`None`: nothing pending).
    pub oldest_pending: Option<Duration>,
    /// How long ago the oldest entry no member has read yet was added.
    pub oldest_undelivered: Option<Duration>,
}

impl StreamLag {
    /// Whether `member` has anything to do here: entries it holds, or entries
    /// nobody has read (any live member would take them on its next read).
    pub fn has_work(&self) -> bool {
        self.own_pending > 0 || self.oldest_undelivered.is_some()
    }
}

/// The lag of `member`'s group on `stream` (all zero when the stream or the
/// group does not exist).
pub async fn measure(conn: &mut RedisConn, member: &Member, stream: &str) -> RedisResult<StreamLag> {
    let (length, pending, own_pending, pending_ms, undelivered_ms): (u64, u64, u64, i64, i64) = MEASURE
        .key(stream)
        .arg(&member.group)
        .arg(&member.name)
        .invoke_async(conn)
        .await?;
    let age = |ms: i64| u64::try_from(ms).ok().map(Duration::from_millis);
    Ok(StreamLag {
        length,
        pending,
        own_pending,
        oldest_pending: age(pending_ms),
        oldest_undelivered: age(undelivered_ms),
    })
}
