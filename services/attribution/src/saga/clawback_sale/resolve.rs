//! resolve: waits until the refund may be clawed back, then fixes what the
//! reversal needs (local, one query per batch). It has no undo (it changes
//! nothing outside the saga log).
//!
//! A refund waits (a transient failure, retried with backoff) while the
//! sale's SettleSale saga is not done — the lines to claw back are not all
//! posted yet — and while an earlier refund of the sale is not APPLIED, so
//! that refunds apply in sequence order (each one's Δ builds on what the
//! earlier ones clawed back, DESIGN §4 "Refunds"). It fails for good when
//! the settlement or an earlier refund FAILED: retrying this one cannot help
//! until that one is retried.

use std::collections::HashMap;

use accrue_proto::types::v1 as tpb;
use accrue_saga::{SagaState, StepError, StepResult, output};
use accrue_types::{RefundId, SaleId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{ClawbackSale, Item, all_failed};
use crate::domain::refund::RefundState;
use crate::saga::settle_sale::{Step as SettleStep, UplineOut};
use crate::store::{self, ClawbackFacts};

/// resolve's output: the inputs of ledger.ReverseSale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResolveOut {
    /// The refunded sale.
    pub(crate) sale_id: SaleId,
    /// The refund's place among the sale's refunds (1-based).
    pub(crate) sequence: i32,
    /// ISO 4217 code of the sale (and the refund).
    pub(crate) currency: String,
    /// A: the sale's gross amount, major units.
    pub(crate) sale_amount: Decimal,
    /// T: Σ the sale's refunds up to and including this one, major units.
    pub(crate) refunded_total: Decimal,
    /// `accrue.type.v1.RoundingMode` number the sale was settled with (from
    /// its SettleSale upline output); never UNSPECIFIED.
    pub(crate) rounding_mode: i32,
    /// When the refund happened.
    pub(crate) occurred_at: DateTime<Utc>,
    /// The refund's reason.
    pub(crate) reason: String,
}

/// An earlier refund of the same sale that is not APPLIED.
#[derive(Debug, Deserialize)]
struct Earlier {
    id: RefundId,
    sequence: i32,
    state: String,
}

pub(super) async fn action(saga: &ClawbackSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let ids: Vec<RefundId> = items.iter().map(|item| item.subject.refund.id).collect();
    let rows = match store::clawback_facts(&saga.pool, &ids, SettleStep::Upline.name()).await {
        Ok(rows) => rows,
        Err(error) => return all_failed(items, &error),
    };
    let by_id: HashMap<RefundId, ClawbackFacts> = rows.into_iter().map(|row| (row.refund_id, row)).collect();
    items
        .iter()
        .map(|item| {
            let facts =
                by_id.get(&item.subject.refund.id).ok_or_else(|| StepError::Permanent("the refund vanished".into()))?;
            resolve_one(item, facts)
        })
        .collect()
}

fn resolve_one(item: &Item<'_>, facts: &ClawbackFacts) -> StepResult {
    let refund = &item.subject.refund;
    let settle_saga = item
        .subject
        .settle_saga_id
        .ok_or_else(|| StepError::Permanent("the sale has no settlement saga, so nothing to claw back".into()))?;
    match facts.settle_state {
        Some(SagaState::Done) => {}
        Some(SagaState::Failed) => {
            return Err(StepError::Permanent(format!(
                "the sale's settlement saga {settle_saga} FAILED; retry the sale's saga first, then this one"
            )));
        }
        Some(state) => {
            return Err(StepError::Transient(format!(
                "waiting for the sale's settlement saga {settle_saga} to finish (it is {state})"
            )));
        }
        None => return Err(StepError::Permanent(format!("the sale's settlement saga {settle_saga} does not exist"))),
    }
    let earlier: Vec<Earlier> = serde_json::from_value(facts.unapplied_earlier.clone())
        .map_err(|e| StepError::Permanent(format!("the sale's earlier refunds do not decode: {e}")))?;
    if let Some(failed) = earlier.iter().find(|e| e.state == RefundState::Failed.as_str()) {
        return Err(StepError::Permanent(format!(
            "refund #{} ({}) of this sale FAILED; retry its saga first, then this one",
            failed.sequence, failed.id
        )));
    }
    if let Some(pending) = earlier.first() {
        return Err(StepError::Transient(format!(
            "waiting for refund #{} ({}) of this sale to apply first (it is {})",
            pending.sequence, pending.id, pending.state
        )));
    }
    let upline: UplineOut = facts
        .settle_output
        .clone()
        .ok_or_else(|| {
            StepError::Permanent(format!("the upline output of settlement saga {settle_saga} is missing from its log"))
        })
        .and_then(|value| {
            serde_json::from_value(value).map_err(|e| {
                StepError::Permanent(format!("the upline output of saga {settle_saga} does not decode: {e}"))
            })
        })?;
    let rounding_mode = match tpb::RoundingMode::try_from(upline.program.rounding_mode) {
        Ok(tpb::RoundingMode::Unspecified) | Err(_) => {
            return Err(StepError::Permanent(format!(
                "settlement saga {settle_saga} logged rounding mode {}, which is not a mode",
                upline.program.rounding_mode
            )));
        }
        Ok(mode) => mode as i32,
    };
    output(&ResolveOut {
        sale_id: refund.sale_id,
        sequence: refund.sequence,
        currency: refund.currency.clone(),
        sale_amount: item.subject.sale_amount,
        refunded_total: refund.refunded_total,
        rounding_mode,
        occurred_at: refund.occurred_at,
        reason: refund.reason.clone(),
    })
}
