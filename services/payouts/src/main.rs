//! `accrue-payouts`: runs the payouts service.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(name = "accrue-payouts", version, about = "Accrue payouts service (accrue.payouts.v1.PayoutService)")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ACCRUE_PAYOUTS_LISTEN", default_value = "0.0.0.0:50055")]
    listen: SocketAddr,
    /// Postgres URL for this service (falls back to DATABASE_URL).
    #[arg(long, env = "ACCRUE_PAYOUTS_DATABASE_URL")]
    database_url: Option<String>,
    /// Hierarchy service endpoint (programs, partners).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    hierarchy_url: String,
    /// Ledger service endpoint (payout reservations).
    #[arg(long, env = "ACCRUE_LEDGER_URL", default_value = "http://127.0.0.1:50054")]
    ledger_url: String,
    /// Maximum database connections.
    #[arg(long, env = "ACCRUE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    accrue_kit::telemetry::init("info");
    let args = Args::parse();
    let database_url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .context("set --database-url, ACCRUE_PAYOUTS_DATABASE_URL or DATABASE_URL")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    tracing::info!(addr = %args.listen, "payouts service listening");
    let config = accrue_payouts::Config {
        database_url,
        max_connections: args.max_connections,
        hierarchy_url: args.hierarchy_url,
        ledger_url: args.ledger_url,
    };
    accrue_payouts::run(config, listener, accrue_kit::shutdown::on_signal()).await?;
    Ok(())
}
