//! Issue 11 item 3: a RecordSales stream that goes silent is closed by the
//! server after the idle timeout (2 s in this harness) with
//! DEADLINE_EXCEEDED STREAM_IDLE naming what it recorded, and silent
//! streams hold no database connection: with more of them open than the
//! pool has connections, other calls are still served. Real hierarchy and
//! attribution services over real gRPC on a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use accrue_proto::attribution::v1 as pb;
use accrue_proto::types::v1 as types;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

use common::start;

fn sale(program_id: &str, external_id: &str) -> pb::RecordSaleRequest {
    pb::RecordSaleRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: Some(types::Money { currency_code: "GBP".into(), amount: "10.00".into() }),
        occurred_at: Some(prost_types::Timestamp { seconds: 1_704_067_200, nanos: 0 }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_stream_is_closed_with_what_it_recorded_and_holds_no_connection() {
    let h = start().await;
    let attribution = h.attribution.clone();
    let program_id = h.gbp_program("Streams Co").await;

    // More silent streams than the service has pool connections (4).
    let mut open = Vec::new();
    for stream in 0..12 {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let batch = pb::RecordSalesRequest {
            sales: vec![sale(&program_id, &format!("s{stream}-a")), sale(&program_id, &format!("s{stream}-b"))],
        };
        sender.send(batch).await.unwrap();
        let mut client = attribution.clone();
        let started = Instant::now();
        let call =
            tokio::spawn(async move { (client.record_sales(ReceiverStream::new(receiver)).await, started.elapsed()) });
        // The sender stays alive: the stream is open and silent.
        open.push((sender, call));
    }

    // Meanwhile other calls are served at once.
    let mut client = attribution.clone();
    let served = tokio::time::timeout(Duration::from_secs(1), client.record_sale(sale(&program_id, "single"))).await;
    served.expect("a RecordSale is served while the silent streams are open").unwrap();

    for (sender, call) in open {
        let (result, elapsed) = call.await.unwrap();
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "STREAM_IDLE");
        assert_eq!(info.metadata.get("recorded_messages").map(String::as_str), Some("1"));
        assert_eq!(info.metadata.get("recorded_sales").map(String::as_str), Some("2"));
        assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10), "closed after {elapsed:?}");
        drop(sender);
    }
    // What the streams sent before going silent is recorded: 12 × 2 + 1.
    let mut client = attribution.clone();
    let sales = client
        .list_sales(pb::ListSalesRequest { program_id: program_id.clone(), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .sales;
    assert_eq!(sales.len(), 25);
}
