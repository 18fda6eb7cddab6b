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

use crate::domain::posting::{EntryType, Posting};
use crate::domain::reserve::{should_reserve, signed};
use crate::domain::reversal::{self, LiveLine, Placement, Refund, ReversalError, VoidError, VoidTarget};
use crate::domain::status::{Current, Status, TransitionError, plan_transition};

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
            breakdowns.push(match &line.breakdown {
                Some(breakdown) => serde_json::to_value(breakdown).unwrap_or_else(|_| serde_json::json!({})),
                None => serde_json::json!({}),
            });
            line_keys.push(posting.key.clone());
            line_indexes.push(i32::try_from(index).unwrap_or(i32::MAX));
        }
        highs.push(i32::try_from(ids.len()).unwrap_or(i32::MAX));
        posting_ids.insert(posting.key.as_str(), these);
    }

    let inserted: Vec<(String,)> = if fresh.is_empty() {
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
                   l.source_partner_id, l.occurred_at, l.clears_at, l.breakdown, l.key, l.line_index
            FROM unnest($6::uuid[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::text[], $13::numeric[],
                        $14::int4[], $15::uuid[], $16::timestamptz[], $17::timestamptz[], $18::jsonb[], $19::text[],
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
        SELECT idempotency_key FROM p
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
    let inserted: HashSet<String> = inserted.into_iter().map(|(key,)| key).collect();
    if !inserted.is_empty() {
        // The balance projection, in the same transaction: one statement for
        // the whole batch (ids of postings that were not inserted match no entry).
        apply_balance_changes::<&str>(&mut tx, &ids, &[], &[]).await?;
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
pub async fn list_entries(
    pool: &PgPool,
    program_id: ProgramId,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, EntryId)>,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id \
         WHERE e.program_id = $1 \
           AND ($2::uuid IS NULL OR e.partner_id = $2) \
           AND ($3::text IS NULL OR e.sale_id = $3) \
           AND ($4::text IS NULL OR s.status = $4) \
           AND ($5::text IS NULL OR e.kind = $5) \
           AND ($6::timestamptz IS NULL OR (e.created_at, e.id) > ($6, $7::uuid)) \
           AND ($9::text IS NULL OR e.entry_type = $9) \
         ORDER BY e.created_at, e.id LIMIT $8"
    );
    sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql))
        .bind(program_id)
        .bind(filter.partner_id)
        .bind(filter.sale_id.as_deref())
        .bind(filter.status.map(Status::as_str))
        .bind(filter.kind)
        .bind(after.map(|(time, _)| time))
        .bind(after.map(|(_, id)| id))
        .bind(limit)
        .bind(filter.entry_type)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)
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
    Ok(())
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

/// One partner's earnings in one currency (VOIDED entries excluded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SummaryRow {
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: String,
    /// DIRECT CREDITs.
    pub direct: Decimal,
    /// SPLIT CREDITs.
    pub split: Decimal,
    /// OVERRIDE CREDITs.
    pub override_amount: Decimal,
    /// MARGIN CREDITs.
    pub margin: Decimal,
    /// Net: Σ CREDITs − Σ DEBITs.
    pub total: Decimal,
    /// Σ DEBITs (positive).
    pub clawback: Decimal,
    /// DEBITs of kind DIRECT.
    pub clawback_direct: Decimal,
    /// DEBITs of kind SPLIT.
    pub clawback_split: Decimal,
    /// DEBITs of kind OVERRIDE.
    pub clawback_override: Decimal,
    /// DEBITs of kind MARGIN.
    pub clawback_margin: Decimal,
}

