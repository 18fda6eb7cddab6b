//! Partner tokens (issue 10 item 3): with two partners and more in one
//! program, every RPC a partner token may call answers only with that
//! partner's own data — its partner record and its downline's, the links it
//! owns or shares in, its own entries, summaries, balances and payouts — and
//! answers anything else exactly as it answers a random id. A parent's
//! override lines show its own amount, level and rate, never the
//! sub-partner's sale (seed 004 "Auth"). The test walks the policy table, so
//! an RPC newly opened to partners fails it until it is checked here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use accrue_cli::stack::{Stack, StackConfig};
use accrue_e2e::Clients;
use accrue_e2e::fixtures::{payment, record_and_settle, ts};
use accrue_kit::auth::policy::{Rule, TABLE};
use accrue_kit::auth::{AuthConfig, Credential, Minter, Role};
use accrue_proto::attribution::v1 as apb;
use accrue_proto::events::v1 as epb;
use accrue_proto::events::v1::event_service_client::EventServiceClient;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::payouts::v1 as ppb;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestDb;
use tonic::{Code, Status};

use crate::world;

const SECRET: &str = "accrue-e2e-partner-scope-secret-0123456789";

/// The code and message of a refusal with `id` masked, so a foreign id's
/// answer can be compared with a random one's.
fn masked<T: std::fmt::Debug>(result: Result<T, Status>, id: &str) -> (Code, String) {
    match result {
        Ok(reply) => panic!("expected a refusal for {id}, got {reply:?}"),
        Err(status) => (status.code(), status.message().replace(id, "<id>")),
    }
}

