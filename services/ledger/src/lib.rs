//! Accrue ledger service (`accrue.ledger.v1.LedgerService`): the append-only
//! earnings ledger (seed 003, DESIGN §5) — immutable entries posted per sale
//! in one transaction and idempotent on key + request hash, append-only status
//! events with a current-status projection, earnings summaries, clearance
//! (with per-program auto-approval read from the hierarchy service) and payout
//! reservations (an entry is in at most one payout, enforced by the database),
//! refund clawbacks (ReverseSale, its undo VoidReversal) and the balance
//! projection (GetBalances) — see docs/ledger-refunds.md.
//!
//! Owns the `ledger` schema and nothing else; asks the hierarchy service for
//! program settings over gRPC.

mod api;
mod counters;
mod domain;
mod events;
mod store;
mod timer;

pub use api::LedgerApi;

use accrue_kit::client::PEER_TIMEOUT;
use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::ledger::v1::ledger_service_server::LedgerServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The ledger service, as [`accrue_kit::service`] hosts it.
#[derive(Debug, Clone, Copy)]
pub struct Ledger;

/// The ledger's peers.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Hierarchy service endpoint (program settings: auto-approval).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    pub hierarchy_url: String,
    /// Seconds between ClearMatured passes over every program with matured
    /// PENDING entries (DESIGN §5: clearance runs on a timer; auto-approve
    /// programs approve what cleared); 0 turns the timer off. One replica
    /// clears at a time (a Postgres advisory lock); each pass is idempotent.
    #[arg(long, env = "ACCRUE_CLEAR_MATURED_INTERVAL_SECONDS", default_value_t = 300)]
    pub clear_matured_interval_seconds: u64,
}

impl Service for Ledger {
    type Server = LedgerServiceServer<LedgerApi>;
    type Config = Config;
    type Flags = Config;
    const SCHEMA: &'static str = "ledger";
    const DEFAULT_PORT: u16 = 50054;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes(config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        let hierarchy = accrue_kit::client::connect(&config.hierarchy_url, PEER_TIMEOUT, &setup.credential)?;
        let api = LedgerApi::new(setup.pool.clone(), hierarchy);
        if config.clear_matured_interval_seconds > 0 {
            let interval = std::time::Duration::from_secs(config.clear_matured_interval_seconds);
            let timer = api.clone();
            setup.spawn(move |shutdown| timer::clear_on_timer(timer, interval, shutdown));
        }
        let hooks = accrue_kit::events::Hooks {
            redact: Some(crate::events::redact),
            materialize: Some(crate::events::materializer()),
        };
        let events = accrue_kit::events::host(setup, &accrue_kit::events::catalogue::LEDGER, hooks);
        Ok(events.add_to(accrue_kit::server::routes(LedgerServiceServer::new(api))))
    }
}
