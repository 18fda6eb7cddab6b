//! Base commission C (DESIGN §4 "Agreement"; seed 003): the agreement version
//! in force, its trigger, the raw commission by model, the customer's earlier
//! events under the agreement (setup fee, max_commissions,
//! max_duration_months), one rounding and the caps.

use accrue_money::Money;
use accrue_types::AgreementId;
use chrono::{DateTime, Months, TimeDelta, Utc};
use rust_decimal::Decimal;

use super::agreements::{AgreementBook, AgreementVersion};
use super::rules::{ConditionFacts, Model, TierPays};
use super::sale::{
    Breakdown, Failure, PartnerStatus, PriorEvent, ProgramSettings, Sale, Settlement, mismatch, mul, out_of_range,
    rounding_text, show,
};
use super::scheme::SchemeBook;

/// C of a sale whose agreement fired: the lines of the splits and overrides
/// are computed from it.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// The agreement version applied.
    pub version: &'a AgreementVersion,
    /// C, exact in the sale currency's minor unit (≥ 0).
    pub commission: Decimal,
    /// `occurred_at + clearance_days` of the version: when every line clears.
    pub clears_at: DateTime<Utc>,
}

impl Base<'_> {
    /// A line breakdown under this version (overrides start from it).
    pub(super) fn line_breakdown(&self, model: &str, rule: String) -> Breakdown {
        Breakdown { model: model.into(), rule, agreement_version_id: Some(self.version.id), ..Breakdown::default() }
    }
}

/// Steps 1–6 of [`super::settle`]: records C and the version in `out` and
/// explains it in `out.base_breakdown`. `None` when nothing posts (no version
/// in force, trigger not fired, seller TERMINATED).
pub fn base_commission<'a>(
    program: &ProgramSettings,
    book: &'a AgreementBook,
    schemes: &SchemeBook,
    sale: &Sale,
    out: &mut Settlement,
) -> Result<Option<Base<'a>>, Failure> {
    let currency = sale.amount.currency;
    let mode = program.rounding;
    let base = &mut out.base_breakdown;
    base.input("gross_amount", sale.amount.amount_string());
    base.input("currency", currency.code());
    base.input("event_type", sale.event_type.as_str());
    base.input("is_first_payment", sale.is_first_payment);

    // 1. The agreement version in force.
    let Some(version) = book.in_force(sale.seller.id, sale.occurred_at) else {
        base.model = "NONE".into();
        base.formula = "no agreement = 0".into();
        base.add_note("no agreement in force");
        return Ok(None);
    };
    let rules = &version.rules;
    out.agreement_version_id = Some(version.id);
    base.agreement_version_id = Some(version.id);
    base.model = rules.model.as_str().into();
    base.input("trigger", rules.trigger.as_str());
    base.input("agreement_id", version.agreement_id);
    base.input("agreement_version", version.version);
    base.input("agreement_scope", if version.partner_id.is_some() { "partner" } else { "program default" });

    // 2. The trigger.
    if !rules.trigger.fires(sale.event_type, sale.is_first_payment) {
        base.formula = "trigger not fired = 0".into();
        base.add_note(format!(
            "trigger {} does not fire for a {} event{}",
            rules.trigger.as_str(),
            sale.event_type.as_str(),
            if sale.event_type.is_payment() && !sale.is_first_payment { " that is not the first payment" } else { "" }
        ));
        return Ok(None);
    }

    // 3. A terminated seller earns nothing new.
    if sale.seller.is(PartnerStatus::Terminated) {
        base.formula = "seller terminated = 0".into();
        base.add_note(format!("seller {} is TERMINATED: no lines", sale.seller.id));
        return Ok(None);
    }

    // 4. The raw commission.
    let raw = raw_commission(&rules.model, sale)?;
    for (name, value) in &raw.inputs {
        base.input(name, value);
    }
    base.rule = raw.rule.clone();
    if let Some(note) = &raw.note {
        base.add_note(note);
    }

    // 5. Per-customer facts.
    let firing = prior_firing_events(book, schemes, version.agreement_id, sale);
    base.input("prior_firing_events", firing.len());
    let mut limited = None;
    if rules.max_commissions > 0 && firing.len() >= rules.max_commissions as usize {
        base.input("max_commissions", rules.max_commissions);
        limited = Some(format!(
            "max_commissions {} reached ({} earlier commissioned events for this customer)",
            rules.max_commissions,
            firing.len()
        ));
    } else if rules.max_duration_months > 0
        && let Some(first) = firing.iter().map(|event| event.occurred_at).min()
    {
        base.input("max_duration_months", rules.max_duration_months);
        base.input("first_commissioned_at", first.to_rfc3339());
        if let Some(end) = first.checked_add_months(Months::new(rules.max_duration_months))
            && sale.occurred_at >= end
        {
            limited = Some(format!(
                "max_duration_months {} passed: first commissioned event {} + {} months = {}",
                rules.max_duration_months,
                first.to_rfc3339(),
                rules.max_duration_months,
                end.to_rfc3339()
            ));
        }
    }
    let setup_fee = match (&rules.setup_fee, firing.is_empty()) {
        (Some(fee), true) => {
            if fee.currency != currency {
                return Err(mismatch("setup_fee", fee.currency, currency));
            }
            base.input("setup_fee", fee.amount_string());
            Some(fee.amount)
        }
        _ => None,
    };

    // 6. C = round(raw + setup fee), then caps.
    let commission = if let Some(reason) = limited {
        base.formula = format!("{}; limited = 0", raw.formula);
        base.add_note(reason);
        Decimal::ZERO
    } else {
        let unrounded = raw.amount.checked_add(setup_fee.unwrap_or(Decimal::ZERO)).ok_or_else(out_of_range)?;
        let rounded = currency.round(unrounded, mode);
        base.rounding = rounding_text(currency, mode, unrounded, rounded);
        let mut formula = raw.formula.clone();
        if let Some(fee) = setup_fee {
            formula.push_str(&format!(" + setup_fee {} = {}", show(currency, fee), show(currency, unrounded)));
        }
        formula.push_str(&format!(" → {rounded}"));
        let mut commission = rounded;
        if commission > Decimal::ZERO {
            if let Some(min) = rules.min_commission {
                if min.currency != currency {
                    return Err(mismatch("min_commission", min.currency, currency));
                }
                base.input("min_commission", min.amount_string());
                if commission < min.amount {
                    commission = min.amount;
                    formula.push_str(&format!("; raised to min_commission {}", min.amount_string()));
                }
            }
            if let Some(max) = rules.max_commission {
                if max.currency != currency {
                    return Err(mismatch("max_commission", max.currency, currency));
                }
                base.input("max_commission", max.amount_string());
                if commission > max.amount {
                    commission = max.amount;
                    formula.push_str(&format!("; capped at max_commission {}", max.amount_string()));
                }
            }
        }
        base.formula = formula;
        currency.rescale(commission)
    };
    out.base_commission = Some(Money { amount: commission, currency });
    let clears_at = sale
        .occurred_at
        .checked_add_signed(TimeDelta::days(i64::from(rules.clearance_days)))
        .ok_or_else(|| Failure::invalid("TIME_OUT_OF_RANGE", "occurred_at + clearance_days is out of range"))?;
    Ok(Some(Base { version, commission, clears_at }))
}

