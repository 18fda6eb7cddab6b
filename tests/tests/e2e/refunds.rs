//! Refunds and clawbacks end to end (issue 9; DESIGN §4 "Refunds", §5), over
//! the five real services on a fresh database: RecordRefund → ClawbackSale
//! saga → ledger.ReverseSale, then the payout runs that net the debits.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use accrue_e2e::fixtures::{
    dec, default_agreement, gbp, link_with_lead, override_plan, partner, payment, percentage_on_payment, program_with,
    record_and_settle, split_link_with_lead, ts,
};
use accrue_e2e::{Clients, TestStack, amount, sale_entries};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use accrue_proto::types::v1::EarningKind;
use rust_decimal::{Decimal, RoundingStrategy};

/// A GBP program; `auto_approve` approves entries as they clear.
async fn program(c: &mut Clients, auto_approve: bool) -> String {
    program_with(c, |p| p.auto_approve_cleared = auto_approve).await
}

fn refund(program_id: &str, external_id: &str, sale_id: &str, amount: &str, at: &str) -> apb::RecordRefundRequest {
    apb::RecordRefundRequest {
        program_id: program_id.into(),
        external_id: external_id.into(),
        sale: Some(apb::record_refund_request::Sale::SaleId(sale_id.into())),
        amount: Some(gbp(amount)),
        occurred_at: Some(ts(at)),
        reason: "returned goods".into(),
    }
}

/// Records a refund and waits until it is no longer PENDING; returns it.
async fn refund_and_apply(c: &mut Clients, request: apb::RecordRefundRequest) -> apb::Refund {
    let recorded = c.attribution.record_refund(request).await.expect("record refund").into_inner();
    wait_refund(c, &recorded.id).await
}

