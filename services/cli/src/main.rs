//! `accrue`: the all-in-one dev command and the Online Retail replay.
//!
//! - `accrue dev`: a throwaway Postgres from the local server binaries
//!   (unless a database URL is given), migrations, the five services on
//!   their standard ports; stays up until Ctrl-C / SIGTERM, then stops the
//!   services and deletes the throwaway database.
//! - `accrue replay online-retail --data DIR`: replays the UCI Online Retail
//!   data set against a running stack, or with `--dev` against one started
//!   in-process.
//! - `accrue token mint`: a development bearer token (HS256).
//! - `accrue db provision`: the services' own database roles, made with an
//!   admin URL before a production deployment starts.
//! - `accrue migrate`: every service's migrations applied to its schema (the
//!   deployment's migration Job; the services then run with
//!   `--migrate=false`).
//! - `accrue chaos`: the crash campaign — a clean replay and one under
//!   SIGKILLs and Postgres restarts, compared.
//! - `accrue payouts list|show|create|approve|reject|delete|mark-paid|export` and `accrue
//!   audit list`: a finance operator's payout work against a running stack
//!   (tables by default, `--json` for JSON lines).

use std::net::IpAddr;
use std::path::PathBuf;

use accrue_cli::operator;
use accrue_cli::pg::{DevDatabase, dev_database, redact};
use accrue_cli::replay::{ProgressMode, ReplayOptions, Summary, replay};
use accrue_cli::stack::{Endpoints, Ports, Stack, StackConfig, provision_all};
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use accrue_types::id::{PartnerId, ProgramId};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(name = "accrue", version, about = "Accrue partner-commission platform: dev stack and data replay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a throwaway Postgres (unless --database-url / DATABASE_URL) and the five services; stays up until Ctrl-C.
    Dev(DevArgs),
    /// Replay a real data set through the services.
    Replay {
        #[command(subcommand)]
        dataset: Dataset,
    },
    /// Development bearer tokens (HS256; production tokens come from your identity provider).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Apply every service's migrations to its own schema (the deployment's migration Job).
    ///
    /// Run it before starting services with `--migrate=false` / ACCRUE_MIGRATE=false, which refuse to start on an
    /// out-of-date schema. Idempotent: an up-to-date schema is left as it is. With --provision, DATABASE_URL is an
    /// admin URL: the service roles are made first (as `accrue db provision`) and each schema is migrated acting as
    /// its role. Without, each schema is migrated over ACCRUE_<SCHEMA>_DATABASE_URL, else DATABASE_URL.
    Migrate(MigrateArgs),
    /// Database administration.
    Db {
        #[command(subcommand)]
        action: DbCommand,
    },
    /// Payouts: list, show, create, approve, reject, delete, mark paid, export (a running stack).
    Payouts {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: PayoutsCommand,
    },
    /// The payout audit trail (a running stack).
    Audit {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Crash campaign: a clean replay and one under kills, compared (nothing lost, duplicated or stuck).
    ///
    /// Replays a prefix of the data set cleanly, then again while killing services (SIGKILL) and restarting
    /// Postgres (immediate mode), and compares the two databases. Starts its own throwaway Postgres and the five
    /// service binaries found next to `accrue` (build them in the same profile).
    Chaos(ChaosArgs),
}

/// Where the payouts service is and who calls it.
#[derive(Debug, Args)]
struct Connection {
    /// Payouts service URL.
    #[arg(long, global = true, env = "ACCRUE_PAYOUTS_URL", default_value = "http://127.0.0.1:50055")]
    payouts_url: String,
    /// Bearer token (a finance or admin token; its subject is the audit actor).
    #[arg(long, global = true, env = "ACCRUE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON (one object per line) instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// ListPayouts / ExportPayouts filters.
#[derive(Debug, Args)]
struct PayoutFilters {
    /// Program id.
    #[arg(long)]
    program: String,
    /// Only this status (pending_approval, approved, rejected, processing, paid, failed, deleted).
    #[arg(long)]
    status: Option<String>,
    /// Only this partner's.
    #[arg(long)]
    partner: Option<String>,
    /// Only this period ("YYYY-MM").
    #[arg(long)]
    period: Option<String>,
    /// Only this currency (ISO 4217).
    #[arg(long)]
    currency: Option<String>,
    /// Only this payout run's.
    #[arg(long)]
    run: Option<String>,
    /// Include deleted payouts.
    #[arg(long)]
    show_deleted: bool,
}

#[derive(Debug, Subcommand)]
enum PayoutsCommand {
    /// List payouts, oldest first.
    List(PayoutFilters),
    /// Show one payout.
    Show {
        /// Payout id.
        id: String,
    },
    /// Approve payouts (several ids: one bulk call in --program; each approved or refused on its own).
    Approve {
        /// Payout ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Program (required with several ids).
        #[arg(long)]
        program: Option<String>,
        /// Idempotency key: the same command again changes nothing.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Reject a payout awaiting approval (its entries return to the next run).
    Reject {
        /// Payout id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Create a manual payout of a partner's payable ledger entries (no minimum applies).
    Create {
        /// Program id.
        #[arg(long)]
        program: String,
        /// Partner id.
        #[arg(long)]
        partner: String,
        /// Currency of the entries to pay (ISO 4217).
        #[arg(long)]
        currency: String,
        /// Period the payout is reported under ("YYYY-MM"); entries cleared by its end are paid.
        #[arg(long)]
        period: String,
        /// Notes kept on the payout.
        #[arg(long, default_value = "")]
        notes: String,
        /// Idempotency key (required: the payout's id derives from it, so running the command again is safe).
        #[arg(long)]
        request_id: String,
    },
    /// Delete a payout awaiting approval (its entries return to the next run).
    Delete {
        /// Payout id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Mark an approved or processing payout paid (its ledger entries become PAID).
    MarkPaid {
        /// Payout id.
        id: String,
        /// The payment's reference.
        #[arg(long)]
        reference: String,
        /// How it was paid.
        #[arg(long, default_value = "bank_transfer")]
        method: String,
        /// When it was paid (RFC 3339; default now).
        #[arg(long)]
        paid_at: Option<String>,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Export payouts as CSV (RFC 4180) to --out or stdout.
    Export {
        #[command(flatten)]
        filters: PayoutFilters,
        /// File to write (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// List payout audit events, oldest first.
    List {
        /// Program id.
        #[arg(long)]
        program: String,
        /// Only this payout's.
        #[arg(long)]
        payout: Option<String>,
        /// Only this actor's (token subject).
        #[arg(long)]
        actor: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ChaosArgs {
    /// Directory holding online_retail.csv.gz.
    #[arg(long, env = "ACCRUE_DATA_DIR", default_value = "data/uci_online_retail")]
    data: PathBuf,
    /// Invoices of the prefix replayed (the whole data set has 25,900).
    #[arg(long, default_value_t = 1000)]
    limit_invoices: usize,
    /// Services killed with SIGKILL during the chaos run.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Immediate-mode Postgres restarts during the chaos run.
    #[arg(long, default_value_t = 1)]
    postgres_restarts: usize,
    /// Seed of the chaos (targets, moments, pauses); random when absent, printed for a re-run.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report also as one JSON object on the last stdout line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Create (or bring up to date) one login role per service, `accrue_<schema>`, owning its schema and nothing
    /// else, and print the URL each service should connect with. Idempotent; run it with an admin URL before the
    /// services start (they apply their own migrations as their roles). A database migrated before roles existed
    /// is handed over to the roles.
    Provision(ProvisionArgs),
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    /// Admin Postgres URL: a superuser, or a role with CREATEROLE that may create schemas in the database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Set each role's password from ACCRUE_<SCHEMA>_DB_PASSWORD (all five must be set); without it, new roles
    /// get no password (trust, peer or certificate auth) and existing ones keep theirs.
    #[arg(long)]
    password_env: bool,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// Postgres URL: the admin URL with --provision, else the URL of every schema without its own
    /// ACCRUE_<SCHEMA>_DATABASE_URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Make or update the service roles first (as `accrue db provision`) and migrate acting as each role.
    #[arg(long)]
    provision: bool,
    /// With --provision: set each role's password from ACCRUE_<SCHEMA>_DB_PASSWORD (all five must be set).
    #[arg(long, requires = "provision")]
    password_env: bool,
    /// How long to wait for the database to accept connections (s, m, h or d).
    #[arg(long, env = "ACCRUE_MIGRATE_WAIT", default_value = "60s", value_parser = parse_wait)]
    wait: std::time::Duration,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a token signed with the development HS256 secret.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
struct MintArgs {
    /// The HS256 secret the services verify with (what `accrue dev` prints).
    #[arg(long, env = "ACCRUE_AUTH_HS256_SECRET", hide_env_values = true)]
    secret: String,
    /// A role: admin, finance, partner, service or viewer (repeat for several).
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// A program id, or `*` for every program (repeat for several).
    #[arg(long = "program", required = true)]
    programs: Vec<String>,
    /// The partner a partner token speaks for.
    #[arg(long)]
    partner: Option<String>,
    /// Subject (`sub`): who the audit trail names.
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// Lifetime: a number with s, m, h or d (`90m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    /// Expected issuer.
    #[arg(long, env = "ACCRUE_AUTH_ISSUER", default_value = accrue_kit::auth::DEFAULT_ISSUER)]
    issuer: String,
    /// Expected audience.
    #[arg(long, env = "ACCRUE_AUTH_AUDIENCE", default_value = accrue_kit::auth::DEFAULT_AUDIENCE)]
    audience: String,
}

/// `90m` → 90 minutes; units s, m, h, d; at least one second.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().map_err(|_| format!("{text:?}: want a number and a unit (s, m, h, d)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    match count.checked_mul(seconds) {
        Some(total) if total > 0 => Ok(std::time::Duration::from_secs(total)),
        _ => Err(format!("{text:?}: out of range")),
    }
}

#[derive(Debug, Subcommand)]
enum Dataset {
    /// The UCI Online Retail data set (DESIGN §7).
    OnlineRetail(ReplayArgs),
}

/// Where the dev database comes from.
#[derive(Debug, Args)]
struct DatabaseArgs {
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
const DEV_MAX_CONNECTIONS: u32 = 8;

#[derive(Debug, Args)]
struct DevArgs {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => {
            let telemetry = accrue_kit::telemetry::init("accrue-dev", "info");
            let result = dev(args).await;
            telemetry.flush().await;
            result
        }
        Command::Replay { dataset: Dataset::OnlineRetail(args) } => {
            let telemetry = accrue_kit::telemetry::init("accrue-replay", "warn");
            let result = replay_online_retail(args).await;
            telemetry.flush().await;
            result
        }
        Command::Token { action: TokenCommand::Mint(args) } => mint(args),
        Command::Db { action: DbCommand::Provision(args) } => provision(args).await,
        Command::Migrate(args) => {
            let _logs = accrue_kit::telemetry::init("accrue-migrate", "warn");
            migrate(args).await
        }
        Command::Chaos(args) => {
            // WARN shows each retry of the replay's calls.
            let _logs = accrue_kit::telemetry::init("accrue-chaos", "warn");
            chaos(args).await
        }
        Command::Payouts { connection, action } => payouts(connection, action).await,
        Command::Audit { connection, action: AuditCommand::List { program, payout, actor } } => {
            let mut client = payouts_client(&connection)?;
            let filter = accrue_proto::payouts::v1::ListAuditEventsRequest {
                program_id: program,
                payout_id: payout.unwrap_or_default(),
                actor: actor.unwrap_or_default(),
                ..Default::default()
            };
            let events = operator::audit(&mut client, filter).await?;
            print!("{}", operator::render_audit(&events, connection.json));
            Ok(())
        }
    }
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!(
        "chaos: seed {seed}: {} invoices, {} kills, {} Postgres restarts",
        args.limit_invoices, args.kills, args.postgres_restarts
    );
    let options = accrue_cli::chaos::ChaosOptions {
        data_dir: args.data,
        limit_invoices: args.limit_invoices,
        kills: args.kills,
        postgres_restarts: args.postgres_restarts,
        seed,
    };
    let report = tokio::select! {
        () = accrue_kit::shutdown::wait_for_signal() => anyhow::bail!("interrupted"),
        report = accrue_cli::chaos::run(options) => report?,
    };
    println!("{report}");
    if args.json {
        println!("{}", report.to_json_line());
    }
    if !report.ok() {
        anyhow::bail!("the chaos run differs from the clean run");
    }
    Ok(())
}

fn payouts_client(connection: &Connection) -> anyhow::Result<PayoutServiceClient<accrue_kit::client::AuthChannel>> {
    let token = connection.token.clone().context("--token or ACCRUE_TOKEN is required")?;
    Ok(accrue_kit::client::connect(
        &connection.payouts_url,
        accrue_kit::client::BULK_TIMEOUT,
        &Credential::token(token),
    )?)
}

fn list_filter(filters: &PayoutFilters) -> anyhow::Result<accrue_proto::payouts::v1::ListPayoutsRequest> {
    let status = match &filters.status {
        Some(status) => operator::parse_status(status)? as i32,
        None => 0,
    };
    Ok(accrue_proto::payouts::v1::ListPayoutsRequest {
        program_id: filters.program.clone(),
        partner_id: filters.partner.clone().unwrap_or_default(),
        payout_run_id: filters.run.clone().unwrap_or_default(),
        status,
        period: filters.period.clone().unwrap_or_default(),
        currency_code: filters.currency.clone().unwrap_or_default(),
        show_deleted: filters.show_deleted,
        ..Default::default()
    })
}

async fn payouts(connection: Connection, action: PayoutsCommand) -> anyhow::Result<()> {
    let mut client = payouts_client(&connection)?;
    let json = connection.json;
    let views = match action {
        PayoutsCommand::List(filters) => operator::list(&mut client, list_filter(&filters)?).await?,
        PayoutsCommand::Show { id } => vec![operator::show(&mut client, &id).await?],
        PayoutsCommand::Approve { ids, program, request_id } => {
            let (approved, failed) = operator::approve(&mut client, program.as_deref(), &ids, &request_id).await?;
            for (id, message) in &failed {
                eprintln!("not approved: {id}: {message}");
            }
            print!("{}", operator::render_payouts(&approved, json));
            if !failed.is_empty() {
                anyhow::bail!("{} of {} payouts not approved", failed.len(), ids.len());
            }
            return Ok(());
        }
        PayoutsCommand::Reject { id, reason, request_id } => {
            vec![operator::reject(&mut client, &id, &reason, &request_id).await?]
        }
        PayoutsCommand::Create { program, partner, currency, period, notes, request_id } => {
            let request = accrue_proto::payouts::v1::CreatePayoutRequest {
                program_id: program,
                partner_id: partner,
                currency_code: currency,
                period,
                cutoff: None,
                notes,
                request_id,
            };
            vec![operator::create(&mut client, request).await?]
        }
        PayoutsCommand::Delete { id, reason, request_id } => {
            vec![operator::delete(&mut client, &id, &reason, &request_id).await?]
        }
        PayoutsCommand::MarkPaid { id, reference, method, paid_at, request_id } => {
            vec![operator::mark_paid(&mut client, &id, &reference, &method, paid_at.as_deref(), &request_id).await?]
        }
        PayoutsCommand::Export { filters, out } => {
            let list = list_filter(&filters)?;
            let filter = accrue_proto::payouts::v1::ExportPayoutsRequest {
                program_id: list.program_id,
                partner_id: list.partner_id,
                payout_run_id: list.payout_run_id,
                status: list.status,
                period: list.period,
                currency_code: list.currency_code,
                show_deleted: list.show_deleted,
            };
            if let Some(path) = out {
                let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                let rows = operator::export(&mut client, filter, &mut file).await?;
                eprintln!("{rows} payouts written to {}", path.display());
            } else {
                operator::export(&mut client, filter, &mut std::io::stdout()).await?;
            }
            return Ok(());
        }
    };
    print!("{}", operator::render_payouts(&views, json));
    Ok(())
}

/// The variable `accrue db provision --password-env` reads the password of
/// `schema`'s role from.
fn password_env(schema: &str) -> String {
    format!("ACCRUE_{}_DB_PASSWORD", schema.to_uppercase())
}

/// Each role's password from its [`password_env`] variable (all five must
/// be set), or none when `from_env` is false.
fn role_passwords(from_env: bool) -> anyhow::Result<std::collections::HashMap<&'static str, String>> {
    let mut passwords = std::collections::HashMap::new();
    if from_env {
        for schema in accrue_cli::stack::SCHEMAS {
            let name = password_env(schema);
            let password = std::env::var(&name).ok().filter(|p| !p.is_empty());
            passwords.insert(schema, password.with_context(|| format!("--password-env: {name} is not set"))?);
        }
    }
    Ok(passwords)
}

/// `--wait`: like a token lifetime, but zero (do not wait) is allowed.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<u64>() == Ok(0) {
        return Ok(std::time::Duration::ZERO);
    }
    parse_ttl(text)
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let options = accrue_cli::migrate::MigrateOptions {
        database_url: args.database_url,
        provision: args.provision,
        passwords: role_passwords(args.password_env)?,
        wait: args.wait,
    };
    let reports = accrue_cli::migrate::run(&options).await?;
    for report in &reports {
        println!("{report}");
    }
    let applied: usize = reports.iter().map(|report| report.applied).sum();
    println!("{applied} migrations applied; every schema is up to date.");
    Ok(())
}

async fn provision(args: ProvisionArgs) -> anyhow::Result<()> {
    let passwords = role_passwords(args.password_env)?;
    let roles = provision_all(&args.database_url, |schema| passwords.get(schema).cloned()).await?;
    println!("Provisioned one role per service in {}.", redact(&args.database_url));
    println!("Connect each service as its own role (passwords shown as ***):");
    for role in &roles {
        println!("  {:<12} role {}", role.schema, role.role);
        println!("    {}={}", role.env_var(), redact(&role.url));
    }
    Ok(())
}

fn mint(args: MintArgs) -> anyhow::Result<()> {
    let roles = args.roles.iter().map(|r| r.parse::<Role>()).collect::<Result<Vec<_>, _>>()?;
    let partner = args.partner.as_deref().map(str::parse::<PartnerId>).transpose()?;
    if roles.contains(&Role::Partner) && partner.is_none() {
        anyhow::bail!("a partner token needs --partner");
    }
    for program in args.programs.iter().filter(|p| p.as_str() != "*") {
        program.parse::<ProgramId>()?;
    }
    let minter = Minter::new(&args.secret, &args.issuer, &args.audience)?;
    println!("{}", minter.mint(&args.subject, &roles, &args.programs, partner, args.ttl)?);
    Ok(())
}

/// The dev database, given or throwaway; abandoned (a throwaway one
/// stopped and deleted) when `interrupted` fires meanwhile.
async fn start_database(args: &DatabaseArgs, interrupted: &CancellationToken) -> anyhow::Result<DevDatabase> {
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
async fn start_stack(
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

fn stack_config(database: &DevDatabase, args: &DatabaseArgs, host: IpAddr, ports: Ports) -> StackConfig {
    let mut config = StackConfig::new(database.url().to_string(), host, ports, args.max_connections);
    config.shutdown_grace = std::time::Duration::from_secs(args.shutdown_grace);
    config
}

fn print_endpoints(stack: &Stack, secret: &str) {
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

async fn dev(args: DevArgs) -> anyhow::Result<()> {
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

async fn replay_online_retail(args: ReplayArgs) -> anyhow::Result<()> {
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

fn print_summary(summary: &Summary, json: bool) {
    println!("{summary}");
    if json {
        println!("{}", summary.to_json_line());
    }
}
