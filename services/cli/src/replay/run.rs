//! Drives a replay over gRPC: configure the program, attribute customers,
//! record every sale (RecordSales client streaming), wait for the settlement
//! sagas, then month by month record the month's refunds (credit invoices),
//! wait for their clawback sagas, clear and pay; and summarize.

use accrue_kit::auth::Credential;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accrue_proto::attribution::v1 as attribution;
use accrue_proto::commission::v1 as commission;
use accrue_proto::hierarchy::v1 as hierarchy;
use accrue_proto::ledger::v1 as ledger;
use accrue_proto::payouts::v1 as payouts;
use accrue_proto::types::v1 as types;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use rust_decimal::Decimal;

use super::config::{self, ConditionSpec, ConfigFile, Model, Plan, RulesSpec, TierSpec};
use super::load::{self, Dataset, Invoice, InvoiceClass, LoadError};
use super::progress::{Phase, ProgressMode, note};
use super::refunds::{self, PlannedRefund, RefundPlan};
use super::summary::{ClawbackByKind, CommissionTotals, MonthPayouts, RefundTotals, Summary};
use crate::clients::Clients;
use crate::retry;
use crate::stack::Endpoints;

mod configure;
mod months;
mod sales;
mod settle;
mod totals;

use configure::*;
use months::*;
use sales::*;
use settle::*;
use totals::*;

pub(crate) use configure::{configure, track_lead_requests};
pub(crate) use months::record_refund_requests;
pub(crate) use sales::{count_sagas, count_sales, record_sale_requests, wait_for_sagas};

/// Sales per RecordSales stream message (the API's maximum).
pub const SALES_PER_MESSAGE: usize = 1000;
/// Stream messages per RecordSales call (bounds one call's response).
const MESSAGES_PER_CALL: usize = 10;
/// Concurrent TrackLead calls.
const LEAD_CONCURRENCY: usize = 16;
/// Concurrent RecordRefund calls (refunds of one sale are never in flight together).
const REFUND_CONCURRENCY: usize = 16;
/// Saga kinds as attribution names them.
pub(crate) const SETTLE_SALE: &str = "SETTLE_SALE";
pub(crate) const CLAWBACK_SALE: &str = "CLAWBACK_SALE";
/// The states of a sale that settled (refunds move it on from SETTLED).
const SETTLED_STATES: [attribution::SaleState; 3] =
    [attribution::SaleState::Settled, attribution::SaleState::PartiallyRefunded, attribution::SaleState::Refunded];

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Directory holding `online_retail.csv.gz`.
    pub data_dir: PathBuf,
    /// Seed of the generated configuration (default 42).
    pub seed: u64,
    /// Replay only the first N invoices (by first appearance).
    pub limit_invoices: Option<usize>,
    /// Where to write the configuration JSON.
    pub config_out: PathBuf,
    /// Where to write the payouts CSV (ExportPayouts) at the end.
    pub payouts_out: PathBuf,
    /// Progress output.
    pub progress: ProgressMode,
    /// Give up when no saga finishes for this long.
    pub stall_timeout: Duration,
}

