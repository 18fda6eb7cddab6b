//! RecordRefund, GetRefund and ListRefunds (issue 9; DESIGN §4 "Refunds"):
//! every rejection writes nothing, idempotency on the refund's external id,
//! concurrent duplicates record one refund, an unattributed sale's refund is
//! APPLIED at once, and the list pages and filters. The real hierarchy and
//! attribution services run in-process over real gRPC on a fresh Postgres
//! database; no saga workers run, so an attributed sale stays PENDING and its
//! refunds' ClawbackSale sagas stay running (the clawback itself is the e2e
//! module `clawback`'s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::str::FromStr;

use accrue_proto::attribution::v1 as pb;
use accrue_proto::attribution::v1::record_refund_request::Sale as SaleRef;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::types::v1::Money;
use rust_decimal::Decimal;
use tonic::Code;

use common::{Harness, start};
use tonic_types::StatusExt;

/// A program with one partner, a link and a lead `cust-1`, and its sales:
/// an attributed £100 sale `inv-1` (PENDING: no workers) and an unattributed
/// £40 sale `inv-anon`, both on 2024-03-01.
struct World {
    program_id: String,
    sale: pb::Sale,
    anonymous: pb::Sale,
}

fn gbp(amount: &str) -> Money {
    Money { currency_code: "GBP".into(), amount: amount.into() }
}

fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn amount(money: Option<&Money>) -> Decimal {
    money.map_or(Decimal::ZERO, |m| dec(&m.amount))
}

