//! Qualified overrides with dynamic compression (issue 16 item 3), end to
//! end over the five real services: an override plan whose ancestors must
//! qualify by personal volume over a trailing window or by ACTIVE direct
//! sub-partners. Attribution gathers the facts only when commission asks
//! for them (the volume from its `seller_volumes` buckets, the counts from
//! hierarchy.CountActiveDirectPartners as of the sale), and the ledger's
//! OVERRIDE lines say why each ancestor qualified or whom it was compressed
//! past.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use accrue_e2e::fixtures::{
    dec, default_agreement, gbp, link_with_lead, partner, payment, percentage_on_payment, program_with,
    record_and_settle, ts,
};
use accrue_e2e::{Clients, TestStack, amount};
use accrue_kit::convert::timestamp;
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use tonic::Code;

/// Personal volume ≥ `minimum` GBP over the `days` before the sale.
fn volume(minimum: &str, days: i32) -> cpb::OverrideQualification {
    cpb::OverrideQualification {
        min_personal_volume: Some(gbp(minimum)),
        volume_window_days: days,
        min_active_direct_partners: 0,
    }
}

fn plan_request(program_id: &str, qualification: Option<cpb::OverrideQualification>) -> cpb::SetOverridePlanRequest {
    cpb::SetOverridePlanRequest {
        plan: Some(cpb::OverridePlan {
            program_id: program_id.into(),
            partner_id: String::new(),
            mode: cpb::OverrideMode::Percentage as i32,
            basis: cpb::OverrideBasis::DealAmount as i32,
            rates_by_level: ["0.05", "0.03"]
                .iter()
                .map(|rate| cpb::OverrideLevel { rate: (*rate).into(), flat_amount: None })
                .collect(),
            update_time: None,
            qualification,
        }),
        request_id: String::new(),
    }
}

/// The program's plan: 5 % then 3 % of the deal, with `qualification`.
async fn plan(c: &mut Clients, program_id: &str, qualification: Option<cpb::OverrideQualification>) {
    c.commission.set_override_plan(plan_request(program_id, qualification)).await.expect("set the override plan");
}

/// top → mid → seller, each with a link and a lead of its own customer
/// ("t", "m", "s"); 10 % of every payment to the seller.
struct Chain {
    program: String,
    top: String,
    mid: String,
    seller: String,
}

async fn chain(c: &mut Clients, compression: bool) -> Chain {
    let program = program_with(c, |p| p.compression_enabled = compression).await;
    default_agreement(c, &program, percentage_on_payment("0.10")).await;
    let top = partner(c, &program, "", "").await;
    let mid = partner(c, &program, "", &top).await;
    let seller = partner(c, &program, "", &mid).await;
    for (owner, customer) in [(&top, "t"), (&mid, "m"), (&seller, "s")] {
        link_with_lead(c, &program, owner, customer).await;
    }
    Chain { program, top, mid, seller }
}

/// Records a payment by `customer`'s link owner and waits until it settles;
/// returns its ledger entries.
async fn sell(c: &mut Clients, program: &str, id: &str, customer: &str, gross: &str, at: &str) -> Vec<lpb::Entry> {
    record_and_settle(c, payment(program, id, customer, gross, "", at)).await.1
}

/// A 100.00 payment by the seller's customer at `at` (to the nanosecond),
/// settled; its ledger entries.
async fn sell_at(c: &mut Clients, program: &str, id: &str, at: DateTime<Utc>) -> Vec<lpb::Entry> {
    let mut request = payment(program, id, "s", "100.00", "", "2024-01-01T00:00:00Z");
    request.occurred_at = Some(timestamp(at));
    record_and_settle(c, request).await.1
}

/// (partner, level, amount) of the OVERRIDE lines, by level.
fn overrides(entries: &[lpb::Entry]) -> Vec<(String, i32, Decimal)> {
    let mut lines: Vec<(String, i32, Decimal)> = entries
        .iter()
        .filter(|e| e.kind == types::EarningKind::Override as i32)
        .map(|e| (e.partner_id.clone(), e.level, amount(e.amount.as_ref()).unwrap()))
        .collect();
    lines.sort_by_key(|line| line.1);
    lines
}

/// The breakdown input `key` of the OVERRIDE line at `level`.
fn input(entries: &[lpb::Entry], level: i32, key: &str) -> Option<String> {
    entries
        .iter()
        .find(|e| e.kind == types::EarningKind::Override as i32 && e.level == level)
        .and_then(|e| e.breakdown.as_ref())
        .and_then(|b| b.inputs.get(key).cloned())
}

