//! sqlx access to the hierarchy schema (runtime queries; the connection's
//! search_path is `hierarchy`).

use accrue_types::{PartnerId, ProgramId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgExecutor};

pub use accrue_kit::error::StoreError;

use crate::domain::ProgramSpec;

/// How many descendants one `UPDATE` statement of a subtree move rewrites.
pub const REWRITE_BATCH: i64 = 500;

macro_rules! program_columns {
    () => {
        "id, display_name, default_currency, rounding_mode, override_depth_cap, compression_enabled, \
         auto_approve_cleared, minimum_payout, role_ladder, non_transacting_roles, max_tree_depth, created_at, \
         updated_at, request_hash, require_second_approver"
    };
}

macro_rules! partner_columns {
    () => {
        "id, program_id, display_name, external_id, status, role, parent_id, ancestor_ids, depth, created_at, \
         request_hash"
    };
}

/// A stored program.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProgramRow {
    /// Id.
    pub id: ProgramId,
    /// Display name.
    pub display_name: String,
    /// ISO 4217 code.
    pub default_currency: String,
    /// "HALF_AWAY_FROM_ZERO" or "HALF_EVEN".
    pub rounding_mode: String,
    /// 1..=32.
    pub override_depth_cap: i32,
    /// Dynamic compression.
    pub compression_enabled: bool,
    /// Approve cleared entries at once.
    pub auto_approve_cleared: bool,
    /// Maker-checker for payout approvals.
    pub require_second_approver: bool,
    /// Minimum payout in the default currency.
    pub minimum_payout: Decimal,
    /// Role ladder, highest first.
    pub role_ladder: Vec<String>,
    /// Roles whose partners may not transact (each on the ladder).
    pub non_transacting_roles: Vec<String>,
    /// Deepest depth a partner may sit at, 1..=1024.
    pub max_tree_depth: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last settings change (the creation time until the first update).
    pub updated_at: DateTime<Utc>,
    /// Fingerprint of the CreateProgram body that made it (with a request id).
    pub request_hash: Option<Vec<u8>>,
}

/// One version of a program's settlement settings (`program_settings_versions`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SettingsVersionRow {
    /// 1, 2, … per program.
    pub version: i32,
    /// When it took effect.
    pub effective_from: DateTime<Utc>,
    /// "HALF_AWAY_FROM_ZERO" or "HALF_EVEN".
    pub rounding_mode: String,
    /// 1..=32.
    pub override_depth_cap: i32,
    /// Dynamic compression.
    pub compression_enabled: bool,
}

/// A stored partner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartnerRow {
    /// Id.
    pub id: PartnerId,
    /// Program.
    pub program_id: ProgramId,
    /// Display name.
    pub display_name: String,
    /// Caller's id.
    pub external_id: Option<String>,
    /// "ACTIVE", "SUSPENDED" or "TERMINATED".
    pub status: String,
    /// Role on the ladder.
    pub role: Option<String>,
    /// Direct upline.
    pub parent_id: Option<PartnerId>,
    /// Ancestors, nearest first.
    pub ancestor_ids: Vec<PartnerId>,
    /// Depth (root 0).
    pub depth: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Fingerprint of the CreatePartner body that made it (with a request id).
    pub request_hash: Option<Vec<u8>>,
}

/// Inserts a program with its settings version 1 (one statement, so both or
/// neither); `None` when a program with the same `request_id` already exists
/// (the caller re-reads it).
pub async fn insert_program(
    executor: impl PgExecutor<'_>,
    id: ProgramId,
    spec: &ProgramSpec,
    request_hash: &[u8],
) -> Result<Option<ProgramRow>, StoreError> {
    sqlx::query_as::<_, ProgramRow>(concat!(
        "WITH p AS (INSERT INTO programs (id, display_name, default_currency, rounding_mode, override_depth_cap, ",
        "compression_enabled, auto_approve_cleared, minimum_payout, role_ladder, non_transacting_roles, request_id, ",
        "max_tree_depth, updated_at, request_hash, require_second_approver) ",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, clock_timestamp(), $13, $14) ",
        "ON CONFLICT (request_id) DO NOTHING RETURNING ",
        program_columns!(),
        "), v AS (INSERT INTO program_settings_versions (program_id, version, effective_from, rounding_mode, ",
        "override_depth_cap, compression_enabled) ",
        "SELECT id, 1, created_at, rounding_mode, override_depth_cap, compression_enabled FROM p) ",
        "SELECT * FROM p"
    ))
    .bind(id)
    .bind(&spec.display_name)
    .bind(spec.default_currency.code())
    .bind(spec.rounding_mode.as_str())
    .bind(spec.override_depth_cap)
    .bind(spec.compression_enabled)
    .bind(spec.auto_approve_cleared)
    .bind(spec.minimum_payout)
    .bind(&spec.role_ladder)
    .bind(&spec.non_transacting_roles)
    .bind(spec.request_id.as_deref())
    .bind(spec.max_tree_depth)
    .bind(request_hash)
    .bind(spec.require_second_approver)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// A program's settlement settings over time, oldest first.
