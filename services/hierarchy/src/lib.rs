//! Accrue hierarchy service (`accrue.hierarchy.v1.HierarchyService`): programs
//! (tenants and their settings) and the partner tree — status, role, parent
//! edge and a denormalized ancestor path kept in step by `SetParent` (seed 004).
//!
//! Owns the `hierarchy` schema and nothing else.

mod api;
pub mod domain;
mod store;

pub use api::HierarchyApi;

use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::hierarchy::v1::hierarchy_service_server::HierarchyServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The hierarchy service, as [`accrue_kit::service`] hosts it.
#[derive(Debug, Clone, Copy)]
pub struct Hierarchy;

/// The hierarchy service needs nothing but its database.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Config {}

impl Service for Hierarchy {
    type Server = HierarchyServiceServer<HierarchyApi>;
    type Config = Config;
    type Flags = Config;
    const SCHEMA: &'static str = "hierarchy";
    const DEFAULT_PORT: u16 = 50051;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes(_config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        Ok(accrue_kit::server::routes(HierarchyServiceServer::new(HierarchyApi::new(setup.pool.clone()))))
    }
}
