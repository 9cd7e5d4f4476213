//! Redis' side of "nothing pending": a consumer group that has been delivered
//! every entry of its stream and acked them all.

use redis::aio::ConnectionLike;
use redis::streams::{StreamInfoGroupsReply, StreamInfoStreamReply};
use redis::AsyncCommands;

/// Whether `group` has read the whole of `stream` and acked everything; `false`
/// while the group does not exist yet.
pub async fn drained<C>(conn: &mut C, stream: &str, group: &str) -> redis::RedisResult<bool>
where
    C: ConnectionLike + Send + Sync,
{
    let info: StreamInfoStreamReply = conn.xinfo_stream(stream).await?;
    let groups: StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    Ok(groups
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .is_some_and(|g| g.pending == 0 && g.last_delivered_id == info.last_generated_id))
}
