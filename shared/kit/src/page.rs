//! Opaque keyset page tokens (AIP-158): base64url of a small JSON cursor bound
//! to the query it pages through. A token that does not decode, or that was
//! issued for a different query (another program, filter or parent), is
//! INVALID_ARGUMENT on `page_token`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

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

/// A token's content: the query digest and the cursor.
#[derive(Serialize, Deserialize)]
struct Token<T> {
    q: String,
    c: T,
}

/// First 8 bytes (hex) of SHA-256 of the query description.
fn digest(query: &str) -> String {
    Sha256::digest(query.as_bytes()).iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

/// Encodes `cursor` for `query`, a description of the request's non-paging
/// fields (e.g. `"sales|<program>|SETTLED"`): the next request must describe
/// the same query to use the token.
pub fn encode<T: Serialize>(query: &str, cursor: &T) -> String {
    serde_json::to_vec(&Token { q: digest(query), c: cursor })
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
        .unwrap_or_default()
}

/// Decodes a token issued for `query`; empty → `None`. INVALID_ARGUMENT on
/// `page_token` when it does not decode or belongs to another query.
pub fn decode<T: DeserializeOwned>(query: &str, token: &str) -> Result<Option<T>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || invalid_field("page_token", "is not a valid page token");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: Token<T> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.q != digest(query) {
        return Err(invalid_field(
            "page_token",
            "belongs to a different query (program, parent or filters changed); start again without it",
        ));
    }
    Ok(Some(token.c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cursor {
        id: u32,
    }

    #[test]
    fn a_token_round_trips_for_its_own_query_only() {
        let token = encode("sales|p1|0", &Cursor { id: 7 });
        assert_eq!(decode::<Cursor>("sales|p1|0", &token).unwrap(), Some(Cursor { id: 7 }));
        assert_eq!(decode::<Cursor>("sales|p1|0", "").unwrap(), None);
        let other = decode::<Cursor>("sales|p2|0", &token).unwrap_err();
        assert_eq!(other.code(), tonic::Code::InvalidArgument);
        assert!(other.message().contains("different query"), "{other:?}");
        let garbage = decode::<Cursor>("sales|p1|0", "not-a-token!").unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    }
}
