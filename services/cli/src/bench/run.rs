//! One measured run of `accrue bench`: a fresh database and fresh service
//! processes with their production defaults ([`Stage::deploy`]), the bench
//! program configured and every customer attributed (setup, not timed), then
//! the timed part ([`Stage::throughput`]):
//!
//! 1. every sale recorded at full speed through RecordSales streams
//!    ([`RECORD_STREAMS`] at once), from an instant taken on the client's
//!    wall clock just before the first one is sent;
//! 2. ListSagas polled until no SETTLE_SALE saga runs or unwinds (then none
//!    may have failed or be stuck);
//!
//! and beside the clock, the CPU time the services and the Postgres backends
//! serving the run's database used over the same span ([`CpuPerSale`]):
//! where the time went, per process;
//!
//! and only then, so that reading does not load the measured run: each
//! service's peak RSS; every sale's `settle_time` through ListSales (the
//! last one ends the timed span; a sale without one is an error); the ledger
//! lines through ListEntries; and last the refunds, timed on their own from
//! the first RecordRefund to the last clawback saga's update. Then the
//! services stop and the database is dropped ([`Deployed::teardown`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use accrue_proto::attribution::v1 as attribution;
use accrue_proto::ledger::v1 as ledger;
use accrue_proto::types::v1 as types;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::BenchError;
use super::workload::{self, SaleSpec, Traffic};
use crate::clients::Clients;
use crate::pg;
use crate::procs::{self, Services, Settings};
use crate::replay::config::Plan;
use crate::replay::progress::{Phase, ProgressMode};
use crate::replay::run::{
    CLAWBACK_SALE, Created, SETTLE_SALE, configure, count_sagas, gbp, record_refund_requests, record_sale_requests,
    rpc, timestamp, track_lead_requests, wait_for_sagas,
};
use crate::retry;
use crate::stack::migrate_all;

/// Concurrent RecordSales streams of the timed phase.
pub const RECORD_STREAMS: usize = 2;
/// Rows per ListSales / ListEntries / ListSagas page (the API's maximum).
const PAGE_SIZE: i32 = 1000;

/// What every run shares: where the binaries, the server and the logs are.
pub struct Stage {
    /// The directory of the service binaries.
    pub bin_dir: PathBuf,
    /// Admin URL of the server the run databases are made on.
    pub admin_url: String,
    /// Where the services log.
    pub logs: PathBuf,
    /// The services' token secret.
    pub secret: String,
    /// Seed of the workload.
    pub seed: u64,
    /// Progress output.
    pub mode: ProgressMode,
    /// Give up when no saga finishes for this long.
    pub stall_timeout: Duration,
    /// Also time SimulateProgram after the settlement ([`super::simulate`]).
    pub simulate: bool,
}

/// A run's database, services and configured program.
pub(crate) struct Deployed {
    database: String,
    admin_url: String,
    services: Services,
    /// Clients of the services.
    pub(crate) clients: Clients,
    /// The configured program.
    pub(crate) created: Created,
}

/// What a throughput run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Sales recorded and settled.
    pub sales: u64,
    /// Seconds from the first sale sent to the last sale settled.
    pub seconds: f64,
    /// Seconds until every RecordSales call was acknowledged.
    pub record_seconds: f64,
    /// The machine's 1-minute load average when the first sale was sent and
    /// when the last one had settled (beside `cpus`: what else competed).
    pub load_average: [Option<f64>; 2],
    /// `sales / seconds`.
    pub settled_per_second: f64,
    /// Ledger lines the settlement posted.
    pub ledger_lines: u64,
    /// `ledger_lines / seconds`.
    pub ledger_lines_per_second: f64,
    /// `ledger_lines / sales`.
    pub lines_per_sale: f64,
    /// Peak RSS of each service process and their `total`, in bytes.
    pub peak_rss_bytes: BTreeMap<String, u64>,
    /// CPU time per settled sale over the timed span.
    pub cpu_ms_per_sale: CpuPerSale,
    /// Partial refunds recorded after the settlement.
    pub refunds: u64,
    /// Seconds from the first refund sent to the last clawback saga done.
    pub clawback_seconds: f64,
    /// `refunds / clawback_seconds`.
    pub clawbacks_per_second: f64,
    /// SimulateProgram over the run's sales, when asked for (before the refunds).
    pub simulation: Option<super::simulate::Simulation>,
}

