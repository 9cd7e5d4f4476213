//! The keys tokens are verified with, read once at start from `AUTH_JWT_SECRET`,
//! `AUTH_JWT_PUBLIC_KEY_FILE` or `AUTH_JWKS_FILE`, each with the algorithms its
//! kind allows and the claim checks (`exp`, `nbf`, issuer, audience, leeway).

use super::AuthError;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::config::IdentityConfig;

/// Why the configured key can not be used; the API does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("set only one of AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE and AUTH_JWKS_FILE")]
    Several,
    #[error("AUTH_JWT_SECRET is empty")]
    EmptySecret,
    #[error("reading {path}: {source}", path = path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no RSA, EC (P-256/P-384) or Ed25519 public key in PEM", path = path.display())]
    Pem { path: PathBuf },
    #[error("{path} is not a JWKS document: {source}", path = path.display())]
    Jwks { path: PathBuf, source: serde_json::Error },
    #[error("{path} holds no key", path = path.display())]
    NoKeys { path: PathBuf },
    #[error("{path}: a key without `kid` in a set of several", path = path.display())]
    MissingKid { path: PathBuf },
    #[error("{path}: key `{kid}` can not verify tokens: {reason}", path = path.display())]
    Unusable { path: PathBuf, kid: String, reason: String },
}

/// A key and how a token signed by it is checked.
pub(super) struct VerifyingKey {
    pub key: DecodingKey,
    /// The key's algorithms only, so a token naming another (`none`, or HS256
    /// with an RSA public key as its secret) is refused.
    pub validation: Validation,
}

/// One key, or a JWKS whose `kid` picks the key.
pub(super) struct KeySet {
    keys: Keys,
    source: String,
}

enum Keys {
    One(Box<VerifyingKey>),
    ByKid(HashMap<String, VerifyingKey>),
}

impl KeySet {
    /// The configured keys; `None` when none is configured (trusted mode).
    pub fn load(config: &IdentityConfig) -> Result<Option<Self>, KeyError> {
        let given = [
            config.auth_jwt_secret.is_some(),
            config.auth_jwt_public_key_file.is_some(),
            config.auth_jwks_file.is_some(),
        ];
        if given.iter().filter(|set| **set).count() > 1 {
            return Err(KeyError::Several);
        }
        let checks = |algorithms: &[Algorithm]| validation(algorithms, config);
        let (keys, source) = if let Some(secret) = &config.auth_jwt_secret {
            if secret.is_empty() {
                return Err(KeyError::EmptySecret);
            }
            let key = DecodingKey::from_secret(secret.as_bytes());
            let validation = checks(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
            (
                Keys::One(Box::new(VerifyingKey { key, validation })),
                "AUTH_JWT_SECRET, HS256/384/512".to_string(),
            )
        } else if let Some(path) = &config.auth_jwt_public_key_file {
            let (key, algorithms) = pem_key(path)?;
            let source = format!("AUTH_JWT_PUBLIC_KEY_FILE {}, {algorithms:?}", path.display());
            let validation = checks(&algorithms);
            (Keys::One(Box::new(VerifyingKey { key, validation })), source)
        } else if let Some(path) = &config.auth_jwks_file {
            let keys = jwks(path, &checks)?;
            let source = format!("AUTH_JWKS_FILE {}, {} keys", path.display(), keys.len());
            (Keys::ByKid(keys), source)
        } else {
            return Ok(None);
        };
        Ok(Some(KeySet { keys, source }))
    }

    /// The key that must have signed `token`: the only one, or the one its
    /// header's `kid` names (a set of one also takes a token with no `kid`).
    pub fn select(&self, token: &str) -> Result<&VerifyingKey, AuthError> {
        match &self.keys {
            Keys::One(key) => Ok(key),
            Keys::ByKid(keys) => match jsonwebtoken::decode_header(token)?.kid {
                Some(kid) => keys.get(&kid).ok_or(AuthError::UnknownKey),
                None if keys.len() == 1 => keys.values().next().ok_or(AuthError::UnknownKey),
                None => Err(AuthError::UnknownKey),
            },
        }
    }

    pub fn describe(&self) -> &str {
        &self.source
    }
}

/// The claim checks every token meets: `exp` and `sub` present, `nbf` honoured,
/// issuer and audience when configured (and then required).
fn validation(algorithms: &[Algorithm], config: &IdentityConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = algorithms.to_vec();
    validation.leeway = config.auth_jwt_leeway_s;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &config.auth_jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.auth_jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // Not configured: a token's `aud` is not this API's to judge.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })
}

/// A PEM public key and the algorithms of its kind.
fn pem_key(path: &Path) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    let pem = read(path)?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        // The curve is not told here; a signature of the other curve's
        // algorithm does not verify.
        return Ok((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err(KeyError::Pem { path: path.into() })
}

/// A JWKS document's keys by `kid`.
fn jwks(path: &Path, checks: &dyn Fn(&[Algorithm]) -> Validation) -> Result<HashMap<String, VerifyingKey>, KeyError> {
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|source| KeyError::Jwks {
        path: path.into(),
        source,
    })?;
    if set.keys.is_empty() {
        return Err(KeyError::NoKeys { path: path.into() });
    }
    let several = set.keys.len() > 1;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = match (&jwk.common.key_id, several) {
            (Some(kid), _) => kid.clone(),
            (None, false) => String::new(),
            (None, true) => return Err(KeyError::MissingKid { path: path.into() }),
        };
        let unusable = |reason: String| KeyError::Unusable {
            path: path.into(),
            kid: kid.clone(),
            reason,
        };
        let algorithms = jwk_algorithms(jwk).map_err(unusable)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|err| unusable(err.to_string()))?;
        keys.insert(
            kid.clone(),
            VerifyingKey {
                key,
                validation: checks(&algorithms),
            },
        );
    }
    Ok(keys)
}

/// The algorithms a JWK verifies: its `alg` when it names one, else those of
/// its key type.
fn jwk_algorithms(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = alg.to_string().parse::<Algorithm>().map_err(|err| err.to_string())?;
        return Ok(vec![alg]);
    }
    Ok(match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        _ => return Err("unsupported key type".into()),
    })
}
