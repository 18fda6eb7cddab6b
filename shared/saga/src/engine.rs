//! The engine: claim with `FOR UPDATE SKIP LOCKED` and a lease, fence every
//! write on the claimed generation, keep the append-only step log, and drive a
//! claimed batch step by step *across* sagas (one bulk write and one bulk
//! action per step), then unwind the ones that failed permanently.
//!
//! Recovery reads the current run's log: a step with `succeeded` (or whose
//! output a later `started` carries) is skipped and its stored output reused;
//! a step without it is re-run (every action is idempotent). An unwinding
//! saga undoes every started step whose `undo_finished` is missing, newest
//! first; only steps with an undo log `started`, and steps without one log
//! no `succeeded` either: the next `started` carries their outputs (see
//! [`Step::undo`](crate::Step::undo)).
//!
//! Leases are short (seconds) so that a dead worker's sagas are soon claimable;
//! while a worker drives a batch, a heartbeat running beside it renews the
//! batch's leases (fenced on owner and generation), however long a step
//! takes, and tells the worker which sagas another owner took.
//!
//! Metrics (the `metrics` crate; free without a recorder), each also
//! labelled `service` ([`SagaDef::SERVICE`]):
//! `accrue_saga_batches_total{kind}` per claimed batch,
//! `accrue_saga_claims_total{kind}` per claimed saga,
//! `accrue_sagas_total{kind, state}` per saga entering a state (see
//! [`count_entered`]), and `accrue_saga_step_duration_seconds{kind, step,
//! phase}` per step action or undo over a batch.
//!
//! Traces: each step runs in a `saga.step` span in the trace of the RPC that
//! started the saga ([`trace`]).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use accrue_types::SagaId;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::def::{Item, Output, Saga, SagaDef, StepError, StepLog, StepResult};
use crate::options::SagaOptions;
#[cfg(feature = "test-hooks")]
use crate::options::TestHooks;
use crate::retry::backoff_delay;
use crate::state::{SagaState, StepEvent};

mod heartbeat;
mod trace;
mod writes;

use heartbeat::Leases;
use writes::*;

/// A definition's engine, shared by a process's workers.
pub struct Engine<D: SagaDef> {
    def: D,
    pool: PgPool,
    options: SagaOptions,
    #[cfg(feature = "test-hooks")]
    hooks: TestHooks,
}

/// Where a step failed for good: an action's permanent failure unwinds the
/// saga (the worker keeps it to run the undos); an undo's leaves it stuck and
/// given back. Either, out of internal attempts, leaves it stuck.
#[derive(Debug, Clone, Copy)]
enum FailedIn {
    Action,
    Undo,
}

/// A step's results for the sagas it ran on, by outcome: `(index, output)`
/// or `(index, message)`.
#[derive(Debug, Default)]
struct Outcomes {
    ok: Vec<(usize, Output)>,
    transient: Vec<(usize, String)>,
    permanent: Vec<(usize, String)>,
    internal: Vec<(usize, String)>,
}

impl Outcomes {
    /// Splits `results` (one per index in `need`, in order).
    fn of(need: &[usize], results: Vec<StepResult>) -> Self {
        let mut outcomes = Outcomes::default();
        for (&i, result) in need.iter().zip(results) {
            match result {
                Ok(output) => outcomes.ok.push((i, output)),
                Err(StepError::Transient(message)) => outcomes.transient.push((i, message)),
                Err(StepError::Permanent(message)) => outcomes.permanent.push((i, message)),
                Err(StepError::Internal(message)) => outcomes.internal.push((i, message)),
            }
        }
        outcomes
    }
}

