//! Scheme RPCs and scheme-margin settlement (seed 002, DESIGN §4 "Scheme
//! margins") over real gRPC, with the real hierarchy service and a fresh
//! Postgres database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use accrue_proto::commission::v1 as pb;
use accrue_proto::types::v1 as types;
use common::{Service, id, percentage, start, ts, usd, violations};
use tonic::Code;
use tonic_types::StatusExt;

const SEED_RATES: [(&str, &str); 5] = [
    ("ADMIN", "0.05"),
    ("WHITE_LABEL", "0.04"),
    ("MASTER_DISTRIBUTOR", "0.03"),
    ("DISTRIBUTOR", "0.02"),
    ("RETAILER", "0.01"),
];

fn rate(service_code: &str, role: &str, rate: &str) -> pb::SchemeRate {
    pb::SchemeRate { service_code: service_code.into(), role: role.into(), rate: rate.into() }
}

fn seed_rates(service_code: &str) -> Vec<pb::SchemeRate> {
    SEED_RATES.iter().map(|(role, value)| rate(service_code, role, value)).collect()
}

fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

async fn create(
    service: &mut Service,
    program: &str,
    parent: &str,
    name: &str,
    rates: Vec<pb::SchemeRate>,
) -> Result<pb::Scheme, tonic::Status> {
    let scheme = pb::Scheme {
        parent_id: parent.into(),
        display_name: name.into(),
        clearance_days: 30,
        rates,
        ..Default::default()
    };
    let request =
        pb::CreateSchemeRequest { program_id: program.into(), scheme: Some(scheme), request_id: String::new() };
    service.client.create_scheme(request).await.map(|response| response.into_inner())
}

async fn get(service: &mut Service, scheme: &str) -> pb::Scheme {
    service.client.get_scheme(pb::GetSchemeRequest { id: scheme.into() }).await.unwrap().into_inner()
}

async fn set(service: &mut Service, scheme: &str, rates: Vec<pb::SchemeRate>) -> Result<pb::Scheme, tonic::Status> {
    let request = pb::SetSchemeRatesRequest { scheme_id: scheme.into(), rates, request_id: String::new() };
    service.client.set_scheme_rates(request).await.map(|response| response.into_inner())
}

async fn chain_of_scheme(service: &mut Service, scheme: &str) -> pb::GetSchemeChainResponse {
    let request = pb::GetSchemeChainRequest { scheme_id: scheme.into(), ..Default::default() };
    service.client.get_scheme_chain(request).await.unwrap().into_inner()
}

async fn chain_of_partner(
    service: &mut Service,
    partner: &str,
    service_code: &str,
) -> Result<pb::GetSchemeChainResponse, tonic::Status> {
    let request = pb::GetSchemeChainRequest {
        partner_id: partner.into(),
        service_code: service_code.into(),
        ..Default::default()
    };
    service.client.get_scheme_chain(request).await.map(|response| response.into_inner())
}

/// (service_code, role, rate) of a scheme's own rates, in response order.
fn own(scheme: &pb::Scheme) -> Vec<(String, String, String)> {
    scheme.rates.iter().map(|r| (r.service_code.clone(), r.role.clone(), r.rate.clone())).collect()
}

/// (role, rate, source) of a link's effective rates for one service, in response order.
fn effective(link: &pb::SchemeChainLink, service_code: &str) -> Vec<(String, String, String)> {
    link.effective_rates
        .iter()
        .filter(|e| e.service_code == service_code)
        .map(|e| (e.role.clone(), e.rate.clone(), e.source_scheme_id.clone()))
        .collect()
}

fn triple(role: &str, rate: &str, source: &str) -> (String, String, String) {
    (role.into(), rate.into(), source.into())
}

