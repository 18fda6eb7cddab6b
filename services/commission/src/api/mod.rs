//! tonic implementation of `CommissionService`: decode and validate, call the
//! store and the pure domain, encode. Agreements, override plans and
//! ComputeSettlements live here; [`schemes`] holds the scheme RPCs and
//! [`quote`] QuoteSale and GetAgreementInForce.

mod quote;
mod schemes;

use accrue_kit::FieldViolations;
use accrue_kit::convert::{optional_uuid, require_uuid, timestamp};
use accrue_proto::commission::v1 as pb;
use accrue_proto::commission::v1::commission_service_server::CommissionService;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::{self, MAX_REQUEST_ID_LEN, MAX_SALES_PER_CALL};
use crate::domain::{self, AgreementBook, AgreementRules, OverridePlan, ProgramSettings};
use crate::scheme_store;
use crate::store::{self, NewVersion, StoredVersion};

/// The `CommissionService` implementation.
#[derive(Debug, Clone)]
pub struct CommissionApi {
    pool: PgPool,
    hierarchy: HierarchyServiceClient<Channel>,
}

/// A draft agreement that QuoteSale applies to one seller in place of the
/// version in force (never stored).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// The seller it applies to.
    pub seller: Uuid,
    /// The validated draft rules.
    pub rules: AgreementRules,
}

impl CommissionApi {
    /// A new API over the service's pool and a client of the hierarchy service.
    pub fn new(pool: PgPool, hierarchy: HierarchyServiceClient<Channel>) -> Self {
        CommissionApi { pool, hierarchy }
    }

    /// Settles wire sales of one program: decodes each (a malformed sale is
    /// its own INVALID_ARGUMENT failure), loads the agreement versions,
    /// override plans and schemes it needs in a few queries, then computes each
    /// sale purely. Shared by ComputeSettlements and QuoteSale so a quote is
    /// exactly what settlement would post.
    pub(crate) async fn settle_sales(
        &self,
        program_id: Uuid,
        settings: &ProgramSettings,
        wire: &[pb::SaleContext],
        draft: Option<&Draft>,
    ) -> Result<Vec<pb::Settlement>, Status> {
        let sales: Vec<_> = wire.iter().enumerate().map(|(index, sale)| convert::decode_sale(index, sale)).collect();
        let (sellers, uplines) = convert::referenced_partners(&sales);
        let mut book = AgreementBook::new(store::load_versions(&self.pool, program_id, &sellers).await?);
        if let Some(draft) = draft {
            book = book.with_draft(draft.seller, draft.rules.clone());
        }
        let plans = store::load_plans(&self.pool, program_id, &uplines).await?;
        let schemes = scheme_store::load_book(&self.pool, program_id, &sales).await?;
        Ok(sales
            .into_iter()
            .zip(wire)
            .map(|(sale, wire)| {
                let settlement = match sale {
                    Ok(sale) => domain::settle(settings, &book, &plans, &schemes, &sale),
                    Err(failure) => convert::failed_settlement(&wire.sale_id, failure),
                };
                convert::encode_settlement(settlement)
            })
            .collect())
    }
}

fn check_request_id(request_id: &str, violations: &mut FieldViolations) -> Option<String> {
    if request_id.len() > MAX_REQUEST_ID_LEN {
        violations.add("request_id", format!("must be at most {MAX_REQUEST_ID_LEN} bytes"));
    }
    (!request_id.is_empty()).then(|| request_id.to_string())
}

/// Canonical form of a CreateAgreement request, compared when a `request_id` repeats.
#[derive(Serialize)]
struct AgreementFingerprint<'a> {
    partner_id: Option<Uuid>,
    effective_from: Option<DateTime<Utc>>,
    rules: &'a AgreementRules,
}

/// Keyset cursor of ListAgreementVersions (the page token binds it to its scope).
#[derive(Serialize, Deserialize)]
struct VersionCursor {
    after_version: i32,
}