/// QuoteSale of a 100.00 payment by `seller` at `at`, stating `volumes`
/// (ancestor, personal volume over 30 days): the settlement and its
/// (partner, level, amount) OVERRIDE lines.
async fn quote(
    c: &mut Clients,
    program: &str,
    seller: &str,
    at: &str,
    volumes: &[(&str, &str)],
) -> (cpb::Settlement, Vec<(String, i32, Decimal)>) {
    let ancestor_facts = volumes
        .iter()
        .map(|(id, volume)| cpb::QuoteAncestorFacts {
            partner_id: (*id).into(),
            facts: Some(cpb::QualificationFacts {
                personal_volume: Some(gbp(volume)),
                volume_window_days: 30,
                active_direct_partners: None,
            }),
        })
        .collect();
    let settlement = c
        .commission
        .quote_sale(cpb::QuoteSaleRequest {
            program_id: program.into(),
            sale: Some(cpb::QuoteSaleInput {
                seller_partner_id: seller.into(),
                event_type: types::SaleEventType::Payment as i32,
                amount: Some(gbp("100.00")),
                occurred_at: Some(ts(at)),
                ancestor_facts,
                ..Default::default()
            }),
            draft_rules: None,
        })
        .await
        .unwrap()
        .into_inner()
        .settlement
        .unwrap();
    let lines = settlement
        .lines
        .iter()
        .filter(|l| l.kind == types::EarningKind::Override as i32)
        .map(|l| (l.partner_id.clone(), l.level, amount(l.amount.as_ref()).unwrap()))
        .collect();
    (settlement, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_without_qualification_settles_as_before_and_quotes_agree() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = chain(&mut c, false).await;
    plan(&mut c, &w.program, None).await;
    // The ancestors sell nothing: without a qualification both are paid.
    let entries = sell(&mut c, &w.program, "s-1", "s", "100.00", "2024-03-01T12:00:00Z").await;
    assert_eq!(overrides(&entries), vec![(w.mid.clone(), 1, dec("5.00")), (w.top.clone(), 2, dec("3.00"))]);
    for e in &entries {
        let inputs = &e.breakdown.as_ref().unwrap().inputs;
        assert!(inputs.keys().all(|k| !k.starts_with("qualification.")), "{inputs:?}");
    }
    let (settlement, quoted) = quote(&mut c, &w.program, &w.seller, "2024-03-01T12:00:00Z", &[]).await;
    assert!(settlement.failure.is_none() && settlement.required_facts.is_empty(), "{settlement:#?}");
    assert_eq!(quoted, overrides(&entries));
    stack.shutdown().await.unwrap();
}

/// The window is [occurred_at − 30 days, occurred_at): a sale exactly at its
/// start counts, one exactly at its end (the sale's own instant) does not.
/// Without compression an unqualified ancestor forfeits its level.
#[tokio::test(flavor = "multi_thread")]
async fn the_volume_window_includes_its_start_and_excludes_its_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = chain(&mut c, false).await;
    plan(&mut c, &w.program, Some(volume("1000.00", 30))).await;
    // mid: 1000.00 at 03-01 12:00. top: 600.00 at 03-01 00:00, 400.00 at 03-20 00:00.
    sell(&mut c, &w.program, "m-1", "m", "1000.00", "2024-03-01T12:00:00Z").await;
    sell(&mut c, &w.program, "t-1", "t", "600.00", "2024-03-01T00:00:00Z").await;
    sell(&mut c, &w.program, "t-2", "t", "400.00", "2024-03-20T00:00:00Z").await;
    let (mid, top) = (w.mid.clone(), w.top.clone());

    // 03-31 12:00: mid's sale is exactly at the window's start (counts);
    // top has only 400.00 inside (03-01 00:00 is before the start).
    let a = sell(&mut c, &w.program, "s-a", "s", "100.00", "2024-03-31T12:00:00Z").await;
    assert_eq!(overrides(&a), vec![(mid.clone(), 1, dec("5.00"))]);
    assert_eq!(
        input(&a, 1, "qualification.personal_volume").as_deref(),
        Some("personal volume 1000.00 GBP in the 30 days before 2024-03-31T12:00:00Z")
    );
    // One second later mid's sale has left the window: nobody qualifies.
    let b = sell(&mut c, &w.program, "s-b", "s", "100.00", "2024-03-31T12:00:01Z").await;
    assert_eq!(overrides(&b), vec![]);
    // 03-20 00:00: top's 400.00 at exactly that instant is outside (600.00 only).
    let at_end = sell(&mut c, &w.program, "s-c", "s", "100.00", "2024-03-20T00:00:00Z").await;
    assert_eq!(overrides(&at_end), vec![(mid.clone(), 1, dec("5.00"))]);
    // One second later it is inside: 1000.00, top qualifies for level 2.
    let after = sell(&mut c, &w.program, "s-d", "s", "100.00", "2024-03-20T00:00:01Z").await;
    assert_eq!(overrides(&after), vec![(mid.clone(), 1, dec("5.00")), (top.clone(), 2, dec("3.00"))]);
    assert_eq!(
        input(&after, 2, "qualification.personal_volume").as_deref(),
        Some("personal volume 1000.00 GBP in the 30 days before 2024-03-20T00:00:01Z")
    );
    stack.shutdown().await.unwrap();
}