#[tokio::test]
async fn create_root_and_children_then_a_second_root_is_already_exists() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let root = create(&mut service, &program, "", "Super admin", seed_rates("RECHARGE")).await.unwrap();
    assert_eq!((root.program_id.as_str(), root.parent_id.as_str(), root.clearance_days), (program.as_str(), "", 30));
    // Own rates by service_code then role (alphabetical).
    assert_eq!(
        own(&root).iter().map(|(_, role, rate)| format!("{role}={rate}")).collect::<Vec<_>>(),
        vec!["ADMIN=0.05", "DISTRIBUTOR=0.02", "MASTER_DISTRIBUTOR=0.03", "RETAILER=0.01", "WHITE_LABEL=0.04"]
    );
    let child = create(&mut service, &program, &root.id, "White label", vec![rate("RECHARGE", "RETAILER", "0.008")])
        .await
        .unwrap();
    assert_eq!(child.parent_id, root.id);
    let grandchild = create(&mut service, &program, &child.id, "Distributor", vec![]).await.unwrap();
    assert_eq!(get(&mut service, &grandchild.id).await, grandchild);
    assert_eq!(get(&mut service, &child.id).await.rates, vec![rate("RECHARGE", "RETAILER", "0.008")]);

    let second = create(&mut service, &program, "", "Another root", vec![]).await.unwrap_err();
    assert_eq!(second.code(), Code::AlreadyExists);
    assert_eq!(reason(&second), "ROOT_SCHEME_EXISTS");

    // Idempotent on request_id; another body under the same key is ALREADY_EXISTS.
    let request = |name: &str| pb::CreateSchemeRequest {
        program_id: program.clone(),
        scheme: Some(pb::Scheme { parent_id: root.id.clone(), display_name: name.into(), ..Default::default() }),
        request_id: "create-1".into(),
    };
    let first = service.client.create_scheme(request("Sibling")).await.unwrap().into_inner();
    let again = service.client.create_scheme(request("Sibling")).await.unwrap().into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(first.clearance_days, 0, "0 clears at occurred_at, as for agreements");
    let reused = service.client.create_scheme(request("Other")).await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));

    // Unknown program, unknown parent, parent of another program.
    let unknown_program = create(&mut service, &id(), "", "Root", vec![]).await.unwrap_err();
    assert_eq!(unknown_program.code(), Code::NotFound);
    let unknown_parent = create(&mut service, &program, &id(), "Child", vec![]).await.unwrap_err();
    assert_eq!(unknown_parent.code(), Code::NotFound);
    let other_program = service.program(&[]).await;
    let foreign = create(&mut service, &other_program, &root.id, "Child", vec![]).await.unwrap_err();
    assert_eq!((foreign.code(), reason(&foreign).as_str()), (Code::FailedPrecondition, "SCHEME_IN_OTHER_PROGRAM"));

    // Field violations, all together.
    let bad = pb::CreateSchemeRequest {
        program_id: program.clone(),
        scheme: Some(pb::Scheme {
            parent_id: "nope".into(),
            display_name: "  ".into(),
            clearance_days: 3651,
            rates: vec![rate("RE CHARGE", "RETAILER", "0.01")],
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let status = service.client.create_scheme(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&status),
        vec!["scheme.clearance_days", "scheme.display_name", "scheme.parent_id", "scheme.rates[0].service_code"]
    );
    // Initial rates obey the tree's rules: a child may not exceed its parent.
    let status = create(&mut service, &program, &root.id, "Greedy", vec![rate("RECHARGE", "RETAILER", "0.02")])
        .await
        .unwrap_err();
    assert_eq!(violations(&status), vec!["scheme.rates[0].rate"]);
    // None of the rejected creations wrote anything.
    let pool = sqlx::PgPool::connect(&service.services.db().url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM commission.schemes WHERE program_id = $1::uuid")
        .bind(&program)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 4, "root, child, grandchild, sibling");
    let rates: i64 = sqlx::query_scalar("SELECT count(*) FROM commission.scheme_rates").fetch_one(&pool).await.unwrap();
    assert_eq!(rates, 6, "the root's five and the child's one");
    pool.close().await;
}

#[tokio::test]
async fn rejected_set_scheme_rates_change_nothing() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let root = create(&mut service, &program, "", "Root", seed_rates("RECHARGE")).await.unwrap();
    let child = create(&mut service, &program, &root.id, "Child", vec![rate("RECHARGE", "DISTRIBUTOR", "0.015")])
        .await
        .unwrap();
    let before = (get(&mut service, &root.id).await, get(&mut service, &child.id).await);
    let before_chain = chain_of_scheme(&mut service, &child.id).await;

    let cases: Vec<(&str, &pb::Scheme, Vec<pb::SchemeRate>, Vec<&str>)> = vec![
        ("child above its parent", &child, vec![rate("RECHARGE", "DISTRIBUTOR", "0.021")], vec!["rates[0].rate"]),
        (
            "lower role above a higher one",
            &child,
            vec![rate("RECHARGE", "CUSTOMER", "0"), rate("RECHARGE", "MASTER_DISTRIBUTOR", "0.014")],
            vec!["rates[1].rate"],
        ),
        (
            "parent lowered below a child's own value",
            &root,
            vec![rate("RECHARGE", "DISTRIBUTOR", "0.012")],
            vec!["rates[0].rate"],
        ),
        (
            "unsetting a middle role of the root",
            &root,
            vec![rate("RECHARGE", "WHITE_LABEL", "")],
            vec!["rates[0].rate"],
        ),
        ("role not on the ladder", &child, vec![rate("RECHARGE", "SUPERHERO", "0.001")], vec!["rates[0].role"]),
        ("rate above 1", &root, vec![rate("RECHARGE", "ADMIN", "1.5")], vec!["rates[0].rate"]),
        ("more than 10 decimals", &root, vec![rate("RECHARGE", "ADMIN", "0.01234567891")], vec!["rates[0].rate"]),
        (
            "duplicate pair and bad service code",
            &root,
            vec![rate("RECHARGE", "ADMIN", "0.05"), rate("RECHARGE", "ADMIN", "0.06"), rate("", "ADMIN", "0.01")],
            vec!["rates[1]", "rates[2].service_code"],
        ),
        ("no rates", &root, vec![], vec!["rates"]),
    ];
    for (case, scheme, rates, fields) in cases {
        let status = set(&mut service, &scheme.id, rates).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(violations(&status), fields, "{case}: {}", status.message());
        assert_eq!((get(&mut service, &root.id).await, get(&mut service, &child.id).await), before, "{case}");
        assert_eq!(chain_of_scheme(&mut service, &child.id).await, before_chain, "{case}");
    }
    let status = set(&mut service, &child.id, vec![rate("RECHARGE", "DISTRIBUTOR", "0.021")]).await.unwrap_err();
    assert!(status.message().contains("may not exceed its parent"), "{}", status.message());

    let unknown = set(&mut service, &id(), vec![rate("RECHARGE", "ADMIN", "0.01")]).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!((get(&mut service, &root.id).await, get(&mut service, &child.id).await), before);

    // A valid write lands; request_id makes it idempotent.
    let request = |value: &str| pb::SetSchemeRatesRequest {
        scheme_id: child.id.clone(),
        rates: vec![rate("RECHARGE", "RETAILER", value)],
        request_id: "rates-1".into(),
    };
    let written = service.client.set_scheme_rates(request("0.005")).await.unwrap().into_inner();
    assert_eq!(
        own(&written),
        vec![triple("RECHARGE", "DISTRIBUTOR", "0.015"), triple("RECHARGE", "RETAILER", "0.005")]
    );
    let again = service.client.set_scheme_rates(request("0.005")).await.unwrap().into_inner();
    assert_eq!(again, written);
    let reused = service.client.set_scheme_rates(request("0.004")).await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
    assert_eq!(get(&mut service, &child.id).await, written);
    // Unsetting deletes the scheme's own value: it inherits again.
    let unset = set(&mut service, &child.id, vec![rate("RECHARGE", "DISTRIBUTOR", "")]).await.unwrap();
    assert_eq!(own(&unset), vec![triple("RECHARGE", "RETAILER", "0.005")]);
}

