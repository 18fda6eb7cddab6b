//! Links (with their split configuration) and leads (first or last touch).

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

/// ListLinks' filters (each optional).
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkFilter {
    /// Only this owner's links.
    pub(crate) owner: Option<PartnerId>,
    /// Only the links this partner holds a split in.
    pub(crate) split_partner: Option<PartnerId>,
    /// Only archived (true) or only live (false) links.
    pub(crate) archived: Option<bool>,
}

/// A program's links matching `filter`, oldest first, after `cursor`, at
/// most `limit`.
pub(crate) async fn list_links(
    pool: &PgPool,
    program_id: ProgramId,
    filter: &LinkFilter,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<LinkRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LINK_COLUMNS} FROM links
         WHERE program_id = $1
           AND ($2::uuid IS NULL OR owner_partner_id = $2)
           AND ($3::uuid IS NULL OR splits @> jsonb_build_array(jsonb_build_object('partner_id', $3::text)))
           AND ($4::bool IS NULL OR (archived_at IS NOT NULL) = $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6))
         ORDER BY created_at, id LIMIT $7"
    )))
    .bind(program_id)
    .bind(filter.owner)
    .bind(filter.split_partner)
    .bind(filter.archived)
    .bind(cursor.map(|c| c.t))
    .bind(cursor.map(|c| c.id))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

// ---------------------------------------------------------------- leads

/// Credits a lead on `link` at `occurred_at` under `rule` (issue 14 item
/// 2); returns the customer's lead as it now stands and whether this call
/// credited `link`. First touch: stores the lead unless the customer
/// already has one. Last touch: the lead is itself the customer's most
/// recent touch, so it is credited to its link — recorded as a lead event,
/// and the customer's lead moves to it unless a later-occurring lead is
/// already there. One transaction.
pub(crate) async fn track_lead(
    pool: &PgPool,
    link: &LinkRow,
    customer: &str,
    occurred_at: DateTime<Utc>,
    rule: Rule,
) -> Result<(LeadRow, bool), StoreError> {
    let mut tx = pool.begin().await?;
    let credited = match rule.model {
        Model::FirstTouch => sqlx::query(
            "INSERT INTO leads (program_id, customer_external_id, link_id, partner_id, occurred_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id, customer_external_id) DO NOTHING",
        ),
        Model::LastTouch => sqlx::query(
            "INSERT INTO leads (program_id, customer_external_id, link_id, partner_id, occurred_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (program_id, customer_external_id) DO UPDATE
                SET link_id = EXCLUDED.link_id, partner_id = EXCLUDED.partner_id, occurred_at = EXCLUDED.occurred_at
                WHERE leads.occurred_at <= EXCLUDED.occurred_at",
        ),
    }
    .bind(link.program_id)
    .bind(customer)
    .bind(link.id)
    .bind(link.owner_partner_id)
    .bind(occurred_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let mut event = false;
    if credited || rule.model == Model::LastTouch {
        event = sqlx::query(
            "INSERT INTO lead_events (program_id, customer_external_id, link_id, partner_id, occurred_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(link.program_id)
        .bind(customer)
        .bind(link.id)
        .bind(link.owner_partner_id)
        .bind(occurred_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
    }
    let lead: LeadRow = sqlx::query_as(
        "SELECT program_id, customer_external_id, link_id, partner_id, occurred_at FROM leads
         WHERE program_id = $1 AND customer_external_id = $2",
    )
    .bind(link.program_id)
    .bind(customer)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let created = match rule.model {
        Model::FirstTouch => credited,
        Model::LastTouch => event,
    };
    Ok((lead, created))
}

// ---------------------------------------------------------------- sales
