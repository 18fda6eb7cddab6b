//! Observability end to end (issue 13; DESIGN §6): the five real services
//! over real gRPC and Postgres, with tracing exported to the OpenTelemetry
//! SDK's in-memory exporter and Prometheus metrics served over HTTP.
//!
//! - One sale is one trace: the caller's trace crosses every gRPC call
//!   (`traceparent` metadata), and the saga steps a worker runs later join
//!   it through the trace context stored on the saga row.
//! - Every service's metrics port answers with the series of the RPCs,
//!   sagas, ledger, payouts and pools, labelled by service.
//!
//! Its own test binary: the tracing subscriber and the metrics recorder are
//! process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use accrue_cli::stack::Ports;
use accrue_e2e::TestStack;
use accrue_e2e::fixtures::{default_agreement, gbp, link_with_lead, partner, payment, percentage_on_payment, ts};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

/// The value of attribute `key` of `span`, as text.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| match &kv.value {
        Value::String(text) => text.to_string(),
        other => other.to_string(),
    })
}

/// GET `url` (`http://host:port/metrics`) over a plain TCP connection;
/// returns the status line and the body.
async fn get(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of the sample of `name` carrying every label of `labels`
/// (`service="ledger"`), summed over the other labels; None when absent.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some(rest) = rest.strip_prefix('{') else { continue };
        let Some((set, value)) = rest.split_once("} ") else { continue };
        let set: Vec<&str> = set.split(',').collect();
        if labels.iter().all(|label| set.contains(label)) {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().unwrap();
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sale_is_one_trace_across_five_services_and_every_series_is_scraped() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let telemetry = accrue_kit::telemetry::init_with_provider("warn", provider);
    assert!(telemetry.is_tracing(), "the only subscriber in this process");

    let env = TestStack::start_with(|config| config.metrics_ports = Some(Ports::ephemeral())).await.unwrap();
    let mut c = env.clients.clone();
    // Cleared entries approved automatically, so that the run pays them.
    let program_id = c
        .hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Observed Co".into(),
                default_currency: "GBP".into(),
                auto_approve_cleared: true,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let seller = partner(&mut c, &program_id, "", "").await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    link_with_lead(&mut c, &program_id, &seller, "obs-cust").await;

    // The caller's operation: record a sale, see it settle, pay it out.
    let root = tracing::info_span!(target: "accrue_e2e", "sale to payout");
    let trace_id = accrue_kit::telemetry::propagation::trace_id(&root).expect("the root span is traced");
    let sale = async {
        let sale = c
            .attribution
            .record_sale(payment(&program_id, "obs-1", "obs-cust", "250.00", "", "2024-03-01T12:00:00Z"))
            .await
            .unwrap()
            .into_inner();
        let saga = accrue_e2e::wait_saga(&c, &sale.saga_id).await.unwrap();
        assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
        c.ledger
            .clear_matured(lpb::ClearMaturedRequest {
                program_id: program_id.clone(),
                as_of: Some(ts("2024-03-31T23:59:59Z")),
            })
            .await
            .unwrap();
        let run = c
            .payouts
            .create_payout_run(ppb::CreatePayoutRunRequest {
                program_id: program_id.clone(),
                currency_code: "GBP".into(),
                period: "2024-03".into(),
                cutoff: Some(ts("2024-03-31T23:59:59Z")),
                minimum_amount: Some(gbp("1.00")),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(run.payout_count, 1, "{run:#?}");
        sale
    }
    .instrument(root.clone())
    .await;
    drop(root);

    // Server spans end when their response body is done: give the last
    // ones a moment.
    let services: BTreeSet<String> =
        ["attribution", "commission", "hierarchy", "ledger", "payouts"].map(String::from).into_iter().collect();
    let mut traced = Vec::new();
    for _ in 0..50 {
        traced = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| span.span_context.trace_id().to_string() == trace_id)
            .collect();
        let seen: BTreeSet<String> = traced.iter().filter_map(|span| attribute(span, "accrue.service")).collect();
        if seen == services && traced.iter().any(|span| span.name == "sale to payout") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: BTreeSet<String> = traced.iter().filter_map(|span| attribute(span, "accrue.service")).collect();
    assert_eq!(seen, services, "services in trace {trace_id}");

    // The worker's steps, run after RecordSale answered, are in the trace,
    // and the peer calls they made are their children.
    let by_id: HashMap<_, _> = traced.iter().map(|span| (span.span_context.span_id(), span)).collect();
    let steps: BTreeSet<String> = traced
        .iter()
        .filter(|span| attribute(span, "saga.kind").as_deref() == Some("SETTLE_SALE"))
        .filter(|span| attribute(span, "saga.id").as_deref() == Some(sale.saga_id.as_str()))
        .filter_map(|span| attribute(span, "saga.step"))
        .collect();
    assert_eq!(steps, ["compute", "post", "resolve", "upline"].map(String::from).into_iter().collect());
    let post_entries = traced
        .iter()
        .find(|span| span.name == "accrue.ledger.v1.LedgerService/PostEntries")
        .expect("PostEntries is in the sale's trace");
    let parent = by_id.get(&post_entries.parent_span_id).expect("its parent is in the trace too");
    assert_eq!(attribute(parent, "saga.step").as_deref(), Some("post"), "{parent:#?}");
    assert_eq!(attribute(post_entries, "rpc.grpc.status_code").as_deref(), Some("0"));
    let record_sale =
        traced.iter().find(|span| span.name == "accrue.attribution.v1.AttributionService/RecordSale").unwrap();
    assert_eq!(attribute(record_sale, "rpc.method").as_deref(), Some("RecordSale"));

    // A refund, clawed back by the ledger.
    let refund = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            program_id: program_id.clone(),
            external_id: "obs-refund-1".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(sale.id.clone())),
            amount: Some(gbp("50.00")),
            occurred_at: Some(ts("2024-03-02T12:00:00Z")),
            reason: "returned goods".into(),
        })
        .await
        .unwrap()
        .into_inner();

    // Metrics: every port serves the process's registry (one process, five
    // services), each series labelled with its service.
    let metrics = env.stack.metrics.clone().expect("metrics were asked for");
    let mut body = String::new();
    for _ in 0..100 {
        let (status, text) = get(&metrics.ledger).await;
        assert!(status.contains("200"), "{status}");
        body = text;
        let clawed = sample(&body, "accrue_clawbacks_total", &["service=\"ledger\""]).unwrap_or(0.0);
        let pooled = sample(&body, "accrue_db_pool_connections", &["service=\"payouts\""]).is_some();
        if clawed >= 1.0 && pooled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expect = |name: &str, labels: &[&str]| {
        let value = sample(&body, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{body}"));
        assert!(value >= 1.0, "{name}{labels:?} = {value}");
        value
    };
    let ok_post = ["service=\"ledger\"", "method=\"PostEntries\"", "code=\"OK\""];
    expect("accrue_rpc_duration_seconds_count", &ok_post);
    expect("accrue_rpc_duration_seconds_bucket", &[ok_post.as_slice(), &["le=\"+Inf\""]].concat());
    expect("accrue_rpc_requests_total", &["service=\"attribution\"", "method=\"RecordSale\"", "code=\"OK\""]);
    expect("accrue_rpc_requests_total", &["service=\"payouts\"", "method=\"CreatePayoutRun\"", "code=\"OK\""]);
    expect("accrue_sagas_total", &["service=\"attribution\"", "kind=\"SETTLE_SALE\"", "state=\"running\""]);
    expect("accrue_sagas_total", &["service=\"attribution\"", "kind=\"SETTLE_SALE\"", "state=\"done\""]);
    expect("accrue_saga_step_duration_seconds_count", &["kind=\"SETTLE_SALE\"", "step=\"post\"", "phase=\"action\""]);
    expect("accrue_ledger_entries_posted_total", &["service=\"ledger\"", "kind=\"DIRECT\"", "entry_type=\"CREDIT\""]);
    expect("accrue_ledger_entries_posted_total", &["service=\"ledger\"", "entry_type=\"DEBIT\""]);
    expect("accrue_clawbacks_total", &["service=\"ledger\""]);
    let payouts = ["service=\"payouts\"", "status=\"PENDING_APPROVAL\"", "currency=\"GBP\""];
    assert_eq!(expect("accrue_payouts_total", &payouts), 1.0);
    // 10 % of 250.00 GBP, in pence.
    assert_eq!(expect("accrue_payout_amount_total", &payouts), 2500.0);
    for state in ["idle", "in_use"] {
        assert!(
            sample(&body, "accrue_db_pool_connections", &["service=\"ledger\"", &format!("state=\"{state}\"")])
                .is_some()
        );
    }
    for (service, url) in metrics.list() {
        let (status, text) = get(url).await;
        assert!(status.contains("200") && text.contains("accrue_rpc_duration_seconds_bucket"), "{service}: {status}");
    }
    assert!(!refund.id.is_empty());

    env.shutdown().await.unwrap();
    telemetry.flush().await;
}