#[tokio::test]
async fn assign_scheme_checks_partner_scheme_and_program() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let other = service.program(&[]).await;
    let partner = service.partner(&program, "RETAILER", "").await;
    let root = create(&mut service, &program, "", "Root", vec![]).await.unwrap();
    let foreign_root = create(&mut service, &other, "", "Other root", vec![]).await.unwrap();
    let assign =
        |partner: &str, scheme: &str| pb::AssignSchemeRequest { partner_id: partner.into(), scheme_id: scheme.into() };

    let status = service.client.assign_scheme(assign(&id(), &root.id)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "unknown partner");
    let status = service.client.assign_scheme(assign(&partner, &id())).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "unknown scheme");
    let status = service.client.assign_scheme(assign(&partner, &foreign_root.id)).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "SCHEME_IN_OTHER_PROGRAM"));
    let status = service.client.assign_scheme(assign("x", "")).await.unwrap_err();
    assert_eq!(violations(&status), vec!["partner_id", "scheme_id"]);
    // None of the rejected calls assigned anything: the chain starts at the root.
    let chain = chain_of_partner(&mut service, &partner, "").await.unwrap();
    assert_eq!(
        chain.schemes.iter().map(|l| l.scheme.as_ref().unwrap().id.clone()).collect::<Vec<_>>(),
        vec![root.id.clone()]
    );

    let child = create(&mut service, &program, &root.id, "Child", vec![]).await.unwrap();
    let assignment = service.client.assign_scheme(assign(&partner, &child.id)).await.unwrap().into_inner();
    assert_eq!(
        (assignment.program_id.as_str(), assignment.partner_id.as_str(), assignment.scheme_id.as_str()),
        (program.as_str(), partner.as_str(), child.id.as_str())
    );
    let chain = chain_of_partner(&mut service, &partner, "").await.unwrap();
    assert_eq!(chain.schemes.len(), 2);
    // Re-assigning replaces.
    service.client.assign_scheme(assign(&partner, &root.id)).await.unwrap();
    assert_eq!(chain_of_partner(&mut service, &partner, "").await.unwrap().schemes.len(), 1);
}

