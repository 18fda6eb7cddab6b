//! The event feed (issue 16 item 1; docs/events.md): every service's
//! `accrue.events.v1.EventService` over its own outbox, on real gRPC and a
//! real Postgres.
//!
//! - a sale → settle → refund → clearance → payout flow leaves exactly its
//!   events in each service's feed, in order, numbered 1..n without gaps;
//! - a watcher that disconnects and resumes from its last sequence misses
//!   nothing (the union of what it saw is the whole feed), and a live watch
//!   sees changes made while it is open;
//! - a service killed after a change committed and before any watcher got
//!   it delivers the event once it is back;
//! - ListEvents pages and filters by type; a partner token sees only its own
//!   entries' events (redacted as GetEntry redacts them); bad input is
//!   INVALID_ARGUMENT with field violations.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::Clients;
use accrue_e2e::fixtures::{gbp, payment, record_and_settle, ts};
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_kit::events::catalogue;
use accrue_kit::service::{Service, ServiceConfig};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::events::v1 as epb;
use accrue_proto::events::v1::event_service_client::EventServiceClient;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use accrue_testkit::TestDb;
use prost::Message;
use tonic::Code;

use crate::world::{World, quick, setup, wait_saga};

const SECRET: &str = "accrue-e2e-events-secret-0123456789abcdef";
const SALE_AT: &str = "2024-03-01T12:00:00Z";
const REFUND_AT: &str = "2024-03-05T09:00:00Z";
const CLEAR_AS_OF: &str = "2024-04-30T00:00:00Z";
const CUTOFF: &str = "2024-04-30T23:59:59Z";
/// How long a test waits for the sequencer and the watchers.
const FEED_WAIT: Duration = Duration::from_secs(15);

type Events = EventServiceClient<accrue_kit::client::AuthChannel>;

fn minter() -> Minter {
    Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap()
}

fn admin() -> Credential {
    let token = minter().mint("events-admin", &[Role::Admin], &["*".to_string()], None, Duration::from_secs(3600));
    Credential::token(token.unwrap())
}

fn partner_token(program: &str, partner: &str) -> Credential {
    let token = minter().mint(
        "events-partner",
        &[Role::Partner],
        &[program.to_string()],
        Some(partner.parse().unwrap()),
        Duration::from_secs(3600),
    );
    Credential::token(token.unwrap())
}

fn events_client(url: &str, credential: &Credential) -> Events {
    accrue_kit::client::connect(url, Duration::from_secs(30), credential).unwrap()
}

async fn start(db: &TestDb) -> (Stack, Clients) {
    let mut config = StackConfig::for_tests(db.url.clone());
    config.saga = quick();
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.expect("stack starts");
    let clients = Clients::connect(&stack.endpoints, &stack.admin).expect("clients");
    (stack, clients)
}

/// Every event of `program` in `client`'s feed after `after` (ListEvents, every page of `page_size`).
async fn list_all(client: &mut Events, program: &str, after: i64, types: &[&str], page_size: i32) -> Vec<epb::Event> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_events(epb::ListEventsRequest {
                program_id: program.into(),
                after_sequence: after,
                types: types.iter().map(|t| t.to_string()).collect(),
                page_size,
                page_token,
            })
            .await
            .unwrap_or_else(|status| panic!("ListEvents: {status:?}"))
            .into_inner();
        assert!(page.events.len() <= usize::try_from(page_size.max(1)).unwrap() || page_size == 0);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// The program's feed once it holds at least `n` events (the sequencer
