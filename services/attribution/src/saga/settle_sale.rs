//! SettleSale's five steps, each action paired with its undo (omicron style).
//! Every action works on the whole claimed batch at once (one query or one
//! peer call per ≤1000 items) and is idempotent: running it twice has the
//! effect of running it once.
//!
//! | step    | action                                   | undo                                  |
//! |---------|------------------------------------------|---------------------------------------|
//! | resolve | local facts (first payment, volume, …)   | nothing                               |
//! | upline  | hierarchy.GetUplines                     | nothing                               |
//! | compute | commission.ComputeSettlements            | nothing                               |
//! | post    | ledger.PostEntries (key per saga run)    | ledger VOID the run's entries         |
//! | settle  | sale SETTLED with totals                 | sale back to PENDING                  |

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as tpb;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Step;
use super::engine::{Engine, Item, StepError};
use crate::domain::link::Split;
use crate::domain::sale::EventType;
use crate::domain::settings::version_in_force;

/// Most items per peer call (the peers' batch limit).
const MAX_BATCH: usize = 1000;
/// Concurrent per-saga undo calls.
const UNDO_CONCURRENCY: usize = 16;
/// Who voids entries when a saga unwinds.
const ACTOR: &str = "attribution-saga";

/// The ledger idempotency key of a saga run's posting.
pub(crate) fn post_key(saga_id: Uuid, run: i32) -> String {
    format!("saga:{saga_id}:run:{run}:post")
}

/// resolve's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResolveOut {
    /// The selling partner (link owner).
    pub(crate) seller_partner_id: Uuid,
    /// The attributed link.
    pub(crate) link_id: Option<Uuid>,
    /// The link's splits as snapshotted on the sale.
    pub(crate) splits: Vec<Split>,
    /// The customer's first PAYMENT/RENEWAL in the program.
    pub(crate) is_first_payment: bool,
    /// Σ the seller's earlier sales in the sale's currency (major units).
    pub(crate) seller_prior_volume: Decimal,
    /// The customer's earlier sales, oldest first.
    pub(crate) customer_history: Vec<HistoryItem>,
}

/// One earlier sale of the customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HistoryItem {
    pub(crate) sale_id: Uuid,
    pub(crate) event_type: String,
    pub(crate) seller_partner_id: Option<Uuid>,
    pub(crate) occurred_at: DateTime<Utc>,
    /// Its service code: commission leaves scheme-managed sales out of the
    /// events under an agreement. Absent in outputs stored before it existed.
    #[serde(default)]
    pub(crate) service_code: String,
}

/// A partner's status and role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct PartnerCtx {
    pub(crate) partner_id: String,
    pub(crate) status: i32,
    pub(crate) role: String,
}

/// The program settings the calculation needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ProgramCtx {
    pub(crate) rounding_mode: i32,
    pub(crate) override_depth_cap: i32,
    pub(crate) compression_enabled: bool,
    /// The hierarchy settings version these are: the one in force at the
    /// sale's occurred_at (see [`version_in_force`]).
    pub(crate) settings_version: i32,
}

/// A split partner with its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SplitCtx {
    pub(crate) partner: PartnerCtx,
    pub(crate) basis_points: i32,
}

/// upline's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UplineOut {
    pub(crate) program: ProgramCtx,
    pub(crate) seller: PartnerCtx,
    pub(crate) ancestors: Vec<PartnerCtx>,
    pub(crate) splits: Vec<SplitCtx>,
}

/// A line's breakdown.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct BreakdownOut {
    model: String,
    formula: String,
    inputs: BTreeMap<String, String>,
    rule: String,
    agreement_version_id: String,
    rounding: String,
    note: String,
}

/// One settlement line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LineOut {
    partner_id: String,
    kind: String,
    currency: String,
    amount: Decimal,
    level: i32,
    source_partner_id: String,
    clears_at: Option<DateTime<Utc>>,
    breakdown: Option<BreakdownOut>,
}

