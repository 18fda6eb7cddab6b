//! Accrue commission service (`accrue.commission.v1.CommissionService`):
//! versioned agreements (seed 003), override plans (seed 004) and the pure,
//! deterministic settlement math of DESIGN §4 — base commission with its
//! breakdown, link splits by largest remainder (seed 000), upline overrides,
//! and scheme trees with role-based margins (seed 002): a sale whose
//! service_code a scheme configures pays MARGIN lines up the seller's upline
//! instead of agreement commissions.
//!
//! Owns the `commission` schema and nothing else. Asks the hierarchy service
//! (over gRPC) for programs and partners where a scheme write or a quote needs
//! them; the settlement of recorded sales gets every fact in its request.
//! The calculation lives in [`domain`] (pure, no I/O) so that other crates and
//! checkers can run it directly.

mod api;
pub mod domain;
mod scheme_store;
mod store;

pub use api::CommissionApi;

use accrue_kit::db::{DbConfig, DbError};
use accrue_kit::server::{Hosted, MAX_MESSAGE_BYTES, ServeError};
use accrue_proto::commission::v1::commission_service_server::CommissionServiceServer;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "commission";
/// The gRPC service name (health reports it).
pub const SERVICE_NAME: &str = "accrue.commission.v1.CommissionService";
/// Default listen port.
pub const DEFAULT_PORT: u16 = 50053;
/// The service's migrations (run inside [`SCHEMA`]).
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL.
    pub database_url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Hierarchy service endpoint (role ladders, partners and uplines for
    /// schemes and QuoteSale).
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
    let server = CommissionServiceServer::new(CommissionApi::new(pool.clone(), hierarchy))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hosted =
        Hosted { routes: Routes::new(server), service_name: SERVICE_NAME, pool, schema: SCHEMA, migrator: &MIGRATOR };
    accrue_kit::server::serve(listener, hosted, shutdown).await?;
    Ok(())
}
