//! Wire ↔ domain: decodes and validates requests into [`crate::domain`] values
//! (every violation collected, none short-circuits) and encodes results.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{
    amount_to_proto, from_timestamp, money_to_proto, optional_money, optional_uuid, parse_rate, require_money,
    require_timestamp, require_uuid, timestamp,
};
use accrue_money::{Currency, Money, RoundingMode};
use accrue_proto::commission::v1 as pb;
use accrue_proto::types::v1 as types;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{
    AgreementRules, Breakdown, Condition, Failure, Line, LineKind, MAX_SERVICE_CODE_LEN, Model, Operator,
    OverrideBasis, OverrideLevel, OverrideMode, OverridePlan, PartnerRef, PartnerStatus, PriorEvent, ProgramSettings,
    RateChange, RateKey, Sale, SaleEventType, Scheme, Settlement, SplitShare, Tier, TierPays, Trigger,
    valid_service_code,
};

/// Most days an agreement may hold entries before they clear.
pub const MAX_CLEARANCE_DAYS: i32 = 3650;
/// Most sales one ComputeSettlements call takes.
pub const MAX_SALES_PER_CALL: usize = 1000;
/// Depth cap used when a ProgramContext leaves it 0 (the hierarchy default).
pub const DEFAULT_OVERRIDE_DEPTH_CAP: u32 = 8;
/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// Parses a plain decimal ("12.5", "-3", no exponent, no separators).
fn parse_decimal(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Decimal> {
    let trimmed = value.trim();
    let plain = !trimmed.is_empty()
        && trimmed.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || c == '.' || (i == 0 && c == '-'));
    match trimmed.parse::<Decimal>() {
        Ok(number) if plain => Some(number),
        _ => {
            violations.add(field, format!("{value:?} is not a decimal number (e.g. \"10000.00\")"));
            None
        }
    }
}

/// Collects every money field of an agreement so all can be checked to share one currency.
#[derive(Default)]
struct Currencies(Vec<(String, Currency)>);

impl Currencies {
    fn non_negative(&mut self, field: &str, money: Option<Money>, violations: &mut FieldViolations) -> Option<Money> {
        let money = money?;
        if money.amount.is_sign_negative() && !money.amount.is_zero() {
            violations.add(format!("{field}.amount"), "must not be negative");
            return None;
        }
        self.0.push((field.to_string(), money.currency));
        Some(money)
    }

    fn check_single(&self, violations: &mut FieldViolations) {
        let Some((first_field, first)) = self.0.first() else { return };
        for (field, currency) in &self.0[1..] {
            if currency != first {
                violations.add(
                    format!("{field}.currency_code"),
                    format!("is {currency} but {first_field} is {first}; an agreement uses one currency"),
                );
            }
        }
    }
}

