//! Refunds (DESIGN §4 "Refunds"; issue 9): RecordRefund's one transaction
//! (the sale row locked, the running total checked, the refund and its
//! ClawbackSale saga inserted as an outbox), refund reads, and the refund and
//! sale writes ClawbackSale's steps make. The sale's state moves here only.

use std::collections::HashMap;

use accrue_saga::{Saga, SagaDef, SagaState};
use accrue_types::{ProgramId, RefundId, SagaId, SaleId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{Cursor, StoreError};
use accrue_kit::events::{NewEvent, catalogue};

use crate::domain::refund::{RefundInput, RefundState, SaleRef, check_against_sale};
use crate::domain::state::SaleState;
use crate::events;
use crate::saga::clawback_sale::ClawbackSale;

/// A stored refund, with its sale's external id.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RefundRow {
    pub(crate) id: RefundId,
    pub(crate) program_id: ProgramId,
    pub(crate) external_id: String,
    pub(crate) request_hash: String,
    pub(crate) sale_id: SaleId,
    pub(crate) sale_external_id: String,
    /// 1 for the sale's first refund, then 2, …
    pub(crate) sequence: i32,
    pub(crate) currency: String,
    /// Major units.
    pub(crate) amount: Decimal,
    /// T: Σ the sale's refunds up to and including this one (major units).
    pub(crate) refunded_total: Decimal,
    pub(crate) occurred_at: DateTime<Utc>,
    pub(crate) reason: String,
    pub(crate) state: RefundState,
    pub(crate) failure_reason: String,
    pub(crate) saga_id: Option<SagaId>,
    /// Σ the DEBIT entries it posted (major units), once APPLIED.
    pub(crate) clawback_amount: Option<Decimal>,
    pub(crate) created_at: DateTime<Utc>,
}

/// The select of [`RefundRow`]s (refunds `r` joined to their sales `s`).
const REFUND_SELECT: &str = "SELECT r.id, r.program_id, r.external_id, r.request_hash, r.sale_id,
        s.external_id AS sale_external_id, r.sequence, r.currency, r.amount, r.refunded_total, r.occurred_at,
        r.reason, r.state, r.failure_reason, r.saga_id, r.clawback_amount, r.created_at
    FROM refunds r JOIN sales s ON s.id = r.sale_id";

/// What RecordRefund's transaction did. Every outcome but `Recorded` and
/// `Replayed` wrote nothing.
#[derive(Debug)]
pub(crate) enum RefundOutcome {
    /// A new refund; `saga_started` when its ClawbackSale saga was inserted
    /// (the workers should be woken).
    Recorded { refund: RefundRow, saga_started: bool },
    /// The external id was recorded with the same body: the stored refund.
    Replayed(RefundRow),
    /// The external id was recorded with another body.
    Conflict,
    /// No such sale in the program.
    SaleNotFound,
    /// The refund does not fit the sale (currency, time): INVALID_ARGUMENT.
    Invalid(tonic::Status),
    /// The sale's refunds would total more than its amount.
    ExceedsSale {
        /// The sale's amount (major units).
        sale_amount: Decimal,
        /// Σ its refunds so far.
        refunded: Decimal,
        /// This refund.
        requested: Decimal,
        /// The sale's currency.
        currency: String,
    },
}

/// The refunded sale as RecordRefund reads it (locked).
#[derive(Debug, sqlx::FromRow)]
struct LockedSale {
    id: SaleId,
    currency: String,
    amount: Decimal,
    refunded_amount: Decimal,
    occurred_at: DateTime<Utc>,
    saga_id: Option<SagaId>,
}

async fn refund_by_external(
    executor: impl sqlx::PgExecutor<'_>,
    program_id: ProgramId,
    external_id: &str,
) -> Result<Option<RefundRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{REFUND_SELECT} WHERE r.program_id = $1 AND r.external_id = $2")))
        .bind(program_id)
        .bind(external_id)
        .fetch_optional(executor)
        .await
}

