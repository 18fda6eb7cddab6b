//! Refund clawbacks (ReverseSale) and their undo (VoidReversal): debits
//! linked to the lines they reverse, the reversal log, the balance
//! projection kept in the same transaction.

// The store's imports and shared helpers.
use super::*;

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
            breakdowns.push(serde_json::to_string(&breakdown).unwrap_or_else(|_| "{}".to_string()));
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
                                     $7::timestamptz[], $8::text[], $9::int4[], $10::uuid[], $11::text[], $12::text[])
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
        // entry.posted per new debit, before the moves below (a travelling
        // debit reversed with its line is posted, then reversed).
        let created: Vec<events::Change<'_>> = debit_ids
            .iter()
            .zip(&initial)
            .map(|(id, status)| events::Change { id: *id, from: "UNSPECIFIED", to: status, reason: &reason })
            .collect();
        entry_events(&mut tx, &accrue_kit::events::catalogue::ENTRY_POSTED, &created, request.actor).await?;
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
    crate::counters::entries_posted(kinds.iter().map(|kind| (kind, "DEBIT")));
    crate::counters::clawback_applied();
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
    // The stored log suffices: an event into REVERSED is always stored (only
    // a posted line's creation event, into PENDING, is not; see
    // `entry_history`).
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
