//! HierarchyService over real gRPC against a fresh Postgres database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use accrue_hierarchy::Hierarchy;
use accrue_kit::client::AuthChannel;
use accrue_proto::hierarchy::v1 as pb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::types::v1 as types;
use accrue_proto::types::v1::Money;
use accrue_testkit::TestServices;
use sqlx::PgPool;
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

struct Harness {
    client: HierarchyServiceClient<AuthChannel>,
    pool: PgPool,
    url: String,
    services: TestServices,
}

async fn start() -> Harness {
    let services = TestServices::new().await;
    let url = services.spawn::<Hierarchy>(accrue_hierarchy::Config::default()).await;
    Harness { client: services.client(&url), pool: services.pool::<Hierarchy>(), url, services }
}

fn program(name: &str, max_tree_depth: i32) -> pb::Program {
    pb::Program { display_name: name.into(), default_currency: "GBP".into(), max_tree_depth, ..Default::default() }
}

/// CreateProgram (`request_id` may be empty).
async fn try_create_program(h: &mut Harness, program: pb::Program, request_id: &str) -> Result<pb::Program, Status> {
    let request = pb::CreateProgramRequest { program: Some(program), request_id: request_id.into() };
    h.client.create_program(request).await.map(Response::into_inner)
}

/// A GBP program "Acme" with this maximum tree depth (0: the default 32).
async fn create_program(h: &mut Harness, cap: i32) -> pb::Program {
    try_create_program(h, program("Acme", cap), "").await.expect("create program")
}

async fn get_program(h: &mut Harness, id: &str) -> pb::Program {
    h.client.get_program(pb::GetProgramRequest { id: id.to_string() }).await.expect("get program").into_inner()
}

/// CreatePartner in the program, with no request id.
async fn try_create_partner(h: &mut Harness, program_id: &str, partner: pb::Partner) -> Result<pb::Partner, Status> {
    let request = pb::CreatePartnerRequest {
        program_id: program_id.to_string(),
        partner: Some(partner),
        request_id: String::new(),
    };
    h.client.create_partner(request).await.map(Response::into_inner)
}

/// A partner named `name` under `parent` (a root when `None`).
async fn create_partner(h: &mut Harness, program_id: &str, name: &str, parent: Option<&str>) -> pb::Partner {
    let partner = pb::Partner {
        display_name: name.into(),
        parent_id: parent.unwrap_or_default().to_string(),
        ..Default::default()
    };
    try_create_partner(h, program_id, partner)
        .await
        .unwrap_or_else(|status| panic!("create partner {name}: {status:?}"))
}

async fn get(h: &mut Harness, id: &str) -> pb::Partner {
    h.client.get_partner(pb::GetPartnerRequest { id: id.to_string() }).await.expect("get partner").into_inner()
}

/// UpdatePartnerStatus.
async fn set_status(
    h: &mut Harness,
    id: &str,
    status: types::PartnerStatus,
    reason: &str,
) -> Result<pb::Partner, Status> {
    let request = pb::UpdatePartnerStatusRequest { id: id.to_string(), status: status as i32, reason: reason.into() };
    h.client.update_partner_status(request).await.map(Response::into_inner)
}

/// SetParent (an empty `parent_id` moves the partner to the root).
async fn set_parent(h: &mut Harness, id: &str, parent_id: &str) -> Result<pb::SetParentResponse, Status> {
    let request = pb::SetParentRequest { id: id.to_string(), parent_id: parent_id.to_string() };
    h.client.set_parent(request).await.map(Response::into_inner)
}

/// ListPartners.
async fn list_partners(h: &mut Harness, request: pb::ListPartnersRequest) -> pb::ListPartnersResponse {
    h.client.list_partners(request).await.expect("list partners").into_inner()
}

/// ListDownline.
async fn list_downline(h: &mut Harness, request: pb::ListDownlineRequest) -> Result<pb::ListDownlineResponse, Status> {
    h.client.list_downline(request).await.map(Response::into_inner)
}

/// GetUplines.
async fn get_uplines(
    h: &mut Harness,
    program_id: &str,
    partner_ids: Vec<String>,
) -> Result<pb::GetUplinesResponse, Status> {
    let request = pb::GetUplinesRequest { program_id: program_id.to_string(), partner_ids };
    h.client.get_uplines(request).await.map(Response::into_inner)
}

/// Every partner's (id, ancestor_ids, depth), as stored.
async fn snapshot(pool: &PgPool) -> Vec<(Uuid, Vec<Uuid>, i32)> {
    sqlx::query_as("SELECT id, ancestor_ids, depth FROM partners ORDER BY id").fetch_all(pool).await.expect("snapshot")
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
}

fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn reason(status: &Status) -> String {
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

#[tokio::test]
async fn creates_program_and_partners() {
    let mut h = start().await;
    let created = create_program(&mut h, 0).await;
    assert_eq!(created.override_depth_cap, 8);
    assert_eq!(created.rounding_mode, types::RoundingMode::HalfAwayFromZero as i32);
    assert_eq!(
        created.role_ladder,
        vec!["ADMIN", "WHITE_LABEL", "MASTER_DISTRIBUTOR", "DISTRIBUTOR", "RETAILER", "CUSTOMER"]
    );
    assert_eq!(created.minimum_payout, Some(Money { currency_code: "GBP".into(), amount: "0.00".into() }));
    let fetched = get_program(&mut h, &created.id).await;
    assert_eq!(fetched, created);

    let a = create_partner(&mut h, &created.id, "A", None).await;
    let b = create_partner(&mut h, &created.id, "B", Some(&a.id)).await;
    let c = create_partner(&mut h, &created.id, "C", Some(&b.id)).await;
    assert_eq!((a.depth, a.ancestor_ids.len(), a.status), (0, 0, types::PartnerStatus::Active as i32));
    assert_eq!((b.depth, b.parent_id.as_str(), b.ancestor_ids.clone()), (1, a.id.as_str(), vec![a.id.clone()]));
    assert_eq!(c.ancestor_ids, vec![b.id.clone(), a.id.clone()]);
    assert_eq!(c.depth, 2);
    assert_eq!(get(&mut h, &c.id).await, c);

    // Status change writes an audit event; a repeat changes nothing.
    let suspended = set_status(&mut h, &b.id, types::PartnerStatus::Suspended, "kyc pending").await.unwrap();
    assert_eq!(suspended.status, types::PartnerStatus::Suspended as i32);
    set_status(&mut h, &b.id, types::PartnerStatus::Suspended, "").await.unwrap();
    let events: Vec<(String, String, String)> =
        sqlx::query_as("SELECT from_status, to_status, reason FROM partner_status_events")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(events, vec![("ACTIVE".into(), "SUSPENDED".into(), "kyc pending".into())]);
    // The audit log is append-only.
    assert!(sqlx::query("DELETE FROM partner_status_events").execute(&h.pool).await.is_err());

    // Terminated is final.
    set_status(&mut h, &c.id, types::PartnerStatus::Terminated, "left").await.unwrap();
    let status = set_status(&mut h, &c.id, types::PartnerStatus::Active, "").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // Paging in creation order, and the status filter.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListPartnersRequest {
            program_id: created.id.clone(),
            status: 0,
            page_size: 2,
            page_token: token.clone(),
        };
        let page = list_partners(&mut h, request).await;
        assert!(page.partners.len() <= 2);
        seen.extend(page.partners.into_iter().map(|p| p.display_name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["A", "B", "C"]);
    let request = pb::ListPartnersRequest {
        program_id: created.id.clone(),
        status: types::PartnerStatus::Active as i32,
        page_size: 0,
        page_token: String::new(),
    };
    let active = list_partners(&mut h, request).await;
    assert_eq!(active.partners.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![a.id.clone()]);

    let missing = h.client.get_partner(pb::GetPartnerRequest { id: Uuid::now_v7().to_string() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn creates_are_idempotent_on_request_id() {
    let mut h = start().await;
    let first = try_create_program(&mut h, program("Acme", 4), "prog-1").await.unwrap();
    let second = try_create_program(&mut h, program("Acme", 4), "prog-1").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(count(&h.pool, "programs").await, 1);

    let partner_request = pb::CreatePartnerRequest {
        program_id: first.id.clone(),
        partner: Some(pb::Partner {
            display_name: "Ann".into(),
            external_id: "ext-ann".into(),
            role: "RETAILER".into(),
            ..Default::default()
        }),
        request_id: "partner-1".into(),
    };
    let (mut c1, mut c2) = (h.client.clone(), h.client.clone());
    let (one, two) =
        tokio::join!(c1.create_partner(partner_request.clone()), c2.create_partner(partner_request.clone()));
    let (one, two) = (one.unwrap().into_inner(), two.unwrap().into_inner());
    assert_eq!(one, two);
    assert_eq!(one.role, "RETAILER");
    assert_eq!(count(&h.pool, "partners").await, 1);

    // Another request with a taken external id is ALREADY_EXISTS.
    let mut clash = partner_request.clone();
    clash.request_id = "partner-2".into();
    let status = h.client.create_partner(clash).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "EXTERNAL_ID_TAKEN");
    assert_eq!(count(&h.pool, "partners").await, 1);
}

#[tokio::test]
async fn a_request_id_reused_for_another_body_is_already_exists() {
    let mut h = start().await;
    let first = try_create_program(&mut h, program("Acme", 4), "prog-1").await.unwrap();
    let reused = try_create_program(&mut h, program("Other", 4), "prog-1").await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
    assert_eq!(count(&h.pool, "programs").await, 1);
    assert_eq!(get_program(&mut h, &first.id).await.display_name, "Acme");

    let partner = |name: &str| pb::CreatePartnerRequest {
        program_id: first.id.clone(),
        partner: Some(pb::Partner { display_name: name.into(), ..Default::default() }),
        request_id: "partner-1".into(),
    };
    let ann = h.client.create_partner(partner("Ann")).await.unwrap().into_inner();
    let again = h.client.create_partner(partner("Ann")).await.unwrap().into_inner();
    assert_eq!(ann, again);
    let reused = h.client.create_partner(partner("Bob")).await.unwrap_err();
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
    assert_eq!(count(&h.pool, "partners").await, 1);

    let too_long = "x".repeat(accrue_kit::idempotency::MAX_REQUEST_ID_BYTES + 1);
    let status = try_create_program(&mut h, program("Acme", 4), &too_long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        status.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["request_id"]);
}

#[tokio::test]
async fn invalid_input_is_rejected_and_changes_nothing() {
    let mut h = start().await;
    let bad = pb::Program {
        display_name: String::new(),
        default_currency: "EURO".into(),
        override_depth_cap: 40,
        minimum_payout: Some(Money { currency_code: "GBP".into(), amount: "1.001".into() }),
        ..Default::default()
    };
    let status = try_create_program(&mut h, bad, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violation_fields(&status);
    for field in [
        "program.display_name",
        "program.default_currency",
        "program.override_depth_cap",
        "program.minimum_payout.amount",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} not in {fields:?}");
    }
    assert_eq!(count(&h.pool, "programs").await, 0);

    let program = create_program(&mut h, 3).await;
    let partner = pb::Partner { parent_id: "not-a-uuid".into(), ..Default::default() };
    let status = try_create_partner(&mut h, &program.id, partner).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violation_fields(&status);
    assert!(fields.contains(&"partner.display_name".to_string()) && fields.contains(&"partner.parent_id".to_string()));

    let partner = pb::Partner { display_name: "X".into(), role: "EMPEROR".into(), ..Default::default() };
    let status = try_create_partner(&mut h, &program.id, partner).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), vec!["partner.role"]);

    let partner = pb::Partner { display_name: "X".into(), ..Default::default() };
    let status = try_create_partner(&mut h, &Uuid::now_v7().to_string(), partner).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let partner = pb::Partner { display_name: "X".into(), parent_id: Uuid::now_v7().to_string(), ..Default::default() };
    let status = try_create_partner(&mut h, &program.id, partner).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(count(&h.pool, "partners").await, 0);

    // A parent may not rank below its child on the ladder.
    let partner = pb::Partner { display_name: "R".into(), role: "RETAILER".into(), ..Default::default() };
    let retailer = try_create_partner(&mut h, &program.id, partner).await.unwrap();
    let partner = pb::Partner {
        display_name: "D".into(),
        role: "DISTRIBUTOR".into(),
        parent_id: retailer.id.clone(),
        ..Default::default()
    };
    let status = try_create_partner(&mut h, &program.id, partner).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "ROLE_RANK"));

    let status = set_status(&mut h, &retailer.id, types::PartnerStatus::Unspecified, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), vec!["status"]);
    assert_eq!(count(&h.pool, "partners").await, 1);
    assert_eq!(count(&h.pool, "partner_status_events").await, 0);

    // Depth cap on create: cap 3 allows depth 3, not 4.
    let mut parent = retailer.id.clone();
    for depth in 1..=3 {
        let child = create_partner(&mut h, &program.id, &format!("L{depth}"), Some(&parent)).await;
        assert_eq!(child.depth, depth);
        parent = child.id;
    }
    let partner = pb::Partner { display_name: "too deep".into(), parent_id: parent, ..Default::default() };
    let status = try_create_partner(&mut h, &program.id, partner).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "DEPTH_EXCEEDED"));
    assert_eq!(count(&h.pool, "partners").await, 4);
}

