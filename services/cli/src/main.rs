//! `accrue`: the all-in-one dev command and the Online Retail replay.
//!
//! - `accrue dev`: a throwaway Postgres (unless a database is given or one
//!   listens on 127.0.0.1:5432), migrations, the five services on their
//!   standard ports; stays up until Ctrl-C / SIGTERM.
//! - `accrue replay online-retail --data DIR`: replays the UCI Online Retail
//!   data set against a running stack, or with `--dev` against one started
//!   in-process.

use std::net::IpAddr;
use std::path::PathBuf;

use accrue_cli::pg::{DevDatabase, ThrowawayPostgres, dev_database};
use accrue_cli::replay::{ProgressMode, ReplayOptions, Summary, replay};
use accrue_cli::stack::{Endpoints, Ports, Stack, StackConfig};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "accrue", version, about = "Accrue partner-commission platform: dev stack and data replay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Postgres (if needed) and the five services for local use; stays up until Ctrl-C.
    Dev(DevArgs),
    /// Replay a real data set through the services.
    Replay {
        #[command(subcommand)]
        dataset: Dataset,
    },
}

#[derive(Debug, Subcommand)]
enum Dataset {
    /// The UCI Online Retail data set (DESIGN §7).
    OnlineRetail(ReplayArgs),
}

/// Where the dev database comes from.
#[derive(Debug, Args)]
struct DatabaseArgs {
    /// Postgres URL; without it, 127.0.0.1:5432 (database `accrue`) or a throwaway server.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Always start a throwaway Postgres (ignore DATABASE_URL and 127.0.0.1:5432).
    #[arg(long, conflicts_with = "database_url")]
    throwaway_db: bool,
    /// Database connections per service.
    #[arg(long, env = "ACCRUE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
}

#[derive(Debug, Args)]
struct DevArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to bind the services on.
    #[arg(long, env = "ACCRUE_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Hierarchy service port.
    #[arg(long, default_value_t = <accrue_hierarchy::Hierarchy as accrue_kit::service::Service>::DEFAULT_PORT)]
    hierarchy_port: u16,
    /// Attribution service port.
    #[arg(long, default_value_t = <accrue_attribution::Attribution as accrue_kit::service::Service>::DEFAULT_PORT)]
    attribution_port: u16,
    /// Commission service port.
    #[arg(long, default_value_t = <accrue_commission::Commission as accrue_kit::service::Service>::DEFAULT_PORT)]
    commission_port: u16,
    /// Ledger service port.
    #[arg(long, default_value_t = <accrue_ledger::Ledger as accrue_kit::service::Service>::DEFAULT_PORT)]
    ledger_port: u16,
    /// Payouts service port.
    #[arg(long, default_value_t = <accrue_payouts::Payouts as accrue_kit::service::Service>::DEFAULT_PORT)]
    payouts_port: u16,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Directory holding online_retail.csv.gz.
    #[arg(long, env = "ACCRUE_DATA_DIR")]
    data: PathBuf,
    /// Start a stack in-process (ephemeral ports) and stop it at the end.
    #[arg(long)]
    dev: bool,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print the summary also as one JSON object on the last stdout line (progress as plain lines on stderr).
    #[arg(long)]
    json: bool,
    /// Seed of the generated partners, links and agreements.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Replay only the first N invoices.
    #[arg(long)]
    limit_invoices: Option<usize>,
    /// Where to write the generated configuration.
    #[arg(long, default_value = "accrue-replay-config.json")]
    config_out: PathBuf,
    /// Hierarchy service URL (without --dev).
    #[arg(long, env = "ACCRUE_HIERARCHY_URL", default_value = "http://127.0.0.1:50051")]
    hierarchy_url: String,
    /// Attribution service URL (without --dev).
    #[arg(long, env = "ACCRUE_ATTRIBUTION_URL", default_value = "http://127.0.0.1:50052")]
    attribution_url: String,
    /// Commission service URL (without --dev).
    #[arg(long, env = "ACCRUE_COMMISSION_URL", default_value = "http://127.0.0.1:50053")]
    commission_url: String,
    /// Ledger service URL (without --dev).
    #[arg(long, env = "ACCRUE_LEDGER_URL", default_value = "http://127.0.0.1:50054")]
    ledger_url: String,
    /// Payouts service URL (without --dev).
    #[arg(long, env = "ACCRUE_PAYOUTS_URL", default_value = "http://127.0.0.1:50055")]
    payouts_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => {
            accrue_kit::telemetry::init("info");
            dev(args).await
        }
        Command::Replay { dataset: Dataset::OnlineRetail(args) } => {
            accrue_kit::telemetry::init("warn");
            replay_online_retail(args).await
        }
    }
}