impl Harness {
    async fn world(&mut self, name: &str) -> World {
        let program = hpb::Program { display_name: name.into(), default_currency: "GBP".into(), ..Default::default() };
        let program_id = self
            .hierarchy
            .create_program(hpb::CreateProgramRequest { program: Some(program), request_id: String::new() })
            .await
            .unwrap()
            .into_inner()
            .id;
        let partner = self
            .hierarchy
            .create_partner(hpb::CreatePartnerRequest {
                program_id: program_id.clone(),
                partner: Some(hpb::Partner { display_name: "Seller".into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let link = self
            .attribution
            .create_link(pb::CreateLinkRequest {
                program_id: program_id.clone(),
                link: Some(pb::Link { owner_partner_id: partner, key: "spring".into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        self.attribution
            .track_lead(pb::TrackLeadRequest {
                program_id: program_id.clone(),
                link_id: link.id,
                customer_external_id: "cust-1".into(),
                occurred_at: Some(ts("2024-01-01T00:00:00Z")),
            })
            .await
            .unwrap();
        let sale = self.sale(&program_id, "inv-1", "cust-1", "100.00").await;
        assert_eq!(sale.state, pb::SaleState::Pending as i32);
        assert!(!sale.saga_id.is_empty());
        let anonymous = self.sale(&program_id, "inv-anon", "", "40.00").await;
        assert_eq!(anonymous.state, pb::SaleState::Unattributed as i32);
        World { program_id, sale, anonymous }
    }

    async fn sale(&mut self, program_id: &str, external_id: &str, customer: &str, value: &str) -> pb::Sale {
        self.attribution
            .record_sale(pb::RecordSaleRequest {
                program_id: program_id.into(),
                external_id: external_id.into(),
                customer_external_id: customer.into(),
                event_type: 0,
                amount: Some(gbp(value)),
                product_code: String::new(),
                service_code: String::new(),
                occurred_at: Some(ts("2024-03-01T12:00:00Z")),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn get_sale(&mut self, id: &str) -> pb::Sale {
        self.attribution.get_sale(pb::GetSaleRequest { id: id.into() }).await.unwrap().into_inner()
    }

    /// Every refund of the program (all pages of ListRefunds).
    async fn refunds(&mut self, program_id: &str) -> Vec<pb::Refund> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .attribution
                .list_refunds(pb::ListRefundsRequest {
                    program_id: program_id.into(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            out.extend(page.refunds);
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }

    async fn clawback_sagas(&mut self, program_id: &str) -> Vec<pb::Saga> {
        self.attribution
            .list_sagas(pb::ListSagasRequest {
                program_id: program_id.into(),
                kind: "CLAWBACK_SALE".into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .sagas
    }
}

/// A refund of `sale` (by id) of `value` GBP on 2024-03-05.
fn refund(program_id: &str, external_id: &str, sale: SaleRef, value: &str) -> pb::RecordRefundRequest {
    pb::RecordRefundRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        sale: Some(sale),
        amount: Some(gbp(value)),
        occurred_at: Some(ts("2024-03-05T09:00:00Z")),
        reason: "returned".into(),
    }
}

fn by_id(sale: &pb::Sale) -> SaleRef {
    SaleRef::SaleId(sale.id.clone())
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_writes_nothing() {
    let mut h = start().await;
    let w = h.world("Refunds Co").await;
    let other = h.world("Other Co").await;
    let p = w.program_id.clone();

    // One good refund first, so that "cumulative above the sale" has something to add to.
    let first = h.attribution.record_refund(refund(&p, "ref-1", by_id(&w.sale), "60.00")).await.unwrap().into_inner();
    assert_eq!(first.state, pb::RefundState::Pending as i32);
    assert_eq!((first.sequence, amount(first.refunded_total.as_ref())), (1, dec("60.00")));
    let before_sale = h.get_sale(&w.sale.id).await;
    assert_eq!(amount(before_sale.refunded_amount.as_ref()), dec("60.00"));
    let before_list = h.refunds(&p).await;
    assert_eq!(before_list, vec![first.clone()]);
    let before_sagas = h.clawback_sagas(&p).await.len();
    assert_eq!(before_sagas, 1);

    let with_amount = |value: &str| refund(&p, "ref-bad", by_id(&w.sale), value);
    let mut usd = with_amount("5.00");
    usd.amount = Some(Money { currency_code: "USD".into(), amount: "5.00".into() });
    let mut early = with_amount("5.00");
    early.occurred_at = Some(ts("2024-03-01T11:59:59Z"));
    let mut no_time = with_amount("5.00");
    no_time.occurred_at = None;
    let mut neither = with_amount("5.00");
    neither.sale = None;
    let bad_id = refund(&p, "ref-bad", SaleRef::SaleId("not-a-uuid".into()), "5.00");
    let cases: Vec<(&str, pb::RecordRefundRequest, Code, &str)> = vec![
        ("amount 0", with_amount("0"), Code::InvalidArgument, "amount.amount"),
        ("negative amount", with_amount("-5.00"), Code::InvalidArgument, "amount.amount"),
        ("3 decimals in GBP", with_amount("1.005"), Code::InvalidArgument, "amount.amount"),
        ("USD on a GBP sale", usd, Code::InvalidArgument, "amount.currency_code"),
        ("before the sale", early, Code::InvalidArgument, "occurred_at"),
        ("no occurred_at", no_time, Code::InvalidArgument, "occurred_at"),
        ("no sale", neither, Code::InvalidArgument, "sale_id"),
        ("malformed sale id", bad_id, Code::InvalidArgument, "sale_id"),
        ("cumulative above the sale", with_amount("40.01"), Code::FailedPrecondition, "REFUND_EXCEEDS_SALE"),
        (
            "unknown sale by id",
            refund(&p, "ref-bad", SaleRef::SaleId(uuid::Uuid::new_v4().to_string()), "5.00"),
            Code::NotFound,
            "SALE_NOT_FOUND",
        ),
        (
            "unknown sale by external id",
            refund(&p, "ref-bad", SaleRef::SaleExternalId("inv-nope".into()), "5.00"),
            Code::NotFound,
            "SALE_NOT_FOUND",
        ),
        (
            "another program's sale by id",
            refund(&p, "ref-bad", by_id(&other.sale), "5.00"),
            Code::NotFound,
            "SALE_NOT_FOUND",
        ),
        (
            // inv-2 exists only in the other program.
            "another program's sale by external id",
            refund(&p, "ref-bad", SaleRef::SaleExternalId("inv-2".into()), "5.00"),
            Code::NotFound,
            "SALE_NOT_FOUND",
        ),
    ];
    h.sale(&other.program_id, "inv-2", "cust-1", "10.00").await;
    for (name, request, code, detail) in cases {
        let status = h.attribution.record_refund(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        if code == Code::InvalidArgument {
            assert!(violations(&status).iter().any(|f| f == detail), "{name}: {status:?}");
        } else {
            assert_eq!(reason(&status), detail, "{name}: {status:?}");
        }
        let sale = h.get_sale(&w.sale.id).await;
        assert_eq!(sale.refunded_amount, before_sale.refunded_amount, "{name}: the sale's refunded_amount");
        assert_eq!(sale.state, before_sale.state, "{name}");
        assert_eq!(h.refunds(&p).await, before_list, "{name}: no refund written");
        assert_eq!(h.clawback_sagas(&p).await.len(), before_sagas, "{name}: no saga written");
        let other_sale = h.get_sale(&other.sale.id).await;
        assert_eq!(amount(other_sale.refunded_amount.as_ref()), Decimal::ZERO, "{name}");
        assert!(h.refunds(&other.program_id).await.is_empty(), "{name}");
    }

    // The REFUND_EXCEEDS_SALE message gives the amounts.
    let status = h.attribution.record_refund(with_amount("40.01")).await.unwrap_err();
    for figure in ["40.01", "100.00", "60.00", "100.01"] {
        assert!(status.message().contains(figure), "{figure}: {}", status.message());
    }
    // Exactly the rest still fits, by external id this time.
    let rest = h
        .attribution
        .record_refund(refund(&p, "ref-2", SaleRef::SaleExternalId("inv-1".into()), "40"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.sequence, amount(rest.refunded_total.as_ref())), (2, dec("100.00")));
    assert_eq!(rest.sale_id, w.sale.id);
    assert_eq!(rest.sale_external_id, "inv-1");
    let sale = h.get_sale(&w.sale.id).await;
    assert_eq!(amount(sale.refunded_amount.as_ref()), dec("100.00"));
    assert_eq!(sale.state, pb::SaleState::Pending as i32, "only a clawback moves the sale's state");
    let status = h.attribution.record_refund(refund(&p, "ref-3", by_id(&w.sale), "0.01")).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "REFUND_EXCEEDS_SALE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_on_the_external_id() {
    let mut h = start().await;
    let w = h.world("Idempotent Co").await;
    let p = w.program_id.clone();
    let first = h.attribution.record_refund(refund(&p, "ref-1", by_id(&w.sale), "10")).await.unwrap().into_inner();
    // The same body, the sale named by its external id and the amount written otherwise.
    let again = h
        .attribution
        .record_refund(refund(&p, "ref-1", SaleRef::SaleExternalId("inv-1".into()), "10.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    let got = h.attribution.get_refund(pb::GetRefundRequest { id: first.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got, first);

    let mut other_reason = refund(&p, "ref-1", by_id(&w.sale), "10.00");
    other_reason.reason = "another reason".into();
    for (name, request) in [
        ("other amount", refund(&p, "ref-1", by_id(&w.sale), "11.00")),
        ("other reason", other_reason),
        ("other sale", refund(&p, "ref-1", by_id(&w.anonymous), "10.00")),
    ] {
        let status = h.attribution.record_refund(request).await.unwrap_err();
        assert_eq!((status.code(), reason(&status).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"), "{name}");
        assert_eq!(h.refunds(&p).await, vec![first.clone()], "{name}");
        assert_eq!(amount(h.get_sale(&w.sale.id).await.refunded_amount.as_ref()), dec("10.00"), "{name}");
        assert_eq!(amount(h.get_sale(&w.anonymous.id).await.refunded_amount.as_ref()), Decimal::ZERO, "{name}");
    }
    assert_eq!(h.clawback_sagas(&p).await.len(), 1);

    let missing = h.attribution.get_refund(pb::GetRefundRequest { id: uuid::Uuid::new_v4().to_string() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_duplicates_record_one_refund() {
    let mut h = start().await;
    let w = h.world("Concurrent Co").await;
    let p = w.program_id.clone();
    let calls = (0..20).map(|_| {
        let mut client = h.attribution.clone();
        let request = refund(&p, "ref-burst", by_id(&w.sale), "25.00");
        tokio::spawn(async move { client.record_refund(request).await.map(|r| r.into_inner()) })
    });
    let results = futures::future::join_all(calls).await;
    let refunds: Vec<pb::Refund> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(refunds.iter().all(|r| *r == refunds[0]), "every call answers with the one refund");
    let listed = h.refunds(&p).await;
    assert_eq!(listed, vec![refunds[0].clone()]);
    assert_eq!(listed[0].sequence, 1);
    let sale = h.get_sale(&w.sale.id).await;
    assert_eq!(amount(sale.refunded_amount.as_ref()), dec("25.00"), "counted once");
    let sagas = h.clawback_sagas(&p).await;
    assert_eq!(sagas.len(), 1);
    assert_eq!(sagas[0].refund_id, listed[0].id);
    assert_eq!(sagas[0].id, listed[0].saga_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattributed_sale_is_refunded_at_once_without_a_saga() {
    let mut h = start().await;
    let w = h.world("Unattributed Co").await;
    let p = w.program_id.clone();
    let first =
        h.attribution.record_refund(refund(&p, "ref-a1", by_id(&w.anonymous), "15.00")).await.unwrap().into_inner();
    assert_eq!(first.state, pb::RefundState::Applied as i32);
    assert!(first.saga_id.is_empty());
    assert_eq!(first.clawback_amount.as_ref().map(|m| dec(&m.amount)), Some(Decimal::ZERO));
    let rest = h
        .attribution
        .record_refund(refund(&p, "ref-a2", SaleRef::SaleExternalId("inv-anon".into()), "25.00"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.state, rest.sequence), (pb::RefundState::Applied as i32, 2));
    assert_eq!(amount(rest.refunded_total.as_ref()), dec("40.00"));
    let sale = h.get_sale(&w.anonymous.id).await;
    assert_eq!(sale.state, pb::SaleState::Unattributed as i32, "an unattributed sale stays so");
    assert_eq!(amount(sale.refunded_amount.as_ref()), dec("40.00"));
    assert!(h.clawback_sagas(&p).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_refunds_pages_and_filters() {
    let mut h = start().await;
    let w = h.world("Paging Co").await;
    let p = w.program_id.clone();
    let mut recorded = Vec::new();
    for (i, (sale, value)) in
        [(&w.sale, "10.00"), (&w.anonymous, "5.00"), (&w.sale, "20.00"), (&w.anonymous, "5.00"), (&w.sale, "30.00")]
            .into_iter()
            .enumerate()
    {
        let mut request = refund(&p, &format!("ref-{i}"), by_id(sale), value);
        request.occurred_at = Some(ts(&format!("2024-03-0{}T09:00:00Z", i + 2)));
        recorded.push(h.attribution.record_refund(request).await.unwrap().into_inner());
    }
    let totals: Vec<(i32, Decimal)> =
        recorded.iter().map(|r| (r.sequence, amount(r.refunded_total.as_ref()))).collect();
    assert_eq!(
        totals,
        [(1, dec("10.00")), (1, dec("5.00")), (2, dec("30.00")), (2, dec("10.00")), (3, dec("60.00"))],
        "each sale numbers its own refunds and keeps its own running total"
    );

    // Pages of two, by occurred_at.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .attribution
            .list_refunds(pb::ListRefundsRequest {
                program_id: p.clone(),
                page_size: 2,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.refunds.len() <= 2);
        seen.extend(page.refunds);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, recorded);

    let list = |sale_id: &str, state: pb::RefundState| pb::ListRefundsRequest {
        program_id: p.clone(),
        sale_id: sale_id.into(),
        state: state as i32,
        ..Default::default()
    };
    let of_sale = h.attribution.list_refunds(list(&w.sale.id, pb::RefundState::Unspecified)).await.unwrap();
    let ids: Vec<String> = of_sale.into_inner().refunds.into_iter().map(|r| r.external_id).collect();
    assert_eq!(ids, ["ref-0", "ref-2", "ref-4"]);
    let applied = h.attribution.list_refunds(list("", pb::RefundState::Applied)).await.unwrap().into_inner().refunds;
    let ids: Vec<&str> = applied.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(ids, ["ref-1", "ref-3"], "the unattributed sale's refunds applied at once");
    let pending = h.attribution.list_refunds(list(&w.anonymous.id, pb::RefundState::Pending)).await.unwrap();
    assert!(pending.into_inner().refunds.is_empty());

    // A token belongs to its query; bad filters are field violations.
    let first_page = h
        .attribution
        .list_refunds(pb::ListRefundsRequest { program_id: p.clone(), page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut foreign = list(&w.sale.id, pb::RefundState::Unspecified);
    foreign.page_token = first_page.next_page_token;
    let status = h.attribution.list_refunds(foreign).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["page_token"]);
    let status = h.attribution.list_refunds(list("nope", pb::RefundState::Unspecified)).await.unwrap_err();
    assert_eq!(violations(&status), ["sale_id"]);
    let mut bad_state = list("", pb::RefundState::Unspecified);
    bad_state.state = 42;
    let status = h.attribution.list_refunds(bad_state).await.unwrap_err();
    assert_eq!(violations(&status), ["state"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_show_their_kind_and_refund() {
    let mut h = start().await;
    let w = h.world("Sagas Co").await;
    let p = w.program_id.clone();
    let refunded =
        h.attribution.record_refund(refund(&p, "ref-1", by_id(&w.sale), "10.00")).await.unwrap().into_inner();

    let saga = h.attribution.get_saga(pb::GetSagaRequest { id: refunded.saga_id.clone() }).await.unwrap().into_inner();
    assert_eq!(
        (saga.kind.as_str(), saga.refund_id.as_str(), saga.sale_id.as_str()),
        ("CLAWBACK_SALE", refunded.id.as_str(), w.sale.id.as_str())
    );
    assert_eq!(saga.state, pb::SagaState::Running as i32);
    let settle = h.attribution.get_saga(pb::GetSagaRequest { id: w.sale.saga_id.clone() }).await.unwrap().into_inner();
    assert_eq!((settle.kind.as_str(), settle.refund_id.as_str()), ("SETTLE_SALE", ""));

    let list = |kind: &str| pb::ListSagasRequest { program_id: p.clone(), kind: kind.into(), ..Default::default() };
    let all = h.attribution.list_sagas(list("")).await.unwrap().into_inner();
    assert_eq!(all.total_size, 2);
    let kinds: Vec<&str> = all.sagas.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["SETTLE_SALE", "CLAWBACK_SALE"], "oldest first");
    let settles = h.attribution.list_sagas(list("SETTLE_SALE")).await.unwrap().into_inner();
    assert_eq!((settles.total_size, settles.sagas[0].id.as_str()), (1, w.sale.saga_id.as_str()));
    let clawbacks = h.attribution.list_sagas(list("CLAWBACK_SALE")).await.unwrap().into_inner();
    assert_eq!((clawbacks.total_size, clawbacks.sagas[0].id.as_str()), (1, refunded.saga_id.as_str()));
    let status = h.attribution.list_sagas(list("SETTLE")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["kind"]);

    // A running clawback cannot be retried.
    let status = h.attribution.retry_saga(pb::RetrySagaRequest { id: refunded.saga_id.clone() }).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "SAGA_NOT_FAILED"));
}

/// Issue 10 item 2: a token of another program finds none of this
/// program's links, sales, sagas or refunds (NOT_FOUND exactly as for ids
/// that do not exist), cannot list, record into or retry in it, and writes
/// nothing.
#[tokio::test]
async fn another_programs_token_finds_nothing_and_writes_nothing() {
    use accrue_kit::auth::Role;
    use accrue_kit::client::AuthChannel;
    use accrue_proto::attribution::v1::attribution_service_client::AttributionServiceClient;
    let mut h = start().await;
    let w = h.world("Mine").await;
    let other = h.world("Other").await;
    let refund = h
        .attribution
        .record_refund(pb::RecordRefundRequest {
            program_id: w.program_id.clone(),
            external_id: "r-1".into(),
            sale: Some(SaleRef::SaleId(w.sale.id.clone())),
            amount: Some(gbp("10.00")),
            occurred_at: Some(ts("2024-03-02T00:00:00Z")),
            reason: "probe".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut scoped: AttributionServiceClient<AuthChannel> =
        h.services.client_for(&h.attribution_url, "other-admin", Role::Admin, &other.program_id);
    let random = uuid::Uuid::now_v7().to_string();
    let shape = |status: tonic::Status, id: &str| (status.code(), status.message().replace(id, "<id>"));

    let foreign = scoped.get_sale(pb::GetSaleRequest { id: w.sale.id.clone() }).await.unwrap_err();
    let missing = scoped.get_sale(pb::GetSaleRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(shape(foreign, &w.sale.id), shape(missing, &random));
    let foreign = scoped.get_saga(pb::GetSagaRequest { id: w.sale.saga_id.clone() }).await.unwrap_err();
    let missing = scoped.get_saga(pb::GetSagaRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(shape(foreign, &w.sale.saga_id), shape(missing, &random));
    let foreign = scoped.get_refund(pb::GetRefundRequest { id: refund.id.clone() }).await.unwrap_err();
    let missing = scoped.get_refund(pb::GetRefundRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(shape(foreign, &refund.id), shape(missing, &random));
    let foreign = scoped.get_link(pb::GetLinkRequest { id: w.sale.link_id.clone() }).await.unwrap_err();
    let missing = scoped.get_link(pb::GetLinkRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(shape(foreign, &w.sale.link_id), shape(missing, &random));
    let retried = scoped.retry_saga(pb::RetrySagaRequest { id: w.sale.saga_id.clone() }).await.unwrap_err();
    assert_eq!(retried.code(), Code::NotFound);

    let listed = scoped
        .list_sales(pb::ListSalesRequest { program_id: w.program_id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    let missing =
        scoped.list_sales(pb::ListSalesRequest { program_id: random.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(shape(listed, &w.program_id), shape(missing, &random));
    let sagas = scoped.list_sagas(pb::ListSagasRequest { program_id: w.program_id.clone(), ..Default::default() });
    assert_eq!(sagas.await.unwrap_err().code(), Code::NotFound);
    let refunds =
        scoped.list_refunds(pb::ListRefundsRequest { program_id: w.program_id.clone(), ..Default::default() });
    assert_eq!(refunds.await.unwrap_err().code(), Code::NotFound);

    let before = h.refunds(&w.program_id).await.len();
    let recorded = scoped
        .record_sale(pb::RecordSaleRequest {
            program_id: w.program_id.clone(),
            external_id: "probe".into(),
            customer_external_id: "cust-1".into(),
            event_type: 0,
            amount: Some(gbp("5.00")),
            product_code: String::new(),
            service_code: String::new(),
            occurred_at: Some(ts("2024-03-03T00:00:00Z")),
        })
        .await
        .unwrap_err();
    assert_eq!(recorded.code(), Code::NotFound);
    let refunded = scoped
        .record_refund(pb::RecordRefundRequest {
            program_id: w.program_id.clone(),
            external_id: "r-probe".into(),
            sale: Some(SaleRef::SaleId(w.sale.id.clone())),
            amount: Some(gbp("1.00")),
            occurred_at: Some(ts("2024-03-02T00:00:00Z")),
            reason: "probe".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refunded.code(), Code::NotFound);
    assert_eq!(h.refunds(&w.program_id).await.len(), before, "no refund written");
    let sale = h.get_sale(&w.sale.id).await;
    assert_eq!(sale.refunded_amount, Some(gbp("10.00")), "only the first refund counts");
    let sales = h
        .attribution
        .list_sales(pb::ListSalesRequest { program_id: w.program_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sales.sales.len(), 2, "no sale written");
    // Its own program answers.
    scoped.get_sale(pb::GetSaleRequest { id: other.sale.id.clone() }).await.unwrap();
}