/// Per (partner, currency), VOIDED entries excluded: Σ CREDITs by kind, Σ
/// DEBITs in all and by kind (a clawback debit has its line's kind), and the
/// net total; ordered by partner id then currency; one aggregate query.
/// `partner_ids` empty = every partner with entries.
pub async fn earnings_summary(
    pool: &PgPool,
    program_id: ProgramId,
    partner_ids: &[PartnerId],
) -> Result<Vec<SummaryRow>, StoreError> {
    sqlx::query_as::<_, SummaryRow>(
        r#"
        SELECT partner_id, currency,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'DIRECT'), 0)       AS direct,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'SPLIT'), 0)        AS split,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'OVERRIDE'), 0)     AS override_amount,
               COALESCE(sum(amount) FILTER (WHERE credit AND kind = 'MARGIN'), 0)       AS margin,
               COALESCE(sum(CASE WHEN credit THEN amount ELSE -amount END), 0)          AS total,
               COALESCE(sum(amount) FILTER (WHERE NOT credit), 0)                       AS clawback,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'DIRECT'), 0)   AS clawback_direct,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'SPLIT'), 0)    AS clawback_split,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'OVERRIDE'), 0) AS clawback_override,
               COALESCE(sum(amount) FILTER (WHERE NOT credit AND kind = 'MARGIN'), 0)   AS clawback_margin
        FROM (
            SELECT e.partner_id, e.currency, e.kind, e.amount, e.entry_type = 'CREDIT' AS credit
            FROM entries e JOIN entry_states s ON s.entry_id = e.id
            WHERE e.program_id = $1 AND s.status <> 'VOIDED'
              AND (cardinality($2::uuid[]) = 0 OR e.partner_id = ANY($2::uuid[]))
        ) lines
        GROUP BY partner_id, currency
        ORDER BY partner_id, currency
        "#,
    )
    .bind(program_id)
    .bind(partner_ids)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
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
    tx.commit().await?;
    let cleared = i64::try_from(cleared_ids.len()).unwrap_or(i64::MAX);
    Ok((cleared, if auto_approve { cleared } else { 0 }))
}

/// One partner's reservation request (validated).
#[derive(Debug, Clone, Copy)]
pub struct ReservationRequest {
    /// Partner.
    pub partner_id: PartnerId,
    /// Payout.
    pub payout_id: PayoutId,
    /// Minimum payable sum to reserve.
    pub minimum: Decimal,
}

/// One partner's reservation result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationOutcome {
    /// Payable sum (reserved or carried forward).
    pub amount: Decimal,
    /// Entries reserved (0 when carried forward).
    pub entry_count: i64,
    /// Whether reserved.
    pub reserved: bool,
}

/// Why a reservation batch failed without changing anything.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// A concurrent run reserved one of the entries first; retry.
    #[error("an entry was reserved concurrently")]
    Conflict,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Reserves, in ONE transaction, each partner's APPROVED, unreserved entries
