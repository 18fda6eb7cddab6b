//! SettleSale (DESIGN §3): the four steps that take an attributed sale through
//! hierarchy, commission and ledger, each action paired with its undo in
//! [`STEPS`], and the close that settles the sale. Every action works on the whole claimed batch at once (one query
//! or one peer call per ≤1000 items) and is idempotent: running it twice has
//! the effect of running it once.
//!
//! | step    | action                                   | undo                                  |
//! |---------|------------------------------------------|---------------------------------------|
//! | resolve | local facts (first payment, volume, …)   | none (no `started` logged)            |
//! | upline  | hierarchy.GetUplines                     | none (no `started` logged)            |
//! | compute | commission.ComputeSettlements (¹) (²)    | none (no `started` logged)            |
//! | post    | ledger.PostEntries (key per saga run)    | ledger VOID the run's entries         |
//!
//! The sale becomes SETTLED with its totals in the transaction that closes the
//! saga done ([`SagaDef::on_done`], with post's `succeeded`): it was a fifth
//! step, `settle`, whose `started`, `succeeded` and own write cost two rows
//! and two transactions per sale for a change that can only follow post's
//! success (issue 15). A log that still names it is read past
//! ([`SagaDef::RETIRED_STEPS`]): the close settles such a sale as well.
//!
//! (¹) A sale whose ancestors' override plans require qualification (issue 16
//! item 3) makes a second trip with the facts commission asked for
//! ([`qualify`]); other sales make one.
//!
//! (²) Its output is never logged (issue 15): a claim that resumes a run
//! whose post had begun adopts the posting the ledger holds under the run's
//! key, and settles the sale afresh only when there is none.

mod compute;
mod post;
mod qualify;
mod resolve;
mod upline;

/// The steps' own functions that SimulateProgram (issue 16 item 2) runs a
/// recorded sale through, exactly as settlement does.
pub(crate) use compute::{by_settings, program_context, sale_context, settle_batch, settlement_lines};
pub(crate) use resolve::{ResolveOut, resolve_sales};
/// upline's output: ClawbackSale reads the program settings a sale was
/// settled under from it.
pub(crate) use upline::UplineOut;
pub(crate) use upline::{upline_weight, uplines_of};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use accrue_money::Currency;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as tpb;
use accrue_saga::{Output, SagaDef, StepError, StepResult};
use accrue_types::{ProgramId, SagaId};
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};

use crate::peers::{Peers, step_error};
use crate::store::{self, SaleRow, Settled};
use compute::ComputeOut;

/// A SettleSale step, in execution order (the index of its row in [`STEPS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Local: seller, split snapshot, first payment, prior volume, customer history.
    Resolve,
    /// hierarchy.GetUplines: statuses, roles, ancestors, program settings.
    Upline,
    /// commission.ComputeSettlements: every line with its breakdown.
    Compute,
    /// ledger.PostEntries (undo: void the posted entries).
    Post,
}

impl Step {
    /// Every step in execution order.
    pub const ALL: [Step; 4] = [Step::Resolve, Step::Upline, Step::Compute, Step::Post];

    /// The name in the step log ("resolve", …).
    pub const fn name(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Upline => "upline",
            Step::Compute => "compute",
            Step::Post => "post",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The one table of SettleSale: each step's action paired with its undo, in
/// [`Step`] order.
const STEPS: [accrue_saga::Step<SettleSale>; 4] = [
    accrue_saga::Step {
        name: Step::Resolve.name(),
        action: |d, items| Box::pin(resolve::action(d, items)),
        undo: None,
    },
    accrue_saga::Step { name: Step::Upline.name(), action: |d, items| Box::pin(upline::action(d, items)), undo: None },
    accrue_saga::Step {
        name: Step::Compute.name(),
        action: |d, items| Box::pin(compute::action(d, items)),
        undo: None,
    },
    accrue_saga::Step {
        name: Step::Post.name(),
        action: |d, items| Box::pin(post::action(d, items)),
        undo: Some(|d, items| Box::pin(post::undo(d, items))),
    },
];

/// The SettleSale definition: what its steps talk to.
#[derive(Debug, Clone)]
pub(crate) struct SettleSale {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
}

/// A saga and its sale, as a step sees them.
pub(crate) type Item<'a> = accrue_saga::Item<'a, SaleRow>;

impl SagaDef for SettleSale {
    const KIND: &'static str = "SETTLE_SALE";
    const SERVICE: &'static str = "attribution";
    type Subject = SaleRow;

    /// `settle`, the step the close took over (see the module docs).
    const RETIRED_STEPS: &'static [&'static str] = &["settle"];

    /// compute: its lines are the posting the ledger keeps under the run's
    /// key (see [`compute`]).
    const UNLOGGED_STEPS: &'static [&'static str] = &[Step::Compute.name()];

