//! The world both saga modules (`saga.rs`, `clawback.rs`) run in, and the
//! stack they start it on: the five services on ephemeral ports over the
//! test's own database, with the saga workers' options and fault hooks.
//!
//! A program with a seller (under a parent upline), two split partners, a
//! default 10% agreement (30 clearance days), a 1% level-1 override plan and
//! the seller's link `summer-sale` (request_id `link-1`) with splits
//! 3000/2000 bps; customer `cust-1` is a lead of that link. A £100 sale
//! posts DIRECT 5.00, SPLIT 3.00 and 2.00, OVERRIDE 1.00.
#![allow(clippy::expect_used, missing_docs)]

use std::fmt::Display;
use std::time::{Duration, Instant};

use accrue_attribution::{SagaOptions, TestHooks};
use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::fixtures::{default_agreement, override_plan, percentage_on_payment, ts};
use accrue_e2e::{Clients, SAGA_WAIT};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_testkit::TestDb;

/// The partners and link of the world; ids as the API returns them.
pub struct World {
    pub program_id: String,
    pub parent: String,
    pub seller: String,
    pub split_a: String,
    pub split_b: String,
    pub link_id: String,
}

/// The stack on `db` with production saga behaviour under `saga`'s timings.
pub async fn start(db: &TestDb, saga: SagaOptions) -> (Stack, Clients) {
    start_hooked(db, saga, TestHooks::default()).await
}

/// [`start`] with faults injected into the saga workers.
pub async fn start_hooked(db: &TestDb, saga: SagaOptions, hooks: TestHooks) -> (Stack, Clients) {
    let mut config = StackConfig::for_tests(db.url.clone());
    config.saga = saga;
    config.saga_hooks = hooks;
    let stack = Stack::start(config).await.expect("stack starts");
    let clients = Clients::connect(&stack.endpoints, &stack.admin).expect("clients");
    (stack, clients)
}

/// Saga timings for tests: a 50 ms poll and retries from 50 ms up to 1 s, so
/// an unwound or retried saga finishes within the test's wait.
pub fn quick() -> SagaOptions {
    SagaOptions {
        poll_interval: Duration::from_millis(50),
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_secs(1),
        ..SagaOptions::default()
    }
}

