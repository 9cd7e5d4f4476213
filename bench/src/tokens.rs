//! User JWTs as an identity provider would sign them, so that a load against an
//! API that verifies tokens measures the real path (`--jwt-secret`,
//! `--jwt-key-file`). The integration tests mint theirs here too.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a signing key can not be used.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the key file holds no PKCS#8 EC, RSA or Ed25519 private key in PEM")]
    Pem,
    #[error("signing: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs tokens for users with one key.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
    /// How long a minted token stays valid.
    pub lifetime: Duration,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.header.alg)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// HS256 with a shared secret (`AUTH_JWT_SECRET`).
    pub fn hmac(secret: &[u8]) -> Self {
        Self::new(EncodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// The algorithm of a PEM private key's kind: EC → ES256, RSA → RS256,
    /// Ed25519 → EdDSA (the API takes the public half as `AUTH_JWT_PUBLIC_KEY_FILE`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, MintError> {
        if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            return Ok(Self::new(key, Algorithm::EdDSA));
        }
        Err(MintError::Pem)
    }

    fn new(key: EncodingKey, algorithm: Algorithm) -> Self {
        Self {
            key,
            header: Header::new(algorithm),
            issuer: None,
            audience: None,
            lifetime: Duration::from_secs(3600),
        }
    }

    /// Names the key in each token's header (`kid`, for a JWKS).
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.header.kid = Some(kid.to_string());
        self
    }

    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_string());
        self
    }

    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_string());
        self
    }

    /// The claims a token for `user` carries: `sub`, `iat`, `exp` and, when
    /// set, `iss` and `aud`.
    pub fn claims(&self, user: i64) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut claims = json!({ "sub": user.to_string(), "iat": now, "exp": now + self.lifetime.as_secs() });
        if let Some(issuer) = &self.issuer {
            claims["iss"] = json!(issuer);
        }
        if let Some(audience) = &self.audience {
            claims["aud"] = json!(audience);
        }
        claims
    }

    /// A token for `user`.
    pub fn token(&self, user: i64) -> Result<String, MintError> {
        self.sign(&self.claims(user))
    }

    /// A token with exactly these claims.
    pub fn sign(&self, claims: &Value) -> Result<String, MintError> {
        Ok(jsonwebtoken::encode(&self.header, claims, &self.key)?)
    }
}