/// The raw (unrounded) commission of a model.
struct Raw {
    amount: Decimal,
    formula: String,
    rule: String,
    note: Option<String>,
    inputs: Vec<(String, String)>,
}

fn tier_volume(sale: &Sale) -> Result<Decimal, Failure> {
    match sale.seller_prior_volume {
        None => Ok(Decimal::ZERO),
        Some(volume) if volume.currency == sale.amount.currency => Ok(volume.amount),
        Some(volume) => Err(mismatch("seller_prior_volume", volume.currency, sale.amount.currency)),
    }
}

fn raw_commission(model: &Model, sale: &Sale) -> Result<Raw, Failure> {
    let currency = sale.amount.currency;
    let gross = sale.amount.amount;
    match model {
        Model::Percentage { rate } => {
            let amount = mul(gross, *rate)?;
            Ok(Raw {
                amount,
                formula: format!("{} × {} = {}", show(currency, gross), rate, show(currency, amount)),
                rule: String::new(),
                note: None,
                inputs: vec![("rate".into(), rate.to_string())],
            })
        }
        Model::Fixed { fixed_amount } => {
            if fixed_amount.currency != currency {
                return Err(mismatch("fixed_amount", fixed_amount.currency, currency));
            }
            Ok(Raw {
                amount: fixed_amount.amount,
                formula: format!("fixed {}", fixed_amount.amount_string()),
                rule: String::new(),
                note: None,
                inputs: vec![("fixed_amount".into(), fixed_amount.amount_string())],
            })
        }
        Model::Tiered { tiers } => {
            let volume = tier_volume(sale)?;
            let mut inputs = vec![("seller_prior_volume".into(), show(currency, volume))];
            let Some((index, tier)) = tiers.iter().enumerate().find(|(_, tier)| tier.contains(volume)) else {
                return Ok(Raw {
                    amount: Decimal::ZERO,
                    formula: "no tier holds the prior volume = 0".into(),
                    rule: "no tier".into(),
                    note: Some(format!("no tier holds seller prior volume {}", show(currency, volume))),
                    inputs,
                });
            };
            let bounds = format!(
                "[{}, {})",
                tier.min_volume,
                tier.max_volume.map_or_else(|| "∞".to_string(), |max| max.to_string())
            );
            inputs.push(("tier".into(), bounds.clone()));
            let (amount, formula) = match &tier.pays {
                TierPays::Rate(rate) => {
                    inputs.push(("rate".into(), rate.to_string()));
                    let amount = mul(gross, *rate)?;
                    (
                        amount,
                        format!(
                            "tier[{index}] {bounds}: {} × {} = {}",
                            show(currency, gross),
                            rate,
                            show(currency, amount)
                        ),
                    )
                }
                TierPays::FixedAmount(fixed) => {
                    if fixed.currency != currency {
                        return Err(mismatch(&format!("tier[{index}].fixed_amount"), fixed.currency, currency));
                    }
                    inputs.push(("fixed_amount".into(), fixed.amount_string()));
                    (fixed.amount, format!("tier[{index}] {bounds}: fixed {}", fixed.amount_string()))
                }
            };
            Ok(Raw { amount, formula, rule: format!("tier[{index}]"), note: None, inputs })
        }
        Model::Hybrid { rules } => {
            let facts = ConditionFacts {
                event_type: sale.event_type,
                gross_amount: gross,
                product_code: &sale.product_code,
                is_first_payment: sale.is_first_payment,
            };
            let Some((index, rule)) = rules.iter().enumerate().find(|(_, rule)| rule.condition.matches(&facts)) else {
                return Ok(Raw {
                    amount: Decimal::ZERO,
                    formula: "no rule matched = 0".into(),
                    rule: "no rule".into(),
                    note: Some("no HYBRID rule matched the sale".into()),
                    inputs: Vec::new(),
                });
            };
            if matches!(rule.model, Model::Hybrid { .. }) {
                return Err(Failure::precondition("INVALID_AGREEMENT", format!("HYBRID rule[{index}] nests HYBRID")));
            }
            let inner = raw_commission(&rule.model, sale)?;
            let chosen =
                if inner.rule.is_empty() { format!("rule[{index}]") } else { format!("rule[{index}] {}", inner.rule) };
            let mut inputs = inner.inputs;
            inputs.push(("condition".into(), rule.condition.describe()));
            inputs.push(("rule_model".into(), rule.model.as_str().into()));
            Ok(Raw {
                amount: inner.amount,
                formula: format!(
                    "rule[{index}] ({}) {}: {}",
                    rule.condition.describe(),
                    rule.model.as_str(),
                    inner.formula
                ),
                rule: chosen,
                note: inner.note,
                inputs,
            })
        }
    }
}

