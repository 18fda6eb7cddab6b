//! The advisory locks that let one replica at a time run a background pass
//! over a service's outbox (the sequencer, the webhook worker).

use sqlx::{PgPool, Postgres, Transaction};

/// The lock key of `task` for `schema`: FNV-1a of `accrue <task>|<schema>`,
/// so the five services (one database) and the two tasks never share a key.
pub(crate) fn key(task: &str, schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "accrue ".bytes().chain(task.bytes()).chain(b"|".iter().copied()).chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A transaction holding the transaction-level advisory lock `key`, or None
/// when another session holds it. The refused transaction is rolled back
/// here, not left to a drop: sqlx rolls a dropped transaction back only when
/// its pooled connection is next used.
pub(crate) async fn begin_locked(
    pool: &PgPool,
    key: i64,
) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)").bind(key).fetch_one(&mut *tx).await?;
    if held {
        Ok(Some(tx))
    } else {
        tx.rollback().await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 of `text`, written out as the spec gives it.
    fn fnv1a(text: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    /// The keys may never change: during a rolling upgrade an old and a new
    /// replica must still exclude each other.
    #[test]
    fn keys_are_the_ones_released_replicas_take() {
        assert_eq!(key("events", "ledger"), fnv1a("accrue events|ledger"));
        assert_eq!(key("webhooks", "attribution"), fnv1a("accrue webhooks|attribution"));
    }
}
