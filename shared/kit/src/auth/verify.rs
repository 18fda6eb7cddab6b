//! The auth settings a service starts with and the verifier they build:
//! an HS256 secret or a JWKS file re-read when it changes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{
    Claims, Credential, DEFAULT_AUDIENCE, DEFAULT_ISSUER, FILE_CHECK_INTERVAL, Identity, Invalid, LEEWAY_SECONDS,
    Minter,
};

/// Why the auth settings are unusable (the service does not start).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Neither a JWKS file nor a secret was given.
    #[error(
        "no token keys: set --auth-jwks-file / ACCRUE_AUTH_JWKS_FILE (production) or --auth-hs256-secret / \
         ACCRUE_AUTH_HS256_SECRET (development)"
    )]
    NoKeys,
    /// Both were given.
    #[error("set only one of --auth-jwks-file and --auth-hs256-secret")]
    BothKeys,
    /// The HS256 secret is too short to be a key.
    #[error("the HS256 secret must be at least 32 bytes")]
    ShortSecret,
    /// The JWKS file cannot be read or holds no usable key.
    #[error("JWKS file {path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A token could not be signed.
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// The auth settings every service shares (flags in [`crate::service`]).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// HS256 shared secret (development, tests, `accrue dev`).
    pub hs256_secret: Option<String>,
    /// JWKS file of RS256 / ES256 public keys (production).
    pub jwks_file: Option<PathBuf>,
    /// Expected `iss` (default [`DEFAULT_ISSUER`]).
    pub issuer: String,
    /// Expected `aud` (default [`DEFAULT_AUDIENCE`]).
    pub audience: String,
    /// This service's own token for its peer calls, re-read when it changes
    /// (production); with an HS256 secret and no file, one is minted.
    pub service_token_file: Option<PathBuf>,
    /// The deployment key page tokens are signed with (HMAC-SHA256, see
    /// [`crate::page`]); every replica of a service must share it. Unset:
    /// derived from the HS256 secret, else random per process (tokens then
    /// do not survive a restart nor cross replicas; the service warns).
    pub page_token_key: Option<String>,
}

impl AuthConfig {
    /// Development settings: `secret` as the HS256 key, default issuer and audience.
    pub fn hs256(secret: impl Into<String>) -> Self {
        AuthConfig {
            hs256_secret: Some(secret.into()),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            ..AuthConfig::default()
        }
    }

    /// The verifier these settings describe.
    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        let keys = match (&self.hs256_secret, &self.jwks_file) {
            (Some(_), Some(_)) => return Err(AuthError::BothKeys),
            (None, None) => return Err(AuthError::NoKeys),
            (Some(secret), None) => {
                check_secret(secret)?;
                Keys::Secret(DecodingKey::from_secret(secret.as_bytes()))
            }
            (None, Some(path)) => Keys::Jwks(JwksFile::load(path)?),
        };
        Ok(Verifier { keys, issuer: self.issuer.clone(), audience: self.audience.clone() })
    }

    /// The credential service `schema` calls its peers with.
    pub fn service_credential(&self, schema: &str) -> Result<Credential, AuthError> {
        if let Some(path) = &self.service_token_file {
            return Ok(Credential::file(path.clone()));
        }
        match &self.hs256_secret {
            Some(secret) => {
                let minter = Minter::new(secret, &self.issuer, &self.audience)?;
                Ok(Credential::minted(minter, format!("service:{schema}")))
            }
            None => Err(AuthError::Jwks {
                path: self.jwks_file.clone().unwrap_or_default(),
                reason: "with JWKS keys a service needs --service-token-file for its peer calls".into(),
            }),
        }
    }
}

pub(super) fn check_secret(secret: &str) -> Result<(), AuthError> {
    if secret.len() < 32 { Err(AuthError::ShortSecret) } else { Ok(()) }
}

enum Keys {
    Secret(DecodingKey),
    Jwks(JwksFile),
}

/// One usable key of a JWKS.
struct JwksKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct JwksState {
    keys: Vec<JwksKey>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// A JWKS file, re-read when its modification time changes (checked at most
/// every few seconds); a file that turns unreadable keeps the last good keys.
struct JwksFile {
    path: PathBuf,
    state: RwLock<JwksState>,
}

impl JwksFile {
    fn load(path: &Path) -> Result<Self, AuthError> {
        let (keys, modified) = read_jwks(path)?;
        Ok(JwksFile {
            path: path.to_path_buf(),
            state: RwLock::new(JwksState { keys, modified, checked: Instant::now() }),
        })
    }

    fn refresh(&self) {
        let due = self.state.read().map(|s| s.checked.elapsed() >= FILE_CHECK_INTERVAL).unwrap_or(true);
        if !due {
            return;
        }
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let Ok(mut state) = self.state.write() else { return };
        state.checked = Instant::now();
        if modified == state.modified {
            return;
        }
        match read_jwks(&self.path) {
            Ok((keys, modified)) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "JWKS reloaded");
                state.keys = keys;
                state.modified = modified;
            }
            Err(error) => tracing::warn!(%error, "JWKS changed but does not load; keeping the previous keys"),
        }
    }
}

fn read_jwks(path: &Path) -> Result<(Vec<JwksKey>, Option<SystemTime>), AuthError> {
    let fail = |reason: String| AuthError::Jwks { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| fail(format!("not a JWK set: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok()) {
            Some(algorithm @ (Algorithm::RS256 | Algorithm::ES256)) => algorithm,
            other => return Err(fail(format!("key {:?}: alg {other:?}, want RS256 or ES256", jwk.common.key_id))),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(format!("key {:?}: {e}", jwk.common.key_id)))?;
        keys.push(JwksKey { kid: jwk.common.key_id.clone(), algorithm, key });
    }
    if keys.is_empty() {
        return Err(fail("no keys".into()));
    }
    Ok((keys, modified))
}

/// Verifies bearer tokens: signature (HS256 with the secret, or RS256 /
/// ES256 with the JWKS key the header's `kid` names), `iss`, `aud`, `exp`
/// and `nbf` with [`LEEWAY_SECONDS`], then the claims ([`Claims::identity`]).
pub struct Verifier {
    keys: Keys,
    issuer: String,
    audience: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.keys {
            Keys::Secret(_) => "HS256 secret",
            Keys::Jwks(_) => "JWKS",
        };
        f.debug_struct("Verifier").field("keys", &kind).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }

    /// The identity `token` proves.
    pub fn verify(&self, token: &str) -> Result<Identity, Invalid> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Invalid(e.to_string()))?;
        let claims = match &self.keys {
            Keys::Secret(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(Invalid(format!("alg {:?} where HS256 is expected", header.alg)));
                }
                jsonwebtoken::decode::<Claims>(token, key, &self.validation(Algorithm::HS256))
            }
            Keys::Jwks(file) => {
                file.refresh();
                let state = file.state.read().map_err(|_| Invalid("key store poisoned".into()))?;
                let key = state
                    .keys
                    .iter()
                    .find(|k| k.algorithm == header.alg && (header.kid.is_none() || k.kid == header.kid))
                    .ok_or_else(|| Invalid(format!("no key for kid {:?} alg {:?}", header.kid, header.alg)))?;
                jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm))
            }
        }
        .map_err(|e| Invalid(e.to_string()))?
        .claims;
        claims.identity()
    }
}
