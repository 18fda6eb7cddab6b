//! The engine's fenced writes: step events appended only while the claimed
//! generation holds, the saga-row changes that go with them, and release.
//! (Lease renewal is the heartbeat's.)

// The engine's types and imports.
use super::*;

impl<D: SagaDef> Engine<D> {
    /// Writes `succeeded` with each output; after the last step the saga is
    /// done. A step without an undo (before the last) writes nothing: its
    /// outputs wait in the batch for the next `started`. Before the last, the same transaction also writes `started` of
    /// the next step for the sagas that will run it: one fenced transaction
    /// (and one pass of row locks) per step instead of two, which was a
    /// large share of the step log's cost (issue 15). A mark written ahead
    /// of a step that then never runs (a shutdown between the two) is what
    /// a crash right after `started` leaves too: the step re-runs, or an
    /// unwind undoes it, and every undo copes with an action that never
    /// took effect.
    pub(super) async fn record_succeeded(
        &self,
        batch: &mut [Saga],
        index: usize,
        ok: Vec<(usize, Output)>,
    ) -> Result<(), sqlx::Error> {
        let steps = self.def.steps();
        let last = index + 1 == steps.len();
        if steps[index].undo.is_none() && !last {
            // Written with the next `started` (see `Step::undo`).
            for (i, output) in ok {
                batch[i].log[index].output = Some(output);
                batch[i].log[index].unlogged = true;
            }
            return Ok(());
        }
        if last {
            return self.record_done(batch, index, ok).await;
        }
        let mut premarked: HashSet<SagaId> = HashSet::new();
        let applied: HashSet<usize> = self
            .write_fenced(batch, index, StepEvent::Succeeded, &ok, async |tx, batch, applied| {
                if steps[index + 1].undo.is_some() {
                    let next: Vec<usize> =
                        applied.iter().copied().filter(|&i| batch[i].log[index + 1].output.is_none()).collect();
                    let (ids, generations) = fence_of(batch, &next);
                    let empty = vec!["{}"; ids.len()];
                    premarked =
                        append(tx, steps[index + 1].name, StepEvent::Started, &ids, &generations, &empty).await?;
                }
                Ok(())
            })
            .await?
            .into_iter()
            .collect();
        for (i, output) in ok {
            if applied.contains(&i) {
                batch[i].log[index].output = Some(output);
                if premarked.contains(&batch[i].id) {
                    batch[i].marked = Some(index + 1);
                    batch[i].log[index + 1].started = true;
                }
            }
        }
        Ok(())
    }

    /// The last step's `succeeded`: in one transaction, closes the sagas
    /// done (fenced) and appends `succeeded` with each output for the sagas
    /// it closed — one statement ([`close_done`]) — and lets the
    /// definition's `on_done` write its change. The close's update holds
    /// each saga row, so this append takes no share lock as the other fenced
    /// writes do: one lock record in the WAL per saga, not two (issue 15).
    async fn record_done(&self, batch: &mut [Saga], index: usize, ok: Vec<(usize, Output)>) -> Result<(), sqlx::Error> {
        if ok.is_empty() {
            return Ok(());
        }
        let indices: Vec<usize> = ok.iter().map(|(i, _)| *i).collect();
        let (ids, generations) = fence_of(batch, &indices);
        let details: Vec<&str> = ok.iter().map(|(_, detail)| detail.json()).collect();
        let mut tx = self.pool.begin().await?;
        let closed = close_done(&mut tx, self.def.steps()[index].name, &ids, &generations, &details).await?;
        let sagas: Vec<&Saga> = indices.iter().map(|&i| &batch[i]).filter(|s| closed.contains(&s.id)).collect();
        self.def.on_done(&mut tx, &sagas).await?;
        tx.commit().await?;
        super::count_entered::<D>(SagaState::Done, closed.len());
        drop_lost(batch, &indices, &closed);
        for (i, output) in ok {
            if closed.contains(&batch[i].id) {
                batch[i].log[index].output = Some(output);
                batch[i].gone = true;
            }
        }
        Ok(())
    }

