//! Events written by reference: an outbox row with empty `data`, whose data
//! message the writing service builds when the event is read, from the
//! immutable rows it reports on.
//!
//! Why: the ledger's `entry.posted` carried the whole entry (breakdown
//! included), about a kilobyte per posted line, written a second time next
//! to the entry itself — the largest single share of the settlement's WAL
//! (issue 15). An entry never changes after it is posted (its status lives
//! apart), so the event's data can be rebuilt from it exactly: the ledger
//! writes `entry.posted` by reference and rebuilds the entry as posted.
//!
//! A protobuf message with any field set never encodes to zero bytes, and
//! every data message names its resource, so empty `data` is unambiguous.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;

/// Builds the data of events written by reference: given the pool and the
/// subjects (`entries/{id}`) of such events, returns the encoded data
/// message of each, by subject. A subject it cannot build is left out (the
/// read then fails with a decode error: an event is never served empty).
pub type Materialize =
    Arc<dyn Fn(PgPool, Vec<String>) -> BoxFuture<'static, Result<HashMap<String, Vec<u8>>, sqlx::Error>> + Send + Sync>;

/// Fills in the data of the by-reference events among `rows` (`(subject,
/// data)`), one call of `materialize` for all of them. Errors: the
/// database's, or a decode error when an event is by reference and the
/// service has no materializer or could not build it.
pub(crate) async fn fill<'a>(
    materialize: Option<&Materialize>,
    pool: &PgPool,
    rows: impl Iterator<Item = (&'a str, &'a mut Vec<u8>)>,
) -> Result<(), sqlx::Error> {
    let empty: Vec<(&str, &mut Vec<u8>)> = rows.filter(|(_, data)| data.is_empty()).collect();
    if empty.is_empty() {
        return Ok(());
    }
    let Some(materialize) = materialize else {
        return Err(sqlx::Error::Decode("an event written by reference, and no materializer".into()));
    };
    let subjects: Vec<String> = empty.iter().map(|(subject, _)| subject.to_string()).collect();
    let mut built = materialize(pool.clone(), subjects).await?;
    for (subject, data) in empty {
        *data = built.remove(subject).ok_or_else(|| {
            sqlx::Error::Decode(format!("the data of the event about {subject} cannot be built").into())
        })?;
    }
    Ok(())
}
