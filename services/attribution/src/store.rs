//! sqlx access to the attribution schema: links, leads, sales (with the
//! transactional outbox that starts each sale's saga), saga reads, and the
//! sale reads and writes SettleSale's steps make; refunds and ClawbackSale's
//! reads and writes are in [`refunds`]. A sale's state is written by this
//! store alone. The engine's own queries (claims, the step log) live in
//! `accrue_saga`.

use std::collections::{HashMap, HashSet};

use accrue_types::{LinkId, PartnerId, ProgramId, RefundId, SagaId, SaleId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

pub(crate) use accrue_kit::error::StoreError;
use accrue_saga::{Saga, SagaDef, SagaState, StepEvent};

use crate::domain::link::Split;
use crate::domain::sale::{SaleEventType, SaleInput};
use crate::domain::state::SaleState;
use crate::saga::settle_sale::SettleSale;

mod refunds;
pub(crate) use refunds::*;

/// A stored link.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LinkRow {
    pub(crate) id: LinkId,
    pub(crate) program_id: ProgramId,
    pub(crate) owner_partner_id: PartnerId,
    pub(crate) key: String,
    pub(crate) destination_url: String,
    pub(crate) splits: Json<Vec<Split>>,
    pub(crate) created_at: DateTime<Utc>,
}

const LINK_COLUMNS: &str = "id, program_id, owner_partner_id, key, destination_url, splits, created_at";

/// A link to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewLink {
    pub(crate) program_id: ProgramId,
    pub(crate) owner_partner_id: PartnerId,
    pub(crate) key: String,
    pub(crate) destination_url: String,
    pub(crate) splits: Vec<Split>,
    pub(crate) request_id: Option<String>,
}

/// What inserting a link did.
#[derive(Debug)]
pub(crate) enum LinkInsert {
    /// Created.
    Stored(LinkRow),
    /// A concurrent request with the same request id won: its link, for the
    /// caller to compare with this request.
    Raced(LinkRow),
    /// The key is taken in the program.
    KeyTaken,
}

/// A stored lead.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LeadRow {
    pub(crate) program_id: ProgramId,
    pub(crate) customer_external_id: String,
    pub(crate) link_id: LinkId,
    pub(crate) partner_id: PartnerId,
    pub(crate) occurred_at: DateTime<Utc>,
}

/// A stored sale.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SaleRow {
    pub(crate) id: SaleId,
    pub(crate) program_id: ProgramId,
    pub(crate) external_id: String,
    pub(crate) request_hash: String,
    pub(crate) customer_external_id: Option<String>,
    pub(crate) event_type: SaleEventType,
    pub(crate) currency: String,
    pub(crate) amount: Decimal,
    pub(crate) product_code: String,
    pub(crate) service_code: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) link_id: Option<LinkId>,
    pub(crate) partner_id: Option<PartnerId>,
    /// The link's splits as they were when the sale was recorded.
    pub(crate) splits: Json<Vec<Split>>,
    pub(crate) state: SaleState,
    pub(crate) failure_reason: String,
    pub(crate) saga_id: Option<SagaId>,
    pub(crate) base_commission: Option<Decimal>,
    pub(crate) total_commission: Option<Decimal>,
    pub(crate) created_at: DateTime<Utc>,
    /// Σ the sale's recorded refunds (major units; 0 when none).
    pub(crate) refunded_amount: Decimal,
}

const SALE_COLUMNS: &str = "id, program_id, external_id, request_hash, customer_external_id, event_type, currency, \
    amount, product_code, service_code, occurred_at, link_id, partner_id, splits, state, failure_reason, saga_id, \
    base_commission, total_commission, created_at, refunded_amount";

/// [`SALE_COLUMNS`] of the table aliased `alias`.
fn sale_columns_of(alias: &str) -> String {
    SALE_COLUMNS.split(", ").map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// A stored saga.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SagaRow {
    pub(crate) id: SagaId,
    pub(crate) program_id: ProgramId,
    pub(crate) sale_id: SaleId,
    pub(crate) kind: String,
    pub(crate) state: SagaState,
    pub(crate) generation: i64,
    pub(crate) owner: Option<String>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
    pub(crate) attempt: i32,
    pub(crate) failure_reason: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// For a CLAWBACK_SALE saga: the refund it applies.
    pub(crate) refund_id: Option<RefundId>,
}

