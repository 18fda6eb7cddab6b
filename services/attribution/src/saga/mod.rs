//! The sagas attribution runs on [`accrue_saga`]'s engine (DESIGN §3):
//! [`settle_sale`], one per attributed sale, and [`clawback_sale`], one per
//! refund of such a sale.

pub(crate) mod clawback_sale;
pub(crate) mod settle_sale;

use std::sync::Arc;

use accrue_saga::{Engine, SagaOptions};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;
use clawback_sale::ClawbackSale;
use settle_sale::SettleSale;

/// Test faults for the workers (see [`accrue_saga::TestHooks`]); both kinds
/// get the same ones (their steps are named in the log, and only
/// ClawbackSale has reverse and apply).
#[cfg(feature = "test-hooks")]
pub type Hooks = accrue_saga::TestHooks;
/// Without the `test-hooks` feature there are none: production cannot inject
/// a fault even by mistake.
/// (A private field, not a unit struct, so that `Hooks::default()` reads
/// the same with and without the feature.)
#[cfg(not(feature = "test-hooks"))]
#[derive(Debug, Clone, Default)]
pub struct Hooks(());

/// Wakes this process's idle saga workers after a commit that started
/// sagas: one worker of the sagas' kind per wake. One claim takes the whole
/// backlog (up to a batch), so waking every idle worker of both kinds — as
/// each recording commit did — sent all but one to an empty claim (a
/// durable-commit transaction each; about 200 a second at 1,000 sales/s,
/// issue 15). A wake with no worker idle is kept for the next one to wait,
/// so none is lost.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wake {
    settle: Arc<Notify>,
    clawback: Arc<Notify>,
}

impl Wake {
    /// SettleSale sagas were started (sales recorded, one retried).
    pub(crate) fn settle(&self) {
        self.settle.notify_one();
    }

    /// ClawbackSale sagas were started (a refund recorded, one retried).
    pub(crate) fn clawback(&self) {
        self.clawback.notify_one();
    }

    /// A saga of `kind` (a [`SagaDef::KIND`](accrue_saga::SagaDef::KIND))
    /// was started or retried.
    pub(crate) fn kind(&self, kind: &str) {
        use accrue_saga::SagaDef;
        if kind == ClawbackSale::KIND { self.clawback() } else { self.settle() }
    }
}

/// Starts `options.workers` SettleSale workers and as many ClawbackSale
/// workers over `pool`, woken by `wake`; each stops (releasing its leases)
/// when `shutdown` is cancelled.
pub(crate) fn spawn_workers(
    pool: PgPool,
    peers: Peers,
    options: SagaOptions,
    hooks: Hooks,
    wake: Wake,
    shutdown: CancellationToken,
) -> [JoinSet<()>; 2] {
    let settle = Engine::new(SettleSale { pool: pool.clone(), peers: peers.clone() }, pool.clone(), options.clone());
    let clawback = Engine::new(ClawbackSale { pool: pool.clone(), peers }, pool, options);
    #[cfg(feature = "test-hooks")]
    let (settle, clawback) = (settle.with_hooks(hooks.clone()), clawback.with_hooks(hooks));
    #[cfg(not(feature = "test-hooks"))]
    let Hooks(()) = hooks;
    [
        settle.spawn("attribution", wake.settle, shutdown.clone()),
        clawback.spawn("attribution-clawback", wake.clawback, shutdown),
    ]
}
