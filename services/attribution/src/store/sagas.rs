//! Saga rows and step events as the API shows them, and RetrySaga.

// The store's imports and shared helpers.
use super::*;

/// A saga by id.
pub(crate) async fn get_saga(pool: &PgPool, id: SagaId) -> Result<Option<SagaRow>, StoreError> {
    SAGAS.get(pool, id).await
}

/// A saga's step log across all runs, oldest first.
pub(crate) async fn saga_events(pool: &PgPool, id: SagaId) -> Result<Vec<EventRow>, StoreError> {
    sqlx::query_as(
        "SELECT run, step, event, detail, generation, created_at FROM saga_step_events WHERE saga_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// A program's sagas, oldest first, after `cursor`, and how many match the
/// filters (a state, a kind; None: any).
pub(crate) async fn list_sagas(
    pool: &PgPool,
    program_id: ProgramId,
    state: Option<SagaState>,
    kind: Option<&str>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<SagaRow>, i64), StoreError> {
    // Sagas in flight (running, unwinding) are read from the runnable index,
    // which holds only them, instead of from every saga the program ever ran:
    // polling what is in flight (an operator, the replay, the bench while it
    // measures) cost a scan of the whole history per call (issue 15). The
    // literal list is what lets even a generic plan prove the partial index's
    // predicate.
    let in_flight = if matches!(state, Some(SagaState::Running | SagaState::Unwinding)) {
        "AND state IN ('running', 'unwinding')"
    } else {
        ""
    };
    let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas
         WHERE program_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3)
           {in_flight} AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))
         ORDER BY created_at, id LIMIT $6"
    )))
    .bind(program_id)
    .bind(state)
    .bind(kind)
    .bind(cursor.map(|c| c.t))
    .bind(cursor.map(|c| c.id))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM sagas
         WHERE program_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR kind = $3) {in_flight}"
    )))
    .bind(program_id)
    .bind(state)
    .bind(kind)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// What RetrySaga did.
#[derive(Debug)]
pub(crate) enum RetryOutcome {
    /// Restarted: a new run, attempt 0, state running; its sale (SettleSale)
    /// or its refund (ClawbackSale) back to PENDING.
    Restarted(SagaRow),
    /// Resumed a saga that was STUCK after internal errors: same run, where
    /// it stopped (running or unwinding), attempt 0; its sale or refund,
    /// still PENDING, untouched.
    Resumed(SagaRow),
    /// No such saga.
    NotFound,
    /// The saga is neither FAILED nor resumable (its current state).
    NotFailed(SagaState),
}

/// Starts a FAILED saga again (a new run with its own log) and, in the same
/// transaction, puts what it drives back to PENDING: a SettleSale's sale, or a
/// ClawbackSale's refund (its sale's state is the refunds' to change, and a
/// failed clawback never changed it). A STUCK saga whose step gave up after
/// internal errors is resumed instead ([`accrue_saga::resume_stuck`]): a new
/// run would redo steps whose effects the current run still holds (a
/// posting under the run's key), while resuming skips them; the operator
/// retries once the cause is fixed. A saga stuck on a failed undo is not
/// retried (`NotFailed`).
pub(crate) async fn retry_saga(pool: &PgPool, id: SagaId) -> Result<RetryOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let current: Option<(SagaState,)> =
        sqlx::query_as("SELECT state FROM sagas WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
    let Some((state,)) = current else {
        return Ok(RetryOutcome::NotFound);
    };
    if state == SagaState::Stuck {
        if accrue_saga::resume_stuck(&mut tx, id).await?.is_none() {
            return Ok(RetryOutcome::NotFailed(state));
        }
        let saga: SagaRow =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1")))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        return Ok(RetryOutcome::Resumed(saga));
    }
    if state != SagaState::Failed {
        return Ok(RetryOutcome::NotFailed(state));
    }
    let saga: SagaRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE sagas SET run = run + 1, attempt = 0, state = $2, owner = NULL, lease_expires_at = NULL,
             next_attempt_at = now(), failure_reason = '', updated_at = now()
         WHERE id = $1 RETURNING {SAGA_COLUMNS}"
    )))
    .bind(id)
    .bind(SagaState::Running)
    .fetch_one(&mut *tx)
    .await?;
    match saga.refund_id {
        Some(refund_id) => refunds::reopen_refund(&mut tx, refund_id).await?,
        None => {
            sqlx::query(
                "UPDATE sales SET state = $2, failure_reason = '', base_commission = NULL, total_commission = NULL
                 WHERE id = $1",
            )
            .bind(saga.sale_id)
            .bind(SaleState::Pending)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(RetryOutcome::Restarted(saga))
}

// ---------------------------------------------------------------- SettleSale