/// CPU time per settled sale, in milliseconds, over the throughput run's
/// timed span (first sale sent → no saga left running): user + system time
/// from `/proc` (Linux), of each service process and of the Postgres
/// backends that serve the run's database. What a backend used before it
/// exited within the span is missed (the services' pools keep theirs), and
/// the server's auxiliary processes (WAL writer, checkpointer, autovacuum)
/// are not counted. On a 2-core machine, 2,000 ms of CPU per second of the
/// span is the whole machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerSale {
    /// Each service's, by schema, and their `total`.
    pub services: BTreeMap<String, f64>,
    /// The Postgres backends' (`None`: the server is not on this machine).
    pub postgres: Option<f64>,
    /// The services' `total` plus Postgres's.
    pub total: f64,
}

/// CPU seconds used so far, by process.
struct CpuSeconds {
    services: Vec<(&'static str, f64)>,
    backends: BTreeMap<u32, f64>,
}

impl CpuSeconds {
    /// What was used since `before`, per sale of `sales`, in milliseconds. A
    /// backend that started since counts whole.
    fn per_sale_since(&self, before: &CpuSeconds, sales: u64) -> CpuPerSale {
        let per_sale = |seconds: f64| seconds * 1000.0 / sales.max(1) as f64;
        let mut services: BTreeMap<String, f64> = self
            .services
            .iter()
            .map(|&(schema, now)| {
                let then = before.services.iter().find(|(s, _)| *s == schema).map_or(0.0, |&(_, t)| t);
                (schema.to_string(), per_sale((now - then).max(0.0)))
            })
            .collect();
        let total: f64 = services.values().sum();
        services.insert("total".into(), total);
        let postgres = (!self.backends.is_empty()).then(|| {
            per_sale(
                self.backends
                    .iter()
                    .map(|(pid, now)| (now - before.backends.get(pid).copied().unwrap_or(0.0)).max(0.0))
                    .sum(),
            )
        });
        CpuPerSale { services, total: total + postgres.unwrap_or(0.0), postgres }
    }
}

/// `time` as UTC (a missing or out-of-range timestamp is `None`).
pub fn utc(time: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    time.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

/// Seconds from `from` to `to` (never less than a microsecond).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(1e-6)
}

/// The RecordSale request of `sale`, its period starting at `start`.
pub fn sale_request(program_id: &str, start: DateTime<Utc>, sale: &SaleSpec) -> attribution::RecordSaleRequest {
    let offset = chrono::Duration::from_std(sale.offset).unwrap_or_default();
    attribution::RecordSaleRequest {
        program_id: program_id.to_string(),
        external_id: sale.external_id.clone(),
        customer_external_id: workload::customer_id(sale.customer),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(gbp(Decimal::new(sale.pence, 2))),
        product_code: "bench".into(),
        service_code: String::new(),
        occurred_at: Some(timestamp(start + offset)),
    }
}

impl Stage {
    /// A fresh database `name` (dropped first if a failed run left it), the
    /// service roles and migrations, the five services with their
    /// production defaults, the bench program configured from `plan`, and
    /// each customer of `traffic` attributed to its link with a lead at
    /// `lead_time`.
    pub(crate) async fn deploy(
        &self,
        name: &str,
        plan: &Plan,
        traffic: &Traffic,
        lead_time: DateTime<Utc>,
    ) -> Result<Deployed, BenchError> {
        pg::drop_database(&self.admin_url, name).await?;
        pg::ensure_database(&self.admin_url, name).await?;
        let url = pg::with_database(&self.admin_url, name);
        let roles = migrate_all(&url).await.map_err(|e| BenchError::Setup(format!("migrating {name}: {e:#}")))?;
        let services =
            Services::start(&self.bin_dir, &roles, &self.secret, &Settings::default(), &self.logs, name).await?;
        let credential = procs::admin_credential(&self.secret, "accrue-bench")?;
        let clients = Clients::connect(&services.endpoints, &credential)?;
        let created = configure(&clients, plan, self.mode).await?;
        let requests = traffic
            .customers
            .iter()
            .enumerate()
            .map(|(customer, &link)| attribution::TrackLeadRequest {
                program_id: created.program_id.clone(),
                link_id: created.links[link].id.clone(),
                customer_external_id: workload::customer_id(customer),
                occurred_at: Some(timestamp(lead_time)),
            })
            .collect();
        let phase = Phase::start(self.mode, "tracking leads", traffic.customers.len() as u64);
        track_lead_requests(&clients, requests, &phase).await?;
        phase.finish(&format!("{} customers attributed", traffic.customers.len()));
        Ok(Deployed { database: name.to_string(), admin_url: self.admin_url.clone(), services, clients, created })
    }

