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
use accrue_kit::events::{NewEvent, catalogue};
use accrue_saga::{Saga, SagaDef, SagaState, StepEvent};

use crate::domain::link::Split;
use crate::domain::sale::{SaleEventType, SaleInput};
use crate::domain::state::SaleState;
use crate::domain::touch::{Model, Rule};
use crate::events;
use crate::saga::settle_sale::SettleSale;

mod links;
mod sagas;
mod settlement;
mod stats;
mod touches;

pub(crate) use links::*;
pub(crate) use sagas::*;
pub(crate) use settlement::*;
pub(crate) use stats::*;
pub(crate) use touches::*;

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
    /// When it was archived; None while live.
    pub(crate) archived_at: Option<DateTime<Utc>>,
}

impl LinkRow {
    /// The partners the link pays: its owner, then its split partners.
    pub(crate) fn partners(&self) -> Vec<PartnerId> {
        std::iter::once(self.owner_partner_id).chain(self.splits.iter().map(|split| split.partner_id)).collect()
    }
}

const LINK_COLUMNS: &str = "id, program_id, owner_partner_id, key, destination_url, splits, created_at, archived_at";

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
    /// The attribution model in force at `occurred_at` (issue 14 item 2).
    pub(crate) attribution_model: Model,
    /// Its window in days (0 under first touch).
    pub(crate) attribution_window_days: i32,
    /// When its settlement saga settled it (NULL until then).
    pub(crate) settled_at: Option<DateTime<Utc>>,
}

impl SaleRow {
    /// The attribution rule the sale was recorded under.
    pub(crate) fn attribution_rule(&self) -> Rule {
        Rule { model: self.attribution_model, window_days: self.attribution_window_days }
    }
}

const SALE_COLUMNS: &str = "id, program_id, external_id, request_hash, customer_external_id, event_type, currency, \
    amount, product_code, service_code, occurred_at, link_id, partner_id, splits, state, failure_reason, saga_id, \
    base_commission, total_commission, created_at, refunded_amount, attribution_model, attribution_window_days, \
    settled_at";

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

/// Where a customer's sale goes: the credited link, the link owner (the
/// seller) and the link's split config.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Attribution {
    pub(crate) program_id: ProgramId,
    pub(crate) customer_external_id: String,
    pub(crate) link_id: LinkId,
    pub(crate) partner_id: PartnerId,
    pub(crate) splits: serde_json::Value,
}

/// The attributions of a batch of sales: by (program, customer, occurred_at)
/// — under last touch the time decides — and each program's attribution
/// settings history, which gives the rule of every sale.
#[derive(Debug, Default)]
pub(crate) struct Attributions {
    found: HashMap<(ProgramId, String, DateTime<Utc>), Attribution>,
    settings: HashMap<ProgramId, Vec<SettingsRow>>,
}

impl Attributions {
    /// The rule in force at the sale's occurred_at in its program.
    pub(crate) fn rule_of(&self, sale: &SaleInput) -> Rule {
        rule_at(self.settings.get(&sale.program_id).map_or(&[], Vec::as_slice), sale.occurred_at)
    }
}

/// Resolves the attribution of every sale that names a customer (issue 14
/// item 2), in at most three queries: the programs' settings; under first
/// touch the customer's lead (a first-touch lead is kept for good);
/// under last touch the customer's most recent click or lead on a link of
/// the program in [occurred_at − window, occurred_at] (a lead before a
/// click at the same instant). A link's split config is immutable, so what
/// this reads is what the sale is recorded with.
pub(crate) async fn attributions(pool: &PgPool, sales: &[SaleInput]) -> Result<Attributions, StoreError> {
    let with_customer: Vec<&SaleInput> = sales.iter().filter(|sale| sale.customer_external_id.is_some()).collect();
    if with_customer.is_empty() {
        return Ok(Attributions::default());
    }
    let mut programs: Vec<ProgramId> = with_customer.iter().map(|sale| sale.program_id).collect();
    programs.sort_unstable();
    programs.dedup();
    let settings = settings_histories(pool, &programs).await?;
    let mut out = Attributions { found: HashMap::new(), settings };
    let (first, last): (Vec<&SaleInput>, Vec<&SaleInput>) =
        with_customer.into_iter().partition(|sale| out.rule_of(sale).model == Model::FirstTouch);
    let customer = |sale: &SaleInput| sale.customer_external_id.clone().unwrap_or_default();
    if !first.is_empty() {
        let programs: Vec<ProgramId> = first.iter().map(|sale| sale.program_id).collect();
        let customers: Vec<String> = first.iter().map(|sale| customer(sale)).collect();
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
        let by_customer: HashMap<(ProgramId, String), Attribution> =
            rows.into_iter().map(|row| ((row.program_id, row.customer_external_id.clone()), row)).collect();
        for sale in first {
            if let Some(row) = by_customer.get(&(sale.program_id, customer(sale))) {
                out.found.insert((sale.program_id, customer(sale), sale.occurred_at), row.clone());
            }
        }
    }
    if !last.is_empty() {
        let programs: Vec<ProgramId> = last.iter().map(|sale| sale.program_id).collect();
        let customers: Vec<String> = last.iter().map(|sale| customer(sale)).collect();
        let times: Vec<DateTime<Utc>> = last.iter().map(|sale| sale.occurred_at).collect();
        let starts: Vec<Option<DateTime<Utc>>> =
            last.iter().map(|sale| out.rule_of(sale).window_start(sale.occurred_at)).collect();
        for (key, row) in last_touches(pool, &programs, &customers, &times, &starts).await? {
            out.found.insert(key, row);
        }
    }
    Ok(out)
}

