//! A saga engine that knows no saga (DESIGN §3, after Oxide's steno/omicron).
//!
//! A definition ([`SagaDef`]) names its kind and lists its steps, each an
//! action paired with its undo, both working on a batch of sagas at once.
//! The engine runs it over the schema's `sagas` rows of that kind (state,
//! owner, generation, lease) and their append-only `saga_step_events` log:
//!
//! - workers claim runnable sagas in batches with `FOR UPDATE SKIP LOCKED`
//!   and a lease, and fence every write on the claimed generation;
//! - each step runs once per batch (one bulk action for every saga that
//!   needs it), with `started` logged before and `succeeded` + output after;
//! - leases are short (3 s by default) and a heartbeat renews them while the
//!   worker lives, so a long step keeps its sagas and a dead worker's are
//!   claimable again within one lease;
//! - claims commit durably even on a relaxed-durability pool, so that no
//!   generation is ever handed out twice;
//! - a transient failure gives the saga back until its backoff has passed; a
//!   permanent one unwinds it: every started step is undone, newest first;
//! - an internal error is retried a bounded number of times, then leaves the
//!   saga stuck for an operator, who can resume it ([`resume_stuck`]);
//! - a failed undo leaves the saga stuck for an operator;
//! - after a crash the log says where to resume (actions are idempotent);
//! - on shutdown every held saga is given back at once.

mod def;
mod engine;
mod options;
mod resume;
mod retry;
mod state;

pub use def::{
    Item, Output, Saga, SagaDef, Step, StepError, StepFn, StepFuture, StepResult, output, output_kept, output_unlogged,
};
pub use engine::Engine;
pub use options::SagaOptions;
#[cfg(feature = "test-hooks")]
pub use options::TestHooks;
pub use resume::resume_stuck;
pub use retry::backoff_delay;
pub use state::{SagaState, StepEvent};