impl ReplayOptions {
    /// Defaults: seed 42, every invoice, `./accrue-replay-config.json`,
    /// `./accrue-replay-payouts.csv`, automatic progress, 10 minute stall
    /// timeout.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            data_dir: data_dir.into(),
            seed: 42,
            limit_invoices: None,
            config_out: PathBuf::from("accrue-replay-config.json"),
            payouts_out: PathBuf::from("accrue-replay-payouts.csv"),
            progress: ProgressMode::Auto,
            stall_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The data set could not be read.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An endpoint URL is invalid.
    #[error(transparent)]
    Endpoint(#[from] accrue_kit::client::ClientError),
    /// A call failed.
    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        /// Which call, with its subject.
        call: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A response lacked something it must carry.
    #[error("unexpected response from {call}: {message}")]
    Response {
        /// Which call.
        call: String,
        /// What was wrong.
        message: String,
    },
    /// The configuration file could not be written.
    #[error("writing the configuration to {path}: {message}")]
    Config {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
    /// Sagas stopped making progress.
    #[error("no saga finished for {0:?}; {1} still running or unwinding")]
    Stalled(Duration, i64),
    /// A background task failed.
    #[error("background task failed: {0}")]
    Task(String),
}

pub(crate) fn rpc(call: impl Into<String>) -> impl FnOnce(tonic::Status) -> ReplayError {
    let call = call.into();
    move |status| ReplayError::Rpc { call, code: status.code(), message: status.message().to_string() }
}

pub(crate) fn gbp(amount: Decimal) -> types::Money {
    let mut amount = amount;
    amount.rescale(2);
    types::Money { currency_code: "GBP".into(), amount: amount.to_string() }
}

pub(crate) fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    accrue_kit::convert::timestamp(time)
}

fn parse_amount(call: &str, money: Option<&types::Money>) -> Result<Decimal, ReplayError> {
    match money {
        None => Ok(Decimal::ZERO),
        Some(m) if m.amount.is_empty() => Ok(Decimal::ZERO),
        Some(m) => Decimal::from_str(&m.amount)
            .map_err(|_| ReplayError::Response { call: call.into(), message: format!("amount {:?}", m.amount) }),
    }
}

fn status_name(status: i32) -> String {
    types::PartnerStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("PARTNER_STATUS_").to_string())
        .unwrap_or_else(|_| status.to_string())
}

/// The ids the program's configuration received.
pub(crate) struct Created {
    /// The program.
    pub(crate) program_id: String,
    /// The partners, in the plan's order.
    pub(crate) partners: Vec<hierarchy::Partner>,
    /// The links, in the plan's order.
    pub(crate) links: Vec<attribution::Link>,
    /// The agreement versions, in the plan's order.
    pub(crate) agreements: Vec<commission::AgreementVersion>,
}

