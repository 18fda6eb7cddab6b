//! `accrue bench`: the throughput, latency, memory and scaling benchmark
//! ([`accrue_cli::bench`]).

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// N: sales of the main throughput run (the scaling runs are N/10 and 5N).
    #[arg(long, default_value_t = 200_000)]
    sales: u64,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Offered load of the latency run, sales per second (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long the latency run offers that load, in seconds, after its warm-up.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
    /// How long the latency run offers that load first, as a warm-up: those sales settle and are checked like
    /// the rest, their latency is reported apart, not in the percentiles (0: no warm-up).
    #[arg(long, default_value_t = 5)]
    latency_warmup_seconds: u64,
    /// Admin URL of a PostgreSQL server to make the bench databases on (one per run, dropped after it); default:
    /// a throwaway server with full durability (fsync, synchronous_commit, full_page_writes on).
    #[arg(long)]
    database_url: Option<String>,
    /// CI smoke mode: 300 sales, 100 sales/s for 3 s after a 1 s warm-up, a baseline of 500 and 1,000 sales
    /// (overrides --sales, --rate, --latency-seconds and --latency-warmup-seconds).
    #[arg(long)]
    smoke: bool,
    /// Only the N run (no N/10 and 5N runs: no scaling or 5N memory figures).
    #[arg(long)]
    skip_scaling: bool,
    /// No latency run.
    #[arg(long)]
    skip_latency: bool,
    /// Also time SimulateProgram (issue 16 item 2) over each throughput run's settled sales: once with the live
    /// rules (must change nothing), once under a draft default agreement.
    #[arg(long)]
    simulate: bool,
    /// Also print the report as one JSON object on the last stdout line.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut options = accrue_cli::bench::BenchOptions {
        sales: args.sales,
        seed: args.seed,
        rate: args.rate,
        latency_seconds: args.latency_seconds,
        latency_warmup_seconds: args.latency_warmup_seconds,
        database_url: args.database_url,
        skip_scaling: args.skip_scaling,
        skip_latency: args.skip_latency,
        simulate: args.simulate,
        ..accrue_cli::bench::BenchOptions::new()
    };
    if args.smoke {
        options = options.smoke();
    }
    if args.json {
        options.progress = accrue_cli::replay::ProgressMode::Lines;
    }
    anyhow::ensure!(options.sales > 0, "--sales must be at least 1");
    anyhow::ensure!(options.rate > 0 && options.latency_seconds > 0, "--rate and --latency-seconds must be at least 1");
    let report = tokio::select! {
        () = accrue_kit::shutdown::wait_for_signal() => anyhow::bail!("interrupted"),
        report = accrue_cli::bench::run(options) => report?,
    };
    println!("{report}");
    if args.json {
        println!("{}", report.to_json_line());
    }
    Ok(())
}
