//! Issue 11 item 2 regressions: a sale, lead or refund time outside its
//! window (before 1970, beyond now + the 24 h skew, outside
//! google.protobuf.Timestamp's range) is INVALID_ARGUMENT naming the field,
//! and a sale into a program that does not exist is NOT_FOUND — each writes
//! nothing. Real hierarchy and attribution services over real gRPC on a
//! fresh database; no saga workers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use accrue_proto::attribution::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::types::v1 as types;
use chrono::{Duration, Utc};
use tonic::Code;
use tonic_types::StatusExt;

use common::start;

fn at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn sale(program_id: &str, external_id: &str, occurred_at: prost_types::Timestamp) -> pb::RecordSaleRequest {
    pb::RecordSaleRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        customer_external_id: "cust-1".into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(types::Money { currency_code: "GBP".into(), amount: "10.00".into() }),
        occurred_at: Some(occurred_at),
        ..Default::default()
    }
}

/// The fields a refusal's BadRequest names.
fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn event_times_outside_their_window_and_unknown_programs_are_refused() {
    let h = start().await;
    let (mut hierarchy, mut attribution) = (h.hierarchy.clone(), h.attribution.clone());
    let program_id = h.gbp_program("Times Co").await;
    let owner = hierarchy
        .create_partner(hpb::CreatePartnerRequest {
            program_id: program_id.clone(),
            partner: Some(hpb::Partner { display_name: "Owner".into(), ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let link = attribution
        .create_link(pb::CreateLinkRequest {
            program_id: program_id.clone(),
            link: Some(pb::Link { owner_partner_id: owner, key: "times".into(), ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let now = Utc::now();
    let refused_times = [
        ("1 BC", at(-62_135_596_801)),
        ("year 10000", at(253_402_300_800)),
        ("1969", at(-1)),
        ("beyond the 24 h skew", at((now + Duration::hours(25)).timestamp())),
    ];
    for (what, time) in &refused_times {
        let refused = attribution.record_sale(sale(&program_id, "s-bad", *time)).await.unwrap_err();
        assert_eq!((refused.code(), fields(&refused)), (Code::InvalidArgument, vec!["occurred_at".into()]), "{what}");
        let lead = pb::TrackLeadRequest {
            program_id: program_id.clone(),
            link_id: link.id.clone(),
            customer_external_id: "cust-1".into(),
            occurred_at: Some(*time),
        };
        let refused = attribution.track_lead(lead).await.unwrap_err();
        assert_eq!((refused.code(), fields(&refused)), (Code::InvalidArgument, vec!["occurred_at".into()]), "{what}");
        // A stream names the sale and its message.
        let batch = pb::RecordSalesRequest {
            sales: vec![sale(&program_id, "s-ok", at(now.timestamp())), sale(&program_id, "s-bad", *time)],
        };
        let refused = attribution.record_sales(futures::stream::iter(vec![batch])).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}");
        assert!(refused.message().contains("sales[1].occurred_at"), "{what}: {}", refused.message());
    }
    let listed = attribution
        .list_sales(pb::ListSalesRequest { program_id: program_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .sales;
    assert!(listed.is_empty(), "refused sales wrote nothing: {listed:#?}");

    // Inside the window: just now, within the skew, the epoch itself.
    let recorded = attribution.record_sale(sale(&program_id, "s-1", at((now + Duration::hours(23)).timestamp()))).await;
    recorded.unwrap();
    attribution.record_sale(sale(&program_id, "s-2", at(0))).await.unwrap();

    // A refund in the future is refused as well.
    let refund = pb::RecordRefundRequest {
        program_id: program_id.clone(),
        external_id: "r-1".into(),
        sale: Some(pb::record_refund_request::Sale::SaleExternalId("s-2".into())),
        amount: Some(types::Money { currency_code: "GBP".into(), amount: "1.00".into() }),
        occurred_at: Some(at((now + Duration::days(3)).timestamp())),
        ..Default::default()
    };
    let refused = attribution.record_refund(refund).await.unwrap_err();
    assert_eq!((refused.code(), fields(&refused)), (Code::InvalidArgument, vec!["occurred_at".into()]));

    // A program that does not exist: NOT_FOUND, nothing recorded (the sale
    // has no lead, so no seller is looked up — the program still is).
    let missing = uuid::Uuid::now_v7().to_string();
    let refused = attribution.record_sale(sale(&missing, "s-9", at(now.timestamp()))).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert_eq!(refused.message(), format!("program {missing} not found"));
    let batch = pb::RecordSalesRequest { sales: vec![sale(&missing, "s-10", at(now.timestamp()))] };
    let refused = attribution.record_sales(futures::stream::iter(vec![batch])).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sales WHERE program_id = $1")
        .bind(missing.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&h.services.pool::<accrue_attribution::Attribution>())
        .await
        .unwrap();
    assert_eq!(count, 0);
}
