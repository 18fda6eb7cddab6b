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
//! - `accrue bench`: the benchmark — settled sales/s, ledger lines/s and
//!   clawbacks/s through the gRPC API at N/10, N and 5N sales, the Postgres
//!   baseline they are compared with, record → settled latency at a fixed
//!   open-loop load, and each service's peak RSS; `--smoke` for CI.
//! - `accrue payouts list|show|create|approve|reject|delete|mark-paid|export` and `accrue
//!   audit list`: a finance operator's payout work against a running stack
//!   (tables by default, `--json` for JSON lines).

mod commands;

/// mimalloc, as in the service binaries: `accrue dev` and `accrue replay
/// --dev` run the five services in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use commands::admin::{DbCommand, MigrateArgs, TokenCommand, migrate, mint, provision};
use commands::bench::{BenchArgs, bench};
use commands::chaos::{ChaosArgs, chaos};
use commands::payouts::{AuditCommand, Connection, PayoutsCommand, audit, payouts};
use commands::stack::{Dataset, DevArgs, dev, replay_online_retail};

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
    /// Benchmark: settled sales/s, latency, memory and scaling through the gRPC API, against a Postgres baseline.
    ///
    /// Starts a durable throwaway Postgres (or uses --database-url) and the five service binaries found next to
    /// `accrue` (build them in the same profile, release for real figures), one fresh database and set of service
    /// processes per run: N/10, the Postgres baseline, N, 5N, then the open-loop latency run. Prints a table, and
    /// with --json one JSON object on the last line. Unmet targets are reported, not errors.
    Bench(BenchArgs),
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
        Command::Bench(args) => {
            let _logs = accrue_kit::telemetry::init("accrue-bench", "warn");
            bench(args).await
        }
        Command::Payouts { connection, action } => payouts(connection, action).await,
        Command::Audit { connection, action } => audit(connection, action).await,
    }
}