pub async fn settings_history(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
) -> Result<Vec<SettingsVersionRow>, StoreError> {
    sqlx::query_as::<_, SettingsVersionRow>(
        "SELECT version, effective_from, rounding_mode, override_depth_cap, compression_enabled \
         FROM program_settings_versions WHERE program_id = $1 ORDER BY version",
    )
    .bind(program_id)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// Locks a program row for the rest of the transaction (UpdateProgram).
pub async fn lock_program(conn: &mut PgConnection, id: ProgramId) -> Result<Option<ProgramRow>, StoreError> {
    sqlx::query_as::<_, ProgramRow>(concat!("SELECT ", program_columns!(), " FROM programs WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(StoreError::from)
}

/// The request hash an UpdateProgram key was first used with, if any.
pub async fn program_update_hash(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    request_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    sqlx::query_scalar("SELECT request_hash FROM program_updates WHERE program_id = $1 AND request_id = $2")
        .bind(program_id)
        .bind(request_id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::from)
}

/// Depth of a program's deepest partner (0 for an empty program).
pub async fn deepest_partner(executor: impl PgExecutor<'_>, program_id: ProgramId) -> Result<i32, StoreError> {
    let deepest: Option<i32> = sqlx::query_scalar("SELECT MAX(depth) FROM partners WHERE program_id = $1")
        .bind(program_id)
        .fetch_one(executor)
        .await?;
    Ok(deepest.unwrap_or(0))
}

/// Writes a program's new settings (the caller holds [`lock_program`]);
/// when `new_version` is set, also appends that settings version effective
/// now, and when `key` is set records `(request_id, request_hash)`.
pub async fn update_program(
    conn: &mut PgConnection,
    row: &ProgramRow,
    new_version: Option<i32>,
    key: Option<(&str, &[u8])>,
) -> Result<ProgramRow, StoreError> {
    let updated = sqlx::query_as::<_, ProgramRow>(concat!(
        "UPDATE programs SET display_name = $2, rounding_mode = $3, override_depth_cap = $4, max_tree_depth = $5, ",
        "compression_enabled = $6, non_transacting_roles = $7, auto_approve_cleared = $8, ",
        "require_second_approver = $9, ",
        "updated_at = clock_timestamp() WHERE id = $1 RETURNING ",
        program_columns!()
    ))
    .bind(row.id)
    .bind(&row.display_name)
    .bind(&row.rounding_mode)
    .bind(row.override_depth_cap)
    .bind(row.max_tree_depth)
    .bind(row.compression_enabled)
    .bind(&row.non_transacting_roles)
    .bind(row.auto_approve_cleared)
    .bind(row.require_second_approver)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(version) = new_version {
        sqlx::query(
            "INSERT INTO program_settings_versions (program_id, version, effective_from, rounding_mode, \
             override_depth_cap, compression_enabled) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(updated.id)
        .bind(version)
        .bind(updated.updated_at)
        .bind(&updated.rounding_mode)
        .bind(updated.override_depth_cap)
        .bind(updated.compression_enabled)
        .execute(&mut *conn)
        .await?;
    }
    if let Some((request_id, request_hash)) = key {
        sqlx::query("INSERT INTO program_updates (program_id, request_id, request_hash) VALUES ($1, $2, $3)")
            .bind(updated.id)
            .bind(request_id)
            .bind(request_hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(updated)
}

/// The program created under `request_id`, if any.
pub async fn program_by_request_id(
    executor: impl PgExecutor<'_>,
    request_id: &str,
) -> Result<Option<ProgramRow>, StoreError> {
    sqlx::query_as::<_, ProgramRow>(concat!("SELECT ", program_columns!(), " FROM programs WHERE request_id = $1"))
        .bind(request_id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::from)
}

/// A program by id.
pub async fn get_program(executor: impl PgExecutor<'_>, id: ProgramId) -> Result<Option<ProgramRow>, StoreError> {
    sqlx::query_as::<_, ProgramRow>(concat!("SELECT ", program_columns!(), " FROM programs WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::from)
}

/// A program with its settlement settings over time (oldest first), in one
/// statement: what GetProgram and GetUplines answer with, one round trip
/// instead of [`get_program`] then [`settings_history`] (issue 15: GetUplines
/// runs for every settlement batch and every batch of recorded sales).
pub async fn get_program_with_history(
    executor: impl PgExecutor<'_>,
    id: ProgramId,
) -> Result<Option<(ProgramRow, Vec<SettingsVersionRow>)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Joined {
        #[sqlx(flatten)]
        program: ProgramRow,
        h_versions: Vec<i32>,
        h_effective: Vec<DateTime<Utc>>,
        h_rounding: Vec<String>,
        h_depth_caps: Vec<i32>,
        h_compression: Vec<bool>,
    }
    let joined = sqlx::query_as::<_, Joined>(concat!(
        "SELECT ",
        program_columns!(),
        ", h.* FROM programs, LATERAL (
             SELECT coalesce(array_agg(version ORDER BY version), '{}') AS h_versions,
                    coalesce(array_agg(effective_from ORDER BY version), '{}') AS h_effective,
                    coalesce(array_agg(rounding_mode ORDER BY version), '{}') AS h_rounding,
                    coalesce(array_agg(override_depth_cap ORDER BY version), '{}') AS h_depth_caps,
                    coalesce(array_agg(compression_enabled ORDER BY version), '{}') AS h_compression
             FROM program_settings_versions WHERE program_id = programs.id) h
         WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await?;
    Ok(joined.map(|j| {
        let history = j
            .h_versions
            .into_iter()
            .zip(j.h_effective)
            .zip(j.h_rounding)
            .zip(j.h_depth_caps)
            .zip(j.h_compression)
            .map(|((((version, effective_from), rounding_mode), override_depth_cap), compression_enabled)| {
                SettingsVersionRow { version, effective_from, rounding_mode, override_depth_cap, compression_enabled }
            })
            .collect();
        (j.program, history)
    }))
}

/// Takes the program's tree lock for the rest of the transaction: exclusive
/// for moves (SetParent), shared for inserts under a parent, so a move never
/// races another move or a new child reading a path being rewritten.
pub async fn lock_program_tree(
    conn: &mut PgConnection,
    program_id: ProgramId,
    exclusive: bool,
) -> Result<(), StoreError> {
    let sql = if exclusive {
        "SELECT pg_advisory_xact_lock(hashtextextended('accrue.hierarchy.tree:' || $1::text, 0))"
    } else {
        "SELECT pg_advisory_xact_lock_shared(hashtextextended('accrue.hierarchy.tree:' || $1::text, 0))"
    };
    sqlx::query(sql).bind(program_id).execute(conn).await?;
    Ok(())
}

/// A partner by id.
pub async fn get_partner(executor: impl PgExecutor<'_>, id: PartnerId) -> Result<Option<PartnerRow>, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!("SELECT ", partner_columns!(), " FROM partners WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::from)
}

/// The partner created in `program_id` under `request_id`, if any.
pub async fn partner_by_request_id(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    request_id: &str,
) -> Result<Option<PartnerRow>, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!(
        "SELECT ",
        partner_columns!(),
        " FROM partners WHERE program_id = $1 AND request_id = $2"
    ))
    .bind(program_id)
    .bind(request_id)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// What a new partner row holds.
#[derive(Debug, Clone)]
pub struct PartnerInsert<'a> {
    /// Id.
    pub id: PartnerId,
    /// Program.
    pub program_id: ProgramId,
    /// Display name.
    pub display_name: &'a str,
    /// Caller's id.
    pub external_id: Option<&'a str>,
    /// Role.
    pub role: Option<&'a str>,
    /// Parent.
    pub parent_id: Option<PartnerId>,
    /// Ancestors, nearest first.
    pub ancestor_ids: &'a [PartnerId],
    /// Depth.
    pub depth: i32,
    /// Idempotency key.
    pub request_id: Option<&'a str>,
    /// Fingerprint of the request body.
    pub request_hash: &'a [u8],
}

/// Inserts an ACTIVE partner; `None` when the program already has a partner
/// with the same `request_id`. A taken `external_id` is a unique violation on
/// [`EXTERNAL_ID_CONSTRAINT`].
pub async fn insert_partner(
    executor: impl PgExecutor<'_>,
    partner: &PartnerInsert<'_>,
) -> Result<Option<PartnerRow>, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!(
        "INSERT INTO partners (id, program_id, display_name, external_id, status, role, parent_id, ancestor_ids, ",
        "depth, request_id, request_hash) VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $6, $7, $8, $9, $10) ",
        "ON CONFLICT ON CONSTRAINT partners_request_id_key DO NOTHING RETURNING ",
        partner_columns!()
    ))
    .bind(partner.id)
    .bind(partner.program_id)
    .bind(partner.display_name)
    .bind(partner.external_id)
    .bind(partner.role)
    .bind(partner.parent_id)
    .bind(partner.ancestor_ids)
    .bind(partner.depth)
    .bind(partner.request_id)
    .bind(partner.request_hash)
    .fetch_optional(executor)
    .await
    .map_err(StoreError::from)
}

/// The unique constraint on (program_id, external_id).
pub const EXTERNAL_ID_CONSTRAINT: &str = "partners_external_id_key";

/// A page of a program's partners in (created_at, id) order after `after`.
pub async fn list_partners(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    status: Option<&str>,
    after: Option<(DateTime<Utc>, PartnerId)>,
    limit: i64,
) -> Result<Vec<PartnerRow>, StoreError> {
    let (after_time, after_id) = after.unzip();
    sqlx::query_as::<_, PartnerRow>(concat!(
        "SELECT ",
        partner_columns!(),
        " FROM partners WHERE program_id = $1 AND ($2::text IS NULL OR status = $2) ",
        "AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4)) ",
        "ORDER BY created_at, id LIMIT $5"
    ))
    .bind(program_id)
    .bind(status)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// Locks a partner row for update.
pub async fn lock_partner(conn: &mut PgConnection, id: PartnerId) -> Result<Option<PartnerRow>, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!("SELECT ", partner_columns!(), " FROM partners WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(StoreError::from)
}

/// Sets a partner's status and appends the audit event, in the caller's
/// transaction.
pub async fn update_status(
    conn: &mut PgConnection,
    id: PartnerId,
    from: &str,
    to: &str,
    reason: &str,
) -> Result<PartnerRow, StoreError> {
    let row = sqlx::query_as::<_, PartnerRow>(concat!(
        "UPDATE partners SET status = $2 WHERE id = $1 RETURNING ",
        partner_columns!()
    ))
    .bind(id)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO partner_status_events (partner_id, from_status, to_status, reason) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(row)
}

/// Height of a partner's subtree below it (0 for a leaf) and its number of
/// descendants.
pub async fn subtree_stats(
    executor: impl PgExecutor<'_>,
    id: PartnerId,
    own_depth: i32,
) -> Result<(i32, i64), StoreError> {
    let (deepest, count): (Option<i32>, i64) =
        sqlx::query_as("SELECT MAX(depth), COUNT(*) FROM partners WHERE ancestor_ids @> ARRAY[$1]::uuid[]")
            .bind(id)
            .fetch_one(executor)
            .await?;
    Ok((deepest.map_or(0, |deepest| deepest - own_depth), count))
}

/// Sets a partner's parent, path and depth.
pub async fn set_placement(
    executor: impl PgExecutor<'_>,
    id: PartnerId,
    parent_id: Option<PartnerId>,
    ancestor_ids: &[PartnerId],
    depth: i32,
) -> Result<PartnerRow, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!(
        "UPDATE partners SET parent_id = $2, ancestor_ids = $3, depth = $4 WHERE id = $1 RETURNING ",
        partner_columns!()
    ))
    .bind(id)
    .bind(parent_id)
    .bind(ancestor_ids)
    .bind(depth)
    .fetch_one(executor)
    .await
    .map_err(StoreError::from)
}

/// Rewrites one batch (at most `limit`) of `moved`'s descendants with id
/// greater than `after`, applying
/// [`crate::domain::tree::rewrite_descendant_path`]: the path up to and
/// including `moved` is kept and followed by `moved_ancestors`; depth is the
/// position of `moved` in the old path plus `moved_depth`. Returns the ids
/// rewritten, ascending.
pub async fn rewrite_descendants_batch(
    executor: impl PgExecutor<'_>,
    moved: PartnerId,
    moved_ancestors: &[PartnerId],
    moved_depth: i32,
    after: PartnerId,
    limit: i64,
) -> Result<Vec<PartnerId>, StoreError> {
    let mut ids: Vec<PartnerId> = sqlx::query_scalar(
        "WITH batch AS ( \
             SELECT id FROM partners WHERE ancestor_ids @> ARRAY[$1]::uuid[] AND id > $4 \
             ORDER BY id LIMIT $5 FOR UPDATE \
         ) \
         UPDATE partners p SET \
             ancestor_ids = p.ancestor_ids[1:array_position(p.ancestor_ids, $1)] || $2::uuid[], \
             depth = array_position(p.ancestor_ids, $1) + $3 \
         FROM batch WHERE p.id = batch.id \
         RETURNING p.id",
    )
    .bind(moved)
    .bind(moved_ancestors)
    .bind(moved_depth)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// The requested partners and all their ancestors, in one query.
pub async fn partners_with_ancestors(
    executor: impl PgExecutor<'_>,
    ids: &[PartnerId],
) -> Result<Vec<PartnerRow>, StoreError> {
    sqlx::query_as::<_, PartnerRow>(concat!(
        "WITH wanted AS ( ",
        "SELECT id FROM partners WHERE id = ANY($1) ",
        "UNION SELECT unnest(ancestor_ids) FROM partners WHERE id = ANY($1) ",
        ") SELECT ",
        partner_columns!(),
        " FROM partners WHERE id IN (SELECT id FROM wanted)"
    ))
    .bind(ids)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// A page of `id`'s downline (at most `max_depth` levels below `own_depth`
/// when given) in (depth, created_at, id) order after `after`.
pub async fn list_downline(
    executor: impl PgExecutor<'_>,
    id: PartnerId,
    deepest: Option<i32>,
    after: Option<(i32, DateTime<Utc>, PartnerId)>,
    limit: i64,
) -> Result<Vec<PartnerRow>, StoreError> {
    let (after_depth, after_time, after_id) = match after {
        Some((depth, time, id)) => (Some(depth), Some(time), Some(id)),
        None => (None, None, None),
    };
    sqlx::query_as::<_, PartnerRow>(concat!(
        "SELECT ",
        partner_columns!(),
        " FROM partners WHERE ancestor_ids @> ARRAY[$1]::uuid[] ",
        "AND ($2::int IS NULL OR depth <= $2) ",
        "AND ($3::int IS NULL OR (depth, created_at, id) > ($3, $4, $5)) ",
        "ORDER BY depth, created_at, id LIMIT $6"
    ))
    .bind(id)
    .bind(deepest)
    .bind(after_depth)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)
}

/// For each (parent, time) pair, how many of the parent's direct sub-partners
/// were ACTIVE at that time (qualified overrides, issue 16 item 3), in pair
/// order; parents outside `program_id` count 0 (the caller checks them).
///
/// As of a time `t`, a child counts when it was created at or before `t` and
/// its status then was ACTIVE: the `to_status` of its latest status event at
/// or before `t`, else the `from_status` of its first event (the status it
/// was created with), else its current status. Status events are append-only
/// and stamped by the database clock, so a count for a past `t` never
/// changes. The parent edge is the current `parent_id`: SetParent keeps no
/// history of edges, so moving a partner changes past counts (documented
/// limitation).
pub async fn count_active_children(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    parents: &[PartnerId],
    times: &[DateTime<Utc>],
) -> Result<Vec<i64>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT q.i, (SELECT count(*) FROM partners c
                      WHERE c.parent_id = q.parent_id AND c.program_id = $1 AND c.created_at <= q.as_of
                        AND COALESCE(
                              (SELECT e.to_status FROM partner_status_events e
                               WHERE e.partner_id = c.id AND e.created_at <= q.as_of ORDER BY e.id DESC LIMIT 1),
                              (SELECT e.from_status FROM partner_status_events e
                               WHERE e.partner_id = c.id ORDER BY e.id LIMIT 1),
                              c.status) = 'ACTIVE')
         FROM UNNEST($2::uuid[], $3::timestamptz[]) WITH ORDINALITY AS q(parent_id, as_of, i)
         ORDER BY q.i",
    )
    .bind(program_id)
    .bind(parents)
    .bind(times)
    .fetch_all(executor)
    .await
    .map_err(StoreError::from)?;
    Ok(rows.into_iter().map(|(_, count)| count).collect())
}

/// The ids among `ids` that are partners of `program_id`.
pub async fn partners_in_program(
    executor: impl PgExecutor<'_>,
    program_id: ProgramId,
    ids: &[PartnerId],
) -> Result<Vec<PartnerId>, StoreError> {
    sqlx::query_scalar("SELECT id FROM partners WHERE program_id = $1 AND id = ANY($2)")
        .bind(program_id)
        .bind(ids)
        .fetch_all(executor)
        .await
        .map_err(StoreError::from)
}