    /// Writes `failed` (transient) and releases the saga until its backoff has passed.
    pub(super) async fn record_transient(
        &self,
        batch: &mut [Saga],
        index: usize,
        failed_in: FailedIn,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        self.record_retry(batch, index, failed_in, failures, false).await
    }

    /// Internal errors: each saga with attempts left is retried like a
    /// transient failure (its `failed` event marked internal, so that the
    /// next claim counts it); one whose step has now failed
    /// `internal_attempts` times is left STUCK and given back, its reason the
    /// last error, its event recording where [`resume_stuck`](crate::resume_stuck)
    /// takes it back to (the state and reason it had).
    pub(super) async fn record_internal(
        &self,
        batch: &mut [Saga],
        index: usize,
        failed_in: FailedIn,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        if failures.is_empty() {
            return Ok(());
        }
        let limit = self.options.internal_attempts.max(1);
        let out_of_attempts = |i: usize| batch[i].log[index].internal_failures.saturating_add(1) >= limit;
        let (exhausted, retry): (Vec<_>, Vec<_>) = failures.into_iter().partition(|(i, _)| out_of_attempts(*i));
        self.record_retry(batch, index, failed_in, retry, true).await?;
        if exhausted.is_empty() {
            return Ok(());
        }
        let step = self.def.steps()[index].name;
        let (phase, resume_state) = match failed_in {
            FailedIn::Action => ("action", SagaState::Running),
            FailedIn::Undo => ("undo", SagaState::Unwinding),
        };
        let reasons: Vec<String> = exhausted
            .iter()
            .map(|(i, message)| {
                let given_up =
                    format!("{message} (gave up after {limit} internal errors; resumable once the cause is fixed)");
                match failed_in {
                    FailedIn::Action => format!("{step}: {given_up}"),
                    FailedIn::Undo => format!("{}; undo of {step} failed: {given_up}", batch[*i].failure_reason),
                }
            })
            .collect();
        let details: Vec<(usize, Output)> = exhausted
            .iter()
            .map(|(i, message)| {
                let resume = json!({"state": resume_state.as_str(), "reason": batch[*i].failure_reason});
                let detail = json!({"phase": phase, "error": message, "transient": false, "internal": true,
                    "attempt": batch[*i].attempt, "internal_failures": limit, "resume": resume});
                (*i, Output::from_value(&detail))
            })
            .collect();
        let reason_of: HashMap<usize, &String> = exhausted.iter().map(|(i, _)| *i).zip(&reasons).collect();
        let applied: HashSet<usize> = self
            .write_fenced(batch, index, StepEvent::Failed, &details, async |tx, batch, applied| {
                let rows: Vec<(SagaId, i64, String)> = applied
                    .iter()
                    .filter_map(|i| {
                        reason_of.get(i).map(|reason| (batch[*i].id, batch[*i].generation, (*reason).clone()))
                    })
                    .collect();
                set_state(tx, SagaState::Stuck, &rows, true).await
            })
            .await?
            .into_iter()
            .collect();
        super::count_entered::<D>(SagaState::Stuck, applied.len());
        for ((i, message), reason) in exhausted.into_iter().zip(reasons) {
            if applied.contains(&i) {
                tracing::error!(saga = %batch[i].id, kind = D::KIND, step, phase, error = %message, %reason, "saga STUCK: internal errors kept coming; operator action needed");
            }
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Writes `failed` (retried: transient, or internal with attempts left)
    /// and releases the saga until its backoff has passed.
    async fn record_retry(
        &self,
        batch: &mut [Saga],
        index: usize,
        failed_in: FailedIn,
        failures: Vec<(usize, String)>,
        internal: bool,
    ) -> Result<(), sqlx::Error> {
        let phase = match failed_in {
            FailedIn::Action => "action",
            FailedIn::Undo => "undo",
        };
        let details: Vec<(usize, Output)> = failures
            .iter()
            .map(|(i, message)| {
                let attempt = batch[*i].attempt;
                let detail = if internal {
                    json!({"phase": phase, "error": message, "transient": true, "internal": true, "attempt": attempt})
                } else {
                    json!({"phase": phase, "error": message, "transient": true, "attempt": attempt})
                };
                (*i, Output::from_value(&detail))
            })
            .collect();
        let (retry_base, retry_max) = (self.options.retry_base, self.options.retry_max);
        self.write_fenced(batch, index, StepEvent::Failed, &details, async |tx, batch, applied| {
            let rows: Vec<(SagaId, i64, i64)> = applied
                .iter()
                .map(|&i| {
                    let delay = backoff_delay(batch[i].attempt, retry_base, retry_max);
                    (batch[i].id, batch[i].generation, millis(delay))
                })
                .collect();
            release(tx, &rows).await
        })
        .await?;
        let step = self.def.steps()[index].name;
        for (i, message) in failures {
            if internal {
                let failures = batch[i].log[index].internal_failures.saturating_add(1);
                tracing::warn!(saga = %batch[i].id, step, phase, error = %message, attempt = batch[i].attempt, internal_failures = failures, "internal error in a saga step; will retry");
            } else {
                tracing::info!(saga = %batch[i].id, step, phase, error = %message, attempt = batch[i].attempt, "transient saga failure; will retry");
            }
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Writes `failed` (permanent) for each failure and, fenced in the same
    /// transaction, the saga's next state with its reason: an action's
    /// failure turns the saga to unwinding (the worker keeps it to run the
    /// undos); an undo's leaves it stuck and given back (an operator must look).
    pub(super) async fn record_permanent(
        &self,
        batch: &mut [Saga],
        index: usize,
        failed_in: FailedIn,
        failures: Vec<(usize, String)>,
    ) -> Result<(), sqlx::Error> {
        let step = self.def.steps()[index].name;
        let (phase, state, release) = match failed_in {
            FailedIn::Action => ("action", SagaState::Unwinding, false),
            FailedIn::Undo => ("undo", SagaState::Stuck, true),
        };
        let reasons: Vec<String> = failures
            .iter()
            .map(|(i, message)| match failed_in {
                FailedIn::Action => format!("{step}: {message}"),
                FailedIn::Undo => format!("{}; undo of {step} failed: {message}", batch[*i].failure_reason),
            })
            .collect();
        let details: Vec<(usize, Output)> = failures
            .iter()
            .map(|(i, message)| {
                (*i, Output::from_value(&json!({"phase": phase, "error": message, "transient": false})))
            })
            .collect();
        let reason_of: HashMap<usize, &String> = failures.iter().map(|(i, _)| *i).zip(&reasons).collect();
        let applied: HashSet<usize> = self
            .write_fenced(batch, index, StepEvent::Failed, &details, async |tx, batch, applied| {
                let rows: Vec<(SagaId, i64, String)> = applied
                    .iter()
                    .filter_map(|i| {
                        reason_of.get(i).map(|reason| (batch[*i].id, batch[*i].generation, (*reason).clone()))
                    })
                    .collect();
                set_state(tx, state, &rows, release).await
            })
            .await?
            .into_iter()
            .collect();
        super::count_entered::<D>(state, applied.len());
        for ((i, message), reason) in failures.into_iter().zip(reasons) {
            match failed_in {
                FailedIn::Action if applied.contains(&i) => {
                    tracing::info!(saga = %batch[i].id, step, error = %message, "permanent saga failure; unwinding");
                    batch[i].unwinding = true;
                    batch[i].failure_reason = reason;
                }
                FailedIn::Action => {}
                FailedIn::Undo => {
                    tracing::error!(saga = %batch[i].id, kind = D::KIND, step, error = %message, "saga STUCK: an undo action failed; operator action needed");
                    batch[i].gone = true;
                }
            }
        }
        Ok(())
    }

    /// Appends `event` for each saga at `need`; returns the indices whose
    /// fenced write applied and drops the rest. The event itself is the
    /// record, except that a `started` carries the outputs of the steps
    /// without an undo just before it (see [`carried`]).
    pub(super) async fn append_marks(
        &self,
        batch: &mut [Saga],
        need: &[usize],
        index: usize,
        event: StepEvent,
    ) -> Result<Vec<usize>, sqlx::Error> {
        let steps = self.def.steps();
        let pairs: Vec<(usize, Output)> = need
            .iter()
            .map(|&i| match event {
                StepEvent::Started => (i, carried(steps, &batch[i], index)),
                _ => (i, Output::empty()),
            })
            .collect();
        let applied = self.append_pairs(batch, &pairs, index, event).await?;
        if event == StepEvent::Started {
            for &i in &applied {
                for log in &mut batch[i].log[..index] {
                    log.unlogged = false;
                }
            }
        }
        Ok(applied)
    }

    /// Appends `event` for each `(index, detail)`; returns the indices whose
    /// fenced write applied and drops the rest (a newer owner has them).
    pub(super) async fn append_pairs(
        &self,
        batch: &mut [Saga],
        pairs: &[(usize, Output)],
        index: usize,
        event: StepEvent,
    ) -> Result<Vec<usize>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        // One statement needs no transaction block: it commits on its own, and
        // its share locks on the saga rows last until then, as they did
        // inside a block — one round trip instead of BEGIN, INSERT, COMMIT
        // (issue 15: post's `started`, at every settle batch).
        let mut conn = self.pool.acquire().await?;
        let (indices, kept) = self.append_fenced(&mut conn, batch, index, event, pairs).await?;
        drop_lost(batch, &indices, &kept);
        Ok(indices.into_iter().filter(|&i| kept.contains(&batch[i].id)).collect())
    }

    /// The generation-fenced write of a step event: appends `event` for each
    /// `(index, detail)` (see [`append`]) and, in the same transaction, lets
    /// `then` write its change to the saga rows whose event was written, with
    /// the same fence (`WHERE s.generation = u.generation`). A saga a newer
    /// owner has claimed gets neither write and is dropped from the batch.
    /// Returns the indices whose event was written, in `pairs` order.
    pub(super) async fn write_fenced(
        &self,
        batch: &mut [Saga],
        index: usize,
        event: StepEvent,
        pairs: &[(usize, Output)],
        then: impl AsyncFnOnce(&mut PgConnection, &[Saga], &[usize]) -> Result<(), sqlx::Error>,
    ) -> Result<Vec<usize>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let (indices, kept) = self.append_fenced(&mut tx, batch, index, event, pairs).await?;
        let applied: Vec<usize> = indices.iter().copied().filter(|&i| kept.contains(&batch[i].id)).collect();
        then(&mut tx, batch, &applied).await?;
        tx.commit().await?;
        drop_lost(batch, &indices, &kept);
        Ok(applied)
    }

    /// Appends `event` for each `(index, detail)` on `conn`, fenced (see
    /// [`append`]). Returns the indices of
    /// `pairs`, in order, and the sagas whose event was written; the caller
    /// drops the rest once its write has committed.
    async fn append_fenced(
        &self,
        conn: &mut PgConnection,
        batch: &[Saga],
        index: usize,
        event: StepEvent,
        pairs: &[(usize, Output)],
    ) -> Result<(Vec<usize>, HashSet<SagaId>), sqlx::Error> {
        let step = self.def.steps()[index].name;
        let indices: Vec<usize> = pairs.iter().map(|(i, _)| *i).collect();
        let (ids, generations) = fence_of(batch, &indices);
        // Sent as the outputs' JSON text, serialized once when the step
        // produced them.
        let details: Vec<&str> = pairs.iter().map(|(_, detail)| detail.json()).collect();
        let kept = append(conn, step, event, &ids, &generations, &details).await?;
        Ok((indices, kept))
    }

    /// Graceful shutdown: gives every held saga back at once (no backoff).
    pub(super) async fn release_all(&self, batch: &mut [Saga]) -> Result<(), sqlx::Error> {
        let rows: Vec<(SagaId, i64, i64)> = batch.iter().filter(|s| !s.gone).map(|s| (s.id, s.generation, 0)).collect();
        release(&self.pool, &rows).await?;
        for saga in batch.iter_mut() {
            saga.gone = true;
        }
        Ok(())
    }
}

/// The detail of step `index`'s `started` for `saga`:
/// `{"carried": {name: output, …}}` with the outputs of the earlier steps
/// without an undo that are not in the log yet (they log nothing of their
/// own and are not [`SagaDef::UNLOGGED_STEPS`]), or `{}`. Built from
/// the outputs' JSON text, which only serde_json wrote; step names are
/// `[a-z_]` (the log's CHECK), so they need no escaping.
pub(super) fn carried<D: SagaDef>(steps: &[crate::Step<D>], saga: &Saga, index: usize) -> Output {
    let mut json = String::new();
    for (step, log) in steps[..index].iter().zip(&saga.log[..index]) {
        if D::UNLOGGED_STEPS.contains(&step.name) {
            continue;
        }
        if let (Some(output), true) = (&log.output, log.unlogged) {
            json.push(if json.is_empty() { '{' } else { ',' });
            json.push('"');
            json.push_str(step.name);
            json.push_str("\":");
            json.push_str(output.json());
        }
    }
    if json.is_empty() {
        return Output::empty();
    }
    json.push('}');
    Output::from_json_text(format!("{{\"{}\":{json}}}", super::CARRIED))
}

/// The fence of each saga at `indices`: its id and claimed generation, as the
/// `UNNEST($1::uuid[], $2::bigint[])` of a fenced statement binds them.
pub(super) fn fence_of(batch: &[Saga], indices: &[usize]) -> (Vec<SagaId>, Vec<i64>) {
    indices.iter().map(|&i| (batch[i].id, batch[i].generation)).unzip()
}

/// The columns of fenced rows `(saga, generation, value)`, to bind as arrays.
pub(super) fn columns_of<T: Clone>(rows: &[(SagaId, i64, T)]) -> (Vec<SagaId>, Vec<i64>, Vec<T>) {
    let ids = rows.iter().map(|r| r.0).collect();
    let generations = rows.iter().map(|r| r.1).collect();
    let values = rows.iter().map(|r| r.2.clone()).collect();
    (ids, generations, values)
}

/// Drops from the batch each saga at `indices` whose fenced write did not
/// apply (`kept` lacks it): a newer owner has claimed it.
pub(super) fn drop_lost(batch: &mut [Saga], indices: &[usize], kept: &HashSet<SagaId>) {
    for &i in indices {
        if !kept.contains(&batch[i].id) {
            tracing::warn!(saga = %batch[i].id, "lost the saga to a newer owner; dropping it");
            batch[i].gone = true;
        }
    }
}

/// Appends one event per saga (`ids`, `generations` and `details` as JSON
/// text, index by index), fenced: a row is only written while the saga's
/// generation is still the claimed one, with the saga row share-locked so
/// that a concurrent claim waits or wins cleanly. Returns the sagas whose
/// event was written.
pub(super) async fn append(
    conn: &mut PgConnection,
    step: &str,
    event: StepEvent,
    ids: &[SagaId],
    generations: &[i64],
    details: &[&str],
) -> Result<HashSet<SagaId>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = "INSERT INTO saga_step_events (saga_id, run, step, event, detail, generation)
               SELECT s.id, s.run, $1, $2, u.detail::json, s.generation
               FROM UNNEST($3::uuid[], $4::bigint[], $5::text[]) AS u(id, generation, detail)
               JOIN sagas s ON s.id = u.id AND s.generation = u.generation
               FOR SHARE OF s RETURNING saga_id";
    let written: Vec<SagaId> = sqlx::query_scalar(sql)
        .bind(step)
        .bind(event)
        .bind(ids)
        .bind(generations)
        .bind(details)
        .fetch_all(&mut *conn)
        .await?;
    Ok(written.into_iter().collect())
}

/// Sets a state (and reason) on fenced sagas; `release` also drops the owner.
pub(super) async fn set_state(
    conn: &mut PgConnection,
    state: SagaState,
    rows: &[(SagaId, i64, String)],
    release: bool,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, generations, reasons) = columns_of(rows);
    sqlx::query(
        "UPDATE sagas s SET state = $4, failure_reason = u.reason, updated_at = now(),
             owner = CASE WHEN $5 THEN NULL ELSE s.owner END,
             lease_expires_at = CASE WHEN $5 THEN NULL ELSE s.lease_expires_at END
         FROM UNNEST($1::uuid[], $2::bigint[], $3::text[]) AS u(id, generation, reason)
         WHERE s.id = u.id AND s.generation = u.generation",
    )
    .bind(&ids)
    .bind(&generations)
    .bind(&reasons)
    .bind(state)
    .bind(release)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The fenced close of sagas `$1` (ids) at generations `$2` in state `$3`,
/// owner and lease cleared: one statement text for [`close`] and
/// [`close_done`] (a macro so that `concat!` can extend it).
macro_rules! close_sagas {
    () => {
        "UPDATE sagas s SET state = $3, owner = NULL, lease_expires_at = NULL, updated_at = now()
         FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, generation)
         WHERE s.id = u.id AND s.generation = u.generation"
    };
}

