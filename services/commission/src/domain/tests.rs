//! Unit tests of the settlement math (DESIGN §4; seeds 000, 003, 004).

use std::str::FromStr;

use accrue_money::{Money, RoundingMode};
use accrue_types::{ParseIdError, PartnerId, SchemeId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;

fn money(currency: &str, amount: &str) -> Money {
    Money::parse(currency, amount).unwrap()
}

fn usd(amount: &str) -> Money {
    money("USD", amount)
}

/// The id `n` of whichever kind the call site wants (partner, scheme,
/// agreement, version): the fixtures number every id in one space.
fn pid<T: FromStr<Err = ParseIdError>>(n: u128) -> T {
    Uuid::from_u128(n).to_string().parse().expect("a UUID parses as every kind of id")
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn partner(n: u128, status: PartnerStatus) -> PartnerRef {
    PartnerRef { id: pid(n), status: Some(status), role: None }
}

fn active(n: u128) -> PartnerRef {
    partner(n, PartnerStatus::Active)
}

const SELLER: u128 = 1;
const DEFAULT_AGREEMENT: u128 = 900;
const DEFAULT_VERSION: u128 = 1000;

fn program() -> ProgramSettings {
    ProgramSettings {
        rounding: RoundingMode::HalfAwayFromZero,
        override_depth_cap: 8,
        compression_enabled: false,
        settings_version: 1,
    }
}

fn rules(model: Model) -> AgreementRules {
    AgreementRules {
        model,
        trigger: Trigger::OnPayment,
        setup_fee: None,
        min_commission: None,
        max_commission: None,
        clearance_days: 30,
        max_duration_months: 0,
        max_commissions: 0,
    }
}

fn pct(rate: Decimal) -> Model {
    Model::Percentage { rate }
}

fn version(
    id: u128,
    agreement: u128,
    partner: Option<u128>,
    number: i32,
    from: &str,
    rules: AgreementRules,
) -> AgreementVersion {
    AgreementVersion {
        id: pid(id),
        agreement_id: pid(agreement),
        partner_id: partner.map(pid),
        version: number,
        effective_from: at(from),
        rules,
    }
}

fn default_book(rules: AgreementRules) -> AgreementBook {
    AgreementBook::new([version(DEFAULT_VERSION, DEFAULT_AGREEMENT, None, 1, "2000-01-01T00:00:00Z", rules)])
}

fn sale(amount: Money) -> Sale {
    Sale {
        sale_id: "sale-1".into(),
        event_type: SaleEventType::Payment,
        amount,
        product_code: String::new(),
        service_code: String::new(),
        occurred_at: at("2024-06-01T12:00:00Z"),
        seller: active(SELLER),
        splits: Vec::new(),
        ancestors: Vec::new(),
        is_first_payment: true,
        seller_prior_volume: None,
        customer_history: Vec::new(),
        ancestor_facts: Default::default(),
    }
}

fn prior(id: &str, event_type: SaleEventType, seller: u128, when: &str) -> PriorEvent {
    PriorEvent {
        sale_id: id.into(),
        event_type,
        seller_partner_id: pid(seller),
        occurred_at: at(when),
        service_code: String::new(),
    }
}

fn split(n: u128, basis_points: u32, status: PartnerStatus) -> SplitShare {
    SplitShare { partner: partner(n, status), basis_points }
}

fn run(book: &AgreementBook, sale: &Sale) -> Settlement {
    settle(&program(), book, &OverridePlans::default(), &SchemeBook::default(), sale)
}

/// A computed line's breakdown (commission gives every line one).
fn why(line: &Line) -> &Breakdown {
    line.breakdown.as_ref().expect("every computed line has a breakdown")
}

/// (partner, kind, amount, level) of every line.
fn lines(settlement: &Settlement) -> Vec<(PartnerId, EarningKind, String, u32)> {
    settlement.lines.iter().map(|l| (l.partner_id, l.kind, l.amount.amount_string(), l.level)).collect()
}

fn base(settlement: &Settlement) -> String {
    settlement.base_commission.map(|m| m.amount_string()).unwrap_or_else(|| "none".into())
}

fn assert_conserves(settlement: &Settlement) {
    let shares: Decimal = settlement
        .lines
        .iter()
        .filter(|l| matches!(l.kind, EarningKind::Direct | EarningKind::Split))
        .map(|l| l.amount.amount)
        .sum();
    assert_eq!(shares, settlement.base_commission.map_or(Decimal::ZERO, |m| m.amount));
}

// ---------------------------------------------------------------- seed 000

#[test]
fn seed_000_split_owner_50_a_30_b_20() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(usd("100.00"));
    s.splits = vec![split(2, 3000, PartnerStatus::Active), split(3, 2000, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(out.failure, None);
    assert_eq!(base(&out), "10.00");
    assert_eq!(
        lines(&out),
        vec![
            (pid(SELLER), EarningKind::Direct, "5.00".into(), 0),
            (pid(2), EarningKind::Split, "3.00".into(), 0),
            (pid(3), EarningKind::Split, "2.00".into(), 0),
        ]
    );
    assert_conserves(&out);
    let direct = &out.lines[0];
    assert_eq!(why(direct).model, "PERCENTAGE");
    assert_eq!(why(direct).agreement_version_id, Some(pid(DEFAULT_VERSION)));
    assert_eq!(direct.source_partner_id, Some(pid(SELLER)));
    assert_eq!(direct.clears_at, at("2024-07-01T12:00:00Z"));
    assert_eq!(why(&out.lines[2]).rule, "split[1]");
}

#[test]
fn one_cent_over_three_shares_goes_to_the_largest_remainder() {
    // 1.00 × 0.01 = 0.01; owner keeps 3334 bp.
    let book = default_book(rules(pct(dec!(0.01))));
    let mut s = sale(usd("1.00"));
    s.splits = vec![split(2, 3333, PartnerStatus::Active), split(3, 3333, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "0.01".into(), 0)]);
    // The split with the largest remainder wins over the owner.
    s.splits = vec![split(2, 3334, PartnerStatus::Active), split(3, 3333, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(lines(&out), vec![(pid(2), EarningKind::Split, "0.01".into(), 0)]);
    // 0.02 over [3333, 3333, 3334]: the largest remainder first, then the owner wins the tie.
    let mut s = sale(usd("2.00"));
    s.splits = vec![split(2, 3333, PartnerStatus::Active), split(3, 3334, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(
        lines(&out),
        vec![(pid(SELLER), EarningKind::Direct, "0.01".into(), 0), (pid(3), EarningKind::Split, "0.01".into(), 0)]
    );
    assert_conserves(&out);
}

#[test]
fn one_basis_point_shares() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(usd("1000.00"));
    s.splits = vec![split(2, 1, PartnerStatus::Active), split(3, 1, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(
        lines(&out),
        vec![
            (pid(SELLER), EarningKind::Direct, "99.98".into(), 0),
            (pid(2), EarningKind::Split, "0.01".into(), 0),
            (pid(3), EarningKind::Split, "0.01".into(), 0),
        ]
    );
    // On a 10.00 commission a 1 bp share is 0.001: floors to 0, the owner keeps the cents.
    let out = run(&book, &{
        let mut s = sale(usd("100.00"));
        s.splits = vec![split(2, 1, PartnerStatus::Active)];
        s
    });
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "10.00".into(), 0)]);
}

#[test]
fn splits_taking_everything_leave_the_owner_no_line() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(usd("100.00"));
    s.splits = vec![split(2, 6000, PartnerStatus::Active), split(3, 4000, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(
        lines(&out),
        vec![(pid(2), EarningKind::Split, "6.00".into(), 0), (pid(3), EarningKind::Split, "4.00".into(), 0)]
    );
    assert_conserves(&out);
}

#[test]
fn jpy_has_no_minor_unit() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(money("JPY", "1000"));
    s.splits = vec![split(2, 3333, PartnerStatus::Active), split(3, 3333, PartnerStatus::Active)];
    let out = run(&book, &s);
    assert_eq!(base(&out), "100");
    assert_eq!(
        lines(&out),
        vec![
            (pid(SELLER), EarningKind::Direct, "34".into(), 0),
            (pid(2), EarningKind::Split, "33".into(), 0),
            (pid(3), EarningKind::Split, "33".into(), 0),
        ]
    );
    // ¥1005 × 0.10 = 100.5 → 101 (half away from zero).
    let out = run(&book, &sale(money("JPY", "1005")));
    assert_eq!(base(&out), "101");
    assert_eq!(out.base_breakdown.rounding, "HALF_AWAY_FROM_ZERO to 0 dp: 100.50 → 101");
}

#[test]
fn terminated_split_falls_back_to_owner_and_suspended_still_accrues() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(usd("100.00"));
    s.splits = vec![split(2, 3000, PartnerStatus::Terminated), split(3, 2000, PartnerStatus::Suspended)];
    let out = run(&book, &s);
    assert_eq!(
        lines(&out),
        vec![(pid(SELLER), EarningKind::Direct, "8.00".into(), 0), (pid(3), EarningKind::Split, "2.00".into(), 0)]
    );
    assert!(why(&out.lines[0]).note.contains("TERMINATED"));
    assert!(out.base_breakdown.note.contains("fall back to the owner"));
}

/// Issue 8 item 1: the configured points are allocated first; only then does
/// a TERMINATED partner's amount move to the owner.
#[test]
fn terminated_split_partner_is_allocated_its_points_then_moved_to_the_owner() {
    // C = 1.40 over owner 3332 / 3333 / 3334 / 1 (the 1-point partner TERMINATED).
    let book = default_book(rules(pct(dec!(0.01))));
    let mut s = sale(usd("140.00"));
    s.splits = vec![
        split(2, 3333, PartnerStatus::Active),
        split(3, 3334, PartnerStatus::Active),
        split(4, 1, PartnerStatus::Terminated),
    ];
    let out = run(&book, &s);
    assert_eq!(base(&out), "1.40");
    assert_eq!(
        lines(&out),
        vec![
            (pid(SELLER), EarningKind::Direct, "0.46".into(), 0),
            (pid(2), EarningKind::Split, "0.47".into(), 0),
            (pid(3), EarningKind::Split, "0.47".into(), 0),
        ]
    );
    assert_conserves(&out);

    // C = 7.22 with splits 7 and 13 points, the 13-point partner TERMINATED:
    // the 7-point partner's largest-remainder share of 722 cents is 0, and the
    // cent allocated to the 13-point partner goes to the owner.
    let mut s = sale(usd("72.20"));
    s.splits = vec![split(2, 7, PartnerStatus::Active), split(3, 13, PartnerStatus::Terminated)];
    let book = default_book(rules(pct(dec!(0.10))));
    let out = run(&book, &s);
    assert_eq!(base(&out), "7.22");
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "7.22".into(), 0)]);
    assert!(out.base_breakdown.note.contains("the 0.01 allocated to its 13 bp fall back to the owner"));
    assert!(why(&out.lines[0]).formula.contains("+ 0.01 from TERMINATED splits → 7.22"));
    assert_conserves(&out);
}

