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

/// Starts `options.workers` SettleSale workers and as many ClawbackSale
/// workers over `pool`, all woken by `notify`; each stops (releasing its
/// leases) when `shutdown` is cancelled.
pub(crate) fn spawn_workers(
    pool: PgPool,
    peers: Peers,
    options: SagaOptions,
    hooks: Hooks,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> [JoinSet<()>; 2] {
    let settle = Engine::new(SettleSale { pool: pool.clone(), peers: peers.clone() }, pool.clone(), options.clone());
    let clawback = Engine::new(ClawbackSale { pool: pool.clone(), peers }, pool, options);
    #[cfg(feature = "test-hooks")]
    let (settle, clawback) = (settle.with_hooks(hooks.clone()), clawback.with_hooks(hooks));
    #[cfg(not(feature = "test-hooks"))]
    let Hooks(()) = hooks;
    [
        settle.spawn("attribution", notify.clone(), shutdown.clone()),
        clawback.spawn("attribution-clawback", notify, shutdown),
    ]
}
