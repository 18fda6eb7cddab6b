//! sqlx access to the scheme tables (seed 002): schemes, their own rates,
//! SetSchemeRates idempotency keys and partner assignments. Every rate write
//! runs in one transaction holding the program's scheme lock, so concurrent
//! writes cannot jointly break the tree's rules (DESIGN §4 "Scheme margins").

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use accrue_types::{PartnerId, ProgramId, SchemeId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::domain::{RateChange, RateKey, Sale, Scheme, SchemeBook, SchemeTree, WriteViolation};
use crate::store::StoreError;

/// First key of the per-program advisory lock that serializes scheme writes
/// (the second is the hash of the program id).
const SCHEME_LOCK_CLASS: i32 = 2002;

/// A stored scheme with its program and timestamps.
#[derive(Debug, Clone)]
pub struct StoredScheme {
    /// Program.
    pub program_id: ProgramId,
    /// The scheme and its own rates.
    pub scheme: Scheme,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its rates last changed.
    pub updated_at: DateTime<Utc>,
}

/// Why a scheme write failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemeError {
    /// A database or idempotency problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The parent (or written) scheme does not exist (NOT_FOUND).
    #[error("scheme {0} not found")]
    NotFound(SchemeId),
    /// The program already has a root (ALREADY_EXISTS `ROOT_SCHEME_EXISTS`).
    #[error("program {program_id} already has a root scheme {root_id}")]
    RootExists {
        /// Program.
        program_id: ProgramId,
        /// Its root.
        root_id: SchemeId,
    },
    /// The parent belongs to another program (FAILED_PRECONDITION `SCHEME_IN_OTHER_PROGRAM`).
    #[error("scheme {scheme_id} belongs to program {scheme_program}, not {program_id}")]
    OtherProgram {
        /// The scheme.
        scheme_id: SchemeId,
        /// Its program.
        scheme_program: ProgramId,
        /// The program asked for.
        program_id: ProgramId,
    },
    /// The write would break a rule of the tree (INVALID_ARGUMENT).
    #[error("the write breaks the scheme tree's rules")]
    Conflicts(Vec<WriteViolation>),
}

impl From<sqlx::Error> for SchemeError {
    fn from(error: sqlx::Error) -> Self {
        SchemeError::Store(StoreError::Db(error))
    }
}

const SCHEME_COLUMNS: &str = "SELECT s.id, s.program_id, s.parent_id, s.display_name, s.clearance_days, \
     s.created_at, s.updated_at, r.service_code, r.role, r.rate \
     FROM schemes s LEFT JOIN scheme_rates r ON r.scheme_id = s.id";

