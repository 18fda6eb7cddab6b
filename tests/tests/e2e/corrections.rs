//! Issue 8's corrections end to end, over the five real services on a fresh
//! database: a TERMINATED split partner's share moves to the owner only after
//! the configured allocation (DESIGN §4 "Link splits"); a scheme-managed sale
//! is no event under an agreement (DESIGN §4 "setup_fee"); the tree may be
//! deeper than the override depth cap, and a settings change applies to sales
//! that occur after it, each line recording the settings version it used.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use accrue_e2e::Clients;
use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{
    dec, gbp, override_plan, partner, payment, program, record_and_settle, split_link_with_lead, ts,
};
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use accrue_proto::types::v1::EarningKind;
use rust_decimal::Decimal;

/// The program-default agreement: PERCENTAGE `rate` on every payment, with an
/// optional setup fee, in force since 2020.
async fn default_agreement(c: &mut Clients, program_id: &str, partner_id: &str, rate: &str, setup_fee: Option<&str>) {
    c.commission
        .create_agreement(cpb::CreateAgreementRequest {
            program_id: program_id.into(),
            partner_id: partner_id.into(),
            effective_from: Some(ts("2020-01-01T00:00:00Z")),
            rules: Some(cpb::AgreementRules {
                model: cpb::CommissionModel::Percentage as i32,
                trigger: cpb::CommissionTrigger::OnPayment as i32,
                rate: rate.into(),
                setup_fee: setup_fee.map(gbp),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create agreement");
}

async fn terminate(c: &mut Clients, partner_id: &str) {
    c.hierarchy
        .update_partner_status(hpb::UpdatePartnerStatusRequest {
            id: partner_id.into(),
            status: types::PartnerStatus::Terminated as i32,
            reason: "left the programme".into(),
        })
        .await
        .expect("terminate");
}

/// (partner, kind) → amount of a sale's entries.
fn by_partner(entries: &[lpb::Entry]) -> BTreeMap<(String, i32), Decimal> {
    entries.iter().map(|e| ((e.partner_id.clone(), e.kind), dec(&e.amount.as_ref().expect("amount").amount))).collect()
}

const DIRECT: i32 = EarningKind::Direct as i32;
const SPLIT: i32 = EarningKind::Split as i32;

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_split_partners_share_moves_to_the_owner_after_allocation() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let owner = partner(&mut c, &program_id, "", "").await;
    default_agreement(&mut c, &program_id, "", "0.10", None).await;

    // C = 1.40 over owner 3332 / 3333 / 3334 / 1, the 1-point partner TERMINATED.
    let (a, b, gone) = (
        partner(&mut c, &program_id, "", "").await,
        partner(&mut c, &program_id, "", "").await,
        partner(&mut c, &program_id, "", "").await,
    );
    split_link_with_lead(&mut c, &program_id, &owner, &[(&a, 3333), (&b, 3334), (&gone, 1)], "cust-1").await;
    terminate(&mut c, &gone).await;
    let (_, entries) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "14.00", "", "2024-03-01T12:00:00Z")).await;
    let lines = by_partner(&entries);
    assert_eq!(lines.get(&(a.clone(), SPLIT)), Some(&dec("0.47")), "{lines:?}");
    assert_eq!(lines.get(&(b.clone(), SPLIT)), Some(&dec("0.47")), "{lines:?}");
    assert_eq!(lines.get(&(owner.clone(), DIRECT)), Some(&dec("0.46")), "{lines:?}");
    assert_eq!(lines.len(), 3, "the terminated partner's zero share posts nothing: {lines:?}");

    // C = 7.22 with splits 7 and 13 points, the 13-point partner TERMINATED.
    let (seven, thirteen) = (partner(&mut c, &program_id, "", "").await, partner(&mut c, &program_id, "", "").await);
    split_link_with_lead(&mut c, &program_id, &owner, &[(&seven, 7), (&thirteen, 13)], "cust-2").await;
    terminate(&mut c, &thirteen).await;
    let (_, entries) =
        record_and_settle(&mut c, payment(&program_id, "s-2", "cust-2", "72.20", "", "2024-03-01T12:00:00Z")).await;
    let lines = by_partner(&entries);
    assert_eq!(lines, BTreeMap::from([((owner.clone(), DIRECT), dec("7.22"))]), "{entries:#?}");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheme_managed_sale_is_not_an_event_under_the_agreement() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let seller = partner(&mut c, &program_id, "RETAILER", "").await;
    default_agreement(&mut c, &program_id, &seller, "0.10", Some("5.00")).await;
    c.commission
        .create_scheme(cpb::CreateSchemeRequest {
            program_id: program_id.clone(),
            scheme: Some(cpb::Scheme {
                display_name: "Root".into(),
                // Seed 002's ladder: a lower role may not earn more than a higher one.
                rates: [
                    ("ADMIN", "0.05"),
                    ("WHITE_LABEL", "0.04"),
                    ("MASTER_DISTRIBUTOR", "0.03"),
                    ("DISTRIBUTOR", "0.02"),
                    ("RETAILER", "0.01"),
                ]
                .into_iter()
                .map(|(role, rate)| cpb::SchemeRate {
                    service_code: "RECHARGE".into(),
                    role: role.into(),
                    rate: rate.into(),
                })
                .collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create scheme");
    split_link_with_lead(&mut c, &program_id, &seller, &[], "cust-1").await;

    // The customer's first purchase is scheme-managed: a margin, no agreement event.
    let (_, first) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "100.00", "RECHARGE", "2024-03-01T12:00:00Z"))
            .await;
    assert_eq!(
        first.iter().map(|e| (e.kind, dec(&e.amount.as_ref().unwrap().amount))).collect::<Vec<_>>(),
        vec![(EarningKind::Margin as i32, dec("1.00"))]
    );
    // So the first sale under the agreement still carries the setup fee.
    let (_, second) =
        record_and_settle(&mut c, payment(&program_id, "s-2", "cust-1", "50.00", "", "2024-03-02T12:00:00Z")).await;
    assert_eq!(by_partner(&second), BTreeMap::from([((seller.clone(), DIRECT), dec("10.00"))]), "{second:#?}");
    let (_, third) =
        record_and_settle(&mut c, payment(&program_id, "s-3", "cust-1", "50.00", "", "2024-03-03T12:00:00Z")).await;
    assert_eq!(by_partner(&third), BTreeMap::from([((seller, DIRECT), dec("5.00"))]), "once per customer: {third:#?}");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_tree_pays_capped_overrides_and_a_settings_change_applies_to_later_sales() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    // Three override levels at most, a tree up to twenty deep (two limits).
    let program_id = c
        .hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Deep Co".into(),
                default_currency: "GBP".into(),
                override_depth_cap: 3,
                max_tree_depth: 20,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create program")
        .into_inner()
        .id;
    // A chain 20 levels deep; the deepest partner sells.
    let mut chain = vec![partner(&mut c, &program_id, "", "").await];
    for _ in 0..20 {
        let parent = chain.last().cloned().unwrap();
        chain.push(partner(&mut c, &program_id, "", &parent).await);
    }
    let seller = chain.last().cloned().unwrap();
    default_agreement(&mut c, &program_id, "", "0.10", None).await;
    override_plan(&mut c, &program_id, cpb::OverrideBasis::DealAmount, &["0.01"; 5]).await;
    split_link_with_lead(&mut c, &program_id, &seller, &[], "cust-1").await;

    let (_, deep) =
        record_and_settle(&mut c, payment(&program_id, "s-0", "cust-1", "100.00", "", "2024-03-01T12:00:00Z")).await;
    let overrides: Vec<(String, Decimal)> = deep
        .iter()
        .filter(|e| e.kind == EarningKind::Override as i32)
        .map(|e| (e.partner_id.clone(), dec(&e.amount.as_ref().unwrap().amount)))
        .collect();
    let parents: Vec<(String, Decimal)> =
        chain.iter().rev().skip(1).take(3).map(|p| (p.clone(), dec("1.00"))).collect();
    assert_eq!(overrides, parents, "min(plan 5, cap 3) levels on a 20-deep tree: {deep:#?}");

    // 0.25 × 0.10 = 0.025: half away from zero → 0.03 under settings version 1.
    let (_, before) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "0.25", "", "2024-03-01T13:00:00Z")).await;
    let direct = before.iter().find(|e| e.kind == DIRECT).expect("direct line");
    assert_eq!(dec(&direct.amount.as_ref().unwrap().amount), dec("0.03"));
    let settings = |entry: &lpb::Entry| {
        entry.breakdown.as_ref().expect("breakdown").inputs.get("program.settings_version").cloned()
    };
    assert_eq!(settings(direct).as_deref(), Some("1"), "{direct:#?}");

    // Half-even from now on: a sale that occurs after the change rounds 0.025 → 0.02 …
    let changed = c
        .hierarchy
        .update_program(hpb::UpdateProgramRequest {
            program: Some(hpb::Program {
                id: program_id.clone(),
                rounding_mode: types::RoundingMode::HalfEven as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["rounding_mode".into()] }),
            request_id: "half-even".into(),
        })
        .await
        .expect("half-even")
        .into_inner();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let later = later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, after) = record_and_settle(&mut c, payment(&program_id, "s-2", "cust-1", "0.25", "", &later)).await;
    let direct = after.iter().find(|e| e.kind == DIRECT).expect("direct line");
    assert_eq!(dec(&direct.amount.as_ref().unwrap().amount), dec("0.02"), "{direct:#?}");
    assert_eq!(settings(direct), Some(changed.settings_history.last().unwrap().version.to_string()));
    // … while a backfilled sale that occurred before it keeps the old rounding.
    let (_, backfill) =
        record_and_settle(&mut c, payment(&program_id, "s-3", "cust-1", "0.25", "", "2024-03-02T12:00:00Z")).await;
    let direct = backfill.iter().find(|e| e.kind == DIRECT).expect("direct line");
    assert_eq!(dec(&direct.amount.as_ref().unwrap().amount), dec("0.03"), "{direct:#?}");
    assert_eq!(settings(direct).as_deref(), Some("1"));
    stack.shutdown().await.unwrap();
}
