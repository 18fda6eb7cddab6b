//! sqlx access to the commission schema: agreements, their immutable versions
//! and override plans. Runtime queries only (no build-time database).

use accrue_types::{AgreementId, AgreementVersionId, PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};

use crate::domain::{
    AgreementRules, AgreementVersion, OverrideBasis, OverrideLevel, OverrideMode, OverridePlan, OverridePlans,
    Qualification,
};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (UNAVAILABLE when unreachable, else INTERNAL).
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A stored row does not decode (INTERNAL).
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// The `request_id` was used before with a different body (ALREADY_EXISTS).
    #[error("request_id {0:?} was already used with a different request")]
    RequestIdReused(String),
}

impl From<StoreError> for tonic::Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Db(error) => accrue_kit::error::db_error(error),
            StoreError::Corrupt(message) => accrue_kit::internal(message),
            StoreError::RequestIdReused(_) => accrue_kit::error::already_exists("REQUEST_ID_REUSED", error.to_string()),
        }
    }
}

/// A stored agreement version with its scope and creation time.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// Program.
    pub program_id: ProgramId,
    /// The version as the calculation sees it.
    pub version: AgreementVersion,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A version to insert.
#[derive(Debug)]
pub struct NewVersion<'a> {
    /// Program.
    pub program_id: ProgramId,
    /// Partner scope; `None` for the program default.
    pub partner_id: Option<PartnerId>,
    /// When it takes force (microsecond precision).
    pub effective_from: DateTime<Utc>,
    /// Validated rules.
    pub rules: &'a AgreementRules,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Canonical form of the request, compared on a repeated `request_id`.
    pub fingerprint: &'a str,
}

const VERSION_COLUMNS: &str = "SELECT v.id, v.agreement_id, v.program_id, a.partner_id, v.version, v.effective_from, \
     v.rules, v.created_at, v.request_fingerprint \
     FROM agreement_versions v JOIN agreements a ON a.id = v.agreement_id";

fn version_from_row(row: &PgRow) -> Result<(StoredVersion, Option<String>), sqlx::Error> {
    let Json(rules): Json<AgreementRules> = row.try_get("rules")?;
    Ok((
        StoredVersion {
            program_id: row.try_get("program_id")?,
            version: AgreementVersion {
                id: row.try_get("id")?,
                agreement_id: row.try_get("agreement_id")?,
                partner_id: row.try_get("partner_id")?,
                version: row.try_get("version")?,
                effective_from: row.try_get("effective_from")?,
                rules,
            },
            created_at: row.try_get("created_at")?,
        },
        row.try_get("request_fingerprint")?,
    ))
}

