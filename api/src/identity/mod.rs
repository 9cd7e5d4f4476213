//! Who is asking: the user id a request may act for. With a key configured
//! (`AUTH_JWT_*`) it is the verified `sub` of the request's bearer JWT; without
//! one the API trusts the caller (a gateway that authenticated the user) and
//! takes the id the request names.

mod cache;
mod keys;

pub use keys::{IdentityConfig, KeyError};

use cache::VerifiedTokens;
use jsonwebtoken::{DecodingKey, Validation};
use keys::{KeySet, VerifyingKey};
use serde::Deserialize;
use shared::UserId;

/// Why a bearer token was refused: each is a `401 unauthorized`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("an `Authorization: Bearer <JWT>` header is required")]
    Missing,
    #[error("the token's key id (`kid`) names no configured key")]
    UnknownKey,
    #[error("the token's `sub` is not a user id (1 to 9223372036854775807)")]
    BadSubject,
    /// Malformed, badly signed, expired, not yet valid, wrong issuer or
    /// audience, `alg: none` or an algorithm other than the key's.
    #[error("the token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// How the API learns who asks.
pub enum Identity {
    /// No key configured: the request's own `user_id` is believed.
    Trusted,
    /// Every issue and status request carries a JWT signed by one of these keys.
    Verified(Box<Verifier>),
}

impl Identity {
    /// The mode `config` asks for; a key that can not be read stops the start.
    pub fn from_config(config: &IdentityConfig) -> Result<Self, KeyError> {
        Ok(match KeySet::load(config)? {
            None => Identity::Trusted,
            Some(keys) => Identity::Verified(Box::new(Verifier {
                keys,
                verified: VerifiedTokens::new(VERIFIED_TOKENS),
            })),
        })
    }

    /// The user the request acts for, given the user it names (`None`: it
    /// names none, allowed only with a token). A token's `sub` is the user;
    /// naming another is refused.
    pub fn user(&self, token: Option<&str>, named: Option<UserId>) -> Result<UserId, IdentityError> {
        match self {
            Identity::Trusted => named.ok_or(IdentityError::Unnamed),
            Identity::Verified(verifier) => {
                let user = verifier.verify(token.ok_or(AuthError::Missing)?)?;
                match named {
                    Some(other) if other != user => Err(IdentityError::OtherUser),
                    _ => Ok(user),
                }
            }
        }
    }

    pub fn is_trusted(&self) -> bool {
        matches!(self, Identity::Trusted)
    }

    /// How the start-up log describes the mode.
    pub fn describe(&self) -> String {
        match self {
            Identity::Trusted => "trusted caller (no AUTH_JWT_* key: the user id in each request is believed)".into(),
            Identity::Verified(verifier) => format!("verified JWT ({})", verifier.keys.describe()),
        }
    }
}

/// Why a request may not act for a user.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Token(#[from] AuthError),
    /// `403 forbidden`: the token's user is not the user named.
    #[error("the token is for another user")]
    OtherUser,
    /// Trusted mode and no user named: the body's `user_id` is missing.
    #[error("missing field `user_id`")]
    Unnamed,
}

/// Tokens remembered as verified (about 4 MiB).
const VERIFIED_TOKENS: usize = 65_536;

/// Verifies tokens against the configured keys.
pub struct Verifier {
    keys: KeySet,
    verified: VerifiedTokens,
}

/// The claims read from a verified token; `exp`, `nbf`, `iss` and `aud` are
/// checked by [`jsonwebtoken::decode`] itself.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// A NumericDate may have a fraction.
    exp: f64,
}

impl Verifier {
    /// The token's user, if it is signed by a configured key with that key's
    /// algorithm and its time, issuer and audience claims hold (or it did when
    /// it was last verified, and its `exp` has not passed).
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let digest = cache::digest(token);
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(user) = self.verified.get(&digest, now) {
            return Ok(user);
        }
        let VerifyingKey { key, validation } = self.keys.select(token)?;
        let (user, exp) = decode_user(token, key, validation)?;
        self.verified
            .insert(digest, user, exp.saturating_add(validation.leeway), now);
        Ok(user)
    }
}

/// The user a valid token is for, and its `exp`.
fn decode_user(token: &str, key: &DecodingKey, validation: &Validation) -> Result<(UserId, u64), AuthError> {
    let claims = jsonwebtoken::decode::<Claims>(token, key, validation)?.claims;
    // Decimal digits only: a path id may be written `42.0`, a subject may not.
    let digits = !claims.sub.is_empty() && claims.sub.bytes().all(|b| b.is_ascii_digit());
    let user = digits
        .then(|| claims.sub.parse::<UserId>().ok())
        .flatten()
        .ok_or(AuthError::BadSubject)?;
    Ok((user, claims.exp as u64))
}
