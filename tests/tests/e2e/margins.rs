//! Scheme margins (seed 002, DESIGN §4) end to end: partners with roles in the
//! hierarchy service, schemes in the commission service, sales recorded in the
//! attribution service and settled by the saga, MARGIN entries read back from
//! the ledger — five real services over real gRPC on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use accrue_e2e::fixtures::{
    dec, default_agreement, gbp, link_with_lead, partner, payment, percentage_on_payment, program, record_and_settle,
    set_non_transacting_roles, ts,
};
use accrue_e2e::{Clients, TestStack, sale_entries};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use accrue_proto::types::v1::{EarningKind, Money};
use rust_decimal::Decimal;
use tonic::Code;

pub(crate) const SERVICE: &str = "RECHARGE";
const AT: &str = "2024-03-01T12:00:00Z";

/// Seed 002's SuperAdmin scheme: the absolute rate of each role.
pub(crate) const SEED_002_ROOT_RATES: [(&str, &str); 5] = [
    ("ADMIN", "0.05"),
    ("WHITE_LABEL", "0.04"),
    ("MASTER_DISTRIBUTOR", "0.03"),
    ("DISTRIBUTOR", "0.02"),
    ("RETAILER", "0.01"),
];

pub(crate) fn rates(pairs: &[(&str, &str)]) -> Vec<cpb::SchemeRate> {
    pairs
        .iter()
        .map(|(role, rate)| cpb::SchemeRate {
            service_code: SERVICE.into(),
            role: (*role).into(),
            rate: (*rate).into(),
        })
        .collect()
}

