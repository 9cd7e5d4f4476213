//! Extractors whose rejections are the API's own error bodies: JSON bodies and
//! path ids. Nothing malformed gets past them, and nothing they refuse is a 5xx.

use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
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

fn parse_id<T>(params: &HashMap<String, String>, name: &str) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr<Err = shared::ids::IdError>,
{
    params
        .get(name)
        .map(|raw| {
            raw.parse::<T>()
                .map_err(|err| ApiError::InvalidRequest(format!("{name}: {err}")))
        })
        .transpose()
}

/// The `{coupon_id}` and, where present, `{user_id}` path segments, parsed.
pub struct Ids {
    pub coupon: CouponId,
    pub user: Option<UserId>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
        let coupon = parse_id(&params, "coupon_id")?.ok_or(ApiError::InvalidRequest("missing coupon_id".into()))?;
        let user = parse_id(&params, "user_id")?;
        Ok(Self { coupon, user })
    }
}
