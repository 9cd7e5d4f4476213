//! What a stream read gives the consumer: entries (id, event and position
//! fields, still undecoded) parsed from the raw replies, and their ids ordered
//! as Redis orders them.

use redis::streams::StreamId;
use redis::{ErrorKind, RedisError, RedisResult, Value};
use shared::event::{FIELD_EVENT, FIELD_POSITION};
use std::fmt;
use std::str::FromStr;

/// One entry as read from a stream, before decoding.
#[derive(Clone, Debug)]
pub struct Entry {
    pub stream: String,
    pub id: String,
    pub payload: Option<Vec<u8>>,
    pub position: Option<Vec<u8>>,
}

impl Entry {
    pub(super) fn from_stream_id(stream: &str, entry: StreamId) -> Self {
        let bytes = |field: &str| match entry.map.get(field) {
            Some(Value::BulkString(b)) => Some(b.clone()),
            Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
            _ => None,
        };
        Self {
            stream: stream.to_string(),
            payload: bytes(FIELD_EVENT),
            position: bytes(FIELD_POSITION),
            id: entry.id,
        }
    }
}

/// A stream entry id, `<ms>-<seq>`, ordered numerically as Redis orders them
/// (as text, `9-0` would sort after `10-0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    ms: u64,
    seq: u64,
}

impl FromStr for EntryId {
    /// The ids come from Redis's replies: one that does not parse is a malformed reply.
    type Err = RedisError;

    fn from_str(id: &str) -> RedisResult<Self> {
        let parsed = id.split_once('-').and_then(|(ms, seq)| {
            // Digits only: `u64::from_str` would also take a leading `+`.
            let number = |s: &str| match s.bytes().all(|b| b.is_ascii_digit()) {
                true => s.parse::<u64>().ok(),
                false => None,
            };
            Some(Self {
                ms: number(ms)?,
                seq: number(seq)?,
            })
        });
        parsed.ok_or_else(|| {
            RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "malformed stream entry id",
                id.to_string(),
            ))
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Parses an XREADGROUP reply straight into entries. redis-rs's
/// `StreamReadReply` builds a map of owned values per entry; the benchmark
/// showed that parsing as a third of the consumer's CPU.
pub(super) fn parse_read_reply(reply: Value) -> RedisResult<Vec<Entry>> {
    let malformed = || RedisError::from((ErrorKind::UnexpectedReturnType, "malformed XREADGROUP reply"));
    let streams: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((pair.next().unwrap_or(Value::Nil), pair.next().unwrap_or(Value::Nil)))
                }
                _ => Err(malformed()),
            })
            .collect::<RedisResult<_>>()?,
        Value::Map(pairs) => pairs,
        _ => return Err(malformed()),
    };
    let mut entries = Vec::new();
    for (key, items) in streams {
        let stream: String = redis::from_redis_value(key)?;
        let Value::Array(items) = items else {
            return Err(malformed());
        };
        entries.reserve(items.len());
        for item in items {
            let Value::Array(parts) = item else {
                return Err(malformed());
            };
            let mut parts = parts.into_iter();
            let id: String = redis::from_redis_value(parts.next().unwrap_or(Value::Nil))?;
            let mut entry = Entry {
                stream: stream.clone(),
                id,
                payload: None,
                position: None,
            };
            // A deleted entry still pending comes back with nil fields.
            if let Some(Value::Array(fields)) = parts.next() {
                let mut fields = fields.into_iter();
                while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                    let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
                        continue;
                    };
                    if name == FIELD_EVENT.as_bytes() {
                        entry.payload = Some(value);
                    } else if name == FIELD_POSITION.as_bytes() {
                        entry.position = Some(value);
                    }
                }
            }
            entries.push(entry);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::EntryId;

    #[test]
    fn a_read_reply_becomes_entries_with_their_event_and_position() {
        use redis::Value::{Array, BulkString, Nil};
        let bulk = |s: &str| BulkString(s.as_bytes().to_vec());
        let reply = Array(vec![Array(vec![
            bulk("coupon:{7}:events"),
            Array(vec![
                Array(vec![
                    bulk("1-0"),
                    Array(vec![bulk("ev"), bulk("E"), bulk("pos"), bulk("3")]),
                ]),
                Array(vec![bulk("2-0"), Nil]),
            ]),
        ])]);
        let entries = super::parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].stream.as_str(), entries[0].id.as_str()),
            ("coupon:{7}:events", "1-0")
        );
        assert_eq!(
            (entries[0].payload.as_deref(), entries[0].position.as_deref()),
            (Some(&b"E"[..]), Some(&b"3"[..]))
        );
        assert_eq!((entries[1].payload.as_deref(), entries[1].id.as_str()), (None, "2-0"));
        assert!(super::parse_read_reply(Nil).unwrap().is_empty());
        assert!(super::parse_read_reply(bulk("x")).is_err());
    }

    #[test]
    fn stream_ids_compare_as_numbers_not_text() {
        let id = |s: &str| s.parse::<EntryId>().unwrap();
        assert!(id("9-0") < id("10-0"));
        assert!(id("10-2") < id("10-10"));
        assert_eq!(id("10-2"), id("10-2"));
        assert_eq!(id("10-2").to_string(), "10-2");
    }

    #[test]
    fn a_malformed_stream_id_is_an_error_not_zero() {
        for bad in ["", "10", "x-1", "1-x", "-1", "1-", "1-2-3", "+1-0"] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad}");
        }
    }
}