async fn find_by_request(
    conn: &mut PgConnection,
    program_id: ProgramId,
    request_id: &str,
) -> Result<Option<(StoredVersion, Option<String>)>, StoreError> {
    let sql = format!("{VERSION_COLUMNS} WHERE v.program_id = $1 AND v.request_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).bind(request_id).fetch_optional(conn).await?;
    Ok(row.as_ref().map(version_from_row).transpose()?)
}

async fn try_create(pool: &PgPool, new: &NewVersion<'_>) -> Result<StoredVersion, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(request_id) = new.request_id
        && let Some((stored, fingerprint)) = find_by_request(&mut tx, new.program_id, request_id).await?
    {
        return if fingerprint.as_deref() == Some(new.fingerprint) {
            Ok(stored)
        } else {
            Err(StoreError::RequestIdReused(request_id.to_string()))
        };
    }
    sqlx::query(
        "INSERT INTO agreements (id, program_id, partner_id) VALUES ($1, $2, $3) \
         ON CONFLICT ON CONSTRAINT agreements_scope_key DO NOTHING",
    )
    .bind(AgreementId::new_v7())
    .bind(new.program_id)
    .bind(new.partner_id)
    .execute(&mut *tx)
    .await?;
    // Locking the agreement row serializes version numbering per scope.
    let agreement_id: AgreementId = sqlx::query_scalar(
        "SELECT id FROM agreements WHERE program_id = $1 AND partner_id IS NOT DISTINCT FROM $2 FOR UPDATE",
    )
    .bind(new.program_id)
    .bind(new.partner_id)
    .fetch_one(&mut *tx)
    .await?;
    let version: i32 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM agreement_versions WHERE agreement_id = $1")
            .bind(agreement_id)
            .fetch_one(&mut *tx)
            .await?;
    let id = AgreementVersionId::new_v7();
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO agreement_versions \
         (id, agreement_id, program_id, version, effective_from, rules, request_id, request_fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
    )
    .bind(id)
    .bind(agreement_id)
    .bind(new.program_id)
    .bind(version)
    .bind(new.effective_from)
    .bind(Json(new.rules))
    .bind(new.request_id)
    .bind(new.fingerprint)
    .fetch_one(&mut *tx)
    .await?;
    let stored = StoredVersion {
        program_id: new.program_id,
        version: AgreementVersion {
            id,
            agreement_id,
            partner_id: new.partner_id,
            version,
            effective_from: new.effective_from,
            rules: new.rules.clone(),
        },
        created_at,
    };
    // agreement.version_created, in the transaction that creates it.
    accrue_kit::events::insert(&mut tx, &[crate::events::version_created(&stored)]).await.map_err(|error| error.0)?;
    tx.commit().await?;
    Ok(stored)
}

/// Inserts the next version (max + 1) of the scope's agreement, creating the
/// agreement on first use. A repeated `request_id` with the same fingerprint
/// returns the stored version; with another fingerprint it is
/// [`StoreError::RequestIdReused`].
pub async fn create_agreement_version(pool: &PgPool, new: &NewVersion<'_>) -> Result<StoredVersion, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_create(pool, new).await {
            // A concurrent call with the same request_id won: re-read it.
            Err(StoreError::Db(error)) if attempt < 3 && accrue_kit::error::is_unique_violation(&error) => continue,
            other => return other,
        }
    }
}

