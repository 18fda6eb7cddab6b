//! Partner payout settings (issue 12 item 4).

use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgExecutor, PgPool};

use super::StoreError;

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
