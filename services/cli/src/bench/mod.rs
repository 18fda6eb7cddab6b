//! `accrue bench` (issue 15 item 1): how fast Accrue settles sales, measured
//! end to end through its public gRPC API, and how that compares with what
//! the same Postgres can do at all.
//!
//! One invocation starts a durable throwaway Postgres
//! ([`Durability::Full`]: the server's defaults, as in production) unless it
//! is given a server, and then, each run on a fresh database with fresh
//! service processes at their production defaults ([`run`]):
//!
//! 1. a throughput run of N/10 sales (its mean ledger lines per sale sizes
//!    the baseline);
//! 2. the Postgres [`baseline`]: naive (one transaction per sale) and
//!    batched, writing those lines;
//! 3. throughput runs of N and 5N sales (scaling and memory);
//! 4. the open-loop [`latency`] run at a fixed offered load.
//!
//! The workload is synthetic and seeded ([`workload`]); the figures and the
//! issue's targets are gathered in a [`Report`] ([`report`]). It measures:
//! unmet targets are reported, not errors; what fails it is something
//! breaking (a call, a saga, a sale that does not settle).

use std::time::{Duration, Instant};

use crate::pg::{self, Durability, PgError, ThrowawayPostgres};
use crate::procs::{self, ProcsError};
use crate::replay::{ProgressMode, ReplayError};
use crate::stack::dev_secret;

pub mod baseline;
pub mod latency;
pub mod report;
pub mod run;
pub mod simulate;
pub mod workload;

pub use baseline::{Baseline, BaselineError, BaselineOptions};
pub use latency::{Latency, Percentiles};
pub use report::{Report, Target};
pub use run::Throughput;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// N: sales of the main throughput run.
    pub sales: u64,
    /// Seed of the workload.
    pub seed: u64,
    /// Offered load of the latency run, sales per second.
    pub rate: u64,
    /// How long the latency run offers it, in seconds, after its warm-up.
    pub latency_seconds: u64,
    /// How long the latency run offers it before, as a warm-up kept out of
    /// its percentiles (see [`latency`]), in seconds.
    pub latency_warmup_seconds: u64,
    /// Admin URL of a server to make the bench databases on (`None`: a
    /// durable throwaway server).
    pub database_url: Option<String>,
    /// Sales the naive baseline writes.
    pub baseline_naive_sales: u64,
    /// Sales the batched baseline writes.
    pub baseline_batched_sales: u64,
    /// Only the N run: no N/10 and 5N runs.
    pub skip_scaling: bool,
    /// No latency run.
    pub skip_latency: bool,
    /// Progress output.
    pub progress: ProgressMode,
    /// Give up when no saga finishes for this long.
    pub stall_timeout: Duration,
    /// Also time SimulateProgram over each throughput run's sales (issue 16
    /// item 2; see [`simulate`]).
    pub simulate: bool,
}

impl BenchOptions {
    /// The defaults: 200,000 sales, seed 42, 1,000 sales/s for 30 s, a
    /// baseline of 20,000 naive and 100,000 batched sales, every run.
    pub fn new() -> Self {
        BenchOptions {
            sales: 200_000,
            seed: 42,
            rate: 1000,
            latency_seconds: 30,
            latency_warmup_seconds: 5,
            database_url: None,
            baseline_naive_sales: 20_000,
            baseline_batched_sales: 100_000,
            skip_scaling: false,
            skip_latency: false,
            progress: ProgressMode::Auto,
            stall_timeout: Duration::from_secs(300),
            simulate: false,
        }
    }

