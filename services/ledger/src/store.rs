//! sqlx access to the `ledger` schema (runtime queries; the connection's
//! search_path is the schema). Every write that belongs together runs in one
//! transaction, and batches are set-based (`UNNEST` arrays, one statement per
//! step, not one per line).

use std::collections::{HashMap, HashSet};

use accrue_types::{EntryId, PartnerId, PayoutId, ProgramId, RefundId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

pub(crate) use accrue_kit::error::StoreError;

use crate::domain::posting::{EntryType, PostedLine, Posting};
use crate::domain::reserve::{should_reserve, signed};
use crate::domain::reversal::{self, LiveLine, Placement, Refund, ReversalError, VoidError, VoidTarget};
use crate::domain::status::{Current, Status, TransitionError, plan_transition};
use crate::events;

mod reports;
mod reservations;
mod reversals;

pub use reports::*;
pub use reservations::*;
pub use reversals::*;

/// What became of one posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostingOutcome {
    /// Newly written; entry ids in line order.
    Posted(Vec<EntryId>),
    /// The key was already posted with the same body: the stored ids.
    Replayed(Vec<EntryId>),
    /// The key was already posted with a different body (nothing written).
    KeyReused,
}

/// Posts `postings` (distinct keys) for `program_id` in ONE transaction:
/// keys already stored are skipped up front; the rest go through
/// `INSERT … ON CONFLICT DO NOTHING` on the postings, then, for the keys
/// actually inserted, their entries, creation events (UNSPECIFIED → PENDING,
/// by `actor`: the caller's token subject) and status projections — all in one statement. Keys that
/// already existed are read back and compared by request hash. A concurrent
/// poster of the same key blocks on the unique index until the first commits,
/// then reads its row (no unique-violation error escapes). Results are in input
/// order.
pub async fn post(
    pool: &PgPool,
    program_id: ProgramId,
    postings: &[&Posting],
    actor: &str,
) -> Result<Vec<PostingOutcome>, StoreError> {
    if postings.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    // Cheap pre-read: keys already posted are not sent again (a replayed batch
    // costs one small query). A key that appears between this read and the
    // insert is still caught by ON CONFLICT and read back below.
    let all_keys: Vec<&str> = postings.iter().map(|p| p.key.as_str()).collect();
    let known: Vec<(String,)> = sqlx::query_as(
        "SELECT idempotency_key FROM postings WHERE program_id = $1 AND idempotency_key = ANY($2::text[])",
    )
    .bind(program_id)
    .bind(&all_keys)
    .fetch_all(&mut *tx)
    .await?;
    let known: HashSet<String> = known.into_iter().map(|(key,)| key).collect();
    let fresh: Vec<&Posting> = postings.iter().copied().filter(|p| !known.contains(&p.key)).collect();

    let line_count: usize = fresh.iter().map(|p| p.lines.len()).sum();
    let mut keys = Vec::with_capacity(fresh.len());
    let mut sale_ids = Vec::with_capacity(fresh.len());
    let mut hashes = Vec::with_capacity(fresh.len());
    let mut lows = Vec::with_capacity(fresh.len());
    let mut highs = Vec::with_capacity(fresh.len());
    let mut ids: Vec<EntryId> = Vec::with_capacity(line_count);
    let mut partner_ids = Vec::with_capacity(line_count);
    let mut line_sales = Vec::with_capacity(line_count);
    let mut kinds = Vec::with_capacity(line_count);
    let mut entry_types = Vec::with_capacity(line_count);
    let mut currencies = Vec::with_capacity(line_count);
    let mut amounts = Vec::with_capacity(line_count);
    let mut levels = Vec::with_capacity(line_count);
    let mut sources = Vec::with_capacity(line_count);
    let mut occurred = Vec::with_capacity(line_count);
    let mut clears = Vec::with_capacity(line_count);
    let mut breakdowns = Vec::with_capacity(line_count);
    let mut line_keys = Vec::with_capacity(line_count);
    let mut line_indexes = Vec::with_capacity(line_count);
    let mut posting_ids: HashMap<&str, Vec<EntryId>> = HashMap::with_capacity(fresh.len());
    for posting in &fresh {
        keys.push(posting.key.clone());
        sale_ids.push(posting.sale_id.clone());
        hashes.push(posting.hash.clone());
        // 1-based inclusive slice bounds into the flat id array.
        lows.push(i32::try_from(ids.len() + 1).unwrap_or(i32::MAX));
        let mut these = Vec::with_capacity(posting.lines.len());
        for (index, posted) in posting.lines.iter().enumerate() {
            let line = &posted.line;
            let id = EntryId::new_v7();
            these.push(id);
            ids.push(id);
            partner_ids.push(line.partner_id);
            line_sales.push(posting.sale_id.clone());
            kinds.push(line.kind.as_str());
            entry_types.push(posted.entry_type().as_str());
            currencies.push(posted.currency().code());
            amounts.push(posted.amount());
            // Validated to 0..=MAX_LEVEL, so it fits the int4 column.
            levels.push(i32::try_from(line.level).unwrap_or(i32::MAX));
            sources.push(line.source_partner_id);
            occurred.push(posted.occurred_at);
            clears.push(line.clears_at);
            // JSON text for the json column (issue 15: jsonb's binary form
            // cost Postgres three times the parse, and nothing queries into it).
            breakdowns.push(match &line.breakdown {
                Some(breakdown) => serde_json::to_string(breakdown).unwrap_or_else(|_| "{}".to_string()),
                None => "{}".to_string(),
            });
            line_keys.push(posting.key.clone());
            line_indexes.push(i32::try_from(index).unwrap_or(i32::MAX));
        }
        highs.push(i32::try_from(ids.len()).unwrap_or(i32::MAX));
        posting_ids.insert(posting.key.as_str(), these);
    }

    // With each inserted key, the transaction's now(): the entries'
    // created_at, for their events.
    let inserted: Vec<(String, DateTime<Utc>)> = if fresh.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            r#"
        WITH p AS (
            INSERT INTO postings (program_id, idempotency_key, sale_id, request_hash, entry_ids)
            SELECT $1, k.key, k.sale_id, k.hash, ($6::uuid[])[k.lo:k.hi]
            FROM unnest($2::text[], $3::text[], $4::bytea[], $5::int4[], $7::int4[]) AS k(key, sale_id, hash, lo, hi)
            ON CONFLICT (program_id, idempotency_key) DO NOTHING
            RETURNING idempotency_key
        ), e AS (
            INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, level,
                                 source_partner_id, occurred_at, clears_at, breakdown, idempotency_key, line_index)
            SELECT l.id, $1, l.partner_id, l.sale_id, l.kind, l.entry_type, l.currency, l.amount, l.level,
                   l.source_partner_id, l.occurred_at, l.clears_at, l.breakdown::json, l.key, l.line_index
            FROM unnest($6::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[], $13::numeric[],
                        $14::int4[], $15::uuid[], $16::timestamptz[], $17::timestamptz[], $18::text[], $19::text[],
                        $20::int4[])
                 AS l(id, partner_id, sale_id, kind, entry_type, currency, amount, level, source_partner_id,
                      occurred_at, clears_at, breakdown, key, line_index)
            WHERE l.key IN (SELECT idempotency_key FROM p)
            RETURNING id, partner_id, currency, clears_at
        ), ev AS (
            INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
            SELECT id, 'UNSPECIFIED', 'PENDING', $21, 'posted' FROM e
        ), st AS (
            INSERT INTO entry_states (entry_id, program_id, partner_id, currency, status, clears_at)
            SELECT id, $1, partner_id, currency, 'PENDING', clears_at FROM e
        )
        SELECT idempotency_key, now() FROM p
        "#,
        )
        .bind(program_id)
        .bind(&keys)
        .bind(&sale_ids)
        .bind(&hashes)
        .bind(&lows)
        .bind(&ids)
        .bind(&highs)
        .bind(&partner_ids)
        .bind(&line_sales)
        .bind(&kinds)
        .bind(&entry_types)
        .bind(&currencies)
        .bind(&amounts)
        .bind(&levels)
        .bind(&sources)
        .bind(&occurred)
        .bind(&clears)
        .bind(&breakdowns)
        .bind(&line_keys)
        .bind(&line_indexes)
        .bind(actor)
        .fetch_all(&mut *tx)
        .await?
    };
    let created_at = inserted.first().map(|(_, time)| *time);
    let inserted: HashSet<String> = inserted.into_iter().map(|(key, _)| key).collect();
    if let Some(created_at) = created_at {
        // The balance projection, in the same transaction: one statement for
        // the whole batch, from the lines of the postings that went in.
        let lines = fresh.iter().filter(|p| inserted.contains(&p.key)).flat_map(|p| p.lines.iter());
        apply_posted_balances(&mut tx, program_id, lines).await?;
        // The outbox: one entry.posted per new entry, built from the lines
        // in memory, in one more statement.
        let mut posted = Vec::with_capacity(line_count);
        for posting in fresh.iter().filter(|p| inserted.contains(&p.key)) {
            let ids = posting_ids.get(posting.key.as_str()).map(Vec::as_slice).unwrap_or_default();
            for line in ids.iter().copied().zip(&posting.lines) {
                posted.push(events::posted(program_id, posting, line, created_at, actor));
            }
        }
        accrue_kit::events::insert(&mut tx, &posted).await?;
    }

    let existing_keys: Vec<&str> = all_keys.iter().copied().filter(|key| !inserted.contains(*key)).collect();
    let mut existing: HashMap<String, (Vec<u8>, Vec<EntryId>)> = HashMap::new();
    if !existing_keys.is_empty() {
        let rows: Vec<(String, Vec<u8>, Vec<EntryId>)> = sqlx::query_as(
            "SELECT idempotency_key, request_hash, entry_ids FROM postings \
             WHERE program_id = $1 AND idempotency_key = ANY($2::text[])",
        )
        .bind(program_id)
        .bind(&existing_keys)
        .fetch_all(&mut *tx)
        .await?;
        existing = rows.into_iter().map(|(key, hash, ids)| (key, (hash, ids))).collect();
    }
    tx.commit().await?;
    crate::counters::entries_posted(
        fresh
            .iter()
            .filter(|posting| inserted.contains(&posting.key))
            .flat_map(|posting| posting.lines.iter())
            .map(|posted| (posted.line.kind.as_str(), posted.entry_type().as_str())),
    );

    let mut outcomes = Vec::with_capacity(postings.len());
    for posting in postings {
        if inserted.contains(&posting.key) {
            outcomes.push(PostingOutcome::Posted(posting_ids.remove(posting.key.as_str()).unwrap_or_default()));
        } else {
            match existing.remove(&posting.key) {
                Some((hash, stored)) if hash == posting.hash => outcomes.push(PostingOutcome::Replayed(stored)),
                Some(_) => outcomes.push(PostingOutcome::KeyReused),
                // Neither inserted nor found: cannot happen under READ COMMITTED
                // (DO NOTHING only skips a committed or in-flight-then-committed row).
                None => return Err(sqlx::Error::RowNotFound.into()),
            }
        }
    }
    Ok(outcomes)
}

