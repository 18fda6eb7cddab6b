//! A bulk ingest costs a few peer round trips per saga batch, not per sale
//! (DESIGN §3): 1,000 sales through the five real services, counted by the RPC
//! metrics every server records (`accrue_rpc_requests_total`) and the saga
//! engine's batch counter (`accrue_saga_batches_total`).
//!
//! Its own test binary: the metrics recorder is process-global, so no other
//! test may run beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{
    dec, default_agreement, override_plan, partner, payment, percentage_on_payment, program, split_link_with_lead, ts,
};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rust_decimal::Decimal;

const SALES: usize = 1_000;
const CUSTOMERS: usize = 200;

/// Counter values by (name, service, method) since the last snapshot —
/// labels missing from a metric are empty.
fn counters(snapshotter: &Snapshotter) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(count) = value else { continue };
        let key = key.key();
        let label =
            |name: &str| key.labels().find(|l| l.key() == name).map(|l| l.value().to_string()).unwrap_or_default();
        let service = if key.name() == "accrue_saga_batches_total" { label("kind") } else { label("service") };
        *out.entry((key.name().to_string(), service, label("method"))).or_default() += count;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulk_ingest_costs_one_peer_call_per_step_per_batch() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder in this process");

    let env = TestStack::start().await.unwrap();
    let mut c = env.clients.clone();
    let program_id = program(&mut c).await;
    let parent = partner(&mut c, &program_id, "", "").await;
    let seller = partner(&mut c, &program_id, "", &parent).await;
    let split = partner(&mut c, &program_id, "", "").await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    override_plan(&mut c, &program_id, cpb::OverrideBasis::BaseCommission, &["0.10"]).await;
    let link = split_link_with_lead(&mut c, &program_id, &seller, &[(&split, 2000)], "bulk-cust-0").await;
    for k in 1..CUSTOMERS {
        c.attribution
            .track_lead(apb::TrackLeadRequest {
                program_id: program_id.clone(),
                link_id: link.clone(),
                customer_external_id: format!("bulk-cust-{k}"),
                occurred_at: Some(ts("2024-01-01T00:00:00Z")),
            })
            .await
            .unwrap();
    }
    // A snapshot drains the counters (metrics-util's DebuggingRecorder swaps
    // them to zero), so this one clears the set-up's calls and the next
    // holds the bulk ingest's alone.
    counters(&snapshotter);

    let sales: Vec<apb::RecordSaleRequest> = (0..SALES)
        .map(|i| apb::RecordSaleRequest {
            occurred_at: Some(prost_types::Timestamp { seconds: 1_709_294_400 + i as i64, nanos: 0 }),
            ..payment(
                &program_id,
                &format!("bulk-{i}"),
                &format!("bulk-cust-{}", i % CUSTOMERS),
                "100.00",
                "",
                "2024-03-01T12:00:00Z",
            )
        })
        .collect();
    let started = Instant::now();
    let recorded =
        c.attribution.record_sales(futures::stream::iter(vec![apb::RecordSalesRequest { sales }])).await.unwrap();
    assert_eq!(recorded.into_inner().sales.len(), SALES);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let settled = c
            .attribution
            .list_sales(apb::ListSalesRequest {
                program_id: program_id.clone(),
                state: apb::SaleState::Settled as i32,
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .total_size;
        if settled == SALES as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {settled} of {SALES} settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();

    // Every sale settled in full: 10.00 base (8.00 owner + 2.00 split) and a 1.00 override.
    let summary = c
        .ledger
        .get_earnings_summary(lpb::GetEarningsSummaryRequest {
            program_id: program_id.clone(),
            partner_ids: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let total: Decimal = summary.summaries.iter().map(|s| dec(&s.total.as_ref().unwrap().amount)).sum();
    assert_eq!(total, dec("11000.00"));

    let during = counters(&snapshotter);
    let delta = |name: &str, service: &str, method: &str| {
        during.get(&(name.to_string(), service.to_string(), method.to_string())).copied().unwrap_or(0)
    };
    let rpc = |service: &str, method: &str| delta("accrue_rpc_requests_total", service, method);
    let batches = delta("accrue_saga_batches_total", "SETTLE_SALE", "");
    let uplines = rpc("hierarchy", "GetUplines");
    let computes = rpc("commission", "ComputeSettlements");
    let posts = rpc("ledger", "PostEntries");
    eprintln!(
        "{SALES} sales settled in {elapsed:?}: {batches} saga batches; GetUplines {uplines}, \
         ComputeSettlements {computes}, PostEntries {posts}"
    );
    // Sagas are claimed 500 at a time: at least two batches, and a handful at most.
    assert!((2..=6).contains(&batches), "{batches} batches for {SALES} sales");
    // One call per step per batch (each batch's ids fit one call); RecordSales
    // also reads the program's non-transacting roles once per call and may
    // ask for the sellers' roles once per stream message (only sellers the
    // process has not looked up before), and the ledger asks once for the
    // partners it has not confirmed yet (both remember them for the life of
    // the process).
    assert!((1..=batches).contains(&computes), "ComputeSettlements {computes} for {batches} batches");
    assert!((1..=batches).contains(&posts), "PostEntries {posts} for {batches} batches");
    assert!((1..=batches + 3).contains(&uplines), "GetUplines {uplines} for {batches} batches");
    env.shutdown().await.unwrap();
}
