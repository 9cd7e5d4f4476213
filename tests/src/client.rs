//! A thin HTTP client for the contract's endpoints, returning status and JSON.

use serde_json::{json, Value};

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    admin_token: Option<String>,
}

/// A status code and the JSON body (`Null` when the body is not JSON).
pub type Answer = (u16, Value);

impl Client {
    pub fn new(base: String, admin_token: Option<String>) -> Self {
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        Self {
            base,
            http,
            admin_token,
        }
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Creates a coupon open from a minute ago for an hour; returns its id.
    pub async fn create_open_coupon(&self, quantity: i64) -> i64 {
        let now = chrono::Utc::now();
        let (status, body) = self
            .create_coupon(json!({
                "name": "flash sale",
                "total_quantity": quantity,
                "issue_start": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "issue_end": (now + chrono::Duration::hours(1)).to_rfc3339(),
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    pub async fn create_coupon(&self, body: Value) -> Answer {
        let mut request = self.http.post(format!("{}/coupons", self.base)).json(&body);
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        Self::answer(request.send().await.unwrap()).await
    }

    /// `PATCH /coupons/{coupon}` with the admin token.
    pub async fn patch_coupon(&self, coupon: i64, change: Value) -> Answer {
        self.admin(reqwest::Method::PATCH, &format!("/coupons/{coupon}"), Some(change))
            .await
    }

    /// A request with the admin token (when the client has one).
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        Self::answer(request.send().await.unwrap()).await
    }

    pub async fn issue(&self, coupon: i64, user: i64) -> Answer {
        let url = format!("{}/coupons/{coupon}/issue", self.base);
        Self::answer(
            self.http
                .post(url)
                .json(&json!({ "user_id": user }))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(self.http.get(format!("{}{path}", self.base)).send().await.unwrap()).await
    }

    /// `GET /coupons/{coupon}/issues/{user}`, with `?wait=` when given.
    pub async fn status(&self, coupon: i64, user: i64, wait: Option<&str>) -> Answer {
        let query = wait.map(|w| format!("?wait={w}")).unwrap_or_default();
        self.get(&format!("/coupons/{coupon}/issues/{user}{query}")).await
    }

    /// A raw request, for bad-input tests.
    pub async fn raw(&self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Self::answer(request.send().await.unwrap()).await
    }
}

/// A whole answer: status, headers and JSON body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `error` code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A user's request as it may come: a bearer token or none, a JSON body or
/// none, extra headers.
#[derive(Default)]
pub struct UserRequest<'a> {
    pub token: Option<&'a str>,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl Client {
    /// `POST /coupons/{coupon}/issue` as `request` says.
    pub async fn issue_with(&self, coupon: i64, request: UserRequest<'_>) -> Reply {
        self.user_request(reqwest::Method::POST, &format!("/coupons/{coupon}/issue"), request)
            .await
    }

    /// `GET /coupons/{coupon}/issues/{user}` with `token`.
    pub async fn status_with(&self, coupon: i64, user: i64, token: Option<&str>) -> Reply {
        let request = UserRequest {
            token,
            ..Default::default()
        };
        self.user_request(
            reqwest::Method::GET,
            &format!("/coupons/{coupon}/issues/{user}"),
            request,
        )
        .await
    }

    async fn user_request(&self, method: reqwest::Method, path: &str, request: UserRequest<'_>) -> Reply {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = request.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        }
    }
}

/// An issue request's outcome as a client sees it: no status when no answer
/// came (refused, reset, timed out).
#[derive(Clone, Debug)]
pub struct IssueReply {
    pub status: Option<u16>,
    /// The `error` code, or the transport error.
    pub code: String,
    pub position: Option<i64>,
}

/// `POST {base}/coupons/{coupon}/issue` for `user`, never panicking: fault
/// tests expect some requests to get no answer.
pub async fn post_issue(http: &reqwest::Client, base: &str, coupon: i64, user: i64) -> IssueReply {
    let sent = http
        .post(format!("{base}/coupons/{coupon}/issue"))
        .json(&json!({ "user_id": user }))
        .send()
        .await;
    let (status, body) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) => (Some(status), serde_json::from_slice(&body).unwrap_or(Value::Null)),
                Err(err) => (None, json!({ "error": err.to_string() })),
            }
        }
        Err(err) => (None, json!({ "error": err.to_string() })),
    };
    IssueReply {
        status,
        code: body["error"].as_str().unwrap_or_default().to_string(),
        position: body["position"].as_i64(),
    }
}
