//! The benchmark's synthetic workload, all drawn from one ChaCha8 stream
//! seeded with `--seed` (as the replay's configuration is), so two runs with
//! the same seed and size post the same calls:
//!
//! - the program ([`plan`]): a 6-level partner tree ([`LEVEL_SIZES`]), one
//!   link per partner, exactly half of them (chosen by the seed) with two
//!   split partners, the program's default PERCENTAGE agreement plus
//!   per-partner PERCENTAGE and TIERED variants, and a 3-level override plan;
//! - the traffic ([`traffic`]): a tenth as many customers as sales, each
//!   attributed once to a seed-chosen link; the sales (£5.00 to £500.00, in
//!   time order over [`SALES_PERIOD`]); and 5 % of them refunded in part
//!   (10 to 60 % of the amount) after they settled.
//!
//! Times are offsets from an anchor the run picks (its own start), so that
//! every sale and refund is recent: the services accept them, and no ledger
//! line clears during the run (clearance is 30 days), so no background
//! clearing competes with the settlement being measured.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::replay::config::{self, AgreementSpec, LinkSpec, Plan, SplitSpec};

/// Partners per depth: 4 roots, then levels 1..5 (356 partners).
pub const LEVEL_SIZES: [usize; 6] = [4, 12, 30, 60, 100, 150];
/// The period the sales' `occurred_at` are spread over, ending at the anchor.
pub const SALES_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// How long after its sale a refund happened.
pub const REFUND_DELAY: Duration = Duration::from_secs(3600);
/// Share of the sales refunded in part, in percent.
pub const REFUNDED_PERCENT: u64 = 5;
/// Sales per customer (a tenth as many customers as sales).
pub const SALES_PER_CUSTOMER: u64 = 10;

/// The bench program for `seed` (see the module docs). Pure and
/// deterministic; every create carries a request id derived from the seed.
pub fn plan(seed: u64) -> Plan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let effective_from = "2000-01-01T00:00:00Z".to_string();

    let partners = config::partner_tree(&mut rng, &LEVEL_SIZES, |index, depth| {
        (
            format!("bench-partner-{index:03}"),
            format!("Bench partner {index:03} (depth {depth})"),
            format!("bench-{seed}-partner-{index}"),
        )
    });
    let count = partners.len();

    // Exactly half the links, chosen by the seed, carry two split partners.
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut rng);
    let mut split = vec![false; count];
    for &owner in &order[..count / 2] {
        split[owner] = true;
    }
    let mut links = Vec::with_capacity(count);
    for (owner, &with_splits) in split.iter().enumerate() {
        let mut splits: Vec<SplitSpec> = Vec::new();
        while with_splits && splits.len() < 2 {
            let partner = rng.random_range(0..count);
            if partner != owner && splits.iter().all(|s| s.partner != partner) {
                splits.push(SplitSpec { partner, basis_points: rng.random_range(500..=3000) });
            }
        }
        links.push(LinkSpec {
            owner,
            key: format!("bench-{owner:03}"),
            request_id: format!("bench-{seed}-link-{owner}"),
            splits,
        });
    }

    let mut agreements = vec![AgreementSpec {
        partner: None,
        variant: "default".into(),
        request_id: format!("bench-{seed}-agreement-default"),
        effective_from: effective_from.clone(),
        rules: config::percentage(Decimal::new(10, 2)),
    }];
    for index in 0..count {
        let (variant, rules) = match rng.random_range(0..100u32) {
            0..20 => ("percentage_12", config::percentage(Decimal::new(12, 2))),
            20..35 => ("percentage_8", config::percentage(Decimal::new(8, 2))),
            35..55 => ("tiered", config::tiered_rules()),
            _ => continue,
        };
        agreements.push(AgreementSpec {
            partner: Some(index),
            variant: variant.into(),
            request_id: format!("bench-{seed}-agreement-{index}"),
            effective_from: effective_from.clone(),
            rules,
        });
    }

    Plan {
        seed,
        program: config::program_spec(format!("bench-seed-{seed}"), format!("accrue bench (seed {seed})")),
        partners,
        links,
        agreements,
        override_plan: config::override_plan(format!("bench-{seed}-override-plan")),
    }
}

/// One sale of the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct SaleSpec {
    /// External id, unique in the run (`bench-<seed>-<sales>-sale-<i>`).
    pub external_id: String,
    /// Index of its customer.
    pub customer: usize,
    /// Amount in pence (500..=50 000).
    pub pence: i64,
    /// `occurred_at` as an offset from the start of the sales period.
    pub offset: Duration,
}

/// One partial refund of the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundSpec {
    /// Index of the refunded sale.
    pub sale: usize,
    /// External id of the refund.
    pub external_id: String,
    /// Amount in pence (10 to 60 % of the sale's, at least 1).
    pub pence: i64,
}