#[tokio::test]
async fn set_parent_rejects_cycles_and_depth_over_cap_without_changes() {
    let mut h = start().await;
    let program = create_program(&mut h, 3).await;
    let a = create_partner(&mut h, &program.id, "A", None).await;
    let b = create_partner(&mut h, &program.id, "B", Some(&a.id)).await;
    let c = create_partner(&mut h, &program.id, "C", Some(&b.id)).await;
    let x = create_partner(&mut h, &program.id, "X", None).await;
    let y = create_partner(&mut h, &program.id, "Y", Some(&x.id)).await;
    let before = snapshot(&h.pool).await;

    // A under its grandchild C: a cycle.
    let status = set_parent(&mut h, &a.id, &c.id).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "CYCLE"));
    // A under itself.
    let status = set_parent(&mut h, &a.id, &a.id).await.unwrap_err();
    assert_eq!(reason(&status), "CYCLE");
    assert_eq!(snapshot(&h.pool).await, before);

    // A (subtree 2 levels tall) under Y (depth 1): C would sit at depth 4 > cap 3.
    let status = set_parent(&mut h, &a.id, &y.id).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "DEPTH_EXCEEDED"));
    assert_eq!(snapshot(&h.pool).await, before);

    // Unknown parent / partner are NOT_FOUND and change nothing.
    let status = set_parent(&mut h, &a.id, &Uuid::now_v7().to_string()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = set_parent(&mut h, "junk", "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(snapshot(&h.pool).await, before);

    // A parent from another program is refused.
    let other = create_program(&mut h, 3).await;
    let stranger = create_partner(&mut h, &other.id, "S", None).await;
    let status = set_parent(&mut h, &a.id, &stranger.id).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "PROGRAM_MISMATCH"));
    assert_eq!(get(&mut h, &a.id).await, a);

    // B (subtree height 1) under Y fits: B → 2, C → 3.
    let moved = set_parent(&mut h, &b.id, &y.id).await.unwrap();
    assert_eq!(moved.rewritten_count, 2);
    assert_eq!(get(&mut h, &c.id).await.ancestor_ids, vec![b.id.clone(), y.id.clone(), x.id.clone()]);
}

