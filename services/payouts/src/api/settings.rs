//! Partner payout settings (issue 12 item 4): Set and Get.

// The API module's imports.
use super::*;

impl PayoutsApi {
    /// SetPartnerPayoutSettings: see the RPC's documentation in api.rs.
    pub(super) async fn set_settings(
        &self,
        request: Request<pb::SetPartnerPayoutSettingsRequest>,
    ) -> Result<Response<pb::PartnerPayoutSettings>, Status> {
        let actor = accrue_kit::auth::actor(&request)?;
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let settings = request.settings.ok_or_else(|| invalid_field("settings", "is required"))?;
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("settings.program_id", &settings.program_id, &mut violations);
        let partner_id = require_uuid::<PartnerId>("settings.partner_id", &settings.partner_id, &mut violations);
        let minimum = accrue_kit::convert::optional_money(
            "settings.minimum_amount",
            settings.minimum_amount.as_ref(),
            &mut violations,
        );
        if minimum.is_some_and(|m| m.amount < Decimal::ZERO) {
            violations.add("settings.minimum_amount.amount", "must not be negative");
        }
        let method = settings.payout_method.trim();
        if method.chars().count() > MAX_METHOD_CHARS {
            violations.add("settings.payout_method", format!("must be at most {MAX_METHOD_CHARS} characters"));
        }
        violations.into_result()?;
        let (Some(program_id), Some(partner_id)) = (program_id, partner_id) else {
            return Err(invalid_field("settings.program_id", "is required"));
        };
        scope.require_program(program_id)?;
        self.require_partner(program_id, partner_id).await?;
        let minimum = minimum.map(|m| (m.currency.code(), m.currency.rescale(m.amount)));
        let row =
            store::put_settings(&self.pool, program_id, partner_id, minimum, settings.hold, method, &actor).await?;
        Ok(Response::new(settings_to_proto(program_id, partner_id, Some(&row))?))
    }

    /// GetPartnerPayoutSettings: see the RPC's documentation in api.rs.
    pub(super) async fn settings(
        &self,
        request: Request<pb::GetPartnerPayoutSettingsRequest>,
    ) -> Result<Response<pb::PartnerPayoutSettings>, Status> {
        let scope = accrue_kit::auth::caller(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        let program_id = require_uuid::<ProgramId>("program_id", &request.program_id, &mut violations);
        let partner_id = require_uuid::<PartnerId>("partner_id", &request.partner_id, &mut violations);
        violations.into_result()?;
        let (Some(program_id), Some(partner_id)) = (program_id, partner_id) else {
            return Err(invalid_field("program_id", "is required"));
        };
        scope.require_program(program_id)?;
        if !scope.may_see(program_id, &[partner_id]) {
            return Err(not_found("partner", partner_id));
        }
        self.require_partner(program_id, partner_id).await?;
        let row = store::settings_of(&self.pool, program_id, &[partner_id]).await?.pop();
        Ok(Response::new(settings_to_proto(program_id, partner_id, row.as_ref())?))
    }
}
