//! Idempotent creates (AIP-155, DESIGN §6): a mutating RPC's `request_id` is
//! parsed here with one length limit for every service, and a repeated id is
//! answered here: the same body gets the stored result, another body gets
//! ALREADY_EXISTS `REQUEST_ID_REUSED` (the Formance rule: a key names one
//! request, never two).
//!
//! The usual shape of a create:
//!
//! ```ignore
//! let request_id = idempotency::request_id("request_id", &req.request_id, &mut violations);
//! let fingerprint = idempotency::fingerprint_message(&request_without_its_id);
//! if let Some(stored) = store::by_request_id(..).await? {
//!     return idempotency::replay(request_id.as_str(), stored, |row| row.request_hash == fingerprint);
//! }
//! ```

use serde::Serialize;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::FieldViolations;

/// Longest request id (or idempotency key) accepted, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// The reason on the ALREADY_EXISTS of a reused request id.
pub const REUSED_REASON: &str = "REQUEST_ID_REUSED";

/// A caller's idempotency key: non-empty and at most [`MAX_REQUEST_ID_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses an optional request id: empty → `None` (not idempotent); longer
/// than [`MAX_REQUEST_ID_BYTES`] → a violation on `field` and `None`.
pub fn request_id(field: &str, value: &str, violations: &mut FieldViolations) -> Option<RequestId> {
    if value.len() > MAX_REQUEST_ID_BYTES {
        violations.add(field, format!("must be at most {MAX_REQUEST_ID_BYTES} bytes"));
        return None;
    }
    (!value.is_empty()).then(|| RequestId(value.to_string()))
}

/// Checks a required idempotency key (empty or too long → a violation on
/// `field`).
pub fn require_key(field: &str, value: &str, violations: &mut FieldViolations) -> Option<RequestId> {
    if value.trim().is_empty() {
        violations.add(field, "is required");
        return None;
    }
    request_id(field, value, violations)
}

/// SHA-256 of the canonical JSON of a request body (everything but the
/// request id), stored beside the result and compared on a repeat.
pub fn fingerprint<T: Serialize>(body: &T) -> Result<Vec<u8>, Status> {
    let bytes =
        serde_json::to_vec(body).map_err(|error| crate::error::internal(format!("request fingerprint: {error}")))?;
    Ok(Sha256::digest(bytes).to_vec())
}

/// SHA-256 of a protobuf message's encoding; pass the request with its
/// `request_id` cleared so that only the body counts.
pub fn fingerprint_message<M: prost::Message>(message: &M) -> Vec<u8> {
    Sha256::digest(message.encode_to_vec()).to_vec()
}

/// ALREADY_EXISTS `REQUEST_ID_REUSED`: `request_id` was used for another request.
pub fn reused(request_id: impl std::fmt::Display) -> Status {
    crate::error::already_exists(
        REUSED_REASON,
        format!("request_id {:?} was already used with a different request", request_id.to_string()),
    )
}

/// The answer to a repeated `request_id` whose result `stored` exists: `Ok`
/// with it when `same_body` says the request matches the one that made it,
/// ALREADY_EXISTS otherwise.
pub fn replay<T>(request_id: &str, stored: T, same_body: impl FnOnce(&T) -> bool) -> Result<T, Status> {
    if same_body(&stored) { Ok(stored) } else { Err(reused(request_id)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_one_limit() {
        let mut violations = FieldViolations::new();
        assert_eq!(request_id("request_id", "", &mut violations), None);
        assert_eq!(request_id("request_id", "r1", &mut violations).map(|id| id.to_string()), Some("r1".into()));
        assert!(violations.is_empty());
        let long = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        assert_eq!(request_id("request_id", &long, &mut violations), None);
        assert_eq!(violations.into_result().unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_repeat_with_another_body_is_already_exists() {
        let id = "r1";
        assert_eq!(replay(id, 7, |stored| *stored == 7).unwrap(), 7);
        let status = replay(id, 7, |stored| *stored == 8).unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_ne!(fingerprint(&("a", 1)).unwrap(), fingerprint(&("a", 2)).unwrap());
    }
}
