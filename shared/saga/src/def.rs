//! What a saga definition gives the engine: its kind, its ordered steps (each
//! an action paired with its undo, both working on a whole batch), the subject
//! each saga works on, and what happens when a saga finishes or fails for good.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use accrue_types::SagaId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Why a step's action (or undo) did not succeed for one saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Worth retrying later (a peer is unavailable, a database hiccup…): the
    /// saga is given back and claimed again after a backoff.
    Transient(String),
    /// Retrying gives the same answer: an action's unwinds the saga, an
    /// undo's leaves it stuck.
    Permanent(String),
    /// The callee failed on its side (a peer's INTERNAL): maybe a passing
    /// fault, maybe a bug or an input it cannot digest. Retried like a
    /// transient failure, but only
    /// [`SagaOptions::internal_attempts`](crate::SagaOptions::internal_attempts)
    /// times per step; then the saga is left STUCK with this message, for an
    /// operator to fix the cause and resume it. Neither unwound (the
    /// request may well be right) nor retried forever (a poisoned input
    /// would spin unseen as "running").
    Internal(String),
}

impl StepError {
    /// A database error during a step: retried, since the step is idempotent.
    pub fn database(error: &sqlx::Error) -> Self {
        StepError::Transient(format!("database: {error}"))
    }
}

/// One saga's result from a step: the output to log, or why not.
pub type StepResult = Result<Output, StepError>;

/// A step's output (or an event's detail) as the log stores it: JSON text,
/// serialized once from the step's typed value and read back by later steps
/// straight from the text. (It was a `serde_json::Value` tree, built, then
/// printed for the log and walked again by every later step: a tenth of the
/// services' CPU while settling, issue 15.) An output made by [`output_kept`]
/// also keeps the typed value, so that later steps of the same claim read it
/// without parsing the text again (decoding compute's lines twice was a
/// fifth of the attribution service's CPU, issue 15); a log read back after
/// a restart has only the text.
#[derive(Clone)]
pub struct Output {
    json: String,
    typed: Option<Arc<dyn Any + Send + Sync>>,
}

impl PartialEq for Output {
    /// Outputs are equal when their logged text is.
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Eq for Output {}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Output").field(&self.json).finish()
    }
}

impl Output {
    fn text(json: String) -> Output {
        Output { json, typed: None }
    }

    /// `{}`: an output that says nothing beyond its event.
    pub fn empty() -> Output {
        Output::text("{}".to_string())
    }

    /// The JSON text (always well-formed: only serde_json writes it).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Wraps JSON text the engine assembled from outputs (which only
    /// serde_json wrote) without parsing it again.
    pub(crate) fn from_json_text(json: String) -> Output {
        Output::text(json)
    }

    /// The same JSON from a tree (failure details, logs read back).
    pub fn from_value(value: &Value) -> Output {
        Output::text(value.to_string())
    }

    /// Decodes the output as `T`: the kept value when it is a `T`, else
    /// from the text.
    pub fn decode<T: DeserializeOwned + Clone + 'static>(&self) -> Result<T, serde_json::Error> {
        match self.kept::<T>() {
            Some(value) => Ok(value.clone()),
            None => serde_json::from_str(&self.json),
        }
    }

    /// The typed value [`output_kept`] kept, when it is a `T`.
    pub fn kept<T: 'static>(&self) -> Option<&T> {
        self.typed.as_deref().and_then(|value| value.downcast_ref::<T>())
    }
}

/// A step's output as the log stores it. An output that cannot be encoded
/// fails the step permanently: the log is the audit trail, so an empty stand-in
/// would lie.
pub fn output<T: Serialize>(value: &T) -> StepResult {
    serde_json::to_string(value)
        .map(Output::text)
        .map_err(|e| StepError::Permanent(format!("cannot encode the step output: {e}")))
}

/// The output of a step in [`SagaDef::UNLOGGED_STEPS`]: `value` kept for the
/// later steps of this claim, with no text (`{}`), since it is never logged.
pub fn output_unlogged<T: Send + Sync + 'static>(value: T) -> StepResult {
    Ok(Output { json: "{}".to_string(), typed: Some(Arc::new(value)) })
}

/// Like [`output`], keeping `value` itself beside its text for the later
/// steps of this claim ([`Output::decode`], [`Output::kept`]).
pub fn output_kept<T: Serialize + Send + Sync + 'static>(value: T) -> StepResult {
    let json = serde_json::to_string(&value)
        .map_err(|e| StepError::Permanent(format!("cannot encode the step output: {e}")))?;
    Ok(Output { json, typed: Some(Arc::new(value)) })
}

