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
mod counters;
pub mod domain;
mod events;
mod store;

pub use api::PayoutsApi;

use accrue_kit::client::PEER_TIMEOUT;
use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::payouts::v1::payout_service_server::PayoutServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The payouts service, as [`accrue_kit::service`] hosts it.
#[derive(Debug, Clone, Copy)]
pub struct Payouts;

/// The payouts service's peers.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Hierarchy service endpoint (programs, partners).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    pub hierarchy_url: String,
    /// Ledger service endpoint (payout reservations).
    #[arg(long, env = "ACCRUE_LEDGER_URL", default_value = "http://127.0.0.1:50054")]
    pub ledger_url: String,
}

impl Service for Payouts {
    type Server = PayoutServiceServer<PayoutsApi>;
    type Config = Config;
    type Flags = Config;
    const SCHEMA: &'static str = "payouts";
    const DEFAULT_PORT: u16 = 50055;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes(config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        let hierarchy = accrue_kit::client::connect(&config.hierarchy_url, PEER_TIMEOUT, &setup.credential)?;
        let ledger = accrue_kit::client::connect(&config.ledger_url, PEER_TIMEOUT, &setup.credential)?;
        let events = accrue_kit::events::host(setup, &accrue_kit::events::catalogue::PAYOUTS, Default::default());
        let api = PayoutsApi::new(setup.pool.clone(), hierarchy, ledger);
        Ok(events.add_to(accrue_kit::server::routes(PayoutServiceServer::new(api))))
    }
}
