//! The token a client sends: none, fixed, minted for a service, or read
//! from a mounted file; and the interceptor that adds it to every call.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

use super::{FILE_CHECK_INTERVAL, Minter, Role, SERVICE_TOKEN_TTL};

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
