//! Manual payouts (CreatePayout) and soft deletion (DeletePayout) over real
//! gRPC with the real hierarchy and ledger services (issue 12 item 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn manual(program: &str, partner: Uuid, period: &str, request_id: &str) -> pb::CreatePayoutRequest {
    pb::CreatePayoutRequest {
        program_id: program.into(),
        partner_id: partner.to_string(),
        currency_code: "GBP".into(),
        period: period.into(),
        cutoff: None,
        notes: "  paid early at the partner's request ".into(),
        request_id: request_id.into(),
    }
}

/// (entry id, status, payout id) of every entry of `partner`.
async fn entries(h: &mut Harness, program: &str, partner: Uuid) -> Vec<(String, i32, String)> {
    h.ledger
        .list_entries(lpb::ListEntriesRequest {
            program_id: program.into(),
            partner_id: partner.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| (e.id, e.status, e.payout_id))
        .collect()
}

/// A manual payout pays the net of the partner's payable entries, credits
/// and debits, below the program's minimum; a repeat is the same payout, the
/// same request id with another body is ALREADY_EXISTS; a run then finds
/// nothing left for the partner; paying it makes its entries PAID, so Σ
/// PAID entries = Σ PAID payouts.
#[tokio::test]
async fn a_manual_payout_pays_the_partners_payable_entries() {
    let mut h = start().await;
    let program = h.program("50.00").await;
    let ann = h.partner(&program, "Ann").await;
    h.earn(&program, "ann-1", ann, "30.00", 10).await;
    h.earn(&program, "ann-2", ann, "-5.00", 10).await;
    h.clear_all(&program).await;

    let payout = h.payouts.create_payout(manual(&program, ann, "2011-01", "m-1")).await.unwrap().into_inner();
    assert_eq!(payout.status(), pb::PayoutStatus::PendingApproval);
    assert_eq!((payout.amount.clone(), payout.entry_count), (gbp("25.00"), 2));
    assert_eq!((payout.payout_run_id.as_str(), payout.period.as_str()), ("", "2011-01"));
    assert_eq!(payout.notes, "paid early at the partner's request");
    let held = entries(&mut h, &program, ann).await;
    assert!(held.iter().all(|(_, _, p)| *p == payout.id), "reserved by the manual payout: {held:?}");

    let events = h.count("payout_audit_events").await;
    let again = h.payouts.create_payout(manual(&program, ann, "2011-01", "m-1")).await.unwrap().into_inner();
    assert_eq!(again, payout, "a repeat answers the same payout");
    assert_eq!((h.count("payouts").await, h.count("payout_audit_events").await), (1, events));
    let error = h.payouts.create_payout(manual(&program, ann, "2011-02", "m-1")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::AlreadyExists, "REQUEST_ID_REUSED".into()));

    let run = h.run(&program, "2011-01", Some("0.01")).await.unwrap();
    assert_eq!(run.payout_count, 0, "the manual payout holds every entry");
    let audit = h
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
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].actor.as_str(), audit[0].to_status()), ("test-admin", pb::PayoutStatus::PendingApproval));

    move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap();
    let paid = move_to(&mut h.payouts, &payout.id, pb::PayoutStatus::Paid, "wire-9").await.unwrap();
    assert_eq!(paid.status(), pb::PayoutStatus::Paid);
    let settled = entries(&mut h, &program, ann).await;
    assert!(
        settled.iter().all(|(_, status, p)| *status == lpb::EntryStatus::Paid as i32 && *p == payout.id),
        "{settled:?}"
    );
}