#[tokio::test]
async fn subtree_move_rewrites_every_descendant() {
    let mut h = start().await;
    let program = create_program(&mut h, 8).await;
    let r1 = create_partner(&mut h, &program.id, "R1", None).await;
    let m = create_partner(&mut h, &program.id, "M", Some(&r1.id)).await;
    let c1 = create_partner(&mut h, &program.id, "C1", Some(&m.id)).await;
    let c2 = create_partner(&mut h, &program.id, "C2", Some(&m.id)).await;
    let g1 = create_partner(&mut h, &program.id, "G1", Some(&c1.id)).await;
    let r2 = create_partner(&mut h, &program.id, "R2", None).await;
    let p = create_partner(&mut h, &program.id, "P", Some(&r2.id)).await;

    let response = set_parent(&mut h, &m.id, &p.id).await.unwrap();
    assert_eq!(response.rewritten_count, 4);
    let moved = response.partner.unwrap();
    assert_eq!((moved.parent_id.as_str(), moved.depth), (p.id.as_str(), 2));
    assert_eq!(moved.ancestor_ids, vec![p.id.clone(), r2.id.clone()]);
    let c1_now = get(&mut h, &c1.id).await;
    assert_eq!((c1_now.depth, c1_now.ancestor_ids), (3, vec![m.id.clone(), p.id.clone(), r2.id.clone()]));
    let c2_now = get(&mut h, &c2.id).await;
    assert_eq!((c2_now.depth, c2_now.ancestor_ids), (3, vec![m.id.clone(), p.id.clone(), r2.id.clone()]));
    let g1_now = get(&mut h, &g1.id).await;
    assert_eq!(g1_now.depth, 4);
    assert_eq!(g1_now.ancestor_ids, vec![c1.id.clone(), m.id.clone(), p.id.clone(), r2.id.clone()]);
    assert_eq!(g1_now.parent_id, c1.id);
    // R1 lost its downline; R2's grew.
    let r1_downline =
        list_downline(&mut h, pb::ListDownlineRequest { id: r1.id.clone(), ..Default::default() }).await.unwrap();
    assert!(r1_downline.members.is_empty());

    // Back to the root.
    let response = set_parent(&mut h, &m.id, "").await.unwrap();
    assert_eq!(response.rewritten_count, 4);
    let root = response.partner.unwrap();
    assert_eq!((root.depth, root.parent_id.as_str(), root.ancestor_ids.len()), (0, "", 0));
    let g1_now = get(&mut h, &g1.id).await;
    assert_eq!((g1_now.depth, g1_now.ancestor_ids), (2, vec![c1.id.clone(), m.id.clone()]));
    // Moving to where it already is rewrites nothing.
    let response = set_parent(&mut h, &m.id, "").await.unwrap();
    assert_eq!(response.rewritten_count, 0);
}

