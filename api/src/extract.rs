//! Extractors whose rejections are the API's own error bodies: JSON bodies, path
//! ids and the admin token. Nothing malformed gets past them, and nothing they
//! refuse is a 5xx.

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use shared::{CouponId, UserId};
use std::collections::HashMap;
use std::marker::PhantomData;

/// `axum::Json`, answering bad bodies with the contract's error body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<ObjectOnly<T>>::from_request(req, state).await {
            Ok(axum::Json(ObjectOnly(value))) => Ok(Self(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

/// A JSON body that may be left out: a request with neither a `Content-Type`
/// nor any body bytes is `None`; anything else is read as [`ApiJson`] reads it.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if req.headers().contains_key(CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::from_request(req, state).await?;
            return Ok(Self(Some(value)));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidRequest(rejection.body_text())
            }
        })?;
        if bytes.is_empty() {
            Ok(Self(None))
        } else {
            Err(ApiError::missing_json())
        }
    }
}

/// `axum::extract::Query`, answering a bad query string with `400 invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::InvalidRequest(rejection.body_text())),
        }
    }
}

/// The answers [`ApiJson`] gives a body it refuses, for the routes' OpenAPI
/// entries (`responses(..., BodyRejections)`).
#[derive(utoipa::IntoResponses)]
pub enum BodyRejections {
    /// `payload_too_large`
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `invalid_request`: not JSON
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// `invalid_request`: wrong fields or values
    #[response(status = 422)]
    Unprocessable(ErrorBody),
}

/// A body that must be a JSON object. serde's derive also accepts a struct
/// written as an array (`[42]` for `{"user_id": 42}`), which the contract does not.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object(PhantomData)).map(ObjectOnly)
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(text),
        JsonRejection::JsonDataError(_) => ApiError::Unprocessable(text),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        _ => ApiError::InvalidRequest(text),
    }
}

/// The request's path parameters, or a 400 saying why they are not there.
async fn path_params<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<HashMap<String, String>, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    Ok(params)
}

/// The id in path parameter `name`, parsed.
fn path_id<T>(params: &HashMap<String, String>, name: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = shared::ids::IdError>,
{
    let raw = params
        .get(name)
        .ok_or_else(|| ApiError::InvalidRequest(format!("missing {name}")))?;
    raw.parse::<T>()
        .map_err(|err| ApiError::InvalidRequest(format!("{name}: {err}")))
}

/// The `{coupon_id}` path segment, parsed.
pub struct CouponPath(pub CouponId);

impl<S: Send + Sync> FromRequestParts<S> for CouponPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        Ok(Self(path_id(&params, "coupon_id")?))
    }
}

/// The `{coupon_id}` and `{user_id}` path segments, parsed.
pub struct IssuePath {
    pub coupon: CouponId,
    pub user: UserId,
}

impl<S: Send + Sync> FromRequestParts<S> for IssuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        Ok(Self {
            coupon: path_id(&params, "coupon_id")?,
            user: path_id(&params, "user_id")?,
        })
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The answers the issue and status endpoints refuse a caller with when the
/// API verifies JWTs, for their OpenAPI entries.
#[derive(utoipa::IntoResponses)]
pub enum UserRejections {
    /// `unauthorized`: no valid bearer JWT (with `WWW-Authenticate: Bearer error="invalid_token"`)
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `forbidden`: the token's user is not the user named
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Proof that the request carries the admin bearer token, as realworld's
/// `AuthUser` is proof of a user: `403 admin_disabled` when `ADMIN_TOKEN` is
/// unset, `401 unauthorized` when the token is missing or wrong.
pub struct AdminToken;

/// The answers [`AdminToken`] refuses with, for the admin routes' OpenAPI entries.
#[derive(utoipa::IntoResponses)]
pub enum AdminRejections {
    /// `unauthorized`
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `admin_disabled`
    #[response(status = 403)]
    AdminDisabled(ErrorBody),
}

impl FromRequestParts<AppState> for AdminToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let expected = app.admin_token.as_deref().ok_or(ApiError::AdminDisabled)?;
        let given = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        // Constant-time comparison: the token's bytes must not leak through timing.
        let same_len = given.len() == expected.len();
        let diff = given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if same_len && diff == 0 {
            Ok(AdminToken)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