#[test]
fn invalid_splits_and_negative_amounts_fail_the_sale() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut s = sale(usd("100.00"));
    s.splits = vec![split(2, 6000, PartnerStatus::Active), split(3, 5000, PartnerStatus::Active)];
    let out = run(&book, &s);
    let failure = out.failure.unwrap();
    assert_eq!((failure.code, failure.reason.as_str()), (FailureCode::InvalidArgument, "INVALID_SPLITS"));
    assert!(out.lines.is_empty());
    let out = run(&book, &sale(usd("-1.00")));
    assert_eq!(out.failure.unwrap().reason, "NEGATIVE_AMOUNT");
}

// ---------------------------------------------------------------- seed 003 examples

#[test]
fn seed_003_example_1_fifteen_percent() {
    let out = run(&default_book(rules(pct(dec!(0.15)))), &sale(usd("100.00")));
    assert_eq!(base(&out), "15.00");
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "15.00".into(), 0)]);
    assert_eq!(out.agreement_version_id, Some(pid(DEFAULT_VERSION)));
    assert_eq!(out.base_breakdown.model, "PERCENTAGE");
    assert_eq!(out.base_breakdown.formula, "100.00 × 0.15 = 15.0000 → 15.00");
    assert_eq!(out.base_breakdown.inputs["rate"], "0.15");
    assert_eq!(out.base_breakdown.rounding, "HALF_AWAY_FROM_ZERO to 2 dp: 15.0000 → 15.00");
}

#[test]
fn seed_003_example_2_fixed_per_renewal() {
    let mut r = rules(Model::Fixed { fixed_amount: usd("10.00") });
    r.trigger = Trigger::OnRenewal;
    let book = default_book(r);
    let mut s = sale(usd("49.99"));
    s.event_type = SaleEventType::Renewal;
    s.is_first_payment = false;
    let out = run(&book, &s);
    assert_eq!(base(&out), "10.00");
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "10.00".into(), 0)]);
    // A plain payment does not fire ON_RENEWAL.
    let out = run(&book, &sale(usd("49.99")));
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
    assert!(out.base_breakdown.note.contains("does not fire"));
    assert_eq!(out.agreement_version_id, Some(pid(DEFAULT_VERSION)));
}

#[test]
fn seed_003_example_3_setup_fee_on_signup() {
    let mut r = rules(pct(dec!(0)));
    r.trigger = Trigger::OnSignup;
    r.setup_fee = Some(usd("50.00"));
    let book = default_book(r);
    let mut s = sale(usd("0.00"));
    s.event_type = SaleEventType::Signup;
    s.is_first_payment = false;
    let out = run(&book, &s);
    assert_eq!(base(&out), "50.00");
    assert_eq!(lines(&out), vec![(pid(SELLER), EarningKind::Direct, "50.00".into(), 0)]);
    assert_eq!(out.base_breakdown.inputs["setup_fee"], "50.00");
    // A second signup of the same customer under the agreement: no fee, 0.
    s.customer_history = vec![prior("sale-0", SaleEventType::Signup, SELLER, "2024-01-01T00:00:00Z")];
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
}

#[test]
fn seed_003_example_4_ten_percent_plus_setup_fee() {
    let mut r = rules(pct(dec!(0.10)));
    r.setup_fee = Some(usd("25.00"));
    let book = default_book(r);
    let out = run(&book, &sale(usd("100.00")));
    assert_eq!(base(&out), "35.00");
    assert_eq!(out.base_breakdown.formula, "100.00 × 0.10 = 10.0000 + setup_fee 25.00 = 35.0000 → 35.00");
    let mut renewal = sale(usd("100.00"));
    renewal.event_type = SaleEventType::Renewal;
    renewal.is_first_payment = false;
    renewal.customer_history = vec![prior("sale-0", SaleEventType::Payment, SELLER, "2024-05-01T00:00:00Z")];
    assert_eq!(base(&run(&book, &renewal)), "10.00");
}

fn seed_003_tiers() -> Model {
    Model::Tiered {
        tiers: vec![
            Tier { min_volume: dec!(0), max_volume: Some(dec!(10000)), pays: TierPays::Rate(dec!(0.20)) },
            Tier { min_volume: dec!(10000), max_volume: Some(dec!(50000)), pays: TierPays::Rate(dec!(0.15)) },
            Tier { min_volume: dec!(50000), max_volume: None, pays: TierPays::Rate(dec!(0.10)) },
        ],
    }
}

#[test]
fn seed_003_example_5_volume_tiers() {
    let book = default_book(rules(seed_003_tiers()));
    let with_volume = |volume: &str| {
        let mut s = sale(usd("100.00"));
        s.seller_prior_volume = Some(usd(volume));
        run(&book, &s)
    };
    let out = with_volume("25000.00");
    assert_eq!(base(&out), "15.00");
    assert_eq!(out.base_breakdown.rule, "tier[1]");
    assert_eq!(base(&with_volume("9999.99")), "20.00");
    assert_eq!(base(&with_volume("10000.00")), "15.00");
    assert_eq!(base(&with_volume("50000.00")), "10.00");
    assert_eq!(base(&with_volume("0.00")), "20.00");
    // No prior volume given = 0.
    assert_eq!(base(&run(&book, &sale(usd("100.00")))), "20.00");
    // A prior volume in another currency cannot choose a tier.
    let mut s = sale(usd("100.00"));
    s.seller_prior_volume = Some(money("EUR", "1.00"));
    assert_eq!(run(&book, &s).failure.unwrap().reason, "CURRENCY_MISMATCH");
}

#[test]
fn tiered_fixed_and_closed_last_tier() {
    let book = default_book(rules(Model::Tiered {
        tiers: vec![
            Tier { min_volume: dec!(0), max_volume: Some(dec!(100)), pays: TierPays::FixedAmount(usd("2.50")) },
            Tier { min_volume: dec!(100), max_volume: Some(dec!(200)), pays: TierPays::Rate(dec!(0.5)) },
        ],
    }));
    let mut s = sale(usd("10.00"));
    assert_eq!(base(&run(&book, &s)), "2.50");
    s.seller_prior_volume = Some(usd("150.00"));
    assert_eq!(base(&run(&book, &s)), "5.00");
    s.seller_prior_volume = Some(usd("200.00"));
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.base_breakdown.note.contains("no tier"));
}

fn seed_003_hybrid() -> Model {
    Model::Hybrid {
        rules: vec![
            HybridRule { condition: Condition::IsFirstPayment { value: true }, model: pct(dec!(0.25)) },
            HybridRule {
                condition: Condition::EventType { operator: Operator::Equals, values: vec![SaleEventType::Renewal] },
                model: pct(dec!(0.10)),
            },
        ],
    }
}

#[test]
fn seed_003_example_6_hybrid() {
    let book = default_book(rules(seed_003_hybrid()));
    let out = run(&book, &sale(usd("100.00")));
    assert_eq!(base(&out), "25.00");
    assert_eq!(out.base_breakdown.model, "HYBRID");
    assert_eq!(out.base_breakdown.rule, "rule[0]");
    let mut renewal = sale(usd("100.00"));
    renewal.event_type = SaleEventType::Renewal;
    renewal.is_first_payment = false;
    let out = run(&book, &renewal);
    assert_eq!(base(&out), "10.00");
    assert_eq!(out.base_breakdown.rule, "rule[1]");
    // A later PAYMENT matches neither rule: 0.
    let mut later = sale(usd("100.00"));
    later.is_first_payment = false;
    let out = run(&book, &later);
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
    assert!(out.base_breakdown.note.contains("no HYBRID rule matched"));
}

#[test]
fn hybrid_gross_amount_product_code_and_nested_tiers() {
    let book = default_book(rules(Model::Hybrid {
        rules: vec![
            HybridRule {
                condition: Condition::GrossAmount { operator: Operator::Gte, values: vec![dec!(1000)] },
                model: Model::Fixed { fixed_amount: usd("100.00") },
            },
            HybridRule {
                condition: Condition::ProductCode { operator: Operator::In, values: vec!["PRO".into(), "TEAM".into()] },
                model: seed_003_tiers(),
            },
        ],
    }));
    assert_eq!(base(&run(&book, &sale(usd("1000.00")))), "100.00");
    let mut s = sale(usd("100.00"));
    s.product_code = "TEAM".into();
    s.seller_prior_volume = Some(usd("60000.00"));
    let out = run(&book, &s);
    assert_eq!(base(&out), "10.00");
    assert_eq!(out.base_breakdown.rule, "rule[1] tier[2]");
    s.product_code = "team".into();
    assert_eq!(base(&run(&book, &s)), "0.00");
}

// ---------------------------------------------------------------- caps, limits, setup fee

#[test]
fn min_and_max_clamp_only_positive_commissions() {
    let mut r = rules(pct(dec!(0.01)));
    r.min_commission = Some(usd("5.00"));
    r.max_commission = Some(usd("12.00"));
    let book = default_book(r.clone());
    let out = run(&book, &sale(usd("100.00")));
    assert_eq!(base(&out), "5.00");
    assert!(out.base_breakdown.formula.contains("raised to min_commission 5.00"));
    r.model = pct(dec!(0.15));
    let out = run(&default_book(r.clone()), &sale(usd("100.00")));
    assert_eq!(base(&out), "12.00");
    assert!(out.base_breakdown.formula.contains("capped at max_commission 12.00"));
    // C = 0 stays 0.
    r.model = pct(dec!(0));
    let out = run(&default_book(r), &sale(usd("100.00")));
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
}

