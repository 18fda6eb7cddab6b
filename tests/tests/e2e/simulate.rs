//! Backtests (issue 16 item 2): attribution.SimulateProgram recomputes a
//! period's settled sales under a draft through the settlement steps and
//! compares with the ledger. The expected numbers here are recomputed
//! independently (plain decimal arithmetic in this file, not the services'
//! code): base commission, the largest-remainder split between a link owner
//! and one split partner, and DEAL_AMOUNT overrides up two levels.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use accrue_e2e::fixtures::{
    default_agreement, link_with_lead, override_plan, partner, payment, percentage_on_payment, program,
    record_and_settle, split_link_with_lead, ts,
};
use accrue_e2e::{Clients, TestStack, all_entries, amount};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::commission::v1 as cpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as types;
use rust_decimal::{Decimal, RoundingStrategy};
use tonic::Code;

use crate::margins::{SEED_002_ROOT_RATES, SERVICE, rates, scheme};
use crate::wire::snapshot;

const DIRECT: i32 = types::EarningKind::Direct as i32;
const SPLIT: i32 = types::EarningKind::Split as i32;
const OVERRIDE: i32 = types::EarningKind::Override as i32;

/// top → mid → {s1, s2}; sp and sp2 are roots. s1's link gives sp 25 %.
/// 5 % of every payment by default; overrides 2 % then 1 % of the deal.
struct World {
    program: String,
    top: String,
    mid: String,
    s1: String,
    s2: String,
    sp: String,
    sp2: String,
    /// s1's link (customer c1).
    link1: String,
    /// (seller, amount) of every sale, all settled.
    sales: Vec<(String, Decimal)>,
}

/// `n` payments spread over March 2024 across the three sellers' customers.
async fn world(c: &mut Clients, n: usize) -> World {
    let program = program(c).await;
    default_agreement(c, &program, percentage_on_payment("0.05")).await;
    override_plan(c, &program, cpb::OverrideBasis::DealAmount, &["0.02", "0.01"]).await;
    let top = partner(c, &program, "", "").await;
    let mid = partner(c, &program, "", &top).await;
    let s1 = partner(c, &program, "", &mid).await;
    let s2 = partner(c, &program, "", &mid).await;
    let sp = partner(c, &program, "", "").await;
    let sp2 = partner(c, &program, "", "").await;
    let link1 = split_link_with_lead(c, &program, &s1, &[(&sp, 2500)], "c1").await;
    link_with_lead(c, &program, &s2, "c2").await;
    link_with_lead(c, &program, &mid, "c3").await;
    let sellers = [(&s1, "c1"), (&s2, "c2"), (&mid, "c3")];
    let mut sales = Vec::new();
    for k in 0..n {
        let (seller, customer) = sellers[k % 3];
        // Amounts with odd cents, so that rates and splits meet halves.
        let gross = Decimal::new(1_000 + (k as i64) * 737 + (k as i64 % 7) * 50, 2);
        let at = format!("2024-03-{:02}T{:02}:00:00Z", 1 + k / 24, k % 24);
        record_and_settle(c, payment(&program, &format!("sale-{k}"), customer, &gross.to_string(), "", &at)).await;
        sales.push((seller.clone(), gross));
    }
    World { program, top, mid, s1, s2, sp, sp2, link1, sales }
}

