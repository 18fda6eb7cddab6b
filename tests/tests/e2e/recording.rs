//! Unary RecordSale calls that arrive together are recorded together (issue
//! 15: attribution's group commit), yet each caller gets the answer it would
//! have had alone: a gathered batch holding one conflicting body or one
//! seller that may not transact is recorded again call by call, so only the
//! calls at fault fail and every other sale is recorded once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{link_with_lead, partner, payment, program, set_non_transacting_roles};
use tonic::Code;

const AT: &str = "2024-03-01T12:00:00Z";

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_record_sale_calls_fail_only_where_they_would_alone() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c).await;
    let retailer = partner(&mut c, &program_id, "RETAILER", "").await;
    let admin = partner(&mut c, &program_id, "ADMIN", "").await;
    link_with_lead(&mut c, &program_id, &retailer, "cust-r").await;
    set_non_transacting_roles(&mut c, &program_id, &[]).await;
    link_with_lead(&mut c, &program_id, &admin, "cust-a").await;
    set_non_transacting_roles(&mut c, &program_id, &["ADMIN"]).await;

    // 300 good sales; one of them sent twice with the same body (the same
    // sale back), one external id sent with two bodies (one wins), and 3
    // sales by the ADMIN's customer (refused) — all at once.
    let mut requests = Vec::new();
    for i in 0..300 {
        requests.push(("good", payment(&program_id, &format!("s-{i}"), "cust-r", "10.00", "", AT)));
    }
    requests.push(("same", payment(&program_id, "s-7", "cust-r", "10.00", "", AT)));
    requests.push(("conflict", payment(&program_id, "s-x", "cust-r", "11.00", "", AT)));
    requests.push(("conflict", payment(&program_id, "s-x", "cust-r", "12.00", "", AT)));
    for i in 0..3 {
        requests.push(("barred", payment(&program_id, &format!("a-{i}"), "cust-a", "10.00", "", AT)));
    }
    let mut calls = tokio::task::JoinSet::new();
    for (what, request) in requests {
        let mut client = c.attribution.clone();
        calls.spawn(async move { (what, request.external_id.clone(), client.record_sale(request).await) });
    }
    let (mut good, mut conflicts_won, mut conflicts_refused, mut barred) = (0, 0, 0, 0);
    let mut s7_ids = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (what, external_id, outcome) = done.unwrap();
        match (what, outcome) {
            ("good" | "same", Ok(sale)) => {
                good += 1;
                assert_eq!(sale.get_ref().external_id, external_id);
                if external_id == "s-7" {
                    s7_ids.push(sale.into_inner().id);
                }
            }
            ("conflict", Ok(_)) => conflicts_won += 1,
            ("conflict", Err(status)) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                conflicts_refused += 1;
            }
            ("barred", Err(status)) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(status.message().contains("ADMIN"), "{status:?}");
                barred += 1;
            }
            (what, outcome) => panic!("{what} {external_id}: {outcome:?}"),
        }
    }
    assert_eq!((good, conflicts_won, conflicts_refused, barred), (301, 1, 1, 3));
    assert_eq!(s7_ids.len(), 2);
    assert_eq!(s7_ids[0], s7_ids[1], "the same sale sent twice is one sale");

    let sales = accrue_e2e::all_sales(&c, &program_id).await.unwrap();
    let mut external_ids: Vec<&str> = sales.iter().map(|sale| sale.external_id.as_str()).collect();
    external_ids.sort_unstable();
    let mut expected: Vec<String> = (0..300).map(|i| format!("s-{i}")).collect();
    expected.push("s-x".into());
    expected.sort_unstable();
    assert_eq!(external_ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    stack.shutdown().await.unwrap();
}
