//! The latency run of `accrue bench`: record → settled at a fixed offered
//! load, open loop. On a fresh database and fresh services (as a throughput
//! run, [`Stage::deploy`]), sale `i` of `rate × seconds` is sent with its own
//! unary RecordSale at its scheduled instant `start + i / rate`, from a task
//! of its own, whatever became of the earlier ones: a slow answer delays no
//! later sale (no coordinated omission). Its latency is its `settle_time`
//! (the server's clock, read through ListSales once every saga finished)
//! minus its scheduled instant on the same machine's wall clock, so time a
//! sale spent waiting to be sent counts too. How late the client itself sent
//! (its scheduling lag) is reported beside it.
//!
//! The load is offered for a warm-up first (`warmup_seconds`, at the same
//! rate, without a pause): freshly started services and a fresh database
//! open their pool connections, fill each backend's catalog and plan caches
//! and grow their first batches then (on this machine the slowest batches
//! of a 15-second run were all in its first 1.3 s). The warm-up's sales are
//! sent, settled and checked like every other sale; only their percentiles
//! are kept apart (`warmup_latency_ms`), as latency benchmarks keep a
//! calibration period apart (wrk2), so that `latency_ms` is the state the
//! offered load leads to.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BenchError;
use super::run::{Deployed, SettleTimes, Stage, check_sagas, read_settle_times, sale_request, seconds_between};
use super::workload::{self, Traffic};
use crate::procs;
use crate::replay::config::Plan;
use crate::replay::progress::Phase;
use crate::replay::run::{SETTLE_SALE, rpc, timestamp, wait_for_sagas};

/// What the latency run measured, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Offered load, sales per second.
    pub rate: u64,
    /// How long it was offered after the warm-up (the measured window).
    pub seconds: u64,
    /// How long it was offered before, as a warm-up (see the module docs).
    pub warmup_seconds: u64,
    /// Sales sent in the measured window.
    pub sales: u64,
    /// Sales sent in the warm-up.
    pub warmup_sales: u64,
    /// Sales that never settled, warm-up included (each counted, none in
    /// the percentiles).
    pub unsettled: u64,
    /// Percentiles of record → settled over the measured window's settled sales.
    pub latency_ms: Percentiles,
    /// The same over the warm-up's sales.
    pub warmup_latency_ms: Percentiles,
    /// The latest any sale was sent after its scheduled instant.
    pub max_send_lag_ms: f64,
    /// The machine's 1-minute load average when the first sale was sent and
    /// when the last one had settled.
    pub load_average: [Option<f64>; 2],
}

/// p50, p95, p99 and max (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `values` (sorted here); zeros when empty.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Percentiles { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99), max: values[values.len() - 1] }
    }
}

/// What the sending found: when it started, each sale's spacing, the
/// worst send lag, and the settle times read afterwards.
struct Offered {
    started_at: DateTime<Utc>,
    interval: Duration,
    max_lag: Duration,
    settled: SettleTimes,
    load_average: [Option<f64>; 2],
}

impl Offered {
    /// Sale `index`'s scheduled instant.
    fn scheduled(&self, index: usize) -> DateTime<Utc> {
        scheduled(self.started_at, self.interval, index)
    }
}

fn scheduled(started_at: DateTime<Utc>, interval: Duration, index: usize) -> DateTime<Utc> {
    started_at + chrono::Duration::from_std(interval.mul_f64(index as f64)).unwrap_or_default()
}

impl Stage {
    /// The latency run: `rate` sales per second for `warmup_seconds`, then
    /// for `seconds` measured seconds (see the module docs).
    pub async fn latency(
        &self,
        plan: &Plan,
        rate: u64,
        seconds: u64,
        warmup_seconds: u64,
    ) -> Result<Latency, BenchError> {
        let sales = rate.saturating_mul(seconds).max(1);
        let warmup_sales = rate.saturating_mul(warmup_seconds);
        let traffic = workload::traffic(self.seed, warmup_sales.saturating_add(sales), plan.links.len());
        let name = format!("accrue_bench_latency_{}", std::process::id());
        let lead_time = Utc::now() - chrono::Duration::hours(1);
        let deployed = self.deploy(&name, plan, &traffic, lead_time).await?;
        let offered = self.offer(&deployed, &traffic, rate).await;
        let stopped = deployed.teardown().await;
        let offered = offered?;
        stopped?;
        let (mut warmup, mut measured) = (Vec::new(), Vec::new());
        for (index, sale) in traffic.sales.iter().enumerate() {
            let Some(time) = offered.settled.times.get(&sale.external_id) else { continue };
            let latency = seconds_between(offered.scheduled(index), *time) * 1000.0;
            if (index as u64) < warmup_sales { warmup.push(latency) } else { measured.push(latency) }
        }
        let sent = traffic.sales.len() as u64;
        Ok(Latency {
            rate,
            seconds,
            warmup_seconds,
            sales,
            warmup_sales,
            unsettled: sent.saturating_sub((warmup.len() + measured.len()) as u64),
            latency_ms: Percentiles::of(measured),
            warmup_latency_ms: Percentiles::of(warmup),
            max_send_lag_ms: offered.max_lag.as_secs_f64() * 1000.0,
            load_average: offered.load_average,
        })
    }

    /// Sends each sale of `traffic` at its instant, `rate` a second, each
    /// from its own task; waits for every saga and reads the settle times.
    async fn offer(&self, deployed: &Deployed, traffic: &Traffic, rate: u64) -> Result<Offered, BenchError> {
        let (clients, program_id) = (&deployed.clients, deployed.created.program_id.as_str());
        let sales = traffic.sales.len() as u64;
        let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let phase = Phase::start(self.mode, &format!("offering {rate}/s"), sales);
        let load_before = procs::load_average();
        let started_at = Utc::now();
        let started = tokio::time::Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        let mut max_lag = Duration::ZERO;
        for (index, sale) in traffic.sales.iter().enumerate() {
            let due = started + interval.mul_f64(index as f64);
            tokio::time::sleep_until(due).await;
            max_lag = max_lag.max(due.elapsed());
            // The sale happens when it is due: occurred_at is its scheduled instant.
            let at = scheduled(started_at, interval, index);
            let mut request = sale_request(program_id, at, sale);
            request.occurred_at = Some(timestamp(at));
            let mut client = clients.attribution.clone();
            calls.spawn(async move {
                let external_id = request.external_id.clone();
                client.record_sale(request).await.map(|_| ()).map_err(rpc(format!("RecordSale {external_id}")))
            });
            phase.set(index as u64 + 1);
            while let Some(done) = calls.try_join_next() {
                done.map_err(|e| BenchError::Task(e.to_string()))??;
            }
        }
        while let Some(done) = calls.join_next().await {
            done.map_err(|e| BenchError::Task(e.to_string()))??;
        }
        phase.finish(&format!("{sales} sales sent in {:.1} s", seconds_between(started_at, Utc::now())));
        wait_for_sagas(clients, program_id, SETTLE_SALE, sales, self.mode, self.stall_timeout).await?;
        let load_average = [load_before, procs::load_average()];
        check_sagas(clients, program_id, SETTLE_SALE, sales).await?;
        let settled = read_settle_times(clients, program_id, self.mode).await?;
        Ok(Offered { started_at, interval, max_lag, settled, load_average })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Percentiles::of(values), Percentiles { p50: 50.0, p95: 95.0, p99: 99.0, max: 100.0 });
        assert_eq!(Percentiles::of(vec![7.0]), Percentiles { p50: 7.0, p95: 7.0, p99: 7.0, max: 7.0 });
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }
}
