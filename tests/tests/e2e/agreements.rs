//! Versioned agreements end to end (DESIGN §4, seed 003): a new version — even
//! one whose `effective_from` reaches back before sales already settled — never
//! changes what was posted; later sales use the version in force at their
//! `occurred_at`, and GetAgreementInForce names it. Five real services over
//! real gRPC on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{dec, link_with_lead, partner, payment, program, record_and_settle, ts};
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;

fn amounts(entries: &[lpb::Entry]) -> Vec<(String, rust_decimal::Decimal)> {
    entries.iter().map(|e| (e.partner_id.clone(), dec(&e.amount.as_ref().unwrap().amount))).collect()
}

/// The id of the version GetAgreementInForce names for `partner_id` at `time`.
async fn in_force(c: &mut accrue_e2e::Clients, program_id: &str, partner_id: &str, time: &str) -> String {
    c.commission
        .get_agreement_in_force(cpb::GetAgreementInForceRequest {
            program_id: program_id.into(),
            partner_id: partner_id.into(),
            time: Some(ts(time)),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agreement_version_never_changes_posted_commissions() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let seller = partner(&mut c, &program_id, "RETAILER", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;
    let v1 = c
        .commission
        .create_agreement(cpb::CreateAgreementRequest {
            program_id: program_id.clone(),
            partner_id: seller.clone(),
            effective_from: Some(ts("2020-01-01T00:00:00Z")),
            rules: Some(cpb::AgreementRules {
                model: cpb::CommissionModel::Percentage as i32,
                trigger: cpb::CommissionTrigger::OnPayment as i32,
                rate: "0.10".into(),
                ..Default::default()
            }),
            request_id: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let (first, posted) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "100.00", "", "2024-03-01T12:00:00Z")).await;
    assert_eq!(amounts(&posted), vec![(seller.clone(), dec("10.00"))]);
    assert_eq!(posted[0].breakdown.as_ref().unwrap().agreement_version_id, v1.id);

    // Version 2: seed 003 example 5's tiers, in force from before the first sale.
    let tier = |min: &str, max: &str, rate: &str| cpb::Tier {
        min_volume: min.into(),
        max_volume: max.into(),
        rate: rate.into(),
        fixed_amount: None,
    };
    let v2 = c
        .commission
        .create_agreement(cpb::CreateAgreementRequest {
            program_id: program_id.clone(),
            partner_id: seller.clone(),
            effective_from: Some(ts("2024-02-01T00:00:00Z")),
            rules: Some(cpb::AgreementRules {
                model: cpb::CommissionModel::Tiered as i32,
                trigger: cpb::CommissionTrigger::OnPayment as i32,
                tiers: vec![tier("0", "100", "0.20"), tier("100", "", "0.30")],
                ..Default::default()
            }),
            request_id: "v2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2.version, 2);

    // What was posted stays as it was: same entries, same amounts, same version.
    let after = accrue_e2e::sale_entries(&c, &program_id, &first.id).await.unwrap();
    assert_eq!(after, posted);

    // The version in force at the first sale's time is now v2 …
    assert_eq!(in_force(&mut c, &program_id, &seller, "2024-03-01T12:00:00Z").await, v2.id);
    // … and before v2's effective_from it is still v1.
    assert_eq!(in_force(&mut c, &program_id, &seller, "2024-01-31T23:59:59Z").await, v1.id);

    // A later sale settles under v2: the seller's prior volume is 100.00 (the
    // first sale), so the [100, ∞) tier at 30% applies to the whole 50.00.
    let (_, entries) =
        record_and_settle(&mut c, payment(&program_id, "s-2", "cust-1", "50.00", "", "2024-03-02T12:00:00Z")).await;
    assert_eq!(amounts(&entries), vec![(seller.clone(), dec("15.00"))]);
    let breakdown = entries[0].breakdown.as_ref().unwrap();
    assert_eq!(breakdown.agreement_version_id, v2.id);
    // The entry explains itself: the model, the tier chosen and the formula.
    assert_eq!(breakdown.model, "TIERED");
    assert!(breakdown.rule.starts_with("tier[1]"), "{breakdown:#?}");
    assert_eq!(breakdown.inputs["seller_prior_volume"], "100.00");
    assert!(breakdown.formula.contains("50.00 × 0.3 = 15.0"), "{breakdown:#?}");
    assert_eq!(entries[0].kind, accrue_proto::types::v1::EarningKind::Direct as i32);

    stack.shutdown().await.unwrap();
}

async fn agreement(c: &mut accrue_e2e::Clients, program_id: &str, partner_id: &str, rules: cpb::AgreementRules) {
    c.commission
        .create_agreement(cpb::CreateAgreementRequest {
            program_id: program_id.into(),
            partner_id: partner_id.into(),
            effective_from: Some(ts("2020-01-01T00:00:00Z")),
            rules: Some(rules),
            request_id: String::new(),
        })
        .await
        .unwrap();
}

fn event(
    program_id: &str,
    external_id: &str,
    customer: &str,
    event_type: types::SaleEventType,
    amount: &str,
    at: &str,
) -> accrue_proto::attribution::v1::RecordSaleRequest {
    let mut request = payment(program_id, external_id, customer, amount, "", at);
    request.event_type = event_type as i32;
    request
}

/// Seed 003 example 3 through the saga: an ON_SIGNUP agreement with rate 0
/// and a 50.00 setup fee pays 50.00 for a sign-up that carries no money, and
/// nothing for the customer's later payment (the trigger does not fire).
#[tokio::test(flavor = "multi_thread")]
async fn seed_003_example_3_signup_bounty_end_to_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;
    agreement(
        &mut c,
        &program_id,
        &seller,
        cpb::AgreementRules {
            model: cpb::CommissionModel::Percentage as i32,
            trigger: cpb::CommissionTrigger::OnSignup as i32,
            rate: "0".into(),
            setup_fee: Some(accrue_e2e::fixtures::gbp("50.00")),
            clearance_days: 30,
            ..Default::default()
        },
    )
    .await;
    let signup = event(&program_id, "e-1", "cust-1", types::SaleEventType::Signup, "0.00", "2024-03-01T00:00:00Z");
    let (sale, entries) = record_and_settle(&mut c, signup).await;
    assert_eq!(amounts(&entries), vec![(seller.clone(), dec("50.00"))]);
    assert_eq!(sale.base_commission.as_ref().map(|m| dec(&m.amount)), Some(dec("50.00")));
    let paid = event(&program_id, "e-2", "cust-1", types::SaleEventType::Payment, "80.00", "2024-03-02T00:00:00Z");
    let (_, entries) = record_and_settle(&mut c, paid).await;
    assert!(entries.is_empty(), "ON_SIGNUP does not fire on a payment: {entries:#?}");

    // A PAYMENT must carry money; a SIGNUP may not be negative.
    for (event_type, amount) in [(types::SaleEventType::Payment, "0.00"), (types::SaleEventType::Signup, "-1.00")] {
        let request = event(&program_id, "bad", "cust-1", event_type, amount, "2024-03-03T00:00:00Z");
        let status = c.attribution.record_sale(request).await.expect_err("rejected");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    stack.shutdown().await.unwrap();
}

/// ON_ACTIVATION through the saga: `is_first_payment` is derived from the
/// customer's history, so only the first PAYMENT earns (seed 003).
#[tokio::test(flavor = "multi_thread")]
async fn on_activation_pays_only_the_customers_first_payment_end_to_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;
    agreement(
        &mut c,
        &program_id,
        "",
        cpb::AgreementRules {
            model: cpb::CommissionModel::Percentage as i32,
            trigger: cpb::CommissionTrigger::OnActivation as i32,
            rate: "0.20".into(),
            ..Default::default()
        },
    )
    .await;
    let signup = event(&program_id, "e-0", "cust-1", types::SaleEventType::Signup, "0.00", "2024-03-01T00:00:00Z");
    let (_, entries) = record_and_settle(&mut c, signup).await;
    assert!(entries.is_empty(), "a sign-up is not a payment: {entries:#?}");
    let first = payment(&program_id, "e-1", "cust-1", "60.00", "", "2024-03-02T00:00:00Z");
    let (_, entries) = record_and_settle(&mut c, first).await;
    assert_eq!(amounts(&entries), vec![(seller.clone(), dec("12.00"))]);
    let second = payment(&program_id, "e-2", "cust-1", "60.00", "", "2024-03-03T00:00:00Z");
    let (_, entries) = record_and_settle(&mut c, second).await;
    assert!(entries.is_empty(), "only the first payment activates: {entries:#?}");
    stack.shutdown().await.unwrap();
}