/// With the program's compression an unqualified ancestor is skipped and
/// the next qualified one takes its level; the paid line names whom it was
/// compressed past, and a quote stating the same facts agrees.
#[tokio::test(flavor = "multi_thread")]
async fn with_compression_the_next_qualified_ancestor_takes_the_level() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    for compression in [true, false] {
        let w = chain(&mut c, compression).await;
        plan(&mut c, &w.program, Some(volume("1000.00", 30))).await;
        sell(&mut c, &w.program, "t-1", "t", "1500.00", "2024-03-10T00:00:00Z").await;
        sell(&mut c, &w.program, "m-1", "m", "999.99", "2024-03-10T00:00:00Z").await;
        let entries = sell(&mut c, &w.program, "s-1", "s", "100.00", "2024-03-15T00:00:00Z").await;
        let volumes = [(w.mid.as_str(), "999.99"), (w.top.as_str(), "1500.00")];
        let (settlement, quoted) = quote(&mut c, &w.program, &w.seller, "2024-03-15T00:00:00Z", &volumes).await;
        assert_eq!(quoted, overrides(&entries), "quote and settlement agree (compression {compression})");
        let note = settlement.base_breakdown.unwrap().note;
        let why = format!(
            "ancestor {}: personal volume 999.99 GBP in the 30 days before 2024-03-15T00:00:00Z < 1000.00: not qualified",
            w.mid
        );
        if compression {
            assert_eq!(overrides(&entries), vec![(w.top.clone(), 1, dec("5.00"))]);
            assert!(note.contains(&format!("{why}, skipped (compression)")), "{note}");
            let skipped = input(&entries, 1, "qualification.skipped").unwrap();
            assert!(skipped.starts_with(&why), "{skipped}");
        } else {
            assert_eq!(overrides(&entries), vec![(w.top.clone(), 2, dec("3.00"))]);
            let forfeit = format!(
                "level 1: ancestor {}: personal volume 999.99 GBP in the 30 days before 2024-03-15T00:00:00Z \
                 < 1000.00: not qualified, forfeits the level",
                w.mid
            );
            assert!(note.contains(&forfeit), "{note}");
        }
    }
    stack.shutdown().await.unwrap();
}

/// mid's own volume crosses 1000.00 partway through a sequence of sales:
/// the seller's earlier sales pay it nothing, the later ones do. Refunds do
/// not lower the volume.
#[tokio::test(flavor = "multi_thread")]
async fn a_partner_qualifies_mid_stream() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = chain(&mut c, false).await;
    plan(&mut c, &w.program, Some(volume("1000.00", 30))).await;
    let mut paid = Vec::new();
    let mut mid_sales = Vec::new();
    for day in 0..4 {
        let (own, downline) = (9 + 2 * day, 10 + 2 * day);
        let at = |d: i32| format!("2024-04-{d:02}T12:00:00Z");
        let sold =
            record_and_settle(&mut c, payment(&w.program, &format!("m-{day}"), "m", "400.00", "", &at(own))).await;
        mid_sales.push(sold.0.id);
        let entries = sell(&mut c, &w.program, &format!("s-{day}"), "s", "100.00", &at(downline)).await;
        paid.push(overrides(&entries).into_iter().filter(|(p, _, _)| *p == w.mid).count());
    }
    // Volume before each downline sale: 400, 800, 1200, 1600.
    assert_eq!(paid, vec![0, 0, 1, 1]);

    // A full refund of one of mid's sales leaves its volume as recorded.
    let refund = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            program_id: w.program.clone(),
            external_id: "r-1".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(mid_sales[0].clone())),
            amount: Some(gbp("400.00")),
            occurred_at: Some(ts("2024-04-17T00:00:00Z")),
            reason: "returned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let saga = accrue_e2e::wait_saga(&c, &refund.saga_id).await.unwrap();
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let entries = sell(&mut c, &w.program, "s-9", "s", "100.00", "2024-04-18T12:00:00Z").await;
    assert_eq!(overrides(&entries), vec![(w.mid.clone(), 1, dec("5.00"))]);
    stack.shutdown().await.unwrap();
}