const SAGA_COLUMNS: &str = "id, program_id, sale_id, kind, state, generation, owner, lease_expires_at, attempt, \
    failure_reason, created_at, updated_at, refund_id";

/// One row of a saga's step log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) run: i32,
    pub(crate) step: String,
    pub(crate) event: StepEvent,
    pub(crate) detail: serde_json::Value,
    pub(crate) generation: i64,
    pub(crate) created_at: DateTime<Utc>,
}

/// Keyset cursor over (time, id).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cursor {
    /// Last row's time.
    pub(crate) t: DateTime<Utc>,
    /// Last row's id: a link's, a sale's or a saga's (one cursor type for
    /// every [`Table`]).
    pub(crate) id: Uuid,
}

/// A program-scoped table the API reads by id and pages through by keyset
/// over (`time`, id), optionally filtered on one column. Every name here is a
/// constant, so the SQL built from it is safe.
struct Table {
    /// The table's name.
    name: &'static str,
    /// The columns its row type reads.
    columns: &'static str,
    /// The keyset's time column (the id breaks ties).
    time: &'static str,
    /// The column a list filter matches, and its SQL type.
    filter: (&'static str, &'static str),
}

const LINKS: Table =
    Table { name: "links", columns: LINK_COLUMNS, time: "created_at", filter: ("owner_partner_id", "uuid") };
const SALES: Table = Table { name: "sales", columns: SALE_COLUMNS, time: "occurred_at", filter: ("state", "text") };
const SAGAS: Table = Table { name: "sagas", columns: SAGA_COLUMNS, time: "created_at", filter: ("state", "text") };

impl Table {
    /// The row with this id.
    async fn get<R>(&self, pool: &PgPool, id: impl Into<Uuid>) -> Result<Option<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        let Table { name, columns, .. } = self;
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {columns} FROM {name} WHERE id = $1")))
            .bind(id.into())
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from)
    }

    /// The program's rows after `cursor` in (time, id) order, at most `limit`;
    /// with `filter` set, only the rows whose filter column equals it.
    async fn page<R, F>(
        &self,
        pool: &PgPool,
        program_id: ProgramId,
        filter: Option<F>,
        cursor: Option<Cursor>,
        limit: i64,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
        F: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let Table { name, columns, time, filter: (column, sql_type) } = self;
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {name}
             WHERE program_id = $1 AND ($2::{sql_type} IS NULL OR {column} = $2)
               AND ($3::timestamptz IS NULL OR ({time}, id) > ($3, $4))
             ORDER BY {time}, id LIMIT $5"
        )))
        .bind(program_id)
        .bind(filter)
        .bind(cursor.map(|c| c.t))
        .bind(cursor.map(|c| c.id))
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)
    }

    /// How many of the program's rows match `filter` (all of them when unset).
    async fn count<F>(&self, pool: &PgPool, program_id: ProgramId, filter: Option<F>) -> Result<i64, StoreError>
    where
        F: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let Table { name, filter: (column, sql_type), .. } = self;
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {name} WHERE program_id = $1 AND ($2::{sql_type} IS NULL OR {column} = $2)"
        )))
        .bind(program_id)
        .bind(filter)
        .fetch_one(pool)
        .await
        .map_err(StoreError::from)
    }
}

// ---------------------------------------------------------------- links

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

/// What recording a batch of sales did.
#[derive(Debug)]
pub(crate) enum RecordOutcome {
    /// Every sale, in input order (replays return the stored sale).
    Recorded {
        /// The sales.
        sales: Vec<SaleRow>,
        /// How many sagas were started.
        sagas_started: usize,
    },
    /// Input `index` reuses an external id with a different body; nothing was written.
    Conflict {
        /// Input index.
        index: usize,
    },
    /// Input `index` is a new sale its seller may not make (the seller's role
    /// is one of the program's non-transacting roles); nothing was written.
    SellerMayNotTransact {
        /// Input index.
        index: usize,
        /// The seller (the link owner the sale is attributed to).
        partner_id: PartnerId,
        /// The seller's role.
        role: String,
    },
}