    fn steps(&self) -> &[accrue_saga::Step<Self>] {
        &STEPS
    }

    /// The sale becomes SETTLED with its totals from compute's lines, in the
    /// fenced transaction that closes the saga.
    async fn on_done(&self, conn: &mut PgConnection, sagas: &[&accrue_saga::Saga]) -> Result<(), sqlx::Error> {
        let settled = sagas
            .iter()
            .map(|saga| {
                let computed = saga
                    .output_ref::<ComputeOut>(Step::Compute as usize, Step::Compute.name())
                    .map_err(|error| sqlx::Error::Decode(format!("saga {}: {error:?}", saga.id).into()))?;
                Ok(Settled {
                    saga_id: saga.id,
                    generation: saga.generation,
                    base_commission: computed.base_commission,
                    total_commission: computed.total_commission(),
                })
            })
            .collect::<Result<Vec<Settled>, sqlx::Error>>()?;
        store::settle_sales(conn, &settled).await
    }

    async fn load(&self, pool: &PgPool, sagas: &[SagaId]) -> Result<HashMap<SagaId, SaleRow>, sqlx::Error> {
        store::saga_sales(pool, sagas).await
    }

    async fn on_failed(&self, conn: &mut PgConnection, sagas: &[&accrue_saga::Saga]) -> Result<(), sqlx::Error> {
        store::fail_sales(conn, sagas).await
    }
}

/// Most items per peer call (the peers' batch limit).
pub(crate) const MAX_BATCH: usize = 1000;

/// The ledger idempotency key of a saga run's posting.
pub(crate) fn post_key(saga_id: SagaId, run: i32) -> String {
    format!("saga:{saga_id}:run:{run}:post")
}

/// Every ledger entry of `item`'s sale, all pages (a sale has a handful per
/// run): what post's undo voids and a resumed compute adopts are picked
/// from them by the run's key.
async fn sale_entries(saga: &SettleSale, item: &Item<'_>) -> Result<Vec<lpb::Entry>, StepError> {
    let mut client = saga.peers.ledger.clone();
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .list_entries(lpb::ListEntriesRequest {
                program_id: item.subject.program_id.to_string(),
                sale_id: item.subject.id.to_string(),
                page_size: 1000,
                page_token: std::mem::take(&mut page_token),
                ..Default::default()
            })
            .await
            .map_err(|status| step_error("ledger.ListEntries", &status))?
            .into_inner();
        let last = response.next_page_token.is_empty() || response.entries.is_empty();
        entries.extend(response.entries);
        if last {
            return Ok(entries);
        }
        page_token = response.next_page_token;
    }
}

