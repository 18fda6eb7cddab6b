//! CommissionService over real gRPC against a fresh Postgres database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use accrue_proto::commission::v1 as pb;
use accrue_proto::types::v1 as types;
use common::{Service, id, percentage, start, ts, usd, violations};

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

#[tokio::test]
async fn create_agreement_versions_and_list_them_oldest_first() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let partner = service.partner(&program, "", "").await;
    let create = |rate: &str, from: &str, request_id: &str| pb::CreateAgreementRequest {
        program_id: program.clone(),
        partner_id: partner.clone(),
        effective_from: ts(from),
        rules: Some(percentage(rate)),
        request_id: request_id.into(),
    };
    let v1 = service.client.create_agreement(create("0.10", "2020-01-01T00:00:00Z", "r1")).await.unwrap().into_inner();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.partner_id, partner);
    assert_eq!(v1.program_id, program);
    assert_eq!(v1.rules.as_ref().unwrap().rate, "0.1");
    assert_eq!(v1.rules.as_ref().unwrap().clearance_days, 30);
    assert_eq!(v1.effective_from, ts("2020-01-01T00:00:00Z"));
    let v2 = service.client.create_agreement(create("0.20", "2021-01-01T00:00:00Z", "r2")).await.unwrap().into_inner();
    assert_eq!((v2.version, &v2.agreement_id), (2, &v1.agreement_id));

    // Idempotent on request_id; reusing it for another body is ALREADY_EXISTS.
    let again =
        service.client.create_agreement(create("0.10", "2020-01-01T00:00:00Z", "r1")).await.unwrap().into_inner();
    assert_eq!(again.id, v1.id);
    let reused = service.client.create_agreement(create("0.30", "2020-01-01T00:00:00Z", "r1")).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);

    let versions = list(&mut service, &program, &partner).await;
    assert_eq!(versions.iter().map(|v| (v.version, v.id.clone())).collect::<Vec<_>>(), vec![(1, v1.id), (2, v2.id)]);
    // Paging: one per page.
    let page = service
        .client
        .list_agreement_versions(pb::ListAgreementVersionsRequest {
            program_id: program.clone(),
            partner_id: partner.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.versions.len(), 1);
    let next = service
        .client
        .list_agreement_versions(pb::ListAgreementVersionsRequest {
            program_id: program.clone(),
            partner_id: partner.clone(),
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.versions[0].version, 2);
    // The program default scope is separate.
    assert!(list(&mut service, &program, "").await.is_empty());
    let default = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            rules: Some(percentage("0.05")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((default.version, default.partner_id.as_str()), (1, ""));
    assert_ne!(default.agreement_id, v1.agreement_id);
    assert_eq!(list(&mut service, &program, "").await.len(), 1);

    // Versions are immutable in the database itself.
    let pool = sqlx::PgPool::connect(&service.services.db().url).await.unwrap();
    for statement in [
        "UPDATE commission.agreement_versions SET version = version + 10",
        "DELETE FROM commission.agreement_versions",
        "TRUNCATE commission.agreement_versions CASCADE",
    ] {
        let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(error.to_string().contains("immutable"), "{statement}: {error}");
    }
    assert_eq!(list(&mut service, &program, &partner).await.len(), 2);
    pool.close().await;
}

#[tokio::test]
async fn invalid_agreements_are_rejected_with_every_violation_and_write_nothing() {
    let mut service = start().await;
    let program = id();
    let mut rules = percentage("1.5");
    rules.clearance_days = 5000;
    rules.min_commission = usd("10.00");
    rules.max_commission = usd("5.00");
    rules.max_commissions = -1;
    rules.tiers = vec![pb::Tier { min_volume: "0".into(), rate: "0.1".into(), ..Default::default() }];
    let status = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            partner_id: "not-a-uuid".into(),
            rules: Some(rules),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        vec![
            "partner_id",
            "rules.clearance_days",
            "rules.max_commissions",
            "rules.min_commission.amount",
            "rules.rate",
            "rules.tiers",
        ]
    );

    // TIERED: gap between tiers, open tier not last, a tier with both rate and fixed.
    let tiered = pb::AgreementRules {
        model: pb::CommissionModel::Tiered as i32,
        tiers: vec![
            pb::Tier { min_volume: "0".into(), max_volume: "100".into(), rate: "0.1".into(), ..Default::default() },
            pb::Tier { min_volume: "200".into(), max_volume: "".into(), rate: "0.2".into(), ..Default::default() },
            pb::Tier { min_volume: "300".into(), max_volume: "".into(), rate: "0.3".into(), fixed_amount: usd("1.00") },
        ],
        ..Default::default()
    };
    let status = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            rules: Some(tiered),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["rules.tiers[1].max_volume", "rules.tiers[1].min_volume", "rules.tiers[2]"]);

    // HYBRID: a numeric operator on EVENT_TYPE, IN without values, a bad product rule model.
    let hybrid = pb::AgreementRules {
        model: pb::CommissionModel::Hybrid as i32,
        rules: vec![
            pb::HybridRule {
                condition: Some(pb::Condition {
                    field: pb::ConditionField::EventType as i32,
                    operator: pb::ConditionOperator::Gt as i32,
                    value: "PAYMENT".into(),
                    values: vec![],
                }),
                model: pb::CommissionModel::Percentage as i32,
                rate: "0.1".into(),
                ..Default::default()
            },
            pb::HybridRule {
                condition: Some(pb::Condition {
                    field: pb::ConditionField::ProductCode as i32,
                    operator: pb::ConditionOperator::In as i32,
                    value: String::new(),
                    values: vec![],
                }),
                model: pb::CommissionModel::Hybrid as i32,
                ..Default::default()
            },
            pb::HybridRule {
                condition: Some(pb::Condition {
                    field: pb::ConditionField::GrossAmount as i32,
                    operator: pb::ConditionOperator::Gte as i32,
                    value: "lots".into(),
                    values: vec![],
                }),
                model: pb::CommissionModel::Fixed as i32,
                fixed_amount: usd("-1.00"),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let status = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            rules: Some(hybrid),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![
            "rules.rules[0].condition.operator",
            "rules.rules[1].condition.values",
            "rules.rules[1].model",
            "rules.rules[2].condition.value",
            "rules.rules[2].fixed_amount.amount",
        ]
    );

    // Nothing was written in either scope.
    assert!(list(&mut service, &program, "").await.is_empty());

    // Override plans: too many levels, a bad rate, a flat amount in a PERCENTAGE plan.
    let status = service
        .client
        .set_override_plan(pb::SetOverridePlanRequest {
            plan: Some(pb::OverridePlan {
                program_id: program.clone(),
                mode: pb::OverrideMode::Percentage as i32,
                rates_by_level: (0..33)
                    .map(|i| match i {
                        0 => pb::OverrideLevel { rate: "2".into(), flat_amount: None },
                        1 => pb::OverrideLevel { rate: String::new(), flat_amount: usd("1.00") },
                        _ => pb::OverrideLevel { rate: "0.01".into(), flat_amount: None },
                    })
                    .collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        vec!["plan.rates_by_level", "plan.rates_by_level[0].rate", "plan.rates_by_level[1].flat_amount"]
    );
}

#[tokio::test]
async fn an_amount_with_too_many_decimals_is_rejected() {
    let mut service = start().await;
    let program = id();
    let rules = pb::AgreementRules {
        model: pb::CommissionModel::Fixed as i32,
        fixed_amount: usd("10.001"),
        setup_fee: Some(types::Money { currency_code: "JPY".into(), amount: "1.5".into() }),
        ..Default::default()
    };
    let status = service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            rules: Some(rules),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["rules.fixed_amount.amount", "rules.setup_fee.amount"]);
    assert!(list(&mut service, &program, "").await.is_empty());
}

fn partner_ctx(partner: &str) -> Option<pb::PartnerContext> {
    Some(pb::PartnerContext { partner_id: partner.into(), status: 1, role: String::new(), qualification_facts: None })
}

fn sale(sale_id: &str, seller: &str, amount: &str, occurred_at: &str) -> pb::SaleContext {
    pb::SaleContext {
        sale_id: sale_id.into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: usd(amount),
        occurred_at: ts(occurred_at),
        customer_id: "customer-1".into(),
        seller: partner_ctx(seller),
        is_first_payment: true,
        ..Default::default()
    }
}

fn program_ctx(program: &str) -> Option<pb::ProgramContext> {
    Some(pb::ProgramContext {
        program_id: program.into(),
        rounding_mode: 1,
        override_depth_cap: 8,
        compression_enabled: false,
        settings_version: 1,
    })
}

#[tokio::test]
async fn compute_settlements_uses_the_version_in_force_at_occurred_at() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    let mut versions = Vec::new();
    for (rate, from) in [("0.10", "2020-01-01T00:00:00Z"), ("0.20", "2021-01-01T00:00:00Z")] {
        let version = service
            .client
            .create_agreement(pb::CreateAgreementRequest {
                program_id: program.clone(),
                partner_id: seller.clone(),
                effective_from: ts(from),
                rules: Some(percentage(rate)),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        versions.push(version);
    }
    let response = service
        .client
        .compute_settlements(pb::ComputeSettlementsRequest {
            draft: None,
            program: program_ctx(&program),
            sales: vec![
                sale("s-2020", &seller, "100.00", "2020-06-01T00:00:00Z"),
                sale("s-2021", &seller, "100.00", "2021-06-01T00:00:00Z"),
                sale("s-2019", &seller, "100.00", "2019-06-01T00:00:00Z"),
            ],
            omit_base_breakdown: false,
        })
        .await
        .unwrap()
        .into_inner();
    let [s2020, s2021, s2019] = &response.settlements[..] else { panic!("three settlements") };
    assert_eq!(s2020.agreement_version_id, versions[0].id);
    assert_eq!(s2020.base_commission, usd("10.00"));
    assert_eq!(s2020.lines.len(), 1);
    assert_eq!(s2020.lines[0].breakdown.as_ref().unwrap().agreement_version_id, versions[0].id);
    assert_eq!(s2020.lines[0].clears_at, ts("2020-07-01T00:00:00Z"));
    assert_eq!(s2021.agreement_version_id, versions[1].id);
    assert_eq!(s2021.base_commission, usd("20.00"));
    // Before any version: no agreement in force.
    assert_eq!(s2019.agreement_version_id, "");
    assert_eq!(s2019.base_commission, usd("0.00"));
    assert!(s2019.lines.is_empty());
    assert_eq!(s2019.base_breakdown.as_ref().unwrap().note, "no agreement in force");
}

#[tokio::test]
async fn omit_base_breakdown_leaves_only_the_base_breakdown_out() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let seller = service.partner(&program, "", "").await;
    service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            partner_id: seller.clone(),
            effective_from: ts("2020-01-01T00:00:00Z"),
            rules: Some(percentage("0.10")),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let mut compute = async |omit_base_breakdown: bool| {
        service
            .client
            .compute_settlements(pb::ComputeSettlementsRequest {
                program: program_ctx(&program),
                sales: vec![
                    sale("s-1", &seller, "100.00", "2020-06-01T00:00:00Z"),
                    sale("s-0", &seller, "100.00", "2019-06-01T00:00:00Z"),
                ],
                draft: None,
                omit_base_breakdown,
            })
            .await
            .unwrap()
            .into_inner()
            .settlements
    };
    let full = compute(false).await;
    let lean = compute(true).await;
    assert_eq!(full.len(), 2);
    assert_eq!(full[0].base_breakdown.as_ref().unwrap().inputs["rate"], "0.1");
    assert_eq!(full[1].base_breakdown.as_ref().unwrap().note, "no agreement in force");
    assert!(lean.iter().all(|s| s.base_breakdown.is_none()), "{lean:#?}");
    // Everything else is what the full answer says, breakdowns of the lines included.
    let without_base = |s: &pb::Settlement| pb::Settlement { base_breakdown: None, ..s.clone() };
    assert_eq!(lean, full.iter().map(without_base).collect::<Vec<_>>());
    assert_eq!(lean[0].lines[0].breakdown.as_ref().unwrap().inputs["rate"], "0.1");
}

#[tokio::test]
async fn seed_000_example_end_to_end_with_overrides_and_failures() {
    let mut service = start().await;
    // Agreements and plans name real partners of a real program; the tree
    // the math walks is the one the request's contexts give.
    let program = service.program(&[]).await;
    let mut partners = Vec::new();
    for _ in 0..4 {
        partners.push(service.partner(&program, "", "").await);
    }
    let [owner, a, b, parent] = <[String; 4]>::try_from(partners).unwrap();
    service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            effective_from: ts("2024-01-01T00:00:00Z"),
            rules: Some(percentage("0.10")),
            ..Default::default()
        })
        .await
        .unwrap();
    let plan = service
        .client
        .set_override_plan(pb::SetOverridePlanRequest {
            plan: Some(pb::OverridePlan {
                program_id: program.clone(),
                mode: pb::OverrideMode::Percentage as i32,
                rates_by_level: vec![pb::OverrideLevel { rate: "0.02".into(), flat_amount: None }],
                ..Default::default()
            }),
            request_id: "plan-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.basis, pb::OverrideBasis::DealAmount as i32);
    let mut seed = sale("seed-000", &owner, "100.00", "2024-03-01T00:00:00Z");
    seed.splits = vec![
        pb::SplitContext { partner: partner_ctx(&a), basis_points: 3000 },
        pb::SplitContext { partner: partner_ctx(&b), basis_points: 2000 },
    ];
    seed.ancestors = vec![pb::PartnerContext {
        partner_id: parent.clone(),
        status: 1,
        role: String::new(),
        qualification_facts: None,
    }];
    let mut broken = sale("broken", "nope", "1.001", "2024-03-01T00:00:00Z");
    broken.event_type = 0;
    let response = service
        .client
        .compute_settlements(pb::ComputeSettlementsRequest {
            draft: None,
            program: program_ctx(&program),
            sales: vec![seed, broken],
            omit_base_breakdown: false,
        })
        .await
        .unwrap()
        .into_inner();
    let settlement = &response.settlements[0];
    assert_eq!(settlement.failure, None);
    assert_eq!(settlement.base_commission, usd("10.00"));
    let lines: Vec<(String, i32, String, i32)> = settlement
        .lines
        .iter()
        .map(|l| (l.partner_id.clone(), l.kind, l.amount.as_ref().unwrap().amount.clone(), l.level))
        .collect();
    let (direct, split, over) =
        (types::EarningKind::Direct as i32, types::EarningKind::Split as i32, types::EarningKind::Override as i32);
    assert_eq!(
        lines,
        vec![
            (owner.clone(), direct, "5.00".into(), 0),
            (a, split, "3.00".into(), 0),
            (b, split, "2.00".into(), 0),
            (parent, over, "2.00".into(), 1),
        ]
    );
    assert!(settlement.lines.iter().all(|l| l.source_partner_id == owner));
    assert_eq!(settlement.lines[0].breakdown.as_ref().unwrap().model, "PERCENTAGE");
    assert_eq!(settlement.base_breakdown.as_ref().unwrap().inputs["rate"], "0.1");

    let failed = &response.settlements[1];
    assert_eq!(failed.sale_id, "broken");
    let failure = failed.failure.as_ref().unwrap();
    assert_eq!((failure.code.as_str(), failure.reason.as_str()), ("INVALID_ARGUMENT", "INVALID_SALE"));
    assert!(failure.message.contains("sales[1].amount.amount"), "{}", failure.message);
    assert!(failure.message.contains("sales[1].seller.partner_id"), "{}", failure.message);
    assert!(failed.lines.is_empty());

    // Request-level problems are INVALID_ARGUMENT.
    let status = service
        .client
        .compute_settlements(pb::ComputeSettlementsRequest {
            draft: None,
            program: program_ctx("not-a-program"),
            sales: vec![pb::SaleContext::default(); 1001],
            omit_base_breakdown: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["program.program_id", "sales"]);
}

/// A rejected SetOverridePlan reports every violation and leaves the stored
/// plan as it was: the overrides ComputeSettlements pays are unchanged.
#[tokio::test]
async fn a_rejected_override_plan_changes_nothing() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let parent = service.partner(&program, "", "").await;
    let seller = service.partner(&program, "", &parent).await;
    service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            effective_from: ts("2024-01-01T00:00:00Z"),
            rules: Some(percentage("0.10")),
            ..Default::default()
        })
        .await
        .unwrap();
    let plan = |rates: Vec<pb::OverrideLevel>, mode: pb::OverrideMode| pb::SetOverridePlanRequest {
        plan: Some(pb::OverridePlan {
            program_id: program.clone(),
            mode: mode as i32,
            rates_by_level: rates,
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let level = |rate: &str| pb::OverrideLevel { rate: rate.into(), flat_amount: None };
    service.client.set_override_plan(plan(vec![level("0.02")], pb::OverrideMode::Percentage)).await.unwrap();

    let mut sale = sale("s-1", &seller, "100.00", "2024-03-01T00:00:00Z");
    sale.ancestors = vec![pb::PartnerContext {
        partner_id: parent.clone(),
        status: 1,
        role: String::new(),
        qualification_facts: None,
    }];
    let request = pb::ComputeSettlementsRequest {
        program: program_ctx(&program),
        sales: vec![sale],
        draft: None,
        omit_base_breakdown: false,
    };
    let override_paid = |response: pb::ComputeSettlementsResponse| -> Vec<(String, String)> {
        response.settlements[0]
            .lines
            .iter()
            .filter(|l| l.kind == types::EarningKind::Override as i32)
            .map(|l| (l.partner_id.clone(), l.amount.as_ref().unwrap().amount.clone()))
            .collect()
    };
    let before = override_paid(service.client.compute_settlements(request.clone()).await.unwrap().into_inner());
    assert_eq!(before, vec![(parent.clone(), "2.00".to_string())]);

    let bad_requests = [
        (
            plan(vec![level("1.5"), level("abc")], pb::OverrideMode::Percentage),
            vec!["plan.rates_by_level[0].rate", "plan.rates_by_level[1].rate"],
        ),
        (plan(vec![level("0.05")], pb::OverrideMode::Unspecified), vec!["plan.mode"]),
        (plan(vec![level("0.05")], pb::OverrideMode::Flat), vec!["plan.rates_by_level[0].rate"]),
    ];
    for (bad, expected) in bad_requests {
        let status = service.client.set_override_plan(bad).await.expect_err("rejected");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(violations(&status), expected);
        let after = override_paid(service.client.compute_settlements(request.clone()).await.unwrap().into_inner());
        assert_eq!(after, before, "a rejected plan must not change the stored one");
    }
}

/// Issue 11 item 2: an agreement or override plan naming a partner that is
/// not one of the program's — another program's or an unknown id — is
/// NOT_FOUND with the same message for both (nothing tells the caller the
/// foreign id exists), and so is a program that does not exist; nothing is
/// written.
#[tokio::test]
async fn agreements_and_plans_name_only_the_programs_own_partners() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let other_program = service.program(&[]).await;
    let foreign = service.partner(&other_program, "", "").await;
    let random = id();
    let agreement = |program: &str, partner: &str| pb::CreateAgreementRequest {
        program_id: program.into(),
        partner_id: partner.into(),
        rules: Some(percentage("0.10")),
        ..Default::default()
    };
    let plan = |program: &str, partner: &str| pb::SetOverridePlanRequest {
        plan: Some(pb::OverridePlan {
            program_id: program.into(),
            partner_id: partner.into(),
            mode: pb::OverrideMode::Percentage as i32,
            basis: pb::OverrideBasis::DealAmount as i32,
            rates_by_level: vec![pb::OverrideLevel { rate: "0.01".into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut answers = Vec::new();
    for partner in [&foreign, &random] {
        let refused = service.client.create_agreement(agreement(&program, partner)).await.unwrap_err();
        let plan_refused = service.client.set_override_plan(plan(&program, partner)).await.unwrap_err();
        for status in [&refused, &plan_refused] {
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        }
        answers.push((
            refused.message().replace(partner.as_str(), "<id>"),
            plan_refused.message().replace(partner.as_str(), "<id>"),
        ));
    }
    assert_eq!(answers[0], answers[1], "a foreign partner answers exactly as an unknown one");
    let missing_program = id();
    let refused = service.client.create_agreement(agreement(&missing_program, "")).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::NotFound, format!("program {missing_program} not found").as_str())
    );
    let refused = service.client.set_override_plan(plan(&missing_program, "")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    for partner in [&foreign, &random] {
        assert!(list(&mut service, &program, partner).await.is_empty());
    }
    // The program's own partner is accepted.
    let own = service.partner(&program, "", "").await;
    service.client.create_agreement(agreement(&program, &own)).await.unwrap();
    service.client.set_override_plan(plan(&program, &own)).await.unwrap();
}