/// Where a customer's sales go: its lead's link, the link owner (the seller)
/// and the link's split config.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Attribution {
    pub(crate) program_id: ProgramId,
    pub(crate) customer_external_id: String,
    pub(crate) link_id: LinkId,
    pub(crate) partner_id: PartnerId,
    pub(crate) splits: serde_json::Value,
}

/// Attributions by (program, customer external id).
pub(crate) type Attributions = HashMap<(ProgramId, String), Attribution>;

/// Resolves the attribution of every sale that names a customer (customer →
/// lead → link owner and splits), in one query. A lead is first-touch and a
/// link immutable, so what this reads is what the sale is recorded with.
pub(crate) async fn attributions(pool: &PgPool, sales: &[SaleInput]) -> Result<Attributions, StoreError> {
    let with_customer: Vec<&SaleInput> = sales.iter().filter(|sale| sale.customer_external_id.is_some()).collect();
    if with_customer.is_empty() {
        return Ok(Attributions::new());
    }
    let programs: Vec<ProgramId> = with_customer.iter().map(|sale| sale.program_id).collect();
    let customers: Vec<&str> =
        with_customer.iter().map(|sale| sale.customer_external_id.as_deref().unwrap_or_default()).collect();
    let rows: Vec<Attribution> = sqlx::query_as(
        "SELECT DISTINCT l.program_id, l.customer_external_id, l.link_id, k.owner_partner_id AS partner_id, k.splits
         FROM UNNEST($1::uuid[], $2::text[]) AS u(program_id, customer)
         JOIN leads l ON l.program_id = u.program_id AND l.customer_external_id = u.customer
         JOIN links k ON k.id = l.link_id",
    )
    .bind(&programs)
    .bind(&customers)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| ((row.program_id, row.customer_external_id.clone()), row)).collect())
}

/// The attribution of one sale, if it names a customer with a lead.
pub(crate) fn attribution_of<'a>(attributions: &'a Attributions, sale: &SaleInput) -> Option<&'a Attribution> {
    let customer = sale.customer_external_id.as_ref()?;
    attributions.get(&(sale.program_id, customer.clone()))
}

