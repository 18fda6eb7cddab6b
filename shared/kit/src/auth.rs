//! Identity (DESIGN §6 "Identity"; issue 10): every RPC but health and
//! reflection carries `authorization: Bearer <jwt>`. [`AuthLayer`] verifies
//! it once for every service ([`crate::layers::stack`]), checks the caller's
//! roles against the one RPC × role table ([`policy`]) and puts the verified
//! [`Identity`] in the request's extensions; handlers never parse headers.
//!
//! Keys: RS256 / ES256 public keys from a JWKS file (production; re-read when
//! the file changes), or an HS256 shared secret (development and tests).
//! Claims (RFC 7519 plus Accrue's): `sub`, `iss`, `aud`, `exp`, `nbf`,
//! `programs` (program ids or `"*"`), `roles` (admin, finance, partner,
//! service, viewer) and `partner_id` (partner tokens). A missing or invalid
//! token is UNAUTHENTICATED "invalid token" whatever the reason (the reason
//! is logged at debug, never sent); a role the table does not allow is
//! PERMISSION_DENIED.
//!
//! Calls between services carry the calling service's own credential
//! ([`Credential`]), never the caller's token: minted from the HS256 secret
//! (subject `service:<schema>`, role service) or read from a mounted file.

mod credential;
mod identity;
mod layer;
mod mint;
pub mod policy;
mod verify;

use std::time::Duration;

pub use credential::{Bearer, Credential};
pub use identity::{Audience, Claims, Identity, Invalid, Programs, Role, actor, caller};
pub use layer::{AuthLayer, Authenticate};
pub use mint::Minter;
pub use verify::{AuthConfig, AuthError, Verifier};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// The default `iss` and `aud` of Accrue tokens.
pub const DEFAULT_ISSUER: &str = "accrue";
/// See [`DEFAULT_ISSUER`].
pub const DEFAULT_AUDIENCE: &str = "accrue";
/// How long a minted service credential lives; it is re-minted when less
/// than a quarter of this is left.
pub const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How often a JWKS or token file is checked for a change.
pub(crate) const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