/// numbers committed events within tens of milliseconds), read again a
/// little later so that an event too many would show.
async fn feed(client: &mut Events, program: &str, n: usize) -> Vec<epb::Event> {
    let deadline = tokio::time::Instant::now() + FEED_WAIT;
    loop {
        let events = list_all(client, program, 0, &[], 1000).await;
        if events.len() >= n {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return list_all(client, program, 0, &[], 1000).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} events: {events:#?}", events.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types_of(events: &[epb::Event]) -> Vec<&str> {
    events.iter().map(|e| e.r#type.as_str()).collect()
}

/// Asserts the feed is numbered 1..n without gaps, names the program and the
/// source, and carries its type's data message.
fn assert_numbered(events: &[epb::Event], program: &str, source: &catalogue::Source) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.sequence, i64::try_from(index).unwrap() + 1, "gap or disorder at {index}: {events:#?}");
        assert_eq!(event.program_id, program);
        assert_eq!(event.source, source.uri);
        let kind = source.event_type(&event.r#type).unwrap_or_else(|| panic!("unknown type {}", event.r#type));
        let data = event.data.as_ref().expect("data");
        assert_eq!(data.type_url, format!("type.googleapis.com/{}", kind.data));
        assert!(!event.id.is_empty() && event.time.is_some());
    }
}

fn entry_of(event: &epb::Event) -> lpb::Entry {
    lpb::Entry::decode(event.data.as_ref().expect("data").value.as_slice()).expect("an Entry")
}

/// What [`flow`] did.
struct Flow {
    w: World,
    sale: apb::Sale,
    refund: apb::Refund,
    /// Entries after the refund (credits and clawback debits).
    entries: Vec<lpb::Entry>,
    payouts: i64,
    paid: ppb::Payout,
}

/// A sale settled, half refunded (clawed back), every entry cleared and
/// auto-approved, a payout run, the seller's payout approved and paid.
async fn flow(c: &mut Clients, name: &str) -> Flow {
    let w = setup(c, name).await;
    let program = w.program_id.clone();
    let (sale, _) = record_and_settle(c, payment(&program, "s-1", "cust-1", "100.00", "", SALE_AT)).await;
    let refund = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            program_id: program.clone(),
            external_id: "r-1".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(sale.id.clone())),
            amount: Some(gbp("50.00")),
            occurred_at: Some(ts(REFUND_AT)),
            reason: "returned goods".into(),
        })
        .await
        .expect("refund")
        .into_inner();
    let saga = wait_saga(c, &refund.saga_id).await;
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let entries = accrue_e2e::all_entries(c, &program).await.unwrap();
    c.hierarchy
        .update_program(hpb::UpdateProgramRequest {
            program: Some(hpb::Program { id: program.clone(), auto_approve_cleared: true, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["auto_approve_cleared".into()] }),
            request_id: "approve".into(),
        })
        .await
        .expect("auto-approve");
    c.ledger
        .clear_matured(lpb::ClearMaturedRequest { program_id: program.clone(), as_of: Some(ts(CLEAR_AS_OF)) })
        .await
        .expect("clear matured");
    let run = c
        .payouts
        .create_payout_run(ppb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2024-04".into(),
            cutoff: Some(ts(CUTOFF)),
            minimum_amount: Some(gbp("1.00")),
            request_id: "run-1".into(),
        })
        .await
        .expect("payout run")
        .into_inner();
    let seller_payout = c
        .payouts
        .list_payouts(ppb::ListPayoutsRequest {
            program_id: program.clone(),
            partner_id: w.seller.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payouts
        .pop()
        .expect("the seller's payout");
    c.payouts
        .approve_payout(ppb::ApprovePayoutRequest { id: seller_payout.id.clone(), request_id: "approve-1".into() })
        .await
        .expect("approve");
    let paid = c
        .payouts
        .mark_payout_paid(ppb::MarkPayoutPaidRequest {
            id: seller_payout.id.clone(),
            payment_reference: "ref-1".into(),
            payment_method: "bank_transfer".into(),
            paid_time: Some(ts(CUTOFF)),
            request_id: "paid-1".into(),
        })
        .await
        .expect("mark paid")
        .into_inner();
    Flow { w, sale, refund, entries, payouts: run.payout_count, paid }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_to_payout_flow_leaves_exactly_its_events_in_order_without_gaps() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let f = flow(&mut c, "Events Co").await;
    let program = f.w.program_id.clone();
    let e = &stack.endpoints;
    let credential = admin();

    // Hierarchy: the world's four partners.
    let mut hierarchy = events_client(&e.hierarchy, &credential);
    let events = feed(&mut hierarchy, &program, 4).await;
    assert_eq!(types_of(&events), vec![catalogue::PARTNER_CREATED.name; 4]);
    assert_numbered(&events, &program, &catalogue::HIERARCHY);
    let created: Vec<String> =
        events.iter().map(|e| hpb::Partner::decode(e.data.as_ref().unwrap().value.as_slice()).unwrap().id).collect();
    assert_eq!(created, vec![f.w.parent.clone(), f.w.seller.clone(), f.w.split_a.clone(), f.w.split_b.clone()]);
    assert_eq!(events[1].subject, format!("partners/{}", f.w.seller));

    // Commission: the default agreement.
    let mut commission = events_client(&e.commission, &credential);
    let events = feed(&mut commission, &program, 1).await;
    assert_eq!(types_of(&events), vec![catalogue::AGREEMENT_VERSION_CREATED.name]);
    assert_numbered(&events, &program, &catalogue::COMMISSION);

    // Attribution: recorded, settled, the refund applied.
    let mut attribution = events_client(&e.attribution, &credential);
    let events = feed(&mut attribution, &program, 3).await;
    assert_eq!(
        types_of(&events),
        vec![catalogue::SALE_RECORDED.name, catalogue::SALE_SETTLED.name, catalogue::REFUND_APPLIED.name]
    );
    assert_numbered(&events, &program, &catalogue::ATTRIBUTION);
    let sale_at = |i: usize| apb::Sale::decode(events[i].data.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(sale_at(0).state, apb::SaleState::Pending as i32);
    assert_eq!(sale_at(1).state, apb::SaleState::Settled as i32);
    assert_eq!(sale_at(1).total_commission, f.sale.total_commission);
    assert_eq!(events[0].subject, format!("sales/{}", f.sale.id));
    let refund = apb::Refund::decode(events[2].data.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!((refund.id.as_str(), refund.state), (f.refund.id.as_str(), apb::RefundState::Applied as i32));

    // Ledger: the four credits posted, their four clawback debits, each of
    // the eight cleared then auto-approved, the paid payout's entries paid.
    let credits = f.entries.iter().filter(|e| e.entry_type == lpb::EntryType::Credit as i32).count();
    let debits = f.entries.len() - credits;
    assert_eq!((credits, debits), (4, 4), "{:#?}", f.entries);
    let paid = usize::try_from(f.paid.entry_count).unwrap();
    let n = credits + debits + 2 * f.entries.len() + paid;
    let mut ledger = events_client(&e.ledger, &credential);
    let events = feed(&mut ledger, &program, n).await;
    let mut expected = vec![catalogue::ENTRY_POSTED.name; credits + debits];
    expected.extend(vec![catalogue::ENTRY_STATUS_CHANGED.name; 2 * f.entries.len() + paid]);
    assert_eq!(types_of(&events), expected);
    assert_numbered(&events, &program, &catalogue::LEDGER);
    let posted: Vec<String> = events[..credits + debits].iter().map(|e| entry_of(e).id).collect();
    let mut all: Vec<String> = f.entries.iter().map(|e| e.id.clone()).collect();
    let mut sorted = posted.clone();
    sorted.sort();
    all.sort();
    assert_eq!(sorted, all, "one entry.posted per entry");
    for event in &events[..credits] {
        assert_eq!(entry_of(event).entry_type, lpb::EntryType::Credit as i32, "credits first");
    }
    // entry.posted carries the entry as GetEntry shows it (status, payout
    // and history as of the posting): the credits' written by reference and
    // built on read from the entry, the debits' stored as read back.
    for event in &events[..credits + debits] {
        let posted = entry_of(event);
        let stored = c.ledger.get_entry(lpb::GetEntryRequest { id: posted.id.clone() }).await.unwrap().into_inner();
        assert_eq!(posted.status, lpb::EntryStatus::Pending as i32);
        assert_eq!(posted.history.len(), 1);
        // Whole, not field by field: a posted line's creation event is
        // derived from its posting on read, and must read as it was posted.
        assert_eq!(posted.history[0], stored.history[0]);
        let as_posted = lpb::Entry {
            status: posted.status,
            payout_id: posted.payout_id.clone(),
            history: posted.history.clone(),
            ..stored
        };
        assert_eq!(posted, as_posted);
        assert_eq!(event.time, posted.create_time);
    }
    let changes: Vec<(i32, i32)> = events[credits + debits..]
        .iter()
        .map(|e| {
            let entry = entry_of(e);
            assert_eq!(entry.history.len(), 1, "{entry:#?}");
            assert_eq!(entry.status, entry.history[0].to_status);
            assert_eq!(e.subject, format!("entries/{}", entry.id));
            (entry.history[0].from_status, entry.history[0].to_status)
        })
        .collect();
    let (pending, cleared, approved, paid_status) = (
        lpb::EntryStatus::Pending as i32,
        lpb::EntryStatus::Cleared as i32,
        lpb::EntryStatus::Approved as i32,
        lpb::EntryStatus::Paid as i32,
    );
    let mut want = Vec::new();
    for _ in 0..f.entries.len() {
        want.extend([(pending, cleared), (cleared, approved)]);
    }
    want.extend(vec![(approved, paid_status); paid]);
    assert_eq!(changes, want);

    // Payouts: the run's payouts, then the seller's approved and paid.
    let mut payouts = events_client(&e.payouts, &credential);
    let m = usize::try_from(f.payouts).unwrap();
    let events = feed(&mut payouts, &program, m + 2).await;
    let mut expected = vec![catalogue::PAYOUT_CREATED.name; m];
    expected.extend([catalogue::PAYOUT_APPROVED.name, catalogue::PAYOUT_PAID.name]);
    assert_eq!(types_of(&events), expected);
    assert_numbered(&events, &program, &catalogue::PAYOUTS);
    let last = ppb::Payout::decode(events[m + 1].data.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!((last.id.as_str(), last.status), (f.paid.id.as_str(), ppb::PayoutStatus::Paid as i32));

    drop(c);
    stack.shutdown().await.unwrap();
}

/// Reads `n` events from a watch, failing after [`FEED_WAIT`].
async fn take(stream: &mut tonic::Streaming<epb::WatchEventsResponse>, n: usize) -> Vec<epb::Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let message = tokio::time::timeout(FEED_WAIT, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived: {events:#?}", events.len()))
            .expect("the watch fails")
            .expect("the watch ended early");
        events.push(message.event.expect("an event"));
    }
    events
}

async fn watch(client: &mut Events, program: &str, after: i64) -> tonic::Streaming<epb::WatchEventsResponse> {
    client
        .watch_events(epb::WatchEventsRequest { program_id: program.into(), after_sequence: after, types: vec![] })
        .await
        .expect("WatchEvents")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_disconnects_and_resumes_misses_nothing() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let f = flow(&mut c, "Resume Co").await;
    let program = f.w.program_id.clone();
    let mut ledger = events_client(&stack.endpoints.ledger, &admin());
    let full = feed(&mut ledger, &program, 26).await;
    assert!(full.len() >= 10, "{}", full.len());

    // Read part, hang up, resume from the last processed sequence, three times.
    let mut seen: Vec<epb::Event> = Vec::new();
    let mut last = 0;
    for chunk in [3, 7, 5] {
        let mut stream = watch(&mut ledger, &program, last).await;
        let got = take(&mut stream, chunk).await;
        last = got.last().unwrap().sequence;
        seen.extend(got);
        drop(stream);
    }
    let mut stream = watch(&mut ledger, &program, last).await;
    seen.extend(take(&mut stream, full.len() - seen.len()).await);
    let sequences: Vec<i64> = seen.iter().map(|e| e.sequence).collect();
    let want: Vec<i64> = full.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, want, "the union of the watches is the whole feed, in order");
    assert_eq!(seen.iter().map(|e| &e.id).collect::<Vec<_>>(), full.iter().map(|e| &e.id).collect::<Vec<_>>());

    // Live: the open watch gets the next sale's entries as they are posted.
    let (_, entries) = record_and_settle(&mut c, payment(&program, "s-2", "cust-1", "10.00", "", SALE_AT)).await;
    let live = take(&mut stream, entries.len()).await;
    assert_eq!(live.first().unwrap().sequence, want.last().unwrap() + 1);
    assert!(live.iter().all(|e| e.r#type == catalogue::ENTRY_POSTED.name));
    let mut live_ids: Vec<String> = live.iter().map(|e| entry_of(e).id).collect();
    let mut ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    live_ids.sort();
    ids.sort();
    assert_eq!(live_ids, ids);

    // A filtered watch from the start sees only its type, in order.
    let mut filtered = ledger
        .watch_events(epb::WatchEventsRequest {
            program_id: program.clone(),
            after_sequence: 0,
            types: vec![catalogue::ENTRY_STATUS_CHANGED.name.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let changed = take(&mut filtered, 5).await;
    assert!(changed.iter().all(|e| e.r#type == catalogue::ENTRY_STATUS_CHANGED.name));
    assert!(changed.windows(2).all(|w| w[0].sequence < w[1].sequence));

    drop((stream, filtered));
    drop(c);
    // Shutdown ends the open watches (the drain is not held to its deadline).
    let mut open = watch(&mut ledger, &program, 0).await;
    let started = std::time::Instant::now();
    stack.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    while let Ok(Some(_)) = open.message().await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_events_pages_filters_and_keeps_partners_to_their_own() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db).await;
    let f = flow(&mut c, "Paging Co").await;
    let program = f.w.program_id.clone();
    let e = &stack.endpoints;
    let mut ledger = events_client(&e.ledger, &admin());
    let full = feed(&mut ledger, &program, 26).await;

    // Pages of 3 are the whole feed; after_sequence starts later.
    let paged = list_all(&mut ledger, &program, 0, &[], 3).await;
    assert_eq!(paged, full);
    let later = list_all(&mut ledger, &program, 10, &[], 4).await;
    assert_eq!(later, full[10..].to_vec());

    // The type filter.
    let posted = list_all(&mut ledger, &program, 0, &[catalogue::ENTRY_POSTED.name], 2).await;
    assert_eq!(posted, full.iter().filter(|e| e.r#type == catalogue::ENTRY_POSTED.name).cloned().collect::<Vec<_>>());

    // A partner token sees its own entries' events only; the parent's
    // override line comes redacted as GetEntry shows it (no sale id).
    for partner in [&f.w.seller, &f.w.parent, &f.w.split_a] {
        let mut own = events_client(&e.ledger, &partner_token(&program, partner));
        let seen = list_all(&mut own, &program, 0, &[], 5).await;
        let want: Vec<i64> = full.iter().filter(|e| entry_of(e).partner_id == **partner).map(|e| e.sequence).collect();
        assert!(!want.is_empty());
        assert_eq!(seen.iter().map(|e| e.sequence).collect::<Vec<_>>(), want, "partner {partner}");
        if *partner == f.w.parent {
            assert!(seen.iter().all(|e| entry_of(e).sale_id.is_empty()), "{seen:#?}");
        }
        // Nothing of attribution's feed (sales are not a partner's to read).
        let mut sales = events_client(&e.attribution, &partner_token(&program, partner));
        assert!(list_all(&mut sales, &program, 0, &[], 0).await.is_empty());
        // Its own payout, in payouts' feed.
        let mut payouts = events_client(&e.payouts, &partner_token(&program, partner));
        let mine = list_all(&mut payouts, &program, 0, &[], 0).await;
        assert!(mine.iter().all(|e| {
            ppb::Payout::decode(e.data.as_ref().unwrap().value.as_slice()).unwrap().partner_id == **partner
        }));
    }

    // A refund with nothing to claw back (an unattributed sale's) is applied
    // by RecordRefund itself, and so is its event.
    let unattributed =
        c.attribution.record_sale(payment(&program, "s-u", "", "40.00", "", SALE_AT)).await.unwrap().into_inner();
    let refund = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            program_id: program.clone(),
            external_id: "r-u".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(unattributed.id.clone())),
            amount: Some(gbp("10.00")),
            occurred_at: Some(ts(REFUND_AT)),
            reason: "returned".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refund.state, apb::RefundState::Applied as i32);
    let mut attribution = events_client(&e.attribution, &admin());
    let sales = feed(&mut attribution, &program, 5).await;
    assert_eq!(types_of(&sales)[3..], [catalogue::SALE_RECORDED.name, catalogue::REFUND_APPLIED.name], "{sales:#?}");
    assert_eq!(sales[4].subject, format!("refunds/{}", refund.id));

    // Bad input: INVALID_ARGUMENT naming the field, on List and Watch.
    let field_of = |status: &tonic::Status| {
        use tonic_types::StatusExt;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.get_details_bad_request().expect("field violations").field_violations[0].field.clone()
    };
    let base = epb::ListEventsRequest { program_id: program.clone(), ..Default::default() };
    let bad = list_err(&ledger, epb::ListEventsRequest { program_id: "not-a-program".into(), ..base.clone() }).await;
    assert_eq!(field_of(&bad), "program_id");
    let bad = list_err(&ledger, epb::ListEventsRequest { program_id: String::new(), ..base.clone() }).await;
    assert_eq!(field_of(&bad), "program_id");
    let bad = list_err(&ledger, epb::ListEventsRequest { page_token: "garbage".into(), ..base.clone() }).await;
    assert_eq!(field_of(&bad), "page_token");
    let bad = list_err(&ledger, epb::ListEventsRequest { after_sequence: -1, ..base.clone() }).await;
    assert_eq!(field_of(&bad), "after_sequence");
    let bad = list_err(
        &ledger,
        epb::ListEventsRequest { types: vec!["accrue.attribution.v1.sale.recorded".into()], ..base.clone() },
    )
    .await;
    assert_eq!(field_of(&bad), "types[0]");
    let bad = list_err(&ledger, epb::ListEventsRequest { page_size: -1, ..base.clone() }).await;
    assert_eq!(field_of(&bad), "page_size");
    // A token from a page of another query (another type filter).
    let first = ledger
        .list_events(epb::ListEventsRequest { page_size: 1, ..base.clone() })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let bad = list_err(
        &ledger,
        epb::ListEventsRequest { page_token: first, types: vec![catalogue::ENTRY_POSTED.name.into()], ..base.clone() },
    )
    .await;
    assert_eq!(field_of(&bad), "page_token");
    let bad = ledger
        .watch_events(epb::WatchEventsRequest { program_id: "nope".into(), after_sequence: 0, types: vec![] })
        .await
        .unwrap_err();
    assert_eq!(field_of(&bad), "program_id");
    // A program the token does not name is NOT_FOUND, as everywhere.
    let mut other = events_client(&e.ledger, &partner_token(&program, &f.w.seller));
    let missing = other
        .list_events(epb::ListEventsRequest { program_id: uuid::Uuid::new_v4().to_string(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    drop(c);
    stack.shutdown().await.unwrap();
}

/// ListEvents' refusal of `request`.
async fn list_err(client: &Events, request: epb::ListEventsRequest) -> tonic::Status {
    client.clone().list_events(request).await.expect_err("refused")
}

/// The hierarchy service alone, in a runtime of its own that [`Killed`]
/// drops whole: every task stops at its next await, its connections close
/// with nothing flushed or drained — what kill -9 does to the process.
struct Hierarchy {
    runtime: tokio::runtime::Runtime,
}

impl Hierarchy {
    fn start(database_url: &str, addr: SocketAddr) -> Hierarchy {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let config =
            ServiceConfig::new(database_url, AuthConfig::hs256(SECRET), accrue_hierarchy::Config { ledger_url: None })
                .with_max_connections(4);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("binds its port again");
            let shutdown = tokio_util::sync::CancellationToken::new();
            let _ = accrue_kit::service::run::<accrue_hierarchy::Hierarchy>(config, listener, shutdown).await;
        });
        Hierarchy { runtime }
    }

    fn kill(self) {
        self.runtime.shutdown_background();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_killed_before_delivery_delivers_after_restart() {
    let db = TestDb::create().await.unwrap();
    let role_url = accrue_kit::db::provision_dev(&db.url, "hierarchy").await.unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{addr}");
    let name = <accrue_hierarchy::Hierarchy as Service>::NAME;
    let service = Hierarchy::start(&role_url, addr);
    accrue_testkit::wait_serving(accrue_kit::client::channel(&url).unwrap(), name).await.unwrap();
    let credential = admin();
    let mut hierarchy: accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient<_> =
        accrue_kit::client::connect(&url, Duration::from_secs(10), &credential).unwrap();
    let mut events = events_client(&url, &credential);
    let program = hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Crash Co".into(),
                default_currency: "GBP".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let create = |name: &str| hpb::CreatePartnerRequest {
        program_id: program.clone(),
        partner: Some(hpb::Partner { display_name: name.into(), ..Default::default() }),
        request_id: String::new(),
    };
    let first = hierarchy.create_partner(create("First")).await.unwrap().into_inner();
    let mut stream = watch(&mut events, &program, 0).await;
    let got = take(&mut stream, 1).await;
    assert_eq!((got[0].sequence, got[0].subject.clone()), (1, format!("partners/{}", first.id)));

    // Hold the sequencer off (its advisory lock), so the next change commits
    // and stays undelivered; then kill the service.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut holder = pool.acquire().await.unwrap();
    let key = accrue_kit::events::sequencer::lock_key(&catalogue::HIERARCHY);
    sqlx::query("SELECT pg_advisory_lock($1)").bind(key).execute(&mut *holder).await.unwrap();
    let second = hierarchy.create_partner(create("Second")).await.unwrap().into_inner();
    let pending = accrue_kit::events::sequencer::unsequenced(&mut holder, "hierarchy").await.unwrap();
    assert_eq!(pending, 1, "the change committed its event");
    let early = tokio::time::timeout(Duration::from_millis(700), stream.message()).await;
    assert!(early.is_err(), "nothing is delivered before it is sequenced: {early:?}");
    service.kill();
    let cut = tokio::time::timeout(FEED_WAIT, stream.message()).await.expect("the watch ends with the process");
    assert!(!matches!(cut, Ok(Some(_))), "{cut:?}");
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *holder).await.unwrap();
    drop(holder);

    // Back on the same port: the watcher resumes after what it processed.
    let service = Hierarchy::start(&role_url, addr);
    accrue_testkit::wait_serving(accrue_kit::client::channel(&url).unwrap(), name).await.unwrap();
    let mut stream = watch(&mut events, &program, 1).await;
    let got = take(&mut stream, 1).await;
    assert_eq!((got[0].sequence, got[0].subject.clone()), (2, format!("partners/{}", second.id)));
    let all = list_all(&mut events, &program, 0, &[], 0).await;
    assert_eq!(all.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
    drop(stream);
    service.kill();
    pool.close().await;
}

/// Hierarchy's outbox migrations, in order (every service's are the same:
/// `every_service_has_the_same_outbox_migrations`).
const OUTBOX_MIGRATIONS: [&str; 4] = [
    include_str!("../../../services/hierarchy/migrations/0006_events.sql"),
    include_str!("../../../services/hierarchy/migrations/0007_webhooks.sql"),
    include_str!("../../../services/hierarchy/migrations/0008_event_numbers.sql"),
    include_str!("../../../services/hierarchy/migrations/0009_event_runs.sql"),
];

/// `migrations` (of [`OUTBOX_MIGRATIONS`]) on `pool`'s database, alone: the
/// sequencer's and the feed's tables without a service.
async fn outbox_tables(pool: &sqlx::PgPool, migrations: &[&'static str]) {
    for migration in migrations {
        sqlx::raw_sql(*migration).execute(pool).await.unwrap();
    }
}

/// The sequencer's guarantee under concurrency, on the outbox alone: eight
/// writers commit events of two programs in many small transactions while
/// two sequencers (two replicas) run passes at the same time. Every event
/// gets a number, each program's numbers are 1..n without gaps or repeats,
/// and each writer's events keep their order (a transaction that began after
/// another committed is numbered after it; events of one transaction in the
/// order given).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_two_sequencers_number_every_program_without_gaps() {
    use accrue_kit::events::NewEvent;
    use accrue_kit::events::sequencer::{Pass, sequence_pass};

    let db = TestDb::create().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(12).connect(&db.url).await.unwrap();
    outbox_tables(&pool, &OUTBOX_MIGRATIONS).await;
    let programs = [accrue_types::ProgramId::new_v7(), accrue_types::ProgramId::new_v7()];
    let writers_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut sequencers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (pool, done) = (pool.clone(), writers_done.clone());
        sequencers.spawn(async move {
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let pass = sequence_pass(&pool, &catalogue::HIERARCHY, 7).await.unwrap();
                let mut conn = pool.acquire().await.unwrap();
                let pending = accrue_kit::events::sequencer::unsequenced(&mut conn, "public").await.unwrap();
                if finished && pending == 0 {
                    return;
                }
                if matches!(pass, Pass::Skipped | Pass::Sequenced(0)) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    }
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8u32 {
        let pool = pool.clone();
        writers.spawn(async move {
            let mut written = Vec::new();
            for round in 0..40u32 {
                let mut tx = pool.begin().await.unwrap();
                let events: Vec<NewEvent> = (0..1 + (writer + round) % 3)
                    .map(|i| {
                        let program = programs[((writer + round + i) % 2) as usize];
                        let data =
                            hpb::Partner { display_name: format!("w{writer}r{round}e{i}"), ..Default::default() };
                        NewEvent::new(
                            &catalogue::PARTNER_CREATED,
                            program,
                            format!("w{writer}/r{round}/e{i}"),
                            None,
                            chrono::Utc::now(),
                            &data,
                        )
                    })
                    .collect();
                accrue_kit::events::insert(&mut tx, &events).await.unwrap();
                if round % 5 == 0 {
                    // Hold some transactions open across the sequencers' passes.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if round % 13 == 7 {
                    // A rolled-back change leaves no event and no gap.
                    tx.rollback().await.unwrap();
                    continue;
                }
                tx.commit().await.unwrap();
                written.extend(events.into_iter().map(|event| event.id));
            }
            written
        });
    }
    let mut by_writer = Vec::new();
    while let Some(written) = writers.join_next().await {
        by_writer.push(written.unwrap());
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    while let Some(done) = sequencers.join_next().await {
        done.unwrap();
    }

    let rows: Vec<(uuid::Uuid, uuid::Uuid, Option<i64>)> = sqlx::query_as(
        "SELECT e.id, e.program_id, n.sequence FROM events e LEFT JOIN sequenced_events n USING (position)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), by_writer.iter().map(Vec::len).sum::<usize>(), "one row per committed event");
    let mut sequence_of = std::collections::HashMap::new();
    for program in programs {
        let mut numbers: Vec<i64> = rows
            .iter()
            .filter(|(_, p, _)| *p == program.into_uuid())
            .map(|(_, _, sequence)| sequence.expect("every event numbered"))
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=i64::try_from(numbers.len()).unwrap()).collect::<Vec<_>>(), "1..n, no gap");
        let last: i64 = sqlx::query_scalar("SELECT last_sequence FROM event_sequences WHERE program_id = $1")
            .bind(program)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(last, i64::try_from(numbers.len()).unwrap());
    }
    for (id, program, sequence) in &rows {
        sequence_of.insert(*id, (*program, sequence.unwrap_or_default()));
    }
    for written in &by_writer {
        for program in programs {
            let mine: Vec<i64> = written
                .iter()
                .filter_map(|id| sequence_of.get(id).filter(|(p, _)| *p == program.into_uuid()).map(|(_, s)| *s))
                .collect();
            assert!(mine.windows(2).all(|pair| pair[0] < pair[1]), "a writer's events keep their order: {mine:?}");
        }
    }
    pool.close().await;
}

/// Every service's outbox migrations are the same text, file for file:
/// each service owns its schema and so its own copy, and the tests here run
/// hierarchy's; a copy that drifted would give one service's feed other
/// rules unnoticed.
#[test]
fn every_service_has_the_same_outbox_migrations() {
    let families: [[&str; 5]; 4] = [
        [
            include_str!("../../../services/attribution/migrations/0010_events.sql"),
            include_str!("../../../services/commission/migrations/0004_events.sql"),
            include_str!("../../../services/hierarchy/migrations/0006_events.sql"),
            include_str!("../../../services/ledger/migrations/0007_events.sql"),
            include_str!("../../../services/payouts/migrations/0007_events.sql"),
        ],
        [
            include_str!("../../../services/attribution/migrations/0012_webhooks.sql"),
            include_str!("../../../services/commission/migrations/0005_webhooks.sql"),
            include_str!("../../../services/hierarchy/migrations/0007_webhooks.sql"),
            include_str!("../../../services/ledger/migrations/0008_webhooks.sql"),
            include_str!("../../../services/payouts/migrations/0008_webhooks.sql"),
        ],
        [
            include_str!("../../../services/attribution/migrations/0013_event_numbers.sql"),
            include_str!("../../../services/commission/migrations/0006_event_numbers.sql"),
            include_str!("../../../services/hierarchy/migrations/0008_event_numbers.sql"),
            include_str!("../../../services/ledger/migrations/0009_event_numbers.sql"),
            include_str!("../../../services/payouts/migrations/0009_event_numbers.sql"),
        ],
        [
            include_str!("../../../services/attribution/migrations/0016_event_runs.sql"),
            include_str!("../../../services/commission/migrations/0007_event_runs.sql"),
            include_str!("../../../services/hierarchy/migrations/0009_event_runs.sql"),
            include_str!("../../../services/ledger/migrations/0013_event_runs.sql"),
            include_str!("../../../services/payouts/migrations/0010_event_runs.sql"),
        ],
    ];
    for (index, family) in families.iter().enumerate() {
        assert!(family.iter().all(|text| *text == family[0]), "outbox migration {index} differs between services");
    }
}

/// Numbers are written as runs (issue 15): one pass over 1,300 events —
/// 1,200 of one program in twelve transactions with another program's 100
/// in the middle — writes one `event_runs` row per program and RUN_LIMIT
/// events (3 + 1), never a row per event, and numbers them exactly as a row
/// per event did: each program 1..n in writing order. The feed reads across
/// runs a window at a time: a page that spans more runs than one window
/// holds, and a type filter that matches only the last few events, come
/// back whole and in order.
#[tokio::test]
async fn a_pass_writes_a_run_per_program_and_the_feed_reads_across_runs() {
    use accrue_kit::auth::{Identity, Programs};
    use accrue_kit::events::sequencer::{Pass, RUN_LIMIT, sequence_pass};
    use accrue_kit::events::{EventApi, Hooks, NewEvent};
    use epb::event_service_server::EventService;

    let db = TestDb::create().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    outbox_tables(&pool, &OUTBOX_MIGRATIONS).await;
    let (a, b) = (accrue_types::ProgramId::new_v7(), accrue_types::ProgramId::new_v7());
    let event = |program, kind, subject: String| {
        let data = hpb::Partner { display_name: subject.clone(), ..Default::default() };
        NewEvent::new(kind, program, subject, None, chrono::Utc::now(), &data)
    };
    let write = |events: Vec<NewEvent>| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            accrue_kit::events::insert(&mut tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    // Passes until `n` events are numbered: a write transaction of another
    // test on this cluster may hold the snapshot's xmin back for a moment.
    // Returns how many, and in how many passes that numbered some.
    let numbered = |n: u64| {
        let pool = pool.clone();
        async move {
            let (mut total, mut passes) = (0, 0);
            for _ in 0..500 {
                if let Pass::Sequenced(k) = sequence_pass(&pool, &catalogue::HIERARCHY, 5000).await.unwrap() {
                    total += k;
                    passes += u64::from(k > 0);
                }
                if total >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (total, passes)
        }
    };
    for t in 0..13 {
        let events: Vec<NewEvent> = if t == 6 {
            (0..100).map(|i| event(b, &catalogue::PARTNER_CREATED, format!("b-{i}"))).collect()
        } else {
            let first = if t < 6 { t * 100 } else { (t - 1) * 100 };
            (first..first + 100).map(|i| event(a, &catalogue::PARTNER_CREATED, format!("a-{i}"))).collect()
        };
        write(events).await;
    }
    let (total, passes) = numbered(1300).await;
    assert_eq!(total, 1300);
    let runs: Vec<(uuid::Uuid, i64, i64)> =
        sqlx::query_as("SELECT program_id, first_sequence, last_sequence FROM event_runs ORDER BY program_id, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let of = |program: accrue_types::ProgramId| -> Vec<(i64, i64)> {
        runs.iter().filter(|r| r.0 == program.into_uuid()).map(|r| (r.1, r.2)).collect()
    };
    // Contiguous, none longer than RUN_LIMIT, and at most ⌈k / RUN_LIMIT⌉ per
    // pass that numbered k of a program: exactly three and one when one pass
    // took them all (usually; another test's open transaction can hold part
    // of them back for a later pass).
    assert_eq!(RUN_LIMIT, 500);
    for (program, count) in [(a, 1200), (b, 100)] {
        let runs = of(program);
        assert_eq!(runs.first().map(|r| r.0), Some(1), "{runs:?}");
        assert_eq!(runs.last().map(|r| r.1), Some(count), "{runs:?}");
        assert!(runs.windows(2).all(|w| w[1].0 == w[0].1 + 1), "contiguous: {runs:?}");
        assert!(runs.iter().all(|r| r.1 - r.0 < RUN_LIMIT), "{runs:?}");
        assert!(runs.len() as u64 <= passes + count as u64 / 500, "{runs:?} in {passes} passes");
    }
    if passes == 1 {
        assert_eq!(of(a), [(1, 500), (501, 1000), (1001, 1200)], "{runs:?}");
        assert_eq!(of(b), [(1, 100)], "{runs:?}");
    }
    let order: Vec<(String, i64)> =
        sqlx::query_as("SELECT subject, sequence FROM sequenced_events WHERE program_id = $1 ORDER BY sequence")
            .bind(a)
            .fetch_all(&pool)
            .await
            .unwrap();
    let want: Vec<(String, i64)> = (0..1200).map(|i| (format!("a-{i}"), i + 1)).collect();
    assert_eq!(order, want, "1..n in writing order");

    // Six more events of `a`, each numbered by a pass of its own: six runs
    // of one, the last two of another type.
    for i in 0..6 {
        let kind = if i < 4 { &catalogue::PARTNER_CREATED } else { &catalogue::PARTNER_STATUS_CHANGED };
        write(vec![event(a, kind, format!("late-{i}"))]).await;
        assert_eq!(numbered(1).await, (1, 1));
    }
    let (shutdown, (_wake_tx, wake)) = (tokio_util::sync::CancellationToken::new(), tokio::sync::watch::channel(0));
    let api = EventApi::new(pool.clone(), &catalogue::HIERARCHY, wake, shutdown, Hooks::default());
    let list = |after: i64, types: Vec<String>| {
        let mut request = tonic::Request::new(epb::ListEventsRequest {
            program_id: a.to_string(),
            after_sequence: after,
            types,
            page_size: 1000,
            ..Default::default()
        });
        request.extensions_mut().insert(Identity {
            subject: "test".into(),
            programs: Programs::All,
            roles: [Role::Admin].into(),
            partner_id: None,
        });
        let api = api.clone();
        async move { api.list_events(request).await.unwrap().into_inner() }
    };
    // After 1,150: the rest of the third run and the six runs of one, seven
    // runs, more than a window.
    let page = list(1150, vec![]).await;
    let got: Vec<(String, i64)> = page.events.iter().map(|e| (e.subject.clone(), e.sequence)).collect();
    let mut want: Vec<(String, i64)> = (1150..1200).map(|i| (format!("a-{i}"), i + 1)).collect();
    want.extend((0..6).map(|i| (format!("late-{i}"), 1201 + i)));
    assert_eq!(got, want);
    assert!(page.next_page_token.is_empty());
    // A filter that matches only the last two: read through every window.
    let page = list(0, vec![catalogue::PARTNER_STATUS_CHANGED.name.to_string()]).await;
    let got: Vec<(String, i64)> = page.events.iter().map(|e| (e.subject.clone(), e.sequence)).collect();
    assert_eq!(got, [("late-4".to_string(), 1205), ("late-5".to_string(), 1206)]);
    pool.close().await;
}

/// The move to runs keeps every number given before it: events numbered
/// one row each (one of them from before events carried an xid) become runs
/// of one with the same numbers, a pending webhook delivery finds its event
/// by position, and the next pass numbers on from the counter.
#[tokio::test]
async fn numbers_given_before_runs_keep_their_values_after_the_migration() {
    use accrue_kit::events::NewEvent;
    use accrue_kit::events::sequencer::{Pass, sequence_pass};

    let db = TestDb::create().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    // Up to the numbers, as they were before runs.
    outbox_tables(&pool, &OUTBOX_MIGRATIONS[..3]).await;
    let program = accrue_types::ProgramId::new_v7();
    let write = |name: String| {
        let pool = pool.clone();
        async move {
            let data = hpb::Partner { display_name: name.clone(), ..Default::default() };
            let event = NewEvent::new(&catalogue::PARTNER_CREATED, program, name, None, chrono::Utc::now(), &data);
            let mut tx = pool.begin().await.unwrap();
            accrue_kit::events::insert(&mut tx, &[event]).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    for i in 0..3 {
        write(format!("old-{i}")).await;
    }
    // Numbered the old way, in reverse order of writing (the numbers are
    // whatever the old sequencer gave: the migration must keep them, not
    // recompute them); the first event from before events carried an xid.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO event_numbers (program_id, sequence, position) \
         SELECT '{program}', 4 - row_number() OVER (ORDER BY position), position FROM events; \
         INSERT INTO event_sequences VALUES ('{program}', 3); \
         UPDATE events SET xid = NULL WHERE position = (SELECT min(position) FROM events); \
         UPDATE event_watermark SET xid = (SELECT max(xid) FROM events), position = (SELECT max(position) FROM events); \
         INSERT INTO webhook_subscriptions VALUES ('{sub}', '{program}', 'http://x', '{{}}', 's', 'ACTIVE', 3, now()); \
         INSERT INTO webhook_deliveries (id, subscription_id, program_id, sequence, event_id, event_type, state, \
             attempts, next_attempt_at) \
         SELECT gen_random_uuid(), '{sub}', '{program}', n.sequence, e.id, e.type, 'PENDING', 0, now() \
         FROM event_numbers n JOIN events e USING (position) WHERE n.sequence = 2;",
        sub = uuid::Uuid::new_v4(),
    )))
    .execute(&pool)
    .await
    .unwrap();
    outbox_tables(&pool, &OUTBOX_MIGRATIONS[3..]).await;
    let numbers = || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>("SELECT subject, sequence FROM sequenced_events ORDER BY sequence")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let kept: Vec<(String, i64)> = [("old-2", 1), ("old-1", 2), ("old-0", 3)].map(|(s, n)| (s.to_string(), n)).into();
    assert_eq!(numbers().await, kept);
    let (subject,): (String,) =
        sqlx::query_as("SELECT e.subject FROM webhook_deliveries d JOIN events e ON e.position = d.event_position")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(subject, "old-1", "the delivery of number 2 finds its event");

    write("new".to_string()).await;
    let mut numbered = 0;
    for _ in 0..500 {
        if let Pass::Sequenced(k) = sequence_pass(&pool, &catalogue::HIERARCHY, 100).await.unwrap() {
            numbered += k;
        }
        if numbered >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(numbered, 1, "only the new event: nothing numbered before is taken again");
    let mut all = kept;
    all.push(("new".to_string(), 4));
    assert_eq!(numbers().await, all);
    pool.close().await;
}

/// A database restored into another cluster carries transaction ids from
/// the old one: the watermark may be ahead of every new transaction. The
/// sequencer's start-up check resets it, so nothing already numbered is
/// numbered again, a row still waiting is numbered first, and new events
/// are numbered after it.
#[tokio::test]
async fn a_watermark_ahead_of_the_cluster_is_reset_and_numbering_goes_on() {
    use accrue_kit::events::NewEvent;
    use accrue_kit::events::sequencer::{Pass, heal_after_restore, sequence_pass, unsequenced};

    let db = TestDb::create().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    outbox_tables(&pool, &OUTBOX_MIGRATIONS).await;
    let program = accrue_types::ProgramId::new_v7();
    let write = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let data = hpb::Partner { display_name: name.into(), ..Default::default() };
            let event =
                NewEvent::new(&catalogue::PARTNER_CREATED, program, name.into(), None, chrono::Utc::now(), &data);
            let mut tx = pool.begin().await.unwrap();
            accrue_kit::events::insert(&mut tx, &[event]).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    // Passes until `n` events are numbered: a write transaction of another
    // test on this cluster may hold the snapshot's xmin back for a moment.
    let numbered = |n: u64, attempts: u32| {
        let pool = pool.clone();
        async move {
            let mut total = 0;
            for _ in 0..attempts {
                if let Pass::Sequenced(k) = sequence_pass(&pool, &catalogue::HIERARCHY, 100).await.unwrap() {
                    total += k;
                }
                if total >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            total
        }
    };
    write("numbered").await;
    assert_eq!(numbered(1, 500).await, 1);
    write("waiting").await;
    // The restore: every stored id, and the watermark, far ahead of this cluster's.
    sqlx::query("UPDATE events SET xid = (xid::text::numeric + 1e12)::text::xid8").execute(&pool).await.unwrap();
    sqlx::query("UPDATE event_watermark SET xid = (xid::text::numeric + 1e12)::text::xid8")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE event_runs SET first_xid = (first_xid::text::numeric + 1e12)::text::xid8, \
             last_xid = (last_xid::text::numeric + 1e12)::text::xid8",
    )
    .execute(&pool)
    .await
    .unwrap();
    write("new").await;
    assert_eq!(numbered(1, 25).await, 0, "stuck before");

    assert!(heal_after_restore(&pool, &catalogue::HIERARCHY).await.unwrap());
    assert!(!heal_after_restore(&pool, &catalogue::HIERARCHY).await.unwrap(), "once");
    assert_eq!(numbered(2, 500).await, 2);
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(unsequenced(&mut conn, "public").await.unwrap(), 0);
    let order: Vec<(String, i64)> = sqlx::query_as("SELECT subject, sequence FROM sequenced_events ORDER BY sequence")
        .fetch_all(&pool)
        .await
        .unwrap();
    let order: Vec<(&str, i64)> = order.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(order, [("numbered", 1), ("waiting", 2), ("new", 3)]);
    drop(conn);
    pool.close().await;
}