#[test]
fn setup_fee_once_per_customer_per_agreement() {
    let mut default_rules = rules(pct(dec!(0.10)));
    default_rules.setup_fee = Some(usd("25.00"));
    let other_rules = rules(pct(dec!(0.10)));
    let book = AgreementBook::new([
        version(DEFAULT_VERSION, DEFAULT_AGREEMENT, None, 1, "2000-01-01T00:00:00Z", default_rules.clone()),
        // v2 of the default agreement: the same series.
        version(1001, DEFAULT_AGREEMENT, None, 2, "2024-03-01T00:00:00Z", default_rules),
        // Seller 7 has an agreement of their own.
        version(2000, 901, Some(7), 1, "2000-01-01T00:00:00Z", other_rules),
    ]);
    let mut s = sale(usd("100.00"));
    s.is_first_payment = false;
    // An earlier firing event under another version of the same agreement: no fee.
    s.customer_history = vec![prior("p", SaleEventType::Payment, SELLER, "2024-01-01T00:00:00Z")];
    assert_eq!(base(&run(&book, &s)), "10.00");
    // Under another agreement (seller 7's): the fee is still due.
    s.customer_history = vec![prior("p", SaleEventType::Payment, 7, "2024-01-01T00:00:00Z")];
    assert_eq!(base(&run(&book, &s)), "35.00");
    // An earlier event that did not fire (SIGNUP under ON_PAYMENT): the fee is still due.
    s.customer_history = vec![prior("p", SaleEventType::Signup, SELLER, "2024-01-01T00:00:00Z")];
    assert_eq!(base(&run(&book, &s)), "35.00");
    // The sale itself appearing in its history is ignored.
    s.customer_history = vec![prior("sale-1", SaleEventType::Payment, SELLER, "2024-06-01T12:00:00Z")];
    assert_eq!(base(&run(&book, &s)), "35.00");
}

#[test]
fn setup_fee_only_when_the_event_fires() {
    let mut r = rules(pct(dec!(0.10)));
    r.setup_fee = Some(usd("25.00"));
    let book = default_book(r);
    let mut s = sale(usd("0.00"));
    s.event_type = SaleEventType::Signup;
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
}

#[test]
fn activation_history_counts_only_the_first_payment() {
    let mut r = rules(pct(dec!(0.10)));
    r.trigger = Trigger::OnActivation;
    let book = default_book(r);
    let mut s = sale(usd("100.00"));
    s.customer_history = vec![
        prior("a", SaleEventType::Signup, SELLER, "2024-01-01T00:00:00Z"),
        prior("b", SaleEventType::Renewal, SELLER, "2024-02-01T00:00:00Z"),
        prior("c", SaleEventType::Payment, SELLER, "2024-03-01T00:00:00Z"),
    ];
    let firing: Vec<&str> = prior_firing_events(&book, &SchemeBook::default(), pid(DEFAULT_AGREEMENT), &s)
        .iter()
        .map(|e| e.sale_id.as_str())
        .collect();
    assert_eq!(firing, vec!["b"]);
    // The current sale is not the first payment: ON_ACTIVATION does not fire.
    s.is_first_payment = false;
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.base_breakdown.note.contains("not the first payment"));
}

#[test]
fn max_commissions_per_customer() {
    let mut r = rules(pct(dec!(0.10)));
    r.max_commissions = 2;
    let book = default_book(r);
    let mut s = sale(usd("100.00"));
    s.is_first_payment = false;
    s.customer_history = vec![prior("a", SaleEventType::Payment, SELLER, "2024-01-01T00:00:00Z")];
    assert_eq!(base(&run(&book, &s)), "10.00");
    s.customer_history.push(prior("b", SaleEventType::Renewal, SELLER, "2024-02-01T00:00:00Z"));
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.lines.is_empty());
    assert!(out.base_breakdown.note.contains("max_commissions 2 reached"));
    // Non-firing history does not count.
    s.customer_history[1].event_type = SaleEventType::Signup;
    assert_eq!(base(&run(&book, &s)), "10.00");
}

#[test]
fn max_duration_months_from_the_first_commissioned_event() {
    let mut r = rules(pct(dec!(0.10)));
    r.max_duration_months = 12;
    let book = default_book(r);
    let mut s = sale(usd("100.00"));
    s.is_first_payment = false;
    s.customer_history = vec![
        prior("a", SaleEventType::Signup, SELLER, "2023-01-01T00:00:00Z"),
        prior("b", SaleEventType::Payment, SELLER, "2023-06-01T12:00:00Z"),
    ];
    s.occurred_at = at("2024-06-01T11:59:59Z");
    assert_eq!(base(&run(&book, &s)), "10.00");
    s.occurred_at = at("2024-06-01T12:00:00Z");
    let out = run(&book, &s);
    assert_eq!(base(&out), "0.00");
    assert!(out.base_breakdown.note.contains("max_duration_months 12 passed"));
    // Calendar months clamp to the month's end: Jan 31 + 1 month = Feb 29 (2024).
    let mut r = rules(pct(dec!(0.10)));
    r.max_duration_months = 1;
    let book = default_book(r);
    s.customer_history = vec![prior("a", SaleEventType::Payment, SELLER, "2024-01-31T00:00:00Z")];
    s.occurred_at = at("2024-02-28T23:59:59Z");
    assert_eq!(base(&run(&book, &s)), "10.00");
    s.occurred_at = at("2024-02-29T00:00:00Z");
    assert_eq!(base(&run(&book, &s)), "0.00");
}

// ---------------------------------------------------------------- versions

#[test]
fn version_in_force_at_occurred_at_and_fallback_to_default() {
    let book = AgreementBook::new([
        version(DEFAULT_VERSION, DEFAULT_AGREEMENT, None, 1, "2000-01-01T00:00:00Z", rules(pct(dec!(0.01)))),
        version(11, 10, Some(SELLER), 1, "2020-01-01T00:00:00Z", rules(pct(dec!(0.10)))),
        version(12, 10, Some(SELLER), 2, "2021-01-01T00:00:00Z", rules(pct(dec!(0.20)))),
        // Seller 5's agreement starts only in 2030.
        version(51, 50, Some(5), 1, "2030-01-01T00:00:00Z", rules(pct(dec!(0.50)))),
    ]);
    let mut s = sale(usd("100.00"));
    s.occurred_at = at("2020-06-01T00:00:00Z");
    let out = run(&book, &s);
    assert_eq!((base(&out), out.agreement_version_id), ("10.00".into(), Some(pid(11))));
    s.occurred_at = at("2021-01-01T00:00:00Z");
    let out = run(&book, &s);
    assert_eq!((base(&out), out.agreement_version_id), ("20.00".into(), Some(pid(12))));
    s.occurred_at = at("2019-12-31T23:59:59Z");
    let out = run(&book, &s);
    assert_eq!((base(&out), out.agreement_version_id), ("1.00".into(), Some(pid(DEFAULT_VERSION))));
    s.seller = active(5);
    s.occurred_at = at("2024-01-01T00:00:00Z");
    assert_eq!(run(&book, &s).agreement_version_id, Some(pid(DEFAULT_VERSION)));
}

#[test]
fn no_agreement_in_force_pays_nothing() {
    let book = AgreementBook::new([version(
        DEFAULT_VERSION,
        DEFAULT_AGREEMENT,
        None,
        1,
        "2030-01-01T00:00:00Z",
        rules(pct(dec!(0.10))),
    )]);
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(20)];
    let plans = OverridePlans { program: Some(flat_plan(&["1.00"])), partners: Default::default() };
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(out.failure, None);
    assert_eq!(base(&out), "0.00");
    assert_eq!(out.agreement_version_id, None);
    assert!(out.lines.is_empty());
    assert_eq!(out.base_breakdown.note, "no agreement in force");
}

#[test]
fn terminated_seller_earns_nothing_and_suspended_seller_accrues() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = OverridePlans { program: Some(flat_plan(&["1.00"])), partners: Default::default() };
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(20)];
    s.seller = partner(SELLER, PartnerStatus::Terminated);
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert!(out.lines.is_empty());
    assert_eq!(base(&out), "0.00");
    assert!(out.base_breakdown.note.contains("TERMINATED"));
    s.seller = partner(SELLER, PartnerStatus::Suspended);
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(
        lines(&out),
        vec![(pid(SELLER), EarningKind::Direct, "10.00".into(), 0), (pid(20), EarningKind::Override, "1.00".into(), 1)]
    );
}

// ---------------------------------------------------------------- currency and rounding

#[test]
fn fixed_amount_in_another_currency_fails_the_sale() {
    let book = default_book(rules(Model::Fixed { fixed_amount: money("EUR", "10.00") }));
    let out = run(&book, &sale(usd("100.00")));
    let failure = out.failure.clone().unwrap();
    assert_eq!(failure.code, FailureCode::FailedPrecondition);
    assert_eq!(failure.code.as_str(), "FAILED_PRECONDITION");
    assert_eq!(failure.reason, "CURRENCY_MISMATCH");
    assert!(out.lines.is_empty());
    assert_eq!(out.base_commission, None);
    assert_eq!(out.agreement_version_id, Some(pid(DEFAULT_VERSION)));
    // Setup fees and caps in another currency fail the same way.
    let mut r = rules(pct(dec!(0.10)));
    r.setup_fee = Some(money("EUR", "1.00"));
    assert_eq!(run(&default_book(r), &sale(usd("100.00"))).failure.unwrap().reason, "CURRENCY_MISMATCH");
}

#[test]
fn amounts_too_large_to_multiply_exactly_fail_instead_of_losing_digits() {
    let book = default_book(rules(pct(dec!(0.15))));
    let out = run(&book, &sale(usd("79228162514264337593543950.33")));
    let failure = out.failure.unwrap();
    assert_eq!((failure.code, failure.reason.as_str()), (FailureCode::InvalidArgument, "AMOUNT_OUT_OF_RANGE"));
    // A zero rate on the same amount is exactly zero.
    assert_eq!(base(&run(&default_book(rules(pct(dec!(0)))), &sale(usd("79228162514264337593543950.33")))), "0.00");
}

#[test]
fn half_even_versus_half_away_from_zero() {
    let book = default_book(rules(pct(dec!(0.05))));
    // 100.50 × 0.05 = 5.025.
    let s = sale(usd("100.50"));
    let away = run(&book, &s);
    assert_eq!(base(&away), "5.03");
    assert_eq!(away.base_breakdown.rounding, "HALF_AWAY_FROM_ZERO to 2 dp: 5.0250 → 5.03");
    let even_program = ProgramSettings { rounding: RoundingMode::HalfEven, ..program() };
    let even = settle(&even_program, &book, &OverridePlans::default(), &SchemeBook::default(), &s);
    assert_eq!(base(&even), "5.02");
    assert_eq!(even.base_breakdown.rounding, "HALF_EVEN to 2 dp: 5.0250 → 5.02");
    // 100.30 × 0.05 = 5.015 → 5.02 under both.
    let s = sale(usd("100.30"));
    assert_eq!(base(&run(&book, &s)), "5.02");
    assert_eq!(base(&settle(&even_program, &book, &OverridePlans::default(), &SchemeBook::default(), &s)), "5.02");
}

