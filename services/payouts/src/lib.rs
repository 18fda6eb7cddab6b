//! Accrue payouts service (`accrue.payouts.v1.PayoutService`): payout runs
//! per (program, currency, period) that reserve each active partner's payable
//! ledger entries at or above the minimum and create payouts awaiting
//! approval, carrying smaller balances forward; payouts and their append-only
//! audit log (seed 001, DESIGN §5).
//!
//! Owns the `payouts` schema and nothing else; reads partners and program
//! settings from the hierarchy service and reserves entries in the ledger
//! service, over gRPC.

mod api;
pub mod domain;
mod store;

pub use api::PayoutsApi;

use accrue_kit::db::{DbConfig, DbError};
use accrue_kit::server::{Hosted, MAX_MESSAGE_BYTES, ServeError};
use accrue_proto::payouts::v1::payout_service_server::PayoutServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "payouts";
/// The gRPC service name (health reports it).
pub const SERVICE_NAME: &str = "accrue.payouts.v1.PayoutService";
/// Default listen port.
pub const DEFAULT_PORT: u16 = 50055;
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
    /// Ledger service endpoint.
    pub ledger_url: String,
}

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be set up.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A peer service URL is invalid.
    #[error(transparent)]
    Client(#[from] accrue_kit::client::ClientError),
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let pool = accrue_kit::db::pool(&DbConfig {
        url: config.database_url,
        schema: SCHEMA.to_string(),
        max_connections: config.max_connections,
    })?;
    let hierarchy = accrue_kit::client::channel(&config.hierarchy_url)?;
    let ledger = accrue_kit::client::channel(&config.ledger_url)?;
    let server = PayoutServiceServer::new(PayoutsApi::new(pool.clone(), hierarchy, ledger))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hosted =
        Hosted { routes: Routes::new(server), service_name: SERVICE_NAME, pool, schema: SCHEMA, migrator: &MIGRATOR };
    accrue_kit::server::serve(listener, hosted, shutdown).await?;
    Ok(())
}