#[tokio::test]
async fn large_subtree_moves_in_batches() {
    let mut h = start().await;
    let program = create_program(&mut h, 8).await;
    let top = create_partner(&mut h, &program.id, "top", None).await;
    let hub = create_partner(&mut h, &program.id, "hub", Some(&top.id)).await;
    let target = create_partner(&mut h, &program.id, "target", None).await;
    // 1,100 descendants: more than two rewrite batches of 500.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1100 {
        let mut client = h.client.clone();
        let (program_id, parent) = (program.id.clone(), hub.id.clone());
        tasks.spawn(async move {
            client
                .create_partner(pb::CreatePartnerRequest {
                    program_id,
                    partner: Some(pb::Partner {
                        display_name: format!("leaf {i}"),
                        parent_id: parent,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .map(|_| ())
        });
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let response = set_parent(&mut h, &hub.id, &target.id).await.unwrap();
    assert_eq!(response.rewritten_count, 1101);
    let hub_id = Uuid::parse_str(&hub.id).unwrap();
    let target_id = Uuid::parse_str(&target.id).unwrap();
    let wrong: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM partners WHERE parent_id = $1 AND (ancestor_ids <> ARRAY[$1, $2]::uuid[] OR depth <> 2)",
    )
    .bind(hub_id)
    .bind(target_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn concurrent_moves_cannot_build_a_cycle() {
    let mut h = start().await;
    let program = create_program(&mut h, 8).await;
    for _ in 0..5 {
        let a = create_partner(&mut h, &program.id, "A", None).await;
        let b = create_partner(&mut h, &program.id, "B", None).await;
        let (mut c1, mut c2) = (h.client.clone(), h.client.clone());
        let (one, two) = tokio::join!(
            c1.set_parent(pb::SetParentRequest { id: a.id.clone(), parent_id: b.id.clone() }),
            c2.set_parent(pb::SetParentRequest { id: b.id.clone(), parent_id: a.id.clone() })
        );
        let outcomes = [one.map(|_| ()), two.map(|_| ())];
        assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1, "{outcomes:?}");
        let failure = outcomes.iter().find_map(|outcome| outcome.as_ref().err()).unwrap();
        assert_eq!(reason(failure), "CYCLE");
    }
    let cyclic: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM partners p WHERE p.ancestor_ids @> ARRAY[p.id]")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(cyclic, 0);
}

#[tokio::test]
async fn get_uplines_returns_batch_in_request_order() {
    let mut h = start().await;
    let program = create_program(&mut h, 8).await;
    let root = create_partner(&mut h, &program.id, "root", None).await;
    let mid = create_partner(&mut h, &program.id, "mid", Some(&root.id)).await;
    let leaf = create_partner(&mut h, &program.id, "leaf", Some(&mid.id)).await;
    let solo = create_partner(&mut h, &program.id, "solo", None).await;
    set_status(&mut h, &mid.id, types::PartnerStatus::Suspended, "").await.unwrap();

    let partner_ids = vec![leaf.id.clone(), solo.id.clone(), mid.id.clone(), leaf.id.clone()];
    let response = get_uplines(&mut h, &program.id, partner_ids).await.unwrap();
    assert_eq!(response.program.unwrap().id, program.id);
    let shape: Vec<(String, Vec<(String, i32)>)> = response
        .uplines
        .iter()
        .map(|u| {
            (u.partner.clone().unwrap().id, u.ancestors.iter().map(|a| (a.id.clone(), a.status)).collect::<Vec<_>>())
        })
        .collect();
    let active = types::PartnerStatus::Active as i32;
    let suspended = types::PartnerStatus::Suspended as i32;
    assert_eq!(
        shape,
        vec![
            (leaf.id.clone(), vec![(mid.id.clone(), suspended), (root.id.clone(), active)]),
            (solo.id.clone(), vec![]),
            (mid.id.clone(), vec![(root.id.clone(), active)]),
            (leaf.id.clone(), vec![(mid.id.clone(), suspended), (root.id.clone(), active)]),
        ]
    );
    assert_eq!(response.uplines[2].partner.clone().unwrap().status, suspended);

    let unknown = Uuid::now_v7().to_string();
    let status = get_uplines(&mut h, &program.id, vec![leaf.id.clone(), unknown.clone()]).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&unknown), "{}", status.message());

    let other = create_program(&mut h, 8).await;
    let status = get_uplines(&mut h, &other.id, vec![leaf.id.clone()]).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&leaf.id));

    let status = get_uplines(&mut h, &program.id, vec![leaf.id.clone(); 1001]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn list_downline_reports_relative_depth_and_pages() {
    let mut h = start().await;
    let program = create_program(&mut h, 8).await;
    let top = create_partner(&mut h, &program.id, "top", None).await;
    let r = create_partner(&mut h, &program.id, "R", Some(&top.id)).await;
    let a = create_partner(&mut h, &program.id, "A", Some(&r.id)).await;
    let b = create_partner(&mut h, &program.id, "B", Some(&r.id)).await;
    let a1 = create_partner(&mut h, &program.id, "A1", Some(&a.id)).await;
    let b1 = create_partner(&mut h, &program.id, "B1", Some(&b.id)).await;
    let a2 = create_partner(&mut h, &program.id, "A2", Some(&a.id)).await;
    let a11 = create_partner(&mut h, &program.id, "A11", Some(&a1.id)).await;

    let mut members = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::ListDownlineRequest { id: r.id.clone(), max_depth: 0, page_size: 2, page_token: token };
        let page = list_downline(&mut h, request).await.unwrap();
        pages += 1;
        members.extend(page.members.into_iter().map(|m| (m.partner.unwrap().display_name, m.relative_depth)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let expected: Vec<(String, i32)> = [("A", 1), ("B", 1), ("A1", 2), ("B1", 2), ("A2", 2), ("A11", 3)]
        .iter()
        .map(|(n, d)| (n.to_string(), *d))
        .collect();
    assert_eq!(members, expected);

    let request = pb::ListDownlineRequest { id: r.id.clone(), max_depth: 1, ..Default::default() };
    let shallow = list_downline(&mut h, request).await.unwrap();
    assert_eq!(shallow.members.iter().map(|m| m.partner.clone().unwrap().id).collect::<Vec<_>>(), vec![a.id, b.id]);

    let under_a1 =
        list_downline(&mut h, pb::ListDownlineRequest { id: a1.id.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(under_a1.members.len(), 1);
    assert_eq!((under_a1.members[0].partner.clone().unwrap().id, under_a1.members[0].relative_depth), (a11.id, 1));
    let _ = (b1, a2);

    let request = pb::ListDownlineRequest { id: r.id.clone(), page_token: "garbage!".into(), ..Default::default() };
    let status = list_downline(&mut h, request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn uplines_program(h: &mut Harness, program_id: &str) -> pb::Program {
    get_uplines(h, program_id, Vec::new()).await.expect("get uplines").program.expect("uplines carry the program")
}

#[tokio::test]
async fn non_transacting_roles_default_to_admin_on_the_ladder() {
    let mut h = start().await;
    let created = create_program(&mut h, 0).await;
    assert_eq!(created.non_transacting_roles, vec!["ADMIN"]);
    let fetched = get_program(&mut h, &created.id).await;
    assert_eq!(fetched.non_transacting_roles, vec!["ADMIN"]);
    assert_eq!(uplines_program(&mut h, &created.id).await.non_transacting_roles, vec!["ADMIN"]);

    // A ladder without ADMIN: nobody is barred by default.
    let metals = pb::Program { role_ladder: vec!["GOLD".into(), "SILVER".into()], ..program("Metals", 0) };
    let own_ladder = try_create_program(&mut h, metals, "").await.unwrap();
    assert!(own_ladder.non_transacting_roles.is_empty());
    assert!(uplines_program(&mut h, &own_ladder.id).await.non_transacting_roles.is_empty());
    let stored: Vec<String> = sqlx::query_scalar("SELECT non_transacting_roles FROM programs WHERE id = $1")
        .bind(Uuid::parse_str(&own_ladder.id).unwrap())
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert!(stored.is_empty());
}

#[tokio::test]
async fn custom_non_transacting_roles_are_stored_and_returned_with_uplines() {
    let mut h = start().await;
    let custom =
        pb::Program { non_transacting_roles: vec!["WHITE_LABEL".into(), "ADMIN".into()], ..program("Custom", 0) };
    let created = try_create_program(&mut h, custom, "custom-roles").await.unwrap();
    assert_eq!(created.non_transacting_roles, vec!["WHITE_LABEL", "ADMIN"]);
    let fetched = get_program(&mut h, &created.id).await;
    assert_eq!(fetched, created);
    assert_eq!(uplines_program(&mut h, &created.id).await.non_transacting_roles, vec!["WHITE_LABEL", "ADMIN"]);

    // A ladder of its own with a barred rung other than ADMIN.
    let metals = pb::Program {
        role_ladder: vec!["PLATINUM".into(), "GOLD".into(), "SILVER".into()],
        non_transacting_roles: vec!["PLATINUM".into()],
        ..program("Metals", 0)
    };
    let metals = try_create_program(&mut h, metals, "").await.unwrap();
    assert_eq!(metals.non_transacting_roles, vec!["PLATINUM"]);
    assert_eq!(count(&h.pool, "programs").await, 2);
}

#[tokio::test]
async fn invalid_non_transacting_roles_are_rejected_and_create_nothing() {
    let mut h = start().await;
    let cases: Vec<(Vec<String>, Vec<String>, Vec<&str>)> = vec![
        // Not on the (default) ladder.
        (vec![], vec!["SUPER_ADMIN".into()], vec!["program.non_transacting_roles[0]"]),
        // Twice.
        (vec![], vec!["ADMIN".into(), "RETAILER".into(), "ADMIN".into()], vec!["program.non_transacting_roles[2]"]),
        // Empty.
        (vec![], vec!["ADMIN".into(), " ".into()], vec!["program.non_transacting_roles[1]"]),
        // ADMIN is not on this program's own ladder.
        (vec!["GOLD".into(), "SILVER".into()], vec!["ADMIN".into()], vec!["program.non_transacting_roles[0]"]),
    ];
    for (ladder, roles, fields) in cases {
        let bad =
            pb::Program { role_ladder: ladder.clone(), non_transacting_roles: roles.clone(), ..program("Bad", 0) };
        let status = try_create_program(&mut h, bad, &format!("bad-{}", roles.join("-"))).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{roles:?}");
        assert_eq!(violation_fields(&status), fields, "{ladder:?} {roles:?}");
        assert_eq!(count(&h.pool, "programs").await, 0, "{roles:?} created nothing");
    }
}

/// UpdateProgram with a mask of `paths`.
async fn update_program(
    h: &mut Harness,
    program: pb::Program,
    paths: &[&str],
    request_id: &str,
) -> Result<pb::Program, Status> {
    let request = pb::UpdateProgramRequest {
        program: Some(program),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_string()).collect() }),
        request_id: request_id.into(),
    };
    h.client.update_program(request).await.map(Response::into_inner)
}

/// A chain of `levels` partners below a new root; returns the deepest.
async fn chain(h: &mut Harness, program_id: &str, levels: i32) -> pb::Partner {
    let mut last = create_partner(h, program_id, "root", None).await;
    for depth in 1..=levels {
        last = create_partner(h, program_id, &format!("L{depth}"), Some(&last.id)).await;
    }
    last
}

#[tokio::test]
async fn tree_depth_is_not_the_override_depth_cap() {
    let mut h = start().await;
    // A program paying three override levels may have a tree twenty levels deep.
    let created =
        try_create_program(&mut h, pb::Program { override_depth_cap: 3, max_tree_depth: 20, ..program("Deep", 0) }, "")
            .await
            .unwrap();
    assert_eq!((created.override_depth_cap, created.max_tree_depth), (3, 20));
    let deepest = chain(&mut h, &created.id, 20).await;
    assert_eq!(deepest.depth, 20);
    let partner = pb::Partner { display_name: "21".into(), parent_id: deepest.id.clone(), ..Default::default() };
    let status = try_create_partner(&mut h, &created.id, partner).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "DEPTH_EXCEEDED"));
    assert!(status.message().contains("max_tree_depth of 20"), "{}", status.message());

    // The default maximum tree depth is 32, whatever the override cap.
    let defaulted = create_program(&mut h, 0).await;
    assert_eq!((defaulted.override_depth_cap, defaulted.max_tree_depth), (8, 32));
    assert_eq!(chain(&mut h, &defaulted.id, 32).await.depth, 32);

    let status = try_create_program(&mut h, pb::Program { max_tree_depth: 1025, ..program("Too deep", 0) }, "")
        .await
        .unwrap_err();
    assert_eq!(violation_fields(&status), vec!["program.max_tree_depth"]);
}

#[tokio::test]
async fn update_program_changes_masked_settings_and_versions_settlement_settings() {
    let mut h = start().await;
    let created = create_program(&mut h, 0).await;
    assert_eq!(created.settings_history.len(), 1);
    assert_eq!(created.settings_history[0].version, 1);
    assert_eq!(created.settings_history[0].effective_from, created.create_time);

    let change = pb::Program {
        id: created.id.clone(),
        display_name: "Acme Partners".into(),
        rounding_mode: types::RoundingMode::HalfEven as i32,
        override_depth_cap: 3,
        max_tree_depth: 12,
        compression_enabled: true,
        non_transacting_roles: vec![],
        auto_approve_cleared: true,
        // Not in the mask: ignored.
        default_currency: "USD".into(),
        ..Default::default()
    };
    let paths = [
        "display_name",
        "rounding_mode",
        "override_depth_cap",
        "max_tree_depth",
        "compression_enabled",
        "non_transacting_roles",
        "auto_approve_cleared",
    ];
    let updated = update_program(&mut h, change.clone(), &paths, "upd-1").await.unwrap();
    assert_eq!(updated.display_name, "Acme Partners");
    assert_eq!(updated.default_currency, "GBP");
    assert_eq!(updated.rounding_mode, types::RoundingMode::HalfEven as i32);
    assert_eq!((updated.override_depth_cap, updated.max_tree_depth), (3, 12));
    assert!(updated.compression_enabled && updated.auto_approve_cleared);
    // An explicit empty list bars nobody (on create, empty means the default ADMIN).
    assert!(updated.non_transacting_roles.is_empty());
    assert_eq!(updated.settings_history.len(), 2);
    let second = &updated.settings_history[1];
    assert_eq!(second.version, 2);
    assert_eq!(second.effective_from, updated.update_time);
    assert_eq!(
        (second.rounding_mode, second.override_depth_cap, second.compression_enabled),
        (types::RoundingMode::HalfEven as i32, 3, true)
    );
    // The first version still says what earlier sales were settled under.
    assert_eq!(updated.settings_history[0], created.settings_history[0]);
    assert_eq!(get_program(&mut h, &created.id).await, updated);

    // Same key, same body: the program, nothing new. Same key, other body: ALREADY_EXISTS.
    let again = update_program(&mut h, change.clone(), &paths, "upd-1").await.unwrap();
    assert_eq!(again, updated);
    let other = pb::Program { display_name: "Other".into(), ..change.clone() };
    let status = update_program(&mut h, other, &paths, "upd-1").await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(get_program(&mut h, &created.id).await, updated);

    // A change of non-settlement settings only starts no settings version.
    let renamed = update_program(
        &mut h,
        pb::Program { id: created.id.clone(), display_name: "Acme Ltd".into(), ..Default::default() },
        &["display_name"],
        "",
    )
    .await
    .unwrap();
    assert_eq!(renamed.display_name, "Acme Ltd");
    assert_eq!(renamed.settings_history.len(), 2);
}

#[tokio::test]
async fn rejected_program_updates_change_nothing() {
    let mut h = start().await;
    let created = create_program(&mut h, 0).await;
    let id = created.id.clone();
    let before = get_program(&mut h, &id).await;

    let status =
        update_program(&mut h, pb::Program { id: id.clone(), ..Default::default() }, &[], "").await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["update_mask"]);

    let bad = pb::Program {
        id: id.clone(),
        display_name: " ".into(),
        rounding_mode: types::RoundingMode::Unspecified as i32,
        override_depth_cap: 0,
        max_tree_depth: 2000,
        non_transacting_roles: vec!["ADMIN".into(), "ADMIN".into()],
        ..Default::default()
    };
    let paths = [
        "display_name",
        "rounding_mode",
        "override_depth_cap",
        "max_tree_depth",
        "non_transacting_roles",
        "default_currency",
        "colour",
        "display_name",
    ];
    let status = update_program(&mut h, bad, &paths, "").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = violation_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "program.display_name",
            "program.max_tree_depth",
            "program.non_transacting_roles[1]",
            "program.override_depth_cap",
            "program.rounding_mode",
            "update_mask.paths[5]",
            "update_mask.paths[6]",
            "update_mask.paths[7]",
        ]
    );

    // A role off the ladder is checked against the stored program.
    let off_ladder =
        pb::Program { id: id.clone(), non_transacting_roles: vec!["EMPEROR".into()], ..Default::default() };
    let status = update_program(&mut h, off_ladder, &["non_transacting_roles"], "").await.unwrap_err();
    assert_eq!(violation_fields(&status), vec!["program.non_transacting_roles[0]"]);

    // max_tree_depth below the deepest partner: FAILED_PRECONDITION.
    chain(&mut h, &id, 4).await;
    let shallow = pb::Program { id: id.clone(), max_tree_depth: 3, ..Default::default() };
    let status = update_program(&mut h, shallow, &["max_tree_depth"], "").await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (Code::FailedPrecondition, "TREE_TOO_DEEP"));
    let exact = pb::Program { id: id.clone(), max_tree_depth: 4, ..Default::default() };
    assert_eq!(update_program(&mut h, exact, &["max_tree_depth"], "").await.unwrap().max_tree_depth, 4);

    let unknown = pb::Program { id: Uuid::now_v7().to_string(), display_name: "X".into(), ..Default::default() };
    let status = update_program(&mut h, unknown, &["display_name"], "").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let after = get_program(&mut h, &id).await;
    assert_eq!((after.display_name.as_str(), after.settings_history.len()), (before.display_name.as_str(), 1));
    assert_eq!(count(&h.pool, "program_updates").await, 0);
}

