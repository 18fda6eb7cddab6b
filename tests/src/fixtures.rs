//! Set-up steps the end-to-end tests share: a GBP program, partners with
//! roles, a link with a lead, and "record a sale and wait until it settles".
//! A failed set-up call is a failed test, so these panic with the status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use accrue_proto::types::v1::Money;
use rust_decimal::Decimal;

use crate::{Clients, sale_entries, wait_saga};

/// GBP money.
pub fn gbp(amount: &str) -> Money {
    Money { currency_code: "GBP".into(), amount: amount.into() }
}

/// An exact decimal.
pub fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// An RFC 3339 time as a protobuf timestamp (whole seconds).
pub fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

/// Creates a GBP program with the default role ladder; returns its id.
pub async fn program(c: &mut Clients) -> String {
    program_with(c, |_| {}).await
}

/// Creates a GBP program "E2E Co" with the settings `change` makes (e.g.
/// compression, auto-approval) from its creation on; returns its id.
pub async fn program_with(c: &mut Clients, change: impl FnOnce(&mut hpb::Program)) -> String {
    let mut program =
        hpb::Program { display_name: "E2E Co".into(), default_currency: "GBP".into(), ..Default::default() };
    change(&mut program);
    c.hierarchy
        .create_program(hpb::CreateProgramRequest { program: Some(program), request_id: String::new() })
        .await
        .expect("create program")
        .into_inner()
        .id
}

/// UpdateProgram: from now on exactly `roles` may not transact in the program.
pub async fn set_non_transacting_roles(c: &mut Clients, program_id: &str, roles: &[&str]) {
    let request = hpb::UpdateProgramRequest {
        program: Some(hpb::Program {
            id: program_id.into(),
            non_transacting_roles: roles.iter().map(|role| (*role).to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["non_transacting_roles".into()] }),
        request_id: String::new(),
    };
    c.hierarchy.update_program(request).await.expect("update program");
}

/// Creates a partner with `role` (may be empty) under `parent` (empty: a root); returns its id.
pub async fn partner(c: &mut Clients, program_id: &str, role: &str, parent: &str) -> String {
    c.hierarchy
        .create_partner(hpb::CreatePartnerRequest {
            program_id: program_id.into(),
            partner: Some(hpb::Partner {
                display_name: format!("{role} partner"),
                role: role.into(),
                parent_id: parent.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("create {role} partner: {status:?}"))
        .into_inner()
        .id
}

/// A link owned by `owner` with customer `customer` as its lead (2024-01-01); returns the link id.
pub async fn link_with_lead(c: &mut Clients, program_id: &str, owner: &str, customer: &str) -> String {
    split_link_with_lead(c, program_id, owner, &[], customer).await
}

/// A link owned by `owner` with `splits` (partner, basis points) and customer
/// `customer` as its lead (2024-01-01); returns the link id.
pub async fn split_link_with_lead(
    c: &mut Clients,
    program_id: &str,
    owner: &str,
    splits: &[(&str, i32)],
    customer: &str,
) -> String {
    let link = c
        .attribution
        .create_link(apb::CreateLinkRequest {
            program_id: program_id.into(),
            link: Some(apb::Link {
                owner_partner_id: owner.into(),
                key: format!("link-{customer}"),
                destination_url: "https://example.com/landing".into(),
                splits: splits
                    .iter()
                    .map(|(partner, points)| apb::LinkSplit { partner_id: (*partner).into(), basis_points: *points })
                    .collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create link")
        .into_inner();
    c.attribution
        .track_lead(apb::TrackLeadRequest {
            program_id: program_id.into(),
            link_id: link.id.clone(),
            customer_external_id: customer.into(),
            occurred_at: Some(ts("2024-01-01T00:00:00Z")),
        })
        .await
        .expect("track lead");
    link.id
}

/// A PAYMENT of `amount` GBP by `customer` at `occurred_at` for `service`.
pub fn payment(
    program_id: &str,
    external_id: &str,
    customer: &str,
    amount: &str,
    service: &str,
    occurred_at: &str,
) -> apb::RecordSaleRequest {
    apb::RecordSaleRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        customer_external_id: customer.into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(gbp(amount)),
        product_code: String::new(),
        service_code: service.into(),
        occurred_at: Some(ts(occurred_at)),
    }
}

/// Records a sale, waits for its saga to finish DONE, and returns the SETTLED
/// sale with its ledger entries.
pub async fn record_and_settle(c: &mut Clients, request: apb::RecordSaleRequest) -> (apb::Sale, Vec<lpb::Entry>) {
    let program_id = request.program_id.clone();
    let sale = c.attribution.record_sale(request).await.expect("record sale").into_inner();
    let saga = wait_saga(c, &sale.saga_id).await.unwrap();
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let sale = c.attribution.get_sale(apb::GetSaleRequest { id: sale.id.clone() }).await.unwrap().into_inner();
    assert_eq!(sale.state, apb::SaleState::Settled as i32, "{sale:#?}");
    let entries = sale_entries(c, &program_id, &sale.id).await.unwrap();
    (sale, entries)
}

/// PERCENTAGE `rate` (0.10 = 10 %) ON_PAYMENT, the rest unset (clears at once).
pub fn percentage_on_payment(rate: &str) -> cpb::AgreementRules {
    cpb::AgreementRules {
        model: cpb::CommissionModel::Percentage as i32,
        trigger: cpb::CommissionTrigger::OnPayment as i32,
        rate: rate.into(),
        ..Default::default()
    }
}

/// The program default agreement with `rules`, in force since 2020.
pub async fn default_agreement(c: &mut Clients, program_id: &str, rules: cpb::AgreementRules) {
    c.commission
        .create_agreement(cpb::CreateAgreementRequest {
            program_id: program_id.into(),
            partner_id: String::new(),
            effective_from: Some(ts("2020-01-01T00:00:00Z")),
            rules: Some(rules),
            request_id: String::new(),
        })
        .await
        .expect("create the default agreement");
}

/// The program-wide PERCENTAGE override plan: `rates[i]` for level i + 1, on `basis`.
pub async fn override_plan(c: &mut Clients, program_id: &str, basis: cpb::OverrideBasis, rates: &[&str]) {
    c.commission
        .set_override_plan(cpb::SetOverridePlanRequest {
            plan: Some(cpb::OverridePlan {
                program_id: program_id.into(),
                partner_id: String::new(),
                mode: cpb::OverrideMode::Percentage as i32,
                basis: basis as i32,
                rates_by_level: rates
                    .iter()
                    .map(|rate| cpb::OverrideLevel { rate: (*rate).into(), flat_amount: None })
                    .collect(),
                update_time: None,
                qualification: None,
            }),
            request_id: String::new(),
        })
        .await
        .expect("set the override plan");
}