/// Records a batch of validated sales in one transaction (set-based, UNNEST):
/// idempotent on (program, external_id) with the request hash; each sale is
/// attributed (`attributions`, from [`attributions`]) to its customer's link
/// owner (with the link's splits snapshotted) and gets its SettleSale saga row
/// in the same transaction (transactional outbox); a sale with no customer or
/// no lead is UNATTRIBUTED and gets no saga. A new sale whose seller is in
/// `barred` (partner → role) stops the batch before anything is written; a
/// replay of a stored sale returns it as stored.
pub(crate) async fn record_sales(
    pool: &PgPool,
    sales: &[SaleInput],
    attributions: &Attributions,
    barred: &HashMap<PartnerId, String>,
) -> Result<RecordOutcome, StoreError> {
    let hashes: Vec<String> = sales.iter().map(SaleInput::request_hash).collect();
    // Duplicates inside the batch: the first occurrence stands for the rest.
    let mut first: HashMap<(ProgramId, &str), usize> = HashMap::new();
    let mut unique: Vec<usize> = Vec::with_capacity(sales.len());
    for (i, sale) in sales.iter().enumerate() {
        match first.get(&(sale.program_id, sale.external_id.as_str())) {
            Some(&j) if hashes[j] != hashes[i] => return Ok(RecordOutcome::Conflict { index: i }),
            Some(_) => {}
            None => {
                first.insert((sale.program_id, sale.external_id.as_str()), i);
                unique.push(i);
            }
        }
    }

    let mut tx = pool.begin().await?;
    let programs: Vec<ProgramId> = unique.iter().map(|&i| sales[i].program_id).collect();
    let externals: Vec<String> = unique.iter().map(|&i| sales[i].external_id.clone()).collect();
    let mut stored: HashMap<(ProgramId, String), SaleRow> = fetch_by_external(&mut tx, &programs, &externals).await?;
    for &i in &unique {
        if let Some(row) = stored.get(&(sales[i].program_id, sales[i].external_id.clone()))
            && row.request_hash != hashes[i]
        {
            return Ok(RecordOutcome::Conflict { index: i });
        }
    }
    let fresh: Vec<usize> = unique
        .iter()
        .copied()
        .filter(|&i| !stored.contains_key(&(sales[i].program_id, sales[i].external_id.clone())))
        .collect();

    let mut sagas_started = 0;
    if !fresh.is_empty() {
        // A new sale by a seller that may not transact stops the batch.
        for &i in &fresh {
            if let Some(attribution) = attribution_of(attributions, &sales[i])
                && let Some(role) = barred.get(&attribution.partner_id)
            {
                return Ok(RecordOutcome::SellerMayNotTransact {
                    index: i,
                    partner_id: attribution.partner_id,
                    role: role.clone(),
                });
            }
        }

        let n = fresh.len();
        let mut ids = Vec::with_capacity(n);
        let mut program_ids = Vec::with_capacity(n);
        let mut external_ids = Vec::with_capacity(n);
        let mut request_hashes = Vec::with_capacity(n);
        let mut customers: Vec<Option<String>> = Vec::with_capacity(n);
        let mut event_types = Vec::with_capacity(n);
        let mut currencies = Vec::with_capacity(n);
        let mut amounts = Vec::with_capacity(n);
        let mut products = Vec::with_capacity(n);
        let mut services = Vec::with_capacity(n);
        let mut occurred = Vec::with_capacity(n);
        let mut link_ids: Vec<Option<LinkId>> = Vec::with_capacity(n);
        let mut partner_ids: Vec<Option<PartnerId>> = Vec::with_capacity(n);
        let mut splits: Vec<serde_json::Value> = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut saga_ids: Vec<Option<SagaId>> = Vec::with_capacity(n);
        for &i in &fresh {
            let sale = &sales[i];
            let attribution = attribution_of(attributions, sale);
            ids.push(SaleId::new_v7());
            program_ids.push(sale.program_id);
            external_ids.push(sale.external_id.clone());
            request_hashes.push(hashes[i].clone());
            customers.push(sale.customer_external_id.clone());
            event_types.push(sale.event_type.as_str().to_string());
            currencies.push(sale.amount.currency.code().to_string());
            amounts.push(sale.amount.amount);
            products.push(sale.product_code.clone());
            services.push(sale.service_code.clone());
            occurred.push(sale.occurred_at);
            link_ids.push(attribution.map(|a| a.link_id));
            partner_ids.push(attribution.map(|a| a.partner_id));
            splits.push(attribution.map_or_else(|| serde_json::json!([]), |a| a.splits.clone()));
            let state = if attribution.is_some() { SaleState::Pending } else { SaleState::Unattributed };
            states.push(state.as_str().to_string());
            saga_ids.push(attribution.map(|_| SagaId::new_v7()));
        }
        let inserted: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO sales (id, program_id, external_id, request_hash, customer_external_id, event_type, currency,
                 amount, product_code, service_code, occurred_at, link_id, partner_id, splits, state, saga_id)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::numeric[], $9::text[], $10::text[], $11::timestamptz[], $12::uuid[], $13::uuid[], $14::jsonb[],
                 $15::text[], $16::uuid[])
             ON CONFLICT (program_id, external_id) DO NOTHING
             RETURNING {SALE_COLUMNS}"
        )))
        .bind(&ids)
        .bind(&program_ids)
        .bind(&external_ids)
        .bind(&request_hashes)
        .bind(&customers)
        .bind(&event_types)
        .bind(&currencies)
        .bind(&amounts)
        .bind(&products)
        .bind(&services)
        .bind(&occurred)
        .bind(&link_ids)
        .bind(&partner_ids)
        .bind(&splits)
        .bind(&states)
        .bind(&saga_ids)
        .fetch_all(&mut *tx)
        .await?;

        let started: Vec<&SaleRow> = inserted.iter().filter(|row| row.saga_id.is_some()).collect();
        if !started.is_empty() {
            let saga_ids: Vec<SagaId> = started.iter().filter_map(|row| row.saga_id).collect();
            let saga_programs: Vec<ProgramId> = started.iter().map(|row| row.program_id).collect();
            let saga_sales: Vec<SaleId> = started.iter().map(|row| row.id).collect();
            sqlx::query(
                "INSERT INTO sagas (id, program_id, sale_id, kind, state)
                 SELECT id, program_id, sale_id, $4, $5
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS u(id, program_id, sale_id)",
            )
            .bind(&saga_ids)
            .bind(&saga_programs)
            .bind(&saga_sales)
            .bind(SettleSale::KIND)
            .bind(SagaState::Running)
            .execute(&mut *tx)
            .await?;
            sagas_started = saga_ids.len();
        }
        let inserted_keys: HashSet<(ProgramId, String)> =
            inserted.iter().map(|row| (row.program_id, row.external_id.clone())).collect();
        for row in inserted {
            stored.insert((row.program_id, row.external_id.clone()), row);
        }
        // A concurrent call inserted some of ours first: read theirs and compare.
        let lost: Vec<usize> = fresh
            .iter()
            .copied()
            .filter(|&i| !inserted_keys.contains(&(sales[i].program_id, sales[i].external_id.clone())))
            .collect();
        if !lost.is_empty() {
            let programs: Vec<ProgramId> = lost.iter().map(|&i| sales[i].program_id).collect();
            let externals: Vec<String> = lost.iter().map(|&i| sales[i].external_id.clone()).collect();
            let winners = fetch_by_external(&mut tx, &programs, &externals).await?;
            for &i in &lost {
                match winners.get(&(sales[i].program_id, sales[i].external_id.clone())) {
                    Some(row) if row.request_hash == hashes[i] => {}
                    _ => return Ok(RecordOutcome::Conflict { index: i }),
                }
            }
            stored.extend(winners);
        }
    }
    tx.commit().await?;

    let mut out = Vec::with_capacity(sales.len());
    for sale in sales {
        match stored.get(&(sale.program_id, sale.external_id.clone())) {
            Some(row) => out.push(row.clone()),
            None => return Err(sqlx::Error::RowNotFound.into()),
        }
    }
    Ok(RecordOutcome::Recorded { sales: out, sagas_started })
}

