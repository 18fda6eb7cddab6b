//! Override plans on the wire ↔ [`OverridePlan`] (seed 004).

use accrue_kit::FieldViolations;
use accrue_kit::convert::{money_to_proto, optional_money, optional_uuid, require_uuid, timestamp};
use accrue_proto::commission::v1 as pb;
use accrue_types::{PartnerId, ProgramId};

use crate::domain::{
    MAX_VOLUME_WINDOW_DAYS, OverrideBasis, OverrideLevel, OverrideMode, OverridePlan, Qualification, VolumeRequirement,
};

use crate::api::agreements::codec::{Currencies, bounded_rate};

/// A decoded SetOverridePlan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanScope {
    /// Program.
    pub program_id: ProgramId,
    /// Upline partner; `None` for the program's plan.
    pub partner_id: Option<PartnerId>,
}

/// Decodes and validates an override plan (field paths under `plan.`): mode
/// required; basis defaults to DEAL_AMOUNT; at most 32 levels; PERCENTAGE levels
/// carry a rate in [0, 1] or nothing, FLAT levels a non-negative flat_amount or
/// nothing; an optional qualification (issue 16 item 3) as
/// [`decode_qualification`] checks it.
pub fn decode_plan(
    plan: Option<&pb::OverridePlan>,
    violations: &mut FieldViolations,
) -> Option<(PlanScope, OverridePlan)> {
    let Some(plan) = plan else {
        violations.add("plan", "is required");
        return None;
    };
    let program_id = require_uuid("plan.program_id", &plan.program_id, violations);
    let partner_id = optional_uuid("plan.partner_id", &plan.partner_id, violations);
    let mode = match pb::OverrideMode::try_from(plan.mode) {
        Ok(pb::OverrideMode::Percentage) => Some(OverrideMode::Percentage),
        Ok(pb::OverrideMode::Flat) => Some(OverrideMode::Flat),
        _ => {
            violations.add("plan.mode", "is required (PERCENTAGE or FLAT)");
            None
        }
    };
    let basis = match pb::OverrideBasis::try_from(plan.basis) {
        Ok(pb::OverrideBasis::Unspecified | pb::OverrideBasis::DealAmount) => Some(OverrideBasis::DealAmount),
        Ok(pb::OverrideBasis::BaseCommission) => Some(OverrideBasis::BaseCommission),
        Err(_) => {
            violations.add("plan.basis", format!("{} is not DEAL_AMOUNT or BASE_COMMISSION", plan.basis));
            None
        }
    };
    if plan.rates_by_level.len() > crate::domain::MAX_OVERRIDE_LEVELS {
        violations.add(
            "plan.rates_by_level",
            format!("at most {} levels, got {}", crate::domain::MAX_OVERRIDE_LEVELS, plan.rates_by_level.len()),
        );
    }
    let mut currencies = Currencies::default();
    let mut levels = Vec::with_capacity(plan.rates_by_level.len());
    for (index, level) in plan.rates_by_level.iter().enumerate() {
        let field = format!("plan.rates_by_level[{index}]");
        let has_rate = !level.rate.trim().is_empty();
        let flat = optional_money(&format!("{field}.flat_amount"), level.flat_amount.as_ref(), violations);
        let flat = currencies.non_negative(&format!("{field}.flat_amount"), flat, violations);
        let has_flat = level.flat_amount.as_ref().is_some_and(|m| !(m.amount.is_empty() && m.currency_code.is_empty()));
        let rate = if has_rate { bounded_rate(&format!("{field}.rate"), &level.rate, violations) } else { None };
        match mode {
            Some(OverrideMode::Percentage) if has_flat => {
                violations.add(format!("{field}.flat_amount"), "is only used by FLAT plans");
            }
            Some(OverrideMode::Flat) if has_rate => {
                violations.add(format!("{field}.rate"), "is only used by PERCENTAGE plans");
            }
            _ => {}
        }
        levels.push(OverrideLevel { rate, flat_amount: flat });
    }
    currencies.check_single(violations);
    let qualification = plan.qualification.as_ref().and_then(|q| decode_qualification(q, violations));
    if !violations.is_empty() {
        return None;
    }
    Some((
        PlanScope { program_id: program_id?, partner_id },
        OverridePlan { mode: mode?, basis: basis?, levels, qualification },
    ))
}