/// Locks the refunded sale (`FOR UPDATE`: refunds of one sale serialize on
/// it, so the running total and the sequence are taken one at a time).
async fn lock_sale(
    tx: &mut Transaction<'_, Postgres>,
    refund: &RefundInput,
) -> Result<Option<LockedSale>, sqlx::Error> {
    const COLUMNS: &str = "id, currency, amount, refunded_amount, occurred_at, saga_id";
    let query = match &refund.sale {
        SaleRef::Id(id) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sales WHERE program_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(refund.program_id)
        .bind(*id),
        SaleRef::External(external_id) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sales WHERE program_id = $1 AND external_id = $2 FOR UPDATE"
        )))
        .bind(refund.program_id)
        .bind(external_id.clone()),
    };
    query.fetch_optional(&mut **tx).await
}

/// RecordRefund in one transaction: locks the sale; answers a repeated
/// external id (same body → the stored refund, other body → conflict);
/// checks the refund against the sale and Σ refunds ≤ the sale's amount;
/// inserts the refund with the next sequence and T, its ClawbackSale saga
/// (for a sale that has a settlement saga; a refund of an unattributed sale
/// is APPLIED at once with nothing to claw back), and adds it to the sale's
/// `refunded_amount`.
pub(crate) async fn record_refund(pool: &PgPool, refund: &RefundInput) -> Result<RefundOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let Some(sale) = lock_sale(&mut tx, refund).await? else {
        return Ok(RefundOutcome::SaleNotFound);
    };
    let hash = match refund.request_hash(sale.id) {
        Ok(hash) => hash,
        Err(status) => return Ok(RefundOutcome::Invalid(status)),
    };
    if let Some(stored) = refund_by_external(&mut *tx, refund.program_id, &refund.external_id).await? {
        return Ok(if stored.request_hash == hash { RefundOutcome::Replayed(stored) } else { RefundOutcome::Conflict });
    }
    if let Err(status) = check_against_sale(refund, &sale.currency, sale.occurred_at) {
        return Ok(RefundOutcome::Invalid(status));
    }
    let refunded_total = sale.refunded_amount + refund.amount.amount;
    if refunded_total > sale.amount {
        return Ok(RefundOutcome::ExceedsSale {
            sale_amount: sale.amount,
            refunded: sale.refunded_amount,
            requested: refund.amount.amount,
            currency: sale.currency,
        });
    }
    let sequence: i32 = sqlx::query_scalar("SELECT COALESCE(max(sequence), 0) + 1 FROM refunds WHERE sale_id = $1")
        .bind(sale.id)
        .fetch_one(&mut *tx)
        .await?;
    let id = RefundId::new_v7();
    let saga_id = sale.saga_id.map(|_| SagaId::new_v7());
    let (state, clawback) = match saga_id {
        Some(_) => (RefundState::Pending, None),
        None => (RefundState::Applied, Some(Decimal::ZERO)),
    };
    let inserted = sqlx::query(
        "INSERT INTO refunds (id, program_id, external_id, request_hash, sale_id, sequence, currency, amount,
             refunded_total, occurred_at, reason, state, saga_id, clawback_amount)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(refund.program_id)
    .bind(&refund.external_id)
    .bind(&hash)
    .bind(sale.id)
    .bind(sequence)
    .bind(&sale.currency)
    .bind(refund.amount.amount)
    .bind(refunded_total)
    .bind(refund.occurred_at)
    .bind(&refund.reason)
    .bind(state)
    .bind(saga_id)
    .bind(clawback)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // A concurrent refund of another sale took this external id first
        // (refunds of one sale cannot race: the sale is locked).
        Err(error) if accrue_kit::error::is_unique_violation(&error) => {
            tx.rollback().await?;
            let winner = refund_by_external(pool, refund.program_id, &refund.external_id).await?;
            return Ok(match winner {
                Some(stored) if stored.request_hash == hash => RefundOutcome::Replayed(stored),
                _ => RefundOutcome::Conflict,
            });
        }
        Err(error) => return Err(error.into()),
    }
    if let Some(saga_id) = saga_id {
        sqlx::query(
            "INSERT INTO sagas (id, program_id, sale_id, kind, state, refund_id, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(saga_id)
        .bind(refund.program_id)
        .bind(sale.id)
        .bind(ClawbackSale::KIND)
        .bind(SagaState::Running)
        .bind(id)
        // The refund RPC's trace, which the clawback's steps join.
        .bind(accrue_kit::telemetry::propagation::current_traceparent())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE sales SET refunded_amount = $2 WHERE id = $1")
        .bind(sale.id)
        .bind(refunded_total)
        .execute(&mut *tx)
        .await?;
    let stored: RefundRow = sqlx::query_as(sqlx::AssertSqlSafe(format!("{REFUND_SELECT} WHERE r.id = $1")))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    // A refund with nothing to claw back is applied here, not by a saga:
    // its refund.applied belongs to this transaction.
    if stored.state == RefundState::Applied {
        let event = events::refund(&catalogue::REFUND_APPLIED, &stored, stored.created_at);
        accrue_kit::events::insert(&mut tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(RefundOutcome::Recorded { refund: stored, saga_started: saga_id.is_some() })
}

/// A refund by id.
pub(crate) async fn get_refund(pool: &PgPool, id: RefundId) -> Result<Option<RefundRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{REFUND_SELECT} WHERE r.id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)
}

/// A program's refunds by (occurred_at, id) after `cursor`, at most `limit`,
/// optionally only one sale's and only in one state.
pub(crate) async fn list_refunds(
    pool: &PgPool,
    program_id: ProgramId,
    sale_id: Option<SaleId>,
    state: Option<RefundState>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<RefundRow>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{REFUND_SELECT}
         WHERE r.program_id = $1 AND ($2::uuid IS NULL OR r.sale_id = $2) AND ($3::text IS NULL OR r.state = $3)
           AND ($4::timestamptz IS NULL OR (r.occurred_at, r.id) > ($4, $5))
         ORDER BY r.occurred_at, r.id LIMIT $6"
    )))
    .bind(program_id)
    .bind(sale_id)
    .bind(state)
    .bind(cursor.map(|c| c.t))
    .bind(cursor.map(|c| c.id))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// RetrySaga of a failed ClawbackSale: its refund is PENDING again (inside