/// Asserts `foreign` is refused NOT_FOUND exactly like `random`.
fn same_as_missing<T: std::fmt::Debug>(
    what: &str,
    foreign: (Result<T, Status>, &str),
    random: (Result<T, Status>, &str),
) {
    let foreign = masked(foreign.0, foreign.1);
    assert_eq!(foreign.0, Code::NotFound, "{what}: {foreign:?}");
    assert_eq!(foreign, masked(random.0, random.1), "{what}: a foreign id must answer as a random one");
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

/// True when `event` concerns partner `me`: an entry it earns, a payout to
/// it, its own partner record.
fn concerns(event: &epb::Event, me: &str) -> bool {
    use prost::Message;
    let data = event.data.as_ref().unwrap();
    let bytes = data.value.as_slice();
    match data.type_url.rsplit('/').next().unwrap_or_default() {
        "accrue.ledger.v1.Entry" => lpb::Entry::decode(bytes).unwrap().partner_id == me,
        "accrue.payouts.v1.Payout" => ppb::Payout::decode(bytes).unwrap().partner_id == me,
        "accrue.hierarchy.v1.Partner" => hpb::Partner::decode(bytes).unwrap().id == me,
        _ => false,
    }
}

/// The whole feed at `url` (as `admin`) and what `own` lists of it, read
/// again until the feed stopped growing in between.
async fn stable_feeds(
    url: &str,
    admin: &Credential,
    own: &Credential,
    program: &str,
) -> (Vec<epb::Event>, Vec<epb::Event>) {
    let list = |credential: &Credential| {
        let mut client: EventServiceClient<_> =
            accrue_kit::client::connect(url, Duration::from_secs(30), credential).unwrap();
        let request = epb::ListEventsRequest { program_id: program.into(), page_size: 1000, ..Default::default() };
        async move { client.list_events(request).await.unwrap().into_inner().events }
    };
    loop {
        let before = list(admin).await;
        let seen = list(own).await;
        if list(admin).await == before {
            return (before, seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_token_reads_only_its_own_data() {
    let db = TestDb::create().await.unwrap();
    let mut config = StackConfig::for_tests(db.url.clone());
    config.auth = AuthConfig::hs256(SECRET);
    let stack = Stack::start(config).await.unwrap();
    let mut admin = Clients::connect(&stack.endpoints, &stack.admin).unwrap();
    let w = world::setup(&mut admin, "Partner scope").await;
    let program = w.program_id.clone();
    let (sale, entries) =
        record_and_settle(&mut admin, payment(&program, "sale-1", "cust-1", "100.00", "", "2024-02-01T00:00:00Z"))
            .await;
    assert_eq!(entries.len(), 4, "DIRECT, two SPLITs, OVERRIDE: {entries:#?}");

    // Approve as lines clear, clear them, and pay everyone.
    admin
        .hierarchy
        .update_program(hpb::UpdateProgramRequest {
            program: Some(hpb::Program { id: program.clone(), auto_approve_cleared: true, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["auto_approve_cleared".into()] }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    admin
        .ledger
        .clear_matured(lpb::ClearMaturedRequest {
            program_id: program.clone(),
            as_of: Some(ts("2024-03-31T23:59:59Z")),
        })
        .await
        .unwrap();
    admin
        .payouts
        .create_payout_run(ppb::CreatePayoutRunRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            period: "2024-03".into(),
            cutoff: Some(ts("2024-03-31T23:59:59Z")),
            minimum_amount: Some(types::Money { currency_code: "GBP".into(), amount: "1.00".into() }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let payouts = admin
        .payouts
        .list_payouts(ppb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert_eq!(payouts.len(), 4, "one payout per partner: {payouts:#?}");

    let minter = Minter::new(SECRET, accrue_kit::auth::DEFAULT_ISSUER, accrue_kit::auth::DEFAULT_AUDIENCE).unwrap();
    let as_partner = |partner: &str| {
        let token = minter
            .mint(
                &format!("partner:{partner}"),
                &[Role::Partner],
                std::slice::from_ref(&program),
                Some(partner.parse().unwrap()),
                Duration::from_secs(600),
            )
            .unwrap();
        Clients::connect(&stack.endpoints, &Credential::token(token)).unwrap()
    };

    let as_partner_credential = |partner: &str| {
        let token = minter
            .mint(
                &format!("partner:{partner}"),
                &[Role::Partner],
                std::slice::from_ref(&program),
                Some(partner.parse().unwrap()),
                Duration::from_secs(600),
            )
            .unwrap();
        Credential::token(token)
    };

    let everyone = [w.parent.clone(), w.seller.clone(), w.split_a.clone(), w.split_b.clone()];
    let mut checked = BTreeSet::new();
    for me in &everyone {
        let mut c = as_partner(me);
        let random = uuid::Uuid::now_v7().to_string();
        // Its subtree: the parent sees the seller below it, nobody sees up.
        let subtree: Vec<&String> = if *me == w.parent { vec![&w.parent, &w.seller] } else { vec![me] };
        let links_mine = *me != w.parent;

        // GetProgram: its own program.
        let got = c.hierarchy.get_program(hpb::GetProgramRequest { id: program.clone() }).await.unwrap();
        assert_eq!(got.into_inner().id, program);
        checked.insert("/accrue.hierarchy.v1.HierarchyService/GetProgram");

        // GetPartner and ListDownline: itself and its downline only.
        for other in &everyone {
            let get = c.hierarchy.get_partner(hpb::GetPartnerRequest { id: other.clone() }).await;
            let downline =
                c.hierarchy.list_downline(hpb::ListDownlineRequest { id: other.clone(), ..Default::default() }).await;
            if subtree.contains(&other) {
                assert_eq!(get.unwrap().into_inner().id, *other);
                downline.unwrap();
            } else {
                let get_random = c.hierarchy.get_partner(hpb::GetPartnerRequest { id: random.clone() }).await;
                same_as_missing("GetPartner", (get, other), (get_random, &random));
                let down_random =
                    c.hierarchy.list_downline(hpb::ListDownlineRequest { id: random.clone(), ..Default::default() });
                same_as_missing("ListDownline", (downline, other), (down_random.await, &random));
            }
        }
        let downline = c
            .hierarchy
            .list_downline(hpb::ListDownlineRequest { id: me.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let members = sorted(downline.members.iter().filter_map(|m| m.partner.as_ref()).map(|p| p.id.clone()));
        let expected = sorted(subtree.iter().filter(|id| **id != me).map(|id| id.to_string()));
        assert_eq!(members, expected, "downline of {me}");
        checked.insert("/accrue.hierarchy.v1.HierarchyService/GetPartner");
        checked.insert("/accrue.hierarchy.v1.HierarchyService/ListDownline");

        // GetLink and ListLinks: links it owns or shares in.
        let link = c.attribution.get_link(apb::GetLinkRequest { id: w.link_id.clone() }).await;
        let listed = c
            .attribution
            .list_links(apb::ListLinksRequest { program_id: program.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .links;
        // seed 000: split partners see the link only under "links I share
        // in" (split_partner_id = itself); the owner in its own list.
        let shared = c
            .attribution
            .list_links(apb::ListLinksRequest {
                program_id: program.clone(),
                split_partner_id: me.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .links;
        let owns = *me == w.seller;
        if links_mine {
            assert_eq!(link.unwrap().into_inner().id, w.link_id);
            let (own_list, shared_list) = if owns { (&listed, &shared) } else { (&shared, &listed) };
            assert_eq!(own_list.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), [w.link_id.as_str()]);
            assert!(shared_list.is_empty(), "{me}: {shared_list:#?}");
        } else {
            let random_link = c.attribution.get_link(apb::GetLinkRequest { id: random.clone() }).await;
            same_as_missing("GetLink", (link, &w.link_id), (random_link, &random));
            assert!(listed.is_empty() && shared.is_empty(), "{me} neither owns nor shares in the link: {listed:#?}");
        }
        checked.insert("/accrue.attribution.v1.AttributionService/GetLink");
        checked.insert("/accrue.attribution.v1.AttributionService/ListLinks");

        // GetLinkStats: a link it owns or shares in (its commission: its own
        // entries only); any other as a random id.
        let stats = c
            .attribution
            .get_link_stats(apb::GetLinkStatsRequest { link_id: w.link_id.clone(), ..Default::default() })
            .await;
        if links_mine {
            let stats = stats.unwrap().into_inner();
            assert_eq!(stats.sales, 1);
            let own: Vec<&lpb::Entry> = entries.iter().filter(|e| e.partner_id == *me).collect();
            let shown = stats.commission.first().and_then(|c| c.total.as_ref()).map(|m| m.amount.clone());
            let expected: rust_decimal::Decimal =
                own.iter().map(|e| e.amount.as_ref().unwrap().amount.parse::<rust_decimal::Decimal>().unwrap()).sum();
            assert_eq!(shown.unwrap().parse::<rust_decimal::Decimal>().unwrap(), expected, "{me}'s own entries");
        } else {
            let random_stats = c
                .attribution
                .get_link_stats(apb::GetLinkStatsRequest { link_id: random.clone(), ..Default::default() });
            same_as_missing("GetLinkStats", (stats, &w.link_id), (random_stats.await, &random));
        }
        checked.insert("/accrue.attribution.v1.AttributionService/GetLinkStats");

        // GetPartnerStats: itself only.
        for other in &everyone {
            let request = |partner: &str| apb::GetPartnerStatsRequest {
                program_id: program.clone(),
                partner_id: partner.to_string(),
                ..Default::default()
            };
            let got = c.attribution.get_partner_stats(request(other)).await;
            if other == me {
                assert_eq!(got.unwrap().into_inner().partner_id, *me);
            } else {
                let missing = c.attribution.get_partner_stats(request(&random)).await;
                same_as_missing("GetPartnerStats", (got, other), (missing, &random));
            }
        }
        checked.insert("/accrue.attribution.v1.AttributionService/GetPartnerStats");

        // GetOverrideBreakdown: its own overrides; another's as none.
        for other in &everyone {
            let page = c
                .ledger
                .get_override_breakdown(lpb::GetOverrideBreakdownRequest {
                    program_id: program.clone(),
                    partner_id: other.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let earned = other == me && *me == w.parent;
            assert_eq!(page.sources.len(), usize::from(earned), "{me} asking for {other}'s overrides: {page:#?}");
        }
        checked.insert("/accrue.ledger.v1.LedgerService/GetOverrideBreakdown");

        // GetEntry and ListEntries: its own entries only.
        for entry in &entries {
            let got = c.ledger.get_entry(lpb::GetEntryRequest { id: entry.id.clone() }).await;
            if entry.partner_id == *me {
                assert_eq!(got.unwrap().into_inner().id, entry.id);
            } else {
                let missing = c.ledger.get_entry(lpb::GetEntryRequest { id: random.clone() }).await;
                same_as_missing("GetEntry", (got, &entry.id), (missing, &random));
            }
        }
        let mine = c
            .ledger
            .list_entries(lpb::ListEntriesRequest { program_id: program.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let expected = sorted(entries.iter().filter(|e| e.partner_id == *me).map(|e| e.id.clone()));
        assert_eq!(sorted(mine.iter().map(|e| e.id.clone())), expected, "entries of {me}");
        for other in everyone.iter().filter(|other| *other != me) {
            let theirs = c
                .ledger
                .list_entries(lpb::ListEntriesRequest {
                    program_id: program.clone(),
                    partner_id: other.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(theirs.entries.is_empty() && theirs.next_page_token.is_empty(), "{me} listed {other}'s entries");
        }
        checked.insert("/accrue.ledger.v1.LedgerService/GetEntry");
        checked.insert("/accrue.ledger.v1.LedgerService/ListEntries");

        // GetEarningsSummary and GetBalances: itself, whatever it asks for.
        let others: Vec<String> = everyone.iter().filter(|other| *other != me).cloned().collect();
        for (asked, answered) in [
            (vec![], vec![me.clone()]),
            (others.clone(), vec![]),
            ([others.clone(), vec![me.clone()]].concat(), vec![me.clone()]),
        ] {
            let summaries = c
                .ledger
                .get_earnings_summary(lpb::GetEarningsSummaryRequest {
                    program_id: program.clone(),
                    partner_ids: asked.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .summaries;
            assert_eq!(sorted(summaries.iter().map(|s| s.partner_id.clone())), answered, "summary for {asked:?}");
            let balances = c
                .ledger
                .get_balances(lpb::GetBalancesRequest {
                    program_id: program.clone(),
                    partner_ids: asked.clone(),
                    currency_code: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .balances;
            assert_eq!(sorted(balances.iter().map(|b| b.partner_id.clone())), answered, "balances for {asked:?}");
        }
        checked.insert("/accrue.ledger.v1.LedgerService/GetEarningsSummary");
        checked.insert("/accrue.ledger.v1.LedgerService/GetBalances");

        // GetPayout and ListPayouts: its own payout only.
        for payout in &payouts {
            let got = c.payouts.get_payout(ppb::GetPayoutRequest { id: payout.id.clone() }).await;
            if payout.partner_id == *me {
                assert_eq!(got.unwrap().into_inner().id, payout.id);
            } else {
                let missing = c.payouts.get_payout(ppb::GetPayoutRequest { id: random.clone() }).await;
                same_as_missing("GetPayout", (got, &payout.id), (missing, &random));
            }
        }
        let listed = c
            .payouts
            .list_payouts(ppb::ListPayoutsRequest { program_id: program.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .payouts;
        assert_eq!(listed.iter().map(|p| p.partner_id.as_str()).collect::<Vec<_>>(), [me.as_str()]);
        for other in &others {
            let theirs = c
                .payouts
                .list_payouts(ppb::ListPayoutsRequest {
                    program_id: program.clone(),
                    partner_id: other.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(theirs.payouts.is_empty(), "{me} listed {other}'s payouts");
        }
        checked.insert("/accrue.payouts.v1.PayoutService/GetPayout");
        checked.insert("/accrue.payouts.v1.PayoutService/ListPayouts");

        // GetPartnerPayoutSummary: its own figures; another partner's is
        // answered as a partner without payouts.
        for partner in &everyone {
            let summary = c
                .payouts
                .get_partner_payout_summary(ppb::GetPartnerPayoutSummaryRequest {
                    program_id: program.clone(),
                    partner_id: partner.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if partner == me {
                assert_eq!(summary.summaries.len(), 1, "{me}'s own summary: {summary:#?}");
                assert_eq!(
                    summary.summaries[0].pending_approval.as_ref().map(|m| m.currency_code.as_str()),
                    Some("GBP")
                );
            } else {
                assert!(summary.summaries.is_empty(), "{me} saw {partner}'s payout summary: {summary:#?}");
            }
        }
        checked.insert("/accrue.payouts.v1.PayoutService/GetPartnerPayoutSummary");

        // GetPartnerPayoutSettings: its own; another partner's as a random id.
        let settings = |partner: &str| ppb::GetPartnerPayoutSettingsRequest {
            program_id: program.clone(),
            partner_id: partner.to_string(),
        };
        for partner in &everyone {
            let got = c.payouts.get_partner_payout_settings(settings(partner)).await;
            if partner == me {
                assert_eq!(got.unwrap().into_inner().partner_id, *me);
            } else {
                let missing = c.payouts.get_partner_payout_settings(settings(&random)).await;
                same_as_missing("GetPartnerPayoutSettings", (got, partner), (missing, &random));
            }
        }
        checked.insert("/accrue.payouts.v1.PayoutService/GetPartnerPayoutSettings");

        // ListEvents and WatchEvents, on every service's feed: only the events
        // of its own partner (the entries it earns, its payouts, its partner
        // record); nothing of sales or agreements.
        let own = as_partner_credential(me);
        let e = &stack.endpoints;
        for url in [&e.hierarchy, &e.attribution, &e.commission, &e.ledger, &e.payouts] {
            let (whole, seen) = stable_feeds(url, &stack.admin, &own, &program).await;
            let want: Vec<i64> = whole.iter().filter(|event| concerns(event, me)).map(|event| event.sequence).collect();
            assert_eq!(seen.iter().map(|event| event.sequence).collect::<Vec<_>>(), want, "{url} as {me}");
            if url == &e.ledger {
                assert!(!want.is_empty(), "{me} earns entries");
                let mut events: EventServiceClient<_> =
                    accrue_kit::client::connect(url, Duration::from_secs(30), &own).unwrap();
                let mut watch = events
                    .watch_events(epb::WatchEventsRequest { program_id: program.clone(), ..Default::default() })
                    .await
                    .unwrap()
                    .into_inner();
                for sequence in &want {
                    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
                    let event = next.unwrap().unwrap().unwrap().event.unwrap();
                    assert_eq!(event.sequence, *sequence, "{me}'s watch");
                }
            }
        }
        checked.insert("/accrue.events.v1.EventService/ListEvents");
        checked.insert("/accrue.events.v1.EventService/WatchEvents");

        // Raw sales stay out of reach.
        let sale_read = c.attribution.get_sale(apb::GetSaleRequest { id: sale.id.clone() }).await;
        assert_eq!(sale_read.unwrap_err().code(), Code::PermissionDenied);
    }

    // Every RPC the table opens to partners was checked above.
    let open: BTreeSet<&str> =
        TABLE.iter().filter(|(_, rule)| *rule == Rule::PartnerRead).map(|(path, _)| *path).collect();
    assert_eq!(checked, open, "check every RPC a partner token may call");

    // The parent's override line: its own amount, level and rate, not the
    // seller's sale (the admin sees both).
    let line = entries.iter().find(|e| e.partner_id == w.parent).unwrap();
    let whole = admin.ledger.get_entry(lpb::GetEntryRequest { id: line.id.clone() }).await.unwrap().into_inner();
    assert_eq!(whole.sale_id, sale.id);
    assert!(whole.breakdown.as_ref().unwrap().inputs.contains_key("basis_amount"));
    let shown = as_partner(&w.parent)
        .ledger
        .get_entry(lpb::GetEntryRequest { id: line.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.kind, types::EarningKind::Override as i32);
    assert_eq!((shown.amount.as_ref(), shown.level), (whole.amount.as_ref(), whole.level));
    assert_eq!(shown.source_partner_id, w.seller);
    assert!(shown.sale_id.is_empty() && shown.idempotency_key.is_empty(), "{shown:#?}");
    let breakdown = shown.breakdown.unwrap();
    assert!(breakdown.formula.is_empty() && breakdown.rounding.is_empty(), "{breakdown:#?}");
    assert!(!breakdown.inputs.contains_key("basis_amount"), "{breakdown:#?}");
    assert_eq!(breakdown.inputs.get("rate"), whole.breakdown.as_ref().unwrap().inputs.get("rate"));
    // The seller's own line keeps its sale.
    let direct = entries.iter().find(|e| e.partner_id == w.seller).unwrap();
    let own = as_partner(&w.seller)
        .ledger
        .get_entry(lpb::GetEntryRequest { id: direct.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.sale_id, sale.id);
    stack.shutdown().await.unwrap();
}
