//! GetAgreementInForce and QuoteSale over real gRPC: the real hierarchy and
//! commission services on a fresh Postgres database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use accrue_proto::commission::v1 as pb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::types::v1 as types;
use common::{Service, id, percentage, start, ts, usd, violations};
use tonic_types::StatusExt;

const DIRECT: i32 = types::EarningKind::Direct as i32;
const SPLIT: i32 = types::EarningKind::Split as i32;
const OVERRIDE: i32 = types::EarningKind::Override as i32;

async fn create(
    service: &mut Service,
    program: &str,
    partner: &str,
    from: &str,
    rules: pb::AgreementRules,
) -> pb::AgreementVersion {
    service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.into(),
            partner_id: partner.into(),
            effective_from: ts(from),
            rules: Some(rules),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn in_force(
    service: &mut Service,
    program: &str,
    partner: &str,
    time: &str,
) -> Result<pb::AgreementVersion, tonic::Status> {
    service
        .client
        .get_agreement_in_force(pb::GetAgreementInForceRequest {
            program_id: program.into(),
            partner_id: partner.into(),
            time: if time.is_empty() { None } else { ts(time) },
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn list(service: &mut Service, program: &str, partner: &str) -> Vec<pb::AgreementVersion> {
    service
        .client
        .list_agreement_versions(pb::ListAgreementVersionsRequest {
            program_id: program.into(),
            partner_id: partner.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .versions
}

async fn quote(service: &mut Service, request: pb::QuoteSaleRequest) -> Result<pb::QuoteSaleResponse, tonic::Status> {
    service.client.quote_sale(request).await.map(tonic::Response::into_inner)
}

/// A USD PAYMENT of `amount` by `seller` on 2024-05-01.
fn payment(seller: &str, amount: &str) -> pb::QuoteSaleInput {
    pb::QuoteSaleInput {
        seller_partner_id: seller.into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: usd(amount),
        occurred_at: ts("2024-05-01T00:00:00Z"),
        ..Default::default()
    }
}

fn quote_request(program: &str, sale: pb::QuoteSaleInput, draft: Option<pb::AgreementRules>) -> pb::QuoteSaleRequest {
    pb::QuoteSaleRequest { program_id: program.into(), sale: Some(sale), draft_rules: draft }
}

/// (partner, kind, amount, level) of every line, in order.
fn lines(settlement: &pb::Settlement) -> Vec<(String, i32, String, i32)> {
    settlement
        .lines
        .iter()
        .map(|line| (line.partner_id.clone(), line.kind, line.amount.as_ref().unwrap().amount.clone(), line.level))
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn agreement_in_force_is_chosen_by_time_then_version_and_partner_scope_beats_the_default() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let partner = service.partner(&program, "", "").await;
    let other = id();
    let default_1 = create(&mut service, &program, "", "2024-01-01T00:00:00Z", percentage("0.05")).await;
    let default_2 = create(&mut service, &program, "", "2024-06-01T00:00:00Z", percentage("0.06")).await;
    let own_1 = create(&mut service, &program, &partner, "2024-03-01T00:00:00Z", percentage("0.10")).await;
    let own_2 = create(&mut service, &program, &partner, "2024-09-01T00:00:00Z", percentage("0.20")).await;
    // Same effective_from as version 2: the higher version number wins.
    let own_3 = create(&mut service, &program, &partner, "2024-09-01T00:00:00Z", percentage("0.30")).await;
    assert_eq!((own_2.version, own_3.version), (2, 3));

    // Before the default's first version: nothing is in force.
    let status = in_force(&mut service, &program, "", "2023-12-31T23:59:59Z").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "AGREEMENT_NOT_FOUND");
    assert!(status.message().contains(&program), "{}", status.message());
    let status = in_force(&mut service, &program, &partner, "2023-12-31T23:59:59Z").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains(&partner), "{}", status.message());

    // The whole version comes back, create_time included.
    assert_eq!(in_force(&mut service, &program, "", "2024-01-01T00:00:00Z").await.unwrap(), default_1);
    assert_eq!(in_force(&mut service, &program, "", "2024-05-31T23:59:59Z").await.unwrap(), default_1);
    assert_eq!(in_force(&mut service, &program, "", "2024-06-01T00:00:00Z").await.unwrap(), default_2);
    // The default alone ignores partner agreements.
    assert_eq!(in_force(&mut service, &program, "", "2024-10-01T00:00:00Z").await.unwrap(), default_2);

    // Before the partner's first version: the default applies.
    assert_eq!(in_force(&mut service, &program, &partner, "2024-02-29T00:00:00Z").await.unwrap(), default_1);
    assert_eq!(in_force(&mut service, &program, &partner, "2024-03-01T00:00:00Z").await.unwrap(), own_1);
    // Its own version beats a newer default version.
    assert_eq!(in_force(&mut service, &program, &partner, "2024-08-31T23:59:59Z").await.unwrap(), own_1);
    assert_eq!(in_force(&mut service, &program, &partner, "2024-09-01T00:00:00Z").await.unwrap(), own_3);
    // Unset time means now.
    assert_eq!(in_force(&mut service, &program, &partner, "").await.unwrap(), own_3);

    // A partner without an agreement of its own gets the default.
    assert_eq!(in_force(&mut service, &program, &other, "2024-07-01T00:00:00Z").await.unwrap(), default_2);
    // A program without agreements has nothing in force.
    let status = in_force(&mut service, &id(), &partner, "").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn agreement_in_force_rejects_malformed_ids() {
    let mut service = start().await;
    let status = in_force(&mut service, "not-a-program", "not-a-partner", "").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["partner_id", "program_id"]);
    let status = in_force(&mut service, "", "", "").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["program_id"]);
}

fn partner_ctx(partner: &hpb::Partner) -> pb::PartnerContext {
    pb::PartnerContext {
        partner_id: partner.id.clone(),
        status: partner.status,
        role: partner.role.clone(),
        qualification_facts: None,
    }
}

async fn get_partner(service: &mut Service, partner: &str) -> hpb::Partner {
    service.hierarchy.get_partner(hpb::GetPartnerRequest { id: partner.into() }).await.unwrap().into_inner()
}

#[tokio::test]
async fn a_quote_is_exactly_what_compute_settlements_produces_for_the_same_facts() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let grand = service.partner(&program, "WHITE_LABEL", "").await;
    let parent = service.partner(&program, "DISTRIBUTOR", &grand).await;
    let seller = service.partner(&program, "RETAILER", &parent).await;
    let splitter = service.partner(&program, "RETAILER", &grand).await;
    // A suspended split partner still accrues its share.
    service
        .hierarchy
        .update_partner_status(hpb::UpdatePartnerStatusRequest {
            id: splitter.clone(),
            status: types::PartnerStatus::Suspended as i32,
            reason: "test".into(),
        })
        .await
        .unwrap();
    create(&mut service, &program, "", "2024-01-01T00:00:00Z", percentage("0.10")).await;
    // Program plan: 2% then 1% of the deal; the grandparent's own plan: 1.50 flat at level 2.
    let plans = [
        pb::OverridePlan {
            program_id: program.clone(),
            mode: pb::OverrideMode::Percentage as i32,
            rates_by_level: vec![
                pb::OverrideLevel { rate: "0.02".into(), flat_amount: None },
                pb::OverrideLevel { rate: "0.01".into(), flat_amount: None },
            ],
            ..Default::default()
        },
        pb::OverridePlan {
            program_id: program.clone(),
            partner_id: grand.clone(),
            mode: pb::OverrideMode::Flat as i32,
            rates_by_level: vec![
                pb::OverrideLevel::default(),
                pb::OverrideLevel { rate: String::new(), flat_amount: usd("1.50") },
            ],
            ..Default::default()
        },
    ];
    for plan in plans {
        service
            .client
            .set_override_plan(pb::SetOverridePlanRequest { plan: Some(plan), request_id: String::new() })
            .await
            .unwrap();
    }

    let mut sale = payment(&seller, "200.00");
    sale.product_code = "PRO".into();
    sale.is_first_payment = true;
    sale.splits = vec![pb::QuoteSplit { partner_id: splitter.clone(), basis_points: 2500 }];
    let quoted = quote(&mut service, quote_request(&program, sale, None)).await.unwrap();
    assert!(!quoted.draft_applied);
    let quoted = quoted.settlement.unwrap();

    // The same facts, assembled by hand from the hierarchy.
    let hierarchy_program =
        service.hierarchy.get_program(hpb::GetProgramRequest { id: program.clone() }).await.unwrap().into_inner();
    let (grand_p, parent_p, seller_p, splitter_p) = (
        get_partner(&mut service, &grand).await,
        get_partner(&mut service, &parent).await,
        get_partner(&mut service, &seller).await,
        get_partner(&mut service, &splitter).await,
    );
    assert_eq!(splitter_p.status, types::PartnerStatus::Suspended as i32);
    let context = pb::SaleContext {
        sale_id: "quote".into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: usd("200.00"),
        product_code: "PRO".into(),
        occurred_at: ts("2024-05-01T00:00:00Z"),
        seller: Some(partner_ctx(&seller_p)),
        splits: vec![pb::SplitContext { partner: Some(partner_ctx(&splitter_p)), basis_points: 2500 }],
        ancestors: vec![partner_ctx(&parent_p), partner_ctx(&grand_p)],
        is_first_payment: true,
        ..Default::default()
    };
    let computed = service
        .client
        .compute_settlements(pb::ComputeSettlementsRequest {
            draft: None,
            program: Some(pb::ProgramContext {
                program_id: program.clone(),
                rounding_mode: hierarchy_program.rounding_mode,
                override_depth_cap: hierarchy_program.override_depth_cap,
                compression_enabled: hierarchy_program.compression_enabled,
                settings_version: hierarchy_program.settings_history.last().unwrap().version,
            }),
            sales: vec![context],
            omit_base_breakdown: false,
        })
        .await
        .unwrap()
        .into_inner()
        .settlements
        .pop()
        .unwrap();

    // Every line and every breakdown match.
    assert_eq!(quoted, computed);
    assert_eq!(quoted.failure, None);
    assert_eq!(quoted.sale_id, "quote");
    assert_eq!(quoted.base_commission, usd("20.00"));
    assert_eq!(
        lines(&quoted),
        vec![
            (seller.clone(), DIRECT, "15.00".into(), 0),
            (splitter, SPLIT, "5.00".into(), 0),
            (parent, OVERRIDE, "4.00".into(), 1),
            (grand, OVERRIDE, "1.50".into(), 2),
        ]
    );
    assert!(quoted.lines.iter().all(|line| line.source_partner_id == seller));
    assert!(quoted.lines.iter().all(|line| line.clears_at == ts("2024-05-31T00:00:00Z")));
    for (line, expected) in quoted.lines.iter().zip(&computed.lines) {
        assert_eq!(line.breakdown, expected.breakdown);
        assert!(line.breakdown.is_some());
    }
}

/// Seed 003 example 5: tiers 20% below 10,000, 15% to 50,000, 10% above.
fn seed_003_example_5_tiers() -> pb::AgreementRules {
    let tier = |min: &str, max: &str, rate: &str| pb::Tier {
        min_volume: min.into(),
        max_volume: max.into(),
        rate: rate.into(),
        fixed_amount: None,
    };
    pb::AgreementRules {
        model: pb::CommissionModel::Tiered as i32,
        trigger: pb::CommissionTrigger::OnPayment as i32,
        tiers: vec![tier("0", "10000", "0.20"), tier("10000", "50000", "0.15"), tier("50000", "", "0.10")],
        clearance_days: 30,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_draft_tiered_agreement_is_quoted_without_being_saved() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "RETAILER", "").await;
    let saved = create(&mut service, &program, &seller, "2024-01-01T00:00:00Z", percentage("0.10")).await;

    let mut sale = payment(&seller, "100.00");
    sale.seller_prior_volume = usd("25000.00");
    let quoted =
        quote(&mut service, quote_request(&program, sale.clone(), Some(seed_003_example_5_tiers()))).await.unwrap();
    assert!(quoted.draft_applied);
    let settlement = quoted.settlement.unwrap();
    assert_eq!(settlement.failure, None);
    assert_eq!(settlement.base_commission, usd("15.00"));
    assert_eq!(settlement.agreement_version_id, "");
    assert_eq!(lines(&settlement), vec![(seller.clone(), DIRECT, "15.00".into(), 0)]);
    let base = settlement.base_breakdown.as_ref().unwrap();
    assert_eq!((base.model.as_str(), base.agreement_version_id.as_str()), ("TIERED", ""));
    assert_eq!(settlement.lines[0].breakdown.as_ref().unwrap().agreement_version_id, "");

    // Nothing was written: the seller still has only its saved version, the
    // program no default.
    assert_eq!(list(&mut service, &program, &seller).await, vec![saved.clone()]);
    assert!(list(&mut service, &program, "").await.is_empty());

    // Without the draft the saved 10% applies.
    let quoted = quote(&mut service, quote_request(&program, sale, None)).await.unwrap();
    assert!(!quoted.draft_applied);
    let settlement = quoted.settlement.unwrap();
    assert_eq!(settlement.base_commission, usd("10.00"));
    assert_eq!(settlement.agreement_version_id, saved.id);
    assert_eq!(settlement.base_breakdown.as_ref().unwrap().agreement_version_id, saved.id);
    assert_eq!(lines(&settlement), vec![(seller, DIRECT, "10.00".into(), 0)]);
}

/// Seed 003 example 6: 25% on the first payment, else 10% on renewals.
fn seed_003_example_6_hybrid() -> pb::AgreementRules {
    let rule = |field: pb::ConditionField, value: &str, rate: &str| pb::HybridRule {
        condition: Some(pb::Condition {
            field: field as i32,
            operator: pb::ConditionOperator::Equals as i32,
            value: value.into(),
            values: Vec::new(),
        }),
        model: pb::CommissionModel::Percentage as i32,
        rate: rate.into(),
        ..Default::default()
    };
    pb::AgreementRules {
        model: pb::CommissionModel::Hybrid as i32,
        trigger: pb::CommissionTrigger::OnPayment as i32,
        rules: vec![
            rule(pb::ConditionField::IsFirstPayment, "true", "0.25"),
            rule(pb::ConditionField::EventType, "RENEWAL", "0.10"),
        ],
        clearance_days: 30,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_hybrid_draft_pays_by_the_first_matching_rule_and_nothing_without_a_match() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    let cases = [
        // (event, is_first_payment, expected C)
        (types::SaleEventType::Payment, true, "25.00"),
        (types::SaleEventType::Renewal, false, "10.00"),
        // Both rules match: the first decides.
        (types::SaleEventType::Renewal, true, "25.00"),
        // Neither matches: 0, no lines.
        (types::SaleEventType::Payment, false, "0.00"),
    ];
    for (event, first, expected) in cases {
        let mut sale = payment(&seller, "100.00");
        sale.event_type = event as i32;
        sale.is_first_payment = first;
        let quoted =
            quote(&mut service, quote_request(&program, sale, Some(seed_003_example_6_hybrid()))).await.unwrap();
        assert!(quoted.draft_applied);
        let settlement = quoted.settlement.unwrap();
        assert_eq!(settlement.failure, None, "{event:?} {first}");
        assert_eq!(settlement.base_commission, usd(expected), "{event:?} {first}");
        let expected_lines =
            if expected == "0.00" { vec![] } else { vec![(seller.clone(), DIRECT, expected.to_string(), 0)] };
        assert_eq!(lines(&settlement), expected_lines, "{event:?} {first}");
    }
    // Without the draft there is no agreement at all: nothing is earned.
    let quoted = quote(&mut service, quote_request(&program, payment(&seller, "100.00"), None)).await.unwrap();
    let settlement = quoted.settlement.unwrap();
    assert_eq!(settlement.base_commission, usd("0.00"));
    assert!(settlement.lines.is_empty());
    assert!(list(&mut service, &program, &seller).await.is_empty());
}

#[tokio::test]
async fn a_settlement_failure_is_returned_inside_the_quote() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    let draft = pb::AgreementRules {
        model: pb::CommissionModel::Fixed as i32,
        fixed_amount: Some(types::Money { currency_code: "EUR".into(), amount: "5.00".into() }),
        ..Default::default()
    };
    let quoted = quote(&mut service, quote_request(&program, payment(&seller, "100.00"), Some(draft))).await.unwrap();
    let settlement = quoted.settlement.unwrap();
    let failure = settlement.failure.unwrap();
    assert_eq!((failure.code.as_str(), failure.reason.as_str()), ("FAILED_PRECONDITION", "CURRENCY_MISMATCH"));
    assert!(settlement.lines.is_empty());
}

#[tokio::test]
async fn an_invalid_quote_reports_every_violation_together() {
    let mut service = start().await;
    let seller = id();
    let twice = id();
    let sale = pb::QuoteSaleInput {
        seller_partner_id: seller.clone(),
        event_type: 0,
        amount: usd("1.001"),
        splits: vec![
            pb::QuoteSplit { partner_id: "nope".into(), basis_points: 0 },
            pb::QuoteSplit { partner_id: seller.clone(), basis_points: 5000 },
            pb::QuoteSplit { partner_id: twice.clone(), basis_points: 6000 },
            pb::QuoteSplit { partner_id: twice, basis_points: 10 },
        ],
        seller_prior_volume: Some(types::Money { currency_code: "EUR".into(), amount: "10.00".into() }),
        customer_history: vec![pb::PriorEvent::default()],
        ..Default::default()
    };
    let bad_draft = pb::AgreementRules {
        model: pb::CommissionModel::Percentage as i32,
        rate: "2".into(),
        clearance_days: -1,
        ..Default::default()
    };
    let status = quote(&mut service, quote_request("nope", sale, Some(bad_draft))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        vec![
            "draft_rules.clearance_days",
            "draft_rules.rate",
            "program_id",
            "sale.amount.amount",
            "sale.customer_history[0].event_type",
            "sale.customer_history[0].occurred_at",
            "sale.customer_history[0].seller_partner_id",
            "sale.event_type",
            "sale.splits",
            "sale.splits[0].basis_points",
            "sale.splits[0].partner_id",
            "sale.splits[1].partner_id",
            "sale.splits[3].partner_id",
        ]
    );

    // The seller's own id, a negative amount and a prior volume in another
    // currency (the sale is in USD).
    let mut sale = payment("seller?", "-5.00");
    sale.seller_prior_volume = Some(types::Money { currency_code: "EUR".into(), amount: "10.00".into() });
    let status = quote(&mut service, quote_request(&id(), sale, None)).await.unwrap_err();
    assert_eq!(
        violations(&status),
        vec!["sale.amount.amount", "sale.seller_partner_id", "sale.seller_prior_volume.currency_code"]
    );

    // A missing sale.
    let status =
        quote(&mut service, pb::QuoteSaleRequest { program_id: id(), ..Default::default() }).await.unwrap_err();
    assert_eq!(violations(&status), vec!["sale"]);
}

#[tokio::test]
async fn a_bad_draft_is_validated_like_create_agreement_under_draft_rules() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    let mut draft = seed_003_example_5_tiers();
    draft.tiers[1].min_volume = "20000".into();
    draft.rate = "0.10".into();
    let create = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            partner_id: seller.clone(),
            rules: Some(draft.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let expected: Vec<String> =
        violations(&create).iter().map(|field| field.replacen("rules", "draft_rules", 1)).collect();
    assert_eq!(expected, vec!["draft_rules.rate", "draft_rules.tiers[1].min_volume"]);
    let status =
        quote(&mut service, quote_request(&program, payment(&seller, "100.00"), Some(draft))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), expected);
}

#[tokio::test]
async fn a_quote_for_an_unknown_program_or_partner_is_not_found() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    let elsewhere = service.program(&[]).await;
    let stranger = service.partner(&elsewhere, "", "").await;

    let unknown = id();
    let status = quote(&mut service, quote_request(&program, payment(&unknown, "1.00"), None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "PARTNER_NOT_FOUND");
    assert!(status.message().contains(&unknown), "{}", status.message());
    assert!(status.message().contains("sale.seller_partner_id"), "{}", status.message());

    // A partner of another program is not in this one.
    let mut sale = payment(&seller, "1.00");
    sale.splits = vec![pb::QuoteSplit { partner_id: stranger.clone(), basis_points: 100 }];
    let status = quote(&mut service, quote_request(&program, sale, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains(&stranger), "{}", status.message());
    assert!(status.message().contains("sale.splits[0].partner_id"), "{}", status.message());

    let missing_program = id();
    let status =
        quote(&mut service, quote_request(&missing_program, payment(&seller, "1.00"), None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(reason(&status), "PROGRAM_NOT_FOUND");
    assert!(status.message().contains(&missing_program), "{}", status.message());
}

#[tokio::test]
async fn a_seller_whose_role_may_not_transact_is_a_failed_precondition() {
    let mut service = start().await;
    // The default ladder starts at ADMIN, which may not transact (seed 002).
    let program = service.program(&[]).await;
    let admin = service.partner(&program, "ADMIN", "").await;
    create(&mut service, &program, "", "2024-01-01T00:00:00Z", percentage("0.10")).await;
    let status = quote(&mut service, quote_request(&program, payment(&admin, "100.00"), None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&status), "ROLE_MAY_NOT_TRANSACT");
    assert!(status.message().contains("ADMIN"), "{}", status.message());
    // A partner below it sells normally, the ADMIN earning no override without a plan.
    let retailer = service.partner(&program, "RETAILER", &admin).await;
    let quoted = quote(&mut service, quote_request(&program, payment(&retailer, "100.00"), None)).await.unwrap();
    assert_eq!(lines(&quoted.settlement.unwrap()), vec![(retailer, DIRECT, "10.00".into(), 0)]);
}