/// Ends fenced sagas in `state` (done or failed) and gives them back;
/// returns the sagas it ended.
pub(super) async fn close(
    conn: &mut PgConnection,
    state: SagaState,
    ids: &[SagaId],
    generations: &[i64],
) -> Result<HashSet<SagaId>, sqlx::Error> {
    let closed: Vec<SagaId> = sqlx::query_scalar(concat!(close_sagas!(), " RETURNING s.id"))
        .bind(ids)
        .bind(generations)
        .bind(state)
        .fetch_all(&mut *conn)
        .await?;
    Ok(closed.into_iter().collect())
}

/// Ends fenced sagas done (as [`close`]) and, in the same statement, appends
/// `step`'s `succeeded` with each one's detail (JSON text, index by index
/// with `ids`) for the sagas it ended: the close's update holds each saga
/// row, so the append is fenced by it. One round trip instead of two
/// (issue 15). Returns the sagas it ended.
pub(super) async fn close_done(
    conn: &mut PgConnection,
    step: &str,
    ids: &[SagaId],
    generations: &[i64],
    details: &[&str],
) -> Result<HashSet<SagaId>, sqlx::Error> {
    let closed: Vec<SagaId> = sqlx::query_scalar(concat!(
        "WITH closed AS (",
        close_sagas!(),
        " RETURNING s.id, s.run, s.generation)
         INSERT INTO saga_step_events (saga_id, run, step, event, detail, generation)
         SELECT c.id, c.run, $5, $6, d.detail::json, c.generation
         FROM closed c JOIN UNNEST($1::uuid[], $4::text[]) AS d(id, detail) ON d.id = c.id
         RETURNING saga_id"
    ))
    .bind(ids)
    .bind(generations)
    .bind(SagaState::Done)
    .bind(details)
    .bind(step)
    .bind(StepEvent::Succeeded)
    .fetch_all(&mut *conn)
    .await?;
    Ok(closed.into_iter().collect())
}

/// Gives sagas back (owner and lease cleared), runnable again after a delay (ms).
pub(super) async fn release<'e, E>(executor: E, rows: &[(SagaId, i64, i64)]) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, generations, delays) = columns_of(rows);
    sqlx::query(
        "UPDATE sagas s SET owner = NULL, lease_expires_at = NULL, updated_at = now(),
             next_attempt_at = now() + u.delay * interval '1 millisecond'
         FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) AS u(id, generation, delay)
         WHERE s.id = u.id AND s.generation = u.generation",
    )
    .bind(&ids)
    .bind(&generations)
    .bind(&delays)
    .execute(executor)
    .await?;
    Ok(())
}