/// Versions of one scope's agreement with `version > after`, oldest first.
pub async fn list_versions(
    pool: &PgPool,
    program_id: ProgramId,
    partner_id: Option<PartnerId>,
    after: i32,
    limit: i64,
) -> Result<Vec<StoredVersion>, StoreError> {
    let sql = format!(
        "{VERSION_COLUMNS} WHERE a.program_id = $1 AND a.partner_id IS NOT DISTINCT FROM $2 AND v.version > $3 \
         ORDER BY v.version LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(program_id)
        .bind(partner_id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|row| version_from_row(row).map(|(stored, _)| stored).map_err(StoreError::from)).collect()
}

/// Every version of the program default's agreement and of the agreements of
/// `partners`, in one query.
pub async fn load_versions(
    pool: &PgPool,
    program_id: ProgramId,
    partners: &[PartnerId],
) -> Result<Vec<AgreementVersion>, StoreError> {
    let sql = format!(
        "{VERSION_COLUMNS} WHERE a.program_id = $1 AND (a.partner_id IS NULL OR a.partner_id = ANY($2)) \
         ORDER BY v.agreement_id, v.version"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).bind(partners).fetch_all(pool).await?;
    rows.iter().map(|row| version_from_row(row).map(|(stored, _)| stored.version).map_err(StoreError::from)).collect()
}

/// Every version of the program default's agreement and, when `partner_id`
/// is set, of that partner's agreement, with scope and creation time (what
/// GetAgreementInForce chooses from), oldest agreement first.
pub async fn scope_versions(
    pool: &PgPool,
    program_id: ProgramId,
    partner_id: Option<PartnerId>,
) -> Result<Vec<StoredVersion>, StoreError> {
    let sql = format!(
        "{VERSION_COLUMNS} WHERE a.program_id = $1 AND (a.partner_id IS NULL OR a.partner_id = $2) \
         ORDER BY v.agreement_id, v.version"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).bind(partner_id).fetch_all(pool).await?;
    rows.iter().map(|row| version_from_row(row).map(|(stored, _)| stored).map_err(StoreError::from)).collect()
}

/// A stored override plan.
#[derive(Debug, Clone)]
pub struct StoredPlan {
    /// Upline partner; `None` for the program's plan.
    pub partner_id: Option<PartnerId>,
    /// The plan.
    pub plan: OverridePlan,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

fn plan_from_row(row: &PgRow) -> Result<(StoredPlan, Option<String>, Option<String>), StoreError> {
    let mode: String = row.try_get("mode")?;
    let basis: String = row.try_get("basis")?;
    let Json(levels): Json<Vec<OverrideLevel>> = row.try_get("levels")?;
    let qualification: Option<Json<Qualification>> = row.try_get("qualification")?;
    let plan = OverridePlan {
        qualification: qualification.map(|Json(q)| q),
        mode: OverrideMode::from_name(&mode).ok_or_else(|| StoreError::Corrupt(format!("override mode {mode:?}")))?,
        basis: OverrideBasis::from_name(&basis)
            .ok_or_else(|| StoreError::Corrupt(format!("override basis {basis:?}")))?,
        levels,
    };
    Ok((
        StoredPlan { partner_id: row.try_get("partner_id")?, plan, updated_at: row.try_get("updated_at")? },
        row.try_get("request_id")?,
        row.try_get("request_fingerprint")?,
    ))
}

/// Replaces the plan of a scope (program, or program + partner). Repeating the
/// last call's `request_id` with the same body returns the stored plan
/// unchanged; with another body it is [`StoreError::RequestIdReused`].
pub async fn set_override_plan(
    pool: &PgPool,
    program_id: ProgramId,
    partner_id: Option<PartnerId>,
    plan: &OverridePlan,
    request_id: Option<&str>,
    fingerprint: &str,
) -> Result<StoredPlan, StoreError> {
    let mut tx = pool.begin().await?;
    let existing = sqlx::query(
        "SELECT partner_id, mode, basis, levels, qualification, request_id, request_fingerprint, updated_at \
         FROM override_plans \
         WHERE program_id = $1 AND partner_id IS NOT DISTINCT FROM $2 FOR UPDATE",
    )
    .bind(program_id)
    .bind(partner_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let (Some(row), Some(request_id)) = (existing, request_id) {
        let (stored, stored_request, stored_fingerprint) = plan_from_row(&row)?;
        if stored_request.as_deref() == Some(request_id) {
            return if stored_fingerprint.as_deref() == Some(fingerprint) {
                Ok(stored)
            } else {
                Err(StoreError::RequestIdReused(request_id.to_string()))
            };
        }
    }
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO override_plans (program_id, partner_id, mode, basis, levels, request_id, request_fingerprint, \
         qualification) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT ON CONSTRAINT override_plans_scope_key DO UPDATE SET mode = EXCLUDED.mode, \
         basis = EXCLUDED.basis, levels = EXCLUDED.levels, qualification = EXCLUDED.qualification, \
         request_id = EXCLUDED.request_id, \
         request_fingerprint = EXCLUDED.request_fingerprint, updated_at = now() \
         RETURNING updated_at",
    )
    .bind(program_id)
    .bind(partner_id)
    .bind(plan.mode.as_str())
    .bind(plan.basis.as_str())
    .bind(Json(&plan.levels))
    .bind(request_id)
    .bind(fingerprint)
    .bind(plan.qualification.as_ref().map(Json))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StoredPlan { partner_id, plan: plan.clone(), updated_at })
}

/// The program's plan and the plans of `partners`, in one query.
pub async fn load_plans(
    pool: &PgPool,
    program_id: ProgramId,
    partners: &[PartnerId],
) -> Result<OverridePlans, StoreError> {
    let rows = sqlx::query(
        "SELECT partner_id, mode, basis, levels, qualification, request_id, request_fingerprint, updated_at \
         FROM override_plans \
         WHERE program_id = $1 AND (partner_id IS NULL OR partner_id = ANY($2))",
    )
    .bind(program_id)
    .bind(partners)
    .fetch_all(pool)
    .await?;
    let mut plans = OverridePlans::default();
    for row in &rows {
        let (stored, _, _) = plan_from_row(row)?;
        match stored.partner_id {
            None => plans.program = Some(stored.plan),
            Some(partner) => {
                plans.partners.insert(partner, stored.plan);
            }
        }
    }
    Ok(plans)
}
