//! Process signals → a cancellation token (DESIGN §6: graceful shutdown on SIGTERM).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        child.cancel();
    });
    token
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a service may take to stop after SIGTERM unless told otherwise
/// (`--shutdown-grace`, `ACCRUE_SHUTDOWN_GRACE`): below Kubernetes' default
/// `terminationGracePeriodSeconds` of 30, so the process exits on its own
/// before the kubelet's SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// A shutdown with a deadline: `token` starts it; from that moment the
/// service has `grace` to drain its RPCs and stop its background tasks, after
/// which whatever is left (a Health/Watch stream, a client that keeps a
/// RecordSales stream open, a saga step stuck on a peer) is cut off.
/// Clones share the moment the shutdown began.
#[derive(Debug, Clone)]
pub struct Drain {
    token: CancellationToken,
    grace: Duration,
    began: Arc<OnceLock<Instant>>,
}

impl Drain {
    /// A drain started by `token`, lasting at most `grace`.
    pub fn new(token: CancellationToken, grace: Duration) -> Self {
        Drain { token, grace, began: Arc::new(OnceLock::new()) }
    }

    /// The token that starts the shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Resolves once the shutdown has begun.
    pub async fn began(&self) {
        self.token.cancelled().await;
        self.began.get_or_init(Instant::now);
    }

    /// Resolves once the shutdown began `grace` ago.
    pub async fn deadline(&self) {
        self.began().await;
        let began = *self.began.get_or_init(Instant::now);
        tokio::time::sleep_until((began + self.grace).into()).await;
    }
}
