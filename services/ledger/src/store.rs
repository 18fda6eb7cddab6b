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
    /// Stored breakdown.
    pub breakdown: serde_json::Value,
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

/// A page of a program's entries in `(created_at, id)` order after `after`;
/// returns up to `limit` rows.
///
/// The statement names only the filters given: one with `$n IS NULL OR …`
/// for each was planned once for all of them, and the generic plan Postgres
/// settles on after a few pages could not use the cursor as an index range,
/// so every page scanned the program's entries from the start (216 ms a page
/// at 100,000 entries; paging grew quadratic).
pub async fn list_entries(
    pool: &PgPool,
    program_id: ProgramId,
    filter: &EntryFilter,
    after: Option<(DateTime<Utc>, EntryId)>,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT {ENTRY_COLUMNS} FROM entries e JOIN entry_states s ON s.entry_id = e.id \
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
    query.build_query_as::<EntryRow>().fetch_all(pool).await.map_err(StoreError::from)
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