/// Issue 8 item 3: a settings change applies to later sales only, so every
/// line names the settings (and their version) it was computed under.
#[test]
fn every_line_records_the_program_settings_it_used() {
    let book = default_book(rules(pct(dec!(0.05))));
    let even = ProgramSettings { rounding: RoundingMode::HalfEven, settings_version: 2, ..program() };
    let out = settle(&even, &book, &OverridePlans::default(), &SchemeBook::default(), &sale(usd("100.50")));
    assert!(!out.lines.is_empty());
    for breakdown in out.lines.iter().map(why).chain([&out.base_breakdown]) {
        assert_eq!(breakdown.inputs["program.settings_version"], "2");
        assert_eq!(breakdown.inputs["program.rounding_mode"], "HALF_EVEN");
        assert_eq!(breakdown.inputs["program.override_depth_cap"], "8");
        assert_eq!(breakdown.inputs["program.compression_enabled"], "false");
    }
    // A caller that names no version gets none recorded, not a made-up one.
    let unnamed = ProgramSettings { settings_version: 0, ..program() };
    let out = settle(&unnamed, &book, &OverridePlans::default(), &SchemeBook::default(), &sale(usd("100.50")));
    assert!(!out.base_breakdown.inputs.contains_key("program.settings_version"));
}

// ---------------------------------------------------------------- overrides (seed 004)

fn pct_plan(basis: OverrideBasis, rates: &[Option<Decimal>]) -> OverridePlan {
    OverridePlan {
        mode: OverrideMode::Percentage,
        basis,
        levels: rates.iter().map(|rate| OverrideLevel { rate: *rate, flat_amount: None }).collect(),
        qualification: None,
    }
}

fn flat_plan(amounts: &[&str]) -> OverridePlan {
    OverridePlan {
        mode: OverrideMode::Flat,
        basis: OverrideBasis::DealAmount,
        levels: amounts.iter().map(|a| OverrideLevel { rate: None, flat_amount: Some(usd(a)) }).collect(),
        qualification: None,
    }
}

fn chain_sale() -> Sale {
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(21), partner(22, PartnerStatus::Suspended), active(23), active(24)];
    s
}

fn override_lines(settlement: &Settlement) -> Vec<(PartnerId, String, u32)> {
    settlement
        .lines
        .iter()
        .filter(|l| l.kind == EarningKind::Override)
        .map(|l| (l.partner_id, l.amount.amount_string(), l.level))
        .collect()
}

#[test]
fn overrides_on_deal_amount_without_compression() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = OverridePlans {
        program: Some(pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.05)), Some(dec!(0.03)), Some(dec!(0.02))])),
        partners: Default::default(),
    };
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(base(&out), "10.00");
    // Level 2 (suspended) forfeits; level 4 has no rate.
    assert_eq!(override_lines(&out), vec![(pid(21), "5.00".into(), 1), (pid(23), "2.00".into(), 3)]);
    assert!(out.base_breakdown.note.contains("level 2"));
    assert!(out.base_breakdown.note.contains("SUSPENDED and forfeits"));
    assert!(out.base_breakdown.note.contains("no rate for level 4"));
    let line = &out.lines[1];
    assert_eq!(why(line).model, "OVERRIDE_PERCENTAGE");
    assert_eq!(why(line).rule, "level 1");
    assert_eq!(why(line).formula, "DEAL_AMOUNT 100.00 × 0.05 = 5.0000 → 5.00");
    assert_eq!(line.source_partner_id, Some(pid(SELLER)));
    assert_eq!(line.clears_at, at("2024-07-01T12:00:00Z"));
    // Overrides are on top of C: the direct line is still all of C.
    assert_eq!(out.lines[0].amount.amount_string(), "10.00");
}

#[test]
fn overrides_on_deal_amount_with_compression() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = OverridePlans {
        program: Some(pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.05)), Some(dec!(0.03)), Some(dec!(0.02))])),
        partners: Default::default(),
    };
    let compressed = ProgramSettings { compression_enabled: true, ..program() };
    let out = settle(&compressed, &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(
        override_lines(&out),
        vec![(pid(21), "5.00".into(), 1), (pid(23), "3.00".into(), 2), (pid(24), "2.00".into(), 3)]
    );
    assert!(out.base_breakdown.note.contains("skipped (compression)"));
    // The cap counts compressed levels.
    let capped = ProgramSettings { override_depth_cap: 2, ..compressed };
    assert_eq!(
        override_lines(&settle(&capped, &book, &plans, &SchemeBook::default(), &chain_sale())),
        vec![(pid(21), "5.00".into(), 1), (pid(23), "3.00".into(), 2)]
    );
    // Without compression the cap counts positions.
    let capped = ProgramSettings { override_depth_cap: 2, ..program() };
    assert_eq!(
        override_lines(&settle(&capped, &book, &plans, &SchemeBook::default(), &chain_sale())),
        vec![(pid(21), "5.00".into(), 1)]
    );
}

#[test]
fn overrides_on_base_commission_with_and_without_compression() {
    let book = default_book(rules(pct(dec!(0.125))));
    let plans = OverridePlans {
        program: Some(pct_plan(OverrideBasis::BaseCommission, &[Some(dec!(0.10)), Some(dec!(0.05)), Some(dec!(0.03))])),
        partners: Default::default(),
    };
    // C = 100.00 × 0.125 = 12.50.
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(base(&out), "12.50");
    // Level 1: 1.25; level 2 forfeited; level 3: 12.50 × 0.03 = 0.375 → 0.38.
    assert_eq!(override_lines(&out), vec![(pid(21), "1.25".into(), 1), (pid(23), "0.38".into(), 3)]);
    assert_eq!(why(&out.lines[2]).rounding, "HALF_AWAY_FROM_ZERO to 2 dp: 0.3750 → 0.38");
    let compressed = ProgramSettings { compression_enabled: true, ..program() };
    let out = settle(&compressed, &book, &plans, &SchemeBook::default(), &chain_sale());
    // Level 2: 0.625 → 0.63; level 3: 0.375 → 0.38.
    assert_eq!(
        override_lines(&out),
        vec![(pid(21), "1.25".into(), 1), (pid(23), "0.63".into(), 2), (pid(24), "0.38".into(), 3)]
    );
    let even = ProgramSettings { rounding: RoundingMode::HalfEven, ..compressed };
    let out = settle(&even, &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(
        override_lines(&out),
        vec![(pid(21), "1.25".into(), 1), (pid(23), "0.62".into(), 2), (pid(24), "0.38".into(), 3)]
    );
}

#[test]
fn ancestor_plan_beats_program_plan_and_missing_levels_pay_nothing() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut partners = std::collections::HashMap::new();
    partners.insert(pid(21), flat_plan(&["7.00"]));
    // Ancestor 23's own plan has level 3 unset.
    partners.insert(pid(23), pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.5)), Some(dec!(0.5)), None]));
    let plans = OverridePlans { program: None, partners };
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(override_lines(&out), vec![(pid(21), "7.00".into(), 1)]);
    assert_eq!(why(&out.lines[1]).model, "OVERRIDE_FLAT");
    assert_eq!(why(&out.lines[1]).inputs["plan"], "partner");
    assert!(out.base_breakdown.note.contains("has no rate for level 3"));
    assert!(out.base_breakdown.note.contains("no override plan for ancestor"));
}

#[test]
fn zero_commission_still_pays_deal_amount_overrides_but_not_base_commission_ones() {
    let book = default_book(rules(pct(dec!(0))));
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(21)];
    let deal = OverridePlans {
        program: Some(pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.02))])),
        partners: Default::default(),
    };
    let out = settle(&program(), &book, &deal, &SchemeBook::default(), &s);
    assert_eq!(base(&out), "0.00");
    assert_eq!(lines(&out), vec![(pid(21), EarningKind::Override, "2.00".into(), 1)]);
    let on_base = OverridePlans {
        program: Some(pct_plan(OverrideBasis::BaseCommission, &[Some(dec!(0.5))])),
        partners: Default::default(),
    };
    assert!(settle(&program(), &book, &on_base, &SchemeBook::default(), &s).lines.is_empty());
    // A trigger that does not fire pays no overrides either.
    s.event_type = SaleEventType::Signup;
    assert!(settle(&program(), &book, &deal, &SchemeBook::default(), &s).lines.is_empty());
}

#[test]
fn flat_override_in_another_currency_fails_the_sale() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = OverridePlans {
        program: Some(OverridePlan {
            mode: OverrideMode::Flat,
            basis: OverrideBasis::DealAmount,
            levels: vec![OverrideLevel { rate: None, flat_amount: Some(money("GBP", "1.00")) }],
            qualification: None,
        }),
        partners: Default::default(),
    };
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &chain_sale());
    assert_eq!(out.failure.unwrap().reason, "CURRENCY_MISMATCH");
    assert!(out.lines.is_empty());
}

#[test]
fn line_order_direct_splits_then_overrides_by_level() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = OverridePlans {
        program: Some(pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.01)), Some(dec!(0.01))])),
        partners: Default::default(),
    };
    let mut s = sale(usd("100.00"));
    s.splits = vec![split(2, 5000, PartnerStatus::Active)];
    s.ancestors = vec![active(21), active(22)];
    let kinds: Vec<(EarningKind, u32)> =
        settle(&program(), &book, &plans, &SchemeBook::default(), &s).lines.iter().map(|l| (l.kind, l.level)).collect();
    assert_eq!(
        kinds,
        vec![(EarningKind::Direct, 0), (EarningKind::Split, 0), (EarningKind::Override, 1), (EarningKind::Override, 2)]
    );
}

// ------------------------------------------- qualified overrides (issue 16 item 3)

/// The program plan 5 / 3 / 2 % of the deal, with `qualification`.
fn qualified_plans(qualification: Qualification) -> OverridePlans {
    let mut plan = pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.05)), Some(dec!(0.03)), Some(dec!(0.02))]);
    plan.qualification = Some(qualification);
    OverridePlans { program: Some(plan), partners: Default::default() }
}

/// Personal volume ≥ 1000.00 USD over the 30 days before the sale.
fn volume_1000() -> Qualification {
    Qualification {
        personal_volume: Some(VolumeRequirement { minimum: usd("1000.00"), window_days: 30 }),
        min_active_direct_partners: 0,
    }
}

/// At least two ACTIVE direct sub-partners.
fn two_children() -> Qualification {
    Qualification { personal_volume: None, min_active_direct_partners: 2 }
}

