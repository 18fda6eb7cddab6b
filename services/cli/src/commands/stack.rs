//! `accrue dev` and `accrue replay online-retail`: a dev stack over a
//! throwaway (or given) Postgres, and the replay against it or a running one.

use accrue_cli::pg::{DevDatabase, dev_database};
use accrue_cli::replay::{ProgressMode, ReplayOptions, Summary, replay};
use accrue_cli::stack::{Endpoints, Ports, Stack, StackConfig};
use accrue_kit::auth::{AuthConfig, Credential};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub(crate) enum Dataset {
    /// The UCI Online Retail data set (DESIGN §7).
    OnlineRetail(ReplayArgs),
}

/// Where the dev database comes from.
#[derive(Debug, Args)]
pub(crate) struct DatabaseArgs {
    /// Admin Postgres URL to use; without it, a throwaway Postgres from the local server binaries, deleted on exit.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Start a throwaway Postgres even when DATABASE_URL is set.
    #[arg(long, conflicts_with = "database_url")]
    throwaway_db: bool,
    /// Database connections per service pool: six pools (the attribution service has two), 6 × 8 = 48 by
    /// default, well under Postgres's default max_connections of 100.
    #[arg(long, env = "ACCRUE_DB_MAX_CONNECTIONS", default_value_t = DEV_MAX_CONNECTIONS)]
    max_connections: u32,
    /// Seconds each service may take to stop on Ctrl-C / SIGTERM (drain RPCs, release saga leases).
    #[arg(long, env = "ACCRUE_SHUTDOWN_GRACE", default_value_t = accrue_kit::shutdown::DEFAULT_GRACE.as_secs())]
    shutdown_grace: u64,
}

/// Pool size per service of the dev stack: the six pools of `accrue dev`
/// and `accrue replay --dev` hold at most 48 connections.
pub(crate) const DEV_MAX_CONNECTIONS: u32 = 8;

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// HS256 secret the services verify tokens with; a fresh random one when absent.
    #[arg(long, env = "ACCRUE_AUTH_HS256_SECRET", hide_env_values = true)]
    auth_hs256_secret: Option<String>,
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
    /// First of five ports serving Prometheus metrics (GET /metrics), in the order above (0: ephemeral).
    #[arg(long, env = "ACCRUE_DEV_METRICS_PORT_BASE", default_value_t = 9551)]
    metrics_port_base: u16,
    /// Serve no metrics.
    #[arg(long)]
    no_metrics: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
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
    /// Where to write the payouts CSV at the end (ExportPayouts).
    #[arg(long, default_value = "accrue-replay-payouts.csv")]
    payouts_out: PathBuf,
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
    /// Bearer token for the services (without --dev; an admin token of the program's deployment).
    #[arg(long, env = "ACCRUE_TOKEN", hide_env_values = true, required_unless_present = "dev")]
    token: Option<String>,
}

/// The dev database, given or throwaway; abandoned (a throwaway one
/// stopped and deleted) when `interrupted` fires meanwhile.
pub(crate) async fn start_database(
    args: &DatabaseArgs,
    interrupted: &CancellationToken,
) -> anyhow::Result<DevDatabase> {
    let url = if args.throwaway_db { None } else { args.database_url.clone() };
    let database = tokio::select! {
        () = interrupted.cancelled() => anyhow::bail!("interrupted"),
        database = dev_database(url) => database.context("providing a database")?,
    };
    eprintln!("database: {}", database.describe());
    Ok(database)
}

/// The stack over `database`; when `interrupted` fires while the services
/// start, or they fail to, the database is stopped (a throwaway one
/// deleted) before returning the error.
pub(crate) async fn start_stack(
    database: DevDatabase,
    config: StackConfig,
    interrupted: &CancellationToken,
) -> anyhow::Result<(DevDatabase, Stack)> {
    let started = tokio::select! {
        () = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
        stack = Stack::start(config) => stack.context("starting the services"),
    };
    match started {
        Ok(stack) => Ok((database, stack)),
        Err(error) => {
            database.stop().await?;
            Err(error)
        }
    }
}

