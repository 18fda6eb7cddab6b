//! Seed 002: "Admin & SuperAdmin cannot initiate transactions". A sale whose
//! seller (the link owner it is attributed to) has one of the program's
//! `non_transacting_roles` is FAILED_PRECONDITION ROLE_MAY_NOT_TRANSACT and
//! writes nothing. The real hierarchy and attribution services run in-process
//! on ephemeral ports over a fresh Postgres database; no saga workers run, so
//! a recorded sale stays PENDING with its saga started. A link cannot be
//! configured for such a partner (issue 8 item 4), so the sale-time check is
//! reached when the program bars a role after its links were made
//! (UpdateProgram).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use accrue_proto::attribution::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::types::v1::Money;
use tonic::Code;

use common::{Harness, start};
use tonic_types::StatusExt;

impl Harness {
    /// A GBP program on the default ladder, with its own non-transacting roles when given.
    async fn program(&mut self, non_transacting_roles: &[&str]) -> hpb::Program {
        let program = hpb::Program {
            display_name: "Roles Co".into(),
            default_currency: "GBP".into(),
            non_transacting_roles: non_transacting_roles.iter().map(|role| (*role).to_string()).collect(),
            ..Default::default()
        };
        self.hierarchy
            .create_program(hpb::CreateProgramRequest { program: Some(program), request_id: String::new() })
            .await
            .unwrap()
            .into_inner()
    }

    /// UpdateProgram: from now on exactly `roles` may not transact.
    async fn bar(&mut self, program_id: &str, roles: &[&str]) {
        let program = hpb::Program {
            id: program_id.into(),
            non_transacting_roles: roles.iter().map(|role| (*role).to_string()).collect(),
            ..Default::default()
        };
        let request = hpb::UpdateProgramRequest {
            program: Some(program),
            update_mask: Some(prost_types::FieldMask { paths: vec!["non_transacting_roles".into()] }),
            request_id: String::new(),
        };
        let updated = self.hierarchy.update_program(request).await.unwrap().into_inner();
        assert_eq!(updated.non_transacting_roles, roles);
    }

