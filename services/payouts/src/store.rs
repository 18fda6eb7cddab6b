//! sqlx access to the payouts schema (runtime queries; the connection's
//! search_path is `payouts`).

use accrue_types::{PartnerId, PayoutId, PayoutRunId, ProgramId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool};

pub(crate) use accrue_kit::error::StoreError;

use crate::domain::CarriedForward;
use crate::domain::status::{CREATED_FROM, PayoutStatus};

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
    let created: Vec<PayoutId> = sqlx::query_scalar(
        "INSERT INTO payouts (id, payout_run_id, program_id, partner_id, currency, amount, status, period, entry_count) \
         SELECT p.id, $5, $6, p.partner_id, $7, p.amount, $8, $9, p.entry_count \
         FROM unnest($1::uuid[], $2::uuid[], $3::numeric[], $4::bigint[]) AS p(id, partner_id, amount, entry_count) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
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
    Ok(created.len() as u64)
}

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
/// (UNSPECIFIED → PENDING_APPROVAL by `created_by`) in one transaction.
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
    tx.commit().await?;
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

/// A partner's stored payout settings.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingsRow {
    /// Partner.
    pub partner_id: PartnerId,
    /// ISO 4217 code of `minimum_amount`.
    pub minimum_currency: Option<String>,
    /// The partner's own minimum.
    pub minimum_amount: Option<Decimal>,
    /// Carry the balance forward.
    pub hold: bool,
    /// Payout method label.
    pub payout_method: String,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who changed them.
    pub updated_by: String,
}

/// The settings of `partners` in `program_id` that were ever set.
pub async fn settings_of(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    partners: &[PartnerId],
) -> Result<Vec<SettingsRow>, StoreError> {
    sqlx::query_as::<_, SettingsRow>(
        "SELECT partner_id, minimum_currency, minimum_amount, hold, payout_method, updated_at, updated_by \
         FROM partner_payout_settings WHERE program_id = $1 AND partner_id = ANY($2::uuid[])",
    )
    .bind(program_id)
    .bind(partners)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// Stores a partner's settings (insert or replace); the same settings again
/// change nothing (not even `updated_at`).
#[allow(clippy::too_many_arguments)]
pub async fn put_settings(
    pool: &PgPool,
    program_id: ProgramId,
    partner_id: PartnerId,
    minimum: Option<(&str, Decimal)>,
    hold: bool,
    payout_method: &str,
    actor: &str,
) -> Result<SettingsRow, StoreError> {
    let (currency, amount) = minimum.unzip();
    let mut conn = pool.acquire().await?;
    let written = sqlx::query_as::<_, SettingsRow>(
        "INSERT INTO partner_payout_settings AS s \
             (program_id, partner_id, minimum_currency, minimum_amount, hold, payout_method, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (program_id, partner_id) DO UPDATE SET minimum_currency = EXCLUDED.minimum_currency, \
             minimum_amount = EXCLUDED.minimum_amount, hold = EXCLUDED.hold, \
             payout_method = EXCLUDED.payout_method, updated_by = EXCLUDED.updated_by, \
             updated_at = clock_timestamp() \
         WHERE (s.minimum_currency, s.minimum_amount, s.hold, s.payout_method) IS DISTINCT FROM \
               (EXCLUDED.minimum_currency, EXCLUDED.minimum_amount, EXCLUDED.hold, EXCLUDED.payout_method) \
         RETURNING partner_id, minimum_currency, minimum_amount, hold, payout_method, updated_at, updated_by",
    )
    .bind(program_id)
    .bind(partner_id)
    .bind(currency)
    .bind(amount)
    .bind(hold)
    .bind(payout_method)
    .bind(actor)
    .fetch_optional(&mut *conn)
    .await?;
    match written {
        Some(row) => Ok(row),
        None => settings_of(&mut *conn, program_id, &[partner_id])
            .await?
            .pop()
            .ok_or_else(|| StoreError(sqlx::Error::RowNotFound)),
    }
}
