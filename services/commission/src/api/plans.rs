//! SetOverridePlan (seed 004): a program's or an upline partner's plan.

pub(super) mod codec;

use accrue_kit::FieldViolations;
use accrue_proto::commission::v1 as pb;
use accrue_types::PartnerId;
use tonic::Status;

use super::{CommissionApi, check_request_id, get_uplines};
use crate::domain::OverridePlan;
use crate::store;

/// Validates and upserts the plan of its scope (INVALID_ARGUMENT with field
/// violations on bad input — including a qualification (issue 16 item 3)
/// with a negative volume, a window of 0 or over 3650 days, a volume in
/// another currency than the program's, or a negative minimum of sub-partners;
/// NOT_FOUND when the program does not exist or the partner is not one of
/// its own; nothing written on any error).
#[tracing::instrument(skip_all)]
pub(super) async fn set_override_plan(
    api: &CommissionApi,
    request: pb::SetOverridePlanRequest,
) -> Result<pb::OverridePlan, Status> {
    let mut violations = FieldViolations::new();
    let decoded = codec::decode_plan(request.plan.as_ref(), &mut violations);
    let request_id = check_request_id(&request.request_id, &mut violations);
    violations.into_result()?;
    let Some((scope, plan)) = decoded else {
        return Err(accrue_kit::internal("validated SetOverridePlan request lost the plan"));
    };
    // The program must exist and a partner plan's upline be one of its own.
    let partners: Vec<(PartnerId, String)> =
        scope.partner_id.map(|id| (id, "plan.partner_id".to_string())).into_iter().collect();
    let uplines = get_uplines(api, scope.program_id, &partners).await?;
    // A qualification's volume is in the program's currency (issue 16 item 3).
    let program = uplines.program.ok_or_else(|| accrue_kit::internal("hierarchy GetUplines returned no program"))?;
    let mut violations = FieldViolations::new();
    codec::check_program_currency(&plan, &program.default_currency, &mut violations);
    violations.into_result()?;
    let fingerprint = serde_json::to_string::<OverridePlan>(&plan).map_err(accrue_kit::internal)?;
    let stored = store::set_override_plan(
        &api.pool,
        scope.program_id,
        scope.partner_id,
        &plan,
        request_id.as_deref(),
        &fingerprint,
    )
    .await?;
    Ok(codec::encode_plan(&scope, &stored.plan, stored.updated_at))
}