/// compute's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ComputeOut {
    pub(crate) currency: String,
    pub(crate) base_commission: Decimal,
    pub(crate) agreement_version_id: String,
    pub(crate) lines: Vec<LineOut>,
}

/// post's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PostOut {
    pub(crate) idempotency_key: String,
    pub(crate) entry_ids: Vec<String>,
}

/// settle's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettleOut {
    pub(crate) currency: String,
    pub(crate) base_commission: Decimal,
    pub(crate) total_commission: Decimal,
}

type StepResult = Result<Value, StepError>;

fn to_value<T: Serialize>(output: &T) -> StepResult {
    serde_json::to_value(output).map_err(|e| StepError::Permanent(format!("cannot encode step output: {e}")))
}

fn earlier<T: DeserializeOwned>(item: &Item<'_>, step: Step) -> Result<T, StepError> {
    let value = item
        .saga
        .output(step)
        .ok_or_else(|| StepError::Permanent(format!("the output of {step} is missing from the saga log")))?;
    serde_json::from_value(value.clone())
        .map_err(|e| StepError::Permanent(format!("the output of {step} in the saga log does not decode: {e}")))
}

fn currency_of(item: &Item<'_>) -> Result<Currency, StepError> {
    Currency::from_code(&item.sale.currency).map_err(|e| StepError::Permanent(e.to_string()))
}

