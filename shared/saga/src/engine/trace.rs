//! Spans of saga steps, in the trace of the RPC that started each saga
//! (DESIGN §6: one sale is one trace, including the steps a worker runs
//! later). The saga row keeps that RPC's W3C `traceparent`
//! ([`Saga::traceparent`]); a step runs once per batch, so:
//!
//! - the batch's `saga.step` span, in which the action runs and makes its
//!   peer calls (so the callees' RPC spans are its children), has the first
//!   traced saga's context as its parent and links to the others';
//! - with tracing on, every other saga of the batch gets its own `saga.step`
//!   span under its own context, linked to the batch's span, so each sale's
//!   trace shows the step and leads to the calls made for it.
//!
//! A batch of one (a quiet system, a single sale) is thus wholly in its
//! sale's trace.

use accrue_kit::telemetry::propagation;

use crate::def::{Saga, SagaDef};

/// A step's spans over one batch; the per-saga ones end when this is dropped.
pub(super) struct StepSpans {
    /// The batch's span, the one the action runs in.
    pub(super) lead: tracing::Span,
    _others: Vec<tracing::Span>,
}

/// The spans of step `step` (`phase` "action" or "undo") over the sagas of
/// `batch` at `need`.
pub(super) fn step_spans<D: SagaDef>(
    step: &'static str,
    phase: &'static str,
    batch: &[Saga],
    need: &[usize],
) -> StepSpans {
    let sagas: Vec<&Saga> = need.iter().map(|&i| &batch[i]).collect();
    let leader = sagas.iter().position(|saga| saga.traceparent.is_some()).unwrap_or(0);
    let lead = span::<D>(step, phase, sagas.get(leader).copied(), sagas.len());
    if let Some(parent) = sagas.get(leader).and_then(|saga| saga.traceparent.as_deref()) {
        propagation::set_parent_from(&lead, parent);
    }
    let mut others = Vec::new();
    if accrue_kit::telemetry::tracing_enabled() {
        for (i, saga) in sagas.iter().enumerate() {
            let Some(parent) = saga.traceparent.as_deref() else { continue };
            if i == leader {
                continue;
            }
            propagation::add_link_to(&lead, parent);
            let own = span::<D>(step, phase, Some(saga), 1);
            propagation::set_parent_from(&own, parent);
            own.follows_from(&lead);
            others.push(own);
        }
    }
    StepSpans { lead, _others: others }
}

fn span<D: SagaDef>(step: &'static str, phase: &'static str, saga: Option<&Saga>, sagas: usize) -> tracing::Span {
    tracing::info_span!(
        "saga.step",
        otel.name = %format_args!("{} {step}{}", D::KIND, if phase == "undo" { " undo" } else { "" }),
        accrue.service = D::SERVICE,
        saga.kind = D::KIND,
        saga.step = step,
        saga.phase = phase,
        saga.id = %saga.map(|s| s.id.to_string()).unwrap_or_default(),
        saga.batch = sagas,
    )
}