async fn fetch_by_external(
    tx: &mut Transaction<'_, Postgres>,
    programs: &[ProgramId],
    externals: &[String],
) -> Result<HashMap<(ProgramId, String), SaleRow>, StoreError> {
    let rows: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sales s JOIN UNNEST($1::uuid[], $2::text[]) AS u(program_id, external_id)
           ON s.program_id = u.program_id AND s.external_id = u.external_id",
        sale_columns_of("s")
    )))
    .bind(programs)
    .bind(externals)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|row| ((row.program_id, row.external_id.clone()), row)).collect())
}

/// A sale by id.
pub(crate) async fn get_sale(pool: &PgPool, id: SaleId) -> Result<Option<SaleRow>, StoreError> {
    SALES.get(pool, id).await
}

/// A program's sales by (occurred_at, id) after `cursor`, and how many match the filter.
pub(crate) async fn list_sales(
    pool: &PgPool,
    program_id: ProgramId,
    state: Option<SaleState>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<SaleRow>, i64), StoreError> {
    let rows = SALES.page(pool, program_id, state, cursor, limit).await?;
    Ok((rows, SALES.count(pool, program_id, state).await?))
}

// ---------------------------------------------------------------- sagas

/// A saga by id.
pub(crate) async fn get_saga(pool: &PgPool, id: SagaId) -> Result<Option<SagaRow>, StoreError> {
    SAGAS.get(pool, id).await
}

/// A saga's step log across all runs, oldest first.
pub(crate) async fn saga_events(pool: &PgPool, id: SagaId) -> Result<Vec<EventRow>, StoreError> {
    sqlx::query_as(
        "SELECT run, step, event, detail, generation, created_at FROM saga_step_events WHERE saga_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// A program's sagas, oldest first, after `cursor`, and how many match the
/// filters (a state, a kind; None: any).
pub(crate) async fn list_sagas(
    pool: &PgPool,
    program_id: ProgramId,
    state: Option<SagaState>,
    kind: Option<&str>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<SagaRow>, i64), StoreError> {
    let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas
         WHERE program_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)
           AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY created_at, id LIMIT $6"
    )))
    .bind(program_id)
    .bind(state)
    .bind(kind)
    .bind(cursor.map(|c| c.t))
    .bind(cursor.map(|c| c.id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas
         WHERE program_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)",
    )
    .bind(program_id)
    .bind(state)
    .bind(kind)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// What RetrySaga did.
