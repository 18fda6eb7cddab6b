//! RecordSale calls that arrive together are recorded together (group
//! commit). A unary RecordSale recorded alone pays a whole batch's fixed
//! costs for one sale: the attribution look-up, a hierarchy.GetUplines
//! round trip for its seller's role, the inserts with their per-statement
//! trigger, and a durable commit. At 1,000 calls a second those fixed costs
//! took the machine (issue 15: about 2.7 ms of CPU per call across
//! attribution, hierarchy and Postgres, so recording alone topped out near
//! 330 calls a second and a backlog grew without bound).
//!
//! Calls are queued; the recorder ([`CONCURRENT_BATCHES`]) takes
//! whatever is queued when it is free (at most [`MAX_BATCH`]) and records it
//! as one RecordSales message would be. No timer holds a call back: a lone
//! call is recorded at once, and calls only gather while every recorder is
//! busy, which is exactly when batching pays.
//!
//! Each caller still gets its own answer. When a gathered batch fails (a
//! conflicting body, a seller that may not transact, a program that does
//! not exist, an unreachable peer), nothing of it was written, and its
//! calls are recorded again one by one, so that only the calls at fault
//! fail, each with the error it would have had alone.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

use super::{AttributionApi, RoleCache};
use crate::domain::sale::SaleInput;
use crate::store::SaleRow;

/// Batches recorded at the same time (each holds one pooled connection for
/// its transaction). One: a second recorder only splits the same calls into
/// smaller batches, each paying the fixed costs again, and concurrent
/// batches wait on each other's locks on the sellers' volume buckets
/// (`seller_volumes`, written by the sales insert) until a durable commit.
/// With four, 1,000 unary calls a second took the bench's latency run to a
/// p50 of 1.1 s (p99 1.9 s); with one, 0.12–0.3 s (issue 15).
pub(super) const CONCURRENT_BATCHES: usize = 1;
/// Most calls in one batch (as many sales as one RecordSales message).
pub(super) const MAX_BATCH: usize = super::MAX_SALES_PER_MESSAGE;

/// One queued call: its sale, the trace it came with, where its answer goes.
struct Call {
    sale: SaleInput,
    traceparent: Option<String>,
    answer: oneshot::Sender<Result<SaleRow, Status>>,
}

/// The handle RecordSale queues its sale on (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Coalescer {
    calls: mpsc::UnboundedSender<Call>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("external_id", &self.sale.external_id).finish_non_exhaustive()
    }
}

/// The recorders' side: runs until every [`Coalescer`] is dropped (the
/// server has drained its calls), then finishes the batches under way.
pub(crate) struct Recorders {
    calls: mpsc::UnboundedReceiver<Call>,
    api: AttributionApi,
}

impl Coalescer {
    /// A queue for `api` (an API without a coalescer of its own, which the
    /// recorders call) and the recorders that serve it.
    pub(crate) fn new(api: AttributionApi) -> (Coalescer, Recorders) {
        let (calls, receiver) = mpsc::unbounded_channel();
        (Coalescer { calls }, Recorders { calls: receiver, api })
    }

    /// Records `sale` with whatever other calls are queued, and answers as a
    /// RecordSale of it alone would. UNAVAILABLE when the service is
    /// shutting down and its recorders are gone.
    pub(super) async fn record(&self, sale: SaleInput) -> Result<SaleRow, Status> {
        let (answer, answered) = oneshot::channel();
        let traceparent = accrue_kit::telemetry::propagation::current_traceparent();
        self.calls
            .send(Call { sale, traceparent, answer })
            .map_err(|_| Status::unavailable("the service is shutting down; retry"))?;
        answered.await.map_err(|_| Status::unavailable("the service is shutting down; retry"))?
    }
}

impl Recorders {
    /// Takes queued calls in batches, [`CONCURRENT_BATCHES`] at a time.
    pub(crate) async fn run(mut self) {
        let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
        let mut under_way = tokio::task::JoinSet::new();
        loop {
            // A free slot first: while every slot is busy, calls gather.
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let Some(first) = self.calls.recv().await else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.calls.try_recv() {
                    Ok(call) => batch.push(call),
                    Err(_) => break,
                }
            }
            let api = self.api.clone();
            under_way.spawn(async move {
                record_batch(&api, batch).await;
                drop(slot);
            });
            while under_way.try_join_next().is_some() {}
        }
        under_way.join_all().await;
    }
}

/// Records `batch` in one transaction, or, when that fails, each call alone.
async fn record_batch(api: &AttributionApi, batch: Vec<Call>) {
    if batch.len() > 1 {
        let sales: Vec<SaleInput> = batch.iter().map(|call| call.sale.clone()).collect();
        let traces: Vec<Option<String>> = batch.iter().map(|call| call.traceparent.clone()).collect();
        if let Ok(rows) = api.record(&sales, &traces, &mut RoleCache::default(), None).await
            && rows.len() == batch.len()
        {
            for (call, row) in batch.into_iter().zip(rows) {
                // A caller that went away no longer wants its answer.
                let _ = call.answer.send(Ok(row));
            }
            return;
        }
    }
    for call in batch {
        let traces = [call.traceparent];
        let answer = api
            .record(std::slice::from_ref(&call.sale), &traces, &mut RoleCache::default(), None)
            .await
            .and_then(|mut rows| rows.pop().ok_or_else(|| accrue_kit::internal("record_sales returned no sale")));
        let _ = call.answer.send(answer);
    }
}
