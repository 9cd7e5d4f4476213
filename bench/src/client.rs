//! HTTP to coupon-api: hyper's HTTP/1 client with a keep-alive pool sized to the
//! load, the hot `POST /coupons/{id}/issue` call with a pre-serialized body, its
//! answers parsed with borrowed strings, and the few admin and read calls the
//! setup and the verification make.

use crate::tokens::Minter;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::time::Duration;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made: the request was never sent.
    #[error("connect: {0}")]
    Connect(String),
    /// No full answer within `--timeout`.
    #[error("timed out")]
    Timeout,
    /// The connection failed while sending or before the answer's head.
    #[error("request: {0}")]
    Request(String),
    /// The answer's body broke off.
    #[error("body: {0}")]
    Body(String),
}

impl TransportError {
    /// A short name to count errors by.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "connect",
            TransportError::Timeout => "timeout",
            TransportError::Request(_) => "request",
            TransportError::Body(_) => "body",
        }
    }

    /// Whether the server may have acted on the request: everything but a
    /// failed connect.
    pub fn maybe_processed(&self) -> bool {
        !matches!(self, TransportError::Connect(_))
    }
}

/// A setup or verification call that did not get the answer it needs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: unexpected answer: {source}")]
    Decode { what: String, source: serde_json::Error },
    #[error("bad URL {0}")]
    Url(String),
}

/// The body of a 202.
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct AcceptedBody<'a> {
    pub coupon_id: i64,
    pub user_id: i64,
    pub status: &'a str,
    pub position: i64,
}

/// The body of every error answer (only `error` is read).
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

/// `GET /coupons/{id}`: what the verification needs.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CouponState {
    pub id: i64,
    pub total_quantity: i64,
    pub issued_quantity: i64,
}

/// `POST /coupons`' answer: only the id is needed.
#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// coupon-api over one keep-alive connection pool.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    json: HeaderValue,
    /// Signs a token for each issue and status request's user, when the API
    /// verifies them.
    minter: Option<std::sync::Arc<Minter>>,
}

impl Api {
    /// `pool` connections are kept alive: as many as requests in flight at once.
    pub fn new(base: &str, pool: usize, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .build(connector);
        Self {
            client,
            base: base.to_string(),
            timeout,
            json: HeaderValue::from_static("application/json"),
            minter: None,
        }
    }

    /// Issue and status requests carry a token from `minter`.
    pub fn with_minter(mut self, minter: Option<Minter>) -> Self {
        self.minter = minter.map(std::sync::Arc::new);
        self
    }

    /// `Authorization: Bearer` with `user`'s token, when tokens are minted.
    fn authorize<B>(&self, request: &mut Request<B>, user: i64) -> Result<(), String> {
        let Some(minter) = &self.minter else {
            return Ok(());
        };
        let token = minter.token(user).map_err(|err| err.to_string())?;
        let bearer = HeaderValue::try_from(format!("Bearer {token}")).map_err(|err| err.to_string())?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        Ok(())
    }

    /// `base` + `path` as a URI.
    pub fn uri(&self, path: &str) -> Result<Uri, ApiError> {
        let url = format!("{}{path}", self.base);
        url.parse().map_err(|_| ApiError::Url(url))
    }

    /// The URI the issue requests for `coupon` go to (built once, cloned per request).
    pub fn issue_uri(&self, coupon: i64) -> Result<Uri, ApiError> {
        self.uri(&format!("/coupons/{coupon}/issue"))
    }

    /// The hot path: POSTs `user`'s issue request `body` to `uri` (with the
    /// user's token when tokens are minted), returns the status and the whole body.
    pub async fn post_issue(&self, uri: Uri, user: i64, body: Bytes) -> Result<(StatusCode, Bytes), TransportError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        request.headers_mut().insert(CONTENT_TYPE, self.json.clone());
        self.authorize(&mut request, user).map_err(TransportError::Request)?;
        self.send(request).await
    }

    /// Sends `request` and reads the whole answer, within the timeout.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), TransportError> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|err| {
                if err.is_connect() {
                    TransportError::Connect(chain(&err))
                } else {
                    TransportError::Request(chain(&err))
                }
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|err| TransportError::Body(chain(&err)))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(TransportError::Timeout))
    }

    /// `POST /coupons`: a coupon open from a minute ago to an hour from now.
    pub async fn create_coupon(&self, token: &str, name: &str, quantity: i64) -> Result<i64, ApiError> {
        self.create_coupon_open_for(token, name, quantity, chrono::Duration::hours(1))
            .await
    }

    /// `POST /coupons`: a coupon open from a minute ago to `open_for` from now.
    pub async fn create_coupon_open_for(
        &self,
        token: &str,
        name: &str,
        quantity: i64,
        open_for: chrono::Duration,
    ) -> Result<i64, ApiError> {
        let now = Utc::now();
        let body = serde_json::json!({
            "name": name,
            "total_quantity": quantity,
            "issue_start": (now - chrono::Duration::minutes(1)).to_rfc3339_opts(SecondsFormat::Millis, true),
            "issue_end": (now + open_for).to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        let mut request = Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri("/coupons")?;
        request.headers_mut().insert(CONTENT_TYPE, self.json.clone());
        let bearer = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ApiError::Url("the admin token is not a valid header value".into()))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let created: Created = self.expect_json("POST /coupons", request, StatusCode::CREATED).await?;
        Ok(created.id)
    }

    /// `GET /coupons/{id}`.
    pub async fn coupon(&self, id: i64) -> Result<CouponState, ApiError> {
        let request = self.get(&format!("/coupons/{id}"))?;
        self.expect_json(&format!("GET /coupons/{id}"), request, StatusCode::OK)
            .await
    }

    /// `GET /coupons/{coupon}/issues/{user}`, as text, for diagnostics.
    pub async fn issue_status(&self, coupon: i64, user: i64) -> String {
        let mut request = match self.get(&format!("/coupons/{coupon}/issues/{user}")) {
            Ok(request) => request,
            Err(err) => return err.to_string(),
        };
        if let Err(err) = self.authorize(&mut request, user) {
            return err;
        }
        match self.send(request).await {
            Ok((status, body)) => format!("{} {}", status.as_u16(), String::from_utf8_lossy(&body)),
            Err(err) => err.to_string(),
        }
    }

    fn get(&self, path: &str) -> Result<Request<Full<Bytes>>, ApiError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.uri(path)?;
        Ok(request)
    }

    async fn expect_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        request: Request<Full<Bytes>>,
        expected: StatusCode,
    ) -> Result<T, ApiError> {
        let (status, body) = self.send(request).await?;
        if status != expected {
            return Err(ApiError::Status {
                what: what.to_string(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
            what: what.to_string(),
            source,
        })
    }
}

/// An error with its causes, `a: b: c`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_borrowed_strings_and_ignore_extra_fields() {
        let accepted: AcceptedBody =
            serde_json::from_slice(br#"{"coupon_id":3,"user_id":42,"status":"accepted","position":7}"#).unwrap();
        assert_eq!(
            accepted,
            AcceptedBody {
                coupon_id: 3,
                user_id: 42,
                status: "accepted",
                position: 7
            }
        );
        let refused: ErrorBody = serde_json::from_slice(br#"{"error":"sold_out","message":"all gone"}"#).unwrap();
        assert_eq!(refused.error, "sold_out");
    }

    #[test]
    fn only_a_failed_connect_is_known_not_to_have_reached_the_server() {
        assert!(!TransportError::Connect("refused".into()).maybe_processed());
        assert!(TransportError::Timeout.maybe_processed());
        assert!(TransportError::Request("reset".into()).maybe_processed());
    }
}
