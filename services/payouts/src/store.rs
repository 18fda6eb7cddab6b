//! sqlx access to the payouts schema (runtime queries; the connection's
//! search_path is `payouts`).

use accrue_types::{PartnerId, PayoutId, PayoutRunId, ProgramId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;

pub(crate) use accrue_kit::error::StoreError;

macro_rules! run_columns {
    () => {
        "id, program_id, currency, period, cutoff, minimum_amount, state, payout_count, total_amount, \
         carried_forward_count, carried_forward_amount, created_at, request_hash"
    };
}

macro_rules! payout_columns {
    () => {
        "id, payout_run_id, program_id, partner_id, currency, amount, status, period, entry_count, created_at, \
         updated_at, approved_by, approved_at, payment_reference, payment_method, paid_at, status_reason, notes"
    };
}

// After the column macros, which the submodules use.
mod changes;
mod manual;
mod runs;
mod settings;

pub use changes::*;
pub use manual::*;
pub use runs::*;
pub use settings::*;

/// A stored payout run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    /// Id.
    pub id: PayoutRunId,
    /// Program.
    pub program_id: ProgramId,
    /// ISO 4217 code.
    pub currency: String,
    /// "YYYY-MM".
    pub period: String,
    /// Payable cutoff.
    pub cutoff: DateTime<Utc>,
    /// Minimum applied to every partner.
    pub minimum_amount: Decimal,
    /// "RUNNING" or "COMPLETE".
    pub state: String,
    /// Payouts created.
    pub payout_count: i64,
    /// Σ payouts.
    pub total_amount: Decimal,
    /// Partners carried forward.
    pub carried_forward_count: i64,
    /// Σ carried forward.
    pub carried_forward_amount: Decimal,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// SHA-256 of the request body that started it (None before migration
    /// 0002, or without a request id).
    pub request_hash: Option<Vec<u8>>,
}

impl RunRow {
    /// Whether the run finished.
    pub fn is_complete(&self) -> bool {
        self.state == "COMPLETE"
    }
}

/// A stored payout.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    /// Id.
    pub id: PayoutId,
    /// Run that created it; `None` for a manual payout (CreatePayout).
    pub payout_run_id: Option<PayoutRunId>,
    /// Program.
    pub program_id: ProgramId,
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code.
    pub currency: String,
    /// Amount.
    pub amount: Decimal,
    /// State name.
    pub status: String,
    /// "YYYY-MM".
    pub period: String,
    /// Ledger entries reserved.
    pub entry_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Approver (token subject).
    pub approved_by: Option<String>,
    /// When approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Payment reference.
    pub payment_reference: Option<String>,
    /// Payment method.
    pub payment_method: Option<String>,
    /// When paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// Why rejected, or why the payment last failed.
    pub status_reason: Option<String>,
    /// Free notes.
    pub notes: String,
}

/// A payout by id.
pub async fn get_payout(executor: impl PgExecutor<'_>, id: PayoutId) -> Result<Option<PayoutRow>, StoreError> {
    sqlx::query_as::<_, PayoutRow>(concat!("SELECT ", payout_columns!(), " FROM payouts WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::from)
}

/// ListPayouts filters.
#[derive(Debug, Clone)]
pub struct PayoutFilter<'a> {
    /// Program (required).
    pub program_id: ProgramId,
    /// Only this partner's.
    pub partner_id: Option<PartnerId>,
    /// Only this run's.
    pub payout_run_id: Option<PayoutRunId>,
    /// Only in this state.
    pub status: Option<&'a str>,
    /// Only this period's ("YYYY-MM").
    pub period: Option<&'a str>,
    /// Only in this currency.
    pub currency: Option<&'a str>,
    /// Include DELETED payouts (AIP-164; also when `status` is DELETED).
    pub show_deleted: bool,
}

/// A page of payouts in (created_at, id) order after `after`.
pub async fn list_payouts(
    executor: impl PgExecutor<'_>,
    filter: &PayoutFilter<'_>,
    after: Option<(DateTime<Utc>, PayoutId)>,
    limit: i64,
) -> Result<Vec<PayoutRow>, StoreError> {
    let (after_time, after_id) = after.unzip();
    sqlx::query_as::<_, PayoutRow>(concat!(
        "SELECT ",
        payout_columns!(),
        " FROM payouts WHERE program_id = $1 ",
        "AND ($2::uuid IS NULL OR partner_id = $2) ",
        "AND ($3::uuid IS NULL OR payout_run_id = $3) ",
        "AND ($4::text IS NULL OR status = $4) ",
        "AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6)) ",
        "AND ($8::text IS NULL OR period = $8) ",
        "AND ($9::text IS NULL OR currency = $9) ",
        "AND ($10 OR $4 = 'DELETED' OR status <> 'DELETED') ",
        "ORDER BY created_at, id LIMIT $7"
    ))
    .bind(filter.program_id)
    .bind(filter.partner_id)
    .bind(filter.payout_run_id)
    .bind(filter.status)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .bind(filter.period)
    .bind(filter.currency)
    .bind(filter.show_deleted)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// Count and Σ amount of a program's payouts per (currency, status),
/// optionally of one period; ordered by currency then status name.
pub async fn payout_stats(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    period: Option<&str>,
) -> Result<Vec<(String, String, i64, Decimal)>, StoreError> {
    sqlx::query_as::<_, (String, String, i64, Decimal)>(
        "SELECT currency, status, count(*), COALESCE(sum(amount), 0) FROM payouts \
         WHERE program_id = $1 AND ($2::text IS NULL OR period = $2) \
         GROUP BY currency, status ORDER BY currency, status",
    )
    .bind(program_id)
    .bind(period)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// Per currency, a partner's payouts by status: (currency, status, count, Σ amount).
pub async fn partner_totals(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    partner_id: PartnerId,
) -> Result<Vec<(String, String, i64, Decimal)>, StoreError> {
    sqlx::query_as::<_, (String, String, i64, Decimal)>(
        "SELECT currency, status, count(*), COALESCE(sum(amount), 0) FROM payouts \
         WHERE program_id = $1 AND partner_id = $2 GROUP BY currency, status ORDER BY currency, status",
    )
    .bind(program_id)
    .bind(partner_id)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// A partner's most recently paid payout in `currency`, if any.
pub async fn last_paid(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    partner_id: PartnerId,
    currency: &str,
) -> Result<Option<PayoutRow>, StoreError> {
    sqlx::query_as::<_, PayoutRow>(concat!(
        "SELECT ",
        payout_columns!(),
        " FROM payouts WHERE program_id = $1 AND partner_id = $2 AND currency = $3 AND status = 'PAID' ",
        "ORDER BY paid_at DESC NULLS LAST, updated_at DESC, id DESC LIMIT 1"
    ))
    .bind(program_id)
    .bind(partner_id)
    .bind(currency)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}