fn encode_version(stored: &StoredVersion) -> pb::AgreementVersion {
    let version = &stored.version;
    pb::AgreementVersion {
        id: version.id.to_string(),
        agreement_id: version.agreement_id.to_string(),
        program_id: stored.program_id.to_string(),
        partner_id: version.partner_id.map(|id| id.to_string()).unwrap_or_default(),
        version: version.version,
        effective_from: Some(timestamp(version.effective_from)),
        rules: Some(convert::encode_rules(&version.rules)),
        create_time: Some(timestamp(stored.created_at)),
    }
}

#[tonic::async_trait]
impl CommissionService for CommissionApi {
    /// Validates the rules (every violation reported together, INVALID_ARGUMENT)
    /// and inserts the next version of the scope's agreement. `effective_from`
    /// unset = now. Repeating a `request_id` returns the stored version; reusing
    /// it for a different request is ALREADY_EXISTS (`REQUEST_ID_REUSED`).
    #[tracing::instrument(skip_all, fields(program_id = %request.get_ref().program_id))]
    async fn create_agreement(
        &self,
        request: Request<pb::CreateAgreementRequest>,
    ) -> Result<Response<pb::AgreementVersion>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
        let effective_from = convert::decode_effective_from(request.effective_from.as_ref(), &mut violations);
        let request_id = check_request_id(&request.request_id, &mut violations);
        let rules = convert::decode_rules(request.rules.as_ref(), &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(rules)) = (program_id, rules) else {
            return Err(accrue_kit::internal("validated CreateAgreement request lost a field"));
        };
        let fingerprint = serde_json::to_string(&AgreementFingerprint { partner_id, effective_from, rules: &rules })
            .map_err(accrue_kit::internal)?;
        let effective_from = effective_from.unwrap_or_else(Utc::now).trunc_subsecs(6);
        let stored = store::create_agreement_version(
            &self.pool,
            &NewVersion {
                program_id,
                partner_id,
                effective_from,
                rules: &rules,
                request_id: request_id.as_deref(),
                fingerprint: &fingerprint,
            },
        )
        .await?;
        Ok(Response::new(encode_version(&stored)))
    }

    /// Lists a scope's versions oldest first (by version number); a scope
    /// without an agreement lists nothing.
    #[tracing::instrument(skip_all, fields(program_id = %request.get_ref().program_id))]
    async fn list_agreement_versions(
        &self,
        request: Request<pb::ListAgreementVersionsRequest>,
    ) -> Result<Response<pb::ListAgreementVersionsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid("program_id", &request.program_id, &mut violations);
        let partner_id = optional_uuid("partner_id", &request.partner_id, &mut violations);
        if request.page_size < 0 {
            violations.add("page_size", "must not be negative");
        }
        violations.into_result()?;
        let Some(program_id) = program_id else {
            return Err(accrue_kit::internal("validated ListAgreementVersions request lost program_id"));
        };
        let page_size = accrue_kit::page::page_size(request.page_size)?;
        let query = format!("versions|{program_id}|{partner_id:?}");
        let after = accrue_kit::page::decode::<VersionCursor>(&query, &request.page_token)?
            .map_or(0, |cursor| cursor.after_version);
        let mut versions = store::list_versions(&self.pool, program_id, partner_id, after, page_size + 1).await?;
        let next_page_token = if versions.len() as i64 > page_size {
            versions.truncate(page_size as usize);
            versions
                .last()
                .map(|last| accrue_kit::page::encode(&query, &VersionCursor { after_version: last.version.version }))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAgreementVersionsResponse {
            versions: versions.iter().map(encode_version).collect(),
            next_page_token,
        }))
    }

    /// Validates and upserts the plan of its scope (INVALID_ARGUMENT with field
    /// violations on bad input; nothing written).
    #[tracing::instrument(skip_all)]
    async fn set_override_plan(
        &self,
        request: Request<pb::SetOverridePlanRequest>,
    ) -> Result<Response<pb::OverridePlan>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let decoded = convert::decode_plan(request.plan.as_ref(), &mut violations);
        let request_id = check_request_id(&request.request_id, &mut violations);
        violations.into_result()?;
        let Some((scope, plan)) = decoded else {
            return Err(accrue_kit::internal("validated SetOverridePlan request lost the plan"));
        };
        let fingerprint = serde_json::to_string::<OverridePlan>(&plan).map_err(accrue_kit::internal)?;
        let stored = store::set_override_plan(
            &self.pool,
            scope.program_id,
            scope.partner_id,
            &plan,
            request_id.as_deref(),
            &fingerprint,
        )
        .await?;
        Ok(Response::new(convert::encode_plan(&scope, &stored.plan, stored.updated_at)))
    }

    /// Settles up to 1000 sales: loads the program's agreement versions and
    /// override plans in two queries, then computes each sale purely.
    /// Request-level problems are INVALID_ARGUMENT; a sale's own problem is its
    /// `Settlement.failure`.
    #[tracing::instrument(skip_all, fields(sales = request.get_ref().sales.len()))]
    async fn compute_settlements(
        &self,
        request: Request<pb::ComputeSettlementsRequest>,
    ) -> Result<Response<pb::ComputeSettlementsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program = convert::decode_program(request.program.as_ref(), &mut violations);
        if request.sales.len() > MAX_SALES_PER_CALL {
            violations
                .add("sales", format!("at most {MAX_SALES_PER_CALL} sales per call, got {}", request.sales.len()));
        }
        violations.into_result()?;
        let Some((program_id, settings)) = program else {
            return Err(accrue_kit::internal("validated ComputeSettlements request lost the program"));
        };
        if request.sales.is_empty() {
            return Ok(Response::new(pb::ComputeSettlementsResponse { settlements: Vec::new() }));
        }
        let settlements = self.settle_sales(program_id, &settings, &request.sales, None).await?;
        Ok(Response::new(pb::ComputeSettlementsResponse { settlements }))
    }

    /// See [`quote::get_agreement_in_force`].
    async fn get_agreement_in_force(
        &self,
        request: Request<pb::GetAgreementInForceRequest>,
    ) -> Result<Response<pb::AgreementVersion>, Status> {
        quote::get_agreement_in_force(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`quote::quote_sale`].
    async fn quote_sale(
        &self,
        request: Request<pb::QuoteSaleRequest>,
    ) -> Result<Response<pb::QuoteSaleResponse>, Status> {
        quote::quote_sale(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::create_scheme`].
    async fn create_scheme(&self, request: Request<pb::CreateSchemeRequest>) -> Result<Response<pb::Scheme>, Status> {
        schemes::create_scheme(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::get_scheme`].
    async fn get_scheme(&self, request: Request<pb::GetSchemeRequest>) -> Result<Response<pb::Scheme>, Status> {
        schemes::get_scheme(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::set_scheme_rates`].
    async fn set_scheme_rates(
        &self,
        request: Request<pb::SetSchemeRatesRequest>,
    ) -> Result<Response<pb::Scheme>, Status> {
        schemes::set_scheme_rates(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::assign_scheme`].
    async fn assign_scheme(
        &self,
        request: Request<pb::AssignSchemeRequest>,
    ) -> Result<Response<pb::SchemeAssignment>, Status> {
        schemes::assign_scheme(self, request.into_inner()).await.map(Response::new)
    }

    /// See [`schemes::get_scheme_chain`].
    async fn get_scheme_chain(
        &self,
        request: Request<pb::GetSchemeChainRequest>,
    ) -> Result<Response<pb::GetSchemeChainResponse>, Status> {
        schemes::get_scheme_chain(self, request.into_inner()).await.map(Response::new)
    }
}
