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
/// the same query to use the token. A cursor that cannot be encoded is
/// INTERNAL, never an empty token (which would read as "last page").
pub fn token<T: Serialize>(query: &str, cursor: &T) -> Result<String, tonic::Status> {
    serde_json::to_vec(&Token { q: digest(query), c: cursor })
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
        .map_err(|error| crate::error::internal(format!("page token for {query:?}: {error}")))
}

/// Like [`token`], with an unencodable cursor as an empty token. Only for
/// callers not yet moved to [`next_page`]; do not add new ones.
pub fn encode<T: Serialize>(query: &str, cursor: &T) -> String {
    token(query, cursor).unwrap_or_default()
}

/// Ends a page fetched with `limit + 1` rows: drops the look-ahead row and
/// returns the token of the next page (`cursor` of the last row kept), or ""
/// when there is no more.
pub fn next_page<T, C: Serialize>(
    rows: &mut Vec<T>,
    limit: i64,
    query: &str,
    cursor: impl Fn(&T) -> C,
) -> Result<String, tonic::Status> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return Ok(String::new());
    }
    rows.truncate(limit);
    match rows.last() {
        Some(last) => token(query, &cursor(last)),
        None => Ok(String::new()),
    }
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
        let token = token("sales|p1|0", &Cursor { id: 7 }).unwrap();
        assert_eq!(decode::<Cursor>("sales|p1|0", &token).unwrap(), Some(Cursor { id: 7 }));
        assert_eq!(decode::<Cursor>("sales|p1|0", "").unwrap(), None);
        let other = decode::<Cursor>("sales|p2|0", &token).unwrap_err();
        assert_eq!(other.code(), tonic::Code::InvalidArgument);
        assert!(other.message().contains("different query"), "{other:?}");
        let garbage = decode::<Cursor>("sales|p1|0", "not-a-token!").unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn next_page_trims_the_look_ahead_row() {
        let mut rows = vec![1, 2, 3];
        let next = next_page(&mut rows, 2, "q", |row| Cursor { id: *row }).unwrap();
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(decode::<Cursor>("q", &next).unwrap(), Some(Cursor { id: 2 }));
        let mut last = vec![1];
        assert_eq!(next_page(&mut last, 2, "q", |row| Cursor { id: *row }).unwrap(), "");
    }

    #[test]
    fn a_cursor_that_cannot_be_encoded_is_an_error() {
        // JSON maps need string keys.
        let cursor = std::collections::HashMap::from([((1, 2), 3)]);
        assert_eq!(token("q", &cursor).unwrap_err().code(), tonic::Code::Internal);
    }
}
