//! `accrue-commission`: runs the commission service.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "accrue-commission",
    version,
    about = "Accrue commission service (accrue.commission.v1.CommissionService)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ACCRUE_COMMISSION_LISTEN", default_value = "0.0.0.0:50053")]
    listen: SocketAddr,
    /// Postgres URL for this service (falls back to DATABASE_URL).
    #[arg(long, env = "ACCRUE_COMMISSION_DATABASE_URL")]
    database_url: Option<String>,
    /// Hierarchy service endpoint (role ladders, partners, uplines).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    hierarchy_url: String,
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
        .context("set --database-url, ACCRUE_COMMISSION_DATABASE_URL or DATABASE_URL")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    tracing::info!(addr = %args.listen, "commission service listening");
    let config = accrue_commission::Config {
        database_url,
        max_connections: args.max_connections,
        hierarchy_url: args.hierarchy_url,
    };
    accrue_commission::run(config, listener, accrue_kit::shutdown::on_signal()).await?;
    Ok(())
}
