//! The answers of a load, counted by code: `accepted` for a 202, the body's
//! `error` code otherwise, `transport:<kind>` for no answer at all.

use crate::client::{ErrorBody, TransportError};
use bytes::Bytes;
use http::StatusCode;
use std::collections::BTreeMap;

/// The count of each kind of answer.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Answers {
    pub accepted: u64,
    pub by_code: BTreeMap<String, u64>,
}

impl Answers {
    /// Counts one answer; true when it was a 202.
    pub fn record(&mut self, answer: &Result<(StatusCode, Bytes), TransportError>) -> bool {
        let code = match answer {
            Ok((StatusCode::ACCEPTED, _)) => {
                self.accepted += 1;
                "accepted".to_string()
            }
            Ok((status, body)) => match serde_json::from_slice::<ErrorBody>(body) {
                Ok(parsed) => parsed.error.to_string(),
                Err(_) => format!("http {}", status.as_u16()),
            },
            Err(err) => format!("transport:{}", err.kind()),
        };
        *self.by_code.entry(code).or_default() += 1;
        matches!(answer, Ok((StatusCode::ACCEPTED, _)))
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: Answers) {
        self.accepted += other.accepted;
        for (code, n) in other.by_code {
            *self.by_code.entry(code).or_default() += n;
        }
    }

    /// Answers in all.
    pub fn total(&self) -> u64 {
        self.by_code.values().sum()
    }

    /// `{accepted: 1000, sold_out: 5}` for a summary line.
    pub fn brief(&self) -> String {
        let parts: Vec<String> = self.by_code.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_their_error_code_and_202s_as_accepted() {
        let mut answers = Answers::default();
        assert!(answers.record(&Ok((StatusCode::ACCEPTED, Bytes::from_static(b"{}")))));
        let sold_out = Bytes::from_static(br#"{"error":"sold_out","message":"gone"}"#);
        assert!(!answers.record(&Ok((StatusCode::CONFLICT, sold_out))));
        assert!(!answers.record(&Ok((StatusCode::BAD_GATEWAY, Bytes::from_static(b"<html>")))));
        assert!(!answers.record(&Err(TransportError::Timeout)));
        let mut other = Answers::default();
        other.record(&Ok((StatusCode::ACCEPTED, Bytes::new())));
        answers.merge(other);
        assert_eq!(answers.accepted, 2);
        assert_eq!(answers.total(), 5);
        assert_eq!(
            answers.brief(),
            "{accepted: 2, http 502: 1, sold_out: 1, transport:timeout: 1}"
        );
    }
}