enum Flow {
    Continue,
    /// The `crash_after` hook fired: stop without releasing anything.
    #[cfg(feature = "test-hooks")]
    Crash,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: SagaId,
    run: i32,
    generation: i64,
    attempt: i32,
    state: SagaState,
    failure_reason: String,
    traceparent: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LoggedEvent {
    saga_id: SagaId,
    step: String,
    event: StepEvent,
    detail: Value,
    generation: i64,
}

/// The key of a `started` event's detail under which the outputs of the
/// steps without an undo before it are carried, by step name.
const CARRIED: &str = "carried";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl<D: SagaDef> Engine<D> {
    /// An engine for `def` over `pool` (whose search_path is the schema
    /// holding `sagas` and `saga_step_events`).
    pub fn new(def: D, pool: PgPool, options: SagaOptions) -> Self {
        Engine {
            def,
            pool,
            options,
            #[cfg(feature = "test-hooks")]
            hooks: TestHooks::default(),
        }
    }

    /// The same engine with faults injected (tests).
    #[cfg(feature = "test-hooks")]
    pub fn with_hooks(self, hooks: TestHooks) -> Self {
        Engine { hooks, ..self }
    }

    /// Starts `options.workers` workers named `{name}-{pid}-{process}-w{index}`;
    /// `notify` wakes an idle one early (`notify_one`: one claim takes the
    /// backlog; `notify_waiters` wakes every idle one); each stops (releasing its leases) when
    /// `shutdown` is cancelled.
    pub fn spawn(self, name: &str, notify: Arc<Notify>, shutdown: CancellationToken) -> JoinSet<()> {
        let mut set = JoinSet::new();
        if self.options.heartbeat_interval() >= self.options.lease {
            // Allowed (tests may want leases to lapse), but in production it
            // hands a live worker's sagas to others mid-step.
            tracing::warn!(
                heartbeat_ms = millis(self.options.heartbeat_interval()),
                lease_ms = millis(self.options.lease),
                kind = D::KIND,
                "the saga heartbeat is not shorter than the lease: leases will lapse while steps run"
            );
        }
        let process = Uuid::new_v4().simple().to_string();
        let engine = Arc::new(self);
        for index in 0..engine.options.workers {
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            let notify = notify.clone();
            let owner = format!("{name}-{}-{}-w{index}", std::process::id(), &process[..8]);
            set.spawn(async move { engine.work(owner, notify, shutdown).await });
        }
        set
    }

    /// One worker: claim a batch, drive it, repeat; sleep on the notifier or
    /// the poll interval when idle. Returns on shutdown (after releasing its
    /// leases) or when the `crash_after` hook fires (keeping them).
    async fn work(self: Arc<Self>, owner: String, notify: Arc<Notify>, shutdown: CancellationToken) {
        let mut errors: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Listening from before the claim, so a wake during it is not
            // missed; and only until the claim returns, so a worker that
            // goes on to drive a batch holds no wake another idle worker
            // could use (a wake taken and dropped unconsumed passes on to
            // the next waiter).
            let claimed = {
                let notified = notify.notified();
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
                        continue;
                    }
                    claimed => claimed,
                }
            };
            match claimed {
                Ok(batch) => {
                    errors = 0;
                    let short = i64::try_from(batch.len()).unwrap_or(i64::MAX) < self.options.batch_size.max(1);
                    match self.process(&owner, batch, &shutdown).await {
                        Flow::Continue => {}
                        #[cfg(feature = "test-hooks")]
                        Flow::Crash => {
                            tracing::warn!(%owner, "saga worker stopped by the crash_after test hook (leases kept)");
                            return;
                        }
                    }
                    // The backlog is drained: let the next batch gather (see SagaOptions::gather).
                    if short && !self.options.gather.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(self.options.gather) => {}
                            _ = shutdown.cancelled() => break,
                        }
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

    /// Claims up to `batch_size` runnable sagas of this kind (running or
    /// unwinding, unowned or with an expired lease, due), bumping their
    /// generation, and loads the current run's log of each saga claimed
    /// before (a first claim has none).
    async fn claim(&self, owner: &str) -> Result<Vec<Saga>, sqlx::Error> {
        // The claim commits durably although the workers' pool commits with
        // synchronous_commit=off. A claim is the one worker write whose loss
        // is not harmless: lost with the WAL tail in a database crash, it
        // would roll `generation` back, the next claim would hand the same
        // generation to a second owner, and both owners' fenced writes would
        // pass. (A lost step row re-runs an idempotent step; a lost renewal,
        // release or close only delays a saga; those stay relaxed.) Commits
        // are ordered in the WAL, so flushing this one flushes everything
        // before it too.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = on").execute(&mut *tx).await?;
        // The runnable states are spelled out (SagaState::Running and
        // ::Unwinding) so that a generic plan can still prove the partial
        // index `sagas_runnable` applies.
        let claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE sagas s SET owner = $1, generation = s.generation + 1,
                 lease_expires_at = now() + $2::bigint * interval '1 millisecond',
                 attempt = s.attempt + 1, updated_at = now()
             WHERE s.id IN (
                 SELECT id FROM sagas
                 WHERE kind = $4 AND state IN ('running', 'unwinding')
                   AND (owner IS NULL OR lease_expires_at < now())
                   AND next_attempt_at <= now()
                 ORDER BY created_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING s.id, s.run, s.generation, s.attempt, s.state, s.failure_reason, s.traceparent",
        )
        .bind(owner)
        .bind(millis(self.options.lease))
        .bind(self.options.batch_size.max(1))
        .bind(D::KIND)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        metrics::counter!("accrue_saga_batches_total", "service" => D::SERVICE, "kind" => D::KIND).increment(1);
        metrics::counter!("accrue_saga_claims_total", "service" => D::SERVICE, "kind" => D::KIND)
            .increment(claimed.len() as u64);
        // The first claim of a run: a new saga, a retried or a resumed one.
        for state in [SagaState::Running, SagaState::Unwinding] {
            count_entered::<D>(state, claimed.iter().filter(|c| c.attempt == 1 && c.state == state).count());
        }
        // Only a saga claimed before can have a log: every step event is
        // written by an owner, fenced on the generation its claim gave, and
        // the first claim gives generation 1 (nothing sets it back). A batch
        // of new sagas — all of them under a steady load — skips the read
        // (a round trip and an index probe per saga, issue 15).
        let (ids, runs): (Vec<SagaId>, Vec<i32>) =
            claimed.iter().filter(|c| c.generation > 1).map(|c| (c.id, c.run)).unzip();
        let events: Vec<LoggedEvent> = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT e.saga_id, e.step, e.event, e.detail, e.generation
             FROM saga_step_events e
             JOIN UNNEST($1::uuid[], $2::int[]) AS u(id, run) ON e.saga_id = u.id AND e.run = u.run
             ORDER BY e.id",
            )
            .bind(&ids)
            .bind(&runs)
            .fetch_all(&self.pool)
            .await?
        };
        // Every claim bumps generation and attempt together, and resume_stuck
        // (like a retry) sets attempt back to 0, so the claims since the saga
        // started or was last resumed are the generations above this one:
        // only their internal errors count against internal_attempts.
        let counted_after: HashMap<SagaId, i64> =
            claimed.iter().map(|c| (c.id, c.generation - i64::from(c.attempt))).collect();
        let steps = self.def.steps();
        let mut logs: HashMap<SagaId, Vec<StepLog>> = HashMap::new();
        let mut corrupt: HashMap<SagaId, String> = HashMap::new();
        let mut carried: Vec<(SagaId, Value)> = Vec::new();
        for event in events {
            if D::RETIRED_STEPS.contains(&event.step.as_str()) {
                continue;
            }
            let Some(index) = steps.iter().position(|step| step.name == event.step) else {
                corrupt.entry(event.saga_id).or_insert_with(|| {
                    format!("the step log names step {:?}, which {} does not have", event.step, D::KIND)
                });
                continue;
            };
            let log = logs.entry(event.saga_id).or_insert_with(|| vec![StepLog::default(); steps.len()]);
            let log = &mut log[index];
            match event.event {
                StepEvent::Started => {
                    log.started = true;
                    carried.push((event.saga_id, event.detail));
                }
                StepEvent::Succeeded => log.output = Some(Output::from_value(&event.detail)),
                StepEvent::UndoFinished => log.undo_finished = true,
                StepEvent::Failed
                    if is_internal(&event.detail)
                        && counted_after.get(&event.saga_id).is_some_and(|&after| event.generation > after) =>
                {
                    log.internal_failures = log.internal_failures.saturating_add(1);
                }
                StepEvent::Failed | StepEvent::UndoStarted => {}
            }
        }
        // The outputs of steps without an undo, written with a later step's `started`.
        for (saga_id, detail) in carried {
            let Some(outputs) = detail.get(CARRIED).and_then(Value::as_object) else { continue };
            for (name, output) in outputs {
                match steps.iter().position(|step| step.name == name) {
                    Some(index) => {
                        let log = logs.entry(saga_id).or_insert_with(|| vec![StepLog::default(); steps.len()]);
                        log[index].output = Some(Output::from_value(output));
                    }
                    None => {
                        corrupt.entry(saga_id).or_insert_with(|| {
                            format!("the step log carries the output of step {name:?}, which {} does not have", D::KIND)
                        });
                    }
                }
            }
        }
        let mut batch: Vec<Saga> = claimed
            .into_iter()
            .map(|c| Saga {
                log: logs.remove(&c.id).unwrap_or_else(|| vec![StepLog::default(); steps.len()]),
                id: c.id,
                run: c.run,
                generation: c.generation,
                attempt: c.attempt,
                unwinding: c.state == SagaState::Unwinding,
                failure_reason: c.failure_reason,
                traceparent: c.traceparent,
                gone: false,
                marked: None,
            })
            .collect();
        // Claim order is (created_at, id); keep it so that batches are deterministic.
        batch.sort_by_key(|saga| saga.id);
        if !corrupt.is_empty() {
            // A log this definition cannot read cannot be resumed or unwound safely.
            let rows: Vec<(SagaId, i64, String)> = batch
                .iter()
                .filter_map(|s| corrupt.get(&s.id).map(|reason| (s.id, s.generation, reason.clone())))
                .collect();
            let mut conn = self.pool.acquire().await?;
            set_state(&mut conn, SagaState::Stuck, &rows, true).await?;
            count_entered::<D>(SagaState::Stuck, rows.len());
            for (id, _, reason) in &rows {
                tracing::error!(saga = %id, %reason, "saga STUCK: unreadable step log; operator action needed");
            }
            batch.retain(|s| !corrupt.contains_key(&s.id));
        }
        Ok(batch)
    }

    /// Drives a claimed batch with the heartbeat beside it: both run in this
    /// worker's task, so the heartbeat ends exactly when the worker stops
    /// driving (done, shut down, or stopped by the `crash_after` hook like a
    /// killed process).
    async fn process(&self, owner: &str, mut batch: Vec<Saga>, shutdown: &CancellationToken) -> Flow {
        let started = std::time::Instant::now();
        let size = batch.len();
        let leases = Leases::of(&batch);
        let outcome = tokio::select! {
            outcome = self.drive(&mut batch, &leases, shutdown) => outcome,
            never = self.heartbeat(owner, &leases) => match never {},
        };
        tracing::debug!(sagas = size, elapsed_ms = started.elapsed().as_millis(), "saga batch driven");
        match outcome {
            Ok(flow) => flow,
            Err(error) => {
                tracing::warn!(%owner, %error, sagas = batch.len(), "saga batch interrupted by a database error; releasing");
                let rows: Vec<(SagaId, i64, i64)> = batch
                    .iter()
                    .filter(|s| !s.gone)
                    .map(|s| (s.id, s.generation, millis(self.options.retry_base)))
                    .collect();
                if let Err(error) = release(&self.pool, &rows).await {
                    tracing::warn!(%error, "releasing saga leases failed; they will expire");
                }
                Flow::Continue
            }
        }
    }

    async fn drive(
        &self,
        batch: &mut Vec<Saga>,
        leases: &Leases,
        shutdown: &CancellationToken,
    ) -> Result<Flow, sqlx::Error> {
        let ids: Vec<SagaId> = batch.iter().map(|s| s.id).collect();
        let subjects = self.def.load(&self.pool, &ids).await?;
        let steps = self.def.steps();

        // Forward: each step for every saga that still needs it.
        for (index, step) in steps.iter().enumerate() {
            batch.retain(|s| !s.gone);
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            leases.drop_lost(batch);
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| !batch[i].gone && !batch[i].unwinding && batch[i].log[index].output.is_none())
                .collect();
            if need.is_empty() {
                continue;
            }
            // A step without an undo logs no `started`: nothing would read it.
            let need = if step.undo.is_some() {
                // Sagas whose `started` went out with the previous step's
                // success need no mark of their own.
                let (premarked, unmarked): (Vec<usize>, Vec<usize>) =
                    need.into_iter().partition(|&i| batch[i].marked == Some(index));
                let mut need = self.append_marks(batch, &unmarked, index, StepEvent::Started).await?;
                need.extend(premarked.into_iter().filter(|&i| !batch[i].gone));
                need.sort_unstable();
                for &i in &need {
                    batch[i].log[index].started = true;
                }
                need
            } else {
                need
            };
            let started = std::time::Instant::now();
            let spans = trace::step_spans::<D>(step.name, "action", batch, &need);
            #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
            let mut results = self.act(index, batch, &need, &subjects, false).instrument(spans.lead.clone()).await;
            drop(spans);
            let action_ms = started.elapsed().as_millis();
            tracing::debug!(step = step.name, sagas = need.len(), action_ms, "saga step action");
            record_step_duration::<D>(step.name, "action", started);
            #[cfg(feature = "test-hooks")]
            self.apply_hooks(index, batch, &need, &mut results);

            let Outcomes { ok, transient, permanent, internal } = Outcomes::of(&need, results);
            #[cfg(feature = "test-hooks")]
            let first_claim_succeeded = ok.iter().any(|&(i, _)| batch[i].generation == 1);
            self.record_succeeded(batch, index, ok).await?;
            self.record_transient(batch, index, FailedIn::Action, transient).await?;
            self.record_internal(batch, index, FailedIn::Action, internal).await?;
            self.record_permanent(batch, index, FailedIn::Action, permanent).await?;
            #[cfg(feature = "test-hooks")]
            if first_claim_succeeded && self.hooks.crash_after == Some(step.name) {
                return Ok(Flow::Crash);
            }
        }

        // A saga whose every step had already succeeded when it was claimed
        // (its log outlived the close, e.g. a reset) only needs closing.
        let complete: Vec<usize> = (0..batch.len())
            .filter(|&i| !batch[i].gone && !batch[i].unwinding && batch[i].log.iter().all(|l| l.output.is_some()))
            .collect();
        if !complete.is_empty() {
            self.finish(batch, &complete).await?;
        }

        // Unwind: undo every started step not yet undone, newest first.
        for index in (0..steps.len()).rev() {
            batch.retain(|s| !s.gone);
            if !batch.iter().any(|s| s.unwinding) {
                return Ok(Flow::Continue);
            }
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            leases.drop_lost(batch);
            if steps[index].undo.is_none() {
                continue;
            }
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| {
                    let log = &batch[i].log[index];
                    !batch[i].gone && batch[i].unwinding && log.started && !log.undo_finished
                })
                .collect();
            if need.is_empty() {
                continue;
            }
            let need = self.append_marks(batch, &need, index, StepEvent::UndoStarted).await?;
            let started = std::time::Instant::now();
            let spans = trace::step_spans::<D>(steps[index].name, "undo", batch, &need);
            #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
            let mut results = self.act(index, batch, &need, &subjects, true).instrument(spans.lead.clone()).await;
            drop(spans);
            record_step_duration::<D>(steps[index].name, "undo", started);
            #[cfg(feature = "test-hooks")]
            if self.hooks.fail_undo == Some(steps[index].name) {
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(StepError::Permanent(format!("injected undo failure at {}", steps[index].name)));
                }
            }
            let Outcomes { ok, transient, permanent: stuck, internal } = Outcomes::of(&need, results);
            let done = self.append_pairs(batch, &ok, index, StepEvent::UndoFinished).await?;
            for i in done {
                batch[i].log[index].undo_finished = true;
            }
            self.record_transient(batch, index, FailedIn::Undo, transient).await?;
            self.record_internal(batch, index, FailedIn::Undo, internal).await?;
            self.record_permanent(batch, index, FailedIn::Undo, stuck).await?;
        }

        // Every undo finished: the definition records the failure, the saga failed.
        batch.retain(|s| !s.gone);
        let finished: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].unwinding).collect();
        if !finished.is_empty() {
            let mut tx = self.pool.begin().await?;
            let (ids, generations) = fence_of(batch, &finished);
            // The close is fenced, so what it ended is what is still ours.
            let failed = close(&mut tx, SagaState::Failed, &ids, &generations).await?;
            let sagas: Vec<&Saga> = finished.iter().map(|&i| &batch[i]).filter(|s| failed.contains(&s.id)).collect();
            self.def.on_failed(&mut tx, &sagas).await?;
            tx.commit().await?;
            count_entered::<D>(SagaState::Failed, failed.len());
            for &i in &finished {
                if failed.contains(&batch[i].id) {
                    tracing::info!(saga = %batch[i].id, kind = D::KIND, reason = %batch[i].failure_reason, "saga unwound; failed");
                }
                batch[i].gone = true;
            }
        }
        Ok(Flow::Continue)
    }

    /// Closes the sagas at `indices` as done (fenced) with the definition's
    /// `on_done` in the same transaction, and drops them from the batch.
    async fn finish(&self, batch: &mut [Saga], indices: &[usize]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (ids, generations) = fence_of(batch, indices);
        let closed = close(&mut tx, SagaState::Done, &ids, &generations).await?;
        let sagas: Vec<&Saga> = indices.iter().map(|&i| &batch[i]).filter(|s| closed.contains(&s.id)).collect();
        self.def.on_done(&mut tx, &sagas).await?;
        tx.commit().await?;
        count_entered::<D>(SagaState::Done, closed.len());
        for &i in indices {
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Runs a step's action (or undo) for `need`; under the `repeat_actions`
    /// hook twice (the second result counts when the first succeeded: one
    /// effect either way).
    async fn act(
        &self,
        index: usize,
        batch: &[Saga],
        need: &[usize],
        subjects: &HashMap<SagaId, D::Subject>,
        undo: bool,
    ) -> Vec<StepResult> {
        let step = &self.def.steps()[index];
        let Some(run) = (if undo { step.undo } else { Some(step.action) }) else {
            // Never asked for (an unwind passes over such a step); nothing to undo.
            return need.iter().map(|_| Ok(Output::empty())).collect();
        };
        let items: Vec<Option<Item<'_, D::Subject>>> =
            need.iter().map(|&i| subjects.get(&batch[i].id).map(|subject| Item { saga: &batch[i], subject })).collect();
        let present: Vec<Item<'_, D::Subject>> = items.iter().flatten().copied().collect();
        #[cfg(feature = "test-hooks")]
        if let Some((slow_step, delay)) = self.hooks.slow_step
            && slow_step == step.name
            && !undo
        {
            tokio::time::sleep(delay).await;
        }
        #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
        let mut results = if present.is_empty() { Vec::new() } else { run(&self.def, &present).await };
        #[cfg(feature = "test-hooks")]
        if self.hooks.repeat_actions && !present.is_empty() {
            let again = run(&self.def, &present).await;
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
                Some(_) => results.next().unwrap_or_else(|| {
                    Err(StepError::Transient(format!("step {} returned too few results", step.name)))
                }),
                None => Err(StepError::Permanent(format!("the subject of this {} saga does not exist", D::KIND))),
            })
            .collect()
    }

    #[cfg(feature = "test-hooks")]
    fn apply_hooks(&self, index: usize, batch: &[Saga], need: &[usize], results: &mut [StepResult]) {
        let name = self.def.steps()[index].name;
        if let Some((fail_step, reason)) = &self.hooks.inject_failure
            && *fail_step == name
        {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(StepError::Permanent(format!("injected failure at {name}: {reason}")));
            }
        }
        if let Some((fail_step, times)) = self.hooks.inject_transient
            && fail_step == name
        {
            for (&i, result) in need.iter().zip(results.iter_mut()) {
                if result.is_ok() && i64::from(batch[i].attempt) <= i64::from(times) {
                    *result = Err(StepError::Transient(format!("injected transient failure at {name}")));
                }
            }
        }
        if let Some((fail_step, claims)) = self.hooks.inject_internal
            && fail_step == name
        {
            for (&i, result) in need.iter().zip(results.iter_mut()) {
                if result.is_ok() && batch[i].generation <= i64::from(claims) {
                    *result = Err(StepError::Internal(format!("injected internal error at {name}")));
                }
            }
        }
    }
}

