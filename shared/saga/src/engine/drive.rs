//! Driving a claimed batch: each step for every saga that still needs it, one
//! bulk action per step, its outcomes written fenced; then the close of the
//! sagas that finished and the undos of those that failed, newest step first.

// The engine's types and imports.
use super::*;

/// A step's results for the sagas it ran on, by outcome: `(index, output)`
/// or `(index, message)`.
#[derive(Debug, Default)]
struct Outcomes {
    ok: Vec<(usize, Output)>,
    transient: Vec<(usize, String)>,
    permanent: Vec<(usize, String)>,
    internal: Vec<(usize, String)>,
}

impl Outcomes {
    /// Splits `results` (one per index in `need`, in order).
    fn of(need: &[usize], results: Vec<StepResult>) -> Self {
        let mut outcomes = Outcomes::default();
        for (&i, result) in need.iter().zip(results) {
            match result {
                Ok(output) => outcomes.ok.push((i, output)),
                Err(StepError::Transient(message)) => outcomes.transient.push((i, message)),
                Err(StepError::Permanent(message)) => outcomes.permanent.push((i, message)),
                Err(StepError::Internal(message)) => outcomes.internal.push((i, message)),
            }
        }
        outcomes
    }
}

impl<D: SagaDef> Engine<D> {
    pub(super) async fn drive(
        &self,
        batch: &mut Vec<Saga>,
        leases: &Leases,
        shutdown: &CancellationToken,
    ) -> Result<Flow, sqlx::Error> {
        let ids: Vec<SagaId> = batch.iter().map(|s| s.id).collect();
        let subjects = self.def.load(&self.pool, &ids).await?;
        let steps = self.def.steps();

        // Forward: each step for every saga that still needs it.
        for (index, step) in steps.iter().enumerate() {
            batch.retain(|s| !s.gone);
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            leases.drop_lost(batch);
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| !batch[i].gone && !batch[i].unwinding && batch[i].log[index].output.is_none())
                .collect();
            if need.is_empty() {
                continue;
            }
            // A step without an undo logs no `started`: nothing would read it.
            let need = if step.undo.is_some() {
                // Sagas whose `started` went out with the previous step's
                // success need no mark of their own.
                let (premarked, unmarked): (Vec<usize>, Vec<usize>) =
                    need.into_iter().partition(|&i| batch[i].marked == Some(index));
                let mut need = self.append_marks(batch, &unmarked, index, StepEvent::Started).await?;
                need.extend(premarked.into_iter().filter(|&i| !batch[i].gone));
                need.sort_unstable();
                for &i in &need {
                    batch[i].log[index].started = true;
                }
                need
            } else {
                need
            };
            let started = std::time::Instant::now();
            let spans = trace::step_spans::<D>(step.name, "action", batch, &need);
            #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
            let mut results = self.act(index, batch, &need, &subjects, false).instrument(spans.lead.clone()).await;
            drop(spans);
            let action_ms = started.elapsed().as_millis();
            tracing::debug!(step = step.name, sagas = need.len(), action_ms, "saga step action");
            record_step_duration::<D>(step.name, "action", started);
            #[cfg(feature = "test-hooks")]
            self.apply_hooks(index, batch, &need, &mut results);

            let Outcomes { ok, transient, permanent, internal } = Outcomes::of(&need, results);
            #[cfg(feature = "test-hooks")]
            let first_claim_succeeded = ok.iter().any(|&(i, _)| batch[i].generation == 1);
            self.record_succeeded(batch, index, ok).await?;
            self.record_transient(batch, index, FailedIn::Action, transient).await?;
            self.record_internal(batch, index, FailedIn::Action, internal).await?;
            self.record_permanent(batch, index, FailedIn::Action, permanent).await?;
            #[cfg(feature = "test-hooks")]
            if first_claim_succeeded && self.hooks.crash_after == Some(step.name) {
                return Ok(Flow::Crash);
            }
        }

        // A saga whose every step had already succeeded when it was claimed
        // (its log outlived the close, e.g. a reset) only needs closing.
        let complete: Vec<usize> = (0..batch.len())
            .filter(|&i| !batch[i].gone && !batch[i].unwinding && batch[i].log.iter().all(|l| l.output.is_some()))
            .collect();
        if !complete.is_empty() {
            self.finish(batch, &complete).await?;
        }