async fn wait_refund(c: &mut Clients, id: &str) -> apb::Refund {
    for _ in 0..600 {
        let refund = c.attribution.get_refund(apb::GetRefundRequest { id: id.into() }).await.unwrap().into_inner();
        if refund.state != apb::RefundState::Pending as i32 {
            assert_eq!(refund.state, apb::RefundState::Applied as i32, "{refund:#?}");
            return refund;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("refund {id} still pending after 30 s");
}

fn money(entry: &lpb::Entry) -> Decimal {
    amount(entry.amount.as_ref()).unwrap()
}

fn credits(entries: &[lpb::Entry]) -> Vec<&lpb::Entry> {
    entries.iter().filter(|e| e.entry_type == lpb::EntryType::Credit as i32).collect()
}

/// Σ debits per line they reverse.
fn debits_by_line(entries: &[lpb::Entry]) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for e in entries.iter().filter(|e| e.entry_type == lpb::EntryType::Debit as i32) {
        assert!(!e.reverses_entry_id.is_empty(), "debit {} names its line", e.id);
        *out.entry(e.reverses_entry_id.clone()).or_default() += money(e);
    }
    out
}

async fn sale(c: &mut Clients, id: &str) -> apb::Sale {
    c.attribution.get_sale(apb::GetSaleRequest { id: id.into() }).await.unwrap().into_inner()
}

async fn entry(c: &mut Clients, id: &str) -> lpb::Entry {
    c.ledger.get_entry(lpb::GetEntryRequest { id: id.into() }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_003_reversal_a_full_refund_posts_one_linked_debit_and_reverses_the_line() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c, false).await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;
    let (settled, lines) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "150.00", "", "2024-03-01T12:00:00Z")).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(money(&lines[0]), dec("15.00"));

    let applied =
        refund_and_apply(&mut c, refund(&program_id, "r-1", &settled.id, "150.00", "2024-03-05T09:00:00Z")).await;
    assert_eq!(amount(applied.clawback_amount.as_ref()).unwrap(), dec("15.00"));
    assert_eq!(applied.sequence, 1);
    let entries = sale_entries(&c, &program_id, &settled.id).await.unwrap();
    let debits: Vec<&lpb::Entry> = entries.iter().filter(|e| e.entry_type == lpb::EntryType::Debit as i32).collect();
    assert_eq!(debits.len(), 1, "{entries:#?}");
    assert_eq!((money(debits[0]), debits[0].reverses_entry_id.as_str()), (dec("15.00"), lines[0].id.as_str()));
    assert_eq!(debits[0].refund_id, applied.id);
    let original = entry(&mut c, &lines[0].id).await;
    assert_eq!(original.status, lpb::EntryStatus::Reversed as i32, "{original:#?}");
    let after = sale(&mut c, &settled.id).await;
    assert_eq!(after.state, apb::SaleState::Refunded as i32);
    assert_eq!(amount(after.refunded_amount.as_ref()).unwrap(), dec("150.00"));
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_half_refunds_claw_back_every_line_pro_rata_through_splits_and_three_override_levels() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c, false).await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    let top = partner(&mut c, &program_id, "", "").await;
    let middle = partner(&mut c, &program_id, "", &top).await;
    let parent = partner(&mut c, &program_id, "", &middle).await;
    let seller = partner(&mut c, &program_id, "", &parent).await;
    let (a, b) = (partner(&mut c, &program_id, "", "").await, partner(&mut c, &program_id, "", "").await);
    override_plan(&mut c, &program_id, cpb::OverrideBasis::BaseCommission, &["0.10", "0.05", "0.03"]).await;
    split_link_with_lead(&mut c, &program_id, &seller, &[(&a, 2500), (&b, 1500)], "cust-1").await;
    // C = 12.35 (123.45 × 0.10 = 12.345): owner 7.41, a 3.09, b 1.85; overrides 1.24, 0.62, 0.37.
    let (settled, lines) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "123.45", "", "2024-03-01T12:00:00Z")).await;
    let mut kinds: Vec<(i32, Decimal)> = lines.iter().map(|e| (e.kind, money(e))).collect();
    kinds.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
    let (direct, split, over) = (EarningKind::Direct as i32, EarningKind::Split as i32, EarningKind::Override as i32);
    assert_eq!(
        kinds,
        vec![
            (direct, dec("7.41")),
            (split, dec("3.09")),
            (split, dec("1.85")),
            (over, dec("1.24")),
            (over, dec("0.62")),
            (over, dec("0.37")),
        ],
        "{lines:#?}"
    );
    let total: Decimal = lines.iter().map(money).sum();

    // First half (61.72 of 123.45): target round(14.58 × 61.72 / 123.45) = 7.29.
    let first =
        refund_and_apply(&mut c, refund(&program_id, "r-1", &settled.id, "61.72", "2024-03-02T09:00:00Z")).await;
    let target =
        (total * dec("61.72") / dec("123.45")).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(amount(first.clawback_amount.as_ref()).unwrap(), target);
    let entries = sale_entries(&c, &program_id, &settled.id).await.unwrap();
    let given_back = debits_by_line(&entries);
    assert_eq!(given_back.values().copied().sum::<Decimal>(), target);
    for line in credits(&entries) {
        let back = given_back.get(&line.id).copied().unwrap_or_default();
        assert!(back <= money(line), "line {} gave back {back} of {}", line.id, money(line));
        // Pro rata: a penny of allocation plus half a penny of the target's rounding.
        let exact = money(line) * dec("61.72") / dec("123.45");
        assert!((back - exact).abs() < dec("0.015"), "line {}: {back} vs exact {exact}", line.id);
    }
    assert_eq!(sale(&mut c, &settled.id).await.state, apb::SaleState::PartiallyRefunded as i32);

    // Second half: every line given back exactly, every line REVERSED.
    let second =
        refund_and_apply(&mut c, refund(&program_id, "r-2", &settled.id, "61.73", "2024-03-03T09:00:00Z")).await;
    assert_eq!(second.sequence, 2);
    assert_eq!(amount(second.refunded_total.as_ref()).unwrap(), dec("123.45"));
    assert_eq!(amount(second.clawback_amount.as_ref()).unwrap(), total - target);
    let entries = sale_entries(&c, &program_id, &settled.id).await.unwrap();
    let given_back = debits_by_line(&entries);
    for line in credits(&entries) {
        assert_eq!(given_back.get(&line.id).copied(), Some(money(line)), "line {} reversed exactly", line.id);
        assert_eq!(line.status, lpb::EntryStatus::Reversed as i32, "line {} REVERSED", line.id);
    }
    assert_eq!(sale(&mut c, &settled.id).await.state, apb::SaleState::Refunded as i32);

    // The earnings summary nets the clawback.
    let summary = c
        .ledger
        .get_earnings_summary(lpb::GetEarningsSummaryRequest {
            program_id: program_id.clone(),
            partner_ids: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let s = &summary.summaries[0];
    assert_eq!(amount(s.split.as_ref()).unwrap(), dec("3.09"));
    assert_eq!(amount(s.clawback.as_ref()).unwrap(), dec("3.09"));
    assert_eq!(amount(s.total.as_ref()).unwrap(), Decimal::ZERO);
    stack.shutdown().await.unwrap();
}

/// ClearMatured at `as_of`, then the month's payout run (minimum 1.00); returns the run.
async fn month_end(c: &mut Clients, program_id: &str, period: &str, as_of: &str) -> ppb::PayoutRun {
    c.ledger
        .clear_matured(lpb::ClearMaturedRequest { program_id: program_id.into(), as_of: Some(ts(as_of)) })
        .await
        .unwrap();
    c.payouts
        .create_payout_run(ppb::CreatePayoutRunRequest {
            program_id: program_id.into(),
            currency_code: "GBP".into(),
            period: period.into(),
            cutoff: Some(ts(as_of)),
            minimum_amount: Some(gbp("1.00")),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("payout run {period}: {status:?}"))
        .into_inner()
}

async fn payable(c: &mut Clients, program_id: &str, partner_id: &str) -> Decimal {
    let balances = c
        .ledger
        .get_balances(lpb::GetBalancesRequest {
            program_id: program_id.into(),
            partner_ids: vec![partner_id.into()],
            currency_code: "GBP".into(),
        })
        .await
        .unwrap()
        .into_inner();
    amount(balances.balances[0].payable.as_ref()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_after_payout_nets_into_later_runs_and_the_negative_balance_carries_until_covered() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c, true).await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    link_with_lead(&mut c, &program_id, &seller, "cust-1").await;

    // January: 10.00 earned and reserved by the January payout.
    let (january, lines) =
        record_and_settle(&mut c, payment(&program_id, "s-jan", "cust-1", "100.00", "", "2024-01-10T12:00:00Z")).await;
    let run = month_end(&mut c, &program_id, "2024-01", "2024-01-31T23:59:59Z").await;
    assert_eq!((run.payout_count, amount(run.total_amount.as_ref()).unwrap()), (1, dec("10.00")));

    // February: the January sale is refunded in full after its payout. The debit
    // is APPROVED at once and clears at the refund's time; the reserved line is REVERSED.
    refund_and_apply(&mut c, refund(&program_id, "r-jan", &january.id, "100.00", "2024-02-05T09:00:00Z")).await;
    let entries = sale_entries(&c, &program_id, &january.id).await.unwrap();
    let debit = entries.iter().find(|e| e.entry_type == lpb::EntryType::Debit as i32).expect("a debit");
    assert_eq!(debit.status, lpb::EntryStatus::Approved as i32, "{debit:#?}");
    assert_eq!(debit.clears_at, Some(ts("2024-02-05T09:00:00Z")));
    assert_eq!(entry(&mut c, &lines[0].id).await.status, lpb::EntryStatus::Reversed as i32);

    // February earns 3.00: net −7.00, no payout, carried forward.
    record_and_settle(&mut c, payment(&program_id, "s-feb", "cust-1", "30.00", "", "2024-02-10T12:00:00Z")).await;
    let run = month_end(&mut c, &program_id, "2024-02", "2024-02-29T23:59:59Z").await;
    assert_eq!(run.payout_count, 0, "{run:#?}");
    assert_eq!(payable(&mut c, &program_id, &seller).await, dec("-7.00"));

    // March earns 5.00: still −2.00, still no payout.
    record_and_settle(&mut c, payment(&program_id, "s-mar", "cust-1", "50.00", "", "2024-03-10T12:00:00Z")).await;
    let run = month_end(&mut c, &program_id, "2024-03", "2024-03-31T23:59:59Z").await;
    assert_eq!(run.payout_count, 0, "{run:#?}");
    assert_eq!(payable(&mut c, &program_id, &seller).await, dec("-2.00"));

    // April earns 4.00: covered; the payout is the net 2.00.
    record_and_settle(&mut c, payment(&program_id, "s-apr", "cust-1", "40.00", "", "2024-04-10T12:00:00Z")).await;
    let run = month_end(&mut c, &program_id, "2024-04", "2024-04-30T23:59:59Z").await;
    assert_eq!((run.payout_count, amount(run.total_amount.as_ref()).unwrap()), (1, dec("2.00")), "{run:#?}");
    assert_eq!(payable(&mut c, &program_id, &seller).await, Decimal::ZERO);
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_refund_sent_twenty_times_concurrently_is_recorded_and_clawed_back_once() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program_id = program(&mut c, false).await;
    default_agreement(&mut c, &program_id, percentage_on_payment("0.10")).await;
    let seller = partner(&mut c, &program_id, "", "").await;
    let other = partner(&mut c, &program_id, "", "").await;
    split_link_with_lead(&mut c, &program_id, &seller, &[(&other, 5000)], "cust-1").await;
    let (settled, lines) =
        record_and_settle(&mut c, payment(&program_id, "s-1", "cust-1", "99.99", "", "2024-03-01T12:00:00Z")).await;

    let request = refund(&program_id, "r-1", &settled.id, "33.33", "2024-03-02T09:00:00Z");
    let calls = (0..20).map(|_| {
        let mut client = c.attribution.clone();
        let request = request.clone();
        tokio::spawn(async move { client.record_refund(request).await.map(tonic::Response::into_inner) })
    });
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        ids.insert(call.await.unwrap().expect("every repeat answers with the refund").id);
    }
    assert_eq!(ids.len(), 1, "one refund: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let applied = wait_refund(&mut c, &id).await;
    let listed = c
        .attribution
        .list_refunds(apb::ListRefundsRequest { program_id: program_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.refunds.len(), 1);
    let entries = sale_entries(&c, &program_id, &settled.id).await.unwrap();
    let debits: Vec<&lpb::Entry> = entries.iter().filter(|e| e.entry_type == lpb::EntryType::Debit as i32).collect();
    assert_eq!(debits.len(), lines.len(), "one debit per line: {debits:#?}");
    let clawed: Decimal = debits.iter().map(|e| money(e)).sum();
    assert_eq!(clawed, amount(applied.clawback_amount.as_ref()).unwrap());
    // 10.00 over owner 5.00 / split 5.00; a third of the sale back: 3.33, by largest remainder 1.67 + 1.66.
    assert_eq!(clawed, dec("3.33"));
    assert_eq!(amount(sale(&mut c, &settled.id).await.refunded_amount.as_ref()).unwrap(), dec("33.33"));
    stack.shutdown().await.unwrap();
}
