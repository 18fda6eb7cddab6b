//! Issue 14 over the public API: clicks (batched, idempotent on the click
//! id), first vs last touch on one click/lead history with the window edge
//! exactly at the boundary, a model change applying to later sales only,
//! archived links (no new clicks or leads, existing customers still earn),
//! "links I share in", the override breakdown and downline roster of a
//! three-level chain recomputed from the ledger's entries, and link and
//! partner stats recomputed from ListSales and ListEntries.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::fixtures::{dec, default_agreement, gbp, override_plan, payment, percentage_on_payment, ts};
use accrue_e2e::{Clients, TestStack, all_entries, all_sales, amount, wait_saga};
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestDb;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use rust_decimal::Decimal;
use tonic::Code;

use crate::world::{self, create_partner};

fn at(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.timestamp(), nanos: 0 }
}

async fn new_program(c: &mut Clients, name: &str) -> String {
    c.hierarchy
        .create_program(hpb::CreateProgramRequest {
            program: Some(hpb::Program {
                display_name: name.into(),
                default_currency: "GBP".into(),
                override_depth_cap: 8,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn link(c: &mut Clients, program: &str, owner: &str, key: &str, splits: &[(&str, i32)]) -> String {
    c.attribution
        .create_link(apb::CreateLinkRequest {
            program_id: program.into(),
            link: Some(apb::Link {
                owner_partner_id: owner.into(),
                key: key.into(),
                splits: splits
                    .iter()
                    .map(|(partner, bps)| apb::LinkSplit { partner_id: (*partner).into(), basis_points: *bps })
                    .collect(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

fn click(id: &str, link: &str, customer: &str, time: DateTime<Utc>) -> apb::Click {
    apb::Click {
        click_id: id.into(),
        link_id: link.into(),
        occurred_at: Some(at(time)),
        customer_external_id: customer.into(),
        referrer: "https://news.example/".into(),
        country_code: "GB".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
    }
}

async fn lead(c: &mut Clients, program: &str, link: &str, customer: &str, time: DateTime<Utc>) -> apb::Lead {
    c.attribution
        .track_lead(apb::TrackLeadRequest {
            program_id: program.into(),
            link_id: link.into(),
            customer_external_id: customer.into(),
            occurred_at: Some(at(time)),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Records a £100 payment and waits for its saga (when it has one).
async fn sale(c: &mut Clients, program: &str, id: &str, customer: &str, time: DateTime<Utc>) -> apb::Sale {
    let mut request = payment(program, id, customer, "100.00", "", "2024-01-01T00:00:00Z");
    request.occurred_at = Some(at(time));
    let sale = c.attribution.record_sale(request).await.unwrap().into_inner();
    if !sale.saga_id.is_empty() {
        let saga = wait_saga(c, &sale.saga_id).await.unwrap();
        assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    }
    c.attribution.get_sale(apb::GetSaleRequest { id: sale.id }).await.unwrap().into_inner()
}

async fn set_model(
    c: &mut Clients,
    program: &str,
    model: apb::AttributionModel,
    days: i32,
) -> apb::AttributionSettings {
    c.attribution
        .update_attribution_settings(apb::UpdateAttributionSettingsRequest {
            program_id: program.into(),
            model: model as i32,
            attribution_window_days: days,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Two programs with the same click/lead history — one first touch (never
/// set), one last touch (90 days, set before anything happened): a lead on
/// link A 100 days before T, a click on link B naming the customer exactly
/// 90 days before T, a click on B naming nobody a day before T. At T first
/// touch credits A and last touch B (the window includes its edge); one
/// second later last touch finds no touch in the window (unattributed)
/// while first touch still credits A. The rule is on each sale and on each
/// posted line's breakdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_and_last_touch_on_the_same_history_with_the_window_edge() {
    let mut t = TestStack::start().await.unwrap();
    let c = &mut t.clients;
    let t0 = (Utc::now() + Duration::hours(1)).trunc_subsecs(0);
    let mut sellers = Vec::new();
    for (name, last) in [("first", false), ("last", true)] {
        let program = new_program(c, name).await;
        default_agreement(c, &program, percentage_on_payment("0.10")).await;
        if last {
            let settings = set_model(c, &program, apb::AttributionModel::LastTouch, 0).await;
            assert_eq!(settings.attribution_window_days, 90, "Dub's default window");
            assert_eq!(settings.history.len(), 1, "a program without activity starts with its choice");
        }
        let (a, b) = (create_partner(c, &program, "A", "").await, create_partner(c, &program, "B", "").await);
        let (link_a, link_b) = (link(c, &program, &a, "a", &[]).await, link(c, &program, &b, "b", &[]).await);
        let credited = lead(c, &program, &link_a, "cust", t0 - Duration::days(100)).await;
        assert!(credited.created);
        let clicks = vec![
            click("edge", &link_b, "cust", t0 - Duration::days(90)),
            click("anonymous", &link_b, "", t0 - Duration::days(1)),
        ];
        c.attribution.track_clicks(apb::TrackClicksRequest { program_id: program.clone(), clicks }).await.unwrap();
        let at_edge = sale(c, &program, "s-edge", "cust", t0).await;
        let past_edge = sale(c, &program, "s-past", "cust", t0 + Duration::seconds(1)).await;
        sellers.push((program, a, b, at_edge, past_edge));
    }
    let (first, last) = (&sellers[0], &sellers[1]);
    // First touch: A, both times, under FIRST_TOUCH.
    for sale in [&first.3, &first.4] {
        assert_eq!(sale.partner_id, first.1, "{sale:#?}");
        assert_eq!(sale.attribution_model, apb::AttributionModel::FirstTouch as i32);
        assert_eq!(sale.attribution_window_days, 0);
    }
    // Last touch: B at the edge, nothing one second past it.
    assert_eq!(last.3.partner_id, last.2, "the click exactly 90 days before credits B: {:#?}", last.3);
    assert_eq!(last.3.state, apb::SaleState::Settled as i32);
    assert_eq!(last.3.attribution_model, apb::AttributionModel::LastTouch as i32);
    assert_eq!(last.3.attribution_window_days, 90);
    assert_eq!(last.4.state, apb::SaleState::Unattributed as i32, "{:#?}", last.4);
    assert!(last.4.partner_id.is_empty());
    let entries = accrue_e2e::sale_entries(c, &last.0, &last.3.id).await.unwrap();
    assert!(!entries.is_empty());
    for entry in &entries {
        let inputs = &entry.breakdown.as_ref().unwrap().inputs;
        assert_eq!(inputs.get("attribution_model").map(String::as_str), Some("LAST_TOUCH"), "{entry:#?}");
        assert_eq!(inputs.get("attribution_window_days").map(String::as_str), Some("90"));
    }
    // Under last touch a later lead on A takes the customer back to A.
    let link_a = lead_link(c, &last.0, &last.1).await;
    let relead = lead(c, &last.0, &link_a, "cust", t0 + Duration::seconds(2)).await;
    assert!(relead.created);
    assert_eq!(relead.attribution_model, apb::AttributionModel::LastTouch as i32);
    let back = sale(c, &last.0, "s-back", "cust", t0 + Duration::seconds(3)).await;
    assert_eq!(back.partner_id, last.1);

    // Changing the first program's model applies to sales after the change:
    // its earlier history stays first touch.
    let settings = set_model(c, &first.0, apb::AttributionModel::LastTouch, 30).await;
    assert_eq!(settings.history.len(), 2, "first touch pinned before the change: {settings:#?}");
    assert_eq!(settings.history[0].model, apb::AttributionModel::FirstTouch as i32);
    let before = sale(c, &first.0, "s-before", "cust", Utc::now().trunc_subsecs(0) - Duration::days(1)).await;
    assert_eq!((before.partner_id.as_str(), before.attribution_model), (first.1.as_str(), 1));
    // After it, a click on B 10 days earlier wins.
    let link_b = c
        .attribution
        .list_links(apb::ListLinksRequest {
            program_id: first.0.clone(),
            owner_partner_id: first.2.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links[0]
        .id
        .clone();
    c.attribution
        .track_click(apb::TrackClickRequest {
            program_id: first.0.clone(),
            click: Some(click("later", &link_b, "cust", t0 - Duration::days(10))),
        })
        .await
        .unwrap();
    let after = sale(c, &first.0, "s-after", "cust", t0 + Duration::seconds(5)).await;
    assert_eq!(after.partner_id, first.2, "{after:#?}");
    assert_eq!((after.attribution_model, after.attribution_window_days), (2, 30));
    t.shutdown().await.unwrap();
}

/// The id of the first link `owner` owns in `program`.
async fn lead_link(c: &mut Clients, program: &str, owner: &str) -> String {
    c.attribution
        .list_links(apb::ListLinksRequest {
            program_id: program.into(),
            owner_partner_id: owner.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links[0]
        .id
        .clone()
}

/// Clicks are idempotent on the click id; a reused id with another body
/// is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clicks_are_idempotent_on_their_id() {
    let mut t = TestStack::start().await.unwrap();
    let c = &mut t.clients;
    let w = world::setup(c, "Clicks").await;
    let day = DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z").unwrap().with_timezone(&Utc);
    let batch = vec![
        click("c-1", &w.link_id, "", day),
        click("c-2", &w.link_id, "", day + Duration::hours(20)),
        click("c-1", &w.link_id, "", day),
    ];
    let answer = c
        .attribution
        .track_clicks(apb::TrackClicksRequest { program_id: w.program_id.clone(), clicks: batch.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.recorded_count, answer.duplicate_count), (2, 1));
    let again = c
        .attribution
        .track_clicks(apb::TrackClicksRequest { program_id: w.program_id.clone(), clicks: batch })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.recorded_count, again.duplicate_count), (0, 3));
    let mut other = click("c-2", &w.link_id, "someone", day);
    other.referrer = "https://elsewhere.example/".into();
    let refused = c
        .attribution
        .track_clicks(apb::TrackClicksRequest {
            program_id: w.program_id.clone(),
            clicks: vec![click("c-3", &w.link_id, "", day), other],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains("clicks[1]"), "{refused:?}");
    let bad = c
        .attribution
        .track_click(apb::TrackClickRequest {
            program_id: w.program_id.clone(),
            click: Some(apb::Click { country_code: "GBR".into(), ..click("", &w.link_id, "", day) }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let violations: BTreeSet<String> = tonic_types::StatusExt::get_details_bad_request(&bad)
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(violations, BTreeSet::from(["click.click_id".to_string(), "click.country_code".to_string()]));
    let stats = c
        .attribution
        .get_link_stats(apb::GetLinkStatsRequest { link_id: w.link_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.clicks, 2, "c-3 was refused with its batch");
    let days: Vec<(String, i64)> = stats.daily_clicks.iter().map(|d| (d.date.clone(), d.clicks)).collect();
    assert_eq!(days, [("2024-03-01".to_string(), 1), ("2024-03-02".to_string(), 1)]);
    // The user agent is stored only as a hash.
    let pool = sqlx::PgPool::connect(&t.db.url).await.unwrap();
    let raw: i64 = sqlx::query_scalar("SELECT count(*) FROM attribution.clicks WHERE user_agent_hash LIKE '%Mozilla%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(raw, 0);
    pool.close().await;
    t.shutdown().await.unwrap();
}

/// An archived link takes no new clicks or leads, but its customer's sales
/// still settle; ListLinks filters on archived; unarchiving reopens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_links_customer_still_earns() {
    let mut t = TestStack::start().await.unwrap();
    let c = &mut t.clients;
    let w = world::setup(c, "Archive").await;
    let archived = c
        .attribution
        .archive_link(apb::ArchiveLinkRequest { id: w.link_id.clone(), request_id: "archive-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(archived.archived && archived.archive_time.is_some());
    assert_eq!(archived.splits.len(), 2, "the split config stays as it was");
    let day = DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z").unwrap().with_timezone(&Utc);
    let refused = c
        .attribution
        .track_click(apb::TrackClickRequest {
            program_id: w.program_id.clone(),
            click: Some(click("late", &w.link_id, "", day)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = c
        .attribution
        .track_lead(apb::TrackLeadRequest {
            program_id: w.program_id.clone(),
            link_id: w.link_id.clone(),
            customer_external_id: "cust-2".into(),
            occurred_at: Some(ts("2024-03-01T00:00:00Z")),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // The existing customer still earns.
    let (settled, entries) = accrue_e2e::fixtures::record_and_settle(
        c,
        payment(&w.program_id, "after-archive", "cust-1", "100.00", "", "2024-03-02T00:00:00Z"),
    )
    .await;
    assert_eq!(settled.link_id, w.link_id);
    let direct: Decimal = entries
        .iter()
        .filter(|e| e.kind == types::EarningKind::Direct as i32)
        .map(|e| amount(e.amount.as_ref()).unwrap())
        .sum();
    assert_eq!(direct, dec("5.00"));
    let list = |archived: Option<bool>| apb::ListLinksRequest {
        program_id: w.program_id.clone(),
        archived,
        ..Default::default()
    };
    let only_archived = c.attribution.list_links(list(Some(true))).await.unwrap().into_inner().links;
    let only_live = c.attribution.list_links(list(Some(false))).await.unwrap().into_inner().links;
    assert_eq!((only_archived.len(), only_live.len()), (1, 0));
    let again = c
        .attribution
        .archive_link(apb::ArchiveLinkRequest { id: w.link_id.clone(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.archive_time, archived.archive_time, "archiving twice keeps the first time");
    let live = c
        .attribution
        .unarchive_link(apb::UnarchiveLinkRequest { id: w.link_id.clone(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(!live.archived && live.archive_time.is_none());
    c.attribution
        .track_click(apb::TrackClickRequest {
            program_id: w.program_id.clone(),
            click: Some(click("reopened", &w.link_id, "", day)),
        })
        .await
        .unwrap();
    t.shutdown().await.unwrap();
}

/// seed 000: a split partner sees earnings from a link, not the link in its
/// list — only under "links I share in"; the owner sees it by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_partners_see_the_link_only_under_the_filter() {
    let (stack, _db, mut admin, minter) = partner_stack().await;
    let w = world::setup(&mut admin, "Shared links").await;
    let as_partner = |partner: &str| partner_clients(&stack, &minter, &w.program_id, partner);
    let listed = |c: Clients, split: &str| {
        let program = w.program_id.clone();
        let split = split.to_string();
        async move {
            let mut c = c;
            c.attribution
                .list_links(apb::ListLinksRequest {
                    program_id: program,
                    split_partner_id: split,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .links
                .into_iter()
                .map(|l| l.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(as_partner(&w.seller), "").await, vec![w.link_id.clone()], "the owner lists its link");
    assert!(listed(as_partner(&w.split_a), "").await.is_empty(), "a split partner's own list");
    assert_eq!(listed(as_partner(&w.split_a), &w.split_a).await, vec![w.link_id.clone()], "links it shares in");
    assert!(listed(as_partner(&w.split_a), &w.split_b).await.is_empty(), "another's shares: nothing");
    assert_eq!(listed(admin.clone(), &w.split_b).await, vec![w.link_id.clone()], "an admin filters by split partner");
    assert!(listed(admin.clone(), &w.seller).await.is_empty(), "the owner holds no split");
    // The split partner still reads the link itself and its own stats.
    let mut split = as_partner(&w.split_a);
    split.attribution.get_link(apb::GetLinkRequest { id: w.link_id.clone() }).await.unwrap();
    stack.shutdown().await.unwrap();
}

const SECRET: &str = "accrue-e2e-touches-secret-0123456789abcdef";

/// A stack whose token secret the test knows, its database, admin
/// clients, and a minter of its tokens.
pub async fn partner_stack() -> (Stack, TestDb, Clients, Minter) {
    let db = TestDb::create().await.unwrap();
    let mut config = StackConfig::for_tests(db.url.clone());
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.unwrap();
    let admin = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let minter = Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    (stack, db, admin, minter)
}

/// Clients calling as `partner` of `program`, or with `role` when not a partner.
pub fn partner_clients(stack: &Stack, minter: &Minter, program: &str, partner: &str) -> Clients {
    let token = minter
        .mint(
            &format!("partner:{partner}"),
            &[Role::Partner],
            &[program.to_string()],
            Some(partner.parse().unwrap()),
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    Clients::connect(&stack.endpoints, &Credential::token(token)).unwrap()
}

/// Σ of non-VOIDED OVERRIDE entries of `partner`, by (source, level,
/// currency): (distinct credited sales, Σ credits, Σ debits).
fn overrides_by_source(
    entries: &[lpb::Entry],
    partner: &str,
    period: Option<(&str, &str)>,
) -> BTreeMap<(String, i32, String), (i64, Decimal, Decimal)> {
    let mut sales: HashMap<(String, i32, String), BTreeSet<String>> = HashMap::new();
    let mut out: BTreeMap<(String, i32, String), (i64, Decimal, Decimal)> = BTreeMap::new();
    for e in entries.iter().filter(|e| {
        e.partner_id == partner
            && e.kind == types::EarningKind::Override as i32
            && e.status != lpb::EntryStatus::Voided as i32
            && period.is_none_or(|(from, to)| {
                let seconds = e.occurred_at.as_ref().unwrap().seconds;
                seconds >= ts(from).seconds && seconds < ts(to).seconds
            })
    }) {
        let money = e.amount.as_ref().unwrap();
        let key = (e.source_partner_id.clone(), e.level, money.currency_code.clone());
        let row = out.entry(key.clone()).or_default();
        if e.entry_type == lpb::EntryType::Credit as i32 {
            row.1 += amount(Some(money)).unwrap();
            sales.entry(key).or_default().insert(e.sale_id.clone());
        } else {
            row.2 += amount(Some(money)).unwrap();
        }
    }
    for (key, row) in &mut out {
        row.0 = sales.get(key).map_or(0, |s| s.len() as i64);
    }
    out
}

async fn breakdown(
    c: &mut Clients,
    program: &str,
    partner: &str,
    period: Option<(&str, &str)>,
) -> BTreeMap<(String, i32, String), (i64, Decimal, Decimal)> {
    let mut out = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .ledger
            .get_override_breakdown(lpb::GetOverrideBreakdownRequest {
                program_id: program.into(),
                partner_id: partner.into(),
                start_time: period.map(|p| ts(p.0)),
                end_time: period.map(|p| ts(p.1)),
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for row in page.sources {
            let (credits, debits, net) = (
                amount(row.amount.as_ref()).unwrap(),
                amount(row.clawback.as_ref()).unwrap(),
                amount(row.net_amount.as_ref()).unwrap(),
            );
            assert_eq!(net, credits - debits);
            out.insert((row.source_partner_id, row.level, row.currency_code), (row.sale_count, credits, debits));
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// A three-level chain root → a → b → seller with a 5 / 3 / 2 % override
/// plan: b and the seller sell, one sale is partly refunded. Every
/// partner's GetOverrideBreakdown equals Σ of its OVERRIDE entries by
/// source and level (paged one row at a time, with and without a period);
/// the root's ListDownline shows each member's funded sales and the
/// override the root earned from it, and nothing else; GetLinkStats and
/// GetPartnerStats equal counts from ListSales and sums of ListEntries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn override_breakdown_downline_and_stats_equal_the_ledger() {
    let (stack, _db, mut admin, minter) = partner_stack().await;
    let c = &mut admin;
    let program = new_program(c, "Chain").await;
    default_agreement(c, &program, percentage_on_payment("0.10")).await;
    override_plan(c, &program, cpb::OverrideBasis::DealAmount, &["0.05", "0.03", "0.02"]).await;
    let root = create_partner(c, &program, "Root", "").await;
    let a = create_partner(c, &program, "A", &root).await;
    let b = create_partner(c, &program, "B", &a).await;
    let seller = create_partner(c, &program, "Seller", &b).await;
    let friend = create_partner(c, &program, "Friend", "").await;
    let seller_link = link(c, &program, &seller, "seller", &[(&friend, 2500)]).await;
    let b_link = link(c, &program, &b, "b", &[]).await;
    let day = |d: u32| DateTime::parse_from_rfc3339(&format!("2024-03-{d:02}T12:00:00Z")).unwrap().with_timezone(&Utc);
    lead(c, &program, &seller_link, "c1", day(1)).await;
    lead(c, &program, &b_link, "c2", day(1)).await;
    let clicks: Vec<apb::Click> =
        (0..5).map(|i| click(&format!("k{i}"), if i < 3 { &seller_link } else { &b_link }, "", day(2 + i))).collect();
    c.attribution.track_clicks(apb::TrackClicksRequest { program_id: program.clone(), clicks }).await.unwrap();
    let mut sales = Vec::new();
    for (i, (customer, d)) in [("c1", 3), ("c1", 5), ("c2", 6), ("c1", 10), ("c2", 12)].into_iter().enumerate() {
        sales.push(sale(c, &program, &format!("s{i}"), customer, day(d)).await);
    }
    let refund = c
        .attribution
        .record_refund(apb::RecordRefundRequest {
            program_id: program.clone(),
            external_id: "r1".into(),
            sale: Some(apb::record_refund_request::Sale::SaleId(sales[1].id.clone())),
            amount: Some(gbp("40.00")),
            occurred_at: Some(ts("2024-03-11T00:00:00Z")),
            reason: "partial".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let saga = wait_saga(c, &refund.saga_id).await.unwrap();
    assert_eq!(saga.state, apb::SagaState::Done as i32, "{saga:#?}");
    let entries = all_entries(c, &program).await.unwrap();

    // The breakdown of every beneficiary, whole and for a period.
    let period = Some(("2024-03-04T00:00:00Z", "2024-03-11T00:00:00Z"));
    for partner in [&root, &a, &b, &seller] {
        let expected = overrides_by_source(&entries, partner, None);
        assert_eq!(breakdown(c, &program, partner, None).await, expected, "overrides of {partner}");
        let in_period = overrides_by_source(&entries, partner, period);
        assert_eq!(breakdown(c, &program, partner, period).await, in_period, "overrides of {partner} in {period:?}");
    }
    let root_rows = overrides_by_source(&entries, &root, None);
    assert_eq!(
        root_rows.keys().map(|(s, l, _)| (s.clone(), *l)).collect::<Vec<_>>().len(),
        2,
        "the root earns from b (level 2) and the seller (level 3): {root_rows:#?}"
    );
    assert!(root_rows.contains_key(&(seller.clone(), 3, "GBP".into())));
    assert!(root_rows.contains_key(&(b.clone(), 2, "GBP".into())));

    // The root's roster: funded sales and override per member, from the ledger.
    let members = c
        .hierarchy
        .list_downline(hpb::ListDownlineRequest { id: root.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 3);
    for member in &members {
        let id = member.partner.as_ref().unwrap().id.clone();
        let funded: BTreeSet<&str> = entries
            .iter()
            .filter(|e| {
                e.source_partner_id == id
                    && e.entry_type == lpb::EntryType::Credit as i32
                    && e.status != lpb::EntryStatus::Voided as i32
            })
            .map(|e| e.sale_id.as_str())
            .collect();
        assert_eq!(member.funded_sale_count, funded.len() as i64, "funded sales of {id}");
        let net: Decimal = root_rows.iter().filter(|(k, _)| k.0 == id).map(|(_, (_, cr, db))| cr - db).sum();
        let shown: Decimal = member.override_earned.iter().map(|m| amount(Some(m)).unwrap()).sum();
        assert_eq!(shown, net, "override the root earned from {id}");
        let count: i64 = root_rows.iter().filter(|(k, _)| k.0 == id).map(|(_, (n, _, _))| n).sum();
        assert_eq!(member.override_sale_count, count);
    }
    let by_id: HashMap<String, &hpb::DownlineMember> =
        members.iter().map(|m| (m.partner.as_ref().unwrap().id.clone(), m)).collect();
    assert_eq!((by_id[&seller].funded_sale_count, by_id[&b].funded_sale_count, by_id[&a].funded_sale_count), (3, 2, 0));

    // A partner token: its own breakdown; another's is an empty page; its
    // roster shows aggregates only.
    let mut as_root = partner_clients(&stack, &minter, &program, &root);
    assert_eq!(breakdown(&mut as_root, &program, &root, None).await, root_rows);
    assert!(breakdown(&mut as_root, &program, &a, None).await.is_empty());
    let roster = as_root
        .hierarchy
        .list_downline(hpb::ListDownlineRequest { id: root.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(roster.members.len(), 3);
    // Its sub-partner's roster: counts, never the sub-partner's override amounts.
    let sub = as_root
        .hierarchy
        .list_downline(hpb::ListDownlineRequest { id: a.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(sub.members.iter().all(|m| m.override_earned.is_empty() && m.override_sale_count == 0), "{sub:#?}");

    // Link stats: counts from ListSales, commission from ListEntries.
    let all = all_sales(c, &program).await.unwrap();
    let stats = c
        .attribution
        .get_link_stats(apb::GetLinkStatsRequest { link_id: seller_link.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let link_sales: Vec<&apb::Sale> = all.iter().filter(|s| s.link_id == seller_link).collect();
    assert_eq!((stats.clicks, stats.leads, stats.sales), (3, 1, link_sales.len() as i64));
    let revenue: Decimal = link_sales.iter().map(|s| amount(s.amount.as_ref()).unwrap()).sum();
    assert_eq!(amount(stats.revenue.first()).unwrap(), revenue);
    assert_eq!((stats.refunds, amount(stats.refunded.first()).unwrap()), (1, dec("40.00")));
    let ids: BTreeSet<&str> = link_sales.iter().map(|s| s.id.as_str()).collect();
    let kind_sum = |kind: types::EarningKind, credit: bool, partner: Option<&str>, ids: &BTreeSet<&str>| -> Decimal {
        entries
            .iter()
            .filter(|e| ids.contains(e.sale_id.as_str()) && e.status != lpb::EntryStatus::Voided as i32)
            .filter(|e| partner.is_none_or(|p| e.partner_id == p))
            .filter(|e| (e.entry_type == lpb::EntryType::Credit as i32) == credit)
            .filter(|e| !credit || e.kind == kind as i32)
            .map(|e| amount(e.amount.as_ref()).unwrap())
            .sum()
    };
    let commission = &stats.commission[0];
    for (kind, shown) in [
        (types::EarningKind::Direct, &commission.direct),
        (types::EarningKind::Split, &commission.split),
        (types::EarningKind::Override, &commission.r#override),
        (types::EarningKind::Margin, &commission.margin),
    ] {
        assert_eq!(amount(shown.as_ref()).unwrap(), kind_sum(kind, true, None, &ids), "{kind:?}");
    }
    let clawback = kind_sum(types::EarningKind::Direct, false, None, &ids);
    assert!(clawback > Decimal::ZERO);
    assert_eq!(amount(commission.clawback.as_ref()).unwrap(), clawback);
    // The split partner's view of the link: only its own entries.
    let mut as_friend = partner_clients(&stack, &minter, &program, &friend);
    let friend_stats = as_friend
        .attribution
        .get_link_stats(apb::GetLinkStatsRequest { link_id: seller_link.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let friend_split = kind_sum(types::EarningKind::Split, true, Some(&friend), &ids);
    assert_eq!(amount(friend_stats.commission[0].split.as_ref()).unwrap(), friend_split);
    assert_eq!(amount(friend_stats.commission[0].direct.as_ref()).unwrap(), Decimal::ZERO);
    let theirs = as_friend
        .attribution
        .get_link_stats(apb::GetLinkStatsRequest { link_id: b_link.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);

    // Partner stats of b in a period: its sales and its own entries by kind.
    let (from, to) = ("2024-03-05T00:00:00Z", "2024-03-11T00:00:00Z");
    let b_stats = c
        .attribution
        .get_partner_stats(apb::GetPartnerStatsRequest {
            program_id: program.clone(),
            partner_id: b.clone(),
            start_time: Some(ts(from)),
            end_time: Some(ts(to)),
        })
        .await
        .unwrap()
        .into_inner();
    let in_period = |t: &Option<prost_types::Timestamp>| {
        let s = t.as_ref().unwrap().seconds;
        s >= ts(from).seconds && s < ts(to).seconds
    };
    let b_sales: Vec<&apb::Sale> = all.iter().filter(|s| s.partner_id == b && in_period(&s.occurred_at)).collect();
    assert_eq!((b_stats.sales, b_stats.clicks, b_stats.leads), (b_sales.len() as i64, 2, 0));
    let b_entries: Vec<&lpb::Entry> = entries
        .iter()
        .filter(|e| e.partner_id == b && in_period(&e.occurred_at) && e.status != lpb::EntryStatus::Voided as i32)
        .collect();
    let sum = |kind: types::EarningKind| -> Decimal {
        b_entries
            .iter()
            .filter(|e| e.kind == kind as i32 && e.entry_type == lpb::EntryType::Credit as i32)
            .map(|e| amount(e.amount.as_ref()).unwrap())
            .sum()
    };
    let earnings = &b_stats.earnings[0];
    assert_eq!(amount(earnings.direct.as_ref()).unwrap(), sum(types::EarningKind::Direct));
    assert_eq!(amount(earnings.r#override.as_ref()).unwrap(), sum(types::EarningKind::Override));
    assert!(sum(types::EarningKind::Override) > Decimal::ZERO, "b earns level-1 overrides on the seller's sales");
    let other = partner_clients(&stack, &minter, &program, &seller)
        .attribution
        .get_partner_stats(apb::GetPartnerStatsRequest {
            program_id: program.clone(),
            partner_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "a partner sees only its own stats");
    stack.shutdown().await.unwrap();
}
