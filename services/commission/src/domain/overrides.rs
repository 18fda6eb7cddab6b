//! Upline overrides (seed 004; DESIGN §4 "Overrides"): paid on top of C to the
//! seller's ancestors, level by level up to the program's cap, each by its own
//! plan or the program's.
//!
//! Qualified overrides (issue 16 item 3): a plan may carry a [`Qualification`]
//! (personal volume over a trailing window, ACTIVE direct sub-partners). An
//! ancestor that is ACTIVE but does not qualify under its own plan (else the
//! program's) is treated exactly like one that is not ACTIVE, in the one walk
//! of [`override_lines`]: with the program's `compression_enabled` it is
//! skipped and the next ACTIVE, qualified ancestor takes the level; without
//! it, it forfeits its level. The facts come with the sale
//! ([`Sale::ancestor_facts`]); a sale that lacks some fails with
//! `QUALIFICATION_FACTS_REQUIRED` naming them ([`required_facts`]).

use std::collections::HashMap;

use accrue_money::Money;
use accrue_types::PartnerId;
use chrono::SecondsFormat;
use rust_decimal::Decimal;

use super::base::Base;
use super::rules::{OverrideBasis, OverrideMode, OverridePlan, Qualification, QualificationFacts};
use super::sale::{
    Breakdown, EarningKind, Failure, Line, PartnerRef, PartnerStatus, ProgramSettings, RequiredFacts, Sale, Settlement,
    mismatch, mul, rounding_text, show,
};

/// The override plans of one program.
#[derive(Debug, Clone, Default)]
pub struct OverridePlans {
    /// The program's plan.
    pub program: Option<OverridePlan>,
    /// Upline partners' own plans.
    pub partners: HashMap<PartnerId, OverridePlan>,
}

impl OverridePlans {
    /// The plan an ancestor is paid by — its own, else the program's — and
    /// which one it is ("partner" or "program").
    pub fn plan_of(&self, ancestor: PartnerId) -> Option<(&OverridePlan, &'static str)> {
        match self.partners.get(&ancestor) {
            Some(plan) => Some((plan, "partner")),
            None => self.program.as_ref().map(|plan| (plan, "program")),
        }
    }
}

/// The reason code of a settlement whose sale lacks qualification facts.
pub const QUALIFICATION_FACTS_REQUIRED: &str = "QUALIFICATION_FACTS_REQUIRED";

/// The ACTIVE ancestors of `sale` whose plan has a [`Qualification`] and whose
/// facts the sale does not carry (or carries for another window or currency),
/// nearest first: what the caller must gather before the sale can settle
/// (issue 16 item 3). Ancestors that are not ACTIVE need none (they are
/// skipped or forfeit on their status). Empty for programs without qualified
/// plans, so their sales never make a second trip.
pub fn required_facts(plans: &OverridePlans, sale: &Sale) -> Vec<RequiredFacts> {
    let mut needed: Vec<RequiredFacts> = Vec::new();
    for ancestor in sale.ancestors.iter().filter(|ancestor| ancestor.is(PartnerStatus::Active)) {
        let Some(qualification) = plans.plan_of(ancestor.id).and_then(|(plan, _)| plan.qualification.as_ref()) else {
            continue;
        };
        let facts = sale.ancestor_facts.get(&ancestor.id);
        if !has_facts(qualification, facts) && !needed.iter().any(|n| n.partner_id == ancestor.id) {
            needed.push(RequiredFacts { partner_id: ancestor.id, qualification: qualification.clone() });
        }
    }
    needed
}

/// Whether `facts` carry everything `qualification` is decided on.
fn has_facts(qualification: &Qualification, facts: Option<&QualificationFacts>) -> bool {
    let Some(facts) = facts else {
        return false;
    };
    let volume = qualification.personal_volume.is_none_or(|required| {
        facts.volume_window_days == required.window_days
            && facts.personal_volume.is_some_and(|volume| volume.currency == required.minimum.currency)
    });
    let partners = qualification.min_active_direct_partners == 0 || facts.active_direct_partners.is_some();
    volume && partners
}

