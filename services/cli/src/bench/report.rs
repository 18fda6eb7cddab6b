//! What `accrue bench` prints: a table for a reader, and (with `--json`) one
//! JSON object whose keys a script can rely on, with the targets
//! each marked met or not. Every ratio is computed here, from the measured
//! runs, so the table and the JSON cannot disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::baseline::{self, BaselineOptions};
use super::latency::{Latency, Percentiles};
use super::run::{CpuPerSale, Throughput};
use super::{BenchOptions, Measured};

/// Accrue's settled/s at N over the naive baseline's: at least this.
pub const TARGET_RATIO_NAIVE: f64 = 1.5;
/// Accrue's settled/s at N over the batched baseline's: at least this.
pub const TARGET_RATIO_BATCHED: f64 = 0.25;
/// p99 record → settled at the offered load: below this, in ms.
pub const TARGET_P99_MS: f64 = 100.0;
/// Settled/s at 5N over settled/s at N: at least this (within 15 %).
pub const TARGET_SCALING: f64 = 0.85;
/// Total peak RSS at 5N over at N: at most this (within 20 %).
pub const TARGET_RSS_GROWTH: f64 = 1.20;

/// One of the acceptance targets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Target {
    /// What it asks, in words.
    pub goal: String,
    /// The measured value (`None`: not measured in this invocation).
    pub value: Option<f64>,
    /// Whether the value meets the goal (false when not measured).
    pub met: bool,
}

impl Target {
    fn new(goal: &str, value: Option<f64>, meets: impl Fn(f64) -> bool) -> Target {
        Target { goal: goal.to_string(), value, met: value.is_some_and(meets) }
    }
}

/// The baseline as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Ledger lines written per sale.
    pub lines_per_sale: u32,
    /// Sales of the naive shape.
    pub naive_sales: u64,
    /// Its connections.
    pub naive_connections: u32,
    /// Sales of the batched shape.
    pub batched_sales: u64,
    /// Its connections.
    pub batched_connections: u32,
    /// Its sales per transaction.
    pub batch_sales: u64,
}

/// Everything `accrue bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// N.
    pub sales: u64,
    /// Seed of the workload.
    pub seed: u64,
    /// The database server.
    pub database: String,
    /// CPUs this machine offers (services, Postgres and the client share them).
    pub cpus: usize,
    /// Settled sales per second at N, first sale sent → last settled.
    pub settled_per_second: f64,
    /// Ledger lines per second at N over the same span.
    pub ledger_lines_per_second: f64,
    /// Ledger lines per sale at N.
    pub lines_per_sale: f64,
    /// Naive baseline, sales per second.
    pub baseline_naive_per_second: f64,
    /// Batched baseline, sales per second.
    pub baseline_batched_per_second: f64,
    /// `settled_per_second / baseline_naive_per_second`.
    pub ratio_naive: f64,
    /// `settled_per_second / baseline_batched_per_second`.
    pub ratio_batched: f64,
    /// Refunds per second at N, first refund sent → last clawback saga done.
    pub clawbacks_per_second: f64,
    /// CPU time per settled sale at N (absent without a run at N).
    pub cpu_ms_per_sale: Option<CpuPerSale>,
    /// Record → settled at the offered load (absent when skipped).
    pub latency_ms: Option<Percentiles>,
    /// The latency run in full.
    pub latency: Option<Latency>,
    /// Peak RSS per service and `total` at N and 5N, by size.
    pub peak_rss_bytes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Settled sales per second by size.
    pub scaling: BTreeMap<String, f64>,
    /// The baseline as it ran.
    pub baseline: BaselineReport,
    /// Every throughput run, in size order.
    pub runs: Vec<Throughput>,
    /// The acceptance targets.
    pub targets: BTreeMap<String, Target>,
    /// Seconds the whole benchmark took.
    pub elapsed_seconds: f64,
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 { numerator / denominator } else { 0.0 }
}