/// Folds joined scheme × rate rows into schemes, by id.
fn schemes_from_rows(rows: &[PgRow]) -> Result<BTreeMap<SchemeId, StoredScheme>, StoreError> {
    let mut schemes: BTreeMap<SchemeId, StoredScheme> = BTreeMap::new();
    for row in rows {
        let id: SchemeId = row.try_get("id")?;
        let stored = match schemes.entry(id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let clearance_days: i32 = row.try_get("clearance_days")?;
                entry.insert(StoredScheme {
                    program_id: row.try_get("program_id")?,
                    scheme: Scheme {
                        id,
                        parent_id: row.try_get("parent_id")?,
                        display_name: row.try_get("display_name")?,
                        clearance_days: u32::try_from(clearance_days)
                            .map_err(|_| StoreError::Corrupt(format!("scheme {id} clearance_days {clearance_days}")))?,
                        rates: BTreeMap::new(),
                    },
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }
        };
        let service_code: Option<String> = row.try_get("service_code")?;
        let role: Option<String> = row.try_get("role")?;
        let rate: Option<Decimal> = row.try_get("rate")?;
        if let (Some(service_code), Some(role), Some(rate)) = (service_code, role, rate) {
            stored.scheme.rates.insert(RateKey { service_code, role }, rate.normalize());
        }
    }
    Ok(schemes)
}

/// One scheme with its own rates, if it exists.
pub async fn load_scheme(conn: &mut PgConnection, id: SchemeId) -> Result<Option<StoredScheme>, StoreError> {
    let sql = format!("{SCHEME_COLUMNS} WHERE s.id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(conn).await?;
    Ok(schemes_from_rows(&rows)?.remove(&id))
}

/// Every scheme of a program with its own rates, in one query (nothing when
/// the program has no scheme).
pub async fn load_program(conn: &mut PgConnection, program_id: ProgramId) -> Result<Vec<StoredScheme>, StoreError> {
    let sql = format!("{SCHEME_COLUMNS} WHERE s.program_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id).fetch_all(conn).await?;
    Ok(schemes_from_rows(&rows)?.into_values().collect())
}

fn tree_of(stored: &[StoredScheme]) -> SchemeTree {
    SchemeTree::new(stored.iter().map(|stored| stored.scheme.clone()))
}

/// A program's scheme tree (empty when it has none), in one query.
pub async fn load_tree(pool: &PgPool, program_id: ProgramId) -> Result<SchemeTree, StoreError> {
    let mut conn = pool.acquire().await?;
    Ok(tree_of(&load_program(&mut conn, program_id).await?))
}

/// The settlement view of a program's schemes: one query for the tree; when
/// some sale of the batch has a scheme-managed service code, one more for
/// those sellers' assignments. A program without schemes (the Online Retail
/// replay) costs one query that returns nothing. `draft` (scheme id and
/// its rate changes, already validated: SimulateProgram's drafts, issue 16
/// item 2) is applied to the tree first, for this settlement only.
pub async fn load_book(
    pool: &PgPool,
    program_id: ProgramId,
    sales: &[&Sale],
    draft: &[(SchemeId, Vec<RateChange>)],
) -> Result<SchemeBook, StoreError> {
    let mut conn = pool.acquire().await?;
    let stored = load_program(&mut conn, program_id).await?;
    if stored.is_empty() {
        return Ok(SchemeBook::default());
    }
    let mut tree = tree_of(&stored);
    for (scheme_id, changes) in draft {
        tree.apply(*scheme_id, changes);
    }
    let managed = tree.service_codes();
    let mut sellers: Vec<PartnerId> =
        sales.iter().filter(|sale| managed.contains(&sale.service_code)).map(|sale| sale.seller.id).collect();
    if sellers.is_empty() {
        return Ok(SchemeBook::new(tree, HashMap::new()));
    }
    sellers.sort_unstable();
    sellers.dedup();
    let rows = sqlx::query(
        "SELECT partner_id, scheme_id FROM scheme_assignments WHERE program_id = $1 AND partner_id = ANY($2)",
    )
    .bind(program_id)
    .bind(&sellers)
    .fetch_all(&mut *conn)
    .await?;
    let mut assignments = HashMap::with_capacity(rows.len());
    for row in &rows {
        assignments.insert(row.try_get::<PartnerId, _>("partner_id")?, row.try_get::<SchemeId, _>("scheme_id")?);
    }
    Ok(SchemeBook::new(tree, assignments))
}

/// Takes the program's scheme lock for the rest of the transaction.
async fn lock_program(conn: &mut PgConnection, program_id: ProgramId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(SCHEME_LOCK_CLASS)
        .bind(program_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts or replaces the set rates and deletes the unset ones of a scheme.
async fn write_rates(
    conn: &mut PgConnection,
    program_id: ProgramId,
    scheme_id: SchemeId,
    changes: &[RateChange],
) -> Result<(), sqlx::Error> {
    let (mut set_codes, mut set_roles, mut set_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut unset_codes, mut unset_roles) = (Vec::new(), Vec::new());
    for change in changes {
        match change.rate {
            Some(rate) => {
                set_codes.push(change.key.service_code.as_str());
                set_roles.push(change.key.role.as_str());
                set_rates.push(rate);
            }
            None => {
                unset_codes.push(change.key.service_code.as_str());
                unset_roles.push(change.key.role.as_str());
            }
        }
    }
    if !unset_codes.is_empty() {
        sqlx::query(
            "DELETE FROM scheme_rates WHERE scheme_id = $1 AND (service_code, role) IN \
             (SELECT * FROM UNNEST($2::text[], $3::text[]))",
        )
        .bind(scheme_id)
        .bind(&unset_codes)
        .bind(&unset_roles)
        .execute(&mut *conn)
        .await?;
    }
    if !set_codes.is_empty() {
        sqlx::query(
            "INSERT INTO scheme_rates (scheme_id, program_id, service_code, role, rate) \
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::numeric[]) \
             ON CONFLICT (scheme_id, service_code, role) DO UPDATE SET rate = EXCLUDED.rate",
        )
        .bind(scheme_id)
        .bind(program_id)
        .bind(&set_codes)
        .bind(&set_roles)
        .bind(&set_rates)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A scheme to create.
#[derive(Debug)]
pub struct NewScheme<'a> {
    /// Program (known to exist).
    pub program_id: ProgramId,
    /// Parent; `None` for the root.
    pub parent_id: Option<SchemeId>,
    /// Display name.
    pub display_name: &'a str,
    /// Clearance days (0..=3650).
    pub clearance_days: u32,
    /// Initial rates (validated syntax and roles).
    pub rates: &'a [RateChange],
    /// The program's role ladder, highest first.
    pub ladder: &'a [String],
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Canonical form of the request, compared on a repeated `request_id`.
    pub fingerprint: &'a str,
}

/// Creates a scheme under the program's lock (seed 002): a repeated
/// `request_id` returns the stored scheme (another body:
/// [`StoreError::RequestIdReused`]); a second root is
/// [`SchemeError::RootExists`]; the parent must exist
/// ([`SchemeError::NotFound`]) in the same program
/// ([`SchemeError::OtherProgram`]); initial rates are validated against the
/// whole tree like SetSchemeRates ([`SchemeError::Conflicts`]). Nothing is
/// written on any error.
pub async fn create_scheme(pool: &PgPool, new: &NewScheme<'_>) -> Result<StoredScheme, SchemeError> {
    let mut tx = pool.begin().await?;
    lock_program(&mut tx, new.program_id).await?;
    if let Some(request_id) = new.request_id {
        let existing: Option<(SchemeId, Option<String>)> =
            sqlx::query_as("SELECT id, request_fingerprint FROM schemes WHERE program_id = $1 AND request_id = $2")
                .bind(new.program_id)
                .bind(request_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((id, fingerprint)) = existing {
            if fingerprint.as_deref() != Some(new.fingerprint) {
                return Err(StoreError::RequestIdReused(request_id.to_string()).into());
            }
            return load_scheme(&mut tx, id).await?.ok_or(SchemeError::NotFound(id));
        }
    }
    let stored = load_program(&mut tx, new.program_id).await?;
    let mut tree = tree_of(&stored);
    match new.parent_id {
        None => {
            if let Some(root) = tree.root() {
                return Err(SchemeError::RootExists { program_id: new.program_id, root_id: root.id });
            }
        }
        Some(parent_id) => {
            if tree.get(parent_id).is_none() {
                let parent_program: Option<ProgramId> =
                    sqlx::query_scalar("SELECT program_id FROM schemes WHERE id = $1")
                        .bind(parent_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match parent_program {
                    Some(scheme_program) => {
                        SchemeError::OtherProgram { scheme_id: parent_id, scheme_program, program_id: new.program_id }
                    }
                    None => SchemeError::NotFound(parent_id),
                });
            }
        }
    }
    let id = SchemeId::new_v7();
    tree.insert(Scheme {
        id,
        parent_id: new.parent_id,
        display_name: new.display_name.to_string(),
        clearance_days: new.clearance_days,
        rates: BTreeMap::new(),
    });
    let tree = tree.check_write(id, new.rates, new.ladder).map_err(SchemeError::Conflicts)?;
    let (created_at, updated_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO schemes (id, program_id, parent_id, display_name, clearance_days, request_id, \
         request_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at, updated_at",
    )
    .bind(id)
    .bind(new.program_id)
    .bind(new.parent_id)
    .bind(new.display_name)
    .bind(i32::try_from(new.clearance_days).map_err(|_| StoreError::Corrupt("clearance_days".into()))?)
    .bind(new.request_id)
    .bind(new.fingerprint)
    .fetch_one(&mut *tx)
    .await?;
    write_rates(&mut tx, new.program_id, id, new.rates).await?;
    tx.commit().await?;
    let scheme = tree.get(id).cloned().ok_or(SchemeError::NotFound(id))?;
    Ok(StoredScheme { program_id: new.program_id, scheme, created_at, updated_at })
}

/// A rate write to an existing scheme.
#[derive(Debug)]
pub struct RatesWrite<'a> {
    /// The scheme (known to exist).
    pub scheme_id: SchemeId,
    /// Its program.
    pub program_id: ProgramId,
    /// The changes (validated syntax and roles).
    pub changes: &'a [RateChange],
    /// The program's role ladder, highest first.
    pub ladder: &'a [String],
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Canonical form of the request.
    pub fingerprint: &'a str,
}

/// Sets and unsets a scheme's rates in one transaction under the program's
/// lock: the whole program tree is loaded, the changes applied in memory and
/// checked ([`SchemeTree::check_write`]); any conflict is
/// [`SchemeError::Conflicts`] and nothing is written. A repeated `request_id`
/// returns the scheme as it is now without writing; with another body it is
/// [`StoreError::RequestIdReused`].
pub async fn set_rates(pool: &PgPool, write: &RatesWrite<'_>) -> Result<StoredScheme, SchemeError> {
    let mut tx = pool.begin().await?;
    lock_program(&mut tx, write.program_id).await?;
    if let Some(request_id) = write.request_id {
        let fingerprint: Option<String> = sqlx::query_scalar(
            "SELECT request_fingerprint FROM scheme_rate_requests WHERE program_id = $1 AND request_id = $2",
        )
        .bind(write.program_id)
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(fingerprint) = fingerprint {
            if fingerprint != write.fingerprint {
                return Err(StoreError::RequestIdReused(request_id.to_string()).into());
            }
            return load_scheme(&mut tx, write.scheme_id).await?.ok_or(SchemeError::NotFound(write.scheme_id));
        }
    }
    let stored = load_program(&mut tx, write.program_id).await?;
    let Some(created_at) =
        stored.iter().find(|stored| stored.scheme.id == write.scheme_id).map(|stored| stored.created_at)
    else {
        return Err(SchemeError::NotFound(write.scheme_id));
    };
    let tree =
        tree_of(&stored).check_write(write.scheme_id, write.changes, write.ladder).map_err(SchemeError::Conflicts)?;
    write_rates(&mut tx, write.program_id, write.scheme_id, write.changes).await?;
    let updated_at: DateTime<Utc> =
        sqlx::query_scalar("UPDATE schemes SET updated_at = now() WHERE id = $1 RETURNING updated_at")
            .bind(write.scheme_id)
            .fetch_one(&mut *tx)
            .await?;
    if let Some(request_id) = write.request_id {
        sqlx::query(
            "INSERT INTO scheme_rate_requests (program_id, request_id, scheme_id, request_fingerprint) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(write.program_id)
        .bind(request_id)
        .bind(write.scheme_id)
        .bind(write.fingerprint)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let scheme = tree.get(write.scheme_id).cloned().ok_or(SchemeError::NotFound(write.scheme_id))?;
    Ok(StoredScheme { program_id: write.program_id, scheme, created_at, updated_at })
}

/// Assigns a partner to a scheme (replacing any earlier assignment); returns
/// when it was assigned.
pub async fn assign(
    pool: &PgPool,
    program_id: ProgramId,
    partner_id: PartnerId,
    scheme_id: SchemeId,
) -> Result<DateTime<Utc>, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO scheme_assignments (partner_id, program_id, scheme_id) VALUES ($1, $2, $3) \
         ON CONFLICT (partner_id) DO UPDATE SET program_id = EXCLUDED.program_id, scheme_id = EXCLUDED.scheme_id, \
         updated_at = now() RETURNING updated_at",
    )
    .bind(partner_id)
    .bind(program_id)
    .bind(scheme_id)
    .fetch_one(pool)
    .await?)
}

/// The scheme a partner is assigned to, if any.
pub async fn assignment(pool: &PgPool, partner_id: PartnerId) -> Result<Option<SchemeId>, StoreError> {
    Ok(sqlx::query_scalar("SELECT scheme_id FROM scheme_assignments WHERE partner_id = $1")
        .bind(partner_id)
        .fetch_optional(pool)
        .await?)
}

/// [`load_scheme`] on a pooled connection.
pub async fn get_scheme(pool: &PgPool, id: SchemeId) -> Result<Option<StoredScheme>, StoreError> {
    let mut conn = pool.acquire().await?;
    load_scheme(&mut conn, id).await
}

/// [`load_program`] on a pooled connection.
pub async fn program_schemes(pool: &PgPool, program_id: ProgramId) -> Result<Vec<StoredScheme>, StoreError> {
    let mut conn = pool.acquire().await?;
    load_program(&mut conn, program_id).await
}
