//! What a run left in its database, keyed by what the replay keeps stable
//! between runs (sale, refund and partner external ids, periods), never by
//! the UUIDs each run mints. Read with SQL as the superuser straight from
//! the five schemas: the campaign checks the stored truth, not what the API
//! chooses to show.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::ChaosError;

/// One sale row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SaleRow {
    /// PENDING, SETTLED, FAILED, UNATTRIBUTED, PARTIALLY_REFUNDED or REFUNDED.
    pub state: String,
    /// The sale's amount.
    pub amount: Decimal,
    /// Σ its recorded refunds.
    pub refunded: Decimal,
}

/// One refund row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RefundRow {
    /// PENDING, APPLIED or FAILED.
    pub state: String,
    /// The refunded amount.
    pub amount: Decimal,
    /// Σ the debits it posted, once APPLIED.
    pub clawback: Option<Decimal>,
}

/// One payout row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PayoutRow {
    /// The payout's amount.
    pub amount: Decimal,
    /// PENDING_APPROVAL, APPROVED, REJECTED, PROCESSING, PAID or FAILED.
    pub status: String,
}

/// Everything one run stored, each key mapped to every row that has it (two
/// rows under one key are a duplicate).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// Sales by external id (`online-retail:536365`).
    pub sales: BTreeMap<String, Vec<SaleRow>>,
    /// Saga states by `KIND subject` (`SETTLE_SALE online-retail:536365`,
    /// `CLAWBACK_SALE online-retail:C536379:536365`), lower-case states as
    /// stored (`running`, `unwinding`, `done`, `failed`, `stuck`).
    pub sagas: BTreeMap<String, Vec<String>>,
    /// Refunds by external id.
    pub refunds: BTreeMap<String, Vec<RefundRow>>,
    /// Ledger entry amounts by `sale | partner | kind | CREDIT/DEBIT | refund | level`.
    pub entries: BTreeMap<String, Vec<Decimal>>,
    /// Payouts by `period | partner`.
    pub payouts: BTreeMap<String, Vec<PayoutRow>>,
    /// Outbox events by `schema type` (docs/events.md): how many each
    /// service wrote, numbered or not yet.
    pub events: BTreeMap<String, i64>,
    /// Feeds whose numbers are not 1..n: `schema program` with what was
    /// found (numbered events, their highest number, the counter).
    pub feed_gaps: Vec<String>,
}

/// The five schemas, each with its event outbox.
const SCHEMAS: [&str; 5] = ["hierarchy", "attribution", "commission", "ledger", "payouts"];

/// Σ ledger amounts by `partner | kind | CREDIT/DEBIT`.
pub type PartnerKindTotals = BTreeMap<String, Decimal>;

