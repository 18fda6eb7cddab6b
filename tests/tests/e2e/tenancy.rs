//! The "another program" column of the auth matrix (issue 10 "Tests"): a
//! token that names program B only finds nothing of program A, in every RPC
//! of every service, learns nothing from the answer, and writes nothing.
//!
//! One stack; program A has real data in all five services (a partner tree,
//! agreements and override plans, a scheme with rates and an assignment, two
//! links, a lead, a settled sale with its ledger entries, a clawed-back
//! refund, cleared and approved entries and a payout run with payouts);
//! program B has one partner. Then:
//!
//! - every RPC of `accrue_kit::auth::policy::TABLE` gets a valid request
//!   naming A's resources (one `match` over the paths: a new RPC fails the
//!   test until it gets a row). The program-A admin token gets a business
//!   answer (never INVALID_ARGUMENT or NOT_FOUND: the request is well-formed
//!   and its ids are real); the program-B admin token gets NOT_FOUND — except
//!   CreateProgram, which only a `*` token may call (PERMISSION_DENIED);
//! - existence leaks: each of A's ids in those requests is swapped for a
//!   fresh random one, and the B token's answer (code and message, the id
//!   replaced by a placeholder) is the same for both; the same for requests
//!   in program B that reference A's resources (a parent, an owner, a sale,
//!   an entry, a scheme, a payout…), whose successful answers must match
//!   byte for byte;
//! - page tokens: a token A's lists handed out is NOT_FOUND for the B token
//!   in program A (exactly as without it) and INVALID_ARGUMENT in program B
//!   (bound to its query), naming nothing of A;
//! - nothing changed: a digest of every row of every table of the five
//!   schemas is the same before and after all of the B token's calls.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::fixtures::{gbp, payment, percentage_on_payment, record_and_settle, ts};
use accrue_e2e::{Clients, all_entries, wait_saga};
use accrue_kit::auth::policy::TABLE;
use accrue_kit::auth::{AuthConfig, Minter, Role};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::events::v1 as epb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestDb;
use prost::Message;
use tonic::Code;

use crate::wire::{Answer, Channels, contains, replace, snapshot};

const SECRET: &str = "accrue-e2e-tenancy-secret-0123456789abcdef";
const SALE_AT: &str = "2024-03-01T12:00:00Z";
const REFUND_AT: &str = "2024-03-05T09:00:00Z";
const CLEAR_AS_OF: &str = "2024-04-30T00:00:00Z";
const CUTOFF: &str = "2024-04-30T23:59:59Z";
const SERVICE_CODE: &str = "RECHARGE";

type Hooks = accrue_proto::events::v1::webhook_service_client::WebhookServiceClient<accrue_kit::client::AuthChannel>;

/// True when two answers to `path` (their swapped ids masked) are the same.
/// Replies that may hold protobuf maps (a breakdown's inputs, encoded in
/// hash-map order) are compared decoded, the others byte for byte.
fn same_answer(path: &str, x: &Answer, y: &Answer) -> bool {
    fn decoded<M: Message + Default + PartialEq>(x: &[u8], y: &[u8]) -> bool {
        matches!((M::decode(x), M::decode(y)), (Ok(x), Ok(y)) if x == y)
    }
    if (x.code, &x.message) != (y.code, &y.message) {
        return false;
    }
    match path.rsplit('/').next().unwrap_or_default() {
        "ComputeSettlements" => decoded::<cpb::ComputeSettlementsResponse>(&x.body, &y.body),
        "QuoteSale" => decoded::<cpb::QuoteSaleResponse>(&x.body, &y.body),
        "GetEntry" => decoded::<lpb::Entry>(&x.body, &y.body),
        "ListEntries" => decoded::<lpb::ListEntriesResponse>(&x.body, &y.body),
        "ReverseSale" => decoded::<lpb::ReverseSaleResponse>(&x.body, &y.body),
        _ => x.body == y.body,
    }
}

/// Program A's resources, ids as the API returns them.
struct A {
    program: String,
    parent: String,
    seller: String,
    sub: String,
    split_a: String,
    split_b: String,
    link: String,
    link_2: String,
    sale: String,
    sale_2: String,
    settle_saga: String,
    clawback_saga: String,
    refund: String,
    refund_2: String,
    scheme: String,
    /// The highest role of the program's ladder (the scheme's rate is for it).
    top_role: String,
    /// The seller's DIRECT credit and the debit that claws part of it back.
    credit: String,
    debit: String,
    /// The credit's PostEntries key and the debit's ReverseSale key.
    post_key: String,
    reverse_key: String,
    run: String,
    /// The seller's payout.
    payout: String,
    /// The first split partner's payout, paid (its reservation settled).
    paid_payout: String,
    /// A webhook subscription on the ledger (request id `tenancy-hook`),
    /// deleted once its deliveries were delivered, and its first delivery.
    hook: String,
    delivery: String,
}

impl A {
    /// Every id of A a request may carry (keys embed saga ids).
    fn ids(&self) -> Vec<&str> {
        vec![
            &self.program,
            &self.parent,
            &self.seller,
            &self.sub,
            &self.split_a,
            &self.split_b,
            &self.link,
            &self.link_2,
            &self.sale,
            &self.sale_2,
            &self.settle_saga,
            &self.clawback_saga,
            &self.refund,
            &self.refund_2,
            &self.scheme,
            &self.credit,
            &self.debit,
            &self.run,
            &self.payout,
            &self.paid_payout,
            &self.hook,
            &self.delivery,
        ]
    }
}

/// Program B: its id and its one partner.
struct B {
    program: String,
    partner: String,
}

// Requests used both to build program A and as replays in the matrix (the
// same body, so a replay by the A token writes nothing).

fn approve_request(program: &str) -> hpb::UpdateProgramRequest {
    hpb::UpdateProgramRequest {
        program: Some(hpb::Program { id: program.into(), auto_approve_cleared: true, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["auto_approve_cleared".into()] }),
        request_id: "approve-a".into(),
    }
}

fn sub_request(program: &str, seller: &str) -> hpb::CreatePartnerRequest {
    hpb::CreatePartnerRequest {
        program_id: program.into(),
        partner: Some(hpb::Partner { display_name: "Sub".into(), parent_id: seller.into(), ..Default::default() }),
        request_id: "sub-1".into(),
    }
}

/// world::setup's link, as it creates it (request_id `link-1`).
fn link_request(a: &A) -> apb::CreateLinkRequest {
    apb::CreateLinkRequest {
        program_id: a.program.clone(),
        link: Some(apb::Link {
            owner_partner_id: a.seller.clone(),
            key: "summer-sale".into(),
            destination_url: "https://example.com/summer".into(),
            splits: vec![
                apb::LinkSplit { partner_id: a.split_a.clone(), basis_points: 3000 },
                apb::LinkSplit { partner_id: a.split_b.clone(), basis_points: 2000 },
            ],
            ..Default::default()
        }),
        request_id: "link-1".into(),
    }
}

fn link_2_request(program: &str, owner: &str) -> apb::CreateLinkRequest {
    apb::CreateLinkRequest {
        program_id: program.into(),
        link: Some(apb::Link {
            owner_partner_id: owner.into(),
            key: "spring".into(),
            destination_url: "https://example.com/spring".into(),
            ..Default::default()
        }),
        request_id: "link-2".into(),
    }
}

