//! The sagas attribution runs on [`accrue_saga`]'s engine (DESIGN §3): today
//! [`settle_sale`], one per attributed sale.

pub(crate) mod settle_sale;

use std::sync::Arc;

use accrue_saga::{Engine, SagaOptions};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::peers::Peers;
use settle_sale::SettleSale;

/// Test faults for the workers (see [`accrue_saga::TestHooks`]).
#[cfg(feature = "test-hooks")]
pub type Hooks = accrue_saga::TestHooks;
/// Without the `test-hooks` feature there are none: production cannot inject
/// a fault even by mistake.
#[cfg(not(feature = "test-hooks"))]
#[derive(Debug, Clone, Default)]
pub struct Hooks;

/// Starts `options.workers` SettleSale workers over `pool`; each stops
/// (releasing its leases) when `shutdown` is cancelled.
pub(crate) fn spawn_workers(
    pool: PgPool,
    peers: Peers,
    options: SagaOptions,
    hooks: Hooks,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let engine = Engine::new(SettleSale { pool: pool.clone(), peers }, pool, options);
    #[cfg(feature = "test-hooks")]
    let engine = engine.with_hooks(hooks);
    #[cfg(not(feature = "test-hooks"))]
    let Hooks = hooks;
    engine.spawn("attribution", notify, shutdown)
}