/// Counts `n` sagas of `D` entering `state` in `accrue_sagas_total{service,
/// kind, state}`, once their change committed: `running` (or `unwinding`)
/// at the first claim of a run — a new saga, one an operator retried or
/// resumed —, `unwinding` on a permanent failure, then `done`, `failed` or
/// `stuck`. So `running` minus the three ends is roughly what is in flight,
/// and any increase of `stuck` wants an operator.
pub(crate) fn count_entered<D: SagaDef>(state: SagaState, n: usize) {
    if n > 0 {
        metrics::counter!("accrue_sagas_total", "service" => D::SERVICE, "kind" => D::KIND, "state" => state.as_str())
            .increment(n as u64);
    }
}

/// Records a step's action or undo over a batch in
/// `accrue_saga_step_duration_seconds{service, kind, step, phase}`.
fn record_step_duration<D: SagaDef>(step: &'static str, phase: &'static str, started: std::time::Instant) {
    metrics::histogram!(
        "accrue_saga_step_duration_seconds",
        "service" => D::SERVICE, "kind" => D::KIND, "step" => step, "phase" => phase
    )
    .record(started.elapsed().as_secs_f64());
}

/// True when a `failed` event's detail records an internal error.
fn is_internal(detail: &Value) -> bool {
    detail.get("internal").and_then(Value::as_bool) == Some(true)
}
