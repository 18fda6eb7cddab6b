//! Numbering events per program, gap-free, and waking watchers.
//!
//! Writers insert events unsequenced (`sequence` NULL) in the transaction of
//! their change. This task, one per service process, numbers them: in one
//! transaction that holds an advisory lock (so one replica sequences at a
//! time, and passes are serial), it gives the unsequenced rows it can see —
//! committed ones only — the next numbers of their program in `position`
//! order, bumps `event_sequences`, and NOTIFYs the service's channel. A
//! number is therefore only ever assigned once its event is committed, by
//! a serial pass that continues from the last committed number: the numbers
//! of a program are 1, 2, 3, … without gaps, and a pass that fails rolls
//! back whole.
//!
//! Why a poll and not a NOTIFY from each writer: a NOTIFY makes its commit
//! take a database-wide lock until the commit is flushed, which would
//! serialize the settlement hot path's commits. The poll is one index probe
//! (`events_unsequenced_idx` is empty when idle): every [`POLL_INTERVAL`]
//! for [`HOT_WINDOW`] after this process wrote events (an in-process signal
//! from [`super::outbox::insert`], raised before the writer commits) or
//! numbered some, every [`IDLE_POLL_INTERVAL`] otherwise — so an idle
//! service asks Postgres once a second, and an event is numbered within
//! about [`POLL_INTERVAL`] of its commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::catalogue::Source;

/// How often the sequencer looks for unsequenced events while the process
/// writes: about the longest an event waits after its commit before
/// watchers can see it (plus one pass).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long after a write (or a pass that numbered something) the sequencer
/// keeps polling every [`POLL_INTERVAL`]: longer than a writer's
/// transaction takes to commit after its insert.
pub const HOT_WINDOW: Duration = Duration::from_secs(2);

/// How often the sequencer looks while nothing is written in this process
/// (events left by a crashed process, or written by a process whose
/// sequencer is gone).
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Most events numbered in one pass; a backlog takes several passes, back to
/// back.
pub const PASS_LIMIT: i64 = 5000;

/// How long to wait after a failed pass (database down) before the next.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The notification channel of a source's sequenced events
/// (`accrue_events_ledger`): the sequencer NOTIFYs it after each pass that
/// numbered something; every replica's listener wakes its watchers.
pub fn channel(source: &Source) -> String {
    format!("accrue_events_{}", source.schema)
}

/// The advisory lock key of a source's sequencer: FNV-1a of
/// `accrue events|<schema>`, so the five services (one database) never
/// share a lock, and none collides with the ledger's clearance lock.
pub fn lock_key(source: &Source) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "accrue events|".bytes().chain(source.schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Another replica holds the lock.
    Skipped,
    /// This many events were numbered.
    Sequenced(u64),
}

/// Numbers up to `limit` committed, unsequenced events of `source`'s outbox
/// (see the module docs) in one transaction, NOTIFYing the channel when it
/// numbered any. Errors are the database's; nothing is numbered then.
pub async fn sequence_pass(pool: &PgPool, source: &Source, limit: i64) -> Result<Pass, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (held,): (bool,) =
        sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)").bind(lock_key(source)).fetch_one(&mut *tx).await?;
    if !held {
        return Ok(Pass::Skipped);
    }
    // One statement: the pending rows in position order, numbered within
    // their program; the counters bumped by each program's count (RETURNING
    // the new last number, so the pass's first is last − count + 1); the
    // rows updated from both.
    let (numbered,): (i64,) = sqlx::query_as(
        r#"
        WITH pending AS (
            SELECT position, program_id,
                   row_number() OVER (PARTITION BY program_id ORDER BY position) AS n
            FROM (SELECT position, program_id FROM events WHERE sequence IS NULL ORDER BY position LIMIT $1) p
        ), counts AS (
            SELECT program_id, count(*) AS c FROM pending GROUP BY program_id
        ), bumped AS (
            INSERT INTO event_sequences AS s (program_id, last_sequence)
            SELECT program_id, c FROM counts
            ON CONFLICT (program_id) DO UPDATE SET last_sequence = s.last_sequence + excluded.last_sequence
            RETURNING program_id, last_sequence
        ), numbered AS (
            UPDATE events e SET sequence = b.last_sequence - c.c + p.n
            FROM pending p JOIN counts c USING (program_id) JOIN bumped b USING (program_id)
            WHERE e.position = p.position
            RETURNING 1
        )
        SELECT count(*) FROM numbered
        "#,
    )
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    if numbered > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(channel(source)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Pass::Sequenced(u64::try_from(numbered).unwrap_or(0)))
}