    async fn partner(&mut self, program_id: &str, role: &str, parent_id: &str) -> String {
        let partner = hpb::Partner {
            display_name: format!("{role} partner"),
            role: role.into(),
            parent_id: parent_id.into(),
            ..Default::default()
        };
        self.hierarchy
            .create_partner(hpb::CreatePartnerRequest {
                program_id: program_id.into(),
                partner: Some(partner),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("create {role} partner: {status:?}"))
            .into_inner()
            .id
    }

    /// A link owned by `owner` and a lead of `customer` on it.
    async fn link_with_lead(&mut self, program_id: &str, owner: &str, key: &str, customer: &str) -> String {
        let link = self
            .attribution
            .create_link(pb::CreateLinkRequest {
                program_id: program_id.into(),
                link: Some(pb::Link { owner_partner_id: owner.into(), key: key.into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("create link {key}: {status:?}"))
            .into_inner();
        self.attribution
            .track_lead(pb::TrackLeadRequest {
                program_id: program_id.into(),
                link_id: link.id.clone(),
                customer_external_id: customer.into(),
                occurred_at: None,
            })
            .await
            .unwrap();
        link.id
    }

    async fn sales(&mut self, program_id: &str) -> Vec<pb::Sale> {
        self.attribution
            .list_sales(pb::ListSalesRequest { program_id: program_id.into(), page_size: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .sales
    }

    async fn saga_count(&mut self, program_id: &str) -> i64 {
        self.attribution
            .list_sagas(pb::ListSagasRequest { program_id: program_id.into(), page_size: 1, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .total_size
    }
}

fn sale(program_id: &str, external_id: &str, customer: &str) -> pb::RecordSaleRequest {
    pb::RecordSaleRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        customer_external_id: customer.into(),
        event_type: 0,
        amount: Some(Money { currency_code: "GBP".into(), amount: "100.00".into() }),
        product_code: "85123A".into(),
        service_code: String::new(),
        occurred_at: Some(prost_types::Timestamp { seconds: 1_300_000_000, nanos: 0 }),
    }
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn admin_owned_link_cannot_record_a_sale_and_nothing_is_written() {
    let mut h = start().await;
    let program = h.program(&[]).await;
    assert_eq!(program.non_transacting_roles, vec!["ADMIN"], "the seed 002 default");
    let admin = h.partner(&program.id, "ADMIN", "").await;
    let retailer = h.partner(&program.id, "RETAILER", &admin).await;
    h.bar(&program.id, &[]).await;
    h.link_with_lead(&program.id, &admin, "admin-link", "cust-admin").await;
    h.link_with_lead(&program.id, &retailer, "retailer-link", "cust-retail").await;
    h.bar(&program.id, &["ADMIN"]).await;

    let status = h.attribution.record_sale(sale(&program.id, "inv-1", "cust-admin")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), "ROLE_MAY_NOT_TRANSACT");
    assert!(status.message().contains(&admin), "names the partner: {}", status.message());
    assert!(status.message().contains("ADMIN"), "names the role: {}", status.message());
    assert!(h.sales(&program.id).await.is_empty(), "the rejected sale was not recorded");
    assert_eq!(h.saga_count(&program.id).await, 0, "no saga was started");

    // Asking again gives the same answer (nothing was half-written).
    let again = h.attribution.record_sale(sale(&program.id, "inv-1", "cust-admin")).await.unwrap_err();
    assert_eq!(reason(&again), "ROLE_MAY_NOT_TRANSACT");

    // A RETAILER-owned link still records, and its saga starts.
    let recorded = h.attribution.record_sale(sale(&program.id, "inv-2", "cust-retail")).await.unwrap().into_inner();
    assert_eq!(recorded.partner_id, retailer);
    assert_eq!(recorded.state, pb::SaleState::Pending as i32);
    assert!(!recorded.saga_id.is_empty());
    let fetched = h.attribution.get_sale(pb::GetSaleRequest { id: recorded.id.clone() }).await.unwrap().into_inner();
    assert_eq!(fetched, recorded);
    // An unattributed sale has no seller to bar.
    let unattributed = h.attribution.record_sale(sale(&program.id, "inv-3", "")).await.unwrap().into_inner();
    assert_eq!(unattributed.state, pb::SaleState::Unattributed as i32);

    let external: Vec<String> = h.sales(&program.id).await.into_iter().map(|s| s.external_id).collect();
    assert_eq!(external.len(), 2);
    assert!(!external.contains(&"inv-1".to_string()), "{external:?}");
    assert_eq!(h.saga_count(&program.id).await, 1);
}

#[tokio::test]
async fn record_sales_fails_the_message_naming_the_barred_item_and_keeps_earlier_messages() {
    let mut h = start().await;
    let program = h.program(&[]).await;
    let admin = h.partner(&program.id, "ADMIN", "").await;
    let retailer = h.partner(&program.id, "RETAILER", &admin).await;
    h.bar(&program.id, &[]).await;
    h.link_with_lead(&program.id, &admin, "admin-link", "cust-admin").await;
    h.link_with_lead(&program.id, &retailer, "retailer-link", "cust-retail").await;
    h.bar(&program.id, &["ADMIN"]).await;

    let messages = vec![
        pb::RecordSalesRequest { sales: vec![sale(&program.id, "inv-1", "cust-retail")] },
        pb::RecordSalesRequest {
            sales: vec![
                sale(&program.id, "inv-2", "cust-retail"),
                sale(&program.id, "inv-3", ""),
                sale(&program.id, "inv-4", "cust-admin"),
            ],
        },
    ];
    let status = h.attribution.record_sales(futures::stream::iter(messages)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), "ROLE_MAY_NOT_TRANSACT");
    // The item inside its message, and the message's position in the stream (issue 8 item 4).
    assert!(status.message().starts_with("sales[2] (stream message 1): "), "names the item: {}", status.message());
    assert!(status.message().contains("inv-4") && status.message().contains(&admin), "{}", status.message());

    // The first message stands; nothing of the second was written.
    let external: Vec<String> = h.sales(&program.id).await.into_iter().map(|s| s.external_id).collect();
    assert_eq!(external, vec!["inv-1"]);
    assert_eq!(h.saga_count(&program.id).await, 1);

    // Without the barred sale the same batch records in full.
    let messages = vec![pb::RecordSalesRequest {
        sales: vec![sale(&program.id, "inv-2", "cust-retail"), sale(&program.id, "inv-3", "")],
    }];
    let recorded = h.attribution.record_sales(futures::stream::iter(messages)).await.unwrap().into_inner();
    assert_eq!(recorded.sales.len(), 2);
    assert_eq!(recorded.sales[0].partner_id, retailer);
    assert_eq!(h.sales(&program.id).await.len(), 3);
}

#[tokio::test]
async fn custom_non_transacting_roles_bar_their_partners_only() {
    let mut h = start().await;
    let program = h.program(&["WHITE_LABEL", "DISTRIBUTOR"]).await;
    assert_eq!(program.non_transacting_roles, vec!["WHITE_LABEL", "DISTRIBUTOR"]);
    let admin = h.partner(&program.id, "ADMIN", "").await;
    let white_label = h.partner(&program.id, "WHITE_LABEL", &admin).await;
    let distributor = h.partner(&program.id, "DISTRIBUTOR", &white_label).await;
    let retailer = h.partner(&program.id, "RETAILER", &distributor).await;
    h.bar(&program.id, &[]).await;
    h.link_with_lead(&program.id, &admin, "admin", "cust-admin").await;
    h.link_with_lead(&program.id, &white_label, "white-label", "cust-wl").await;
    h.link_with_lead(&program.id, &distributor, "distributor", "cust-dist").await;
    h.link_with_lead(&program.id, &retailer, "retailer", "cust-retail").await;
    h.bar(&program.id, &["WHITE_LABEL", "DISTRIBUTOR"]).await;

    for (customer, partner, role) in
        [("cust-wl", &white_label, "WHITE_LABEL"), ("cust-dist", &distributor, "DISTRIBUTOR")]
    {
        let status =
            h.attribution.record_sale(sale(&program.id, &format!("inv-{customer}"), customer)).await.unwrap_err();
        assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "ROLE_MAY_NOT_TRANSACT"));
        assert!(status.message().contains(partner.as_str()) && status.message().contains(role), "{}", status.message());
    }
    assert!(h.sales(&program.id).await.is_empty());

    // The custom list replaces the default: ADMIN may sell here, as may RETAILER.
    let by_admin = h.attribution.record_sale(sale(&program.id, "inv-admin", "cust-admin")).await.unwrap().into_inner();
    assert_eq!(by_admin.partner_id, admin);
    let by_retailer =
        h.attribution.record_sale(sale(&program.id, "inv-retail", "cust-retail")).await.unwrap().into_inner();
    assert_eq!(by_retailer.partner_id, retailer);
    assert_eq!(h.sales(&program.id).await.len(), 2);
    assert_eq!(h.saga_count(&program.id).await, 2);
}

#[tokio::test]
async fn a_link_for_a_partner_who_may_not_transact_is_refused_when_configured() {
    let mut h = start().await;
    let program = h.program(&[]).await;
    let admin = h.partner(&program.id, "ADMIN", "").await;
    let retailer = h.partner(&program.id, "RETAILER", &admin).await;
    let create = |owner: &str, split: Option<&str>, key: &str| pb::CreateLinkRequest {
        program_id: program.id.clone(),
        link: Some(pb::Link {
            owner_partner_id: owner.into(),
            key: key.into(),
            splits: split
                .map(|partner| vec![pb::LinkSplit { partner_id: partner.into(), basis_points: 1000 }])
                .unwrap_or_default(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    // As owner and as split partner: the link's sales could never be recorded.
    for (request, who) in
        [(create(&admin, None, "admin-owned"), "owner"), (create(&retailer, Some(&admin), "admin-split"), "split")]
    {
        let status = h.attribution.create_link(request).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::FailedPrecondition, "ROLE_MAY_NOT_TRANSACT"),
            "{who}: {status:?}"
        );
        assert!(status.message().contains(&admin) && status.message().contains("ADMIN"), "{}", status.message());
    }
    let links = h
        .attribution
        .list_links(pb::ListLinksRequest { program_id: program.id.clone(), page_size: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert!(links.is_empty(), "nothing was written: {links:?}");
    // Once the program bars nobody, the same link is accepted.
    h.bar(&program.id, &[]).await;
    h.attribution.create_link(create(&admin, None, "admin-owned")).await.unwrap();
}