async fn start_database(args: &DatabaseArgs) -> anyhow::Result<DevDatabase> {
    let database = if args.throwaway_db {
        DevDatabase::Throwaway(ThrowawayPostgres::start().await.context("starting a throwaway Postgres")?)
    } else {
        dev_database(args.database_url.clone()).await.context("providing a database")?
    };
    eprintln!("database: {}", database.describe());
    Ok(database)
}

fn stack_config(database: &DevDatabase, args: &DatabaseArgs, host: IpAddr, ports: Ports) -> StackConfig {
    StackConfig::new(database.url().to_string(), host, ports, args.max_connections)
}

fn print_endpoints(endpoints: &Endpoints) {
    println!("Accrue is up. gRPC services (plaintext, health + reflection on each):");
    for (service, url) in endpoints.list() {
        println!("  {service:<42} {url}");
    }
    let hierarchy = endpoints.hierarchy.trim_start_matches("http://");
    println!();
    println!("Try:");
    println!("  grpcurl -plaintext {hierarchy} list");
    println!(
        "  grpcurl -plaintext -d '{{\"program\":{{\"display_name\":\"Demo\",\"default_currency\":\"GBP\"}},\"request_id\":\"demo-1\"}}' {hierarchy} accrue.hierarchy.v1.HierarchyService/CreateProgram"
    );
    println!();
    println!("Press Ctrl-C to stop.");
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let database = start_database(&args.database).await?;
    let ports = Ports {
        hierarchy: args.hierarchy_port,
        attribution: args.attribution_port,
        commission: args.commission_port,
        ledger: args.ledger_port,
        payouts: args.payouts_port,
    };
    let config = stack_config(&database, &args.database, args.host, ports);
    let mut stack = match Stack::start(config).await {
        Ok(stack) => stack,
        Err(error) => {
            database.stop().await?;
            return Err(error.context("starting the services"));
        }
    };
    print_endpoints(&stack.endpoints);
    let failure = tokio::select! {
        () = accrue_kit::shutdown::wait_for_signal() => None,
        result = stack.wait_for_failure() => Some(result),
    };
    eprintln!("shutting down…");
    let stopped = stack.shutdown().await;
    database.stop().await?;
    if let Some(result) = failure {
        result.context("a service stopped")?;
    }
    stopped.context("stopping the services")?;
    eprintln!("stopped.");
    Ok(())
}

async fn replay_online_retail(args: ReplayArgs) -> anyhow::Result<()> {
    let mut options = ReplayOptions::new(args.data.clone());
    options.seed = args.seed;
    options.limit_invoices = args.limit_invoices;
    options.config_out = args.config_out.clone();
    options.progress = if args.json { ProgressMode::Lines } else { ProgressMode::Auto };

    let summary = if args.dev {
        let database = start_database(&args.database).await?;
        let config = stack_config(&database, &args.database, IpAddr::from([127, 0, 0, 1]), Ports::ephemeral());
        let stack = match Stack::start(config).await {
            Ok(stack) => stack,
            Err(error) => {
                database.stop().await?;
                return Err(error.context("starting the services"));
            }
        };
        let endpoints = stack.endpoints.clone();
        let outcome = tokio::select! {
            () = accrue_kit::shutdown::wait_for_signal() => Err(anyhow::anyhow!("interrupted")),
            result = replay(options, &endpoints) => result.map_err(anyhow::Error::from),
        };
        let stopped = stack.shutdown().await;
        database.stop().await?;
        let summary = outcome?;
        stopped.context("stopping the services")?;
        summary
    } else {
        let endpoints = Endpoints {
            hierarchy: args.hierarchy_url,
            attribution: args.attribution_url,
            commission: args.commission_url,
            ledger: args.ledger_url,
            payouts: args.payouts_url,
        };
        replay(options, &endpoints).await?
    };
    print_summary(&summary, args.json);
    Ok(())
}

fn print_summary(summary: &Summary, json: bool) {
    println!("{summary}");
    if json {
        println!("{}", summary.to_json_line());
    }
}