/// True when `source`'s outbox has an unsequenced event (an index probe).
async fn has_pending(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let (pending,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM events WHERE sequence IS NULL)").fetch_one(pool).await?;
    Ok(pending)
}

/// The sequencer task: numbers what is pending — every [`POLL_INTERVAL`]
/// while the process writes, every [`IDLE_POLL_INTERVAL`] otherwise, passes
/// back to back while a backlog lasts — and bumps `wake` so this process's
/// watchers look at once. Stops at `shutdown`; a pass in flight finishes or
/// rolls back whole.
pub async fn run(pool: PgPool, source: &'static Source, wake: Arc<watch::Sender<u64>>, shutdown: CancellationToken) {
    let mut writes = super::outbox::writes();
    // Hot from the start: a crashed process may have left events behind.
    let mut hot_until = Instant::now() + HOT_WINDOW;
    loop {
        let outcome = async {
            if !has_pending(&pool).await? {
                return Ok(Pass::Sequenced(0));
            }
            sequence_pass(&pool, source, PASS_LIMIT).await
        };
        let pause = match outcome.await {
            Ok(Pass::Sequenced(0)) | Ok(Pass::Skipped) => {
                if Instant::now() < hot_until {
                    POLL_INTERVAL
                } else {
                    IDLE_POLL_INTERVAL
                }
            }
            Ok(Pass::Sequenced(numbered)) => {
                tracing::debug!(source = source.uri, numbered, "events sequenced");
                wake.send_modify(|generation| *generation = generation.wrapping_add(1));
                hot_until = Instant::now() + HOT_WINDOW;
                // A full pass leaves a backlog: go again at once.
                if numbered >= PASS_LIMIT as u64 { Duration::ZERO } else { POLL_INTERVAL }
            }
            Err(error) => {
                tracing::warn!(source = source.uri, %error, "event sequencing pass failed; retrying");
                RETRY_INTERVAL
            }
        };
        let mut next = Instant::now() + pause;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next.into()) => break,
                // Never an error: the signal is a static that is never dropped.
                _ = writes.changed() => {
                    // A write: its commit is a moment away. Stay hot, and cut
                    // an idle wait short (not a hot one: under load writes
                    // come far more often than the poll).
                    hot_until = Instant::now() + HOT_WINDOW;
                    next = next.min(Instant::now() + POLL_INTERVAL);
                }
            }
        }
    }
}

/// The listener task: LISTENs on the source's channel (one connection per
/// process) and bumps `wake` on each notification, so watchers of this
/// replica see events another replica sequenced. Watchers also poll, so a
/// notification lost while the connection was down delays, never loses.
pub async fn listen(pool: PgPool, source: &'static Source, wake: Arc<watch::Sender<u64>>, shutdown: CancellationToken) {
    let channel = channel(source);
    loop {
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            error = listen_once(&pool, &channel, &wake) => error,
        };
        tracing::debug!(source = source.uri, %error, "event listener disconnected; reconnecting");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY_INTERVAL) => {}
        }
    }
}

/// Listens until the connection fails; returns why.
async fn listen_once(pool: &PgPool, channel: &str, wake: &watch::Sender<u64>) -> sqlx::Error {
    let bump = || wake.send_modify(|generation| *generation = generation.wrapping_add(1));
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error,
    };
    if let Err(error) = listener.listen(channel).await {
        return error;
    }
    // Something may have been sequenced while nobody listened.
    bump();
    loop {
        if let Err(error) = listener.recv().await {
            return error;
        }
        bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::catalogue::SOURCES;

    #[test]
    fn every_source_has_its_own_lock_and_channel() {
        let keys: std::collections::BTreeSet<i64> = SOURCES.iter().map(|s| lock_key(s)).collect();
        assert_eq!(keys.len(), SOURCES.len());
        assert!(!keys.contains(&0x0063_6c65_6172), "the ledger's clearance lock");
        assert_eq!(channel(&crate::events::catalogue::LEDGER), "accrue_events_ledger");
    }
}
