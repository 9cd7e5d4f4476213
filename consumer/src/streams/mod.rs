//! The consumer's side of the Redis streams: the group, reads, acks, reclaims,
//! keep-alives and trimming. Every command names one stream (one cluster slot),
//! except the multi-stream XREADGROUP.

use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply};
use redis::{RedisResult, Value};
use shared::redis_conn::RedisConn;

mod entry;

pub use entry::{Entry, EntryId};

/// Who this consumer is in which group.
#[derive(Clone, Debug)]
pub struct Member {
    pub group: String,
    pub name: String,
}

/// Whether Redis answered that the group (or its stream) is gone, as after a
/// restart without persistence or a FLUSHALL.
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

/// Creates the group on `stream` (and the stream) if missing. Reading from `0`
/// means entries written before the group existed are not skipped.
pub async fn ensure_group(conn: &mut RedisConn, member: &Member, stream: &str) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(&member.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// How long a cluster-mode read pauses when every stream was empty.
const CLUSTER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads up to `count` new entries across `streams`. Standalone: one
/// XREADGROUP over all streams, blocking up to `block_ms`. Cluster: the streams
/// live in different slots (one per coupon), so each is read on its own, without
/// BLOCK (a blocked read would hold its node's connection for every command
/// behind it), pausing briefly when all were empty.
pub async fn read_new(
    conn: &mut RedisConn,
    member: &Member,
    streams: &[String],
    count: usize,
    block_ms: u64,
) -> RedisResult<Vec<Entry>> {
    if !conn.is_cluster() {
        return xreadgroup(conn, member, streams, count, Some(block_ms)).await;
    }
    let mut entries = Vec::new();
    for stream in streams {
        if entries.len() >= count {
            break;
        }
        let want = count - entries.len();
        match xreadgroup(conn, member, std::slice::from_ref(stream), want, None).await {
            Ok(read) => entries.extend(read),
            // What was read is pending with us already: hand it on rather than
            // leave it to be reclaimed (one more delivery counted).
            Err(err) if !entries.is_empty() => {
                tracing::warn!(%err, %stream, "reading a stream failed; handling what was read so far");
                return Ok(entries);
            }
            Err(err) => return Err(err),
        }
    }
    if entries.is_empty() {
        tokio::time::sleep(CLUSTER_POLL.min(std::time::Duration::from_millis(block_ms))).await;
    }
    Ok(entries)
}

async fn xreadgroup(
    conn: &mut RedisConn,
    member: &Member,
    streams: &[String],
    count: usize,
    block_ms: Option<u64>,
) -> RedisResult<Vec<Entry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&member.group)
        .arg(&member.name)
        .arg("COUNT")
        .arg(count);
    if let Some(block_ms) = block_ms {
        cmd.arg("BLOCK").arg(block_ms);
    }
    cmd.arg("STREAMS").arg(streams);
    for _ in streams {
        cmd.arg(">");
    }
    let reply: Value = cmd.query_async(conn).await?;
    entry::parse_read_reply(reply)
}

/// Takes over entries of `stream` idle for `min_idle_ms` or more, whoever holds
/// them (XAUTOCLAIM, cursor followed to the end or until `count`). Returns the
/// entries and how many ids Redis reported deleted (dropped from the PEL by Redis).
pub async fn autoclaim(
    conn: &mut RedisConn,
    member: &Member,
    stream: &str,
    min_idle_ms: u64,
    count: usize,
) -> RedisResult<(Vec<Entry>, usize)> {
    let mut cursor = "0-0".to_string();
    let mut entries = Vec::new();
    let mut deleted = 0;
    loop {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(&member.group)
            .arg(&member.name)
            .arg(min_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count.saturating_sub(entries.len()).max(1))
            .query_async(conn)
            .await?;
        deleted += reply.deleted_ids.len();
        entries.extend(reply.claimed.into_iter().map(|id| Entry::from_stream_id(stream, id)));
        cursor = reply.next_stream_id;
        if cursor == "0-0" || entries.len() >= count {
            return Ok((entries, deleted));
        }
    }
}