impl Report {
    /// The report of `measured` under `options`.
    pub fn new(options: &BenchOptions, database: String, measured: Measured, elapsed: Duration) -> Report {
        let Measured { runs, baseline: (base, base_options), latency } = measured;
        let n = options.sales.max(1);
        let at = |size: u64| runs.iter().find(|run| run.sales == size);
        let main = at(n);
        let settled = main.map_or(0.0, |run| run.settled_per_second);
        let five = at(n.saturating_mul(5));
        let mut peak_rss_bytes = BTreeMap::new();
        for run in [main, five].into_iter().flatten() {
            peak_rss_bytes.insert(run.sales.to_string(), run.peak_rss_bytes.clone());
        }
        let scaling = runs.iter().map(|run| (run.sales.to_string(), run.settled_per_second)).collect();
        let total = |run: Option<&Throughput>| run.and_then(|r| r.peak_rss_bytes.get("total")).map(|&b| b as f64);
        let scaling_ratio = five.zip(main).map(|(five, n)| ratio(five.settled_per_second, n.settled_per_second));
        let rss_ratio = total(five).zip(total(main)).map(|(five, n)| ratio(five, n));
        let (ratio_naive, ratio_batched) =
            (ratio(settled, base.naive_per_second), ratio(settled, base.batched_per_second));
        let p99 = latency.as_ref().filter(|l| l.unsettled == 0).map(|l| l.latency_ms.p99);
        let targets = targets(ratio_naive, ratio_batched, p99, scaling_ratio, rss_ratio);
        Report {
            sales: n,
            seed: options.seed,
            database,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
            settled_per_second: settled,
            ledger_lines_per_second: main.map_or(0.0, |run| run.ledger_lines_per_second),
            lines_per_sale: main.map_or(0.0, |run| run.lines_per_sale),
            baseline_naive_per_second: base.naive_per_second,
            baseline_batched_per_second: base.batched_per_second,
            ratio_naive,
            ratio_batched,
            clawbacks_per_second: main.map_or(0.0, |run| run.clawbacks_per_second),
            cpu_ms_per_sale: main.map(|run| run.cpu_ms_per_sale.clone()),
            latency_ms: latency.as_ref().map(|l| l.latency_ms),
            latency,
            peak_rss_bytes,
            scaling,
            baseline: baseline_report(base_options),
            runs,
            targets,
            elapsed_seconds: elapsed.as_secs_f64(),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    fn run(&self, size: u64) -> Option<&Throughput> {
        self.runs.iter().find(|run| run.sales == size)
    }
}

fn baseline_report(options: BaselineOptions) -> BaselineReport {
    BaselineReport {
        lines_per_sale: options.lines_per_sale,
        naive_sales: options.naive_sales,
        naive_connections: baseline::NAIVE_CONNECTIONS,
        batched_sales: options.batched_sales,
        batched_connections: baseline::BATCHED_CONNECTIONS,
        batch_sales: baseline::BATCH_SALES,
    }
}

fn targets(
    ratio_naive: f64,
    ratio_batched: f64,
    p99: Option<f64>,
    scaling: Option<f64>,
    rss: Option<f64>,
) -> BTreeMap<String, Target> {
    [
        (
            "ratio_naive",
            Target::new("settled/s at N ≥ 1.5 × the naive baseline", Some(ratio_naive), |v| v >= TARGET_RATIO_NAIVE),
        ),
        (
            "ratio_batched",
            Target::new("settled/s at N ≥ 0.25 × the batched baseline", Some(ratio_batched), |v| {
                v >= TARGET_RATIO_BATCHED
            }),
        ),
        (
            "latency_p99_ms",
            Target::new("p99 record → settled < 100 ms, every sale settled", p99, |v| v < TARGET_P99_MS),
        ),
        ("scaling_5n", Target::new("settled/s at 5N within 15 % of N (5N/N ≥ 0.85)", scaling, |v| v >= TARGET_SCALING)),
        ("rss_5n", Target::new("peak RSS at 5N within 20 % of N (5N/N ≤ 1.20)", rss, |v| v <= TARGET_RSS_GROWTH)),
    ]
    .into_iter()
    .map(|(key, target)| (key.to_string(), target))
    .collect()
}

/// "1.2→3.4": the load average before and after.
fn load(load: [Option<f64>; 2]) -> String {
    let show = |value: Option<f64>| value.map_or_else(|| "?".to_string(), |v| format!("{v:.1}"));
    format!("{}→{}", show(load[0]), show(load[1]))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "accrue bench: N = {} sales, seed {}, {} CPUs shared by the services, Postgres and the client; {}",
            self.sales, self.seed, self.cpus, self.database
        )?;
        writeln!(f, "\nThroughput (first sale sent → last sale settled; RecordSales, 2 streams)")?;
        writeln!(
            f,
            "  {:>9} {:>11} {:>11} {:>15} {:>10} {:>10} {:>12} {:>12}",
            "sales", "settled/s", "span s", "ledger lines/s", "lines/sale", "record s", "clawbacks/s", "load 1m"
        )?;
        for run in &self.runs {
            writeln!(
                f,
                "  {:>9} {:>11.0} {:>11.1} {:>15.0} {:>10.2} {:>10.1} {:>12.0} {:>12}",
                run.sales,
                run.settled_per_second,
                run.seconds,
                run.ledger_lines_per_second,
                run.lines_per_sale,
                run.record_seconds,
                run.clawbacks_per_second,
                load(run.load_average)
            )?;
        }
        writeln!(
            f,
            "\nCPU per settled sale over the same span, ms (user + system from /proc; Postgres: the run's backends)"
        )?;
        writeln!(
            f,
            "  {:>9} {:>9} {:>9} {:>9} {:>12} {:>11} {:>10} {:>8} {:>8}",
            "sales", "total", "postgres", "services", "attribution", "commission", "hierarchy", "ledger", "payouts"
        )?;
        for run in &self.runs {
            let cpu = &run.cpu_ms_per_sale;
            let of = |schema: &str| cpu.services.get(schema).copied().unwrap_or(0.0);
            writeln!(
                f,
                "  {:>9} {:>9.3} {:>9} {:>9.3} {:>12.3} {:>11.3} {:>10.3} {:>8.3} {:>8.3}",
                run.sales,
                cpu.total,
                cpu.postgres.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}")),
                of("total"),
                of("attribution"),
                of("commission"),
                of("hierarchy"),
                of("ledger"),
                of("payouts")
            )?;
        }
        for (run, simulation) in self.runs.iter().filter_map(|run| Some((run, run.simulation.as_ref()?))) {
            writeln!(
                f,
                "\nSimulateProgram over the {} sales (issue 16 item 2; target 20,000 sales in < 10 s)",
                run.sales
            )?;
            for (label, pass) in [("live rules", &simulation.live), ("draft", &simulation.draft)] {
                writeln!(
                    f,
                    "  {:<10} {:>9} sales in {:>7.2} s = {:>9.0} sales/s, {} changed, {} failed, {} page(s)",
                    label, pass.sales, pass.seconds, pass.sales_per_second, pass.changed, pass.failed, pass.pages
                )?;
            }
        }
        let b = &self.baseline;
        writeln!(f, "\nPostgres baseline (same server, {} ledger lines per sale)", b.lines_per_sale)?;
        writeln!(
            f,
            "  naive   (1 sale/tx, {} connections, {} sales):   {:>9.0} sales/s   Accrue at N ÷ naive   = {:.2}",
            b.naive_connections, b.naive_sales, self.baseline_naive_per_second, self.ratio_naive
        )?;
        writeln!(
            f,
            "  batched ({} sales/tx, {} connections, {} sales): {:>9.0} sales/s   Accrue at N ÷ batched = {:.2}",
            b.batch_sales, b.batched_connections, b.batched_sales, self.baseline_batched_per_second, self.ratio_batched
        )?;
        match &self.latency {
            Some(l) => {
                writeln!(
                    f,
                    "\nLatency, record → settled, {} sales/s offered for {} s after a {} s warm-up (open loop)",
                    l.rate, l.seconds, l.warmup_seconds
                )?;
                let p = &l.latency_ms;
                writeln!(
                    f,
                    "  p50 {:.1} ms   p95 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} sales, {} not settled; client send lag max {:.1} ms; load 1m {})",
                    p.p50,
                    p.p95,
                    p.p99,
                    p.max,
                    l.sales,
                    l.unsettled,
                    l.max_send_lag_ms,
                    load(l.load_average)
                )?;
                if l.warmup_sales > 0 {
                    let w = &l.warmup_latency_ms;
                    writeln!(
                        f,
                        "  warm-up (not in the figures above): p50 {:.1} ms   p95 {:.1} ms   p99 {:.1} ms   max {:.1} ms   ({} sales)",
                        w.p50, w.p95, w.p99, w.max, l.warmup_sales
                    )?;
                }
            }
            None => writeln!(f, "\nLatency: skipped")?,
        }
        let (n, five) = (self.run(self.sales), self.run(self.sales.saturating_mul(5)));
        if let Some(n) = n {
            writeln!(f, "\nPeak RSS per service process (VmHWM after settlement)")?;
            let five_header = five.map_or_else(|| "at 5N".to_string(), |run| format!("at {}", run.sales));
            writeln!(f, "  {:<12} {:>14} {:>14} {:>8}", "service", format!("at {}", n.sales), five_header, "5N/N")?;
            for (service, &bytes) in &n.peak_rss_bytes {
                let at_five = five.and_then(|run| run.peak_rss_bytes.get(service)).copied();
                let growth =
                    at_five.map_or_else(|| "-".to_string(), |b| format!("{:.2}", ratio(b as f64, bytes as f64)));
                let five_text = at_five.map_or_else(|| "-".to_string(), mib);
                writeln!(f, "  {:<12} {:>14} {:>14} {:>8}", service, mib(bytes), five_text, growth)?;
            }
        }
        writeln!(f, "\nTargets (issue 15)")?;
        for (key, target) in &self.targets {
            let value = target.value.map_or_else(|| "not measured".to_string(), |v| format!("{v:.2}"));
            let verdict = if target.met { "met" } else { "NOT met" };
            writeln!(f, "  {:<15} {:<52} {:>12}  {}", key, target.goal, value, verdict)?;
        }
        write!(f, "\nelapsed {:.1} s", self.elapsed_seconds)
    }
}
