//! The claim: a batch of runnable sagas taken with `FOR UPDATE SKIP LOCKED`,
//! each under a new generation and a lease, with the current run's step log
//! of every saga claimed before read back into its [`StepLog`]s.

// The engine's types and imports.
use super::*;

#[derive(sqlx::FromRow)]
struct Claimed {
    id: SagaId,
    run: i32,
    generation: i64,
    attempt: i32,
    state: SagaState,
    failure_reason: String,
    traceparent: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LoggedEvent {
    saga_id: SagaId,
    step: String,
    event: StepEvent,
    detail: Value,
    generation: i64,
}

impl<D: SagaDef> Engine<D> {
    /// Claims up to `batch_size` runnable sagas of this kind (running or
    /// unwinding, unowned or with an expired lease, due), bumping their
    /// generation, and loads the current run's log of each saga claimed
    /// before (a first claim has none).
    pub(super) async fn claim(&self, owner: &str) -> Result<Vec<Saga>, sqlx::Error> {
        // The claim commits durably although the workers' pool commits with
        // synchronous_commit=off. A claim is the one worker write whose loss
        // is not harmless: lost with the WAL tail in a database crash, it
        // would roll `generation` back, the next claim would hand the same
        // generation to a second owner, and both owners' fenced writes would
        // pass. (A lost step row re-runs an idempotent step; a lost renewal,
        // release or close only delays a saga; those stay relaxed.) Commits
        // are ordered in the WAL, so flushing this one flushes everything
        // before it too.
        //
        // The statement is its own (implicit) transaction and turns
        // synchronous_commit on for it with `set_config(…, is_local => true)`
        // before it updates a row: the commit at its end is durable and the
        // setting ends with it. A transaction block with `SET LOCAL` did the
        // same in four round trips (BEGIN, SET, UPDATE, COMMIT) instead of
        // one, at every claim, empty ones included (issue 15: round trips
        // are much of the CPU a small batch costs).
        //
        // The runnable states are spelled out (SagaState::Running and
        // ::Unwinding) so that a generic plan can still prove the partial
        // index `sagas_runnable` applies.
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH durable AS MATERIALIZED (SELECT set_config('synchronous_commit', 'on', true))
             UPDATE sagas s SET owner = $1, generation = s.generation + 1,
                 lease_expires_at = now() + $2::bigint * interval '1 millisecond',
                 attempt = s.attempt + 1, updated_at = now()
             FROM durable
             WHERE s.id IN (
                 SELECT id FROM sagas
                 WHERE kind = $4 AND state IN ('running', 'unwinding')
                   AND (owner IS NULL OR lease_expires_at < now())
                   AND next_attempt_at <= now()
                 ORDER BY created_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING s.id, s.run, s.generation, s.attempt, s.state, s.failure_reason, s.traceparent",
        )
        .bind(owner)
        .bind(millis(self.options.lease))
        .bind(self.options.batch_size.max(1))
        .bind(D::KIND)
        .fetch_all(&self.pool)
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        metrics::counter!("accrue_saga_batches_total", "service" => D::SERVICE, "kind" => D::KIND).increment(1);
        metrics::counter!("accrue_saga_claims_total", "service" => D::SERVICE, "kind" => D::KIND)
            .increment(claimed.len() as u64);
        // The first claim of a run: a new saga, a retried or a resumed one.
        for state in [SagaState::Running, SagaState::Unwinding] {
            count_entered::<D>(state, claimed.iter().filter(|c| c.attempt == 1 && c.state == state).count());
        }
        // Only a saga claimed before can have a log: every step event is
        // written by an owner, fenced on the generation its claim gave, and
        // the first claim gives generation 1 (nothing sets it back). A batch
        // of new sagas — all of them under a steady load — skips the read
        // (a round trip and an index probe per saga, issue 15).
        let (ids, runs): (Vec<SagaId>, Vec<i32>) =
            claimed.iter().filter(|c| c.generation > 1).map(|c| (c.id, c.run)).unzip();
        let events: Vec<LoggedEvent> = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT e.saga_id, e.step, e.event, e.detail, e.generation
             FROM saga_step_events e
             JOIN UNNEST($1::uuid[], $2::int[]) AS u(id, run) ON e.saga_id = u.id AND e.run = u.run
             ORDER BY e.id",
            )
            .bind(&ids)
            .bind(&runs)
            .fetch_all(&self.pool)
            .await?
        };
        // Every claim bumps generation and attempt together, and resume_stuck
        // (like a retry) sets attempt back to 0, so the claims since the saga
        // started or was last resumed are the generations above this one:
        // only their internal errors count against internal_attempts.
        let counted_after: HashMap<SagaId, i64> =
            claimed.iter().map(|c| (c.id, c.generation - i64::from(c.attempt))).collect();
        let steps = self.def.steps();
        let mut logs: HashMap<SagaId, Vec<StepLog>> = HashMap::new();
        let mut corrupt: HashMap<SagaId, String> = HashMap::new();
        let mut carried: Vec<(SagaId, Value)> = Vec::new();
        for event in events {
            if D::RETIRED_STEPS.contains(&event.step.as_str()) {
                continue;
            }
            let Some(index) = steps.iter().position(|step| step.name == event.step) else {
                corrupt.entry(event.saga_id).or_insert_with(|| {
                    format!("the step log names step {:?}, which {} does not have", event.step, D::KIND)
                });
                continue;
            };
            let log = logs.entry(event.saga_id).or_insert_with(|| vec![StepLog::default(); steps.len()]);
            let log = &mut log[index];
            match event.event {
                StepEvent::Started => {
                    log.started = true;
                    carried.push((event.saga_id, event.detail));
                }
                StepEvent::Succeeded => log.output = Some(Output::from_value(&event.detail)),
                StepEvent::UndoFinished => log.undo_finished = true,
                StepEvent::Failed
                    if is_internal(&event.detail)
                        && counted_after.get(&event.saga_id).is_some_and(|&after| event.generation > after) =>
                {
                    log.internal_failures = log.internal_failures.saturating_add(1);
                }
                StepEvent::Failed | StepEvent::UndoStarted => {}
            }
        }
        // The outputs of steps without an undo, written with a later step's `started`.
        for (saga_id, detail) in carried {
            let Some(outputs) = detail.get(CARRIED).and_then(Value::as_object) else { continue };
            for (name, output) in outputs {
                match steps.iter().position(|step| step.name == name) {
                    Some(index) => {
                        let log = logs.entry(saga_id).or_insert_with(|| vec![StepLog::default(); steps.len()]);
                        log[index].output = Some(Output::from_value(output));
                    }
                    None => {
                        corrupt.entry(saga_id).or_insert_with(|| {
                            format!("the step log carries the output of step {name:?}, which {} does not have", D::KIND)
                        });
                    }
                }
            }
        }
        let mut batch: Vec<Saga> = claimed
            .into_iter()
            .map(|c| Saga {
                log: logs.remove(&c.id).unwrap_or_else(|| vec![StepLog::default(); steps.len()]),
                id: c.id,
                run: c.run,
                generation: c.generation,
                attempt: c.attempt,
                unwinding: c.state == SagaState::Unwinding,
                failure_reason: c.failure_reason,
                traceparent: c.traceparent,
                gone: false,
                marked: None,
            })
            .collect();
        // Claim order is (created_at, id); keep it so that batches are deterministic.
        batch.sort_by_key(|saga| saga.id);
        if !corrupt.is_empty() {
            // A log this definition cannot read cannot be resumed or unwound safely.
            let rows: Vec<(SagaId, i64, String)> = batch
                .iter()
                .filter_map(|s| corrupt.get(&s.id).map(|reason| (s.id, s.generation, reason.clone())))
                .collect();
            let mut conn = self.pool.acquire().await?;
            set_state(&mut conn, SagaState::Stuck, &rows, true).await?;
            count_entered::<D>(SagaState::Stuck, rows.len());
            for (id, _, reason) in &rows {
                tracing::error!(saga = %id, %reason, "saga STUCK: unreadable step log; operator action needed");
            }
            batch.retain(|s| !corrupt.contains_key(&s.id));
        }
        Ok(batch)
    }
}

/// True when a `failed` event's detail records an internal error.
fn is_internal(detail: &Value) -> bool {
    detail.get("internal").and_then(Value::as_bool) == Some(true)
}