fn agreement_request(program: &str, partner: &str, version: u32) -> cpb::CreateAgreementRequest {
    cpb::CreateAgreementRequest {
        program_id: program.into(),
        partner_id: partner.into(),
        effective_from: Some(ts(&format!("202{version}-01-01T00:00:00Z"))),
        rules: Some(percentage_on_payment(&format!("0.1{version}"))),
        request_id: format!("agreement-sub-{version}"),
    }
}

fn plan_request(program: &str, partner: &str) -> cpb::SetOverridePlanRequest {
    cpb::SetOverridePlanRequest {
        plan: Some(cpb::OverridePlan {
            program_id: program.into(),
            partner_id: partner.into(),
            mode: cpb::OverrideMode::Percentage as i32,
            basis: cpb::OverrideBasis::DealAmount as i32,
            rates_by_level: vec![cpb::OverrideLevel { rate: "0.02".into(), flat_amount: None }],
            update_time: None,
            qualification: None,
        }),
        request_id: "plan-sub".into(),
    }
}

fn scheme_request(program: &str) -> cpb::CreateSchemeRequest {
    cpb::CreateSchemeRequest {
        program_id: program.into(),
        scheme: Some(cpb::Scheme { display_name: "Root".into(), ..Default::default() }),
        request_id: "scheme-root".into(),
    }
}

fn rates_request(scheme: &str, role: &str) -> cpb::SetSchemeRatesRequest {
    cpb::SetSchemeRatesRequest {
        scheme_id: scheme.into(),
        rates: vec![cpb::SchemeRate { service_code: SERVICE_CODE.into(), role: role.into(), rate: "0.05".into() }],
        request_id: "rates-1".into(),
    }
}

fn sale_request(program: &str) -> apb::RecordSaleRequest {
    payment(program, "s-1", "cust-1", "100.00", "", SALE_AT)
}

fn refund_request(program: &str, sale: &str) -> apb::RecordRefundRequest {
    apb::RecordRefundRequest {
        program_id: program.into(),
        external_id: "r-1".into(),
        sale: Some(apb::record_refund_request::Sale::SaleId(sale.into())),
        amount: Some(gbp("50.00")),
        occurred_at: Some(ts(REFUND_AT)),
        reason: "returned goods".into(),
    }
}

fn run_request(program: &str) -> ppb::CreatePayoutRunRequest {
    ppb::CreatePayoutRunRequest {
        program_id: program.into(),
        currency_code: "GBP".into(),
        period: "2024-04".into(),
        cutoff: Some(ts(CUTOFF)),
        minimum_amount: Some(gbp("1.00")),
        request_id: "run-a".into(),
    }
}

/// MarkPayoutPaid of program A's paid payout (its SettleReservation is
/// [`settle_request`]'s).
fn paid_request(payout: &str) -> ppb::MarkPayoutPaidRequest {
    ppb::MarkPayoutPaidRequest {
        id: payout.into(),
        payment_reference: "paid-a".into(),
        payment_method: "bank_transfer".into(),
        paid_time: Some(ts(CUTOFF)),
        request_id: "paid-a".into(),
    }
}

/// The seller's payout settings, as build_a sets them (a repeat changes nothing).
fn settings_request(program: &str, seller: &str) -> ppb::SetPartnerPayoutSettingsRequest {
    ppb::SetPartnerPayoutSettingsRequest {
        settings: Some(ppb::PartnerPayoutSettings {
            program_id: program.into(),
            partner_id: seller.into(),
            minimum_amount: Some(gbp("1.00")),
            hold: false,
            payout_method: "bank_transfer".into(),
            ..Default::default()
        }),
    }
}

fn settle_request(program: &str, payout: &str) -> lpb::SettleReservationRequest {
    lpb::SettleReservationRequest {
        program_id: program.into(),
        payout_id: payout.into(),
        payment_reference: "paid-a".into(),
    }
}

fn partner_context(id: &str) -> cpb::PartnerContext {
    cpb::PartnerContext {
        partner_id: id.into(),
        status: types::PartnerStatus::Active as i32,
        role: String::new(),
        qualification_facts: None,
    }
}

/// Program A with data in all five services (built with the `*` admin).
fn hook_request(program: &str, url: &str) -> epb::CreateWebhookSubscriptionRequest {
    epb::CreateWebhookSubscriptionRequest {
        program_id: program.into(),
        url: url.into(),
        types: vec![],
        request_id: "tenancy-hook".into(),
    }
}

