//! ClearMatured on a timer (issue 12 item 6, DESIGN §5): every interval, one
//! pass over each program that has PENDING entries whose clearance period
//! has ended, as ClearMatured(as_of = now) would do it — auto-approve
//! programs (hierarchy GetProgram) approve what cleared. Safe with several
//! replicas: a pass runs only while its replica holds a session advisory
//! lock (the others skip that tick), and a pass is idempotent anyway (the
//! status update only takes rows still PENDING). Each pass's counts are
//! logged.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::api::LedgerApi;

/// The advisory lock key of the clearance timer ("clear" in ASCII).
pub const CLEAR_LOCK_KEY: i64 = 0x0063_6c65_6172;

/// The audit actor of the timer's status events.
pub const TIMER_ACTOR: &str = "timer:clear-matured";

/// Runs a clearance pass every `interval` (the first after one interval)
/// until `shutdown`.
pub async fn clear_on_timer(api: LedgerApi, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match api.clear_all_matured(Utc::now(), TIMER_ACTOR, CLEAR_LOCK_KEY).await {
            Ok(Some(pass)) => tracing::info!(
                programs = pass.programs,
                cleared = pass.cleared,
                approved = pass.approved,
                failed_programs = pass.failed_programs,
                "clearance pass"
            ),
            Ok(None) => tracing::debug!("clearance pass skipped: another replica holds the lock"),
            Err(error) => tracing::warn!(%error, "clearance pass failed"),
        }
    }
}