/// Why a paid ancestor qualified: (breakdown input, value) pairs.
type Evidence = Vec<(&'static str, String)>;

/// An ACTIVE ancestor's standing under its plan: qualified with the
/// evidence, or not with why.
type Standing = Result<Evidence, String>;

/// Decides an ACTIVE ancestor's qualification under its plan: `Ok` with the
/// evidence a paid line's breakdown records (empty without a qualification),
/// `Err` with why it does not qualify, for the notes. Facts that are missing
/// here were missing from [`required_facts`] too: a failure.
fn qualify(qualification: Option<&Qualification>, ancestor: &PartnerRef, sale: &Sale) -> Result<Standing, Failure> {
    let Some(qualification) = qualification else {
        return Ok(Ok(Vec::new()));
    };
    let facts = sale.ancestor_facts.get(&ancestor.id).filter(|facts| has_facts(qualification, Some(facts)));
    let Some(facts) = facts else {
        return Err(Failure::precondition(
            QUALIFICATION_FACTS_REQUIRED,
            format!("the qualification facts of ancestor {} are missing", ancestor.id),
        ));
    };
    let at = sale.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut evidence = Vec::new();
    let mut shortfalls = Vec::new();
    if let (Some(required), Some(volume)) = (qualification.personal_volume, facts.personal_volume) {
        let text = format!(
            "personal volume {} {} in the {} days before {at}",
            volume.amount_string(),
            volume.currency,
            required.window_days
        );
        if volume.amount < required.minimum.amount {
            shortfalls.push(format!("{text} < {}", required.minimum.amount_string()));
        } else {
            evidence.push(("qualification.personal_volume", text));
            evidence.push((
                "qualification.min_personal_volume",
                format!("{} {}", required.minimum.amount_string(), required.minimum.currency),
            ));
        }
    }
    if qualification.min_active_direct_partners > 0 {
        let count = facts.active_direct_partners.unwrap_or(0);
        let text = format!("{count} ACTIVE direct sub-partners at {at}");
        if count < qualification.min_active_direct_partners {
            shortfalls.push(format!("{text} < {}", qualification.min_active_direct_partners));
        } else {
            evidence.push(("qualification.active_direct_partners", count.to_string()));
            evidence.push((
                "qualification.min_active_direct_partners",
                qualification.min_active_direct_partners.to_string(),
            ));
        }
    }
    Ok(if shortfalls.is_empty() { Ok(evidence) } else { Err(shortfalls.join("; ")) })
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
    // Unqualified ancestors compressed past since the last level, for the
    // next paid line's breakdown (the ledger keeps line breakdowns).
    let mut skipped: Vec<String> = Vec::new();
    for (position, ancestor) in sale.ancestors.iter().enumerate() {
        let active = ancestor.is(PartnerStatus::Active);
        let plan = plans.plan_of(ancestor.id);
        // An ACTIVE ancestor must also qualify under its plan (issue 16 item
        // 3); one that does not stands exactly where an inactive one does.
        let qualified = if active {
            qualify(plan.and_then(|(plan, _)| plan.qualification.as_ref()), ancestor, sale)?
        } else {
            Ok(Vec::new())
        };
        if program.compression_enabled {
            if !active {
                out.base_breakdown.add_note(format!(
                    "ancestor {} is {}: skipped (compression)",
                    ancestor.id,
                    ancestor.status_name()
                ));
                continue;
            }
            if let Err(why) = &qualified {
                let note = format!("ancestor {}: {why}: not qualified, skipped (compression)", ancestor.id);
                out.base_breakdown.add_note(&note);
                skipped.push(note);
                continue;
            }
            level += 1;
        } else {
            level = u32::try_from(position + 1).unwrap_or(u32::MAX);
        }
        // The unqualified ancestors this level compressed past.
        let compressed_past = std::mem::take(&mut skipped);
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
        let evidence = match qualified {
            Ok(evidence) => evidence,
            Err(why) => {
                out.base_breakdown.add_note(format!(
                    "level {level}: ancestor {}: {why}: not qualified, forfeits the level",
                    ancestor.id
                ));
                continue;
            }
        };
        let Some((plan, plan_scope)) = plan else {
            out.base_breakdown
                .add_note(format!("level {level}: no override plan for ancestor {} or the program", ancestor.id));
            continue;
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
        record_evidence(&mut breakdown, evidence);
        if !compressed_past.is_empty() {
            breakdown.input("qualification.skipped", compressed_past.join("; "));
        }
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

/// Writes why a paid ancestor qualified into its line's breakdown.
fn record_evidence(breakdown: &mut Breakdown, evidence: Evidence) {
    for (key, value) in evidence {
        breakdown.input(key, value);
    }
}
