//! The replay's deterministic program configuration (DESIGN §7): partners in a
//! tree, one link each (some with split partners), per-partner agreements
//! beside the program default, and the program override plan — all drawn from
//! a ChaCha8 stream seeded with `--seed`, so the same seed always yields the
//! same configuration, and every create carries a request id derived from the
//! seed so a second run into the same program creates nothing new.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::Serialize;

/// Partners per depth: 8 roots, then levels 1..4 (240 partners).
pub const LEVEL_SIZES: [usize; 5] = [8, 32, 60, 70, 70];

/// Share of partners suspended after the links exist (≈3%).
pub const SUSPENDED_COUNT: usize = 7;

/// Clearance period of every agreement, in days.
pub const CLEARANCE_DAYS: i32 = 30;

/// The program's settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgramSpec {
    /// CreateProgram request id ("online-retail-replay-seed-42").
    pub request_id: String,
    /// Display name.
    pub display_name: String,
    /// ISO 4217 currency.
    pub default_currency: String,
    /// Rounding mode name.
    pub rounding_mode: String,
    /// Override depth cap.
    pub override_depth_cap: i32,
    /// Dynamic compression.
    pub compression_enabled: bool,
    /// Cleared entries are approved at once.
    pub auto_approve_cleared: bool,
    /// Program minimum payout (GBP).
    pub minimum_payout: Decimal,
}

/// One generated partner.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartnerSpec {
    /// Position in creation order (parents before children).
    pub index: usize,
    /// External id ("partner-017").
    pub external_id: String,
    /// Display name.
    pub display_name: String,
    /// CreatePartner request id ("replay-42-partner-17").
    pub request_id: String,
    /// Index of the parent (none for a root).
    pub parent: Option<usize>,
    /// Depth (0 for roots).
    pub depth: u32,
    /// Suspended after the links are created.
    pub suspended: bool,
}

/// A split partner on a link.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SplitSpec {
    /// Index of the split partner.
    pub partner: usize,
    /// Basis points of the base commission (500..3000).
    pub basis_points: i32,
}

/// One generated link (one per partner).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkSpec {
    /// Index of the owner partner (= the link's index).
    pub owner: usize,
    /// Link key, unique per program.
    pub key: String,
    /// CreateLink request id.
    pub request_id: String,
    /// Split partners in order.
    pub splits: Vec<SplitSpec>,
}

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

fn tiers_text(tiers: &[TierSpec]) -> String {
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

fn model_text(rules: &RulesSpec) -> String {
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

/// One agreement version to create.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgreementSpec {
    /// Partner index; `None` is the program default.
    pub partner: Option<usize>,
    /// Short label of the variant ("default", "fixed", "setup_fee", "capped",
    /// "tiered", "hybrid").
    pub variant: String,
    /// CreateAgreement request id.
    pub request_id: String,
    /// effective_from, RFC 3339 (2010-01-01T00:00:00Z).
    pub effective_from: String,
    /// The rules.
    pub rules: RulesSpec,
}

/// The program's override plan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverridePlanSpec {
    /// SetOverridePlan request id.
    pub request_id: String,
    /// PERCENTAGE.
    pub mode: String,
    /// BASE_COMMISSION.
    pub basis: String,
    /// Rates for levels 1, 2, 3.
    pub rates_by_level: Vec<Decimal>,
}

/// Everything generated from one seed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// Program settings.
    pub program: ProgramSpec,
    /// Partners, parents first.
    pub partners: Vec<PartnerSpec>,
    /// Links, one per partner, by owner index.
    pub links: Vec<LinkSpec>,
    /// Agreement versions: the program default first, then per-partner ones.
    pub agreements: Vec<AgreementSpec>,
    /// The program override plan.
    pub override_plan: OverridePlanSpec,
}

/// StockCodes of real products that often open an invoice (REGENCY
/// CAKESTAND 3 TIER, WHITE HANGING HEART T-LIGHT HOLDER, PARTY BUNTING,
/// ASSORTED COLOUR BIRD ORNAMENT): the HYBRID variant's product rule.
pub const HYBRID_PRODUCT_CODES: [&str; 4] = ["22423", "85123A", "47566", "84879"];