/// in `currency` with `clears_at ≤ cutoff` for its payout when their signed
/// sum — CREDITs minus DEBITs, so clawback debits net against the payout and
/// a travelling debit is reserved with its line — passes [`should_reserve`];
/// a net ≤ 0 or below the minimum reserves nothing and carries forward. A payout that already holds reservations
/// returns them (idempotent). Candidate status rows are locked in (partner,
/// entry) order; the primary key on `payout_reservations.entry_id` keeps an
/// entry in at most one payout (a race surfaces as [`ReserveError::Conflict`]).
pub async fn reserve(
    pool: &PgPool,
    program_id: ProgramId,
    currency: &str,
    cutoff: DateTime<Utc>,
    requests: &[ReservationRequest],
) -> Result<Vec<ReservationOutcome>, ReserveError> {
    let mut tx = pool.begin().await?;
    let payout_ids: Vec<PayoutId> = requests.iter().map(|r| r.payout_id).collect();
    let existing: Vec<(PayoutId, i64, Decimal)> = sqlx::query_as(
        "SELECT r.payout_id, count(*), COALESCE(sum(CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END), 0) \
         FROM payout_reservations r JOIN entries e ON e.id = r.entry_id \
         WHERE r.program_id = $1 AND r.payout_id = ANY($2::uuid[]) GROUP BY r.payout_id",
    )
    .bind(program_id)
    .bind(&payout_ids)
    .fetch_all(&mut *tx)
    .await?;
    let existing: HashMap<PayoutId, (i64, Decimal)> =
        existing.into_iter().map(|(payout, count, sum)| (payout, (count, sum))).collect();

    let mut fresh: Vec<&ReservationRequest> =
        requests.iter().filter(|r| !existing.contains_key(&r.payout_id)).collect();
    fresh.sort_by_key(|r| r.partner_id);
    let partner_ids: Vec<PartnerId> = fresh.iter().map(|r| r.partner_id).collect();
    let mut candidates: HashMap<PartnerId, (Decimal, Vec<EntryId>)> = HashMap::new();
    if !partner_ids.is_empty() {
        let rows: Vec<(PartnerId, EntryId, String, Decimal)> = sqlx::query_as(
            "SELECT s.partner_id, s.entry_id, e.entry_type, e.amount \
             FROM entry_states s JOIN entries e ON e.id = s.entry_id \
             WHERE s.program_id = $1 AND s.partner_id = ANY($2::uuid[]) AND s.currency = $3 \
               AND s.status = 'APPROVED' AND s.clears_at <= $4 \
               AND NOT EXISTS (SELECT 1 FROM payout_reservations r WHERE r.entry_id = s.entry_id) \
             ORDER BY s.partner_id, s.entry_id \
             FOR UPDATE OF s",
        )
        .bind(program_id)
        .bind(&partner_ids)
        .bind(currency)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        for (partner, entry, entry_type, amount) in rows {
            let entry_type =
                EntryType::parse(&entry_type).ok_or_else(|| sqlx::Error::Decode("bad entry_type".into()))?;
            let slot = candidates.entry(partner).or_insert_with(|| (Decimal::ZERO, Vec::new()));
            slot.0 += signed(entry_type, amount);
            slot.1.push(entry);
        }
    }

    let mut insert_entries = Vec::new();
    let mut insert_payouts = Vec::new();
    let mut insert_partners = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        if let Some((count, sum)) = existing.get(&request.payout_id) {
            outcomes.push(ReservationOutcome { amount: *sum, entry_count: *count, reserved: true });
            continue;
        }
        let (sum, entries) = candidates.get(&request.partner_id).cloned().unwrap_or((Decimal::ZERO, Vec::new()));
        if should_reserve(sum, request.minimum) {
            for entry in &entries {
                insert_entries.push(*entry);
                insert_payouts.push(request.payout_id);
                insert_partners.push(request.partner_id);
            }
            outcomes.push(ReservationOutcome { amount: sum, entry_count: entries.len() as i64, reserved: true });
        } else {
            outcomes.push(ReservationOutcome { amount: sum, entry_count: 0, reserved: false });
        }
    }
    if !insert_entries.is_empty() {
        let result = sqlx::query(
            "INSERT INTO payout_reservations (entry_id, payout_id, program_id, partner_id) \
             SELECT entry_id, payout_id, $1, partner_id FROM unnest($2::uuid[], $3::uuid[], $4::uuid[]) \
                 AS r(entry_id, payout_id, partner_id)",
        )
        .bind(program_id)
        .bind(&insert_entries)
        .bind(&insert_payouts)
        .bind(&insert_partners)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(error) if accrue_kit::error::is_unique_violation(&error) => return Err(ReserveError::Conflict),
            Err(error) => return Err(error.into()),
        }
        // Approved → reserved in the balance projection, same transaction.
        let froms = vec![Status::Approved.as_str(); insert_entries.len()];
        apply_balance_changes(&mut tx, &insert_entries, &froms, &[]).await.map_err(|error| error.0)?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Advisory-lock classes (two-key form, so the two never collide): a
/// reversal key, and a sale. Always taken key first, then sale.
const LOCK_REVERSAL_KEY: i32 = 1;
const LOCK_SALE: i32 = 2;

async fn lock(tx: &mut sqlx::PgConnection, class: i32, program_id: ProgramId, name: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3))")
        .bind(class)
        .bind(program_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A validated ReverseSale request.
#[derive(Debug, Clone)]
pub struct ReverseRequest<'a> {
    /// Idempotency key.
    pub key: &'a str,
    /// The sale.
    pub sale_id: &'a str,
    /// The refund.
    pub refund_id: RefundId,
    /// Request hash.
    pub hash: Vec<u8>,
    /// A, T, rounding and currency.
    pub refund: Refund,
    /// The refund's time.
    pub occurred_at: DateTime<Utc>,
    /// Audit actor.
    pub actor: &'a str,
    /// Audit reason.
    pub reason: &'a str,
}

/// A stored reversal (what ReverseSale answers, now or on a replay).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReversalRow {
    /// ISO 4217 code.
    pub currency: String,
    /// Debits posted, in line order.
    pub debit_ids: Vec<EntryId>,
    /// Σ live lines.
    pub lines_total: Decimal,
    /// The target.
    pub target: Decimal,
    /// Clawed back before.
    pub previously_clawed_back: Decimal,
    /// Δ.
    pub clawed_back: Decimal,
    /// Lines moved to REVERSED.
    pub reversed_line_ids: Vec<EntryId>,
    /// Travelling debits moved to REVERSED with their lines.
    pub reversed_debit_ids: Vec<EntryId>,
    /// The sale.
    pub sale_id: String,
    /// Request hash.
    pub request_hash: Vec<u8>,
}

