//! `tonic::Status` builders (DESIGN §6 "Errors"): callers' mistakes get
//! INVALID_ARGUMENT with BadRequest field violations, NOT_FOUND,
//! FAILED_PRECONDITION or ALREADY_EXISTS with an ErrorInfo reason; only our own
//! faults are INTERNAL, and their details are logged, never sent.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The ErrorInfo domain on every status Accrue returns.
pub const ERROR_DOMAIN: &str = "accrue.dev";

/// Longest field path or description a status carries, in characters.
pub const MAX_VIOLATION_CHARS: usize = 500;
/// Most bytes of violations one status lists; the rest are counted. The
/// details repeat them, base64 in a header, so the whole stays well inside
/// HTTP/2's usual 16 KiB header limit.
pub const MAX_VIOLATION_BYTES: usize = 4096;

/// `text` cut to [`MAX_VIOLATION_CHARS`] characters, marked with "…".
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_VIOLATION_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Collects field violations; [`FieldViolations::into_result`] turns them into
/// one INVALID_ARGUMENT status.
#[derive(Debug, Default, Clone)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
}

impl FieldViolations {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a dotted path such as `link.splits[0].basis_points`)
    /// is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push((field.into(), description.into()));
    }

    /// Moves every violation of `other` into `self`, its field path passed
    /// through `rename` (e.g. to report a nested message's `rules.rate` as
    /// `draft_rules.rate`).
    pub fn absorb(&mut self, other: FieldViolations, rename: impl Fn(&str) -> String) {
        self.violations.extend(other.violations.into_iter().map(|(field, description)| (rename(&field), description)));
    }

    /// Prefixes every description with `context` (e.g. "stream message 3"),
    /// for violations whose field path alone cannot say where they are.
    pub fn within(mut self, context: &str) -> Self {
        for (_, description) in &mut self.violations {
            *description = format!("{context}: {description}");
        }
        self
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// Ok when empty; otherwise INVALID_ARGUMENT listing every violation.
    pub fn into_result(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            return Ok(());
        }
        Err(self.into_status())
    }

    /// The INVALID_ARGUMENT status for the recorded violations: as many as
    /// fit [`MAX_VIOLATION_BYTES`], each field and description cut to
    /// [`MAX_VIOLATION_CHARS`] characters. A status travels in HTTP/2
    /// headers (`grpc-message`, `grpc-status-details-bin`), which peers cap
    /// at 16 KiB; a description that echoes a caller's 2,000-character
    /// value, many times over, would otherwise break the response itself
    /// (the client saw an h2 protocol error, reported as INTERNAL).
    pub fn into_status(self) -> Status {
        let total = self.violations.len();
        let mut sent: Vec<(String, String)> = Vec::new();
        let mut bytes = 0;
        for (field, description) in self.violations {
            let (field, description) = (clip(&field), clip(&description));
            bytes += field.len() + description.len() + 4;
            if bytes > MAX_VIOLATION_BYTES && !sent.is_empty() {
                break;
            }
            sent.push((field, description));
        }
        let mut message =
            sent.iter().map(|(field, description)| format!("{field}: {description}")).collect::<Vec<_>>().join("; ");
        if total > sent.len() {
            message.push_str(&format!("; and {} more", total - sent.len()));
        }
        let mut details = ErrorDetails::new();
        for (field, description) in sent {
            details.add_bad_request_violation(field, description);
        }
        Status::with_error_details(Code::InvalidArgument, format!("invalid argument: {message}"), details)
    }
}

/// INVALID_ARGUMENT for a single field.
pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Status {
    let mut violations = FieldViolations::new();
    violations.add(field, description);
    violations.into_status()
}

/// A status with `code`, `message` and a google.rpc.ErrorInfo carrying
/// `reason` (UPPER_SNAKE) in the [`ERROR_DOMAIN`].
pub fn with_reason(code: Code, reason: &str, message: String) -> Status {
    let details =
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::<String, String>::new());
    Status::with_error_details(code, message, details)
}

/// [`with_reason`] with ErrorInfo `metadata` (what a client needs to act on
/// the error, e.g. how much of a stream was recorded).
pub fn with_reason_and_metadata(
    code: Code,
    reason: &str,
    message: String,
    metadata: std::collections::HashMap<String, String>,
) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata))
}

/// NOT_FOUND for a resource kind and id (`"partner"`, `"7f…"`).
pub fn not_found(resource: &str, id: impl std::fmt::Display) -> Status {
    with_reason(Code::NotFound, &format!("{}_NOT_FOUND", resource.to_uppercase()), format!("{resource} {id} not found"))
}

