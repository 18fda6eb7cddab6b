//! sqlx access to the `ledger` schema (runtime queries; the connection's
//! search_path is the schema). Every write that belongs together runs in one
//! transaction, and batches are set-based (`UNNEST` arrays, one statement per
//! step, not one per line).

use std::collections::{HashMap, HashSet};

use accrue_types::{EntryId, PartnerId, PayoutId, ProgramId, RefundId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

pub(crate) use accrue_kit::error::StoreError;

use crate::domain::posting::{EntryType, PostedLine, Posting};
use crate::domain::reserve::{should_reserve, signed};
use crate::domain::reversal::{self, LiveLine, Placement, Refund, ReversalError, VoidError, VoidTarget};
use crate::domain::status::{Current, Status, TransitionError, plan_transition};
use crate::events;

mod balances;
mod posting;
mod reports;
mod reservations;
mod reversals;
mod transitions;

pub use balances::*;
pub use posting::*;
pub use reports::*;
pub use reservations::*;
pub use reversals::*;
pub use transitions::*;

/// An entry with its current status and reservation, as read for the API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    /// Entry id.
    pub id: EntryId,
    /// Program.
    pub program_id: ProgramId,
    /// Partner.
    pub partner_id: PartnerId,
    /// Sale.
    pub sale_id: String,
    /// Kind name.
    pub kind: String,
    /// CREDIT / DEBIT.
    pub entry_type: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Positive amount.
    pub amount: Decimal,
    /// Override level.
    pub level: i32,
    /// Seller.
    pub source_partner_id: Option<PartnerId>,
    /// Sale time.
    pub occurred_at: DateTime<Utc>,
    /// Clearance time.
    pub clears_at: DateTime<Utc>,
    /// Stored breakdown: the shared `Breakdown`'s JSON text, `{}` for none
    /// (migration 0014).
    pub breakdown: String,
    /// Posting key.
    pub idempotency_key: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Current status name.
    pub status: String,
    /// Reserving payout, if any.
    pub payout_id: Option<PayoutId>,
    /// For a clawback DEBIT: the CREDIT line it claws back.
    pub reverses_entry_id: Option<EntryId>,
    /// For a clawback DEBIT: the refund.
    pub refund_id: Option<RefundId>,
}

/// One status event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// From status name ("UNSPECIFIED" for creation).
    pub from_status: String,
    /// To status name.
    pub to_status: String,
    /// Actor.
    pub actor: String,
    /// Reason.
    pub reason: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

const ENTRY_COLUMNS: &str = "e.id, e.program_id, e.partner_id, e.sale_id, e.kind, e.entry_type, e.currency, e.amount, \
     e.level, e.source_partner_id, e.occurred_at, e.clears_at, e.breakdown, e.idempotency_key, e.created_at, \
     s.status, r.payout_id, e.reverses_entry_id, e.refund_id";

/// One entry with its status history (oldest first); `None` when absent.
/// The history comes from the `entry_history` view, which adds the creation
/// event PostEntries no longer stores per line (migration 0010).
pub async fn get_entry(pool: &PgPool, id: EntryId) -> Result<Option<(EntryRow, Vec<EventRow>)>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id WHERE e.id = $1"
    );
    let Some(entry) = sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
    else {
        return Ok(None);
    };
    let history = sqlx::query_as::<_, EventRow>(
        "SELECT from_status, to_status, actor, reason, created_at FROM entry_history \
         WHERE entry_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some((entry, history)))
}

/// Filters for [`list_entries`].
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Only this partner's.
    pub partner_id: Option<PartnerId>,
    /// Only this sale's.
    pub sale_id: Option<String>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Only this kind (stored name).
    pub kind: Option<&'static str>,
    /// Only CREDITs or only DEBITs (stored name).
    pub entry_type: Option<&'static str>,
}

