//! ClawbackSale (DESIGN §3, §4 "Refunds"; issue 9): the three steps that claw
//! a refund back from the refunded sale's ledger lines, each action paired
//! with its undo in [`STEPS`]. One saga per refund; refunds of one sale apply
//! in their sequence order, each after the sale's settlement. Every action is
//! idempotent: running it twice has the effect of running it once.
//!
//! | step    | action                                          | undo                               |
//! |---------|-------------------------------------------------|------------------------------------|
//! | resolve | wait for the settlement and earlier refunds; A, T, rounding mode (local) | none (no `started` logged) |
//! | reverse | ledger.ReverseSale (key per saga run)           | ledger.VoidReversal of that key    |
//! | apply   | refund APPLIED; sale PARTIALLY_REFUNDED / REFUNDED | refund PENDING; sale as before  |

mod apply;
mod resolve;
mod reverse;

use std::collections::HashMap;

use accrue_money::Currency;
use accrue_saga::{Output, SagaDef, StepError, StepResult};
use accrue_types::SagaId;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};

use crate::peers::Peers;
use crate::store::{self, ClawbackSubject};

/// A ClawbackSale step, in execution order (the index of its row in [`STEPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClawbackStep {
    /// Local: waits for the sale's settlement and earlier refunds; A, T and
    /// the sale's rounding mode.
    Resolve,
    /// ledger.ReverseSale (undo: ledger.VoidReversal).
    Reverse,
    /// Local: the refund becomes APPLIED and the sale (partially) refunded
    /// (undo: both back).
    Apply,
}

impl ClawbackStep {
    /// Every step in execution order.
    pub const ALL: [ClawbackStep; 3] = [ClawbackStep::Resolve, ClawbackStep::Reverse, ClawbackStep::Apply];

    /// The name in the step log ("resolve", …).
    pub const fn name(self) -> &'static str {
        match self {
            ClawbackStep::Resolve => "resolve",
            ClawbackStep::Reverse => "reverse",
            ClawbackStep::Apply => "apply",
        }
    }
}

impl std::fmt::Display for ClawbackStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The one table of ClawbackSale, in [`ClawbackStep`] order.
const STEPS: [accrue_saga::Step<ClawbackSale>; 3] = [
    accrue_saga::Step {
        name: ClawbackStep::Resolve.name(),
        action: |d, items| Box::pin(resolve::action(d, items)),
        undo: None,
    },
    accrue_saga::Step {
        name: ClawbackStep::Reverse.name(),
        action: |d, items| Box::pin(reverse::action(d, items)),
        undo: Some(|d, items| Box::pin(reverse::undo(d, items))),
    },
    accrue_saga::Step {
        name: ClawbackStep::Apply.name(),
        action: |d, items| Box::pin(apply::action(d, items)),
        undo: Some(|d, items| Box::pin(apply::undo(d, items))),
    },
];

/// The ClawbackSale definition: what its steps talk to.
#[derive(Debug, Clone)]
pub(crate) struct ClawbackSale {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
}

/// A saga and its refund, as a step sees them.
pub(crate) type Item<'a> = accrue_saga::Item<'a, ClawbackSubject>;

impl SagaDef for ClawbackSale {
    const KIND: &'static str = "CLAWBACK_SALE";
    const SERVICE: &'static str = "attribution";
    type Subject = ClawbackSubject;

    fn steps(&self) -> &[accrue_saga::Step<Self>] {
        &STEPS
    }

    async fn load(&self, pool: &PgPool, sagas: &[SagaId]) -> Result<HashMap<SagaId, ClawbackSubject>, sqlx::Error> {
        store::clawback_subjects(pool, sagas).await
    }

    /// The refund is FAILED with the saga's reason; the sale keeps its state
    /// (the undos put it back to what it was before this refund).
    async fn on_failed(&self, conn: &mut PgConnection, sagas: &[&accrue_saga::Saga]) -> Result<(), sqlx::Error> {
        store::fail_refunds(conn, sagas).await
    }
}

/// An undo that has nothing to report (its `undo_finished` says it all).
fn undone(items: &[Item<'_>]) -> Vec<StepResult> {
    items.iter().map(|_| Ok(Output::empty())).collect()
}

/// Concurrent per-saga ledger calls (ReverseSale and VoidReversal take one
/// refund each).
const CONCURRENCY: usize = 16;

/// The ledger idempotency key of a saga run's reversal.
pub(crate) fn reverse_key(saga_id: SagaId, run: i32) -> String {
    format!("saga:{saga_id}:run:{run}:reverse")
}

/// The logged output of an earlier step of this saga run.
fn earlier<T: DeserializeOwned + Clone + 'static>(item: &Item<'_>, step: ClawbackStep) -> Result<T, StepError> {
    item.saga.output(step as usize, step.name())
}

fn currency_of(item: &Item<'_>) -> Result<Currency, StepError> {
    Currency::from_code(&item.subject.refund.currency).map_err(|e| StepError::Permanent(e.to_string()))
}

/// Every item fails alike (a batch-wide database error).
fn all_failed(items: &[Item<'_>], error: &sqlx::Error) -> Vec<StepResult> {
    items.iter().map(|_| Err(StepError::database(error))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_step_order() {
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        let expected: Vec<&str> = ClawbackStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, expected);
        for step in ClawbackStep::ALL {
            assert_eq!(STEPS[step as usize].name, step.name());
        }
    }

    #[test]
    fn reverse_key_names_saga_and_run() {
        let id = SagaId::from_u128(0);
        assert_eq!(reverse_key(id, 3), "saga:00000000-0000-0000-0000-000000000000:run:3:reverse");
    }
}