async fn build_a(c: &mut Clients, hooks: &mut Hooks) -> A {
    let w = crate::world::setup(c, "Tenancy A").await;
    let program = w.program_id.clone();
    // A webhook subscription on the ledger that receives A's entries.
    let receiver = crate::webhooks::Receiver::start(crate::webhooks::Behaviour::default()).await;
    let hook = hooks.create_webhook_subscription(hook_request(&program, &receiver.url)).await.expect("hook");
    let hook = hook.into_inner();
    c.hierarchy.update_program(approve_request(&program)).await.expect("auto-approve");
    let sub = c.hierarchy.create_partner(sub_request(&program, &w.seller)).await.expect("sub").into_inner().id;
    let link_2 = c.attribution.create_link(link_2_request(&program, &w.split_a)).await.expect("link 2").into_inner().id;
    for version in [1, 2] {
        c.commission.create_agreement(agreement_request(&program, &sub, version)).await.expect("agreement");
    }
    c.commission.set_override_plan(plan_request(&program, &sub)).await.expect("override plan");
    let ladder = c
        .hierarchy
        .get_program(hpb::GetProgramRequest { id: program.clone() })
        .await
        .expect("get program")
        .into_inner()
        .role_ladder;
    let top_role = ladder.first().expect("a role ladder").clone();
    let scheme = c.commission.create_scheme(scheme_request(&program)).await.expect("scheme").into_inner().id;
    c.commission.set_scheme_rates(rates_request(&scheme, &top_role)).await.expect("scheme rates");
    c.commission
        .assign_scheme(cpb::AssignSchemeRequest { partner_id: w.seller.clone(), scheme_id: scheme.clone() })
        .await
        .expect("assign scheme");

    // A settled sale (DIRECT 10 × 50 %, SPLIT 3.00 and 2.00, OVERRIDE 1.00)
    // and an unattributed one.
    let (sale, _) = record_and_settle(c, sale_request(&program)).await;
    let sale_2 = c
        .attribution
        .record_sale(payment(&program, "s-2", "", "40.00", "", "2024-03-02T12:00:00Z"))
        .await
        .expect("unattributed sale")
        .into_inner();
    assert_eq!(sale_2.state, apb::SaleState::Unattributed as i32, "{sale_2:#?}");

    // Half of the settled sale refunded (a ClawbackSale saga posts the
    // debits), a quarter of the unattributed one (applied at once).
    let refund = c.attribution.record_refund(refund_request(&program, &sale.id)).await.expect("refund").into_inner();
    let saga = wait_saga(c, &refund.saga_id).await.unwrap();
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let refund = c.attribution.get_refund(apb::GetRefundRequest { id: refund.id }).await.unwrap().into_inner();
    assert_eq!(refund.state, apb::RefundState::Applied as i32, "{refund:#?}");
    let refund_2 = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            external_id: "r-2".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(sale_2.id.clone())),
            amount: Some(gbp("10.00")),
            ..refund_request(&program, &sale.id)
        })
        .await
        .expect("refund 2")
        .into_inner();

    // Month end: everything clears and is approved; the payout run reserves
    // the nets of at least a pound (the parent's 0.50 carries forward).
    c.ledger
        .clear_matured(lpb::ClearMaturedRequest { program_id: program.clone(), as_of: Some(ts(CLEAR_AS_OF)) })
        .await
        .expect("clear matured");
    c.payouts.set_partner_payout_settings(settings_request(&program, &w.seller)).await.expect("settings");
    let run = c.payouts.create_payout_run(run_request(&program)).await.expect("payout run").into_inner();
    assert!(run.payout_count >= 3, "{run:#?}");
    let payouts = c
        .payouts
        .list_payouts(ppb::ListPayoutsRequest {
            program_id: program.clone(),
            partner_id: w.seller.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert_eq!(payouts.len(), 1, "{payouts:#?}");
    let paid_payout = c
        .payouts
        .list_payouts(ppb::ListPayoutsRequest {
            program_id: program.clone(),
            partner_id: w.split_a.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payouts
        .first()
        .expect("the first split partner's payout")
        .id
        .clone();
    c.payouts
        .approve_payout(ppb::ApprovePayoutRequest { id: paid_payout.clone(), request_id: "approve-paid".into() })
        .await
        .expect("approve");
    c.payouts.mark_payout_paid(paid_request(&paid_payout)).await.expect("mark paid");

    let entries = all_entries(c, &program).await.unwrap();
    let seller_entry = |entry_type: lpb::EntryType| {
        entries
            .iter()
            .find(|e| {
                e.partner_id == w.seller
                    && e.entry_type == entry_type as i32
                    && e.kind == types::EarningKind::Direct as i32
            })
            .unwrap_or_else(|| panic!("the seller's {entry_type:?}: {entries:#?}"))
    };
    let (credit, debit) = (seller_entry(lpb::EntryType::Credit), seller_entry(lpb::EntryType::Debit));
    assert_eq!(credit.payout_id, payouts[0].id, "the seller's credit is reserved: {credit:#?}");
    let delivery = settled_hook(hooks, &program, &hook.id).await;
    A {
        hook: hook.id,
        delivery,
        parent: w.parent,
        seller: w.seller,
        sub,
        split_a: w.split_a,
        split_b: w.split_b,
        link: w.link_id,
        link_2,
        settle_saga: sale.saga_id.clone(),
        clawback_saga: refund.saga_id.clone(),
        sale: sale.id,
        sale_2: sale_2.id,
        refund: refund.id,
        refund_2: refund_2.id,
        scheme,
        top_role,
        credit: credit.id.clone(),
        debit: debit.id.clone(),
        post_key: credit.idempotency_key.clone(),
        reverse_key: debit.idempotency_key.clone(),
        run: run.id,
        payout: payouts[0].id.clone(),
        paid_payout,
        program,
    }
}

async fn build_b(c: &mut Clients) -> B {
    let program = c
        .hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Tenancy B".into(),
                default_currency: "GBP".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("program B")
        .into_inner()
        .id;
    let partner = crate::world::create_partner(c, &program, "B root", "").await;
    B { program, partner }
}

fn enc(message: impl Message) -> Vec<u8> {
    message.encode_to_vec()
}

/// Valid requests for the RPC at `path` that name program A's resources:
/// reads of real ids, and writes that are replays of A's own requests or
/// that fail on a business rule after the program check, so that the A
/// token's calls change nothing either.
fn requests(path: &str, a: &A) -> Vec<Vec<u8>> {
    let p = || a.program.clone();
    let rpc = path.rsplit('/').next().unwrap_or_default();
    match rpc {
        // hierarchy
        "CreateProgram" => vec![enc(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: "Tenancy C".into(),
                default_currency: "GBP".into(),
                ..Default::default()
            }),
            request_id: "program-c".into(),
        })],
        "GetProgram" => vec![enc(hpb::GetProgramRequest { id: p() })],
        "UpdateProgram" => vec![enc(approve_request(&a.program))],
        "CreatePartner" => vec![enc(sub_request(&a.program, &a.seller))],
        "GetPartner" => vec![enc(hpb::GetPartnerRequest { id: a.seller.clone() })],
        "ListPartners" => vec![enc(hpb::ListPartnersRequest { program_id: p(), ..Default::default() })],
        "UpdatePartnerStatus" => vec![enc(hpb::UpdatePartnerStatusRequest {
            id: a.seller.clone(),
            status: types::PartnerStatus::Active as i32,
            reason: "probe".into(),
        })],
        "SetParent" => vec![enc(hpb::SetParentRequest { id: a.seller.clone(), parent_id: a.parent.clone() })],
        "GetUplines" => {
            vec![enc(hpb::GetUplinesRequest { program_id: p(), partner_ids: vec![a.seller.clone(), a.sub.clone()] })]
        }
        "ListDownline" => vec![enc(hpb::ListDownlineRequest { id: a.parent.clone(), ..Default::default() })],
        "CountActiveDirectPartners" => vec![enc(hpb::CountActiveDirectPartnersRequest {
            program_id: p(),
            queries: vec![hpb::ActiveDirectPartnersQuery { partner_id: a.parent.clone(), as_of: Some(ts(SALE_AT)) }],
        })],
        // attribution
        "CreateLink" => vec![enc(link_request(a))],
        "GetLink" => vec![enc(apb::GetLinkRequest { id: a.link.clone() })],
        "ListLinks" => vec![enc(apb::ListLinksRequest {
            program_id: p(),
            owner_partner_id: a.seller.clone(),
            ..Default::default()
        })],
        "TrackLead" => vec![enc(apb::TrackLeadRequest {
            program_id: p(),
            link_id: a.link.clone(),
            customer_external_id: "cust-1".into(),
            occurred_at: Some(ts("2024-01-01T00:00:00Z")),
        })],
        "RecordSale" => vec![enc(sale_request(&a.program))],
        "RecordSales" => vec![enc(apb::RecordSalesRequest { sales: vec![sale_request(&a.program)] })],
        "GetSale" => vec![enc(apb::GetSaleRequest { id: a.sale.clone() })],
        "ListSales" => vec![enc(apb::ListSalesRequest { program_id: p(), ..Default::default() })],
        "GetSaga" => vec![
            enc(apb::GetSagaRequest { id: a.settle_saga.clone() }),
            enc(apb::GetSagaRequest { id: a.clawback_saga.clone() }),
        ],
        "ListSagas" => vec![enc(apb::ListSagasRequest { program_id: p(), ..Default::default() })],
        // DONE: FAILED_PRECONDITION SAGA_NOT_FAILED for A.
        "RetrySaga" => vec![enc(apb::RetrySagaRequest { id: a.settle_saga.clone() })],
        "RecordRefund" => vec![
            enc(refund_request(&a.program, &a.sale)),
            enc(apb::RecordRefundRequest {
                sale: Some(apb::record_refund_request::Sale::SaleExternalId("s-1".into())),
                ..refund_request(&a.program, &a.sale)
            }),
        ],
        "GetRefund" => vec![
            enc(apb::GetRefundRequest { id: a.refund.clone() }),
            enc(apb::GetRefundRequest { id: a.refund_2.clone() }),
        ],
        "ListRefunds" => {
            vec![enc(apb::ListRefundsRequest { program_id: p(), sale_id: a.sale.clone(), ..Default::default() })]
        }
        "TrackClick" => vec![enc(apb::TrackClickRequest { program_id: p(), click: Some(click(&a.link, "tenancy-1")) })],
        "TrackClicks" => {
            vec![enc(apb::TrackClicksRequest { program_id: p(), clicks: vec![click(&a.link, "tenancy-2")] })]
        }
        // ArchiveLink then UnarchiveLink (the table's order): link 2 ends live.
        "ArchiveLink" => vec![enc(apb::ArchiveLinkRequest { id: a.link_2.clone(), request_id: String::new() })],
        "UnarchiveLink" => vec![enc(apb::UnarchiveLinkRequest { id: a.link_2.clone(), request_id: String::new() })],
        "GetAttributionSettings" => vec![enc(apb::GetAttributionSettingsRequest { program_id: p() })],
        "UpdateAttributionSettings" => vec![enc(apb::UpdateAttributionSettingsRequest {
            program_id: p(),
            model: apb::AttributionModel::FirstTouch as i32,
            attribution_window_days: 0,
            request_id: "tenancy-settings".into(),
        })],
        "GetLinkStats" => vec![enc(apb::GetLinkStatsRequest { link_id: a.link.clone(), ..Default::default() })],
        "GetPartnerStats" => vec![enc(apb::GetPartnerStatsRequest {
            program_id: p(),
            partner_id: a.seller.clone(),
            ..Default::default()
        })],
        // A backtest of A's sales with A's link re-split: writes nothing.
        "SimulateProgram" => vec![enc(apb::SimulateProgramRequest {
            program_id: p(),
            start_time: Some(ts("2024-01-01T00:00:00Z")),
            end_time: Some(ts("2024-12-31T00:00:00Z")),
            link_splits: vec![apb::LinkSplitsChange { link_id: a.link.clone(), splits: Vec::new() }],
            ..Default::default()
        })],
        // commission
        "CreateAgreement" => vec![enc(agreement_request(&a.program, &a.sub, 1))],
        "ListAgreementVersions" => vec![enc(cpb::ListAgreementVersionsRequest {
            program_id: p(),
            partner_id: a.sub.clone(),
            ..Default::default()
        })],
        "GetAgreementInForce" => vec![enc(cpb::GetAgreementInForceRequest {
            program_id: p(),
            partner_id: a.seller.clone(),
            time: Some(ts(SALE_AT)),
        })],
        "SetOverridePlan" => vec![enc(plan_request(&a.program, &a.sub))],
        "ComputeSettlements" => vec![enc(cpb::ComputeSettlementsRequest {
            draft: None,
            program: Some(cpb::ProgramContext { program_id: p(), ..Default::default() }),
            sales: vec![cpb::SaleContext {
                sale_id: a.sale.clone(),
                event_type: types::SaleEventType::Payment as i32,
                amount: Some(gbp("100.00")),
                occurred_at: Some(ts(SALE_AT)),
                customer_id: "cust-1".into(),
                seller: Some(partner_context(&a.seller)),
                splits: vec![cpb::SplitContext { partner: Some(partner_context(&a.split_a)), basis_points: 3000 }],
                ancestors: vec![partner_context(&a.parent)],
                is_first_payment: true,
                ..Default::default()
            }],
            omit_base_breakdown: false,
        })],
        "QuoteSale" => vec![enc(cpb::QuoteSaleRequest {
            program_id: p(),
            sale: Some(cpb::QuoteSaleInput {
                seller_partner_id: a.seller.clone(),
                event_type: types::SaleEventType::Payment as i32,
                amount: Some(gbp("100.00")),
                occurred_at: Some(ts(SALE_AT)),
                splits: vec![cpb::QuoteSplit { partner_id: a.split_a.clone(), basis_points: 3000 }],
                ..Default::default()
            }),
            draft_rules: None,
        })],
        "CreateScheme" => vec![enc(scheme_request(&a.program))],
        "GetScheme" => vec![enc(cpb::GetSchemeRequest { id: a.scheme.clone() })],
        "SetSchemeRates" => vec![enc(rates_request(&a.scheme, &a.top_role))],
        "AssignScheme" => {
            vec![enc(cpb::AssignSchemeRequest { partner_id: a.seller.clone(), scheme_id: a.scheme.clone() })]
        }
        "GetSchemeChain" => vec![
            enc(cpb::GetSchemeChainRequest { partner_id: a.seller.clone(), ..Default::default() }),
            enc(cpb::GetSchemeChainRequest { scheme_id: a.scheme.clone(), ..Default::default() }),
        ],
        // ledger
        // The credit's own key with another body: ALREADY_EXISTS for A, nothing written.
        "PostEntries" => vec![enc(lpb::PostEntriesRequest {
            program_id: p(),
            postings: vec![lpb::SalePosting {
                idempotency_key: a.post_key.clone(),
                sale_id: a.sale.clone(),
                lines: vec![lpb::EntryInput {
                    partner_id: a.seller.clone(),
                    kind: types::EarningKind::Direct as i32,
                    amount: Some(gbp("1.00")),
                    level: 0,
                    source_partner_id: a.seller.clone(),
                    occurred_at: Some(ts(SALE_AT)),
                    clears_at: Some(ts(SALE_AT)),
                    breakdown: None,
                }],
            }],
        })],
        "GetEntry" => {
            vec![enc(lpb::GetEntryRequest { id: a.credit.clone() }), enc(lpb::GetEntryRequest { id: a.debit.clone() })]
        }
        "ListEntries" => vec![
            enc(lpb::ListEntriesRequest { program_id: p(), partner_id: a.seller.clone(), ..Default::default() }),
            enc(lpb::ListEntriesRequest { program_id: p(), sale_id: a.sale.clone(), ..Default::default() }),
        ],
        // A reserved credit cannot be voided: FAILED_PRECONDITION for A.
        "TransitionEntries" => vec![enc(lpb::TransitionEntriesRequest {
            program_id: p(),
            entry_ids: vec![a.credit.clone()],
            to_status: lpb::EntryStatus::Voided as i32,
            reason: "probe".into(),
        })],
        "GetEarningsSummary" => {
            vec![enc(lpb::GetEarningsSummaryRequest {
                program_id: p(),
                partner_ids: vec![a.seller.clone()],
                ..Default::default()
            })]
        }
        "ListSaleLines" => vec![enc(lpb::ListSaleLinesRequest { program_id: p(), sale_ids: vec![a.sale.clone()] })],
        // Everything up to then is cleared already.
        "ClearMatured" => {
            vec![enc(lpb::ClearMaturedRequest { program_id: p(), as_of: Some(ts(CLEAR_AS_OF)) })]
        }
        // The payout's reservation exists: answered as it stands.
        "ReserveForPayout" => vec![enc(lpb::ReserveForPayoutRequest {
            program_id: p(),
            currency_code: "GBP".into(),
            cutoff: Some(ts(CUTOFF)),
            reservations: vec![lpb::PartnerReservation {
                partner_id: a.seller.clone(),
                payout_id: a.payout.clone(),
                minimum_amount: Some(gbp("1.00")),
            }],
        })],
        // The paid payout's reservation is settled: FAILED_PRECONDITION
        // RESERVATION_SETTLED for A, nothing written.
        "ReleaseReservation" => vec![enc(lpb::ReleaseReservationRequest {
            program_id: p(),
            payout_id: a.paid_payout.clone(),
            reason: "probe".into(),
        })],
        // A replay of its settlement: the stored answer, nothing written.
        "SettleReservation" => vec![enc(settle_request(&a.program, &a.paid_payout))],
        // T > A: FAILED_PRECONDITION REFUND_EXCEEDS_SALE for A, nothing written.
        "ReverseSale" => vec![enc(lpb::ReverseSaleRequest {
            program_id: p(),
            sale_id: a.sale.clone(),
            idempotency_key: "tenancy-probe".into(),
            refund_id: a.refund.clone(),
            sale_amount: Some(gbp("100.00")),
            refunded_total: Some(gbp("150.00")),
            occurred_at: Some(ts(REFUND_AT)),
            rounding_mode: 0,
            reason: "probe".into(),
        })],
        // Its debits are reserved by the payouts: FAILED_PRECONDITION DEBIT_RESERVED for A.
        "VoidReversal" => vec![enc(lpb::VoidReversalRequest {
            program_id: p(),
            idempotency_key: a.reverse_key.clone(),
            reason: "probe".into(),
        })],
        "GetOverrideBreakdown" => vec![enc(lpb::GetOverrideBreakdownRequest {
            program_id: p(),
            partner_id: a.parent.clone(),
            source_partner_ids: vec![a.seller.clone()],
            ..Default::default()
        })],
        "GetBalances" => vec![enc(lpb::GetBalancesRequest {
            program_id: p(),
            partner_ids: vec![a.seller.clone()],
            currency_code: "GBP".into(),
        })],
        // payouts
        "CreatePayoutRun" => vec![enc(run_request(&a.program))],
        "GetPayout" => vec![enc(ppb::GetPayoutRequest { id: a.payout.clone() })],
        "ListPayouts" => vec![enc(ppb::ListPayoutsRequest {
            program_id: p(),
            partner_id: a.seller.clone(),
            payout_run_id: a.run.clone(),
            ..Default::default()
        })],
        // The paid payout can move nowhere: FAILED_PRECONDITION
        // INVALID_PAYOUT_TRANSITION for A, nothing written; MarkPayoutPaid
        // replays its request id (the payout as it stands).
        "ApprovePayout" => {
            vec![enc(ppb::ApprovePayoutRequest { id: a.paid_payout.clone(), request_id: "probe".into() })]
        }
        "BulkApprovePayouts" => vec![enc(ppb::BulkApprovePayoutsRequest {
            program_id: p(),
            ids: vec![a.paid_payout.clone()],
            request_id: "probe".into(),
        })],
        "RejectPayout" => vec![enc(ppb::RejectPayoutRequest {
            id: a.paid_payout.clone(),
            reason: "probe".into(),
            request_id: String::new(),
        })],
        "MarkPayoutProcessing" => vec![enc(ppb::MarkPayoutProcessingRequest {
            id: a.paid_payout.clone(),
            payment_reference: "probe".into(),
            request_id: String::new(),
        })],
        "MarkPayoutPaid" => vec![enc(paid_request(&a.paid_payout))],
        // Not awaiting approval: FAILED_PRECONDITION PAYOUT_NOT_PENDING for A.
        "UpdatePayout" => vec![enc(ppb::UpdatePayoutRequest {
            payout: Some(ppb::Payout { id: a.paid_payout.clone(), notes: "probe".into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["notes".into()] }),
            request_id: String::new(),
        })],
        "MarkPayoutFailed" => vec![enc(ppb::MarkPayoutFailedRequest {
            id: a.paid_payout.clone(),
            reason: "probe".into(),
            request_id: String::new(),
        })],
        "ListAuditEvents" => vec![enc(ppb::ListAuditEventsRequest {
            program_id: p(),
            payout_id: a.paid_payout.clone(),
            ..Default::default()
        })],
        "ExportPayouts" => vec![enc(ppb::ExportPayoutsRequest {
            program_id: p(),
            partner_id: a.seller.clone(),
            payout_run_id: a.run.clone(),
            ..Default::default()
        })],
        // The settings build_a set: nothing changes.
        "SetPartnerPayoutSettings" => vec![enc(settings_request(&a.program, &a.seller))],
        "GetPartnerPayoutSettings" => {
            vec![enc(ppb::GetPartnerPayoutSettingsRequest { program_id: p(), partner_id: a.seller.clone() })]
        }
        "GetPartnerPayoutSummary" => {
            vec![enc(ppb::GetPartnerPayoutSummaryRequest { program_id: p(), partner_id: a.seller.clone() })]
        }
        "GetPayoutStats" => {
            vec![enc(ppb::GetPayoutStatsRequest { program_id: p(), period: "2024-04".into() })]
        }
        // Rows main's payouts work left out (added with issue 14's rows):
        // the sub-partner has nothing payable (FAILED_PRECONDITION
        // NOTHING_PAYABLE for A), and a paid payout cannot be deleted.
        "CreatePayout" => vec![enc(ppb::CreatePayoutRequest {
            program_id: p(),
            partner_id: a.sub.clone(),
            currency_code: "GBP".into(),
            period: "2024-03".into(),
            cutoff: Some(ts(CUTOFF)),
            notes: String::new(),
            request_id: "tenancy-manual".into(),
        })],
        "DeletePayout" => vec![enc(ppb::DeletePayoutRequest {
            id: a.paid_payout.clone(),
            reason: "probe".into(),
            request_id: "tenancy-delete".into(),
        })],
        // events (every service hosts the feed; the ledger's answers here)
        "ListEvents" => vec![enc(epb::ListEventsRequest { program_id: p(), ..Default::default() })],
        "WatchEvents" => vec![enc(epb::WatchEventsRequest { program_id: p(), ..Default::default() })],
        // webhooks (the ledger's): a replayed create, reads, a delete of the
        // deleted subscription (unchanged), and a redeliver of its delivery
        // (FAILED_PRECONDITION: the subscription is deleted).
        "CreateWebhookSubscription" => vec![enc(hook_request(&p(), "http://127.0.0.1:9/unused"))],
        "GetWebhookSubscription" => {
            vec![enc(epb::GetWebhookSubscriptionRequest { program_id: p(), subscription_id: a.hook.clone() })]
        }
        "ListWebhookSubscriptions" => {
            vec![enc(epb::ListWebhookSubscriptionsRequest { program_id: p(), ..Default::default() })]
        }
        "DeleteWebhookSubscription" => {
            vec![enc(epb::DeleteWebhookSubscriptionRequest { program_id: p(), subscription_id: a.hook.clone() })]
        }
        "ListWebhookDeliveries" => vec![enc(epb::ListWebhookDeliveriesRequest {
            program_id: p(),
            subscription_id: a.hook.clone(),
            ..Default::default()
        })],
        "RedeliverWebhook" => {
            vec![enc(epb::RedeliverWebhookRequest { program_id: p(), delivery_id: a.delivery.clone() })]
        }
        other => panic!("no request for {other} ({path}): add one"),
    }
}

