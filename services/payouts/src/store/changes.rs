//! State changes of one payout (lock, repeat detection, creator, write
//! with its audit event) and the audit log's reads.

use accrue_types::{PayoutId, ProgramId};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{PayoutRow, StoreError};
use crate::domain::status::{CREATED_FROM, PayoutStatus};

/// Locks a payout's row (`SELECT … FOR UPDATE`) for a state change: a
/// concurrent change of the same payout waits here, then sees the state the
/// first one left (so exactly one of two conflicting moves succeeds).
pub async fn lock_payout(tx: &mut sqlx::PgConnection, id: PayoutId) -> Result<Option<PayoutRow>, StoreError> {
    sqlx::query_as::<_, PayoutRow>(concat!("SELECT ", payout_columns!(), " FROM payouts WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)
}

/// The body hash of the change `request_id` made to `payout_id`, if one
/// did (`Some(None)`: a change without a stored hash).
pub async fn change_of_request(
    executor: impl PgExecutor<'_>,
    payout_id: PayoutId,
    request_id: &str,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    sqlx::query_scalar::<_, Option<Vec<u8>>>(
        "SELECT request_hash FROM payout_audit_events WHERE payout_id = $1 AND request_id = $2",
    )
    .bind(payout_id)
    .bind(request_id)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// Who created a payout: a manual payout's `created_by`, else its run's,
/// else (runs from before migration 0003) the actor of the payout's creation
/// audit event.
pub async fn payout_creator(executor: impl PgExecutor<'_>, payout: &PayoutRow) -> Result<Option<String>, StoreError> {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT COALESCE( \
             (SELECT created_by FROM payouts WHERE id = $1), \
             (SELECT created_by FROM payout_runs WHERE id = $2), \
             (SELECT actor FROM payout_audit_events WHERE payout_id = $1 AND from_status = $3 ORDER BY id LIMIT 1))",
    )
    .bind(payout.id)
    .bind(payout.payout_run_id)
    .bind(CREATED_FROM)
    .fetch_one(executor)
    .await
    .map_err(StoreError::from)
}

/// One state change of a locked payout.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// The payout.
    pub payout_id: PayoutId,
    /// Its state now (checked by the caller under the lock).
    pub from: PayoutStatus,
    /// Its new state.
    pub to: PayoutStatus,
    /// Who (token subject).
    pub actor: &'a str,
    /// The audit event's reason.
    pub reason: &'a str,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Body hash kept with the key.
    pub request_hash: &'a [u8],
    /// Record the actor as approver.
    pub approve: bool,
    /// New payment reference.
    pub payment_reference: Option<&'a str>,
    /// New payment method.
    pub payment_method: Option<&'a str>,
    /// When paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// New status reason (rejection or failure).
    pub status_reason: Option<&'a str>,
    /// New notes.
    pub notes: Option<&'a str>,
}

/// Writes a state change of a payout locked by [`lock_payout`] and its
/// audit event, in the caller's transaction.
pub async fn write_change(tx: &mut sqlx::PgConnection, change: &Change<'_>) -> Result<PayoutRow, StoreError> {
    let row = sqlx::query_as::<_, PayoutRow>(concat!(
        "UPDATE payouts SET status = $2, updated_at = clock_timestamp(), ",
        "approved_by = CASE WHEN $3 THEN $4 ELSE approved_by END, ",
        "approved_at = CASE WHEN $3 THEN clock_timestamp() ELSE approved_at END, ",
        "payment_reference = COALESCE($5, payment_reference), payment_method = COALESCE($6, payment_method), ",
        "paid_at = COALESCE($7, paid_at), status_reason = COALESCE($8, status_reason), ",
        "notes = COALESCE($10, notes) ",
        "WHERE id = $1 AND status = $9 RETURNING ",
        payout_columns!()
    ))
    .bind(change.payout_id)
    .bind(change.to.as_str())
    .bind(change.approve)
    .bind(change.actor)
    .bind(change.payment_reference)
    .bind(change.payment_method)
    .bind(change.paid_at)
    .bind(change.status_reason)
    .bind(change.from.as_str())
    .bind(change.notes)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO payout_audit_events (payout_id, actor, from_status, to_status, reason, request_id, request_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(change.payout_id)
    .bind(change.actor)
    .bind(change.from.as_str())
    .bind(change.to.as_str())
    .bind(change.reason)
    .bind(change.request_id)
    .bind(change.request_id.map(|_| change.request_hash))
    .execute(&mut *tx)
    .await?;
    // The feed reports entering a state (a notes update stays where it is).
    if let Some(kind) = crate::events::of_change(change.to).filter(|_| change.from != change.to) {
        let event = crate::events::payout(kind, &row, row.updated_at)?;
        accrue_kit::events::insert(tx, &[event]).await?;
    }
    Ok(row)
}

/// A stored audit event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    /// Id.
    pub id: i64,
    /// Payout.
    pub payout_id: PayoutId,
    /// Who.
    pub actor: String,
    /// From (UNSPECIFIED at creation).
    pub from_status: String,
    /// To.
    pub to_status: String,
    /// Why.
    pub reason: String,
    /// Request id.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// ListAuditEvents filters.
#[derive(Debug, Clone)]
pub struct AuditFilter<'a> {
    /// Program (required).
    pub program_id: ProgramId,
    /// Only this payout's.
    pub payout_id: Option<PayoutId>,
    /// Only this actor's.
    pub actor: Option<&'a str>,
    /// At or after.
    pub start: Option<DateTime<Utc>>,
    /// Before.
    pub end: Option<DateTime<Utc>>,
}

/// A page of a program's audit events in id order after `after`.
pub async fn list_audit_events(
    executor: impl PgExecutor<'_>,
    filter: &AuditFilter<'_>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    sqlx::query_as::<_, AuditRow>(
        "SELECT e.id, e.payout_id, e.actor, e.from_status, e.to_status, e.reason, e.request_id, e.created_at \
         FROM payout_audit_events e JOIN payouts p ON p.id = e.payout_id \
         WHERE p.program_id = $1 \
           AND ($2::uuid IS NULL OR e.payout_id = $2) \
           AND ($3::text IS NULL OR e.actor = $3) \
           AND ($4::timestamptz IS NULL OR e.created_at >= $4) \
           AND ($5::timestamptz IS NULL OR e.created_at < $5) \
           AND ($6::bigint IS NULL OR e.id > $6) \
         ORDER BY e.id LIMIT $7",
    )
    .bind(filter.program_id)
    .bind(filter.payout_id)
    .bind(filter.actor)
    .bind(filter.start)
    .bind(filter.end)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}