impl Snapshot {
    /// Reads the snapshot of database `url` (a superuser URL: it reads every
    /// schema).
    pub async fn read(url: &str) -> Result<Snapshot, ChaosError> {
        let mut conn = PgConnection::connect(url).await.map_err(sql("connecting for the snapshot"))?;
        let mut snapshot = Snapshot::default();

        let rows: Vec<(String, String, Decimal, Decimal)> =
            sqlx::query_as("SELECT external_id, state, amount, refunded_amount FROM attribution.sales")
                .fetch_all(&mut conn)
                .await
                .map_err(sql("reading sales"))?;
        for (external_id, state, amount, refunded) in rows {
            let row = SaleRow { state, amount: amount.normalize(), refunded: refunded.normalize() };
            snapshot.sales.entry(external_id).or_default().push(row);
        }

        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT g.kind || ' ' || COALESCE(r.external_id, s.external_id), g.state \
             FROM attribution.sagas g JOIN attribution.sales s ON s.id = g.sale_id \
             LEFT JOIN attribution.refunds r ON r.id = g.refund_id",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(sql("reading sagas"))?;
        for (key, state) in rows {
            snapshot.sagas.entry(key).or_default().push(state);
        }

        let rows: Vec<(String, String, Decimal, Option<Decimal>)> =
            sqlx::query_as("SELECT external_id, state, amount, clawback_amount FROM attribution.refunds")
                .fetch_all(&mut conn)
                .await
                .map_err(sql("reading refunds"))?;
        for (external_id, state, amount, clawback) in rows {
            let row = RefundRow { state, amount: amount.normalize(), clawback: clawback.map(|c| c.normalize()) };
            snapshot.refunds.entry(external_id).or_default().push(row);
        }

        // A partner is named by its external id (the replay sets one on
        // every partner), else its display name.
        let rows: Vec<(String, Decimal)> = sqlx::query_as(
            "SELECT concat_ws(' | ', COALESCE(s.external_id, e.sale_id), \
                    COALESCE(p.external_id, p.display_name, e.partner_id::text), e.kind, e.entry_type, \
                    COALESCE(r.external_id, '-'), e.level::text), e.amount \
             FROM ledger.entries e \
             LEFT JOIN attribution.sales s ON s.id::text = e.sale_id OR s.external_id = e.sale_id \
             LEFT JOIN hierarchy.partners p ON p.id = e.partner_id \
             LEFT JOIN attribution.refunds r ON r.id = e.refund_id",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(sql("reading ledger entries"))?;
        for (key, amount) in rows {
            snapshot.entries.entry(key).or_default().push(amount.normalize());
        }

        let rows: Vec<(String, Decimal, String)> = sqlx::query_as(
            "SELECT concat_ws(' | ', r.period, COALESCE(p.external_id, p.display_name, o.partner_id::text)), \
                    o.amount, o.status \
             FROM payouts.payouts o JOIN payouts.payout_runs r ON r.id = o.payout_run_id \
             LEFT JOIN hierarchy.partners p ON p.id = o.partner_id",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(sql("reading payouts"))?;
        for (key, amount, status) in rows {
            snapshot.payouts.entry(key).or_default().push(PayoutRow { amount: amount.normalize(), status });
        }
        for schema in SCHEMAS {
            let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT type, count(*) FROM \"{schema}\".events GROUP BY type"
            )))
            .fetch_all(&mut conn)
            .await
            .map_err(sql("reading the event outboxes"))?;
            for (kind, count) in rows {
                snapshot.events.insert(format!("{schema} {kind}"), count);
            }
            // Numbered events of a program are 1..n, each event numbered
            // once: as many numbers as the highest, which is the counter,
            // and as many numbered events (events not numbered yet, when the
            // run stopped right after writing them, are left out).
            let rows: Vec<(uuid::Uuid, i64, i64, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT n.program_id, count(DISTINCT n.position), max(n.sequence), max(c.last_sequence) \
                 FROM \"{schema}\".sequenced_events n \
                 LEFT JOIN \"{schema}\".event_sequences c USING (program_id) \
                 GROUP BY n.program_id"
            )))
            .fetch_all(&mut conn)
            .await
            .map_err(sql("reading the event feeds"))?;
            for (program, numbered, highest, counter) in rows {
                if numbered != highest || counter != Some(highest) {
                    snapshot.feed_gaps.push(format!(
                        "{schema} {program}: {numbered} numbered, highest {highest}, counter {counter:?}"
                    ));
                }
            }
        }
        let _ = conn.close().await;
        Ok(snapshot)
    }

    /// Σ entry amounts by `partner | kind | CREDIT/DEBIT`.
    pub fn partner_kind_totals(&self) -> PartnerKindTotals {
        let mut totals = PartnerKindTotals::new();
        for (key, amounts) in &self.entries {
            let fields: Vec<&str> = key.split(" | ").collect();
            let group = fields.get(1..4).map(|f| f.join(" | ")).unwrap_or_else(|| key.clone());
            *totals.entry(group).or_default() += amounts.iter().copied().sum::<Decimal>();
        }
        totals
    }

    /// Headline counts, for the report.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for row in self.sales.values().flatten() {
            *counts.sales_by_state.entry(row.state.clone()).or_default() += 1;
        }
        for state in self.sagas.values().flatten() {
            *counts.sagas_by_state.entry(state.clone()).or_default() += 1;
        }
        counts.refunds = self.refunds.values().map(|rows| rows.len() as u64).sum();
        for (key, amounts) in &self.entries {
            counts.entries += amounts.len() as u64;
            let sum: Decimal = amounts.iter().copied().sum();
            if key.contains(" | DEBIT | ") {
                counts.entries_debit += sum;
            } else {
                counts.entries_credit += sum;
            }
        }
        for row in self.payouts.values().flatten() {
            counts.payouts += 1;
            counts.payouts_amount += row.amount;
            *counts.payouts_by_status.entry(row.status.clone()).or_default() += 1;
        }
        counts
    }
}

/// Headline counts of a [`Snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sales by state.
    pub sales_by_state: BTreeMap<String, u64>,
    /// Sagas by state.
    pub sagas_by_state: BTreeMap<String, u64>,
    /// Refunds.
    pub refunds: u64,
    /// Ledger entries.
    pub entries: u64,
    /// Σ CREDIT entries.
    pub entries_credit: Decimal,
    /// Σ DEBIT entries.
    pub entries_debit: Decimal,
    /// Payouts.
    pub payouts: u64,
    /// Σ payouts.
    pub payouts_amount: Decimal,
    /// Payouts by status.
    pub payouts_by_status: BTreeMap<String, u64>,
}

fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> ChaosError {
    move |source| ChaosError::Sql { what: what.to_string(), source }
}