    /// The throughput run of `sales` sales (see the module docs).
    pub async fn throughput(&self, plan: &Plan, sales: u64) -> Result<Throughput, BenchError> {
        let traffic = workload::traffic(self.seed, sales, plan.links.len());
        let now = Utc::now();
        let start = now - chrono::Duration::from_std(workload::SALES_PERIOD).unwrap_or_default();
        let name = format!("accrue_bench_{sales}_{}", std::process::id());
        let deployed = self.deploy(&name, plan, &traffic, start - chrono::Duration::hours(1)).await?;
        let measured = self.measure(&deployed, &traffic, start).await;
        let stopped = deployed.teardown().await;
        let measured = measured?;
        stopped?;
        Ok(measured)
    }

    async fn measure(
        &self,
        deployed: &Deployed,
        traffic: &Traffic,
        start: DateTime<Utc>,
    ) -> Result<Throughput, BenchError> {
        let (clients, program_id) = (&deployed.clients, deployed.created.program_id.as_str());
        let sales = traffic.sales.len() as u64;
        let requests = traffic.sales.iter().map(|sale| sale_request(program_id, start, sale)).collect();
        let phase = Phase::start(self.mode, "recording sales", sales);
        let load_before = procs::load_average();
        let cpu_before = deployed.cpu_seconds();
        let first_sent = Utc::now();
        let recorded = record_sale_requests(clients, requests, RECORD_STREAMS, &phase).await?;
        let record_seconds = seconds_between(first_sent, Utc::now());
        phase.finish(&format!("{recorded} sales recorded in {record_seconds:.1} s"));
        wait_for_sagas(clients, program_id, SETTLE_SALE, sales, self.mode, self.stall_timeout).await?;
        let cpu_ms_per_sale = deployed.cpu_seconds().per_sale_since(&cpu_before, sales);
        let load_average = [load_before, procs::load_average()];
        check_sagas(clients, program_id, SETTLE_SALE, sales).await?;
        let peak_rss_bytes = deployed.peak_rss()?;

        let settled = read_settle_times(clients, program_id, self.mode).await?;
        if let Some((external_id, state)) = settled.unsettled.first() {
            return Err(BenchError::NotSettled {
                count: settled.unsettled.len(),
                external_id: external_id.clone(),
                state: state.clone(),
            });
        }
        let last = settled.times.values().copied().max().unwrap_or(first_sent);
        let seconds = seconds_between(first_sent, last);
        let ledger_lines = count_ledger_lines(clients, program_id, self.mode).await?;
        let simulation = if self.simulate {
            crate::replay::progress::note(self.mode, &format!("timing SimulateProgram over {sales} sales"));
            let simulation = super::simulate::simulate(clients, program_id, start).await?;
            eprintln!(
                "bench: SimulateProgram of {} sales in {:.2} s with the live rules ({} changed), {:.2} s under a \
                 draft ({} changed)",
                simulation.draft.sales,
                simulation.live.seconds,
                simulation.live.changed,
                simulation.draft.seconds,
                simulation.draft.changed
            );
            Some(simulation)
        } else {
            None
        };

        let (refunds, clawback_seconds) = self.refund(clients, program_id, traffic, start).await?;
        Ok(Throughput {
            sales,
            seconds,
            record_seconds,
            load_average,
            settled_per_second: sales as f64 / seconds,
            ledger_lines,
            ledger_lines_per_second: ledger_lines as f64 / seconds,
            lines_per_sale: ledger_lines as f64 / sales.max(1) as f64,
            peak_rss_bytes,
            cpu_ms_per_sale,
            refunds,
            clawback_seconds,
            clawbacks_per_second: refunds as f64 / clawback_seconds,
            simulation,
        })
    }

