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
mod events;
mod scheme_store;
mod store;

pub use api::CommissionApi;

use accrue_kit::client::PEER_TIMEOUT;
use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::commission::v1::commission_service_server::CommissionServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The commission service, as [`accrue_kit::service`] hosts it.
#[derive(Debug, Clone, Copy)]
pub struct Commission;

/// The commission service's peers.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Hierarchy service endpoint (role ladders, partners and uplines for
    /// schemes and QuoteSale).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    pub hierarchy_url: String,
}

impl Service for Commission {
    type Server = CommissionServiceServer<CommissionApi>;
    type Config = Config;
    type Flags = Config;
    const SCHEMA: &'static str = "commission";
    const DEFAULT_PORT: u16 = 50053;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes(config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        let hierarchy = accrue_kit::client::connect(&config.hierarchy_url, PEER_TIMEOUT, &setup.credential)?;
        let events = accrue_kit::events::host(setup, &accrue_kit::events::catalogue::COMMISSION, Default::default());
        let api = CommissionApi::new(setup.pool.clone(), hierarchy);
        Ok(events.add_to(accrue_kit::server::routes(CommissionServiceServer::new(api))))
    }
}