/// The TIERED variant: 8% below £5,000 of prior volume, 10% to £25,000, 12% above.
pub fn tiered_rules() -> RulesSpec {
    let tier = |min: i64, max: Option<i64>, rate: i64| TierSpec {
        min_volume: Decimal::new(min, 0),
        max_volume: max.map(|max| Decimal::new(max, 0)),
        rate: Some(Decimal::new(rate, 2)),
        fixed_amount: None,
    };
    RulesSpec {
        model: Model::Tiered,
        trigger: "ON_PAYMENT".into(),
        tiers: vec![tier(0, Some(5_000), 8), tier(5_000, Some(25_000), 10), tier(25_000, None, 12)],
        clearance_days: CLEARANCE_DAYS,
        ..RulesSpec::default()
    }
}

/// The HYBRID variant: a customer's first payment earns £5.00; else a sale of
/// £500 or more earns 12%; else a sale opening with one of
/// [`HYBRID_PRODUCT_CODES`] earns 15%; anything else earns nothing.
pub fn hybrid_rules() -> RulesSpec {
    let condition = |field: &str, operator: &str, value: Option<&str>, values: &[&str]| ConditionSpec {
        field: field.into(),
        operator: operator.into(),
        value: value.map(str::to_string),
        values: values.iter().map(|v| (*v).to_string()).collect(),
    };
    RulesSpec {
        model: Model::Hybrid,
        trigger: "ON_PAYMENT".into(),
        rules: vec![
            HybridRuleSpec {
                condition: condition("IS_FIRST_PAYMENT", "EQUALS", Some("true"), &[]),
                model: Model::Fixed,
                rate: None,
                fixed_amount: Some(Decimal::new(500, 2)),
                tiers: Vec::new(),
            },
            HybridRuleSpec {
                condition: condition("GROSS_AMOUNT", "GTE", Some("500.00"), &[]),
                model: Model::Percentage,
                rate: Some(Decimal::new(12, 2)),
                fixed_amount: None,
                tiers: Vec::new(),
            },
            HybridRuleSpec {
                condition: condition("PRODUCT_CODE", "IN", None, &HYBRID_PRODUCT_CODES),
                model: Model::Percentage,
                rate: Some(Decimal::new(15, 2)),
                fixed_amount: None,
                tiers: Vec::new(),
            },
        ],
        clearance_days: CLEARANCE_DAYS,
        ..RulesSpec::default()
    }
}

fn percentage(rate: Decimal) -> RulesSpec {
    RulesSpec {
        model: Model::Percentage,
        trigger: "ON_PAYMENT".into(),
        rate: Some(rate),
        clearance_days: CLEARANCE_DAYS,
        ..RulesSpec::default()
    }
}