fn facts(volume: Option<&str>, children: Option<u32>) -> QualificationFacts {
    QualificationFacts {
        personal_volume: volume.map(usd),
        volume_window_days: if volume.is_some() { 30 } else { 0 },
        active_direct_partners: children,
    }
}

/// Three ACTIVE ancestors 21, 22, 23 with their facts.
fn qualified_sale(facts: [QualificationFacts; 3]) -> Sale {
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(21), active(22), active(23)];
    s.ancestor_facts = [pid(21), pid(22), pid(23)].into_iter().zip(facts).collect();
    s
}

fn compressed() -> ProgramSettings {
    ProgramSettings { compression_enabled: true, ..program() }
}

#[test]
fn unqualified_by_volume_forfeits_without_compression_and_is_skipped_with_it() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = qualified_plans(volume_1000());
    // 22 is short of the minimum; 23 meets it exactly (≥).
    let s = qualified_sale([facts(Some("1200.00"), None), facts(Some("850.00"), None), facts(Some("1000.00"), None)]);
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(21), "5.00".into(), 1), (pid(23), "2.00".into(), 3)]);
    let id22: PartnerId = pid(22);
    assert!(
        out.base_breakdown.note.contains(&format!(
            "level 2: ancestor {id22}: personal volume 850.00 USD in the 30 days before 2024-06-01T12:00:00Z \
             < 1000.00: not qualified, forfeits the level"
        )),
        "{}",
        out.base_breakdown.note
    );
    // A paid line says why its ancestor qualified.
    let inputs = &why(&out.lines[1]).inputs;
    assert_eq!(
        inputs["qualification.personal_volume"],
        "personal volume 1200.00 USD in the 30 days before 2024-06-01T12:00:00Z"
    );
    assert_eq!(inputs["qualification.min_personal_volume"], "1000.00 USD");

    let out = settle(&compressed(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(21), "5.00".into(), 1), (pid(23), "3.00".into(), 2)]);
    assert!(
        out.base_breakdown.note.contains(&format!(
            "ancestor {id22}: personal volume 850.00 USD in the 30 days before 2024-06-01T12:00:00Z < 1000.00: \
             not qualified, skipped (compression)"
        )),
        "{}",
        out.base_breakdown.note
    );
    // The line that took the level says whom it was compressed past (the
    // ledger keeps line breakdowns, not the base's notes).
    let skipped = &why(&out.lines[2]).inputs["qualification.skipped"];
    assert!(skipped.starts_with(&format!("ancestor {id22}: personal volume 850.00 USD")), "{skipped}");
    assert!(!why(&out.lines[1]).inputs.contains_key("qualification.skipped"));
}

#[test]
fn unqualified_by_active_children_with_and_without_compression() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = qualified_plans(two_children());
    let s = qualified_sale([facts(None, Some(1)), facts(None, Some(2)), facts(None, Some(0))]);
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(22), "3.00".into(), 2)]);
    let id21: PartnerId = pid(21);
    assert!(out.base_breakdown.note.contains(&format!(
        "level 1: ancestor {id21}: 1 ACTIVE direct sub-partners at 2024-06-01T12:00:00Z < 2: not qualified, forfeits the level"
    )));
    assert_eq!(why(&out.lines[1]).inputs["qualification.active_direct_partners"], "2");
    let out = settle(&compressed(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(22), "5.00".into(), 1)]);
    assert_eq!(out.base_breakdown.note.matches("not qualified, skipped (compression)").count(), 2);
}

#[test]
fn both_requirements_must_be_met() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = qualified_plans(Qualification { min_active_direct_partners: 1, ..volume_1000() });
    let s = qualified_sale([
        // Volume yes, children no.
        facts(Some("5000.00"), Some(0)),
        // Children yes, volume no.
        facts(Some("999.99"), Some(3)),
        // Both.
        facts(Some("1000.00"), Some(1)),
    ]);
    let out = settle(&compressed(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(23), "5.00".into(), 1)]);
    let note = &out.base_breakdown.note;
    assert!(note.contains("0 ACTIVE direct sub-partners at 2024-06-01T12:00:00Z < 1: not qualified"), "{note}");
    assert!(note.contains("personal volume 999.99 USD in the 30 days before 2024-06-01T12:00:00Z < 1000.00"), "{note}");
    let inputs = &why(&out.lines[1]).inputs;
    assert_eq!(inputs["qualification.active_direct_partners"], "1");
    assert_eq!(inputs["qualification.min_active_direct_partners"], "1");
    assert!(inputs.contains_key("qualification.personal_volume"));
}

#[test]
fn status_is_checked_before_qualification_and_both_compress_alike() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = qualified_plans(volume_1000());
    let mut s =
        qualified_sale([facts(Some("10.00"), None), facts(Some("5000.00"), None), facts(Some("5000.00"), None)]);
    s.ancestors[1] = partner(22, PartnerStatus::Suspended);
    s.ancestor_facts.remove(&pid(22));
    s.ancestors.push(active(24));
    s.ancestor_facts.insert(pid(24), facts(Some("5000.00"), None));
    // Compression: 21 unqualified and 22 suspended are both skipped.
    let out = settle(&compressed(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(23), "5.00".into(), 1), (pid(24), "3.00".into(), 2)]);
    let id22: PartnerId = pid(22);
    assert!(out.base_breakdown.note.contains(&format!("ancestor {id22} is SUSPENDED: skipped (compression)")));
    // Without: each forfeits its own level.
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(23), "2.00".into(), 3)]);
    assert!(out.base_breakdown.note.contains("level 1:") && out.base_breakdown.note.contains("not qualified"));
    assert!(out.base_breakdown.note.contains(&format!("level 2: ancestor {id22} is SUSPENDED and forfeits the level")));
}

#[test]
fn missing_facts_fail_the_sale_naming_what_to_gather() {
    let book = default_book(rules(pct(dec!(0.10))));
    let plans = qualified_plans(Qualification { min_active_direct_partners: 1, ..volume_1000() });
    let mut s = qualified_sale([facts(Some("1.00"), Some(1)), facts(None, None), facts(Some("1.00"), Some(1))]);
    s.ancestor_facts.remove(&pid(22));
    // A volume over another window is not the plan's: asked again.
    s.ancestor_facts.insert(pid(23), QualificationFacts { volume_window_days: 31, ..facts(Some("1.00"), Some(1)) });
    s.ancestors.push(partner(24, PartnerStatus::Terminated));
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    let failure = out.failure.expect("facts are missing");
    assert_eq!(
        (failure.code, failure.reason.as_str()),
        (FailureCode::FailedPrecondition, QUALIFICATION_FACTS_REQUIRED)
    );
    assert!(out.lines.is_empty());
    // Only the ACTIVE ancestors lacking facts; the terminated one needs none.
    let asked: Vec<PartnerId> = out.required_facts.iter().map(|r| r.partner_id).collect();
    assert_eq!(asked, vec![pid(22), pid(23)]);
    assert_eq!(out.required_facts[0].qualification, plans.program.as_ref().unwrap().qualification.clone().unwrap());
    // A scheme-free sale whose trigger does not fire pays no override and needs no facts.
    s.event_type = SaleEventType::Signup;
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert!(out.failure.is_none() && out.required_facts.is_empty());
}

