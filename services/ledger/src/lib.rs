//! Accrue ledger service (`accrue.ledger.v1.LedgerService`): the append-only
//! earnings ledger (seed 003, DESIGN §5) — immutable entries posted per sale
//! in one transaction and idempotent on key + request hash, append-only status
//! events with a current-status projection, earnings summaries, clearance
//! (with per-program auto-approval read from the hierarchy service) and payout
//! reservations (an entry is in at most one payout, enforced by the database).
//!
//! Owns the `ledger` schema and nothing else; asks the hierarchy service for
//! program settings over gRPC.

mod api;
mod domain;
mod store;

pub use api::LedgerApi;

use accrue_kit::db::{DbConfig, DbError};
use accrue_kit::server::{Hosted, MAX_MESSAGE_BYTES, ServeError};
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1::ledger_service_server::LedgerServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "ledger";
/// The gRPC service name (health reports it).
pub const SERVICE_NAME: &str = "accrue.ledger.v1.LedgerService";
/// Default listen port.
pub const DEFAULT_PORT: u16 = 50054;
/// The service's migrations (run inside [`SCHEMA`]).
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL.
    pub database_url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Hierarchy service endpoint (`http://host:port`), for program settings.
    pub hierarchy_url: String,
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

/// Runs the service on `listener` until `shutdown` is cancelled. Errors when
/// the database URL or the hierarchy URL is invalid, or the server fails.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let pool = accrue_kit::db::pool(&DbConfig {
        url: config.database_url,
        schema: SCHEMA.to_string(),
        max_connections: config.max_connections,
    })?;
    let hierarchy = HierarchyServiceClient::new(accrue_kit::client::channel(&config.hierarchy_url)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = LedgerServiceServer::new(LedgerApi::new(pool.clone(), hierarchy))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hosted =
        Hosted { routes: Routes::new(server), service_name: SERVICE_NAME, pool, schema: SCHEMA, migrator: &MIGRATOR };
    accrue_kit::server::serve(listener, hosted, shutdown).await?;
    Ok(())
}
