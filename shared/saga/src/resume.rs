//! An operator's way back for a saga left STUCK by internal errors.

use accrue_types::SagaId;
use sqlx::PgConnection;

use crate::state::{SagaState, StepEvent};

/// Resumes a STUCK saga whose step gave up after
/// [`SagaOptions::internal_attempts`](crate::SagaOptions::internal_attempts)
/// internal errors, once an operator has fixed their cause: in the same run
/// (its log kept, so finished steps are not run again), in the state and with
/// the reason it had (running, or unwinding for an undo that gave up),
/// unowned, due now, `attempt` back to 0 (which also gives it a fresh set of
/// internal attempts). Returns the state it resumed in, or `None` when `id`
/// is not such a saga: not STUCK, or stuck for another reason (an undo that
/// failed for good, an unreadable log), which no retry can mend.
///
/// Runs on `conn` (the caller's transaction, if any), whose search_path holds
/// `sagas` and `saga_step_events`. Reads the current run's last `failed`
/// event: the engine writes it, with the state and reason to go back to,
/// in the transaction that leaves the saga stuck, and a stuck saga is never
/// claimed, so nothing is logged after it.
pub async fn resume_stuck(conn: &mut PgConnection, id: SagaId) -> Result<Option<SagaState>, sqlx::Error> {
    let resumed: Option<SagaState> = sqlx::query_scalar(
        "UPDATE sagas s SET state = r.state, failure_reason = r.reason, attempt = 0, owner = NULL,
             lease_expires_at = NULL, next_attempt_at = now(), updated_at = now()
         FROM (SELECT e.detail -> 'resume' ->> 'state' AS state, e.detail -> 'resume' ->> 'reason' AS reason
               FROM saga_step_events e JOIN sagas x ON x.id = e.saga_id AND x.run = e.run
               WHERE e.saga_id = $1 AND e.event = $2
               ORDER BY e.id DESC LIMIT 1) r
         WHERE s.id = $1 AND s.state = $3 AND r.state IN ($4, $5) AND r.reason IS NOT NULL
         RETURNING s.state",
    )
    .bind(id)
    .bind(StepEvent::Failed)
    .bind(SagaState::Stuck)
    .bind(SagaState::Running.as_str())
    .bind(SagaState::Unwinding.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(resumed)
}
