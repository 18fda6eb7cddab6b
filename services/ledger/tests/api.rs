//! LedgerService against real Postgres over real gRPC, with the real
//! hierarchy service (program settings) — no mocks.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::str::FromStr;

use accrue_kit::client::AuthChannel;
use accrue_proto::hierarchy::v1 as hpb;
use accrue_proto::hierarchy::v1::hierarchy_service_client::HierarchyServiceClient;
use accrue_proto::ledger::v1 as pb;
use accrue_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use accrue_proto::types::v1 as types;
use accrue_testkit::TestServices;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

/// Seconds of 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200;
const DAY: i64 = 86_400;

struct Harness {
    ledger: LedgerServiceClient<AuthChannel>,
    hierarchy: HierarchyServiceClient<AuthChannel>,
    pool: PgPool,
    ledger_url: String,
    services: TestServices,
}

async fn start() -> Harness {
    let services = TestServices::new().await;
    let hierarchy_url = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let ledger_url = services
        .spawn::<accrue_ledger::Ledger>(accrue_ledger::Config {
            hierarchy_url: hierarchy_url.clone(),
            clear_matured_interval_seconds: 0,
        })
        .await;
    Harness {
        ledger: services.client(&ledger_url),
        hierarchy: services.client(&hierarchy_url),
        pool: services.pool::<accrue_ledger::Ledger>(),
        ledger_url,
        services,
    }
}

impl Harness {
    async fn program(&mut self, auto_approve: bool) -> String {
        self.hierarchy
            .create_program(hpb::CreateProgramRequest {
                program: Some(hpb::Program {
                    display_name: "Ledger test".into(),
                    default_currency: "GBP".into(),
                    auto_approve_cleared: auto_approve,
                    ..Default::default()
                }),
                request_id: Uuid::new_v4().to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    /// A partner of `program`: the ledger accepts lines only for a
    /// program's own partners.
    async fn partner(&mut self, program: &str) -> Uuid {
        let id = self
            .hierarchy
            .create_partner(hpb::CreatePartnerRequest {
                program_id: program.into(),
                partner: Some(hpb::Partner { display_name: "Ledger partner".into(), ..Default::default() }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        Uuid::parse_str(&id).unwrap()
    }

    /// `N` partners of `program`.
    async fn partners<const N: usize>(&mut self, program: &str) -> [Uuid; N] {
        let mut partners = [Uuid::nil(); N];
        for partner in &mut partners {
            *partner = self.partner(program).await;
        }
        partners
    }

    async fn post(&mut self, program: &str, postings: Vec<pb::SalePosting>) -> Vec<pb::PostingResult> {
        self.ledger
            .post_entries(pb::PostEntriesRequest { program_id: program.into(), postings })
            .await
            .unwrap()
            .into_inner()
            .results
    }

    async fn entry(&mut self, id: &str) -> pb::Entry {
        self.ledger.get_entry(pb::GetEntryRequest { id: id.into() }).await.unwrap().into_inner()
    }

    async fn status(&mut self, id: &str) -> pb::EntryStatus {
        self.entry(id).await.status()
    }

    async fn transition(&mut self, program: &str, ids: &[&str], to: pb::EntryStatus) -> Result<i64, tonic::Status> {
        self.ledger
            .transition_entries(pb::TransitionEntriesRequest {
                program_id: program.into(),
                entry_ids: ids.iter().map(|id| id.to_string()).collect(),
                to_status: to as i32,
                reason: "test".into(),
            })
            .await
            .map(|r| r.into_inner().transitioned_count)
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn clear(&mut self, program: &str, as_of: i64) -> Result<pb::ClearMaturedResponse, tonic::Status> {
        self.ledger
            .clear_matured(pb::ClearMaturedRequest { program_id: program.into(), as_of: ts(as_of) })
            .await
            .map(|r| r.into_inner())
    }
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn gbp(amount: &str) -> Option<types::Money> {
    Some(types::Money { currency_code: "GBP".into(), amount: amount.into() })
}

fn line(partner: Uuid, kind: types::EarningKind, amount: &str, clears_at: i64) -> pb::EntryInput {
    pb::EntryInput {
        partner_id: partner.to_string(),
        kind: kind as i32,
        amount: gbp(amount),
        level: if kind == types::EarningKind::Override { 1 } else { 0 },
        source_partner_id: partner.to_string(),
        occurred_at: ts(T0),
        clears_at: ts(clears_at),
        breakdown: Some(types::CommissionBreakdown {
            model: "PERCENTAGE".into(),
            formula: format!("x × 0.10 = {amount}"),
            inputs: [("rate", "0.10"), ("amount", "100.00"), ("basis", "DEAL_AMOUNT")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rule: "level 1".into(),
            agreement_version_id: Uuid::from_u128(9).to_string(),
            rounding: "HALF_AWAY_FROM_ZERO to 2 dp".into(),
            note: String::new(),
        }),
    }
}

fn posting(key: &str, lines: Vec<pb::EntryInput>) -> pb::SalePosting {
    pb::SalePosting { idempotency_key: key.into(), sale_id: format!("sale-{key}"), lines }
}

fn amount(money: &Option<types::Money>) -> Decimal {
    Decimal::from_str(&money.as_ref().unwrap().amount).unwrap()
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// DESIGN §5: `entry_states` is a projection of the append-only
/// `entry_status_events` log (plus the entry's own columns). Recomputed from
/// the log it must equal what is stored — checked at the end of every test,
/// so no RPC path can drift the two apart. The log is read as GetEntry reads
/// it (`entry_history`: the stored events, plus the creation event of a
/// posted line, which its posting records once for all its lines), and that
/// history must open with exactly one creation event at the entry's creation.
async fn assert_projection_matches_log(pool: &PgPool) {
    let drift: Vec<(Option<Uuid>, Option<String>, Option<String>)> = sqlx::query_as(
        "WITH latest AS (
             SELECT DISTINCT ON (entry_id) entry_id, to_status FROM entry_history ORDER BY entry_id, id DESC
         ), recomputed AS (
             SELECT e.id AS entry_id, e.program_id, e.partner_id, e.currency, l.to_status AS status
             FROM entries e LEFT JOIN latest l ON l.entry_id = e.id
         )
         SELECT coalesce(r.entry_id, s.entry_id), r.status, s.status
         FROM recomputed r FULL JOIN entry_states s ON s.entry_id = r.entry_id
         WHERE r.entry_id IS NULL OR s.entry_id IS NULL
            OR r.status IS DISTINCT FROM s.status
            OR (r.program_id, r.partner_id, r.currency) IS DISTINCT FROM (s.program_id, s.partner_id, s.currency)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(drift.is_empty(), "entry_states differs from the status event log: (entry, from log, stored) {drift:?}");
    let bad_creations: Vec<(Uuid, i64, Option<String>, Option<bool>)> = sqlx::query_as(
        "WITH first AS (
             SELECT DISTINCT ON (entry_id) entry_id, from_status, created_at FROM entry_history ORDER BY entry_id, id
         )
         SELECT e.id,
                (SELECT COUNT(*) FROM entry_history h WHERE h.entry_id = e.id AND h.from_status = 'UNSPECIFIED'),
                f.from_status, f.created_at = e.created_at
         FROM entries e LEFT JOIN first f ON f.entry_id = e.id
         WHERE (SELECT COUNT(*) FROM entry_history h WHERE h.entry_id = e.id AND h.from_status = 'UNSPECIFIED') <> 1
            OR f.from_status IS DISTINCT FROM 'UNSPECIFIED' OR f.created_at IS DISTINCT FROM e.created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        bad_creations.is_empty(),
        "entries whose history does not open with exactly one creation event at their creation time: \
         (entry, creation events, first from, first at creation) {bad_creations:?}"
    );
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM entry_status_events v WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.id = v.entry_id)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "status events for entries that do not exist");
    assert_balances_match_entries(pool).await;
}

/// DESIGN §5 / issue 9 item 5: the balance projection equals, per (program,
/// partner, currency), the signed sums over entries by their current status
/// and reservation, and clawed_back = Σ non-VOIDED debits.
async fn assert_balances_match_entries(pool: &PgPool) {
    type Drift = (Uuid, Uuid, String, Vec<Decimal>, Vec<Decimal>);
    let drift: Vec<Drift> = sqlx::query_as(
        "WITH actual AS (
             SELECT e.program_id, e.partner_id, e.currency,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'PENDING'), 0) AS pending,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'CLEARED'), 0) AS cleared,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'APPROVED' AND r.entry_id IS NULL), 0) AS approved,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'APPROVED' AND r.entry_id IS NOT NULL), 0) AS reserved,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'PAID'), 0) AS paid,
                    COALESCE(sum(v) FILTER (WHERE s.status = 'DISPUTED'), 0) AS disputed,
                    COALESCE(sum(e.amount) FILTER (WHERE e.entry_type = 'DEBIT' AND s.status <> 'VOIDED'), 0)
                        AS clawed_back
             FROM entries e JOIN entry_states s ON s.entry_id = e.id
             LEFT JOIN payout_reservations r ON r.entry_id = e.id
             CROSS JOIN LATERAL (SELECT CASE WHEN e.entry_type = 'CREDIT' THEN e.amount ELSE -e.amount END AS v) x
             GROUP BY e.program_id, e.partner_id, e.currency
         ), both_sides AS (
             SELECT coalesce(a.program_id, b.program_id) AS program_id, coalesce(a.partner_id, b.partner_id) AS partner_id,
                    coalesce(a.currency, b.currency) AS currency,
                    ARRAY[coalesce(a.pending, 0), coalesce(a.cleared, 0), coalesce(a.approved, 0),
                          coalesce(a.reserved, 0), coalesce(a.paid, 0), coalesce(a.disputed, 0),
                          coalesce(a.clawed_back, 0)] AS from_entries,
                    ARRAY[coalesce(b.pending, 0), coalesce(b.cleared, 0), coalesce(b.approved, 0),
                          coalesce(b.reserved, 0), coalesce(b.paid, 0), coalesce(b.disputed, 0),
                          coalesce(b.clawed_back, 0)] AS projected
             FROM actual a FULL JOIN balances b
               ON (a.program_id, a.partner_id, a.currency) = (b.program_id, b.partner_id, b.currency)
         )
         SELECT program_id, partner_id, currency, from_entries, projected FROM both_sides
         WHERE from_entries <> projected",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        drift.is_empty(),
        "balances differ from entries (program, partner, currency, [pending, cleared, approved, reserved, paid, \
         disputed, clawed_back] from entries, projected): {drift:?}"
    );
}

