//! ComputeSettlements: settles a batch of one program's sales through the
//! pure domain; QuoteSale shares [`CommissionApi::settle_sales`] so that a
//! quote is exactly what settlement would post.

pub(super) mod codec;

use accrue_kit::FieldViolations;
use accrue_proto::commission::v1 as pb;
use accrue_types::ProgramId;
use tonic::Status;

use super::{CommissionApi, Draft};
use crate::domain::{self, AgreementBook, Failure, ProgramSettings, Sale, Settlement};
use crate::{scheme_store, store};
use codec::MAX_SALES_PER_CALL;

impl CommissionApi {
    /// Settles decoded sales of one program (`Err`: the id of a sale that failed
    /// to decode, and why): loads the agreement versions,
    /// override plans and schemes they need in a few queries, then computes
    /// each sale purely, in order. Shared by ComputeSettlements and QuoteSale
    /// so a quote is exactly what settlement would post; `draft` replaces or
    /// extends the stored agreements and plans for this call only
    /// (QuoteSale's draft_rules, a ComputeSettlements draft).
    pub(crate) async fn settle_sales(
        &self,
        program_id: ProgramId,
        settings: &ProgramSettings,
        sales: Vec<Result<Sale, (String, Failure)>>,
        draft: Option<&Draft>,
    ) -> Result<Vec<Settlement>, Status> {
        let decoded: Vec<&Sale> = sales.iter().flatten().collect();
        let (sellers, uplines) = codec::referenced_partners(&decoded);
        let mut book = AgreementBook::new(store::load_versions(&self.pool, program_id, &sellers).await?);
        let mut plans = store::load_plans(&self.pool, program_id, &uplines).await?;
        if let Some(draft) = draft {
            for agreement in &draft.agreements {
                book = book.with_draft_version(agreement.scope, agreement.effective_from, agreement.rules.clone());
            }
            for (scope, plan) in &draft.plans {
                match scope {
                    None => plans.program = Some(plan.clone()),
                    Some(partner) => {
                        plans.partners.insert(*partner, plan.clone());
                    }
                }
            }
        }
        let draft_rates = draft.map_or(&[][..], |draft| draft.scheme_rates.as_slice());
        let schemes = scheme_store::load_book(&self.pool, program_id, &decoded, draft_rates).await?;
        Ok(sales
            .into_iter()
            .map(|sale| match sale {
                Ok(sale) => domain::settle(settings, &book, &plans, &schemes, &sale),
                Err((sale_id, failure)) => codec::failed_settlement(&sale_id, failure),
            })
            .collect())
    }
}

/// Settles up to 1000 sales: loads the program's agreement versions and
/// override plans in two queries, then computes each sale purely — under
/// the request's `draft` when it has one (SimulateProgram, issue 16 item 2;
/// validated first, see [`super::draft::decode`]).
/// Request-level problems are INVALID_ARGUMENT; a sale's own problem is its
/// `Settlement.failure`.
#[tracing::instrument(skip_all, fields(sales = request.sales.len()))]
pub(super) async fn compute_settlements(
    api: &CommissionApi,
    request: pb::ComputeSettlementsRequest,
) -> Result<pb::ComputeSettlementsResponse, Status> {
    let mut violations = FieldViolations::new();
    let program = codec::decode_program(request.program.as_ref(), &mut violations);
    if request.sales.len() > MAX_SALES_PER_CALL {
        violations.add("sales", format!("at most {MAX_SALES_PER_CALL} sales per call, got {}", request.sales.len()));
    }
    violations.into_result()?;
    let Some((program_id, settings)) = program else {
        return Err(accrue_kit::internal("validated ComputeSettlements request lost the program"));
    };
    let draft = match request.draft.as_ref() {
        Some(draft) => Some(super::draft::decode(api, program_id, draft).await?),
        None => None,
    };
    if request.sales.is_empty() {
        return Ok(pb::ComputeSettlementsResponse { settlements: Vec::new() });
    }
    let sales = request
        .sales
        .iter()
        .enumerate()
        .map(|(index, sale)| codec::decode_sale(index, sale).map_err(|failure| (sale.sale_id.clone(), failure)))
        .collect();
    let settlements = api.settle_sales(program_id, &settings, sales, draft.as_ref()).await?;
    let with_base_breakdown = !request.omit_base_breakdown;
    Ok(pb::ComputeSettlementsResponse {
        settlements: settlements
            .into_iter()
            .map(|settlement| codec::encode_settlement(settlement, with_base_breakdown))
            .collect(),
    })
}