    /// Records the traffic's partial refunds and waits for their clawback
    /// sagas; returns how many and the seconds from the first refund sent to
    /// the last clawback saga's last update.
    async fn refund(
        &self,
        clients: &Clients,
        program_id: &str,
        traffic: &Traffic,
        start: DateTime<Utc>,
    ) -> Result<(u64, f64), BenchError> {
        let delay = chrono::Duration::from_std(workload::REFUND_DELAY).unwrap_or_default();
        let requests: Vec<attribution::RecordRefundRequest> = traffic
            .refunds
            .iter()
            .map(|refund| {
                let sale = &traffic.sales[refund.sale];
                let occurred = start + chrono::Duration::from_std(sale.offset).unwrap_or_default() + delay;
                attribution::RecordRefundRequest {
                    program_id: program_id.to_string(),
                    external_id: refund.external_id.clone(),
                    sale: Some(attribution::record_refund_request::Sale::SaleExternalId(sale.external_id.clone())),
                    amount: Some(gbp(Decimal::new(refund.pence, 2))),
                    occurred_at: Some(timestamp(occurred)),
                    reason: "accrue bench: partial refund".into(),
                }
            })
            .collect();
        let count = requests.len() as u64;
        if count == 0 {
            return Ok((0, 1e-6));
        }
        let first_sent = Utc::now();
        crate::replay::progress::note(self.mode, &format!("recording {count} partial refunds"));
        record_refund_requests(clients, &requests).await?;
        wait_for_sagas(clients, program_id, CLAWBACK_SALE, count, self.mode, self.stall_timeout).await?;
        check_sagas(clients, program_id, CLAWBACK_SALE, count).await?;
        let last = last_saga_update(clients, program_id, CLAWBACK_SALE).await?.unwrap_or_else(Utc::now);
        Ok((count, seconds_between(first_sent, last)))
    }
}

impl Deployed {
    /// Each service's peak RSS so far and their `total`, in bytes.
    pub fn peak_rss(&self) -> Result<BTreeMap<String, u64>, BenchError> {
        let mut peaks: BTreeMap<String, u64> =
            self.services.peak_rss()?.into_iter().map(|(schema, bytes)| (schema.to_string(), bytes)).collect();
        let total = peaks.values().sum();
        peaks.insert("total".into(), total);
        Ok(peaks)
    }

    /// CPU seconds each service process and each Postgres backend serving
    /// this run's database have used so far (a process gone counts 0).
    fn cpu_seconds(&self) -> CpuSeconds {
        CpuSeconds {
            services: self
                .services
                .pids()
                .into_iter()
                .map(|(schema, pid)| (schema, procs::cpu_seconds(pid).unwrap_or(0.0)))
                .collect(),
            backends: procs::backend_cpu_seconds(&self.database),
        }
    }