pub(crate) fn stack_config(database: &DevDatabase, args: &DatabaseArgs, host: IpAddr, ports: Ports) -> StackConfig {
    let mut config = StackConfig::new(database.url().to_string(), host, ports, args.max_connections);
    config.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace);
    config
}

pub(crate) fn print_endpoints(stack: &Stack, secret: &str) {
    let endpoints = &stack.endpoints;
    println!("Accrue is up. gRPC services (plaintext, health + reflection on each) and their metrics:");
    let metrics = stack.metrics.as_ref().map(Endpoints::list);
    for (i, (service, url)) in endpoints.list().into_iter().enumerate() {
        let metrics_url = metrics.as_ref().map_or("", |list| list[i].1);
        println!("  {service:<42} {url:<24} {metrics_url}");
    }
    let hierarchy = endpoints.hierarchy.trim_start_matches("http://");
    println!();
    println!("Every RPC needs a bearer token. An admin token over every program (30 days):");
    println!("  export ACCRUE_TOKEN={}", stack.admin_token);
    println!("Tokens are signed with this development HS256 secret (`accrue token mint` reads it):");
    println!("  export ACCRUE_AUTH_HS256_SECRET={secret}");
    println!();
    println!("Try:");
    println!("  grpcurl -plaintext {hierarchy} list");
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $ACCRUE_TOKEN\" -d '{{\"program\":{{\"display_name\":\"Demo\",\"default_currency\":\"GBP\"}},\"request_id\":\"demo-1\"}}' {hierarchy} accrue.hierarchy.v1.HierarchyService/CreateProgram"
    );
    println!();
    println!("Press Ctrl-C to stop.");
}

pub(crate) async fn dev(args: DevArgs) -> anyhow::Result<()> {
    // Listening for Ctrl-C / SIGTERM from the start: a signal while the
    // throwaway database or the services start must still stop and delete
    // that database, not kill this process and leave the server running.
    let interrupted = accrue_kit::shutdown::on_signal();
    let database = start_database(&args.database, &interrupted).await?;
    let ports = Ports {
        hierarchy: args.hierarchy_port,
        attribution: args.attribution_port,
        commission: args.commission_port,
        ledger: args.ledger_port,
        payouts: args.payouts_port,
    };
    let mut config = stack_config(&database, &args.database, args.host, ports);
    if let Some(secret) = &args.auth_hs256_secret {
        config.auth = AuthConfig::hs256(secret.clone());
    }
    config.metrics_ports = (!args.no_metrics).then(|| Ports::from_base(args.metrics_port_base));
    let secret = config.auth.hs256_secret.clone().unwrap_or_default();
    let (database, mut stack) = start_stack(database, config, &interrupted).await?;
    print_endpoints(&stack, &secret);
    let failure = tokio::select! {
        () = interrupted.cancelled() => None,
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

pub(crate) async fn replay_online_retail(args: ReplayArgs) -> anyhow::Result<()> {
    let mut options = ReplayOptions::new(args.data.clone());
    options.seed = args.seed;
    options.limit_invoices = args.limit_invoices;
    options.config_out = args.config_out.clone();
    options.payouts_out = args.payouts_out.clone();
    options.progress = if args.json { ProgressMode::Lines } else { ProgressMode::Auto };

    let summary = if args.dev {
        let interrupted = accrue_kit::shutdown::on_signal();
        let database = start_database(&args.database, &interrupted).await?;
        let config = stack_config(&database, &args.database, IpAddr::from([127, 0, 0, 1]), Ports::ephemeral());
        let (database, stack) = start_stack(database, config, &interrupted).await?;
        let (endpoints, admin) = (stack.endpoints.clone(), stack.admin.clone());
        let outcome = tokio::select! {
            () = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
            result = replay(options, &endpoints, &admin) => result.map_err(anyhow::Error::from),
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
        let token = args.token.context("--token or ACCRUE_TOKEN is required without --dev")?;
        replay(options, &endpoints, &Credential::token(token)).await?
    };
    print_summary(&summary, args.json);
    Ok(())
}

pub(crate) fn print_summary(summary: &Summary, json: bool) {
    println!("{summary}");
    if json {
        println!("{}", summary.to_json_line());
    }
}
