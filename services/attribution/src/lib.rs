//! Accrue attribution service (`accrue.attribution.v1.AttributionService`):
//! links with immutable split configs, first-touch leads, sales, refunds, the
//! SettleSale saga that drives every attributed sale through hierarchy,
//! commission and ledger, and the ClawbackSale saga that claws each refund
//! back from the sale's ledger lines (DESIGN §3, §4 "Refunds").
//!
//! Owns the `attribution` schema and nothing else; talks to the other services
//! only over gRPC.

mod api;
mod domain;
mod events;
mod peers;
mod saga;
mod store;

pub use accrue_saga::SagaOptions;
#[cfg(feature = "test-hooks")]
pub use accrue_saga::TestHooks;
pub use api::{AttributionApi, Limits};
pub use saga::Hooks as SagaHooks;
pub use saga::clawback_sale::ClawbackStep;
pub use saga::settle_sale::Step;

use std::time::Duration;

use accrue_kit::service::{Error, Service, Setup};
use accrue_proto::attribution::v1::attribution_service_server::AttributionServiceServer;
use sqlx::migrate::Migrator;
use tonic::service::Routes;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The attribution service and its saga workers, as [`accrue_kit::service`]
/// hosts them.
#[derive(Debug, Clone, Copy)]
pub struct Attribution;

/// What attribution needs beyond its database.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hierarchy service endpoint (`http://host:port`).
    pub hierarchy_url: String,
    /// Commission service endpoint.
    pub commission_url: String,
    /// Ledger service endpoint.
    pub ledger_url: String,
    /// How far in the future a sale, lead or refund may say it happened
    /// (default 24 h; [`accrue_kit::convert::EventWindow`]).
    pub max_future_skew: Duration,
    /// How long a RecordSales stream may stay silent before the server
    /// closes it (DEADLINE_EXCEEDED STREAM_IDLE, naming what was recorded);
    /// default 30 s.
    pub stream_idle_timeout: Duration,
    /// Saga worker options.
    pub saga: SagaOptions,
    /// Faults injected into the saga workers (tests); an empty type without
    /// the `test-hooks` feature.
    pub hooks: SagaHooks,
}

/// Attribution's command-line flags (each also read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Hierarchy service endpoint.
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    hierarchy_url: String,
    /// Commission service endpoint.
    #[arg(long, env = "ACCRUE_COMMISSION_URL", default_value = "http://127.0.0.1:50053")]
    commission_url: String,
    /// Ledger service endpoint.
    #[arg(long, env = "ACCRUE_LEDGER_URL", default_value = "http://127.0.0.1:50054")]
    ledger_url: String,
    /// How many seconds in the future a sale, lead or refund may say it
    /// happened (callers' clocks drift); earlier than 1970 is always refused.
    #[arg(long, env = "ACCRUE_MAX_FUTURE_SKEW_SECONDS", default_value_t = 86_400)]
    max_future_skew_seconds: u64,
    /// Seconds a RecordSales stream may stay silent before the server closes
    /// it (its recorded messages stay recorded and are named in the error).
    #[arg(long, env = "ACCRUE_STREAM_IDLE_TIMEOUT_SECONDS", default_value_t = 30)]
    stream_idle_timeout_seconds: u64,
    /// Saga workers in this process, per saga kind (settlement and
    /// clawback). Four on two cores: while one worker waits on a peer or
    /// on Postgres another has work for the CPU (issue 15: settled sales/s
    /// +14 to +46 % over 2, in five paired `accrue bench` runs of 30,000 sales).
    #[arg(long, env = "ACCRUE_SAGA_WORKERS", default_value_t = 4)]
    saga_workers: usize,
    /// Sagas claimed per batch.
    #[arg(long, env = "ACCRUE_SAGA_BATCH_SIZE", default_value_t = 500)]
    saga_batch_size: i64,
    /// Milliseconds a saga worker waits before its next claim after a batch
    /// that was not full, so that a trickle of sales is settled in batches
    /// (0: claim at once).
    #[arg(long, env = "ACCRUE_SAGA_GATHER_MS", default_value_t = 10)]
    saga_gather_ms: u64,
    /// Saga lease in seconds: how soon another worker takes over the sagas
    /// of a worker that died (a live worker's heartbeat keeps renewing it).
    #[arg(long, env = "ACCRUE_SAGA_LEASE_SECONDS", default_value_t = 3)]
    saga_lease_seconds: u64,
    /// Saga lease heartbeat in milliseconds (default: a third of the lease).
    #[arg(long, env = "ACCRUE_SAGA_HEARTBEAT_MS")]
    saga_heartbeat_ms: Option<u64>,
    /// Internal errors (a peer's INTERNAL) one saga step may meet before the
    /// saga is left STUCK for an operator.
    #[arg(long, env = "ACCRUE_SAGA_INTERNAL_ATTEMPTS", default_value_t = 10)]
    saga_internal_attempts: u32,
}

