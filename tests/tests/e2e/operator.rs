//! `accrue payouts …` / `accrue audit list` (issue 12 item 8) as a finance
//! operator uses them, through the CLI's library functions against a real
//! stack: list, reject, approve several, mark paid, show, create, delete,
//! export, audit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use accrue_cli::operator;
use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::Clients;
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use accrue_proto::payouts::v1::payout_service_client::PayoutServiceClient;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestDb;

const SECRET: &str = "accrue-e2e-operator-secret-0123456789abcdef";

fn gbp(amount: &str) -> Option<types::Money> {
    Some(types::Money { currency_code: "GBP".into(), amount: amount.into() })
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finance_operator_works_through_the_payouts() {
    let db = TestDb::create().await.unwrap();
    let mut config = StackConfig::for_tests(db.url.clone());
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.unwrap();
    let mut c = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let program = c
        .hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Operator".into(),
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
    // 2011-01-05, clearing five days later.
    let (occurred, clears) = (1_294_185_600, 1_294_185_600 + 5 * 86_400);
    for (i, amount) in ["30.00", "40.00", "50.00"].into_iter().enumerate() {
        let partner = c
            .hierarchy
            .create_partner(hpb::CreatePartnerRequest {
                program_id: program.clone(),
                partner: Some(hpb::Partner { display_name: format!("P{i}"), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let line = lpb::EntryInput {
            partner_id: partner.clone(),
            kind: types::EarningKind::Direct as i32,
            amount: gbp(amount),
            level: 0,
            source_partner_id: partner,
            occurred_at: ts(occurred),
            clears_at: ts(clears),
            breakdown: Some(types::CommissionBreakdown {
                model: "FIXED".into(),
                formula: format!("fixed {amount}"),
                ..Default::default()
            }),
        };
        let posting =
            lpb::SalePosting { idempotency_key: format!("k{i}"), sale_id: format!("s{i}"), lines: vec![line] };
        c.ledger
            .post_entries(lpb::PostEntriesRequest { program_id: program.clone(), postings: vec![posting] })
            .await
            .unwrap();
    }
    c.ledger.clear_matured(lpb::ClearMaturedRequest { program_id: program.clone(), as_of: None }).await.unwrap();
    c.payouts
        .create_payout_run(ppb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2011-01".into(),
            cutoff: None,
            minimum_amount: None,
            request_id: String::new(),
        })
        .await
        .unwrap();

    // The operator's own finance token: its subject is the audit actor.
    let minter = Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let token = minter
        .mint(
            "olga@finance",
            &[Role::Finance],
            std::slice::from_ref(&program),
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let mut client: PayoutServiceClient<_> = accrue_kit::client::connect(
        &stack.endpoints.payouts,
        accrue_kit::client::BULK_TIMEOUT,
        &Credential::token(token),
    )
    .unwrap();

    let filter = ppb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() };
    let listed = operator::list(&mut client, filter.clone()).await.unwrap();
    assert_eq!(listed.len(), 3);
    let table = operator::render_payouts(&listed, false);
    assert!(table.starts_with("ID ") && table.contains("PENDING_APPROVAL") && table.contains("30.00 GBP"), "{table}");
    let json = operator::render_payouts(&listed, true);
    for line in json.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["status"], "PENDING_APPROVAL");
    }

    let ids: Vec<String> = listed.iter().map(|p| p.id.clone()).collect();
    let rejected = operator::reject(&mut client, &ids[2], "duplicate", "").await.unwrap();
    assert_eq!(rejected.status, "REJECTED");
    let (approved, failed) = operator::approve(&mut client, Some(&program), &ids, "approve-jan").await.unwrap();
    assert_eq!(approved.len(), 2);
    assert_eq!(failed.len(), 1, "the rejected one cannot be approved: {failed:?}");
    assert!(failed[0].1.starts_with("FAILED_PRECONDITION"), "{failed:?}");
    let paid = operator::mark_paid(&mut client, &ids[0], "bank-7", "bank_transfer", Some("2011-02-01T09:00:00Z"), "")
        .await
        .unwrap();
    assert_eq!((paid.status.as_str(), paid.payment_reference.as_str()), ("PAID", "bank-7"));
    assert_eq!(paid.paid_time, "2011-02-01T09:00:00Z");
    let shown = operator::show(&mut client, &ids[1]).await.unwrap();
    assert_eq!((shown.status.as_str(), shown.approved_by.as_str()), ("APPROVED", "olga@finance"));
    assert!(operator::mark_paid(&mut client, &ids[1], "x", "y", Some("yesterday"), "").await.is_err());

    // The rejected payout's entries are payable again: a manual payout takes
    // them, and deleting it (still awaiting approval) releases them again.
    let manual = ppb::CreatePayoutRequest {
        program_id: program.clone(),
        partner_id: rejected.partner_id.clone(),
        currency_code: "GBP".into(),
        period: "2011-01".into(),
        cutoff: None,
        notes: "re-issued".into(),
        request_id: "manual-olga-1".into(),
    };
    let created = operator::create(&mut client, manual.clone()).await.unwrap();
    assert_eq!((created.status.as_str(), created.amount.as_str()), ("PENDING_APPROVAL", rejected.amount.as_str()));
    assert_eq!(operator::create(&mut client, manual).await.unwrap().id, created.id, "the same command again");
    let deleted = operator::delete(&mut client, &created.id, "issued by mistake", "").await.unwrap();
    assert_eq!(deleted.status, "DELETED");

    let mut csv_bytes = Vec::new();
    let export = ppb::ExportPayoutsRequest { program_id: program.clone(), ..Default::default() };
    let rows = operator::export(&mut client, export, &mut csv_bytes).await.unwrap();
    assert_eq!(rows, 3);
    assert_eq!(csv::Reader::from_reader(csv_bytes.as_slice()).records().count(), 3);

    let audit = operator::audit(
        &mut client,
        ppb::ListAuditEventsRequest { program_id: program.clone(), actor: "olga@finance".into(), ..Default::default() },
    )
    .await
    .unwrap();
    let changes: Vec<(String, String)> = audit.iter().map(|e| (e.from.clone(), e.to.clone())).collect();
    assert_eq!(changes.len(), 6, "reject, two approvals, one payment, a manual payout and its deletion: {audit:#?}");
    assert!(changes.contains(&("PENDING_APPROVAL".into(), "DELETED".into())));
    assert!(changes.contains(&("APPROVED".into(), "PAID".into())));
    let table = operator::render_audit(&audit, false);
    assert!(table.contains("PENDING_APPROVAL → REJECTED") && table.contains("duplicate"), "{table}");
    stack.shutdown().await.unwrap();
}