/// The logged output of an earlier step of this saga run, borrowed when
/// this claim kept it (no copy of a customer's history or of compute's
/// lines per step).
fn earlier<'a, T: DeserializeOwned + Clone + 'static>(item: &Item<'a>, step: Step) -> Result<Cow<'a, T>, StepError> {
    item.saga.output_ref(step as usize, step.name())
}

fn currency_of(item: &Item<'_>) -> Result<Currency, StepError> {
    Currency::from_code(&item.subject.currency).map_err(|e| StepError::Permanent(e.to_string()))
}

fn failure_message(failure: &tpb::ItemFailure) -> String {
    format!("{} {}: {}", failure.code, failure.reason, failure.message)
}

/// Every item fails alike (a batch-wide database error).
fn all_failed(items: &[Item<'_>], error: &sqlx::Error) -> Vec<StepResult> {
    items.iter().map(|_| Err(StepError::database(error))).collect()
}

/// The program of a non-empty chunk (chunks are cut per program).
fn chunk_program(items: &[Item<'_>], chunk: &[usize]) -> Result<ProgramId, StepError> {
    chunk
        .first()
        .and_then(|&i| items.get(i))
        .map(|item| item.subject.program_id)
        .ok_or_else(|| StepError::Transient("a peer call was cut with no sales in it".into()))
}

/// Calls `call` per chunk; when a multi-item chunk fails permanently or with
/// an internal error (which may be one poisoned item), retries its items one
/// by one so that one bad item fails (or ends stuck) alone.
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
            Err(StepError::Permanent(_) | StepError::Internal(_)) if chunk.len() > 1 => {
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
    let mut groups: BTreeMap<ProgramId, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(item.subject.program_id).or_default().push(i);
    }
    groups.into_values().flat_map(|group| cut_by_weight(group, &weight)).collect()
}

/// Cuts `group` (indices, in order) into chunks whose `weight` (ids per
/// item, at least 1) stays within [`MAX_BATCH`].
pub(crate) fn cut_by_weight(group: Vec<usize>, weight: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
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
    chunks
}

/// The items whose inputs decoded, for a step that first reads its inputs
/// per item and then calls a peer for the ones that are ready.
struct Ready<'a, 'i, T> {
    /// Their positions in the step's items.
    positions: Vec<usize>,
    /// Those items.
    items: Vec<Item<'i>>,
    /// Their inputs.
    inputs: Vec<&'a T>,
}

impl<'a, 'i, T> Ready<'a, 'i, T> {
    fn of(items: &[Item<'i>], inputs: &'a [Result<T, StepError>]) -> Self {
        let positions: Vec<usize> = (0..items.len()).filter(|&i| inputs[i].is_ok()).collect();
        Ready {
            items: positions.iter().map(|&i| items[i]).collect(),
            inputs: inputs.iter().filter_map(|r| r.as_ref().ok()).collect(),
            positions,
        }
    }
}

/// Puts the ready items' outcomes back at their `positions` (see [`Ready`]);
/// the others keep the error their inputs failed with.
fn merge<T>(inputs: Vec<Result<T, StepError>>, positions: Vec<usize>, outcomes: Vec<StepResult>) -> Vec<StepResult> {
    let mut results: Vec<StepResult> = inputs.into_iter().map(|r| r.map(|_| Output::empty())).collect();
    for (i, outcome) in positions.into_iter().zip(outcomes) {
        results[i] = outcome;
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_step_order() {
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        let expected: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, expected);
        for step in Step::ALL {
            assert_eq!(STEPS[step as usize].name, step.name());
        }
    }

    #[tokio::test]
    async fn a_chunk_failing_internally_is_retried_item_by_item() {
        // The peer chokes on item 1 alone; items 0 and 2 must not share its fate.
        let results = per_chunk(vec![vec![0, 1, 2]], 3, |chunk| async move {
            if chunk.contains(&1) {
                Err(StepError::Internal("commission: Internal: internal error".into()))
            } else {
                Ok(chunk.into_iter().map(Ok).collect())
            }
        })
        .await;
        assert_eq!(results[0], Ok(0));
        assert!(matches!(&results[1], Err(StepError::Internal(_))), "{:?}", results[1]);
        assert_eq!(results[2], Ok(2));
    }

    #[test]
    fn post_key_names_saga_and_run() {
        let id = SagaId::from_u128(0);
        assert_eq!(post_key(id, 2), "saga:00000000-0000-0000-0000-000000000000:run:2:post");
    }
}
