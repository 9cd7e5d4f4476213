//! The operator's view of dead letters: listing them (one coupon's, or every
//! partition's) and replaying a coupon's onto its partition stream.

use redis::RedisResult;
use serde::Serialize;
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use shared::redis_conn::RedisConn;
use shared::{CouponId, IssueEvent, Layout};

/// Dead letters read per XRANGE.
const LIST_CHUNK: usize = 1000;

/// One dead letter, as the operator sees it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The coupon of its event; `None` when the event could not be decoded.
    pub coupon_id: Option<i64>,
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Its id in the events stream it came from.
    pub source_id: String,
    pub reason: String,
    /// `None` when the event could not be decoded.
    pub user_id: Option<i64>,
    pub position: String,
    #[serde(skip)]
    payload: Vec<u8>,
}

impl DeadLetter {
    /// Whether the letter is `coupon`'s, or may be: an entry that could not be
    /// decoded names no coupon, and goes with every coupon of its partition.
    fn might_be_of(&self, coupon: CouponId) -> bool {
        self.coupon_id.is_none_or(|id| id == coupon.get())
    }

    fn from_entry(entry: redis::streams::StreamId) -> Self {
        let bytes = |f: &str| match entry.map.get(f) {
            Some(redis::Value::BulkString(b)) => b.clone(),
            _ => Vec::new(),
        };
        let text = |f: &str| String::from_utf8_lossy(&bytes(f)).into_owned();
        let payload = bytes(FIELD_EVENT);
        // Any position will do to read whose it is.
        let event = IssueEvent::decode(Some(&payload), Some(b"1")).ok();
        Self {
            coupon_id: event.as_ref().map(|ev| ev.coupon_id.get()),
            user_id: event.as_ref().map(|ev| ev.user_id.get()),
            source_id: text("source_id"),
            reason: text("reason"),
            position: text(FIELD_POSITION),
            payload,
            id: entry.id,
        }
    }
}

/// The dead letters of `coupon` (in its partition's dead-letter stream, with
/// those of the partition whose coupon is unknown), or of every coupon (every
/// partition's), oldest first in each partition.
pub async fn list(conn: &mut RedisConn, layout: &Layout, coupon: Option<CouponId>) -> RedisResult<Vec<DeadLetter>> {
    let streams: Vec<String> = match coupon {
        Some(coupon) => vec![layout.coupon(coupon).dead],
        None => layout.all().map(|p| p.dead).collect(),
    };
    let mut letters = Vec::new();
    for stream in streams {
        let mut start = "-".to_string();
        loop {
            let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(LIST_CHUNK)
                .query_async(conn)
                .await?;
            let done = range.ids.len() < LIST_CHUNK;
            if let Some(last) = range.ids.last() {
                start = format!("({}", last.id);
            }
            let read = range.ids.into_iter().map(DeadLetter::from_entry);
            letters.extend(read.filter(|l| coupon.is_none_or(|c| l.might_be_of(c))));
            if done {
                break;
            }
        }
    }
    Ok(letters)
}

/// Puts dead letters of `coupon` (as [`list`] finds them) back on its
/// partition's events stream (all, or the one with `only` as id) and clears
/// their users' `failed` mark, atomically each (one slot). Returns how many
/// were replayed.
pub async fn replay(conn: &mut RedisConn, layout: &Layout, coupon: CouponId, only: Option<&str>) -> RedisResult<usize> {
    let keys = layout.coupon(coupon);
    let mut replayed = 0;
    for letter in list(conn, layout, Some(coupon)).await? {
        if only.is_some_and(|id| id != letter.id) {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD")
            .arg(&keys.events)
            .arg("*")
            .arg(FIELD_EVENT)
            .arg(&letter.payload)
            .arg(FIELD_POSITION)
            .arg(letter.position.as_bytes())
            .ignore();
        if let Some(user) = letter.user_id {
            pipe.hdel(&keys.failed, user).ignore();
        }
        pipe.cmd("XDEL").arg(&keys.dead).arg(&letter.id).ignore();
        let () = pipe.query_async(conn).await?;
        replayed += 1;
    }
    Ok(replayed)
}