#[derive(Debug)]
pub(crate) enum RetryOutcome {
    /// Restarted: a new run, attempt 0, state running; its sale (SettleSale)
    /// or its refund (ClawbackSale) back to PENDING.
    Restarted(SagaRow),
    /// No such saga.
    NotFound,
    /// The saga is not FAILED (its current state).
    NotFailed(SagaState),
}

/// Starts a FAILED saga again (a new run with its own log) and, in the same
/// transaction, puts what it drives back to PENDING: a SettleSale's sale, or a
/// ClawbackSale's refund (its sale's state is the refunds' to change, and a
/// failed clawback never changed it).
pub(crate) async fn retry_saga(pool: &PgPool, id: SagaId) -> Result<RetryOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let current: Option<(SagaState,)> =
        sqlx::query_as("SELECT state FROM sagas WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
    let Some((state,)) = current else {
        return Ok(RetryOutcome::NotFound);
    };
    if state != SagaState::Failed {
        return Ok(RetryOutcome::NotFailed(state));
    }
    let saga: SagaRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sagas SET run = run + 1, attempt = 0, state = $2, owner = NULL, lease_expires_at = NULL,
             next_attempt_at = now(), failure_reason = '', updated_at = now()
         WHERE id = $1 RETURNING {SAGA_COLUMNS}"
    )))
    .bind(id)
    .bind(SagaState::Running)
    .fetch_one(&mut *tx)
    .await?;
    match saga.refund_id {
        Some(refund_id) => refunds::reopen_refund(&mut tx, refund_id).await?,
        None => {
            sqlx::query(
                "UPDATE sales SET state = $2, failure_reason = '', base_commission = NULL, total_commission = NULL
                 WHERE id = $1",
            )
            .bind(saga.sale_id)
            .bind(SaleState::Pending)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(RetryOutcome::Restarted(saga))
}

// ---------------------------------------------------------------- SettleSale

/// The sales of a claimed batch of SettleSale sagas, by saga id (one query;
/// a sale's `saga_id` is the saga that settles it).
pub(crate) async fn saga_sales(pool: &PgPool, saga_ids: &[SagaId]) -> Result<HashMap<SagaId, SaleRow>, sqlx::Error> {
    let sales: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sagas g JOIN sales s ON s.id = g.sale_id WHERE g.id = ANY($1)",
        sale_columns_of("s")
    )))
    .bind(saga_ids)
    .fetch_all(pool)
    .await?;
    Ok(sales.into_iter().filter_map(|s| s.saga_id.map(|id| (id, s))).collect())
}

/// What the rules need from a sale's history (see [`sale_histories`]).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SaleHistory {
    /// The sale.
    pub(crate) id: SaleId,
    /// A PAYMENT or RENEWAL with no earlier one by its customer in the program.
    pub(crate) is_first_payment: bool,
    /// Σ the seller's earlier attributed sales in the sale's currency (major units).
    pub(crate) prior_volume: Decimal,
    /// The customer's earlier attributed sales, oldest first, as a JSON array
    /// of `{sale_id, event_type, seller_partner_id, occurred_at}`.
    pub(crate) history: serde_json::Value,
}

