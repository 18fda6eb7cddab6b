//! The rules of an agreement version and of an override plan (seed 003
//! `AgreementConfig`, seed 004 `overrideConfig`), as validated values.
//!
//! These types are also the stored form (`agreement_versions.rules`,
//! `override_plans.levels`, jsonb): decimals are strings, money is
//! `{currency_code, amount}`, enums are their UPPER_SNAKE names.

use accrue_money::Money;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money_serde;

/// A sale event type, shared with attribution (one definition in
/// accrue-types); stored in rules by its upper-case name.
pub use accrue_types::sale::SaleEventType;

/// Which sale events fire an agreement (DESIGN §4 "Triggers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    /// PAYMENT or RENEWAL.
    OnPayment,
    /// The customer's first payment (a PAYMENT or RENEWAL that is the first).
    OnActivation,
    /// RENEWAL only.
    OnRenewal,
    /// SIGNUP only.
    OnSignup,
}

impl Trigger {
    /// The name in breakdowns ("ON_PAYMENT").
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::OnPayment => "ON_PAYMENT",
            Trigger::OnActivation => "ON_ACTIVATION",
            Trigger::OnRenewal => "ON_RENEWAL",
            Trigger::OnSignup => "ON_SIGNUP",
        }
    }

    /// Whether an event fires this trigger. `is_first_payment` matters only
    /// for ON_ACTIVATION, which fires on a PAYMENT or RENEWAL that is the
    /// customer's first payment.
    pub fn fires(self, event: SaleEventType, is_first_payment: bool) -> bool {
        match self {
            Trigger::OnPayment => event.is_payment(),
            Trigger::OnActivation => event.is_payment() && is_first_payment,
            Trigger::OnRenewal => event == SaleEventType::Renewal,
            Trigger::OnSignup => event == SaleEventType::Signup,
        }
    }
}

/// What a tier pays: a rate of the sale amount, or a fixed amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierPays {
    /// Rate in [0, 1] applied to the whole sale amount.
    Rate(Decimal),
    /// Fixed amount per event.
    FixedAmount(#[serde(with = "money_serde")] Money),
}

/// A volume tier `[min_volume, max_volume)` (seed 003 `CommissionTier`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Lower bound, inclusive (major units).
    pub min_volume: Decimal,
    /// Upper bound, exclusive; `None` is open-ended.
    pub max_volume: Option<Decimal>,
    /// What the tier pays.
    pub pays: TierPays,
}

impl Tier {
    /// Whether `volume` falls in `[min_volume, max_volume)`.
    pub fn contains(&self, volume: Decimal) -> bool {
        volume >= self.min_volume && self.max_volume.is_none_or(|max| volume < max)
    }
}

/// How an agreement (or a HYBRID rule) computes the raw commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Model {
    /// amount × rate (rate in [0, 1]).
    Percentage {
        /// The rate.
        rate: Decimal,
    },
    /// A fixed amount per event.
    Fixed {
        /// The amount; its currency must be the sale's.
        #[serde(with = "money_serde")]
        fixed_amount: Money,
    },
    /// The tier holding the seller's prior volume, applied to the whole sale.
    Tiered {
        /// Contiguous tiers starting at 0.
        tiers: Vec<Tier>,
    },
    /// Ordered rules; the first whose condition matches decides. A HYBRID
    /// rule's own model is never HYBRID (validation rejects it).
    Hybrid {
        /// The rules, in order.
        rules: Vec<HybridRule>,
    },
}

impl Model {
    /// The model's name ("PERCENTAGE").
    pub fn as_str(&self) -> &'static str {
        match self {
            Model::Percentage { .. } => "PERCENTAGE",
            Model::Fixed { .. } => "FIXED",
            Model::Tiered { .. } => "TIERED",
            Model::Hybrid { .. } => "HYBRID",
        }
    }
}

/// A HYBRID condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    /// Equal to the single operand.
    Equals,
    /// Equal to one of the operands.
    In,
    /// Greater than (numbers).
    Gt,
    /// Greater than or equal (numbers).
    Gte,
    /// Less than (numbers).
    Lt,
    /// Less than or equal (numbers).
    Lte,
}

impl Operator {
    /// The operator's name ("GTE").
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "EQUALS",
            Operator::In => "IN",
            Operator::Gt => "GT",
            Operator::Gte => "GTE",
            Operator::Lt => "LT",
            Operator::Lte => "LTE",
        }
    }
}

