//! The consumer's side of the Redis streams: the group, reads, reclaims and
//! keep-alives ([`finish`]: acks, trimming, dropping a drained legacy stream;
//! [`lag`]: how far behind the group is, in time; [`scan`]: finding keys;
//! [`source`]: what a stream is). Every command names
//! one stream (one cluster slot), except the multi-stream XREADGROUP.

use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply};
use redis::{RedisResult, Value};
use shared::redis_conn::RedisConn;

mod entry;
pub mod finish;
pub mod lag;
pub mod scan;
mod source;

pub use entry::{Entry, EntryId};
pub use finish::{ack_written, drop_if_drained, trim};
pub use lag::StreamLag;
pub use source::Source;

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

/// What [`ensure_group`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// It was missing and is created now (with the stream, if that was asked).
    Created,
    /// It was there already.
    Existed,
    /// The stream is gone and was not to be created (a drained legacy stream).
    NoStream,
}

/// Creates the group on `stream` if missing, and the stream too when
/// `create_stream` (a partition's; never a legacy stream, which must stay gone
/// once drained). Reading from `0` means entries written before the group
/// existed are not skipped.
pub async fn ensure_group(
    conn: &mut RedisConn,
    member: &Member,
    stream: &str,
    create_stream: bool,
) -> RedisResult<Group> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(stream).arg(&member.group).arg("0");
    if create_stream {
        cmd.arg("MKSTREAM");
    }
    match cmd.query_async::<()>(conn).await {
        Ok(()) => Ok(Group::Created),
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(Group::Existed),
        Err(err) if !create_stream && err.detail().is_some_and(|d| d.contains("key to exist")) => Ok(Group::NoStream),
        Err(err) => Err(err),
    }
}

/// How long a cluster-mode read pauses when every stream was empty.
const CLUSTER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads up to `count` new entries from each of `streams` (so at most
/// `count` × streams, whatever the backlog). Standalone: one XREADGROUP over
/// all streams, blocking up to `block_ms`. Cluster: the streams live in
/// different slots, so each is read on its own (all at once), without BLOCK (a
/// blocked read would hold its node's connection for every command behind it),
/// pausing briefly when all were empty.
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
    let reads = streams.iter().map(|stream| {
        let mut conn = conn.clone();
        async move { xreadgroup(&mut conn, member, std::slice::from_ref(stream), count, None).await }
    });
    let mut entries = Vec::new();
    let mut failed = None;
    for (read, stream) in futures::future::join_all(reads).await.into_iter().zip(streams) {
        match read {
            Ok(read) => entries.extend(read),
            // Redis lost the group (or another member drained and deleted a
            // legacy stream): the other streams' entries are handed on all the same.
            Err(err) if is_nogroup(&err) => {
                let partition = shared::LegacyKeys::coupon_of_events_stream(stream).is_none();
                match ensure_group(conn, member, stream, partition).await {
                    Ok(Group::Created) => {
                        tracing::warn!(%stream, "consumer group missing (Redis lost its data?), recreated it")
                    }
                    Ok(_) => {}
                    Err(err) => failed = Some(err),
                }
            }
            Err(err) => {
                tracing::warn!(%err, %stream, "reading a stream failed");
                failed = Some(err);
            }
        }
    }
    match failed {
        // What was read is pending with us already: hand it on rather than
        // leave it to be reclaimed (one more delivery counted).
        Some(err) if entries.is_empty() => Err(err),
        _ => {
            if entries.is_empty() {
                tokio::time::sleep(CLUSTER_POLL.min(std::time::Duration::from_millis(block_ms))).await;
            }
            Ok(entries)
        }
    }
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