/// Waits until every event of the ledger's feed of `program` was delivered
/// to `hook`, then deletes it (so that nothing changes afterwards); returns
/// its first delivery.
async fn settled_hook(hooks: &mut Hooks, program: &str, hook: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let subscription = hooks
            .get_webhook_subscription(epb::GetWebhookSubscriptionRequest {
                program_id: program.into(),
                subscription_id: hook.into(),
            })
            .await
            .expect("get hook")
            .into_inner();
        let deliveries = hooks
            .list_webhook_deliveries(epb::ListWebhookDeliveriesRequest {
                program_id: program.into(),
                subscription_id: hook.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("deliveries")
            .into_inner()
            .deliveries;
        let done = deliveries.iter().all(|d| d.state == epb::WebhookDeliveryState::Delivered as i32);
        let last = deliveries.last().map_or(0, |d| d.sequence);
        if done && !deliveries.is_empty() && last == subscription.cursor_sequence {
            hooks
                .delete_webhook_subscription(epb::DeleteWebhookSubscriptionRequest {
                    program_id: program.into(),
                    subscription_id: hook.into(),
                })
                .await
                .expect("delete hook");
            return deliveries[0].id.clone();
        }
        assert!(Instant::now() < deadline, "the hook's deliveries: {deliveries:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A click on `link` with the caller's id `click_id`, at the sale's time.
fn click(link: &str, click_id: &str) -> apb::Click {
    apb::Click {
        click_id: click_id.into(),
        link_id: link.into(),
        occurred_at: Some(ts(SALE_AT)),
        customer_external_id: "cust-1".into(),
        referrer: "https://example.com/".into(),
        country_code: "GB".into(),
        user_agent: "Mozilla/5.0".into(),
    }
}

/// Requests in program B that reference program A's resources, none of
/// which may write: NOT_FOUND, or an empty answer, exactly as for an id
/// that exists nowhere.
fn cross_requests(a: &A, b: &B) -> Vec<(&'static str, Vec<u8>)> {
    let p = || b.program.clone();
    vec![
        (
            "/accrue.hierarchy.v1.HierarchyService/CreatePartner",
            enc(hpb::CreatePartnerRequest {
                program_id: p(),
                partner: Some(hpb::Partner {
                    display_name: "Under A".into(),
                    parent_id: a.parent.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
        ),
        (
            "/accrue.hierarchy.v1.HierarchyService/SetParent",
            enc(hpb::SetParentRequest { id: b.partner.clone(), parent_id: a.parent.clone() }),
        ),
        (
            "/accrue.hierarchy.v1.HierarchyService/GetUplines",
            enc(hpb::GetUplinesRequest { program_id: p(), partner_ids: vec![b.partner.clone(), a.seller.clone()] }),
        ),
        (
            "/accrue.hierarchy.v1.HierarchyService/CountActiveDirectPartners",
            enc(hpb::CountActiveDirectPartnersRequest {
                program_id: p(),
                queries: vec![hpb::ActiveDirectPartnersQuery {
                    partner_id: a.parent.clone(),
                    as_of: Some(ts(SALE_AT)),
                }],
            }),
        ),
        (
            "/accrue.attribution.v1.AttributionService/CreateLink",
            enc(apb::CreateLinkRequest {
                program_id: p(),
                link: Some(apb::Link {
                    owner_partner_id: a.seller.clone(),
                    key: "cross-owner".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
        ),
        (
            "/accrue.attribution.v1.AttributionService/CreateLink",
            enc(apb::CreateLinkRequest {
                program_id: p(),
                link: Some(apb::Link {
                    owner_partner_id: b.partner.clone(),
                    key: "cross-split".into(),
                    splits: vec![apb::LinkSplit { partner_id: a.split_a.clone(), basis_points: 1000 }],
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
        ),
        (
            "/accrue.attribution.v1.AttributionService/ListLinks",
            enc(apb::ListLinksRequest { program_id: p(), owner_partner_id: a.seller.clone(), ..Default::default() }),
        ),
        (
            "/accrue.attribution.v1.AttributionService/TrackLead",
            enc(apb::TrackLeadRequest {
                program_id: p(),
                link_id: a.link.clone(),
                customer_external_id: "cust-b".into(),
                occurred_at: Some(ts("2024-01-01T00:00:00Z")),
            }),
        ),
        ("/accrue.attribution.v1.AttributionService/RecordRefund", enc(refund_request(&b.program, &a.sale))),
        (
            "/accrue.attribution.v1.AttributionService/ListRefunds",
            enc(apb::ListRefundsRequest { program_id: p(), sale_id: a.sale.clone(), ..Default::default() }),
        ),
        (
            "/accrue.commission.v1.CommissionService/ListAgreementVersions",
            enc(cpb::ListAgreementVersionsRequest { program_id: p(), partner_id: a.sub.clone(), ..Default::default() }),
        ),
        (
            "/accrue.commission.v1.CommissionService/GetAgreementInForce",
            enc(cpb::GetAgreementInForceRequest {
                program_id: p(),
                partner_id: a.seller.clone(),
                time: Some(ts(SALE_AT)),
            }),
        ),
        (
            "/accrue.commission.v1.CommissionService/QuoteSale",
            enc(cpb::QuoteSaleRequest {
                program_id: p(),
                sale: Some(cpb::QuoteSaleInput {
                    seller_partner_id: a.seller.clone(),
                    event_type: types::SaleEventType::Payment as i32,
                    amount: Some(gbp("100.00")),
                    occurred_at: Some(ts(SALE_AT)),
                    ..Default::default()
                }),
                draft_rules: None,
            }),
        ),
        (
            "/accrue.commission.v1.CommissionService/ComputeSettlements",
            enc(cpb::ComputeSettlementsRequest {
                draft: None,
                program: Some(cpb::ProgramContext { program_id: p(), ..Default::default() }),
                sales: vec![cpb::SaleContext {
                    sale_id: a.sale.clone(),
                    event_type: types::SaleEventType::Payment as i32,
                    amount: Some(gbp("100.00")),
                    occurred_at: Some(ts(SALE_AT)),
                    customer_id: "cust-1".into(),
                    seller: Some(partner_context(&a.seller)),
                    ancestors: vec![partner_context(&a.parent)],
                    ..Default::default()
                }],
                omit_base_breakdown: false,
            }),
        ),
        (
            "/accrue.commission.v1.CommissionService/CreateScheme",
            enc(cpb::CreateSchemeRequest {
                program_id: p(),
                scheme: Some(cpb::Scheme {
                    display_name: "Under A".into(),
                    parent_id: a.scheme.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }),
        ),
        (
            "/accrue.commission.v1.CommissionService/AssignScheme",
            enc(cpb::AssignSchemeRequest { partner_id: b.partner.clone(), scheme_id: a.scheme.clone() }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/ListEntries",
            enc(lpb::ListEntriesRequest { program_id: p(), partner_id: a.seller.clone(), ..Default::default() }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/ListEntries",
            enc(lpb::ListEntriesRequest { program_id: p(), sale_id: a.sale.clone(), ..Default::default() }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/TransitionEntries",
            enc(lpb::TransitionEntriesRequest {
                program_id: p(),
                entry_ids: vec![a.credit.clone()],
                to_status: lpb::EntryStatus::Disputed as i32,
                reason: "probe".into(),
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/GetEarningsSummary",
            enc(lpb::GetEarningsSummaryRequest {
                program_id: p(),
                partner_ids: vec![a.seller.clone()],
                ..Default::default()
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/GetBalances",
            enc(lpb::GetBalancesRequest {
                program_id: p(),
                partner_ids: vec![a.seller.clone()],
                currency_code: "GBP".into(),
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/ReserveForPayout",
            enc(lpb::ReserveForPayoutRequest {
                program_id: p(),
                currency_code: "GBP".into(),
                cutoff: Some(ts(CUTOFF)),
                reservations: vec![lpb::PartnerReservation {
                    partner_id: a.seller.clone(),
                    payout_id: a.payout.clone(),
                    minimum_amount: Some(gbp("1.00")),
                }],
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/ReleaseReservation",
            enc(lpb::ReleaseReservationRequest {
                program_id: p(),
                payout_id: a.payout.clone(),
                reason: "probe".into(),
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/SettleReservation",
            enc(lpb::SettleReservationRequest {
                program_id: p(),
                payout_id: a.payout.clone(),
                payment_reference: "probe".into(),
            }),
        ),
        (
            "/accrue.ledger.v1.LedgerService/VoidReversal",
            enc(lpb::VoidReversalRequest {
                program_id: p(),
                idempotency_key: a.reverse_key.clone(),
                reason: "probe".into(),
            }),
        ),
        (
            "/accrue.payouts.v1.PayoutService/ListPayouts",
            enc(ppb::ListPayoutsRequest {
                program_id: p(),
                partner_id: a.seller.clone(),
                payout_run_id: a.run.clone(),
                ..Default::default()
            }),
        ),
        (
            "/accrue.payouts.v1.PayoutService/ExportPayouts",
            enc(ppb::ExportPayoutsRequest {
                program_id: p(),
                partner_id: a.seller.clone(),
                payout_run_id: a.run.clone(),
                ..Default::default()
            }),
        ),
        ("/accrue.payouts.v1.PayoutService/SetPartnerPayoutSettings", enc(settings_request(&b.program, &a.seller))),
        (
            "/accrue.payouts.v1.PayoutService/GetPartnerPayoutSettings",
            enc(ppb::GetPartnerPayoutSettingsRequest { program_id: p(), partner_id: a.seller.clone() }),
        ),
        (
            "/accrue.payouts.v1.PayoutService/GetPartnerPayoutSummary",
            enc(ppb::GetPartnerPayoutSummaryRequest { program_id: p(), partner_id: a.seller.clone() }),
        ),
        (
            "/accrue.payouts.v1.PayoutService/ListAuditEvents",
            enc(ppb::ListAuditEventsRequest { program_id: p(), payout_id: a.payout.clone(), ..Default::default() }),
        ),
    ]
}

/// Where a list is: the program, ListDownline's partner, and the partner
/// whose agreement versions ListAgreementVersions lists.
struct ListScope<'a> {
    program: &'a str,
    root: &'a str,
    agreement_partner: &'a str,
}

/// The lists that page: one page of one item of `scope`'s list at `path`.
const LISTS: &[&str] = &[
    "/accrue.hierarchy.v1.HierarchyService/ListPartners",
    "/accrue.hierarchy.v1.HierarchyService/ListDownline",
    "/accrue.attribution.v1.AttributionService/ListLinks",
    "/accrue.attribution.v1.AttributionService/ListSales",
    "/accrue.attribution.v1.AttributionService/ListSagas",
    "/accrue.attribution.v1.AttributionService/ListRefunds",
    "/accrue.commission.v1.CommissionService/ListAgreementVersions",
    "/accrue.ledger.v1.LedgerService/ListEntries",
    "/accrue.payouts.v1.PayoutService/ListPayouts",
    "/accrue.payouts.v1.PayoutService/ListAuditEvents",
    "/accrue.events.v1.EventService/ListEvents",
];

fn list_request(path: &str, scope: &ListScope<'_>, page_token: &str) -> Vec<u8> {
    let program_id = scope.program.to_string();
    let page_token = page_token.to_string();
    match path.rsplit('/').next().unwrap_or_default() {
        "ListPartners" => enc(hpb::ListPartnersRequest { program_id, page_size: 1, page_token, status: 0 }),
        "ListDownline" => {
            enc(hpb::ListDownlineRequest { id: scope.root.into(), page_size: 1, page_token, max_depth: 0 })
        }
        "ListLinks" => enc(apb::ListLinksRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        "ListSales" => enc(apb::ListSalesRequest { program_id, page_size: 1, page_token, state: 0 }),
        "ListSagas" => enc(apb::ListSagasRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        "ListRefunds" => enc(apb::ListRefundsRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        "ListAgreementVersions" => enc(cpb::ListAgreementVersionsRequest {
            program_id,
            partner_id: scope.agreement_partner.into(),
            page_size: 1,
            page_token,
        }),
        "ListEntries" => enc(lpb::ListEntriesRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        "ListPayouts" => enc(ppb::ListPayoutsRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        "ListAuditEvents" => {
            enc(ppb::ListAuditEventsRequest { program_id, page_size: 1, page_token, ..Default::default() })
        }
        "ListEvents" => enc(epb::ListEventsRequest { program_id, page_size: 1, page_token, ..Default::default() }),
        other => panic!("no list request for {other}"),
    }
}

fn next_page_token(path: &str, body: &[u8]) -> String {
    match path.rsplit('/').next().unwrap_or_default() {
        "ListPartners" => hpb::ListPartnersResponse::decode(body).unwrap().next_page_token,
        "ListDownline" => hpb::ListDownlineResponse::decode(body).unwrap().next_page_token,
        "ListLinks" => apb::ListLinksResponse::decode(body).unwrap().next_page_token,
        "ListSales" => apb::ListSalesResponse::decode(body).unwrap().next_page_token,
        "ListSagas" => apb::ListSagasResponse::decode(body).unwrap().next_page_token,
        "ListRefunds" => apb::ListRefundsResponse::decode(body).unwrap().next_page_token,
        "ListAgreementVersions" => cpb::ListAgreementVersionsResponse::decode(body).unwrap().next_page_token,
        "ListEntries" => lpb::ListEntriesResponse::decode(body).unwrap().next_page_token,
        "ListPayouts" => ppb::ListPayoutsResponse::decode(body).unwrap().next_page_token,
        "ListAuditEvents" => ppb::ListAuditEventsResponse::decode(body).unwrap().next_page_token,
        "ListEvents" => epb::ListEventsResponse::decode(body).unwrap().next_page_token,
        other => panic!("no list response for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_programs_token_finds_nothing_learns_nothing_and_writes_nothing_in_any_rpc() {
    let started = Instant::now();
    let db = TestDb::create().await.unwrap();
    let mut config = StackConfig::for_tests(db.url.clone());
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.unwrap();
    let mut c = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let admin_hooks: Hooks =
        accrue_kit::client::connect(&stack.endpoints.ledger, Duration::from_secs(30), &stack.admin).unwrap();
    let a = build_a(&mut c, &mut admin_hooks.clone()).await;
    let b = build_b(&mut c).await;
    let minter = Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let ttl = Duration::from_secs(3600);
    let token_a = minter.mint("admin-of-a", &[Role::Admin], std::slice::from_ref(&a.program), None, ttl).unwrap();
    let token_b = minter.mint("admin-of-b", &[Role::Admin], std::slice::from_ref(&b.program), None, ttl).unwrap();
    let channels = Channels::connect(&stack).await;
    let create_program = "/accrue.hierarchy.v1.HierarchyService/CreateProgram";
    let mut failures: Vec<String> = Vec::new();

    // The requests are valid and name real resources: the A token gets a
    // business answer (its writes are replays or refused after the program
    // check). CreateProgram validates first, then needs a `*` token.
    let mut rows = Vec::new();
    for (path, _) in TABLE {
        for body in requests(path, &a) {
            let answer = channels.call(path, &token_a, &body).await;
            let fine = if *path == create_program {
                answer.code == Code::PermissionDenied
            } else {
                matches!(answer.code, Code::Ok | Code::FailedPrecondition | Code::AlreadyExists)
            };
            if !fine {
                failures.push(format!("{path} with the program-A token: {}", answer.show()));
            }
            if path.ends_with("/PostEntries") && answer.code == Code::Ok {
                let results = lpb::PostEntriesResponse::decode(answer.body.as_slice()).unwrap().results;
                let reason = results[0].failure.as_ref().map(|failure| failure.reason.clone());
                assert_eq!(reason.as_deref(), Some("IDEMPOTENCY_KEY_REUSED"), "PostEntries probe: {results:#?}");
            }
            rows.push((*path, body));
        }
    }
    assert!(failures.is_empty(), "requests that are not valid for program A:\n{}", failures.join("\n"));

    // Page tokens of A's lists, handed out to the A token.
    let scope_a = ListScope { program: &a.program, root: &a.parent, agreement_partner: &a.sub };
    let scope_b = ListScope { program: &b.program, root: &b.partner, agreement_partner: "" };
    let mut page_tokens = Vec::new();
    for path in LISTS {
        let answer = channels.call(path, &token_a, &list_request(path, &scope_a, "")).await;
        assert_eq!(answer.code, Code::Ok, "{path} first page for A: {}", answer.show());
        let token = next_page_token(path, &answer.body);
        assert!(!token.is_empty(), "{path}: A's list has a second page");
        page_tokens.push((*path, token));
    }

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let before = snapshot(&pool).await;
    for table in
        ["hierarchy.partners", "attribution.refunds", "commission.schemes", "ledger.entries", "payouts.payouts"]
    {
        assert!(before[table].0 > 0, "{table} has rows");
    }

    // Another program, every RPC: NOT_FOUND (CreateProgram: PERMISSION_DENIED).
    let mut answers_b = Vec::new();
    for (path, body) in &rows {
        let answer = channels.call(path, &token_b, body).await;
        let expected = if *path == create_program { Code::PermissionDenied } else { Code::NotFound };
        if answer.code != expected {
            failures.push(format!("{path} with the program-B token: expected {expected:?}, got {}", answer.show()));
        }
        answers_b.push(answer);
    }

    // Existence leaks: each of A's ids swapped for a random one answers the same.
    let mut leak_checks = 0;
    for ((path, body), answer) in rows.iter().zip(&answers_b) {
        for id in a.ids().into_iter().filter(|id| contains(body, id)) {
            let random = uuid::Uuid::now_v7().to_string();
            let swapped = channels.call(path, &token_b, &replace(body, id, &random)).await;
            if !same_answer(path, &answer.masked(&[id]), &swapped.masked(&[random.as_str()])) {
                failures.push(format!(
                    "{path}: A's {id} and a random id answer differently to the B token:\n  A's:    {}\n  random: {}",
                    answer.show(),
                    swapped.show()
                ));
            }
            leak_checks += 1;
        }
    }

    // References from program B to A's resources: as if they did not exist.
    let mut cross_checks = 0;
    for (path, body) in cross_requests(&a, &b) {
        let answer = channels.call(path, &token_b, &body).await;
        if !matches!(answer.code, Code::NotFound | Code::Ok) {
            failures.push(format!("{path} in program B naming A's resources: {}", answer.show()));
        }
        for id in a.ids().into_iter().filter(|id| contains(&body, id)) {
            let random = uuid::Uuid::now_v7().to_string();
            let swapped = channels.call(path, &token_b, &replace(&body, id, &random)).await;
            if !same_answer(path, &answer.masked(&[id]), &swapped.masked(&[random.as_str()])) {
                failures.push(format!(
                    "{path} in program B: A's {id} and a random id answer differently:\n  A's:    {}\n  random: {}",
                    answer.show(),
                    swapped.show()
                ));
            }
            cross_checks += 1;
        }
    }

    // Page tokens: with program A (or A's partner) NOT_FOUND exactly as
    // without a token; with B's own list INVALID_ARGUMENT, naming nothing of A.
    let mut page_checks = 0;
    for (path, token) in &page_tokens {
        let plain = channels.call(path, &token_b, &list_request(path, &scope_a, "")).await;
        let with_token = channels.call(path, &token_b, &list_request(path, &scope_a, token)).await;
        if with_token.code != Code::NotFound || with_token != plain {
            failures.push(format!(
                "{path}: A's page token in A's list, B token: {} (without it: {})",
                with_token.show(),
                plain.show()
            ));
        }
        let own = channels.call(path, &token_b, &list_request(path, &scope_b, token)).await;
        if own.code != Code::InvalidArgument || a.ids().iter().any(|id| own.message.contains(id)) {
            failures.push(format!("{path}: A's page token in B's list: {}", own.show()));
        }
        page_checks += 2;
    }

    // Nothing any of the B token's calls did changed a row.
    let after = snapshot(&pool).await;
    for (table, digest) in &before {
        if after.get(table) != Some(digest) {
            failures.push(format!("{table} changed: {digest:?} → {:?}", after.get(table)));
        }
    }
    assert_eq!(after.len(), before.len(), "tables appeared or vanished");
    pool.close().await;

    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    println!(
        "tenancy: {} RPCs, {} requests × (A token, B token), {leak_checks} A-id/random-id pairs, {cross_checks} \
         cross-program pairs, {page_checks} page-token checks, {} tables unchanged, {:?}",
        TABLE.len(),
        rows.len(),
        before.len(),
        started.elapsed()
    );
    stack.shutdown().await.unwrap();
}