/// A typed HYBRID condition. For EQUALS and the numeric operators `values`
/// holds exactly one operand; for IN at least one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Condition {
    /// The sale's event type (EQUALS, IN).
    EventType {
        /// EQUALS or IN.
        operator: Operator,
        /// Operands.
        values: Vec<SaleEventType>,
    },
    /// The sale's gross amount compared as a decimal (any operator).
    GrossAmount {
        /// The operator.
        operator: Operator,
        /// Operands.
        values: Vec<Decimal>,
    },
    /// The sale's product code, compared exactly (EQUALS, IN).
    ProductCode {
        /// EQUALS or IN.
        operator: Operator,
        /// Operands.
        values: Vec<String>,
    },
    /// Whether this is the customer's first payment (EQUALS).
    IsFirstPayment {
        /// The operand.
        value: bool,
    },
}

/// The facts of a sale that HYBRID conditions read.
#[derive(Debug, Clone, Copy)]
pub struct ConditionFacts<'a> {
    /// Event type.
    pub event_type: SaleEventType,
    /// Gross amount (major units).
    pub gross_amount: Decimal,
    /// Product code.
    pub product_code: &'a str,
    /// The customer's first payment?
    pub is_first_payment: bool,
}

fn compare_set<T: PartialEq>(operator: Operator, values: &[T], actual: &T) -> bool {
    match operator {
        Operator::Equals | Operator::In => values.iter().any(|value| value == actual),
        // Validation never stores an ordering operator on a non-numeric field.
        Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte => false,
    }
}

impl Condition {
    /// Whether the condition holds for `facts`. Gross amounts compare as
    /// decimals (100 equals 100.00).
    pub fn matches(&self, facts: &ConditionFacts<'_>) -> bool {
        match self {
            Condition::EventType { operator, values } => compare_set(*operator, values, &facts.event_type),
            Condition::ProductCode { operator, values } => {
                compare_set(*operator, values, &facts.product_code.to_string())
            }
            Condition::IsFirstPayment { value } => facts.is_first_payment == *value,
            Condition::GrossAmount { operator, values } => {
                let actual = facts.gross_amount;
                let first = values.first().copied();
                match operator {
                    Operator::Equals | Operator::In => values.contains(&actual),
                    Operator::Gt => first.is_some_and(|v| actual > v),
                    Operator::Gte => first.is_some_and(|v| actual >= v),
                    Operator::Lt => first.is_some_and(|v| actual < v),
                    Operator::Lte => first.is_some_and(|v| actual <= v),
                }
            }
        }
    }

    /// Human-readable form for breakdowns ("GROSS_AMOUNT GTE 100.00").
    pub fn describe(&self) -> String {
        fn list<T: ToString>(values: &[T]) -> String {
            values.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
        match self {
            Condition::EventType { operator, values } => format!(
                "EVENT_TYPE {} [{}]",
                operator.as_str(),
                values.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Condition::GrossAmount { operator, values } => {
                format!("GROSS_AMOUNT {} [{}]", operator.as_str(), list(values))
            }
            Condition::ProductCode { operator, values } => {
                format!("PRODUCT_CODE {} [{}]", operator.as_str(), list(values))
            }
            Condition::IsFirstPayment { value } => format!("IS_FIRST_PAYMENT EQUALS {value}"),
        }
    }
}

/// One HYBRID rule: when `condition` matches, `model` (PERCENTAGE, FIXED or
/// TIERED) decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HybridRule {
    /// The condition.
    pub condition: Condition,
    /// The rule's own model.
    pub model: Model,
}

/// The validated rules of one agreement version (seed 003 `AgreementConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRules {
    /// How the raw commission is computed.
    pub model: Model,
    /// Which events fire it.
    pub trigger: Trigger,
    /// One-time fee on the customer's first firing event under this agreement.
    #[serde(with = "money_serde::option", default, skip_serializing_if = "Option::is_none")]
    pub setup_fee: Option<Money>,
    /// Floor applied when the commission is > 0.
    #[serde(with = "money_serde::option", default, skip_serializing_if = "Option::is_none")]
    pub min_commission: Option<Money>,
    /// Ceiling applied when the commission is > 0.
    #[serde(with = "money_serde::option", default, skip_serializing_if = "Option::is_none")]
    pub max_commission: Option<Money>,
    /// Days from `occurred_at` until entries clear (0..=3650; 0 clears at once).
    pub clearance_days: u32,
    /// Pay only within this many calendar months of the customer's first
    /// firing event under this agreement (0: unlimited).
    pub max_duration_months: u32,
    /// Pay at most this many firing events per customer under this agreement
    /// (0: unlimited).
    pub max_commissions: u32,
}

