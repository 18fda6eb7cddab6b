//! Numbering events per program, gap-free, and waking watchers.
//!
//! Writers insert events unnumbered in the transaction of their change, each
//! row stamped with its transaction's id (`xid`). This task, one per service
//! process, numbers them: in one transaction that holds an advisory lock (so
//! one replica sequences at a time, and passes are serial), it takes the
//! events after the watermark (the last event numbered, in `(xid, position)`
//! order) whose transaction id is below the oldest transaction still running
//! (its snapshot's xmin). Those events are final — committed, or rolled back
//! and invisible — and no later write can add one among them, so the pass
//! gives the committed ones the next numbers of their program in `(xid,
//! position)` order, bumps `event_sequences`, moves the watermark past them
//! and NOTIFYs the service's channel. The numbers are written as runs (one
//! `event_runs` row per program and [`RUN_LIMIT`] events, never a row per
//! event, and the event row is never rewritten): a run's events are exactly
//! the visible events of its program between its first and last `(xid,
//! position)`, and the n-th of them is number `first_sequence + n − 1`
//! (readers: the SQL function `numbered_events`). The numbers of a program are therefore
//! 1, 2, 3, … without gaps, a pass that fails rolls back whole, a
//! transaction that began after another committed is numbered after it, and
//! one transaction's events keep the order they were written in.
//!
//! The cost of that: an event is numbered only once every transaction that
//! took its id before the event's own has ended — a write transaction left
//! open anywhere in the cluster (an idle session in a transaction) holds the
//! feed back until it ends. Accrue's own write transactions last
//! milliseconds.
//!
//! Why a poll and not a NOTIFY from each writer: a NOTIFY makes its commit
//! take a database-wide lock until the commit is flushed, which would
//! serialize the settlement hot path's commits. The poll is one index probe
//! (`events_xid_idx` after the watermark): every [`POLL_INTERVAL`] for
//! [`HOT_WINDOW`] after this process wrote events (an in-process signal
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

/// Most events in one run (one `event_runs` row): a reader numbers a run's
/// events by reading them all, so this bounds the work of reading one event
/// (a webhook delivery, a feed page that starts mid-run).
pub const RUN_LIMIT: i64 = 500;

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
    super::lock::key("events", source.schema)
}

/// The events a pass numbers (alias `e`): after the watermark in (xid,
/// position) order, and final — written by a transaction older than every
/// one still running. The watermark is read by scalar subqueries so that it
/// bounds the scan of `events_xid_idx`.
const FINAL_AFTER_WATERMARK: &str = "(e.xid, e.position) > \
    ((SELECT xid FROM event_watermark), (SELECT position FROM event_watermark)) \
    AND e.xid < pg_snapshot_xmin(pg_current_snapshot())";

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Another replica holds the lock.
    Skipped,
    /// This many events were numbered.
    Sequenced(u64),
}

/// Numbers up to `limit` committed, unnumbered events of `source`'s outbox
/// (see the module docs) in one transaction, NOTIFYing the channel when it
/// numbered any. Errors are the database's; nothing is numbered then.
pub async fn sequence_pass(pool: &PgPool, source: &Source, limit: i64) -> Result<Pass, sqlx::Error> {
    let Some(mut tx) = super::lock::begin_locked(pool, lock_key(source)).await? else {
        return Ok(Pass::Skipped);
    };
    // One statement: the final events after the watermark in (xid,
    // position) order, numbered within their program; the counters bumped
    // by each program's count (RETURNING the new last number, so the pass's
    // first is last − count + 1); one run per program and RUN_LIMIT events
    // (its first and last event and numbers); the watermark moved to the
    // last event taken.
    let (numbered,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        WITH pending AS (
            SELECT p.position, p.program_id, p.xid,
                   row_number() OVER (PARTITION BY p.program_id ORDER BY p.xid, p.position) AS n
            FROM (SELECT e.position, e.program_id, e.xid FROM events e WHERE {FINAL_AFTER_WATERMARK}
                  ORDER BY e.xid, e.position LIMIT $1) p
        ), counts AS (
            SELECT program_id, count(*) AS c FROM pending GROUP BY program_id
        ), bumped AS (
            INSERT INTO event_sequences AS s (program_id, last_sequence)
            SELECT program_id, c FROM counts
            ON CONFLICT (program_id) DO UPDATE SET last_sequence = s.last_sequence + excluded.last_sequence
            RETURNING program_id, last_sequence
        ), chunks AS (
            SELECT program_id, min(n) AS lo, max(n) AS hi FROM pending GROUP BY program_id, (n - 1) / $2
        ), runs AS (
            INSERT INTO event_runs
                (program_id, first_sequence, last_sequence, first_xid, first_position, last_xid, last_position)
            SELECT k.program_id, b.last_sequence - c.c + k.lo, b.last_sequence - c.c + k.hi,
                   f.xid, f.position, l.xid, l.position
            FROM chunks k JOIN counts c USING (program_id) JOIN bumped b USING (program_id)
            JOIN pending f ON f.program_id = k.program_id AND f.n = k.lo
            JOIN pending l ON l.program_id = k.program_id AND l.n = k.hi
            RETURNING 1
        ), moved AS (
            UPDATE event_watermark w SET xid = l.xid, position = l.position
            FROM (SELECT xid, position FROM pending ORDER BY xid DESC, position DESC LIMIT 1) l
            RETURNING 1
        )
        SELECT COALESCE(sum(hi - lo + 1), 0)::bigint FROM chunks
        "#
    )))
    .bind(limit)
    .bind(RUN_LIMIT)
    .fetch_one(&mut *tx)
    .await?;
    if numbered > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(channel(source)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Pass::Sequenced(u64::try_from(numbered).unwrap_or(0)))
}

