//! Reading a Server-Sent Events stream (`GET /coupons/{coupon_id}/live`) as
//! a browser's `EventSource` would: events with JSON data, comment lines
//! (heartbeats), and how the stream ended.

use serde_json::Value;

/// One thing a stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An event's `data`, as JSON.
    Data(Value),
    /// A comment line (`:` first): the server's heartbeat.
    Heartbeat,
    /// The server ended the body properly (the last chunk came).
    Ended,
    /// The connection broke instead (reset, or closed mid-body).
    Broken(String),
}

/// An open stream.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Messages parsed from the buffer and not yet returned.
    ready: std::collections::VecDeque<Message>,
}

/// Opens `url`; the status and error body when it is no stream.
pub async fn open(http: &reqwest::Client, url: &str) -> Result<EventStream, (u16, Value)> {
    let response = http
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let is_stream = response
        .headers()
        .get("content-type")
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
    if status != 200 || !is_stream {
        let body = response.bytes().await.unwrap_or_default();
        return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    Ok(EventStream {
        response,
        buffer: String::new(),
        ready: Default::default(),
    })
}

impl EventStream {
    /// A header of the answer that opened the stream.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    /// The next message; after [`Message::Ended`] or [`Message::Broken`], that again.
    pub async fn next(&mut self) -> Message {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return message;
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk));
                    self.parse();
                }
                Ok(None) => return Message::Ended,
                Err(err) => return Message::Broken(err.to_string()),
            }
        }
    }

    /// The next event's data, skipping heartbeats; `Err` with how the stream ended.
    pub async fn next_data(&mut self) -> Result<Value, Message> {
        loop {
            match self.next().await {
                Message::Data(data) => return Ok(data),
                Message::Heartbeat => {}
                end => return Err(end),
            }
        }
    }

    /// Moves every complete block (ended by a blank line) to `ready`.
    fn parse(&mut self) {
        while let Some(at) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..at + 2).collect();
            let mut data = Vec::new();
            let mut comment = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    comment = true;
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                }
            }
            if !data.is_empty() {
                let text = data.join("\n");
                let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("event data {text:?}: {e}"));
                self.ready.push_back(Message::Data(json));
            } else if comment {
                self.ready.push_back(Message::Heartbeat);
            }
        }
    }
}