/// FAILED_PRECONDITION with a machine-readable reason (`"CYCLE"`).
pub fn failed_precondition(reason: &str, message: impl Into<String>) -> Status {
    with_reason(Code::FailedPrecondition, reason, message.into())
}

/// ALREADY_EXISTS with a machine-readable reason.
pub fn already_exists(reason: &str, message: impl Into<String>) -> Status {
    with_reason(Code::AlreadyExists, reason, message.into())
}

/// ABORTED (a concurrent change won; the caller may retry).
pub fn aborted(reason: &str, message: impl Into<String>) -> Status {
    with_reason(Code::Aborted, reason, message.into())
}

/// INTERNAL for our own fault: logs the error with its context and returns a
/// status that says nothing about internals.
pub fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

/// Maps a database error: unreachable database → UNAVAILABLE (retryable),
/// anything else → INTERNAL (logged). A server that is shutting down,
/// crashed or still starting (SQLSTATE 57P01..57P03) or a connection
/// failure (class 08) is unreachable too: a Postgres restart then reads as
/// UNAVAILABLE to clients, which retry, instead of INTERNAL.
///
/// A refused login ([`crate::db::Refusal`]: too many clients 53300, a wrong
/// password, an unknown role or database, nothing listening) is UNAVAILABLE
/// with an ErrorInfo reason (`DATABASE_TOO_MANY_CLIENTS`, …) and a message
/// naming the cause and the fix; so is a pool timeout while the health
/// probe has recently seen such a refusal (the pool itself only says it
/// timed out).
pub fn db_error(error: sqlx::Error) -> Status {
    let refusal = crate::db::Refusal::of(&error)
        .or_else(|| matches!(error, sqlx::Error::PoolTimedOut).then(crate::db::recent_refusal).flatten());
    if let Some(refusal) = refusal {
        tracing::warn!(%error, reason = refusal.reason(), "database unavailable: {refusal}");
        return with_reason(Code::Unavailable, refusal.reason(), format!("database unavailable: {refusal}"));
    }
    let unreachable = match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unreachable_sqlstate(&code)),
        _ => false,
    };
    if unreachable {
        tracing::warn!(%error, "database unavailable");
        Status::unavailable("database unavailable")
    } else {
        internal(error)
    }
}

/// SQLSTATEs of a server that cannot serve the session: admin_shutdown,
/// crash_shutdown, cannot_connect_now (57P01..57P03) and the connection
/// exception class (08…).
pub fn is_unreachable_sqlstate(code: &str) -> bool {
    matches!(code, "57P01" | "57P02" | "57P03") || code.starts_with("08")
}

/// True when `error` is a Postgres unique violation (SQLSTATE 23505).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// A store call failed in the database. Stores return it so that handlers
/// propagate with `?`: the one mapping to a status is the `From` below
/// (unreachable → UNAVAILABLE, anything else → INTERNAL, logged).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub sqlx::Error);

impl StoreError {
    /// The name of the constraint a write violated, if any.
    pub fn constraint(&self) -> Option<&str> {
        match &self.0 {
            sqlx::Error::Database(error) => error.constraint(),
            _ => None,
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Status {
        db_error(error.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_server_is_unreachable_and_a_constraint_is_not() {
        for code in ["57P01", "57P02", "57P03", "08006", "08001"] {
            assert!(is_unreachable_sqlstate(code), "{code}");
        }
        for code in ["23505", "40001", "57014", "42P01"] {
            assert!(!is_unreachable_sqlstate(code), "{code}");
        }
    }

    /// However many and however long the violations, the status stays small
    /// enough for HTTP/2 headers (16 KiB).
    #[test]
    fn a_status_of_many_long_violations_stays_small() {
        let mut violations = FieldViolations::new();
        for index in 0..500 {
            violations.add(format!("sales[{index}].currency_code"), format!("unknown currency {:?}", "x".repeat(5000)));
        }
        let status = violations.into_status();
        assert!(status.message().len() < 5 * 1024, "{} bytes", status.message().len());
        assert!(status.details().len() < 10 * 1024, "{} bytes", status.details().len());
        assert!(status.message().ends_with(" more"), "{}", &status.message()[status.message().len() - 40..]);
        let bad = status.get_details_bad_request().unwrap();
        assert!((5..20).contains(&bad.field_violations.len()), "{}", bad.field_violations.len());
        assert_eq!(bad.field_violations[0].field, "sales[0].currency_code");
        assert!(bad.field_violations[0].description.ends_with('…'));
    }
}
