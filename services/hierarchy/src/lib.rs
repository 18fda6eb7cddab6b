//! Accrue hierarchy service (`accrue.hierarchy.v1.HierarchyService`): programs
//! (tenants and their settings) and the partner tree — status, role, parent
//! edge and a denormalized ancestor path kept in step by `SetParent` (seed 004).
//!
//! Owns the `hierarchy` schema and nothing else.

mod api;
pub mod domain;
mod store;

pub use api::HierarchyApi;

use accrue_kit::db::{DbConfig, DbError};
use accrue_kit::server::{Hosted, MAX_MESSAGE_BYTES, ServeError};
use accrue_proto::hierarchy::v1::hierarchy_service_server::HierarchyServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The Postgres schema this service owns.
pub const SCHEMA: &str = "hierarchy";
/// The gRPC service name (health reports it).
pub const SERVICE_NAME: &str = "accrue.hierarchy.v1.HierarchyService";
/// Default listen port.
pub const DEFAULT_PORT: u16 = 50051;
/// The service's migrations (run inside [`SCHEMA`]).
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL.
    pub database_url: String,
    /// Pool size.
    pub max_connections: u32,
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
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let pool = accrue_kit::db::pool(&DbConfig {
        url: config.database_url,
        schema: SCHEMA.to_string(),
        max_connections: config.max_connections,
    })?;
    let server = HierarchyServiceServer::new(HierarchyApi::new(pool.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let hosted =
        Hosted { routes: Routes::new(server), service_name: SERVICE_NAME, pool, schema: SCHEMA, migrator: &MIGRATOR };
    accrue_kit::server::serve(listener, hosted, shutdown).await?;
    Ok(())
}
