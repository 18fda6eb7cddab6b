//! The SettleSale saga (DESIGN §3), after Oxide's steno/omicron: a `sagas` row
//! per sale (state, owner, generation, lease) and an append-only
//! `saga_step_events` log. Workers claim runnable sagas in batches with
//! `FOR UPDATE SKIP LOCKED` and a lease, fence every write on the claimed
//! generation, and resume each saga from its log after any crash.
//!
//! - [`engine`]: claiming, leases, fencing, the log, forward and unwind passes.
//! - [`settle_sale`]: the five steps, each action paired with its undo.

pub(crate) mod engine;
pub(crate) mod settle_sale;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;

/// A SettleSale step, in execution order.
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
    /// Local: the sale becomes SETTLED with its totals (undo: back to PENDING).
    Settle,
}

impl Step {
    /// Every step in execution order.
    pub const ALL: [Step; 5] = [Step::Resolve, Step::Upline, Step::Compute, Step::Post, Step::Settle];

    /// The name in the step log ("resolve", …).
    pub fn name(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Upline => "upline",
            Step::Compute => "compute",
            Step::Post => "post",
            Step::Settle => "settle",
        }
    }

    /// From the name in the step log.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An injected permanent failure (test hook): the reason the failing step
/// reports, which ends up as the sale's `failure_reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permanent(pub String);

impl Permanent {
    /// A permanent failure with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Permanent(reason.into())
    }
}

/// Saga worker options. The last four fields are test hooks that exercise
/// real code paths (omicron's saga tests); production leaves them off.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// Worker tasks in this process (default 2; 0 runs no sagas here).
    pub workers: usize,
    /// Sagas claimed per batch (default 500).
    pub batch_size: i64,
    /// How long a claim is held without renewal (default 30 s); renewed before every step.
    pub lease: Duration,
    /// How often an idle worker looks for work (default 200 ms; RecordSale wakes it sooner).
    pub poll_interval: Duration,
    /// First retry delay after a transient failure (default 500 ms), doubling per attempt.
    pub retry_base: Duration,
    /// Longest retry delay (default 60 s).
    pub retry_max: Duration,
    /// Test hook: run every action (and undo) twice; the effect must be that of once.
    pub repeat_actions: bool,
    /// Test hook: the step fails permanently right after its action took effect,
    /// so its undo and every earlier one must clean up.
    pub inject_failure: Option<(Step, Permanent)>,
    /// Test hook: the step fails transiently (after its action) on the first
    /// `n` attempts of a saga run.
    pub inject_transient: Option<(Step, u32)>,
    /// Test hook: the worker stops abruptly right after this step succeeded,
    /// keeping its leases (a simulated kill -9).
    pub crash_after: Option<Step>,
}

impl Default for SagaOptions {
    fn default() -> Self {
        SagaOptions {
            workers: 2,
            batch_size: 500,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            repeat_actions: false,
            inject_failure: None,
            inject_transient: None,
            crash_after: None,
        }
    }
}

/// Starts `options.workers` workers; each stops (releasing its leases) when
/// `shutdown` is cancelled.
pub(crate) fn spawn_workers(
    pool: PgPool,
    peers: Peers,
    options: SagaOptions,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let process = Uuid::new_v4().simple().to_string();
    let engine = Arc::new(engine::Engine { pool, peers, options, notify });
    for index in 0..engine.options.workers {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        let owner = format!("attribution-{}-{}-w{index}", std::process::id(), &process[..8]);
        set.spawn(async move { engine.work(owner, shutdown).await });
    }
    set
}

use uuid::Uuid;
