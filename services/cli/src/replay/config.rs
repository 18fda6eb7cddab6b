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

mod file;
mod rules;

pub use file::*;
pub use rules::*;

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

/// A PERCENTAGE agreement: `rate` × the sale, on payment, clearing after
/// [`CLEARANCE_DAYS`].
pub fn percentage(rate: Decimal) -> RulesSpec {
    RulesSpec {
        model: Model::Percentage,
        trigger: "ON_PAYMENT".into(),
        rate: Some(rate),
        clearance_days: CLEARANCE_DAYS,
        ..RulesSpec::default()
    }
}

/// Partners level by level, `level_sizes[d]` at depth `d`, each non-root
/// under a parent drawn from `rng` one level up; `names(index, depth)` gives
/// each one's external id, display name and request id. None suspended.
pub fn partner_tree(
    rng: &mut ChaCha8Rng,
    level_sizes: &[usize],
    names: impl Fn(usize, usize) -> (String, String, String),
) -> Vec<PartnerSpec> {
    let mut partners: Vec<PartnerSpec> = Vec::new();
    let mut previous_level: Vec<usize> = Vec::new();
    for (depth, &size) in level_sizes.iter().enumerate() {
        let mut this_level = Vec::with_capacity(size);
        for _ in 0..size {
            let index = partners.len();
            let parent = previous_level.choose(rng).copied();
            let (external_id, display_name, request_id) = names(index, depth);
            partners.push(PartnerSpec {
                index,
                external_id,
                display_name,
                request_id,
                parent,
                depth: depth as u32,
                suspended: false,
            });
            this_level.push(index);
        }
        previous_level = this_level;
    }
    partners
}

/// The program settings the replay and the benchmark share: GBP, half away
/// from zero, override depth cap 8, compression on, cleared entries
/// approved at once, a £25.00 minimum payout.
pub fn program_spec(request_id: String, display_name: String) -> ProgramSpec {
    ProgramSpec {
        request_id,
        display_name,
        default_currency: "GBP".into(),
        rounding_mode: "HALF_AWAY_FROM_ZERO".into(),
        override_depth_cap: 8,
        compression_enabled: true,
        auto_approve_cleared: true,
        minimum_payout: Decimal::new(2500, 2),
    }
}

/// The override plan the replay and the benchmark share: PERCENTAGE of the
/// base commission, 10 % / 5 % / 2.5 % for levels 1 to 3.
pub fn override_plan(request_id: String) -> OverridePlanSpec {
    OverridePlanSpec {
        request_id,
        mode: "PERCENTAGE".into(),
        basis: "BASE_COMMISSION".into(),
        rates_by_level: vec![Decimal::new(10, 2), Decimal::new(5, 2), Decimal::new(25, 3)],
    }
}

/// Generates the configuration for `seed`. Pure and deterministic.
pub fn generate(seed: u64) -> Plan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let effective_from = "2010-01-01T00:00:00Z".to_string();

    let mut partners = partner_tree(&mut rng, &LEVEL_SIZES, |index, depth| {
        (
            format!("partner-{index:03}"),
            format!("Replay partner {index:03} (depth {depth})"),
            format!("replay-{seed}-partner-{index}"),
        )
    });
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
        program: program_spec(
            format!("online-retail-replay-seed-{seed}"),
            format!("UCI Online Retail replay (seed {seed})"),
        ),
        partners,
        links,
        agreements,
        override_plan: override_plan(format!("replay-{seed}-override-plan")),
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
