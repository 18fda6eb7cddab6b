//! The saga engine: claim with `FOR UPDATE SKIP LOCKED` and a lease, fence
//! every write on the claimed generation, keep the append-only step log, and
//! drive a claimed batch step by step *across* sagas (one bulk write and one
//! bulk action per step), then unwind the ones that failed permanently.
//!
//! Recovery reads the current run's log: a step with `succeeded` is skipped and
//! its stored output reused; a step `started` but not finished is re-run (every
//! action is idempotent). An unwinding saga undoes every started step whose
//! `undo_finished` is missing, newest first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{SagaOptions, Step, settle_sale};
use crate::domain::link::Split;
use crate::domain::retry::backoff_delay;
use crate::peers::{Peers, is_transient};

/// Shared by a process's workers.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) pool: PgPool,
    pub(crate) peers: Peers,
    pub(crate) options: SagaOptions,
    pub(crate) notify: Arc<Notify>,
}

/// Why a step's action (or undo) did not succeed for one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepError {
    /// Worth retrying later (peer unavailable, database hiccup…).
    Transient(String),
    /// Retrying gives the same answer: unwind.
    Permanent(String),
}

impl StepError {
    /// Classifies a peer's status (see [`is_transient`]).
    pub(crate) fn from_status(peer: &str, status: &tonic::Status) -> Self {
        let message = format!("{peer}: {:?}: {}", status.code(), status.message());
        if is_transient(status.code()) { StepError::Transient(message) } else { StepError::Permanent(message) }
    }

    /// A database error during a step: retried.
    pub(crate) fn from_db(error: &sqlx::Error) -> Self {
        StepError::Transient(format!("database: {error}"))
    }
}

/// What one step's log says for the current run.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepLog {
    /// `started` was written.
    pub(crate) started: bool,
    /// `succeeded`'s output, when written.
    pub(crate) output: Option<Value>,
    /// `undo_finished` was written.
    pub(crate) undo_finished: bool,
}

/// A claimed saga.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) id: Uuid,
    pub(crate) program_id: Uuid,
    pub(crate) sale_id: Uuid,
    pub(crate) run: i32,
    pub(crate) generation: i64,
    pub(crate) attempt: i32,
    pub(crate) unwinding: bool,
    pub(crate) failure_reason: String,
    pub(crate) log: [StepLog; 5],
    /// Dropped from the batch (lost the fence, released, finished).
    gone: bool,
}

impl Live {
    /// The stored output of `step` (from this batch or the log).
    pub(crate) fn output(&self, step: Step) -> Option<&Value> {
        self.log[step as usize].output.as_ref()
    }
}

/// The sale a saga settles (immutable facts).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SaleFacts {
    pub(crate) id: Uuid,
    pub(crate) customer_external_id: Option<String>,
    pub(crate) event_type: String,
    pub(crate) currency: String,
    pub(crate) amount: Decimal,
    pub(crate) product_code: String,
    pub(crate) service_code: String,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) link_id: Option<Uuid>,
    pub(crate) partner_id: Option<Uuid>,
    pub(crate) splits: Json<Vec<Split>>,
}

/// A saga and its sale, as a step action sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    pub(crate) saga: &'a Live,
    pub(crate) sale: &'a SaleFacts,
}

/// Where a step failed permanently: an action's failure unwinds the saga (the
/// worker keeps it to run the undos); an undo's leaves it stuck and given back.
#[derive(Debug, Clone, Copy)]
enum FailedIn {
    Action,
    Undo,
}

/// A step's results for the sagas it ran on, by outcome: `(index, output)`
/// or `(index, message)`.
#[derive(Debug, Default)]
struct Outcomes {
    ok: Vec<(usize, Value)>,
    transient: Vec<(usize, String)>,
    permanent: Vec<(usize, String)>,
}

impl Outcomes {
    /// Splits `results` (one per index in `need`, in order).
    fn of(need: &[usize], results: Vec<Result<Value, StepError>>) -> Self {
        let mut outcomes = Outcomes::default();
        for (&i, result) in need.iter().zip(results) {
            match result {
                Ok(output) => outcomes.ok.push((i, output)),
                Err(StepError::Transient(message)) => outcomes.transient.push((i, message)),
                Err(StepError::Permanent(message)) => outcomes.permanent.push((i, message)),
            }
        }
        outcomes
    }
}

