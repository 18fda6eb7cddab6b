//! Payout reservations: a partner's payable entries held for one payout,
//! at most one payout per entry (enforced by the database).

// The store's imports and shared helpers.
use super::*;

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
