//! tonic implementation of `CommissionService`, one module per resource, each
//! with its codec beside it (wire ↔ [`crate::domain`]): [`agreements`],
//! [`plans`], [`settle`] (ComputeSettlements), [`schemes`] and [`quote`]
//! (QuoteSale, GetAgreementInForce). This file only routes.

pub(crate) mod agreements;
mod draft;
mod plans;
mod quote;
mod schemes;
mod settle;

use accrue_kit::FieldViolations;
use accrue_kit::client::AuthChannel;
use accrue_proto::commission::v1 as pb;
use accrue_proto::commission::v1::commission_service_server::CommissionService;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_types::{PartnerId, ProgramId, SchemeId};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};

/// NOT_FOUND PROGRAM_NOT_FOUND when the caller's token does not name the
/// program `program_id` (issue 10 item 2), whether or not it exists; a
/// malformed or missing id is left to the handler's field violations.
fn in_scope<T>(request: &Request<T>, program_id: &str) -> Result<(), Status> {
    match program_id.parse::<ProgramId>() {
        Ok(id) => accrue_kit::auth::caller(request)?.require_program(id),
        Err(_) => Ok(()),
    }
}

use crate::domain::{AgreementRules, OverridePlan, RateChange};
use chrono::{DateTime, Utc};

/// Longest accepted `request_id`, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// The `CommissionService` implementation.
#[derive(Debug, Clone)]
pub struct CommissionApi {
    pool: PgPool,
    hierarchy: HierarchyServiceClient<AuthChannel>,
}

/// Unsaved rules a settlement runs under, never stored: QuoteSale's draft
/// agreement for its seller, or a ComputeSettlements `draft`
/// (SimulateProgram's backtest, issue 16 item 2), applied in order over the
/// stored rules by [`CommissionApi::settle_sales`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Draft {
    /// Draft agreement versions (see [`AgreementBook::with_draft_version`](crate::domain::AgreementBook::with_draft_version)).
    pub agreements: Vec<DraftAgreement>,
    /// Override plans replacing the stored plan of their scope (`None`: the
    /// program's plan; else that upline partner's own).
    pub plans: Vec<(Option<PartnerId>, OverridePlan)>,
    /// Scheme rate changes applied in order to the program's tree (validated).
    pub scheme_rates: Vec<(SchemeId, Vec<RateChange>)>,
}

/// One draft agreement version.
#[derive(Debug, Clone)]
pub(crate) struct DraftAgreement {
    /// Partner scope; `None` for the program default.
    pub scope: Option<PartnerId>,
    /// When it takes force; `None`: it replaces every version of the scope.
    pub effective_from: Option<DateTime<Utc>>,
    /// The validated rules.
    pub rules: AgreementRules,
}

impl CommissionApi {
    /// A new API over the service's pool and a client of the hierarchy service.
    pub fn new(pool: PgPool, hierarchy: HierarchyServiceClient<AuthChannel>) -> Self {
        CommissionApi { pool, hierarchy }
    }
}

fn check_request_id(request_id: &str, violations: &mut FieldViolations) -> Option<String> {
    if request_id.len() > MAX_REQUEST_ID_LEN {
        violations.add("request_id", format!("must be at most {MAX_REQUEST_ID_LEN} bytes"));
    }
    (!request_id.is_empty()).then(|| request_id.to_string())
}

