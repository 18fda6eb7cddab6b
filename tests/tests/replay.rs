//! The Online Retail replay end to end (DESIGN §7): the first 2,000 invoices
//! of the UCI data set through the five real services on a fresh database,
//! then the ledger is checked against the sales, the earnings summary against
//! the ledger, and a second replay must add nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use accrue_cli::replay::{ProgressMode, ReplayOptions, replay};
use accrue_e2e::{TestStack, all_entries, all_sales, amount, data_dir};
use accrue_proto::attribution::v1::SaleState;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1::EarningKind;
use rust_decimal::Decimal;

const INVOICES: usize = 2_000;

fn signed(entry: &lpb::Entry) -> Decimal {
    let value = amount(entry.amount.as_ref()).unwrap();
    if entry.entry_type == lpb::EntryType::Debit as i32 { -value } else { value }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_online_retail_posts_exact_commissions_once() {
    let data = data_dir();
    assert!(data.join("online_retail.csv.gz").is_file(), "data set missing at {}", data.display());
    let env = TestStack::start().await.expect("stack starts");
    let config_dir = tempfile::tempdir().unwrap();
    let mut options = ReplayOptions::new(&data);
    options.limit_invoices = Some(INVOICES);
    options.config_out = config_dir.path().join("config.json");
    options.progress = ProgressMode::Quiet;

    let started = Instant::now();
    let first = replay(options.clone(), &env.stack.endpoints).await.expect("first replay");
    eprintln!("{first}\n(first replay {:?})", started.elapsed());

    // Every invoice is accounted for.
    assert_eq!(first.invoices_read, INVOICES as u64);
    assert_eq!(first.invoices_accounted(), first.invoices_read);
    assert!(first.sales_recorded > 1_000, "most invoices are sales: {}", first.sales_recorded);
    assert!(first.credit_invoices > 0 && first.credit_lines_counted >= first.credit_invoices);
    assert_eq!(first.pending, 0, "no sale left pending");
    assert_eq!(first.sagas_stuck, 0);
    assert_eq!(first.failed, 0, "no sale failed");
    assert_eq!(first.settled as u64, first.sales_with_customer);
    assert_eq!(first.unattributed as u64, first.sales_recorded - first.sales_with_customer);
    assert!(first.commission.total > Decimal::ZERO);
    assert_eq!(
        first.commission.total,
        first.commission.direct + first.commission.split + first.commission.r#override + first.commission.margin
    );
    assert!(first.commission.r#override > Decimal::ZERO, "the tree earns overrides");
    assert!(first.commission.split > Decimal::ZERO, "split links earn splits");
    assert!(!first.payouts.is_empty());

    // The configuration file describes what was created.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&options.config_out).unwrap()).expect("config is JSON");
    assert_eq!(config["program"]["id"], first.program_id.as_str());
    assert!(config["partners"].as_array().unwrap().len() >= 220);
    assert!(config["agreements"].as_array().unwrap().len() > 1);
    assert!(!config["customers"].as_object().unwrap().is_empty());

    // For every settled sale Σ(DIRECT + SPLIT) = its base commission, exactly,
    // and Σ of all its lines = its total commission.
    let clients = &env.clients;
    let sales = all_sales(clients, &first.program_id).await.unwrap();
    assert_eq!(sales.len() as u64, first.sales_recorded);
    let entries = all_entries(clients, &first.program_id).await.unwrap();
    assert!(!entries.is_empty());
    let mut base_by_sale: HashMap<&str, Decimal> = HashMap::new();
    let mut total_by_sale: HashMap<&str, Decimal> = HashMap::new();
    for entry in entries.iter().filter(|e| e.status != lpb::EntryStatus::Voided as i32) {
        let value = signed(entry);
        *total_by_sale.entry(&entry.sale_id).or_default() += value;
        if entry.kind == EarningKind::Direct as i32 || entry.kind == EarningKind::Split as i32 {
            *base_by_sale.entry(&entry.sale_id).or_default() += value;
        }
    }
    let mut settled = 0;
    for sale in &sales {
        if sale.state == SaleState::Settled as i32 {
            settled += 1;
            let base = amount(sale.base_commission.as_ref()).unwrap();
            let posted = base_by_sale.get(sale.id.as_str()).copied().unwrap_or_default();
            assert_eq!(posted, base, "sale {} ({}): direct + split = base commission", sale.id, sale.external_id);
            let total = amount(sale.total_commission.as_ref()).unwrap();
            let all = total_by_sale.get(sale.id.as_str()).copied().unwrap_or_default();
            assert_eq!(all, total, "sale {} ({}): lines = total commission", sale.id, sale.external_id);
        } else {
            assert_eq!(
                sale.state,
                SaleState::Unattributed as i32,
                "sale {} is settled or unattributed",
                sale.external_id
            );
            assert!(
                !total_by_sale.contains_key(sale.id.as_str()),
                "unattributed sale {} posts nothing",
                sale.external_id
            );
        }
    }
    assert_eq!(settled, first.settled);

    // Σ ledger lines per partner and kind = GetEarningsSummary.
    let mut by_partner: BTreeMap<String, [Decimal; 5]> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.status != lpb::EntryStatus::Voided as i32) {
        let sums = by_partner.entry(entry.partner_id.clone()).or_default();
        let value = signed(entry);
        let slot = match EarningKind::try_from(entry.kind).unwrap() {
            EarningKind::Direct => 0,
            EarningKind::Split => 1,
            EarningKind::Override => 2,
            EarningKind::Margin => 3,
            EarningKind::Unspecified => panic!("entry {} has no kind", entry.id),
        };
        sums[slot] += value;
        sums[4] += value;
    }
    let summary = clients
        .ledger
        .clone()
        .get_earnings_summary(lpb::GetEarningsSummaryRequest {
            program_id: first.program_id.clone(),
            partner_ids: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut reported: BTreeMap<String, [Decimal; 5]> = BTreeMap::new();
    for s in &summary.summaries {
        assert_eq!(s.currency_code, "GBP");
        reported.insert(
            s.partner_id.clone(),
            [
                amount(s.direct.as_ref()).unwrap(),
                amount(s.split.as_ref()).unwrap(),
                amount(s.r#override.as_ref()).unwrap(),
                amount(s.margin.as_ref()).unwrap(),
                amount(s.total.as_ref()).unwrap(),
            ],
        );
    }
    by_partner.retain(|_, sums| sums.iter().any(|v| !v.is_zero()));
    reported.retain(|_, sums| sums.iter().any(|v| !v.is_zero()));
    assert_eq!(by_partner, reported, "earnings summary = Σ ledger lines per partner");
    let grand: Decimal = by_partner.values().map(|s| s[4]).sum();
    assert_eq!(grand, first.commission.total);

    // Replaying the same invoices again adds nothing.
    let second = replay(options.clone(), &env.stack.endpoints).await.expect("second replay");
    assert_eq!(second.program_id, first.program_id, "same program (CreateProgram is idempotent)");
    assert_eq!(second.sales_recorded, first.sales_recorded);
    assert_eq!(second.settled, first.settled);
    assert_eq!(second.unattributed, first.unattributed);
    assert_eq!(second.commission, first.commission);
    let payouts = |s: &accrue_cli::replay::Summary| {
        s.payouts.iter().map(|m| (m.period.clone(), m.payout_count, m.amount)).collect::<Vec<_>>()
    };
    assert_eq!(payouts(&second), payouts(&first), "payout runs are idempotent");
    assert_eq!(all_sales(clients, &first.program_id).await.unwrap().len(), sales.len(), "no new sales");
    assert_eq!(all_entries(clients, &first.program_id).await.unwrap().len(), entries.len(), "no new entries");

    env.shutdown().await.expect("clean shutdown");
}