/// Decodes a plan's qualification (issue 16 item 3; field paths under
/// `plan.qualification.`): `min_personal_volume` ≥ 0 with at most its
/// currency's minor-unit decimals, and with it `volume_window_days` in
/// 1..=[`MAX_VOLUME_WINDOW_DAYS`] (0 without it); `min_active_direct_partners`
/// ≥ 0; at least one requirement set. Whether the volume's currency is the
/// program's is [`check_program_currency`]'s (it needs the program).
fn decode_qualification(q: &pb::OverrideQualification, violations: &mut FieldViolations) -> Option<Qualification> {
    const FIELD: &str = "plan.qualification";
    let volume = optional_money(&format!("{FIELD}.min_personal_volume"), q.min_personal_volume.as_ref(), violations);
    if let Some(volume) = volume
        && volume.amount.is_sign_negative()
        && !volume.amount.is_zero()
    {
        violations.add(format!("{FIELD}.min_personal_volume.amount"), "must not be negative");
    }
    let has_volume =
        q.min_personal_volume.as_ref().is_some_and(|m| !(m.amount.is_empty() && m.currency_code.is_empty()));
    let window = u32::try_from(q.volume_window_days).ok().filter(|days| (1..=MAX_VOLUME_WINDOW_DAYS).contains(days));
    if has_volume && window.is_none() {
        violations.add(
            format!("{FIELD}.volume_window_days"),
            format!("must be 1..{MAX_VOLUME_WINDOW_DAYS} days with min_personal_volume, got {}", q.volume_window_days),
        );
    }
    if !has_volume && q.volume_window_days != 0 {
        violations.add(format!("{FIELD}.volume_window_days"), "is only used with min_personal_volume (leave it 0)");
    }
    let partners = u32::try_from(q.min_active_direct_partners).ok();
    if partners.is_none() {
        violations.add(format!("{FIELD}.min_active_direct_partners"), "must not be negative");
    }
    if !has_volume && q.min_active_direct_partners == 0 {
        violations.add(
            FIELD,
            "sets no requirement: set min_personal_volume (with volume_window_days) or min_active_direct_partners > 0, \
             or leave qualification unset",
        );
    }
    let personal_volume = match (volume, window) {
        (Some(minimum), Some(window_days)) => Some(VolumeRequirement { minimum, window_days }),
        _ => None,
    };
    Some(Qualification { personal_volume, min_active_direct_partners: partners? })
}

/// A qualification's minimum personal volume must be in the program's
/// default currency (volume is only summed in one currency, never
/// converted): a violation at `plan.qualification.min_personal_volume.currency_code`.
pub fn check_program_currency(plan: &OverridePlan, program_currency: &str, violations: &mut FieldViolations) {
    if let Some(required) = plan.qualification.as_ref().and_then(|q| q.personal_volume)
        && required.minimum.currency.code() != program_currency
    {
        violations.add(
            "plan.qualification.min_personal_volume.currency_code",
            format!("is {} but the program's currency is {program_currency}", required.minimum.currency),
        );
    }
}

/// Encodes a qualification.
pub fn encode_qualification(q: &Qualification) -> pb::OverrideQualification {
    pb::OverrideQualification {
        min_personal_volume: q.personal_volume.map(|v| money_to_proto(v.minimum)),
        volume_window_days: q.personal_volume.map_or(0, |v| i32::try_from(v.window_days).unwrap_or(i32::MAX)),
        min_active_direct_partners: i32::try_from(q.min_active_direct_partners).unwrap_or(i32::MAX),
    }
}

/// Encodes a stored plan.
pub fn encode_plan(
    scope: &PlanScope,
    plan: &OverridePlan,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> pb::OverridePlan {
    pb::OverridePlan {
        program_id: scope.program_id.to_string(),
        partner_id: scope.partner_id.map(|p| p.to_string()).unwrap_or_default(),
        mode: match plan.mode {
            OverrideMode::Percentage => pb::OverrideMode::Percentage,
            OverrideMode::Flat => pb::OverrideMode::Flat,
        } as i32,
        basis: match plan.basis {
            OverrideBasis::DealAmount => pb::OverrideBasis::DealAmount,
            OverrideBasis::BaseCommission => pb::OverrideBasis::BaseCommission,
        } as i32,
        rates_by_level: plan
            .levels
            .iter()
            .map(|level| pb::OverrideLevel {
                rate: level.rate.map(|r| r.to_string()).unwrap_or_default(),
                flat_amount: level.flat_amount.map(money_to_proto),
            })
            .collect(),
        update_time: Some(timestamp(updated_at)),
        qualification: plan.qualification.as_ref().map(encode_qualification),
    }
}