/// Override mode (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverrideMode {
    /// round(basis × rate).
    Percentage,
    /// A flat amount per sale.
    Flat,
}

impl OverrideMode {
    /// The stored name ("PERCENTAGE").
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideMode::Percentage => "PERCENTAGE",
            OverrideMode::Flat => "FLAT",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PERCENTAGE" => Some(OverrideMode::Percentage),
            "FLAT" => Some(OverrideMode::Flat),
            _ => None,
        }
    }
}

/// What a PERCENTAGE override is a percentage of (seed 004 open question 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverrideBasis {
    /// The sale amount.
    DealAmount,
    /// The base commission C, before splits.
    BaseCommission,
}

impl OverrideBasis {
    /// The stored name ("DEAL_AMOUNT").
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideBasis::DealAmount => "DEAL_AMOUNT",
            OverrideBasis::BaseCommission => "BASE_COMMISSION",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "DEAL_AMOUNT" => Some(OverrideBasis::DealAmount),
            "BASE_COMMISSION" => Some(OverrideBasis::BaseCommission),
            _ => None,
        }
    }
}

/// One override level; neither set pays nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideLevel {
    /// PERCENTAGE rate in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// FLAT amount.
    #[serde(with = "money_serde::option", default, skip_serializing_if = "Option::is_none")]
    pub flat_amount: Option<Money>,
}

/// An override plan (a program's, or one upline partner's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverridePlan {
    /// Mode.
    pub mode: OverrideMode,
    /// Basis for PERCENTAGE.
    pub basis: OverrideBasis,
    /// `levels[i]` is level i+1 (1 = the seller's parent).
    pub levels: Vec<OverrideLevel>,
    /// What an ancestor must meet to earn its level under this plan (issue 16
    /// item 3); `None`: every ACTIVE ancestor qualifies, as before. Absent in
    /// plans stored before it existed, and left out of their serialized form
    /// so their request fingerprints do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<Qualification>,
}

/// An ancestor's qualification for its override level (issue 16 item 3
/// "qualified overrides"), evaluated at the sale's `occurred_at` from recorded
/// facts ([`QualificationFacts`]). Every set requirement must be met; at
/// least one is set (SetOverridePlan rejects an empty one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qualification {
    /// Minimum personal sales volume over a trailing window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_volume: Option<VolumeRequirement>,
    /// Minimum number of ACTIVE direct sub-partners at `occurred_at` (0: none).
    #[serde(default)]
    pub min_active_direct_partners: u32,
}

/// A minimum personal volume over a trailing window (issue 16 item 3).
///
/// The volume is Σ gross of the ancestor's own attributed sales (as seller,
/// the link owner) in `minimum`'s currency — the program's default — with
/// `occurred_at` in `[t − window_days × 24 h, t)` for a sale at `t`: the
/// window's start is included, its end (the sale's own instant) excluded.
/// Every recorded attributed sale counts whatever its saga's outcome, and
/// refunds do not lower it (the sales TIERED prior volume counts, DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRequirement {
    /// The minimum (≥ 0, major units with the currency's minor-unit decimals).
    #[serde(with = "money_serde")]
    pub minimum: Money,
    /// Window length in days of 24 h, 1..=[`MAX_VOLUME_WINDOW_DAYS`].
    pub window_days: u32,
}

/// Longest personal-volume window, in days (ten years).
pub const MAX_VOLUME_WINDOW_DAYS: u32 = 3650;

/// The recorded facts an ancestor's [`Qualification`] is decided on, as the
/// settlement's caller gathered them for the sale's `occurred_at`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualificationFacts {
    /// Personal volume (≥ 0) over the window of `volume_window_days` days;
    /// `None`: not gathered.
    pub personal_volume: Option<Money>,
    /// The window `personal_volume` covers, in days.
    pub volume_window_days: u32,
    /// ACTIVE direct sub-partners at `occurred_at`; `None`: not gathered.
    pub active_direct_partners: Option<u32>,
}

