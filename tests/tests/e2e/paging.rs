//! Keyset paging of the attribution service's lists (AIP-158): following
//! `next_page_token` visits every item once, in order, and ends with an empty
//! token. Real services over real gRPC on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{link_with_lead, partner, payment, program, record_and_settle};
use accrue_proto::attribution::v1 as apb;

#[tokio::test(flavor = "multi_thread")]
async fn list_sales_links_and_sagas_page_through_everything_once() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    let mut links = Vec::new();
    for customer in ["c-1", "c-2", "c-3"] {
        links.push(link_with_lead(&mut c, &program_id, &seller, customer).await);
    }
    let mut sales = Vec::new();
    for (i, customer) in ["c-1", "c-2", "c-3", "c-1", "c-2"].iter().enumerate() {
        let at = format!("2024-03-0{}T00:00:00Z", i + 1);
        let (sale, _) =
            record_and_settle(&mut c, payment(&program_id, &format!("s-{i}"), customer, "10.00", "", &at)).await;
        sales.push(sale.id);
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .attribution
            .list_sales(apb::ListSalesRequest {
                program_id: program_id.clone(),
                state: 0,
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.sales.len() <= 2);
        seen.extend(page.sales.into_iter().map(|sale| sale.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut expected = sales.clone();
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "every sale exactly once");

    let mut seen_links = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .attribution
            .list_links(apb::ListLinksRequest {
                program_id: program_id.clone(),
                owner_partner_id: seller.clone(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen_links.extend(page.links.into_iter().map(|link| link.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected_links = links.clone();
    expected_links.sort();
    seen_links.sort();
    assert_eq!(seen_links, expected_links);

    let mut saga_count = 0;
    let mut token = String::new();
    loop {
        let page = c
            .attribution
            .list_sagas(apb::ListSagasRequest {
                program_id: program_id.clone(),
                state: apb::SagaState::Done as i32,
                page_size: 2,
                page_token: token.clone(),
                kind: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        saga_count += page.sagas.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(saga_count, sales.len());

    // A token from one program is refused for another.
    let first = c
        .attribution
        .list_sales(apb::ListSalesRequest {
            program_id: program_id.clone(),
            state: 0,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let other = program(&mut c).await;
    let status = c
        .attribution
        .list_sales(apb::ListSalesRequest {
            program_id: other,
            state: 0,
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("foreign token");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    stack.shutdown().await.unwrap();
}

/// A page token is signed (issue 11 item 2): a caller that rewrites the
/// cursor inside its own token — the right query, an absurd position that
/// Postgres cannot hold — gets INVALID_ARGUMENT on `page_token`, not
/// INTERNAL, in every service's lists.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_page_token_is_invalid_argument() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    for _ in 0..2 {
        partner(&mut c, &program_id, "", "").await;
    }
    let request = |page_token: String| accrue_proto::hierarchy::v1::ListPartnersRequest {
        program_id: program_id.clone(),
        page_size: 1,
        page_token,
        ..Default::default()
    };
    let honest = c.hierarchy.list_partners(request(String::new())).await.unwrap().into_inner().next_page_token;
    let (payload, mac) = honest.split_once('.').expect("payload.mac");
    let mut cursor: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    cursor["c"]["t"] = serde_json::json!("+200000-01-01T00:00:00Z");
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap());
    for forged in [format!("{forged_payload}.{mac}"), forged_payload.clone()] {
        let refused = c.hierarchy.list_partners(request(forged)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert_eq!(refused.message(), "invalid argument: page_token: is not a valid page token");
    }
    // The honest token still pages on.
    let next = c.hierarchy.list_partners(request(honest)).await.unwrap().into_inner();
    assert_eq!(next.partners.len(), 1);
    stack.shutdown().await.unwrap();
}