#[test]
fn a_partner_plan_qualification_binds_that_ancestor_only() {
    let book = default_book(rules(pct(dec!(0.10))));
    let mut own = pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.10)), Some(dec!(0.10)), Some(dec!(0.10))]);
    own.qualification = Some(two_children());
    let mut partners = std::collections::HashMap::new();
    partners.insert(pid(22), own);
    let plans = OverridePlans {
        program: Some(pct_plan(OverrideBasis::DealAmount, &[Some(dec!(0.05)), Some(dec!(0.03)), Some(dec!(0.02))])),
        partners,
    };
    let mut s = sale(usd("100.00"));
    s.ancestors = vec![active(21), active(22), active(23)];
    // Only 22's plan qualifies: the others need no facts.
    let out = settle(&program(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(out.required_facts.iter().map(|r| r.partner_id).collect::<Vec<PartnerId>>(), vec![pid(22)]);
    s.ancestor_facts.insert(pid(22), facts(None, Some(1)));
    let out = settle(&compressed(), &book, &plans, &SchemeBook::default(), &s);
    assert_eq!(override_lines(&out), vec![(pid(21), "5.00".into(), 1), (pid(23), "3.00".into(), 2)]);
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn cents(max: i64) -> impl Strategy<Value = Decimal> {
        (0..=max).prop_map(|c| Decimal::new(c, 2))
    }

    fn model() -> impl Strategy<Value = Model> {
        let percentage = (0i64..=10_000).prop_map(|r| Model::Percentage { rate: Decimal::new(r, 4) });
        let fixed = cents(100_000).prop_map(|amount| Model::Fixed {
            fixed_amount: Money { amount, currency: accrue_money::Currency::from_code("USD").unwrap() },
        });
        let tiered = (
            proptest::collection::vec(1i64..100_000, 0..4),
            proptest::collection::vec(0i64..=10_000, 4),
            any::<bool>(),
        )
            .prop_map(|(mut bounds, rates, open)| {
                bounds.sort_unstable();
                bounds.dedup();
                let mut tiers = Vec::new();
                let mut min = Decimal::ZERO;
                for (i, bound) in bounds.iter().enumerate() {
                    let max = Decimal::new(*bound, 0);
                    tiers.push(Tier {
                        min_volume: min,
                        max_volume: Some(max),
                        pays: TierPays::Rate(Decimal::new(rates[i], 4)),
                    });
                    min = max;
                }
                tiers.push(Tier {
                    min_volume: min,
                    max_volume: if open { None } else { Some(min + Decimal::new(50_000, 0)) },
                    pays: TierPays::Rate(Decimal::new(rates[3], 4)),
                });
                Model::Tiered { tiers }
            });
        prop_oneof![percentage, fixed, tiered]
    }

    fn caps() -> impl Strategy<Value = (Option<Decimal>, Option<Decimal>)> {
        (proptest::option::of(cents(5_000)), proptest::option::of(cents(50_000))).prop_map(|(min, max)| {
            match (min, max) {
                (Some(min), Some(max)) if min > max => (Some(max), Some(min)),
                other => other,
            }
        })
    }

    fn splits() -> impl Strategy<Value = Vec<SplitShare>> {
        proptest::collection::vec((1u32..5_000, 0u8..3), 0..4).prop_map(|raw| {
            let mut total = 0;
            raw.into_iter()
                .enumerate()
                .filter_map(|(i, (bps, status))| {
                    if total + bps > BASIS_POINTS_WHOLE {
                        return None;
                    }
                    total += bps;
                    let status = match status {
                        0 => PartnerStatus::Active,
                        1 => PartnerStatus::Suspended,
                        _ => PartnerStatus::Terminated,
                    };
                    Some(SplitShare { partner: partner(100 + i as u128, status), basis_points: bps })
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn commission_is_exact_capped_conserved_and_deterministic(
            model in model(),
            (min, max) in caps(),
            setup in proptest::option::of(cents(10_000)),
            amount in cents(10_000_000),
            volume in cents(20_000_000),
            splits in splits(),
            half_even in any::<bool>(),
            event in 0u8..3,
            first in any::<bool>(),
        ) {
            let mut r = rules(model);
            r.min_commission = min.map(|a| usd(&a.to_string()));
            r.max_commission = max.map(|a| usd(&a.to_string()));
            r.setup_fee = setup.map(|a| usd(&a.to_string()));
            let book = default_book(r);
            let mut s = sale(usd(&amount.to_string()));
            s.seller_prior_volume = Some(usd(&volume.to_string()));
            s.splits = splits;
            s.event_type = [SaleEventType::Signup, SaleEventType::Payment, SaleEventType::Renewal][event as usize];
            s.is_first_payment = first;
            s.ancestors = vec![active(21), partner(22, PartnerStatus::Suspended), active(23)];
            let plans = OverridePlans {
                program: Some(pct_plan(OverrideBasis::BaseCommission, &[Some(dec!(0.1)), Some(dec!(0.333)), None])),
                partners: Default::default(),
            };
            let settings = ProgramSettings {
                rounding: if half_even { RoundingMode::HalfEven } else { RoundingMode::HalfAwayFromZero },
                ..program()
            };
            let out = settle(&settings, &book, &plans, &SchemeBook::default(), &s);
            prop_assert_eq!(&out.failure, &None);
            let c = out.base_commission.unwrap().amount;
            prop_assert!(c >= Decimal::ZERO);
            prop_assert!(c.scale() == 2);
            if c > Decimal::ZERO {
                if let Some(min) = min { prop_assert!(c >= min); }
                if let Some(max) = max { prop_assert!(c <= max); }
            }
            assert_conserves(&out);
            for line in &out.lines {
                prop_assert!(line.amount.amount > Decimal::ZERO);
                prop_assert!(line.amount.currency.is_exact(line.amount.amount));
            }
            prop_assert_eq!(settle(&settings, &book, &plans, &SchemeBook::default(), &s), out);
        }
    }
}

// ---------------------------------------------------------------- scheme margins (seed 002)

mod margins {
    use std::collections::HashMap;

    use super::*;
    use proptest::prelude::*;

    const SERVICE: &str = "RECHARGE";
    const ROOT: u128 = 500;
    const CHILD: u128 = 501;
    const GRANDCHILD: u128 = 502;
    const LADDER: [&str; 6] = ["ADMIN", "WHITE_LABEL", "MASTER_DISTRIBUTOR", "DISTRIBUTOR", "RETAILER", "CUSTOMER"];

    fn ladder() -> Vec<String> {
        LADDER.iter().map(|role| role.to_string()).collect()
    }

    fn scheme(id: u128, parent: Option<u128>, clearance_days: u32, rates: &[(&str, Decimal)]) -> Scheme {
        Scheme {
            id: pid(id),
            parent_id: parent.map(pid),
            display_name: format!("scheme {id}"),
            clearance_days,
            rates: rates.iter().map(|(role, rate)| (RateKey::new(SERVICE, *role), *rate)).collect(),
        }
    }

    /// Seed 002's root: Admin 5%, White Label 4%, Master Distributor 3%,
    /// Distributor 2%, Retailer 1%.
    fn seed_root() -> Scheme {
        scheme(
            ROOT,
            None,
            7,
            &[
                ("ADMIN", dec!(0.05)),
                ("WHITE_LABEL", dec!(0.04)),
                ("MASTER_DISTRIBUTOR", dec!(0.03)),
                ("DISTRIBUTOR", dec!(0.02)),
                ("RETAILER", dec!(0.01)),
            ],
        )
    }

    fn book(schemes: Vec<Scheme>, assignments: &[(u128, u128)]) -> SchemeBook {
        let tree = SchemeTree::new(schemes);
        assert_eq!(tree.conflicts(&tree.service_codes(), &ladder()), Vec::new(), "test tree must be valid");
        SchemeBook::new(tree, assignments.iter().map(|(partner, scheme)| (pid(*partner), pid(*scheme))).collect())
    }

    fn with_role(n: u128, status: PartnerStatus, role: Option<&str>) -> PartnerRef {
        PartnerRef { id: pid(n), status: Some(status), role: role.map(str::to_string) }
    }

    fn member(n: u128, role: &str) -> PartnerRef {
        with_role(n, PartnerStatus::Active, Some(role))
    }

    /// A RECHARGE sale by RETAILER 1 up DISTRIBUTOR 2, MASTER_DISTRIBUTOR 3,
    /// WHITE_LABEL 4, ADMIN 5.
    fn seed_sale(gross: &str) -> Sale {
        let mut s = sale(usd(gross));
        s.service_code = SERVICE.into();
        s.seller = member(1, "RETAILER");
        s.ancestors = vec![
            member(2, "DISTRIBUTOR"),
            member(3, "MASTER_DISTRIBUTOR"),
            member(4, "WHITE_LABEL"),
            member(5, "ADMIN"),
        ];
        s
    }

    fn run_schemes(program: &ProgramSettings, schemes: &SchemeBook, s: &Sale) -> Settlement {
        // An agreement exists for everyone: scheme-managed sales must ignore it.
        let agreements = default_book(rules(pct(dec!(0.10))));
        settle(program, &agreements, &OverridePlans::default(), schemes, s)
    }

    /// (partner number, amount, level) of every MARGIN line; fails on any other kind.
    fn margins(settlement: &Settlement) -> Vec<(u128, String, u32)> {
        assert_eq!(settlement.failure, None);
        settlement
            .lines
            .iter()
            .map(|l| {
                assert_eq!(l.kind, EarningKind::Margin, "only MARGIN lines on a scheme-managed sale");
                (l.partner_id.as_uuid().as_u128(), l.amount.amount_string(), l.level)
            })
            .collect()
    }

    fn total(settlement: &Settlement) -> Decimal {
        settlement.lines.iter().map(|l| l.amount.amount).sum()
    }

    #[test]
    fn seed_002_margin_chain_admin5_wl4_md3_d2_r1_pays_one_percent_each() {
        let schemes = book(vec![seed_root()], &[]);
        let out = run_schemes(&program(), &schemes, &seed_sale("100.00"));
        assert_eq!(
            margins(&out),
            vec![
                (1, "1.00".into(), 0),
                (2, "1.00".into(), 1),
                (3, "1.00".into(), 2),
                (4, "1.00".into(), 3),
                (5, "1.00".into(), 4),
            ]
        );
        assert_eq!(total(&out), dec!(5.00), "Σ margins = abs[ADMIN] × gross");
        assert_eq!(base(&out), "0.00");
        assert_eq!(out.agreement_version_id, None);
        assert_eq!(out.base_breakdown.model, "SCHEME");
        let md = why(&out.lines[2]);
        assert_eq!(md.model, "MARGIN");
        assert_eq!(
            md.formula,
            "100.00 × (abs[MASTER_DISTRIBUTOR] 0.03 − abs[DISTRIBUTOR] 0.02 = 0.01) = 1.0000 → 1.00"
        );
        assert_eq!(md.rule, "role MASTER_DISTRIBUTOR");
        assert_eq!(md.rounding, "HALF_AWAY_FROM_ZERO to 2 dp: 1.0000 → 1.00");
        assert_eq!(md.inputs["abs_rate"], "0.03");
        assert_eq!(md.inputs["below_role"], "DISTRIBUTOR");
        assert_eq!(md.inputs["below_abs_rate"], "0.02");
        assert_eq!(md.inputs["margin_rate"], "0.01");
        assert_eq!(md.inputs["abs_source_scheme_id"], pid::<SchemeId>(ROOT).to_string());
        assert_eq!(md.inputs["scheme_id"], pid::<SchemeId>(ROOT).to_string());
        assert_eq!(md.inputs["service_code"], SERVICE);
        let seller = why(&out.lines[0]);
        assert_eq!(seller.formula, "100.00 × (abs[RETAILER] 0.01 − 0 = 0.01) = 1.0000 → 1.00");
        assert_eq!(seller.inputs["below_role"], "");
        for line in &out.lines {
            assert_eq!(line.source_partner_id, Some(pid(1)));
            assert_eq!(line.clears_at, at("2024-06-08T12:00:00Z"), "root scheme clears after 7 days");
            assert_eq!(why(line).agreement_version_id, None);
        }
    }

    #[test]
    fn margin_chain_that_skips_roles() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("100.00");
        s.ancestors = vec![member(2, "DISTRIBUTOR"), member(4, "WHITE_LABEL"), member(5, "ADMIN")];
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(
            margins(&out),
            vec![(1, "1.00".into(), 0), (2, "1.00".into(), 1), (4, "2.00".into(), 2), (5, "1.00".into(), 3)]
        );
        assert_eq!(why(&out.lines[2]).inputs["below_role"], "DISTRIBUTOR");
        assert_eq!(why(&out.lines[2]).inputs["margin_rate"], "0.02");
        assert_eq!(total(&out), dec!(5.00));
    }

    #[test]
    fn margin_rates_inherit_nulls_from_parent_and_root_schemes() {
        // The root sets every role; the child only MD and D; the grandchild only R.
        let child = scheme(CHILD, Some(ROOT), 30, &[("MASTER_DISTRIBUTOR", dec!(0.025)), ("DISTRIBUTOR", dec!(0.015))]);
        let grandchild = scheme(GRANDCHILD, Some(CHILD), 0, &[("RETAILER", dec!(0.005))]);
        let schemes = book(vec![seed_root(), child, grandchild], &[(1, GRANDCHILD)]);
        let tree = schemes.tree();
        let eff = |role: &str| tree.effective(pid(GRANDCHILD), SERVICE, role);
        assert_eq!(eff("ADMIN"), Effective { rate: dec!(0.05), source: Some(pid(ROOT)) });
        assert_eq!(eff("WHITE_LABEL"), Effective { rate: dec!(0.04), source: Some(pid(ROOT)) });
        assert_eq!(eff("MASTER_DISTRIBUTOR"), Effective { rate: dec!(0.025), source: Some(pid(CHILD)) });
        assert_eq!(eff("DISTRIBUTOR"), Effective { rate: dec!(0.015), source: Some(pid(CHILD)) });
        assert_eq!(eff("RETAILER"), Effective { rate: dec!(0.005), source: Some(pid(GRANDCHILD)) });
        assert_eq!(eff("CUSTOMER"), Effective { rate: Decimal::ZERO, source: None });

        let out = run_schemes(&program(), &schemes, &seed_sale("200.00"));
        assert_eq!(
            margins(&out),
            vec![
                (1, "1.00".into(), 0),
                (2, "2.00".into(), 1),
                (3, "2.00".into(), 2),
                (4, "3.00".into(), 3),
                (5, "2.00".into(), 4),
            ]
        );
        assert_eq!(total(&out), dec!(10.00), "Σ = 200.00 × abs[ADMIN] 0.05");
        let sources: Vec<&str> = out.lines.iter().map(|l| why(l).inputs["abs_source_scheme_id"].as_str()).collect();
        let (root, child, grandchild) = (
            pid::<SchemeId>(ROOT).to_string(),
            pid::<SchemeId>(CHILD).to_string(),
            pid::<SchemeId>(GRANDCHILD).to_string(),
        );
        assert_eq!(sources, vec![grandchild.as_str(), child.as_str(), child.as_str(), root.as_str(), root.as_str()]);
        // The grandchild's clearance (0 days) applies: the seller's scheme decides.
        assert!(out.lines.iter().all(|l| l.clears_at == at("2024-06-01T12:00:00Z")));
        assert_eq!(out.base_breakdown.inputs["scheme_source"], "assigned");
    }

    #[test]
    fn terminated_ancestor_forfeits_its_margin_unless_compression_rolls_it_up() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("100.00");
        s.ancestors[1] = with_role(3, PartnerStatus::Terminated, Some("MASTER_DISTRIBUTOR"));
        s.ancestors[0] = with_role(2, PartnerStatus::Suspended, Some("DISTRIBUTOR"));
        let out = run_schemes(&program(), &schemes, &s);
        // MD forfeits; WL still earns only 4 − 3; SUSPENDED D still accrues.
        assert_eq!(
            margins(&out),
            vec![(1, "1.00".into(), 0), (2, "1.00".into(), 1), (4, "1.00".into(), 3), (5, "1.00".into(), 4)]
        );
        assert!(out.base_breakdown.note.contains("TERMINATED and forfeits its margin"), "{}", out.base_breakdown.note);

        let compressed = ProgramSettings { compression_enabled: true, ..program() };
        let out = run_schemes(&compressed, &schemes, &s);
        // MD is transparent: WL earns 4 − 2, the margin rolls up.
        assert_eq!(
            margins(&out),
            vec![(1, "1.00".into(), 0), (2, "1.00".into(), 1), (4, "2.00".into(), 3), (5, "1.00".into(), 4)]
        );
        assert_eq!(total(&out), dec!(5.00));
    }

    #[test]
    fn terminated_seller_gets_no_margin_lines() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("100.00");
        s.seller = with_role(1, PartnerStatus::Terminated, Some("RETAILER"));
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(margins(&out), Vec::new());
        assert_eq!(base(&out), "0.00");
        assert!(out.base_breakdown.note.contains("is TERMINATED: no lines"), "{}", out.base_breakdown.note);
    }

    #[test]
    fn seller_without_assignment_uses_the_root_scheme() {
        let child = scheme(CHILD, Some(ROOT), 30, &[("RETAILER", dec!(0.005))]);
        let schemes = book(vec![seed_root(), child], &[(9, CHILD)]);
        let out = run_schemes(&program(), &schemes, &seed_sale("100.00"));
        assert_eq!(out.lines[0].amount.amount_string(), "1.00", "root RETAILER 1%");
        assert_eq!(why(&out.lines[0]).inputs["scheme_id"], pid::<SchemeId>(ROOT).to_string());
        assert_eq!(out.lines[0].clears_at, at("2024-06-08T12:00:00Z"));
        assert_eq!(out.base_breakdown.inputs["scheme_source"], "program root");

        // Partner 1 assigned to the child: RETAILER 0.5%, DISTRIBUTOR 2 − 0.5.
        let schemes =
            book(vec![seed_root(), scheme(CHILD, Some(ROOT), 30, &[("RETAILER", dec!(0.005))])], &[(1, CHILD)]);
        let out = run_schemes(&program(), &schemes, &seed_sale("100.00"));
        assert_eq!(
            margins(&out),
            vec![
                (1, "0.50".into(), 0),
                (2, "1.50".into(), 1),
                (3, "1.00".into(), 2),
                (4, "1.00".into(), 3),
                (5, "1.00".into(), 4),
            ]
        );
        assert_eq!(out.lines[0].clears_at, at("2024-07-01T12:00:00Z"));
    }

    #[test]
    fn role_less_partner_is_transparent() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("100.00");
        s.ancestors = vec![with_role(7, PartnerStatus::Active, None), member(2, "DISTRIBUTOR")];
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(margins(&out), vec![(1, "1.00".into(), 0), (2, "1.00".into(), 2)]);
        assert!(out.base_breakdown.note.contains("has no role and is transparent"));

        // A role-less seller earns nothing; the next one earns its whole abs rate.
        s.seller = with_role(1, PartnerStatus::Active, None);
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(margins(&out), vec![(2, "2.00".into(), 2)]);
    }

    #[test]
    fn negative_margin_pays_nothing() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("100.00");
        s.seller = member(1, "DISTRIBUTOR");
        s.ancestors = vec![member(2, "RETAILER"), member(3, "MASTER_DISTRIBUTOR")];
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(margins(&out), vec![(1, "2.00".into(), 0), (3, "2.00".into(), 2)]);
        assert!(out.base_breakdown.note.contains("is negative"), "{}", out.base_breakdown.note);
    }

    #[test]
    fn service_code_not_scheme_managed_settles_by_agreement_as_before() {
        let schemes = book(vec![seed_root()], &[]);
        let agreements = default_book(rules(pct(dec!(0.10))));
        for service_code in ["", "SUBSCRIPTION"] {
            let mut s = seed_sale("100.00");
            s.service_code = service_code.into();
            let with_schemes = settle(&program(), &agreements, &OverridePlans::default(), &schemes, &s);
            let without = settle(&program(), &agreements, &OverridePlans::default(), &SchemeBook::default(), &s);
            assert_eq!(with_schemes, without);
            assert_eq!(lines(&with_schemes), vec![(pid(1), EarningKind::Direct, "10.00".into(), 0)]);
            assert_eq!(with_schemes.agreement_version_id, Some(pid(DEFAULT_VERSION)));
        }
    }

    #[test]
    fn margin_rounding_half_even_versus_half_away_from_zero() {
        let schemes = book(vec![seed_root()], &[]);
        let mut s = seed_sale("2.50");
        s.ancestors.clear();
        // 2.50 × 0.01 = 0.025.
        let out = run_schemes(&program(), &schemes, &s);
        assert_eq!(margins(&out), vec![(1, "0.03".into(), 0)]);
        assert_eq!(why(&out.lines[0]).rounding, "HALF_AWAY_FROM_ZERO to 2 dp: 0.0250 → 0.03");
        let even = ProgramSettings { rounding: RoundingMode::HalfEven, ..program() };
        let out = run_schemes(&even, &schemes, &s);
        assert_eq!(margins(&out), vec![(1, "0.02".into(), 0)]);
        assert_eq!(why(&out.lines[0]).rounding, "HALF_EVEN to 2 dp: 0.0250 → 0.02");
    }

    fn change(role: &str, rate: Option<Decimal>) -> RateChange {
        RateChange { key: RateKey::new(SERVICE, role), rate }
    }

    fn rejected(result: Result<SchemeTree, Vec<WriteViolation>>) -> Vec<Option<usize>> {
        result.expect_err("the write must be rejected").into_iter().map(|v| v.index).collect()
    }

    #[test]
    fn writes_that_let_a_child_exceed_its_parent_or_a_lower_role_a_higher_one_are_rejected() {
        let child = scheme(CHILD, Some(ROOT), 30, &[("DISTRIBUTOR", dec!(0.015))]);
        let tree = SchemeTree::new([seed_root(), child]);
        let ladder = ladder();
        // Child above parent (0.03 > root's 0.02), reported on the written entry.
        let changes = [change("RETAILER", Some(dec!(0.005))), change("DISTRIBUTOR", Some(dec!(0.03)))];
        let result = tree.check_write(pid(CHILD), &changes, &ladder);
        let violations = result.clone().unwrap_err();
        assert!(violations[0].message.contains("may not exceed its parent"), "{}", violations[0].message);
        assert_eq!(rejected(result), vec![Some(1)]);
        // Lower role above a higher one in the same scheme.
        assert_eq!(
            rejected(tree.check_write(pid(CHILD), &[change("RETAILER", Some(dec!(0.02)))], &ladder)),
            vec![Some(0)]
        );
        // Lowering the root below the child's own DISTRIBUTOR 0.015.
        assert_eq!(
            rejected(tree.check_write(
                pid(ROOT),
                &[change("DISTRIBUTOR", Some(dec!(0.012))), change("RETAILER", Some(dec!(0.01)))],
                &ladder
            )),
            vec![Some(0)]
        );
        // Unsetting a root role leaves it at 0, below the roles beneath it.
        assert_eq!(
            rejected(tree.check_write(pid(ROOT), &[change("MASTER_DISTRIBUTOR", None)], &ladder)),
            vec![Some(0)]
        );
        // Valid: the child inherits again; the tree is returned updated.
        let updated = tree.check_write(pid(CHILD), &[change("DISTRIBUTOR", None)], &ladder).unwrap();
        assert_eq!(updated.effective(pid(CHILD), SERVICE, "DISTRIBUTOR").source, Some(pid(ROOT)));
        assert_eq!(tree.effective(pid(CHILD), SERVICE, "DISTRIBUTOR").source, Some(pid(CHILD)), "input untouched");
    }

    proptest! {
        /// Random seed-002-valid ladders (rates non-increasing down the
        /// ladder) and chains of strictly rising roles: every line is > 0 and
        /// exactly round(gross × margin rate); the margin rates sum to
        /// abs[top role]; Σ lines is within half a minor unit per line of
        /// gross × abs[top]; the result is deterministic.
        #[test]
        fn margins_telescope_to_the_top_role_and_round_once_per_line(
            mut raw in proptest::collection::vec(0i64..=10_000, 6),
            chain_mask in proptest::collection::vec(any::<bool>(), 6),
            gross in 0i64..=10_000_000,
            half_even in any::<bool>(),
            suspended in any::<bool>(),
        ) {
            raw.sort_unstable_by(|a, b| b.cmp(a));
            let rates: Vec<(&str, Decimal)> =
                LADDER.iter().zip(&raw).map(|(role, r)| (*role, Decimal::new(*r, 4))).collect();
            let schemes = book(vec![scheme(ROOT, None, 30, &rates)], &[]);
            // Bottom-up partners: a subsequence of the ladder, lowest role first.
            let chosen: Vec<(usize, &str)> =
                LADDER.iter().enumerate().rev().filter(|(i, _)| chain_mask[*i]).map(|(i, r)| (i, *r)).collect();
            prop_assume!(!chosen.is_empty());
            let mut s = sale(Money { amount: Decimal::new(gross, 2), currency: usd("0").currency });
            s.service_code = SERVICE.into();
            let partners: Vec<PartnerRef> = chosen
                .iter()
                .enumerate()
                .map(|(n, (_, role))| {
                    let status = if suspended && n % 2 == 1 { PartnerStatus::Suspended } else { PartnerStatus::Active };
                    with_role(n as u128 + 1, status, Some(role))
                })
                .collect();
            s.seller = partners[0].clone();
            s.ancestors = partners[1..].to_vec();
            let settings = ProgramSettings {
                rounding: if half_even { RoundingMode::HalfEven } else { RoundingMode::HalfAwayFromZero },
                ..program()
            };
            let walk = margin_walk(&settings, &schemes, &s).unwrap();
            let top = rates[chosen[chosen.len() - 1].0].1;
            let rate_sum: Decimal = walk.shares.iter().map(|share| share.margin_rate).sum();
            prop_assert_eq!(rate_sum, top);
            prop_assert!(walk.shares.iter().all(|share| share.margin_rate >= Decimal::ZERO));

            let out = run_schemes(&settings, &schemes, &s);
            prop_assert_eq!(&out.failure, &None);
            let currency = s.amount.currency;
            let by_partner: HashMap<PartnerId, Decimal> =
                walk.shares.iter().map(|share| (share.partner_id, share.margin_rate)).collect();
            for line in &out.lines {
                prop_assert_eq!(line.kind, EarningKind::Margin);
                prop_assert!(line.amount.amount > Decimal::ZERO);
                prop_assert!(currency.is_exact(line.amount.amount));
                let expected = currency.round(s.amount.amount * by_partner[&line.partner_id], settings.rounding);
                prop_assert_eq!(line.amount.amount, expected);
            }
            let paid: Decimal = out.lines.iter().map(|l| l.amount.amount).sum();
            let exact = s.amount.amount * top;
            let slack = Decimal::new(5, 3) * Decimal::from(walk.shares.len());
            prop_assert!((paid - exact).abs() <= slack, "paid {} vs exact {}", paid, exact);
            prop_assert_eq!(run_schemes(&settings, &schemes, &s), out);
        }
    }

    /// A customer's earlier sale of `service` by the seller.
    fn prior_of(id: &str, event_type: SaleEventType, when: &str, service: &str) -> PriorEvent {
        PriorEvent { service_code: service.into(), ..prior(id, event_type, SELLER, when) }
    }

    /// Issue 8 item 2: a scheme-managed sale settled under no agreement, so
    /// it is not the customer's first event under one.
    #[test]
    fn scheme_managed_sale_is_not_an_event_under_an_agreement_for_the_setup_fee() {
        let schemes = book(vec![seed_root()], &[]);
        let mut r = rules(pct(dec!(0.10)));
        r.setup_fee = Some(usd("25.00"));
        let agreements = default_book(r);
        let mut s = sale(usd("100.00"));
        s.service_code = "SUBSCRIPTION".into();
        s.is_first_payment = false;
        s.customer_history = vec![
            prior_of("r1", SaleEventType::Payment, "2024-01-01T00:00:00Z", SERVICE),
            prior_of("r2", SaleEventType::Payment, "2024-02-01T00:00:00Z", SERVICE),
        ];
        let out = settle(&program(), &agreements, &OverridePlans::default(), &schemes, &s);
        assert_eq!(base(&out), "35.00", "{:?}", out.base_breakdown);
        assert_eq!(out.base_breakdown.inputs["prior_firing_events"], "0");
        // The same history under an agreement-settled service code: no fee.
        s.customer_history.iter_mut().for_each(|event| event.service_code = "SUBSCRIPTION".into());
        let out = settle(&program(), &agreements, &OverridePlans::default(), &schemes, &s);
        assert_eq!(base(&out), "10.00");
    }

    /// Issue 8 item 2: a max_duration_months window starts at the first event
    /// under the agreement, not at an earlier scheme-managed sale.
    #[test]
    fn max_duration_months_does_not_start_at_a_scheme_managed_sale() {
        let schemes = book(vec![seed_root()], &[]);
        let mut r = rules(pct(dec!(0.10)));
        r.max_duration_months = 12;
        let agreements = default_book(r);
        let mut s = sale(usd("100.00"));
        s.is_first_payment = false;
        s.occurred_at = at("2024-06-01T12:00:00Z");
        s.customer_history = vec![
            prior_of("r", SaleEventType::Payment, "2022-01-01T00:00:00Z", SERVICE),
            prior_of("p", SaleEventType::Payment, "2024-01-01T00:00:00Z", ""),
        ];
        let out = settle(&program(), &agreements, &OverridePlans::default(), &schemes, &s);
        assert_eq!(base(&out), "10.00", "{:?}", out.base_breakdown);
        assert_eq!(out.base_breakdown.inputs["first_commissioned_at"], "2024-01-01T00:00:00+00:00");
        // Only scheme sales before it: no window has started.
        s.customer_history.pop();
        let out = settle(&program(), &agreements, &OverridePlans::default(), &schemes, &s);
        assert_eq!(base(&out), "10.00");
    }

    /// Issue 8 item 2: a scheme-managed sale is still the customer's first
    /// payment, so a later agreement sale is not an activation.
    #[test]
    fn scheme_managed_sale_still_counts_as_the_first_payment() {
        let schemes = book(vec![seed_root()], &[]);
        let mut r = rules(pct(dec!(0.10)));
        r.trigger = Trigger::OnActivation;
        let agreements = default_book(r);
        let mut s = sale(usd("100.00"));
        s.customer_history = vec![
            prior_of("r", SaleEventType::Payment, "2024-01-01T00:00:00Z", SERVICE),
            prior_of("p", SaleEventType::Payment, "2024-02-01T00:00:00Z", ""),
        ];
        // "p" is not a first payment, so it did not fire ON_ACTIVATION.
        assert_eq!(prior_firing_events(&agreements, &schemes, pid(DEFAULT_AGREEMENT), &s), Vec::<&PriorEvent>::new());
    }

    /// Issue 8 item 4: a higher role that no scheme sets is shown as unset,
    /// not as a 0 someone wrote.
    #[test]
    fn lower_role_above_an_unset_higher_role_says_unset() {
        let root = scheme(ROOT, None, 7, &[("ADMIN", dec!(0.05)), ("DISTRIBUTOR", dec!(0.02))]);
        let tree = SchemeTree::new([root]);
        let violations = tree
            .check_write(
                pid(ROOT),
                &[change("RETAILER", Some(dec!(0.01)))],
                &["ADMIN".into(), "WHITE_LABEL".into(), "RETAILER".into()],
            )
            .unwrap_err();
        let message = &violations[0].message;
        assert!(
            message.contains(
                "RECHARGE RETAILER would be 0.01 but WHITE_LABEL unset (inherits nothing, counts as 0) in scheme"
            ),
            "{message}"
        );
        // A higher role set to 0 says 0.
        let root = scheme(ROOT, None, 7, &[("ADMIN", dec!(0.05)), ("WHITE_LABEL", dec!(0))]);
        let violations = SchemeTree::new([root])
            .check_write(
                pid(ROOT),
                &[change("RETAILER", Some(dec!(0.01)))],
                &["ADMIN".into(), "WHITE_LABEL".into(), "RETAILER".into()],
            )
            .unwrap_err();
        assert!(violations[0].message.contains("but WHITE_LABEL 0 in scheme"), "{}", violations[0].message);
    }

    #[test]
    fn book_without_schemes_manages_nothing() {
        let empty = SchemeBook::default();
        assert!(!empty.manages(SERVICE));
        assert!(!empty.manages(""));
        let tree = SchemeTree::new([seed_root()]);
        let schemes = SchemeBook::new(tree, HashMap::new());
        assert!(schemes.manages(SERVICE));
    }
}