impl EntryFilter {
    /// No filter: the program's every entry.
    pub fn is_empty(&self) -> bool {
        self.partner_id.is_none()
            && self.sale_id.is_none()
            && self.status.is_none()
            && self.kind.is_none()
            && self.entry_type.is_none()
    }
}

/// A page of a program's entries in `(created_at, id)` order after `after`;
/// returns up to `limit` rows.
///
/// The statement names only the filters given: one with `$n IS NULL OR …`
/// for each was planned once for all of them, and the generic plan Postgres
/// settles on after a few pages could not use the cursor as an index range,
/// so every page scanned the program's entries from the start (216 ms a page
/// at 100,000 entries; paging grew quadratic). A page of the program's
/// every entry reads `entries_created_idx` in order and stops after `limit`
/// ([`accrue_kit::db::keyset_order_by_index`]): with statistics older than
/// the newest entries, Postgres otherwise fetched, joined and sorted every
/// entry after the cursor for each page (0.1–0.4 s a page at 96,000 entries,
/// issue 15).
pub async fn list_entries(
    pool: &PgPool,
    program_id: ProgramId,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, EntryId)>,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let mut page = entries_page("", program_id, filter, after, limit);
    if !filter.is_empty() {
        return Ok(page.build_query_as::<EntryRow>().fetch_all(pool).await?);
    }
    let mut tx = ordered_page_transaction(pool).await?;
    let rows = page.build_query_as::<EntryRow>().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// The transaction an unfiltered page of [`list_entries`] runs in: its
/// order comes from `entries_created_idx`, never from a sort.
async fn ordered_page_transaction(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    accrue_kit::db::keyset_order_by_index(&mut tx).await?;
    Ok(tx)
}

/// The page statement of [`list_entries`], after `prefix` ("" or "EXPLAIN ").
fn entries_page(
    prefix: &str,
    program_id: ProgramId,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, EntryId)>,
    limit: i64,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut query = sqlx::QueryBuilder::new(format!(
        "{prefix}SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id \
         WHERE e.program_id = "
    ));
    query.push_bind(program_id);
    if let Some(partner_id) = filter.partner_id {
        query.push(" AND e.partner_id = ").push_bind(partner_id);
    }
    if let Some(sale_id) = filter.sale_id.as_deref() {
        query.push(" AND e.sale_id = ").push_bind(sale_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND s.status = ").push_bind(status.as_str());
    }
    if let Some(kind) = filter.kind {
        query.push(" AND e.kind = ").push_bind(kind);
    }
    if let Some(entry_type) = filter.entry_type {
        query.push(" AND e.entry_type = ").push_bind(entry_type);
    }
    if let Some((time, id)) = after {
        query.push(" AND (e.created_at, e.id) > (").push_bind(time).push(", ").push_bind(id).push(")");
    }
    query.push(" ORDER BY e.created_at, e.id LIMIT ").push_bind(limit);
    query
}

/// The first status event (its creation) of each of `ids` that exists, from
/// `entry_history` (stored, or derived from its posting's actor).
pub async fn creation_events(pool: &PgPool, ids: &[EntryId]) -> Result<HashMap<EntryId, EventRow>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Creation {
        entry_id: EntryId,
        #[sqlx(flatten)]
        event: EventRow,
    }
    let rows: Vec<Creation> = sqlx::query_as(
        "SELECT DISTINCT ON (entry_id) entry_id, from_status, to_status, actor, reason, created_at \
         FROM entry_history WHERE entry_id = ANY($1::uuid[]) ORDER BY entry_id, id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.entry_id, row.event)).collect())
}