/// Up to `count` entries of `stream` after the id `after` (from the start when
/// `None`), oldest first, whoever holds them.
pub async fn range_after(
    conn: &mut RedisConn,
    stream: &str,
    after: Option<&str>,
    count: usize,
) -> RedisResult<Vec<Entry>> {
    use redis::AsyncCommands;
    let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
    let range: redis::streams::StreamRangeReply = conn.xrange_count(stream, start, "+", count).await?;
    Ok(range
        .ids
        .into_iter()
        .map(|id| Entry::from_stream_id(stream, id))
        .collect())
}

/// This member's own pending entries of `stream` (left by an earlier run under
/// the same name), claimed back with their data.
pub async fn own_pending(conn: &mut RedisConn, member: &Member, stream: &str, count: usize) -> RedisResult<Vec<Entry>> {
    let pending: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&member.group)
        .arg("-")
        .arg("+")
        .arg(count)
        .arg(&member.name)
        .query_async(conn)
        .await?;
    if pending.ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = pending.ids.iter().map(|p| p.id.as_str()).collect();
    let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
        .arg(stream)
        .arg(&member.group)
        .arg(&member.name)
        .arg(0)
        .arg(&ids)
        .query_async(conn)
        .await?;
    Ok(claimed
        .ids
        .into_iter()
        .map(|id| Entry::from_stream_id(stream, id))
        .collect())
}

/// How many times each of `ids` (pending with this member) was delivered.
pub async fn delivery_counts(
    conn: &mut RedisConn,
    member: &Member,
    stream: &str,
    ids: &[&str],
) -> RedisResult<Vec<(String, usize)>> {
    let parsed = ids.iter().map(|id| id.parse()).collect::<RedisResult<Vec<EntryId>>>()?;
    let (Some(first), Some(last)) = (parsed.iter().min(), parsed.iter().max()) else {
        return Ok(Vec::new());
    };
    let pending: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&member.group)
        .arg(first.to_string())
        .arg(last.to_string())
        .arg(ids.len() * 2 + 16)
        .arg(&member.name)
        .query_async(conn)
        .await?;
    Ok(pending.ids.into_iter().map(|p| (p.id, p.times_delivered)).collect())
}

/// Resets the idle time of entries this member is still working on (XCLAIM
/// JUSTID does not count a delivery), so that a live member retrying through a
/// MySQL outage is not mistaken for a dead one. Returns the ids still pending in
/// the group (now with this member): the others were acked, or deleted from the
/// stream, or lost with Redis' data.
pub async fn keep_alive(conn: &mut RedisConn, member: &Member, stream: &str, ids: &[&str]) -> RedisResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("XCLAIM")
        .arg(stream)
        .arg(&member.group)
        .arg(&member.name)
        .arg(0)
        .arg(ids)
        .arg("JUSTID")
        .query_async(conn)
        .await
}

/// Acknowledges `ids` of `stream` once their rows are committed, and puts their
/// users (all now in MySQL) into the coupon's issued set. Normally they are
/// members already; but if Redis lost its data and the API rebuilt the set from
/// MySQL while this batch was in flight, the rebuild missed them, and without
/// this they could be accepted a second time. One pipeline, one slot.
pub async fn ack_written(
    conn: &mut RedisConn,
    member: &Member,
    stream: &str,
    issued: &str,
    ids: &[&str],
    users: &[i64],
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    if !users.is_empty() {
        pipe.sadd(issued, users).ignore();
    }
    pipe.cmd("XACK").arg(stream).arg(&member.group).arg(ids).ignore();
    pipe.query_async::<()>(conn).await
}

/// The stream's length and its pending count in our group, and trims entries
/// every member of the group is done with: below the oldest pending entry and
/// below the group's last delivered id, so nothing pending or unread goes.
pub async fn trim(conn: &mut RedisConn, member: &Member, stream: &str) -> RedisResult<(u64, u64)> {
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let Some(group) = groups.groups.into_iter().find(|g| g.name == member.group) else {
        return Ok((0, 0));
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
    let (_, len): (i64, u64) = redis::pipe()
        .cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(min_id.to_string())
        .cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await?;
    Ok((len, group.pending as u64))
}