/// True when the outbox has an event a pass would number now: a final one
/// after the watermark (an index probe). Not `EXISTS`: the planner guesses a
/// third of the table matches and scans it all; ordered by the index with
/// a limit, it walks the index from the watermark.
async fn has_pending(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let (pending,): (bool,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT e.position FROM events e WHERE {FINAL_AFTER_WATERMARK} \
         ORDER BY e.xid, e.position LIMIT 1) IS NOT NULL"
    )))
    .fetch_one(pool)
    .await?;
    Ok(pending)
}

/// Makes the watermark valid again after the database was restored into
/// another cluster (pg_dump / pg_restore, which carries the stored
/// transaction ids but not the cluster's counter): a watermark ahead of the
/// next transaction id would leave every new event unnumbered for good.
/// Then, under the sequencer's lock, numbered events get xid 0, unnumbered
/// ones 1 (so they are numbered first, in position order, before anything
/// written from now on), and the watermark becomes (0, the last position).
/// A run's bounds name its events by their old ids, so every numbered event
/// first becomes a run of one, `(0, position)`, keeping its number. Returns
/// whether it had to; a no-op otherwise (one probe at start).
pub async fn heal_after_restore(pool: &PgPool, source: &Source) -> Result<bool, sqlx::Error> {
    let Some(mut tx) = super::lock::begin_locked(pool, lock_key(source)).await? else {
        return Ok(false);
    };
    let (ahead,): (bool,) = sqlx::query_as("SELECT xid > pg_snapshot_xmax(pg_current_snapshot()) FROM event_watermark")
        .fetch_one(&mut *tx)
        .await?;
    if !ahead {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "CREATE TEMPORARY TABLE healed_numbers ON COMMIT DROP AS \
         SELECT program_id, sequence, position FROM sequenced_events",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM event_runs").execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE events e SET xid = CASE WHEN EXISTS \
             (SELECT 1 FROM healed_numbers n WHERE n.position = e.position) THEN '0'::xid8 ELSE '1'::xid8 END",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO event_runs \
             (program_id, first_sequence, last_sequence, first_xid, first_position, last_xid, last_position) \
         SELECT program_id, sequence, sequence, '0', position, '0', position FROM healed_numbers",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE event_watermark SET xid = '0', position = (SELECT COALESCE(max(position), 0) FROM events)")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Events of `schema`'s outbox committed but not numbered yet (tests and
/// operators: reads the whole outbox, not for a hot path).
pub async fn unsequenced(conn: &mut sqlx::PgConnection, schema: &str) -> Result<i64, sqlx::Error> {
    let schema = schema.replace('"', "\"\"");
    let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM \"{schema}\".events) \
              - (SELECT COALESCE(sum(last_sequence - first_sequence + 1), 0) FROM \"{schema}\".event_runs)::bigint"
    )))
    .fetch_one(conn)
    .await?;
    Ok(count)
}

/// The sequencer task: numbers what is pending — every [`POLL_INTERVAL`]
/// while the process writes, every [`IDLE_POLL_INTERVAL`] otherwise, passes
/// back to back while a backlog lasts — and bumps `wake` so this process's
/// watchers look at once. Stops at `shutdown`; a pass in flight finishes or
/// rolls back whole.
pub async fn run(pool: PgPool, source: &'static Source, wake: Arc<watch::Sender<u64>>, shutdown: CancellationToken) {
    let mut writes = super::outbox::writes();
    match heal_after_restore(&pool, source).await {
        Ok(true) => tracing::warn!(source = source.uri, "event watermark was ahead of the cluster (a restore?): reset"),
        Ok(false) => {}
        Err(error) => tracing::warn!(source = source.uri, %error, "checking the event watermark failed"),
    }
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
