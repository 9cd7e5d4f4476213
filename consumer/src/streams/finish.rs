//! What becomes of entries once handled: acks (putting their users back into
//! the coupon's issued set), trimming what every member is done with, and
//! deleting a legacy stream once it is drained.

use super::{EntryId, Member};
use redis::{RedisResult, Script};
use shared::redis_conn::RedisConn;
use std::sync::LazyLock;

/// Entries acked per script call (Lua's `unpack` takes a few thousand values at most).
const ACK_CHUNK: usize = 1000;

/// Acks entries and re-adds their users to the coupon's issued set, with when
/// each was written (its `issued-at` hash, which the status endpoint answers
/// from), but only while the coupon's metadata exists: a set re-created after
/// the state expired would never expire, and one of a lost state is rebuilt
/// from MySQL anyway (its `issued-at` too). What this creates (or grows)
/// expires with the metadata. Then publishes a [`shared::StatusNote`] on the
/// partition's channel, waking the API's long-polls of these users.
/// KEYS: the events stream, the coupon's meta, its issued set, its issued-at
/// hash (one slot). ARGV: the group, n, the channel, the coupon, n entry ids,
/// then m users and their m issued_at (unix ms).
static ACK_WRITTEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local n = tonumber(ARGV[2]) \
         local m = (#ARGV - 4 - n) / 2 \
         if m > 0 and redis.call('EXISTS', KEYS[2]) == 1 then \
           local ttl = redis.call('PTTL', KEYS[2]) \
           local users = 4 + n \
           local grew = redis.call('SADD', KEYS[3], unpack(ARGV, users + 1, users + m)) > 0 \
           local times = {} \
           for i = 1, m do times[2 * i - 1] = ARGV[users + i] times[2 * i] = ARGV[users + m + i] end \
           redis.call('HSET', KEYS[4], unpack(times)) \
           if ttl > 0 then \
             if grew then redis.call('PEXPIRE', KEYS[3], ttl) end \
             redis.call('PEXPIRE', KEYS[4], ttl) \
           end \
         end \
         local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + n)) \
         if m > 0 then \
           redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. table.concat(ARGV, ' ', 5 + n, 4 + n + m)) \
         end \
         return acked",
    )
});

/// The coupon state an ack puts the written users back into.
#[derive(Clone, Copy, Debug)]
pub struct IssuedSet<'a> {
    pub coupon: shared::CouponId,
    pub keys: &'a shared::CouponKeys,
}

/// Users written to MySQL, each with when its row says it was issued (unix ms).
#[derive(Clone, Copy, Debug)]
pub struct WrittenUsers<'a> {
    pub users: &'a [i64],
    pub issued_at_ms: &'a [i64],
}

/// Acknowledges `ids` of `stream` once their rows are committed, and puts their
/// users (all now in MySQL) into the coupon's issued set (`set`, in the
/// stream's slot; `None` for a legacy stream, whose coupon's state is rebuilt
/// only once it is drained). Normally they are members already; but if Redis
/// lost its data and the API rebuilt the set from MySQL while this batch was in
/// flight, the rebuild missed them, and without this they could be accepted a
/// second time. Their issued_at goes to the coupon's `issued-at` hash in the
/// same step, so no status read can see an entry acked but not yet recorded.
pub async fn ack_written(
    conn: &mut RedisConn,
    member: &Member,
    stream: &str,
    set: Option<IssuedSet<'_>>,
    ids: &[&str],
    written: WrittenUsers<'_>,
) -> RedisResult<()> {
    let Some(set) = set else {
        for chunk in ids.chunks(ACK_CHUNK) {
            let _: i64 = redis::cmd("XACK")
                .arg(stream)
                .arg(&member.group)
                .arg(chunk)
                .query_async(conn)
                .await?;
        }
        return Ok(());
    };
    let users = written
        .users
        .chunks(ACK_CHUNK)
        .zip(written.issued_at_ms.chunks(ACK_CHUNK));
    for (ids, (users, times)) in ids.chunks(ACK_CHUNK).zip(users) {
        let keys = set.keys;
        let _: i64 = ACK_WRITTEN
            .key(stream)
            .key(&keys.meta)
            .key(&keys.issued)
            .key(&keys.issued_at)
            .arg(&member.group)
            .arg(ids.len())
            .arg(&keys.partition.written)
            .arg(set.coupon.get())
            .arg(ids)
            .arg(users)
            .arg(times)
            .invoke_async(conn)
            .await?;
    }
    Ok(())
}

/// Trims the entries every member of the group is done with: below the oldest
/// pending entry and below the group's last delivered id, so nothing pending or
/// unread goes. (Its length and lag are measured by [`super::lag::measure`].)
pub async fn trim(conn: &mut RedisConn, member: &Member, stream: &str) -> RedisResult<()> {
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let Some(group) = groups.groups.into_iter().find(|g| g.name == member.group) else {
        return Ok(());
    };
    let summary: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&member.group)
        .query_async(conn)
        .await?;
    let oldest_pending = match &summary {
        redis::streams::StreamPendingReply::Data(data) => Some(data.start_id.clone()),
        _ => None,
    };
    let last_delivered: EntryId = group.last_delivered_id.parse()?;
    let min_id = match oldest_pending {
        Some(pending) => pending.parse::<EntryId>()?.min(last_delivered),
        None => last_delivered,
    };
    redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(min_id.to_string())
        .query_async::<i64>(conn)
        .await?;
    Ok(())
}

/// Deletes the stream once the group has read every entry (its last delivered
/// id is the stream's last generated id) and acked them all, in one step, so
/// an entry added meanwhile (by an API of the old layout still running) is
/// never deleted unread. KEYS: the stream. ARGV: the group. Returns 1 when the
/// stream is gone (deleted now, or before).
static DROP_IF_DRAINED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end \
         local function field(flat, name) \
           for i = 1, #flat, 2 do if flat[i] == name then return flat[i + 1] end end \
         end \
         local last = field(redis.call('XINFO', 'STREAM', KEYS[1]), 'last-generated-id') \
         for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do \
           if field(group, 'name') == ARGV[1] then \
             if field(group, 'pending') == 0 and field(group, 'last-delivered-id') == last then \
               redis.call('DEL', KEYS[1]) \
               return 1 \
             end \
             return 0 \
           end \
         end \
         return 0",
    )
});

/// Deletes `stream` (a legacy stream) if the group is done with every entry of
/// it; returns whether it is gone.
pub async fn drop_if_drained(conn: &mut RedisConn, member: &Member, stream: &str) -> RedisResult<bool> {
    let gone: i64 = DROP_IF_DRAINED
        .key(stream)
        .arg(&member.group)
        .invoke_async(conn)
        .await?;
    Ok(gone == 1)
}
