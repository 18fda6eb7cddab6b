//! CreateLink's idempotency (AIP-155): a repeated `request_id` with the same
//! body returns the stored link; with another body it is ALREADY_EXISTS
//! REQUEST_ID_REUSED and writes nothing. Real hierarchy and attribution
//! services over real gRPC on a fresh database; no saga workers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use accrue_proto::attribution::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use tonic::Code;
use tonic_types::StatusExt;

use common::start;

#[tokio::test]
async fn a_request_id_reused_for_another_link_is_already_exists() {
    // `h` keeps the services running to the end of the test.
    let h = start().await;
    let (mut hierarchy, mut attribution) = (h.hierarchy.clone(), h.attribution.clone());

    let program_id = h.gbp_program("Links Co").await;
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
    let request = |key: &str| pb::CreateLinkRequest {
        program_id: program_id.clone(),
        link: Some(pb::Link { owner_partner_id: owner.clone(), key: key.into(), ..Default::default() }),
        request_id: "link-1".into(),
    };

    let first = attribution.create_link(request("spring")).await.unwrap().into_inner();
    let again = attribution.create_link(request("spring")).await.unwrap().into_inner();
    assert_eq!(first, again);

    let reused = attribution.create_link(request("autumn")).await.unwrap_err();
    let reason = reused.get_details_error_info().map(|info| info.reason).unwrap_or_default();
    assert_eq!((reused.code(), reason.as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
    let links = attribution
        .list_links(pb::ListLinksRequest { program_id: program_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links, vec![first]);
}
