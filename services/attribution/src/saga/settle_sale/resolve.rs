//! resolve: the facts the rules need from the sale and its history (local,
//! one query per batch). It has no undo (it changes nothing
//! outside the saga log).

use std::collections::HashMap;

use accrue_saga::{StepError, StepResult, output_kept};
use accrue_types::{LinkId, PartnerId, SaleId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Item, SettleSale, all_failed};
use crate::domain::link::Split;
use crate::domain::sale::SaleEventType;
use crate::domain::touch::Rule;
use crate::store::{self, IndexProbes, SaleHistory, SaleRow};
use sqlx::PgPool;

/// resolve's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResolveOut {
    /// The selling partner (link owner).
    pub(crate) seller_partner_id: PartnerId,
    /// The attributed link.
    pub(crate) link_id: Option<LinkId>,
    /// The link's splits as snapshotted on the sale.
    pub(crate) splits: Vec<Split>,
    /// The customer's first PAYMENT/RENEWAL in the program.
    pub(crate) is_first_payment: bool,
    /// Σ the seller's earlier sales in the sale's currency (major units).
    pub(crate) seller_prior_volume: Decimal,
    /// The customer's earlier sales, oldest first.
    pub(crate) customer_history: Vec<HistoryItem>,
    /// The attribution rule that credited the sale to `link_id` (issue 14
    /// item 2); absent in outputs stored before it existed (first touch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attribution: Option<Rule>,
}

/// One earlier sale of the customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HistoryItem {
    pub(crate) sale_id: SaleId,
    pub(crate) event_type: SaleEventType,
    /// None for a sale recorded without a seller.
    pub(crate) seller_partner_id: Option<PartnerId>,
    pub(crate) occurred_at: DateTime<Utc>,
    /// Its service code: commission leaves scheme-managed sales out of the
    /// events under an agreement. Absent in outputs stored before it existed.
    #[serde(default)]
    pub(crate) service_code: String,
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let sales: Vec<&SaleRow> = items.iter().map(|item| item.subject).collect();
    // The workers' pool plans with enable_seqscan off on every connection.
    match resolve_sales(&saga.pool, &sales, IndexProbes::Pooled).await {
        Ok(resolved) => resolved.into_iter().map(|r| r.and_then(output_kept)).collect(),
        Err(error) => all_failed(items, &error),
    }
}

/// The facts of each of `sales` (one query), in their order: what the
/// resolve step logs, and what SimulateProgram (issue 16 item 2) recomputes
/// a sale from. A sale without a seller, or whose history rows are not what
/// this code wrote, is a permanent error of its own.
pub(crate) async fn resolve_sales(
    pool: &PgPool,
    sales: &[&SaleRow],
    probes: IndexProbes,
) -> Result<Vec<Result<ResolveOut, StepError>>, sqlx::Error> {
    let ids: Vec<SaleId> = sales.iter().map(|sale| sale.id).collect();
    let rows = store::sale_histories(pool, &ids, probes).await?;
    let by_id: HashMap<SaleId, SaleHistory> = rows.into_iter().map(|row| (row.id, row)).collect();
    Ok(sales
        .iter()
        .map(|sale| {
            let row = by_id.get(&sale.id).ok_or_else(|| StepError::Permanent("the sale vanished".into()))?;
            let seller = sale.partner_id.ok_or_else(|| StepError::Permanent("the sale has no seller".into()))?;
            let customer_history = history_of(row)?;
            Ok(ResolveOut {
                seller_partner_id: seller,
                link_id: sale.link_id,
                splits: sale.splits.0.clone(),
                is_first_payment: row.is_first_payment,
                seller_prior_volume: row.prior_volume,
                customer_history,
                attribution: Some(sale.attribution_rule()),
            })
        })
        .collect())
}

/// The customer's earlier sales from the columns [`store::sale_histories`]
/// reads. Columns of unequal length or an unknown event type mean the rows
/// are not what this code wrote: the saga fails permanently.
fn history_of(row: &SaleHistory) -> Result<Vec<HistoryItem>, StepError> {
    let n = row.history_ids.len();
    if [
        row.history_event_types.len(),
        row.history_sellers.len(),
        row.history_times.len(),
        row.history_service_codes.len(),
    ]
    .iter()
    .any(|&len| len != n)
    {
        return Err(StepError::Permanent("the customer history columns differ in length".into()));
    }
    (0..n)
        .map(|i| {
            let name = &row.history_event_types[i];
            let event_type = SaleEventType::from_name(name)
                .ok_or_else(|| StepError::Permanent(format!("customer history: unknown event type {name:?}")))?;
            Ok(HistoryItem {
                sale_id: row.history_ids[i],
                event_type,
                seller_partner_id: row.history_sellers[i],
                occurred_at: row.history_times[i],
                service_code: row.history_service_codes[i].clone(),
            })
        })
        .collect()
}