/// Generates the configuration for `seed`. Pure and deterministic.
pub fn generate(seed: u64) -> Plan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let effective_from = "2010-01-01T00:00:00Z".to_string();

    // Partners, level by level; each non-root picks a parent one level up.
    let mut partners: Vec<PartnerSpec> = Vec::new();
    let mut previous_level: Vec<usize> = Vec::new();
    for (depth, &size) in LEVEL_SIZES.iter().enumerate() {
        let mut this_level = Vec::with_capacity(size);
        for _ in 0..size {
            let index = partners.len();
            let parent = previous_level.choose(&mut rng).copied();
            partners.push(PartnerSpec {
                index,
                external_id: format!("partner-{index:03}"),
                display_name: format!("Replay partner {index:03} (depth {depth})"),
                request_id: format!("replay-{seed}-partner-{index}"),
                parent,
                depth: depth as u32,
                suspended: false,
            });
            this_level.push(index);
        }
        previous_level = this_level;
    }
    let count = partners.len();

    // Links: one per partner; ~25% carry one or two split partners.
    let mut links = Vec::with_capacity(count);
    for owner in 0..count {
        let mut splits = Vec::new();
        if rng.random_bool(0.25) {
            let wanted = rng.random_range(1..=2usize);
            while splits.len() < wanted {
                let partner = rng.random_range(0..count);
                if partner == owner || splits.iter().any(|s: &SplitSpec| s.partner == partner) {
                    continue;
                }
                splits.push(SplitSpec { partner, basis_points: rng.random_range(500..=3000) });
            }
        }
        links.push(LinkSpec {
            owner,
            key: format!("partner-{owner:03}"),
            request_id: format!("replay-{seed}-link-{owner}"),
            splits,
        });
    }

    // Agreements: the program default, then per-partner variants.
    let mut agreements = vec![AgreementSpec {
        partner: None,
        variant: "default".into(),
        request_id: format!("replay-{seed}-agreement-default"),
        effective_from: effective_from.clone(),
        rules: percentage(Decimal::new(10, 2)),
    }];
    for index in 0..count {
        let draw = rng.random_range(0..100u32);
        let (variant, rules) = match draw {
            0..10 => (
                "fixed",
                RulesSpec {
                    model: Model::Fixed,
                    trigger: "ON_PAYMENT".into(),
                    fixed_amount: Some(Decimal::new(250, 2)),
                    clearance_days: CLEARANCE_DAYS,
                    ..RulesSpec::default()
                },
            ),
            10..20 => {
                ("setup_fee", RulesSpec { setup_fee: Some(Decimal::new(500, 2)), ..percentage(Decimal::new(12, 2)) })
            }
            20..25 => (
                "capped",
                RulesSpec {
                    min_commission: Some(Decimal::new(100, 2)),
                    max_commission: Some(Decimal::new(5000, 2)),
                    ..percentage(Decimal::new(8, 2))
                },
            ),
            25..35 => ("tiered", tiered_rules()),
            35..45 => ("hybrid", hybrid_rules()),
            _ => continue,
        };
        agreements.push(AgreementSpec {
            partner: Some(index),
            variant: variant.into(),
            request_id: format!("replay-{seed}-agreement-{index}"),
            effective_from: effective_from.clone(),
            rules,
        });
    }

    // Suspensions (after links exist, so they may still be split partners).
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut rng);
    for &index in order.iter().take(SUSPENDED_COUNT) {
        partners[index].suspended = true;
    }

    Plan {
        seed,
        program: ProgramSpec {
            request_id: format!("online-retail-replay-seed-{seed}"),
            display_name: format!("UCI Online Retail replay (seed {seed})"),
            default_currency: "GBP".into(),
            rounding_mode: "HALF_AWAY_FROM_ZERO".into(),
            override_depth_cap: 8,
            compression_enabled: true,
            auto_approve_cleared: true,
            minimum_payout: Decimal::new(2500, 2),
        },
        partners,
        links,
        agreements,
        override_plan: OverridePlanSpec {
            request_id: format!("replay-{seed}-override-plan"),
            mode: "PERCENTAGE".into(),
            basis: "BASE_COMMISSION".into(),
            rates_by_level: vec![Decimal::new(10, 2), Decimal::new(5, 2), Decimal::new(25, 3)],
        },
    }
}

/// The link (index) a customer is attributed to: drawn from the ChaCha8
/// stream numbered by the customer, so it depends only on the seed and the
/// customer — not on which or how many invoices are replayed.
pub fn customer_link(seed: u64, customer: &str, link_count: usize) -> usize {
    if link_count == 0 {
        return 0;
    }
    let digits: String = customer.chars().filter(char::is_ascii_digit).collect();
    let stream = digits.parse::<u64>().unwrap_or_else(|_| fnv1a(customer.as_bytes()));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC057_0000_0000_0000);
    rng.set_stream(stream);
    rng.random_range(0..link_count)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// DESIGN §4 in short, written into the configuration file so a third party
