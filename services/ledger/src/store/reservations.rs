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
/// returns them (idempotent); a payout whose reservation was released reserves nothing again (0, not reserved). Candidate status rows are locked in (partner,
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
    // A payout whose reservation was released (rejected, deleted) is spent:
    // it never reserves again, so a resumed run cannot fill it anew.
    let released: Vec<PayoutId> = sqlx::query_scalar(
        "SELECT DISTINCT payout_id FROM payout_reservation_releases WHERE program_id = $1 AND payout_id = ANY($2::uuid[])",
    )
    .bind(program_id)
    .bind(&payout_ids)
    .fetch_all(&mut *tx)
    .await?;
    let released: HashSet<PayoutId> = released.into_iter().collect();

    let mut fresh: Vec<&ReservationRequest> =
        requests.iter().filter(|r| !existing.contains_key(&r.payout_id) && !released.contains(&r.payout_id)).collect();
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
        if released.contains(&request.payout_id) {
            outcomes.push(ReservationOutcome { amount: Decimal::ZERO, entry_count: 0, reserved: false });
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

/// What ReleaseReservation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// This many entries were released (0: the payout held none — never
    /// reserved, or released before; the repeat is harmless).
    Released(u64),
    /// The payout was paid: its reservation is settled and stays.
    Settled,
}

/// Releases every reservation of `payout_id` in `program_id` in ONE
/// transaction (DESIGN §5: Reject and Delete release): the entries' status
/// rows are locked in entry order (the order every ledger writer locks in),
/// the reservation rows are deleted (so the primary key lets a later run
/// reserve the entries again) and copied to `payout_reservation_releases`
/// with `actor` and `reason`, and the balance projection moves them from
/// `reserved` back to `approved`. Entry statuses do not change.
pub async fn release(
    pool: &PgPool,
    program_id: ProgramId,
    payout_id: PayoutId,
    actor: &str,
    reason: &str,
) -> Result<ReleaseOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(EntryId, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT s.entry_id, s.status, r.settled_at FROM payout_reservations r \
         JOIN entry_states s ON s.entry_id = r.entry_id \
         WHERE r.program_id = $1 AND r.payout_id = $2 ORDER BY s.entry_id FOR UPDATE OF s, r",
    )
    .bind(program_id)
    .bind(payout_id)
    .fetch_all(&mut *tx)
    .await?;
    if rows.iter().any(|(_, _, settled)| settled.is_some()) {
        return Ok(ReleaseOutcome::Settled);
    }
    if rows.is_empty() {
        return Ok(ReleaseOutcome::Released(0));
    }
    let ids: Vec<EntryId> = rows.iter().map(|(id, _, _)| *id).collect();
    let statuses: Vec<&str> = rows.iter().map(|(_, status, _)| status.as_str()).collect();
    sqlx::query(
        "WITH d AS (DELETE FROM payout_reservations WHERE entry_id = ANY($1::uuid[]) \
                    RETURNING entry_id, payout_id, program_id, partner_id, created_at) \
         INSERT INTO payout_reservation_releases (entry_id, payout_id, program_id, partner_id, reserved_at, actor, reason) \
         SELECT entry_id, payout_id, program_id, partner_id, created_at, $2, $3 FROM d ORDER BY entry_id",
    )
    .bind(&ids)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let was_reserved = vec![true; ids.len()];
    apply_balance_changes(&mut tx, &ids, &statuses, &was_reserved).await?;
    tx.commit().await?;
    Ok(ReleaseOutcome::Released(ids.len() as u64))
}

/// A settled reservation, as SettleReservation answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Entries the payout holds.
    pub entry_count: i64,
    /// Of them, entries now PAID.
    pub paid_count: i64,
    /// Signed sum (CREDIT − DEBIT) of the entries now PAID.
    pub paid_amount: Decimal,
    /// ISO 4217 code of the entries.
    pub currency: String,
    /// The reference it was settled with.
    pub payment_reference: String,
    /// When.
    pub settled_at: DateTime<Utc>,
}

/// What SettleReservation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Settled now, or earlier with the same reference (idempotent).
    Settled(Settlement),
    /// Settled earlier with another reference (nothing written).
    OtherReference(String),
    /// An entry of the reservation is DISPUTED, or CLEARED after a dispute:
    /// it must be APPROVED again (or reversed) before the payout is paid
    /// (nothing written).
    NotPayable(EntryId, Status),
    /// The payout holds no reservation: released earlier (`true`) or never
    /// reserved in this program (`false`).
    Nothing {
        /// Whether a release of it exists.
        released: bool,
    },
}

