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

pub mod policy;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use accrue_types::id::{PartnerId, ProgramId};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

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
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What a token lets its holder do (DESIGN §6; the table is [`policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything in its programs.
    Admin,
    /// Payouts, approvals, entry transitions, exports; reads.
    Finance,
    /// A partner's own data, read-only (`partner_id` names it).
    Partner,
    /// An Accrue service calling its peers.
    Service,
    /// Reads only.
    Viewer,
}

impl Role {
    /// The claim's spelling ("admin").
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Partner => "partner",
            Role::Service => "service",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        match text {
            "admin" => Ok(Role::Admin),
            "finance" => Ok(Role::Finance),
            "partner" => Ok(Role::Partner),
            "service" => Ok(Role::Service),
            "viewer" => Ok(Role::Viewer),
            other => Err(Invalid(format!("unknown role {other:?}"))),
        }
    }
}

/// The programs a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programs {
    /// `"*"`: every program.
    All,
    /// These programs only.
    Only(BTreeSet<ProgramId>),
}

impl Programs {
    /// True when `program` is one of them.
    pub fn contains(&self, program: ProgramId) -> bool {
        match self {
            Programs::All => true,
            Programs::Only(ids) => ids.contains(&program),
        }
    }
}

/// A verified caller, as handlers find it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: a user, a backend, or `service:<schema>`; the actor
    /// audit records name.
    pub subject: String,
    /// The programs it may act in.
    pub programs: Programs,
    /// Its roles (at least one).
    pub roles: BTreeSet<Role>,
    /// The partner a partner token speaks for.
    pub partner_id: Option<PartnerId>,
}

impl Identity {
    /// True when the identity holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Ok when the token names `program`; else NOT_FOUND PROGRAM_NOT_FOUND
    /// "program <id> not found" (issue 10 item 2). The answer does not depend
    /// on whether the program exists, so a token learns nothing about
    /// programs it does not name.
    pub fn require_program(&self, program: ProgramId) -> Result<(), tonic::Status> {
        if self.programs.contains(program) { Ok(()) } else { Err(crate::error::not_found("program", program)) }
    }
}

/// The verified caller of `request`, put there by [`AuthLayer`].
/// UNAUTHENTICATED when absent, which only a service hosted without the
/// layer would see.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Identity, tonic::Status> {
    request.extensions().get::<Identity>().ok_or_else(|| tonic::Status::unauthenticated("invalid token"))
}

/// The audit actor of `request`: its caller's token subject (issue 10 item
/// 4: the actor comes from identity, never from a request field).
pub fn actor<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
    caller(request).map(|identity| identity.subject.clone())
}

/// The claims of an Accrue token (RFC 7519 registered claims plus
/// `programs`, `roles`, `partner_id`); `exp`, `nbf`, `iat` in Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience: one string or a list (RFC 7519 §4.1.3; identity providers
    /// send either). The token is valid when one of them is ours.
    pub aud: Audience,
    /// Expiry.
    pub exp: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Program ids, or `["*"]`.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The partner of a partner token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
}

/// A token's `aud`: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "accrue"`.
    One(String),
    /// `"aud": ["accrue", "billing"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_string())
    }
}

impl Claims {
    /// The identity these claims describe: every role known, every program
    /// a UUID or `*`, a partner token naming its partner, at least one role
    /// and one program.
    pub fn identity(&self) -> Result<Identity, Invalid> {
        if self.sub.is_empty() {
            return Err(Invalid("empty sub".into()));
        }
        let roles = self.roles.iter().map(|r| r.parse()).collect::<Result<BTreeSet<Role>, _>>()?;
        if roles.is_empty() {
            return Err(Invalid("no roles".into()));
        }
        let programs = if self.programs.iter().any(|p| p == "*") {
            Programs::All
        } else {
            let ids = self
                .programs
                .iter()
                .map(|p| p.parse::<ProgramId>().map_err(|e| Invalid(e.to_string())))
                .collect::<Result<BTreeSet<_>, _>>()?;
            if ids.is_empty() {
                return Err(Invalid("no programs".into()));
            }
            Programs::Only(ids)
        };
        let partner_id = match &self.partner_id {
            Some(text) if !text.is_empty() => Some(text.parse::<PartnerId>().map_err(|e| Invalid(e.to_string()))?),
            _ => None,
        };
        if roles.contains(&Role::Partner) && partner_id.is_none() {
            return Err(Invalid("a partner token without partner_id".into()));
        }
        Ok(Identity { subject: self.sub.clone(), programs, roles, partner_id })
    }
}

/// Why a token was refused; logged, never sent to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct Invalid(pub String);

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