/// What a step's action or undo returns: one result per item, in item order.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Vec<StepResult>> + Send + 'a>>;

/// A step's action or undo over a batch of sagas.
pub type StepFn<D> = for<'a> fn(&'a D, &'a [Item<'a, <D as SagaDef>::Subject>]) -> StepFuture<'a>;

/// One step: its name in the log, its action, and the undo that reverses the
/// action's effect. Both must be idempotent (either may run twice), and the
/// undo must also clean up after an action that took effect without its
/// output being logged, or that never ran.
pub struct Step<D: SagaDef> {
    /// The name in `saga_step_events.step` ("resolve", …).
    pub name: &'static str,
    /// Runs the step for every item.
    pub action: StepFn<D>,
    /// Reverses the step for every item (of a saga that is unwinding).
    /// `None` for an action that changes nothing outside the log (a read, a
    /// pure computation, a peer's read). Such a step logs no event of its
    /// own when it succeeds (issue 15: two rows and one transaction per saga
    /// each): its output is kept in memory and written with the `started`
    /// of the next step that has an undo (`{"carried": {name: output}}`),
    /// the first write whose effect could depend on it. Until then a crash
    /// only loses work that changed nothing, and the action runs again on
    /// the next claim, as any step's does whose output is missing; an
    /// unwind passes over it. Its failures are logged as any step's.
    pub undo: Option<StepFn<D>>,
}

/// A saga definition, after steno: the engine drives its steps, keeps its log,
/// and calls back into it for the subject and for the end states.
pub trait SagaDef: Send + Sync + Sized + 'static {
    /// The `sagas.kind` this definition runs; the engine claims only these.
    const KIND: &'static str;

    /// The service that runs it (`attribution`): the `service` label of the
    /// engine's metrics and the `accrue.service` of its spans.
    const SERVICE: &'static str;

    /// Steps this definition no longer has whose events a log written by an
    /// earlier version may still hold: the engine reads past them, where an
    /// unknown step name leaves the saga stuck. A step may only retire when
    /// what it did is done elsewhere (say, by [`on_done`](Self::on_done)) and
    /// its undo is not needed by an unwind (say, because
    /// [`on_failed`](Self::on_failed) overwrites its effect).
    const RETIRED_STEPS: &'static [&'static str] = &[];

    /// Steps without an undo whose output is never written to the log, not
    /// even carried by a later `started`: a new claim that needs it runs the
    /// step again. For a step whose output is large and which a later step's
    /// effect pins anyway (SettleSale's compute: its lines are the posting the
    /// ledger keeps under the run's key, so a resumed compute adopts that
    /// posting rather than logging every line twice; issue 15). The step
    /// finds out that it is resumed from [`Saga::step_started`], and should
    /// return its output with [`output_unlogged`].
    const UNLOGGED_STEPS: &'static [&'static str] = &[];

    /// The facts every step of one saga reads (for a sale saga: the sale).
    type Subject: Send + Sync;

    /// The ordered steps (at most a few; the log names them).
    fn steps(&self) -> &[Step<Self>];

    /// Loads the subjects of a claimed batch in one query, by saga id. A saga
    /// with no subject fails permanently.
    fn load(
        &self,
        pool: &PgPool,
        sagas: &[SagaId],
    ) -> impl Future<Output = Result<HashMap<SagaId, Self::Subject>, sqlx::Error>> + Send;

    /// Runs in the transaction that marks `sagas` done (fenced: only sagas
    /// still owned at their claimed generation are passed).
    fn on_done(
        &self,
        conn: &mut PgConnection,
        sagas: &[&Saga],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (conn, sagas);
        async { Ok(()) }
    }

    /// Runs in the transaction that marks `sagas` failed after every undo
    /// finished; each saga's [`Saga::failure_reason`] says why.
    fn on_failed(
        &self,
        conn: &mut PgConnection,
        sagas: &[&Saga],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// What one step's log says for the current run.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepLog {
    /// `started` was written.
    pub(crate) started: bool,
    /// The step's output: `succeeded`'s, or one carried by a later step's
    /// `started` (a step without an undo), or one this claim computed and
    /// has not written yet.
    pub(crate) output: Option<Output>,
    /// `output` was computed by this claim and is not in the log yet (the
    /// next `started` carries it).
    pub(crate) unlogged: bool,
    /// `undo_finished` was written.
    pub(crate) undo_finished: bool,
    /// `failed` events with an internal error since the saga was started or
    /// last resumed (see [`SagaOptions::internal_attempts`](crate::SagaOptions::internal_attempts)).
    pub(crate) internal_failures: u32,
}

