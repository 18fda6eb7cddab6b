//! `accrue chaos`: the crash campaign ([`accrue_cli::chaos`]).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
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

pub(crate) async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
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