/// An entry with its current status and reservation, as read for the API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    /// Entry id.
    pub id: EntryId,
    /// Program.
    pub program_id: ProgramId,
    /// Partner.
    pub partner_id: PartnerId,
    /// Sale.
    pub sale_id: String,
    /// Kind name.
    pub kind: String,
    /// CREDIT / DEBIT.
    pub entry_type: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Positive amount.
    pub amount: Decimal,
    /// Override level.
    pub level: i32,
    /// Seller.
    pub source_partner_id: Option<PartnerId>,
    /// Sale time.
    pub occurred_at: DateTime<Utc>,
    /// Clearance time.
    pub clears_at: DateTime<Utc>,
    /// Stored breakdown.
    pub breakdown: serde_json::Value,
    /// Posting key.
    pub idempotency_key: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Current status name.
    pub status: String,
    /// Reserving payout, if any.
    pub payout_id: Option<PayoutId>,
    /// For a clawback DEBIT: the CREDIT line it claws back.
    pub reverses_entry_id: Option<EntryId>,
    /// For a clawback DEBIT: the refund.
    pub refund_id: Option<RefundId>,
}

/// One status event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// From status name ("UNSPECIFIED" for creation).
    pub from_status: String,
    /// To status name.
    pub to_status: String,
    /// Actor.
    pub actor: String,
    /// Reason.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