/// can recompute every ledger line.
pub fn rules_summary() -> Vec<&'static str> {
    vec![
        "Money: exact decimals in GBP; every line amount is rounded once to pence with the program's rounding mode (HALF_AWAY_FROM_ZERO).",
        "Sale: one UCI invoice with a CustomerID and a positive total (Σ quantity × unit price, exact, rounded once to pence); event PAYMENT; occurred_at = the first line's InvoiceDate in Europe/London; the customer's first PAYMENT is its activation.",
        "Attribution: each customer is attributed (first touch, TrackLead at its first sale) to the link in `customers`; the link owner is the seller.",
        "Agreement: the seller's own agreement version in force at occurred_at, else the program default (`agreements`: scope, effective_from, rules in full; every version here takes force at 2010-01-01T00:00:00Z and none is ever replaced). Trigger ON_PAYMENT fires on every replayed sale (all are PAYMENT). PERCENTAGE: amount × rate; FIXED: fixed_amount per event; TIERED and HYBRID below; setup_fee added on the customer's first firing event under that agreement; min/max clamp a commission > 0. The raw amount (+ setup fee), rounded once, is the base commission C.",
        "TIERED: the seller's prior volume = Σ gross amounts of the seller's earlier attributed sales in the program (the seller is the link owner; sales ordered by occurred_at, ties by sale id, a UUIDv7 that follows recording order = data-file order; unattributed sales and credit invoices do not count). The tier [min_volume, max_volume) holding it (max_volume null = open-ended) pays rate × the whole sale amount (seed 003, example 5).",
        "HYBRID: rules in order, the first whose condition matches decides with its own model (PERCENTAGE / FIXED / TIERED as above); no match earns 0. Fields: is_first_payment (the customer's first PAYMENT in the program, same ordering as above), gross_amount (the sale amount), product_code (the invoice's first counted line's StockCode), event_type (PAYMENT). Operators: EQUALS, IN (values), GT, GTE, LT, LTE (numbers).",
        "Splits: C is allocated over the owner and the link's split partners by basis points (owner keeps 10000 − Σ split bps) with largest remainder over pence: floor each share, hand leftover pence to the largest fractional parts, ties to the owner first, then split order. Σ shares = C. Zero shares post nothing. A SUSPENDED split partner still accrues; a TERMINATED one is allocated its configured points like any other, then the amount allocated to it moves to the owner (an active partner's share never depends on another's status).",
        "Overrides: walk the seller's ancestors (level 1 = parent) up to min(plan levels, override_depth_cap); line = round(C × rates_by_level[level−1]) (basis BASE_COMMISSION, paid on top of C). With compression enabled, levels count ACTIVE ancestors only (non-active ones are skipped and the next active one takes the level).",
        "Clearance: entries clear at occurred_at + clearance_days; ClearMatured(as_of = month end) clears them, and auto_approve_cleared approves them at once.",
        "Payouts: for each month, CreatePayoutRun(GBP, \"YYYY-MM\", cutoff = month end) pays each ACTIVE partner's approved entries cleared by the cutoff when they total at least minimum_payout; smaller balances carry forward. SUSPENDED partners accrue but are not paid.",
        "Credit invoices (C…): each credit line refunds, among the same customer's sales with an earlier occurred_at that contain its StockCode with enough unrefunded quantity (the sale's lines of that StockCode summed, less what earlier credit lines took), the most recent one (same instant: the later in file order); its value is |quantity| × the credit line's unit price, exact (finer than pence: rounded half away from zero). One RecordRefund per (credit invoice, matched sale), amount = Σ its matched values capped at the sale's unrefunded amount, occurred_at = the credit invoice's time, applied in credit-invoice time order (ties by file order); `refunds` lists every one with its lines. Unmatched lines are counted by reason (no customer; no earlier sale; no earlier sale with that StockCode; not enough unrefunded quantity).",
        "Clawback (DESIGN §4): after refunds totalling T on a sale of amount A, the sale's total clawback is round(Σ its lines × T / A) (the program's rounding mode); a refund posts Δ = that total − what the sale's earlier refunds clawed back, as DEBIT entries over the sale's lines by largest remainder weighted by each line's amount not yet clawed back (ties in line order: DIRECT, SPLIT in split order, OVERRIDE by level). A debit against a line neither paid nor reserved travels with it (same clears_at and status); against a paid or reserved line it is APPROVED at once with clears_at = the refund's time and nets against the next payout run.",
        "Timeline: every sale is recorded and settled first (a later month's sales never clear before their month); then month by month: that month's refunds (RecordRefund, in time order), ClearMatured(as_of = month end), CreatePayoutRun(cutoff = month end). A payout's amount is the net: approved credits − approved debits cleared by the cutoff; a net ≤ 0 or below the minimum carries forward.",
        "A… adjustments, stock write-offs (price 0, negative quantity, no customer) and non-positive totals are skipped and counted; invoices without a CustomerID are recorded as unattributed sales and earn nothing.",
    ]
}

/// The configuration file `--config-out` (default `accrue-replay-config.json`):
/// everything a third party needs, with the server-assigned ids, to recompute
/// every ledger line from the data set.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigFile {
    /// How it was generated.
    pub generator: GeneratorInfo,
    /// The program (id and settings).
    pub program: ProgramOut,
    /// Every partner, parents first.
    pub partners: Vec<PartnerOut>,
    /// Every link with its splits.
    pub links: Vec<LinkOut>,
    /// Every agreement version (the program default first).
    pub agreements: Vec<AgreementOut>,
    /// The agreement variants in use: model, rules in prose, and which
    /// partners hold each (every other partner sells under the program default).
    pub agreement_variants: Vec<VariantOut>,
    /// The program override plan.
    pub override_plan: OverridePlanSpec,
    /// Customer external id → the link it is attributed to.
    pub customers: std::collections::BTreeMap<String, CustomerOut>,
    /// The rules of DESIGN §4 in short.
    pub rules: Vec<&'static str>,
    /// Every refund the credit invoices make, in the order they are applied.
    pub refunds: Vec<super::refunds::PlannedRefund>,
}

