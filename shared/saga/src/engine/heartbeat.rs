//! The heartbeat: while a worker drives a batch, the batch's leases are
//! renewed every heartbeat interval, fenced on owner and generation, so that
//! a long step (a slow peer call) never loses them while a dead worker's run
//! out within one lease. A saga found held by no one or by a newer owner is
//! reported lost, and the worker drops it at its next step.

use std::sync::{Mutex, PoisonError};

// The engine's types and imports.
use super::*;

/// The leases of the batch a worker drives, shared by the worker and its
/// heartbeat (both futures of the worker's task).
pub(super) struct Leases {
    /// The sagas still renewed: id and claimed generation.
    held: Mutex<Vec<(SagaId, i64)>>,
    /// Sagas no longer held at their claimed generation: given back by the
    /// worker itself (released, closed), or taken by a newer owner after the
    /// lease ran out (e.g. while the database was out of reach).
    lost: Mutex<HashSet<SagaId>>,
}

impl Leases {
    /// The leases of a freshly claimed batch.
    pub(super) fn of(batch: &[Saga]) -> Self {
        Leases {
            held: Mutex::new(batch.iter().map(|s| (s.id, s.generation)).collect()),
            lost: Mutex::new(HashSet::new()),
        }
    }

    fn held(&self) -> Vec<(SagaId, i64)> {
        // A panic elsewhere cannot leave the list half-written (it is
        // replaced whole), so a poisoned lock is still good to read.
        self.held.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// After a beat over `checked`: the sagas not in `still_held` are no
    /// longer renewed and are reported lost.
    fn keep(&self, checked: &[(SagaId, i64)], still_held: &HashSet<SagaId>) {
        let gone: Vec<SagaId> = checked.iter().map(|(id, _)| *id).filter(|id| !still_held.contains(id)).collect();
        if gone.is_empty() {
            return;
        }
        self.held.lock().unwrap_or_else(PoisonError::into_inner).retain(|(id, _)| still_held.contains(id));
        self.lost.lock().unwrap_or_else(PoisonError::into_inner).extend(gone);
    }

    /// Drops from the batch every saga still in it that the heartbeat found
    /// lost: its lease ran out and a newer owner claimed it, so this worker
    /// must not start another step of it (its fenced writes would not apply
    /// anyway).
    pub(super) fn drop_lost(&self, batch: &mut [Saga]) {
        let lost = self.lost.lock().unwrap_or_else(PoisonError::into_inner);
        if lost.is_empty() {
            return;
        }
        for saga in batch.iter_mut().filter(|s| !s.gone && lost.contains(&s.id)) {
            tracing::warn!(saga = %saga.id, "the heartbeat found the saga's lease taken by a newer owner; dropping it");
            saga.gone = true;
        }
    }
}

impl<D: SagaDef> Engine<D> {
    /// Renews `leases` every heartbeat interval until dropped (it never
    /// returns). A failed renewal is logged and tried again at the next beat:
    /// a lease outlives two missed beats by default.
    pub(super) async fn heartbeat(&self, owner: &str, leases: &Leases) -> Infallible {
        let every = self.options.heartbeat_interval();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut errors: u32 = 0;
        loop {
            ticks.tick().await;
            let held = leases.held();
            if held.is_empty() {
                continue;
            }
            match renew(&self.pool, owner, &held, millis(self.options.lease)).await {
                Ok(still_held) => {
                    errors = 0;
                    leases.keep(&held, &still_held);
                }
                Err(error) => {
                    errors = errors.saturating_add(1);
                    if errors <= 3 || errors.is_multiple_of(50) {
                        tracing::warn!(%owner, %error, sagas = held.len(), "renewing saga leases failed; retrying at the next beat");
                    }
                }
            }
        }
    }
}

/// Extends the lease of each of `held` (id, generation) that `owner` still
/// holds at that generation by `lease_ms` from now; returns the sagas still
/// held (renewed, or locked right now by a write and renewed next beat).
pub(super) async fn renew(
    pool: &PgPool,
    owner: &str,
    held: &[(SagaId, i64)],
    lease_ms: i64,
) -> Result<HashSet<SagaId>, sqlx::Error> {
    let (ids, generations): (Vec<SagaId>, Vec<i64>) = held.iter().copied().unzip();
    // SKIP LOCKED: a locked row is being written by this worker's own fenced
    // write (which locks the batch's rows in its own order, so waiting could
    // deadlock with it), or taken by a claim now that its lease ran out.
    // Either way the beat must not wait; the row is checked below.
    let mut still_held: HashSet<SagaId> = sqlx::query_scalar(
        "WITH held AS (
             SELECT s.id FROM sagas s
             JOIN UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
               ON s.id = u.id AND s.generation = u.generation
             WHERE s.owner = $3
             FOR UPDATE OF s SKIP LOCKED)
         UPDATE sagas s SET lease_expires_at = now() + $4::bigint * interval '1 millisecond'
         FROM held WHERE s.id = held.id
         RETURNING s.id",
    )
    .bind(&ids)
    .bind(&generations)
    .bind(owner)
    .bind(lease_ms)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    if still_held.len() < held.len() {
        // Not renewed: skipped (locked) but still ours, or not ours any more.
        let (ids, generations): (Vec<SagaId>, Vec<i64>) =
            held.iter().copied().filter(|(id, _)| !still_held.contains(id)).unzip();
        let ours: Vec<SagaId> = sqlx::query_scalar(
            "SELECT s.id FROM sagas s
             JOIN UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
               ON s.id = u.id AND s.generation = u.generation
             WHERE s.owner = $3",
        )
        .bind(&ids)
        .bind(&generations)
        .bind(owner)
        .fetch_all(pool)
        .await?;
        still_held.extend(ours);
    }
    Ok(still_held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::StepLog;

    fn saga(n: u128, generation: i64) -> Saga {
        Saga {
            id: SagaId::from_u128(n),
            run: 1,
            generation,
            attempt: 1,
            failure_reason: String::new(),
            traceparent: None,
            unwinding: false,
            log: vec![StepLog::default()],
            gone: false,
            marked: None,
        }
    }

    #[test]
    fn a_lease_found_lost_is_no_longer_renewed_and_its_saga_is_dropped() {
        let mut batch = vec![saga(1, 4), saga(2, 7), saga(3, 9)];
        let leases = Leases::of(&batch);
        // Saga 3 was released by the worker itself; saga 2 was taken over.
        batch[2].gone = true;
        let checked = leases.held();
        leases.keep(&checked, &HashSet::from([SagaId::from_u128(1)]));
        assert_eq!(leases.held(), vec![(SagaId::from_u128(1), 4)]);
        leases.drop_lost(&mut batch);
        let gone: Vec<bool> = batch.iter().map(|s| s.gone).collect();
        assert_eq!(gone, [false, true, true]);
    }
}