const ENTRY_COLUMNS: &str = "e.id, e.program_id, e.partner_id, e.sale_id, e.kind, e.entry_type, e.currency, e.amount, \
     e.level, e.source_partner_id, e.occurred_at, e.clears_at, e.breakdown, e.idempotency_key, e.created_at, \
     s.status, r.payout_id, e.reverses_entry_id, e.refund_id";

/// One entry with its status history (oldest first); `None` when absent.
pub async fn get_entry(pool: &PgPool, id: EntryId) -> Result<Option<(EntryRow, Vec<EventRow>)>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id WHERE e.id = $1"
    );
    let Some(entry) = sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
    else {
        return Ok(None);
    };
    let history = sqlx::query_as::<_, EventRow>(
        "SELECT from_status, to_status, actor, reason, created_at FROM entry_status_events \
         WHERE entry_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((entry, history)))
}

/// Filters for [`list_entries`].
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Only this partner's.
    pub partner_id: Option<PartnerId>,
    /// Only this sale's.
    pub sale_id: Option<String>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Only this kind (stored name).
    pub kind: Option<&'static str>,
    /// Only CREDITs or only DEBITs (stored name).
    pub entry_type: Option<&'static str>,
}

/// A page of a program's entries in `(created_at, id)` order after `after`;
/// returns up to `limit` rows.
///
/// The statement names only the filters given: one with `$n IS NULL OR …`
/// for each was planned once for all of them, and the generic plan Postgres
/// settles on after a few pages could not use the cursor as an index range,
/// so every page scanned the program's entries from the start (216 ms a page
/// at 100,000 entries; paging grew quadratic).
pub async fn list_entries(
    pool: &PgPool,
    program_id: ProgramId,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, EntryId)>,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id \
         WHERE e.program_id = "
    ));
    query.push_bind(program_id);
    if let Some(partner_id) = filter.partner_id {
        query.push(" AND e.partner_id = ").push_bind(partner_id);
    }
    if let Some(sale_id) = filter.sale_id.as_deref() {
        query.push(" AND e.sale_id = ").push_bind(sale_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND s.status = ").push_bind(status.as_str());
    }
    if let Some(kind) = filter.kind {
        query.push(" AND e.kind = ").push_bind(kind);
    }
    if let Some(entry_type) = filter.entry_type {
        query.push(" AND e.entry_type = ").push_bind(entry_type);
    }
    if let Some((time, id)) = after {
        query.push(" AND (e.created_at, e.id) > (").push_bind(time).push(", ").push_bind(id).push(")");
    }
    query.push(" ORDER BY e.created_at, e.id LIMIT ").push_bind(limit);
    query.build_query_as::<EntryRow>().fetch_all(pool).await.map_err(StoreError::from)
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// Applied; how many entries changed.
    Done(u64),
    /// An entry id is not in the program (nothing changed).
    NotFound(EntryId),
    /// The state machine refused (nothing changed).
    Refused(TransitionError),
}