/// RetrySaga's transaction).
pub(crate) async fn reopen_refund(tx: &mut Transaction<'_, Postgres>, refund_id: RefundId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE refunds SET state = $2, failure_reason = '', clawback_amount = NULL WHERE id = $1")
        .bind(refund_id)
        .bind(RefundState::Pending)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- ClawbackSale

/// What a ClawbackSale saga works on: its refund and the refunded sale.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ClawbackSubject {
    #[sqlx(flatten)]
    pub(crate) refund: RefundRow,
    /// A: the sale's gross amount (major units).
    pub(crate) sale_amount: Decimal,
    /// The sale's SettleSale saga.
    pub(crate) settle_saga_id: Option<SagaId>,
}

/// The subjects of a claimed batch of ClawbackSale sagas, by saga id (one query).
pub(crate) async fn clawback_subjects(
    pool: &PgPool,
    saga_ids: &[SagaId],
) -> Result<HashMap<SagaId, ClawbackSubject>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        clawback_saga_id: SagaId,
        #[sqlx(flatten)]
        subject: ClawbackSubject,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT g.id AS clawback_saga_id, r.id, r.program_id, r.external_id, r.request_hash, r.sale_id,
                s.external_id AS sale_external_id, r.sequence, r.currency, r.amount, r.refunded_total,
                r.occurred_at, r.reason, r.state, r.failure_reason, r.saga_id, r.clawback_amount, r.created_at,
                s.amount AS sale_amount, s.saga_id AS settle_saga_id
         FROM sagas g JOIN refunds r ON r.id = g.refund_id JOIN sales s ON s.id = r.sale_id
         WHERE g.id = ANY($1)",
    )
    .bind(saga_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.clawback_saga_id, row.subject)).collect())
}