#[tokio::test]
async fn scheme_chain_shows_effective_rates_with_null_inheritance() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let partner = service.partner(&program, "RETAILER", "").await;
    let unassigned = service.partner(&program, "DISTRIBUTOR", "").await;

    // No scheme yet: NOT_FOUND with a clear message.
    let status = chain_of_partner(&mut service, &partner, "").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("has no schemes"), "{}", status.message());

    let root = create(&mut service, &program, "", "Root", seed_rates("RECHARGE")).await.unwrap();
    set(&mut service, &root.id, vec![rate("DTH", "ADMIN", "0.02")]).await.unwrap();
    let child = create(
        &mut service,
        &program,
        &root.id,
        "Child",
        vec![rate("RECHARGE", "MASTER_DISTRIBUTOR", "0.025"), rate("RECHARGE", "DISTRIBUTOR", "0.015")],
    )
    .await
    .unwrap();
    let grandchild =
        create(&mut service, &program, &child.id, "Grandchild", vec![rate("RECHARGE", "RETAILER", "0.005")])
            .await
            .unwrap();
    service
        .client
        .assign_scheme(pb::AssignSchemeRequest { partner_id: partner.clone(), scheme_id: grandchild.id.clone() })
        .await
        .unwrap();

    let chain = chain_of_partner(&mut service, &partner, "").await.unwrap();
    assert_eq!(chain.partner_role, "RETAILER");
    assert_eq!(
        chain.role_ladder,
        vec!["ADMIN", "WHITE_LABEL", "MASTER_DISTRIBUTOR", "DISTRIBUTOR", "RETAILER", "CUSTOMER"]
    );
    let ids: Vec<String> = chain.schemes.iter().map(|l| l.scheme.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, vec![grandchild.id.clone(), child.id.clone(), root.id.clone()]);
    assert_eq!(own(chain.schemes[0].scheme.as_ref().unwrap()), vec![triple("RECHARGE", "RETAILER", "0.005")]);
    let (r, c, g) = (root.id.as_str(), child.id.as_str(), grandchild.id.as_str());
    assert_eq!(
        effective(&chain.schemes[0], "RECHARGE"),
        vec![
            triple("ADMIN", "0.05", r),
            triple("WHITE_LABEL", "0.04", r),
            triple("MASTER_DISTRIBUTOR", "0.025", c),
            triple("DISTRIBUTOR", "0.015", c),
            triple("RETAILER", "0.005", g),
            triple("CUSTOMER", "0", ""),
        ]
    );
    assert_eq!(
        effective(&chain.schemes[1], "RECHARGE"),
        vec![
            triple("ADMIN", "0.05", r),
            triple("WHITE_LABEL", "0.04", r),
            triple("MASTER_DISTRIBUTOR", "0.025", c),
            triple("DISTRIBUTOR", "0.015", c),
            triple("RETAILER", "0.01", r),
            triple("CUSTOMER", "0", ""),
        ]
    );
    // Every configured service, by service_code then ladder order.
    let services: Vec<&str> = chain.schemes[2].effective_rates.iter().map(|e| e.service_code.as_str()).collect();
    assert_eq!(services, [["DTH"; 6], ["RECHARGE"; 6]].concat());
    assert_eq!(effective(&chain.schemes[2], "DTH")[0], triple("ADMIN", "0.02", r));
    assert_eq!(effective(&chain.schemes[0], "DTH")[1], triple("WHITE_LABEL", "0", ""));

    // Filtered by service_code.
    let filtered = chain_of_partner(&mut service, &partner, "DTH").await.unwrap();
    assert!(
        filtered
            .schemes
            .iter()
            .all(|l| l.effective_rates.len() == 6 && l.effective_rates.iter().all(|e| e.service_code == "DTH"))
    );
    // By scheme: the same links, no partner role.
    let by_scheme = chain_of_scheme(&mut service, &grandchild.id).await;
    assert_eq!(by_scheme.schemes, chain.schemes);
    assert_eq!(by_scheme.partner_role, "");
    // An unassigned partner falls back to the root.
    let fallback = chain_of_partner(&mut service, &unassigned, "RECHARGE").await.unwrap();
    assert_eq!(fallback.schemes.len(), 1);
    assert_eq!(fallback.partner_role, "DISTRIBUTOR");

    // Exactly one of partner_id / scheme_id.
    for request in [
        pb::GetSchemeChainRequest::default(),
        pb::GetSchemeChainRequest { partner_id: partner.clone(), scheme_id: root.id.clone(), ..Default::default() },
    ] {
        let status = service.client.get_scheme_chain(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    let status = chain_of_partner(&mut service, &id(), "").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "unknown partner");
    let status = service
        .client
        .get_scheme_chain(pb::GetSchemeChainRequest { scheme_id: id(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "unknown scheme");
}

fn context(partner: &str, role: &str) -> pb::PartnerContext {
    pb::PartnerContext { partner_id: partner.into(), status: 1, role: role.into(), qualification_facts: None }
}

#[tokio::test]
async fn compute_settlements_pays_seed_002_margins_for_scheme_managed_services() {
    let mut service = start().await;
    let program = service.program(&[]).await;
    let admin = service.partner(&program, "ADMIN", "").await;
    let white_label = service.partner(&program, "WHITE_LABEL", &admin).await;
    let master = service.partner(&program, "MASTER_DISTRIBUTOR", &white_label).await;
    let distributor = service.partner(&program, "DISTRIBUTOR", &master).await;
    let retailer = service.partner(&program, "RETAILER", &distributor).await;
    // A program default agreement: it must not apply to scheme-managed sales.
    service
        .client
        .create_agreement(pb::CreateAgreementRequest {
            program_id: program.clone(),
            effective_from: ts("2020-01-01T00:00:00Z"),
            rules: Some(percentage("0.10")),
            ..Default::default()
        })
        .await
        .unwrap();
    let root = create(&mut service, &program, "", "Super admin", seed_rates("RECHARGE")).await.unwrap();

    let sale = |sale_id: &str, service_code: &str| pb::SaleContext {
        sale_id: sale_id.into(),
        event_type: types::SaleEventType::Payment as i32,
        amount: usd("100.00"),
        service_code: service_code.into(),
        occurred_at: ts("2024-06-01T12:00:00Z"),
        customer_id: "c1".into(),
        seller: Some(context(&retailer, "RETAILER")),
        ancestors: vec![
            context(&distributor, "DISTRIBUTOR"),
            context(&master, "MASTER_DISTRIBUTOR"),
            context(&white_label, "WHITE_LABEL"),
            context(&admin, "ADMIN"),
        ],
        is_first_payment: true,
        ..Default::default()
    };
    let compute = |sales: Vec<pb::SaleContext>| pb::ComputeSettlementsRequest {
        draft: None,
        program: Some(pb::ProgramContext {
            program_id: program.clone(),
            rounding_mode: 1,
            override_depth_cap: 8,
            compression_enabled: false,
            settings_version: 1,
        }),
        sales,
        omit_base_breakdown: false,
    };
    let response = service
        .client
        .compute_settlements(compute(vec![sale("s-recharge", "RECHARGE"), sale("s-other", "SUBSCRIPTION")]))
        .await
        .unwrap()
        .into_inner();
    let margin = &response.settlements[0];
    assert_eq!(margin.failure, None);
    assert_eq!(margin.base_commission, usd("0.00"));
    assert_eq!(margin.agreement_version_id, "");
    assert_eq!(margin.base_breakdown.as_ref().unwrap().model, "SCHEME");
    let lines: Vec<(String, i32, String, i32)> = margin
        .lines
        .iter()
        .map(|l| (l.partner_id.clone(), l.kind, l.amount.as_ref().unwrap().amount.clone(), l.level))
        .collect();
    let kind = types::EarningKind::Margin as i32;
    assert_eq!(
        lines,
        vec![
            (retailer.clone(), kind, "1.00".into(), 0),
            (distributor.clone(), kind, "1.00".into(), 1),
            (master.clone(), kind, "1.00".into(), 2),
            (white_label.clone(), kind, "1.00".into(), 3),
            (admin.clone(), kind, "1.00".into(), 4),
        ]
    );
    for line in &margin.lines {
        assert_eq!(line.source_partner_id, retailer);
        assert_eq!(line.clears_at, ts("2024-07-01T12:00:00Z"), "the root scheme's 30 clearance days");
        let breakdown = line.breakdown.as_ref().unwrap();
        assert_eq!(breakdown.model, "MARGIN");
        assert_eq!(breakdown.inputs["scheme_id"], root.id);
    }
    assert_eq!(
        margin.lines[2].breakdown.as_ref().unwrap().formula,
        "100.00 × (abs[MASTER_DISTRIBUTOR] 0.03 − abs[DISTRIBUTOR] 0.02 = 0.01) = 1.0000 → 1.00"
    );
    // Another service is not scheme-managed: the agreement pays as before.
    let direct = &response.settlements[1];
    assert_eq!(direct.base_commission, usd("10.00"));
    assert_eq!(direct.lines.len(), 1);
    assert_eq!(direct.lines[0].kind, types::EarningKind::Direct as i32);

    // Assigning the retailer to a child scheme with RETAILER 0.4% changes the
    // bottom two margins only.
    let child =
        create(&mut service, &program, &root.id, "Retail", vec![rate("RECHARGE", "RETAILER", "0.004")]).await.unwrap();
    service
        .client
        .assign_scheme(pb::AssignSchemeRequest { partner_id: retailer.clone(), scheme_id: child.id.clone() })
        .await
        .unwrap();
    let response =
        service.client.compute_settlements(compute(vec![sale("s-recharge", "RECHARGE")])).await.unwrap().into_inner();
    let amounts: Vec<&str> =
        response.settlements[0].lines.iter().map(|l| l.amount.as_ref().unwrap().amount.as_str()).collect();
    assert_eq!(amounts, vec!["0.40", "1.60", "1.00", "1.00", "1.00"]);
}

/// Issue 10 item 2: a token of another program finds none of this
/// program's schemes or partners (NOT_FOUND exactly as missing ones) and
/// cannot create or list in it; nothing is written.
#[tokio::test]
async fn another_programs_token_finds_no_scheme_and_writes_nothing() {
    use accrue_kit::auth::Role;
    use accrue_kit::client::AuthChannel;
    use accrue_proto::commission::v1::commission_service_client::CommissionServiceClient;
    let mut service = start().await;
    let program = service.program(&[]).await;
    let other = service.program(&[]).await;
    let root = create(&mut service, &program, "", "Root", seed_rates("RECHARGE")).await.unwrap();
    let partner = service.partner(&program, "", "").await;
    let mut scoped: CommissionServiceClient<AuthChannel> =
        service.services.client_for(&service.url, "other-admin", Role::Admin, &other);
    let random = uuid::Uuid::now_v7().to_string();
    let shape = |status: tonic::Status, id: &str| (status.code(), status.message().replace(id, "<id>"));

    let foreign = scoped.get_scheme(pb::GetSchemeRequest { id: root.id.clone() }).await.unwrap_err();
    let missing = scoped.get_scheme(pb::GetSchemeRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(shape(foreign, &root.id), shape(missing, &random));
    let chain = pb::GetSchemeChainRequest { scheme_id: root.id.clone(), ..Default::default() };
    assert_eq!(scoped.get_scheme_chain(chain).await.unwrap_err().code(), Code::NotFound);
    let chain = pb::GetSchemeChainRequest { partner_id: partner.clone(), ..Default::default() };
    assert_eq!(scoped.get_scheme_chain(chain).await.unwrap_err().code(), Code::NotFound);
    let assign = pb::AssignSchemeRequest { partner_id: partner.clone(), scheme_id: root.id.clone() };
    assert_eq!(scoped.assign_scheme(assign).await.unwrap_err().code(), Code::NotFound);

    let scheme = pb::Scheme { display_name: "Probe".into(), clearance_days: 30, ..Default::default() };
    let created = scoped
        .create_scheme(pb::CreateSchemeRequest {
            program_id: program.clone(),
            scheme: Some(scheme),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    let missing_program = scoped
        .create_scheme(pb::CreateSchemeRequest {
            program_id: random.clone(),
            scheme: Some(pb::Scheme { display_name: "Probe".into(), clearance_days: 30, ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(shape(created, &program), shape(missing_program, &random));
    let versions = pb::ListAgreementVersionsRequest { program_id: program.clone(), ..Default::default() };
    assert_eq!(scoped.list_agreement_versions(versions).await.unwrap_err().code(), Code::NotFound);
    // Nothing was written: one scheme, no assignment.
    let pool = service.services.pool::<accrue_commission::Commission>();
    let counts: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM schemes), (SELECT count(*) FROM scheme_assignments)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counts, (1, 0));
}