/// A claimed saga as its steps see it.
#[derive(Debug, Clone)]
pub struct Saga {
    /// The saga.
    pub id: SagaId,
    /// 1 for the first run; each retry is a new run with its own log.
    pub run: i32,
    /// The claim's fence: every write is conditional on it.
    pub generation: i64,
    /// Claims of this run so far, this one included (1-based); counted
    /// afresh after an operator resumed the saga.
    pub attempt: i32,
    /// Why the saga is unwinding (empty while it runs forward).
    pub failure_reason: String,
    /// The W3C `traceparent` of the RPC that started the saga
    /// (`sagas.traceparent`), when it was traced: its steps' spans join that
    /// trace.
    pub traceparent: Option<String>,
    pub(crate) unwinding: bool,
    /// One entry per step of the definition, in step order.
    pub(crate) log: Vec<StepLog>,
    /// Dropped from the batch (lost the fence, released, finished).
    pub(crate) gone: bool,
    /// The step whose `started` this claim already wrote, in the
    /// transaction that logged the previous step's success (see
    /// `record_succeeded`): its own mark is then not written again.
    pub(crate) marked: Option<usize>,
}

impl Saga {
    /// The logged output of step `index` in this run, decoded. A missing or
    /// undecodable output fails permanently (the log was written by this
    /// definition, so it cannot be repaired by retrying).
    pub fn output<T: DeserializeOwned + Clone + 'static>(&self, index: usize, name: &str) -> Result<T, StepError> {
        self.output_ref::<T>(index, name).map(Cow::into_owned)
    }

    /// Like [`output`](Self::output), borrowing the value this claim kept
    /// ([`output_kept`]) instead of cloning it; decoded from the log text
    /// otherwise.
    pub fn output_ref<T: DeserializeOwned + Clone + 'static>(
        &self,
        index: usize,
        name: &str,
    ) -> Result<Cow<'_, T>, StepError> {
        let output = self
            .raw_output(index)
            .ok_or_else(|| StepError::Permanent(format!("the output of {name} is missing from the saga log")))?;
        if let Some(value) = output.kept::<T>() {
            return Ok(Cow::Borrowed(value));
        }
        output
            .decode()
            .map(Cow::Owned)
            .map_err(|e| StepError::Permanent(format!("the output of {name} in the saga log does not decode: {e}")))
    }

    /// The logged output of step `index` in this run, if any.
    pub fn raw_output(&self, index: usize) -> Option<&Output> {
        self.log.get(index).and_then(|log| log.output.as_ref())
    }

    /// Whether step `index`'s `started` is in this run's log (written by
    /// this claim or an earlier one): its action may have taken effect. An
    /// earlier step that runs again in a new claim (an
    /// [`UNLOGGED_STEPS`](SagaDef::UNLOGGED_STEPS) one) sees it set only when
    /// an earlier claim wrote it.
    pub fn step_started(&self, index: usize) -> bool {
        self.log.get(index).is_some_and(|log| log.started)
    }
}

/// A saga and its subject, as a step sees them.
#[derive(Debug)]
pub struct Item<'a, S> {
    /// The claimed saga.
    pub saga: &'a Saga,
    /// What it works on.
    pub subject: &'a S,
}

impl<S> Clone for Item<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Item<'_, S> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Totals {
        amount: String,
        lines: Vec<u32>,
    }

    #[test]
    fn a_kept_output_logs_the_same_text_and_reads_back_the_same_value() {
        let value = Totals { amount: "1.50".into(), lines: vec![1, 2] };
        let kept = output_kept(value.clone()).unwrap();
        let plain = output(&value).unwrap();
        assert_eq!(kept.json(), plain.json(), "the log text does not depend on keeping");
        assert_eq!(kept, plain);
        assert_eq!(kept.kept::<Totals>(), Some(&value));
        assert_eq!(plain.kept::<Totals>(), None, "text alone, as after a restart");
        assert_eq!(kept.decode::<Totals>().unwrap(), value);
        assert_eq!(plain.decode::<Totals>().unwrap(), value);
        // Another type reads the text, as it always did.
        assert_eq!(kept.decode::<serde_json::Value>().unwrap()["amount"], "1.50");
    }
}