/// A minimum of two ACTIVE direct sub-partners, evaluated as of each sale's
/// occurred_at from the hierarchy's status history: a sale recorded after a
/// child was reactivated, but that occurred before, still finds one.
#[tokio::test(flavor = "multi_thread")]
async fn active_direct_sub_partners_are_counted_as_of_the_sale() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = chain(&mut c, false).await;
    let two = cpb::OverrideQualification { min_active_direct_partners: 2, ..Default::default() };
    plan(&mut c, &w.program, Some(two)).await;
    let second = partner(&mut c, &w.program, "", &w.mid).await;
    let status = |id: &str, status: types::PartnerStatus| hpb::UpdatePartnerStatusRequest {
        id: id.into(),
        status: status as i32,
        reason: "qualification test".into(),
    };
    c.hierarchy.update_partner_status(status(&second, types::PartnerStatus::Suspended)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let suspended_at = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    c.hierarchy.update_partner_status(status(&second, types::PartnerStatus::Active)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let active_at = Utc::now();

    let counts = c
        .hierarchy
        .count_active_direct_partners(hpb::CountActiveDirectPartnersRequest {
            program_id: w.program.clone(),
            queries: [suspended_at - Duration::days(1), suspended_at, active_at]
                .into_iter()
                .map(|at| hpb::ActiveDirectPartnersQuery { partner_id: w.mid.clone(), as_of: Some(timestamp(at)) })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    // A day earlier neither child existed.
    assert_eq!(counts, vec![0, 1, 2]);

    let now = sell_at(&mut c, &w.program, "s-1", active_at).await;
    assert_eq!(overrides(&now), vec![(w.mid.clone(), 1, dec("5.00"))]);
    assert_eq!(input(&now, 1, "qualification.active_direct_partners").as_deref(), Some("2"));
    // Recorded later, occurred while `second` was suspended: one ACTIVE child.
    let earlier = sell_at(&mut c, &w.program, "s-2", suspended_at).await;
    assert_eq!(overrides(&earlier), vec![]);
    // top has one child (mid) throughout.
    assert!(overrides(&now).iter().all(|(p, _, _)| *p != w.top));
    stack.shutdown().await.unwrap();
}

/// Bad qualifications are INVALID_ARGUMENT with a field violation each and
/// change nothing: the plan in force still pays as before.
#[tokio::test(flavor = "multi_thread")]
async fn bad_qualifications_are_invalid_and_change_nothing() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = chain(&mut c, false).await;
    plan(&mut c, &w.program, None).await;
    let eur = cpb::OverrideQualification {
        min_personal_volume: Some(types::Money { currency_code: "EUR".into(), amount: "10.00".into() }),
        volume_window_days: 30,
        min_active_direct_partners: 0,
    };
    let cases: Vec<(cpb::OverrideQualification, &str)> = vec![
        (volume("-1.00", 30), "plan.qualification.min_personal_volume.amount"),
        (volume("1000.00", 0), "plan.qualification.volume_window_days"),
        (volume("1000.00", 3651), "plan.qualification.volume_window_days"),
        (volume("1000.001", 30), "plan.qualification.min_personal_volume.amount"),
        (eur, "plan.qualification.min_personal_volume.currency_code"),
        (
            cpb::OverrideQualification { min_active_direct_partners: -1, ..Default::default() },
            "plan.qualification.min_active_direct_partners",
        ),
        (cpb::OverrideQualification::default(), "plan.qualification"),
    ];
    for (qualification, field) in cases {
        let refused =
            c.commission.set_override_plan(plan_request(&w.program, Some(qualification.clone()))).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{qualification:?}: {refused:?}");
        let fields: Vec<String> = tonic_types::StatusExt::get_details_bad_request(&refused)
            .expect("BadRequest details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert!(fields.iter().any(|f| f == field), "{qualification:?}: {fields:?}");
    }
    // Nothing changed: the plan without qualification still pays both levels.
    let entries = sell(&mut c, &w.program, "s-1", "s", "100.00", "2024-03-01T12:00:00Z").await;
    assert_eq!(overrides(&entries), vec![(w.mid.clone(), 1, dec("5.00")), (w.top.clone(), 2, dec("3.00"))]);
    // The edges are accepted: 3650 days, a zero minimum.
    let edge = c.commission.set_override_plan(plan_request(&w.program, Some(volume("0.00", 3650)))).await.unwrap();
    assert_eq!(edge.into_inner().qualification.unwrap().volume_window_days, 3650);
    stack.shutdown().await.unwrap();
}
