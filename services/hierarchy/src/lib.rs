//! Accrue hierarchy service (`accrue.hierarchy.v1.HierarchyService`): programs
//! (tenants and their settings) and the partner tree — status, role, parent
//! edge and a denormalized ancestor path kept in step by `SetParent` (seed 004).
//!
//! Owns the `hierarchy` schema and nothing else; asks the ledger over gRPC
//! for the downline roster's aggregates.

mod api;
pub mod domain;
mod store;

pub use api::HierarchyApi;

use accrue_kit::client::PEER_TIMEOUT;
use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::hierarchy::v1::hierarchy_service_server::HierarchyServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The hierarchy service, as [`accrue_kit::service`] hosts it.
#[derive(Debug, Clone, Copy)]
pub struct Hierarchy;

/// The hierarchy service's peers: only the ledger, for ListDownline's
/// aggregates (issue 14 item 4).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Config {
    /// Ledger service endpoint; unset: ListDownline answers zero
    /// aggregates (funded sales, overrides).
    #[arg(long, env = "ACCRUE_LEDGER_URL")]
    pub ledger_url: Option<String>,
}

impl Service for Hierarchy {
    type Server = HierarchyServiceServer<HierarchyApi>;
    type Config = Config;
    type Flags = Config;
    const SCHEMA: &'static str = "hierarchy";
    const DEFAULT_PORT: u16 = 50051;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes(config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        let mut api = HierarchyApi::new(setup.pool.clone());
        if let Some(url) = config.ledger_url.as_deref().filter(|url| !url.is_empty()) {
            api = api.with_ledger(accrue_kit::client::connect(url, PEER_TIMEOUT, &setup.credential)?);
        }
        let events = accrue_kit::events::host(setup, &accrue_kit::events::catalogue::HIERARCHY, Default::default());
        Ok(events.add_to(accrue_kit::server::routes(HierarchyServiceServer::new(api))))
    }
}