/// Generator inputs.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorInfo {
    /// The seed.
    pub seed: u64,
    /// The data directory read.
    pub data_dir: String,
    /// `--limit-invoices`, when given.
    pub limit_invoices: Option<usize>,
}

/// The program as created.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramOut {
    /// Program id.
    pub id: String,
    /// The settings sent.
    #[serde(flatten)]
    pub settings: ProgramSpec,
}

/// A partner as created.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerOut {
    /// Partner id.
    pub id: String,
    /// External id.
    pub external_id: String,
    /// Display name.
    pub display_name: String,
    /// Parent id (`None` for roots).
    pub parent_id: Option<String>,
    /// Parent external id.
    pub parent_external_id: Option<String>,
    /// Depth (0 for roots).
    pub depth: u32,
    /// Final status (ACTIVE or SUSPENDED).
    pub status: String,
}

/// A link split as created.
#[derive(Debug, Clone, Serialize)]
pub struct SplitOut {
    /// Split partner id.
    pub partner_id: String,
    /// Its external id.
    pub partner_external_id: String,
    /// Basis points of the base commission.
    pub basis_points: i32,
}

/// A link as created.
#[derive(Debug, Clone, Serialize)]
pub struct LinkOut {
    /// Link id.
    pub id: String,
    /// Link key.
    pub key: String,
    /// Owner partner id (the seller).
    pub owner_partner_id: String,
    /// Owner external id.
    pub owner_external_id: String,
    /// Splits in order (the owner keeps 10000 − Σ basis points).
    pub splits: Vec<SplitOut>,
}

/// An agreement version as created.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementOut {
    /// Version id.
    pub version_id: String,
    /// Agreement (scope) id.
    pub agreement_id: String,
    /// "program" (the default) or "partner".
    pub scope: String,
    /// Partner id for a partner scope.
    pub partner_id: Option<String>,
    /// Partner external id for a partner scope.
    pub partner_external_id: Option<String>,
    /// Version number within the scope.
    pub version: i32,
    /// Variant label.
    pub variant: String,
    /// effective_from (RFC 3339).
    pub effective_from: String,
    /// The rules in one line of prose (the `rules` object is authoritative).
    pub description: String,
    /// The rules.
    pub rules: RulesSpec,
}

/// One agreement variant and the partners holding it.
#[derive(Debug, Clone, Serialize)]
pub struct VariantOut {
    /// Variant label ("default", "tiered", …).
    pub variant: String,
    /// PERCENTAGE, FIXED, TIERED or HYBRID.
    pub model: Model,
    /// "program" for the default, else "partner".
    pub scope: String,
    /// The rules in one line of prose.
    pub description: String,
    /// External ids of the partners with a version of this variant (empty
    /// for the program default).
    pub partner_external_ids: Vec<String>,
}