/// Moves `ids` (distinct) of `program_id` to `to`, all or nothing, in one
/// transaction: locks their status rows — and those of the clawback debits
/// that travel with them (issue 9 item 4) — in id order, reads reservations,
/// plans with [`plan_transition`], then updates the projection and appends
/// one event per changed entry in one statement, and the balances in one
/// more. A travelling debit in the same status as its line moves with it
/// (same event actor and reason); it is not counted in the result, which
/// counts the requested entries that changed.
pub async fn transition(
    pool: &PgPool,
    program_id: ProgramId,
    ids: &[EntryId],
    to: Status,
    actor: &str,
    reason: &str,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(EntryId, String, Option<EntryId>)> = sqlx::query_as(
        "SELECT s.entry_id, s.status, e.reverses_entry_id FROM entry_states s JOIN entries e ON e.id = s.entry_id \
         WHERE s.program_id = $1 \
           AND (s.entry_id = ANY($2::uuid[]) OR (e.reverses_entry_id = ANY($2::uuid[]) AND e.placement = 'TRAVELS')) \
         ORDER BY s.entry_id FOR UPDATE OF s",
    )
    .bind(program_id)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let locked: Vec<EntryId> = rows.iter().map(|(id, _, _)| *id).collect();
    // Read after locking (a fresh snapshot), so a reservation committed while
    // we waited is seen.
    let reserved: Vec<(EntryId,)> =
        sqlx::query_as("SELECT entry_id FROM payout_reservations WHERE entry_id = ANY($1::uuid[])")
            .bind(&locked)
            .fetch_all(&mut *tx)
            .await?;
    let reserved: HashSet<EntryId> = reserved.into_iter().map(|(id,)| id).collect();
    let requested: HashSet<EntryId> = ids.iter().copied().collect();
    let mut statuses: HashMap<EntryId, Status> = HashMap::with_capacity(rows.len());
    let mut followers: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
    for (id, status, line) in &rows {
        let status = Status::parse(status).ok_or_else(|| sqlx::Error::Decode(format!("bad status {status}").into()))?;
        statuses.insert(*id, status);
        if let Some(line) = line
            && requested.contains(line)
            && !requested.contains(id)
        {
            followers.entry(*line).or_default().push(*id);
        }
    }
    let mut current = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(status) = statuses.get(id) else {
            return Ok(TransitionOutcome::NotFound(*id));
        };
        current.push(Current { id: *id, status: *status, reserved: reserved.contains(id) });
    }
    let moves = match plan_transition(&current, to) {
        Ok(moves) => moves,
        Err(error) => return Ok(TransitionOutcome::Refused(error)),
    };
    if moves.is_empty() {
        return Ok(TransitionOutcome::Done(0));
    }
    let requested_moves = moves.len() as u64;
    let mut all_moves = moves.clone();
    for (line, from) in &moves {
        for debit in followers.get(line).into_iter().flatten() {
            // A debit voided by VoidReversal or reversed with its line no
            // longer travels: only those still in the line's status follow.
            if statuses.get(debit) == Some(from) {
                all_moves.push((*debit, *from));
            }
        }
    }
    let move_ids: Vec<EntryId> = all_moves.iter().map(|(id, _)| *id).collect();
    let froms: Vec<&str> = all_moves.iter().map(|(_, from)| from.as_str()).collect();
    let tos: Vec<&str> = vec![to.as_str(); all_moves.len()];
    let was_reserved: Vec<bool> = move_ids.iter().map(|id| reserved.contains(id)).collect();
    write_moves(&mut tx, &move_ids, &froms, &tos, actor, reason).await?;
    apply_balance_changes(&mut tx, &move_ids, &froms, &was_reserved).await?;
    tx.commit().await?;
    Ok(TransitionOutcome::Done(requested_moves))
}