/// Every refusal of CreatePayout writes nothing: a missing request id or a
/// malformed field (INVALID_ARGUMENT), an unknown partner or another
/// program's (NOT_FOUND), a partner with nothing payable (NOTHING_PAYABLE),
/// a partner on hold or SUSPENDED (PARTNER_NOT_PAYABLE); a TERMINATED
/// partner is still paid.
#[tokio::test]
async fn manual_payout_refusals_change_nothing() {
    let mut h = start().await;
    let program = h.program("1.00").await;
    let ann = h.partner(&program, "Ann").await;
    let held = h.partner(&program, "Held").await;
    let suspended = h.partner(&program, "Suspended").await;
    let terminated = h.partner(&program, "Terminated").await;
    for (i, partner) in [held, suspended, terminated].into_iter().enumerate() {
        h.earn(&program, &format!("e{i}"), partner, "40.00", 10).await;
    }
    h.clear_all(&program).await;
    h.payouts
        .set_partner_payout_settings(pb::SetPartnerPayoutSettingsRequest {
            settings: Some(pb::PartnerPayoutSettings {
                program_id: program.clone(),
                partner_id: held.to_string(),
                hold: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
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
    let other = h.program("1.00").await;
    let stranger = h.partner(&other, "Stranger").await;

    let before = (h.count("payouts").await, h.count("payout_audit_events").await);
    let mut no_id = manual(&program, held, "2011-01", "");
    no_id.currency_code = "gbp".into();
    let error = h.payouts.create_payout(no_id).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        error.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["currency_code", "request_id"]);
    for (partner, code, why) in [
        (Uuid::now_v7(), Code::NotFound, "PARTNER_NOT_FOUND"),
        (stranger, Code::NotFound, "PARTNER_NOT_FOUND"),
        (ann, Code::FailedPrecondition, "NOTHING_PAYABLE"),
        (held, Code::FailedPrecondition, "PARTNER_NOT_PAYABLE"),
        (suspended, Code::FailedPrecondition, "PARTNER_NOT_PAYABLE"),
    ] {
        let error = h.payouts.create_payout(manual(&program, partner, "2011-01", &format!("r-{partner}"))).await;
        let error = error.unwrap_err();
        assert_eq!((error.code(), reason(&error)), (code, why.to_string()), "{partner}: {error:?}");
    }
    assert_eq!((h.count("payouts").await, h.count("payout_audit_events").await), before, "nothing written");
    let untouched = entries(&mut h, &program, held).await;
    assert!(untouched.iter().all(|(_, _, p)| p.is_empty()), "nothing reserved: {untouched:?}");

    let paid = h.payouts.create_payout(manual(&program, terminated, "2011-01", "t-1")).await.unwrap().into_inner();
    assert_eq!(paid.amount, gbp("40.00"));
}

/// DeletePayout: only while PENDING_APPROVAL, with a reason; the entries go
/// back to the partner's payable balance and the next run pays them; the
/// payout leaves ListPayouts and ExportPayouts unless `show_deleted` (or the
/// DELETED status filter) but GetPayout still answers it; a repeat of the
/// request id changes nothing; deleting it again, or an approved payout, is
/// INVALID_PAYOUT_TRANSITION.
#[tokio::test]
async fn deleting_a_pending_payout_releases_its_entries_and_hides_it() {
    let mut h = start().await;
    let (program, partners, payouts) = lifecycle_world(&mut h, 2, "30.00").await;
    let (payout, approved) = (&payouts[0], &payouts[1]);
    let delete = |id: &str, reason: &str, request_id: &str| pb::DeletePayoutRequest {
        id: id.into(),
        reason: reason.into(),
        request_id: request_id.into(),
    };
    let error = h.payouts.delete_payout(delete(&payout.id, " ", "")).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);

    let deleted = h.payouts.delete_payout(delete(&payout.id, "created by mistake", "d-1")).await.unwrap().into_inner();
    assert_eq!((deleted.status(), deleted.status_reason.as_str()), (pb::PayoutStatus::Deleted, "created by mistake"));
    let events = h.count("payout_audit_events").await;
    let again = h.payouts.delete_payout(delete(&payout.id, "created by mistake", "d-1")).await.unwrap().into_inner();
    assert_eq!(again.status(), pb::PayoutStatus::Deleted);
    assert_eq!(h.count("payout_audit_events").await, events, "a repeat changes nothing");
    let released = entries(&mut h, &program, partners[0]).await;
    assert!(released.iter().all(|(_, _, p)| p.is_empty()), "released: {released:?}");

    let list = |show_deleted: bool, status: pb::PayoutStatus| pb::ListPayoutsRequest {
        program_id: program.clone(),
        show_deleted,
        status: status as i32,
        ..Default::default()
    };
    let ids = |response: pb::ListPayoutsResponse| response.payouts.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let listed = ids(h.payouts.list_payouts(list(false, pb::PayoutStatus::Unspecified)).await.unwrap().into_inner());
    assert_eq!(listed, std::slice::from_ref(&approved.id));
    let all = ids(h.payouts.list_payouts(list(true, pb::PayoutStatus::Unspecified)).await.unwrap().into_inner());
    assert_eq!(all.len(), 2);
    let only = ids(h.payouts.list_payouts(list(false, pb::PayoutStatus::Deleted)).await.unwrap().into_inner());
    assert_eq!(only, std::slice::from_ref(&payout.id));
    let got = h.payouts.get_payout(pb::GetPayoutRequest { id: payout.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.status(), pb::PayoutStatus::Deleted);
    let mut stream = h
        .payouts
        .export_payouts(pb::ExportPayoutsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut rows = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        rows += chunk.row_count;
    }
    assert_eq!(rows, 1, "the export leaves the deleted payout out");

    let error = h.payouts.delete_payout(delete(&payout.id, "again", "")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "INVALID_PAYOUT_TRANSITION".into()));
    move_to(&mut h.payouts, &approved.id, pb::PayoutStatus::Approved, "").await.unwrap();
    let error = h.payouts.delete_payout(delete(&approved.id, "too late", "")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "INVALID_PAYOUT_TRANSITION".into()));

    let next = h.run(&program, "2011-02", None).await.unwrap();
    assert_eq!((next.payout_count, next.total_amount), (1, gbp("30.00")), "the deleted payout's entries are paid next");
}

/// Maker-checker covers manual payouts: under `require_second_approver` the
/// identity that created a manual payout may not approve it.
#[tokio::test]
async fn maker_checker_applies_to_manual_payouts() {
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
    let payout = maker.create_payout(manual(&program, ann, "2011-01", "mc-1")).await.unwrap().into_inner();
    let error = move_to(&mut maker, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::PermissionDenied, "SAME_APPROVER".into()));
    let approved = move_to(&mut checker, &payout.id, pb::PayoutStatus::Approved, "").await.unwrap();
    assert_eq!(approved.approved_by, "checker@finance");
}