    /// The CI smoke mode: 300 sales, 100 sales/s for 3 s after a 1 s
    /// warm-up, a baseline of 500 and 1,000 sales — the whole path in about
    /// a minute.
    pub fn smoke(self) -> Self {
        BenchOptions {
            sales: 300,
            rate: 100,
            latency_seconds: 3,
            latency_warmup_seconds: 1,
            baseline_naive_sales: 500,
            baseline_batched_sales: 1000,
            ..self
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the benchmark could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The service processes failed (missing binaries, not SERVING).
    #[error(transparent)]
    Procs(#[from] ProcsError),
    /// The database server failed.
    #[error("postgres: {0}")]
    Postgres(#[from] PgError),
    /// Setting a run up failed (roles, migrations).
    #[error("setup: {0}")]
    Setup(String),
    /// A call to the services failed, or their sagas stalled.
    #[error(transparent)]
    Call(#[from] ReplayError),
    /// An endpoint URL was malformed.
    #[error(transparent)]
    Client(#[from] accrue_kit::client::ClientError),
    /// The baseline failed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// Sagas failed, are stuck, or are missing.
    #[error("{kind} sagas: {done} DONE of {expected} expected, {failed} FAILED, {stuck} STUCK")]
    Sagas {
        /// SETTLE_SALE or CLAWBACK_SALE.
        kind: String,
        /// How many there should be.
        expected: u64,
        /// DONE.
        done: i64,
        /// FAILED.
        failed: i64,
        /// STUCK.
        stuck: i64,
    },
    /// Sales without a settle time once every saga finished.
    #[error("{count} sales did not settle (the first: {external_id}, {state})")]
    NotSettled {
        /// How many.
        count: usize,
        /// The first one's external id.
        external_id: String,
        /// Its state.
        state: String,
    },
    /// A sending task panicked or was cancelled.
    #[error("task: {0}")]
    Task(String),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Runs the benchmark (see the module docs) and reports what it measured.
pub async fn run(options: BenchOptions) -> Result<Report, BenchError> {
    let started = Instant::now();
    let bin_dir = procs::binaries_dir()?;
    let logs = tempfile::Builder::new()
        .prefix("accrue-bench-")
        .tempdir()
        .map_err(|e| BenchError::Io("creating the log directory".into(), e))?;
    let (server, admin_url, database) = match &options.database_url {
        Some(url) => {
            pg::check_given(url).await?;
            (None, url.clone(), format!("given server {}", pg::redact(url)))
        }
        None => {
            let server = ThrowawayPostgres::start_with(Durability::Full).await?;
            let url = server.admin_url();
            let what = format!(
                "throwaway PostgreSQL on port {} (fsync, synchronous_commit, full_page_writes on)",
                server.port()
            );
            (Some(server), url, what)
        }
    };
    eprintln!(
        "bench: {} sales (N), seed {}, latency {} sales/s for {} s after a {} s warm-up, baseline {} naive / {} batched sales, {}{}{}",
        options.sales,
        options.seed,
        options.rate,
        options.latency_seconds,
        options.latency_warmup_seconds,
        options.baseline_naive_sales,
        options.baseline_batched_sales,
        database,
        if options.skip_scaling { ", no scaling runs" } else { "" },
        if options.skip_latency { ", no latency run" } else { "" },
    );
    let stage = run::Stage {
        bin_dir,
        admin_url,
        logs: logs.path().to_path_buf(),
        secret: dev_secret(),
        seed: options.seed,
        mode: options.progress,
        stall_timeout: options.stall_timeout,
        simulate: options.simulate,
    };
    let outcome = measure(&stage, &options).await;
    let stopped = match server {
        Some(server) => server.stop().await,
        None => Ok(()),
    };
    let measured = match outcome {
        Ok(measured) => measured,
        Err(error) => {
            eprintln!("bench: service logs kept in {}", logs.keep().display());
            return Err(error);
        }
    };
    stopped?;
    if std::env::var_os(procs::SERVICES_LOG).is_some() {
        eprintln!("bench: service logs ({} set) kept in {}", procs::SERVICES_LOG, logs.keep().display());
    }
    Ok(Report::new(&options, database, measured, started.elapsed()))
}

/// Everything one invocation measured.
pub struct Measured {
    /// Throughput runs in size order.
    pub runs: Vec<Throughput>,
    /// The baseline and the options it ran with.
    pub baseline: (Baseline, BaselineOptions),
    /// The latency run, unless skipped.
    pub latency: Option<Latency>,
}

async fn measure(stage: &run::Stage, options: &BenchOptions) -> Result<Measured, BenchError> {
    let plan = workload::plan(options.seed);
    let n = options.sales.max(1);
    let mut sizes: Vec<u64> =
        if options.skip_scaling { vec![n] } else { vec![(n / 10).max(1), n, n.saturating_mul(5)] };
    // Below 10 sales N/10 is N itself: one run of it is enough.
    sizes.dedup();
    let mut runs = Vec::with_capacity(sizes.len());
    let mut baseline = None;
    for size in sizes {
        eprintln!("bench: throughput run of {size} sales");
        let measured = stage.throughput(&plan, size).await?;
        eprintln!(
            "bench: {size} sales settled in {:.1} s: {:.0} sales/s, {:.0} ledger lines/s ({:.2} lines/sale)",
            measured.seconds, measured.settled_per_second, measured.ledger_lines_per_second, measured.lines_per_sale
        );
        let lines_per_sale = measured.lines_per_sale.round().max(1.0) as u32;
        runs.push(measured);
        if baseline.is_none() {
            baseline = Some(measure_baseline(stage, options, lines_per_sale).await?);
        }
    }
    let latency = if options.skip_latency {
        None
    } else {
        eprintln!(
            "bench: latency run, {} sales/s for {} s after a {} s warm-up (open loop)",
            options.rate, options.latency_seconds, options.latency_warmup_seconds
        );
        Some(stage.latency(&plan, options.rate, options.latency_seconds, options.latency_warmup_seconds).await?)
    };
    let baseline = baseline.ok_or_else(|| BenchError::Setup("no throughput run to size the baseline".into()))?;
    Ok(Measured { runs, baseline, latency })
}

/// The baseline on a database of its own, dropped afterwards.
async fn measure_baseline(
    stage: &run::Stage,
    options: &BenchOptions,
    lines_per_sale: u32,
) -> Result<(Baseline, BaselineOptions), BenchError> {
    let baseline_options = BaselineOptions {
        lines_per_sale,
        naive_sales: options.baseline_naive_sales,
        batched_sales: options.baseline_batched_sales,
    };
    eprintln!(
        "bench: baseline, {} lines per sale: {} sales 1 tx each from {} connections, {} sales {} per tx from {}",
        lines_per_sale,
        baseline_options.naive_sales,
        baseline::NAIVE_CONNECTIONS,
        baseline_options.batched_sales,
        baseline::BATCH_SALES,
        baseline::BATCHED_CONNECTIONS
    );
    let name = format!("accrue_bench_baseline_{}", std::process::id());
    pg::drop_database(&stage.admin_url, &name).await?;
    pg::ensure_database(&stage.admin_url, &name).await?;
    let measured = baseline::measure(&pg::with_database(&stage.admin_url, &name), baseline_options).await;
    let dropped = pg::drop_database(&stage.admin_url, &name).await;
    let measured = measured?;
    dropped?;
    eprintln!(
        "bench: baseline naive {:.0} sales/s, batched {:.0} sales/s",
        measured.naive_per_second, measured.batched_per_second
    );
    Ok((measured, baseline_options))
}
