//! The issue event: what the API's script appends to a coupon's stream and a
//! consumer turns into a `coupon_issues` row.
//!
//! A stream entry has two fields: [`FIELD_EVENT`], the event as a named
//! MessagePack map (`rmp-serde`, so fields can be added later with
//! `#[serde(default)]`), and [`FIELD_POSITION`], the user's place among the
//! accepted. The position lives in its own field because only the Lua script
//! knows it, and Lua numbers can not carry 64-bit ids to re-encode the map.

use crate::ids::{CouponId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Stream entry field holding the MessagePack-encoded [`IssueEvent`].
pub const FIELD_EVENT: &str = "ev";
/// Stream entry field holding the position the script assigned.
pub const FIELD_POSITION: &str = "pos";

/// One accepted issue request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueEvent {
    pub coupon_id: CouponId,
    pub user_id: UserId,
    /// When the API accepted the request, milliseconds since the Unix epoch.
    pub accepted_at_ms: i64,
    /// 1-based place among the accepted; filled from [`FIELD_POSITION`].
    #[serde(default)]
    pub position: i64,
    /// W3C trace context (`traceparent`, `tracestate`) of the accepting request.
    #[serde(default)]
    pub trace: HashMap<String, String>,
}

/// Why a stream entry is not a valid event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("entry has no `{0}` field")]
    MissingField(&'static str),
    #[error("event is not valid MessagePack for an issue event: {0}")]
    Payload(#[from] rmp_serde::decode::Error),
    #[error("position is not a positive integer")]
    Position,
}

impl IssueEvent {
    /// The bytes the script stores in [`FIELD_EVENT`].
    pub fn encode(&self) -> Vec<u8> {
        #[allow(clippy::expect_used)]
        rmp_serde::to_vec_named(self).expect(
            "writing integers and a map of strings into a Vec can not fail: \
             the Vec takes every byte and each of them has a known length",
        )
    }

    /// Rebuilds the event from an entry's two fields.
    pub fn decode(payload: Option<&[u8]>, position: Option<&[u8]>) -> Result<Self, DecodeError> {
        let payload = payload.ok_or(DecodeError::MissingField(FIELD_EVENT))?;
        let position = position.ok_or(DecodeError::MissingField(FIELD_POSITION))?;
        let mut event: IssueEvent = rmp_serde::from_slice(payload)?;
        event.position = std::str::from_utf8(position)
            .ok()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| *p >= 1)
            .ok_or(DecodeError::Position)?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> IssueEvent {
        IssueEvent {
            coupon_id: CouponId::new(7).unwrap(),
            user_id: UserId::new(i64::MAX).unwrap(),
            accepted_at_ms: 1_764_000_000_000,
            position: 0,
            trace: HashMap::from([("traceparent".into(), "00-abc-def-01".into())]),
        }
    }

    #[test]
    fn an_event_survives_the_stream_with_its_position() {
        let decoded = IssueEvent::decode(Some(&event().encode()), Some(b"12")).unwrap();
        assert_eq!(
            decoded,
            IssueEvent {
                position: 12,
                ..event()
            }
        );
    }

    #[test]
    fn older_events_without_trace_context_still_decode() {
        #[derive(Serialize)]
        struct Old {
            coupon_id: i64,
            user_id: i64,
            accepted_at_ms: i64,
        }
        let bytes = rmp_serde::to_vec_named(&Old {
            coupon_id: 1,
            user_id: 2,
            accepted_at_ms: 3,
        })
        .unwrap();
        let decoded = IssueEvent::decode(Some(&bytes), Some(b"1")).unwrap();
        assert!(decoded.trace.is_empty());
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(IssueEvent::decode(Some(b"\xc1garbage"), Some(b"1")).is_err());
        assert!(IssueEvent::decode(Some(&event().encode()), Some(b"0")).is_err());
        assert!(IssueEvent::decode(None, Some(b"1")).is_err());
    }
}