/// Half away from zero to pence.
fn round(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// (owner, split partner) shares of `c` with `bps` to the split partner:
/// floors in pence, the leftover penny to the larger remainder, ties to the owner.
fn split(c: Decimal, bps: i64) -> (Decimal, Decimal) {
    let pence = (c * Decimal::from(100)).trunc();
    let to_split = pence * Decimal::from(bps);
    let to_owner = pence * Decimal::from(10_000 - bps);
    let (mut s, mut o) = ((to_split / Decimal::from(10_000)).floor(), (to_owner / Decimal::from(10_000)).floor());
    let (rs, ro) = (to_split % Decimal::from(10_000), to_owner % Decimal::from(10_000));
    if pence - s - o > Decimal::ZERO {
        if ro >= rs {
            o += Decimal::ONE;
        } else {
            s += Decimal::ONE;
        }
    }
    (o / Decimal::from(100), s / Decimal::from(100))
}

/// Σ per (partner, kind).
type Totals = BTreeMap<(String, i32), Decimal>;
/// One sale's lines by (partner, kind, level).
type SaleLines = BTreeMap<(String, i32, i32), Decimal>;
/// (actual, simulated, difference) per (partner, kind).
type Rows = BTreeMap<(String, i32), (Decimal, Decimal, Decimal)>;

/// The rules a recomputation applies.
struct Rules<'a> {
    rate: Decimal,
    /// Override rate by level (program plan).
    levels: [Decimal; 2],
    /// A partner plan of `top` replacing the program's for it.
    top_levels: Option<[Decimal; 2]>,
    /// s1's link split (partner, bps).
    s1_split: Option<(&'a str, i64)>,
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// Per (partner, kind) totals and per sale lines by (partner, kind, level),
/// recomputed independently.
fn recompute(w: &World, rules: &Rules<'_>) -> (Totals, Vec<SaleLines>) {
    let mut totals: Totals = BTreeMap::new();
    let mut per_sale = Vec::new();
    for (seller, gross) in &w.sales {
        let mut lines: SaleLines = BTreeMap::new();
        let c = round(gross * rules.rate);
        match rules.s1_split.filter(|_| *seller == w.s1) {
            Some((partner, bps)) => {
                let (owner, share) = split(c, bps);
                lines.insert((seller.clone(), DIRECT, 0), owner);
                lines.insert((partner.to_string(), SPLIT, 0), share);
            }
            None => {
                lines.insert((seller.clone(), DIRECT, 0), c);
            }
        }
        let ancestors: Vec<&String> = if *seller == w.mid { vec![&w.top] } else { vec![&w.mid, &w.top] };
        for (i, ancestor) in ancestors.into_iter().enumerate() {
            let levels = if *ancestor == w.top { rules.top_levels.unwrap_or(rules.levels) } else { rules.levels };
            lines.insert((ancestor.clone(), OVERRIDE, i as i32 + 1), round(gross * levels[i]));
        }
        lines.retain(|_, amount| !amount.is_zero());
        for ((partner, kind, _), amount) in &lines {
            *totals.entry((partner.clone(), *kind)).or_default() += *amount;
        }
        per_sale.push(lines);
    }
    (totals, per_sale)
}

fn live(w: &World) -> Rules<'static> {
    let _ = w;
    Rules { rate: d("0.05"), levels: [d("0.02"), d("0.01")], top_levels: None, s1_split: None }
}

/// SimulateProgram of `program`'s March 2024.
fn request(program: &str) -> apb::SimulateProgramRequest {
    apb::SimulateProgramRequest {
        program_id: program.to_string(),
        start_time: Some(ts("2024-03-01T00:00:00Z")),
        end_time: Some(ts("2024-04-01T00:00:00Z")),
        ..Default::default()
    }
}

/// Runs the simulation (every page) and returns (actual, simulated,
/// difference) per (partner, kind), with the pages' responses.
async fn simulate(
    c: &mut Clients,
    mut request: apb::SimulateProgramRequest,
) -> (Rows, Vec<apb::SimulateProgramResponse>) {
    let mut rows: Rows = BTreeMap::new();
    let mut pages = Vec::new();
    loop {
        let page = c.attribution.simulate_program(request.clone()).await.expect("simulate").into_inner();
        for row in &page.differences {
            let entry = rows.entry((row.partner_id.clone(), row.kind)).or_default();
            entry.0 += amount(row.actual.as_ref()).unwrap();
            entry.1 += amount(row.simulated.as_ref()).unwrap();
            entry.2 += amount(row.difference.as_ref()).unwrap();
        }
        let next = page.next_page_token.clone();
        pages.push(page);
        if next.is_empty() {
            break;
        }
        request.page_token = next;
    }
    (rows, pages)
}

/// Σ live CREDIT entries per (partner, kind), from ListEntries.
async fn ledger_totals(c: &Clients, program: &str) -> Totals {
    let mut totals = BTreeMap::new();
    for e in all_entries(c, program).await.unwrap() {
        if e.entry_type == lpb::EntryType::Credit as i32 && e.status != lpb::EntryStatus::Voided as i32 {
            *totals.entry((e.partner_id.clone(), e.kind)).or_default() += amount(e.amount.as_ref()).unwrap();
        }
    }
    totals
}

fn agreement_draft(rate: &str) -> cpb::CreateAgreementRequest {
    cpb::CreateAgreementRequest { rules: Some(percentage_on_payment(rate)), ..Default::default() }
}

fn plan_draft(partner_id: &str, rates: &[&str]) -> cpb::OverridePlan {
    cpb::OverridePlan {
        partner_id: partner_id.into(),
        mode: cpb::OverrideMode::Percentage as i32,
        basis: cpb::OverrideBasis::DealAmount as i32,
        rates_by_level: rates.iter().map(|r| cpb::OverrideLevel { rate: (*r).into(), flat_amount: None }).collect(),
        ..Default::default()
    }
}

/// Asserts every row's simulated total is `expected`'s and its actual the
/// live recomputation's; returns the pairs whose difference is not zero.
fn check(rows: &Rows, actual: &Totals, expected: &Totals) -> Vec<(String, i32)> {
    let mut keys: Vec<&(String, i32)> = actual.keys().chain(expected.keys()).collect();
    keys.sort();
    keys.dedup();
    let got: Vec<&(String, i32)> = rows.keys().collect();
    assert_eq!(got, keys, "the rows are the pairs with an actual or simulated line");
    let mut changed = Vec::new();
    for key in keys {
        let (a, s, diff) = rows[key];
        let want_a = actual.get(key).copied().unwrap_or_default();
        let want_s = expected.get(key).copied().unwrap_or_default();
        assert_eq!((a, s, diff), (want_a, want_s, want_s - want_a), "{key:?}");
        if !diff.is_zero() {
            changed.push(key.clone());
        }
    }
    changed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_equal_to_the_live_plan_changes_nothing_and_writes_nothing() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = world(&mut c, 36).await;
    let live_rules = Rules { s1_split: Some((w.sp.as_str(), 2500)), ..live(&w) };
    let (actual, _) = recompute(&w, &live_rules);
    assert_eq!(ledger_totals(&c, &w.program).await, actual, "the independent recomputation is the ledger's");
    let pool = sqlx::PgPool::connect(&stack.db.url).await.unwrap();
    let before = snapshot(&pool).await;

    // No draft, then a draft that restates the live rules: zero everywhere.
    let restated = apb::SimulateProgramRequest {
        draft: Some(cpb::SettlementDraft {
            agreements: vec![agreement_draft("0.05")],
            override_plans: vec![plan_draft("", &["0.02", "0.01"])],
            ..Default::default()
        }),
        link_splits: vec![apb::LinkSplitsChange {
            link_id: w.link1.clone(),
            splits: vec![apb::LinkSplit { partner_id: w.sp.clone(), basis_points: 2500 }],
        }],
        ..request(&w.program)
    };
    for request in [request(&w.program), restated] {
        let (rows, pages) = simulate(&mut c, request).await;
        assert!(check(&rows, &actual, &actual).is_empty());
        assert_eq!(pages.len(), 1);
        let page = &pages[0];
        assert_eq!((page.sales_simulated, page.sales_changed, page.sales_failed), (36, 0, 0), "{page:#?}");
        assert!(page.top_sales.is_empty());
    }
    // Pages of 10 add up to the same (and no sale twice).
    let (rows, pages) = simulate(&mut c, apb::SimulateProgramRequest { page_size: 10, ..request(&w.program) }).await;
    assert!(check(&rows, &actual, &actual).is_empty());
    assert_eq!(pages.iter().map(|p| p.sales_simulated).collect::<Vec<_>>(), vec![10, 10, 10, 6]);
    // A period that holds nothing.
    let empty = apb::SimulateProgramRequest {
        start_time: Some(ts("2023-01-01T00:00:00Z")),
        end_time: Some(ts("2023-02-01T00:00:00Z")),
        ..request(&w.program)
    };
    let (rows, pages) = simulate(&mut c, empty).await;
    assert!(rows.is_empty() && pages[0].sales_simulated == 0);
    assert_eq!(snapshot(&pool).await, before, "a simulation writes nothing");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_changes_match_a_direct_recomputation() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = world(&mut c, 30).await;
    let live_rules = Rules { s1_split: Some((w.sp.as_str(), 2500)), ..live(&w) };
    let (actual, live_sales) = recompute(&w, &live_rules);

    // The default agreement 5 % → 7 %: DIRECT and SPLIT move, overrides (on
    // the deal amount) do not.
    let draft = cpb::SettlementDraft { agreements: vec![agreement_draft("0.07")], ..Default::default() };
    let seven = Rules { rate: d("0.07"), ..live_rules };
    let (expected, sales) = recompute(&w, &seven);
    let request7 = apb::SimulateProgramRequest { draft: Some(draft), top_k: 3, ..request(&w.program) };
    let (rows, pages) = simulate(&mut c, request7).await;
    let changed = check(&rows, &actual, &expected);
    assert!(changed.iter().all(|(_, kind)| *kind == DIRECT || *kind == SPLIT), "{changed:?}");
    assert_eq!(changed.len(), 4, "s1, s2 and mid DIRECT, sp SPLIT: {changed:?}");
    // The top 3 sales are those whose lines moved most, recomputed.
    let mut moved: Vec<Decimal> = live_sales
        .iter()
        .zip(&sales)
        .map(|(before, after)| {
            let mut keys: Vec<_> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.iter()
                .map(|k| (after.get(k).copied().unwrap_or_default() - before.get(k).copied().unwrap_or_default()).abs())
                .sum::<Decimal>()
        })
        .collect();
    moved.sort_by(|a, b| b.cmp(a));
    let page = &pages[0];
    let top: Vec<Decimal> = page.top_sales.iter().map(|s| amount(s.change.as_ref()).unwrap()).collect();
    assert_eq!(top, moved[..3].to_vec());
    assert_eq!(page.sales_changed, 30);
    let first = &page.top_sales[0];
    assert!(!first.actual_lines.is_empty() && first.actual_lines.len() == first.simulated_lines.len(), "{first:#?}");

    // Override level 1: 2 % → 3 % (the program plan): only level-1 ancestors
    // (mid for s1 and s2's sales, top for mid's) move.
    let draft = cpb::SettlementDraft { override_plans: vec![plan_draft("", &["0.03", "0.01"])], ..Default::default() };
    let three = Rules { levels: [d("0.03"), d("0.01")], ..live_rules };
    let (expected, _) = recompute(&w, &three);
    let (rows, _) = simulate(&mut c, apb::SimulateProgramRequest { draft: Some(draft), ..request(&w.program) }).await;
    let changed = check(&rows, &actual, &expected);
    assert_eq!(changed, {
        let mut want = vec![(w.mid.clone(), OVERRIDE), (w.top.clone(), OVERRIDE)];
        want.sort();
        want
    });
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_plan_draft_and_a_splits_draft_change_the_expected_partners_only() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = world(&mut c, 24).await;
    let live_rules = Rules { s1_split: Some((w.sp.as_str(), 2500)), ..live(&w) };
    let (actual, _) = recompute(&w, &live_rules);

    // top's own plan: 4 % at every level. Only top's overrides move.
    let draft =
        cpb::SettlementDraft { override_plans: vec![plan_draft(&w.top, &["0.04", "0.04"])], ..Default::default() };
    let rules = Rules { top_levels: Some([d("0.04"), d("0.04")]), ..live_rules };
    let (expected, _) = recompute(&w, &rules);
    let (rows, _) = simulate(&mut c, apb::SimulateProgramRequest { draft: Some(draft), ..request(&w.program) }).await;
    assert_eq!(check(&rows, &actual, &expected), vec![(w.top.clone(), OVERRIDE)]);

    // s1's link re-split: sp2 takes 50 % instead of sp's 25 %. s1, sp and
    // sp2 move; nobody else.
    let change = apb::LinkSplitsChange {
        link_id: w.link1.clone(),
        splits: vec![apb::LinkSplit { partner_id: w.sp2.clone(), basis_points: 5000 }],
    };
    let rules = Rules { s1_split: Some((w.sp2.as_str(), 5000)), ..live(&w) };
    let (expected, _) = recompute(&w, &rules);
    let (rows, pages) =
        simulate(&mut c, apb::SimulateProgramRequest { link_splits: vec![change], ..request(&w.program) }).await;
    let mut want = vec![(w.s1.clone(), DIRECT), (w.sp.clone(), SPLIT), (w.sp2.clone(), SPLIT)];
    want.sort();
    assert_eq!(check(&rows, &actual, &expected), want);
    assert_eq!(rows[&(w.sp.clone(), SPLIT)].1, Decimal::ZERO, "sp keeps nothing");
    assert_eq!(pages[0].sales_changed, 8, "s1's sales only");
    assert!(rows.keys().all(|(partner, _)| *partner != w.s2 || rows[&(partner.clone(), DIRECT)].2.is_zero()));
    stack.shutdown().await.unwrap();
}

fn fields(status: &tonic::Status) -> Vec<String> {
    tonic_types::StatusExt::get_details_bad_request(status)
        .map(|details| details.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_periods_and_drafts_are_refused_with_field_violations_and_write_nothing() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let w = world(&mut c, 3).await;
    let pool = sqlx::PgPool::connect(&stack.db.url).await.unwrap();
    let before = snapshot(&pool).await;
    let base = request(&w.program);
    let bad_rate = cpb::CreateAgreementRequest {
        rules: Some(cpb::AgreementRules { rate: "1.5".into(), ..percentage_on_payment("0.05") }),
        ..Default::default()
    };
    let no_mode = cpb::OverridePlan { mode: 0, ..plan_draft("", &["0.02"]) };
    let cases: Vec<(apb::SimulateProgramRequest, Code, Vec<&str>)> = vec![
        (
            apb::SimulateProgramRequest { end_time: base.start_time, ..base.clone() },
            Code::InvalidArgument,
            vec!["end_time"],
        ),
        (
            apb::SimulateProgramRequest { end_time: Some(ts("2025-04-06T00:00:00Z")), ..base.clone() },
            Code::InvalidArgument,
            vec!["end_time"],
        ),
        (apb::SimulateProgramRequest { start_time: None, ..base.clone() }, Code::InvalidArgument, vec!["start_time"]),
        (
            apb::SimulateProgramRequest { top_k: 101, page_size: -1, ..base.clone() },
            Code::InvalidArgument,
            vec!["top_k", "page_size"],
        ),
        (
            apb::SimulateProgramRequest {
                draft: Some(cpb::SettlementDraft {
                    agreements: vec![bad_rate],
                    override_plans: vec![no_mode],
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            vec!["draft.agreements[0].rules.rate", "draft.override_plans[0].mode"],
        ),
        (
            apb::SimulateProgramRequest {
                link_splits: vec![
                    apb::LinkSplitsChange {
                        link_id: w.link1.clone(),
                        splits: vec![apb::LinkSplit { partner_id: w.sp.clone(), basis_points: 10_001 }],
                    },
                    apb::LinkSplitsChange { link_id: uuid::Uuid::now_v7().to_string(), splits: Vec::new() },
                ],
                ..base.clone()
            },
            Code::InvalidArgument,
            vec!["link_splits[0].splits[0].basis_points", "link_splits[1].link_id"],
        ),
        (
            apb::SimulateProgramRequest {
                link_splits: vec![apb::LinkSplitsChange {
                    link_id: w.link1.clone(),
                    splits: vec![apb::LinkSplit { partner_id: w.s1.clone(), basis_points: 100 }],
                }],
                ..base.clone()
            },
            Code::InvalidArgument,
            vec!["link_splits[0].splits[0].partner_id"],
        ),
        (
            apb::SimulateProgramRequest { program_id: uuid::Uuid::now_v7().to_string(), ..base.clone() },
            Code::NotFound,
            vec![],
        ),
        (
            apb::SimulateProgramRequest {
                draft: Some(cpb::SettlementDraft {
                    agreements: vec![cpb::CreateAgreementRequest {
                        partner_id: uuid::Uuid::now_v7().to_string(),
                        ..agreement_draft("0.05")
                    }],
                    ..Default::default()
                }),
                ..base.clone()
            },
            Code::NotFound,
            vec![],
        ),
    ];
    for (request, code, want) in cases {
        let refused = c.attribution.simulate_program(request.clone()).await.unwrap_err();
        assert_eq!(refused.code(), code, "{request:?}: {refused:?}");
        let got = fields(&refused);
        for field in want {
            assert!(got.iter().any(|f| f == field), "{field} in {got:?} ({refused:?})");
        }
    }
    assert_eq!(snapshot(&pool).await, before, "refused simulations write nothing");
    // The same stack still simulates.
    let (_, pages) = simulate(&mut c, base).await;
    assert_eq!(pages[0].sales_simulated, 3);
    let _ = (&w.s2, &w.sp2);
    stack.shutdown().await.unwrap();
}

/// Who may backtest (docs/authorization.md): the program's admin and
/// finance operators; a partner or a viewer is PERMISSION_DENIED, and an
/// admin of another program finds no such program.
#[tokio::test(flavor = "multi_thread")]
async fn operators_may_simulate_their_program_and_partners_and_viewers_may_not() {
    use accrue_cli::stack::{Stack, StackConfig};
    use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
    const SECRET: &str = "accrue-e2e-simulate-secret-0123456789abcdef";
    let db = accrue_testkit::TestDb::create().await.unwrap();
    let mut config = StackConfig::for_tests(db.url.clone());
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.unwrap();
    let mut admin = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let w = world(&mut admin, 3).await;
    let other = program(&mut admin).await;
    let minter = Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let ttl = std::time::Duration::from_secs(600);
    let as_token = |subject: &str, role: Role, program: &str, partner: Option<&str>| {
        let token =
            minter.mint(subject, &[role], &[program.to_string()], partner.map(|p| p.parse().unwrap()), ttl).unwrap();
        Clients::connect(&stack.endpoints, &Credential::token(token)).unwrap()
    };
    let cases = [
        (as_token("ops@example.com", Role::Admin, &w.program, None), Code::Ok),
        (as_token("finance@example.com", Role::Finance, &w.program, None), Code::Ok),
        (as_token("viewer@example.com", Role::Viewer, &w.program, None), Code::PermissionDenied),
        (as_token(&format!("partner:{}", w.s1), Role::Partner, &w.program, Some(&w.s1)), Code::PermissionDenied),
        (as_token("admin-of-other", Role::Admin, &other, None), Code::NotFound),
    ];
    for (mut clients, code) in cases {
        match clients.attribution.simulate_program(request(&w.program)).await {
            Ok(page) => {
                assert_eq!(code, Code::Ok);
                assert_eq!(page.into_inner().sales_simulated, 3);
            }
            Err(status) => assert_eq!(status.code(), code, "{status:?}"),
        }
    }
    drop(admin);
    stack.shutdown().await.unwrap();
    drop(db);
}

/// A scheme-rate draft (seed 002 margins): the Retailer's absolute rate
/// 1 % → 1.5 % moves the Retailer's MARGIN up and the Distributor's (2 %
/// minus the Retailer's) down by the same amount, and nobody else's; a
/// draft that puts a lower role above a higher one is refused as
/// SetSchemeRates refuses it, and an unknown scheme is NOT_FOUND.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheme_rates_draft_moves_the_margins_it_touches() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program = program(&mut c).await;
    let mut chain: Vec<String> = Vec::new();
    for (role, _) in SEED_002_ROOT_RATES {
        let parent = chain.last().cloned().unwrap_or_default();
        chain.push(partner(&mut c, &program, role, &parent).await);
    }
    let root = scheme(&mut c, &program, "", "SuperAdmin", &SEED_002_ROOT_RATES).await;
    default_agreement(&mut c, &program, percentage_on_payment("0.10")).await;
    link_with_lead(&mut c, &program, &chain[4], "r1").await;
    let amounts = ["100.00", "250.00", "40.00"];
    for (k, gross) in amounts.iter().enumerate() {
        let at = format!("2024-03-0{}T12:00:00Z", k + 1);
        record_and_settle(&mut c, payment(&program, &format!("m-{k}"), "r1", gross, SERVICE, &at)).await;
    }
    let draft = |pairs: &[(&str, &str)], scheme: &str| apb::SimulateProgramRequest {
        program_id: program.clone(),
        start_time: Some(ts("2024-03-01T00:00:00Z")),
        end_time: Some(ts("2024-04-01T00:00:00Z")),
        draft: Some(cpb::SettlementDraft {
            scheme_rates: vec![cpb::SetSchemeRatesRequest {
                scheme_id: scheme.into(),
                rates: rates(pairs),
                request_id: String::new(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (rows, pages) = simulate(&mut c, draft(&[("RETAILER", "0.015")], &root)).await;
    let total: Decimal = amounts.iter().map(|a| d(a)).sum();
    let margin = |partner: &str| rows[&(partner.to_string(), types::EarningKind::Margin as i32)];
    let (retailer, distributor) = (margin(&chain[4]), margin(&chain[3]));
    assert_eq!((retailer.0, retailer.1), (round(total * d("0.01")), round(total * d("0.015"))));
    assert_eq!((distributor.0, distributor.1), (round(total * d("0.01")), round(total * d("0.005"))));
    assert_eq!(retailer.2, -distributor.2);
    for partner in &chain[..3] {
        assert!(margin(partner).2.is_zero(), "{partner}: {:?}", margin(partner));
    }
    assert_eq!((pages[0].sales_simulated, pages[0].sales_changed), (3, 3));

    let refused = c.attribution.simulate_program(draft(&[("RETAILER", "0.03")], &root)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(fields(&refused).contains(&"draft.scheme_rates[0].rates[0].rate".to_string()), "{refused:?}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let refused = c.attribution.simulate_program(draft(&[("RETAILER", "0.015")], &unknown)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    stack.shutdown().await.unwrap();
}

/// A backtest recomputes from the facts settlement ran on (the saga log):
/// with a TIERED agreement (seed 003 example 5: the tier by the seller's
/// prior volume), a sale recorded after a later one settled gave that later
/// one a lower tier than today's history would; the live rules still find
/// no difference, and a draft's difference is its own alone.
#[tokio::test(flavor = "multi_thread")]
async fn sales_recorded_out_of_order_backtest_on_their_settled_facts() {
    let stack = TestStack::start().await.unwrap();
    let mut c = stack.clients.clone();
    let program = program(&mut c).await;
    let tier = |min: &str, max: &str, rate: &str| cpb::Tier {
        min_volume: min.into(),
        max_volume: max.into(),
        rate: rate.into(),
        fixed_amount: None,
    };
    let tiered = |low: &str| cpb::AgreementRules {
        model: cpb::CommissionModel::Tiered as i32,
        trigger: cpb::CommissionTrigger::OnPayment as i32,
        tiers: vec![tier("0", "100", low), tier("100", "", "0.30")],
        ..Default::default()
    };
    default_agreement(&mut c, &program, tiered("0.20")).await;
    let seller = partner(&mut c, &program, "", "").await;
    link_with_lead(&mut c, &program, &seller, "c1").await;
    // The later sale first: no prior volume then, so the 20 % tier (20.00).
    record_and_settle(&mut c, payment(&program, "late", "c1", "100.00", "", "2024-03-10T00:00:00Z")).await;
    record_and_settle(&mut c, payment(&program, "early", "c1", "100.00", "", "2024-03-01T00:00:00Z")).await;
    let (rows, pages) = simulate(&mut c, request(&program)).await;
    assert_eq!((pages[0].sales_simulated, pages[0].sales_changed), (2, 0), "{:#?}", pages[0].top_sales);
    assert_eq!(rows[&(seller.clone(), DIRECT)], (d("40.00"), d("40.00"), Decimal::ZERO));
    // The low tier at 25 %: both sales were settled in it (+5.00 each).
    let draft = cpb::SettlementDraft {
        agreements: vec![cpb::CreateAgreementRequest { rules: Some(tiered("0.25")), ..Default::default() }],
        ..Default::default()
    };
    let (rows, _) = simulate(&mut c, apb::SimulateProgramRequest { draft: Some(draft), ..request(&program) }).await;
    assert_eq!(rows[&(seller.clone(), DIRECT)], (d("40.00"), d("50.00"), d("10.00")));
    stack.shutdown().await.unwrap();
}
