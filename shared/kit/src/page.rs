//! Opaque keyset page tokens (AIP-158): base64url of a small JSON cursor bound
//! to the query it pages through, then `.` and a MAC. A token that does not
//! decode, that was issued for a different query (another program, filter
//! or parent), or whose MAC does not verify is INVALID_ARGUMENT on
//! `page_token`.
//!
//! The MAC (HMAC-SHA256 under the deployment's page token key, first 16
//! bytes) is why a cursor can be trusted as far as the database: a caller
//! can decode its own token but not forge one with an absurd cursor (a
//! timestamp Postgres cannot hold used to come back INTERNAL; issue 11 item
//! 2). The key is installed once per process ([`install_key`], from
//! `--page-token-key`); until then a random key is used.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::error::invalid_field;

/// Bytes of the HMAC a token carries (128 bits).
const MAC_BYTES: usize = 16;

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Sets the key this process signs and verifies page tokens with (any
/// length; hashed to 32 bytes). Returns false when a key was already set —
/// the first one stays, so tokens already handed out keep verifying.
pub fn install_key(key: &[u8]) -> bool {
    KEY.set(Sha256::digest(key).into()).is_ok()
}

fn key() -> &'static [u8; 32] {
    KEY.get_or_init(rand::random)
}

/// The MAC of a token's payload for `query`.
fn mac(query: &str, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key()).unwrap_or_else(|_| unreachable!());
    mac.update(query.as_bytes());
    mac.update(b"\n");
    mac.update(payload);
    mac
}

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
    let payload = serde_json::to_vec(&Token { q: digest(query), c: cursor })
        .map_err(|error| crate::error::internal(format!("page token for {query:?}: {error}")))?;
    let tag = mac(query, &payload).finalize().into_bytes();
    Ok(format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&tag[..MAC_BYTES])))
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
    let (payload, tag) = token.split_once('.').ok_or_else(invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    // The query digest is checked first, only for its clearer message: a
    // token of another query fails the MAC as well.
    let claimed: Token<serde_json::Value> = serde_json::from_slice(&payload).map_err(|_| invalid())?;
    if claimed.q != digest(query) {
        return Err(invalid_field(
            "page_token",
            "belongs to a different query (program, parent or filters changed); start again without it",
        ));
    }
    if tag.len() != MAC_BYTES || mac(query, &payload).verify_truncated_left(&tag).is_err() {
        return Err(invalid());
    }
    let token: Token<T> = serde_json::from_slice(&payload).map_err(|_| invalid())?;
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

    /// A caller can read its token's cursor but not change it: a forged
    /// cursor (even with the right query digest) fails the MAC.
    #[test]
    fn a_token_with_a_forged_cursor_is_refused() {
        let honest = token("sales|p1|0", &Cursor { id: 7 }).unwrap();
        let (payload, tag) = honest.split_once('.').unwrap();
        let mut forged: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        forged["c"]["id"] = serde_json::json!(4_000_000_000u32);
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap()));
        let refused = decode::<Cursor>("sales|p1|0", &forged).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("not a valid page token"), "{refused:?}");
        // Without a MAC, or with a truncated one, it is refused too.
        assert!(decode::<Cursor>("sales|p1|0", payload).is_err());
        assert!(decode::<Cursor>("sales|p1|0", &format!("{payload}.{}", &tag[..4])).is_err());
        assert_eq!(decode::<Cursor>("sales|p1|0", &honest).unwrap(), Some(Cursor { id: 7 }));
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
