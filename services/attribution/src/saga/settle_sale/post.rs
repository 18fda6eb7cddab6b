//! post: ledger.PostEntries, every line of a sale in one atomic ledger
//! posting under a key per saga run, one call per program chunk. Its undo
//! voids whatever the run posted.

use std::collections::HashMap;

use accrue_kit::convert::{amount_to_proto, timestamp};
use accrue_money::Currency;
use accrue_proto::ledger::v1 as lpb;
use accrue_proto::types::v1 as tpb;
use accrue_saga::{StepError, StepResult, output};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::compute::{BreakdownOut, ComputeOut, LineOut};
use super::{
    Item, Ready, SettleSale, Step, chunk_by_program, chunk_program, earlier, failure_message, merge, per_chunk,
    post_key,
};
use crate::peers::step_error;

/// Concurrent per-saga undo calls.
const UNDO_CONCURRENCY: usize = 16;
/// Who voids entries when a saga unwinds.
const ACTOR: &str = "attribution-saga";

/// post's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PostOut {
    pub(crate) idempotency_key: String,
    pub(crate) entry_ids: Vec<String>,
}

/// What the undo of post voided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UndoOut {
    idempotency_key: String,
    voided_entry_ids: Vec<String>,
    voided: usize,
}

fn breakdown_proto(b: &BreakdownOut) -> tpb::CommissionBreakdown {
    tpb::CommissionBreakdown {
        model: b.model.clone(),
        formula: b.formula.clone(),
        inputs: b.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rule: b.rule.clone(),
        agreement_version_id: b.agreement_version_id.clone(),
        rounding: b.rounding.clone(),
        note: b.note.clone(),
    }
}

pub(super) fn entry_input(line: &LineOut, occurred_at: DateTime<Utc>) -> Result<lpb::EntryInput, StepError> {
    let currency = Currency::from_code(&line.currency).map_err(|e| StepError::Permanent(e.to_string()))?;
    let kind = tpb::EarningKind::from_str_name(&line.kind)
        .ok_or_else(|| StepError::Permanent(format!("the logged line kind {:?} is unknown", line.kind)))?;
    Ok(lpb::EntryInput {
        partner_id: line.partner_id.clone(),
        kind: kind as i32,
        amount: Some(amount_to_proto(currency, line.amount)),
        level: line.level,
        source_partner_id: line.source_partner_id.clone(),
        occurred_at: Some(timestamp(occurred_at)),
        clears_at: line.clears_at.map(timestamp),
        breakdown: line.breakdown.as_ref().map(breakdown_proto),
    })
}

fn posting(item: &Item<'_>) -> Result<lpb::SalePosting, StepError> {
    let computed: ComputeOut = earlier(item, Step::Compute)?;
    let lines =
        computed.lines.iter().map(|line| entry_input(line, item.subject.occurred_at)).collect::<Result<Vec<_>, _>>()?;
    Ok(lpb::SalePosting {
        idempotency_key: post_key(item.saga.id, item.saga.run),
        sale_id: item.subject.id.to_string(),
        lines,
    })
}

pub(super) async fn action(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    let inputs: Vec<Result<lpb::SalePosting, StepError>> = items.iter().map(posting).collect();
    let ready = Ready::of(items, &inputs);
    let chunks = chunk_by_program(&ready.items, |_| 1);
    let outcomes = per_chunk(chunks, ready.items.len(), |chunk| {
        let mut client = saga.peers.ledger.clone();
        let program_id = chunk_program(&ready.items, &chunk);
        let postings: Vec<lpb::SalePosting> = chunk.iter().map(|&i| ready.inputs[i].clone()).collect();
        async move {
            let program_id = program_id?;
            let keys: Vec<String> = postings.iter().map(|p| p.idempotency_key.clone()).collect();
            let response = client
                .post_entries(lpb::PostEntriesRequest { program_id: program_id.to_string(), postings })
                .await
                .map_err(|status| step_error("ledger.PostEntries", &status))?
                .into_inner();
            let by_key: HashMap<&str, &lpb::PostingResult> =
                response.results.iter().map(|r| (r.idempotency_key.as_str(), r)).collect();
            Ok(keys
                .iter()
                .map(|key| {
                    let result = by_key
                        .get(key.as_str())
                        .ok_or_else(|| StepError::Transient("ledger returned no result for the posting".into()))?;
                    if let Some(failure) = &result.failure {
                        return Err(StepError::Permanent(failure_message(failure)));
                    }
                    output(&PostOut { idempotency_key: key.clone(), entry_ids: result.entry_ids.clone() })
                })
                .collect())
        }
    })
    .await;
    let positions = ready.positions;
    merge(inputs, positions, outcomes)
}

pub(super) async fn undo(saga: &SettleSale, items: &[Item<'_>]) -> Vec<StepResult> {
    // Collected first: a lazy `map` closure makes the future not Send over every lifetime.
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        calls.push(undo_one(saga, *item));
    }
    futures::stream::iter(calls).buffered(UNDO_CONCURRENCY).collect().await
}

/// Voids every live entry this saga run posted: those listed for the sale
/// under the run's key (so a post that took effect but whose output was never
/// logged is found too), plus the logged entry ids. Idempotent: already
/// voided entries are skipped.
async fn undo_one(saga: &SettleSale, item: Item<'_>) -> StepResult {
    let key = post_key(item.saga.id, item.saga.run);
    let logged: Vec<String> = match item.saga.raw_output(Step::Post as usize) {
        Some(_) => earlier::<PostOut>(&item, Step::Post)?.entry_ids,
        // The post may have taken effect without its output being logged.
        None => Vec::new(),
    };
    let program_id = item.subject.program_id.to_string();
    let mut client = saga.peers.ledger.clone();
    let mut to_void: Vec<String> = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .list_entries(lpb::ListEntriesRequest {
                program_id: program_id.clone(),
                sale_id: item.subject.id.to_string(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| step_error("ledger.ListEntries", &status))?
            .into_inner();
        for entry in &response.entries {
            let ours = entry.idempotency_key == key || logged.contains(&entry.id);
            if ours && entry.status != lpb::EntryStatus::Voided as i32 && !to_void.contains(&entry.id) {
                to_void.push(entry.id.clone());
            }
        }
        if response.next_page_token.is_empty() || response.entries.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    if !to_void.is_empty() {
        client
            .transition_entries(lpb::TransitionEntriesRequest {
                program_id: program_id.clone(),
                entry_ids: to_void.clone(),
                to_status: lpb::EntryStatus::Voided as i32,
                actor: ACTOR.to_string(),
                reason: format!("saga {} run {} unwound: {}", item.saga.id, item.saga.run, item.saga.failure_reason),
            })
            .await
            .map_err(|status| step_error("ledger.TransitionEntries", &status))?;
    }
    output(&UndoOut { idempotency_key: key, voided: to_void.len(), voided_entry_ids: to_void })
}