fn decode_rate(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Decimal> {
    if value.trim().is_empty() {
        violations.add(field, "is required (a rate in [0, 1], e.g. \"0.10\")");
        return None;
    }
    bounded_rate(field, value, violations)
}

/// Most decimal places a rate may carry, so that amount × rate is always exact
/// in `Decimal` (no silent precision loss before the one rounding).
pub const MAX_RATE_DECIMALS: u32 = 10;

/// A rate in [0, 1] with at most [`MAX_RATE_DECIMALS`] decimals (trailing zeros ignored).
fn bounded_rate(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Decimal> {
    let rate = parse_rate(field, value, violations)?;
    if rate.normalize().scale() > MAX_RATE_DECIMALS {
        violations.add(field, format!("rate {value:?} has more than {MAX_RATE_DECIMALS} decimal places"));
        return None;
    }
    Some(rate)
}

fn decode_tiers(
    prefix: &str,
    tiers: &[pb::Tier],
    currencies: &mut Currencies,
    violations: &mut FieldViolations,
) -> Option<Vec<Tier>> {
    if tiers.is_empty() {
        violations.add(format!("{prefix}.tiers"), "TIERED needs at least one tier");
        return None;
    }
    let mut decoded = Vec::with_capacity(tiers.len());
    let mut bounds: Vec<Option<(Decimal, Option<Decimal>)>> = Vec::with_capacity(tiers.len());
    let mut ok = true;
    for (index, tier) in tiers.iter().enumerate() {
        let field = format!("{prefix}.tiers[{index}]");
        let min = if tier.min_volume.trim().is_empty() {
            violations.add(format!("{field}.min_volume"), "is required");
            None
        } else {
            parse_decimal(&format!("{field}.min_volume"), &tier.min_volume, violations)
        };
        let max = if tier.max_volume.trim().is_empty() {
            Some(None)
        } else {
            parse_decimal(&format!("{field}.max_volume"), &tier.max_volume, violations).map(Some)
        };
        if let Some(min) = min
            && min.is_sign_negative()
            && !min.is_zero()
        {
            violations.add(format!("{field}.min_volume"), "must not be negative");
        }
        if let (Some(min), Some(Some(max))) = (min, max)
            && max <= min
        {
            violations.add(format!("{field}.max_volume"), format!("must be greater than min_volume {min}"));
        }
        let has_rate = !tier.rate.trim().is_empty();
        let has_fixed =
            tier.fixed_amount.as_ref().is_some_and(|m| !(m.amount.is_empty() && m.currency_code.is_empty()));
        let pays = match (has_rate, has_fixed) {
            (true, false) => bounded_rate(&format!("{field}.rate"), &tier.rate, violations).map(TierPays::Rate),
            (false, true) => {
                let money = require_money(&format!("{field}.fixed_amount"), tier.fixed_amount.as_ref(), violations);
                currencies.non_negative(&format!("{field}.fixed_amount"), money, violations).map(TierPays::FixedAmount)
            }
            _ => {
                violations.add(field.clone(), "a tier needs exactly one of rate or fixed_amount");
                None
            }
        };
        bounds.push(min.zip(max));
        match (min, max, pays) {
            (Some(min_volume), Some(max_volume), Some(pays)) => decoded.push(Tier { min_volume, max_volume, pays }),
            _ => ok = false,
        }
    }
    // Shape checks run on every tier whose bounds parsed, so all problems are reported together.
    if let Some(Some((first_min, _))) = bounds.first()
        && !first_min.is_zero()
    {
        violations.add(format!("{prefix}.tiers[0].min_volume"), "the first tier must start at 0");
        ok = false;
    }
    for index in 0..bounds.len().saturating_sub(1) {
        let (Some((_, max)), next) = (bounds[index], bounds[index + 1]) else { continue };
        match max {
            None => {
                violations.add(format!("{prefix}.tiers[{index}].max_volume"), "only the last tier may be open-ended");
                ok = false;
            }
            Some(max) => {
                if let Some((next_min, _)) = next
                    && next_min != max
                {
                    violations.add(
                        format!("{prefix}.tiers[{}].min_volume", index + 1),
                        format!(
                            "must equal the previous tier's max_volume {max} (tiers are contiguous, non-overlapping)"
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then_some(decoded)
}

fn decode_condition(
    prefix: &str,
    condition: Option<&pb::Condition>,
    violations: &mut FieldViolations,
) -> Option<Condition> {
    let field = format!("{prefix}.condition");
    let Some(condition) = condition else {
        violations.add(field, "is required");
        return None;
    };
    let operator = match pb::ConditionOperator::try_from(condition.operator) {
        Ok(pb::ConditionOperator::Equals) => Some(Operator::Equals),
        Ok(pb::ConditionOperator::In) => Some(Operator::In),
        Ok(pb::ConditionOperator::Gt) => Some(Operator::Gt),
        Ok(pb::ConditionOperator::Gte) => Some(Operator::Gte),
        Ok(pb::ConditionOperator::Lt) => Some(Operator::Lt),
        Ok(pb::ConditionOperator::Lte) => Some(Operator::Lte),
        _ => {
            violations.add(format!("{field}.operator"), "is required (EQUALS, IN, GT, GTE, LT or LTE)");
            None
        }
    };
    let condition_field =
        pb::ConditionField::try_from(condition.field).ok().filter(|f| *f != pb::ConditionField::Unspecified);
    if condition_field.is_none() {
        violations
            .add(format!("{field}.field"), "is required (EVENT_TYPE, GROSS_AMOUNT, PRODUCT_CODE or IS_FIRST_PAYMENT)");
    }
    let (condition_field, operator) = (condition_field?, operator?);
    // Operands: IN takes `values`, every other operator `value`.
    let operands: Vec<(String, &String)> = if operator == Operator::In {
        if condition.values.is_empty() {
            violations.add(format!("{field}.values"), "IN needs at least one value");
            return None;
        }
        if !condition.value.is_empty() {
            violations.add(format!("{field}.value"), "IN uses values, not value");
            return None;
        }
        condition.values.iter().enumerate().map(|(i, v)| (format!("{field}.values[{i}]"), v)).collect()
    } else {
        if condition.value.is_empty() {
            violations.add(format!("{field}.value"), format!("{} needs a value", operator.as_str()));
            return None;
        }
        if !condition.values.is_empty() {
            violations.add(format!("{field}.values"), format!("{} uses value, not values", operator.as_str()));
            return None;
        }
        vec![(format!("{field}.value"), &condition.value)]
    };
    let set_only = |violations: &mut FieldViolations, name: &str| -> bool {
        if matches!(operator, Operator::Equals | Operator::In) {
            true
        } else {
            violations.add(format!("{field}.operator"), format!("{name} supports only EQUALS and IN"));
            false
        }
    };
    match condition_field {
        pb::ConditionField::EventType => {
            if !set_only(violations, "EVENT_TYPE") {
                return None;
            }
            let expected = operands.len();
            let mut values = Vec::new();
            for (path, value) in operands {
                match SaleEventType::from_name(value) {
                    Some(event) => values.push(event),
                    None => violations.add(path, format!("{value:?} is not SIGNUP, PAYMENT or RENEWAL")),
                }
            }
            (values.len() == expected).then_some(Condition::EventType { operator, values })
        }
        pb::ConditionField::GrossAmount => {
            let expected = operands.len();
            let values: Vec<Decimal> =
                operands.into_iter().filter_map(|(path, value)| parse_decimal(&path, value, violations)).collect();
            (values.len() == expected).then_some(Condition::GrossAmount { operator, values })
        }
        pb::ConditionField::ProductCode => {
            if !set_only(violations, "PRODUCT_CODE") {
                return None;
            }
            let mut ok = true;
            for (path, value) in &operands {
                if value.is_empty() {
                    violations.add(path.clone(), "must not be empty");
                    ok = false;
                }
            }
            ok.then(|| Condition::ProductCode {
                operator,
                values: operands.iter().map(|(_, v)| (*v).clone()).collect(),
            })
        }
        pb::ConditionField::IsFirstPayment => {
            if operator != Operator::Equals {
                violations.add(format!("{field}.operator"), "IS_FIRST_PAYMENT supports only EQUALS");
                return None;
            }
            match condition.value.as_str() {
                "true" => Some(Condition::IsFirstPayment { value: true }),
                "false" => Some(Condition::IsFirstPayment { value: false }),
                other => {
                    violations.add(format!("{field}.value"), format!("{other:?} is not true or false"));
                    None
                }
            }
        }
        pb::ConditionField::Unspecified => None,
    }
}

/// The parts of a model a message may carry (AgreementRules or HybridRule).
struct ModelFields<'a> {
    model: i32,
    rate: &'a str,
    fixed_amount: Option<&'a types::Money>,
    tiers: &'a [pb::Tier],
    rules: &'a [pb::HybridRule],
}

fn decode_model(
    prefix: &str,
    fields: ModelFields<'_>,
    nested: bool,
    currencies: &mut Currencies,
    violations: &mut FieldViolations,
) -> Option<Model> {
    let model = pb::CommissionModel::try_from(fields.model).ok().filter(|m| *m != pb::CommissionModel::Unspecified);
    let Some(model) = model else {
        violations.add(
            format!("{prefix}.model"),
            if nested {
                "is required (PERCENTAGE, FIXED or TIERED)"
            } else {
                "is required (PERCENTAGE, FIXED, TIERED or HYBRID)"
            },
        );
        return None;
    };
    let name = model.as_str_name().trim_start_matches("COMMISSION_MODEL_");
    let mut unused = |present: bool, field: &str, used_by: &str| {
        if present {
            violations.add(format!("{prefix}.{field}"), format!("is only used by {used_by}, not {name}"));
        }
    };
    let has_fixed = fields.fixed_amount.is_some_and(|m| !(m.amount.is_empty() && m.currency_code.is_empty()));
    unused(model != pb::CommissionModel::Percentage && !fields.rate.trim().is_empty(), "rate", "PERCENTAGE");
    unused(model != pb::CommissionModel::Fixed && has_fixed, "fixed_amount", "FIXED");
    unused(model != pb::CommissionModel::Tiered && !fields.tiers.is_empty(), "tiers", "TIERED");
    unused(model != pb::CommissionModel::Hybrid && !fields.rules.is_empty(), "rules", "HYBRID");
    match model {
        pb::CommissionModel::Percentage => {
            decode_rate(&format!("{prefix}.rate"), fields.rate, violations).map(|rate| Model::Percentage { rate })
        }
        pb::CommissionModel::Fixed => {
            let field = format!("{prefix}.fixed_amount");
            let money = require_money(&field, fields.fixed_amount, violations);
            currencies.non_negative(&field, money, violations).map(|fixed_amount| Model::Fixed { fixed_amount })
        }
        pb::CommissionModel::Tiered => {
            decode_tiers(prefix, fields.tiers, currencies, violations).map(|tiers| Model::Tiered { tiers })
        }
        pb::CommissionModel::Hybrid if nested => {
            violations.add(format!("{prefix}.model"), "a HYBRID rule's model must be PERCENTAGE, FIXED or TIERED");
            None
        }
        pb::CommissionModel::Hybrid => {
            if fields.rules.is_empty() {
                violations.add(format!("{prefix}.rules"), "HYBRID needs at least one rule");
                return None;
            }
            let mut rules = Vec::with_capacity(fields.rules.len());
            for (index, rule) in fields.rules.iter().enumerate() {
                let rule_prefix = format!("{prefix}.rules[{index}]");
                let condition = decode_condition(&rule_prefix, rule.condition.as_ref(), violations);
                let model = decode_model(
                    &rule_prefix,
                    ModelFields {
                        model: rule.model,
                        rate: &rule.rate,
                        fixed_amount: rule.fixed_amount.as_ref(),
                        tiers: &rule.tiers,
                        rules: &[],
                    },
                    true,
                    currencies,
                    violations,
                );
                if let (Some(condition), Some(model)) = (condition, model) {
                    rules.push(crate::domain::HybridRule { condition, model });
                }
            }
            (rules.len() == fields.rules.len()).then_some(Model::Hybrid { rules })
        }
        pb::CommissionModel::Unspecified => None,
    }
}

/// Decodes and validates `rules` (field paths under `rules.`). Returns `None`
/// when `violations` holds anything (this call's or an earlier one's).
///
/// Defaults: trigger UNSPECIFIED → ON_PAYMENT; `clearance_days` 0 means 0 days
/// (entries clear at `occurred_at`), not the seed's 30 — proto3 cannot tell an
/// unset 0 from an explicit one, so callers who want 30 send 30. Fields a
/// model does not use (e.g. `rate` on FIXED) are rejected, and every money
/// field of one agreement must share one currency.
pub fn decode_rules(rules: Option<&pb::AgreementRules>, violations: &mut FieldViolations) -> Option<AgreementRules> {
    let Some(rules) = rules else {
        violations.add("rules", "is required");
        return None;
    };
    let mut currencies = Currencies::default();
    let model = decode_model(
        "rules",
        ModelFields {
            model: rules.model,
            rate: &rules.rate,
            fixed_amount: rules.fixed_amount.as_ref(),
            tiers: &rules.tiers,
            rules: &rules.rules,
        },
        false,
        &mut currencies,
        violations,
    );
    let trigger = match pb::CommissionTrigger::try_from(rules.trigger) {
        Ok(pb::CommissionTrigger::Unspecified | pb::CommissionTrigger::OnPayment) => Some(Trigger::OnPayment),
        Ok(pb::CommissionTrigger::OnActivation) => Some(Trigger::OnActivation),
        Ok(pb::CommissionTrigger::OnRenewal) => Some(Trigger::OnRenewal),
        Ok(pb::CommissionTrigger::OnSignup) => Some(Trigger::OnSignup),
        Err(_) => {
            violations.add("rules.trigger", format!("{} is not a trigger", rules.trigger));
            None
        }
    };
    let setup_fee = optional_money("rules.setup_fee", rules.setup_fee.as_ref(), violations);
    let setup_fee = currencies.non_negative("rules.setup_fee", setup_fee, violations);
    let min = optional_money("rules.min_commission", rules.min_commission.as_ref(), violations);
    let min = currencies.non_negative("rules.min_commission", min, violations);
    let max = optional_money("rules.max_commission", rules.max_commission.as_ref(), violations);
    let max = currencies.non_negative("rules.max_commission", max, violations);
    if let (Some(min), Some(max)) = (min, max)
        && min.currency == max.currency
        && min.amount > max.amount
    {
        violations
            .add("rules.min_commission.amount", format!("must not exceed max_commission {}", max.amount_string()));
    }
    currencies.check_single(violations);
    if !(0..=MAX_CLEARANCE_DAYS).contains(&rules.clearance_days) {
        violations.add("rules.clearance_days", format!("must be 0..{MAX_CLEARANCE_DAYS} (0 clears at once)"));
    }
    if rules.max_duration_months < 0 {
        violations.add("rules.max_duration_months", "must not be negative (0 is unlimited)");
    }
    if rules.max_commissions < 0 {
        violations.add("rules.max_commissions", "must not be negative (0 is unlimited)");
    }
    if !violations.is_empty() {
        return None;
    }
    Some(AgreementRules {
        model: model?,
        trigger: trigger?,
        setup_fee,
        min_commission: min,
        max_commission: max,
        clearance_days: u32::try_from(rules.clearance_days).ok()?,
        max_duration_months: u32::try_from(rules.max_duration_months).ok()?,
        max_commissions: u32::try_from(rules.max_commissions).ok()?,
    })
}

fn encode_tier(tier: &Tier) -> pb::Tier {
    let (rate, fixed_amount) = match &tier.pays {
        TierPays::Rate(rate) => (rate.to_string(), None),
        TierPays::FixedAmount(money) => (String::new(), Some(money_to_proto(*money))),
    };
    pb::Tier {
        min_volume: tier.min_volume.to_string(),
        max_volume: tier.max_volume.map(|max| max.to_string()).unwrap_or_default(),
        rate,
        fixed_amount,
    }
}

fn encode_condition(condition: &Condition) -> pb::Condition {
    fn operands(operator: Operator, values: Vec<String>) -> (String, Vec<String>) {
        if operator == Operator::In {
            (String::new(), values)
        } else {
            (values.into_iter().next().unwrap_or_default(), Vec::new())
        }
    }
    let (field, operator, (value, values)) = match condition {
        Condition::EventType { operator, values } => (
            pb::ConditionField::EventType,
            *operator,
            operands(*operator, values.iter().map(|v| v.as_str().to_string()).collect()),
        ),
        Condition::GrossAmount { operator, values } => (
            pb::ConditionField::GrossAmount,
            *operator,
            operands(*operator, values.iter().map(ToString::to_string).collect()),
        ),
        Condition::ProductCode { operator, values } => {
            (pb::ConditionField::ProductCode, *operator, operands(*operator, values.clone()))
        }
        Condition::IsFirstPayment { value } => {
            (pb::ConditionField::IsFirstPayment, Operator::Equals, (value.to_string(), Vec::new()))
        }
    };
    let operator = match operator {
        Operator::Equals => pb::ConditionOperator::Equals,
        Operator::In => pb::ConditionOperator::In,
        Operator::Gt => pb::ConditionOperator::Gt,
        Operator::Gte => pb::ConditionOperator::Gte,
        Operator::Lt => pb::ConditionOperator::Lt,
        Operator::Lte => pb::ConditionOperator::Lte,
    };
    pb::Condition { field: field as i32, operator: operator as i32, value, values }
}

struct EncodedModel {
    model: pb::CommissionModel,
    rate: String,
    fixed_amount: Option<types::Money>,
    tiers: Vec<pb::Tier>,
    rules: Vec<pb::HybridRule>,
}

fn encode_model(model: &Model) -> EncodedModel {
    let mut encoded = EncodedModel {
        model: pb::CommissionModel::Unspecified,
        rate: String::new(),
        fixed_amount: None,
        tiers: Vec::new(),
        rules: Vec::new(),
    };
    match model {
        Model::Percentage { rate } => {
            encoded.model = pb::CommissionModel::Percentage;
            encoded.rate = rate.to_string();
        }
        Model::Fixed { fixed_amount } => {
            encoded.model = pb::CommissionModel::Fixed;
            encoded.fixed_amount = Some(money_to_proto(*fixed_amount));
        }
        Model::Tiered { tiers } => {
            encoded.model = pb::CommissionModel::Tiered;
            encoded.tiers = tiers.iter().map(encode_tier).collect();
        }
        Model::Hybrid { rules } => {
            encoded.model = pb::CommissionModel::Hybrid;
            encoded.rules = rules
                .iter()
                .map(|rule| {
                    let inner = encode_model(&rule.model);
                    pb::HybridRule {
                        condition: Some(encode_condition(&rule.condition)),
                        model: inner.model as i32,
                        rate: inner.rate,
                        fixed_amount: inner.fixed_amount,
                        tiers: inner.tiers,
                    }
                })
                .collect();
        }
    }
    encoded
}

/// Encodes stored rules for the wire.
pub fn encode_rules(rules: &AgreementRules) -> pb::AgreementRules {
    let model = encode_model(&rules.model);
    let trigger = match rules.trigger {
        Trigger::OnPayment => pb::CommissionTrigger::OnPayment,
        Trigger::OnActivation => pb::CommissionTrigger::OnActivation,
        Trigger::OnRenewal => pb::CommissionTrigger::OnRenewal,
        Trigger::OnSignup => pb::CommissionTrigger::OnSignup,
    };
    pb::AgreementRules {
        model: model.model as i32,
        trigger: trigger as i32,
        rate: model.rate,
        fixed_amount: model.fixed_amount,
        setup_fee: rules.setup_fee.map(money_to_proto),
        min_commission: rules.min_commission.map(money_to_proto),
        max_commission: rules.max_commission.map(money_to_proto),
        clearance_days: i32::try_from(rules.clearance_days).unwrap_or(i32::MAX),
        tiers: model.tiers,
        rules: model.rules,
        max_duration_months: i32::try_from(rules.max_duration_months).unwrap_or(i32::MAX),
        max_commissions: i32::try_from(rules.max_commissions).unwrap_or(i32::MAX),
    }
}

/// A decoded SetOverridePlan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanScope {
    /// Program.
    pub program_id: Uuid,
    /// Upline partner; `None` for the program's plan.
    pub partner_id: Option<Uuid>,
}

/// Decodes and validates an override plan (field paths under `plan.`): mode
/// required; basis defaults to DEAL_AMOUNT; at most 32 levels; PERCENTAGE levels
/// carry a rate in [0, 1] or nothing, FLAT levels a non-negative flat_amount or
/// nothing.
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
    if !violations.is_empty() {
        return None;
    }
    Some((PlanScope { program_id: program_id?, partner_id }, OverridePlan { mode: mode?, basis: basis?, levels }))
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
    }
}

/// Decodes the request-level program context (field paths under `program.`):
/// rounding_mode 0/1 → half away from zero, 2 → half even; override_depth_cap
/// 0 → the hierarchy default 8, negative → violation.
pub fn decode_program(
    program: Option<&pb::ProgramContext>,
    violations: &mut FieldViolations,
) -> Option<(Uuid, ProgramSettings)> {
    let Some(program) = program else {
        violations.add("program", "is required");
        return None;
    };
    let id = require_uuid("program.program_id", &program.program_id, violations);
    let rounding = match program.rounding_mode {
        0 | 1 => Some(RoundingMode::HalfAwayFromZero),
        2 => Some(RoundingMode::HalfEven),
        other => {
            violations.add("program.rounding_mode", format!("{other} is not 1 (HALF_AWAY_FROM_ZERO) or 2 (HALF_EVEN)"));
            None
        }
    };
    let cap = match u32::try_from(program.override_depth_cap) {
        Ok(0) => Some(DEFAULT_OVERRIDE_DEPTH_CAP),
        Ok(cap) => Some(cap),
        Err(_) => {
            violations.add("program.override_depth_cap", "must not be negative");
            None
        }
    };
    let settings_version = u32::try_from(program.settings_version);
    if settings_version.is_err() {
        violations.add("program.settings_version", "must not be negative (0: no version named)");
    }
    Some((
        id?,
        ProgramSettings {
            rounding: rounding?,
            override_depth_cap: cap?,
            compression_enabled: program.compression_enabled,
            settings_version: settings_version.ok()?,
        },
    ))
}

fn decode_event_type(field: &str, value: i32, violations: &mut FieldViolations) -> Option<SaleEventType> {
    match pb::SaleEventType::try_from(value) {
        Ok(pb::SaleEventType::Signup) => Some(SaleEventType::Signup),
        Ok(pb::SaleEventType::Payment) => Some(SaleEventType::Payment),
        Ok(pb::SaleEventType::Renewal) => Some(SaleEventType::Renewal),
        _ => {
            violations.add(field, "is required (SIGNUP, PAYMENT or RENEWAL)");
            None
        }
    }
}

fn decode_partner(
    field: &str,
    partner: Option<&pb::PartnerContext>,
    violations: &mut FieldViolations,
) -> Option<PartnerRef> {
    let Some(partner) = partner else {
        violations.add(field, "is required");
        return None;
    };
    let id = require_uuid(&format!("{field}.partner_id"), &partner.partner_id, violations)?;
    let role = (!partner.role.is_empty()).then(|| partner.role.clone());
    Some(PartnerRef { id, status: PartnerStatus::from_number(partner.status), role })
}

/// Decodes one sale; any problem is a per-sale INVALID_ARGUMENT failure
/// (reason `INVALID_SALE`) listing every violation.
pub fn decode_sale(index: usize, sale: &pb::SaleContext) -> Result<Sale, Failure> {
    let mut v = FieldViolations::new();
    let p = format!("sales[{index}]");
    let event_type = decode_event_type(&format!("{p}.event_type"), sale.event_type, &mut v);
    let amount = require_money(&format!("{p}.amount"), sale.amount.as_ref(), &mut v);
    if let Some(amount) = amount
        && amount.amount.is_sign_negative()
        && !amount.amount.is_zero()
    {
        v.add(format!("{p}.amount.amount"), "must not be negative");
    }
    let occurred_at = require_timestamp(&format!("{p}.occurred_at"), sale.occurred_at.as_ref(), &mut v);
    let seller = decode_partner(&format!("{p}.seller"), sale.seller.as_ref(), &mut v);
    let mut splits = Vec::with_capacity(sale.splits.len());
    for (i, split) in sale.splits.iter().enumerate() {
        let field = format!("{p}.splits[{i}]");
        let partner = decode_partner(&format!("{field}.partner"), split.partner.as_ref(), &mut v);
        let bps = u32::try_from(split.basis_points).ok().filter(|bps| (1..10_000).contains(bps));
        if bps.is_none() {
            v.add(format!("{field}.basis_points"), "must be 1..9999");
        }
        if let (Some(partner), Some(basis_points)) = (partner, bps) {
            splits.push(SplitShare { partner, basis_points });
        }
    }
    let total: i64 = sale.splits.iter().map(|s| i64::from(s.basis_points)).sum();
    if total > 10_000 {
        v.add(format!("{p}.splits"), format!("basis points sum to {total}, more than 10000"));
    }
    let mut ancestors = Vec::with_capacity(sale.ancestors.len());
    for (i, ancestor) in sale.ancestors.iter().enumerate() {
        if let Some(partner) = decode_partner(&format!("{p}.ancestors[{i}]"), Some(ancestor), &mut v) {
            ancestors.push(partner);
        }
    }
    let prior_volume = optional_money(&format!("{p}.seller_prior_volume"), sale.seller_prior_volume.as_ref(), &mut v);
    let mut history = Vec::with_capacity(sale.customer_history.len());
    for (i, event) in sale.customer_history.iter().enumerate() {
        let field = format!("{p}.customer_history[{i}]");
        let event_type = decode_event_type(&format!("{field}.event_type"), event.event_type, &mut v);
        let seller = require_uuid(&format!("{field}.seller_partner_id"), &event.seller_partner_id, &mut v);
        let at = require_timestamp(&format!("{field}.occurred_at"), event.occurred_at.as_ref(), &mut v);
        if let (Some(event_type), Some(seller_partner_id), Some(occurred_at)) = (event_type, seller, at) {
            history.push(PriorEvent {
                sale_id: event.sale_id.clone(),
                event_type,
                seller_partner_id,
                occurred_at,
                service_code: event.service_code.clone(),
            });
        }
    }
    if !v.is_empty() {
        return Err(Failure::invalid("INVALID_SALE", v.into_status().message().to_string()));
    }
    match (event_type, amount, occurred_at, seller) {
        (Some(event_type), Some(amount), Some(occurred_at), Some(seller)) => Ok(Sale {
            sale_id: sale.sale_id.clone(),
            event_type,
            amount,
            product_code: sale.product_code.clone(),
            service_code: sale.service_code.clone(),
            occurred_at,
            seller,
            splits,
            ancestors,
            is_first_payment: sale.is_first_payment,
            seller_prior_volume: prior_volume,
            customer_history: history,
        }),
        _ => Err(Failure::invalid("INVALID_SALE", "the sale is incomplete")),
    }
}

/// The partner ids a batch needs agreements for (sellers and the sellers of
/// customer history) and override plans for (ancestors), sorted and unique.
pub fn referenced_partners(sales: &[Result<Sale, Failure>]) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut sellers = std::collections::BTreeSet::new();
    let mut uplines = std::collections::BTreeSet::new();
    for sale in sales.iter().flatten() {
        sellers.insert(sale.seller.id);
        sellers.extend(sale.customer_history.iter().map(|event| event.seller_partner_id));
        uplines.extend(sale.ancestors.iter().map(|ancestor| ancestor.id));
    }
    (sellers.into_iter().collect(), uplines.into_iter().collect())
}

fn encode_breakdown(breakdown: Breakdown) -> types::CommissionBreakdown {
    types::CommissionBreakdown {
        model: breakdown.model,
        formula: breakdown.formula,
        inputs: breakdown.inputs.into_iter().collect(),
        rule: breakdown.rule,
        agreement_version_id: breakdown.agreement_version_id.map(|id| id.to_string()).unwrap_or_default(),
        rounding: breakdown.rounding,
        note: breakdown.note,
    }
}

fn encode_line(line: Line) -> pb::SettlementLine {
    pb::SettlementLine {
        partner_id: line.partner_id.to_string(),
        kind: match line.kind {
            LineKind::Direct => types::EarningKind::Direct,
            LineKind::Split => types::EarningKind::Split,
            LineKind::Override => types::EarningKind::Override,
            LineKind::Margin => types::EarningKind::Margin,
        } as i32,
        amount: Some(amount_to_proto(line.amount.currency, line.amount.amount)),
        level: i32::try_from(line.level).unwrap_or(i32::MAX),
        source_partner_id: line.source_partner_id.to_string(),
        clears_at: Some(timestamp(line.clears_at)),
        breakdown: Some(encode_breakdown(line.breakdown)),
    }
}

/// Encodes a settlement.
pub fn encode_settlement(settlement: Settlement) -> pb::Settlement {
    pb::Settlement {
        sale_id: settlement.sale_id,
        base_commission: settlement.base_commission.map(money_to_proto),
        agreement_version_id: settlement.agreement_version_id.map(|id| id.to_string()).unwrap_or_default(),
        lines: settlement.lines.into_iter().map(encode_line).collect(),
        failure: settlement.failure.map(|failure| types::ItemFailure {
            code: failure.code.as_str().to_string(),
            reason: failure.reason,
            message: failure.message,
        }),
        base_breakdown: Some(encode_breakdown(settlement.base_breakdown)),
    }
}

/// A settlement for a sale that failed to decode.
pub fn failed_settlement(sale_id: &str, failure: Failure) -> Settlement {
    Settlement {
        sale_id: sale_id.to_string(),
        base_commission: None,
        agreement_version_id: None,
        lines: Vec::new(),
        base_breakdown: Breakdown { note: format!("failed: {}", failure.message), ..Breakdown::default() },
        failure: Some(failure),
    }
}

/// Most rates one CreateScheme or SetSchemeRates call writes.
pub const MAX_RATES_PER_CALL: usize = 1000;
/// Longest scheme display name, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// Decodes the rates of a scheme write (field paths `{prefix}[i].…`, prefix
/// `rates` or `scheme.rates`; seed 002): `service_code` 1..=64 characters of
/// `[A-Za-z0-9_.-]`; `role` required (checked against the ladder by
/// [`check_rate_roles`] once the program is known); `rate` an absolute rate in
/// [0, 1] with at most [`MAX_RATE_DECIMALS`] decimals, or empty to unset
/// (NULL = inherit); one (service_code, role) at most once per request.
/// Returns one change per rate, in request order, when all are valid.
pub fn decode_rate_changes(
    prefix: &str,
    rates: &[pb::SchemeRate],
    violations: &mut FieldViolations,
) -> Option<Vec<RateChange>> {
    if rates.len() > MAX_RATES_PER_CALL {
        violations.add(prefix, format!("at most {MAX_RATES_PER_CALL} rates per call, got {}", rates.len()));
        return None;
    }
    let mut changes = Vec::with_capacity(rates.len());
    let mut seen: std::collections::HashMap<RateKey, usize> = std::collections::HashMap::new();
    let mut ok = true;
    for (index, rate) in rates.iter().enumerate() {
        let field = format!("{prefix}[{index}]");
        if !valid_service_code(&rate.service_code) {
            violations.add(
                format!("{field}.service_code"),
                format!(
                    "{:?} must be 1..{MAX_SERVICE_CODE_LEN} characters of A-Z, a-z, 0-9, '_', '.', '-'",
                    rate.service_code
                ),
            );
            ok = false;
        }
        if rate.role.is_empty() {
            violations.add(format!("{field}.role"), "is required (a role on the program's role ladder)");
            ok = false;
        }
        let value = if rate.rate.trim().is_empty() {
            None
        } else {
            match bounded_rate(&format!("{field}.rate"), &rate.rate, violations) {
                Some(value) => Some(value),
                None => {
                    ok = false;
                    None
                }
            }
        };
        let key = RateKey::new(rate.service_code.clone(), rate.role.clone());
        if let Some(first) = seen.get(&key) {
            violations
                .add(field, format!("sets {} {} again (first at {prefix}[{first}])", rate.service_code, rate.role));
            ok = false;
        } else {
            seen.insert(key.clone(), index);
        }
        changes.push(RateChange { key, rate: value });
    }
    ok.then_some(changes)
}

/// Records a violation on `{prefix}[i].role` for every rate whose role is
/// not on the program's role ladder (highest first).
pub fn check_rate_roles(prefix: &str, changes: &[RateChange], ladder: &[String], violations: &mut FieldViolations) {
    for (index, change) in changes.iter().enumerate() {
        if !ladder.contains(&change.key.role) {
            violations.add(
                format!("{prefix}[{index}].role"),
                format!("{:?} is not on the program's role ladder ({})", change.key.role, ladder.join(", ")),
            );
        }
    }
}

/// Encodes a scheme with its own set rates, by service_code then role.
pub fn encode_scheme(
    program_id: Uuid,
    scheme: &Scheme,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> pb::Scheme {
    pb::Scheme {
        id: scheme.id.to_string(),
        program_id: program_id.to_string(),
        parent_id: scheme.parent_id.map(|id| id.to_string()).unwrap_or_default(),
        display_name: scheme.display_name.clone(),
        clearance_days: i32::try_from(scheme.clearance_days).unwrap_or(i32::MAX),
        rates: scheme
            .rates
            .iter()
            .map(|(key, rate)| pb::SchemeRate {
                service_code: key.service_code.clone(),
                role: key.role.clone(),
                rate: rate.normalize().to_string(),
            })
            .collect(),
        create_time: Some(timestamp(created_at)),
        update_time: Some(timestamp(updated_at)),
    }
}

/// Decodes CreateAgreement's optional `effective_from`.
pub fn decode_effective_from(
    value: Option<&prost_types::Timestamp>,
    violations: &mut FieldViolations,
) -> Option<chrono::DateTime<chrono::Utc>> {
    from_timestamp("effective_from", value, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount: &str) -> Option<types::Money> {
        Some(types::Money { currency_code: "USD".into(), amount: amount.into() })
    }

    fn hybrid() -> pb::AgreementRules {
        pb::AgreementRules {
            model: pb::CommissionModel::Hybrid as i32,
            trigger: pb::CommissionTrigger::OnActivation as i32,
            setup_fee: usd("25.00"),
            max_commission: usd("100.00"),
            clearance_days: 14,
            max_duration_months: 12,
            max_commissions: 3,
            rules: vec![
                pb::HybridRule {
                    condition: Some(pb::Condition {
                        field: pb::ConditionField::EventType as i32,
                        operator: pb::ConditionOperator::In as i32,
                        value: String::new(),
                        values: vec!["RENEWAL".into(), "PAYMENT".into()],
                    }),
                    model: pb::CommissionModel::Tiered as i32,
                    tiers: vec![
                        pb::Tier {
                            min_volume: "0".into(),
                            max_volume: "1000".into(),
                            rate: "0.2".into(),
                            fixed_amount: None,
                        },
                        pb::Tier {
                            min_volume: "1000".into(),
                            max_volume: String::new(),
                            rate: String::new(),
                            fixed_amount: usd("5.00"),
                        },
                    ],
                    ..Default::default()
                },
                pb::HybridRule {
                    condition: Some(pb::Condition {
                        field: pb::ConditionField::IsFirstPayment as i32,
                        operator: pb::ConditionOperator::Equals as i32,
                        value: "true".into(),
                        values: vec![],
                    }),
                    model: pb::CommissionModel::Fixed as i32,
                    fixed_amount: usd("10.00"),
                    ..Default::default()
                },
                pb::HybridRule {
                    condition: Some(pb::Condition {
                        field: pb::ConditionField::GrossAmount as i32,
                        operator: pb::ConditionOperator::Lte as i32,
                        value: "99.50".into(),
                        values: vec![],
                    }),
                    model: pb::CommissionModel::Percentage as i32,
                    rate: "0.125".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn rules_decode_and_encode_back() {
        let mut violations = FieldViolations::new();
        let wire = hybrid();
        let rules = decode_rules(Some(&wire), &mut violations).unwrap();
        assert!(violations.is_empty());
        assert_eq!(encode_rules(&rules), wire);
        // And through the stored JSON form.
        let stored: AgreementRules = serde_json::from_str(&serde_json::to_string(&rules).unwrap()).unwrap();
        assert_eq!(stored, rules);
    }

    #[test]
    fn unspecified_trigger_defaults_to_on_payment_and_zero_clearance_is_zero_days() {
        let wire = pb::AgreementRules {
            model: pb::CommissionModel::Percentage as i32,
            rate: "0.10".into(),
            ..Default::default()
        };
        let mut violations = FieldViolations::new();
        let rules = decode_rules(Some(&wire), &mut violations).unwrap();
        assert_eq!(rules.trigger, Trigger::OnPayment);
        assert_eq!(rules.clearance_days, 0);
        assert_eq!(rules.model, Model::Percentage { rate: Decimal::new(1, 1) });
    }

    #[test]
    fn rates_with_too_many_decimals_and_mixed_currencies_are_rejected() {
        let wire = pb::AgreementRules {
            model: pb::CommissionModel::Percentage as i32,
            rate: "0.12345678901".into(),
            setup_fee: usd("1.00"),
            min_commission: Some(types::Money { currency_code: "EUR".into(), amount: "1.00".into() }),
            ..Default::default()
        };
        let mut violations = FieldViolations::new();
        assert!(decode_rules(Some(&wire), &mut violations).is_none());
        let message = violations.into_status().message().to_string();
        assert!(message.contains("rules.rate"), "{message}");
        assert!(message.contains("rules.min_commission.currency_code"), "{message}");
    }

    #[test]
    fn program_context_defaults_and_errors() {
        let mut violations = FieldViolations::new();
        let context = pb::ProgramContext {
            program_id: Uuid::nil().to_string(),
            rounding_mode: 2,
            override_depth_cap: 0,
            compression_enabled: true,
            settings_version: 3,
        };
        let (_, settings) = decode_program(Some(&context), &mut violations).unwrap();
        assert_eq!(settings.rounding, RoundingMode::HalfEven);
        assert_eq!(settings.override_depth_cap, DEFAULT_OVERRIDE_DEPTH_CAP);
        assert_eq!(settings.settings_version, 3);
        let bad = pb::ProgramContext { rounding_mode: 3, override_depth_cap: -1, settings_version: -1, ..context };
        assert!(decode_program(Some(&bad), &mut violations).is_none());
        let message = violations.into_status().message().to_string();
        assert!(message.contains("program.rounding_mode") && message.contains("program.override_depth_cap"));
        assert!(message.contains("program.settings_version"), "{message}");
    }

    #[test]
    fn sale_roles_and_service_code_decode_and_margins_encode() {
        let sale = pb::SaleContext {
            sale_id: "s".into(),
            event_type: pb::SaleEventType::Payment as i32,
            amount: usd("10.00"),
            service_code: "RECHARGE".into(),
            occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            seller: Some(pb::PartnerContext {
                partner_id: Uuid::from_u128(1).to_string(),
                status: 1,
                role: "RETAILER".into(),
            }),
            ancestors: vec![pb::PartnerContext {
                partner_id: Uuid::from_u128(2).to_string(),
                status: 2,
                role: String::new(),
            }],
            ..Default::default()
        };
        let decoded = decode_sale(0, &sale).unwrap();
        assert_eq!(decoded.service_code, "RECHARGE");
        assert_eq!(decoded.seller.role.as_deref(), Some("RETAILER"));
        assert_eq!(decoded.ancestors[0].role, None, "an empty role is no role");
        let line = Line {
            partner_id: Uuid::from_u128(1),
            kind: LineKind::Margin,
            amount: Money::parse("USD", "1.00").unwrap(),
            level: 3,
            source_partner_id: Uuid::from_u128(1),
            clears_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            breakdown: Breakdown::default(),
        };
        let encoded = encode_line(line);
        assert_eq!((encoded.kind, encoded.level), (types::EarningKind::Margin as i32, 3));
    }

    #[test]
    fn scheme_rates_decode_with_unset_and_every_violation() {
        let rate = |service_code: &str, role: &str, rate: &str| pb::SchemeRate {
            service_code: service_code.into(),
            role: role.into(),
            rate: rate.into(),
        };
        let mut violations = FieldViolations::new();
        let changes = decode_rate_changes(
            "rates",
            &[rate("RECHARGE", "ADMIN", "0.050"), rate("DTH", "RETAILER", "")],
            &mut violations,
        )
        .unwrap();
        assert_eq!(changes[0].rate, Some(Decimal::new(5, 2)));
        assert_eq!(changes[1].rate, None, "empty = unset (inherit)");
        check_rate_roles("rates", &changes, &["ADMIN".to_string()], &mut violations);
        let message = violations.into_status().message().to_string();
        assert!(message.contains("rates[1].role") && !message.contains("rates[0]"), "{message}");

        let mut violations = FieldViolations::new();
        let long = "X".repeat(MAX_SERVICE_CODE_LEN + 1);
        let wire = [
            rate("RE/CHARGE", "ADMIN", "0.1"),
            rate(&long, "ADMIN", "0.1"),
            rate("OK", "", "-0.1"),
            rate("OK", "ADMIN", "0.00000000001"),
            rate("OK", "ADMIN", "0.1"),
        ];
        assert!(decode_rate_changes("rates", &wire, &mut violations).is_none());
        let message = violations.into_status().message().to_string();
        for field in [
            "rates[0].service_code",
            "rates[1].service_code",
            "rates[2].role",
            "rates[2].rate",
            "rates[3].rate",
            "rates[4]: sets OK ADMIN again",
        ] {
            assert!(message.contains(field), "{field} missing from {message}");
        }
    }

    #[test]
    fn a_sale_with_oversubscribed_splits_is_invalid() {
        let partner = |n: u128| {
            Some(pb::PartnerContext { partner_id: Uuid::from_u128(n).to_string(), status: 1, role: String::new() })
        };
        let sale = pb::SaleContext {
            sale_id: "s".into(),
            event_type: pb::SaleEventType::Payment as i32,
            amount: usd("10.00"),
            occurred_at: Some(prost_types::Timestamp { seconds: 0, nanos: 0 }),
            seller: partner(1),
            splits: vec![
                pb::SplitContext { partner: partner(2), basis_points: 6000 },
                pb::SplitContext { partner: partner(3), basis_points: 5000 },
            ],
            ..Default::default()
        };
        let failure = decode_sale(0, &sale).unwrap_err();
        assert_eq!(failure.reason, "INVALID_SALE");
        assert!(failure.message.contains("sales[0].splits"), "{}", failure.message);
    }
}
