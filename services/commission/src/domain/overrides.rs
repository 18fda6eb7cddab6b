//! Upline overrides (seed 004; DESIGN §4 "Overrides"): paid on top of C to the
//! seller's ancestors, level by level up to the program's cap, each by its own
//! plan or the program's.

use std::collections::HashMap;

use accrue_money::Money;
use accrue_types::PartnerId;
use rust_decimal::Decimal;

use super::base::Base;
use super::rules::{OverrideBasis, OverrideMode, OverridePlan};
use super::sale::{
    EarningKind, Failure, Line, PartnerStatus, ProgramSettings, Sale, Settlement, mismatch, mul, rounding_text, show,
};

/// The override plans of one program.
#[derive(Debug, Clone, Default)]
pub struct OverridePlans {
    /// The program's plan.
    pub program: Option<OverridePlan>,
    /// Upline partners' own plans.
    pub partners: HashMap<PartnerId, OverridePlan>,
}

/// The OVERRIDE lines of a sale whose agreement fired, by level; why a level
/// pays nothing is noted in `out.base_breakdown`.
pub fn override_lines(
    program: &ProgramSettings,
    plans: &OverridePlans,
    sale: &Sale,
    base: &Base<'_>,
    out: &mut Settlement,
) -> Result<Vec<Line>, Failure> {
    let currency = sale.amount.currency;
    let mode = program.rounding;
    let gross = sale.amount.amount;
    let commission = base.commission;
    let clears_at = base.clears_at;
    let mut lines = Vec::new();
    // 8. Overrides, on top of C.
    let cap = program.override_depth_cap;
    let mut level: u32 = 0;
    for (position, ancestor) in sale.ancestors.iter().enumerate() {
        let active = ancestor.is(PartnerStatus::Active);
        if program.compression_enabled {
            if !active {
                out.base_breakdown.add_note(format!(
                    "ancestor {} is {}: skipped (compression)",
                    ancestor.id,
                    ancestor.status_name()
                ));
                continue;
            }
            level += 1;
        } else {
            level = u32::try_from(position + 1).unwrap_or(u32::MAX);
        }
        if level > cap {
            break;
        }
        if !active {
            out.base_breakdown.add_note(format!(
                "level {level}: ancestor {} is {} and forfeits the level",
                ancestor.id,
                ancestor.status_name()
            ));
            continue;
        }
        let (plan, plan_scope) = match plans.partners.get(&ancestor.id) {
            Some(plan) => (plan, "partner"),
            None => match &plans.program {
                Some(plan) => (plan, "program"),
                None => {
                    out.base_breakdown.add_note(format!(
                        "level {level}: no override plan for ancestor {} or the program",
                        ancestor.id
                    ));
                    continue;
                }
            },
        };
        let entry = plan.levels.get(level as usize - 1);
        let mut breakdown = base.line_breakdown(
            match plan.mode {
                OverrideMode::Percentage => "OVERRIDE_PERCENTAGE",
                OverrideMode::Flat => "OVERRIDE_FLAT",
            },
            format!("level {level}"),
        );
        breakdown.input("plan", plan_scope);
        breakdown.input("ancestor_position", position + 1);
        let amount = match plan.mode {
            OverrideMode::Percentage => {
                let Some(rate) = entry.and_then(|entry| entry.rate) else {
                    tracing::debug!(ancestor = %ancestor.id, level, plan = plan_scope, "no override rate for level");
                    out.base_breakdown.add_note(format!(
                        "level {level}: the {plan_scope} plan of ancestor {} has no rate for level {level}",
                        ancestor.id
                    ));
                    continue;
                };
                let basis = match plan.basis {
                    OverrideBasis::DealAmount => gross,
                    OverrideBasis::BaseCommission => commission,
                };
                let unrounded = mul(basis, rate)?;
                let rounded = currency.round(unrounded, mode);
                breakdown.formula = format!(
                    "{} {} × {} = {} → {}",
                    plan.basis.as_str(),
                    show(currency, basis),
                    rate,
                    show(currency, unrounded),
                    rounded
                );
                breakdown.input("basis", plan.basis.as_str());
                breakdown.input("basis_amount", show(currency, basis));
                breakdown.input("rate", rate);
                breakdown.rounding = rounding_text(currency, mode, unrounded, rounded);
                rounded
            }
            OverrideMode::Flat => {
                let Some(flat) = entry.and_then(|entry| entry.flat_amount) else {
                    tracing::debug!(ancestor = %ancestor.id, level, plan = plan_scope, "no override flat amount for level");
                    out.base_breakdown.add_note(format!(
                        "level {level}: the {plan_scope} plan of ancestor {} has no flat amount for level {level}",
                        ancestor.id
                    ));
                    continue;
                };
                if flat.currency != currency {
                    return Err(mismatch(&format!("override flat_amount (level {level})"), flat.currency, currency));
                }
                breakdown.formula = format!("flat {}", flat.amount_string());
                breakdown.input("flat_amount", flat.amount_string());
                breakdown.rounding = "none (exact flat amount)".into();
                flat.amount
            }
        };
        if amount > Decimal::ZERO {
            lines.push(Line {
                partner_id: ancestor.id,
                kind: EarningKind::Override,
                amount: Money { amount: currency.rescale(amount), currency },
                level,
                source_partner_id: Some(sale.seller.id),
                clears_at,
                breakdown: Some(breakdown),
            });
        } else {
            out.base_breakdown.add_note(format!("level {level}: override is 0, no line"));
        }
    }
    Ok(lines)
}