/// What ClawbackSale's resolve needs to know about a refund's sale.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ClawbackFacts {
    /// The refund.
    pub(crate) refund_id: RefundId,
    /// The state of the sale's SettleSale saga (None: the sale has none).
    pub(crate) settle_state: Option<SagaState>,
    /// The output of `settle_step` in the settlement saga's current run:
    /// its `succeeded` detail, or (a step without an undo) the one a later
    /// step's `started` carries; None until it is logged.
    pub(crate) settle_output: Option<serde_json::Value>,
    /// The sale's earlier refunds that are not APPLIED yet, by sequence, as a
    /// JSON array of `{id, sequence, state}`.
    pub(crate) unapplied_earlier: serde_json::Value,
}

/// The facts of every refund in `refund_ids` (one query); `settle_step` is
/// the SettleSale step whose logged output is wanted.
pub(crate) async fn clawback_facts(
    pool: &PgPool,
    refund_ids: &[RefundId],
    settle_step: &str,
) -> Result<Vec<ClawbackFacts>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id AS refund_id, g.state AS settle_state,
             (SELECT CASE e.event WHEN 'succeeded' THEN e.detail ELSE e.detail -> 'carried' -> $2 END
              FROM saga_step_events e
              WHERE e.saga_id = g.id AND e.run = g.run
                AND ((e.step = $2 AND e.event = 'succeeded')
                     OR (e.event = 'started' AND e.detail -> 'carried' -> $2 IS NOT NULL))
              ORDER BY e.id DESC LIMIT 1) AS settle_output,
             COALESCE((SELECT jsonb_agg(jsonb_build_object('id', p.id, 'sequence', p.sequence, 'state', p.state)
                                 ORDER BY p.sequence)
                       FROM refunds p
                       WHERE p.sale_id = r.sale_id AND p.sequence < r.sequence AND p.state <> 'APPLIED'),
                      '[]'::jsonb) AS unapplied_earlier
         FROM refunds r JOIN sales s ON s.id = r.sale_id LEFT JOIN sagas g ON g.id = s.saga_id
         WHERE r.id = ANY($1)",
    )
    .bind(refund_ids)
    .bind(settle_step)
    .fetch_all(pool)
    .await
}

/// A refund clawed back, for the saga (and generation) that applied it.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) saga_id: SagaId,
    pub(crate) generation: i64,
    /// Σ the DEBIT entries it posted (major units).
    pub(crate) clawback_amount: Decimal,
}

/// Sets each refunded sale's state from its APPLIED refunds: none → SETTLED,
/// the latest one's T = the sale's amount → REFUNDED, else
/// PARTIALLY_REFUNDED. Refunds apply in sequence order, so the largest T
/// among the applied ones is the latest. Only settled sales change (an
/// UNATTRIBUTED sale keeps its state when refunded).
async fn refresh_sale_states(conn: &mut PgConnection, sale_ids: &[SaleId]) -> Result<(), sqlx::Error> {
    if sale_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE sales s SET state = CASE
                 WHEN m.top IS NULL THEN $2
                 WHEN m.top = s.amount THEN $3
                 ELSE $4 END
         FROM (SELECT sale_id, max(refunded_total) FILTER (WHERE state = $5) AS top
               FROM refunds WHERE sale_id = ANY($1) GROUP BY sale_id) m
         WHERE s.id = m.sale_id AND s.state IN ($2, $3, $4)",
    )
    .bind(sale_ids)
    .bind(SaleState::Settled)
    .bind(SaleState::Refunded)
    .bind(SaleState::PartiallyRefunded)
    .bind(RefundState::Applied)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks each saga's refund APPLIED with its clawback and moves its sale to