/// The variants of `plan`'s agreements in first-appearance order (the
/// program default first), each with its partners in index order.
pub fn variants(plan: &Plan) -> Vec<VariantOut> {
    let mut out: Vec<VariantOut> = Vec::new();
    for agreement in &plan.agreements {
        let position = match out.iter().position(|v| v.variant == agreement.variant) {
            Some(position) => position,
            None => {
                out.push(VariantOut {
                    variant: agreement.variant.clone(),
                    model: agreement.rules.model,
                    scope: if agreement.partner.is_some() { "partner".into() } else { "program".into() },
                    description: agreement.rules.describe(),
                    partner_external_ids: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let Some(partner) = agreement.partner.and_then(|index| plan.partners.get(index)) {
            out[position].partner_external_ids.push(partner.external_id.clone());
        }
    }
    out
}

/// A customer's attribution.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerOut {
    /// Link id.
    pub link_id: String,
    /// Link key.
    pub link_key: String,
    /// The link owner (seller).
    pub partner_id: String,
    /// When the lead was tracked (the customer's first sale).
    pub lead_time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan_and_shape() {
        let plan = generate(42);
        assert_eq!(plan, generate(42));
        assert_ne!(plan.links, generate(43).links);
        assert!(plan.partners.len() >= 220);
        assert_eq!(plan.partners.iter().map(|p| p.depth).max(), Some(4));
        for partner in &plan.partners {
            match partner.parent {
                None => assert_eq!(partner.depth, 0),
                Some(parent) => {
                    assert!(parent < partner.index, "parents are created first");
                    assert_eq!(plan.partners[parent].depth + 1, partner.depth);
                }
            }
        }
        assert_eq!(plan.partners.iter().filter(|p| p.suspended).count(), SUSPENDED_COUNT);
        assert_eq!(plan.links.len(), plan.partners.len());
        let with_splits = plan.links.iter().filter(|l| !l.splits.is_empty()).count();
        assert!((30..=90).contains(&with_splits), "≈25% of links split: {with_splits}");
        for link in &plan.links {
            assert!(link.splits.len() <= 2);
            assert!(link.splits.iter().all(|s| s.partner != link.owner && (500..=3000).contains(&s.basis_points)));
        }
        assert_eq!(plan.agreements[0].partner, None);
        let variants = |v: &str| plan.agreements.iter().filter(|a| a.variant == v).count();
        assert!(variants("fixed") > 5 && variants("setup_fee") > 5 && variants("capped") > 2);
        assert!(variants("tiered") > 5 && variants("hybrid") > 5);
        let models: std::collections::BTreeSet<&str> = plan.agreements.iter().map(|a| a.rules.model.as_str()).collect();
        assert_eq!(models.into_iter().collect::<Vec<_>>(), ["FIXED", "HYBRID", "PERCENTAGE", "TIERED"]);
        let ids: std::collections::HashSet<&str> = plan
            .partners
            .iter()
            .map(|p| p.request_id.as_str())
            .chain(plan.links.iter().map(|l| l.request_id.as_str()))
            .chain(plan.agreements.iter().map(|a| a.request_id.as_str()))
            .collect();
        assert_eq!(ids.len(), plan.partners.len() + plan.links.len() + plan.agreements.len());
    }

    #[test]
    fn tiers_are_contiguous_from_zero_with_one_open_end() {
        let rules = tiered_rules();
        assert_eq!(rules.tiers[0].min_volume, Decimal::ZERO);
        for pair in rules.tiers.windows(2) {
            assert_eq!(pair[0].max_volume, Some(pair[1].min_volume));
        }
        assert_eq!(rules.tiers.iter().filter(|t| t.max_volume.is_none()).count(), 1);
        assert_eq!(rules.tiers.last().and_then(|t| t.max_volume), None);
        assert!(rules.tiers.iter().all(|t| t.rate.is_some_and(|r| r > Decimal::ZERO && r < Decimal::ONE)));
    }

    #[test]
    fn agreements_describe_themselves_and_variants_name_their_partners() {
        assert_eq!(
            tiered_rules().describe(),
            "TIERED on ON_PAYMENT: by the seller's prior volume (GBP): [0, 5000) → 0.08 × sale; \
             [5000, 25000) → 0.10 × sale; [25000, ∞) → 0.12 × sale; clears after 30 days"
        );
        assert_eq!(
            hybrid_rules().describe(),
            "HYBRID on ON_PAYMENT: first match of rule[0] if IS_FIRST_PAYMENT EQUALS true → FIXED 5.00 GBP; \
             rule[1] if GROSS_AMOUNT GTE 500.00 → PERCENTAGE 0.12 × sale; \
             rule[2] if PRODUCT_CODE IN [22423, 85123A, 47566, 84879] → PERCENTAGE 0.15 × sale; no match → 0; \
             clears after 30 days"
        );
        let plan = generate(42);
        let variants = variants(&plan);
        assert_eq!(variants[0].variant, "default");
        assert!(variants[0].partner_external_ids.is_empty());
        let listed: usize = variants.iter().map(|v| v.partner_external_ids.len()).sum();
        assert_eq!(listed, plan.agreements.len() - 1, "every partner agreement is listed once");
        for model in ["TIERED", "HYBRID"] {
            let variant = variants.iter().find(|v| v.model.as_str() == model).unwrap();
            assert!(!variant.partner_external_ids.is_empty(), "{model} has partners");
        }
    }

    #[test]
    fn customer_links_depend_on_seed_and_customer_only() {
        let a = customer_link(42, "C17850", 240);
        assert_eq!(a, customer_link(42, "C17850", 240));
        assert!(a < 240);
        let spread: std::collections::HashSet<usize> =
            (12346..12546).map(|n| customer_link(42, &format!("C{n}"), 240)).collect();
        assert!(spread.len() > 100, "customers spread over many links");
        assert_eq!(customer_link(42, "C1", 0), 0);
    }
}
