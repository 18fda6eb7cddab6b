//! The ClawbackSale saga end to end (issue 9; DESIGN §3, §4 "Refunds"): the
//! five services on ephemeral ports over a fresh Postgres database per test,
//! real gRPC between them. After the SettleSale tests in `saga.rs`: every step
//! twice yields one effect; a failure injected at each step unwinds to a
//! clean slate and RetrySaga then applies the refund; a crash after each step
//! resumes on a new worker and the refund applies once. Plus: a refund
//! recorded while its sale is still settling waits, two refunds of one sale
//! apply in sequence order, and GetSaga / ListSagas show both kinds.
//!
//! The world: a £100 sale at 10% with splits 3000/2000 bps and a 1% level-1
//! override posts DIRECT 5.00, SPLIT 3.00 and 2.00, OVERRIDE 1.00 (Σ 11.00).
//! A £25 refund claws back round(11.00 × 25/100) = 2.75, line by line 1.25,
//! 0.75, 0.50, 0.25; the remaining £75 claws back the other 8.25 and every
//! line is REVERSED.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use accrue_attribution::{ClawbackStep, SagaOptions, TestHooks};
use accrue_e2e::Clients;
use accrue_e2e::fixtures::{dec, gbp, payment, record_and_settle, ts};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::attribution::v1::record_refund_request::Sale as SaleRef;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1::{EarningKind, Money};
use accrue_testkit::TestDb;
use rust_decimal::Decimal;
use tonic::Code;

use super::world::{
    World, get_sale, logged_output, logged_outputs, quick, setup, start, start_hooked, wait_lapsed, wait_saga,
    wait_step,
};

fn amount(money: Option<&Money>) -> Decimal {
    money.map_or(Decimal::ZERO, |m| dec(&m.amount))
}

/// Records a £100 sale by `cust-1` and waits until it is SETTLED.
async fn settled_sale(c: &mut Clients, w: &World, external_id: &str) -> apb::Sale {
    let request = payment(&w.program_id, external_id, "cust-1", "100.00", "", "2024-03-01T12:00:00Z");
    let (sale, entries) = record_and_settle(c, request).await;
    assert_eq!(entries.len(), 4, "{entries:#?}");
    sale
}

fn refund_request(w: &World, sale: &apb::Sale, external_id: &str, value: &str) -> apb::RecordRefundRequest {
    apb::RecordRefundRequest {
        program_id: w.program_id.clone(),
        external_id: external_id.into(),
        sale: Some(SaleRef::SaleId(sale.id.clone())),
        amount: Some(gbp(value)),
        occurred_at: Some(ts("2024-03-10T12:00:00Z")),
        reason: format!("refund {external_id}"),
    }
}

async fn record_refund(c: &mut Clients, w: &World, sale: &apb::Sale, external_id: &str, value: &str) -> apb::Refund {
    let refund = c.attribution.record_refund(refund_request(w, sale, external_id, value)).await.expect("record refund");
    let refund = refund.into_inner();
    assert_eq!(refund.state, apb::RefundState::Pending as i32, "{refund:#?}");
    assert!(!refund.saga_id.is_empty());
    refund
}

async fn get_refund(c: &mut Clients, id: &str) -> apb::Refund {
    c.attribution.get_refund(apb::GetRefundRequest { id: id.into() }).await.expect("get refund").into_inner()
}

