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
//!
//! This file holds the engine and its workers' loop; [`claim`] takes a batch
//! and reads back its logs, [`drive`] runs a batch's steps and undos,
//! [`writes`] are the fenced writes they make, [`heartbeat`] renews the
//! batch's leases.

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

mod claim;
mod drive;
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

enum Flow {
    Continue,
    /// The `crash_after` hook fired: stop without releasing anything.
    #[cfg(feature = "test-hooks")]
    Crash,
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
