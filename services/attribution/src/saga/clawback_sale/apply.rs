//! apply: the refund becomes APPLIED with its clawback and the sale
//! PARTIALLY_REFUNDED, or REFUNDED once its refunds reach its amount (local,
//! one fenced transaction per batch, written by the sale store); its undo
//! puts the refund back to PENDING and the sale back to its earlier state.

use accrue_saga::{StepError, StepResult, output};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::reverse::ReverseOut;
use super::{ClawbackSale, ClawbackStep, Item, all_failed, earlier, undone};
use crate::store::{self, Applied};

/// apply's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ApplyOut {
    pub(crate) currency: String,
    /// Σ the refund's DEBIT entries, major units.
    pub(crate) clawback_amount: Decimal,
}

fn apply_out(item: &Item<'_>) -> Result<ApplyOut, StepError> {
    let reversed: ReverseOut = earlier(item, ClawbackStep::Reverse)?;
    Ok(ApplyOut { currency: item.subject.refund.currency.clone(), clawback_amount: reversed.clawed_back })
}

pub(super) async fn action(saga: &ClawbackSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let outs: Vec<Result<ApplyOut, StepError>> = items.iter().map(apply_out).collect();
    let applied: Vec<Applied> = items
        .iter()
        .zip(&outs)
        .filter_map(|(item, out)| {
            out.as_ref().ok().map(|out| Applied {
                saga_id: item.saga.id,
                generation: item.saga.generation,
                clawback_amount: out.clawback_amount,
            })
        })
        .collect();
    if let Err(error) = store::apply_refunds(&saga.pool, &applied).await {
        return all_failed(items, &error);
    }
    outs.into_iter().map(|o| o.and_then(|o| output(&o))).collect()
}

/// Runs only when apply failed for good after taking effect (apply is the
/// last step, and its own failures are transient database errors), which
/// today only the test hooks cause; a later refund of the sale may then have
/// resolved already, so this is not a path production relies on.
pub(super) async fn undo(saga: &ClawbackSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let sagas: Vec<&accrue_saga::Saga> = items.iter().map(|item| item.saga).collect();
    match store::unapply_refunds(&saga.pool, &sagas).await {
        Ok(()) => undone(items),
        Err(error) => all_failed(items, &error),
    }
}