/// The customers, sales and refunds of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Each customer's link (an index into the plan's links).
    pub customers: Vec<usize>,
    /// The sales, in `occurred_at` order.
    pub sales: Vec<SaleSpec>,
    /// The refunds, in their sales' order.
    pub refunds: Vec<RefundSpec>,
}

/// External id of customer `index`.
pub fn customer_id(index: usize) -> String {
    format!("bench-customer-{index}")
}

/// The traffic of `sales` sales over `links` links for `seed` (see the module
/// docs). Pure and deterministic.
pub fn traffic(seed: u64, sales: u64, links: usize) -> Traffic {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xBE4C_0000_0000_0000 ^ sales);
    let customer_count = sales.div_ceil(SALES_PER_CUSTOMER).max(1) as usize;
    let customers = (0..customer_count).map(|_| rng.random_range(0..links.max(1))).collect();
    let period = SALES_PERIOD.as_micros() as u64;
    let sales_list: Vec<SaleSpec> = (0..sales)
        .map(|i| SaleSpec {
            external_id: format!("bench-{seed}-{sales}-sale-{i}"),
            customer: rng.random_range(0..customer_count),
            pence: rng.random_range(500..=50_000),
            offset: Duration::from_micros(period * i / sales.max(1)),
        })
        .collect();
    let refund_count = (sales * REFUNDED_PERCENT).div_ceil(100) as usize;
    let mut chosen =
        rand::seq::index::sample(&mut rng, sales_list.len(), refund_count.min(sales_list.len())).into_vec();
    chosen.sort_unstable();
    let refunds = chosen
        .into_iter()
        .map(|sale| RefundSpec {
            sale,
            external_id: format!("bench-{seed}-{sales}-refund-{sale}"),
            pence: (sales_list[sale].pence * rng.random_range(10..=60i64) / 100).max(1),
        })
        .collect();
    Traffic { customers, sales: sales_list, refunds }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_six_levels_and_half_its_links_split_in_two() {
        let plan = plan(42);
        assert_eq!(plan, super::plan(42), "deterministic for a seed");
        assert_ne!(plan.links, super::plan(43).links);
        assert_eq!(plan.partners.len(), LEVEL_SIZES.iter().sum::<usize>());
        let depths: std::collections::BTreeSet<u32> = plan.partners.iter().map(|p| p.depth).collect();
        assert_eq!(depths.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        for partner in &plan.partners {
            assert!(!partner.suspended);
            match partner.parent {
                None => assert_eq!(partner.depth, 0),
                Some(parent) => assert_eq!(plan.partners[parent].depth + 1, partner.depth),
            }
        }
        assert_eq!(plan.links.len(), plan.partners.len());
        let split: Vec<&LinkSpec> = plan.links.iter().filter(|l| !l.splits.is_empty()).collect();
        assert_eq!(split.len(), plan.links.len() / 2, "exactly half the links split");
        for link in split {
            assert_eq!(link.splits.len(), 2);
            assert_ne!(link.splits[0].partner, link.splits[1].partner);
            assert!(link.splits.iter().all(|s| s.partner != link.owner && (500..=3000).contains(&s.basis_points)));
        }
        let models: std::collections::BTreeSet<&str> = plan.agreements.iter().map(|a| a.rules.model.as_str()).collect();
        assert_eq!(models.into_iter().collect::<Vec<_>>(), ["PERCENTAGE", "TIERED"]);
        assert_eq!(plan.agreements[0].partner, None);
        assert_eq!(plan.override_plan.rates_by_level.len(), 3);
    }

    #[test]
    fn traffic_is_deterministic_in_time_order_with_five_percent_refunded() {
        let traffic = traffic(42, 1000, 356);
        assert_eq!(traffic, super::traffic(42, 1000, 356));
        assert_eq!(traffic.customers.len(), 100);
        assert!(traffic.customers.iter().all(|&link| link < 356));
        assert!(traffic.sales.windows(2).all(|w| w[0].offset < w[1].offset));
        assert!(traffic.sales.iter().all(|s| (500..=50_000).contains(&s.pence) && s.customer < 100));
        let ids: std::collections::HashSet<&str> = traffic.sales.iter().map(|s| s.external_id.as_str()).collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(traffic.refunds.len(), 50);
        assert!(traffic.refunds.windows(2).all(|w| w[0].sale < w[1].sale));
        for refund in &traffic.refunds {
            let sale = traffic.sales[refund.sale].pence;
            assert!(refund.pence >= sale / 10 && refund.pence <= sale * 6 / 10, "{refund:?} of {sale}");
        }
        assert_eq!(super::traffic(42, 1, 356).customers.len(), 1);
    }
}