fn check_secret(secret: &str) -> Result<(), AuthError> {
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

enum Source {
    /// No token: the peer will answer UNAUTHENTICATED.
    None,
    /// A fixed token (the CLI's `--token`, tests).
    Fixed(String),
    /// Minted for `subject` as a service, re-minted before it expires.
    Minted { minter: Minter, subject: String, cached: Mutex<Option<(String, Instant)>> },
    /// Read from a mounted file, re-read when it changes.
    File { path: PathBuf, cached: Mutex<Option<(String, Option<SystemTime>, Instant)>> },
}

/// The token a client sends (cheap to clone); see [`AuthConfig::service_credential`].
#[derive(Clone)]
pub struct Credential(Arc<Source>);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.0 {
            Source::None => "none",
            Source::Fixed(_) => "fixed",
            Source::Minted { .. } => "minted",
            Source::File { .. } => "file",
        };
        f.debug_tuple("Credential").field(&kind).finish()
    }
}

impl Credential {
    /// Sends no token.
    pub fn none() -> Self {
        Credential(Arc::new(Source::None))
    }

    /// Sends `token`.
    pub fn token(token: impl Into<String>) -> Self {
        Credential(Arc::new(Source::Fixed(token.into())))
    }

    /// A service credential minted by `minter` for `subject` (role service, every program).
    pub fn minted(minter: Minter, subject: String) -> Self {
        Credential(Arc::new(Source::Minted { minter, subject, cached: Mutex::new(None) }))
    }

    /// The token in the file at `path`, re-read when the file changes.
    pub fn file(path: PathBuf) -> Self {
        Credential(Arc::new(Source::File { path, cached: Mutex::new(None) }))
    }

    /// The token to send now, if any.
    pub fn current(&self) -> Option<String> {
        match &*self.0 {
            Source::None => None,
            Source::Fixed(token) => Some(token.clone()),
            Source::Minted { minter, subject, cached } => {
                let mut cached = cached.lock().ok()?;
                let fresh = cached.as_ref().is_some_and(|(_, at)| at.elapsed() < SERVICE_TOKEN_TTL * 3 / 4);
                if !fresh {
                    let token = minter
                        .mint(subject, &[Role::Service], &["*".to_string()], None, SERVICE_TOKEN_TTL)
                        .map_err(|error| tracing::error!(%error, "cannot mint the service token"))
                        .ok()?;
                    *cached = Some((token, Instant::now()));
                }
                cached.as_ref().map(|(token, _)| token.clone())
            }
            Source::File { path, cached } => {
                let mut cached = cached.lock().ok()?;
                let due = cached.as_ref().is_none_or(|(_, _, checked)| checked.elapsed() >= FILE_CHECK_INTERVAL);
                if due {
                    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                    let changed = cached.as_ref().is_none_or(|(_, seen, _)| *seen != modified);
                    if changed {
                        match std::fs::read_to_string(path) {
                            Ok(text) => *cached = Some((text.trim().to_string(), modified, Instant::now())),
                            Err(error) => tracing::warn!(path = %path.display(), %error, "service token unreadable"),
                        }
                    } else if let Some(entry) = cached.as_mut() {
                        entry.2 = Instant::now();
                    }
                }
                cached.as_ref().map(|(token, _, _)| token.clone())
            }
        }
    }
}

/// Adds the [`Credential`]'s token to every outgoing call.
#[derive(Debug, Clone)]
pub struct Bearer(pub Credential);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0.current() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| tonic::Status::unauthenticated("the credential is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

pub use layer::{AuthLayer, Authenticate};

/// The token of an `authorization` header value: the `Bearer` scheme is
/// case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|token| !token.is_empty())
}

mod layer {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures::future::{Either, Ready, ready};
    use tonic::codegen::http;
    use tower::{Layer, Service};

    use super::{Verifier, bearer_token, policy};

    /// Verifies and authorizes every request but health and reflection.
    #[derive(Debug, Clone)]
    pub struct AuthLayer {
        verifier: Arc<Verifier>,
    }

    impl AuthLayer {
        /// A layer over `verifier`.
        pub fn new(verifier: Arc<Verifier>) -> Self {
            AuthLayer { verifier }
        }
    }

    impl<S> Layer<S> for AuthLayer {
        type Service = Authenticate<S>;

        fn layer(&self, inner: S) -> Self::Service {
            Authenticate { inner, verifier: self.verifier.clone() }
        }
    }

    /// The service [`AuthLayer`] makes.
    #[derive(Debug, Clone)]
    pub struct Authenticate<S> {
        inner: S,
        verifier: Arc<Verifier>,
    }

    impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Authenticate<S>
    where
        S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
        ResBody: Default,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
            let path = request.uri().path();
            if policy::is_exempt(path) {
                return Either::Right(self.inner.call(request));
            }
            let token = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(bearer_token);
            let identity = match token.map(|token| self.verifier.verify(token)) {
                Some(Ok(identity)) => identity,
                Some(Err(reason)) => {
                    tracing::debug!(%reason, path, "refused");
                    return Either::Left(ready(Ok(tonic::Status::unauthenticated("invalid token").into_http())));
                }
                None => return Either::Left(ready(Ok(tonic::Status::unauthenticated("invalid token").into_http()))),
            };
            if let Err(denied) = policy::authorize(path, &identity) {
                return Either::Left(ready(Ok(tonic::Status::permission_denied(denied).into_http())));
            }
            request.extensions_mut().insert(identity);
            Either::Right(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