    /// Stops the services (SIGTERM, drained) and drops the database.
    pub async fn teardown(self) -> Result<(), BenchError> {
        self.services.stop().await;
        pg::drop_database(&self.admin_url, &self.database).await?;
        Ok(())
    }
}

/// Fails unless every saga of `kind` is DONE and there are `expected` of them.
pub async fn check_sagas(clients: &Clients, program_id: &str, kind: &str, expected: u64) -> Result<(), BenchError> {
    use attribution::SagaState;
    let done = count_sagas(clients, program_id, kind, SagaState::Done).await?;
    let failed = count_sagas(clients, program_id, kind, SagaState::Failed).await?;
    let stuck = count_sagas(clients, program_id, kind, SagaState::Stuck).await?;
    if failed > 0 || stuck > 0 || u64::try_from(done).ok() != Some(expected) {
        return Err(BenchError::Sagas { kind: kind.to_string(), expected, done, failed, stuck });
    }
    Ok(())
}

/// Every sale's settle time, by external id, and the sales without one.
pub struct SettleTimes {
    /// External id → settle_time.
    pub times: std::collections::HashMap<String, DateTime<Utc>>,
    /// External id and state of each sale that has no settle_time.
    pub unsettled: Vec<(String, String)>,
}

/// Pages through the program's sales (ListSales) for their settle times.
pub async fn read_settle_times(
    clients: &Clients,
    program_id: &str,
    mode: ProgressMode,
) -> Result<SettleTimes, BenchError> {
    let total = crate::replay::run::count_sales(clients, program_id, attribution::SaleState::Unspecified).await?;
    let phase = Phase::start(mode, "reading settle times", u64::try_from(total).unwrap_or(0));
    let mut settled = SettleTimes { times: std::collections::HashMap::new(), unsettled: Vec::new() };
    let mut request = attribution::ListSalesRequest {
        program_id: program_id.to_string(),
        state: attribution::SaleState::Unspecified as i32,
        page_size: PAGE_SIZE,
        page_token: String::new(),
    };
    loop {
        let page =
            retry::idempotent(
                "ListSales",
                &clients.attribution,
                &request,
                |mut c, r| async move { c.list_sales(r).await },
            )
            .await
            .map_err(rpc("ListSales"))?;
        for sale in page.sales {
            match utc(sale.settle_time.as_ref()) {
                Some(time) => {
                    settled.times.insert(sale.external_id, time);
                }
                None => settled.unsettled.push((sale.external_id, sale_state(sale.state))),
            }
        }
        phase.set((settled.times.len() + settled.unsettled.len()) as u64);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    phase.finish(&format!("{} sales settled, {} not", settled.times.len(), settled.unsettled.len()));
    Ok(settled)
}

fn sale_state(state: i32) -> String {
    attribution::SaleState::try_from(state).map_or_else(|_| state.to_string(), |s| s.as_str_name().to_string())
}

/// Counts the program's ledger lines by paging ListEntries (the API gives
/// no total).
pub async fn count_ledger_lines(clients: &Clients, program_id: &str, mode: ProgressMode) -> Result<u64, BenchError> {
    crate::replay::progress::note(mode, "counting ledger lines (ListEntries)");
    let mut request =
        ledger::ListEntriesRequest { program_id: program_id.to_string(), page_size: PAGE_SIZE, ..Default::default() };
    let mut lines = 0u64;
    loop {
        let page =
            retry::idempotent(
                "ListEntries",
                &clients.ledger,
                &request,
                |mut c, r| async move { c.list_entries(r).await },
            )
            .await
            .map_err(rpc("ListEntries"))?;
        lines += page.entries.len() as u64;
        if page.next_page_token.is_empty() {
            return Ok(lines);
        }
        request.page_token = page.next_page_token;
    }
}

/// The latest `update_time` among the program's sagas of `kind` (ListSagas).
pub async fn last_saga_update(
    clients: &Clients,
    program_id: &str,
    kind: &str,
) -> Result<Option<DateTime<Utc>>, BenchError> {
    let mut request = attribution::ListSagasRequest {
        program_id: program_id.to_string(),
        state: attribution::SagaState::Unspecified as i32,
        page_size: PAGE_SIZE,
        page_token: String::new(),
        kind: kind.to_string(),
    };
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        let page =
            retry::idempotent(
                "ListSagas",
                &clients.attribution,
                &request,
                |mut c, r| async move { c.list_sagas(r).await },
            )
            .await
            .map_err(rpc("ListSagas"))?;
        last = page.sagas.iter().filter_map(|saga| utc(saga.update_time.as_ref())).chain(last).max();
        if page.next_page_token.is_empty() {
            return Ok(last);
        }
        request.page_token = page.next_page_token;
    }
}