#[tokio::test]
async fn post_entries_is_idempotent_per_key_and_body() {
    let mut h = start().await;
    let program = h.program(false).await;
    let [a, b] = h.partners(&program).await;
    let direct = types::EarningKind::Direct;
    let good_1 = posting("k1", vec![line(a, direct, "10.00", T0), line(b, types::EarningKind::Override, "1.50", T0)]);
    let mut bad_line = line(a, direct, "1.001", T0);
    bad_line.partner_id = "not-a-uuid".into();
    let bad = posting("k2", vec![line(a, direct, "1.00", T0), bad_line]);
    let good_3 = posting("k3", vec![line(b, types::EarningKind::Split, "2.25", T0)]);
    let empty = posting("k4", vec![]);

    let results = h.post(&program, vec![good_1.clone(), bad.clone(), good_3.clone(), empty.clone()]).await;
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].idempotency_key, "k1");
    assert_eq!(results[0].entry_ids.len(), 2);
    assert!(!results[0].replayed && results[0].failure.is_none());
    let failure = results[1].failure.as_ref().expect("invalid posting fails alone");
    assert_eq!(failure.code, "INVALID_ARGUMENT");
    assert!(failure.message.contains("postings[1].lines[1].partner_id"), "{}", failure.message);
    assert!(failure.message.contains("postings[1].lines[1].amount.amount"), "{}", failure.message);
    assert!(results[1].entry_ids.is_empty());
    assert_eq!(results[2].entry_ids.len(), 1);
    assert!(results[3].failure.is_none() && results[3].entry_ids.is_empty());
    assert_eq!(h.count("entries").await, 3);
    // Each line's creation event is its posting's (the actor is stored once
    // per posting), not a stored row of its own.
    assert_eq!(h.count("entry_status_events").await, 0);
    assert_eq!(h.count("entry_history").await, 3);
    assert_eq!(h.count("entry_states").await, 3);
    assert_eq!(h.count("postings").await, 3);

    // The stored entry carries everything that was posted, and its creation event.
    let entry = h.entry(&results[0].entry_ids[1]).await;
    assert_eq!(entry.partner_id, b.to_string());
    assert_eq!(entry.program_id, program);
    assert_eq!(entry.sale_id, "sale-k1");
    assert_eq!(entry.kind(), types::EarningKind::Override);
    assert_eq!(entry.entry_type(), pb::EntryType::Credit);
    assert_eq!(entry.amount, gbp("1.50"));
    assert_eq!(entry.level, 1);
    assert_eq!(entry.status(), pb::EntryStatus::Pending);
    assert_eq!(entry.idempotency_key, "k1");
    assert_eq!(entry.breakdown, good_1.lines[1].breakdown);
    assert_eq!(entry.history.len(), 1);
    assert_eq!(entry.history[0].from_status(), pb::EntryStatus::Unspecified);
    assert_eq!(entry.history[0].to_status(), pb::EntryStatus::Pending);
    assert_eq!(entry.history[0].actor, "test-admin");
    assert_eq!(entry.history[0].reason, "posted");
    assert_eq!(entry.history[0].event_time, entry.create_time);

    // Same key, same body → the stored result, nothing new written. A repeat of
    // the key inside one request is a replay of its first occurrence.
    let replay = h.post(&program, vec![good_3.clone(), good_1.clone(), good_1.clone()]).await;
    assert!(replay.iter().all(|r| r.replayed && r.failure.is_none()));
    assert_eq!(replay[0].entry_ids, results[2].entry_ids);
    assert_eq!(replay[1].entry_ids, results[0].entry_ids);
    assert_eq!(replay[2].entry_ids, results[0].entry_ids);
    assert_eq!(h.count("entries").await, 3);
    assert_eq!(h.count("entry_status_events").await, 0);
    assert_eq!(h.count("entry_history").await, 3);

    // Same key, different body → ALREADY_EXISTS, nothing written; the others post.
    let mut changed = good_1.clone();
    changed.lines[0].amount = gbp("10.01");
    let mut changed_inputs = good_3.clone();
    changed_inputs.lines[0].breakdown.as_mut().unwrap().inputs.insert("rate".into(), "0.11".into());
    let fresh = posting("k5", vec![line(a, direct, "3.00", T0)]);
    let mixed = h.post(&program, vec![changed, fresh.clone(), changed_inputs, posting("k5", vec![])]).await;
    for index in [0, 2, 3] {
        let failure = mixed[index].failure.as_ref().unwrap();
        assert_eq!(failure.code, "ALREADY_EXISTS", "posting {index}");
        assert_eq!(failure.reason, "IDEMPOTENCY_KEY_REUSED");
        assert!(mixed[index].entry_ids.is_empty());
    }
    assert!(mixed[1].failure.is_none() && !mixed[1].replayed && mixed[1].entry_ids.len() == 1);
    assert_eq!(h.count("entries").await, 4);
    assert_eq!(h.count("postings").await, 4);
    assert_eq!(h.entry(&results[0].entry_ids[0]).await.amount, gbp("10.00"));

    // The same key in another program (with that program's own partners)
    // is independent.
    let other = h.program(false).await;
    let [c, d] = h.partners(&other).await;
    let same_key = posting("k1", vec![line(c, direct, "10.00", T0), line(d, types::EarningKind::Override, "1.50", T0)]);
    let elsewhere = h.post(&other, vec![same_key]).await;
    assert!(!elsewhere[0].replayed && elsewhere[0].entry_ids.len() == 2);

    // Request-level mistakes reject the whole call and write nothing.
    let error = h
        .ledger
        .post_entries(pb::PostEntriesRequest { program_id: "nope".into(), postings: vec![fresh.clone()] })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let too_many = (0..1001).map(|i| posting(&format!("many-{i}"), vec![])).collect();
    let error = h
        .ledger
        .post_entries(pb::PostEntriesRequest { program_id: program.clone(), postings: too_many })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(h.count("postings").await, 5);

    // A negative amount is a DEBIT of its absolute value.
    let debit = h.post(&program, vec![posting("k6", vec![line(a, direct, "-4.00", T0)])]).await;
    let entry = h.entry(&debit[0].entry_ids[0]).await;
    assert_eq!(entry.entry_type(), pb::EntryType::Debit);
    assert_eq!(entry.amount, gbp("4.00"));

    // Unknown / malformed GetEntry ids.
    let error = h.ledger.get_entry(pb::GetEntryRequest { id: Uuid::new_v4().to_string() }).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = h.ledger.get_entry(pb::GetEntryRequest { id: "x".into() }).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn list_entries_filters_and_pages_oldest_first() {
    let mut h = start().await;
    let program = h.program(false).await;
    let [a, b] = h.partners(&program).await;
    let direct = types::EarningKind::Direct;
    let mut all_ids = Vec::new();
    for i in 0..3 {
        let results = h
            .post(
                &program,
                vec![posting(
                    &format!("s{i}"),
                    vec![line(a, direct, "1.00", T0), line(b, types::EarningKind::Override, "0.10", T0)],
                )],
            )
            .await;
        all_ids.extend(results[0].entry_ids.clone());
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .ledger
            .list_entries(pb::ListEntriesRequest {
                program_id: program.clone(),
                page_size: 4,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 4);
        seen.extend(page.entries.iter().map(|e| e.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, all_ids, "every entry once, oldest first");

    let only_b = h
        .ledger
        .list_entries(pb::ListEntriesRequest {
            program_id: program.clone(),
            partner_id: b.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_b.entries.len(), 3);
    assert!(only_b.entries.iter().all(|e| e.partner_id == b.to_string()));
    let by_sale_and_kind = h
        .ledger
        .list_entries(pb::ListEntriesRequest {
            program_id: program.clone(),
            sale_id: "sale-s1".into(),
            kind: direct as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_sale_and_kind.entries.len(), 1);
    assert_eq!(by_sale_and_kind.entries[0].id, all_ids[2]);

    h.transition(&program, &[&all_ids[0]], pb::EntryStatus::Voided).await.unwrap();
    let voided = h
        .ledger
        .list_entries(pb::ListEntriesRequest {
            program_id: program.clone(),
            status: pb::EntryStatus::Voided as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![all_ids[0].clone()]);

    let error = h
        .ledger
        .list_entries(pb::ListEntriesRequest {
            program_id: program.clone(),
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn entries_and_events_are_immutable() {
    let mut h = start().await;
    let h_program = h.program(false).await;
    let partner = h.partner(&h_program).await;
    let results =
        h.post(&h_program, vec![posting("imm", vec![line(partner, types::EarningKind::Direct, "5.00", T0)])]).await;
    let id = Uuid::parse_str(&results[0].entry_ids[0]).unwrap();
    // A posted line's creation event is not stored; a status change is, so
    // the log has a row of this entry to refuse changing.
    h.transition(&h_program, &[results[0].entry_ids[0].as_str()], pb::EntryStatus::Voided).await.unwrap();
    for statement in [
        "UPDATE entries SET amount = 999 WHERE id = $1",
        "DELETE FROM entries WHERE id = $1",
        "UPDATE entry_status_events SET actor = 'mallory' WHERE entry_id = $1",
        "DELETE FROM entry_status_events WHERE entry_id = $1",
        "UPDATE postings SET request_hash = '\\x00' WHERE $1::uuid = ANY(entry_ids)",
        // The creation event's actor.
        "UPDATE postings SET actor = 'mallory' WHERE $1::uuid = ANY(entry_ids)",
    ] {
        let error = sqlx::query(statement).bind(id).execute(&h.pool).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    assert!(sqlx::query("TRUNCATE entry_status_events").execute(&h.pool).await.is_err());
    let entry = h.entry(&id.to_string()).await;
    assert_eq!(entry.amount, gbp("5.00"));
    assert_eq!(entry.history.len(), 2);
    assert!(entry.history.iter().all(|event| event.actor == "test-admin"), "{entry:#?}");
    assert_projection_matches_log(&h.pool).await;
}

/// Migration 0010 moved a posted line's creation event onto its posting.
/// Lines posted before it have a posting without an actor and a stored
/// creation event: GetEntry shows that event once, as before. A clawback
/// debit stores its own creation event and takes none from a posting whose
/// key its reversal key happens to equal.
#[tokio::test]
async fn creation_events_come_from_the_log_or_the_posting_never_both() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let old = Uuid::now_v7();
    // The rows PostEntries wrote before 0010, balances included.
    sqlx::query(
        "WITH p AS (
             INSERT INTO postings (program_id, idempotency_key, sale_id, request_hash, entry_ids)
             VALUES ($1, 'old', 'sale-old', '\\x01', ARRAY[$2::uuid])
         ), e AS (
             INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, level,
                                  occurred_at, clears_at, idempotency_key, line_index)
             VALUES ($2, $1, $3, 'sale-old', 'DIRECT', 'CREDIT', 'GBP', 7.00, 0, to_timestamp($4), to_timestamp($5),
                     'old', 0)
         ), ev AS (
             INSERT INTO entry_status_events (entry_id, from_status, to_status, actor, reason)
             VALUES ($2, 'UNSPECIFIED', 'PENDING', 'old-admin', 'posted')
         ), st AS (
             INSERT INTO entry_states (entry_id, program_id, partner_id, currency, status, clears_at)
             VALUES ($2, $1, $3, 'GBP', 'PENDING', to_timestamp($5))
         )
         SELECT apply_posted_balances($1, ARRAY[$3::uuid], ARRAY['GBP'], ARRAY['CREDIT'], ARRAY[7.00::numeric])",
    )
    .bind(Uuid::parse_str(&program).unwrap())
    .bind(old)
    .bind(partner)
    .bind(T0 as f64)
    .bind((T0 + DAY) as f64)
    .execute(&h.pool)
    .await
    .unwrap();
    let entry = h.entry(&old.to_string()).await;
    assert_eq!(entry.status(), pb::EntryStatus::Pending);
    assert_eq!(entry.history.len(), 1, "{entry:#?}");
    assert_eq!(entry.history[0].from_status(), pb::EntryStatus::Unspecified);
    assert_eq!(entry.history[0].to_status(), pb::EntryStatus::Pending);
    assert_eq!((entry.history[0].actor.as_str(), entry.history[0].reason.as_str()), ("old-admin", "posted"));
    assert_eq!(entry.history[0].event_time, entry.create_time);
    h.transition(&program, &[old.to_string().as_str()], pb::EntryStatus::Voided).await.unwrap();
    let steps: Vec<_> =
        h.entry(&old.to_string()).await.history.iter().map(|e| (e.from_status(), e.to_status())).collect();
    assert_eq!(
        steps,
        [(pb::EntryStatus::Unspecified, pb::EntryStatus::Pending), (pb::EntryStatus::Pending, pb::EntryStatus::Voided)]
    );

    // A reversal keyed like a posting: the debit's history is its own.
    h.post(&program, vec![posting("twin", vec![line(partner, types::EarningKind::Direct, "10.00", T0 + DAY)])]).await;
    let reversed = h.reverse(reverse_request(&program, "sale-twin", "twin", "100.00", "50.00")).await.unwrap();
    let debit = h.entry(&reversed.debits[0].id).await;
    assert_eq!(debit.idempotency_key, "twin");
    let creations: Vec<_> = debit
        .history
        .iter()
        .filter(|e| e.from_status() == pb::EntryStatus::Unspecified)
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!(creations, ["clawback of refund ".to_string() + &reversed.debits[0].refund_id + ": customer refund"]);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn transitions_follow_the_state_machine_all_or_nothing() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let direct = types::EarningKind::Direct;
    let results = h
        .post(
            &program,
            vec![posting(
                "t",
                vec![
                    line(partner, direct, "1.00", T0),
                    line(partner, direct, "2.00", T0),
                    line(partner, direct, "3.00", T0),
                ],
            )],
        )
        .await;
    let ids: Vec<&str> = results[0].entry_ids.iter().map(String::as_str).collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);

    assert_eq!(h.transition(&program, &[b], pb::EntryStatus::Cleared).await.unwrap(), 1);
    // b CLEARED → APPROVED is legal, a PENDING → APPROVED is not: nothing changes.
    let error = h.transition(&program, &[b, a], pb::EntryStatus::Approved).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "INVALID_TRANSITION");
    assert!(error.message().contains(a), "{}", error.message());
    assert_eq!(h.status(a).await, pb::EntryStatus::Pending);
    assert_eq!(h.status(b).await, pb::EntryStatus::Cleared);
    assert_eq!(h.entry(b).await.history.len(), 2);

    // Unknown entry → NOT_FOUND, nothing changes; another program's entry is unknown too.
    let error = h.transition(&program, &[c, &Uuid::new_v4().to_string()], pb::EntryStatus::Voided).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(h.status(c).await, pb::EntryStatus::Pending);
    let other = h.program(false).await;
    assert_eq!(h.transition(&other, &[c], pb::EntryStatus::Voided).await.unwrap_err().code(), Code::NotFound);

    // Void twice: the second run skips what is already VOIDED.
    assert_eq!(h.transition(&program, &[a, c], pb::EntryStatus::Voided).await.unwrap(), 2);
    assert_eq!(h.transition(&program, &[a, c], pb::EntryStatus::Voided).await.unwrap(), 0);
    let entry = h.entry(a).await;
    assert_eq!(entry.status(), pb::EntryStatus::Voided);
    assert_eq!(entry.history.len(), 2);
    assert_eq!(entry.history[1].from_status(), pb::EntryStatus::Pending);
    assert_eq!(entry.history[1].to_status(), pb::EntryStatus::Voided);
    assert_eq!(entry.history[1].actor, "test-admin");
    assert_eq!(entry.history[1].reason, "test");

    // VOIDED is terminal.
    let error = h.transition(&program, &[a], pb::EntryStatus::Cleared).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);

    // The full happy path, then dispute and resolve.
    for to in [pb::EntryStatus::Approved, pb::EntryStatus::Paid, pb::EntryStatus::Disputed, pb::EntryStatus::Cleared] {
        assert_eq!(h.transition(&program, &[b], to).await.unwrap(), 1, "{to:?}");
    }
    assert_eq!(h.entry(b).await.history.len(), 6);

    // Bad input changes nothing.
    let error = h
        .ledger
        .transition_entries(pb::TransitionEntriesRequest {
            program_id: program.clone(),
            entry_ids: vec![b.into(), "x".into()],
            to_status: 0,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(h.status(b).await, pb::EntryStatus::Cleared);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn clear_matured_clears_by_as_of_and_auto_approves_per_program() {
    let mut h = start().await;
    let manual = h.program(false).await;
    let auto = h.program(true).await;
    // A partner belongs to one program: one in each.
    let (in_manual, in_auto) = (h.partner(&manual).await, h.partner(&auto).await);
    let direct = types::EarningKind::Direct;
    let early_late = |partner: Uuid| {
        posting("c", vec![line(partner, direct, "1.00", T0 + DAY), line(partner, direct, "2.00", T0 + 30 * DAY)])
    };
    let manual_ids = h.post(&manual, vec![early_late(in_manual)]).await[0].entry_ids.clone();
    let auto_ids = h.post(&auto, vec![early_late(in_auto)]).await[0].entry_ids.clone();

    let response = h.clear(&manual, T0 + 2 * DAY).await.unwrap();
    assert_eq!((response.cleared_count, response.approved_count), (1, 0));
    assert_eq!(h.status(&manual_ids[0]).await, pb::EntryStatus::Cleared);
    assert_eq!(h.status(&manual_ids[1]).await, pb::EntryStatus::Pending);
    // The other program's entries are untouched.
    assert_eq!(h.status(&auto_ids[0]).await, pb::EntryStatus::Pending);
    // Running again clears nothing new; clears_at == as_of clears.
    assert_eq!(h.clear(&manual, T0 + 2 * DAY).await.unwrap().cleared_count, 0);
    assert_eq!(h.clear(&manual, T0 + 30 * DAY).await.unwrap().cleared_count, 1);

    let response = h.clear(&auto, T0 + 2 * DAY).await.unwrap();
    assert_eq!((response.cleared_count, response.approved_count), (1, 1));
    let entry = h.entry(&auto_ids[0]).await;
    assert_eq!(entry.status(), pb::EntryStatus::Approved);
    let steps: Vec<_> = entry.history.iter().map(|e| (e.from_status(), e.to_status(), e.actor.clone())).collect();
    assert_eq!(
        steps,
        vec![
            (pb::EntryStatus::Unspecified, pb::EntryStatus::Pending, "test-admin".to_string()),
            (pb::EntryStatus::Pending, pb::EntryStatus::Cleared, "test-admin".to_string()),
            (pb::EntryStatus::Cleared, pb::EntryStatus::Approved, "test-admin".to_string()),
        ]
    );
    assert_eq!(h.status(&auto_ids[1]).await, pb::EntryStatus::Pending);

    // Without as_of it uses now (both entries are long past clearance).
    let response = h
        .ledger
        .clear_matured(pb::ClearMaturedRequest { program_id: auto.clone(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.cleared_count, response.approved_count), (1, 1));

    let error = h.clear(&Uuid::new_v4().to_string(), T0).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn earnings_summary_sums_lines_by_kind_excluding_voided() {
    let mut h = start().await;
    let program = h.program(false).await;
    let mut partners: [Uuid; 3] = h.partners(&program).await;
    partners.sort();
    let [a, b, c] = partners;
    use types::EarningKind::{Direct, Margin, Override, Split};
    let lines = vec![
        (a, Direct, "10.00"),
        (a, Direct, "5.55"),
        (a, Split, "2.10"),
        (a, Override, "0.99"),
        (a, Margin, "1.01"),
        (a, Direct, "-3.00"),
        (b, Override, "4.44"),
        (b, Override, "0.01"),
        (c, Margin, "7.00"),
    ];
    let mut postings = Vec::new();
    for (i, (partner, kind, amt)) in lines.iter().enumerate() {
        postings.push(posting(&format!("sum{i}"), vec![line(*partner, *kind, amt, T0)]));
    }
    let voided = posting("void-me", vec![line(a, Direct, "100.00", T0), line(c, Margin, "50.00", T0)]);
    postings.push(voided);
    let results = h.post(&program, postings).await;
    let voided_ids: Vec<&str> = results.last().unwrap().entry_ids.iter().map(String::as_str).collect();
    h.transition(&program, &voided_ids, pb::EntryStatus::Voided).await.unwrap();
    // A USD line is its own (partner, currency) row.
    let mut usd = line(a, Direct, "1.00", T0);
    usd.amount = Some(types::Money { currency_code: "USD".into(), amount: "1.00".into() });
    h.post(&program, vec![posting("usd", vec![usd])]).await;

    let summaries = h
        .ledger
        .get_earnings_summary(pb::GetEarningsSummaryRequest {
            program_id: program.clone(),
            partner_ids: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    let keys: Vec<_> = summaries.iter().map(|s| (s.partner_id.clone(), s.currency_code.clone())).collect();
    assert_eq!(
        keys,
        vec![
            (a.to_string(), "GBP".to_string()),
            (a.to_string(), "USD".to_string()),
            (b.to_string(), "GBP".to_string()),
            (c.to_string(), "GBP".to_string()),
        ]
    );
    for summary in summaries.iter().filter(|s| s.currency_code == "GBP") {
        let partner = Uuid::parse_str(&summary.partner_id).unwrap();
        // Kinds are what CREDITs earned; DEBITs are the clawback; total is the net.
        let mut earned: BTreeMap<i32, Decimal> = BTreeMap::new();
        let mut clawed: BTreeMap<i32, Decimal> = BTreeMap::new();
        for (p, kind, amt) in &lines {
            if *p == partner {
                let value = Decimal::from_str(amt).unwrap();
                let bucket = if value.is_sign_negative() { &mut clawed } else { &mut earned };
                *bucket.entry(*kind as i32).or_default() += value.abs();
            }
        }
        let get = |kind: types::EarningKind| earned.get(&(kind as i32)).copied().unwrap_or_default();
        let back = |kind: types::EarningKind| clawed.get(&(kind as i32)).copied().unwrap_or_default();
        assert_eq!(amount(&summary.direct), get(Direct), "{partner} direct");
        assert_eq!(amount(&summary.split), get(Split));
        assert_eq!(amount(&summary.r#override), get(Override));
        assert_eq!(amount(&summary.margin), get(Margin));
        assert_eq!(amount(&summary.clawback_direct), back(Direct));
        assert_eq!(amount(&summary.clawback_split), back(Split));
        assert_eq!(amount(&summary.clawback_override), back(Override));
        assert_eq!(amount(&summary.clawback_margin), back(Margin));
        assert_eq!(amount(&summary.clawback), clawed.values().copied().sum::<Decimal>());
        assert_eq!(
            amount(&summary.total),
            earned.values().copied().sum::<Decimal>() - clawed.values().copied().sum::<Decimal>()
        );
        assert!(summary.total.as_ref().unwrap().amount.contains('.'), "minor units kept");
    }
    assert_eq!(amount(&summaries[0].total), dec!(16.65));
    assert_eq!(amount(&summaries[0].direct), dec!(15.55));
    assert_eq!(summaries[0].direct.as_ref().unwrap().amount, "15.55");
    assert_eq!(summaries[0].clawback, gbp("3.00"));

    let only_b = h
        .ledger
        .get_earnings_summary(pb::GetEarningsSummaryRequest {
            program_id: program.clone(),
            partner_ids: vec![b.to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].total, gbp("4.45"));
    assert_eq!(only_b[0].direct, gbp("0.00"));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn reserve_for_payout_respects_thresholds_idempotency_and_exclusivity() {
    let mut h = start().await;
    let program = h.program(true).await;
    let mut partners: [Uuid; 3] = h.partners(&program).await;
    partners.sort();
    let [a, b, c] = partners;
    let direct = types::EarningKind::Direct;
    let results = h
        .post(
            &program,
            vec![
                posting("a1", vec![line(a, direct, "20.00", T0 + DAY), line(a, direct, "15.00", T0 + DAY)]),
                posting("a2", vec![line(a, direct, "-5.00", T0 + DAY)]),
                // Clears after the cutoff: not payable yet.
                posting("a3", vec![line(a, direct, "100.00", T0 + 60 * DAY)]),
                posting("b1", vec![line(b, direct, "5.00", T0 + DAY)]),
                // Still pending (never cleared): not payable.
                posting("c1", vec![line(c, direct, "50.00", T0 + 90 * DAY)]),
            ],
        )
        .await;
    // Auto-approve program: clearing approves.
    let cleared = h.clear(&program, T0 + 70 * DAY).await.unwrap();
    assert_eq!(cleared.approved_count, 5);
    let cutoff = ts(T0 + 30 * DAY);
    let (pay_a, pay_b, pay_c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let reservation = |partner: Uuid, payout: Uuid| pb::PartnerReservation {
        partner_id: partner.to_string(),
        payout_id: payout.to_string(),
        minimum_amount: gbp("10.00"),
    };
    let request = pb::ReserveForPayoutRequest {
        program_id: program.clone(),
        currency_code: "GBP".into(),
        cutoff,
        // Request order is kept in the response, whatever the lock order.
        reservations: vec![reservation(c, pay_c), reservation(a, pay_a), reservation(b, pay_b)],
    };
    let first = h.ledger.reserve_for_payout(request.clone()).await.unwrap().into_inner().results;
    assert_eq!(first[0].partner_id, c.to_string());
    assert!(!first[0].reserved);
    assert_eq!(first[0].amount, gbp("0.00"));
    assert_eq!(first[1].partner_id, a.to_string());
    assert!(first[1].reserved);
    assert_eq!(first[1].amount, gbp("30.00"), "20 + 15 − 5; the 100 clears after the cutoff");
    assert_eq!(first[1].entry_count, 3);
    assert!(!first[2].reserved, "5.00 is below the 10.00 minimum");
    assert_eq!(first[2].amount, gbp("5.00"));
    assert_eq!(first[2].entry_count, 0);
    assert_eq!(h.count("payout_reservations").await, 3);
    let reserved_entry = &results[0].entry_ids[0];
    assert_eq!(h.entry(reserved_entry).await.payout_id, pay_a.to_string());

    // Same payout ids again: the stored reservation, nothing new.
    let again = h.ledger.reserve_for_payout(request.clone()).await.unwrap().into_inner().results;
    assert_eq!(again, first);
    assert_eq!(h.count("payout_reservations").await, 3);

    // A new payout for A finds nothing left (an entry is in at most one payout).
    let next = h
        .ledger
        .reserve_for_payout(pb::ReserveForPayoutRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            cutoff: ts(T0 + 30 * DAY),
            reservations: vec![pb::PartnerReservation {
                partner_id: a.to_string(),
                payout_id: Uuid::new_v4().to_string(),
                minimum_amount: None,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(!next[0].reserved);
    assert_eq!(next[0].amount, gbp("0.00"));
    // A later cutoff picks up only the entry not yet reserved.
    let later = h
        .ledger
        .reserve_for_payout(pb::ReserveForPayoutRequest {
            program_id: program.clone(),
            currency_code: "GBP".into(),
            cutoff: ts(T0 + 65 * DAY),
            reservations: vec![pb::PartnerReservation {
                partner_id: a.to_string(),
                payout_id: Uuid::new_v4().to_string(),
                minimum_amount: None,
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(later[0].reserved);
    assert_eq!((later[0].amount.clone(), later[0].entry_count), (gbp("100.00"), 1));

    // The database itself refuses a second reservation of an entry.
    let error = sqlx::query(
        "INSERT INTO payout_reservations (entry_id, payout_id, program_id, partner_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::parse_str(reserved_entry).unwrap())
    .bind(Uuid::new_v4())
    .bind(Uuid::parse_str(&program).unwrap())
    .bind(a)
    .execute(&h.pool)
    .await
    .unwrap_err();
    assert!(accrue_kit::error::is_unique_violation(&error));

    // A reserved entry cannot be voided (it can be disputed, then not voided).
    let error = h.transition(&program, &[reserved_entry], pb::EntryStatus::Voided).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(h.transition(&program, &[reserved_entry], pb::EntryStatus::Disputed).await.unwrap(), 1);
    let error = h.transition(&program, &[reserved_entry], pb::EntryStatus::Voided).await.unwrap_err();
    assert_eq!(reason(&error), "ENTRY_RESERVED");
    assert_eq!(h.status(reserved_entry).await, pb::EntryStatus::Disputed);

    // Bad input.
    let mut bad = request.clone();
    bad.reservations.push(reservation(a, Uuid::new_v4()));
    bad.reservations[0].minimum_amount = Some(types::Money { currency_code: "USD".into(), amount: "1.00".into() });
    let error = h.ledger.reserve_for_payout(bad).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("reservations[3].partner_id"), "{}", error.message());
    assert!(error.message().contains("reservations[0].minimum_amount.currency_code"), "{}", error.message());
    assert_projection_matches_log(&h.pool).await;
}

// ---------------------------------------------------------------------------
// Refunds and clawbacks (DESIGN §4 "Refunds", issue 9 items 3–6).

/// Seconds of the refunds in these tests (2024-02-01).
const REFUND_AT: i64 = T0 + 31 * DAY;

fn reverse_request(program: &str, sale: &str, key: &str, a: &str, t: &str) -> pb::ReverseSaleRequest {
    pb::ReverseSaleRequest {
        program_id: program.into(),
        sale_id: sale.into(),
        idempotency_key: key.into(),
        refund_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).to_string(),
        sale_amount: gbp(a),
        refunded_total: gbp(t),
        occurred_at: ts(REFUND_AT),
        rounding_mode: types::RoundingMode::HalfAwayFromZero as i32,
        reason: "customer refund".into(),
    }
}

impl Harness {
    async fn reverse(&mut self, request: pb::ReverseSaleRequest) -> Result<pb::ReverseSaleResponse, tonic::Status> {
        self.ledger.reverse_sale(request).await.map(|r| r.into_inner())
    }

    async fn void_reversal(&mut self, program: &str, key: &str) -> Result<pb::VoidReversalResponse, tonic::Status> {
        self.ledger
            .void_reversal(pb::VoidReversalRequest {
                program_id: program.into(),
                idempotency_key: key.into(),
                reason: "saga unwound".into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn balances(&mut self, program: &str) -> Vec<pb::Balance> {
        self.ledger
            .get_balances(pb::GetBalancesRequest { program_id: program.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .balances
    }

    async fn balance(&mut self, program: &str, partner: Uuid) -> pb::Balance {
        let balances = self
            .ledger
            .get_balances(pb::GetBalancesRequest {
                program_id: program.into(),
                partner_ids: vec![partner.to_string()],
                currency_code: "GBP".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .balances;
        assert_eq!(balances.len(), 1, "one GBP balance for {partner}");
        balances.into_iter().next().unwrap()
    }

    async fn reserve_one(&mut self, program: &str, partner: Uuid, payout: Uuid, cutoff: i64) -> pb::ReservationResult {
        self.ledger
            .reserve_for_payout(pb::ReserveForPayoutRequest {
                program_id: program.into(),
                currency_code: "GBP".into(),
                cutoff: ts(cutoff),
                reservations: vec![pb::PartnerReservation {
                    partner_id: partner.to_string(),
                    payout_id: payout.to_string(),
                    minimum_amount: gbp("0.00"),
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .results
            .remove(0)
    }

    async fn sale_entries(&mut self, program: &str, sale: &str, entry_type: pb::EntryType) -> Vec<pb::Entry> {
        self.ledger
            .list_entries(pb::ListEntriesRequest {
                program_id: program.into(),
                sale_id: sale.into(),
                entry_type: entry_type as i32,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries
    }

    /// Σ of each line's debits (non-VOIDED), by line id.
    async fn clawed_per_line(&mut self, program: &str, sale: &str) -> BTreeMap<String, Decimal> {
        let mut sums = BTreeMap::new();
        for debit in self.sale_entries(program, sale, pb::EntryType::Debit).await {
            if debit.status() != pb::EntryStatus::Voided {
                *sums.entry(debit.reverses_entry_id.clone()).or_default() += amount(&debit.amount);
            }
        }
        sums
    }
}

#[tokio::test]
async fn reverse_sale_seed_003_full_refund_posts_one_linked_debit_and_reverses_the_line() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let posted =
        h.post(&program, vec![posting("s3", vec![line(partner, types::EarningKind::Direct, "15.00", T0 + DAY)])]).await;
    let line_id = posted[0].entry_ids[0].clone();
    let request = reverse_request(&program, "sale-s3", "refund-1", "150.00", "150.00");

    let response = h.reverse(request.clone()).await.unwrap();
    assert!(!response.replayed);
    assert_eq!(response.lines_total, gbp("15.00"));
    assert_eq!(response.target, gbp("15.00"));
    assert_eq!(response.previously_clawed_back, gbp("0.00"));
    assert_eq!(response.clawed_back, gbp("15.00"));
    assert_eq!(response.reversed_entry_ids, vec![line_id.clone()]);
    assert_eq!(response.debits.len(), 1);
    let debit = &response.debits[0];
    assert_eq!(debit.entry_type(), pb::EntryType::Debit);
    assert_eq!(debit.amount, gbp("15.00"));
    assert_eq!(debit.reverses_entry_id, line_id);
    assert_eq!(debit.refund_id, request.refund_id);
    assert_eq!(debit.partner_id, partner.to_string());
    assert_eq!(debit.kind(), types::EarningKind::Direct);
    assert_eq!(debit.sale_id, "sale-s3");
    assert_eq!(debit.idempotency_key, "refund-1");
    // The line was PENDING: the debit travelled with it, so it is REVERSED with it.
    assert_eq!(debit.status(), pb::EntryStatus::Reversed);
    assert_eq!(debit.clears_at, ts(T0 + DAY));
    let breakdown = debit.breakdown.as_ref().unwrap();
    assert_eq!(breakdown.model, "CLAWBACK");
    assert_eq!(breakdown.inputs["target"], "15.00");
    assert_eq!(breakdown.inputs["refunded_total"], "150.00");
    assert!(breakdown.rounding.contains("HALF_AWAY_FROM_ZERO"), "{}", breakdown.rounding);

    // GetEntry shows both, linked, with their histories.
    let original = h.entry(&line_id).await;
    assert_eq!(original.status(), pb::EntryStatus::Reversed);
    assert!(original.reverses_entry_id.is_empty() && original.refund_id.is_empty());
    let last = original.history.last().unwrap();
    assert_eq!((last.from_status(), last.to_status()), (pb::EntryStatus::Pending, pb::EntryStatus::Reversed));
    assert_eq!(last.actor, "test-admin");
    assert!(last.reason.contains("customer refund"), "{}", last.reason);
    let stored = h.entry(&debit.id).await;
    assert_eq!(stored.reverses_entry_id, line_id);
    let steps: Vec<_> = stored.history.iter().map(|e| (e.from_status(), e.to_status())).collect();
    assert_eq!(
        steps,
        vec![
            (pb::EntryStatus::Unspecified, pb::EntryStatus::Pending),
            (pb::EntryStatus::Pending, pb::EntryStatus::Reversed)
        ]
    );
    // ListEntries filters by entry type.
    let debits = h.sale_entries(&program, "sale-s3", pb::EntryType::Debit).await;
    assert_eq!(debits.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![debit.id.clone()]);
    let credits = h.sale_entries(&program, "sale-s3", pb::EntryType::Credit).await;
    assert_eq!(credits.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![line_id.clone()]);

    // Same key, same body → the stored result; nothing new.
    let entries_before = h.count("entries").await;
    let replay = h.reverse(request.clone()).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.debits.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), vec![debit.id.clone()]);
    assert_eq!(replay.clawed_back, gbp("15.00"));
    assert_eq!(h.count("entries").await, entries_before);
    // Same key, other body → ALREADY_EXISTS.
    let mut other = request.clone();
    other.refunded_total = gbp("100.00");
    let error = h.reverse(other).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(reason(&error), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(h.count("entries").await, entries_before);

    // Balances: a reversed line and its debit are in no bucket; 15.00 clawed back.
    let balance = h.balance(&program, partner).await;
    assert_eq!(balance.pending, gbp("0.00"));
    assert_eq!(balance.clawed_back, gbp("15.00"));
    assert_eq!(balance.payable, gbp("0.00"));
    let summary = h
        .ledger
        .get_earnings_summary(pb::GetEarningsSummaryRequest {
            program_id: program.clone(),
            partner_ids: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].direct.clone(), summary[0].clawback.clone()), (gbp("15.00"), gbp("15.00")));
    assert_eq!((summary[0].clawback_direct.clone(), summary[0].total.clone()), (gbp("15.00"), gbp("0.00")));

    // The reversal log is append-only, and the database refuses a CREDIT that
    // names a line or a DEBIT link without its refund.
    for statement in ["UPDATE reversals SET target = 0", "DELETE FROM reversals"] {
        let error = sqlx::query(statement).execute(&h.pool).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    for (entry_type, refund) in [("CREDIT", Some(Uuid::new_v4())), ("DEBIT", None)] {
        let error = sqlx::query(
            "INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, level, \
                 occurred_at, clears_at, idempotency_key, line_index, reverses_entry_id, refund_id, placement) \
             VALUES ($1, $2, $3, 'x', 'DIRECT', $4, 'GBP', 1, 0, now(), now(), 'k', 0, $5, $6, 'AT_ONCE')",
        )
        .bind(Uuid::new_v4())
        .bind(Uuid::parse_str(&program).unwrap())
        .bind(partner)
        .bind(entry_type)
        .bind(Uuid::parse_str(&line_id).unwrap())
        .bind(refund)
        .execute(&h.pool)
        .await
        .unwrap_err();
        assert!(error.to_string().contains("entries_debit_links"), "{entry_type}: {error}");
    }

    // A sale with no live lines: succeeds, posts nothing.
    let empty = h.reverse(reverse_request(&program, "sale-none", "refund-2", "10.00", "5.00")).await.unwrap();
    assert!(empty.debits.is_empty() && empty.reversed_entry_ids.is_empty());
    assert_eq!((empty.target, empty.clawed_back), (gbp("0.00"), gbp("0.00")));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn two_half_refunds_give_back_every_line_exactly_even_when_halves_round_unevenly() {
    let mut h = start().await;
    let program = h.program(false).await;
    let amounts = ["0.01", "0.03", "1.05", "2.33", "7.77"];
    let partners: [Uuid; 5] = h.partners(&program).await;
    let lines: Vec<_> =
        amounts.iter().zip(partners).map(|(a, p)| line(p, types::EarningKind::Override, a, T0 + DAY)).collect();
    let ids = h.post(&program, vec![posting("halves", lines)]).await[0].entry_ids.clone();

    let first = h.reverse(reverse_request(&program, "sale-halves", "half-1", "100.00", "50.00")).await.unwrap();
    assert_eq!(first.lines_total, gbp("11.19"));
    assert_eq!(first.target, gbp("5.60"), "round(11.19 × 50 / 100 = 5.595) half away from zero");
    assert_eq!(first.clawed_back, gbp("5.60"));
    // Largest remainder over [1, 3, 105, 233, 777] minor units: the 0.01 line gives nothing yet.
    let shares: Vec<(String, Decimal)> =
        first.debits.iter().map(|d| (d.reverses_entry_id.clone(), amount(&d.amount))).collect();
    assert_eq!(
        shares,
        vec![
            (ids[1].clone(), dec!(0.01)),
            (ids[2].clone(), dec!(0.53)),
            (ids[3].clone(), dec!(1.17)),
            (ids[4].clone(), dec!(3.89))
        ]
    );
    assert!(first.reversed_entry_ids.is_empty());
    assert!(first.debits.iter().all(|d| d.status() == pb::EntryStatus::Pending));

    let second = h.reverse(reverse_request(&program, "sale-halves", "half-2", "100.00", "100.00")).await.unwrap();
    assert_eq!(second.previously_clawed_back, gbp("5.60"));
    assert_eq!(second.target, gbp("11.19"));
    assert_eq!(second.clawed_back, gbp("5.59"));
    assert_eq!(second.reversed_entry_ids, ids);
    let clawed = h.clawed_per_line(&program, "sale-halves").await;
    for (id, a) in ids.iter().zip(amounts) {
        assert_eq!(clawed[id], Decimal::from_str(a).unwrap(), "line {id}");
        assert_eq!(h.status(id).await, pb::EntryStatus::Reversed);
    }
    // Every debit travelled with its line, so all are REVERSED too.
    for debit in h.sale_entries(&program, "sale-halves", pb::EntryType::Debit).await {
        assert_eq!(debit.status(), pb::EntryStatus::Reversed);
    }
    for balance in h.balances(&program).await {
        assert_eq!(balance.pending, gbp("0.00"));
    }
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn a_penny_refund_posts_one_debit_on_the_first_line_of_a_tie() {
    let mut h = start().await;
    let program = h.program(false).await;
    use types::EarningKind::{Direct, Margin, Override, Split};
    let [p1, p2, p3, p4, p5] = h.partners(&program).await;
    let lines = vec![
        line(p1, Direct, "0.20", T0),
        line(p2, Split, "0.20", T0),
        line(p3, Split, "0.20", T0),
        line(p4, Override, "0.20", T0),
        line(p5, Margin, "0.20", T0),
    ];
    let ids = h.post(&program, vec![posting("penny", lines)]).await[0].entry_ids.clone();
    let response = h.reverse(reverse_request(&program, "sale-penny", "penny-1", "1.00", "0.01")).await.unwrap();
    assert_eq!(response.target, gbp("0.01"));
    assert_eq!(response.debits.len(), 1);
    assert_eq!(response.debits[0].amount, gbp("0.01"));
    assert_eq!(response.debits[0].reverses_entry_id, ids[0], "equal weights: the DIRECT line, first in line order");
    // A second penny goes to the next line in order (its weight is now the largest).
    let response = h.reverse(reverse_request(&program, "sale-penny", "penny-2", "1.00", "0.02")).await.unwrap();
    assert_eq!(response.debits.len(), 1);
    assert_eq!(response.debits[0].reverses_entry_id, ids[1]);
    // Voiding the lines voids the debits that travel with them (not counted).
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(h.transition(&program, &all, pb::EntryStatus::Voided).await.unwrap(), 5);
    for debit in h.sale_entries(&program, "sale-penny", pb::EntryType::Debit).await {
        assert_eq!(debit.status(), pb::EntryStatus::Voided);
        assert_eq!(debit.history.len(), 0, "ListEntries carries no history");
        let last = h.entry(&debit.id).await.history.pop().unwrap();
        assert_eq!((last.from_status(), last.actor.as_str()), (pb::EntryStatus::Pending, "test-admin"));
    }
    assert!(h.balances(&program).await.iter().all(|b| b.pending == gbp("0.00") && b.clawed_back == gbp("0.00")));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn splits_and_override_levels_are_reversed_pro_rata() {
    let mut h = start().await;
    let program = h.program(false).await;
    use types::EarningKind::{Direct, Override, Split};
    let [owner, split_a, split_b, up_1, up_2, up_3] = h.partners(&program).await;
    let override_line = |upline: Uuid, level: i32, amount: &str| {
        let mut l = line(upline, Override, amount, T0 + DAY);
        l.level = level;
        l.source_partner_id = owner.to_string();
        l
    };
    let lines = vec![
        line(owner, Direct, "6.00", T0 + DAY),
        line(split_a, Split, "2.50", T0 + DAY),
        line(split_b, Split, "1.50", T0 + DAY),
        override_line(up_1, 1, "1.00"),
        override_line(up_2, 2, "0.50"),
        override_line(up_3, 3, "0.25"),
    ];
    let amounts: Vec<Decimal> = lines.iter().map(|l| amount(&l.amount)).collect();
    let ids = h.post(&program, vec![posting("fan", lines)]).await[0].entry_ids.clone();
    let lines_total: Decimal = amounts.iter().copied().sum();
    for (n, t) in ["33.33", "50.00", "99.99", "100.00"].iter().enumerate() {
        let response =
            h.reverse(reverse_request(&program, "sale-fan", &format!("fan-{n}"), "100.00", t)).await.unwrap();
        let target = (lines_total * Decimal::from_str(t).unwrap() / dec!(100))
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        assert_eq!(amount(&response.target), target, "target after T = {t}");
        let clawed = h.clawed_per_line(&program, "sale-fan").await;
        assert_eq!(clawed.values().copied().sum::<Decimal>(), target, "Σ debits = target after T = {t}");
        for (id, earned) in ids.iter().zip(&amounts) {
            let back = clawed.get(id).copied().unwrap_or_default();
            assert!(back <= *earned, "line {id} gave back {back} > {earned}");
            // Pro rata: within one penny of the exact share of the target.
            let exact = target * *earned / lines_total;
            assert!((back - exact).abs() < dec!(0.01), "line {id}: {back} vs exact {exact}");
        }
        let kinds: Vec<i32> = response.debits.iter().map(|d| d.kind).collect();
        assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "debits in line order");
    }
    let clawed = h.clawed_per_line(&program, "sale-fan").await;
    for (id, earned) in ids.iter().zip(&amounts) {
        assert_eq!(clawed[id], *earned);
    }
    // The earnings summary shows each kind's clawback.
    let summaries = h
        .ledger
        .get_earnings_summary(pb::GetEarningsSummaryRequest {
            program_id: program.clone(),
            partner_ids: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .summaries;
    let split_back: Decimal = summaries.iter().map(|s| amount(&s.clawback_split)).sum();
    let override_back: Decimal = summaries.iter().map(|s| amount(&s.clawback_override)).sum();
    assert_eq!((split_back, override_back), (dec!(4.00), dec!(1.75)));
    assert!(summaries.iter().all(|s| amount(&s.total) == Decimal::ZERO));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn debits_travel_with_unpaid_lines_and_are_approved_at_once_against_paid_or_reserved_ones() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let direct = types::EarningKind::Direct;
    let posted = h
        .post(
            &program,
            vec![
                posting("travel", vec![line(partner, direct, "10.00", T0 + DAY)]),
                posting("paid", vec![line(partner, direct, "8.00", T0 + DAY)]),
            ],
        )
        .await;
    let line_id = posted[0].entry_ids[0].clone();
    let paid_id = posted[1].entry_ids[0].clone();

    // PENDING line → the debit is PENDING, same clears_at.
    let first = h.reverse(reverse_request(&program, "sale-travel", "t-1", "100.00", "25.00")).await.unwrap();
    let travelling = first.debits[0].clone();
    assert_eq!(travelling.amount, gbp("2.50"));
    assert_eq!(travelling.status(), pb::EntryStatus::Pending);
    assert_eq!(travelling.clears_at, ts(T0 + DAY));
    // It follows ClearMatured and an approval of its line.
    h.clear(&program, T0 + 2 * DAY).await.unwrap();
    assert_eq!(h.status(&travelling.id).await, pb::EntryStatus::Cleared);
    assert_eq!(h.transition(&program, &[&line_id, &paid_id], pb::EntryStatus::Approved).await.unwrap(), 2);
    assert_eq!(h.status(&travelling.id).await, pb::EntryStatus::Approved);
    let history = h.entry(&travelling.id).await.history;
    assert_eq!(history.last().unwrap().actor, "test-admin");
    assert_eq!(h.balance(&program, partner).await.approved, gbp("15.50"));

    // PAID line → the debit is APPROVED at once, clears at the refund time.
    assert_eq!(h.transition(&program, &[&paid_id], pb::EntryStatus::Paid).await.unwrap(), 1);
    let on_paid = h.reverse(reverse_request(&program, "sale-paid", "p-1", "80.00", "40.00")).await.unwrap();
    assert_eq!(on_paid.debits[0].amount, gbp("4.00"));
    assert_eq!(on_paid.debits[0].status(), pb::EntryStatus::Approved);
    assert_eq!(on_paid.debits[0].clears_at, ts(REFUND_AT));
    assert_eq!(h.status(&paid_id).await, pb::EntryStatus::Paid);

    // ReserveForPayout reserves the line with its travelling debit (same payout).
    let payout = Uuid::new_v4();
    let reserved = h.reserve_one(&program, partner, payout, T0 + 3 * DAY).await;
    assert!(reserved.reserved);
    assert_eq!((reserved.amount.clone(), reserved.entry_count), (gbp("7.50"), 2));
    assert_eq!(h.entry(&travelling.id).await.payout_id, payout.to_string());
    let balance = h.balance(&program, partner).await;
    assert_eq!(balance.reserved, gbp("7.50"));
    assert_eq!(balance.paid, gbp("8.00"));
    assert_eq!(balance.approved, gbp("-4.00"), "the at-once debit clears after this cutoff: still payable later");

    // Reserved line → debit APPROVED at once, not reserved.
    let on_reserved = h.reverse(reverse_request(&program, "sale-travel", "t-2", "100.00", "50.00")).await.unwrap();
    let at_once = on_reserved.debits[0].clone();
    assert_eq!(at_once.amount, gbp("2.50"));
    assert_eq!(at_once.status(), pb::EntryStatus::Approved);
    assert_eq!(at_once.clears_at, ts(REFUND_AT));
    assert!(at_once.payout_id.is_empty());
    // Reserved line reversed in full → REVERSED, with its travelling debit; the
    // at-once debits stay APPROVED (they net against the next payout).
    let full = h.reverse(reverse_request(&program, "sale-travel", "t-3", "100.00", "100.00")).await.unwrap();
    assert_eq!(full.clawed_back, gbp("5.00"));
    assert_eq!(full.reversed_entry_ids, vec![line_id.clone()]);
    assert_eq!(h.status(&line_id).await, pb::EntryStatus::Reversed);
    assert_eq!(h.entry(&line_id).await.payout_id, payout.to_string(), "still held by its payout");
    assert_eq!(h.status(&travelling.id).await, pb::EntryStatus::Reversed);
    assert_eq!(h.status(&at_once.id).await, pb::EntryStatus::Approved);
    assert_eq!(full.debits[0].status(), pb::EntryStatus::Approved);
    // PAID line reversed in full → REVERSED (seed 003 allows PAID → REVERSED).
    let paid_full = h.reverse(reverse_request(&program, "sale-paid", "p-2", "80.00", "80.00")).await.unwrap();
    assert_eq!(paid_full.reversed_entry_ids, vec![paid_id.clone()]);
    assert_eq!(h.status(&paid_id).await, pb::EntryStatus::Reversed);
    let balance = h.balance(&program, partner).await;
    assert_eq!(balance.reserved, gbp("0.00"), "the reserved line and its debit are REVERSED");
    assert_eq!(balance.paid, gbp("0.00"));
    // At-once debits: 4.00 + 4.00 (paid line), 2.50 + 5.00 (reserved line).
    assert_eq!(balance.approved, gbp("-15.50"));
    assert_eq!(balance.payable, gbp("-15.50"));
    assert_eq!(balance.clawed_back, gbp("18.00"));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn a_refund_after_payout_nets_in_the_next_run_and_a_negative_balance_carries_until_covered() {
    let mut h = start().await;
    let program = h.program(true).await;
    let partner = h.partner(&program).await;
    let direct = types::EarningKind::Direct;
    let earned = h.post(&program, vec![posting("e1", vec![line(partner, direct, "10.00", T0 + DAY)])]).await;
    h.clear(&program, T0 + 2 * DAY).await.unwrap();
    let first = h.reserve_one(&program, partner, Uuid::new_v4(), T0 + 2 * DAY).await;
    assert!(first.reserved && first.amount == gbp("10.00"));

    // The refund comes after the payout reserved the line: debit at once.
    let response = h.reverse(reverse_request(&program, "sale-e1", "r-1", "100.00", "100.00")).await.unwrap();
    assert_eq!(response.debits[0].status(), pb::EntryStatus::Approved);
    assert_eq!(h.status(&earned[0].entry_ids[0]).await, pb::EntryStatus::Reversed);
    assert_eq!(h.balance(&program, partner).await.payable, gbp("-10.00"));

    // Later earnings of 4.00 do not cover it: nothing reserved, the −6.00 carries.
    h.post(&program, vec![posting("e2", vec![line(partner, direct, "4.00", REFUND_AT)])]).await;
    h.clear(&program, REFUND_AT).await.unwrap();
    let second = h.reserve_one(&program, partner, Uuid::new_v4(), REFUND_AT).await;
    assert!(!second.reserved);
    assert_eq!((second.amount.clone(), second.entry_count), (gbp("-6.00"), 0));
    assert_eq!(h.balance(&program, partner).await.payable, gbp("-6.00"));
    let third = h.reserve_one(&program, partner, Uuid::new_v4(), REFUND_AT + DAY).await;
    assert!(!third.reserved && third.amount == gbp("-6.00"), "still carried in the next run");

    // 20.00 more covers it: the run reserves the debit with both credits, net 14.00.
    h.post(&program, vec![posting("e3", vec![line(partner, direct, "20.00", REFUND_AT + DAY)])]).await;
    h.clear(&program, REFUND_AT + DAY).await.unwrap();
    let fourth = h.reserve_one(&program, partner, Uuid::new_v4(), REFUND_AT + DAY).await;
    assert!(fourth.reserved);
    assert_eq!((fourth.amount.clone(), fourth.entry_count), (gbp("14.00"), 3));
    let balance = h.balance(&program, partner).await;
    assert_eq!((balance.payable.clone(), balance.reserved.clone()), (gbp("0.00"), gbp("14.00")));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn rejected_reversals_change_nothing() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    h.post(&program, vec![posting("rej", vec![line(partner, types::EarningKind::Direct, "10.00", T0)])]).await;
    let good = reverse_request(&program, "sale-rej", "rej-ok", "100.00", "10.00");
    h.reverse(good.clone()).await.unwrap();
    let snapshot = (h.count("entries").await, h.count("entry_status_events").await, h.count("reversals").await);
    let balances = h.balances(&program).await;

    let mut exceeds = reverse_request(&program, "sale-rej", "rej-1", "100.00", "100.01");
    let error = h.reverse(exceeds.clone()).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "REFUND_EXCEEDS_SALE".to_string()));
    exceeds.sale_amount = Some(types::Money { currency_code: "USD".into(), amount: "100.00".into() });
    exceeds.refunded_total = Some(types::Money { currency_code: "USD".into(), amount: "50.00".into() });
    let error = h.reverse(exceeds).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "CURRENCY_MISMATCH".to_string()));

    type Mutation = Box<dyn Fn(&mut pb::ReverseSaleRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("refunded_total.amount", Box::new(|r| r.refunded_total = gbp("5.001"))),
        ("sale_amount.amount", Box::new(|r| r.sale_amount = gbp("0"))),
        ("refunded_total.amount", Box::new(|r| r.refunded_total = gbp("-1.00"))),
        (
            "refunded_total.currency_code",
            Box::new(|r| r.refunded_total = Some(types::Money { currency_code: "USD".into(), amount: "1".into() })),
        ),
        ("refund_id", Box::new(|r| r.refund_id = "nope".into())),
        ("program_id", Box::new(|r| r.program_id = String::new())),
        ("idempotency_key", Box::new(|r| r.idempotency_key = " ".into())),
        ("occurred_at", Box::new(|r| r.occurred_at = None)),
        ("sale_id", Box::new(|r| r.sale_id = String::new())),
        ("rounding_mode", Box::new(|r| r.rounding_mode = 99)),
    ];
    for (field, mutate) in cases {
        let mut request = reverse_request(&program, "sale-rej", "rej-2", "100.00", "50.00");
        mutate(&mut request);
        let error = h.reverse(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{field}");
        assert!(error.message().contains(field), "{field}: {}", error.message());
    }
    // Same key, other body.
    let mut reused = good.clone();
    reused.reason = "another reason".into();
    assert_eq!(h.reverse(reused).await.unwrap_err().code(), Code::AlreadyExists);

    assert_eq!((h.count("entries").await, h.count("entry_status_events").await, h.count("reversals").await), snapshot);
    assert_eq!(h.balances(&program).await, balances);
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn the_same_reverse_sale_sent_twenty_times_at_once_posts_once() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partners: [Uuid; 3] = h.partners(&program).await;
    let lines = partners.into_iter().map(|p| line(p, types::EarningKind::Split, "3.33", T0)).collect();
    h.post(&program, vec![posting("conc", lines)]).await;
    let request = reverse_request(&program, "sale-conc", "conc-1", "100.00", "50.00");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut client = h.ledger.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move { client.reverse_sale(request).await.map(|r| r.into_inner()) }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap().unwrap());
    }
    assert_eq!(responses.iter().filter(|r| !r.replayed).count(), 1);
    let ids: Vec<Vec<String>> = responses.iter().map(|r| r.debits.iter().map(|d| d.id.clone()).collect()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(ids[0].len(), 3);
    assert_eq!(h.sale_entries(&program, "sale-conc", pb::EntryType::Debit).await.len(), 3);
    assert_eq!(h.count("reversals").await, 1);
    let clawed: Decimal = h.clawed_per_line(&program, "sale-conc").await.values().copied().sum();
    assert_eq!(clawed, dec!(5.00), "round(9.99 / 2 = 4.995) = 5.00, once");

    // Two different refunds of one sale, concurrently: they serialize, Σ exact.
    let a = reverse_request(&program, "sale-conc", "conc-2", "100.00", "75.00");
    let b = reverse_request(&program, "sale-conc", "conc-3", "100.00", "100.00");
    let (mut ca, mut cb) = (h.ledger.clone(), h.ledger.clone());
    let (ra, rb) = tokio::join!(ca.reverse_sale(a), cb.reverse_sale(b));
    ra.unwrap();
    rb.unwrap();
    let clawed: Decimal = h.clawed_per_line(&program, "sale-conc").await.values().copied().sum();
    assert_eq!(clawed, dec!(9.99));
    assert_projection_matches_log(&h.pool).await;
}

#[tokio::test]
async fn void_reversal_restores_the_lines_and_voids_the_debits_once() {
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let direct = types::EarningKind::Direct;
    let posted = h
        .post(
            &program,
            vec![posting("v", vec![line(partner, direct, "15.00", T0 + DAY), line(partner, direct, "5.00", T0 + DAY)])],
        )
        .await;
    let (big, small) = (posted[0].entry_ids[0].clone(), posted[0].entry_ids[1].clone());
    let half = h.reverse(reverse_request(&program, "sale-v", "v-1", "100.00", "50.00")).await.unwrap();
    h.clear(&program, T0 + 2 * DAY).await.unwrap();
    let full = h.reverse(reverse_request(&program, "sale-v", "v-2", "100.00", "100.00")).await.unwrap();
    assert_eq!(full.reversed_entry_ids, vec![big.clone(), small.clone()]);
    let before_void = h.balance(&program, partner).await;
    assert_eq!(before_void.cleared, gbp("0.00"));

    // Undo the full refund: its debits VOIDED; the lines, and the first refund's
    // travelling debits, back to CLEARED.
    let undone = h.void_reversal(&program, "v-2").await.unwrap();
    let mut expected_voided: Vec<String> = full.debits.iter().map(|d| d.id.clone()).collect();
    let mut voided = undone.voided_entry_ids.clone();
    expected_voided.sort();
    voided.sort();
    assert_eq!(voided, expected_voided);
    let mut restored = undone.restored_entry_ids.clone();
    restored.sort();
    let mut expected_restored: Vec<String> =
        half.debits.iter().map(|d| d.id.clone()).chain([big.clone(), small.clone()]).collect();
    expected_restored.sort();
    assert_eq!(restored, expected_restored);
    for id in [&big, &small] {
        let entry = h.entry(id).await;
        assert_eq!(entry.status(), pb::EntryStatus::Cleared);
        let last = entry.history.last().unwrap();
        assert_eq!((last.from_status(), last.to_status()), (pb::EntryStatus::Reversed, pb::EntryStatus::Cleared));
        assert_eq!((last.actor.as_str(), last.reason.as_str()), ("test-admin", "saga unwound"));
    }
    for debit in &full.debits {
        assert_eq!(h.status(&debit.id).await, pb::EntryStatus::Voided);
    }
    let balance = h.balance(&program, partner).await;
    assert_eq!(balance.cleared, gbp("10.00"), "20.00 earned − 10.00 of the first refund");
    assert_eq!(balance.clawed_back, gbp("10.00"));

    // A second call changes nothing.
    let events = h.count("entry_status_events").await;
    let again = h.void_reversal(&program, "v-2").await.unwrap();
    assert!(again.voided_entry_ids.is_empty() && again.restored_entry_ids.is_empty());
    assert_eq!(h.count("entry_status_events").await, events);
    // Unknown key → NOT_FOUND.
    assert_eq!(h.void_reversal(&program, "never").await.unwrap_err().code(), Code::NotFound);

    // A later ReverseSale sees the voided debits as not clawed back.
    let redo = h.reverse(reverse_request(&program, "sale-v", "v-3", "100.00", "100.00")).await.unwrap();
    assert_eq!(redo.previously_clawed_back, gbp("10.00"));
    assert_eq!(redo.clawed_back, gbp("10.00"));
    assert_eq!(h.status(&big).await, pb::EntryStatus::Reversed);

    // A debit reserved by a payout: FAILED_PRECONDITION, nothing changes.
    let auto = h.program(true).await;
    let auto_partner = h.partner(&auto).await;
    h.post(&auto, vec![posting("w", vec![line(auto_partner, direct, "12.00", T0 + DAY)])]).await;
    h.clear(&auto, T0 + 2 * DAY).await.unwrap();
    let travelling = h.reverse(reverse_request(&auto, "sale-w", "w-1", "100.00", "50.00")).await.unwrap();
    assert_eq!(travelling.debits[0].status(), pb::EntryStatus::Approved);
    assert!(h.reserve_one(&auto, auto_partner, Uuid::new_v4(), T0 + 3 * DAY).await.reserved);
    let events = h.count("entry_status_events").await;
    let error = h.void_reversal(&auto, "w-1").await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "DEBIT_RESERVED".to_string()));
    assert_eq!(h.status(&travelling.debits[0].id).await, pb::EntryStatus::Approved);
    assert_eq!(h.count("entry_status_events").await, events);
    assert_eq!(h.count("reversal_voids").await, 1);
    assert_projection_matches_log(&h.pool).await;
}

/// Issue 10 item 4: the status events name the caller's token subject, not
/// a request field; a role the table refuses changes nothing.
#[tokio::test]
async fn status_events_name_the_token_subject() {
    use accrue_kit::auth::Role;
    let mut h = start().await;
    let program = h.program(false).await;
    let partner = h.partner(&program).await;
    let ids = h.post(&program, vec![posting("who", vec![line(partner, types::EarningKind::Direct, "5.00", T0)])]).await
        [0]
    .entry_ids
    .clone();
    h.clear(&program, T0 + DAY).await.unwrap();
    let url = h.ledger_url.clone();
    let mut alice: LedgerServiceClient<AuthChannel> =
        h.services.client_for(&url, "alice@finance.example", Role::Finance, "*");
    let mut viewer: LedgerServiceClient<AuthChannel> = h.services.client_for(&url, "vic", Role::Viewer, "*");
    let approve = || pb::TransitionEntriesRequest {
        program_id: program.clone(),
        entry_ids: ids.clone(),
        to_status: pb::EntryStatus::Approved as i32,
        reason: "checked".into(),
    };
    let refused = viewer.transition_entries(approve()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(h.status(&ids[0]).await, pb::EntryStatus::Cleared, "a refused call changes nothing");

    alice.transition_entries(approve()).await.unwrap();
    let entry = h.entry(&ids[0]).await;
    let actors: Vec<&str> = entry.history.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors, ["test-admin", "test-admin", "alice@finance.example"]);
    assert_eq!(entry.history[2].reason, "checked");
}

/// Issue 10 item 2: a token sees only the programs it names. Another
/// program's entry, list, summary, balances and transitions answer NOT_FOUND
/// exactly as a program or entry that does not exist, and change nothing.
#[tokio::test]
async fn a_token_sees_only_its_programs() {
    use accrue_kit::auth::Role;
    let mut h = start().await;
    let mine = h.program(false).await;
    let theirs = h.program(false).await;
    let partner = h.partner(&theirs).await;
    let their_entry =
        h.post(&theirs, vec![posting("theirs", vec![line(partner, types::EarningKind::Direct, "5.00", T0)])]).await[0]
            .entry_ids[0]
            .clone();
    let mut scoped: LedgerServiceClient<AuthChannel> =
        h.services.client_for(&h.ledger_url, "scoped", Role::Finance, &mine);

    let random = Uuid::now_v7().to_string();
    let shape = |status: tonic::Status, id: &str| (status.code(), status.message().replace(id, "<id>"));
    let foreign = scoped.get_entry(pb::GetEntryRequest { id: their_entry.clone() }).await.unwrap_err();
    let missing = scoped.get_entry(pb::GetEntryRequest { id: random.clone() }).await.unwrap_err();
    assert_eq!(shape(foreign, &their_entry), shape(missing, &random));
    assert_eq!(scoped.get_entry(pb::GetEntryRequest { id: random.clone() }).await.unwrap_err().code(), Code::NotFound);

    let list = |program: &str| pb::ListEntriesRequest { program_id: program.into(), ..Default::default() };
    let foreign = scoped.list_entries(list(&theirs)).await.unwrap_err();
    let missing = scoped.list_entries(list(&random)).await.unwrap_err();
    assert_eq!(shape(foreign, &theirs), shape(missing, &random));
    assert!(scoped.list_entries(list(&mine)).await.unwrap().into_inner().entries.is_empty());

    let balances = scoped
        .get_balances(pb::GetBalancesRequest { program_id: theirs.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(balances.code(), Code::NotFound);
    let summary = scoped
        .get_earnings_summary(pb::GetEarningsSummaryRequest { program_id: theirs.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(summary.code(), Code::NotFound);
    let cleared = scoped
        .clear_matured(pb::ClearMaturedRequest { program_id: theirs.clone(), as_of: ts(T0 + DAY) })
        .await
        .unwrap_err();
    assert_eq!(cleared.code(), Code::NotFound);
    let moved = scoped
        .transition_entries(pb::TransitionEntriesRequest {
            program_id: theirs.clone(),
            entry_ids: vec![their_entry.clone()],
            to_status: pb::EntryStatus::Disputed as i32,
            reason: "probe".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::NotFound);
    assert_eq!(h.status(&their_entry).await, pb::EntryStatus::Pending, "nothing changed");
    assert_projection_matches_log(&h.pool).await;
}

/// Issue 11 item 2: a line for a partner that is not one of the program's
/// (another program's partner, or an unknown id) fails its posting alone
/// with NOT_FOUND PARTNER_NOT_FOUND, the same message for both once the id
/// is masked; so does a foreign source partner. The other postings of the
/// call are written; a program that does not exist is NOT_FOUND.
#[tokio::test]
async fn postings_name_only_the_programs_own_partners() {
    let mut h = start().await;
    let program = h.program(false).await;
    let other = h.program(false).await;
    let own = h.partner(&program).await;
    let foreign = h.partner(&other).await;
    let random = Uuid::now_v7();
    let direct = types::EarningKind::Direct;
    let mut sourced = line(own, types::EarningKind::Override, "1.00", T0);
    sourced.source_partner_id = foreign.to_string();
    let results = h
        .post(
            &program,
            vec![
                posting("own", vec![line(own, direct, "5.00", T0)]),
                posting("foreign", vec![line(own, direct, "1.00", T0), line(foreign, direct, "5.00", T0)]),
                posting("random", vec![line(own, direct, "1.00", T0), line(random, direct, "5.00", T0)]),
                posting("source", vec![sourced]),
            ],
        )
        .await;
    assert!(results[0].failure.is_none(), "{:?}", results[0].failure);
    let failure = |index: usize, id: Uuid| {
        let failure = results[index].failure.clone().unwrap_or_else(|| panic!("posting {index} was written"));
        let message =
            failure.message.replace(&id.to_string(), "<id>").replace(&format!("postings[{index}]"), "postings[i]");
        (failure.code, failure.reason, message)
    };
    assert_eq!(failure(1, foreign), failure(2, random), "a foreign partner answers as an unknown one");
    let (code, reason, message) = failure(1, foreign);
    assert_eq!((code.as_str(), reason.as_str()), ("NOT_FOUND", "PARTNER_NOT_FOUND"));
    assert!(message.starts_with("postings[i].lines[1].partner_id: partner <id> not found"), "{message}");
    assert!(failure(3, foreign).2.starts_with("postings[i].lines[0].source_partner_id"), "{:?}", failure(3, foreign));
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM entries").fetch_one(&h.pool).await.unwrap();
    assert_eq!(written, 1, "only the valid posting");

    let missing = Uuid::now_v7().to_string();
    let refused = h
        .ledger
        .post_entries(pb::PostEntriesRequest {
            program_id: missing.clone(),
            postings: vec![posting("nowhere", vec![line(own, direct, "5.00", T0)])],
        })
        .await
        .unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::NotFound, format!("program {missing} not found").as_str()));
}

/// Issue 12 item 2: a released entry can be reserved again by another
/// payout; settling moves every reserved entry, credit and debit, to PAID
/// with the payout id and reference in its status event; both are
/// idempotent on the payout id; a paid payout cannot be released.
#[tokio::test]
async fn release_and_settle_reservations() {
    let mut h = start().await;
    let program = h.program(true).await;
    let partner = h.partner(&program).await;
    let direct = types::EarningKind::Direct;
    let results = h
        .post(
            &program,
            vec![posting(
                "p1",
                vec![line(partner, direct, "40.00", T0 + DAY), line(partner, direct, "-5.00", T0 + DAY)],
            )],
        )
        .await;
    let ids = results[0].entry_ids.clone();
    h.clear(&program, T0 + 10 * DAY).await.unwrap();
    let reserve = |payout: Uuid| pb::ReserveForPayoutRequest {
        program_id: program.clone(),
        currency_code: "GBP".into(),
        cutoff: ts(T0 + 30 * DAY),
        reservations: vec![pb::PartnerReservation {
            partner_id: partner.to_string(),
            payout_id: payout.to_string(),
            minimum_amount: None,
        }],
    };
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let reserved = h.ledger.reserve_for_payout(reserve(first)).await.unwrap().into_inner().results;
    assert!(reserved[0].reserved);
    assert_eq!(reserved[0].amount, gbp("35.00"));

    let release = |payout: Uuid| pb::ReleaseReservationRequest {
        program_id: program.clone(),
        payout_id: payout.to_string(),
        reason: "payout rejected".into(),
    };
    let released = h.ledger.release_reservation(release(first)).await.unwrap().into_inner();
    assert_eq!(released.released_count, 2);
    assert_eq!(h.entry(&ids[0]).await.payout_id, "");
    assert_eq!(h.count("payout_reservation_releases").await, 2);
    // Idempotent: nothing left to release.
    assert_eq!(h.ledger.release_reservation(release(first)).await.unwrap().into_inner().released_count, 0);
    assert_eq!(h.count("payout_reservation_releases").await, 2);
    let settle = |payout: Uuid, reference: &str| pb::SettleReservationRequest {
        program_id: program.clone(),
        payout_id: payout.to_string(),
        payment_reference: reference.into(),
    };
    let error = h.ledger.settle_reservation(settle(first, "ref-0")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "RESERVATION_RELEASED".into()));
    let error = h.ledger.settle_reservation(settle(Uuid::new_v4(), "ref-0")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::NotFound, "RESERVATION_NOT_FOUND".into()));

    // The released payout id is spent: asking again (a resumed run) reserves nothing.
    let spent = h.ledger.reserve_for_payout(reserve(first)).await.unwrap().into_inner().results;
    assert!(!spent[0].reserved && spent[0].entry_count == 0, "{spent:?}");
    assert_eq!(h.entry(&ids[0]).await.payout_id, "");
    // The released entries are reserved again by the next payout.
    let again = h.ledger.reserve_for_payout(reserve(second)).await.unwrap().into_inner().results;
    assert!(again[0].reserved);
    assert_eq!((again[0].amount.clone(), again[0].entry_count), (gbp("35.00"), 2));
    assert_eq!(h.entry(&ids[1]).await.payout_id, second.to_string());
    assert_projection_matches_log(&h.pool).await;

    let settled = h.ledger.settle_reservation(settle(second, "bank-42")).await.unwrap().into_inner();
    assert_eq!((settled.entry_count, settled.paid_count), (2, 2));
    assert_eq!(settled.paid_amount, gbp("35.00"));
    assert_eq!(settled.payment_reference, "bank-42");
    for id in &ids {
        let entry = h.entry(id).await;
        assert_eq!(entry.status(), pb::EntryStatus::Paid, "the credit and the debit are PAID: {entry:#?}");
        assert_eq!(entry.payout_id, second.to_string());
        let last = entry.history.last().unwrap();
        assert!(last.reason.contains(&second.to_string()) && last.reason.contains("bank-42"), "{last:#?}");
    }
    let events = h.count("entry_status_events").await;
    // Idempotent on the payout id: the same answer, nothing written.
    let repeat = h.ledger.settle_reservation(settle(second, "bank-42")).await.unwrap().into_inner();
    assert_eq!(repeat, settled);
    assert_eq!(h.count("entry_status_events").await, events);
    let error = h.ledger.settle_reservation(settle(second, "bank-43")).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "RESERVATION_SETTLED".into()));
    let error = h.ledger.release_reservation(release(second)).await.unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::FailedPrecondition, "RESERVATION_SETTLED".into()));
    let error = h.ledger.settle_reservation(settle(second, " ")).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_projection_matches_log(&h.pool).await;
}

/// Issue 12 item 6: ClearMatured on a timer, two replicas on one database:
/// matured entries are cleared and (auto-approve program) approved once,
/// the events naming the timer; entries not yet matured stay PENDING.
#[tokio::test]
async fn the_clearance_timer_clears_matured_entries_once_across_replicas() {
    let services = TestServices::new().await;
    let hierarchy_url = services.spawn::<accrue_hierarchy::Hierarchy>(accrue_hierarchy::Config::default()).await;
    let timer = |url: &str| accrue_ledger::Config { hierarchy_url: url.to_string(), clear_matured_interval_seconds: 1 };
    let first = services.spawn::<accrue_ledger::Ledger>(timer(&hierarchy_url)).await;
    let _second = services.spawn::<accrue_ledger::Ledger>(timer(&hierarchy_url)).await;
    let mut h = Harness {
        ledger: services.client(&first),
        hierarchy: services.client(&hierarchy_url),
        pool: services.pool::<accrue_ledger::Ledger>(),
        ledger_url: first.clone(),
        services,
    };
    let program = h.program(true).await;
    // A partner of the program (the ledger may accept lines only for a
    // program's own partners).
    let partner = h
        .hierarchy
        .create_partner(hpb::CreatePartnerRequest {
            program_id: program.clone(),
            partner: Some(hpb::Partner { display_name: "Timer partner".into(), ..Default::default() }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
        .parse::<Uuid>()
        .unwrap();
    let future = chrono::Utc::now().timestamp() + 30 * DAY;
    let direct = types::EarningKind::Direct;
    let results = h
        .post(
            &program,
            vec![
                posting("matured", vec![line(partner, direct, "10.00", T0 + DAY), line(partner, direct, "5.00", T0)]),
                posting("later", vec![line(partner, direct, "7.00", future)]),
            ],
        )
        .await;
    let matured = results[0].entry_ids.clone();
    let later = results[1].entry_ids[0].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if h.status(&matured[0]).await == pb::EntryStatus::Approved
            && h.status(&matured[1]).await == pb::EntryStatus::Approved
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the timer did not clear the matured entries");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Another tick or two: nothing is cleared twice.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for id in &matured {
        let history = h.entry(id).await.history;
        let moves: Vec<(i32, i32, &str)> =
            history.iter().map(|e| (e.from_status, e.to_status, e.actor.as_str())).collect();
        assert_eq!(
            moves[1..],
            [
                (pb::EntryStatus::Pending as i32, pb::EntryStatus::Cleared as i32, "timer:clear-matured"),
                (pb::EntryStatus::Cleared as i32, pb::EntryStatus::Approved as i32, "timer:clear-matured"),
            ],
            "{history:#?}"
        );
    }
    assert_eq!(h.status(&later).await, pb::EntryStatus::Pending);
    assert_projection_matches_log(&h.pool).await;
}