/// What ReverseSale did.
#[derive(Debug)]
pub enum ReverseOutcome {
    /// Applied now.
    Applied(ReversalRow),
    /// The key was applied before with the same body.
    Replayed(ReversalRow),
    /// The key was applied before with another body (nothing written).
    KeyReused,
    /// The sale's lines are in another currency (nothing written).
    CurrencyMismatch(String),
    /// The rule refused (nothing written).
    Refused(ReversalError),
}

#[derive(Debug, sqlx::FromRow)]
struct SaleEntry {
    id: EntryId,
    partner_id: PartnerId,
    kind: String,
    entry_type: String,
    currency: String,
    amount: Decimal,
    level: i32,
    source_partner_id: Option<PartnerId>,
    clears_at: DateTime<Utc>,
    reverses_entry_id: Option<EntryId>,
    placement: Option<String>,
    status: String,
    reserved: bool,
}

async fn lock_sale_entries(
    tx: &mut sqlx::PgConnection,
    program_id: ProgramId,
    sale_id: &str,
) -> Result<Vec<SaleEntry>, StoreError> {
    // Lock every entry of the sale (lines and debits) in id order, the same
    // order TransitionEntries locks in, then read them afresh.
    sqlx::query(
        "SELECT s.entry_id FROM entry_states s JOIN entries e ON e.id = s.entry_id \
         WHERE e.program_id = $1 AND e.sale_id = $2 ORDER BY s.entry_id FOR UPDATE OF s",
    )
    .bind(program_id)
    .bind(sale_id)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query_as::<_, SaleEntry>(
        "SELECT e.id, e.partner_id, e.kind, e.entry_type, e.currency, e.amount, e.level, e.source_partner_id, \
                e.clears_at, e.reverses_entry_id, e.placement, s.status, \
                EXISTS (SELECT 1 FROM payout_reservations r WHERE r.entry_id = e.id) AS reserved \
         FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         WHERE e.program_id = $1 AND e.sale_id = $2 \
         ORDER BY e.created_at, e.line_index, e.id",
    )
    .bind(program_id)
    .bind(sale_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

fn parse_status(name: &str) -> Result<Status, StoreError> {
    Status::parse(name).ok_or_else(|| StoreError(sqlx::Error::Decode(format!("bad status {name}").into())))
}

const REVERSAL_COLUMNS: &str = "currency, debit_ids, lines_total, target, previously_clawed_back, clawed_back, \
     reversed_line_ids, reversed_debit_ids, sale_id, request_hash";

async fn find_reversal(
    tx: &mut sqlx::PgConnection,
    program_id: ProgramId,
    key: &str,
) -> Result<Option<ReversalRow>, StoreError> {
    let sql = format!("SELECT {REVERSAL_COLUMNS} FROM reversals WHERE program_id = $1 AND idempotency_key = $2");
    Ok(sqlx::query_as::<_, ReversalRow>(sqlx::AssertSqlSafe(sql))
        .bind(program_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?)
}

/// Claws back a refund on one sale in ONE transaction (DESIGN §4 "Refunds"):
/// serialized per key and per sale by advisory locks (so concurrent calls of
/// one key post once, and two refunds of one sale see each other); a stored
/// key is replayed or refused by request hash; otherwise the sale's entries
/// are locked, [`reversal::plan`] computes the shares, each non-zero share is
/// posted as a DEBIT placed by [`Placement::of`], lines given back in full
/// move to REVERSED with their travelling debits, the reversal is recorded
/// and the balances updated.
pub async fn reverse_sale(
    pool: &PgPool,
    program_id: ProgramId,
    request: &ReverseRequest<'_>,
) -> Result<ReverseOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, LOCK_REVERSAL_KEY, program_id, request.key).await?;
    lock(&mut tx, LOCK_SALE, program_id, request.sale_id).await?;
    if let Some(stored) = find_reversal(&mut tx, program_id, request.key).await? {
        return Ok(if stored.request_hash == request.hash {
            ReverseOutcome::Replayed(stored)
        } else {
            ReverseOutcome::KeyReused
        });
    }
    let entries = lock_sale_entries(&mut tx, program_id, request.sale_id).await?;
    let currency = request.refund.currency;
    let mut clawed: HashMap<EntryId, Decimal> = HashMap::new();
    let mut travelling: HashMap<EntryId, Vec<(EntryId, Status, bool)>> = HashMap::new();
    for entry in entries.iter().filter(|e| e.entry_type == EntryType::Debit.as_str()) {
        let Some(line) = entry.reverses_entry_id else { continue };
        let status = parse_status(&entry.status)?;
        if status != Status::Voided {
            *clawed.entry(line).or_default() += entry.amount;
        }
        if entry.placement.as_deref() == Some(Placement::Travels.as_str()) {
            travelling.entry(line).or_default().push((entry.id, status, entry.reserved));
        }
    }
    let lines: Vec<&SaleEntry> = entries
        .iter()
        .filter(|e| e.entry_type == EntryType::Credit.as_str() && e.status != Status::Voided.as_str())
        .collect();
    if let Some(other) = lines.iter().find(|line| line.currency != currency.code()) {
        return Ok(ReverseOutcome::CurrencyMismatch(other.currency.clone()));
    }
    let live: Vec<LiveLine> = lines
        .iter()
        .map(|line| LiveLine {
            id: line.id,
            amount: line.amount,
            clawed_back: clawed.get(&line.id).copied().unwrap_or_default(),
        })
        .collect();
    let plan = match reversal::plan(&live, request.refund) {
        Ok(plan) => plan,
        Err(error) => return Ok(ReverseOutcome::Refused(error)),
    };

    let mut debit_ids = Vec::new();
    let (mut partners, mut kinds, mut amounts, mut levels, mut sources) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut clears, mut breakdowns, mut indexes, mut reverses, mut placements, mut initial) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Existing entries that change status (with what they were), then the new debits.
    let mut moves: Vec<(EntryId, Status, Status, bool)> = Vec::new();
    let mut new_moves: Vec<(EntryId, Status)> = Vec::new();
    let mut reversed_lines = Vec::new();
    let mut reversed_debits = Vec::new();
    let reason = if request.reason.is_empty() {
        format!("clawback of refund {}", request.refund_id)
    } else {
        format!("clawback of refund {}: {}", request.refund_id, request.reason)
    };
    for (share, line) in plan.shares.iter().zip(&lines) {
        let status = parse_status(&line.status)?;
        let new_debit = if share.amount > Decimal::ZERO {
            let (placement, created_in) = Placement::of(status, line.reserved);
            let id = EntryId::new_v7();
            debit_ids.push(id);
            partners.push(line.partner_id);
            kinds.push(line.kind.clone());
            amounts.push(share.amount);
            levels.push(line.level);
            sources.push(line.source_partner_id);
            clears.push(match placement {
                Placement::Travels => line.clears_at,
                Placement::AtOnce => request.occurred_at,
            });
            let breakdown = plan.breakdown(share, request.refund, request.refund_id);
            breakdowns.push(serde_json::to_value(&breakdown).unwrap_or_else(|_| serde_json::json!({})));
            indexes.push(i32::try_from(share.index).unwrap_or(i32::MAX));
            reverses.push(line.id);
            placements.push(placement.as_str());
            initial.push(created_in.as_str());
            Some((id, placement, created_in))
        } else {
            None
        };
        if share.reversed_in_full && status != Status::Reversed && status.can_move_to(Status::Reversed) {
            moves.push((line.id, status, Status::Reversed, line.reserved));
            reversed_lines.push(line.id);
            for (debit, debit_status, debit_reserved) in travelling.get(&line.id).into_iter().flatten() {
                if debit_status.can_move_to(Status::Reversed) {
                    moves.push((*debit, *debit_status, Status::Reversed, *debit_reserved));
                    reversed_debits.push(*debit);
                }
            }
            if let Some((id, Placement::Travels, created_in)) = new_debit {
                new_moves.push((id, created_in));
                reversed_debits.push(id);
            }
        }
    }

    if !debit_ids.is_empty() {
        sqlx::query(
            r#"
            WITH d AS (
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::int4[], $6::uuid[],
                                     $7::timestamptz[], $8::jsonb[], $9::int4[], $10::uuid[], $11::text[], $12::text[])
                    WITH ORDINALITY AS d(id, partner_id, kind, amount, level, source_partner_id, clears_at, breakdown,
                                         line_index, reverses_entry_id, placement, status, n)
            ), e AS (
                INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, level,
                                     source_partner_id, occurred_at, clears_at, breakdown, idempotency_key, line_index,
                                     reverses_entry_id, refund_id, placement)
                SELECT id, $13, partner_id, $14, kind, 'DEBIT', $15, amount, level, source_partner_id, $16, clears_at,
                       breakdown, $17, line_index, reverses_entry_id, $18, placement
                FROM d ORDER BY n
            ), ev AS (
                INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
                SELECT id, 'UNSPECIFIED', status, $19, $20 FROM d ORDER BY n
            )
            INSERT INTO entry_states (entry_id, program_id, partner_id, currency, status, clears_at)
            SELECT id, $13, partner_id, $15, status, clears_at FROM d
            "#,
        )
        .bind(&debit_ids)
        .bind(&partners)
        .bind(&kinds)
        .bind(&amounts)
        .bind(&levels)
        .bind(&sources)
        .bind(&clears)
        .bind(&breakdowns)
        .bind(&indexes)
        .bind(&reverses)
        .bind(&placements)
        .bind(&initial)
        .bind(program_id)
        .bind(request.sale_id)
        .bind(currency.code())
        .bind(request.occurred_at)
        .bind(request.key)
        .bind(request.refund_id)
        .bind(request.actor)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
    }
    let mut move_ids: Vec<EntryId> = moves.iter().map(|m| m.0).collect();
    let mut move_froms: Vec<&str> = moves.iter().map(|m| m.1.as_str()).collect();
    let mut move_tos: Vec<&str> = moves.iter().map(|m| m.2.as_str()).collect();
    move_ids.extend(new_moves.iter().map(|m| m.0));
    move_froms.extend(new_moves.iter().map(|m| m.1.as_str()));
    move_tos.extend(new_moves.iter().map(|_| Status::Reversed.as_str()));
    let full_reason = format!("{reason} (clawed back in full)");
    write_moves(&mut tx, &move_ids, &move_froms, &move_tos, request.actor, &full_reason).await?;

    let row = ReversalRow {
        currency: currency.code().to_string(),
        debit_ids: debit_ids.clone(),
        lines_total: plan.lines_total,
        target: plan.target,
        previously_clawed_back: plan.previously_clawed_back,
        clawed_back: plan.delta,
        reversed_line_ids: reversed_lines,
        reversed_debit_ids: reversed_debits,
        sale_id: request.sale_id.to_string(),
        request_hash: request.hash.clone(),
    };
    sqlx::query(
        "INSERT INTO reversals (program_id, idempotency_key, sale_id, refund_id, request_hash, currency, debit_ids, \
             lines_total, target, previously_clawed_back, clawed_back, reversed_line_ids, reversed_debit_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(program_id)
    .bind(request.key)
    .bind(request.sale_id)
    .bind(request.refund_id)
    .bind(&row.request_hash)
    .bind(&row.currency)
    .bind(&row.debit_ids)
    .bind(row.lines_total)
    .bind(row.target)
    .bind(row.previously_clawed_back)
    .bind(row.clawed_back)
    .bind(&row.reversed_line_ids)
    .bind(&row.reversed_debit_ids)
    .execute(&mut *tx)
    .await?;

    // Balances once, existing entries first (with what they were), the new
    // debits last (padded NULL = created now).
    let mut balance_ids: Vec<EntryId> = moves.iter().map(|m| m.0).collect();
    let balance_froms: Vec<&str> = moves.iter().map(|m| m.1.as_str()).collect();
    let balance_reserved: Vec<bool> = moves.iter().map(|m| m.3).collect();
    balance_ids.extend(&debit_ids);
    apply_balance_changes(&mut tx, &balance_ids, &balance_froms, &balance_reserved).await?;
    tx.commit().await?;
    Ok(ReverseOutcome::Applied(row))
}