/// Moves entries' status rows (`ids[i]`: `froms[i]` → `tos[i]`, rows already
/// locked by the caller) and appends one status event each, in input order,
/// in one statement.
async fn write_moves(
    tx: &mut sqlx::PgConnection,
    ids: &[EntryId],
    froms: &[&str],
    tos: &[&str],
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        r#"
        WITH m AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS m(id, from_status, to_status, n)),
        u AS (UPDATE entry_states s SET status = m.to_status, updated_at = now() FROM m WHERE s.entry_id = m.id)
        INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
        SELECT id, from_status, to_status, $4, $5 FROM m ORDER BY n
        "#,
    )
    .bind(ids)
    .bind(froms)
    .bind(tos)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let changes: Vec<events::Change<'_>> = ids
        .iter()
        .zip(froms.iter().zip(tos))
        .map(|(id, (from, to))| events::Change { id: *id, from, to, reason })
        .collect();
    entry_events(tx, &accrue_kit::events::catalogue::ENTRY_STATUS_CHANGED, &changes, actor).await
}

/// Writes one event of `kind` per change (in order) to the outbox, in the
/// caller's transaction: each entry read once, after its changes.
pub(crate) async fn entry_events(
    tx: &mut sqlx::PgConnection,
    kind: &'static accrue_kit::events::EventType,
    changes: &[events::Change<'_>],
    actor: &str,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<EntryId> = changes.iter().map(|change| change.id).collect();
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id WHERE e.id = ANY($1::uuid[])"
    );
    let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&ids).fetch_all(&mut *tx).await?;
    let rows: HashMap<EntryId, EntryRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    let now = Utc::now();
    let written = changes
        .iter()
        .map(|change| {
            let row = rows.get(&change.id).ok_or(sqlx::Error::RowNotFound)?;
            // A posting's time is its entry's creation (the transaction's
            // now(), as PostEntries' events have it); a change's, now.
            let time = if kind == &accrue_kit::events::catalogue::ENTRY_POSTED { row.created_at } else { now };
            events::changed(kind, row, change, actor, time)
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    accrue_kit::events::insert(tx, &written).await
}

/// Applies the change of `ids` to the balance projection (the migration's
/// `apply_balance_changes`): `old_status[i]` / `old_reserved[i]` are what
/// entry i was before this transaction (shorter arrays are padded with NULL:
/// "created now" / "not reserved"). Call once per transaction, after its writes.
async fn apply_balance_changes<S: AsRef<str>>(
    tx: &mut sqlx::PgConnection,
    ids: &[EntryId],
    old_status: &[S],
    old_reserved: &[bool],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let old_status: Vec<&str> = old_status.iter().map(AsRef::as_ref).collect();
    sqlx::query("SELECT apply_balance_changes($1::uuid[], $2::text[], $3::boolean[])")
        .bind(ids)
        .bind(&old_status)
        .bind(old_reserved)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Applies to the balance projection the lines of postings this transaction
/// just inserted (the migration's `apply_posted_balances`: the change
/// `apply_balance_changes` would compute for new PENDING entries, without
/// reading them back). Call once per transaction, after its writes.
async fn apply_posted_balances<'a>(
    tx: &mut sqlx::PgConnection,
    program_id: ProgramId,
    lines: impl Iterator<Item = &'a PostedLine>,
) -> Result<(), StoreError> {
    let (mut partners, mut currencies, mut types, mut amounts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for posted in lines {
        partners.push(posted.line.partner_id);
        currencies.push(posted.currency().code());
        types.push(posted.entry_type().as_str());
        amounts.push(posted.amount());
    }
    if partners.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT apply_posted_balances($1, $2::uuid[], $3::text[], $4::text[], $5::numeric[])")
        .bind(program_id)
        .bind(&partners)
        .bind(&currencies)
        .bind(&types)
        .bind(&amounts)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Moves a program's PENDING entries with `clears_at ≤ as_of` to CLEARED —
/// or straight on to APPROVED when `auto_approve` — in one statement, with one
/// event PENDING → CLEARED and, when approving, a second CLEARED → APPROVED
/// (reason: the program auto-approves), both by `actor` (the caller's token
/// subject); then the balances, in the same
/// transaction. A travelling clawback debit has its line's clears_at and
/// status, so it clears with it. Returns (cleared, approved).
pub async fn clear_matured(
    pool: &PgPool,
    program_id: ProgramId,
    as_of: DateTime<Utc>,
    auto_approve: bool,
    actor: &str,
) -> Result<(i64, i64), StoreError> {
    let target = if auto_approve { Status::Approved } else { Status::Cleared };
    let mut tx = pool.begin().await?;
    let (cleared_ids,): (Vec<EntryId>,) = sqlx::query_as(
        r#"
        WITH c AS (
            UPDATE entry_states SET status = $3, updated_at = now()
            WHERE program_id = $1 AND status = 'PENDING' AND clears_at <= $2
            RETURNING entry_id
        ), ev AS (
            INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
            SELECT c.entry_id, x.from_status, x.to_status, x.actor, x.reason
            FROM c CROSS JOIN (VALUES
                (1, 'PENDING', 'CLEARED', $5, 'clearance period ended'),
                (2, 'CLEARED', 'APPROVED', $5, 'program auto-approves cleared entries')
            ) AS x(n, from_status, to_status, actor, reason)
            WHERE x.n = 1 OR $4
            ORDER BY c.entry_id, x.n
        )
        SELECT COALESCE(array_agg(entry_id), '{}') FROM c
        "#,
    )
    .bind(program_id)
    .bind(as_of)
    .bind(target.as_str())
    .bind(auto_approve)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    // A PENDING entry is never reserved (reservations take APPROVED ones).
    let froms = vec![Status::Pending.as_str(); cleared_ids.len()];
    apply_balance_changes(&mut tx, &cleared_ids, &froms, &[]).await?;
    // One entry.status_changed per status event written above, in the same order.
    let mut changes = Vec::with_capacity(cleared_ids.len() * if auto_approve { 2 } else { 1 });
    let mut sorted = cleared_ids.clone();
    sorted.sort_unstable();
    for id in sorted {
        changes.push(events::Change { id, from: "PENDING", to: "CLEARED", reason: "clearance period ended" });
        if auto_approve {
            changes.push(events::Change {
                id,
                from: "CLEARED",
                to: "APPROVED",
                reason: "program auto-approves cleared entries",
            });
        }
    }
    entry_events(&mut tx, &accrue_kit::events::catalogue::ENTRY_STATUS_CHANGED, &changes, actor).await?;
    tx.commit().await?;
    let cleared = i64::try_from(cleared_ids.len()).unwrap_or(i64::MAX);
    Ok((cleared, if auto_approve { cleared } else { 0 }))
}

/// Entries by id, in the order given (absent ids are skipped).
pub async fn entries_by_ids(pool: &PgPool, ids: &[EntryId]) -> Result<Vec<EntryRow>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM unnest($1::uuid[]) WITH ORDINALITY AS q(id, n) \
         JOIN entries e ON e.id = q.id JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id ORDER BY q.n"
    );
    Ok(sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(pool).await?)
}

/// One row of the balance projection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRow {
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: String,
    /// PENDING.
    pub pending: Decimal,
    /// CLEARED.
    pub cleared: Decimal,
    /// APPROVED, not reserved.
    pub approved: Decimal,
    /// APPROVED, reserved.
    pub reserved: Decimal,
    /// PAID.
    pub paid: Decimal,
    /// DISPUTED.
    pub disputed: Decimal,
    /// Σ non-VOIDED debits.
    pub clawed_back: Decimal,
}

/// The balance projection of a program, optionally for some partners and one
/// currency, ordered by partner id then currency. Reads nothing else.
pub async fn balances(
    pool: &PgPool,
    program_id: ProgramId,
    partner_ids: &[PartnerId],
    currency: Option<&str>,
) -> Result<Vec<BalanceRow>, StoreError> {
    Ok(sqlx::query_as::<_, BalanceRow>(
        "SELECT partner_id, currency, pending, cleared, approved, reserved, paid, disputed, clawed_back \
         FROM balances WHERE program_id = $1 \
           AND (cardinality($2::uuid[]) = 0 OR partner_id = ANY($2::uuid[])) \
           AND ($3::text IS NULL OR currency = $3) \
         ORDER BY partner_id, currency",
    )
    .bind(program_id)
    .bind(partner_ids)
    .bind(currency)
    .fetch_all(pool)
    .await?)
}
