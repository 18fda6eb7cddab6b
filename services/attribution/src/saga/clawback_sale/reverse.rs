//! reverse: ledger.ReverseSale, the refund's clawback posted as DEBIT entries
//! over the sale's lines under a key per saga run (one call per refund,
//! several at a time). Its undo is ledger.VoidReversal of that key.

use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as tpb;
use accrue_saga::{StepError, StepResult, output};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tonic::Code;

use super::resolve::ResolveOut;
use super::{CONCURRENCY, ClawbackSale, ClawbackStep, Item, currency_of, earlier, reverse_key};
use crate::peers::step_error;

/// reverse's output (amounts in major units of the sale's currency).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReverseOut {
    pub(crate) idempotency_key: String,
    /// The DEBIT entries posted, in line order (none when Δ = 0).
    pub(crate) debit_entry_ids: Vec<String>,
    /// Δ: what this refund clawed back (Σ its debits).
    pub(crate) clawed_back: Decimal,
    /// The sale's total clawback after this refund: round(Σ lines × T / A).
    pub(crate) target: Decimal,
    /// What earlier refunds of the sale had clawed back.
    pub(crate) previously_clawed_back: Decimal,
    /// The CREDIT lines this refund clawed back in full (now REVERSED).
    pub(crate) reversed_entry_ids: Vec<String>,
}

/// What the undo of reverse did.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UndoOut {
    idempotency_key: String,
    /// False when the key had never been applied (nothing to void).
    applied: bool,
    voided_entry_ids: Vec<String>,
    restored_entry_ids: Vec<String>,
}

pub(super) async fn action(saga: &ClawbackSale, items: &[Item<'_>]) -> Vec<StepResult> {
    // Collected first: a lazy `map` closure makes the future not Send over every lifetime.
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        calls.push(reverse_one(saga, *item));
    }
    futures::stream::iter(calls).buffered(CONCURRENCY).collect().await
}

/// A wire amount in the sale's currency, exact in its minor unit; anything
/// else is the ledger's bug, not a reason to guess.
fn amount_of(currency: Currency, field: &str, money: Option<&tpb::Money>) -> Result<Decimal, StepError> {
    let money = money.ok_or_else(|| StepError::Permanent(format!("ledger.ReverseSale returned no {field}")))?;
    if money.currency_code != currency.code() {
        return Err(StepError::Permanent(format!(
            "ledger.ReverseSale returned {field} in {}, not the sale's {currency}",
            money.currency_code
        )));
    }
    currency
        .parse_amount(&money.amount)
        .map_err(|e| StepError::Permanent(format!("ledger.ReverseSale returned a bad {field}: {e}")))
}

async fn reverse_one(saga: &ClawbackSale, item: Item<'_>) -> StepResult {
    let resolved: ResolveOut = earlier(&item, ClawbackStep::Resolve)?;
    let currency = currency_of(&item)?;
    let key = reverse_key(item.saga.id, item.saga.run);
    let request = lpb::ReverseSaleRequest {
        program_id: item.subject.refund.program_id.to_string(),
        sale_id: resolved.sale_id.to_string(),
        idempotency_key: key.clone(),
        refund_id: item.subject.refund.id.to_string(),
        sale_amount: Some(amount_to_proto(currency, resolved.sale_amount)),
        refunded_total: Some(amount_to_proto(currency, resolved.refunded_total)),
        occurred_at: Some(timestamp(resolved.occurred_at)),
        rounding_mode: resolved.rounding_mode,
        reason: resolved.reason.clone(),
    };
    let mut client = saga.peers.ledger.clone();
    let response =
        client.reverse_sale(request).await.map_err(|status| step_error("ledger.ReverseSale", &status))?.into_inner();
    output(&ReverseOut {
        idempotency_key: key,
        debit_entry_ids: response.debits.iter().map(|entry| entry.id.clone()).collect(),
        clawed_back: amount_of(currency, "clawed_back", response.clawed_back.as_ref())?,
        target: amount_of(currency, "target", response.target.as_ref())?,
        previously_clawed_back: amount_of(
            currency,
            "previously_clawed_back",
            response.previously_clawed_back.as_ref(),
        )?,
        reversed_entry_ids: response.reversed_entry_ids,
    })
}

pub(super) async fn undo(saga: &ClawbackSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        calls.push(undo_one(saga, *item));
    }
    futures::stream::iter(calls).buffered(CONCURRENCY).collect().await
}

/// Voids what the run's key posted, whether or not reverse's output was
/// logged (the key alone names it). NOT_FOUND: the key was never applied, so
/// there is nothing to undo. FAILED_PRECONDITION (a debit already reserved or
/// paid) leaves the saga stuck for an operator.
async fn undo_one(saga: &ClawbackSale, item: Item<'_>) -> StepResult {
    let key = reverse_key(item.saga.id, item.saga.run);
    let mut client = saga.peers.ledger.clone();
    let request = lpb::VoidReversalRequest {
        program_id: item.subject.refund.program_id.to_string(),
        idempotency_key: key.clone(),
        reason: format!("saga {} run {} unwound: {}", item.saga.id, item.saga.run, item.saga.failure_reason),
    };
    match client.void_reversal(request).await {
        Ok(response) => {
            let response = response.into_inner();
            output(&UndoOut {
                idempotency_key: key,
                applied: true,
                voided_entry_ids: response.voided_entry_ids,
                restored_entry_ids: response.restored_entry_ids,
            })
        }
        Err(status) if status.code() == Code::NotFound => output(&UndoOut {
            idempotency_key: key,
            applied: false,
            voided_entry_ids: Vec::new(),
            restored_entry_ids: Vec::new(),
        }),
        Err(status) => Err(step_error("ledger.VoidReversal", &status)),
    }
}
