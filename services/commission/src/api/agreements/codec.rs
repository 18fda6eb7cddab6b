//! Agreement rules on the wire ↔ [`AgreementRules`] (seed 003): decoding
//! validates every field and collects every violation, none short-circuits.

use accrue_kit::FieldViolations;
use accrue_kit::convert::{from_timestamp, money_to_proto, optional_money, parse_rate, require_money};
use accrue_money::{Currency, Money};
use accrue_proto::commission::v1 as pb;
use accrue_proto::types::v1 as types;
use rust_decimal::Decimal;

use crate::domain::{AgreementRules, Condition, Model, Operator, SaleEventType, Tier, TierPays, Trigger};

/// Most days an agreement may hold entries before they clear.
pub const MAX_CLEARANCE_DAYS: i32 = 3650;

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
pub(crate) struct Currencies(Vec<(String, Currency)>);

impl Currencies {
    pub(crate) fn non_negative(
        &mut self,
        field: &str,
        money: Option<Money>,
        violations: &mut FieldViolations,
    ) -> Option<Money> {
        let money = money?;
        if money.amount.is_sign_negative() && !money.amount.is_zero() {
            violations.add(format!("{field}.amount"), "must not be negative");
            return None;
        }
        self.0.push((field.to_string(), money.currency));
        Some(money)
    }

    pub(crate) fn check_single(&self, violations: &mut FieldViolations) {
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
pub(crate) fn bounded_rate(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Decimal> {
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
}