impl From<Flags> for Config {
    fn from(flags: Flags) -> Config {
        Config {
            hierarchy_url: flags.hierarchy_url,
            commission_url: flags.commission_url,
            ledger_url: flags.ledger_url,
            max_future_skew: Duration::from_secs(flags.max_future_skew_seconds),
            stream_idle_timeout: Duration::from_secs(flags.stream_idle_timeout_seconds),
            saga: SagaOptions {
                workers: flags.saga_workers,
                batch_size: flags.saga_batch_size,
                lease: Duration::from_secs(flags.saga_lease_seconds),
                heartbeat: flags.saga_heartbeat_ms.map(Duration::from_millis),
                gather: Duration::from_millis(flags.saga_gather_ms),
                internal_attempts: flags.saga_internal_attempts,
                ..SagaOptions::default()
            },
            hooks: SagaHooks::default(),
        }
    }
}

impl Service for Attribution {
    type Server = AttributionServiceServer<AttributionApi>;
    type Config = Config;
    type Flags = Flags;
    const SCHEMA: &'static str = "attribution";
    const DEFAULT_PORT: u16 = 50052;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// The API plus `SagaOptions::workers` saga workers. On shutdown the RPCs
    /// drain first, then each worker finishes its current step and releases
    /// its leases.
    fn routes(config: &Config, setup: &mut Setup) -> Result<Routes, Error> {
        // The workers' writes are all re-derivable (steps are idempotent and
        // re-run when their log rows are missing), so they need not wait for
        // WAL flush; RPC writes (sales, sagas) stay fully durable, and so do
        // the workers' claims (the engine commits each with
        // synchronous_commit on: a lost claim could hand one generation to
        // two owners). Every worker statement works on a batch's rows by key
        // (see saga_worker_pool).
        let worker_pool = accrue_kit::db::saga_worker_pool(&setup.db)?;
        let peers = peers::Peers::connect(
            &config.hierarchy_url,
            &config.commission_url,
            &config.ledger_url,
            &setup.credential,
        )?;
        let wake = saga::Wake::default();
        let (worker_peers, worker_wake, options) = (peers.clone(), wake.clone(), config.saga.clone());
        let hooks = config.hooks.clone();
        setup.spawn(move |shutdown| async move {
            let workers = saga::spawn_workers(worker_pool, worker_peers, options, hooks, worker_wake, shutdown);
            for set in workers {
                set.join_all().await;
            }
        });
        let events = accrue_kit::events::host(setup, &accrue_kit::events::catalogue::ATTRIBUTION, Default::default());
        let (api, recorders) = AttributionApi::new(
            setup.pool.clone(),
            peers,
            wake,
            Limits { max_future_skew: config.max_future_skew, stream_idle_timeout: config.stream_idle_timeout },
        )
        .with_coalescing();
        // Not stopped by the shutdown signal: the recorders serve RecordSale
        // calls until the server has drained them and dropped the API.
        setup.spawn(move |_shutdown| recorders.run());
        Ok(events.add_to(accrue_kit::server::routes(AttributionServiceServer::new(api))))
    }
}