/// Issue 10 item 2: a token sees only the programs it names. Another
/// program, its partners, lists and trees answer NOT_FOUND exactly as ones
/// that do not exist, writes to it change nothing, and only a `*` token
/// creates programs.
#[tokio::test]
async fn a_token_sees_only_its_programs() {
    use accrue_kit::auth::Role;
    let mut h = start().await;
    let mine = create_program(&mut h, 8).await;
    let theirs = create_program(&mut h, 8).await;
    let their_partner = create_partner(&mut h, &theirs.id, "Theirs", None).await;
    let mut scoped: HierarchyServiceClient<AuthChannel> =
        h.services.client_for(&h.url, "scoped", Role::Admin, &mine.id);
    let random = Uuid::now_v7().to_string();
    let shape = |status: Status, id: &str| (status.code(), status.message().replace(id, "<id>"));

    let foreign = scoped.get_program(pb::GetProgramRequest { id: theirs.id.clone() }).await.unwrap_err();
    let missing = scoped.get_program(pb::GetProgramRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(shape(foreign, &theirs.id), shape(missing, &random));
    let foreign = scoped.get_partner(pb::GetPartnerRequest { id: their_partner.id.clone() }).await.unwrap_err();
    let missing = scoped.get_partner(pb::GetPartnerRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(shape(foreign, &their_partner.id), shape(missing, &random));
    let list = |program: &str| pb::ListPartnersRequest { program_id: program.into(), ..Default::default() };
    let foreign = scoped.list_partners(list(&theirs.id)).await.unwrap_err();
    let missing = scoped.list_partners(list(&random)).await.unwrap_err();
    assert_eq!(shape(foreign, &theirs.id), shape(missing, &random));
    let downline = pb::ListDownlineRequest { id: their_partner.id.clone(), ..Default::default() };
    assert_eq!(scoped.list_downline(downline).await.unwrap_err().code(), Code::NotFound);

    let partner = pb::Partner { display_name: "Probe".into(), ..Default::default() };
    let created = scoped
        .create_partner(pb::CreatePartnerRequest {
            program_id: theirs.id.clone(),
            partner: Some(partner),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::NotFound);
    let suspended = scoped
        .update_partner_status(pb::UpdatePartnerStatusRequest {
            id: their_partner.id.clone(),
            status: types::PartnerStatus::Suspended as i32,
            reason: "probe".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(suspended.code(), Code::NotFound);
    let partners: i64 = sqlx::query_scalar("SELECT count(*) FROM partners").fetch_one(&h.pool).await.unwrap();
    assert_eq!(partners, 1, "nothing written");
    let unchanged = h.client.get_partner(pb::GetPartnerRequest { id: their_partner.id.clone() }).await.unwrap();
    assert_eq!(unchanged.into_inner().status, types::PartnerStatus::Active as i32);

    let new_program = pb::CreateProgramRequest { program: Some(program("Mine too", 8)), request_id: String::new() };
    assert_eq!(scoped.create_program(new_program).await.unwrap_err().code(), Code::PermissionDenied);
    // Its own program answers.
    assert_eq!(
        scoped.get_program(pb::GetProgramRequest { id: mine.id.clone() }).await.unwrap().into_inner().id,
        mine.id
    );
}
