//! sqlx access to the `ledger` schema (runtime queries; the connection's
//! search_path is the schema). Every write that belongs together runs in one
//! transaction, and batches are set-based (`UNNEST` arrays, one statement per
//! step, not one per line).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

pub(crate) use accrue_kit::error::StoreError;

use crate::domain::posting::{EntryType, Posting};
use crate::domain::reserve::{should_reserve, signed};
use crate::domain::status::{Current, Status, TransitionError, plan_transition};

/// What became of one posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostingOutcome {
    /// Newly written; entry ids in line order.
    Posted(Vec<Uuid>),
    /// The key was already posted with the same body: the stored ids.
    Replayed(Vec<Uuid>),
    /// The key was already posted with a different body (nothing written).
    KeyReused,
}

/// Posts `postings` (distinct keys) for `program_id` in ONE transaction:
/// keys already stored are skipped up front; the rest go through
/// `INSERT … ON CONFLICT DO NOTHING` on the postings, then, for the keys
/// actually inserted, their entries, creation events (UNSPECIFIED → PENDING,
/// actor "ledger") and status projections — all in one statement. Keys that
/// already existed are read back and compared by request hash. A concurrent
/// poster of the same key blocks on the unique index until the first commits,
/// then reads its row (no unique-violation error escapes). Results are in input
/// order.
pub async fn post(pool: &PgPool, program_id: Uuid, postings: &[&Posting]) -> Result<Vec<PostingOutcome>, StoreError> {
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
    let mut ids: Vec<Uuid> = Vec::with_capacity(line_count);
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
    let mut posting_ids: HashMap<&str, Vec<Uuid>> = HashMap::with_capacity(fresh.len());
    for posting in &fresh {
        keys.push(posting.key.clone());
        sale_ids.push(posting.sale_id.clone());
        hashes.push(posting.hash.clone());
        // 1-based inclusive slice bounds into the flat id array.
        lows.push(i32::try_from(ids.len() + 1).unwrap_or(i32::MAX));
        let mut these = Vec::with_capacity(posting.lines.len());
        for (index, line) in posting.lines.iter().enumerate() {
            let id = Uuid::now_v7();
            these.push(id);
            ids.push(id);
            partner_ids.push(line.partner_id);
            line_sales.push(posting.sale_id.clone());
            kinds.push(line.kind.as_str());
            entry_types.push(line.entry_type.as_str());
            currencies.push(line.currency.code());
            amounts.push(line.amount);
            levels.push(line.level);
            sources.push(line.source_partner_id);
            occurred.push(line.occurred_at);
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
            SELECT id, 'UNSPECIFIED', 'PENDING', 'ledger', 'posted' FROM e
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
        .fetch_all(&mut *tx)
        .await?
    };
    let inserted: HashSet<String> = inserted.into_iter().map(|(key,)| key).collect();

    let existing_keys: Vec<&str> = all_keys.iter().copied().filter(|key| !inserted.contains(*key)).collect();
    let mut existing: HashMap<String, (Vec<u8>, Vec<Uuid>)> = HashMap::new();
    if !existing_keys.is_empty() {
        let rows: Vec<(String, Vec<u8>, Vec<Uuid>)> = sqlx::query_as(
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
    pub id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Partner.
    pub partner_id: Uuid,
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
    pub source_partner_id: Option<Uuid>,
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
    pub payout_id: Option<Uuid>,
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
     s.status, r.payout_id";

/// One entry with its status history (oldest first); `None` when absent.
pub async fn get_entry(pool: &PgPool, id: Uuid) -> Result<Option<(EntryRow, Vec<EventRow>)>, StoreError> {
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
    pub partner_id: Option<Uuid>,
    /// Only this sale's.
    pub sale_id: Option<String>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Only this kind (stored name).
    pub kind: Option<&'static str>,
}

/// A page of a program's entries in `(created_at, id)` order after `after`;
/// returns up to `limit` rows.
pub async fn list_entries(
    pool: &PgPool,
    program_id: Uuid,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
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
    NotFound(Uuid),
    /// The state machine refused (nothing changed).
    Refused(TransitionError),
}

/// Moves `ids` (distinct) of `program_id` to `to`, all or nothing, in one
/// transaction: locks their status rows in id order, reads reservations, plans
/// with [`plan_transition`], then updates the projection and appends one event
/// per changed entry in one statement.
pub async fn transition(
    pool: &PgPool,
    program_id: Uuid,
    ids: &[Uuid],
    to: Status,
    actor: &str,
    reason: &str,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT entry_id, status FROM entry_states WHERE program_id = $1 AND entry_id = ANY($2::uuid[]) \
         ORDER BY entry_id FOR UPDATE",
    )
    .bind(program_id)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    // Read after locking (a fresh snapshot), so a reservation committed while
    // we waited is seen.
    let reserved: Vec<(Uuid,)> =
        sqlx::query_as("SELECT entry_id FROM payout_reservations WHERE entry_id = ANY($1::uuid[])")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
    let reserved: HashSet<Uuid> = reserved.into_iter().map(|(id,)| id).collect();
    let statuses: HashMap<Uuid, String> = rows.into_iter().collect();
    let mut current = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(status) = statuses.get(id) else {
            return Ok(TransitionOutcome::NotFound(*id));
        };
        let status = Status::parse(status).ok_or_else(|| sqlx::Error::Decode(format!("bad status {status}").into()))?;
        current.push(Current { id: *id, status, reserved: reserved.contains(id) });
    }
    let moves = match plan_transition(&current, to) {
        Ok(moves) => moves,
        Err(error) => return Ok(TransitionOutcome::Refused(error)),
    };
    if moves.is_empty() {
        return Ok(TransitionOutcome::Done(0));
    }
    let move_ids: Vec<Uuid> = moves.iter().map(|(id, _)| *id).collect();
    let froms: Vec<&str> = moves.iter().map(|(_, from)| from.as_str()).collect();
    sqlx::query(
        r#"
        WITH m AS (SELECT * FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS m(id, from_status, n)),
        u AS (UPDATE entry_states s SET status = $3, updated_at = now() FROM m WHERE s.entry_id = m.id)
        INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
        SELECT id, from_status, $3, $4, $5 FROM m ORDER BY n
        "#,
    )
    .bind(&move_ids)
    .bind(&froms)
    .bind(to.as_str())
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(TransitionOutcome::Done(moves.len() as u64))
}

/// One partner's earnings in one currency (signed sums; voided excluded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SummaryRow {
    /// Partner.
    pub partner_id: Uuid,
    /// ISO 4217 code.
    pub currency: String,
    /// DIRECT.
    pub direct: Decimal,
    /// SPLIT.
    pub split: Decimal,
    /// OVERRIDE.
    pub override_amount: Decimal,
    /// MARGIN.
    pub margin: Decimal,
    /// All kinds.
    pub total: Decimal,
}

/// Σ by kind of CREDIT − DEBIT per (partner, currency), excluding VOIDED
/// entries, ordered by partner id then currency; one aggregate query.
/// `partner_ids` empty = every partner with entries.
pub async fn earnings_summary(
    pool: &PgPool,
    program_id: Uuid,
    partner_ids: &[Uuid],
) -> Result<Vec<SummaryRow>, StoreError> {
    sqlx::query_as::<_, SummaryRow>(
        r#"
        SELECT partner_id, currency,
               COALESCE(sum(v) FILTER (WHERE kind = 'DIRECT'), 0)   AS direct,
               COALESCE(sum(v) FILTER (WHERE kind = 'SPLIT'), 0)    AS split,
               COALESCE(sum(v) FILTER (WHERE kind = 'OVERRIDE'), 0) AS override_amount,
               COALESCE(sum(v) FILTER (WHERE kind = 'MARGIN'), 0)   AS margin,
               COALESCE(sum(v), 0)                                  AS total
        FROM (
            SELECT e.partner_id, e.currency, e.kind,
                   CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END AS v
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
/// event PENDING → CLEARED (actor "ledger") and, when approving, a second
/// CLEARED → APPROVED (actor "auto-approve"). Returns (cleared, approved).
pub async fn clear_matured(
    pool: &PgPool,
    program_id: Uuid,
    as_of: DateTime<Utc>,
    auto_approve: bool,
) -> Result<(i64, i64), StoreError> {
    let target = if auto_approve { Status::Approved } else { Status::Cleared };
    let (cleared,): (i64,) = sqlx::query_as(
        r#"
        WITH c AS (
            UPDATE entry_states SET status = $3, updated_at = now()
            WHERE program_id = $1 AND status = 'PENDING' AND clears_at <= $2
            RETURNING entry_id
        ), ev AS (
            INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
            SELECT c.entry_id, x.from_status, x.to_status, x.actor, x.reason
            FROM c CROSS JOIN (VALUES
                (1, 'PENDING', 'CLEARED', 'ledger', 'clearance period ended'),
                (2, 'CLEARED', 'APPROVED', 'auto-approve', 'program auto-approves cleared entries')
            ) AS x(n, from_status, to_status, actor, reason)
            WHERE x.n = 1 OR $4
            ORDER BY c.entry_id, x.n
        )
        SELECT count(*) FROM c
        "#,
    )
    .bind(program_id)
    .bind(as_of)
    .bind(target.as_str())
    .bind(auto_approve)
    .fetch_one(pool)
    .await?;
    Ok((cleared, if auto_approve { cleared } else { 0 }))
}

/// One partner's reservation request (validated).
#[derive(Debug, Clone, Copy)]
pub struct ReservationRequest {
    /// Partner.
    pub partner_id: Uuid,
    /// Payout.
    pub payout_id: Uuid,
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
/// sum passes [`should_reserve`]. A payout that already holds reservations
/// returns them (idempotent). Candidate status rows are locked in (partner,
/// entry) order; the primary key on `payout_reservations.entry_id` keeps an
/// entry in at most one payout (a race surfaces as [`ReserveError::Conflict`]).
pub async fn reserve(
    pool: &PgPool,
    program_id: Uuid,
    currency: &str,
    cutoff: DateTime<Utc>,
    requests: &[ReservationRequest],
) -> Result<Vec<ReservationOutcome>, ReserveError> {
    let mut tx = pool.begin().await?;
    let payout_ids: Vec<Uuid> = requests.iter().map(|r| r.payout_id).collect();
    let existing: Vec<(Uuid, i64, Decimal)> = sqlx::query_as(
        "SELECT r.payout_id, count(*), COALESCE(sum(CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END), 0) \
         FROM payout_reservations r JOIN entries e ON e.id = r.entry_id \
         WHERE r.program_id = $1 AND r.payout_id = ANY($2::uuid[]) GROUP BY r.payout_id",
    )
    .bind(program_id)
    .bind(&payout_ids)
    .fetch_all(&mut *tx)
    .await?;
    let existing: HashMap<Uuid, (i64, Decimal)> =
        existing.into_iter().map(|(payout, count, sum)| (payout, (count, sum))).collect();

    let mut fresh: Vec<&ReservationRequest> =
        requests.iter().filter(|r| !existing.contains_key(&r.payout_id)).collect();
    fresh.sort_by_key(|r| r.partner_id);
    let partner_ids: Vec<Uuid> = fresh.iter().map(|r| r.partner_id).collect();
    let mut candidates: HashMap<Uuid, (Decimal, Vec<Uuid>)> = HashMap::new();
    if !partner_ids.is_empty() {
        let rows: Vec<(Uuid, Uuid, String, Decimal)> = sqlx::query_as(
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
    }
    tx.commit().await?;
    Ok(outcomes)
}