/// PARTIALLY_REFUNDED or REFUNDED, fenced on the saga's generation (a saga a
/// newer owner holds changes nothing), in one transaction.
pub(crate) async fn apply_refunds(pool: &PgPool, applied: &[Applied]) -> Result<(), sqlx::Error> {
    if applied.is_empty() {
        return Ok(());
    }
    let saga_ids: Vec<SagaId> = applied.iter().map(|a| a.saga_id).collect();
    let generations: Vec<i64> = applied.iter().map(|a| a.generation).collect();
    let amounts: Vec<Decimal> = applied.iter().map(|a| a.clawback_amount).collect();
    let mut tx = pool.begin().await?;
    let (sales, refunds): (Vec<SaleId>, Vec<RefundId>) = sqlx::query_as::<_, (SaleId, RefundId)>(
        "UPDATE refunds r SET state = $4, clawback_amount = u.clawback, failure_reason = ''
         FROM UNNEST($1::uuid[], $2::bigint[], $3::numeric[]) AS u(saga_id, generation, clawback)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE r.id = g.refund_id
         RETURNING r.sale_id, r.id",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .bind(&amounts)
    .bind(RefundState::Applied)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .unzip();
    refresh_sale_states(&mut tx, &sales).await?;
    // refund.applied, in the transaction that applies it: the refunds as
    // GetRefund shows them now. A step re-run after a crash writes it again
    // (at least once; consumers deduplicate on the subject and state).
    let rows: Vec<RefundRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{REFUND_SELECT} WHERE r.id = ANY($1)")))
        .bind(&refunds)
        .fetch_all(&mut *tx)
        .await?;
    let now = Utc::now();
    let applied: Vec<NewEvent> = rows.iter().map(|row| events::refund(&catalogue::REFUND_APPLIED, row, now)).collect();
    accrue_kit::events::insert(&mut tx, &applied).await.map_err(|error| error.0)?;
    tx.commit().await
}

/// Puts each saga's APPLIED refund back to PENDING without a clawback and its
/// sale back to the state before it (SETTLED, or PARTIALLY_REFUNDED after
/// earlier refunds), fenced, in one transaction.
pub(crate) async fn unapply_refunds(pool: &PgPool, sagas: &[&Saga]) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let (saga_ids, generations): (Vec<SagaId>, Vec<i64>) = sagas.iter().map(|s| (s.id, s.generation)).unzip();
    let mut tx = pool.begin().await?;
    let sales: Vec<SaleId> = sqlx::query_scalar(
        "UPDATE refunds r SET state = $3, clawback_amount = NULL
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(saga_id, generation)
         JOIN sagas g ON g.id = u.saga_id AND g.generation = u.generation
         WHERE r.id = g.refund_id AND r.state = $4
         RETURNING r.sale_id",
    )
    .bind(&saga_ids)
    .bind(&generations)
    .bind(RefundState::Pending)
    .bind(RefundState::Applied)
    .fetch_all(&mut *tx)
    .await?;
    refresh_sale_states(&mut tx, &sales).await?;
    tx.commit().await
}

/// Marks each unwound saga's refund FAILED with the saga's reason (inside the
/// engine's fenced transaction that fails the sagas); the sale is untouched.
pub(crate) async fn fail_refunds(conn: &mut PgConnection, sagas: &[&Saga]) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let saga_ids: Vec<SagaId> = sagas.iter().map(|s| s.id).collect();
    let reasons: Vec<&str> = sagas.iter().map(|s| s.failure_reason.as_str()).collect();
    sqlx::query(
        "UPDATE refunds r SET state = $3, failure_reason = u.reason, clawback_amount = NULL
         FROM UNNEST($1::uuid[], $2::text[]) AS u(saga_id, reason)
         JOIN sagas g ON g.id = u.saga_id
         WHERE r.id = g.refund_id",
    )
    .bind(&saga_ids)
    .bind(&reasons)
    .bind(RefundState::Failed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
