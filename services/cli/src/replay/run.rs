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
use crate::stack::Endpoints;

/// Sales per RecordSales stream message (the API's maximum).
pub const SALES_PER_MESSAGE: usize = 1000;
/// Stream messages per RecordSales call (bounds one call's response).
const MESSAGES_PER_CALL: usize = 10;
/// Concurrent TrackLead calls.
const LEAD_CONCURRENCY: usize = 16;
/// Concurrent RecordRefund calls (refunds of one sale are never in flight together).
const REFUND_CONCURRENCY: usize = 16;
/// Saga kinds as attribution names them.
const SETTLE_SALE: &str = "SETTLE_SALE";
const CLAWBACK_SALE: &str = "CLAWBACK_SALE";
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
    /// Progress output.
    pub progress: ProgressMode,
    /// Give up when no saga finishes for this long.
    pub stall_timeout: Duration,
}

impl ReplayOptions {
    /// Defaults: seed 42, every invoice, `./accrue-replay-config.json`,
    /// automatic progress, 10 minute stall timeout.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            data_dir: data_dir.into(),
            seed: 42,
            limit_invoices: None,
            config_out: PathBuf::from("accrue-replay-config.json"),
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

fn rpc(call: impl Into<String>) -> impl FnOnce(tonic::Status) -> ReplayError {
    let call = call.into();
    move |status| ReplayError::Rpc { call, code: status.code(), message: status.message().to_string() }
}

fn gbp(amount: Decimal) -> types::Money {
    let mut amount = amount;
    amount.rescale(2);
    types::Money { currency_code: "GBP".into(), amount: amount.to_string() }
}

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
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
struct Created {
    program_id: String,
    partners: Vec<hierarchy::Partner>,
    links: Vec<attribution::Link>,
    agreements: Vec<commission::AgreementVersion>,
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
        pay_months(&clients, &program_id, &plan, &sales, &refund_plan.refunds, mode, options.stall_timeout).await?;
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
    Ok(summary)
}

/// Settled sales by the model of the agreement they settled under: each
/// settled sale's seller's own agreement (every version takes force before
/// the data starts and none is replaced), else the program default's.
async fn settled_by_model(
    clients: &Clients,
    plan: &Plan,
    created: &Created,
) -> Result<BTreeMap<String, i64>, ReplayError> {
    let default_model = plan.agreements.iter().find(|a| a.partner.is_none()).map_or("NONE", |a| a.rules.model.as_str());
    let own: std::collections::HashMap<&str, &str> = plan
        .agreements
        .iter()
        .filter_map(|a| {
            let partner = created.partners.get(a.partner?)?;
            Some((partner.id.as_str(), a.rules.model.as_str()))
        })
        .collect();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut client = clients.attribution.clone();
    for state in SETTLED_STATES {
        let mut page_token = String::new();
        loop {
            let page = client
                .list_sales(attribution::ListSalesRequest {
                    program_id: created.program_id.clone(),
                    state: state as i32,
                    page_size: 1000,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(rpc("ListSales"))?
                .into_inner();
            for sale in &page.sales {
                let model = own.get(sale.partner_id.as_str()).copied().unwrap_or(default_model);
                *counts.entry(model.to_string()).or_default() += 1;
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(counts)
}

/// Creates (or, on a re-run, finds by request id) the program, partners,
/// links, agreements and override plan, then suspends the chosen partners.
async fn configure(clients: &Clients, plan: &Plan, mode: ProgressMode) -> Result<Created, ReplayError> {
    let mut hierarchy_client = clients.hierarchy.clone();
    let spec = &plan.program;
    let program = hierarchy_client
        .create_program(hierarchy::CreateProgramRequest {
            program: Some(hierarchy::Program {
                display_name: spec.display_name.clone(),
                default_currency: spec.default_currency.clone(),
                rounding_mode: types::RoundingMode::HalfAwayFromZero as i32,
                override_depth_cap: spec.override_depth_cap,
                compression_enabled: spec.compression_enabled,
                auto_approve_cleared: spec.auto_approve_cleared,
                minimum_payout: Some(gbp(spec.minimum_payout)),
                ..Default::default()
            }),
            request_id: spec.request_id.clone(),
        })
        .await
        .map_err(rpc("CreateProgram"))?
        .into_inner();
    let program_id = program.id.clone();
    note(mode, &format!("program {program_id} ({})", spec.display_name));

    let suspensions = plan.partners.iter().filter(|p| p.suspended).count();
    let total = (plan.partners.len() + plan.links.len() + plan.agreements.len() + 1 + suspensions) as u64;
    let phase = Phase::start(mode, "configuring", total);
    let mut done = 0u64;
    let mut partners: Vec<hierarchy::Partner> = Vec::with_capacity(plan.partners.len());
    for spec in &plan.partners {
        let parent_id = spec.parent.and_then(|p| partners.get(p)).map(|p| p.id.clone()).unwrap_or_default();
        let partner = hierarchy_client
            .create_partner(hierarchy::CreatePartnerRequest {
                program_id: program_id.clone(),
                partner: Some(hierarchy::Partner {
                    display_name: spec.display_name.clone(),
                    external_id: spec.external_id.clone(),
                    parent_id,
                    ..Default::default()
                }),
                request_id: spec.request_id.clone(),
            })
            .await
            .map_err(rpc(format!("CreatePartner {}", spec.external_id)))?
            .into_inner();
        partners.push(partner);
        done += 1;
        phase.set(done);
    }

    let mut attribution_client = clients.attribution.clone();
    let mut links = Vec::with_capacity(plan.links.len());
    for spec in &plan.links {
        let owner = &partners[spec.owner];
        let splits = spec
            .splits
            .iter()
            .map(|s| attribution::LinkSplit {
                partner_id: partners[s.partner].id.clone(),
                basis_points: s.basis_points,
            })
            .collect();
        let link = attribution_client
            .create_link(attribution::CreateLinkRequest {
                program_id: program_id.clone(),
                link: Some(attribution::Link {
                    owner_partner_id: owner.id.clone(),
                    key: spec.key.clone(),
                    destination_url: format!("https://shop.example/?via={}", spec.key),
                    splits,
                    ..Default::default()
                }),
                request_id: spec.request_id.clone(),
            })
            .await
            .map_err(rpc(format!("CreateLink {}", spec.key)))?
            .into_inner();
        links.push(link);
        done += 1;
        phase.set(done);
    }

    let mut commission_client = clients.commission.clone();
    let mut agreements = Vec::with_capacity(plan.agreements.len());
    for spec in &plan.agreements {
        let partner_id = spec.partner.map(|p| partners[p].id.clone()).unwrap_or_default();
        let effective_from = DateTime::parse_from_rfc3339(&spec.effective_from)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| ReplayError::Task(format!("effective_from {:?}: {e}", spec.effective_from)))?;
        let version = commission_client
            .create_agreement(commission::CreateAgreementRequest {
                program_id: program_id.clone(),
                partner_id,
                effective_from: Some(timestamp(effective_from)),
                rules: Some(rules_to_proto(&spec.rules)),
                request_id: spec.request_id.clone(),
            })
            .await
            .map_err(rpc(format!("CreateAgreement {}", spec.request_id)))?
            .into_inner();
        agreements.push(version);
        done += 1;
        phase.set(done);
    }

    let override_spec = &plan.override_plan;
    commission_client
        .set_override_plan(commission::SetOverridePlanRequest {
            plan: Some(commission::OverridePlan {
                program_id: program_id.clone(),
                partner_id: String::new(),
                mode: commission::OverrideMode::Percentage as i32,
                basis: commission::OverrideBasis::BaseCommission as i32,
                rates_by_level: override_spec
                    .rates_by_level
                    .iter()
                    .map(|r| commission::OverrideLevel { rate: r.to_string(), flat_amount: None })
                    .collect(),
                update_time: None,
            }),
            request_id: override_spec.request_id.clone(),
        })
        .await
        .map_err(rpc("SetOverridePlan"))?;
    done += 1;
    phase.set(done);

    for spec in plan.partners.iter().filter(|p| p.suspended) {
        let suspended = types::PartnerStatus::Suspended as i32;
        let id = partners[spec.index].id.clone();
        let current = hierarchy_client
            .get_partner(hierarchy::GetPartnerRequest { id: id.clone() })
            .await
            .map_err(rpc(format!("GetPartner {}", spec.external_id)))?
            .into_inner();
        let partner = if current.status == suspended {
            current
        } else {
            hierarchy_client
                .update_partner_status(hierarchy::UpdatePartnerStatusRequest {
                    id,
                    status: suspended,
                    reason: format!("replay seed {}: generated suspension", plan.seed),
                })
                .await
                .map_err(rpc(format!("UpdatePartnerStatus {}", spec.external_id)))?
                .into_inner()
        };
        partners[spec.index] = partner;
        done += 1;
        phase.set(done);
    }
    phase.finish(&format!(
        "{} partners, {} links, {} agreement versions",
        partners.len(),
        links.len(),
        agreements.len()
    ));
    Ok(Created { program_id, partners, links, agreements })
}

fn model_to_proto(model: Model) -> commission::CommissionModel {
    match model {
        Model::Percentage => commission::CommissionModel::Percentage,
        Model::Fixed => commission::CommissionModel::Fixed,
        Model::Tiered => commission::CommissionModel::Tiered,
        Model::Hybrid => commission::CommissionModel::Hybrid,
    }
}

fn tiers_to_proto(tiers: &[TierSpec]) -> Vec<commission::Tier> {
    tiers
        .iter()
        .map(|tier| commission::Tier {
            min_volume: tier.min_volume.to_string(),
            max_volume: tier.max_volume.map(|max| max.to_string()).unwrap_or_default(),
            rate: tier.rate.map(|rate| rate.to_string()).unwrap_or_default(),
            fixed_amount: tier.fixed_amount.map(gbp),
        })
        .collect()
}

fn condition_to_proto(condition: &ConditionSpec) -> commission::Condition {
    let field = commission::ConditionField::from_str_name(&format!("CONDITION_FIELD_{}", condition.field))
        .unwrap_or(commission::ConditionField::Unspecified);
    let operator = commission::ConditionOperator::from_str_name(&format!("CONDITION_OPERATOR_{}", condition.operator))
        .unwrap_or(commission::ConditionOperator::Unspecified);
    commission::Condition {
        field: field as i32,
        operator: operator as i32,
        value: condition.value.clone().unwrap_or_default(),
        values: condition.values.clone(),
    }
}

fn rules_to_proto(rules: &RulesSpec) -> commission::AgreementRules {
    commission::AgreementRules {
        model: model_to_proto(rules.model) as i32,
        trigger: commission::CommissionTrigger::OnPayment as i32,
        rate: rules.rate.map(|r| r.to_string()).unwrap_or_default(),
        fixed_amount: rules.fixed_amount.map(gbp),
        setup_fee: rules.setup_fee.map(gbp),
        min_commission: rules.min_commission.map(gbp),
        max_commission: rules.max_commission.map(gbp),
        clearance_days: rules.clearance_days,
        tiers: tiers_to_proto(&rules.tiers),
        rules: rules
            .rules
            .iter()
            .map(|rule| commission::HybridRule {
                condition: Some(condition_to_proto(&rule.condition)),
                model: model_to_proto(rule.model) as i32,
                rate: rule.rate.map(|r| r.to_string()).unwrap_or_default(),
                fixed_amount: rule.fixed_amount.map(gbp),
                tiers: tiers_to_proto(&rule.tiers),
            })
            .collect(),
        ..Default::default()
    }
}

/// Attributes each customer (first touch) to its seeded link at its first
/// sale's time. Returns customer → (link index, lead time).
async fn track_leads(
    clients: &Clients,
    plan: &Plan,
    created: &Created,
    sales: &[&Invoice],
    mode: ProgressMode,
) -> Result<BTreeMap<String, (usize, DateTime<Utc>)>, ReplayError> {
    let mut customers: BTreeMap<String, (usize, DateTime<Utc>)> = BTreeMap::new();
    for sale in sales {
        if let Some(customer) = &sale.customer {
            customers
                .entry(customer.clone())
                .or_insert_with(|| (config::customer_link(plan.seed, customer, created.links.len()), sale.occurred_at));
        }
    }
    let phase = Phase::start(mode, "tracking leads", customers.len() as u64);
    let done = Arc::new(AtomicU64::new(0));
    let requests: Vec<attribution::TrackLeadRequest> = customers
        .iter()
        .map(|(customer, (link, time))| attribution::TrackLeadRequest {
            program_id: created.program_id.clone(),
            link_id: created.links[*link].id.clone(),
            customer_external_id: customer.clone(),
            occurred_at: Some(timestamp(*time)),
        })
        .collect();
    futures::stream::iter(requests)
        .map(|request| {
            let mut client = clients.attribution.clone();
            let done = done.clone();
            let phase = phase.clone();
            async move {
                let customer = request.customer_external_id.clone();
                client.track_lead(request).await.map_err(rpc(format!("TrackLead {customer}")))?;
                phase.set(done.fetch_add(1, Ordering::Relaxed) + 1);
                Ok::<(), ReplayError>(())
            }
        })
        .buffer_unordered(LEAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    phase.finish(&format!("{} customers attributed", customers.len()));
    Ok(customers)
}

fn write_config(
    options: &ReplayOptions,
    plan: &Plan,
    created: &Created,
    customers: BTreeMap<String, (usize, DateTime<Utc>)>,
    refund_plan: &RefundPlan,
) -> Result<String, ReplayError> {
    let partner = |index: usize| &created.partners[index];
    let file = ConfigFile {
        generator: config::GeneratorInfo {
            seed: plan.seed,
            data_dir: options.data_dir.display().to_string(),
            limit_invoices: options.limit_invoices,
        },
        program: config::ProgramOut { id: created.program_id.clone(), settings: plan.program.clone() },
        partners: plan
            .partners
            .iter()
            .map(|spec| {
                let p = partner(spec.index);
                config::PartnerOut {
                    id: p.id.clone(),
                    external_id: spec.external_id.clone(),
                    display_name: spec.display_name.clone(),
                    parent_id: spec.parent.map(|i| partner(i).id.clone()),
                    parent_external_id: spec.parent.map(|i| plan.partners[i].external_id.clone()),
                    depth: spec.depth,
                    status: status_name(p.status),
                }
            })
            .collect(),
        links: plan
            .links
            .iter()
            .zip(&created.links)
            .map(|(spec, link)| config::LinkOut {
                id: link.id.clone(),
                key: spec.key.clone(),
                owner_partner_id: partner(spec.owner).id.clone(),
                owner_external_id: plan.partners[spec.owner].external_id.clone(),
                splits: spec
                    .splits
                    .iter()
                    .map(|s| config::SplitOut {
                        partner_id: partner(s.partner).id.clone(),
                        partner_external_id: plan.partners[s.partner].external_id.clone(),
                        basis_points: s.basis_points,
                    })
                    .collect(),
            })
            .collect(),
        agreements: plan
            .agreements
            .iter()
            .zip(&created.agreements)
            .map(|(spec, version)| config::AgreementOut {
                version_id: version.id.clone(),
                agreement_id: version.agreement_id.clone(),
                scope: if spec.partner.is_some() { "partner".into() } else { "program".into() },
                partner_id: spec.partner.map(|i| partner(i).id.clone()),
                partner_external_id: spec.partner.map(|i| plan.partners[i].external_id.clone()),
                version: version.version,
                variant: spec.variant.clone(),
                effective_from: spec.effective_from.clone(),
                description: spec.rules.describe(),
                rules: spec.rules.clone(),
            })
            .collect(),
        agreement_variants: config::variants(plan),
        override_plan: plan.override_plan.clone(),
        customers: customers
            .into_iter()
            .map(|(customer, (link, time))| {
                let out = config::CustomerOut {
                    link_id: created.links[link].id.clone(),
                    link_key: plan.links[link].key.clone(),
                    partner_id: created.links[link].owner_partner_id.clone(),
                    lead_time: time.to_rfc3339(),
                };
                (customer, out)
            })
            .collect(),
        rules: config::rules_summary(),
        refunds: refund_plan.refunds.clone(),
    };
    let path = options.config_out.display().to_string();
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| ReplayError::Config { path: path.clone(), message: e.to_string() })?;
    std::fs::write(&options.config_out, json)
        .map_err(|e| ReplayError::Config { path: path.clone(), message: e.to_string() })?;
    Ok(path)
}

fn sale_request(program_id: &str, invoice: &Invoice) -> attribution::RecordSaleRequest {
    attribution::RecordSaleRequest {
        program_id: program_id.to_string(),
        external_id: invoice.external_id(),
        customer_external_id: invoice.customer.clone().unwrap_or_default(),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(gbp(invoice.total)),
        product_code: invoice.product_code.clone(),
        service_code: String::new(),
        occurred_at: Some(timestamp(invoice.occurred_at)),
    }
}

/// Records every sale in time order, 1000 per stream message. Returns how
/// many sales the service acknowledged.
async fn record_sales(
    clients: &Clients,
    program_id: &str,
    sales: &[&Invoice],
    mode: ProgressMode,
) -> Result<u64, ReplayError> {
    let phase = Phase::start(mode, "recording sales", sales.len() as u64);
    let sent = Arc::new(AtomicU64::new(0));
    let mut recorded = 0u64;
    let messages: Vec<attribution::RecordSalesRequest> = sales
        .chunks(SALES_PER_MESSAGE)
        .map(|chunk| attribution::RecordSalesRequest {
            sales: chunk.iter().map(|invoice| sale_request(program_id, invoice)).collect(),
        })
        .collect();
    let mut client = clients.attribution.clone();
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let call: Vec<attribution::RecordSalesRequest> = messages.by_ref().take(MESSAGES_PER_CALL).collect();
        let expected: usize = call.iter().map(|m| m.sales.len()).sum();
        let first = call.first().and_then(|m| m.sales.first()).map(|s| s.external_id.clone()).unwrap_or_default();
        let counter = sent.clone();
        let progress = phase.clone();
        let stream = futures::stream::iter(call).map(move |message| {
            let now = counter.fetch_add(message.sales.len() as u64, Ordering::Relaxed) + message.sales.len() as u64;
            progress.set(now);
            message
        });
        let response =
            client.record_sales(stream).await.map_err(rpc(format!("RecordSales (batch from {first})")))?.into_inner();
        if response.sales.len() != expected {
            return Err(ReplayError::Response {
                call: "RecordSales".into(),
                message: format!("{} sales acknowledged of {expected}", response.sales.len()),
            });
        }
        recorded += response.sales.len() as u64;
        phase.set(recorded);
    }
    phase.finish(&format!("{recorded} sales recorded"));
    Ok(recorded)
}

/// Sagas of `kind` (empty: every kind) in `state`.
async fn count_sagas(
    clients: &Clients,
    program_id: &str,
    kind: &str,
    state: attribution::SagaState,
) -> Result<i64, ReplayError> {
    let mut client = clients.attribution.clone();
    let response = client
        .list_sagas(attribution::ListSagasRequest {
            program_id: program_id.to_string(),
            state: state as i32,
            page_size: 1,
            page_token: String::new(),
            kind: kind.to_string(),
        })
        .await
        .map_err(rpc("ListSagas"))?
        .into_inner();
    Ok(response.total_size)
}

async fn count_sales(clients: &Clients, program_id: &str, state: attribution::SaleState) -> Result<i64, ReplayError> {
    let mut client = clients.attribution.clone();
    let response = client
        .list_sales(attribution::ListSalesRequest {
            program_id: program_id.to_string(),
            state: state as i32,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .map_err(rpc("ListSales"))?
        .into_inner();
    Ok(response.total_size)
}

/// Sales settled at some point: SETTLED, PARTIALLY_REFUNDED or REFUNDED.
async fn count_settled(clients: &Clients, program_id: &str) -> Result<i64, ReplayError> {
    let mut settled = 0;
    for state in SETTLED_STATES {
        settled += count_sales(clients, program_id, state).await?;
    }
    Ok(settled)
}

/// Polls ListSagas until no saga of `kind` is RUNNING or UNWINDING; progress
/// counts the ones that finished out of `expected` (every saga waited for
/// exists before the wait starts). Only the unfinished are counted each tick:
/// counting the finished ones too made the waiting itself a growing load on
/// the database the replay measures.
async fn wait_for_sagas(
    clients: &Clients,
    program_id: &str,
    kind: &str,
    expected: u64,
    mode: ProgressMode,
    stall_timeout: Duration,
) -> Result<(), ReplayError> {
    use attribution::SagaState;
    let label = if kind == CLAWBACK_SALE { "clawing back" } else { "settling sales" };
    let phase = Phase::start(mode, label, expected);
    let mut best = i64::MAX;
    let mut last_change = Instant::now();
    loop {
        let running = count_sagas(clients, program_id, kind, SagaState::Running).await?
            + count_sagas(clients, program_id, kind, SagaState::Unwinding).await?;
        phase.set(expected.saturating_sub(u64::try_from(running).unwrap_or(0)));
        if running == 0 {
            phase.finish(&format!("{expected} {kind} sagas done or failed"));
            return Ok(());
        }
        if running < best {
            best = running;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall_timeout {
            return Err(ReplayError::Stalled(stall_timeout, running));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first instant of the month after (year, month), UTC.
fn next_month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| Utc.from_utc_datetime(&t))
}

/// The months ("YYYY-MM", month end) from the first sale's month to the month
/// after the last sale's, so the last sales can clear.
pub fn replay_months(first: DateTime<Utc>, last: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    let mut months = Vec::new();
    let (mut year, mut month) = (first.year(), first.month());
    let (end_year, end_month) = if last.month() == 12 { (last.year() + 1, 1) } else { (last.year(), last.month() + 1) };
    while (year, month) <= (end_year, end_month) {
        if let Some(next) = next_month_start(year, month) {
            // The last microsecond of the month (Postgres keeps microseconds).
            months.push((format!("{year:04}-{month:02}"), next - chrono::Duration::microseconds(1)));
        }
        (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    }
    months
}

/// What the month-by-month phase did.
struct Paid {
    months: Vec<MonthPayouts>,
    /// RecordRefund calls acknowledged.
    refunds_recorded: u64,
    /// Time spent recording refunds and waiting for their sagas.
    refund_time: Duration,
}

/// For each month: its refunds (RecordRefund, then wait for the clawback
/// sagas), ClearMatured(as_of = month end), then CreatePayoutRun. Refunds are
/// in application order (see [`refunds::plan`]); any after the last month end
/// (none in the data set) are recorded after the last run.
#[allow(clippy::too_many_arguments)]
async fn pay_months(
    clients: &Clients,
    program_id: &str,
    plan: &Plan,
    sales: &[&Invoice],
    refunds: &[PlannedRefund],
    mode: ProgressMode,
    stall_timeout: Duration,
) -> Result<Paid, ReplayError> {
    let mut paid = Paid { months: Vec::new(), refunds_recorded: 0, refund_time: Duration::ZERO };
    let (Some(first), Some(last)) = (sales.first(), sales.last()) else { return Ok(paid) };
    let months = replay_months(first.occurred_at, last.occurred_at);
    let phase = Phase::start(mode, "refunding, clearing & paying", months.len() as u64);
    let mut ledger_client = clients.ledger.clone();
    let mut payouts_client = clients.payouts.clone();
    let mut pending = refunds;
    for (done, (period, month_end)) in months.into_iter().enumerate() {
        let due = pending.iter().take_while(|r| r.occurred_at <= month_end).count();
        let (now, later) = pending.split_at(due);
        pending = later;
        let started = Instant::now();
        let recorded = record_refunds(clients, program_id, now).await?;
        if recorded > 0 {
            wait_for_sagas(clients, program_id, CLAWBACK_SALE, recorded, ProgressMode::Quiet, stall_timeout).await?;
        }
        paid.refund_time += started.elapsed();
        paid.refunds_recorded += recorded;
        let cleared = ledger_client
            .clear_matured(ledger::ClearMaturedRequest {
                program_id: program_id.to_string(),
                as_of: Some(timestamp(month_end)),
            })
            .await
            .map_err(rpc(format!("ClearMatured {period}")))?
            .into_inner();
        let run = payouts_client
            .create_payout_run(payouts::CreatePayoutRunRequest {
                program_id: program_id.to_string(),
                currency_code: plan.program.default_currency.clone(),
                period: period.clone(),
                cutoff: Some(timestamp(month_end)),
                minimum_amount: None,
                request_id: format!("replay-{}-payout-run-{period}", plan.seed),
            })
            .await
            .map_err(rpc(format!("CreatePayoutRun {period}")))?
            .into_inner();
        let call = "CreatePayoutRun";
        paid.months.push(MonthPayouts {
            period,
            payout_run_id: run.id,
            cleared_entries: cleared.cleared_count,
            payout_count: run.payout_count,
            refunds_recorded: recorded,
            amount: parse_amount(call, run.total_amount.as_ref())?,
            carried_forward_count: run.carried_forward_count,
            carried_forward_amount: parse_amount(call, run.carried_forward_amount.as_ref())?,
        });
        phase.set(done as u64 + 1);
    }
    if !pending.is_empty() {
        let started = Instant::now();
        let recorded = record_refunds(clients, program_id, pending).await?;
        wait_for_sagas(clients, program_id, CLAWBACK_SALE, recorded, ProgressMode::Quiet, stall_timeout).await?;
        paid.refund_time += started.elapsed();
        paid.refunds_recorded += recorded;
    }
    phase.finish(&format!("{} payout runs, {} refunds", paid.months.len(), paid.refunds_recorded));
    Ok(paid)
}

fn refund_request(program_id: &str, refund: &PlannedRefund) -> attribution::RecordRefundRequest {
    attribution::RecordRefundRequest {
        program_id: program_id.to_string(),
        external_id: refund.external_id.clone(),
        sale: Some(attribution::record_refund_request::Sale::SaleExternalId(refund.sale_external_id.clone())),
        amount: Some(gbp(refund.amount)),
        occurred_at: Some(timestamp(refund.occurred_at)),
        reason: format!("credit invoice {}", refund.credit_invoice),
    }
}

/// Records `refunds` in order, [`REFUND_CONCURRENCY`] at a time, in waves that
/// never hold two refunds of one sale: a sale's refunds get their sequence in
/// application order. Returns how many were acknowledged.
async fn record_refunds(clients: &Clients, program_id: &str, refunds: &[PlannedRefund]) -> Result<u64, ReplayError> {
    let mut recorded = 0u64;
    let mut rest = refunds;
    while !rest.is_empty() {
        let mut sales = std::collections::HashSet::new();
        let wave = rest
            .iter()
            .take_while(|r| sales.insert(r.sale_external_id.as_str()))
            .take(REFUND_CONCURRENCY * 4)
            .count()
            .max(1);
        let (now, later) = rest.split_at(wave);
        rest = later;
        let calls =
            now.iter().map(|refund| {
                let mut client = clients.attribution.clone();
                let request = refund_request(program_id, refund);
                async move {
                    client.record_refund(request).await.map_err(rpc(format!("RecordRefund {}", refund.external_id)))
                }
            });
        let acknowledged: Vec<_> =
            futures::stream::iter(calls).buffer_unordered(REFUND_CONCURRENCY).try_collect().await?;
        recorded += acknowledged.len() as u64;
    }
    Ok(recorded)
}

/// Sums GetEarningsSummary over every partner of the program (GBP).
async fn commission_totals(clients: &Clients, program_id: &str) -> Result<CommissionTotals, ReplayError> {
    let call = "GetEarningsSummary";
    let mut client = clients.ledger.clone();
    let response = client
        .get_earnings_summary(ledger::GetEarningsSummaryRequest {
            program_id: program_id.to_string(),
            partner_ids: Vec::new(),
        })
        .await
        .map_err(rpc(call))?
        .into_inner();
    let mut totals = CommissionTotals::default();
    for summary in response.summaries.iter().filter(|s| s.currency_code == "GBP") {
        totals.direct += parse_amount(call, summary.direct.as_ref())?;
        totals.split += parse_amount(call, summary.split.as_ref())?;
        totals.r#override += parse_amount(call, summary.r#override.as_ref())?;
        totals.margin += parse_amount(call, summary.margin.as_ref())?;
        totals.clawback += parse_amount(call, summary.clawback.as_ref())?;
        totals.clawback_by_kind.direct += parse_amount(call, summary.clawback_direct.as_ref())?;
        totals.clawback_by_kind.split += parse_amount(call, summary.clawback_split.as_ref())?;
        totals.clawback_by_kind.r#override += parse_amount(call, summary.clawback_override.as_ref())?;
        totals.clawback_by_kind.margin += parse_amount(call, summary.clawback_margin.as_ref())?;
        totals.total += parse_amount(call, summary.total.as_ref())?;
    }
    let ClawbackByKind { direct, split, r#override, margin } = &mut totals.clawback_by_kind;
    for amount in [
        &mut totals.direct,
        &mut totals.split,
        &mut totals.r#override,
        &mut totals.margin,
        &mut totals.clawback,
        direct,
        split,
        r#override,
        margin,
        &mut totals.total,
    ] {
        amount.rescale(2);
    }
    Ok(totals)
}

/// The program's refunds by state with their sums (ListRefunds, every page),
/// and the partners whose GBP payable balance is negative (GetBalances).
async fn refund_totals(
    clients: &Clients,
    program_id: &str,
    refund_plan: &RefundPlan,
    refunds_recorded: u64,
    elapsed: Duration,
) -> Result<RefundTotals, ReplayError> {
    let mut totals = RefundTotals {
        credit_lines_matched: refund_plan.matched_lines,
        credit_lines_unmatched: refund_plan.unmatched_lines.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        values_rounded: refund_plan.rounded_values,
        refunds_capped: refund_plan.capped_refunds,
        refunds_dropped: refund_plan.dropped_refunds,
        refunds_recorded,
        elapsed_seconds: Decimal::new(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX), 3),
        ..Default::default()
    };
    let mut client = clients.attribution.clone();
    let mut page_token = String::new();
    loop {
        let call = "ListRefunds";
        let page = client
            .list_refunds(attribution::ListRefundsRequest {
                program_id: program_id.to_string(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(rpc(call))?
            .into_inner();
        for refund in &page.refunds {
            match attribution::RefundState::try_from(refund.state) {
                Ok(attribution::RefundState::Applied) => totals.refunds_applied += 1,
                Ok(attribution::RefundState::Failed) => totals.refunds_failed += 1,
                _ => totals.refunds_pending += 1,
            }
            totals.refunded_amount += parse_amount(call, refund.amount.as_ref())?;
            if let Some(clawback) = refund.clawback_amount.as_ref() {
                totals.clawback_amount += parse_amount(call, Some(clawback))?;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let call = "GetBalances";
    let balances = clients
        .ledger
        .clone()
        .get_balances(ledger::GetBalancesRequest {
            program_id: program_id.to_string(),
            partner_ids: Vec::new(),
            currency_code: "GBP".into(),
        })
        .await
        .map_err(rpc(call))?
        .into_inner();
    for balance in &balances.balances {
        let payable = parse_amount(call, balance.payable.as_ref())?;
        if payable < Decimal::ZERO {
            totals.partners_with_negative_balance += 1;
            totals.negative_balance_total += payable;
        }
    }
    for amount in [&mut totals.refunded_amount, &mut totals.clawback_amount, &mut totals.negative_balance_total] {
        amount.rescale(2);
    }
    Ok(totals)
}

/// The timed sections of a run.
struct Timing {
    /// From the first RecordSales until every settlement saga finished.
    elapsed: Duration,
    /// Settled sales of the program before this run recorded any.
    settled_before: i64,
    /// Settled sales of the program when every settlement saga had finished.
    settled_after: i64,
    /// Recording refunds and waiting for their clawback sagas.
    refunds: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn summarize(
    clients: &Clients,
    options: &ReplayOptions,
    data: &Dataset,
    program_id: String,
    recorded: u64,
    with_customer: u64,
    payouts: Vec<MonthPayouts>,
    refund_plan: &RefundPlan,
    refunds_recorded: u64,
    timing: Timing,
    config_path: String,
) -> Result<Summary, ReplayError> {
    use attribution::{SagaState, SaleState};
    let settled = count_settled(clients, &program_id).await?;
    let partially_refunded = count_sales(clients, &program_id, SaleState::PartiallyRefunded).await?;
    let refunded = count_sales(clients, &program_id, SaleState::Refunded).await?;
    let failed = count_sales(clients, &program_id, SaleState::Failed).await?;
    let unattributed = count_sales(clients, &program_id, SaleState::Unattributed).await?;
    let pending = count_sales(clients, &program_id, SaleState::Pending).await?;
    let sagas_stuck = count_sagas(clients, &program_id, "", SagaState::Stuck).await?;
    let refunds = refund_totals(clients, &program_id, refund_plan, refunds_recorded, timing.refunds).await?;
    let commission = commission_totals(clients, &program_id).await?;
    let millis = i64::try_from(timing.elapsed.as_millis()).unwrap_or(i64::MAX).max(1);
    let elapsed_seconds = Decimal::new(millis, 3);
    let settled_this_run = (timing.settled_after - timing.settled_before).max(0);
    let settled_per_second =
        (Decimal::from(settled_this_run) * Decimal::from(1000) / Decimal::from(millis)).round_dp(1);
    Ok(Summary {
        program_id,
        seed: options.seed,
        rows_read: data.rows,
        invoices_read: data.invoices.len() as u64,
        sales_recorded: recorded,
        sales_with_customer: with_customer,
        settled,
        partially_refunded,
        refunded,
        failed,
        unattributed,
        pending,
        sagas_stuck,
        skipped: data.skipped.iter().map(|(reason, count)| (reason.to_string(), *count)).collect(),
        credit_invoices: data.credit_invoices,
        credit_lines: data.credit_lines,
        refunds,
        commission,
        payouts,
        settled_by_model: BTreeMap::new(),
        elapsed_seconds,
        settled_this_run,
        settled_per_second,
        config_path,
    })
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
