//! How the workers run, and (with the `test-hooks` feature) the faults tests
//! inject into them.

use std::time::Duration;

/// Saga worker options.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// Worker tasks in this process (default 2; 0 runs no sagas here).
    pub workers: usize,
    /// Sagas claimed per batch (default 500).
    pub batch_size: i64,
    /// How long a claim is held without renewal (default 30 s); renewed before every step.
    pub lease: Duration,
    /// How often an idle worker looks for work (default 200 ms; a notification wakes it sooner).
    pub poll_interval: Duration,
    /// First retry delay after a transient failure (default 500 ms), doubling per attempt.
    pub retry_base: Duration,
    /// Longest retry delay (default 60 s).
    pub retry_max: Duration,
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
    /// The worker stops abruptly right after this step succeeded, keeping
    /// its leases (a simulated kill -9).
    pub crash_after: Option<&'static str>,
    /// This step's undo fails permanently (after it ran), so an unwinding
    /// saga ends STUCK for an operator instead of FAILED.
    pub fail_undo: Option<&'static str>,
}
