//! Development tokens signed with the HS256 secret.

use std::fmt;
use std::time::{Duration, SystemTime};

use accrue_types::id::PartnerId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::verify::check_secret;
use super::{Audience, AuthError, Claims, Role};

/// Signs HS256 tokens with the development secret (`accrue dev`, `accrue
/// token mint`, tests, and each service's own credential when no token file
/// is mounted).
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter over `secret` (at least 32 bytes) for `issuer` and `audience`.
    pub fn new(secret: &str, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        check_secret(secret)?;
        Ok(Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// A token for `subject` with `roles` in `programs` (ids or `"*"`),
    /// speaking for `partner` when given, valid from now for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        roles: &[Role],
        programs: &[String],
        partner: Option<PartnerId>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = now_seconds();
        let claims = Claims {
            sub: subject.into(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
            programs: programs.to_vec(),
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            partner_id: partner.map(|p| p.to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }

    /// A token with exactly `claims` (tests of expiry, audience, issuer).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .map_err(|e| AuthError::Sign(e.to_string()))
    }
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
