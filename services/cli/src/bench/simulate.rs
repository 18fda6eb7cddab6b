//! `accrue bench --simulate` (issue 16 item 2): how long SimulateProgram
//! takes over the throughput run's settled sales, once with no draft (the
//! live rules: every difference must be zero) and once under a draft that
//! changes the program default agreement (every sale recomputed and
//! compared). The target: 20,000 sales in under 10 s on this machine.

use std::time::Instant;

use accrue_proto::attribution::v1 as attribution;
use accrue_proto::commission::v1 as commission;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::BenchError;
use super::workload;
use crate::clients::Clients;
use crate::replay::run::{rpc, timestamp};

/// The draft the timed pass applies: the program default agreement at
/// 12 % of every payment.
pub const DRAFT_RATE: &str = "0.12";

/// One SimulateProgram pass over the whole period.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationPass {
    /// Sales recomputed.
    pub sales: u64,
    /// Sales whose lines changed.
    pub changed: u64,
    /// Sales the draft could not settle.
    pub failed: u64,
    /// Pages it took.
    pub pages: u64,
    /// Wall-clock seconds of every page's call.
    pub seconds: f64,
    /// `sales / seconds`.
    pub sales_per_second: f64,
}

/// Both passes.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    /// No draft: the live rules (must change nothing).
    pub live: SimulationPass,
    /// The program default agreement at [`DRAFT_RATE`].
    pub draft: SimulationPass,
}

/// Runs the two passes over the sales of `program_id` that occurred from
/// `start` over [`workload::SALES_PERIOD`]. A live pass that changes a sale
/// is an error: the backtest must agree with what settlement posted.
pub async fn simulate(clients: &Clients, program_id: &str, start: DateTime<Utc>) -> Result<Simulation, BenchError> {
    let end =
        start + chrono::Duration::from_std(workload::SALES_PERIOD).unwrap_or_default() + chrono::Duration::hours(1);
    let request = attribution::SimulateProgramRequest {
        program_id: program_id.to_string(),
        start_time: Some(timestamp(start - chrono::Duration::hours(1))),
        end_time: Some(timestamp(end)),
        ..Default::default()
    };
    let live = pass(clients, request.clone()).await?;
    if live.changed > 0 || live.failed > 0 {
        return Err(BenchError::Setup(format!(
            "SimulateProgram with the live rules changed {} and failed {} of {} sales",
            live.changed, live.failed, live.sales
        )));
    }
    let draft = commission::SettlementDraft {
        agreements: vec![commission::CreateAgreementRequest {
            rules: Some(commission::AgreementRules {
                model: commission::CommissionModel::Percentage as i32,
                trigger: commission::CommissionTrigger::OnPayment as i32,
                rate: DRAFT_RATE.into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let draft = pass(clients, attribution::SimulateProgramRequest { draft: Some(draft), ..request }).await?;
    Ok(Simulation { live, draft })
}

async fn pass(
    clients: &Clients,
    mut request: attribution::SimulateProgramRequest,
) -> Result<SimulationPass, BenchError> {
    let started = Instant::now();
    let (mut sales, mut changed, mut failed, mut pages) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let page = clients
            .attribution
            .clone()
            .simulate_program(request.clone())
            .await
            .map_err(rpc("SimulateProgram"))?
            .into_inner();
        pages += 1;
        sales += u64::try_from(page.sales_simulated).unwrap_or(0);
        changed += u64::try_from(page.sales_changed).unwrap_or(0);
        failed += u64::try_from(page.sales_failed).unwrap_or(0);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    Ok(SimulationPass { sales, changed, failed, pages, seconds, sales_per_second: sales as f64 / seconds })
}
