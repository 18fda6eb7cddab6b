//! `accrue chaos`: the crash campaign (issue 11 item 4).
//!
//! It starts its own throwaway Postgres (synchronous commits on, see
//! [`Durability::ProcessCrashSafe`]) and the five services as separate
//! processes from the binaries next to `accrue`, then replays a prefix of the
//! Online Retail data set twice, each time into a fresh database:
//!
//! 1. a clean run, left alone;
//! 2. a chaos run, during which [`monkey`] SIGKILLs random services at random
//!    moments (most of them attribution or the ledger while sagas are in
//!    flight), starts each again after a short pause, and restarts Postgres
//!    in immediate mode; the replay retries what a kill interrupts
//!    ([`crate::retry`]).
//!
//! Then it reads both databases ([`snapshot`]) and compares them by the
//! replay's stable keys ([`compare`]): sales and their states, sagas,
//! refunds, every ledger entry and the Σ per partner and kind, payouts and
//! their statuses.
//! Anything lost, duplicated, stuck or different fails the campaign.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pg::{Durability, PgError, ThrowawayPostgres, ensure_database};
use crate::procs::{self, ProcsError, Settings};
use crate::replay::{ProgressMode, ReplayError, ReplayOptions, replay};
use crate::stack::{dev_secret, migrate_all};

pub mod compare;
pub mod monkey;
pub mod snapshot;

pub use compare::{Comparison, compare};
pub use monkey::Kill;
pub use snapshot::{Counts, Snapshot};

/// How long the sagas may take to finish after the chaos run's replay.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// The shortest pause between two kills.
const MIN_GAP: Duration = Duration::from_millis(500);
/// Pool size of each service process (five share one throwaway server).
const MAX_CONNECTIONS: &str = "8";
/// Sagas attribution claims at a time (the service's default is 500): a
/// short prefix then settles in several batches rather than one or two,
/// which keeps sagas in flight long enough to aim kills at, and gives each
/// kill more claim and commit boundaries to land between. Both runs use it.
const SAGA_BATCH_SIZE: &str = "100";

