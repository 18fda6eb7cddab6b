//! Payout runs: find or start one, write the payouts a batch of its
//! reservations made, complete it.

use accrue_types::{PartnerId, PayoutId, PayoutRunId, ProgramId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool};

use super::{PayoutRow, RunRow, StoreError};
use crate::domain::CarriedForward;
use crate::domain::status::{CREATED_FROM, PayoutStatus};

/// The run for (program, currency, period), if any.
pub async fn find_run(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    currency: &str,
    period: &str,
) -> Result<Option<RunRow>, StoreError> {
    sqlx::query_as::<_, RunRow>(concat!(
        "SELECT ",
        run_columns!(),
        " FROM payout_runs WHERE program_id = $1 AND currency = $2 AND period = $3"
    ))
    .bind(program_id)
    .bind(currency)
    .bind(period)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// The program's run started with `request_id`, if any.
pub async fn find_run_by_request_id(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    request_id: &str,
) -> Result<Option<RunRow>, StoreError> {
    sqlx::query_as::<_, RunRow>(concat!(
        "SELECT ",
        run_columns!(),
        " FROM payout_runs WHERE program_id = $1 AND request_id = $2"
    ))
    .bind(program_id)
    .bind(request_id)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// What a new run row holds.
#[derive(Debug, Clone)]
pub struct RunInsert<'a> {
    /// Id.
    pub id: PayoutRunId,
    /// Program.
    pub program_id: ProgramId,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// "YYYY-MM".
    pub period: &'a str,
    /// Payable cutoff.
    pub cutoff: DateTime<Utc>,
    /// Minimum applied to every partner.
    pub minimum_amount: Decimal,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// SHA-256 of the request body (kept with the key).
    pub request_hash: Option<&'a [u8]>,
    /// Who started it (token subject; the maker of maker-checker).
    pub created_by: &'a str,
}

/// Inserts a RUNNING run; `None` when the (program, currency, period) already
/// has one (the caller re-reads it). A request id another run already holds
/// is a unique violation (the caller answers it as a repeat).
pub async fn insert_run(executor: impl PgExecutor<'_>, run: &RunInsert<'_>) -> Result<Option<RunRow>, StoreError> {
    sqlx::query_as::<_, RunRow>(concat!(
        "INSERT INTO payout_runs (id, program_id, currency, period, cutoff, minimum_amount, state, request_id, ",
        "request_hash, created_by) VALUES ($1, $2, $3, $4, $5, $6, 'RUNNING', $7, $8, $9) ",
        "ON CONFLICT ON CONSTRAINT payout_runs_period_key DO NOTHING RETURNING ",
        run_columns!()
    ))
    .bind(run.id)
    .bind(run.program_id)
    .bind(run.currency)
    .bind(run.period)
    .bind(run.cutoff)
    .bind(run.minimum_amount)
    .bind(run.request_id)
    .bind(run.request_hash)
    .bind(run.created_by)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// One payout a run creates.
#[derive(Debug, Clone)]
pub struct NewPayout {
    /// Deterministic id (see [`crate::domain::payout_id`]).
    pub id: PayoutId,
    /// Partner.
    pub partner_id: PartnerId,
    /// Reserved amount (> 0).
    pub amount: Decimal,
    /// Entries reserved.
    pub entry_count: i64,
}

/// Inserts a batch of PENDING_APPROVAL payouts for `run` and an audit event
/// (by `actor`, the caller's token subject; UNSPECIFIED → PENDING_APPROVAL) for each one newly
/// created, in one transaction. Payouts that already exist (a resumed run)
/// are left alone. Returns how many were created.
pub async fn insert_payouts(
    pool: &PgPool,
    run: &RunRow,
    payouts: &[NewPayout],
    actor: &str,
) -> Result<u64, StoreError> {
    if payouts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<PayoutId> = payouts.iter().map(|payout| payout.id).collect();
    let partners: Vec<PartnerId> = payouts.iter().map(|payout| payout.partner_id).collect();
    let amounts: Vec<Decimal> = payouts.iter().map(|payout| payout.amount).collect();
    let counts: Vec<i64> = payouts.iter().map(|payout| payout.entry_count).collect();
    let mut tx = pool.begin().await?;
    let rows: Vec<PayoutRow> = sqlx::query_as(concat!(
        "INSERT INTO payouts (id, payout_run_id, program_id, partner_id, currency, amount, status, period, entry_count) \
         SELECT p.id, $5, $6, p.partner_id, $7, p.amount, $8, $9, p.entry_count \
         FROM unnest($1::uuid[], $2::uuid[], $3::numeric[], $4::bigint[]) AS p(id, partner_id, amount, entry_count) \
         ON CONFLICT DO NOTHING RETURNING ",
        payout_columns!()
    ))
    .bind(&ids)
    .bind(&partners)
    .bind(&amounts)
    .bind(&counts)
    .bind(run.id)
    .bind(run.program_id)
    .bind(&run.currency)
    .bind(PayoutStatus::PendingApproval.as_str())
    .bind(&run.period)
    .fetch_all(&mut *tx)
    .await?;
    let created: Vec<PayoutId> = rows.iter().map(|row| row.id).collect();
    let events = rows
        .iter()
        .map(|row| crate::events::payout(&accrue_kit::events::catalogue::PAYOUT_CREATED, row, row.created_at))
        .collect::<Result<Vec<_>, _>>()?;
    accrue_kit::events::insert(&mut tx, &events).await?;
    if !created.is_empty() {
        sqlx::query(
            "INSERT INTO payout_audit_events (payout_id, actor, from_status, to_status, reason) \
             SELECT id, $2, $3, $4, $5 FROM unnest($1::uuid[]) AS created(id)",
        )
        .bind(&created)
        .bind(actor)
        .bind(CREATED_FROM)
        .bind(PayoutStatus::PendingApproval.as_str())
        .bind(format!("payout run {} for {}", run.id, run.period))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let created_set: std::collections::HashSet<PayoutId> = created.iter().copied().collect();
    crate::counters::payouts_entered(
        PayoutStatus::PendingApproval,
        &run.currency,
        payouts.iter().filter(|payout| created_set.contains(&payout.id)).map(|payout| payout.amount),
    );
    Ok(created.len() as u64)
}

/// Marks a run COMPLETE with its totals: payouts counted and summed from the
/// stored payouts (so a resumed run counts each once), carried forward as
/// tallied by the final pass.
pub async fn complete_run(
    executor: impl PgExecutor<'_>,
    run_id: PayoutRunId,
    carried: CarriedForward,
) -> Result<RunRow, StoreError> {
    sqlx::query_as::<_, RunRow>(concat!(
        "UPDATE payout_runs r SET state = 'COMPLETE', completed_at = clock_timestamp(), ",
        "payout_count = t.n, total_amount = t.total, carried_forward_count = $2, carried_forward_amount = $3 ",
        "FROM (SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS total FROM payouts WHERE payout_run_id = $1) t ",
        "WHERE r.id = $1 RETURNING ",
        "r.id, r.program_id, r.currency, r.period, r.cutoff, r.minimum_amount, r.state, r.payout_count, ",
        "r.total_amount, r.carried_forward_count, r.carried_forward_amount, r.created_at, r.request_hash"
    ))
    .bind(run_id)
    .bind(carried.count)
    .bind(carried.amount)
    .fetch_one(executor)
    .await
    .map_err(StoreError::from)
}