/// A root partner (`parent` "") or a child of `parent`; returns its id.
pub async fn create_partner(c: &mut Clients, program_id: &str, name: &str, parent: &str) -> String {
    c.hierarchy
        .create_partner(hpb::CreatePartnerRequest {
            program_id: program_id.into(),
            partner: Some(hpb::Partner { display_name: name.into(), parent_id: parent.into(), ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("create partner {name}: {s:?}"))
        .into_inner()
        .id
}

/// Creates the world in a new program called `program_name`.
pub async fn setup(c: &mut Clients, program_name: &str) -> World {
    let program_id = c
        .hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: program_name.into(),
                default_currency: "GBP".into(),
                override_depth_cap: 8,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create program")
        .into_inner()
        .id;
    let parent = create_partner(c, &program_id, "Parent", "").await;
    let seller = create_partner(c, &program_id, "Seller", &parent).await;
    let split_a = create_partner(c, &program_id, "Split A", "").await;
    let split_b = create_partner(c, &program_id, "Split B", "").await;
    let rules = cpb::AgreementRules { clearance_days: 30, ..percentage_on_payment("0.10") };
    default_agreement(c, &program_id, rules).await;
    override_plan(c, &program_id, cpb::OverrideBasis::DealAmount, &["0.01"]).await;
    let link = c
        .attribution
        .create_link(apb::CreateLinkRequest {
            program_id: program_id.clone(),
            link: Some(apb::Link {
                owner_partner_id: seller.clone(),
                key: "summer-sale".into(),
                destination_url: "https://example.com/summer".into(),
                splits: vec![
                    apb::LinkSplit { partner_id: split_a.clone(), basis_points: 3000 },
                    apb::LinkSplit { partner_id: split_b.clone(), basis_points: 2000 },
                ],
                ..Default::default()
            }),
            request_id: "link-1".into(),
        })
        .await
        .expect("create link")
        .into_inner();
    let lead = c
        .attribution
        .track_lead(apb::TrackLeadRequest {
            program_id: program_id.clone(),
            link_id: link.id.clone(),
            customer_external_id: "cust-1".into(),
            occurred_at: Some(ts("2024-01-01T00:00:00Z")),
        })
        .await
        .expect("track lead")
        .into_inner();
    assert!(lead.created);
    assert_eq!(lead.partner_id, seller);
    World { program_id, parent, seller, split_a, split_b, link_id: link.id }
}

/// Waits until the saga is done, failed or stuck.
pub async fn wait_saga(c: &mut Clients, saga_id: &str) -> apb::Saga {
    accrue_e2e::wait_saga(c, saga_id).await.expect("saga finishes")
}

/// Where the saga's log records `step`'s output, oldest first, each with the
/// output parsed: the step's `succeeded` events, and the `started` events
/// that carry it (a step without an undo logs no event of its own when it
/// succeeds; the next `started` carries its output, see
/// `accrue_saga::Step::undo`).
pub fn logged_outputs(saga: &apb::Saga, step: impl Display) -> Vec<(&apb::SagaStepEvent, serde_json::Value)> {
    let step = step.to_string();
    saga.events
        .iter()
        .filter_map(|e| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).ok()?;
            match e.event.as_str() {
                "succeeded" if e.step == step => Some((e, detail)),
                "started" => detail.get("carried")?.get(&step).cloned().map(|output| (e, output)),
                _ => None,
            }
        })
        .collect()
}

/// `step`'s output, which the log must record exactly once.
pub fn logged_output(saga: &apb::Saga, step: impl Display) -> serde_json::Value {
    let step = step.to_string();
    let mut outputs = logged_outputs(saga, &step);
    assert_eq!(outputs.len(), 1, "{step}'s output logged once: {saga:#?}");
    outputs.remove(0).1
}

/// Polls GetSaga until its log records `step`'s output (a SettleSale or
/// ClawbackSale step, by its logged name; see [`logged_outputs`]).
pub async fn wait_step(c: &mut Clients, saga_id: &str, step: impl Display) -> apb::Saga {
    let step = step.to_string();
    let deadline = Instant::now() + SAGA_WAIT;
    loop {
        let saga =
            c.attribution.get_saga(apb::GetSagaRequest { id: saga_id.into() }).await.expect("get saga").into_inner();
        if !logged_outputs(&saga, &step).is_empty() {
            return saga;
        }
        assert!(Instant::now() < deadline, "saga {saga_id} never logged {step}'s output: {saga:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the saga's first owner is seen dead: still holding it
/// (generation 1) past the end of a lease nobody renews any more. What a
/// `crash_after` hook on a step without an undo leaves (it writes nothing
/// before the crash).
pub async fn wait_lapsed(pool: &sqlx::PgPool, saga_id: &str) {
    let deadline = Instant::now() + SAGA_WAIT;
    loop {
        let lapsed: bool = sqlx::query_scalar(
            "SELECT generation = 1 AND owner IS NOT NULL AND lease_expires_at < now()
             FROM attribution.sagas WHERE id = $1::uuid",
        )
        .bind(saga_id)
        .fetch_optional(pool)
        .await
        .expect("read the saga's lease")
        .unwrap_or(false);
        if lapsed {
            return;
        }
        assert!(Instant::now() < deadline, "saga {saga_id}: its first owner's lease never lapsed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GetSale, which must succeed.
pub async fn get_sale(c: &mut Clients, id: &str) -> apb::Sale {
    c.attribution.get_sale(apb::GetSaleRequest { id: id.into() }).await.expect("get sale").into_inner()
}
