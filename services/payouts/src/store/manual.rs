//! Manual payouts (CreatePayout): write one with its creation audit
//! event, and the body hash a repeat of its request id is compared with.

use accrue_types::{PartnerId, PayoutId, ProgramId};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool};

use super::{PayoutRow, StoreError};
use crate::domain::status::{CREATED_FROM, PayoutStatus};

/// A manual payout (CreatePayout) to write once the ledger reserved its
/// entries.
#[derive(Debug, Clone)]
pub struct ManualInsert<'a> {
    /// Deterministic id (see [`crate::domain::manual_payout_id`]).
    pub id: PayoutId,
    /// Program.
    pub program_id: ProgramId,
    /// Partner paid.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The reserved net (> 0).
    pub amount: Decimal,
    /// "YYYY-MM".
    pub period: &'a str,
    /// Entries reserved.
    pub entry_count: i64,
    /// Notes.
    pub notes: &'a str,
    /// Creator (token subject), for maker-checker.
    pub created_by: &'a str,
    /// Hash of the creating request without its request id.
    pub request_hash: &'a [u8],
}

/// Inserts a PENDING_APPROVAL manual payout and its creation audit event
/// (UNSPECIFIED → PENDING_APPROVAL by `created_by`) in one transaction,
/// counted in `accrue_payouts_total` once committed, as a run's payouts are.
/// Returns `None` when a payout with that id already exists (a repeated
/// request; the caller compares its hash).
pub async fn insert_manual_payout(pool: &PgPool, payout: &ManualInsert<'_>) -> Result<Option<PayoutRow>, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as::<_, PayoutRow>(concat!(
        "INSERT INTO payouts (id, payout_run_id, program_id, partner_id, currency, amount, status, period, ",
        "entry_count, notes, created_by, create_request_hash) ",
        "VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING ",
        payout_columns!()
    ))
    .bind(payout.id)
    .bind(payout.program_id)
    .bind(payout.partner_id)
    .bind(payout.currency)
    .bind(payout.amount)
    .bind(PayoutStatus::PendingApproval.as_str())
    .bind(payout.period)
    .bind(payout.entry_count)
    .bind(payout.notes)
    .bind(payout.created_by)
    .bind(payout.request_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        sqlx::query(
            "INSERT INTO payout_audit_events (payout_id, actor, from_status, to_status, reason) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(payout.id)
        .bind(payout.created_by)
        .bind(CREATED_FROM)
        .bind(PayoutStatus::PendingApproval.as_str())
        .bind(format!("manual payout for {}", payout.period))
        .execute(&mut *tx)
        .await?;
    }
    if let Some(created) = &row {
        let event = crate::events::payout(&accrue_kit::events::catalogue::PAYOUT_CREATED, created, created.created_at)?;
        accrue_kit::events::insert(&mut tx, &[event]).await?;
    }
    tx.commit().await?;
    if let Some(created) = &row {
        crate::counters::payouts_entered(PayoutStatus::PendingApproval, &created.currency, [created.amount]);
    }
    Ok(row)
}

/// The body hash a manual payout was created with (`None`: not a manual
/// payout, or none kept).
pub async fn create_request_hash(executor: impl PgExecutor<'_>, id: PayoutId) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar::<_, Option<Vec<u8>>>("SELECT create_request_hash FROM payouts WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
        .map(Option::flatten)
        .map_err(StoreError::from)
}