/// What VoidReversal did.
#[derive(Debug)]
pub enum VoidOutcome {
    /// Applied now: (debits voided, entries restored).
    Applied(Vec<EntryId>, Vec<EntryId>),
    /// Undone before: nothing changes.
    AlreadyVoided,
    /// No reversal under that key.
    NotFound,
    /// Refused (nothing changes).
    Refused(VoidError),
}

/// Undoes the reversal stored under `key` in ONE transaction (under the same
/// key and sale locks as ReverseSale): plans with [`reversal::plan_void`]
/// (the status each REVERSED entry had before comes from its last event into
/// REVERSED), writes the moves with `actor`/`reason`, records the undo and
/// updates the balances.
pub async fn void_reversal(
    pool: &PgPool,
    program_id: ProgramId,
    key: &str,
    actor: &str,
    reason: &str,
) -> Result<VoidOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    lock(&mut tx, LOCK_REVERSAL_KEY, program_id, key).await?;
    let Some(stored) = find_reversal(&mut tx, program_id, key).await? else {
        return Ok(VoidOutcome::NotFound);
    };
    lock(&mut tx, LOCK_SALE, program_id, &stored.sale_id).await?;
    let voided: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM reversal_voids WHERE program_id = $1 AND idempotency_key = $2")
            .bind(program_id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
    if voided.is_some() {
        return Ok(VoidOutcome::AlreadyVoided);
    }
    let entries = lock_sale_entries(&mut tx, program_id, &stored.sale_id).await?;
    let by_id: HashMap<EntryId, &SaleEntry> = entries.iter().map(|e| (e.id, e)).collect();
    let own: HashSet<EntryId> = stored.debit_ids.iter().copied().collect();
    let restore_ids: Vec<EntryId> = stored
        .reversed_line_ids
        .iter()
        .chain(stored.reversed_debit_ids.iter().filter(|id| !own.contains(id)))
        .copied()
        .collect();
    let befores: Vec<(EntryId, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (entry_id) entry_id, from_status FROM entry_status_events \
         WHERE entry_id = ANY($1::uuid[]) AND to_status = 'REVERSED' ORDER BY entry_id, id DESC",
    )
    .bind(&restore_ids)
    .fetch_all(&mut *tx)
    .await?;
    let befores: HashMap<EntryId, Status> =
        befores.into_iter().filter_map(|(id, from)| Status::parse(&from).map(|status| (id, status))).collect();
    let target = |id: &EntryId| -> Result<VoidTarget, StoreError> {
        let entry = by_id.get(id).ok_or_else(|| StoreError(sqlx::Error::RowNotFound))?;
        Ok(VoidTarget {
            id: *id,
            status: parse_status(&entry.status)?,
            reserved: entry.reserved,
            before_reversed: befores.get(id).copied(),
        })
    };
    let debits = stored.debit_ids.iter().map(target).collect::<Result<Vec<_>, _>>()?;
    let restores = restore_ids.iter().map(target).collect::<Result<Vec<_>, _>>()?;
    let reversed_here: HashSet<EntryId> = stored.reversed_debit_ids.iter().copied().collect();
    let plan = match reversal::plan_void(&debits, &restores, &reversed_here) {
        Ok(plan) => plan,
        Err(error) => return Ok(VoidOutcome::Refused(error)),
    };
    let mut ids = Vec::new();
    let mut froms = Vec::new();
    let mut tos = Vec::new();
    let mut was_reserved = Vec::new();
    for (id, from) in &plan.voids {
        ids.push(*id);
        froms.push(from.as_str());
        tos.push(Status::Voided.as_str());
        was_reserved.push(false);
    }
    for (id, from, to) in &plan.restores {
        ids.push(*id);
        froms.push(from.as_str());
        tos.push(to.as_str());
        was_reserved.push(by_id.get(id).is_some_and(|e| e.reserved));
    }
    write_moves(&mut tx, &ids, &froms, &tos, actor, reason).await?;
    let voided_ids: Vec<EntryId> = plan.voids.iter().map(|(id, _)| *id).collect();
    let restored_ids: Vec<EntryId> = plan.restores.iter().map(|(id, _, _)| *id).collect();
    sqlx::query(
        "INSERT INTO reversal_voids (program_id, idempotency_key, voided_ids, restored_ids, actor, reason) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(program_id)
    .bind(key)
    .bind(&voided_ids)
    .bind(&restored_ids)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    apply_balance_changes(&mut tx, &ids, &froms, &was_reserved).await?;
    tx.commit().await?;
    Ok(VoidOutcome::Applied(voided_ids, restored_ids))
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