/// Most levels an override plan may hold (the hierarchy's depth cap maximum).
pub const MAX_OVERRIDE_LEVELS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn facts(event_type: SaleEventType, gross: Decimal) -> ConditionFacts<'static> {
        ConditionFacts { event_type, gross_amount: gross, product_code: "PRO", is_first_payment: false }
    }

    #[test]
    fn triggers() {
        use SaleEventType::*;
        assert!(Trigger::OnPayment.fires(Payment, false));
        assert!(Trigger::OnPayment.fires(Renewal, false));
        assert!(!Trigger::OnPayment.fires(Signup, true));
        assert!(Trigger::OnActivation.fires(Payment, true));
        assert!(Trigger::OnActivation.fires(Renewal, true));
        assert!(!Trigger::OnActivation.fires(Payment, false));
        assert!(!Trigger::OnActivation.fires(Signup, true));
        assert!(Trigger::OnRenewal.fires(Renewal, false));
        assert!(!Trigger::OnRenewal.fires(Payment, false));
        assert!(Trigger::OnSignup.fires(Signup, false));
        assert!(!Trigger::OnSignup.fires(Payment, true));
    }

    #[test]
    fn conditions() {
        let gte = Condition::GrossAmount { operator: Operator::Gte, values: vec![dec!(100)] };
        assert!(gte.matches(&facts(SaleEventType::Payment, dec!(100.00))));
        assert!(!gte.matches(&facts(SaleEventType::Payment, dec!(99.99))));
        let eq = Condition::GrossAmount { operator: Operator::Equals, values: vec![dec!(100)] };
        assert!(eq.matches(&facts(SaleEventType::Payment, dec!(100.00))));
        let lt = Condition::GrossAmount { operator: Operator::Lt, values: vec![dec!(100)] };
        assert!(lt.matches(&facts(SaleEventType::Payment, dec!(99.99))));
        let within = Condition::EventType {
            operator: Operator::In,
            values: vec![SaleEventType::Renewal, SaleEventType::Signup],
        };
        assert!(within.matches(&facts(SaleEventType::Renewal, dec!(1))));
        assert!(!within.matches(&facts(SaleEventType::Payment, dec!(1))));
        let product = Condition::ProductCode { operator: Operator::Equals, values: vec!["PRO".into()] };
        assert!(product.matches(&facts(SaleEventType::Payment, dec!(1))));
        let first = Condition::IsFirstPayment { value: true };
        assert!(!first.matches(&facts(SaleEventType::Payment, dec!(1))));
        assert_eq!(SaleEventType::from_name("SALE_EVENT_TYPE_RENEWAL"), Some(SaleEventType::Renewal));
        assert_eq!(SaleEventType::from_name("payment"), None);
    }

    #[test]
    fn tiers_are_half_open() {
        let tier = Tier { min_volume: dec!(10000), max_volume: Some(dec!(50000)), pays: TierPays::Rate(dec!(0.15)) };
        assert!(tier.contains(dec!(10000)));
        assert!(tier.contains(dec!(49999.99)));
        assert!(!tier.contains(dec!(50000)));
        let open = Tier { min_volume: dec!(50000), max_volume: None, pays: TierPays::Rate(dec!(0.10)) };
        assert!(open.contains(dec!(1e9)));
    }

    #[test]
    fn rules_round_trip_through_json() {
        let rules = AgreementRules {
            model: Model::Hybrid {
                rules: vec![HybridRule {
                    condition: Condition::GrossAmount { operator: Operator::Gt, values: vec![dec!(100.50)] },
                    model: Model::Tiered {
                        tiers: vec![
                            Tier {
                                min_volume: dec!(0),
                                max_volume: Some(dec!(10)),
                                pays: TierPays::FixedAmount(Money::parse("USD", "1.50").unwrap()),
                            },
                            Tier { min_volume: dec!(10), max_volume: None, pays: TierPays::Rate(dec!(0.125)) },
                        ],
                    },
                }],
            },
            trigger: Trigger::OnActivation,
            setup_fee: Some(Money::parse("USD", "25").unwrap()),
            min_commission: None,
            max_commission: Some(Money::parse("USD", "100").unwrap()),
            clearance_days: 30,
            max_duration_months: 12,
            max_commissions: 0,
        };
        let json = serde_json::to_value(&rules).unwrap();
        assert_eq!(json["setup_fee"]["amount"], "25.00");
        assert_eq!(json["model"]["rules"][0]["condition"]["values"][0], "100.50");
        let back: AgreementRules = serde_json::from_value(json).unwrap();
        assert_eq!(back, rules);
    }
}