pub(crate) async fn scheme(
    c: &mut Clients,
    program_id: &str,
    parent: &str,
    name: &str,
    pairs: &[(&str, &str)],
) -> String {
    c.commission
        .create_scheme(cpb::CreateSchemeRequest {
            program_id: program_id.into(),
            scheme: Some(cpb::Scheme {
                display_name: name.into(),
                parent_id: parent.into(),
                clearance_days: 7,
                rates: rates(pairs),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("create scheme {name}: {status:?}"))
        .into_inner()
        .id
}

/// (partner, kind, level) → amount.
fn lines(entries: &[lpb::Entry]) -> BTreeMap<(String, i32, i32), Decimal> {
    entries.iter().map(|e| ((e.partner_id.clone(), e.kind, e.level), dec(&e.amount.as_ref().unwrap().amount))).collect()
}

fn margin(partner: &str, level: i32, amount: &str) -> ((String, i32, i32), Decimal) {
    ((partner.to_string(), EarningKind::Margin as i32, level), dec(amount))
}

async fn summary(c: &mut Clients, program_id: &str, partner_id: &str) -> lpb::EarningsSummary {
    let mut summaries = c
        .ledger
        .get_earnings_summary(lpb::GetEarningsSummaryRequest {
            program_id: program_id.into(),
            partner_ids: vec![partner_id.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    summaries.remove(0)
}

fn amount_of(money: Option<&Money>) -> Decimal {
    money.map_or(Decimal::ZERO, |m| dec(&m.amount))
}

/// Seed 002: Admin 5% → White Label 4% → Master Distributor 3% → Distributor 2%
/// → Retailer 1%; a Retailer's 100.00 sale pays 1.00 to each of the five, Σ 5.00
/// = the Admin's absolute rate. A sale of another service code in the same
/// program is still paid by the agreement.
#[tokio::test(flavor = "multi_thread")]
async fn seed_002_margin_chain_pays_one_percent_to_each_role_end_to_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let admin = partner(&mut c, &program_id, "ADMIN", "").await;
    let wl = partner(&mut c, &program_id, "WHITE_LABEL", &admin).await;
    let md = partner(&mut c, &program_id, "MASTER_DISTRIBUTOR", &wl).await;
    let d = partner(&mut c, &program_id, "DISTRIBUTOR", &md).await;
    let r = partner(&mut c, &program_id, "RETAILER", &d).await;
    scheme(&mut c, &program_id, "", "SuperAdmin", &SEED_002_ROOT_RATES).await;
    default_agreement(&mut c, &program_id, cpb::AgreementRules { clearance_days: 30, ..percentage_on_payment("0.10") })
        .await;
    link_with_lead(&mut c, &program_id, &r, "cust-1").await;

    let (sale, entries) = record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "100.00", SERVICE, AT)).await;
    assert_eq!(
        lines(&entries),
        BTreeMap::from([
            margin(&r, 0, "1.00"),
            margin(&d, 1, "1.00"),
            margin(&md, 2, "1.00"),
            margin(&wl, 3, "1.00"),
            margin(&admin, 4, "1.00"),
        ])
    );
    assert_eq!(amount_of(sale.base_commission.as_ref()), Decimal::ZERO);
    assert_eq!(amount_of(sale.total_commission.as_ref()), dec("5.00"));
    for entry in &entries {
        let breakdown = entry.breakdown.as_ref().unwrap();
        assert_eq!(breakdown.model, "MARGIN", "{entry:#?}");
        assert!(breakdown.formula.contains("0.01"), "the margin rate is in the formula: {}", breakdown.formula);
        assert_eq!(entry.source_partner_id, r);
        assert_eq!(entry.clears_at.as_ref().unwrap().seconds - entry.occurred_at.as_ref().unwrap().seconds, 7 * 86_400);
    }

    // Another service code: the agreement pays the seller 10% and no margins.
    let (_, entries) = record_and_settle(&mut c, payment(&program_id, "s-2", "cust-1", "200.00", "", AT)).await;
    assert_eq!(lines(&entries), BTreeMap::from([((r.clone(), EarningKind::Direct as i32, 0), dec("20.00"))]));

    let retailer = summary(&mut c, &program_id, &r).await;
    assert_eq!(amount_of(retailer.margin.as_ref()), dec("1.00"));
    assert_eq!(amount_of(retailer.direct.as_ref()), dec("20.00"));
    assert_eq!(amount_of(retailer.total.as_ref()), dec("21.00"));
    for upline in [&d, &md, &wl, &admin] {
        let s = summary(&mut c, &program_id, upline).await;
        assert_eq!(amount_of(s.margin.as_ref()), dec("1.00"));
        assert_eq!(amount_of(s.total.as_ref()), dec("1.00"));
    }

    // A quote of the same sale is exactly what was posted.
    let quote = c
        .commission
        .quote_sale(cpb::QuoteSaleRequest {
            program_id: program_id.clone(),
            sale: Some(cpb::QuoteSaleInput {
                seller_partner_id: r.clone(),
                event_type: types::SaleEventType::Payment as i32,
                amount: Some(gbp("100.00")),
                service_code: SERVICE.into(),
                occurred_at: Some(ts("2024-03-01T12:00:00Z")),
                ..Default::default()
            }),
            draft_rules: None,
        })
        .await
        .unwrap()
        .into_inner();
    let quoted: BTreeMap<_, _> = quote
        .settlement
        .unwrap()
        .lines
        .iter()
        .map(|l| ((l.partner_id.clone(), l.kind, l.level), dec(&l.amount.as_ref().unwrap().amount)))
        .collect();
    assert_eq!(quoted, lines(&entries_of(&mut c, &program_id, &sale.id).await));

    stack.shutdown().await.unwrap();
}

async fn entries_of(c: &mut Clients, program_id: &str, sale_id: &str) -> Vec<lpb::Entry> {
    sale_entries(c, program_id, sale_id).await.unwrap()
}

/// A chain without a Master Distributor, a partner on a child scheme that sets
/// some rates and inherits the rest (NULL) from the root, and an amount whose
/// margins round: Admin → White Label → Distributor → Retailer on 123.45.
#[tokio::test(flavor = "multi_thread")]
async fn margin_chain_skipping_a_role_with_inherited_rates_end_to_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let admin = partner(&mut c, &program_id, "ADMIN", "").await;
    let wl = partner(&mut c, &program_id, "WHITE_LABEL", &admin).await;
    let d = partner(&mut c, &program_id, "DISTRIBUTOR", &wl).await;
    let r = partner(&mut c, &program_id, "RETAILER", &d).await;
    let root = scheme(&mut c, &program_id, "", "SuperAdmin", &SEED_002_ROOT_RATES).await;
    // The child sets only the Distributor's rate; every other role inherits.
    let child = scheme(&mut c, &program_id, &root, "White Label scheme", &[("DISTRIBUTOR", "0.015")]).await;
    c.commission
        .assign_scheme(cpb::AssignSchemeRequest { partner_id: r.clone(), scheme_id: child.clone() })
        .await
        .unwrap();
    link_with_lead(&mut c, &program_id, &r, "cust-2").await;

    let (sale, entries) = record_and_settle(&mut c, payment(&program_id, "s-1", "cust-2", "123.45", SERVICE, AT)).await;
    // abs: ADMIN 0.05 (root), WHITE_LABEL 0.04 (root), DISTRIBUTOR 0.015 (child), RETAILER 0.01 (root).
    // Retailer 123.45 × 0.01 = 1.2345 → 1.23; Distributor × 0.005 = 0.61725 → 0.62;
    // White Label × 0.025 = 3.08625 → 3.09; Admin × 0.01 = 1.2345 → 1.23.
    assert_eq!(
        lines(&entries),
        BTreeMap::from([
            margin(&r, 0, "1.23"),
            margin(&d, 1, "0.62"),
            margin(&wl, 2, "3.09"),
            margin(&admin, 3, "1.23"),
        ])
    );
    assert_eq!(amount_of(sale.total_commission.as_ref()), dec("6.17"));

    // The chain view shows where each effective rate comes from.
    let chain = c
        .commission
        .get_scheme_chain(cpb::GetSchemeChainRequest {
            partner_id: r.clone(),
            scheme_id: String::new(),
            service_code: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = chain.schemes.iter().map(|link| link.scheme.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, vec![child.clone(), root.clone()]);
    let sources: BTreeMap<_, _> = chain.schemes[0]
        .effective_rates
        .iter()
        .map(|rate| (rate.role.clone(), (dec(&rate.rate), rate.source_scheme_id.clone())))
        .collect();
    assert_eq!(sources["DISTRIBUTOR"], (dec("0.015"), child.clone()));
    assert_eq!(sources["RETAILER"], (dec("0.01"), root.clone()));
    assert_eq!(sources["ADMIN"], (dec("0.05"), root.clone()));

    stack.shutdown().await.unwrap();
}

/// Seed 002: Admin cannot initiate transactions — an ADMIN-owned link is
/// refused when it is configured, and a sale attributed to one made before the
/// program barred ADMIN is FAILED_PRECONDITION and records nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_may_not_transact_and_nothing_is_recorded() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let admin = partner(&mut c, &program_id, "ADMIN", "").await;
    let refused = c
        .attribution
        .create_link(apb::CreateLinkRequest {
            program_id: program_id.clone(),
            link: Some(apb::Link { owner_partner_id: admin.clone(), key: "admin".into(), ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .expect_err("an ADMIN may not own a link");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    set_non_transacting_roles(&mut c, &program_id, &[]).await;
    link_with_lead(&mut c, &program_id, &admin, "cust-3").await;
    set_non_transacting_roles(&mut c, &program_id, &["ADMIN"]).await;
    let status = c
        .attribution
        .record_sale(payment(&program_id, "s-admin", "cust-3", "10.00", SERVICE, AT))
        .await
        .expect_err("an ADMIN may not sell");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("ADMIN"), "{status:?}");
    let sales = accrue_e2e::all_sales(&c, &program_id).await.unwrap();
    assert!(sales.is_empty(), "nothing recorded: {sales:#?}");
    stack.shutdown().await.unwrap();
}

/// Issue 8 item 2 end to end: the customer's earlier scheme-managed sale
/// travels from attribution's history with its service code, so the
/// commission service does not count it as the first event under the
/// program's agreement and the later agreement sale still earns the setup fee.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheme_sale_before_an_agreement_sale_leaves_the_setup_fee_due_end_to_end() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let d = partner(&mut c, &program_id, "DISTRIBUTOR", "").await;
    let r = partner(&mut c, &program_id, "RETAILER", &d).await;
    scheme(&mut c, &program_id, "", "SuperAdmin", &SEED_002_ROOT_RATES).await;
    default_agreement(
        &mut c,
        &program_id,
        cpb::AgreementRules { setup_fee: Some(gbp("5.00")), ..percentage_on_payment("0.10") },
    )
    .await;
    link_with_lead(&mut c, &program_id, &r, "cust-9").await;

    let (_, scheme_entries) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-9", "100.00", SERVICE, AT)).await;
    assert!(scheme_entries.iter().all(|entry| entry.kind == EarningKind::Margin as i32), "{scheme_entries:#?}");
    let (sale, entries) =
        record_and_settle(&mut c, payment(&program_id, "s-2", "cust-9", "100.00", "", "2024-03-02T12:00:00Z")).await;
    // 100.00 × 0.10 + setup fee 5.00: the scheme sale fired no agreement.
    assert_eq!(amount_of(sale.total_commission.as_ref()), dec("15.00"), "{entries:#?}");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, EarningKind::Direct as i32);

    stack.shutdown().await.unwrap();
}
