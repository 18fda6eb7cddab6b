//! settle: the sale becomes SETTLED with its totals (local, one fenced
//! statement per batch); its undo puts a SETTLED sale back to PENDING. The
//! sale store writes the state.

use accrue_saga::{StepError, StepResult, output};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::compute::ComputeOut;
use super::{Item, SettleSale, Step, all_failed, earlier, undone};
use crate::store::{self, Settled};

/// settle's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettleOut {
    pub(crate) currency: String,
    /// Major units.
    pub(crate) base_commission: Decimal,
    /// Σ every line's amount, major units.
    pub(crate) total_commission: Decimal,
}

fn settle_out(item: &Item<'_>) -> Result<SettleOut, StepError> {
    let computed: ComputeOut = earlier(item, Step::Compute)?;
    Ok(SettleOut {
        currency: item.subject.currency.clone(),
        base_commission: computed.base_commission,
        total_commission: computed.lines.iter().map(|l| l.amount.amount).sum::<Decimal>(),
    })
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let outs: Vec<Result<SettleOut, StepError>> = items.iter().map(settle_out).collect();
    let settled: Vec<Settled> = items
        .iter()
        .zip(&outs)
        .filter_map(|(item, out)| {
            out.as_ref().ok().map(|out| Settled {
                saga_id: item.saga.id,
                generation: item.saga.generation,
                base_commission: out.base_commission,
                total_commission: out.total_commission,
            })
        })
        .collect();
    if let Err(error) = store::settle_sales(&saga.pool, &settled).await {
        return all_failed(items, &error);
    }
    outs.into_iter().map(|o| o.and_then(|o| output(&o))).collect()
}

pub(super) async fn undo(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let sagas: Vec<&accrue_saga::Saga> = items.iter().map(|item| item.saga).collect();
    match store::unsettle_sales(&saga.pool, &sagas).await {
        Ok(()) => undone(items),
        Err(error) => all_failed(items, &error),
    }
}
