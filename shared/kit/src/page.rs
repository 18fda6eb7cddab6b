//! Opaque keyset page tokens (AIP-158): base64url of a small JSON cursor. A
//! token that does not decode is INVALID_ARGUMENT on `page_token`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::invalid_field;

/// Default page size when the request gives 0.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Largest page size served.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// Clamps a requested page size: ≤ 0 → default, above the max → max.
/// A negative size is INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> Result<i64, tonic::Status> {
    match requested {
        n if n < 0 => Err(invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a cursor.
pub fn encode<T: Serialize>(cursor: &T) -> String {
    serde_json::to_vec(cursor).map(|bytes| URL_SAFE_NO_PAD.encode(bytes)).unwrap_or_default()
}

/// Decodes a cursor; empty → `None`.
pub fn decode<T: DeserializeOwned>(token: &str) -> Result<Option<T>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid_field("page_token", "is not a valid page token"))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| invalid_field("page_token", "is not a valid page token"))
}
