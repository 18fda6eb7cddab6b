//! PayoutService over real gRPC, with the real hierarchy and ledger services
//! on a fresh Postgres database per test — no mocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn payout_run_pays_partners_over_the_threshold_and_carries_the_rest_forward() {
    let mut h = start().await;
    let program = h.program("50.00").await;
    let ann = h.partner(&program, "Ann").await;
    let bob = h.partner(&program, "Bob").await;
    let cat = h.partner(&program, "Cat").await;
    let dan = h.partner(&program, "Dan").await;
    h.hierarchy
        .update_partner_status(hpb::UpdatePartnerStatusRequest {
            id: dan.to_string(),
            status: types::PartnerStatus::Suspended as i32,
            reason: "kyc".into(),
        })
        .await
        .unwrap();

    // January: Ann 40 + 25 (≥ 50), Bob 20 (< 50), Dan 100 (suspended: not
    // paid, carried forward — issue 12 item 4).
    h.earn(&program, "ann-1", ann, "40.00", 10).await;
    h.earn(&program, "ann-2", ann, "25.00", 15).await;
    h.earn(&program, "bob-1", bob, "20.00", 10).await;
    h.earn(&program, "dan-1", dan, "100.00", 10).await;
    // Clearing in February: not payable in January.
    h.earn(&program, "ann-3", ann, "30.00", 30).await;
    h.earn(&program, "cat-1", cat, "80.00", 30).await;
    h.clear_all(&program).await;

    let run = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(run.period, "2011-01");
    assert_eq!(run.currency_code, "GBP");
    assert_eq!(run.cutoff, Some(prost_types::Timestamp { seconds: 1_296_518_399, nanos: 999_999_000 }));
    assert_eq!((run.payout_count, run.total_amount.clone()), (1, gbp("65.00")));
    assert_eq!((run.carried_forward_count, run.carried_forward_amount.clone()), (2, gbp("120.00")));

    let payouts = h.payouts(&program, &run.id).await;
    assert_eq!(payouts.len(), 1);
    let payout = &payouts[0];
    let run_id = Uuid::parse_str(&run.id).unwrap();
    assert_eq!(payout.id, Uuid::new_v5(&run_id, ann.as_bytes()).to_string());
    assert_eq!(payout.partner_id, ann.to_string());
    assert_eq!(payout.amount, gbp("65.00"));
    assert_eq!(payout.entry_count, 2);
    assert_eq!(payout.status, pb::PayoutStatus::PendingApproval as i32);
    assert_eq!(payout.period, "2011-01");
    let fetched = h.payouts.get_payout(pb::GetPayoutRequest { id: payout.id.clone() }).await.unwrap().into_inner();
    assert_eq!(&fetched, payout);

    // The ledger holds Ann's two January entries for this payout, nothing else.
    let entries = h
        .ledger
        .list_entries(lpb::ListEntriesRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let reserved: Vec<&str> =
        entries.iter().filter(|e| !e.payout_id.is_empty()).map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(reserved, vec!["ann-1", "ann-2"]);
    assert!(entries.iter().filter(|e| !e.payout_id.is_empty()).all(|e| e.payout_id == payout.id));

    // The audit log has the creation.
    let events: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, from_status, to_status FROM payout_audit_events")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(events, vec![("test-admin".into(), "UNSPECIFIED".into(), "PENDING_APPROVAL".into())]);

    // The same run again: the same run, nothing new.
    let again = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(again, run);
    assert_eq!(h.count("payouts").await, 1);
    assert_eq!(h.count("payout_audit_events").await, 1);
    assert_eq!(h.count("payout_runs").await, 1);

    // February with a lower minimum: Bob's carried 20 now pays, with Ann's and Cat's February earnings.
    let february = h.run(&program, "2011-02", Some("10.00")).await.unwrap();
    assert_ne!(february.id, run.id);
    assert_eq!((february.payout_count, february.total_amount.clone()), (3, gbp("130.00")));
    assert_eq!(february.carried_forward_count, 1, "Dan, still suspended");
    let mut paid: Vec<(String, Option<types::Money>)> =
        h.payouts(&program, &february.id).await.into_iter().map(|p| (p.partner_id, p.amount)).collect();
    paid.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected =
        vec![(ann.to_string(), gbp("30.00")), (bob.to_string(), gbp("20.00")), (cat.to_string(), gbp("80.00"))];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(paid, expected);

    // Filters and paging over the whole program.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .payouts
            .list_payouts(pb::ListPayoutsRequest {
                program_id: program.clone(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.payouts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].id, payout.id, "oldest first");
    let anns = h
        .payouts
        .list_payouts(pb::ListPayoutsRequest {
            program_id: program.clone(),
            partner_id: ann.to_string(),
            status: pb::PayoutStatus::PendingApproval as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert_eq!(anns.len(), 2);
    let approved = h
        .payouts
        .list_payouts(pb::ListPayoutsRequest {
            program_id: program.clone(),
            status: pb::PayoutStatus::Approved as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert!(approved.is_empty());
}

#[tokio::test]
async fn a_crashed_run_resumes_without_duplicates() {
    let mut h = start().await;
    let program = h.program("0").await;
    let ann = h.partner(&program, "Ann").await;
    let bob = h.partner(&program, "Bob").await;
    h.earn(&program, "ann-1", ann, "12.00", 1).await;
    h.earn(&program, "bob-1", bob, "7.50", 1).await;
    h.clear_all(&program).await;

    // A run that crashed after the ledger reserved Ann's entries but before
    // any payout row was written.
    let run_id = Uuid::now_v7();
    let program_id = Uuid::parse_str(&program).unwrap();
    sqlx::query(
        "INSERT INTO payout_runs (id, program_id, currency, period, cutoff, minimum_amount, state) \
         VALUES ($1, $2, 'GBP', '2011-01', '2011-01-31T23:59:59.999999Z', 0, 'RUNNING')",
    )
    .bind(run_id)
    .bind(program_id)
    .execute(&h.pool)
    .await
    .unwrap();
    let ann_payout = Uuid::new_v5(&run_id, ann.as_bytes());
    let reserved = h
        .ledger
        .reserve_for_payout(lpb::ReserveForPayoutRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            cutoff: ts(1_296_518_399),
            reservations: vec![lpb::PartnerReservation {
                partner_id: ann.to_string(),
                payout_id: ann_payout.to_string(),
                minimum_amount: gbp("0"),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(reserved[0].reserved);

    let run = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(run.id, run_id.to_string(), "the RUNNING run is resumed");
    assert_eq!((run.payout_count, run.total_amount.clone()), (2, gbp("19.50")));
    let payouts = h.payouts(&program, &run.id).await;
    let ann_row = payouts.iter().find(|p| p.partner_id == ann.to_string()).unwrap();
    assert_eq!(
        (ann_row.id.as_str(), ann_row.amount.clone(), ann_row.entry_count),
        (ann_payout.to_string().as_str(), gbp("12.00"), 1)
    );
    assert_eq!(h.count("payout_audit_events").await, 2);
    let again = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(again, run);
    assert_eq!(h.count("payouts").await, 2);
}

#[tokio::test]
async fn invalid_runs_are_rejected_and_create_nothing() {
    let mut h = start().await;
    let program = h.program("50.00").await;

    let status = h
        .payouts
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: "nope".into(),
            currency_code: "GBX".into(),
            period: "2011-13".into(),
            cutoff: None,
            minimum_amount: Some(types::Money { currency_code: "USD".into(), amount: "1.001".into() }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    for field in ["program_id", "currency_code", "period", "minimum_amount.amount"] {
        assert!(fields.iter().any(|f| f == field), "{field} not in {fields:?}");
    }

    let status = h
        .payouts
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2011-01".into(),
            cutoff: None,
            minimum_amount: Some(types::Money { currency_code: "USD".into(), amount: "5".into() }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = h.run(&Uuid::now_v7().to_string(), "2011-01", None).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The program's minimum is in GBP: a USD run must name its own minimum.
    let status = h
        .payouts
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "USD".into(),
            period: "2011-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "MINIMUM_CURRENCY_MISMATCH"));
    assert_eq!(h.count("payout_runs").await, 0);

    let status = h.payouts.get_payout(pb::GetPayoutRequest { id: Uuid::now_v7().to_string() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = h
        .payouts
        .list_payouts(pb::ListPayoutsRequest { program_id: program, status: 42, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// Issue 9 item 6: a refund after the payout reserved the line posts an
/// at-once debit that nets against the next run; a negative net creates no
/// payout, is not counted as carried forward (it is a debt, not an unpaid
/// balance) and carries in the ledger until later earnings cover it.
#[tokio::test]
async fn refund_debits_net_against_later_runs_and_a_negative_net_creates_no_payout() {
    let mut h = start().await;
    let program = h.program("5.00").await;
    let ann = h.partner(&program, "Ann").await;
    let bob = h.partner(&program, "Bob").await;
    h.earn(&program, "ann-1", ann, "30.00", 5).await;
    h.earn(&program, "bob-1", bob, "2.00", 5).await;
    h.clear_all(&program).await;
    let january = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!((january.payout_count, january.total_amount.clone()), (1, gbp("30.00")));
    assert_eq!((january.carried_forward_count, january.carried_forward_amount.clone()), (1, gbp("2.00")));

    // Ann's sale is refunded in full on 2 February, after the payout reserved it.
    let reversal = h
        .ledger
        .reverse_sale(lpb::ReverseSaleRequest {
            program_id: program.clone(),
            sale_id: "sale-ann-1".into(),
            idempotency_key: "refund-ann-1".into(),
            refund_id: Uuid::new_v4().to_string(),
            sale_amount: gbp("300.00"),
            refunded_total: gbp("300.00"),
            occurred_at: ts(JAN_5 + 28 * DAY),
            rounding_mode: 0,

            reason: "refund".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reversal.debits[0].status(), lpb::EntryStatus::Approved);
    assert_eq!(reversal.debits[0].amount, gbp("30.00"));

    // February: Ann earns 10.00 (net −20.00), Bob 4.00 more (6.00 ≥ 5.00).
    h.earn(&program, "ann-2", ann, "10.00", 36).await;
    h.earn(&program, "bob-2", bob, "4.00", 36).await;
    h.clear_all(&program).await;
    let february = h.run(&program, "2011-02", None).await.unwrap();
    assert_eq!((february.payout_count, february.total_amount.clone()), (1, gbp("6.00")));
    assert_eq!((february.carried_forward_count, february.carried_forward_amount.clone()), (0, gbp("0.00")));
    let payouts = h.payouts(&program, &february.id).await;
    assert_eq!(payouts.iter().map(|p| p.partner_id.clone()).collect::<Vec<_>>(), vec![bob.to_string()]);
    let balance = |balances: &[lpb::Balance], partner: Uuid| {
        balances.iter().find(|b| b.partner_id == partner.to_string()).unwrap().payable.clone()
    };
    let balances = h
        .ledger
        .get_balances(lpb::GetBalancesRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .balances;
    assert_eq!(balance(&balances, ann), gbp("-20.00"));

    // March: Ann earns 25.00 → net 5.00 reaches the minimum: one payout holding
    // the debit and both credits.
    h.earn(&program, "ann-3", ann, "25.00", 64).await;
    h.clear_all(&program).await;
    let march = h.run(&program, "2011-03", None).await.unwrap();
    assert_eq!((march.payout_count, march.total_amount.clone()), (1, gbp("5.00")));
    let payouts = h.payouts(&program, &march.id).await;
    assert_eq!(payouts.len(), 1);
    assert_eq!((payouts[0].partner_id.clone(), payouts[0].amount.clone()), (ann.to_string(), gbp("5.00")));
    assert_eq!(payouts[0].entry_count, 3);
    let balances = h
        .ledger
        .get_balances(lpb::GetBalancesRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .balances;
    assert_eq!(balance(&balances, ann), gbp("0.00"));
}

/// Issue 10 item 2: a finance token of another program cannot list, read or
/// run its payouts; each answer is NOT_FOUND as for a program or payout
/// that does not exist, and no run is created.
#[tokio::test]
async fn a_token_sees_only_its_programs_payouts() {
    use accrue_kit::auth::Role;
    let mut h = start().await;
    let program = h.program("50.00").await;
    let other = h.program("50.00").await;
    let ann = h.partner(&program, "Ann").await;
    h.earn(&program, "ann-1", ann, "80.00", 10).await;
    h.clear_all(&program).await;
    let run = h.run(&program, "2011-01", None).await.unwrap();
    assert_eq!(run.payout_count, 1);
    let payout = h
        .payouts
        .list_payouts(pb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .payouts
        .remove(0);

    let mut scoped: PayoutServiceClient<AuthChannel> =
        h.services.client_for(&h.payouts_url, "other-finance", Role::Finance, &other);
    let random = Uuid::now_v7().to_string();
    let shape = |status: tonic::Status, id: &str| (status.code(), status.message().replace(id, "<id>"));
    let foreign = scoped.get_payout(pb::GetPayoutRequest { id: payout.id.clone() }).await.unwrap_err();
    let missing = scoped.get_payout(pb::GetPayoutRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(shape(foreign, &payout.id), shape(missing, &random));
    let listed = scoped
        .list_payouts(pb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::NotFound);
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_runs").fetch_one(&h.pool).await.unwrap();
    let rerun = scoped
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2011-02".into(),
            cutoff: None,
            minimum_amount: None,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(rerun.code(), Code::NotFound);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM payout_runs").fetch_one(&h.pool).await.unwrap();
    assert_eq!(after, before, "no run created");
    // Its own program answers (empty).
    let own = scoped.list_payouts(pb::ListPayoutsRequest { program_id: other, ..Default::default() }).await.unwrap();
    assert!(own.into_inner().payouts.is_empty());
}

/// Issue 11 item 2: a request_id names one CreatePayoutRun request. The same
/// body again answers the same run; the same id with another body (another
/// period, another minimum) is ALREADY_EXISTS REQUEST_ID_REUSED and creates
/// no second run, as in every other service.
#[tokio::test]
async fn a_reused_request_id_with_another_body_is_already_exists() {
    use tonic_types::StatusExt;
    let mut h = start().await;
    let program = h.program("1.00").await;
    let request = |period: &str, minimum: &str| pb::CreatePayoutRunRequest {
        program_id: program.clone(),
        currency_code: "GBP".into(),
        period: period.into(),
        cutoff: None,
        minimum_amount: gbp(minimum),
        request_id: "month-end".into(),
    };
    let first = h.payouts.create_payout_run(request("2011-01", "1.00")).await.unwrap().into_inner();
    let again = h.payouts.create_payout_run(request("2011-01", "1.00")).await.unwrap().into_inner();
    assert_eq!(again, first);
    for (period, minimum) in [("2011-02", "1.00"), ("2011-01", "5.00")] {
        let reused = h.payouts.create_payout_run(request(period, minimum)).await.unwrap_err();
        let reason = reused.get_details_error_info().map(|info| info.reason).unwrap_or_default();
        assert_eq!((reused.code(), reason.as_str()), (tonic::Code::AlreadyExists, "REQUEST_ID_REUSED"), "{period}");
    }
    assert_eq!(h.count("payout_runs").await, 1, "no second run");
}

// ---- The payout lifecycle (issue 12) ----

/// Issue 12 item 1: the full from × to matrix over the public API. Every
/// move of seed 001 succeeds; every other is FAILED_PRECONDITION
/// INVALID_PAYOUT_TRANSITION naming from and to, and changes nothing (the
/// payout, its audit events and its ledger entries).
#[tokio::test]
async fn every_transition_of_the_matrix() {
    use pb::PayoutStatus as S;
    let mut h = start().await;
    let froms = [S::PendingApproval, S::Approved, S::Rejected, S::Processing, S::Paid, S::Failed, S::Deleted];
    let tos = [S::Approved, S::Rejected, S::Processing, S::Paid, S::Failed, S::Deleted];
    let allowed = [
        (S::PendingApproval, S::Approved),
        (S::Approved, S::Processing),
        (S::Processing, S::Paid),
        (S::Approved, S::Paid),
        (S::PendingApproval, S::Rejected),
        (S::PendingApproval, S::Deleted),
        (S::Processing, S::Failed),
        (S::Failed, S::Processing),
    ];
    let (program, _, payouts) = lifecycle_world(&mut h, froms.len() * tos.len(), "20.00").await;
    let mut cases = payouts.iter();
    for from in froms {
        for to in tos {
            let payout = cases.next().unwrap();
            for step in path_to(from) {
                move_to(&mut h.payouts, &payout.id, step, "ref-1").await.unwrap();
            }
            let before = payout_state(&mut h, &program, payout).await;
            assert_eq!(before.0.status(), from);
            let result = move_to(&mut h.payouts, &payout.id, to, "ref-1").await;
            if allowed.contains(&(from, to)) {
                let moved = result.unwrap_or_else(|e| panic!("{from:?} → {to:?}: {e:?}"));
                assert_eq!(moved.status(), to, "{from:?} → {to:?}");
                let after = payout_state(&mut h, &program, payout).await;
                assert_eq!(after.1, before.1 + 1, "one audit event for {from:?} → {to:?}");
            } else {
                let error = result.expect_err(&format!("{from:?} → {to:?} must be refused"));
                assert_eq!(error.code(), Code::FailedPrecondition, "{from:?} → {to:?}: {error:?}");
                assert_eq!(reason(&error), "INVALID_PAYOUT_TRANSITION");
                let info = error.get_details_error_info().unwrap();
                let name = |s: S| s.as_str_name().trim_start_matches("PAYOUT_STATUS_").to_string();
                assert_eq!(info.metadata.get("from"), Some(&name(from)), "{error:?}");
                assert_eq!(info.metadata.get("to"), Some(&name(to)), "{error:?}");
                assert_eq!(payout_state(&mut h, &program, payout).await, before, "{from:?} → {to:?} changed something");
            }
        }
    }
}

/// Issue 12 items 1–2: rejecting releases the entries, and the next run
/// reserves them for a new payout; an unknown id is NOT_FOUND; a reason is
/// required (INVALID_ARGUMENT, nothing changes).
#[tokio::test]
async fn a_rejected_payouts_entries_are_reserved_by_the_next_run() {
    let mut h = start().await;
    let (program, partners, payouts) = lifecycle_world(&mut h, 1, "30.00").await;
    let payout = &payouts[0];
    let error = h
        .payouts
        .reject_payout(pb::RejectPayoutRequest { id: payout.id.clone(), reason: " ".into(), request_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = move_to(&mut h.payouts, &Uuid::now_v7().to_string(), pb::PayoutStatus::Rejected, "").await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let rejected = move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Rejected, "").await.unwrap();
    assert_eq!(rejected.status(), pb::PayoutStatus::Rejected);
    assert_eq!(rejected.status_reason, "wrong bank details");
    let (_, _, entries) = payout_state(&mut h, &program, payout).await;
    assert!(entries.iter().all(|(_, _, payout_id)| payout_id.is_empty()), "released: {entries:?}");

    let next = h.run(&program, "2011-02", None).await.unwrap();
    assert_eq!(next.payout_count, 1);
    assert_eq!(next.total_amount, gbp("30.00"));
    let again = h.payouts(&program, &next.id).await.remove(0);
    assert_eq!(again.partner_id, partners[0].to_string());
    let (_, _, entries) = payout_state(&mut h, &program, &again).await;
    assert!(entries.iter().all(|(_, _, payout_id)| *payout_id == again.id), "reserved again: {entries:?}");
}

/// Issue 12: a failed payment keeps its entries reserved, is retried and
/// paid; the entries — a credit and a clawback debit — are then PAID with
/// the payout id and the final reference in their status events; the audit
/// log holds every action with the caller's subject; Σ PAID entries equals
/// Σ PAID payouts.
#[tokio::test]
async fn fail_retry_paid_settles_credits_and_debits_with_the_reference() {
    use pb::PayoutStatus as S;
    let mut h = start().await;
    let program = h.program("1.00").await;
    let ann = h.partner(&program, "Ann").await;
    h.earn(&program, "ann-1", ann, "50.00", 10).await;
    h.earn(&program, "ann-2", ann, "-8.00", 10).await;
    h.clear_all(&program).await;
    let run = h.run(&program, "2011-01", None).await.unwrap();
    let payout = h.payouts(&program, &run.id).await.remove(0);
    assert_eq!(payout.amount, gbp("42.00"));
    let mut finance: PayoutServiceClient<AuthChannel> =
        h.services.client_for(&h.payouts_url, "fiona@finance", accrue_kit::auth::Role::Finance, &program);
    move_to(&mut finance, &payout.id, S::Approved, "").await.unwrap();
    move_to(&mut finance, &payout.id, S::Processing, "bank-1").await.unwrap();
    let failed = move_to(&mut finance, &payout.id, S::Failed, "").await.unwrap();
    assert_eq!(failed.status_reason, "bank bounced");
    let (_, _, entries) = payout_state(&mut h, &program, &payout).await;
    assert!(entries.iter().all(|(_, _, p)| *p == payout.id), "a failed payout keeps its entries: {entries:?}");
    move_to(&mut finance, &payout.id, S::Processing, "bank-2").await.unwrap();
    let paid = move_to(&mut finance, &payout.id, S::Paid, "bank-2").await.unwrap();
    assert_eq!((paid.status(), paid.payment_reference.as_str()), (S::Paid, "bank-2"));
    assert_eq!((paid.payment_method.as_str(), paid.approved_by.as_str()), ("bank_transfer", "fiona@finance"));
    assert!(paid.paid_time.is_some());

    let (_, _, entries) = payout_state(&mut h, &program, &payout).await;
    assert_eq!(entries.len(), 2);
    for (id, status, payout_id) in &entries {
        assert_eq!(*status, lpb::EntryStatus::Paid as i32, "credit and debit are PAID");
        assert_eq!(*payout_id, payout.id);
        let entry = h.ledger.get_entry(lpb::GetEntryRequest { id: id.clone() }).await.unwrap().into_inner();
        let last = entry.history.last().unwrap();
        assert!(last.reason.contains(&payout.id) && last.reason.contains("bank-2"), "{last:#?}");
    }

    let events = h
        .payouts
        .list_audit_events(pb::ListAuditEventsRequest {
            program_id: program.clone(),
            payout_id: payout.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let moves: Vec<(i32, i32, &str)> = events.iter().map(|e| (e.from_status, e.to_status, e.actor.as_str())).collect();
    let f = "fiona@finance";
    assert_eq!(
        moves,
        vec![
            (S::Unspecified as i32, S::PendingApproval as i32, "test-admin"),
            (S::PendingApproval as i32, S::Approved as i32, f),
            (S::Approved as i32, S::Processing as i32, f),
            (S::Processing as i32, S::Failed as i32, f),
            (S::Failed as i32, S::Processing as i32, f),
            (S::Processing as i32, S::Paid as i32, f),
        ]
    );
    assert!(events[3].reason.contains("bank bounced") && events[5].reason.contains("bank-2"), "{events:#?}");
    // Paged one by one: the same events.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = h
            .payouts
            .list_audit_events(pb::ListAuditEventsRequest {
                program_id: program.clone(),
                actor: f.into(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, events[1..].to_vec());

    // Σ PAID entries (signed) = Σ PAID payouts.
    let stats = h
        .payouts
        .get_payout_stats(pb::GetPayoutStatsRequest { program_id: program.clone(), period: "2011-01".into() })
        .await
        .unwrap()
        .into_inner()
        .totals;
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].status(), stats[0].count, stats[0].amount.clone()), (S::Paid, 1, gbp("42.00")));
    let balances = h
        .ledger
        .get_balances(lpb::GetBalancesRequest {
            program_id: program.clone(),
            partner_ids: vec![ann.to_string()],
            currency_code: "GBP".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balances.balances[0].paid, gbp("42.00"), "{balances:#?}");
}

/// Issue 12: each id of a bulk approval succeeds or fails on its own; a
/// repeat with the same request id approves nothing twice.
#[tokio::test]
async fn bulk_approve_with_one_bad_id() {
    let mut h = start().await;
    let (program, _, payouts) = lifecycle_world(&mut h, 2, "20.00").await;
    let unknown = Uuid::now_v7().to_string();
    let request = pb::BulkApprovePayoutsRequest {
        program_id: program.clone(),
        ids: vec![payouts[0].id.clone(), unknown.clone(), payouts[1].id.clone()],
        request_id: "bulk-1".into(),
    };
    let results = h.payouts.bulk_approve_payouts(request.clone()).await.unwrap().into_inner().results;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].payout.as_ref().unwrap().status(), pb::PayoutStatus::Approved);
    assert_eq!(results[2].payout.as_ref().unwrap().status(), pb::PayoutStatus::Approved);
    let failure = results[1].failure.as_ref().unwrap();
    assert_eq!((failure.code.as_str(), failure.reason.as_str()), ("NOT_FOUND", "PAYOUT_NOT_FOUND"));
    assert_eq!(results[1].id, unknown);
    // Another program's payout fails alone, exactly as an unknown one.
    let (_, _, foreign) = lifecycle_world(&mut h, 1, "20.00").await;
    let mixed = h
        .payouts
        .bulk_approve_payouts(pb::BulkApprovePayoutsRequest {
            program_id: program.clone(),
            ids: vec![foreign[0].id.clone()],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let failure = mixed[0].failure.as_ref().unwrap();
    assert_eq!((failure.code.as_str(), failure.reason.as_str()), ("NOT_FOUND", "PAYOUT_NOT_FOUND"));
    let events = h.count("payout_audit_events").await;
    let again = h.payouts.bulk_approve_payouts(request).await.unwrap().into_inner().results;
    assert_eq!(again[0].payout, results[0].payout);
    assert_eq!(h.count("payout_audit_events").await, events, "a repeat approves nothing twice");
    // Without the request id, approving again is a refused move.
    let error = move_to(&mut h.payouts, &payouts[0].id, pb::PayoutStatus::Approved, "").await.unwrap_err();
    assert_eq!(reason(&error), "INVALID_PAYOUT_TRANSITION");
    // The same request id on that payout for another change: ALREADY_EXISTS.
    let error = h
        .payouts
        .mark_payout_processing(pb::MarkPayoutProcessingRequest {
            id: payouts[0].id.clone(),
            payment_reference: "x".into(),
            request_id: "bulk-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::AlreadyExists, "REQUEST_ID_REUSED".into()));
    // Malformed or repeated ids: INVALID_ARGUMENT, nothing approved.
    let bad =
        pb::BulkApprovePayoutsRequest { program_id: program.clone(), ids: vec!["x".into()], request_id: String::new() };
    assert_eq!(h.payouts.bulk_approve_payouts(bad).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(h.count("payout_audit_events").await, events);
}

/// Issue 12 item 4: with require_second_approver the run's creator may not
/// approve its payouts (PERMISSION_DENIED SAME_APPROVER, nothing changes);
/// another identity may. Without it, the creator may.
#[tokio::test]
async fn maker_checker() {
    use accrue_kit::auth::Role;
    let mut h = start().await;
    let program = h.program("1.00").await;
    let ann = h.partner(&program, "Ann").await;
    h.earn(&program, "ann-1", ann, "20.00", 10).await;
    h.clear_all(&program).await;
    h.require_second_approver(&program).await;
    let mut maker: PayoutServiceClient<AuthChannel> =
        h.services.client_for(&h.payouts_url, "maker@finance", Role::Finance, &program);
    let mut checker: PayoutServiceClient<AuthChannel> =
        h.services.client_for(&h.payouts_url, "checker@finance", Role::Finance, &program);
    let run = maker
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2011-01".into(),
            cutoff: None,
            minimum_amount: None,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let payout = h.payouts(&program, &run.id).await.remove(0);
    let events = h.count("payout_audit_events").await;
    let error = move_to(&mut maker, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::PermissionDenied, "SAME_APPROVER".into()));
    let bulk = maker
        .bulk_approve_payouts(pb::BulkApprovePayoutsRequest {
            program_id: program.clone(),
            ids: vec![payout.id.clone()],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bulk.results[0].failure.as_ref().unwrap().reason, "SAME_APPROVER");
    assert_eq!(h.count("payout_audit_events").await, events, "nothing changed");
    let approved = move_to(&mut checker, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap();
    assert_eq!(approved.approved_by, "checker@finance");

    // Off: the maker approves its own run's payouts.
    let other = h.program("1.00").await;
    let bob = h.partner(&other, "Bob").await;
    h.earn(&other, "bob-1", bob, "20.00", 10).await;
    h.clear_all(&other).await;
    let mut own: PayoutServiceClient<AuthChannel> =
        h.services.client_for(&h.payouts_url, "maker@finance", Role::Finance, &other);
    let run = own
        .create_payout_run(pb::CreatePayoutRunRequest {
            program_id: other.clone(),
            currency_code: "GBP".into(),
            period: "2011-01".into(),
            cutoff: None,
            minimum_amount: None,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let payout = h.payouts(&other, &run.id).await.remove(0);
    move_to(&mut own, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap();
}

/// Issue 12 item 1: approve and reject of one payout at the same time —
/// exactly one wins (the payout's row is locked for the change), the other
/// is FAILED_PRECONDITION INVALID_PAYOUT_TRANSITION; the state, the audit
/// log and the ledger agree with the winner.
#[tokio::test]
async fn concurrent_approve_and_reject_one_wins() {
    let mut h = start().await;
    let (program, _, payouts) = lifecycle_world(&mut h, 6, "20.00").await;
    for payout in &payouts {
        let (mut a, mut b) = (h.payouts.clone(), h.payouts.clone());
        let (id_a, id_b) = (payout.id.clone(), payout.id.clone());
        let approve = tokio::spawn(async move { move_to(&mut a, &id_a, pb::PayoutStatus::Approved, "").await });
        let reject = tokio::spawn(async move { move_to(&mut b, &id_b, pb::PayoutStatus::Rejected, "").await });
        let (approve, reject) = (approve.await.unwrap(), reject.await.unwrap());
        assert!(approve.is_ok() != reject.is_ok(), "exactly one wins: {approve:?} {reject:?}");
        let loser = approve.as_ref().err().or(reject.as_ref().err()).unwrap();
        assert!(matches!(loser.code(), Code::FailedPrecondition | Code::Aborted), "{loser:?}");
        let (now, events, entries) = payout_state(&mut h, &program, payout).await;
        assert_eq!(events, 2, "creation and the winner's event");
        if approve.is_ok() {
            assert_eq!(now.status(), pb::PayoutStatus::Approved);
            assert!(entries.iter().all(|(_, _, p)| *p == payout.id));
        } else {
            assert_eq!(now.status(), pb::PayoutStatus::Rejected);
            assert!(entries.iter().all(|(_, _, p)| p.is_empty()));
        }
    }
}

/// ListPayouts filters by period and currency; bad filters are INVALID_ARGUMENT.
#[tokio::test]
async fn list_payouts_filters_by_status_period_and_currency() {
    let mut h = start().await;
    let (program, _, payouts) = lifecycle_world(&mut h, 2, "20.00").await;
    move_to(&mut h.payouts, &payouts[0].id, pb::PayoutStatus::Approved, "").await.unwrap();
    let list = |status: pb::PayoutStatus, period: &str, currency: &str| pb::ListPayoutsRequest {
        program_id: program.clone(),
        status: status as i32,
        period: period.into(),
        currency_code: currency.into(),
        ..Default::default()
    };
    let approved = h.payouts.list_payouts(list(pb::PayoutStatus::Approved, "2011-01", "GBP")).await.unwrap();
    assert_eq!(approved.into_inner().payouts.len(), 1);
    let other = h.payouts.list_payouts(list(pb::PayoutStatus::Unspecified, "2011-02", "")).await.unwrap();
    assert!(other.into_inner().payouts.is_empty());
    let usd = h.payouts.list_payouts(list(pb::PayoutStatus::Unspecified, "", "USD")).await.unwrap();
    assert!(usd.into_inner().payouts.is_empty());
    let error = h.payouts.list_payouts(list(pb::PayoutStatus::Unspecified, "2011-13", "QQQ")).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("period") && error.message().contains("currency_code"), "{error:?}");
}

/// Every chunk of an export, concatenated.
async fn export(h: &mut Harness, request: pb::ExportPayoutsRequest) -> (Vec<u8>, i64) {
    let mut stream = h.payouts.export_payouts(request).await.unwrap().into_inner();
    let (mut bytes, mut rows) = (Vec::new(), 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.csv_chunk);
        rows += chunk.row_count;
    }
    (bytes, rows)
}

/// Issue 12 item 5: ExportPayouts streams RFC 4180 CSV that a CSV reader
/// parses back to the payouts ListPayouts lists, filtered the same way.
#[tokio::test]
async fn export_payouts_parses_back_to_the_listed_payouts() {
    let mut h = start().await;
    let (program, _, payouts) = lifecycle_world(&mut h, 3, "20.00").await;
    move_to(&mut h.payouts, &payouts[0].id, pb::PayoutStatus::Approved, "").await.unwrap();
    move_to(&mut h.payouts, &payouts[0].id, pb::PayoutStatus::Paid, "ref, \"quoted\"\nline").await.unwrap();
    let all = pb::ExportPayoutsRequest { program_id: program.clone(), ..Default::default() };
    let (bytes, rows) = export(&mut h, all).await;
    assert_eq!(rows, 3);
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header[0], "payout_id");
    assert_eq!(header.len(), 16);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let listed = h
        .payouts
        .list_payouts(pb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert_eq!(records.len(), listed.len());
    for (record, payout) in records.iter().zip(&listed) {
        let column = |name: &str| record.get(header.iter().position(|h| h == name).unwrap()).unwrap().to_string();
        assert_eq!(column("payout_id"), payout.id);
        assert_eq!(column("partner_id"), payout.partner_id);
        assert_eq!(column("amount"), payout.amount.as_ref().unwrap().amount);
        assert_eq!(column("currency_code"), "GBP");
        assert_eq!(column("status"), payout.status().as_str_name().trim_start_matches("PAYOUT_STATUS_"));
        assert_eq!(column("payment_reference"), payout.payment_reference, "round trip of quotes and newlines");
    }
    let paid = pb::ExportPayoutsRequest {
        program_id: program.clone(),
        status: pb::PayoutStatus::Paid as i32,
        ..Default::default()
    };
    assert_eq!(export(&mut h, paid).await.1, 1);
    let none = pb::ExportPayoutsRequest { program_id: program.clone(), period: "2012-01".into(), ..Default::default() };
    let (bytes, rows) = export(&mut h, none).await;
    assert_eq!(rows, 0);
    assert!(bytes.starts_with(b"payout_id,partner_id,"), "the header alone");
    let bad = pb::ExportPayoutsRequest { program_id: program, currency_code: "QQQ".into(), ..Default::default() };
    assert_eq!(h.payouts.export_payouts(bad).await.unwrap_err().code(), Code::InvalidArgument);
}

/// Issue 12 item 5: a partner's payouts at a glance — lifetime paid, awaiting
/// approval, approved and unpaid, the last payout, and the ledger's payable.
#[tokio::test]
async fn partner_payout_summary() {
    let mut h = start().await;
    let program = h.program("1.00").await;
    let ann = h.partner(&program, "Ann").await;
    h.earn(&program, "jan", ann, "30.00", 10).await;
    h.clear_all(&program).await;
    let jan = h.run(&program, "2011-01", None).await.unwrap();
    let first = h.payouts(&program, &jan.id).await.remove(0);
    move_to(&mut h.payouts, &first.id, pb::PayoutStatus::Approved, "").await.unwrap();
    move_to(&mut h.payouts, &first.id, pb::PayoutStatus::Paid, "bank-1").await.unwrap();
    h.earn(&program, "feb", ann, "12.50", 10).await;
    h.clear_all(&program).await;
    let feb = h.run(&program, "2011-02", None).await.unwrap();
    assert_eq!(feb.payout_count, 1);
    h.earn(&program, "mar", ann, "4.00", 10).await;
    h.clear_all(&program).await;
    let request = pb::GetPartnerPayoutSummaryRequest { program_id: program.clone(), partner_id: ann.to_string() };
    let summary = h.payouts.get_partner_payout_summary(request).await.unwrap().into_inner();
    assert_eq!(summary.summaries.len(), 1);
    let gbp_summary = &summary.summaries[0];
    assert_eq!(gbp_summary.currency_code, "GBP");
    assert_eq!((gbp_summary.paid.clone(), gbp_summary.paid_count), (gbp("30.00"), 1));
    assert_eq!(gbp_summary.pending_approval, gbp("12.50"));
    assert_eq!(gbp_summary.approved, gbp("0.00"));
    assert_eq!(gbp_summary.last_payout.as_ref().map(|p| p.id.as_str()), Some(first.id.as_str()));
    assert_eq!(gbp_summary.payable, gbp("4.00"), "what a run would pay now");
    let nobody = pb::GetPartnerPayoutSummaryRequest { program_id: program, partner_id: Uuid::now_v7().to_string() };
    assert!(h.payouts.get_partner_payout_summary(nobody).await.unwrap().into_inner().summaries.is_empty());
}

/// A payout whose entry is disputed meanwhile is not paid until the entry is
/// approved again (FAILED_PRECONDITION RESERVED_ENTRY_NOT_APPROVED from the
/// ledger, nothing changes); then it is, and Σ PAID entries = the payout.
#[tokio::test]
async fn a_disputed_entry_holds_its_payout_until_approved_again() {
    let mut h = start().await;
    let (program, _, payouts) = lifecycle_world(&mut h, 1, "25.00").await;
    let payout = &payouts[0];
    move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap();
    let (_, _, entries) = payout_state(&mut h, &program, payout).await;
    let entry = entries[0].0.clone();
    let transition = |to: lpb::EntryStatus| lpb::TransitionEntriesRequest {
        program_id: program.clone(),
        entry_ids: vec![entry.clone()],
        to_status: to as i32,
        reason: "customer dispute".into(),
    };
    h.ledger.transition_entries(transition(lpb::EntryStatus::Disputed)).await.unwrap();
    let before = payout_state(&mut h, &program, payout).await;
    let error = move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Paid, "bank-1").await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "RESERVED_ENTRY_NOT_APPROVED".into()));
    assert_eq!(payout_state(&mut h, &program, payout).await, before, "nothing changed");
    h.ledger.transition_entries(transition(lpb::EntryStatus::Cleared)).await.unwrap();
    h.ledger.transition_entries(transition(lpb::EntryStatus::Approved)).await.unwrap();
    let paid = move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Paid, "bank-1").await.unwrap();
    assert_eq!(paid.status(), pb::PayoutStatus::Paid);
    let (_, _, entries) = payout_state(&mut h, &program, payout).await;
    assert_eq!(entries[0].1, lpb::EntryStatus::Paid as i32);
}

/// Issue 12 item 4: a partner's own minimum, a hold and SUSPENDED carry
/// forward, a TERMINATED partner is still paid; settings are NOT_FOUND for
/// partners outside the program and bad ones are INVALID_ARGUMENT.
#[tokio::test]
async fn partner_payout_settings_shape_the_run() {
    let mut h = start().await;
    let program = h.program("20.00").await;
    let own_minimum = h.partner(&program, "Own minimum").await;
    let held = h.partner(&program, "Held").await;
    let suspended = h.partner(&program, "Suspended").await;
    let terminated = h.partner(&program, "Terminated").await;
    let small = h.partner(&program, "Small").await;
    for (i, (partner, amount)) in
        [(own_minimum, "8.00"), (held, "30.00"), (suspended, "30.00"), (terminated, "25.00"), (small, "10.00")]
            .into_iter()
            .enumerate()
    {
        h.earn(&program, &format!("k{i}"), partner, amount, 10).await;
    }
    h.clear_all(&program).await;
    for (partner, status) in
        [(suspended, types::PartnerStatus::Suspended), (terminated, types::PartnerStatus::Terminated)]
    {
        h.hierarchy
            .update_partner_status(hpb::UpdatePartnerStatusRequest {
                id: partner.to_string(),
                status: status as i32,
                reason: "test".into(),
            })
            .await
            .unwrap();
    }
    let settings = |partner: Uuid, minimum: Option<&str>, hold: bool| pb::SetPartnerPayoutSettingsRequest {
        settings: Some(pb::PartnerPayoutSettings {
            program_id: program.clone(),
            partner_id: partner.to_string(),
            minimum_amount: minimum.and_then(gbp),
            hold,
            payout_method: "paypal".into(),
            ..Default::default()
        }),
    };
    let set =
        h.payouts.set_partner_payout_settings(settings(own_minimum, Some("5"), false)).await.unwrap().into_inner();
    assert_eq!((set.minimum_amount.clone(), set.updated_by.as_str()), (gbp("5.00"), "test-admin"));
    // The same settings again change nothing.
    let again = h.payouts.set_partner_payout_settings(settings(own_minimum, Some("5.00"), false)).await.unwrap();
    assert_eq!(again.into_inner().update_time, set.update_time);
    h.payouts.set_partner_payout_settings(settings(held, None, true)).await.unwrap();
    let error = h.payouts.set_partner_payout_settings(settings(small, Some("-1"), false)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = h.payouts.set_partner_payout_settings(settings(Uuid::now_v7(), None, false)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::NotFound, "PARTNER_NOT_FOUND".into()));
    let other = h.program("1.00").await;
    let stranger = h.partner(&other, "Stranger").await;
    let error = h.payouts.set_partner_payout_settings(settings(stranger, None, true)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::NotFound, "PARTNER_NOT_FOUND".into()));
    let got = h
        .payouts
        .get_partner_payout_settings(pb::GetPartnerPayoutSettingsRequest {
            program_id: program.clone(),
            partner_id: held.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.hold && got.minimum_amount.is_none() && got.payout_method == "paypal", "{got:#?}");
    let defaults = h
        .payouts
        .get_partner_payout_settings(pb::GetPartnerPayoutSettingsRequest {
            program_id: program.clone(),
            partner_id: small.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!defaults.hold && defaults.update_time.is_none());

    let run = h.run(&program, "2011-01", None).await.unwrap();
    let mut paid: Vec<(String, String)> = h
        .payouts(&program, &run.id)
        .await
        .into_iter()
        .map(|p| (p.partner_id, p.amount.map(|m| m.amount).unwrap_or_default()))
        .collect();
    paid.sort();
    let mut expected =
        vec![(own_minimum.to_string(), "8.00".to_string()), (terminated.to_string(), "25.00".to_string())];
    expected.sort();
    assert_eq!(paid, expected, "its own minimum pays 8.00; a TERMINATED partner is still paid");
    assert_eq!(run.carried_forward_count, 3, "held, SUSPENDED and below the minimum: {run:#?}");
    assert_eq!(run.carried_forward_amount, gbp("70.00"));
}

/// UpdatePayout: notes of a payout awaiting approval only, with an audit
/// event; other paths are INVALID_ARGUMENT; after approval
/// FAILED_PRECONDITION PAYOUT_NOT_PENDING.
#[tokio::test]
async fn update_payout_changes_notes_while_pending() {
    let mut h = start().await;
    let (_, _, payouts) = lifecycle_world(&mut h, 1, "20.00").await;
    let id = payouts[0].id.clone();
    let update = |paths: &[&str], notes: &str, request_id: &str| pb::UpdatePayoutRequest {
        payout: Some(pb::Payout { id: id.clone(), notes: notes.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        request_id: request_id.into(),
    };
    let events = h.count("payout_audit_events").await;
    let updated =
        h.payouts.update_payout(update(&["notes"], "hold until the invoice", "n-1")).await.unwrap().into_inner();
    assert_eq!(
        (updated.notes.as_str(), updated.status()),
        ("hold until the invoice", pb::PayoutStatus::PendingApproval)
    );
    assert_eq!(h.count("payout_audit_events").await, events + 1);
    h.payouts.update_payout(update(&["notes"], "hold until the invoice", "n-1")).await.unwrap();
    assert_eq!(h.count("payout_audit_events").await, events + 1, "a repeat changes nothing");
    for paths in [&[][..], &["amount"][..], &["notes", "status"][..]] {
        let error = h.payouts.update_payout(update(paths, "x", "")).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{paths:?}");
    }
    move_to(&mut h.payouts, &id, pb::PayoutStatus::Approved, "").await.unwrap();
    let error = h.payouts.update_payout(update(&["notes"], "late", "")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "PAYOUT_NOT_PENDING".into()));
    let error = h
        .payouts
        .update_payout(pb::UpdatePayoutRequest {
            payout: Some(pb::Payout { id: Uuid::now_v7().to_string(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["notes".into()] }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}
