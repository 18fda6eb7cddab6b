//! Why Postgres refused a connection, in words an operator can act on
//! (issue 13 items 6 and 8): a wrong password, an unknown role or database,
//! too many clients, nothing listening. The pool hides these — it retries a
//! refused connection until its acquire timeout and then reports only
//! `PoolTimedOut` — so the health probe, while the database is unreachable,
//! makes one connection of its own, classifies the refusal, logs it, and
//! keeps it for a while: the UNAVAILABLE an RPC then gets names the cause
//! and the fix instead of a bare "database unavailable".

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool};

/// Why the server refused a connection, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SQLSTATE 28P01 invalid_password: the password is wrong, or the role
    /// has none and the server wants one.
    BadPassword,
    /// SQLSTATE 28000 invalid_authorization_specification: the role does not
    /// exist, or `pg_hba.conf` has no entry for it from this host.
    NotAuthorized,
    /// SQLSTATE 53300 too_many_connections: the server's `max_connections`
    /// (or the role's or database's CONNECTION LIMIT) is used up.
    TooManyClients,
    /// SQLSTATE 3D000 invalid_catalog_name: the database does not exist.
    UnknownDatabase,
    /// The TCP connection was refused: no server listens at that address.
    ConnectionRefused,
}

impl Refusal {
    /// The refusal `error` is, if it is one.
    pub fn of(error: &sqlx::Error) -> Option<Refusal> {
        match error {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("28P01") => Some(Refusal::BadPassword),
                Some("28000") => Some(Refusal::NotAuthorized),
                Some("53300") => Some(Refusal::TooManyClients),
                Some("3D000") => Some(Refusal::UnknownDatabase),
                _ => None,
            },
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Some(Refusal::ConnectionRefused)
            }
            _ => None,
        }
    }

    /// The google.rpc.ErrorInfo reason of an UNAVAILABLE caused by it.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadPassword | Refusal::NotAuthorized => "DATABASE_AUTH_FAILED",
            Refusal::TooManyClients => "DATABASE_TOO_MANY_CLIENTS",
            Refusal::UnknownDatabase => "DATABASE_NOT_FOUND",
            Refusal::ConnectionRefused => "DATABASE_CONNECTION_REFUSED",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::BadPassword => {
                "password authentication failed (SQLSTATE 28P01): check the password in the database URL"
            }
            Refusal::NotAuthorized => {
                "the server does not accept this role (SQLSTATE 28000): check that the user in the database URL \
                 exists and that pg_hba.conf lets it connect from this host"
            }
            Refusal::TooManyClients => {
                "too many clients (SQLSTATE 53300): the server's max_connections or a CONNECTION LIMIT is used up; \
                 lower the pool sizes (--max-connections / ACCRUE_DB_MAX_CONNECTIONS) or raise the limit"
            }
            Refusal::UnknownDatabase => {
                "the database does not exist (SQLSTATE 3D000): create it, or fix the database name in the URL"
            }
            Refusal::ConnectionRefused => {
                "connection refused: no Postgres listens at the URL's host and port; start it or fix the URL"
            }
        })
    }
}

/// How long a refusal the probe saw explains a pool timeout.
pub const RECENT: Duration = Duration::from_secs(30);

/// The refusal the health probe saw last in this process, and when.
static LAST: Mutex<Option<(Instant, Refusal)>> = Mutex::new(None);

/// The refusal a health probe of this process saw within [`RECENT`], if
/// any: the likely reason why a pool timed out. (Process-wide: in the
/// in-process dev stack the five services share one database server.)
pub fn recent() -> Option<Refusal> {
    let last = LAST.lock().ok()?;
    last.as_ref().filter(|(at, _)| at.elapsed() < RECENT).map(|(_, refusal)| refusal.clone())
}

/// Connects once with `pool`'s options (within two seconds) to learn why
/// the pool cannot: a refusal is logged (at WARN when it is new) and kept
/// for [`recent`]; a connection that works clears it.
pub async fn diagnose(pool: &PgPool, service: &str) {
    let options = pool.connect_options();
    let attempt = tokio::time::timeout(Duration::from_secs(2), PgConnection::connect_with(&options)).await;
    let refusal = match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            None
        }
        Ok(Err(error)) => match Refusal::of(&error) {
            Some(refusal) => Some(refusal),
            None => {
                tracing::debug!(service, %error, "database connection failed");
                return;
            }
        },
        Err(_) => return,
    };
    let Ok(mut last) = LAST.lock() else { return };
    let previous = last.as_ref().map(|(_, refusal)| refusal.clone());
    match refusal {
        Some(refusal) => {
            if previous.as_ref() != Some(&refusal) {
                tracing::warn!(service, reason = refusal.reason(), "database refuses connections: {refusal}");
            }
            *last = Some((Instant::now(), refusal));
        }
        None => *last = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_tcp_connection_is_named_and_other_io_errors_are_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Refusal::of(&refused), Some(Refusal::ConnectionRefused));
        let reset = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Refusal::of(&reset), None);
        assert_eq!(Refusal::of(&sqlx::Error::PoolTimedOut), None);
    }

    /// A server error with just a SQLSTATE, as sqlx hands it over.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(state: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(state)))
    }

    #[test]
    fn sqlstates_of_a_refused_login_are_classified() {
        assert_eq!(Refusal::of(&coded("28P01")), Some(Refusal::BadPassword));
        assert_eq!(Refusal::of(&coded("28000")), Some(Refusal::NotAuthorized));
        assert_eq!(Refusal::of(&coded("53300")), Some(Refusal::TooManyClients));
        assert_eq!(Refusal::of(&coded("3D000")), Some(Refusal::UnknownDatabase));
        assert_eq!(Refusal::of(&coded("23505")), None);
        assert_eq!(Refusal::BadPassword.reason(), "DATABASE_AUTH_FAILED");
    }

    #[test]
    fn every_refusal_names_its_sqlstate_and_a_fix() {
        for (refusal, state) in [
            (Refusal::BadPassword, "28P01"),
            (Refusal::NotAuthorized, "28000"),
            (Refusal::TooManyClients, "53300"),
            (Refusal::UnknownDatabase, "3D000"),
        ] {
            let text = refusal.to_string();
            assert!(text.contains(state), "{text}");
            assert!(text.contains(": "), "{text}");
        }
        assert!(Refusal::TooManyClients.to_string().contains("--max-connections"));
    }
}
