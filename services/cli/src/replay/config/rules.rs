//! An agreement's rules as the configuration states them, and the one-line
//! prose each is described by.

// The configuration module's types and imports.
use super::*;

/// A TIERED tier: the seller's prior volume in `[min_volume, max_volume)`
/// (GBP) pays `rate` × the whole sale, or `fixed_amount` per event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TierSpec {
    /// Lower bound, inclusive (GBP).
    pub min_volume: Decimal,
    /// Upper bound, exclusive (GBP); `null` for the open-ended top tier.
    pub max_volume: Option<Decimal>,
    /// Rate of the whole sale (0.08 = 8%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// Fixed amount per event instead of a rate (GBP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<Decimal>,
}

/// A commission model as the configuration names it (the proto's
/// `CommissionModel` without its prefix); one closed set, so a rule can
/// never be sent as a model the replay did not mean.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Model {
    /// `rate` × the sale amount.
    #[default]
    Percentage,
    /// `fixed_amount` per firing event.
    Fixed,
    /// By the seller's prior volume, one tier's rate or amount.
    Tiered,
    /// The first matching rule's own model.
    Hybrid,
}

impl Model {
    /// The name written in the configuration file ("TIERED").
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Percentage => "PERCENTAGE",
            Model::Fixed => "FIXED",
            Model::Tiered => "TIERED",
            Model::Hybrid => "HYBRID",
        }
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A HYBRID rule's condition on one sale field.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConditionSpec {
    /// EVENT_TYPE, GROSS_AMOUNT, PRODUCT_CODE or IS_FIRST_PAYMENT.
    pub field: String,
    /// EQUALS, IN, GT, GTE, LT or LTE.
    pub operator: String,
    /// The operand of every operator but IN ("true", "500.00").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The operands of IN.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One HYBRID rule: when `condition` matches, `model` decides the raw commission.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HybridRuleSpec {
    /// The condition.
    pub condition: ConditionSpec,
    /// PERCENTAGE, FIXED or TIERED.
    pub model: Model,
    /// PERCENTAGE rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// FIXED amount (GBP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<Decimal>,
    /// TIERED tiers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierSpec>,
}

/// The rules of one agreement version, as sent (decimal strings in GBP).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct RulesSpec {
    /// PERCENTAGE, FIXED, TIERED or HYBRID.
    pub model: Model,
    /// ON_PAYMENT.
    pub trigger: String,
    /// PERCENTAGE rate (0.10 = 10%).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// FIXED amount per event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<Decimal>,
    /// One-time fee on the customer's first firing event under the agreement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_fee: Option<Decimal>,
    /// Floor when the commission is > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_commission: Option<Decimal>,
    /// Ceiling when the commission is > 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_commission: Option<Decimal>,
    /// TIERED tiers (contiguous from 0, the last open-ended).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierSpec>,
    /// HYBRID rules, in order; the first match decides, no match earns 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HybridRuleSpec>,
    /// Clearance in days.
    pub clearance_days: i32,
}

impl RulesSpec {
    /// The rules in one line of prose ("TIERED on ON_PAYMENT: …"), for people
    /// reading the configuration file; the structured fields are authoritative.
    pub fn describe(&self) -> String {
        let mut text = format!("{} on {}: {}", self.model, self.trigger, model_text(self));
        if let Some(fee) = self.setup_fee {
            text.push_str(&format!("; plus setup_fee {fee} GBP on the customer's first firing event"));
        }
        if let Some(min) = self.min_commission {
            text.push_str(&format!("; at least {min} GBP when > 0"));
        }
        if let Some(max) = self.max_commission {
            text.push_str(&format!("; at most {max} GBP"));
        }
        text.push_str(&format!("; clears after {} days", self.clearance_days));
        text
    }
}

pub(super) fn tiers_text(tiers: &[TierSpec]) -> String {
    let tiers: Vec<String> = tiers
        .iter()
        .map(|tier| {
            let upper = tier.max_volume.map_or_else(|| "∞".to_string(), |max| max.to_string());
            let pays = match (tier.rate, tier.fixed_amount) {
                (Some(rate), _) => format!("{rate} × sale"),
                (None, Some(fixed)) => format!("{fixed} GBP"),
                (None, None) => "0".to_string(),
            };
            format!("[{}, {upper}) → {pays}", tier.min_volume)
        })
        .collect();
    format!("by the seller's prior volume (GBP): {}", tiers.join("; "))
}

pub(super) fn model_text(rules: &RulesSpec) -> String {
    match rules.model {
        Model::Tiered => tiers_text(&rules.tiers),
        Model::Hybrid => {
            let mut parts: Vec<String> = rules
                .rules
                .iter()
                .enumerate()
                .map(|(index, rule)| {
                    let c = &rule.condition;
                    let operand = c.value.clone().unwrap_or_else(|| format!("[{}]", c.values.join(", ")));
                    let pays = match rule.model {
                        Model::Fixed => format!("FIXED {} GBP", rule.fixed_amount.unwrap_or_default()),
                        Model::Tiered => format!("TIERED {}", tiers_text(&rule.tiers)),
                        Model::Percentage => format!("PERCENTAGE {} × sale", rule.rate.unwrap_or_default()),
                        Model::Hybrid => format!("HYBRID {}", rule.rate.unwrap_or_default()),
                    };
                    format!("rule[{index}] if {} {} {operand} → {pays}", c.field, c.operator)
                })
                .collect();
            parts.push("no match → 0".into());
            format!("first match of {}", parts.join("; "))
        }
        Model::Fixed => format!("{} GBP per event", rules.fixed_amount.unwrap_or_default()),
        Model::Percentage => format!("{} × sale", rules.rate.unwrap_or_default()),
    }
}