/// The attribution of one sale, if it names a customer with a touch that
/// credits it.
pub(crate) fn attribution_of<'a>(attributions: &'a Attributions, sale: &SaleInput) -> Option<&'a Attribution> {
    let customer = sale.customer_external_id.as_ref()?;
    attributions.found.get(&(sale.program_id, customer.clone(), sale.occurred_at))
}

/// Records a batch of validated sales in one transaction (set-based, UNNEST):
/// idempotent on (program, external_id) with the request hash; each sale is
/// attributed (`attributions`, from [`attributions`]) to its customer's link
/// owner (with the link's splits snapshotted) and gets its SettleSale saga row
/// in the same transaction (transactional outbox); a sale with no customer or
/// no lead is UNATTRIBUTED and gets no saga. A new sale whose seller is in
/// `barred` (partner → role) stops the batch before anything is written; a
/// replay of a stored sale returns it as stored. `traceparents[i]` is sale
/// `i`'s recording trace, kept on its saga for the steps to join.
pub(crate) async fn record_sales(
    pool: &PgPool,
    sales: &[SaleInput],
    traceparents: &[Option<String>],
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
    // The sales stored already are read first only when a seller of the
    // batch may not transact: only a new sale of theirs stops the batch, a
    // replay returns the stored sale. Otherwise a stored sale is simply not
    // inserted again (ON CONFLICT below) and is read back with any that a
    // concurrent call won, one round trip fewer per batch (issue 15).
    let mut stored: HashMap<(ProgramId, String), SaleRow> = if barred.is_empty() {
        HashMap::new()
    } else {
        let programs: Vec<ProgramId> = unique.iter().map(|&i| sales[i].program_id).collect();
        let externals: Vec<String> = unique.iter().map(|&i| sales[i].external_id.clone()).collect();
        fetch_by_external(&mut tx, &programs, &externals).await?
    };
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
        let mut models: Vec<&str> = Vec::with_capacity(n);
        let mut windows: Vec<i32> = Vec::with_capacity(n);
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
            let rule = attributions.rule_of(sale);
            models.push(rule.model.as_str());
            windows.push(rule.window_days);
        }
        // Each sale inserted with its SettleSale saga row (an attributed
        // one's), in one statement: the foreign key is checked at its end.
        let traces: Vec<Option<&String>> =
            fresh.iter().map(|&i| traceparents.get(i).and_then(Option::as_ref)).collect();
        let inserted: Vec<SaleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH s AS (
                 INSERT INTO sales (id, program_id, external_id, request_hash, customer_external_id, event_type,
                     currency, amount, product_code, service_code, occurred_at, link_id, partner_id, splits, state,
                     saga_id, attribution_model, attribution_window_days)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::numeric[], $9::text[], $10::text[], $11::timestamptz[], $12::uuid[],
                     $13::uuid[], $14::jsonb[], $15::text[], $16::uuid[], $17::text[], $18::int[])
                 ON CONFLICT (program_id, external_id) DO NOTHING
                 RETURNING {SALE_COLUMNS}
             ), started AS (
                 INSERT INTO sagas (id, program_id, sale_id, kind, state, traceparent)
                 SELECT s.saga_id, s.program_id, s.id, $19, $20, t.traceparent
                 FROM s JOIN UNNEST($1::uuid[], $21::text[]) AS t(sale_id, traceparent) ON t.sale_id = s.id
                 WHERE s.saga_id IS NOT NULL
             )
             SELECT * FROM s"
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
        .bind(&models)
        .bind(&windows)
        .bind(SettleSale::KIND)
        .bind(SagaState::Running)
        .bind(&traces)
        .fetch_all(&mut *tx)
        .await?;
        sagas_started = inserted.iter().filter(|row| row.saga_id.is_some()).count();

        // The outbox, in the recording transaction: one sale.recorded per
        // sale inserted (a replayed or concurrently won sale has its event
        // already), in one statement.
        let recorded: Vec<NewEvent> =
            inserted.iter().map(|row| events::sale(&catalogue::SALE_RECORDED, row, row.created_at)).collect();
        accrue_kit::events::insert(&mut tx, &recorded).await?;

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