#[tonic::async_trait]
impl CommissionService for CommissionApi {
    /// See [`agreements::create_agreement`].
    async fn create_agreement(
        &self,
        request: Request<pb::CreateAgreementRequest>,
    ) -> Result<Response<pb::AgreementVersion>, Status> {
        in_scope(&request, &request.get_ref().program_id)?;
        agreements::create_agreement(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`agreements::list_agreement_versions`].
    async fn list_agreement_versions(
        &self,
        request: Request<pb::ListAgreementVersionsRequest>,
    ) -> Result<Response<pb::ListAgreementVersionsResponse>, Status> {
        in_scope(&request, &request.get_ref().program_id)?;
        agreements::list_agreement_versions(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`plans::set_override_plan`].
    async fn set_override_plan(
        &self,
        request: Request<pb::SetOverridePlanRequest>,
    ) -> Result<Response<pb::OverridePlan>, Status> {
        in_scope(&request, request.get_ref().plan.as_ref().map_or("", |plan| plan.program_id.as_str()))?;
        plans::set_override_plan(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`settle::compute_settlements`].
    async fn compute_settlements(
        &self,
        request: Request<pb::ComputeSettlementsRequest>,
    ) -> Result<Response<pb::ComputeSettlementsResponse>, Status> {
        in_scope(&request, request.get_ref().program.as_ref().map_or("", |program| program.program_id.as_str()))?;
        settle::compute_settlements(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`quote::get_agreement_in_force`].
    async fn get_agreement_in_force(
        &self,
        request: Request<pb::GetAgreementInForceRequest>,
    ) -> Result<Response<pb::AgreementVersion>, Status> {
        in_scope(&request, &request.get_ref().program_id)?;
        quote::get_agreement_in_force(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`quote::quote_sale`].
    async fn quote_sale(
        &self,
        request: Request<pb::QuoteSaleRequest>,
    ) -> Result<Response<pb::QuoteSaleResponse>, Status> {
        in_scope(&request, &request.get_ref().program_id)?;
        quote::quote_sale(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::create_scheme`].
    async fn create_scheme(&self, request: Request<pb::CreateSchemeRequest>) -> Result<Response<pb::Scheme>, Status> {
        in_scope(&request, &request.get_ref().program_id)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        schemes::create_scheme(self, &scope, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::get_scheme`].
    async fn get_scheme(&self, request: Request<pb::GetSchemeRequest>) -> Result<Response<pb::Scheme>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        schemes::get_scheme(self, &scope, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::set_scheme_rates`].
    async fn set_scheme_rates(
        &self,
        request: Request<pb::SetSchemeRatesRequest>,
    ) -> Result<Response<pb::Scheme>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        schemes::set_scheme_rates(self, &scope, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::assign_scheme`].
    async fn assign_scheme(
        &self,
        request: Request<pb::AssignSchemeRequest>,
    ) -> Result<Response<pb::SchemeAssignment>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        schemes::assign_scheme(self, &scope, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::get_scheme_chain`].
    async fn get_scheme_chain(
        &self,
        request: Request<pb::GetSchemeChainRequest>,
    ) -> Result<Response<pb::GetSchemeChainResponse>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        schemes::get_scheme_chain(self, &scope, request.into_inner()).await.map(Response::new)
    }
}

/// Asks the hierarchy for the uplines of `partners` (id and the request field
/// naming it), which also proves the program exists and each partner is one
/// of its own. NOT_FOUND PROGRAM_NOT_FOUND / PARTNER_NOT_FOUND names the
/// program or the partner — a partner of another program is answered
/// exactly as an unknown id (issue 10, issue 11 item 2); any other failure
/// is UNAVAILABLE (the caller needs the hierarchy's answer).
pub(super) async fn get_uplines(
    api: &CommissionApi,
    program_id: ProgramId,
    partners: &[(PartnerId, String)],
) -> Result<hpb::GetUplinesResponse, Status> {
    let request = hpb::GetUplinesRequest {
        program_id: program_id.to_string(),
        partner_ids: partners.iter().map(|(id, _)| id.to_string()).collect(),
    };
    let mut hierarchy = api.hierarchy.clone();
    match hierarchy.get_uplines(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::NotFound => {
            // The hierarchy names the missing partner by id in its message.
            let missing = partners.iter().find(|(id, _)| status.message().contains(&id.to_string()));
            Err(match missing {
                Some((id, field)) => accrue_kit::error::with_reason(
                    Code::NotFound,
                    "PARTNER_NOT_FOUND",
                    format!("partner {id} ({field}) not found in program {program_id}"),
                ),
                None => accrue_kit::error::with_reason(
                    Code::NotFound,
                    "PROGRAM_NOT_FOUND",
                    format!("program {program_id} not found"),
                ),
            })
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "hierarchy GetUplines failed");
            Err(Status::unavailable(format!("hierarchy service could not answer GetUplines: {}", status.message())))
        }
    }
}