/// The services' settings in both runs ([`MAX_CONNECTIONS`], [`SAGA_BATCH_SIZE`]).
fn settings() -> Settings {
    Settings {
        env: vec![
            ("ACCRUE_DB_MAX_CONNECTIONS".to_string(), MAX_CONNECTIONS.to_string()),
            ("ACCRUE_SAGA_BATCH_SIZE".to_string(), SAGA_BATCH_SIZE.to_string()),
        ],
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Directory holding `online_retail.csv.gz`.
    pub data_dir: PathBuf,
    /// Invoices of the prefix replayed.
    pub limit_invoices: usize,
    /// Services killed during the chaos run.
    pub kills: usize,
    /// Immediate Postgres restarts during the chaos run.
    pub postgres_restarts: usize,
    /// Seed of the chaos (targets, moments, pauses).
    pub seed: u64,
}

/// Why a campaign could not run to its comparison.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The service processes failed (missing binaries, not SERVING in time).
    #[error(transparent)]
    Procs(#[from] ProcsError),
    /// The throwaway Postgres failed.
    #[error("postgres: {0}")]
    Postgres(#[source] PgError),
    /// A file or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A SQL read failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being read.
        what: String,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// Setting a run up failed (roles, migrations, tokens).
    #[error("setup: {0}")]
    Setup(String),
    /// The saga backlog did not move after a restart.
    #[error("no saga finished within {0:?} of a restart ({1} unfinished)")]
    NoProgress(Duration, i64),
    /// A replay failed despite its retries.
    #[error("{run} replay: {source}")]
    Replay {
        /// `clean` or `chaos`.
        run: &'static str,
        /// Why.
        #[source]
        source: ReplayError,
    },
}

/// What a campaign found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seed of the chaos.
    pub seed: u64,
    /// Invoices replayed.
    pub limit_invoices: usize,
    /// Sales recorded by each run's replay.
    pub sales_recorded: u64,
    /// The clean run's counts.
    pub clean: Counts,
    /// The chaos run's counts.
    pub chaos: Counts,
    /// Seconds the clean replay took.
    pub clean_seconds: f64,
    /// Seconds the chaos replay took.
    pub chaos_seconds: f64,
    /// Each kill and Postgres restart, with its recovery.
    pub kills: Vec<Kill>,
    /// The differences (none when the campaign passes).
    pub comparison: Comparison,
    /// Seconds the whole campaign took.
    pub elapsed_seconds: f64,
    /// Where the service logs were kept (only when the campaign fails).
    pub logs: Option<String>,
}

impl Report {
    /// Whether the chaos run matches the clean one.
    pub fn ok(&self) -> bool {
        self.comparison.ok()
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// A run's result.
struct Run {
    snapshot: Snapshot,
    seconds: f64,
    sales_recorded: u64,
    kills: Vec<Kill>,
}

/// Runs the campaign (see the module docs). Errors when it could not get
/// as far as the comparison; a comparison that finds differences is a
/// report whose [`Report::ok`] is false.
pub async fn run(options: ChaosOptions) -> Result<Report, ChaosError> {
    let started = Instant::now();
    let bin_dir = procs::binaries_dir()?;
    let logs = tempfile::Builder::new()
        .prefix("accrue-chaos-")
        .tempdir()
        .map_err(|e| ChaosError::Io("creating the log directory".into(), e))?;
    let mut postgres =
        ThrowawayPostgres::start_with(Durability::ProcessCrashSafe).await.map_err(ChaosError::Postgres)?;
    eprintln!("chaos: throwaway Postgres on port {} ({})", postgres.port(), postgres.dir().display());
    let campaign = Campaign { options: &options, bin_dir, logs: logs.path().to_path_buf(), secret: dev_secret() };
    let outcome = campaign.run(&mut postgres).await;
    let stopped = postgres.stop().await;
    let keep = !matches!(&outcome, Ok((_, _, comparison)) if comparison.ok());
    let logs = keep.then(|| logs.keep().display().to_string());
    let (clean, chaos, comparison) = match outcome {
        Ok(result) => result,
        Err(error) => {
            eprintln!("chaos: service logs kept in {}", logs.unwrap_or_default());
            return Err(error);
        }
    };
    stopped.map_err(ChaosError::Postgres)?;
    Ok(Report {
        seed: options.seed,
        limit_invoices: options.limit_invoices,
        sales_recorded: chaos.sales_recorded,
        clean: clean.snapshot.counts(),
        chaos: chaos.snapshot.counts(),
        clean_seconds: clean.seconds,
        chaos_seconds: chaos.seconds,
        kills: chaos.kills,
        comparison,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        logs,
    })
}

/// What both runs share.
struct Campaign<'a> {
    options: &'a ChaosOptions,
    bin_dir: PathBuf,
    logs: PathBuf,
    secret: String,
}

impl Campaign<'_> {
    async fn run(&self, postgres: &mut ThrowawayPostgres) -> Result<(Run, Run, Comparison), ChaosError> {
        let clean = self.run_once(postgres, "clean", None).await?;
        eprintln!("chaos: clean run done in {:.1} s", clean.seconds);
        let chaos = self.run_once(postgres, "chaos", Some(clean.seconds)).await?;
        eprintln!("chaos: chaos run done in {:.1} s", chaos.seconds);
        let comparison = compare(&clean.snapshot, &chaos.snapshot);
        Ok((clean, chaos, comparison))
    }

    /// One replay of the prefix into a fresh database `accrue_<label>`;
    /// with `chaos` (the clean run's seconds), under fire.
    async fn run_once(
        &self,
        postgres: &mut ThrowawayPostgres,
        label: &'static str,
        chaos: Option<f64>,
    ) -> Result<Run, ChaosError> {
        let database = format!("accrue_{label}");
        ensure_database(&postgres.admin_url(), &database).await.map_err(ChaosError::Postgres)?;
        let url = postgres.database_url(&database);
        let roles = migrate_all(&url).await.map_err(|e| ChaosError::Setup(format!("{e:#}")))?;
        let mut services =
            procs::Services::start(&self.bin_dir, &roles, &self.secret, &settings(), &self.logs, label).await?;
        let endpoints = services.endpoints.clone();
        let credential = procs::admin_credential(&self.secret, "accrue-chaos")?;
        let mut options = ReplayOptions::new(self.options.data_dir.clone());
        options.limit_invoices = Some(self.options.limit_invoices);
        options.config_out = self.logs.join(format!("{label}-replay-config.json"));
        options.payouts_out = self.logs.join(format!("{label}-replay-payouts.csv"));
        options.progress = ProgressMode::Quiet;
        eprintln!("chaos: {label} run: replaying {} invoices", self.options.limit_invoices);

        let started = Instant::now();
        let replay_done = CancellationToken::new();
        let replaying = async {
            let result = replay(options, &endpoints, &credential).await;
            replay_done.cancel();
            result.map_err(|source| ChaosError::Replay { run: label, source })
        };
        let (summary, kills) = match chaos {
            None => (replaying.await?, Vec::new()),
            Some(clean_seconds) => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy(&url)
                    .map_err(|source| ChaosError::Sql { what: "the chaos database".into(), source })?;
                // Every event spread over about the clean run's length: the
                // kills themselves make the chaos run longer.
                let events = self.options.kills + self.options.postgres_restarts;
                let gap = Duration::from_secs_f64(clean_seconds / (events as f64 + 1.0)).max(MIN_GAP);
                let monkey = monkey::Monkey {
                    services: &mut services,
                    postgres,
                    pool,
                    rng: ChaCha8Rng::seed_from_u64(self.options.seed),
                    mean_gap: gap,
                    replay_done: replay_done.clone(),
                    started,
                    seen_sagas: false,
                };
                let unleashed = monkey.run(self.options.kills, self.options.postgres_restarts);
                tokio::try_join!(replaying, unleashed)?
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        wait_settled(&url).await?;
        let snapshot = Snapshot::read(&url).await?;
        services.stop().await;
        Ok(Run { snapshot, seconds, sales_recorded: summary.sales_recorded, kills })
    }
}

/// Waits until no saga of database `url` is running or unwinding, for at
/// most [`SETTLE_LIMIT`]; those left are reported as stuck by the comparison.
async fn wait_settled(url: &str) -> Result<(), ChaosError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|source| ChaosError::Sql { what: "connecting to wait for the sagas".into(), source })?;
    let started = Instant::now();
    loop {
        let unfinished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attribution.sagas WHERE state IN ('running', 'unwinding')")
                .fetch_one(&mut conn)
                .await
                .map_err(|source| ChaosError::Sql { what: "counting unfinished sagas".into(), source })?;
        if unfinished == 0 || started.elapsed() > SETTLE_LIMIT {
            let _ = conn.close().await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() { "PASSED" } else { "FAILED" };
        writeln!(f, "Crash campaign {verdict} (seed {}, {} invoices)", self.seed, self.limit_invoices)?;
        writeln!(
            f,
            "  replay: clean {:.1} s, under chaos {:.1} s ({} sales recorded)",
            self.clean_seconds, self.chaos_seconds, self.sales_recorded
        )?;
        writeln!(f, "  kills")?;
        for kill in &self.kills {
            let backlog = kill.backlog_seconds.map_or_else(|| "-".to_string(), |s| format!("{s:.2} s"));
            writeln!(
                f,
                "    #{:<3} {:<12} at {:>6.1} s  {:<24} down {:>5.2} s  SERVING after {:>5.2} s  backlog moving after {}",
                kill.index, kill.target, kill.at_seconds, kill.moment, kill.down_seconds, kill.serving_seconds, backlog
            )?;
        }
        let serving: Vec<f64> = self.kills.iter().map(|k| k.serving_seconds).collect();
        let backlog: Vec<f64> = self.kills.iter().filter_map(|k| k.backlog_seconds).collect();
        writeln!(
            f,
            "  recovery: SERVING max {:.2} s, backlog moving max {:.2} s ({} of {} restarts had sagas in flight)",
            serving.iter().copied().fold(0.0, f64::max),
            backlog.iter().copied().fold(0.0, f64::max),
            backlog.len(),
            self.kills.len()
        )?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "", "clean", "chaos")?;
        let states: std::collections::BTreeSet<&String> =
            self.clean.sales_by_state.keys().chain(self.chaos.sales_by_state.keys()).collect();
        for state in states {
            let count = |c: &Counts| c.sales_by_state.get(state).copied().unwrap_or_default();
            writeln!(f, "  {:<22} {:>16} {:>16}", format!("sales {state}"), count(&self.clean), count(&self.chaos))?;
        }
        let states: std::collections::BTreeSet<&String> =
            self.clean.sagas_by_state.keys().chain(self.chaos.sagas_by_state.keys()).collect();
        for state in states {
            let count = |c: &Counts| c.sagas_by_state.get(state).copied().unwrap_or_default();
            writeln!(f, "  {:<22} {:>16} {:>16}", format!("sagas {state}"), count(&self.clean), count(&self.chaos))?;
        }
        writeln!(f, "  {:<22} {:>16} {:>16}", "refunds", self.clean.refunds, self.chaos.refunds)?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "ledger entries", self.clean.entries, self.chaos.entries)?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "Σ credits (GBP)", self.clean.entries_credit, self.chaos.entries_credit)?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "Σ debits (GBP)", self.clean.entries_debit, self.chaos.entries_debit)?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "payouts", self.clean.payouts, self.chaos.payouts)?;
        writeln!(f, "  {:<22} {:>16} {:>16}", "Σ payouts (GBP)", self.clean.payouts_amount, self.chaos.payouts_amount)?;
        let statuses: std::collections::BTreeSet<&String> =
            self.clean.payouts_by_status.keys().chain(self.chaos.payouts_by_status.keys()).collect();
        for status in statuses {
            let count = |c: &Counts| c.payouts_by_status.get(status).copied().unwrap_or_default();
            writeln!(f, "  {:<22} {:>16} {:>16}", format!("payouts {status}"), count(&self.clean), count(&self.chaos))?;
        }
        let c = &self.comparison;
        writeln!(
            f,
            "  lost {}, duplicated {}, stuck {}, different {} (entries compared one by one and as Σ over {} partner × kind groups)",
            c.lost.len(),
            c.duplicated.len(),
            c.stuck.len(),
            c.differing.len(),
            c.partner_kind_groups
        )?;
        for (what, items) in
            [("lost", &c.lost), ("duplicated", &c.duplicated), ("stuck", &c.stuck), ("different", &c.differing)]
        {
            for item in items.iter().take(20) {
                writeln!(f, "    {what}: {item}")?;
            }
            if items.len() > 20 {
                writeln!(f, "    {what}: … {} more", items.len() - 20)?;
            }
        }
        write!(f, "  elapsed {:.1} s", self.elapsed_seconds)?;
        match &self.logs {
            Some(logs) => write!(f, "; service logs kept in {logs}"),
            None => Ok(()),
        }
    }
}