/// Settles `payout_id`'s reservation in ONE transaction (DESIGN §5: Paid
/// settles it): its entries' status rows are locked in entry order; every
/// APPROVED one, credit or debit, moves to PAID with a status event by
/// `actor` whose reason names the payout and `payment_reference`; entries
/// REVERSED while reserved stay REVERSED (DESIGN §5). A reservation holding a
/// DISPUTED entry (or one CLEARED by its dispute's resolution) is not settled:
/// the payout would pay for an entry not approved, which could then never be
/// reserved again. The
/// rows are marked settled and stay, so the entries keep their payout id. A
/// repeat with the same reference answers the stored settlement.
pub async fn settle(
    pool: &PgPool,
    program_id: ProgramId,
    payout_id: PayoutId,
    payment_reference: &str,
    actor: &str,
) -> Result<SettleOutcome, StoreError> {
    type Reserved = (EntryId, String, Option<DateTime<Utc>>, Option<String>);
    let mut tx = pool.begin().await?;
    let rows: Vec<Reserved> = sqlx::query_as(
        "SELECT s.entry_id, s.status, r.settled_at, r.payment_reference FROM payout_reservations r \
         JOIN entry_states s ON s.entry_id = r.entry_id \
         WHERE r.program_id = $1 AND r.payout_id = $2 ORDER BY s.entry_id FOR UPDATE OF s, r",
    )
    .bind(program_id)
    .bind(payout_id)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        let released: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM payout_reservation_releases WHERE program_id = $1 AND payout_id = $2)",
        )
        .bind(program_id)
        .bind(payout_id)
        .fetch_one(&mut *tx)
        .await?;
        return Ok(SettleOutcome::Nothing { released });
    }
    if let Some((_, _, Some(_), reference)) = rows.iter().find(|(_, _, settled, _)| settled.is_some()) {
        let reference = reference.clone().unwrap_or_default();
        if reference != payment_reference {
            return Ok(SettleOutcome::OtherReference(reference));
        }
    } else if let Some((id, status)) = rows.iter().find_map(|(id, status, _, _)| {
        let status = Status::parse(status)?;
        (!matches!(status, Status::Approved | Status::Reversed | Status::Voided | Status::Paid))
            .then_some((*id, status))
    }) {
        return Ok(SettleOutcome::NotPayable(id, status));
    } else {
        let moves: Vec<(EntryId, &str)> = rows
            .iter()
            .filter(|(_, status, _, _)| status == Status::Approved.as_str())
            .map(|(id, status, _, _)| (*id, status.as_str()))
            .collect();
        let ids: Vec<EntryId> = moves.iter().map(|(id, _)| *id).collect();
        let froms: Vec<&str> = moves.iter().map(|(_, from)| *from).collect();
        let tos = vec![Status::Paid.as_str(); ids.len()];
        let reason = format!("payout {payout_id} paid, payment reference {payment_reference}");
        write_moves(&mut tx, &ids, &froms, &tos, actor, &reason).await?;
        sqlx::query(
            "UPDATE payout_reservations SET settled_at = now(), payment_reference = $3 \
             WHERE program_id = $1 AND payout_id = $2",
        )
        .bind(program_id)
        .bind(payout_id)
        .bind(payment_reference)
        .execute(&mut *tx)
        .await?;
        let was_reserved = vec![true; ids.len()];
        apply_balance_changes(&mut tx, &ids, &froms, &was_reserved).await?;
    }
    type Totals = (i64, i64, Decimal, String, Option<String>, Option<DateTime<Utc>>);
    let settlement: Totals = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.status = 'PAID'), \
                COALESCE(sum(CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END) \
                         FILTER (WHERE s.status = 'PAID'), 0), \
                min(e.currency), min(r.payment_reference), min(r.settled_at) \
         FROM payout_reservations r JOIN entries e ON e.id = r.entry_id JOIN entry_states s ON s.entry_id = r.entry_id \
         WHERE r.program_id = $1 AND r.payout_id = $2",
    )
    .bind(program_id)
    .bind(payout_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let (entry_count, paid_count, paid_amount, currency, reference, settled_at) = settlement;
    Ok(SettleOutcome::Settled(Settlement {
        entry_count,
        paid_count,
        paid_amount,
        currency,
        payment_reference: reference.unwrap_or_default(),
        settled_at: settled_at.unwrap_or_else(Utc::now),
    }))
}
