//! How the workers run, and (with the `test-hooks` feature) the faults tests
//! inject into them.

use std::time::Duration;

/// Saga worker options.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// Worker tasks in this process (default 2; 0 runs no sagas here). The
    /// attribution binary asks for 4 unless told otherwise
    /// (`ACCRUE_SAGA_WORKERS`); the tests' small pools keep this default.
    pub workers: usize,
    /// Sagas claimed per batch (default 500).
    pub batch_size: i64,
    /// How long a claim holds without renewal (default 3 s). While the worker
    /// lives its heartbeat keeps renewing it, however long a step takes; once
    /// it dies (kill -9, a lost host) its sagas become claimable by another
    /// worker at most this long after its last heartbeat. So this is the
    /// recovery time after a crash, traded against how long the database
    /// may be out of the worker's reach before a live worker loses its
    /// sagas (which only costs a re-run: every write is fenced).
    pub lease: Duration,
    /// How often a worker renews the leases of the sagas it holds (default
    /// `None`: a third of [`lease`](Self::lease), 1 s by default, so that two
    /// beats can go missing before a lease runs out). A saga the heartbeat
    /// finds claimed by another owner (its generation moved on) is dropped
    /// from the worker's batch. Must be well below the lease.
    pub heartbeat: Option<Duration>,
    /// How often an idle worker looks for work (default 200 ms; a notification wakes it sooner).
    pub poll_interval: Duration,
    /// How long a worker waits before its next claim after a batch smaller
    /// than [`batch_size`](Self::batch_size) (default 10 ms; zero: claim at
    /// once). A short batch means the backlog is drained; claiming again at
    /// once would take the few sagas recorded meanwhile — under a stream of
    /// single sales (unary RecordSale), one or two per batch — and pay every
    /// per-batch cost (a durable claim, three peer calls, three fenced
    /// writes) for each, which starved the workers of CPU and let the
    /// backlog, and so the latency, grow without bound (issue 15). Waiting
    /// a few milliseconds gathers a batch worth its costs; a full batch is
    /// followed by the next claim at once.
    pub gather: Duration,
    /// First retry delay after a transient failure (default 500 ms), doubling per attempt.
    pub retry_base: Duration,
    /// Longest retry delay (default 60 s).
    pub retry_max: Duration,
    /// How many times one step may fail with an internal error
    /// ([`StepError::Internal`](crate::StepError::Internal), a peer's
    /// INTERNAL: a bug or a poisoned input rather than an outage) before the
    /// saga is left STUCK for an operator with that error as its reason
    /// (default 10; at least 1). Each attempt waits out the usual backoff, so
    /// the default spans about three minutes. Counted per step over the
    /// current run since the saga was started or last resumed by an
    /// operator. Transient failures (a peer down or busy) never count: they
    /// are retried without bound.
    pub internal_attempts: u32,
}

impl SagaOptions {
    /// The heartbeat period: [`heartbeat`](Self::heartbeat), else a third of
    /// the lease (at least 1 ms, so that a zero lease cannot spin).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3).max(Duration::from_millis(1))
    }
}

impl Default for SagaOptions {
    fn default() -> Self {
        SagaOptions {
            workers: 2,
            batch_size: 500,
            lease: Duration::from_secs(3),
            heartbeat: None,
            poll_interval: Duration::from_millis(200),
            gather: Duration::from_millis(10),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            internal_attempts: 10,
        }
    }
}

/// Faults that exercise the engine's real code paths (omicron's saga tests).
/// Steps are named as in the log. Empty by default.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Run every action (and undo) twice; the effect must be that of once.
    pub repeat_actions: bool,
    /// The step fails permanently with this reason right after its action
    /// took effect, so its undo and every earlier one must clean up.
    pub inject_failure: Option<(&'static str, String)>,
    /// The step fails transiently (after its action) on the first `n`
    /// attempts of a saga run.
    pub inject_transient: Option<(&'static str, u32)>,
    /// The step fails with an internal error (after its action took effect,
    /// as a peer that committed and then answered INTERNAL) while the saga's
    /// generation is at most `n`: on its first `n` claims, counted across
    /// runs and resumptions, so that the fault is gone for a saga an
    /// operator retries after them.
    pub inject_internal: Option<(&'static str, u32)>,
    /// The step's action starts this long late, every time (a slow peer
    /// call): a heartbeat must keep the worker's leases meanwhile.
    pub slow_step: Option<(&'static str, std::time::Duration)>,
    /// The worker stops abruptly right after this step succeeded for a saga
    /// on its first claim (generation 1), keeping its leases (a simulated
    /// kill -9: its heartbeat stops with it). Only the first claim: a worker
    /// that takes the saga over re-runs the steps whose outputs were not
    /// logged yet, and must not crash as well.
    pub crash_after: Option<&'static str>,
    /// This step's undo fails permanently (after it ran), so an unwinding
    /// saga ends STUCK for an operator instead of FAILED.
    pub fail_undo: Option<&'static str>,
}