        // Unwind: undo every started step not yet undone, newest first.
        for index in (0..steps.len()).rev() {
            batch.retain(|s| !s.gone);
            if !batch.iter().any(|s| s.unwinding) {
                return Ok(Flow::Continue);
            }
            if shutdown.is_cancelled() {
                self.release_all(batch).await?;
                return Ok(Flow::Continue);
            }
            leases.drop_lost(batch);
            if steps[index].undo.is_none() {
                continue;
            }
            let need: Vec<usize> = (0..batch.len())
                .filter(|&i| {
                    let log = &batch[i].log[index];
                    !batch[i].gone && batch[i].unwinding && log.started && !log.undo_finished
                })
                .collect();
            if need.is_empty() {
                continue;
            }
            let need = self.append_marks(batch, &need, index, StepEvent::UndoStarted).await?;
            let started = std::time::Instant::now();
            let spans = trace::step_spans::<D>(steps[index].name, "undo", batch, &need);
            #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
            let mut results = self.act(index, batch, &need, &subjects, true).instrument(spans.lead.clone()).await;
            drop(spans);
            record_step_duration::<D>(steps[index].name, "undo", started);
            #[cfg(feature = "test-hooks")]
            if self.hooks.fail_undo == Some(steps[index].name) {
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(StepError::Permanent(format!("injected undo failure at {}", steps[index].name)));
                }
            }
            let Outcomes { ok, transient, permanent: stuck, internal } = Outcomes::of(&need, results);
            let done = self.append_pairs(batch, &ok, index, StepEvent::UndoFinished).await?;
            for i in done {
                batch[i].log[index].undo_finished = true;
            }
            self.record_transient(batch, index, FailedIn::Undo, transient).await?;
            self.record_internal(batch, index, FailedIn::Undo, internal).await?;
            self.record_permanent(batch, index, FailedIn::Undo, stuck).await?;
        }

        // Every undo finished: the definition records the failure, the saga failed.
        batch.retain(|s| !s.gone);
        let finished: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].unwinding).collect();
        if !finished.is_empty() {
            let mut tx = self.pool.begin().await?;
            let (ids, generations) = fence_of(batch, &finished);
            // The close is fenced, so what it ended is what is still ours.
            let failed = close(&mut tx, SagaState::Failed, &ids, &generations).await?;
            let sagas: Vec<&Saga> = finished.iter().map(|&i| &batch[i]).filter(|s| failed.contains(&s.id)).collect();
            self.def.on_failed(&mut tx, &sagas).await?;
            tx.commit().await?;
            count_entered::<D>(SagaState::Failed, failed.len());
            for &i in &finished {
                if failed.contains(&batch[i].id) {
                    tracing::info!(saga = %batch[i].id, kind = D::KIND, reason = %batch[i].failure_reason, "saga unwound; failed");
                }
                batch[i].gone = true;
            }
        }
        Ok(Flow::Continue)
    }

    /// Closes the sagas at `indices` as done (fenced) with the definition's
    /// `on_done` in the same transaction, and drops them from the batch.
    async fn finish(&self, batch: &mut [Saga], indices: &[usize]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let (ids, generations) = fence_of(batch, indices);
        let closed = close(&mut tx, SagaState::Done, &ids, &generations).await?;
        let sagas: Vec<&Saga> = indices.iter().map(|&i| &batch[i]).filter(|s| closed.contains(&s.id)).collect();
        self.def.on_done(&mut tx, &sagas).await?;
        tx.commit().await?;
        count_entered::<D>(SagaState::Done, closed.len());
        for &i in indices {
            batch[i].gone = true;
        }
        Ok(())
    }

    /// Runs a step's action (or undo) for `need`; under the `repeat_actions`
    /// hook twice (the second result counts when the first succeeded: one
    /// effect either way).
    async fn act(
        &self,
        index: usize,
        batch: &[Saga],
        need: &[usize],
        subjects: &HashMap<SagaId, D::Subject>,
        undo: bool,
    ) -> Vec<StepResult> {
        let step = &self.def.steps()[index];
        let Some(run) = (if undo { step.undo } else { Some(step.action) }) else {
            // Never asked for (an unwind passes over such a step); nothing to undo.
            return need.iter().map(|_| Ok(Output::empty())).collect();
        };
        let items: Vec<Option<Item<'_, D::Subject>>> =
            need.iter().map(|&i| subjects.get(&batch[i].id).map(|subject| Item { saga: &batch[i], subject })).collect();
        let present: Vec<Item<'_, D::Subject>> = items.iter().flatten().copied().collect();
        #[cfg(feature = "test-hooks")]
        if let Some((slow_step, delay)) = self.hooks.slow_step
            && slow_step == step.name
            && !undo
        {
            tokio::time::sleep(delay).await;
        }
        #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
        let mut results = if present.is_empty() { Vec::new() } else { run(&self.def, &present).await };
        #[cfg(feature = "test-hooks")]
        if self.hooks.repeat_actions && !present.is_empty() {
            let again = run(&self.def, &present).await;
            for (first, second) in results.iter_mut().zip(again) {
                if first.is_ok() {
                    *first = second;
                }
            }
        }
        let mut results = results.into_iter();
        items
            .iter()
            .map(|item| match item {
                Some(_) => results.next().unwrap_or_else(|| {
                    Err(StepError::Transient(format!("step {} returned too few results", step.name)))
                }),
                None => Err(StepError::Permanent(format!("the subject of this {} saga does not exist", D::KIND))),
            })
            .collect()
    }

    #[cfg(feature = "test-hooks")]
    fn apply_hooks(&self, index: usize, batch: &[Saga], need: &[usize], results: &mut [StepResult]) {
        let name = self.def.steps()[index].name;
        if let Some((fail_step, reason)) = &self.hooks.inject_failure
            && *fail_step == name
        {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(StepError::Permanent(format!("injected failure at {name}: {reason}")));
            }
        }
        if let Some((fail_step, times)) = self.hooks.inject_transient
            && fail_step == name
        {
            for (&i, result) in need.iter().zip(results.iter_mut()) {
                if result.is_ok() && i64::from(batch[i].attempt) <= i64::from(times) {
                    *result = Err(StepError::Transient(format!("injected transient failure at {name}")));
                }
            }
        }
        if let Some((fail_step, claims)) = self.hooks.inject_internal
            && fail_step == name
        {
            for (&i, result) in need.iter().zip(results.iter_mut()) {
                if result.is_ok() && batch[i].generation <= i64::from(claims) {
                    *result = Err(StepError::Internal(format!("injected internal error at {name}")));
                }
            }
        }
    }
}