enum Flow {
    Continue,
    Crash,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    program_id: Uuid,
    sale_id: Uuid,
    run: i32,
    generation: i64,
    attempt: i32,
    state: String,
    failure_reason: String,
}

#[derive(sqlx::FromRow)]
struct LoggedEvent {
    saga_id: Uuid,
    step: String,
    event: String,
    detail: Value,
}

const EVENT_STARTED: &str = "started";
const EVENT_SUCCEEDED: &str = "succeeded";
const EVENT_FAILED: &str = "failed";
const EVENT_UNDO_STARTED: &str = "undo_started";
const EVENT_UNDO_FINISHED: &str = "undo_finished";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// One worker: claim a batch, drive it, repeat; sleep on the notifier or
    /// the poll interval when idle. Returns on shutdown (after releasing its
    /// leases) or when the `crash_after` hook fires (keeping them).
    pub(crate) async fn work(self: Arc<Self>, owner: String, shutdown: CancellationToken) {
        let mut errors: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.claim(&owner).await {
                Ok(batch) if batch.is_empty() => {
                    errors = 0;
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(self.options.poll_interval) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Ok(batch) => {
                    errors = 0;
                    if let Flow::Crash = self.process(&owner, batch, &shutdown).await {
                        tracing::warn!(%owner, "saga worker stopped by the crash_after test hook (leases kept)");
                        return;
                    }
                }
                Err(error) => {
                    errors = errors.saturating_add(1);
                    if errors <= 3 || errors.is_multiple_of(50) {
                        tracing::warn!(%owner, %error, "claiming sagas failed; retrying");
                    }
                    let delay =
                        self.options.poll_interval.saturating_mul(1 << errors.min(5)).min(Duration::from_secs(5));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        tracing::debug!(%owner, "saga worker stopped");
    }

    /// Claims up to `batch_size` runnable sagas (running or unwinding, unowned
    /// or with an expired lease, due), bumping their generation, and loads the
    /// current run's log of each.
    async fn claim(&self, owner: &str) -> Result<Vec<Live>, sqlx::Error> {
        let claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE sagas s SET owner = $1, generation = s.generation + 1,
                 lease_expires_at = now() + $2::bigint * interval '1 millisecond',
                 attempt = s.attempt + 1, updated_at = now()
             WHERE s.id IN (
                 SELECT id FROM sagas
                 WHERE state IN ('running', 'unwinding')
                   AND (owner IS NULL OR lease_expires_at < now())
                   AND next_attempt_at <= now()
                 ORDER BY created_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING s.id, s.program_id, s.sale_id, s.run, s.generation, s.attempt, s.state, s.failure_reason",
        )
        .bind(owner)
        .bind(millis(self.options.lease))
        .bind(self.options.batch_size.max(1))
        .fetch_all(&self.pool)
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
        let runs: Vec<i32> = claimed.iter().map(|c| c.run).collect();
        let events: Vec<LoggedEvent> = sqlx::query_as(
            "SELECT e.saga_id, e.step, e.event, e.detail
             FROM saga_step_events e
             JOIN UNNEST($1::uuid[], $2::int[]) AS u(id, run) ON e.saga_id = u.id AND e.run = u.run
             ORDER BY e.id",
        )
        .bind(&ids)
        .bind(&runs)
        .fetch_all(&self.pool)
        .await?;
        let mut logs: HashMap<Uuid, [StepLog; 5]> = HashMap::new();
        for event in events {
            let Some(step) = Step::from_name(&event.step) else { continue };
            let log = &mut logs.entry(event.saga_id).or_default()[step as usize];
            match event.event.as_str() {
                EVENT_STARTED => log.started = true,
                EVENT_SUCCEEDED => log.output = Some(event.detail),
                EVENT_UNDO_FINISHED => log.undo_finished = true,
                _ => {}
            }
        }
        let mut batch: Vec<Live> = claimed
            .into_iter()
            .map(|c| Live {
                id: c.id,
                program_id: c.program_id,
                sale_id: c.sale_id,
                run: c.run,
                generation: c.generation,
                attempt: c.attempt,
                unwinding: c.state == "unwinding",
                failure_reason: c.failure_reason,
                log: logs.remove(&c.id).unwrap_or_default(),
                gone: false,
            })
            .collect();
        // Claim order is (created_at, id); keep it so that batches are deterministic.
        batch.sort_by_key(|live| live.id);
        Ok(batch)
    }

    async fn process(&self, owner: &str, mut batch: Vec<Live>, shutdown: &CancellationToken) -> Flow {
        let started = std::time::Instant::now();
        let size = batch.len();
        let outcome = self.drive(&mut batch, shutdown).await;
        tracing::debug!(sagas = size, elapsed_ms = started.elapsed().as_millis(), "saga batch driven");
        match outcome {
            Ok(flow) => flow,
            Err(error) => {
                tracing::warn!(%owner, %error, sagas = batch.len(), "saga batch interrupted by a database error; releasing");
                let rows: Vec<(Uuid, i64, i64)> = batch
                    .iter()
                    .filter(|l| !l.gone)
                    .map(|l| (l.id, l.generation, millis(self.options.retry_base)))
                    .collect();
                if let Err(error) = release(&self.pool, &rows).await {
                    tracing::warn!(%error, "releasing saga leases failed; they will expire");
                }
                Flow::Continue
            }
        }
    }

    async fn drive(&self, batch: &mut Vec<Live>, shutdown: &CancellationToken) -> Result<Flow, sqlx::Error> {
        let sale_ids: Vec<Uuid> = batch.iter().map(|l| l.sale_id).collect();
        let sales: Vec<SaleFacts> = sqlx::query_as(
            "SELECT id, customer_external_id, event_type, currency, amount, product_code, service_code,
                    occurred_at, link_id, partner_id, splits
             FROM sales WHERE id = ANY($1)",
        )
        .bind(&sale_ids)
        .fetch_all(&self.pool)
        .await?;
        let sales: HashMap<Uuid, SaleFacts> = sales.into_iter().map(|s| (s.id, s)).collect();

        // Forward: each step for every saga that still needs it.
        for step in Step::ALL {
            batch.retain(|l| !l.gone);
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            self.renew(batch).await?;
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| !batch[i].gone && !batch[i].unwinding && batch[i].log[step as usize].output.is_none())
                .collect();
            if need.is_empty() {
                continue;
            }
            let need = self.append_marks(batch, &need, step, EVENT_STARTED).await?;
            for &i in &need {
                batch[i].log[step as usize].started = true;
            }
            let started = std::time::Instant::now();
            let mut results = self.act(step, batch, &need, &sales, false).await;
            let action_ms = started.elapsed().as_millis();
            tracing::debug!(%step, sagas = need.len(), action_ms, "saga step action");
            self.apply_hooks(step, batch, &need, &mut results);

            let Outcomes { ok, transient, permanent } = Outcomes::of(&need, results);
            let any_succeeded = !ok.is_empty();
            self.record_succeeded(batch, step, ok).await?;
            self.record_transient(batch, step, "action", transient).await?;
            self.record_permanent(batch, step, permanent).await?;
            if any_succeeded && self.options.crash_after == Some(step) {
                return Ok(Flow::Crash);
            }
        }

        // Unwind: undo every started step not yet undone, newest first.
        for step in Step::ALL.into_iter().rev() {
            batch.retain(|l| !l.gone);
            if !batch.iter().any(|l| l.unwinding) {
                return Ok(Flow::Continue);
            }
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            self.renew(batch).await?;
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| {
                    let log = &batch[i].log[step as usize];
                    !batch[i].gone && batch[i].unwinding && log.started && !log.undo_finished
                })
                .collect();
            if need.is_empty() {
                continue;
            }
            let need = self.append_marks(batch, &need, step, EVENT_UNDO_STARTED).await?;
            let results = self.act(step, batch, &need, &sales, true).await;
            let Outcomes { ok, transient, permanent: stuck } = Outcomes::of(&need, results);
            let done = self.append_pairs(batch, &ok, step, EVENT_UNDO_FINISHED).await?;
            for i in done {
                batch[i].log[step as usize].undo_finished = true;
            }
            self.record_transient(batch, step, "undo", transient).await?;
            self.record_stuck(batch, step, stuck).await?;
        }

        // Every undo finished: the sale is FAILED, the saga failed.
        batch.retain(|l| !l.gone);
        let finished: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].unwinding).collect();
        if !finished.is_empty() {
            let mut tx = self.pool.begin().await?;
            let (ids, generations) = fence_of(batch, &finished);
            sqlx::query(
                "UPDATE sales SET state = 'FAILED', failure_reason = s.failure_reason,
                     base_commission = NULL, total_commission = NULL
                 FROM sagas s JOIN UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
                   ON s.id = u.id AND s.generation = u.generation
                 WHERE sales.id = s.sale_id",
            )
            .bind(&ids)
            .bind(&generations)
            .execute(&mut *tx)
            .await?;
            let failed = close(&mut tx, "failed", &ids, &generations).await?;
            tx.commit().await?;
            for &i in &finished {
                if failed.contains(&batch[i].id) {
                    tracing::info!(saga = %batch[i].id, sale = %batch[i].sale_id, reason = %batch[i].failure_reason, "saga unwound; sale FAILED");
                }
                batch[i].gone = true;
            }
        }
        Ok(Flow::Continue)
    }

    /// Runs a step's action (or undo) for `need`, twice under `repeat_actions`
    /// (the second result counts when the first succeeded: one effect either way).
    async fn act(
        &self,
        step: Step,
        batch: &[Live],
        need: &[usize],
        sales: &HashMap<Uuid, SaleFacts>,
        undo: bool,
    ) -> Vec<Result<Value, StepError>> {
        let mut items: Vec<Option<Item<'_>>> = Vec::with_capacity(need.len());
        for &i in need {
            items.push(sales.get(&batch[i].sale_id).map(|sale| Item { saga: &batch[i], sale }));
        }
        let present: Vec<Item<'_>> = items.iter().flatten().copied().collect();
        let mut results = run_once(self, step, &present, undo).await;
        if self.options.repeat_actions {
            let again = run_once(self, step, &present, undo).await;
            for (first, second) in results.iter_mut().zip(again) {
                if first.is_ok() {
                    *first = second;
                }
            }
        }
        let mut results = results.into_iter();
        items
            .iter()
            .map(|item| match item {
                Some(_) => results
                    .next()
                    .unwrap_or_else(|| Err(StepError::Transient("step returned too few results".to_string()))),
                None => Err(StepError::Permanent("the saga's sale does not exist".to_string())),
            })
            .collect()
    }

    fn apply_hooks(&self, step: Step, batch: &[Live], need: &[usize], results: &mut [Result<Value, StepError>]) {
        if let Some((fail_step, reason)) = &self.options.inject_failure
            && *fail_step == step
        {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(StepError::Permanent(format!("injected failure at {step}: {}", reason.0)));
            }
        }
        if let Some((fail_step, times)) = self.options.inject_transient
            && fail_step == step
        {
            for (&i, result) in need.iter().zip(results.iter_mut()) {
                if result.is_ok() && i64::from(batch[i].attempt) <= i64::from(times) {
                    *result = Err(StepError::Transient(format!("injected transient failure at {step}")));
                }
            }
        }
    }

    /// Writes `succeeded` with each output; after `settle` the saga is done.
    async fn record_succeeded(
        &self,
        batch: &mut [Live],
        step: Step,
        ok: Vec<(usize, Value)>,
    ) -> Result<(), sqlx::Error> {
        let settled = step == Step::Settle;
        let applied: HashSet<usize> = self
            .write_fenced(batch, step, EVENT_SUCCEEDED, &ok, async |tx, batch, applied| {
                if settled {
                    let (ids, generations) = fence_of(batch, applied);
                    close(tx, "done", &ids, &generations).await?;
                }
                Ok(())
            })
            .await?
            .into_iter()
            .collect();
        for (i, output) in ok {
            if applied.contains(&i) {
                batch[i].log[step as usize].output = Some(output);
                batch[i].gone |= settled;
            }
        }
        Ok(())
    }

    /// Writes `failed` (transient) and releases the saga until its backoff has passed.
    async fn record_transient(
        &self,
        batch: &mut [Live],
        step: Step,
        phase: &str,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        let details: Vec<(usize, Value)> = failures
            .iter()
            .map(|(i, message)| {
                (*i, json!({"phase": phase, "error": message, "transient": true, "attempt": batch[*i].attempt}))
            })
            .collect();
        let (retry_base, retry_max) = (self.options.retry_base, self.options.retry_max);
        self.write_fenced(batch, step, EVENT_FAILED, &details, async |tx, batch, applied| {
            let rows: Vec<(Uuid, i64, i64)> = applied
                .iter()
                .map(|&i| {
                    let delay = backoff_delay(batch[i].attempt, retry_base, retry_max);
                    (batch[i].id, batch[i].generation, millis(delay))
                })
                .collect();
            release(tx, &rows).await
        })
        .await?;
        for (i, message) in failures {
            tracing::info!(saga = %batch[i].id, %step, phase, error = %message, attempt = batch[i].attempt, "transient saga failure; will retry");
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Writes `failed` (permanent) and turns the saga to unwinding with the reason.
    async fn record_permanent(
        &self,
        batch: &mut [Live],
        step: Step,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        let reasons: Vec<String> = failures.iter().map(|(_, message)| format!("{step}: {message}")).collect();
        let applied: HashSet<usize> =
            self.record_failed(batch, step, FailedIn::Action, &failures, &reasons).await?.into_iter().collect();
        for ((i, message), reason) in failures.into_iter().zip(reasons) {
            if applied.contains(&i) {
                tracing::info!(saga = %batch[i].id, %step, error = %message, "permanent saga failure; unwinding");
                batch[i].unwinding = true;
                batch[i].failure_reason = reason;
            }
        }
        Ok(())
    }

    /// An undo failed permanently: the saga is stuck (an operator must look).
    async fn record_stuck(
        &self,
        batch: &mut [Live],
        step: Step,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        let reasons: Vec<String> = failures
            .iter()
            .map(|(i, message)| format!("{}; undo of {step} failed: {message}", batch[*i].failure_reason))
            .collect();
        self.record_failed(batch, step, FailedIn::Undo, &failures, &reasons).await?;
        for (i, message) in failures {
            tracing::error!(saga = %batch[i].id, sale = %batch[i].sale_id, %step, error = %message, "saga STUCK: an undo action failed; operator action needed");
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Writes `failed` (permanent, in the action or the undo) for each failure
    /// and sets the saga's next state with its reason (`reasons`, one per
    /// failure). Returns the indices written.
    async fn record_failed(
        &self,
        batch: &mut [Live],
        step: Step,
        failed_in: FailedIn,
        failures: &[(usize, String)],
        reasons: &[String],
    ) -> Result<Vec<usize>, sqlx::Error> {
        let (phase, state, release) = match failed_in {
            FailedIn::Action => ("action", "unwinding", false),
            FailedIn::Undo => ("undo", "stuck", true),
        };
        let details: Vec<(usize, Value)> = failures
            .iter()
            .map(|(i, message)| (*i, json!({"phase": phase, "error": message, "transient": false})))
            .collect();
        let reason_of: HashMap<usize, &String> = failures.iter().map(|(i, _)| *i).zip(reasons).collect();
        self.write_fenced(batch, step, EVENT_FAILED, &details, async |tx, batch, applied| {
            let rows: Vec<(Uuid, i64, String)> = applied
                .iter()
                .filter_map(|i| reason_of.get(i).map(|reason| (batch[*i].id, batch[*i].generation, (*reason).clone())))
                .collect();
            set_state(tx, state, &rows, release).await
        })
        .await
    }

    /// Appends `event` with an empty detail for each saga at `need`; returns
    /// the indices whose fenced write applied and drops the rest.
    async fn append_marks(
        &self,
        batch: &mut [Live],
        need: &[usize],
        step: Step,
        event: &str,
    ) -> Result<Vec<usize>, sqlx::Error> {
        let pairs: Vec<(usize, Value)> = need.iter().map(|&i| (i, json!({}))).collect();
        self.append_pairs(batch, &pairs, step, event).await
    }

    /// Appends `event` for each `(index, detail)`; returns the indices whose
    /// fenced write applied and drops the rest (a newer owner has them).
    async fn append_pairs(
        &self,
        batch: &mut [Live],
        pairs: &[(usize, Value)],
        step: Step,
        event: &str,
    ) -> Result<Vec<usize>, sqlx::Error> {
        self.write_fenced(batch, step, event, pairs, async |_, _, _| Ok(())).await
    }

    /// The generation-fenced write of a step event: appends `event` for each
    /// `(index, detail)` (see [`append`]) and, in the same transaction, lets
    /// `then` write its change to the saga rows whose event was written, with
    /// the same fence (`WHERE s.generation = u.generation`). A saga a newer
    /// owner has claimed gets neither write and is dropped from the batch.
    /// Returns the indices whose event was written, in `pairs` order.
    async fn write_fenced(
        &self,
        batch: &mut [Live],
        step: Step,
        event: &str,
        pairs: &[(usize, Value)],
        then: impl AsyncFnOnce(&mut PgConnection, &[Live], &[usize]) -> Result<(), sqlx::Error>,
    ) -> Result<Vec<usize>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let kept = append(&mut tx, step, event, &rows_of(batch, pairs)).await?;
        let indices: Vec<usize> = pairs.iter().map(|(i, _)| *i).collect();
        let applied: Vec<usize> = indices.iter().copied().filter(|&i| kept.contains(&batch[i].id)).collect();
        then(&mut tx, batch, &applied).await?;
        tx.commit().await?;
        drop_lost(batch, &indices, &kept);
        Ok(applied)
    }

    /// Extends every lease (fenced); sagas that lost their fence are dropped.
    async fn renew(&self, batch: &mut [Live]) -> Result<(), sqlx::Error> {
        let live: Vec<usize> = (0..batch.len()).filter(|&i| !batch[i].gone).collect();
        if live.is_empty() {
            return Ok(());
        }
        let (ids, generations) = fence_of(batch, &live);
        let kept: HashSet<Uuid> = sqlx::query_scalar(
            "UPDATE sagas s SET lease_expires_at = now() + $3::bigint * interval '1 millisecond'
             FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
             WHERE s.id = u.id AND s.generation = u.generation
             RETURNING s.id",
        )
        .bind(&ids)
        .bind(&generations)
        .bind(millis(self.options.lease))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        drop_lost(batch, &live, &kept);
        Ok(())
    }

    /// Graceful shutdown: gives every held saga back at once (no backoff).
    async fn release_all(&self, batch: &mut [Live]) -> Result<(), sqlx::Error> {
        let rows: Vec<(Uuid, i64, i64)> = batch.iter().filter(|l| !l.gone).map(|l| (l.id, l.generation, 0)).collect();
        release(&self.pool, &rows).await?;
        for live in batch.iter_mut() {
            live.gone = true;
        }
        Ok(())
    }
}

async fn run_once(engine: &Engine, step: Step, items: &[Item<'_>], undo: bool) -> Vec<Result<Value, StepError>> {
    if undo { settle_sale::undo(engine, step, items).await } else { settle_sale::action(engine, step, items).await }
}

fn rows_of(batch: &[Live], pairs: &[(usize, Value)]) -> Vec<(Uuid, i64, Value)> {
    pairs.iter().map(|(i, detail)| (batch[*i].id, batch[*i].generation, detail.clone())).collect()
}

/// The fence of each saga at `indices`: its id and claimed generation, as the
/// `UNNEST($1::uuid[], $2::bigint[])` of a fenced statement binds them.
fn fence_of(batch: &[Live], indices: &[usize]) -> (Vec<Uuid>, Vec<i64>) {
    indices.iter().map(|&i| (batch[i].id, batch[i].generation)).unzip()
}

/// The columns of fenced rows `(saga, generation, value)`, to bind as arrays.
fn columns_of<T: Clone>(rows: &[(Uuid, i64, T)]) -> (Vec<Uuid>, Vec<i64>, Vec<T>) {
    let ids = rows.iter().map(|r| r.0).collect();
    let generations = rows.iter().map(|r| r.1).collect();
    let values = rows.iter().map(|r| r.2.clone()).collect();
    (ids, generations, values)
}

/// Drops from the batch each saga at `indices` whose fenced write did not
/// apply (`kept` lacks it): a newer owner has claimed it.
fn drop_lost(batch: &mut [Live], indices: &[usize], kept: &HashSet<Uuid>) {
    for &i in indices {
        if !kept.contains(&batch[i].id) {
            tracing::warn!(saga = %batch[i].id, "lost the saga to a newer owner; dropping it");
            batch[i].gone = true;
        }
    }
}

/// Appends one event per `(saga, generation, detail)`, fenced: a row is only
/// written while the saga's generation is still the claimed one (the saga row
/// is share-locked, so a concurrent claim waits or wins cleanly). Returns the
/// sagas whose event was written.
async fn append(
    conn: &mut PgConnection,
    step: Step,
    event: &str,
    rows: &[(Uuid, i64, Value)],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let (ids, generations, details) = columns_of(rows);
    let written: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO saga_step_events (saga_id, run, step, event, detail, generation)
         SELECT s.id, s.run, $1, $2, u.detail, s.generation
         FROM UNNEST($3::uuid[], $4::bigint[], $5::jsonb[]) AS u(id, generation, detail)
         JOIN sagas s ON s.id = u.id AND s.generation = u.generation
         FOR SHARE OF s
         RETURNING saga_id",
    )
    .bind(step.name())
    .bind(event)
    .bind(&ids)
    .bind(&generations)
    .bind(&details)
    .fetch_all(&mut *conn)
    .await?;
    Ok(written.into_iter().collect())
}

/// Sets a state (and reason) on fenced sagas; `release` also drops the owner.
async fn set_state(
    conn: &mut PgConnection,
    state: &str,
    rows: &[(Uuid, i64, String)],
    release: bool,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, generations, reasons) = columns_of(rows);
    sqlx::query(
        "UPDATE sagas s SET state = $4, failure_reason = u.reason, updated_at = now(),
             owner = CASE WHEN $5 THEN NULL ELSE s.owner END,
             lease_expires_at = CASE WHEN $5 THEN NULL ELSE s.lease_expires_at END
         FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) AS u(id, generation, reason)
         WHERE s.id = u.id AND s.generation = u.generation",
    )
    .bind(&ids)
    .bind(&generations)
    .bind(&reasons)
    .bind(state)
    .bind(release)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends fenced sagas in `state` (`done` or `failed`) and gives them back;
/// returns the sagas it ended.
async fn close(
    conn: &mut PgConnection,
    state: &str,
    ids: &[Uuid],
    generations: &[i64],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let closed: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sagas s SET state = $3, owner = NULL, lease_expires_at = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
         WHERE s.id = u.id AND s.generation = u.generation
         RETURNING s.id",
    )
    .bind(ids)
    .bind(generations)
    .bind(state)
    .fetch_all(&mut *conn)
    .await?;
    Ok(closed.into_iter().collect())
}

/// Gives sagas back (owner and lease cleared), runnable again after a delay (ms).
async fn release<'e, E>(executor: E, rows: &[(Uuid, i64, i64)]) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, generations, delays) = columns_of(rows);
    sqlx::query(
        "UPDATE sagas s SET owner = NULL, lease_expires_at = NULL, updated_at = now(),
             next_attempt_at = now() + u.delay * interval '1 millisecond'
         FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, generation, delay)
         WHERE s.id = u.id AND s.generation = u.generation",
    )
    .bind(&ids)
    .bind(&generations)
    .bind(&delays)
    .execute(executor)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let status = tonic::Status::unavailable("down");
        assert!(matches!(StepError::from_status("ledger", &status), StepError::Transient(_)));
        let status = tonic::Status::failed_precondition("no");
        let error = StepError::from_status("ledger", &status);
        assert!(matches!(error, StepError::Permanent(_)));
        assert!(matches!(error, StepError::Permanent(m) if m.starts_with("ledger: FailedPrecondition")));
    }
}