/// Runs `step`'s action for every item; one result per item, in order.
pub(crate) async fn action(engine: &Engine, step: Step, items: &[Item<'_>]) -> Vec<StepResult> {
    if items.is_empty() {
        return Vec::new();
    }
    match step {
        Step::Resolve => resolve(engine, items).await,
        Step::Upline => upline(engine, items).await,
        Step::Compute => compute(engine, items).await,
        Step::Post => post(engine, items).await,
        Step::Settle => settle(engine, items).await,
    }
}

/// Runs `step`'s undo for every item; one result per item, in order.
pub(crate) async fn undo(engine: &Engine, step: Step, items: &[Item<'_>]) -> Vec<StepResult> {
    match step {
        Step::Resolve | Step::Upline | Step::Compute => items.iter().map(|_| Ok(json!({}))).collect(),
        Step::Post => {
            let mut calls = Vec::with_capacity(items.len());
            for item in items {
                calls.push(undo_post(engine, *item));
            }
            futures::stream::iter(calls).buffered(UNDO_CONCURRENCY).collect().await
        }
        Step::Settle => undo_settle(engine, items).await,
    }
}

// ------------------------------------------------------------------ resolve

#[derive(sqlx::FromRow)]
struct ResolvedRow {
    id: Uuid,
    is_first_payment: bool,
    prior_volume: Decimal,
    history: Value,
}

async fn resolve(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let ids: Vec<Uuid> = items.iter().map(|item| item.sale.id).collect();
    let rows: Result<Vec<ResolvedRow>, sqlx::Error> = sqlx::query_as(
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
    .bind(&ids)
    .fetch_all(&engine.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return items.iter().map(|_| Err(StepError::from_db(&error))).collect(),
    };
    let by_id: HashMap<Uuid, ResolvedRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    items
        .iter()
        .map(|item| {
            let row = by_id.get(&item.sale.id).ok_or_else(|| StepError::Permanent("the sale vanished".into()))?;
            let seller = item.sale.partner_id.ok_or_else(|| StepError::Permanent("the sale has no seller".into()))?;
            let customer_history: Vec<HistoryItem> = serde_json::from_value(row.history.clone())
                .map_err(|e| StepError::Permanent(format!("customer history does not decode: {e}")))?;
            to_value(&ResolveOut {
                seller_partner_id: seller,
                link_id: item.sale.link_id,
                splits: item.sale.splits.0.clone(),
                is_first_payment: row.is_first_payment,
                seller_prior_volume: row.prior_volume,
                customer_history,
            })
        })
        .collect()
}

// ------------------------------------------------------------------ upline

/// Calls `call` per chunk; when a multi-item chunk fails permanently, retries
/// its items one by one so that one bad item fails alone.
async fn per_chunk<T, F, Fut>(chunks: Vec<Vec<usize>>, total: usize, call: F) -> Vec<Result<T, StepError>>
where
    F: Fn(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<T, StepError>>, StepError>>,
{
    let mut results: Vec<Option<Result<T, StepError>>> = (0..total).map(|_| None).collect();
    for chunk in chunks {
        match call(chunk.clone()).await {
            Ok(outcomes) => {
                for (i, outcome) in chunk.iter().zip(outcomes) {
                    results[*i] = Some(outcome);
                }
            }
            Err(StepError::Permanent(_)) if chunk.len() > 1 => {
                for i in chunk {
                    let outcome = match call(vec![i]).await {
                        Ok(mut outcomes) => {
                            outcomes.pop().unwrap_or_else(|| Err(StepError::Transient("no result".into())))
                        }
                        Err(error) => Err(error),
                    };
                    results[i] = Some(outcome);
                }
            }
            Err(error) => {
                for i in chunk {
                    results[i] = Some(Err(error.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StepError::Transient("item was not processed".into()))))
        .collect()
}

/// Groups item indices by program, then cuts each group into chunks whose
/// `weight` (ids per item) stays within [`MAX_BATCH`].
fn chunk_by_program(items: &[Item<'_>], weight: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(item.saga.program_id).or_default().push(i);
    }
    let mut chunks = Vec::new();
    for (_, group) in groups {
        let mut current: Vec<usize> = Vec::new();
        let mut load = 0;
        for i in group {
            let w = weight(i).max(1);
            if !current.is_empty() && load + w > MAX_BATCH {
                chunks.push(std::mem::take(&mut current));
                load = 0;
            }
            current.push(i);
            load += w;
        }
        if !current.is_empty() {
            chunks.push(current);
        }
    }
    chunks
}

fn partner_ctx(partner: Option<&hpb::PartnerRef>) -> Option<PartnerCtx> {
    partner.map(|p| PartnerCtx { partner_id: p.id.clone(), status: p.status, role: p.role.clone() })
}

async fn upline(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let resolved: Vec<Result<ResolveOut, StepError>> = items.iter().map(|item| earlier(item, Step::Resolve)).collect();
    let ok_idx: Vec<usize> = (0..items.len()).filter(|&i| resolved[i].is_ok()).collect();
    let ok_items: Vec<Item<'_>> = ok_idx.iter().map(|&i| items[i]).collect();
    let ok_resolved: Vec<&ResolveOut> = resolved.iter().filter_map(|r| r.as_ref().ok()).collect();
    let chunks = chunk_by_program(&ok_items, |i| 1 + ok_resolved.get(i).map_or(0, |r| r.splits.len()));
    let outcomes = per_chunk(chunks, ok_items.len(), |chunk| {
        let mut client = engine.peers.hierarchy.clone();
        let program_id = chunk.first().map(|&i| ok_items[i].saga.program_id).unwrap_or_default();
        let mut partner_ids: Vec<String> = Vec::new();
        for &i in &chunk {
            let r = ok_resolved[i];
            for id in std::iter::once(r.seller_partner_id).chain(r.splits.iter().map(|s| s.partner_id)) {
                let id = id.to_string();
                if !partner_ids.contains(&id) {
                    partner_ids.push(id);
                }
            }
        }
        let resolved = &ok_resolved;
        let occurred: Vec<DateTime<Utc>> = chunk.iter().map(|&i| ok_items[i].sale.occurred_at).collect();
        async move {
            let response = client
                .get_uplines(hpb::GetUplinesRequest { program_id: program_id.to_string(), partner_ids })
                .await
                .map_err(|status| StepError::from_status("hierarchy.GetUplines", &status))?
                .into_inner();
            let program = response
                .program
                .ok_or_else(|| StepError::Permanent("hierarchy.GetUplines returned no program".into()))?;
            let mut history = Vec::with_capacity(program.settings_history.len());
            for version in &program.settings_history {
                let effective_from = version
                    .effective_from
                    .as_ref()
                    .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
                    .ok_or_else(|| {
                        StepError::Permanent(format!(
                            "settings version {} has no valid effective_from",
                            version.version
                        ))
                    })?;
                let ctx = ProgramCtx {
                    rounding_mode: version.rounding_mode,
                    override_depth_cap: version.override_depth_cap,
                    compression_enabled: version.compression_enabled,
                    settings_version: version.version,
                };
                history.push((ctx, effective_from));
            }
            let by_id: HashMap<&str, &hpb::Upline> =
                response.uplines.iter().filter_map(|u| u.partner.as_ref().map(|p| (p.id.as_str(), u))).collect();
            let missing = |id: Uuid| StepError::Permanent(format!("hierarchy returned no upline for partner {id}"));
            Ok(chunk
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let r = resolved[i];
                    let seller = by_id
                        .get(r.seller_partner_id.to_string().as_str())
                        .ok_or_else(|| missing(r.seller_partner_id))?;
                    let mut splits = Vec::with_capacity(r.splits.len());
                    for split in &r.splits {
                        let upline = by_id
                            .get(split.partner_id.to_string().as_str())
                            .ok_or_else(|| missing(split.partner_id))?;
                        let partner = partner_ctx(upline.partner.as_ref()).ok_or_else(|| missing(split.partner_id))?;
                        splits.push(SplitCtx { partner, basis_points: split.basis_points });
                    }
                    let (program, _) = version_in_force(&history, occurred[k], |v| v.1)
                        .ok_or_else(|| StepError::Permanent(format!("program {program_id} has no settings version")))?;
                    to_value(&UplineOut {
                        program: program.clone(),
                        seller: partner_ctx(seller.partner.as_ref()).ok_or_else(|| missing(r.seller_partner_id))?,
                        ancestors: seller.ancestors.iter().filter_map(|a| partner_ctx(Some(a))).collect(),
                        splits,
                    })
                })
                .collect())
        }
    })
    .await;
    merge(resolved.into_iter().map(|r| r.map(|_| ())).collect(), ok_idx, outcomes)
}

/// Puts per-chunk outcomes back at their item positions; items that failed
/// before the call keep their error.
fn merge(pre: Vec<Result<(), StepError>>, ok_idx: Vec<usize>, outcomes: Vec<StepResult>) -> Vec<StepResult> {
    let mut results: Vec<StepResult> = pre.into_iter().map(|r| r.map(|_| Value::Null)).collect();
    for (i, outcome) in ok_idx.into_iter().zip(outcomes) {
        results[i] = outcome;
    }
    results
}

// ------------------------------------------------------------------ compute

fn failure_message(failure: &tpb::ItemFailure) -> String {
    format!("{} {}: {}", failure.code, failure.reason, failure.message)
}

fn event_type_proto(name: &str) -> i32 {
    EventType::parse(name).map_or(0, |e| e.to_proto() as i32)
}

fn partner_context(p: &PartnerCtx) -> cpb::PartnerContext {
    cpb::PartnerContext { partner_id: p.partner_id.clone(), status: p.status, role: p.role.clone() }
}

fn sale_context(item: &Item<'_>, r: &ResolveOut, u: &UplineOut, currency: Currency) -> cpb::SaleContext {
    let sale = item.sale;
    cpb::SaleContext {
        sale_id: sale.id.to_string(),
        event_type: event_type_proto(&sale.event_type),
        amount: Some(amount_to_proto(currency, sale.amount)),
        product_code: sale.product_code.clone(),
        service_code: sale.service_code.clone(),
        occurred_at: Some(timestamp(sale.occurred_at)),
        customer_id: sale.customer_external_id.clone().unwrap_or_default(),
        seller: Some(partner_context(&u.seller)),
        splits: u
            .splits
            .iter()
            .map(|s| cpb::SplitContext { partner: Some(partner_context(&s.partner)), basis_points: s.basis_points })
            .collect(),
        ancestors: u.ancestors.iter().map(partner_context).collect(),
        is_first_payment: r.is_first_payment,
        seller_prior_volume: Some(amount_to_proto(currency, r.seller_prior_volume)),
        customer_history: r
            .customer_history
            .iter()
            .map(|h| cpb::PriorEvent {
                sale_id: h.sale_id.to_string(),
                event_type: event_type_proto(&h.event_type),
                seller_partner_id: h.seller_partner_id.map(|p| p.to_string()).unwrap_or_default(),
                occurred_at: Some(timestamp(h.occurred_at)),
                service_code: h.service_code.clone(),
            })
            .collect(),
    }
}

fn from_timestamp(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn breakdown_out(b: &tpb::CommissionBreakdown) -> BreakdownOut {
    BreakdownOut {
        model: b.model.clone(),
        formula: b.formula.clone(),
        inputs: b.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rule: b.rule.clone(),
        agreement_version_id: b.agreement_version_id.clone(),
        rounding: b.rounding.clone(),
        note: b.note.clone(),
    }
}

fn breakdown_proto(b: &BreakdownOut) -> tpb::CommissionBreakdown {
    tpb::CommissionBreakdown {
        model: b.model.clone(),
        formula: b.formula.clone(),
        inputs: b.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rule: b.rule.clone(),
        agreement_version_id: b.agreement_version_id.clone(),
        rounding: b.rounding.clone(),
        note: b.note.clone(),
    }
}

fn parse_amount(money: Option<&tpb::Money>, fallback: Currency) -> Result<(Currency, Decimal), StepError> {
    let Some(money) = money else {
        return Ok((fallback, Decimal::ZERO));
    };
    let bad = |e: accrue_money::MoneyError| StepError::Permanent(format!("commission returned an invalid amount: {e}"));
    let currency = if money.currency_code.is_empty() {
        fallback
    } else {
        Currency::from_code(&money.currency_code).map_err(bad)?
    };
    let amount =
        if money.amount.is_empty() { Decimal::ZERO } else { currency.parse_amount(&money.amount).map_err(bad)? };
    Ok((currency, amount))
}

fn compute_out(settlement: &cpb::Settlement, currency: Currency) -> StepResult {
    if let Some(failure) = &settlement.failure {
        return Err(StepError::Permanent(failure_message(failure)));
    }
    let (base_currency, base) = parse_amount(settlement.base_commission.as_ref(), currency)?;
    let mut lines = Vec::with_capacity(settlement.lines.len());
    for line in &settlement.lines {
        let (line_currency, amount) = parse_amount(line.amount.as_ref(), currency)?;
        lines.push(LineOut {
            partner_id: line.partner_id.clone(),
            kind: tpb::EarningKind::try_from(line.kind)
                .map_or_else(|_| line.kind.to_string(), |k| k.as_str_name().to_string()),
            currency: line_currency.code().to_string(),
            amount,
            level: line.level,
            source_partner_id: line.source_partner_id.clone(),
            clears_at: from_timestamp(line.clears_at.as_ref()),
            breakdown: line.breakdown.as_ref().map(breakdown_out),
        });
    }
    to_value(&ComputeOut {
        currency: base_currency.code().to_string(),
        base_commission: base,
        agreement_version_id: settlement.agreement_version_id.clone(),
        lines,
    })
}

async fn compute(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<(ResolveOut, UplineOut, Currency), StepError>> = items
        .iter()
        .map(|item| Ok((earlier(item, Step::Resolve)?, earlier(item, Step::Upline)?, currency_of(item)?)))
        .collect();
    let ok_idx: Vec<usize> = (0..items.len()).filter(|&i| inputs[i].is_ok()).collect();
    let ok_items: Vec<Item<'_>> = ok_idx.iter().map(|&i| items[i]).collect();
    let ok_inputs: Vec<&(ResolveOut, UplineOut, Currency)> = inputs.iter().filter_map(|r| r.as_ref().ok()).collect();
    // One request per program and program settings (settings live in each saga's log).
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    for chunk in chunk_by_program(&ok_items, |_| 1) {
        let mut by_ctx: Vec<(ProgramCtx, Vec<usize>)> = Vec::new();
        for i in chunk {
            let ctx = &ok_inputs[i].1.program;
            match by_ctx.iter_mut().find(|(c, _)| c == ctx) {
                Some((_, group)) => group.push(i),
                None => by_ctx.push((ctx.clone(), vec![i])),
            }
        }
        chunks.extend(by_ctx.into_iter().map(|(_, group)| group));
    }
    let outcomes = per_chunk(chunks, ok_items.len(), |chunk| {
        let mut client = engine.peers.commission.clone();
        let first = chunk.first().copied().unwrap_or(0);
        let program_id = ok_items.get(first).map(|i| i.saga.program_id).unwrap_or_default();
        let ctx = ok_inputs.get(first).map(|i| i.1.program.clone());
        let sales: Vec<cpb::SaleContext> = chunk
            .iter()
            .map(|&i| {
                let (r, u, currency) = ok_inputs[i];
                sale_context(&ok_items[i], r, u, *currency)
            })
            .collect();
        let currencies: Vec<Currency> = chunk.iter().map(|&i| ok_inputs[i].2).collect();
        async move {
            let ctx = ctx.ok_or_else(|| StepError::Permanent("a compute chunk without sales".into()))?;
            let n = sales.len();
            let sale_ids: Vec<String> = sales.iter().map(|s| s.sale_id.clone()).collect();
            let response = client
                .compute_settlements(cpb::ComputeSettlementsRequest {
                    program: Some(cpb::ProgramContext {
                        program_id: program_id.to_string(),
                        rounding_mode: ctx.rounding_mode,
                        override_depth_cap: ctx.override_depth_cap,
                        compression_enabled: ctx.compression_enabled,
                        settings_version: ctx.settings_version,
                    }),
                    sales,
                })
                .await
                .map_err(|status| StepError::from_status("commission.ComputeSettlements", &status))?
                .into_inner();
            let by_sale: HashMap<&str, &cpb::Settlement> =
                response.settlements.iter().map(|s| (s.sale_id.as_str(), s)).collect();
            Ok((0..n)
                .map(|k| {
                    let settlement = by_sale
                        .get(sale_ids[k].as_str())
                        .copied()
                        .or_else(|| response.settlements.get(k).filter(|s| s.sale_id.is_empty()))
                        .ok_or_else(|| StepError::Transient("commission returned no settlement for the sale".into()))?;
                    compute_out(settlement, currencies[k])
                })
                .collect())
        }
    })
    .await;
    merge(inputs.into_iter().map(|r| r.map(|_| ())).collect(), ok_idx, outcomes)
}

// ------------------------------------------------------------------ post

fn entry_input(line: &LineOut, occurred_at: DateTime<Utc>) -> Result<lpb::EntryInput, StepError> {
    let currency = Currency::from_code(&line.currency).map_err(|e| StepError::Permanent(e.to_string()))?;
    Ok(lpb::EntryInput {
        partner_id: line.partner_id.clone(),
        kind: tpb::EarningKind::from_str_name(&line.kind).map_or(0, |k| k as i32),
        amount: Some(amount_to_proto(currency, line.amount)),
        level: line.level,
        source_partner_id: line.source_partner_id.clone(),
        occurred_at: Some(timestamp(occurred_at)),
        clears_at: line.clears_at.map(timestamp),
        breakdown: line.breakdown.as_ref().map(breakdown_proto),
    })
}

fn posting(item: &Item<'_>) -> Result<lpb::SalePosting, StepError> {
    let computed: ComputeOut = earlier(item, Step::Compute)?;
    let lines =
        computed.lines.iter().map(|line| entry_input(line, item.sale.occurred_at)).collect::<Result<Vec<_>, _>>()?;
    Ok(lpb::SalePosting {
        idempotency_key: post_key(item.saga.id, item.saga.run),
        sale_id: item.sale.id.to_string(),
        lines,
    })
}

async fn post(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let postings: Vec<Result<lpb::SalePosting, StepError>> = items.iter().map(posting).collect();
    let ok_idx: Vec<usize> = (0..items.len()).filter(|&i| postings[i].is_ok()).collect();
    let ok_items: Vec<Item<'_>> = ok_idx.iter().map(|&i| items[i]).collect();
    let ok_postings: Vec<&lpb::SalePosting> = postings.iter().filter_map(|p| p.as_ref().ok()).collect();
    let chunks = chunk_by_program(&ok_items, |_| 1);
    let outcomes = per_chunk(chunks, ok_items.len(), |chunk| {
        let mut client = engine.peers.ledger.clone();
        let program_id = chunk.first().map(|&i| ok_items[i].saga.program_id).unwrap_or_default();
        let postings: Vec<lpb::SalePosting> = chunk.iter().map(|&i| ok_postings[i].clone()).collect();
        async move {
            let keys: Vec<String> = postings.iter().map(|p| p.idempotency_key.clone()).collect();
            let response = client
                .post_entries(lpb::PostEntriesRequest { program_id: program_id.to_string(), postings })
                .await
                .map_err(|status| StepError::from_status("ledger.PostEntries", &status))?
                .into_inner();
            let by_key: HashMap<&str, &lpb::PostingResult> =
                response.results.iter().map(|r| (r.idempotency_key.as_str(), r)).collect();
            Ok(keys
                .iter()
                .enumerate()
                .map(|(k, key)| {
                    let result = by_key
                        .get(key.as_str())
                        .copied()
                        .or_else(|| response.results.get(k))
                        .ok_or_else(|| StepError::Transient("ledger returned no result for the posting".into()))?;
                    if let Some(failure) = &result.failure {
                        return Err(StepError::Permanent(failure_message(failure)));
                    }
                    to_value(&PostOut { idempotency_key: key.clone(), entry_ids: result.entry_ids.clone() })
                })
                .collect())
        }
    })
    .await;
    merge(postings.into_iter().map(|r| r.map(|_| ())).collect(), ok_idx, outcomes)
}

/// Voids every live entry this saga run posted: those listed for the sale
/// under the run's key (so a post that took effect but whose output was never
/// logged is found too), plus the logged entry ids. Idempotent: already
/// voided entries are skipped.
async fn undo_post(engine: &Engine, item: Item<'_>) -> StepResult {
    let key = post_key(item.saga.id, item.saga.run);
    let logged: Vec<String> = item
        .saga
        .output(Step::Post)
        .and_then(|v| serde_json::from_value::<PostOut>(v.clone()).ok())
        .map(|p| p.entry_ids)
        .unwrap_or_default();
    let mut client = engine.peers.ledger.clone();
    let mut to_void: Vec<String> = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .list_entries(lpb::ListEntriesRequest {
                program_id: item.saga.program_id.to_string(),
                sale_id: item.sale.id.to_string(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| StepError::from_status("ledger.ListEntries", &status))?
            .into_inner();
        for entry in &response.entries {
            let ours = entry.idempotency_key == key || logged.contains(&entry.id);
            if ours && entry.status != lpb::EntryStatus::Voided as i32 && !to_void.contains(&entry.id) {
                to_void.push(entry.id.clone());
            }
        }
        if response.next_page_token.is_empty() || response.entries.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    let count = to_void.len();
    if !to_void.is_empty() {
        client
            .transition_entries(lpb::TransitionEntriesRequest {
                program_id: item.saga.program_id.to_string(),
                entry_ids: to_void.clone(),
                to_status: lpb::EntryStatus::Voided as i32,
                actor: ACTOR.to_string(),
                reason: format!("saga {} run {} unwound: {}", item.saga.id, item.saga.run, item.saga.failure_reason),
            })
            .await
            .map_err(|status| StepError::from_status("ledger.TransitionEntries", &status))?;
    }
    Ok(json!({ "idempotency_key": key, "voided_entry_ids": to_void, "voided": count }))
}

// ------------------------------------------------------------------ settle

async fn settle(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let outs: Vec<Result<SettleOut, StepError>> = items
        .iter()
        .map(|item| {
            let computed: ComputeOut = earlier(item, Step::Compute)?;
            let total = computed.lines.iter().map(|l| l.amount).sum::<Decimal>();
            Ok(SettleOut {
                currency: item.sale.currency.clone(),
                base_commission: computed.base_commission,
                total_commission: total,
            })
        })
        .collect();
    let ok_idx: Vec<usize> = (0..items.len()).filter(|&i| outs[i].is_ok()).collect();
    let saga_ids: Vec<Uuid> = ok_idx.iter().map(|&i| items[i].saga.id).collect();
    let generations: Vec<i64> = ok_idx.iter().map(|&i| items[i].saga.generation).collect();
    let bases: Vec<Decimal> = outs.iter().filter_map(|o| o.as_ref().ok()).map(|o| o.base_commission).collect();
    let totals: Vec<Decimal> = outs.iter().filter_map(|o| o.as_ref().ok()).map(|o| o.total_commission).collect();
    let updated = sqlx::query(
        "UPDATE sales SET state = 'SETTLED', base_commission = u.base, total_commission = u.total, failure_reason = ''
         FROM UNNEST($1::uuid[], $2::bigint[], $3::numeric[], $4::numeric[]) AS u(saga_id, generation, base, total)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE sales.id = g.sale_id",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .bind(&bases)
    .bind(&totals)
    .execute(&engine.pool)
    .await;
    if let Err(error) = updated {
        return items.iter().map(|_| Err(StepError::from_db(&error))).collect();
    }
    outs.into_iter().map(|o| o.and_then(|o| to_value(&o))).collect()
}

async fn undo_settle(engine: &Engine, items: &[Item<'_>]) -> Vec<StepResult> {
    let saga_ids: Vec<Uuid> = items.iter().map(|i| i.saga.id).collect();
    let generations: Vec<i64> = items.iter().map(|i| i.saga.generation).collect();
    let updated = sqlx::query(
        "UPDATE sales SET state = 'PENDING', base_commission = NULL, total_commission = NULL
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(saga_id, generation)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE sales.id = g.sale_id AND sales.state = 'SETTLED'",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .execute(&engine.pool)
    .await;
    match updated {
        Ok(_) => items.iter().map(|_| Ok(json!({}))).collect(),
        Err(error) => items.iter().map(|_| Err(StepError::from_db(&error))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_key_names_saga_and_run() {
        let id = Uuid::nil();
        assert_eq!(post_key(id, 2), "saga:00000000-0000-0000-0000-000000000000:run:2:post");
    }

    #[test]
    fn compute_out_rejects_failures_and_sums() {
        let gbp = Currency::from_code("GBP").unwrap();
        let failed = cpb::Settlement {
            failure: Some(tpb::ItemFailure {
                code: "FAILED_PRECONDITION".into(),
                reason: "CURRENCY_MISMATCH".into(),
                message: "x".into(),
            }),
            ..Default::default()
        };
        assert!(matches!(compute_out(&failed, gbp), Err(StepError::Permanent(m)) if m.contains("CURRENCY_MISMATCH")));
        let ok = cpb::Settlement {
            base_commission: Some(tpb::Money { currency_code: "GBP".into(), amount: "10.00".into() }),
            lines: vec![cpb::SettlementLine {
                partner_id: "p".into(),
                kind: tpb::EarningKind::Direct as i32,
                amount: Some(tpb::Money { currency_code: "GBP".into(), amount: "5.00".into() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let value = compute_out(&ok, gbp).unwrap();
        let out: ComputeOut = serde_json::from_value(value).unwrap();
        assert_eq!(out.lines[0].kind, "EARNING_KIND_DIRECT");
        assert_eq!(out.base_commission, Decimal::new(1000, 2));
        let input = entry_input(&out.lines[0], Utc::now()).unwrap();
        assert_eq!(input.kind, tpb::EarningKind::Direct as i32);
        assert_eq!(input.amount.unwrap().amount, "5.00");
    }
}
