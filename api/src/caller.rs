//! Who sent a request, as the issue and status endpoints need it: the bearer
//! token it carries and the client address it comes from (the socket's peer
//! or, behind trusted proxies, `X-Forwarded-For`), and the checks made of them
//! before any Redis call: the client's rate, the user's identity, the user's rate.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::bearer_token;
use crate::identity::IdentityError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use shared::{CouponId, UserId};
use std::net::{IpAddr, SocketAddr};

/// A request's credentials and origin.
pub struct Caller {
    /// `None` only when the router runs without [`crate::serve`]'s connection
    /// loop (unit tests), which is what records each connection's peer.
    client: Option<IpAddr>,
    token: Option<String>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let client = peer.map(|peer| app.limits.proxies.client(peer, &parts.headers));
        Ok(Self {
            client,
            token: bearer_token(&parts.headers).map(str::to_owned),
        })
    }
}

impl Caller {
    /// The user a request for `named` (`None`: the body named none) acts for:
    /// the token's in verified mode, the named one in trusted mode.
    pub fn user(&self, app: &AppState, named: Option<UserId>) -> Result<UserId, ApiError> {
        app.identity.user(self.token.as_deref(), named).map_err(|err| {
            let reason = match &err {
                IdentityError::Token(_) => "invalid_token",
                IdentityError::OtherUser => "other_user",
                IdentityError::Unnamed => return ApiError::Unprocessable(err.to_string()),
            };
            metrics::counter!(shared::metrics::AUTH_REFUSED, "reason" => reason).increment(1);
            match err {
                IdentityError::Token(err) => ApiError::InvalidToken(err),
                _ => ApiError::Forbidden("the token is for another user"),
            }
        })
    }

    /// Everything checked before an issue request for `coupon` reaches Redis:
    /// the client's rate, who the user is, the user's rate.
    pub fn admit(&self, app: &AppState, named: Option<UserId>, coupon: CouponId) -> Result<UserId, ApiError> {
        app.limits.check_client(self.client)?;
        let user = self.user(app, named)?;
        app.limits.check_user(user, coupon)?;
        Ok(user)
    }
}