/// The sale's entries of one type (ListEntries with `entry_type`).
async fn entries_of(c: &mut Clients, w: &World, sale_id: &str, entry_type: lpb::EntryType) -> Vec<lpb::Entry> {
    c.ledger
        .list_entries(lpb::ListEntriesRequest {
            program_id: w.program_id.clone(),
            sale_id: sale_id.into(),
            entry_type: entry_type as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list entries")
        .into_inner()
        .entries
}

fn status_name(status: i32) -> &'static str {
    lpb::EntryStatus::try_from(status).map_or("?", |s| s.as_str_name())
}

/// (partner, kind) → Σ amount of `entries`.
fn by_line(entries: &[&lpb::Entry]) -> BTreeMap<(String, i32), Decimal> {
    let mut out = BTreeMap::new();
    for e in entries {
        *out.entry((e.partner_id.clone(), e.kind)).or_insert(Decimal::ZERO) += amount(e.amount.as_ref());
    }
    out
}

fn per_line(w: &World, direct: &str, a: &str, b: &str, over: &str) -> BTreeMap<(String, i32), Decimal> {
    BTreeMap::from([
        ((w.seller.clone(), EarningKind::Direct as i32), dec(direct)),
        ((w.split_a.clone(), EarningKind::Split as i32), dec(a)),
        ((w.split_b.clone(), EarningKind::Split as i32), dec(b)),
        ((w.parent.clone(), EarningKind::Override as i32), dec(over)),
    ])
}

/// What a sale's ledger shows after its refunds: the live (non-voided)
/// debits per line, the credit lines' statuses, and every debit's link.
struct Ledger {
    live_debits: Vec<lpb::Entry>,
    credit_statuses: Vec<&'static str>,
}

async fn ledger(c: &mut Clients, w: &World, sale_id: &str) -> Ledger {
    // A settlement that failed and was retried leaves its first run's lines VOIDED.
    let credits: Vec<lpb::Entry> = entries_of(c, w, sale_id, lpb::EntryType::Credit)
        .await
        .into_iter()
        .filter(|l| l.status != lpb::EntryStatus::Voided as i32)
        .collect();
    assert_eq!(credits.len(), 4, "the sale's one live set of credit lines: {credits:#?}");
    let debits = entries_of(c, w, sale_id, lpb::EntryType::Debit).await;
    for debit in &debits {
        assert_eq!(debit.entry_type, lpb::EntryType::Debit as i32);
        let line = credits.iter().find(|l| l.id == debit.reverses_entry_id);
        let line = line.unwrap_or_else(|| panic!("debit {} reverses no line of the sale: {debit:#?}", debit.id));
        assert_eq!((&line.partner_id, line.kind), (&debit.partner_id, debit.kind), "a debit mirrors its line");
        assert!(!debit.refund_id.is_empty());
    }
    let live_debits: Vec<lpb::Entry> =
        debits.into_iter().filter(|d| d.status != lpb::EntryStatus::Voided as i32).collect();
    Ledger { live_debits, credit_statuses: credits.iter().map(|l| status_name(l.status)).collect() }
}

impl Ledger {
    fn debits_of(&self, refund_id: &str) -> Vec<&lpb::Entry> {
        self.live_debits.iter().filter(|d| d.refund_id == refund_id).collect()
    }
}

/// The refund is APPLIED with `clawback`, posted as exactly one debit per line
/// with `lines` amounts.
async fn assert_applied(c: &mut Clients, w: &World, refund: &apb::Refund, ledger: &Ledger, lines: [&str; 4]) {
    let got = get_refund(c, &refund.id).await;
    assert_eq!(got.state, apb::RefundState::Applied as i32, "{got:#?}");
    assert!(got.failure_reason.is_empty(), "{got:#?}");
    let debits = ledger.debits_of(&refund.id);
    assert_eq!(debits.len(), 4, "one debit per line, once: {debits:#?}");
    assert_eq!(by_line(&debits), per_line(w, lines[0], lines[1], lines[2], lines[3]));
    let total: Decimal = lines.iter().map(|l| dec(l)).sum();
    assert_eq!(amount(got.clawback_amount.as_ref()), total, "the refund's clawback is Σ its debits");
}

/// When `step`'s output was logged in `saga` (no earlier than it succeeded).
fn logged_at(saga: &apb::Saga, step: &str) -> (i64, i32) {
    let outputs = logged_outputs(saga, step);
    let (event, _) = outputs.first().expect("step output logged");
    let t = event.event_time.as_ref().expect("event time");
    (t.seconds, t.nanos)
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_then_the_full_refund_claw_back_every_line_in_order() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db, quick()).await;
    let w = setup(&mut c, "Clawback Co").await;
    let sale = settled_sale(&mut c, &w, "inv-1").await;

    let first = record_refund(&mut c, &w, &sale, "ref-1", "25.00").await;
    let saga = wait_saga(&mut c, &first.saga_id).await;
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    assert_eq!((saga.kind.as_str(), saga.refund_id.as_str()), ("CLAWBACK_SALE", first.id.as_str()));
    for step in ClawbackStep::ALL {
        assert_eq!(logged_outputs(&saga, step).len(), 1, "{step}'s output logged once: {saga:#?}");
    }
    let resolve = logged_output(&saga, ClawbackStep::Resolve);
    assert_eq!((resolve["sale_amount"].as_str(), resolve["refunded_total"].as_str()), (Some("100.00"), Some("25.00")));
    assert_eq!(resolve["rounding_mode"], 1, "the mode the sale was settled with (half away from zero)");
    let after_first = ledger(&mut c, &w, &sale.id).await;
    assert_applied(&mut c, &w, &first, &after_first, ["1.25", "0.75", "0.50", "0.25"]).await;
    assert_eq!(after_first.credit_statuses, ["ENTRY_STATUS_PENDING"; 4], "a partial clawback reverses no line");
    for debit in &after_first.live_debits {
        assert_eq!(debit.status, lpb::EntryStatus::Pending as i32, "a debit travels with its pending line");
    }
    let partly = get_sale(&mut c, &sale.id).await;
    assert_eq!(partly.state, apb::SaleState::PartiallyRefunded as i32);
    assert_eq!(amount(partly.refunded_amount.as_ref()), dec("25.00"));

    // Two refunds recorded back to back apply in sequence order.
    let second = record_refund(&mut c, &w, &sale, "ref-2", "50.00").await;
    let third = record_refund(&mut c, &w, &sale, "ref-3", "25.00").await;
    assert_eq!((second.sequence, third.sequence), (2, 3));
    let third_saga = wait_saga(&mut c, &third.saga_id).await;
    let second_saga = wait_saga(&mut c, &second.saga_id).await;
    assert_eq!(second_saga.state, apb::SagaState::Done as i32, "{second_saga:#?}");
    assert_eq!(third_saga.state, apb::SagaState::Done as i32, "{third_saga:#?}");
    assert!(
        logged_at(&second_saga, "apply") <= logged_at(&third_saga, "resolve"),
        "refund 3 resolved only after refund 2 applied: {second_saga:#?} {third_saga:#?}"
    );
    let full = ledger(&mut c, &w, &sale.id).await;
    // T = 75: target round(11.00 × 0.75) = 8.25, Δ 5.50 over what each line has left.
    assert_applied(&mut c, &w, &second, &full, ["2.50", "1.50", "1.00", "0.50"]).await;
    // T = 100: every line gives back the rest.
    assert_applied(&mut c, &w, &third, &full, ["1.25", "0.75", "0.50", "0.25"]).await;
    assert_eq!(full.credit_statuses, ["ENTRY_STATUS_REVERSED"; 4], "a line clawed back in full is REVERSED");
    let all: Vec<&lpb::Entry> = full.live_debits.iter().collect();
    assert_eq!(by_line(&all), per_line(&w, "5.00", "3.00", "2.00", "1.00"), "every line back exactly");
    for debit in &full.live_debits {
        assert_eq!(debit.status, lpb::EntryStatus::Reversed as i32, "debits go with their reversed line");
    }
    let refunded = get_sale(&mut c, &sale.id).await;
    assert_eq!(refunded.state, apb::SaleState::Refunded as i32);
    assert_eq!(amount(refunded.refunded_amount.as_ref()), dec("100.00"));
    let exceeded = c.attribution.record_refund(refund_request(&w, &sale, "ref-4", "0.01")).await.unwrap_err();
    assert_eq!(exceeded.code(), Code::FailedPrecondition);

    // GetSaga and ListSagas show both kinds.
    let settle = c.attribution.get_saga(apb::GetSagaRequest { id: sale.saga_id.clone() }).await.unwrap().into_inner();
    assert_eq!((settle.kind.as_str(), settle.refund_id.as_str()), ("SETTLE_SALE", ""));
    let list = |kind: &str| apb::ListSagasRequest {
        program_id: w.program_id.clone(),
        state: apb::SagaState::Done as i32,
        kind: kind.into(),
        ..Default::default()
    };
    let all = c.attribution.list_sagas(list("")).await.unwrap().into_inner();
    assert_eq!(all.total_size, 4);
    let clawbacks = c.attribution.list_sagas(list("CLAWBACK_SALE")).await.unwrap().into_inner();
    let refunds: Vec<&str> = clawbacks.sagas.iter().map(|s| s.refund_id.as_str()).collect();
    assert_eq!(refunds, [first.id.as_str(), second.id.as_str(), third.id.as_str()]);
    let settles = c.attribution.list_sagas(list("SETTLE_SALE")).await.unwrap().into_inner();
    assert_eq!(settles.sagas.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [sale.saga_id.as_str()]);
    let unknown = c.attribution.list_sagas(list("REFUND")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_recorded_while_the_sale_settles_waits_then_applies() {
    let db = TestDb::create().await.unwrap();
    // SettleSale's compute fails transiently on its first four attempts
    // (≈ 0.75 s of backoff); ClawbackSale has no compute step.
    let slow = TestHooks { inject_transient: Some(("compute", 4)), ..TestHooks::default() };
    let (stack, mut c) = start_hooked(&db, quick(), slow).await;
    let w = setup(&mut c, "Clawback Co").await;
    let request = payment(&w.program_id, "inv-slow", "cust-1", "100.00", "", "2024-03-01T12:00:00Z");
    let sale = c.attribution.record_sale(request).await.unwrap().into_inner();
    let refund = record_refund(&mut c, &w, &sale, "ref-slow", "25.00").await;

    let saga = wait_saga(&mut c, &refund.saga_id).await;
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let waited = saga
        .events
        .iter()
        .any(|e| e.step == "resolve" && e.event == "failed" && e.detail.contains("waiting for the sale's settlement"));
    assert!(waited, "the clawback waited for the settlement: {saga:#?}");
    let settle = wait_saga(&mut c, &sale.saga_id).await;
    assert_eq!(settle.state, apb::SagaState::Done as i32);
    assert!(logged_at(&settle, "post") <= logged_at(&saga, "resolve"), "settled (with post's success) first");
    let after = ledger(&mut c, &w, &sale.id).await;
    assert_applied(&mut c, &w, &refund, &after, ["1.25", "0.75", "0.50", "0.25"]).await;
    let sale = get_sale(&mut c, &sale.id).await;
    assert_eq!(sale.state, apb::SaleState::PartiallyRefunded as i32);
    assert_eq!(amount(sale.base_commission.as_ref()), dec("10.00"), "the settlement's totals stay");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_step_twice_yields_one_effect() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start_hooked(&db, quick(), TestHooks { repeat_actions: true, ..TestHooks::default() }).await;
    let w = setup(&mut c, "Clawback Co").await;
    let sale = settled_sale(&mut c, &w, "inv-twice").await;
    let refund = record_refund(&mut c, &w, &sale, "ref-twice", "25.00").await;
    let saga = wait_saga(&mut c, &refund.saga_id).await;
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let after = ledger(&mut c, &w, &sale.id).await;
    assert_eq!(after.live_debits.len(), 4, "one set of debits: {:#?}", after.live_debits);
    let all_debits = entries_of(&mut c, &w, &sale.id, lpb::EntryType::Debit).await;
    assert_eq!(all_debits.len(), 4, "nothing posted twice, nothing voided");
    assert_applied(&mut c, &w, &refund, &after, ["1.25", "0.75", "0.50", "0.25"]).await;
    assert_eq!(get_sale(&mut c, &sale.id).await.state, apb::SaleState::PartiallyRefunded as i32);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_at_each_step_unwinds_then_retry_applies() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db, quick()).await;
    let w = setup(&mut c, "Clawback Co").await;
    stack.shutdown().await.unwrap();

    for (n, step) in ClawbackStep::ALL.into_iter().enumerate() {
        // The sale settles without faults (the hooks apply to both kinds).
        let (stack, mut c) = start(&db, quick()).await;
        let sale = settled_sale(&mut c, &w, &format!("inv-fail-{step}")).await;
        stack.shutdown().await.unwrap();

        // A full refund, so that the unwind must also give the REVERSED lines back.
        let faulty = TestHooks {
            inject_failure: Some((step.name(), format!("boom at {step}"))),
            repeat_actions: true, // undo twice too: still one clean slate
            ..TestHooks::default()
        };
        let (stack, mut c) = start_hooked(&db, quick(), faulty).await;
        let refund = record_refund(&mut c, &w, &sale, &format!("ref-fail-{step}"), "100.00").await;
        let saga = wait_saga(&mut c, &refund.saga_id).await;
        assert_eq!(saga.state, apb::SagaState::Failed as i32, "{step}: {saga:#?}");
        assert!(saga.failure_reason.contains(&format!("boom at {step}")), "{step}: {}", saga.failure_reason);
        let failed = get_refund(&mut c, &refund.id).await;
        assert_eq!(failed.state, apb::RefundState::Failed as i32, "{step}");
        assert!(failed.failure_reason.contains("injected failure"), "{step}: {}", failed.failure_reason);
        assert!(failed.clawback_amount.is_none(), "{step}");
        let undone: Vec<&str> =
            saga.events.iter().filter(|e| e.event == "undo_finished").map(|e| e.step.as_str()).collect();
        let with_undo = [ClawbackStep::Reverse, ClawbackStep::Apply];
        let mut expected: Vec<&str> =
            ClawbackStep::ALL[..=n].iter().filter(|s| with_undo.contains(s)).map(|s| s.name()).collect();
        expected.reverse();
        assert_eq!(undone, expected, "{step}: every started step undone, newest first");
        // Clean slate: no live debit, every line back to PENDING, the sale SETTLED.
        let slate = ledger(&mut c, &w, &sale.id).await;
        assert!(slate.live_debits.is_empty(), "{step}: {:#?}", slate.live_debits);
        assert_eq!(slate.credit_statuses, ["ENTRY_STATUS_PENDING"; 4], "{step}");
        let unchanged = get_sale(&mut c, &sale.id).await;
        assert_eq!(unchanged.state, apb::SaleState::Settled as i32, "{step}");
        assert_eq!(amount(unchanged.refunded_amount.as_ref()), dec("100.00"), "{step}: the refund stays recorded");
        stack.shutdown().await.unwrap();

        // RetrySaga puts the refund back to PENDING (no workers: it stays so).
        let idle = SagaOptions { workers: 0, ..quick() };
        let (stack, mut c) = start(&db, idle).await;
        let retried = c.attribution.retry_saga(apb::RetrySagaRequest { id: refund.saga_id.clone() }).await.unwrap();
        assert_eq!(retried.into_inner().state, apb::SagaState::Running as i32);
        let reopened = get_refund(&mut c, &refund.id).await;
        assert_eq!((reopened.state, reopened.failure_reason.as_str()), (apb::RefundState::Pending as i32, ""));
        stack.shutdown().await.unwrap();

        // Without the fault the new run applies the refund once.
        let (stack, mut c) = start(&db, quick()).await;
        let saga = wait_saga(&mut c, &refund.saga_id).await;
        assert_eq!(saga.state, apb::SagaState::Done as i32, "{step} retry: {saga:#?}");
        assert!(saga.events.iter().any(|e| e.detail.contains("\"run\":2")), "{step}: run 2 logged");
        let applied = ledger(&mut c, &w, &sale.id).await;
        assert_applied(&mut c, &w, &refund, &applied, ["5.00", "3.00", "2.00", "1.00"]).await;
        assert_eq!(applied.credit_statuses, ["ENTRY_STATUS_REVERSED"; 4], "{step}");
        assert_eq!(get_sale(&mut c, &sale.id).await.state, apb::SaleState::Refunded as i32, "{step}");
        let again = c.attribution.retry_saga(apb::RetrySagaRequest { id: refund.saga_id.clone() }).await.unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        stack.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_of_a_failed_settlement_fails_until_the_sale_is_retried() {
    let db = TestDb::create().await.unwrap();
    let faulty = TestHooks { inject_failure: Some(("post", "ledger down for good".into())), ..TestHooks::default() };
    let (stack, mut c) = start_hooked(&db, quick(), faulty).await;
    let w = setup(&mut c, "Clawback Co").await;
    let request = payment(&w.program_id, "inv-failed", "cust-1", "100.00", "", "2024-03-01T12:00:00Z");
    let sale = c.attribution.record_sale(request).await.unwrap().into_inner();
    assert_eq!(wait_saga(&mut c, &sale.saga_id).await.state, apb::SagaState::Failed as i32);
    let refund = record_refund(&mut c, &w, &sale, "ref-of-failed", "25.00").await;
    let saga = wait_saga(&mut c, &refund.saga_id).await;
    assert_eq!(saga.state, apb::SagaState::Failed as i32, "{saga:#?}");
    assert!(saga.failure_reason.contains("retry the sale's saga first"), "{}", saga.failure_reason);
    assert_eq!(get_refund(&mut c, &refund.id).await.state, apb::RefundState::Failed as i32);
    assert_eq!(get_sale(&mut c, &sale.id).await.state, apb::SaleState::Failed as i32);
    stack.shutdown().await.unwrap();

    let (stack, mut c) = start(&db, quick()).await;
    c.attribution.retry_saga(apb::RetrySagaRequest { id: sale.saga_id.clone() }).await.unwrap();
    assert_eq!(wait_saga(&mut c, &sale.saga_id).await.state, apb::SagaState::Done as i32);
    c.attribution.retry_saga(apb::RetrySagaRequest { id: refund.saga_id.clone() }).await.unwrap();
    assert_eq!(wait_saga(&mut c, &refund.saga_id).await.state, apb::SagaState::Done as i32);
    let after = ledger(&mut c, &w, &sale.id).await;
    assert_applied(&mut c, &w, &refund, &after, ["1.25", "0.75", "0.50", "0.25"]).await;
    assert_eq!(get_sale(&mut c, &sale.id).await.state, apb::SaleState::PartiallyRefunded as i32);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_after_each_step_resumes_on_a_new_worker() {
    let db = TestDb::create().await.unwrap();
    let (stack, mut c) = start(&db, quick()).await;
    let w = setup(&mut c, "Clawback Co").await;
    stack.shutdown().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    for step in ClawbackStep::ALL {
        let (stack, mut c) = start(&db, quick()).await;
        let sale = settled_sale(&mut c, &w, &format!("inv-crash-{step}")).await;
        stack.shutdown().await.unwrap();

        let crashing = TestHooks { crash_after: Some(step.name()), ..TestHooks::default() };
        let single = SagaOptions { workers: 1, lease: Duration::from_secs(1), ..quick() };
        let (stack, mut c) = start_hooked(&db, single, crashing).await;
        let refund = record_refund(&mut c, &w, &sale, &format!("ref-crash-{step}"), "25.00").await;
        if step == ClawbackStep::Resolve {
            // It logs nothing of its own before the crash.
            wait_lapsed(&pool, &refund.saga_id).await;
        } else {
            wait_step(&mut c, &refund.saga_id, step).await;
        }
        stack.shutdown().await.unwrap();
        let owner: Option<String> = sqlx::query_scalar("SELECT owner FROM attribution.sagas WHERE id = $1::uuid")
            .bind(&refund.saga_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if step == ClawbackStep::Apply {
            assert!(owner.is_none(), "a done saga holds no lease");
        } else {
            assert!(owner.is_some(), "{step}: the crashed worker kept its lease");
        }

        let (stack, mut c) = start(&db, quick()).await;
        let saga = wait_saga(&mut c, &refund.saga_id).await;
        assert_eq!(saga.state, apb::SagaState::Done as i32, "{step}: {saga:#?}");
        assert!(saga.generation >= 2 || step == ClawbackStep::Apply, "{step}: claimed again");
        for done in ClawbackStep::ALL {
            assert_eq!(logged_outputs(&saga, done).len(), 1, "{step}: {done}'s output logged once");
        }
        let after = ledger(&mut c, &w, &sale.id).await;
        assert_eq!(entries_of(&mut c, &w, &sale.id, lpb::EntryType::Debit).await.len(), 4, "{step}: posted once");
        assert_applied(&mut c, &w, &refund, &after, ["1.25", "0.75", "0.50", "0.25"]).await;
        assert_eq!(get_sale(&mut c, &sale.id).await.state, apb::SaleState::PartiallyRefunded as i32, "{step}");
        stack.shutdown().await.unwrap();
    }
}