/// SimulateProgram's drafts (issue 16 item 2): a dated draft is the scope's
/// next version from its date on (earlier sales keep the stored one); an
/// undated one replaces the scope's versions at every time; both keep the
/// scope's agreement id and carry the nil version id.
#[test]
fn draft_versions_extend_or_replace_their_scope() {
    let stored = rules(pct(dec!(0.05)));
    let draft = rules(pct(dec!(0.07)));
    let dated = default_book(stored.clone()).with_draft_version(None, Some(at("2024-03-15T00:00:00Z")), draft.clone());
    let seller = pid(99);
    let before = dated.in_force(seller, at("2024-03-14T23:59:59Z")).unwrap();
    assert_eq!((before.rules.clone(), before.version), (stored.clone(), 1));
    let after = dated.in_force(seller, at("2024-03-15T00:00:00Z")).unwrap();
    assert_eq!((after.rules.clone(), after.version), (draft.clone(), 2));
    assert_eq!(after.agreement_id, pid(DEFAULT_AGREEMENT));
    assert!(after.id.as_uuid().is_nil());
    let undated = default_book(stored).with_draft_version(None, None, draft.clone());
    let any = undated.in_force(seller, at("2001-01-01T00:00:00Z")).unwrap();
    assert_eq!((any.rules.clone(), any.version, any.agreement_id), (draft.clone(), 0, pid(DEFAULT_AGREEMENT)));
    // A partner scope without an agreement gets one of its own.
    let own = default_book(rules(pct(dec!(0.05)))).with_draft_version(Some(seller), None, draft.clone());
    let chosen = own.in_force(seller, at("2024-01-01T00:00:00Z")).unwrap();
    assert_eq!((chosen.partner_id, chosen.rules.clone()), (Some(seller), draft));
    assert_ne!(chosen.agreement_id, pid(DEFAULT_AGREEMENT));
}