/// The history facts of every sale in `ids`, in one query.
pub(crate) async fn sale_histories(pool: &PgPool, ids: &[SaleId]) -> Result<Vec<SaleHistory>, sqlx::Error> {
    sqlx::query_as(
        r#"WITH batch AS (
               SELECT id, program_id, partner_id, currency, customer_external_id, event_type, occurred_at
               FROM sales WHERE id = ANY($1)
           ),
           sellers AS (
               SELECT program_id, partner_id, currency, max(occurred_at) AS until
               FROM batch GROUP BY program_id, partner_id, currency
           ),
           -- One pass over each seller's history: the running Σ of the sales before each one.
           volume AS (
               SELECT p.id, sum(p.amount) OVER (
                          PARTITION BY p.program_id, p.partner_id, p.currency ORDER BY p.occurred_at, p.id
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prior_volume
               FROM sellers v
               JOIN sales p ON p.program_id = v.program_id AND p.partner_id = v.partner_id AND p.currency = v.currency
                           AND p.occurred_at <= v.until
               WHERE p.state <> 'UNATTRIBUTED'
           )
           SELECT s.id,
             (s.event_type IN ('PAYMENT', 'RENEWAL') AND s.customer_external_id IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM sales e
                 WHERE e.program_id = s.program_id AND e.customer_external_id = s.customer_external_id
                   AND e.event_type IN ('PAYMENT', 'RENEWAL') AND (e.occurred_at, e.id) < (s.occurred_at, s.id)
             )) AS is_first_payment,
             COALESCE(v.prior_volume, 0) AS prior_volume,
             COALESCE((
                 SELECT jsonb_agg(jsonb_build_object(
                          'sale_id', h.id, 'event_type', h.event_type, 'seller_partner_id', h.partner_id,
                          'occurred_at', to_char(h.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                          'service_code', h.service_code)
                        ORDER BY h.occurred_at, h.id)
                 FROM sales h
                 WHERE h.program_id = s.program_id AND h.customer_external_id = s.customer_external_id
                   AND h.state <> 'UNATTRIBUTED' AND (h.occurred_at, h.id) < (s.occurred_at, s.id)
             ), '[]'::jsonb) AS history
           FROM batch s LEFT JOIN volume v ON v.id = s.id"#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A settled sale's totals, for the saga (and generation) that settled it.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    pub(crate) saga_id: SagaId,
    pub(crate) generation: i64,
    pub(crate) base_commission: Decimal,
    pub(crate) total_commission: Decimal,
}

/// Marks each saga's sale SETTLED with its totals, fenced on the saga's
/// generation (a saga a newer owner holds changes nothing).
pub(crate) async fn settle_sales(pool: &PgPool, settled: &[Settled]) -> Result<(), sqlx::Error> {
    let saga_ids: Vec<SagaId> = settled.iter().map(|s| s.saga_id).collect();
    let generations: Vec<i64> = settled.iter().map(|s| s.generation).collect();
    let bases: Vec<Decimal> = settled.iter().map(|s| s.base_commission).collect();
    let totals: Vec<Decimal> = settled.iter().map(|s| s.total_commission).collect();
    sqlx::query(
        "UPDATE sales SET state = $5, base_commission = u.base, total_commission = u.total, failure_reason = ''
         FROM UNNEST($1::uuid[], $2::bigint[], $3::numeric[], $4::numeric[]) AS u(saga_id, generation, base, total)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE sales.id = g.sale_id",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .bind(&bases)
    .bind(&totals)
    .bind(SaleState::Settled)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts each saga's SETTLED sale back to PENDING without totals (fenced).
pub(crate) async fn unsettle_sales(pool: &PgPool, sagas: &[&Saga]) -> Result<(), sqlx::Error> {
    let (saga_ids, generations): (Vec<SagaId>, Vec<i64>) = sagas.iter().map(|s| (s.id, s.generation)).unzip();
    sqlx::query(
        "UPDATE sales SET state = $3, base_commission = NULL, total_commission = NULL
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(saga_id, generation)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE sales.id = g.sale_id AND sales.state = $4",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .bind(SaleState::Pending)
    .bind(SaleState::Settled)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks each unwound saga's sale FAILED with the saga's reason (inside the
/// engine's fenced transaction that fails the sagas).
pub(crate) async fn fail_sales(conn: &mut sqlx::PgConnection, sagas: &[&Saga]) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let saga_ids: Vec<SagaId> = sagas.iter().map(|s| s.id).collect();
    let reasons: Vec<&str> = sagas.iter().map(|s| s.failure_reason.as_str()).collect();
    sqlx::query(
        "UPDATE sales SET state = $3, failure_reason = u.reason, base_commission = NULL, total_commission = NULL
         FROM UNNEST($1::uuid[], $2::text[]) AS u(saga_id, reason)
         JOIN sagas g ON g.id = u.saga_id
         WHERE sales.id = g.sale_id",
    )
    .bind(&saga_ids)
    .bind(&reasons)
    .bind(SaleState::Failed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
