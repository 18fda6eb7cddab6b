//! Accrue attribution service (`accrue.attribution.v1.AttributionService`):
//! links with immutable split configs, first-touch leads, sales, and the
//! SettleSale saga that drives every attributed sale through hierarchy,
//! commission and ledger (DESIGN §3).
//!
//! Owns the `attribution` schema and nothing else; talks to the other services
//! only over gRPC.

mod api;
mod domain;
mod peers;
mod saga;
mod store;

pub use accrue_saga::SagaOptions;
#[cfg(feature = "test-hooks")]
pub use accrue_saga::TestHooks;
pub use api::AttributionApi;
pub use saga::settle_sale::Step;

use std::sync::Arc;

use accrue_kit::client::ClientError;
use accrue_kit::db::{DbConfig, DbError};
use accrue_kit::server::{Hosted, MAX_MESSAGE_BYTES, ServeError};
use accrue_proto::attribution::v1::attribution_service_server::AttributionServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "attribution";
/// The gRPC service name (health reports it).
pub const SERVICE_NAME: &str = "accrue.attribution.v1.AttributionService";
/// Default listen port.
pub const DEFAULT_PORT: u16 = 50052;
/// The service's migrations (run inside [`SCHEMA`]).
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL.
    pub database_url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Hierarchy service endpoint (`http://host:port`).
    pub hierarchy_url: String,
    /// Commission service endpoint.
    pub commission_url: String,
    /// Ledger service endpoint.
    pub ledger_url: String,
    /// Saga worker options.
    pub saga: SagaOptions,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be set up.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A peer URL is invalid.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the service on `listener` until `shutdown` is cancelled, together with
/// `SagaOptions::workers` saga workers. On shutdown the RPCs drain, each worker
/// finishes its current step and releases its leases, then this returns.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    serve(config, saga::no_hooks(), listener, shutdown).await
}

/// [`run`] with faults injected into the saga workers (tests).
#[cfg(feature = "test-hooks")]
pub async fn run_with_hooks(
    config: Config,
    hooks: TestHooks,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve(config, hooks, listener, shutdown).await
}

async fn serve(
    config: Config,
    hooks: saga::Hooks,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = DbConfig { url: config.database_url, schema: SCHEMA.to_string(), max_connections: config.max_connections };
    let pool = accrue_kit::db::pool(&db)?;
    // The workers' writes are all re-derivable (steps are idempotent and
    // re-run when their log rows are missing), so they need not wait for
    // WAL flush; RPC writes (sales, sagas) stay fully durable.
    let worker_pool = accrue_kit::db::relaxed_durability_pool(&db)?;
    let peers = peers::Peers::connect(&config.hierarchy_url, &config.commission_url, &config.ledger_url)?;
    let notify = Arc::new(Notify::new());
    let worker_shutdown = shutdown.child_token();
    let workers =
        saga::spawn_workers(worker_pool, peers.clone(), config.saga, hooks, notify.clone(), worker_shutdown.clone());
    let server = AttributionServiceServer::new(AttributionApi::new(pool.clone(), peers, notify))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hosted =
        Hosted { routes: Routes::new(server), service_name: SERVICE_NAME, pool, schema: SCHEMA, migrator: &MIGRATOR };
    let served = accrue_kit::server::serve(listener, hosted, shutdown).await;
    worker_shutdown.cancel();
    workers.join_all().await;
    served?;
    Ok(())
}
