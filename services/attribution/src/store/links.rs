//! Links (with their split configuration) and first-touch leads.

// The store's imports and shared helpers.
use super::*;

/// The link created earlier under `request_id` in the program, if any.
pub(crate) async fn link_by_request(
    pool: &PgPool,
    program_id: ProgramId,
    request_id: &str,
) -> Result<Option<LinkRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LINK_COLUMNS} FROM links WHERE program_id = $1 AND request_id = $2"
    )))
    .bind(program_id)
    .bind(request_id)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)
}

/// Inserts a link; a request-id race returns the winner's link
/// ([`LinkInsert::Raced`]), a taken key
/// returns [`LinkInsert::KeyTaken`].
pub(crate) async fn insert_link(pool: &PgPool, link: &NewLink) -> Result<LinkInsert, StoreError> {
    let inserted: Result<LinkRow, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO links (id, program_id, owner_partner_id, key, destination_url, splits, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {LINK_COLUMNS}"
    )))
    .bind(LinkId::new_v7())
    .bind(link.program_id)
    .bind(link.owner_partner_id)
    .bind(&link.key)
    .bind(&link.destination_url)
    .bind(Json(&link.splits))
    .bind(link.request_id.as_deref())
    .fetch_one(pool)
    .await;
    match inserted {
        Ok(row) => Ok(LinkInsert::Stored(row)),
        Err(error) if accrue_kit::error::is_unique_violation(&error) => {
            if let Some(request_id) = &link.request_id
                && let Some(existing) = link_by_request(pool, link.program_id, request_id).await?
            {
                return Ok(LinkInsert::Raced(existing));
            }
            Ok(LinkInsert::KeyTaken)
        }
        Err(error) => Err(error.into()),
    }
}

/// A link by id.
pub(crate) async fn get_link(pool: &PgPool, id: LinkId) -> Result<Option<LinkRow>, StoreError> {
    LINKS.get(pool, id).await
}

/// A program's links, oldest first, after `cursor`, at most `limit`.
pub(crate) async fn list_links(
    pool: &PgPool,
    program_id: ProgramId,
    owner: Option<PartnerId>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<LinkRow>, StoreError> {
    LINKS.page(pool, program_id, owner, cursor, limit).await
}

/// The links of `program_id` that `partner` owns or shares in (a split
/// partner), oldest first, after `cursor`, at most `limit`; with `owner` set,
/// only that owner's.
pub(crate) async fn list_partner_links(
    pool: &PgPool,
    program_id: ProgramId,
    partner: PartnerId,
    owner: Option<PartnerId>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<LinkRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LINK_COLUMNS} FROM links
         WHERE program_id = $1
           AND (owner_partner_id = $2 OR splits @> jsonb_build_array(jsonb_build_object('partner_id', $2::text)))
           AND ($3::uuid IS NULL OR owner_partner_id = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY created_at, id LIMIT $6"
    )))
    .bind(program_id)
    .bind(partner)
    .bind(owner)
    .bind(cursor.map(|c| c.t))
    .bind(cursor.map(|c| c.id))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

// ---------------------------------------------------------------- leads

/// First touch: stores the lead unless the customer already has one; returns
/// the stored lead and whether this call created it.
pub(crate) async fn track_lead(
    pool: &PgPool,
    link: &LinkRow,
    customer: &str,
    occurred_at: DateTime<Utc>,
) -> Result<(LeadRow, bool), StoreError> {
    let created: Option<LeadRow> = sqlx::query_as(
        "INSERT INTO leads (program_id, customer_external_id, link_id, partner_id, occurred_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id, customer_external_id) DO NOTHING
         RETURNING program_id, customer_external_id, link_id, partner_id, occurred_at",
    )
    .bind(link.program_id)
    .bind(customer)
    .bind(link.id)
    .bind(link.owner_partner_id)
    .bind(occurred_at)
    .fetch_optional(pool)
    .await?;
    if let Some(lead) = created {
        return Ok((lead, true));
    }
    let existing: LeadRow = sqlx::query_as(
        "SELECT program_id, customer_external_id, link_id, partner_id, occurred_at FROM leads
         WHERE program_id = $1 AND customer_external_id = $2",
    )
    .bind(link.program_id)
    .bind(customer)
    .fetch_one(pool)
    .await?;
    Ok((existing, false))
}

// ---------------------------------------------------------------- sales