/// The prior events of the customer that fired the trigger of a version of
/// agreement `agreement_id` (the set F of DESIGN §4): for each earlier event,
/// the version that applied to it is its seller's agreement in force at its
/// `occurred_at`, else the program default's; for ON_ACTIVATION an earlier
/// event is a first payment when no PAYMENT/RENEWAL precedes it in the history.
/// An earlier event whose service code `schemes` manages applied no agreement
/// and is never in F, though it still is a payment for the first-payment test.
pub fn prior_firing_events<'a>(
    book: &AgreementBook,
    schemes: &SchemeBook,
    agreement_id: AgreementId,
    sale: &'a Sale,
) -> Vec<&'a PriorEvent> {
    let mut seen_payment = false;
    let mut firing = Vec::new();
    for event in &sale.customer_history {
        if event.sale_id == sale.sale_id {
            continue;
        }
        let is_first_payment = event.event_type.is_payment() && !seen_payment;
        seen_payment |= event.event_type.is_payment();
        // A scheme-managed sale consulted no agreement; it still was a payment
        // (counted just above) but fired nothing.
        if schemes.manages(&event.service_code) {
            continue;
        }
        let Some(version) = book.in_force(event.seller_partner_id, event.occurred_at) else {
            continue;
        };
        if version.agreement_id == agreement_id && version.rules.trigger.fires(event.event_type, is_first_payment) {
            firing.push(event);
        }
    }
    firing
}
