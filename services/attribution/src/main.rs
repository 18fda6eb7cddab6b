//! `accrue-attribution`: runs the attribution service and its saga workers.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "accrue-attribution",
    version,
    about = "Accrue attribution service (accrue.attribution.v1.AttributionService)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ACCRUE_ATTRIBUTION_LISTEN", default_value = "0.0.0.0:50052")]
    listen: SocketAddr,
    /// Postgres URL for this service (falls back to DATABASE_URL).
    #[arg(long, env = "ACCRUE_ATTRIBUTION_DATABASE_URL")]
    database_url: Option<String>,
    /// Maximum database connections.
    #[arg(long, env = "ACCRUE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// Hierarchy service endpoint.
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    hierarchy_url: String,
    /// Commission service endpoint.
    #[arg(long, env = "ACCRUE_COMMISSION_URL", default_value = "http://127.0.0.1:50053")]
    commission_url: String,
    /// Ledger service endpoint.
    #[arg(long, env = "ACCRUE_LEDGER_URL", default_value = "http://127.0.0.1:50054")]
    ledger_url: String,
    /// Saga workers in this process.
    #[arg(long, env = "ACCRUE_SAGA_WORKERS", default_value_t = 2)]
    saga_workers: usize,
    /// Sagas claimed per batch.
    #[arg(long, env = "ACCRUE_SAGA_BATCH_SIZE", default_value_t = 500)]
    saga_batch_size: i64,
    /// Saga lease in seconds.
    #[arg(long, env = "ACCRUE_SAGA_LEASE_SECONDS", default_value_t = 30)]
    saga_lease_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    accrue_kit::telemetry::init("info");
    let args = Args::parse();
    let database_url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .context("set --database-url, ACCRUE_ATTRIBUTION_DATABASE_URL or DATABASE_URL")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    tracing::info!(addr = %args.listen, "attribution service listening");
    let saga = accrue_attribution::SagaOptions {
        workers: args.saga_workers,
        batch_size: args.saga_batch_size,
        lease: std::time::Duration::from_secs(args.saga_lease_seconds),
        ..accrue_attribution::SagaOptions::default()
    };
    let config = accrue_attribution::Config {
        database_url,
        max_connections: args.max_connections,
        hierarchy_url: args.hierarchy_url,
        commission_url: args.commission_url,
        ledger_url: args.ledger_url,
        saga,
    };
    accrue_attribution::run(config, listener, accrue_kit::shutdown::on_signal()).await?;
    Ok(())
}