/// Replays the UCI Online Retail data set into the services at `endpoints`
/// (DESIGN §7). Running it twice with the same seed and data posts nothing new.
///
/// Errors: [`ReplayError::Load`] for an unreadable data set, [`ReplayError::Rpc`]
/// when a call fails (with its gRPC code), [`ReplayError::Stalled`] when the
/// sagas stop finishing.
pub async fn replay(
    options: ReplayOptions,
    endpoints: &Endpoints,
    credential: &Credential,
) -> Result<Summary, ReplayError> {
    let mode = options.progress;
    let data_dir = options.data_dir.clone();
    let limit = options.limit_invoices;
    note(mode, &format!("reading {}", data_dir.join(load::LINE_FILE).display()));
    let data = tokio::task::spawn_blocking(move || load::load_dir(&data_dir, limit))
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))??;
    let sales = data.sales();
    note(
        mode,
        &format!(
            "{} invoices ({} rows): {} sales, {} credit invoices, {} skipped",
            data.invoices.len(),
            data.rows,
            sales.len(),
            data.credit_invoices,
            data.skipped.values().map(|s| s.invoices).sum::<u64>()
        ),
    );

    let gbp = accrue_money::Currency::from_code("GBP").map_err(LoadError::Currency)?;
    let refund_plan = refunds::plan(&data, gbp);
    note(
        mode,
        &format!(
            "{} credit lines: {} matched into {} refunds, {} unmatched",
            data.credit_lines,
            refund_plan.matched_lines,
            refund_plan.refunds.len(),
            refund_plan.unmatched_lines.values().sum::<u64>()
        ),
    );

    let plan = config::generate(options.seed);
    let clients = Clients::connect(endpoints, credential)?;
    let created = configure(&clients, &plan, mode).await?;
    let program_id = created.program_id.clone();
    let customers = track_leads(&clients, &plan, &created, &sales, mode).await?;
    let config_path = write_config(&options, &plan, &created, customers, &refund_plan)?;
    note(mode, &format!("configuration written to {config_path}"));

    // A re-run into the same program settles nothing new: the rate counts
    // only the sales this run settled.
    let settled_before = count_settled(&clients, &program_id).await?;
    let started = Instant::now();
    let recorded = record_sales(&clients, &program_id, &sales, mode).await?;
    let with_customer = sales.iter().filter(|s| s.class == InvoiceClass::Sale).count() as u64;
    wait_for_sagas(&clients, &program_id, SETTLE_SALE, with_customer, mode, options.stall_timeout).await?;
    let elapsed = started.elapsed();
    let settled_after = count_settled(&clients, &program_id).await?;

    // Later months' sales are already settled, but none of their lines clears
    // before its month ends, so each cutoff sees exactly what it would have seen
    // in a strict timeline; refunds are what must wait for their month.
    let paid =
        pay_months(&clients, &program_id, &plan, &created, &sales, &refund_plan.refunds, mode, options.stall_timeout)
            .await?;
    let timing = Timing { elapsed, settled_before, settled_after, refunds: paid.refund_time };
    let mut summary = summarize(
        &clients,
        &options,
        &data,
        program_id,
        recorded,
        with_customer,
        paid.months,
        &refund_plan,
        paid.refunds_recorded,
        timing,
        config_path,
    )
    .await?;
    summary.settled_by_model = settled_by_model(&clients, &plan, &created).await?;
    summary.settlement = settle_summary(&clients, &summary.program_id, &options.payouts_out).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_run_from_first_sale_to_the_month_after_the_last() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default();
        let months = replay_months(at("2010-12-01T08:26:00Z"), at("2011-12-09T12:50:00Z"));
        let names: Vec<&str> = months.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names.first(), Some(&"2010-12"));
        assert_eq!(names.last(), Some(&"2012-01"));
        assert_eq!(names.len(), 14);
        assert_eq!(months[0].1.to_rfc3339(), "2010-12-31T23:59:59.999999+00:00");
        assert_eq!(months[2].1.to_rfc3339(), "2011-02-28T23:59:59.999999+00:00");
    }

    #[test]
    fn tiered_and_hybrid_rules_reach_the_wire_in_full() {
        let tiered = rules_to_proto(&config::tiered_rules());
        assert_eq!(tiered.model, commission::CommissionModel::Tiered as i32);
        let tiers: Vec<(&str, &str, &str)> =
            tiered.tiers.iter().map(|t| (t.min_volume.as_str(), t.max_volume.as_str(), t.rate.as_str())).collect();
        assert_eq!(tiers, [("0", "5000", "0.08"), ("5000", "25000", "0.10"), ("25000", "", "0.12")]);

        let hybrid = rules_to_proto(&config::hybrid_rules());
        assert_eq!(hybrid.model, commission::CommissionModel::Hybrid as i32);
        let conditions: Vec<(i32, i32, &str, usize)> = hybrid
            .rules
            .iter()
            .filter_map(|r| r.condition.as_ref())
            .map(|c| (c.field, c.operator, c.value.as_str(), c.values.len()))
            .collect();
        use commission::{ConditionField as F, ConditionOperator as O};
        assert_eq!(
            conditions,
            [
                (F::IsFirstPayment as i32, O::Equals as i32, "true", 0),
                (F::GrossAmount as i32, O::Gte as i32, "500.00", 0),
                (F::ProductCode as i32, O::In as i32, "", config::HYBRID_PRODUCT_CODES.len()),
            ]
        );
        let models: Vec<i32> = hybrid.rules.iter().map(|r| r.model).collect();
        let (fixed, percentage) =
            (commission::CommissionModel::Fixed as i32, commission::CommissionModel::Percentage as i32);
        assert_eq!(models, [fixed, percentage, percentage]);
        assert_eq!(hybrid.rules[0].fixed_amount.as_ref().map(|m| m.amount.as_str()), Some("5.00"));
        assert_eq!(hybrid.rules[2].rate, "0.15");
    }

    #[test]
    fn money_is_written_in_pence() {
        assert_eq!(gbp(Decimal::new(25, 0)).amount, "25.00");
        assert_eq!(gbp(Decimal::new(250, 2)).amount, "2.50");
    }
}