/// Entries by id, in the order given (absent ids are skipped).
pub async fn entries_by_ids(pool: &PgPool, ids: &[EntryId]) -> Result<Vec<EntryRow>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM unnest($1::uuid[]) WITH ORDINALITY AS q(id, n) \
         JOIN entries e ON e.id = q.id JOIN entry_states s ON s.entry_id = e.id \
         LEFT JOIN payout_reservations r ON r.entry_id = e.id ORDER BY q.n"
    );
    Ok(sqlx::query_as::<_, EntryRow>(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(pool).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Inserts `count` PENDING credits of `program`, created `first` seconds
    /// after 2024-01-01 and one second apart.
    async fn insert_entries(pool: &PgPool, program: ProgramId, first: i64, count: i64) {
        sqlx::query(
            "WITH n AS (SELECT g, gen_random_uuid() AS id FROM generate_series($2::bigint, $2 + $3 - 1) AS g), \
             e AS (INSERT INTO entries (id, program_id, partner_id, sale_id, kind, entry_type, currency, amount, \
                       level, occurred_at, clears_at, idempotency_key, line_index, created_at) \
                   SELECT id, $1, $1, 'sale-' || g, 'DIRECT', 'CREDIT', 'GBP', 1, 0, now(), now(), 'k-' || g, 0, \
                          timestamptz '2024-01-01' + g * interval '1 second' FROM n RETURNING id) \
             INSERT INTO entry_states (entry_id, program_id, partner_id, currency, status, clears_at) \
             SELECT id, $1, $1, 'GBP', 'PENDING', now() FROM e",
        )
        .bind(program)
        .bind(first)
        .bind(count)
        .execute(pool)
        .await
        .unwrap();
    }

    /// A page of a program's every entry after a cursor newer than anything
    /// the statistics saw reads the created-order index and stops at the
    /// limit: no bitmap of every later entry, no sort (issue 15: the page
    /// Postgres planned from such statistics joined and sorted every entry
    /// after the cursor, 0.1–0.4 s a page at 96,000 entries; here it hashes
    /// and sorts the 30,000 after the cursor). A filtered page may still
    /// sort; its rows are bounded by its filter.
    #[tokio::test]
    async fn a_page_after_a_cursor_past_the_statistics_reads_the_created_order_index() {
        let db = accrue_testkit::TestDb::create().await.unwrap();
        let pool = db.migrated_pool("ledger", &crate::MIGRATOR).await.unwrap();
        let program = ProgramId::from_u128(7);
        // Statistics of entries taken at 10,000, of their states at 40,000
        // (autovacuum analyzes each table on its own schedule).
        insert_entries(&pool, program, 0, 10_000).await;
        sqlx::query("ANALYZE entries").execute(&pool).await.unwrap();
        insert_entries(&pool, program, 10_000, 30_000).await;
        sqlx::query("ANALYZE entry_states").execute(&pool).await.unwrap();
        let (created_at, id): (DateTime<Utc>, EntryId) =
            sqlx::query_as("SELECT created_at, id FROM entries ORDER BY created_at DESC, id DESC OFFSET 29000 LIMIT 1")
                .fetch_one(&pool)
                .await
                .unwrap();

        let filter = EntryFilter::default();
        let mut tx = ordered_page_transaction(&pool).await.unwrap();
        let plan: Vec<String> = entries_page("EXPLAIN ", program, &filter, Some((created_at, id)), 1_001)
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using entries_created_idx on entries"), "{plan}");
        assert!(!plan.contains("Sort") && !plan.contains("Bitmap"), "{plan}");

        let page = list_entries(&pool, program, &EntryFilter::default(), Some((created_at, id)), 1_001).await.unwrap();
        assert_eq!(page.len(), 1_001);
        assert!(page.windows(2).all(|w| (w[0].created_at, w[0].id) < (w[1].created_at, w[1].id)));
        assert!(page.iter().all(|row| (row.created_at, row.id) > (created_at, id)));

        let filter = EntryFilter { sale_id: Some("sale-30500".into()), ..EntryFilter::default() };
        let one = list_entries(&pool, program, &filter, Some((created_at, id)), 10).await.unwrap();
        assert_eq!(one.len(), 1);
    }
}
